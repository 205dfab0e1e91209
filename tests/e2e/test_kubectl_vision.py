"""``kubectl vision`` against the real API server and the operator: pause, resume, promote, abort and
watch a live rollout, through kubectl's own plugin mechanism (kubectl finds ``kubectl-vision`` on PATH).
At each phase the Argo CD health check runs on the live object too."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from ..helpers import wait_for
from ..unit.test_argocd_health import run_health
from .test_operator_rollout import VD, Given, vd_with

pytestmark = pytest.mark.cluster
SLOW = [{"setWeight": 50, "pause": "1h"}, {"setWeight": 100}]


def vision(cluster, *args, check=True):
    env_path = f"{Path(sys.executable).parent}{os.pathsep}{cluster.env()['PATH']}"
    # kubectl takes no flag before a plugin's name: the cluster comes from KUBECONFIG (cluster.env())
    proc = cluster.run("env", f"PATH={env_path}", str(cluster.binary("kubectl")),
                       "vision", *args, check=False)
    if check:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


def argo_health(g) -> str:
    """The Argo CD health check (charts/visionfleet/argocd/health.lua) on the live object."""
    return run_health(g.vd())["status"]


def test_pause_resume_promote_abort_and_watch(cluster, operator, namespace):
    g = Given(cluster, namespace).apply(vd_with(rollout__steps=SLOW))
    v1 = g.wait_phase("Healthy")["stableRevision"]
    assert argo_health(g) == "Healthy"
    # nothing in flight: promote is refused, naming why
    refused = vision(cluster, "promote", "doorbell", "-n", namespace, check=False)
    assert refused.returncode == 1 and "no canary" in refused.stderr

    g.apply(vd_with(model__version="2", rollout__steps=SLOW))
    g.wait_phase("RollingOut")
    out = vision(cluster, "status", "doorbell", "-n", namespace).stdout
    assert re.search(r"Phase:\s+RollingOut", out) and "weight 50%" in out
    assert argo_health(g) == "Progressing"

    vision(cluster, "pause", "doorbell", "-n", namespace)
    g.wait_phase("Paused")
    assert argo_health(g) == "Suspended"
    assert g.vd()["metadata"]["annotations"]["visionfleet.io/paused"] == "true"
    vision(cluster, "resume", "doorbell", "-n", namespace)
    g.wait_phase("RollingOut")
    assert "visionfleet.io/paused" not in g.vd()["metadata"].get("annotations", {})

    done = vision(cluster, "promote", "doorbell", "-n", namespace, "--wait", "--timeout", "60").stdout
    assert "Healthy" in done
    v2 = g.status()["stableRevision"]
    assert v2 != v1

    g.apply(vd_with(model__version="3", rollout__steps=SLOW))
    g.wait_phase("RollingOut")
    aborted = vision(cluster, "abort", "doorbell", "-n", namespace, "--wait", "--timeout", "60").stdout
    assert "Aborted" in aborted  # handled: the phase may still read RollingBack while the canary goes
    g.wait_phase("RolledBack")
    assert argo_health(g) == "Degraded"
    watched = vision(cluster, "watch", "doorbell", "-n", namespace, "--until-done", "--timeout", "30").stdout
    assert re.search(r"Phase:\s+RolledBack", watched)
    history = vision(cluster, "history", "doorbell", "-n", namespace).stdout
    outcomes = [line.split()[1] for line in history.splitlines()[2:] if line.strip()]
    assert outcomes == ["Promoted", "Promoted", "Aborted"], history
    # the plugin wrote annotations only, with its own field manager; spec stayed the user's
    vd = cluster.kubectl_json("get", "vd", "doorbell", "-n", namespace, "--show-managed-fields")
    managers = {m["manager"]: m for m in vd["metadata"]["managedFields"]}
    assert "f:spec" not in str(managers["kubectl-vision"].get("fieldsV1", {}))
    assert vd["spec"]["model"]["version"] == "3"
    wait_for(lambda: g.status().get("phase") == "RolledBack", what="RolledBack stays")
