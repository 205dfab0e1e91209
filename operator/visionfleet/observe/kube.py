"""Read-only: what the cluster holds for one VisionDeployment, turned into planner values, and the
children as they are (for the act layer to hold them to what it renders).

Every call here is a GET or LIST; nothing in this module writes. The operator's watches hold every
object labelled with a VisionDeployment (handlers.py's indexes: one watch per kind for the whole
operator) and a pass takes its own from there, so a steady pass lists nothing; without them (tests,
tools) one list per kind and pass, by the VisionDeployment's label:

    ControllerRevisions ─► RevisionSnapshot per revision (frozen spec + classes, outcome annotation);
                           one that cannot be read (a format this operator does not know) is logged
                           and left out — it is still in ``live``, so it is never created over
    Jobs + their pods ───► ObservedJob (below)
    Deployments ─────────► ObservedDeployment (replicas, Ready; one of its pods that waits, and why)
    pods (compile + Triton, one list) ─► why a pod waits (``PodWaiting``): unschedulable (the
                           scheduler's message, and since when), an image that cannot be pulled, a
                           Secret or ConfigMap it names that is missing; the planner puts it in status
    PersistentVolumeClaims the spec names (pvc://) ─► ObservedClaim: one GET each (usually one or two;
                           a list would read every claim of the namespace); 404 = missing, and a
                           claim this identity may not read (an older chart's RBAC) is left out
    Deployments, ConfigMaps, Services, ControllerRevisions ─► ``live``: the objects as the API server
                           returned them (raw JSON, not the client's models, which drop any field
                           the installed client does not know — a difference that would never go
                           away); Jobs only as present: an existing Job is never re-applied

Compile results are read from the compile container's termination message (the Job's pod needs no
API access to report them):

    Job Complete  + pod terminated, message = result JSON ──► ObservedJob(Succeeded, result)
    Job Failed    + pod terminated (OOMKilled, exit 3, …) ──► ObservedJob(Failed, "<reason>: <message>")
    Job Failed    without a pod (DeadlineExceeded, …)    ──► ObservedJob(Failed, the Job's condition)
    Job active / pending pods                              ──► Running / Pending
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from kubernetes import client as k8s_client
from pydantic import ValidationError

from visionfleet.api.status import ChosenBatching, CompileCandidate, CompileResult
from visionfleet.builders.manifests import (
    ANNOTATION_OUTCOME,
    COMPONENT_REVISION,
    LABEL_CLASS,
    LABEL_COMPONENT,
    LABEL_REVISION,
    LABEL_VD,
)
from visionfleet.planner.classes import GPU_RESOURCE, ObservedNode
from visionfleet.planner.model import (
    ObservedClaim,
    ObservedDeployment,
    ObservedJob,
    PodWaiting,
    RevisionSnapshot,
    WaitReason,
)
from visionfleet.planner.snapshot import snapshot_from_data

from visionfleet_contract.schema import RESULT_KEPT

log = logging.getLogger("visionfleet.observe")

RESULT_KEYS = frozenset(RESULT_KEPT)  # what the compile program keeps in a truncated message: all we read


@dataclass
class ObservedObjects:
    """Planner inputs plus what the act layer needs: every child as it is now."""

    nodes: list[ObservedNode] = field(default_factory=list)
    jobs: list[ObservedJob] = field(default_factory=list)
    deployments: list[ObservedDeployment] = field(default_factory=list)
    snapshots: list[RevisionSnapshot] = field(default_factory=list)  # the readable ControllerRevisions
    claims: list[ObservedClaim] = field(default_factory=list)  # the PersistentVolumeClaims asked for, as read
    # (kind, name) -> the object as listed (raw JSON); a Job or ControllerRevision by its metadata only
    live: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    revision_services: dict[str, str] = field(default_factory=dict)  # per-revision Service name -> revision


def _known(model, raw: dict) -> dict:
    known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    return {k: v for k, v in raw.items() if k in known}


def parse_result(message: str | None) -> tuple[CompileResult | None, str | None]:
    """The compile program's result JSON -> (result, None), or (None, why it is unreadable)."""
    if not message:
        return None, "the compile container wrote no result"
    try:
        raw = json.loads(message)
    except json.JSONDecodeError:
        return None, f"the compile result is not JSON: {message[:200]!r}"
    if not isinstance(raw, dict):
        return None, "the compile result is not a JSON object"
    fields = {k: v for k, v in raw.items() if k in RESULT_KEYS}
    try:
        # A newer compile program may add keys inside these objects: what this operator knows is kept.
        if isinstance(fields.get("batching"), dict):
            fields["batching"] = _known(ChosenBatching, fields["batching"])
        if isinstance(fields.get("candidates"), list):
            fields["candidates"] = [_known(CompileCandidate, c) if isinstance(c, dict) else c
                                    for c in fields["candidates"]][:8]
        return CompileResult.model_validate({"state": "Succeeded", **fields}), None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return None, f"the compile result is invalid at {where}: {first['msg']}"


