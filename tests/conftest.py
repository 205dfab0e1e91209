"""Shared fixtures. The local fleet is started once per session, only when a test asks for it."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from visionfleet_e2e.cluster import LocalCluster
from visionfleet_e2e.fleet import load_fleet

TEST_CLUSTER = os.environ.get("VISIONFLEET_TEST_CLUSTER", "vf-test")


@pytest.fixture(scope="session")
def fleet():
    return load_fleet("demo")


@pytest.fixture(scope="session")
def cluster(fleet):
    """A real control plane (apiserver, etcd, controller-manager, scheduler, kwok) with the demo fleet.

    Started fresh for the session and stopped at its end; the stop must leave no process behind.
    """
    c = LocalCluster(TEST_CLUSTER)
    c.down()  # a previous session that was killed may have left one behind
    t0 = time.monotonic()
    c.up(fleet)
    c.startup_seconds = time.monotonic() - t0
    yield c
    c.down()
    left = c.processes()
    assert not left, f"cluster {TEST_CLUSTER} left processes behind: {left}"


@pytest.fixture()
def namespace(cluster):
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    deadline = time.monotonic() + 60
    while cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode != 0:
        assert time.monotonic() < deadline, f"default ServiceAccount of {name} never appeared"
        time.sleep(0.3)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
