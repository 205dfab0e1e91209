"""Children held to what the operator renders (act/apply.py): the containment check against the
objects as the API server returns them (its defaults filled in, quantities canonicalised), the
restore of a child someone changed (server-side apply with force + a ChildDrifted Event), and zero
writes when nothing changed."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from visionfleet.act import apply as act
from visionfleet.act.apply import (
    UNSET,
    WriteCounter,
    apply_plan,
    contained,
    differences,
    drift_message,
    parse_quantity,
    render,
)
from visionfleet.api.spec import VisionDeploymentSpec
from visionfleet.api.status import ChosenBatching, CompileResult, VisionDeploymentStatus
from visionfleet.builders.manifests import (
    compile_image,
    ANNOTATION_APPLIED,
    build_compile_job,
    build_config_map,
    build_drift_service,
    build_service,
    build_triton_deployment,
    compile_job_name,
    serving_name,
    with_applied_hash,
)
from visionfleet.planner.classes import resolve_classes
from visionfleet.planner.model import (
    DeleteCompileJob,
    DeleteServing,
    EnsureCompileJob,
    EnsureService,
    EnsureServing,
    Plan,
    Track,
    VisionDeploymentView,
)

from .planner_sim import SPEC

NS, VD, UID, REV = "vision", "doorbell", "uid-1", "0123456789ab"
RESULT = CompileResult(state="Succeeded", artifact="pvc://models/repo/x", accuracy=0.99,
                       batching=ChosenBatching(max_batch_size=8, preferred_batch_sizes=[4, 8],
                                               max_queue_delay_microseconds=400, instance_count=2))
# Quantities as a user writes them, which the API server stores otherwise: 0.5 -> 500m, 1024Mi -> 1Gi,
# 1000m -> 1, and a bare integer.
RESOURCES = {"requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"cpu": "1000m", "memory": "2Gi",
                                                                          "nvidia.com/gpu": 1}}


def spec(image: str = "nvcr.io/nvidia/tritonserver:24.10-py3", drift: bool = True) -> VisionDeploymentSpec:
    raw = copy.deepcopy(SPEC)
    raw["serving"] = {"image": image, "modelRepository": "pvc://models/repository"}
    raw["fleet"]["classes"][0]["resources"] = RESOURCES
    if drift:
        raw["analysis"]["drift"] = {"detector": "bbsd-ks", "pValue": 0.01, "window": 500}
    return VisionDeploymentSpec.model_validate(raw)


def cls(s: VisionDeploymentSpec, name: str = "l4"):
    return next(c for c in resolve_classes(s, []) if c.name == name)


# -- what the API server makes of what we send --------------------------------------------------

CANONICAL = {"0.5": "500m", "1024Mi": "1Gi", "1000m": "1", 1: "1"}


def _container_defaults(c: dict[str, Any]) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("imagePullPolicy", "IfNotPresent")
    for p in c.get("ports", []):
        p.setdefault("protocol", "TCP")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if probe in c:
            c[probe].setdefault("timeoutSeconds", 1)
            c[probe].setdefault("successThreshold", 1)
            c[probe].setdefault("failureThreshold", 3)
            c[probe]["httpGet"].setdefault("scheme", "HTTP")
    for part in ("requests", "limits"):
        for k, v in list((c.get("resources") or {}).get(part, {}).items()):
            c["resources"][part][k] = CANONICAL.get(v, v)
    for m in c.get("volumeMounts", []):
        if m.get("readOnly") is False:  # omitempty
            del m["readOnly"]


def _pod_defaults(pod: dict[str, Any]) -> None:
    pod.setdefault("restartPolicy", "Always")
    pod.setdefault("dnsPolicy", "ClusterFirst")
    pod.setdefault("schedulerName", "default-scheduler")
    pod.setdefault("terminationGracePeriodSeconds", 30)
    if not pod.get("nodeSelector"):  # an empty map is omitted
        pod.pop("nodeSelector", None)
    for c in pod["containers"]:
        _container_defaults(c)
    for v in pod.get("volumes", []):
        if "configMap" in v:
            v["configMap"].setdefault("defaultMode", 420)
        if v.get("persistentVolumeClaim", {}).get("readOnly") is False:
            del v["persistentVolumeClaim"]["readOnly"]


def served(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` as a list response returns it once created: no apiVersion/kind on the item,
    server metadata, every default the API server fills in, canonical quantities, a status."""
    obj = json.loads(json.dumps(manifest))
    kind = obj.pop("kind")
    obj.pop("apiVersion")
    md = obj["metadata"]
    md.update(uid="5b0c2c9e-8f0a-4c1e-9d55-0e5b3d3b9a11", resourceVersion="48213", generation=1,
              creationTimestamp="2026-11-28T14:38:46Z",
              managedFields=[{"manager": "visionfleet", "operation": "Apply", "apiVersion": "v1",
                              "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}])
    if kind == "Deployment":
        md.setdefault("annotations", {})["deployment.kubernetes.io/revision"] = "1"
        s = obj["spec"]
        s.update(progressDeadlineSeconds=600, revisionHistoryLimit=10)
        s["template"]["metadata"]["creationTimestamp"] = None
        _pod_defaults(s["template"]["spec"])
        s.setdefault("replicas", 1)  # an apply without the field (an HPA's Deployment): what is there stays
        obj["status"] = {"observedGeneration": 1, "replicas": s["replicas"], "readyReplicas": s["replicas"],
                         "availableReplicas": s["replicas"], "updatedReplicas": s["replicas"],
                         "conditions": [{"type": "Available", "status": "True"}]}
    elif kind == "Service":
        s = obj["spec"]
        ip = s.get("clusterIP", "10.96.14.7")  # a headless Service keeps "None"
        s.update(clusterIP=ip, clusterIPs=[ip], type="ClusterIP", sessionAffinity="None",
                 ipFamilies=["IPv4"], ipFamilyPolicy="SingleStack", internalTrafficPolicy="Cluster")
        for p in s["ports"]:
            p.setdefault("protocol", "TCP")
        obj["status"] = {"loadBalancer": {}}
    elif kind == "Job":
        s = obj["spec"]
        uid = md["uid"]
        ctl = {"batch.kubernetes.io/controller-uid": uid, "controller-uid": uid,
               "batch.kubernetes.io/job-name": md["name"], "job-name": md["name"]}
        s.update(completions=1, parallelism=1, completionMode="NonIndexed", suspend=False,
                 podReplacementPolicy="TerminatingOrFailed", manualSelector=None,
                 selector={"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
        s.pop("manualSelector")
        s["template"]["metadata"]["labels"].update(ctl)
        _pod_defaults(s["template"]["spec"])
        obj["status"] = {"active": 1, "ready": 1, "startTime": "2026-11-28T14:38:47Z"}
    return obj


def deployment(s: VisionDeploymentSpec, replicas: int = 2, track: Any = Track.STABLE) -> dict[str, Any]:
    return with_applied_hash(build_triton_deployment(VD, NS, UID, s, cls(s), REV, replicas, RESULT, track))


# -- containment ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Deployment", "Service", "drift Service", "ConfigMap", "Job"])
def test_what_we_rendered_is_contained_in_the_object_the_api_server_returns(kind):
    s = spec()
    desired = with_applied_hash({
        "Deployment": lambda: build_triton_deployment(VD, NS, UID, s, cls(s), REV, 2, RESULT, Track.CANARY),
        "Service": lambda: build_service(VD, NS, UID),
        "drift Service": lambda: build_drift_service(VD, NS, UID),
        "ConfigMap": lambda: build_config_map(VD, NS, UID, s, cls(s), REV, RESULT),
        "Job": lambda: build_compile_job(VD, NS, UID, s, cls(s), REV),
    }[kind]())
    live = served(desired)
    assert list(differences({k: v for k, v in desired.items() if k not in ("kind", "apiVersion")}, live)) == []
    assert contained(desired, live)


def test_served_really_differs_from_what_we_sent():
    """The fixture is worth something only if the API server's version is not our manifest again."""
    desired = deployment(spec())
    live = served(desired)
    triton = live["spec"]["template"]["spec"]["containers"][0]
    assert triton["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}
    assert desired["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "0.5",
                                                                                             "memory": "1024Mi"}
    assert "kind" not in live and live["spec"]["revisionHistoryLimit"] == 10


@pytest.mark.parametrize("a, b, same", [
    ("1", "1000m", True), ("0.5", "500m", True), ("1024Mi", "1Gi", True), (1, "1", True), ("1e3", "1k", True),
    ("1.5Gi", "1536Mi", True), ("100m", "0.1", True), ("1", "2", False), ("1Gi", "1G", False), ("512Mi", "0.5Gi", True),
])
def test_quantities_compare_by_value(a, b, same):
    assert (parse_quantity(a) == parse_quantity(b)) is same
    desired = {"resources": {"limits": {"cpu": a}}}
    assert contained(desired, {"resources": {"limits": {"cpu": b}}}) is same


def test_quantity_forms_are_not_equal_outside_resources():
    """"1" and "1000m" are one CPU, but two different strings anywhere else (an env value, say)."""
    assert not contained({"env": [{"name": "X", "value": "1"}]}, {"env": [{"name": "X", "value": "1000m"}]})
    assert not contained({"metadata": {"labels": {"a": "1"}}}, {"metadata": {"labels": {"a": "1.0"}}})


def test_omitted_zero_values_and_extra_items():
    assert contained({"a": {"readOnly": False, "n": 0, "s": "", "m": {}, "l": []}}, {"a": {}})
    assert not contained({"a": {"readOnly": True}}, {"a": {}})
    assert not contained({"a": {"readOnly": False}}, {"a": {"readOnly": True}})
    # another manager's container or env var is not ours; our own must be there
    ours = {"containers": [{"name": "triton", "image": "t:1"}]}
    assert contained(ours, {"containers": [{"name": "istio-proxy", "image": "i"}, {"name": "triton", "image": "t:1"}]})
    assert not contained(ours, {"containers": [{"name": "istio-proxy", "image": "i"}]})
    # atomic lists (args, tolerations): the same items in the same order
    assert not contained({"args": ["a", "b"]}, {"args": ["a", "b", "c"]})
    assert not contained({"args": ["a", "b"]}, {"args": ["b", "a"]})
    # numbers: 1 == 1.0, but True is no 1
    assert contained({"n": 1}, {"n": 1.0}) and not contained({"n": 1}, {"n": True})


@pytest.mark.parametrize("change, path, old, new", [
    (lambda d: d["spec"].update(replicas=0), "spec.replicas", 0, 2),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="evil:latest"),
     "spec.template.spec.containers[triton].image", "evil:latest", "nvcr.io/nvidia/tritonserver:24.10-py3"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].update(cpu="2"),
     "spec.template.spec.containers[triton].resources.limits.cpu", "2", "1000m"),
    (lambda d: d["spec"]["template"]["spec"]["containers"].pop(1),
     "spec.template.spec.containers[drift-monitor]", UNSET, None),
    (lambda d: d["metadata"]["labels"].pop("visionfleet.io/class"), "metadata.labels.visionfleet.io/class",
     UNSET, "l4"),
], ids=["scaled-to-zero", "image-set", "limit-raised", "sidecar-removed", "label-removed"])
def test_a_change_by_someone_else_is_found_with_its_path(change, path, old, new):
    desired = deployment(spec())
    live = served(desired)
    change(live)
    diffs = list(differences({k: v for k, v in desired.items() if k not in ("kind", "apiVersion")}, live))
    assert diffs and diffs[0][0] == path and diffs[0][1] == old
    if new is not None:
        assert diffs[0][2] == new


def test_drift_message_names_the_object_and_the_first_paths():
    assert drift_message("Deployment", "doorbell-xeon-ab12cd34", [("spec.replicas", 0, 2)]) == \
        "Deployment doorbell-xeon-ab12cd34: spec.replicas was 0, restored to 2"
    many = [(f"p{i}", UNSET, "v") for i in range(5)]
    msg = drift_message("Service", "doorbell", many)
    assert msg == "Service doorbell: p0 was unset, restored to v; p1 was unset, restored to v; " \
                  "p2 was unset, restored to v; and 2 more"


# -- apply_plan against a fake API -----------------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str
    body: Any
    query: list[tuple[str, str]]
    content_type: str


@dataclass
class FakeApi:
    """Stands in for ``act.apply.request``: records every call; an apply answers with the object as the
    API server would keep it (``keep`` rewrites it first, as a mutating webhook would)."""

    calls: list[Call] = field(default_factory=list)
    fail: dict[tuple[str, str], int] = field(default_factory=dict)
    keep: Any = None

    def __call__(self, api, method, path, body=None, query=None, content_type="application/json"):
        if isinstance(body, bytes):
            body = json.loads(body)
        self.calls.append(Call(method, path, body, list(query or []), content_type))
        for (m, p), status in self.fail.items():
            if m == method and path.endswith(p):
                raise ApiException(status=status, reason="fake")
        if content_type == "application/apply-patch+yaml" and "kind" in body and not path.endswith("/status") \
                and "template" in (body.get("spec") or {"template": 1}):
            kept = served(body)
            return self.keep(kept) if self.keep else kept
        return {}

    def writes(self, method: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.method != "GET" and (method is None or c.method == method)]

    def events(self) -> list[dict[str, Any]]:
        return [c.body for c in self.calls if c.path.endswith("/events")]


@pytest.fixture
def fake(monkeypatch):
    f = FakeApi()
    monkeypatch.setattr(act, "request", f)
    act._SERVER_KEEPS.clear()
    return f


def view(s: VisionDeploymentSpec | None = None) -> VisionDeploymentView:
    return VisionDeploymentView(name=VD, namespace=NS, generation=1, spec=s or spec(), status=VisionDeploymentStatus(),
                                uid=UID)


def serving_plan(s: VisionDeploymentSpec, replicas: int = 2) -> Plan:
    return Plan(actions=[EnsureService(), EnsureServing(cls(s), REV, replicas, RESULT, Track.STABLE, s)],
                status=VisionDeploymentStatus(), events=[], requeue_seconds=30)


def live_of(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): served(o) for o in objs}


def rendered(vd: VisionDeploymentView, plan: Plan) -> list[dict[str, Any]]:
    return [with_applied_hash(o) for o in render(vd, plan)[0]]


def test_steady_state_makes_no_write(fake):
    vd, p = view(), serving_plan(spec())
    live = live_of(rendered(vd, p))
    assert {k for k, _ in live} == {"Service", "ConfigMap", "Deployment"} and len(live) == 5  # with the drift and metrics Services
    w = apply_plan(None, vd, p, live)
    assert w.total == 0 and fake.calls == []


def test_absent_children_are_created_without_a_drift_event(fake):
    vd, p = view(), serving_plan(spec())
    w = apply_plan(None, vd, p, {})
    assert w.applies == 5 and w.events == 0
    assert all(c.method == "PATCH" and ("fieldManager", "visionfleet") in c.query and ("force", "true") in c.query
               for c in fake.calls)


def test_a_scaled_down_deployment_is_restored_with_a_warning(fake):
    vd, p = view(), serving_plan(spec())
    live = live_of(rendered(vd, p))
    name = serving_name(VD, "l4", REV)
    live[("Deployment", name)]["spec"]["replicas"] = 0  # kubectl scale --replicas=0
    w = apply_plan(None, vd, p, live)
    assert (w.applies, w.events) == (1, 1)
    patch = fake.writes("PATCH")[0]
    assert patch.path == f"/apis/apps/v1/namespaces/{NS}/deployments/{name}" and patch.body["spec"]["replicas"] == 2
    event = fake.events()[0]
    assert event["type"] == "Warning" and event["reason"] == "ChildDrifted"
    assert event["message"] == f"Deployment {name}: spec.replicas was 0, restored to 2"
    assert event["involvedObject"]["kind"] == "VisionDeployment" and event["involvedObject"]["uid"] == UID


def test_kubectl_set_image_is_restored(fake):
    vd, p = view(), serving_plan(spec())
    live = live_of(rendered(vd, p))
    dep = live[("Deployment", serving_name(VD, "l4", REV))]
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox"
    apply_plan(None, vd, p, live)
    assert "containers[triton].image was busybox, restored to nvcr.io/nvidia/tritonserver:24.10-py3" \
        in fake.events()[0]["message"]


def test_a_planned_change_is_applied_without_a_drift_event(fake):
    """The canary scaled 1 -> 2 by the planner: our own wish changed (the applied hash says so)."""
    vd = view()
    live = live_of(rendered(vd, serving_plan(spec(), replicas=1)))
    w = apply_plan(None, vd, serving_plan(spec(), replicas=2), live)
    assert (w.applies, w.events) == (1, 0)


def test_fields_we_do_not_render_are_not_ours(fake):
    """An HPA's replicas aside, things others add (an annotation, a sidecar, a toleration in another
    manager's list entry) are left alone: no write."""
    vd, p = view(), serving_plan(spec())
    live = live_of(rendered(vd, p))
    dep = live[("Deployment", serving_name(VD, "l4", REV))]
    dep["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"] = "x"
    dep["spec"]["template"]["spec"]["containers"].append({"name": "istio-proxy", "image": "istio/proxyv2"})
    dep["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] = "2026-11-28T15:00:00Z"
    assert apply_plan(None, vd, p, live).total == 0


def test_what_the_api_server_keeps_after_our_apply_is_not_fought_every_pass(fake):
    """A mutating webhook pins the image by digest: one apply, then no more (a loop otherwise)."""
    name = serving_name(VD, "l4", REV)

    def pin(obj):
        for c in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            c["image"] = c["image"].split(":")[0] + "@sha256:" + "a" * 64
        return obj

    fake.keep = pin
    vd, p = view(), serving_plan(spec())
    first = apply_plan(None, vd, p, {})
    assert first.applies == 5
    live = {(c.body["kind"], c.body["metadata"]["name"]): pin(served(c.body)) for c in fake.calls}
    fake.calls.clear()
    assert apply_plan(None, vd, p, live).total == 0
    # someone else's image is still restored
    live[("Deployment", name)]["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox"
    assert apply_plan(None, vd, p, live).applies == 1


def test_render_uses_the_revisions_frozen_spec(fake):
    frozen, now = spec(image="triton:frozen"), spec(image="triton:edited", drift=False)
    vd = view(now)
    p = Plan(actions=[EnsureCompileJob(cls(frozen), REV, frozen),
                      EnsureServing(cls(frozen), REV, 1, RESULT, Track.CANARY, frozen)],
             status=VisionDeploymentStatus(), events=[], requeue_seconds=30)
    objs = {o["kind"]: o for o in render(vd, p)[0]}
    dep = objs["Deployment"]
    assert [c["image"] for c in dep["spec"]["template"]["spec"]["containers"]][0] == "triton:frozen"
    assert any(c["name"] == "drift-monitor" for c in dep["spec"]["template"]["spec"]["containers"]), \
        "the frozen spec has drift on; the edited one does not"
    assert dep["metadata"]["annotations"]["visionfleet.io/track"] == "canary"
    assert objs["Job"]["spec"]["template"]["spec"]["containers"][0]["image"] == compile_image(frozen, cls(frozen))
    assert objs["ConfigMap"]["data"] == build_config_map(VD, NS, UID, frozen, cls(frozen), REV, RESULT)["data"]


def test_an_existing_job_is_never_reapplied(fake):
    s = spec()
    vd = view(s)
    p = Plan(actions=[EnsureCompileJob(cls(s), REV, s)], status=VisionDeploymentStatus(), events=[], requeue_seconds=5)
    name = compile_job_name(VD, "l4", REV)
    assert apply_plan(None, vd, p, {("Job", name): {"metadata": {"name": name}}}).total == 0
    assert apply_plan(None, vd, p, {}).applies == 1


def test_deletes_only_what_was_observed(fake):
    s = spec()
    vd = view(s)
    p = Plan(actions=[DeleteCompileJob("l4", REV), DeleteServing("xeon", REV)], status=VisionDeploymentStatus(),
             events=[], requeue_seconds=5)
    job, serving = compile_job_name(VD, "l4", REV), serving_name(VD, "xeon", REV)
    assert apply_plan(None, vd, p, {}).total == 0
    w = apply_plan(None, vd, p, {("Job", job): {}, ("Deployment", serving): {}, ("ConfigMap", serving): {}})
    assert w.deletes == 3
    deletes = fake.writes("DELETE")
    assert deletes[0].path == f"/apis/batch/v1/namespaces/{NS}/jobs/{job}"
    assert deletes[0].body == {"propagationPolicy": "Background"}
    assert {d.path.rsplit("/", 2)[1] for d in deletes[1:]} == {"deployments", "configmaps"}


def test_writes_are_counted_into_the_given_counter(fake):
    counter = WriteCounter()
    vd, p = view(), serving_plan(spec())
    apply_plan(None, vd, p, {}, counter)
    assert counter.applies == 5


def autoscaled_plan(s: VisionDeploymentSpec, replicas: int = 2) -> Plan:
    return Plan(actions=[EnsureService(), EnsureServing(cls(s), REV, replicas, RESULT, Track.STABLE, s, autoscaled=True)],
                status=VisionDeploymentStatus(), events=[], requeue_seconds=30)


def managed(obj: dict[str, Any], *entries: tuple[str, str, bool]) -> dict[str, Any]:
    """The object with managedFields: (manager, operation, holds spec.replicas)."""
    obj["metadata"]["managedFields"] = [
        {"manager": m, "operation": op, "fieldsV1": {"f:spec": {"f:replicas": {}} if rep else {"f:template": {}}}}
        for m, op, rep in entries]
    return obj


def test_an_autoscaled_deployment_is_created_sized_then_its_replicas_handed_over(fake):
    vd, p = view(), autoscaled_plan(spec(), replicas=3)
    apply_plan(None, vd, p, {})
    name = serving_name(VD, "l4", REV)
    calls = [c for c in fake.writes("PATCH") if c.path.endswith(f"/deployments/{name}")]
    # created with its size; another manager applies the same value; ours lets go of the field
    assert [(dict(c.query)["fieldManager"], c.body["spec"].get("replicas")) for c in calls] == \
        [("visionfleet", 3), ("visionfleet-handover", 3), ("visionfleet", None)]
    assert calls[1].body == {"apiVersion": "apps/v1", "kind": "Deployment",
                             "metadata": {"name": name, "namespace": NS}, "spec": {"replicas": 3}}


def test_the_operator_never_sets_what_the_hpa_holds(fake):
    vd = view()
    p = autoscaled_plan(spec(), replicas=2)
    live = live_of(rendered(vd, p))
    name = serving_name(VD, "l4", REV)
    dep = live[("Deployment", name)]
    dep["spec"]["replicas"] = 9  # the HPA scaled it
    managed(dep, ("visionfleet", "Apply", False), ("visionfleet-handover", "Apply", True),
            ("kube-controller-manager", "Update", True))
    dep["metadata"]["annotations"] = {**dep["metadata"]["annotations"],
                                      **{k: v for k, v in rendered(vd, p)[-1]["metadata"]["annotations"].items()}}
    apply_plan(None, vd, p, live)
    assert not [c for c in fake.writes("PATCH") if c.path.endswith(f"/deployments/{name}")
                and "replicas" in c.body.get("spec", {})], "the operator wrote the HPA's field"
    assert not fake.events(), "an HPA's scaling is not drift"


def test_an_hpa_no_longer_wanted_is_deleted(fake):
    vd, p = view(), serving_plan(spec())
    live = live_of(rendered(vd, p))
    live[("HorizontalPodAutoscaler", f"{VD}-l4")] = {"metadata": {"name": f"{VD}-l4"}}
    w = apply_plan(None, vd, p, live)
    assert w.deletes == 1
    assert fake.writes("DELETE")[0].path.endswith(f"/horizontalpodautoscalers/{VD}-l4")