STUCK_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                 "CreateContainerError")
# A serving pod restarts in place (a compile pod's crash fails its Job instead, read from its result).
SERVING_STUCK_REASONS = STUCK_REASONS + ("CrashLoopBackOff",)


def pod_waiting(pod: Any, reasons: tuple[str, ...] = STUCK_REASONS) -> PodWaiting | None:
    """Why ``pod`` (a client model) does not run, when it says: the scheduler's refusal, or a container
    that cannot start. None for a pod that is merely starting (or that says nothing useful)."""
    name = pod.metadata.name
    for c in ((pod.status.conditions or []) if pod.status else []):
        if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
            # The condition's transition is when the scheduler first refused the pod; the pod's
            # creation time stands in when the API server did not set it.
            since = c.last_transition_time or pod.metadata.creation_timestamp
            return PodWaiting(name, WaitReason.UNSCHEDULABLE, (c.message or "").strip()[:500], since)
    # An init container that cannot run (the s3:// fetch refused, its Secret missing, its image not
    # pulled) leaves the containers after it in PodInitializing: it is the one that says why. Its
    # last termination message is the fetch's own error (the field, the object, the hashes).
    for cs in (pod.status.init_container_statuses or []) if pod.status else []:
        w = cs.state.waiting if cs.state else None
        if w is not None and w.reason in reasons:
            last = cs.last_state.terminated if cs.last_state else None
            text = (last.message if last is not None and last.message else w.message) or ""
            return PodWaiting(name, WaitReason(w.reason), text.strip()[-500:], init_container=cs.name)
    for cs in (pod.status.container_statuses or []) if pod.status else []:
        w = cs.state.waiting if cs.state else None
        if w is not None and w.reason in reasons:
            return PodWaiting(name, WaitReason(w.reason), (w.message or "").strip()[:500])
    return None


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in ((pod.status.conditions or []) if pod.status else []))


def _terminated(pod: Any, container: str) -> Any | None:
    for cs in (pod.status.container_statuses or []):
        if cs.name == container and cs.state and cs.state.terminated:
            return cs.state.terminated
    return None


