"""End to end on the local fleet: the operator process, the real API server, kwok nodes.

Given a VisionDeployment, When it is applied / changed / deleted, Then the cluster holds exactly
what the design says, and the status tells the SRE why.
"""

from __future__ import annotations

import copy
import json
import signal
import time

import pytest

from visionfleet.builders.manifests import LABEL_CLASS as CLASS_LABEL_VF
from visionfleet.builders.manifests import LABEL_VD
from visionfleet_e2e.fleet import CLASS_LABEL

from ..helpers import wait_for

pytestmark = pytest.mark.cluster

VD = {
    "apiVersion": "visionfleet.io/v1alpha1",
    "kind": "VisionDeployment",
    "metadata": {"name": "doorbell"},
    "spec": {
        "model": {"name": "efficientnet-lite0", "version": "1", "uri": "pvc://models/m.onnx",
                  "inputs": [{"name": "images", "dataType": "FP32", "dims": [3, 224, 224]}],
                  "outputs": [{"name": "logits", "dataType": "FP32", "dims": [1000]}]},
        "fleet": {"classes": [
            {"name": "l4", "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
             "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
             "runtime": "tensorrt", "precision": "fp16", "resources": {"limits": {"nvidia.com/gpu": 1}},
             "replicas": {"min": 2, "max": 4}},
            {"name": "xeon", "nodeSelector": {"node.kubernetes.io/instance-type": "c7i.4xlarge"},
             "runtime": "onnxruntime"},
        ]},
        "serving": {"modelRepository": "pvc://models/repository"},
        "rollout": {"steps": [{"setWeight": 50, "pause": "2s"}, {"setWeight": 100}]},
    },
}


def vd_with(**spec_changes):
    obj = copy.deepcopy(VD)
    for path, value in spec_changes.items():
        node = obj["spec"]
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        node[keys[-1]] = value
    return obj


class Given:
    """Given/When/Then helpers around one VisionDeployment in one namespace."""

    def __init__(self, cluster, namespace, name="doorbell"):
        self.c, self.ns, self.name = cluster, namespace, name

    def apply(self, obj):
        obj = copy.deepcopy(obj)
        obj["metadata"]["name"] = self.name
        self.c.kubectl("apply", "--server-side", "--field-manager=tests", "-n", self.ns, "-f", "-",
                       input=json.dumps(obj))
        return self

    def vd(self):
        return self.c.kubectl_json("get", "vd", self.name, "-n", self.ns)

    def status(self):
        return self.vd().get("status", {})

    def wait_phase(self, phase, timeout=90):
        wait_for(lambda: self.status().get("phase") == phase, timeout=timeout,
                 what=f"phase {phase} (now {self.status().get('phase')})")
        return self.status()

    def objects(self, kind):
        return self.c.kubectl_json("get", kind, "-n", self.ns, "-l", f"{LABEL_VD}={self.name}")["items"]

    def events(self):
        items = self.c.kubectl_json("get", "events", "-n", self.ns,
                                    "--field-selector", f"involvedObject.name={self.name}")["items"]
        return [(e["type"], e["reason"], e["message"]) for e in items]


