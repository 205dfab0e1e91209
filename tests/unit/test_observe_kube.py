"""gather() (observe/kube.py) against fake list calls: snapshots read back from ControllerRevisions
(an unreadable one left out, and said so), the children as raw JSON for the act layer, the drift
Service among them."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest

from visionfleet.builders.manifests import (
    build_config_map,
    build_controller_revision,
    build_drift_service,
    build_revision_service,
    build_service,
    build_triton_deployment,
    compile_job_name,
    serving_name,
    snapshot_name,
)
from visionfleet.observe.kube import gather
from visionfleet.planner.classes import resolve_classes
from visionfleet.planner.model import ObservedDeployment, RevisionSnapshot, Track
from visionfleet.planner.snapshot import snapshot_to_data

from .test_apply_children import NS, RESULT, REV, UID, VD, cls, served, spec


class Lister:
    """One list call: raw JSON (``_preload_content=False``) or, for Jobs and pods, model-like objects."""

    def __init__(self, items):
        self.items, self.selectors = items, []

    def __call__(self, namespace, label_selector="", _preload_content=True):
        assert namespace == NS
        self.selectors.append(label_selector)
        if _preload_content:
            return SimpleNamespace(items=self.items)
        return SimpleNamespace(data=json.dumps({"kind": "List", "items": self.items}).encode())


def cr(revision: str, data, outcome=None, number=1):
    obj = served(build_controller_revision(VD, NS, UID, revision, data, number, outcome))
    obj["data"] = data
    return obj


def world(crs, deployments=(), services=(), config_maps=(), jobs=()):
    core = SimpleNamespace(list_namespaced_pod=Lister([]), list_namespaced_config_map=Lister(list(config_maps)),
                           list_namespaced_service=Lister(list(services)))
    batch = SimpleNamespace(list_namespaced_job=Lister(list(jobs)))
    apps = SimpleNamespace(list_namespaced_controller_revision=Lister(list(crs)),
                           list_namespaced_deployment=Lister(list(deployments)))
    return core, batch, apps


def test_snapshots_come_back_from_controller_revisions(caplog):
    s = spec()
    snap = RevisionSnapshot(REV, s, tuple(resolve_classes(s, [])))
    crs = [cr(REV, snapshot_to_data(snap), "RolledBack", 3),
           cr("fedcba987654", {"format": 99}),  # written by a newer operator
           cr("aaaaaaaaaaaa", "not a dict")]
    core, batch, apps = world(crs)
    with caplog.at_level(logging.WARNING, logger="visionfleet.observe"):
        obs = gather(core, batch, apps, VD, NS, nodes=[])
    assert obs.snapshots == [RevisionSnapshot(REV, s, snap.classes, "RolledBack")]
    assert apps.list_namespaced_controller_revision.selectors == [
        f"visionfleet.io/vision-deployment={VD},app.kubernetes.io/component=revision"]
    # every one is in live (so none is created over), with what MarkOutcome compares and the number
    names = {n for k, n in obs.live if k == "ControllerRevision"}
    assert names == {snapshot_name(VD, r) for r in (REV, "fedcba987654", "aaaaaaaaaaaa")}
    mine = obs.live[("ControllerRevision", snapshot_name(VD, REV))]
    assert mine["revision"] == 3 and mine["metadata"]["annotations"]["visionfleet.io/outcome"] == "RolledBack"
    assert mine["data"]["revision"] == REV, "the data comes along: a new outcome re-creates the snapshot with it"
    unreadable = [r.getMessage() for r in caplog.records]
    assert len(unreadable) == 2 and all("left out" in m for m in unreadable)
    assert any(snapshot_name(VD, "fedcba987654") in m and "format 99" in m for m in unreadable)


def test_children_are_observed_as_the_api_server_returns_them():
    s = spec()
    c = cls(s)
    dep = served(build_triton_deployment(VD, NS, UID, s, c, REV, 2, RESULT, Track.STABLE))
    dep["status"]["readyReplicas"] = 1
    svcs = [served(build_service(VD, NS, UID)), served(build_drift_service(VD, NS, UID)),
            served(build_revision_service(VD, NS, UID, REV))]
    cm = served(build_config_map(VD, NS, UID, s, c, REV, RESULT))
    job = SimpleNamespace(
        metadata=SimpleNamespace(name=compile_job_name(VD, "l4", REV), labels={"visionfleet.io/class": "l4",
                                                                               "visionfleet.io/revision": REV},
                                 annotations=None),
        status=SimpleNamespace(conditions=[SimpleNamespace(type="Complete", status="True")], active=0))
    core, batch, apps = world([], [dep], svcs, [cm], [job])
    obs = gather(core, batch, apps, VD, NS, nodes=[])
    assert obs.deployments == [ObservedDeployment("l4", REV, 2, 1)]
    assert obs.live[("Deployment", serving_name(VD, "l4", REV))] == dep
    assert obs.live[("ConfigMap", serving_name(VD, "l4", REV))] == cm
    assert {n for k, n in obs.live if k == "Service"} == {VD, f"{VD}-drift", f"{VD}-{REV[:8]}"}
    assert obs.revision_services == {f"{VD}-{REV[:8]}": REV}
    assert ("Job", compile_job_name(VD, "l4", REV)) in obs.live
    assert obs.jobs[0].state == "Succeeded"
    assert core.list_namespaced_service.selectors == [f"visionfleet.io/vision-deployment={VD}"], \
        "every Service of the VisionDeployment, the drift monitors' too"


# -- why pods wait, and the claims the spec names ---------------------------------------------------

from datetime import datetime, timezone  # noqa: E402

from visionfleet.observe.kube import deployment_waiting, gather_claims, pod_waiting  # noqa: E402
from visionfleet.planner.model import ObservedClaim, PodWaiting, WaitReason  # noqa: E402

CREATED = datetime(2026, 12, 2, 14, 0, 0, tzinfo=timezone.utc)
REFUSED = datetime(2026, 12, 2, 14, 0, 1, tzinfo=timezone.utc)
PVC_MISSING = '0/10 nodes are available: persistentvolumeclaim "models" not found. not found'


def pod(name, component="compile", labels=None, conditions=(), waiting=None, created=CREATED, deleting=None,
        init=None):
    """A pod as the client's models hold it (the attributes gather reads). ``init``: (name, waiting
    reason, last termination message) of an init container that keeps the pod in PodInitializing."""
    statuses = [SimpleNamespace(name="c", state=SimpleNamespace(
        waiting=SimpleNamespace(reason=waiting[0], message=waiting[1]) if waiting else None, terminated=None))]
    inits = [] if init is None else [SimpleNamespace(
        name=init[0], state=SimpleNamespace(waiting=SimpleNamespace(reason=init[1], message="back-off 40s"),
                                            terminated=None),
        last_state=SimpleNamespace(terminated=SimpleNamespace(message=init[2], exit_code=2)))]
    return SimpleNamespace(
        metadata=SimpleNamespace(name=name, labels={"app.kubernetes.io/component": component, **(labels or {})},
                                 creation_timestamp=created, deletion_timestamp=deleting),
        status=SimpleNamespace(phase="Pending", conditions=[SimpleNamespace(**c) for c in conditions],
                               container_statuses=statuses, init_container_statuses=inits))


def unschedulable(message=PVC_MISSING, at=REFUSED):
    return {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "last_transition_time": at}


POD_WAITS = [
    pytest.param(pod("p", conditions=[unschedulable()]),
                 PodWaiting("p", WaitReason.UNSCHEDULABLE, PVC_MISSING, REFUSED), id="unschedulable_since_refused"),
    pytest.param(pod("p", conditions=[unschedulable(at=None)]),
                 PodWaiting("p", WaitReason.UNSCHEDULABLE, PVC_MISSING, CREATED), id="unschedulable_no_time_creation"),
    pytest.param(pod("p", waiting=("ImagePullBackOff", "Back-off pulling image")),
                 PodWaiting("p", WaitReason.IMAGE_PULL_BACK_OFF, "Back-off pulling image"), id="image_pull_back_off"),
    pytest.param(pod("p", waiting=("CreateContainerConfigError", 'secret "s3" not found')),
                 PodWaiting("p", WaitReason.CREATE_CONTAINER_CONFIG_ERROR, 'secret "s3" not found'),
                 id="missing_secret"),
    pytest.param(pod("p", waiting=("ContainerCreating", None)), None, id="merely_starting_says_nothing"),
    pytest.param(pod("p", waiting=("CrashLoopBackOff", "back-off")), None, id="crash_loop_is_no_compile_wait"),
]


@pytest.mark.parametrize("given, wait", POD_WAITS)
def test_pod_waiting(given, wait):
    assert pod_waiting(given) == wait


FETCH_REFUSED = ("serving.modelRepository: s3://m/t/effnet/0123-xeon/model.onnx has sha256 aa, the compile Job "
                 "wrote bb: the object changed after the revision was compiled; refusing to serve it")


def test_a_failing_fetch_init_container_is_the_reason_a_triton_pod_waits():
    """The Triton container only says PodInitializing: the init container's own last message is what
    the SRE needs (which field, which object, which hashes)."""
    from visionfleet.planner.waits import describe

    p = pod("t", component="triton", waiting=("PodInitializing", None),
            init=("fetch-model", "CrashLoopBackOff", FETCH_REFUSED))
    w = deployment_waiting([p])
    assert w == PodWaiting("t", WaitReason.CRASH_LOOP_BACK_OFF, FETCH_REFUSED, init_container="fetch-model")
    text = describe(w, "serving", "spec.serving.image")
    assert "init container fetch-model: CrashLoopBackOff: serving.modelRepository: " in text
    assert "spec.storage.s3" in text and "Triton exits" not in text
    missing_secret = pod("t", component="triton", waiting=("PodInitializing", None),
                         init=("fetch-model", "CreateContainerConfigError", None))
    missing_secret.status.init_container_statuses[0].state.waiting.message = 'secret "s3-credentials" not found'
    missing_secret.status.init_container_statuses[0].last_state.terminated = None
    w = deployment_waiting([missing_secret])
    assert (w.reason, w.message, w.init_container) == (WaitReason.CREATE_CONTAINER_CONFIG_ERROR,
                                                       'secret "s3-credentials" not found', "fetch-model")


def job_obj(cls_, rev, active=1):
    return SimpleNamespace(
        metadata=SimpleNamespace(name=compile_job_name(VD, cls_, rev), labels={"visionfleet.io/class": cls_,
                                                                               "visionfleet.io/revision": rev}),
        status=SimpleNamespace(conditions=[], active=active))


def test_one_pod_list_tells_why_compile_and_serving_pods_wait():
    s = spec()
    dep = served(build_triton_deployment(VD, NS, UID, s, cls(s), REV, 2, RESULT, Track.STABLE))
    dep["status"]["readyReplicas"] = 1
    job = job_obj("l4", REV)
    compile_pod = pod("c-1", labels={"job-name": job.metadata.name}, conditions=[unschedulable()])
    ready = {"type": "Ready", "status": "True"}
    triton = {"visionfleet.io/class": "l4", "visionfleet.io/revision": REV}
    serving = [pod("t-ready", "triton", triton, conditions=[ready], created=REFUSED),
               pod("t-gone", "triton", triton, waiting=("ErrImagePull", "gone"), deleting=REFUSED),
               pod("t-stuck", "triton", triton, waiting=("ImagePullBackOff", 'Back-off pulling image "x"'))]
    core, batch, apps = world([], [dep], jobs=[job])
    core.list_namespaced_pod = Lister([compile_pod, *serving])
    obs = gather(core, batch, apps, VD, NS, nodes=[])
    assert core.list_namespaced_pod.selectors == [
        f"visionfleet.io/vision-deployment={VD},app.kubernetes.io/component in (compile,triton)"], "one list a pass"
    assert obs.jobs[0].state == "Pending"
    assert obs.jobs[0].waiting == PodWaiting("c-1", WaitReason.UNSCHEDULABLE, PVC_MISSING, REFUSED)
    assert obs.jobs[0].message == f"c-1: {PVC_MISSING}"
    assert obs.deployments == [ObservedDeployment("l4", REV, 2, 1, waiting=PodWaiting(
        "t-stuck", WaitReason.IMAGE_PULL_BACK_OFF, 'Back-off pulling image "x"'))]
    assert deployment_waiting([pod("t", "triton", triton, waiting=("CrashLoopBackOff", "back-off"))]).reason == \
        WaitReason.CRASH_LOOP_BACK_OFF, "a serving pod's crash loop is a wait to tell"


class ApiError(Exception):
    def __init__(self, status, reason):
        super().__init__(reason)
        self.status, self.reason = status, reason


def test_claims_one_get_each_missing_known_unreadable_left_out(caplog):
    gets = []

    def read(name, namespace):
        gets.append((name, namespace))
        if name == "models":
            return SimpleNamespace(spec=SimpleNamespace(access_modes=["ReadWriteOnce"]),
                                   status=SimpleNamespace(phase="Bound"))
        if name == "gone":
            raise ApiError(404, "Not Found")
        raise ApiError(403, "Forbidden")

    core = SimpleNamespace(read_namespaced_persistent_volume_claim=read)
    with caplog.at_level(logging.WARNING):
        got = gather_claims(core, NS, ["models", "gone", "models", "secret"])
    assert got == [ObservedClaim("models", True, ("ReadWriteOnce",), "Bound"), ObservedClaim("gone", False)]
    assert gets == [("models", NS), ("gone", NS), ("secret", NS)], "one GET per claim, even named twice"
    assert "PersistentVolumeClaim secret not read (Forbidden)" in caplog.text


# -- the same, from the operator's watches ------------------------------------------------------------

def raw_job(cls_name, rev, complete=False):
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": compile_job_name(VD, cls_name, rev), "namespace": NS,
                         "labels": {"visionfleet.io/vision-deployment": VD, "app.kubernetes.io/component": "compile",
                                    "visionfleet.io/class": cls_name, "visionfleet.io/revision": rev}},
            "spec": {"template": {"spec": {"containers": [{"name": "compile", "image": "x",
                                                           "env": [{"name": "REQUEST", "value": "{}"}]}]}}},
            "status": {"conditions": [{"type": "Complete", "status": "True"}] if complete else [],
                       "active": 0 if complete else 1}}


def raw_pod(name, component, labels, waiting=None, conditions=(), created="2026-12-02T14:00:00Z"):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "creationTimestamp": created,
                         "labels": {"visionfleet.io/vision-deployment": VD, "app.kubernetes.io/component": component,
                                    **labels}},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Pending", "conditions": list(conditions),
                       "containerStatuses": [{"name": "c", "ready": False, "restartCount": 0, "image": "x",
                                              "imageID": "", "state": {"waiting": {"reason": waiting[0],
                                                                                   "message": waiting[1]}}}]
                       if waiting else []}}


def test_children_from_the_watches_read_as_the_lists_did_and_nothing_is_listed():
    """gather(children=…): the index's raw objects (kopf bodies) give the same observation as the lists
    (Jobs and pods through the client's own deserializer), another VisionDeployment's and other
    components' are left out, and no list call is made."""
    from visionfleet.observe.kube import CHILD_COMPONENTS, child_body

    s = spec()
    c = cls(s)
    dep = served(build_triton_deployment(VD, NS, UID, s, c, REV, 2, RESULT, Track.STABLE))
    dep["status"]["readyReplicas"] = 1
    dep["metadata"]["managedFields"] = [
        {"manager": "visionfleet", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}},
        {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:status": {}}}]
    svcs = [served(build_service(VD, NS, UID)), served(build_revision_service(VD, NS, UID, REV))]
    cm = served(build_config_map(VD, NS, UID, s, c, REV, RESULT))
    triton = {"visionfleet.io/class": "l4", "visionfleet.io/revision": REV}
    stuck = raw_pod("t-stuck", "triton", triton, waiting=("ImagePullBackOff", 'Back-off pulling image "x"'))
    compile_pod = raw_pod("c-1", "compile", {"job-name": compile_job_name(VD, "l4", "fedcba987654")},
                          conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                       "message": PVC_MISSING, "lastTransitionTime": "2026-12-02T14:00:01Z"}])
    other = json.loads(json.dumps(dep))
    other["metadata"]["labels"]["visionfleet.io/vision-deployment"] = "someone-else"
    kinds = {"Deployment": [dep, other], "Service": svcs, "ConfigMap": [cm],
             "Job": [raw_job("l4", REV, complete=True), raw_job("l4", "fedcba987654")],
             "Pod": [stuck, compile_pod]}
    children = {kind: [child_body(kind, o) for o in kinds.get(kind, [])] for kind in CHILD_COMPONENTS}
    assert "spec" not in children["Pod"][0] and "spec" not in children["Job"][0]
    # of the managedFields, only who owns spec.replicas (the replica handover reads it)
    from visionfleet.act.apply import owns_replicas
    assert children["Deployment"][0]["metadata"]["managedFields"] == [
        {"manager": "visionfleet", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
    assert owns_replicas(children["Deployment"][0]) == owns_replicas(dep)
    core, batch, apps = world([], [], [], [], [])
    obs = gather(core, batch, apps, VD, NS, nodes=[], children=children)
    assert obs.deployments == [ObservedDeployment("l4", REV, 2, 1, waiting=PodWaiting(
        "t-stuck", WaitReason.IMAGE_PULL_BACK_OFF, 'Back-off pulling image "x"'))]
    assert obs.live[("Deployment", serving_name(VD, "l4", REV))] == children["Deployment"][0]
    assert obs.live[("ConfigMap", serving_name(VD, "l4", REV))] == children["ConfigMap"][0]
    assert "managedFields" not in children["ConfigMap"][0]["metadata"], "only Deployments keep theirs"
    assert obs.revision_services == {f"{VD}-{REV[:8]}": REV}
    assert sorted(j.state for j in obs.jobs) == ["Pending", "Succeeded"]
    pending = next(j for j in obs.jobs if j.state == "Pending")
    assert pending.waiting == PodWaiting("c-1", WaitReason.UNSCHEDULABLE, PVC_MISSING, REFUSED)
    listed = [core.list_namespaced_pod, core.list_namespaced_config_map, core.list_namespaced_service,
              batch.list_namespaced_job, apps.list_namespaced_controller_revision, apps.list_namespaced_deployment]
    assert all(lister.selectors == [] for lister in listed), "nothing listed"