def _job_state(job: Any, pods: list[Any]) -> ObservedJob:
    lbl = job.metadata.labels or {}
    cls, rev = lbl.get(LABEL_CLASS, ""), lbl.get(LABEL_REVISION, "")
    conds = {c.type: c for c in (job.status.conditions or []) if c.status == "True"}
    newest = sorted(pods, key=lambda p: p.metadata.creation_timestamp or 0)
    term = next((t for p in reversed(newest) if (t := _terminated(p, "compile")) is not None), None)
    if "Complete" in conds:
        result, why = parse_result(term.message if term else None)
        return ObservedJob(cls, rev, "Succeeded", result=result, message=why)
    if "Failed" in conds or "FailureTarget" in conds:
        c = conds.get("Failed") or conds.get("FailureTarget")
        if term is not None and (term.reason or term.message or term.exit_code):
            detail = f"{term.reason or 'Error'} (exit {term.exit_code})"
            if term.message:
                detail += f": {term.message.strip()[-500:]}"
            return ObservedJob(cls, rev, "Failed", message=f"{c.reason}: {detail}")
        return ObservedJob(cls, rev, "Failed", message=f"{c.reason}: {c.message or 'the Job failed'}")
    if (job.status.active or 0) > 0 and any(p.status.phase == "Running" for p in pods):
        return ObservedJob(cls, rev, "Running")
    # A pod that cannot be scheduled or whose container cannot start (image not pulled, a Secret
    # missing) never fails the Job by itself: the planner says why in status, and fails the class
    # after compile.scheduleTimeout (unschedulable) or compile.timeout (the Job's deadline). The
    # newest pod first: it is the one the Job waits on.
    waiting = next((w for p in reversed(newest) if not p.metadata.deletion_timestamp
                    and (w := pod_waiting(p)) is not None), None)
    message = f"{waiting.pod}: {waiting.message or waiting.reason.value}"[:500] if waiting else None
    if waiting is not None and waiting.reason != WaitReason.UNSCHEDULABLE:
        message = f"{waiting.pod}: {waiting.reason.value}: {waiting.message}".rstrip(": ")[:500]
    return ObservedJob(cls, rev, "Pending", message=message, waiting=waiting)


def deployment_waiting(pods: list[Any]) -> PodWaiting | None:
    """One of a Deployment's pods that is not Ready and says why (the oldest: it has waited longest)."""
    for pod in sorted(pods, key=lambda p: p.metadata.creation_timestamp or 0):
        if pod.metadata.deletion_timestamp or _ready(pod):
            continue
        w = pod_waiting(pod, SERVING_STUCK_REASONS)
        if w is not None:
            return w
    return None


def gather_claims(core: Any, namespace: str, names: Iterable[str]) -> list[ObservedClaim]:
    """The named PersistentVolumeClaims: one GET each. Missing (404) is a fact the status reports; a
    claim not readable (403: an RBAC without persistentvolumeclaims) or an error is left out, so
    the planner says nothing rather than something wrong."""
    out = []
    for name in dict.fromkeys(names):
        try:
            pvc = core.read_namespaced_persistent_volume_claim(name, namespace)
        except Exception as e:  # kubernetes.client.ApiException (not imported: this module reads models)
            if getattr(e, "status", None) == 404:
                out.append(ObservedClaim(name, exists=False))
            else:
                log.warning("%s: PersistentVolumeClaim %s not read (%s); its checks are skipped", namespace, name,
                            getattr(e, "reason", None) or e)
            continue
        spec, status = pvc.spec, pvc.status
        out.append(ObservedClaim(name, exists=True, access_modes=tuple((spec.access_modes if spec else None) or ()),
                                 phase=status.phase if status else None))
    return out


def node_from_body(body: Mapping[str, Any]) -> ObservedNode:
    """A Node as the watch delivers it (raw JSON) -> what the planner needs of it. The operator keeps
    every node in one kopf index fed by a single watch, so a pass costs nothing per node: listing the
    nodes on every pass made each resync O(nodes) per VisionDeployment (bench/scale.py)."""
    md, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    try:
        gpus = int((status.get("capacity") or {}).get(GPU_RESOURCE, 0))
    except (TypeError, ValueError):
        gpus = 0
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    taints = tuple((t.get("key"), t.get("value"), t.get("effect")) for t in spec.get("taints") or [])
    return ObservedNode(md.get("name", ""), dict(md.get("labels") or {}), taints, gpus, ready, md.get("uid", ""))


# Nodes are indexed by every label they carry (one kopf index, kept by the node watch): a pass reads
# only the nodes its classes' selectors can match, so its cost does not grow with the nodes of other
# VisionDeployments' classes (bench/scale.py). Discovery without a node selector, or a class with an
# empty one, selects every node (the ``ALL_NODES`` key).
ALL_NODES = None