def test_v1_compiles_on_every_class_and_becomes_healthy(cluster, operator, namespace):
    g = Given(cluster, namespace).apply(VD)
    st = g.wait_phase("Healthy")
    rev = st["stableRevision"]
    classes = {c["name"]: c for c in st["classes"]}
    assert set(classes) == {"l4", "xeon"}
    for c in classes.values():
        assert c["compile"]["state"] == "Succeeded" and c["compile"]["accuracy"] == 0.995
        assert c["stableRevision"] == rev
    jobs = {j["metadata"]["labels"]["visionfleet.io/class"]: j for j in g.objects("jobs")}
    l4_pod = jobs["l4"]["spec"]["template"]["spec"]
    assert l4_pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert l4_pod["automountServiceAccountToken"] is False
    assert l4_pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # the model's claim (pvc://models/...) is mounted where the compile program reads it: writable,
    # since the model repository (pvc://models/repository) lives on the same claim
    # (readOnly false is the default: the API server leaves it out)
    assert {"name": "pvc-0", "persistentVolumeClaim": {"claimName": "models"}} in l4_pod["volumes"]
    # every compile pod ran on a node of its own class
    for pod in g.c.kubectl_json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=compile")["items"]:
        node = g.c.kubectl_json("get", "node", pod["spec"]["nodeName"])
        assert node["metadata"]["labels"][CLASS_LABEL] == pod["metadata"]["labels"]["visionfleet.io/class"]
    deps = {d["metadata"]["labels"]["visionfleet.io/class"]: d for d in g.objects("deployments")}
    assert {k: (d["spec"]["replicas"], d["status"].get("readyReplicas")) for k, d in deps.items()} == \
        {"l4": (2, 2), "xeon": (1, 1)}
    for d in deps.values():
        owner = d["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("VisionDeployment", "doorbell", True)
        assert d["metadata"]["labels"]["visionfleet.io/revision"] == rev
    svc = g.c.kubectl_json("get", "service", "doorbell", "-n", namespace)
    assert svc["spec"]["selector"] == {LABEL_VD: "doorbell", "app.kubernetes.io/component": "triton"}
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds["Available"] == "True" and conds["Compiled"] == "True" and conds["Progressing"] == "False"
    assert st["observedGeneration"] == g.vd()["metadata"]["generation"]
    row = g.c.kubectl("get", "vd", "doorbell", "-n", namespace, "--no-headers").stdout.split()
    assert row[1:3] == ["Healthy", rev]
    assert ("Normal", "Promoted") in [(t, r) for t, r, _ in g.events()]


def test_steady_state_makes_no_writes(cluster, operator, namespace):
    g = Given(cluster, namespace).apply(VD)
    g.wait_phase("Healthy")

    def versions():
        out = {}
        for kind in ("deployments", "configmaps", "services", "jobs"):
            for o in g.objects(kind):
                out[(kind, o["metadata"]["name"])] = o["metadata"]["resourceVersion"]
        return out

    def status_write_time():
        vd = g.c.kubectl_json("get", "vd", "doorbell", "-n", namespace, "--show-managed-fields")
        return [m.get("time") for m in vd["metadata"]["managedFields"]
                if m["manager"] == "visionfleet" and m.get("subresource") == "status"]

    wait_for(lambda: all(d["status"].get("readyReplicas") for d in g.objects("deployments")), what="ready")
    before, status_before = versions(), status_write_time()
    # Nudge the operator with harmless annotation changes: each one triggers a full pass.
    for i in range(3):
        g.c.kubectl("annotate", "vd", "doorbell", "-n", namespace, f"test.visionfleet.io/nudge={i}", "--overwrite")
        time.sleep(1.5)  # room for the pass each nudge triggers; what is asserted is that nothing changed
    assert versions() == before, "children were rewritten in a steady state"
    assert status_write_time() == status_before, "status was rewritten in a steady state"


def test_children_changed_by_hand_are_restored_with_an_event(cluster, operator, namespace):
    g = Given(cluster, namespace).apply(VD)
    rev = g.wait_phase("Healthy")["stableRevision"]
    wait_for(lambda: all(d["status"].get("readyReplicas") for d in g.objects("deployments")), what="ready")
    stable = next(d for d in g.objects("deployments") if d["metadata"]["labels"][CLASS_LABEL_VF] == "l4")
    name = stable["metadata"]["name"]
    image = stable["spec"]["template"]["spec"]["containers"][0]["image"]
    g.c.kubectl("scale", "deployment", name, "-n", namespace, "--replicas=0")
    g.c.kubectl("set", "image", f"deployment/{name}", "-n", namespace, "triton=registry.example/foreign:1")
    # Nothing nudges the operator about its children: the next resync (30 s at most) restores them.
    restored = wait_for(lambda: (d := g.c.kubectl_json("get", "deployment", name, "-n", namespace))["spec"]["replicas"]
                        == 2 and d["spec"]["template"]["spec"]["containers"][0]["image"] == image and d,
                        timeout=60, what="the operator to restore replicas and image")
    assert restored["metadata"]["labels"]["visionfleet.io/revision"] == rev
    drifted = [m for t, r, m in g.events() if r == "ChildDrifted"]
    assert drifted and only_warnings(g, "ChildDrifted"), g.events()
    assert any("spec.replicas was 0, restored to 2" in m for m in drifted), drifted
    assert g.status()["phase"] == "Healthy"


def only_warnings(g, reason):
    return all(t == "Warning" for t, r, _ in g.events() if r == reason)


def test_new_revision_walks_the_steps_and_is_promoted(cluster, operator, namespace):
    g = Given(cluster, namespace).apply(VD)
    v1 = g.wait_phase("Healthy")["stableRevision"]
    g.apply(vd_with(model__version="2"))
    seen = set()

    def promoted():
        st = g.status()
        if st.get("canaryRevision"):
            seen.add((st.get("phase"), st.get("canaryWeight")))
        return st.get("phase") == "Healthy" and st.get("stableRevision") != v1 and st
    st = wait_for(promoted, timeout=90, interval=0.3, what="the new revision promoted")
    assert ("RollingOut", 50) in seen or ("Verifying", 50) in seen
    assert [h["outcome"] for h in st["history"]] == ["Promoted", "Promoted"]
    wait_for(lambda: {d["metadata"]["labels"]["visionfleet.io/revision"] for d in g.objects("deployments")}
             == {st["stableRevision"]}, what="the old stable's Deployments to be removed")


def test_compile_failure_on_one_class_is_reported_and_the_others_go_on(cluster, operator, namespace):
    failing = vd_with()
    failing["spec"]["fleet"]["classes"][0]["tolerations"].append(
        {"key": "sim.visionfleet.io/outcome", "operator": "Equal", "value": "OOMKilled", "effect": "NoSchedule"})
    g = Given(cluster, namespace).apply(failing)
    st = g.wait_phase("Healthy")
    classes = {c["name"]: c for c in st["classes"]}
    assert classes["l4"]["compile"]["state"] == "Failed"
    assert "OOMKilled" in classes["l4"]["compile"]["message"]
    assert classes["xeon"]["compile"]["state"] == "Succeeded" and classes["xeon"]["stableRevision"]
    assert "stableRevision" not in classes["l4"]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Degraded"]["status"] == "True" and "l4" in conds["Degraded"]["message"]
    assert {d["metadata"]["labels"]["visionfleet.io/class"] for d in g.objects("deployments")} == {"xeon"}
    assert any(t == "Warning" and r == "CompileFailed" and "l4" in m for t, r, m in g.events())


def test_spec_change_mid_rollout_restarts_from_stable(cluster, operator, namespace):
    g = Given(cluster, namespace).apply(VD)
    v1 = g.wait_phase("Healthy")["stableRevision"]
    slow_steps = [{"setWeight": 50, "pause": "1h"}, {"setWeight": 100}]
    g.apply(vd_with(model__version="2", rollout__steps=slow_steps))
    st = g.wait_phase("RollingOut")
    v2 = st["canaryRevision"]
    assert {d["metadata"]["labels"]["visionfleet.io/revision"] for d in g.objects("deployments")} == {v1, v2}
    g.apply(vd_with(model__version="3", rollout__steps=slow_steps))
    st = wait_for(lambda: (s := g.status()).get("canaryRevision") not in (None, v2) and s, what="a new canary")
    assert st["stableRevision"] == v1 and st["history"][-1]["outcome"] == "Superseded"
    wait_for(lambda: v2 not in {d["metadata"]["labels"]["visionfleet.io/revision"] for d in g.objects("deployments")},
             what="the superseded canary's Deployments to be removed")


def test_abort_annotation_rolls_back(cluster, operator, namespace):
    g = Given(cluster, namespace).apply(VD)
    v1 = g.wait_phase("Healthy")["stableRevision"]
    g.apply(vd_with(model__version="2", rollout__steps=[{"setWeight": 50, "pause": "1h"}, {"setWeight": 100}]))
    g.wait_phase("RollingOut")
    g.c.kubectl("annotate", "vd", "doorbell", "-n", namespace, "visionfleet.io/abort=by-sre")
    st = g.wait_phase("RolledBack")
    assert st["stableRevision"] == v1 and st["history"][-1]["outcome"] == "Aborted"
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds["RolledBack"] == "True"
    assert any(r == "RolledBack" for _, r, _ in g.events())
    wait_for(lambda: {d["metadata"]["labels"]["visionfleet.io/revision"] for d in g.objects("deployments")} == {v1},
             what="only the stable's Deployments")


def test_deleting_the_visiondeployment_removes_everything_it_created(cluster, operator, namespace):
    g = Given(cluster, namespace).apply(VD)
    g.wait_phase("Healthy")
    assert g.objects("deployments") and g.objects("jobs") and g.objects("configmaps")
    g.c.kubectl("delete", "vd", "doorbell", "-n", namespace, "--timeout=60s", timeout=90)
    for kind in ("deployments", "jobs", "configmaps", "services"):
        wait_for(lambda: not g.objects(kind), timeout=60, what=f"{kind} garbage-collected")


def test_waves_roll_out_one_class_group_after_another(cluster, operator, namespace):
    waved = vd_with(rollout={"steps": [{"setWeight": 50, "pause": "3s"}, {"setWeight": 100}],
                             "waves": [["xeon"], ["l4"]]})
    g = Given(cluster, namespace).apply(waved)
    v1 = g.wait_phase("Healthy")["stableRevision"]
    waved["spec"]["model"]["version"] = "2"
    g.apply(waved)
    seen = set()

    def done():
        st = g.status()
        canary = st.get("canaryRevision")
        if canary:
            classes = {d["metadata"]["labels"]["visionfleet.io/class"] for d in g.objects("deployments")
                       if d["metadata"]["labels"]["visionfleet.io/revision"] == canary}
            after = g.status()
            # Only a sample whose status did not move while the Deployments were listed.
            if (after.get("wave"), after.get("canaryRevision")) == (st.get("wave"), canary):
                seen.add((st.get("wave"), frozenset(classes)))
        return st.get("stableRevision") not in (None, v1) and st
    st = wait_for(done, timeout=120, interval=0.3, what="promotion after both waves")
    assert (0, frozenset({"xeon"})) in seen, seen
    assert all(classes <= {"xeon"} for wave, classes in seen if wave == 0), "l4 waits for wave 1"
    assert (1, frozenset({"xeon", "l4"})) in seen, seen
    assert st["phase"] == "Healthy"


def test_operator_killed_mid_rollout_resumes_from_status(cluster, operator, namespace):
    g = Given(cluster, namespace).apply(VD)
    v1 = g.wait_phase("Healthy")["stableRevision"]
    g.apply(vd_with(model__version="2", rollout__steps=[{"setWeight": 50, "pause": "6s"}, {"setWeight": 100}]))
    st = g.wait_phase("RollingOut")
    v2 = st["canaryRevision"]
    jobs_before = {j["metadata"]["name"] for j in g.objects("jobs")}
    operator.stop(signal.SIGKILL)
    try:
        # While it is down nothing moves on.
        time.sleep(3)
        assert g.status()["canaryRevision"] == v2 and g.status()["step"] == 0
    finally:
        operator.start()
    st = wait_for(lambda: (s := g.status()).get("stableRevision") == v2 and s, timeout=90,
                  what="the restarted operator to finish the rollout")
    assert st["phase"] == "Healthy" and [h["outcome"] for h in st["history"]] == ["Promoted", "Promoted"]
    assert {j["metadata"]["name"] for j in g.objects("jobs")} == jobs_before, "no compile Job was recreated"
    assert v1 != v2
