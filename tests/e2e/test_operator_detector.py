"""A detector (model.task detection) through the e2e rollout on real Prometheus: v1 compiles with
the detection gate's result, serves with the drift monitor sidecar, and a drifted v2 is rolled back
while v1 keeps serving."""

from __future__ import annotations

import pytest

from ..helpers import wait_for
from .test_operator_analysis import analysed, only_revision_serving
from .test_operator_rollout import Given

pytestmark = pytest.mark.cluster


def detector(url, version="1"):
    """A YOLOX-style detector, 416×416: one raw head [N, 3549, 5 + 1] (objectness layout, one class)."""
    obj = analysed(url, version=version, drift=True)
    obj["spec"]["model"].update(
        name="shelf-yolox", task="detection",
        inputs=[{"name": "images", "dataType": "FP32", "dims": [3, 416, 416]}],
        outputs=[{"name": "detections", "dataType": "FP32", "dims": [3549, 6]}],
        detection={"layout": "objectness", "output": "detections", "scoreThreshold": 0.3})
    return obj


def test_drifted_detector_canary_is_rolled_back(cluster, operator, prometheus, behave, namespace):
    g = Given(cluster, namespace).apply(detector(prometheus.url))
    st = g.wait_phase("Healthy")
    v1 = st["stableRevision"]
    behave(v1)  # the stable revision keeps behaving well
    # The compile result, as the compile Job's termination message reports it for a detector.
    for c in st["classes"]:
        result = c["compile"]
        assert result["state"] == "Succeeded" and result["revision"] == v1, result
        assert result["accuracy"] == 0.995 and result["accuracyMetric"] == "detectionF1", result
        assert result["metrics"] == {"detectionF1": 0.995, "detectionMap50": 0.981}, result
    assert any(r == "CompileSucceeded" and "detectionF1 0.9950" in m for _, r, m in g.events())
    # Every Triton pod of v1 carries the drift monitor sidecar next to Triton.
    pods = g.c.kubectl_json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=triton")["items"]
    assert pods
    for pod in pods:
        assert "drift-monitor" in [c["name"] for c in pod["spec"]["containers"]], pod["metadata"]["name"]

    behave(None, drift_p_value=0.001)  # any new revision sees drifted inputs
    g.apply(detector(prometheus.url, version="2"))
    st = g.wait_phase("RolledBack", timeout=120)
    assert st["stableRevision"] == v1
    reason = st["history"][-1]["reason"]
    assert st["history"][-1]["outcome"] == "RolledBack" and "input drift: p=0.00" in reason and "< 0.01" in reason, \
        reason
    assert any(t == "Warning" and r == "RolledBack" and "input drift" in m for t, r, m in g.events())
    wait_for(lambda: only_revision_serving(g, v1), what="all traffic and replicas back on v1")