def node_index_keys(node: ObservedNode) -> dict[Any, ObservedNode]:
    """The index entries of one node: under ALL_NODES and under each (label, value) it carries."""
    return {ALL_NODES: node, **{(k, v): node for k, v in node.labels.items()}}


def node_selectors(spec: Mapping[str, Any] | None) -> list[dict[str, str]] | None:
    """The node selectors a raw spec's classes resolve from (read without validating it: this runs on
    the event loop, before the pass). None: the pass needs every node (discovery without a node
    selector, a class without one, or a spec that does not say)."""
    fleet = (spec or {}).get("fleet") if isinstance(spec, Mapping) else None
    if not isinstance(fleet, Mapping):
        return None
    classes = fleet.get("classes")
    if classes and isinstance(classes, list):
        out = [c.get("nodeSelector") if isinstance(c, Mapping) else None for c in classes]
    elif isinstance(fleet.get("discover"), Mapping):
        out = [fleet["discover"].get("nodeSelector")]
    else:
        return []
    if not all(isinstance(sel, Mapping) and sel and all(isinstance(v, str) for v in sel.values()) for sel in out):
        return None
    return [dict(sel) for sel in out]


def select_nodes(index: Mapping[Any, Iterable[ObservedNode]], spec: Mapping[str, Any] | None) -> list[ObservedNode]:
    """The indexed nodes a spec's classes can match: for each selector, the nodes under its rarest
    (label, value), filtered by the rest. The planner matches them exactly again (resolve_classes)."""
    selectors = node_selectors(spec)
    if selectors is None:
        return list(index.get(ALL_NODES, ()))
    out: dict[int, ObservedNode] = {}
    for sel in selectors:
        stores = [index.get((k, v)) for k, v in sel.items()]
        if any(not store for store in stores):
            continue  # no node carries one of the labels
        for n in min(stores, key=len):  # type: ignore[arg-type, type-var]
            if all(n.labels.get(k) == v for k, v in sel.items()):
                out.setdefault(id(n), n)
    return list(out.values())


def live_node_keys(api: Any) -> set[tuple[str, str]]:
    """(name, uid) of every node, from one metadata-only list (no specs or statuses deserialised)."""
    params = api.param_serialize(
        method="GET", resource_path="/api/v1/nodes", query_params=[("resourceVersion", "0")],
        header_params={"Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"},
        auth_settings=["BearerToken"])
    resp = api.call_api(*params)
    data = json.loads(resp.read() or b"{}")
    if not 200 <= resp.status < 300:
        raise RuntimeError(f"listing node metadata failed: HTTP {resp.status}")
    return {(i["metadata"]["name"], i["metadata"].get("uid", "")) for i in data.get("items", [])}


def gather_nodes(core: Any) -> list[ObservedNode]:
    out = []
    for n in core.list_node().items:
        cap = (n.status.capacity or {}) if n.status else {}
        try:
            gpus = int(cap.get(GPU_RESOURCE, 0))
        except ValueError:
            gpus = 0
        ready = any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
        taints = tuple((t.key, t.value, t.effect) for t in (n.spec.taints or []))
        out.append(ObservedNode(n.metadata.name, dict(n.metadata.labels or {}), taints, gpus, ready))
    return out


def _raw_items(list_call: Callable[..., Any], namespace: str, selector: str) -> list[dict[str, Any]]:
    """A namespaced list as the API server's JSON (``_preload_content=False``: no client models)."""
    resp = list_call(namespace, label_selector=selector, _preload_content=False)
    return json.loads(resp.data or b"{}").get("items") or []


def _metadata_only(obj: Mapping[str, Any]) -> dict[str, Any]:
    md = obj.get("metadata") or {}
    return {"metadata": {k: md[k] for k in ("name", "namespace", "labels", "annotations", "resourceVersion")
                         if k in md}}


