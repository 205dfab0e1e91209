"""End to end: why a compile waits, and a class that cannot schedule does not hold the others.

Given a VisionDeployment whose pvc:// claim does not exist, When it is applied, Then within a few
passes the status says the compile pod waits on the missing PersistentVolumeClaim — the real
kube-scheduler's message, and the spec field that names the claim.

Given a class whose nodeSelector matches no node and a short compile.scheduleTimeout, When it is
applied, Then that class's compile fails once the timeout passes (its Job deleted, an Event), while
the other class compiles and is promoted.

Given a revision whose compile Job waits (unschedulable), When the spec changes, Then the superseded
revision's running Jobs are deleted (a finished one is left to its TTL).
"""

from __future__ import annotations

import copy

import pytest

from ..helpers import wait_for
from .test_operator_rollout import VD, Given

pytestmark = pytest.mark.cluster


def conditions(st):
    return {c["type"]: c for c in st.get("conditions") or []}


def test_a_missing_claim_is_said_within_a_few_passes(cluster, operator, namespace):
    obj = copy.deepcopy(VD)
    obj["spec"]["model"]["uri"] = "pvc://absent/m.onnx"
    obj["spec"]["serving"] = {"modelRepository": "pvc://absent/repository"}
    g = Given(cluster, namespace).apply(obj)

    def told():
        st = g.status()
        classes = {c["name"]: c for c in st.get("classes") or []}
        msgs = [(c.get("compile") or {}).get("message") or "" for c in classes.values()]
        return st if classes and all('persistentvolumeclaim "absent" not found' in m for m in msgs) else None

    st = wait_for(told, timeout=30, what="the compile pods' wait on the missing claim in status")
    for c in st["classes"]:
        compile_ = c["compile"]
        assert compile_["state"] == "Pending" and compile_["message"].startswith("waiting: compile pod ")
        assert "spec.model.uri and spec.serving.modelRepository name PersistentVolumeClaim 'absent'" \
            in compile_["message"]
        assert compile_["message"] in c["message"], "the class message says it too"
    conds = conditions(st)
    assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == ("True", "ClaimNotFound")
    assert f"does not exist in namespace {namespace}" in conds["Degraded"]["message"]
    assert conds["Progressing"]["reason"] == "PodsWaiting"
    assert 'persistentvolumeclaim "absent" not found' in conds["Progressing"]["message"]
    assert st["phase"] == "Compiling"
    events = g.events()
    assert any(t == "Warning" and r == "ClaimNotFound" for t, r, _ in events)
    assert any(t == "Warning" and r == "CompileWaiting" and "absent" in m for t, r, m in events)
    # kubectl get vd -o wide shows the Progressing message
    wide = cluster.kubectl("get", "vd", "doorbell", "-n", namespace, "-o", "wide").stdout
    assert 'persistentvolumeclaim "absent" not found' in wide


def test_a_class_that_cannot_schedule_fails_after_schedule_timeout_and_the_other_is_promoted(
        cluster, operator, namespace):
    obj = copy.deepcopy(VD)
    ghost = {"name": "ghost", "nodeSelector": {"node.kubernetes.io/instance-type": "no-such-type"},
             "runtime": "onnxruntime"}
    obj["spec"]["fleet"]["classes"] = [ghost, obj["spec"]["fleet"]["classes"][1]]
    obj["spec"]["compile"] = {"scheduleTimeout": "15s"}
    g = Given(cluster, namespace).apply(obj)

    def waiting():
        st = g.status()
        ghost_ = next((c for c in st.get("classes") or [] if c["name"] == "ghost"), {})
        return "is unschedulable" in ((ghost_.get("compile") or {}).get("message") or "") and st

    st = wait_for(waiting, timeout=30, what="ghost's compile pod reported unschedulable")
    assert st["phase"] == "Compiling", "the other class waits while ghost may still schedule"
    st = g.wait_phase("Healthy", timeout=90)
    classes = {c["name"]: c for c in st["classes"]}
    assert classes["ghost"]["compile"]["state"] == "Failed"
    message = classes["ghost"]["compile"]["message"]
    assert "compile.scheduleTimeout 15s" in message and "node affinity/selector" in message, message
    assert classes["xeon"]["compile"]["state"] == "Succeeded" and classes["xeon"]["stableRevision"]
    wait_for(lambda: {j["metadata"]["labels"]["visionfleet.io/class"] for j in g.objects("jobs")} == {"xeon"},
             timeout=30, what="ghost's Job deleted")
    assert any(t == "Warning" and r == "CompileUnschedulable" and "ghost" in m for t, r, m in g.events())
    assert conditions(st)["Degraded"]["reason"] == "CompileFailed"


def test_a_superseded_revisions_waiting_job_is_deleted(cluster, operator, namespace):
    obj = copy.deepcopy(VD)
    ghost = {"name": "ghost", "nodeSelector": {"node.kubernetes.io/instance-type": "no-such-type"},
             "runtime": "onnxruntime"}
    obj["spec"]["fleet"]["classes"] = [ghost, obj["spec"]["fleet"]["classes"][1]]
    g = Given(cluster, namespace).apply(obj)
    st = wait_for(lambda: (s := g.status()).get("canaryRevision") and any(
        "is unschedulable" in ((c.get("compile") or {}).get("message") or "") for c in s.get("classes") or []) and s,
        timeout=30, what="ghost's compile pod waiting")
    v1 = st["canaryRevision"]

    def jobs_of_v1():
        return {j["metadata"]["labels"]["visionfleet.io/class"]: j.get("status", {}) for j in g.objects("jobs")
                if j["metadata"]["labels"]["visionfleet.io/revision"] == v1}

    assert "ghost" in jobs_of_v1()
    obj["spec"]["model"]["version"] = "2"
    g.apply(obj)
    wait_for(lambda: (s := g.status()).get("canaryRevision") not in (None, v1), timeout=30, what="revision 2")

    left = wait_for(lambda: "ghost" not in (j := jobs_of_v1()) and (j,), timeout=30,
                    what="the superseded revision's waiting Job deleted")[0]
    # xeon's Job is deleted too if it was still running then; a finished one is left to its TTL
    assert all(j.get("succeeded") == 1 for j in left.values()), left
