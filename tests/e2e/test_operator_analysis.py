"""Analysis on real Prometheus: a slow, failing or drifted canary is rolled back automatically, a
good one is promoted, and an unreachable Prometheus is never taken for a pass."""

from __future__ import annotations

import copy
import time

import pytest

from ..helpers import wait_for
from .test_operator_rollout import VD, Given

pytestmark = pytest.mark.cluster


def analysed(url, version="1", drift=False, **analysis):
    obj = copy.deepcopy(VD)
    obj["spec"]["model"]["version"] = version
    obj["spec"]["rollout"] = {"steps": [{"setWeight": 50, "pause": "4s"}, {"setWeight": 100}]}
    obj["spec"]["analysis"] = {"interval": "2s", "prometheus": {"url": url, "timeout": "2s"},
                               "slo": {"latencyP99Ms": 20, "errorRate": 0.01, "minRequests": 10},
                               "failureLimit": 1, "inconclusiveLimit": 3, **analysis}
    if drift:
        obj["spec"]["analysis"]["drift"] = {"pValue": 0.01, "window": 500}
        # Each revision's drift reference is built from its calibration set (the CRD insists).
        obj["spec"].setdefault("compile", {})["calibration"] = {"uri": "pvc://models/calib.npz"}
    return obj


def healthy_v1(cluster, namespace, url, behave, **kw):
    g = Given(cluster, namespace).apply(analysed(url, **kw))
    v1 = g.wait_phase("Healthy")["stableRevision"]
    behave(v1)  # the stable revision keeps behaving well whatever the default becomes
    return g, v1


def only_revision_serving(g, revision):
    return {d["metadata"]["labels"]["visionfleet.io/revision"] for d in g.objects("deployments")} == {revision}


def test_slow_canary_is_rolled_back(cluster, operator, prometheus, behave, namespace):
    g, v1 = healthy_v1(cluster, namespace, prometheus.url, behave)
    behave(None, p99_ms=45.0)  # any new revision is slow
    g.apply(analysed(prometheus.url, version="2"))
    st = g.wait_phase("RolledBack", timeout=120)
    assert st["stableRevision"] == v1
    assert st["analysis"]["verdict"] == "Failed" and st["analysis"]["p99Ms"] == pytest.approx(45.0)
    last = st["history"][-1]
    assert last["outcome"] == "RolledBack" and "p99 45.0 ms > 20 ms" in last["reason"]
    assert {c["type"]: c["status"] for c in st["conditions"]}["RolledBack"] == "True"
    assert any(t == "Warning" and r == "RolledBack" for t, r, _ in g.events())
    wait_for(lambda: only_revision_serving(g, v1), what="all traffic and replicas back on stable")
    row = g.c.kubectl("get", "vd", "doorbell", "-n", namespace, "--no-headers").stdout.split()
    assert row[1] == "RolledBack" and row[2] == v1 and "45" in row[3]


def test_failing_canary_is_rolled_back(cluster, operator, prometheus, behave, namespace):
    g, v1 = healthy_v1(cluster, namespace, prometheus.url, behave)
    behave(None, error_ratio=0.2)
    g.apply(analysed(prometheus.url, version="2"))
    st = g.wait_phase("RolledBack", timeout=120)
    assert "error rate 20.00% > 1.00%" in st["history"][-1]["reason"]
    assert st["stableRevision"] == v1


def test_good_canary_is_measured_and_promoted(cluster, operator, prometheus, behave, namespace):
    g, v1 = healthy_v1(cluster, namespace, prometheus.url, behave)
    g.apply(analysed(prometheus.url, version="2"))
    st = wait_for(lambda: (s := g.status()).get("stableRevision") not in (None, v1) and s, timeout=120,
                  what="the good canary promoted")
    assert st["phase"] == "Healthy" and st["analysis"]["verdict"] == "Passed"
    assert st["analysis"]["p99Ms"] == pytest.approx(8.0) and st["analysis"]["requests"] >= 10
    wait_for(lambda: only_revision_serving(g, st["stableRevision"]), what="old stable removed")


def test_drifted_canary_is_rolled_back(cluster, operator, prometheus, behave, namespace):
    g, v1 = healthy_v1(cluster, namespace, prometheus.url, behave, drift=True)
    behave(None, drift_p_value=0.001)
    g.apply(analysed(prometheus.url, version="2", drift=True))
    st = g.wait_phase("RolledBack", timeout=120)
    # Every canary series reports p=0.001; the provider corrects the smallest by the number of
    # series (one test per pod), so the judged p-value is 0.001 × that count, still < 0.01.
    reason = st["history"][-1]["reason"]
    assert "input drift: p=0.00" in reason and "< 0.01" in reason, reason


def test_unreachable_prometheus_pauses_and_never_promotes(cluster, operator, prometheus, behave, namespace):
    g, v1 = healthy_v1(cluster, namespace, prometheus.url, behave)
    dead = "http://127.0.0.1:9"  # discard port: connection refused
    g.apply(analysed(dead, version="2"))
    st = wait_for(lambda: (s := g.status()).get("phase") == "Paused" and s, timeout=120, interval=0.3,
                  what="a pause once provider errors pass consecutiveErrorLimit and inconclusiveLimit")
    paused = next(c for c in st["conditions"] if c["type"] == "Paused")
    assert paused["reason"] == "AnalysisInconclusive" and "Prometheus unreachable" in paused["message"]
    assert st["analysis"]["verdict"] == "Error" and st["analysis"]["errors"] >= 4
    # onInconclusive: Pause (the default): held, never promoted, never rolled back
    end = time.monotonic() + 10
    while time.monotonic() < end:
        s = g.status()
        assert s.get("phase") == "Paused" and s.get("stableRevision") == v1 and s.get("canaryRevision"), s.get("phase")
        time.sleep(0.5)