# The kinds of a VisionDeployment's children, and which of them a pass reads (by their component
# label, as the lists' selectors pick them): the operator's watches index every object labelled with
# a VisionDeployment (handlers.py) and a pass takes its own from there; without an index (tests, tools)
# one list per kind.
CHILD_COMPONENTS: dict[str, tuple[str, ...] | None] = {
    "ControllerRevision": (COMPONENT_REVISION,),
    "Job": ("compile",),
    "Pod": ("compile", "triton"),
    "Deployment": ("triton",),
    "ConfigMap": ("triton-config",),
    "Service": None,  # every one: <vd>, the per-revision ones and the drift monitors'
    "HorizontalPodAutoscaler": ("autoscaler",),
}


def child_body(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """What an index keeps of a child: a plain copy without what no pass reads, to keep the operator's
    memory small. Pods and Jobs lose their spec (a pass reads their status; a Job's pod template
    carries the whole compile request); managedFields go, but for a Deployment's record of who owns
    spec.replicas (``act.apply.owns_replicas``, the handover to an autoscaler). The objects the act
    layer holds to what it renders (Deployments, Services, ConfigMaps, HPAs) and the snapshots keep
    everything else."""
    out = json.loads(json.dumps(dict(body), default=str))
    md = out.setdefault("metadata", {})
    fields = md.pop("managedFields", None) or []
    if kind == "Deployment":
        md["managedFields"] = [
            {"manager": f.get("manager"), "operation": f.get("operation"),
             "fieldsV1": {"f:spec": {"f:replicas": {}}}}
            for f in fields if "f:replicas" in ((f.get("fieldsV1") or {}).get("f:spec") or {})]
    if kind in ("Pod", "Job"):
        out.pop("spec", None)
    return out


def child_selector(name: str, kind: str) -> str:
    """The label selector that lists ``kind``'s children of VisionDeployment ``name`` (``CHILD_COMPONENTS``)."""
    wanted = CHILD_COMPONENTS[kind]
    selector = f"{LABEL_VD}={name}"
    if wanted is None:
        return selector
    if len(wanted) == 1:
        return f"{selector},{LABEL_COMPONENT}={wanted[0]}"
    return f"{selector},{LABEL_COMPONENT} in ({','.join(wanted)})"


_MODELS = threading.local()


def _model(obj: Mapping[str, Any], kind: str) -> Any:
    """A raw Job or Pod as the client's model (what the job and pod readers take), as a list call
    would have returned it."""
    api = getattr(_MODELS, "api", None)
    if api is None:
        api = _MODELS.api = k8s_client.ApiClient()
    return api.deserialize(json.dumps(obj), kind, "application/json")


def _mine(children: Mapping[str, Iterable[Mapping[str, Any]]], kind: str, name: str) -> list[dict[str, Any]]:
    wanted = CHILD_COMPONENTS[kind]
    out = []
    for obj in children.get(kind, ()):
        lbl = (obj.get("metadata") or {}).get("labels") or {}
        if lbl.get(LABEL_VD) == name and (wanted is None or lbl.get(LABEL_COMPONENT) in wanted):
            out.append(obj)
    return out


def _snapshots(items: Iterable[Mapping[str, Any]], name: str, namespace: str, obs: ObservedObjects) -> None:
    for cr in items:
        md = cr.get("metadata") or {}
        obs.live[("ControllerRevision", md.get("name", ""))] = {**_metadata_only(cr), "revision": cr.get("revision"),
                                                                "data": cr.get("data")}
        revision = (md.get("labels") or {}).get(LABEL_REVISION)
        try:
            if not revision:
                raise ValueError(f"no {LABEL_REVISION} label")
            obs.snapshots.append(snapshot_from_data(revision, cr.get("data"),
                                                    (md.get("annotations") or {}).get(ANNOTATION_OUTCOME)))
        except ValueError as e:
            log.warning("%s/%s: ControllerRevision %s is not a snapshot this operator can read, left out: %s",
                        namespace, name, md.get("name"), e)


def gather(core: Any, batch: Any, apps: Any, name: str, namespace: str,
           nodes: list[ObservedNode] | None = None, claims: Iterable[str] = (),
           autoscaling: Any = None, children: Mapping[str, Iterable[Mapping[str, Any]]] | None = None
           ) -> ObservedObjects:
    """``autoscaling``: an AutoscalingV2Api, to see the VisionDeployment's HorizontalPodAutoscalers
    (None: not read, for callers that never autoscale). ``children``: the objects the operator's
    watches hold for this VisionDeployment, by kind (``CHILD_COMPONENTS``; handlers.py's indexes);
    given, nothing is listed."""
    obs = ObservedObjects(nodes=nodes if nodes is not None else gather_nodes(core))
    raw: dict[str, list[dict[str, Any]]]
    if children is not None:
        raw = {kind: _mine(children, kind, name) for kind in CHILD_COMPONENTS}
        jobs = [_model(j, "V1Job") for j in raw["Job"]]
        pods = [_model(p, "V1Pod") for p in raw["Pod"]]
    else:
        def listed(call: Callable[..., Any], kind: str) -> list[dict[str, Any]]:
            return _raw_items(call, namespace, child_selector(name, kind))

        raw = {"ControllerRevision": listed(apps.list_namespaced_controller_revision, "ControllerRevision"),
               "Deployment": listed(apps.list_namespaced_deployment, "Deployment"),
               "ConfigMap": listed(core.list_namespaced_config_map, "ConfigMap"),
               "Service": listed(core.list_namespaced_service, "Service"),
               "HorizontalPodAutoscaler": listed(autoscaling.list_namespaced_horizontal_pod_autoscaler,
                                                 "HorizontalPodAutoscaler") if autoscaling is not None else []}
        jobs = batch.list_namespaced_job(namespace, label_selector=child_selector(name, "Job")).items
        # One pod list for both kinds of children: compile pods (why a Job waits) and Triton pods (why
        # a Deployment's pods are not Ready).
        pods = core.list_namespaced_pod(namespace, label_selector=child_selector(name, "Pod")).items
    _snapshots(raw["ControllerRevision"], name, namespace, obs)
    serving_pods: dict[tuple[str, str], list[Any]] = {}
    for p in pods:
        lbl = p.metadata.labels or {}
        if lbl.get(LABEL_COMPONENT) == "triton":
            serving_pods.setdefault((lbl.get(LABEL_CLASS, ""), lbl.get(LABEL_REVISION, "")), []).append(p)
    pods = [p for p in pods if (p.metadata.labels or {}).get(LABEL_COMPONENT, "compile") == "compile"]
    for job in jobs:
        mine = [p for p in pods if (p.metadata.labels or {}).get("job-name") == job.metadata.name]
        obs.jobs.append(_job_state(job, mine))
        obs.live[("Job", job.metadata.name)] = {"metadata": {"name": job.metadata.name,
                                                             "labels": dict(job.metadata.labels or {})}}
    for d in raw["Deployment"]:
        md = d.get("metadata") or {}
        lbl = md.get("labels") or {}
        key = (lbl.get(LABEL_CLASS, ""), lbl.get(LABEL_REVISION, ""))
        obs.deployments.append(ObservedDeployment(*key, (d.get("spec") or {}).get("replicas") or 0,
                                                  (d.get("status") or {}).get("readyReplicas") or 0,
                                                  waiting=deployment_waiting(serving_pods.get(key, []))))
        obs.live[("Deployment", md.get("name", ""))] = d
    for cm in raw["ConfigMap"]:
        obs.live[("ConfigMap", cm["metadata"]["name"])] = cm
    for svc in raw["Service"]:
        md = svc.get("metadata") or {}
        lbl = md.get("labels") or {}
        obs.live[("Service", md["name"])] = svc
        if lbl.get(LABEL_COMPONENT) == "triton" and LABEL_REVISION in lbl:
            obs.revision_services[md["name"]] = lbl[LABEL_REVISION]
    for hpa in raw["HorizontalPodAutoscaler"]:
        obs.live[("HorizontalPodAutoscaler", hpa["metadata"]["name"])] = hpa
    obs.claims = gather_claims(core, namespace, claims) if claims else []
    return obs
