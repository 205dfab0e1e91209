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


# --- Shards: the suite split across processes (tests/parallel.py) --------------------------------
# VISIONFLEET_SHARD=i/n keeps the test modules assigned to shard i of n. Whole modules travel together
# (their module- and session-scoped fixtures are set up once), assigned longest first to the shard
# with the least time so far, by the seconds tests/durations.json gives each module (measured; a
# module it does not know counts DEFAULT_MODULE_SECONDS). Every process computes the same assignment
# from the same collected modules, so each test runs in exactly one shard.
DURATIONS = os.path.join(os.path.dirname(__file__), "durations.json")
DEFAULT_MODULE_SECONDS = 30.0


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def assign_shards(modules: list[str], seconds: dict[str, float], count: int) -> dict[str, int]:
    """module -> shard index (0-based): longest first onto the least loaded shard, ties by name."""
    load = [0.0] * count
    out: dict[str, int] = {}
    for m in sorted(modules, key=lambda m: (-seconds.get(m, DEFAULT_MODULE_SECONDS), m)):
        i = min(range(count), key=lambda k: (load[k], k))
        out[m] = i
        load[i] += seconds.get(m, DEFAULT_MODULE_SECONDS)
    return out


def parse_shard(value: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in value.split("/"))
    except ValueError:
        index = count = 0
    if not 1 <= index <= count:
        raise pytest.UsageError(f"VISIONFLEET_SHARD={value!r}: expected i/n with 1 <= i <= n, e.g. 1/2")
    return index, count


def pytest_collection_modifyitems(config, items):
    value = os.environ.get("VISIONFLEET_SHARD")
    if not value:
        return
    import json

    index, count = parse_shard(value)
    with open(DURATIONS) as f:
        seconds = json.load(f)["modules"]
    modules = list(dict.fromkeys(module_of(it.nodeid) for it in items))
    shard = assign_shards(modules, seconds, count)
    keep = [it for it in items if shard[module_of(it.nodeid)] == index - 1]
    dropped = [it for it in items if shard[module_of(it.nodeid)] != index - 1]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


_MODULE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    module = module_of(report.nodeid)
    _MODULE_SECONDS[module] = _MODULE_SECONDS.get(module, 0.0) + report.duration


def pytest_sessionfinish(session):
    """VISIONFLEET_RECORD_DURATIONS=FILE: each module's seconds (setup, call and teardown of its tests)
    merged into FILE, the shape of tests/durations.json, to refresh it from a measured run."""
    path = os.environ.get("VISIONFLEET_RECORD_DURATIONS")
    if not path or not _MODULE_SECONDS:
        return
    import fcntl
    import json
    import tempfile

    # shards end at their own times, maybe together
    with open(os.path.join(tempfile.gettempdir(), "visionfleet-durations.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            data = {"modules": {}}
        data["modules"].update({m: round(s, 1) for m, s in _MODULE_SECONDS.items()})
        data["modules"] = dict(sorted(data["modules"].items()))
        with open(path + ".tmp", "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(path + ".tmp", path)
