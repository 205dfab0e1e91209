"""Thin kopf handlers: observe -> plan -> act, level-based.

One daemon per VisionDeployment runs passes in a loop: it reads the world, asks the planner, applies
the plan, then sleeps for the planner's requeue delay — or less, when a user's change to the object
(spec, annotations, deletion; not the operator's own status writes) nudges it (``memo.nudge``). No
handler keys on ``status.phase`` changes: every pass starts from the current state, so a restart at
any moment resumes from ``status`` alone. Nodes come from one watch into a kopf index, not from a
list per pass. A pass's API requests are retried with backoff; a child the API server refuses as
invalid (422) makes the object Degraded instead of failing every pass.

A pass writes status only onto the object it read (its resourceVersion): kopf's daemon ``body`` is
a live view the watch keeps current, and each pass takes a copy of it; if the object changed after
that copy (the watch a beat behind), the status write gets 409 and the pass ends with a short
requeue (``CONFLICT_REQUEUE``, doubling while conflicts repeat), so the next one plans again from
the newer object. The children the stale pass applied are idempotent; its Events are not posted
(the re-planned pass posts its own).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from typing import Any, Mapping

import kopf
from kubernetes import client, config

from pydantic import ValidationError
from urllib3.util.retry import Retry

from visionfleet.act.apply import StatusConflict, WriteCounter, apply_plan, status_from, write_status
from visionfleet.api import crd
from visionfleet.api.spec import VisionDeploymentSpec
from visionfleet.api.status import VisionDeploymentStatus
from visionfleet.metrics import METRICS
from visionfleet.builders.manifests import LABEL_VD
from visionfleet.observe.kube import (
    child_body,
    gather,
    live_node_keys,
    node_from_body,
    node_index_keys,
    select_nodes,
)
from visionfleet.observe.prometheus import Measurements, measure, measure_drift
from visionfleet.planner.analysis import measurement_due
from visionfleet.planner.conditions import CondType, Reason, set_condition
from visionfleet.planner.classes import ObservedNode
from visionfleet.planner.durations import seconds
from visionfleet.planner.model import Observed, VisionDeploymentView, iso
from visionfleet.planner.rollout import plan
from visionfleet.planner.storage import named_claims

log = logging.getLogger("visionfleet")
_local = threading.local()
CONFLICT_REQUEUE = 0.5  # seconds: a pass whose status write met a newer object plans again this soon
CONFLICT_REQUEUE_MAX = 8.0  # ... doubling while conflicts repeat (a watch that lags far behind)
_conflicts: dict[tuple[str, str], int] = {}  # (namespace, name) -> conflicts in a row
WRITES = WriteCounter()
# Prometheus is read on its own threads (observe/prometheus.py), only when a measurement is due; a
# finished one wakes its VisionDeployment's daemon through _WAKE (set by the daemon, on its loop).
MEASUREMENTS = Measurements()
_WAKE: dict[tuple[str, str], Any] = {}
MEASURE_REQUEUE = 5.0  # seconds: at least this while a due measurement runs (its end wakes the daemon)
MEASURE_WAIT = 1.0  # seconds a daemon gives a measurement due now before its pass (no thread waits)
METRICS.track_writes(WRITES)  # visionfleet_api_writes_total reads this counter


# An overloaded or restarting API server (429 with Retry-After, 5xx) is retried inside the pass, with
# backoff, rather than failing the whole pass: a pass makes several requests, and a fault on any one
# of them would otherwise restart it from scratch. Every write the operator makes is idempotent
# (server-side apply, status apply, delete), so retrying them is safe; an Event may at worst repeat.
API_RETRIES = Retry(total=4, connect=2, status=4, backoff_factor=0.3, backoff_max=2.0, retry_after_max=5,
                    status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None,
                    respect_retry_after_header=True, raise_on_status=False)


def api_client() -> client.ApiClient:
    """One ApiClient per worker thread (the sync client is not safe to share across threads)."""
    if getattr(_local, "api", None) is None:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:
            # KUBECONFIG read now, not when the kubernetes package was imported (its default is fixed then)
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
        cfg = client.Configuration.get_default_copy()
        cfg.retries = API_RETRIES
        _local.api = client.ApiClient(cfg)
    return _local.api


def require_crd() -> None:
    """Discovery (allowed to every authenticated identity) must list the VisionDeployment resource."""
    try:
        resources = client.CustomObjectsApi(api_client()).get_api_resources(crd.GROUP, crd.VERSION).resources
    except client.ApiException as e:
        if e.status != 404:
            raise
        resources = []
    if not any(r.name == crd.PLURAL for r in resources):
        raise kopf.PermanentError(
            f"{crd.PLURAL}.{crd.GROUP}/{crd.VERSION} is not served by this cluster: install the CRD first "
            "(the Helm chart does with crds.install=true; or kubectl apply --server-side -f crds/), then restart")


def peering_priority(value: str, pod_name: str) -> int:
    """A number, or ``auto``: derived from the pod's name, so the replicas of one Deployment (identical
    pod templates) get distinct priorities — kopf freezes every peer when two share the highest one."""
    if value.strip().lower() == "auto":
        if not pod_name:
            raise ValueError("VISIONFLEET_PRIORITY=auto needs POD_NAME (the chart sets it from the downward API)")
        return 1 + int(hashlib.sha256(pod_name.encode()).hexdigest()[:8], 16) % 1_000_000_000
    return int(value)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = f"{crd.GROUP}/finalizer"
    settings.posting.enabled = False  # our Events come from the plan, not from kopf's own logging
    # The nudge handler runs on every watch event; its per-event success line would drown the log.
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.watching.server_timeout = 300
    # No dynamic scanning of CRDs and namespaces: it would need cluster-wide list/watch on both, which
    # least privilege does not grant. The price: the CRD must be served when the operator starts —
    # checked here, so a missing CRD stops the operator with a message instead of serving nothing.
    settings.scanning.disabled = True
    # The children's watches carry the label selector: the API server sends only objects labelled with
    # a VisionDeployment, never every pod and Service of the cluster (kopf's own label filters are
    # client-side).
    for resource in CHILD_RESOURCES.values():
        settings.watching.label_selectors[_selector(*resource)] = LABEL_VD
    require_crd()
    # Several replicas (the chart's HA mode) take turns through kopf's peering: the one with the highest
    # VISIONFLEET_PRIORITY acts, the others wait. Peering is then mandatory — a missing peering object
    # must stop the operator, not let two replicas act at once. Its scope (ClusterKopfPeering or
    # KopfPeering) follows the operator's: kopf set settings.peering.clusterwide from --namespace.
    settings.peering.standalone = os.environ.get("VISIONFLEET_PEERING") is None
    if not settings.peering.standalone:
        settings.peering.name = os.environ["VISIONFLEET_PEERING"]
        try:
            settings.peering.priority = peering_priority(os.environ.get("VISIONFLEET_PRIORITY", "0"),
                                                         os.environ.get("POD_NAME", ""))
        except ValueError as e:  # a configuration error: stop, do not retry forever
            raise kopf.PermanentError(f"VISIONFLEET_PRIORITY: {e}") from e
        settings.peering.mandatory = True


def nudge_key(body: Mapping[str, Any]) -> tuple:
    """What a user can change: the spec (generation), annotations (promote/abort/pause), deletion.
    Status is the operator's own: its writes come back as watch events and must not trigger a pass
    each (that doubled the passes, and the API reads, of every rollout: bench/scale.py)."""
    md = body.get("metadata") or {}
    return md.get("generation"), tuple(sorted((md.get("annotations") or {}).items())), md.get("deletionTimestamp")


@kopf.on.event(crd.GROUP, crd.VERSION, crd.PLURAL)
def nudge(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    key = nudge_key(body)
    if memo.get("nudged_for") == key:
        return
    memo.nudged_for = key
    event = memo.get("nudge")
    if event is not None:
        event.set()


@kopf.index("v1", "nodes")
def nodes_index(body: kopf.Body, **_: Any) -> dict[Any, ObservedNode]:
    """Every node, kept current by one watch (kopf fills the index before any daemon starts), under
    each of its labels too: a pass takes only the nodes its classes select (observe.kube.select_nodes)."""
    return node_index_keys(node_from_body(body))


# A VisionDeployment's children, one watch per kind for the whole operator (only objects labelled with
# a VisionDeployment): a pass reads its own from the index instead of listing seven kinds. kind →
# (group, version, plural).
CHILD_RESOURCES = {
    "Job": ("batch", "v1", "jobs"),
    "Pod": ("", "v1", "pods"),
    "Deployment": ("apps", "v1", "deployments"),
    "ConfigMap": ("", "v1", "configmaps"),
    "Service": ("", "v1", "services"),
    "HorizontalPodAutoscaler": ("autoscaling", "v2", "horizontalpodautoscalers"),
    "ControllerRevision": ("apps", "v1", "controllerrevisions"),
}


def _selector(group: str, version: str, plural: str) -> tuple[str, ...]:
    """The resource as kopf names it: (group, version, plural), or (version, plural) for the core group."""
    return (group, version, plural) if group else (version, plural)


def _child_index(kind: str, group: str, version: str, plural: str) -> None:
    def index(body: kopf.Body, namespace: str, labels: Mapping[str, str], **_: Any) -> dict[Any, Any]:
        """The child under its VisionDeployment: (namespace, name) → what a pass reads of it."""
        return {(namespace, labels[LABEL_VD]): child_body(kind, body)}

    kopf.index(*_selector(group, version, plural), labels={LABEL_VD: kopf.PRESENT}, id=f"children_{plural}")(index)


for _kind, _resource in CHILD_RESOURCES.items():
    _child_index(_kind, *_resource)


def children_of(indexes: Mapping[str, Any], namespace: str, name: str) -> dict[str, list[dict[str, Any]]]:
    """One VisionDeployment's children from the indexes (``children_<plural>`` kwargs of a handler), by
    kind. Taken on the event loop, where kopf updates them: the lists are the pass's own; the objects
    are never changed in place (each event stores a new one)."""
    out = {}
    for kind, (_, _, plural) in CHILD_RESOURCES.items():
        index = indexes.get(f"children_{plural}")
        out[kind] = list(index.get((namespace, name), ())) if index is not None else []
    return out


def api_message(e: client.ApiException) -> str:
    try:
        return str(json.loads(e.body).get("message") or e.reason)[:1500]
    except (TypeError, ValueError):
        return str(e.reason)


def conflict_requeue(namespace: str, name: str, e: Exception | None) -> float | None:
    """After a pass: the short requeue when its status write met a newer object (``e``), else None
    (and the count of conflicts in a row starts again)."""
    if e is None:
        _conflicts.pop((namespace, name), None)
        return None
    n = _conflicts[(namespace, name)] = _conflicts.get((namespace, name), 0) + 1
    log.info("%s/%s: %s; planning again from the newer object", namespace, name, e)
    return min(CONFLICT_REQUEUE * 2 ** (n - 1), CONFLICT_REQUEUE_MAX)


def refuse(body: dict[str, Any], status: VisionDeploymentStatus, message: str) -> float:
    """Degraded (InvalidSpec) with ``message``, the generation observed; nothing else is acted on.
    Written onto the object read, as a pass's status is: on a newer one, plan again shortly."""
    md = body["metadata"]
    name, namespace = md["name"], md["namespace"]
    log.error("%s/%s: %s", namespace, name, message)
    METRICS.invalid_spec()
    new = status.model_copy(deep=True)
    new.conditions = set_condition(list(new.conditions or []), CondType.DEGRADED, True, Reason.INVALID_SPEC,
                                   message, iso(datetime.now(timezone.utc)), md.get("generation"))
    new.observed_generation = md.get("generation")
    try:
        written = write_status(api_client(), name, namespace, status, new, md.get("resourceVersion"))
    except StatusConflict as e:
        return conflict_requeue(namespace, name, e)
    conflict_requeue(namespace, name, None)
    if written:
        WRITES.status_writes += 1
    METRICS.record(namespace, name, status, new)
    return 60.0


_LIVE = {"at": float("-inf"), "keys": None}
_LIVE_LOCK = threading.Lock()
LIVE_NODES_EVERY = 300.0


def live(api: client.ApiClient, nodes: list[ObservedNode]) -> list[ObservedNode]:
    """The index's nodes, less any it still holds after missing their deletion. kopf drops an index
    entry only on a DELETED event, so a node deleted while its watch was re-listing (410 Gone, a
    peering pause) would stay; one metadata-only list every LIVE_NODES_EVERY seconds, for the whole
    operator, tells the live (name, uid) pairs."""
    with _LIVE_LOCK:
        if time.monotonic() - _LIVE["at"] > LIVE_NODES_EVERY:
            try:
                _LIVE["keys"] = live_node_keys(api)
                _LIVE["at"] = time.monotonic()
            except Exception as e:  # the index alone is still right in all but that rare case
                log.warning("could not list node metadata: %s", e)
        keys = _LIVE["keys"]
    return nodes if keys is None else [n for n in nodes if (n.name, n.uid) in keys]


@METRICS.timed_pass
def run_pass(body: dict[str, Any], nodes: list[ObservedNode] | None = None,
             children: Mapping[str, list[dict[str, Any]]] | None = None) -> float:
    """One observe -> plan -> act pass (blocking I/O; runs in a worker thread). ``children``: the
    VisionDeployment's objects from the watches (``children_of``); None lists them."""
    md = body["metadata"]
    name, namespace = md["name"], md["namespace"]
    status = status_from(body.get("status"))
    try:
        spec = VisionDeploymentSpec.model_validate(body.get("spec") or {})
    except ValidationError as e:
        # The CRD admitted what the models refuse (an older CRD, say): act on nothing, and say which
        # field in a Degraded condition rather than crash or guess.
        first = e.errors()[0]
        where = "spec." + ".".join(str(p) for p in first["loc"])
        return refuse(body, status, f"{where}: {first['msg']} (nothing is rolled out until the spec is fixed)")
    repo = spec.serving.model_repository
    if repo is None or not repo.startswith(("pvc://", "s3://")):
        # Stored before the CRD required it (and refused other schemes): Triton pods would have no
        # artifact to load.
        what = "is required" if repo is None else f"{repo!r} is not supported"
        return refuse(body, status, f"spec.serving.modelRepository {what}: where compile Jobs write each "
                                    "artifact and Triton pods load it (pvc://<claim>/<path> on ReadWriteMany "
                                    "storage, or s3://<bucket>/<prefix>); nothing is rolled out until it is set")
    vd = VisionDeploymentView(name=name, namespace=namespace, generation=md.get("generation", 0), spec=spec,
                              status=status, annotations=dict(md.get("annotations") or {}),
                              uid=md["uid"])
    api = api_client()
    core, batch, apps = client.CoreV1Api(api), client.BatchV1Api(api), client.AppsV1Api(api)
    seen = gather(core, batch, apps, name, namespace, nodes=live(api, nodes) if nodes is not None else None,
                  claims=[claim for _, claim in named_claims(spec)], autoscaling=client.AutoscalingV2Api(api),
                  children=children)
    now = datetime.now(timezone.utc)  # the same for the measurement's due time and the plan
    measurement, stable_drift = take_measurements(vd, now)
    observed = Observed(nodes=tuple(seen.nodes), jobs=tuple(seen.jobs), deployments=tuple(seen.deployments),
                        measurement=measurement, stable_drift=stable_drift, snapshots=tuple(seen.snapshots),
                        claims=tuple(seen.claims))
    p = plan(vd, observed, now)
    try:
        apply_plan(api, vd, p, seen.live, WRITES, seen.revision_services, resource_version=md.get("resourceVersion"))
    except StatusConflict as e:
        # Planned from a stale copy of the object: nothing of this pass's status is kept, the next
        # pass derives it again from the newer one (children already applied are idempotent).
        return conflict_requeue(namespace, name, e)
    except client.ApiException as e:
        if e.status != 422:
            raise
        # The API server refused an object built from this spec (a node selector key that is no valid
        # label, say, which the CRD cannot check): retrying cannot help; say so until the spec changes.
        return refuse(body, status, f"the API server refused what this spec asks for: {api_message(e)} "
                                    "(nothing more is rolled out until the spec is fixed)")
    conflict_requeue(namespace, name, None)
    METRICS.record(namespace, name, status, p.status)  # counted once the status write went through
    for e in p.events:
        log.info("%s/%s: %s %s", namespace, name, e.reason, e.message)
    if MEASUREMENTS.pending((namespace, name, "canary")):
        # The planner asks for a pass at once when its measurement is missing; the measurement's end
        # wakes the daemon instead, so a slow Prometheus does not make a pass every second.
        return max(p.requeue_seconds, MEASURE_REQUEUE)
    return p.requeue_seconds


def canary_request(vd: VisionDeploymentView, now: datetime) -> tuple[Any, Any, Any] | None:
    """(slot, key, measurement) of the canary's measurement when the planner may judge one now
    (``measurement_due``), else None. The key is what makes it due (revision, step, the last
    measurement's time), so a result asked for by one step is never judged in another."""
    spec, st, ns, name = vd.spec, vd.status, vd.namespace, vd.name
    canary = st.canary_revision
    if not canary or not measurement_due(spec.analysis, st, now):
        return None
    # The canary's own Triton entry is spec.model.name (the model is part of the revision); its live
    # agreement is read only during a shadow step.
    live = st.canary_mirror is not None
    key = (canary, st.step, st.wave, st.step_started_at, st.analysis.at if st.analysis else None, live,
           spec.model.name, spec.analysis.model_dump_json())
    return (ns, name, "canary"), key, lambda: measure(spec.analysis, ns, name, canary, model=spec.model.name,
                                                      live=live)


def take_measurements(vd: VisionDeploymentView, now: datetime) -> tuple[Any, Any]:
    """(the canary's measurement, the stable's drift test) for this pass: each one finished on the
    measurement threads, or None. The canary's is asked for only when due (``canary_request``); the
    stable's drift at most once an interval. A finished canary measurement wakes the daemon
    (``_WAKE``) for the pass that judges it, when it was not ready for this one."""
    spec, st, ns, name = vd.spec, vd.status, vd.namespace, vd.name
    measurement = stable_drift = None
    request = canary_request(vd, now)
    if request is not None:
        measurement = MEASUREMENTS.poll(*request, on_done=_WAKE.get((ns, name)))
    stable = st.stable_revision
    if stable and spec.analysis.drift is not None and spec.analysis.prometheus is not None:
        stable_drift = MEASUREMENTS.poll((ns, name, "stable"), (stable, spec.analysis.model_dump_json()),
                                         lambda: measure_drift(spec.analysis, ns, name, stable),
                                         every=seconds(spec.analysis.interval))
    return measurement, stable_drift


def start_measurement(body: dict[str, Any]) -> Any:
    """The canary's measurement started (or running, or done) when one is due now, else None: what
    the daemon gives a moment before the pass. Any spec or status it cannot read: None (the pass
    says why)."""
    md = body.get("metadata") or {}
    try:
        vd = VisionDeploymentView(name=md["name"], namespace=md["namespace"], generation=md.get("generation", 0),
                                  spec=VisionDeploymentSpec.model_validate(body.get("spec") or {}),
                                  status=status_from(body.get("status")))
        request = canary_request(vd, datetime.now(timezone.utc))
    except (ValidationError, KeyError, ValueError):
        return None
    return MEASUREMENTS.start(*request, on_done=_WAKE.get((vd.namespace, vd.name))) if request else None


async def measurement_moment(body: Mapping[str, Any], memo: Any) -> bool:
    """Before a pass: when the canary's measurement is due, start it and wait up to MEASURE_WAIT for
    it on the event loop (no thread held), so that this pass judges it rather than the next; a
    user's change (nudge) ends the wait at once. True when it waited (the body may have changed)."""
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    if not status.get("canaryRevision") or not (spec.get("analysis") or {}).get("prometheus"):
        return False
    started = await asyncio.to_thread(start_measurement, copy.deepcopy(dict(body)))
    if started is None or started.done():
        return False
    nudged = asyncio.ensure_future(memo.nudge.wait())
    await asyncio.wait({asyncio.wrap_future(started), nudged}, timeout=MEASURE_WAIT,
                       return_when=asyncio.FIRST_COMPLETED)
    nudged.cancel()
    # Whatever set the nudge (the measurement's end, or a user's change) is in the copy taken next.
    memo.nudge.clear()
    return True


@kopf.daemon(crd.GROUP, crd.VERSION, crd.PLURAL, cancellation_timeout=10)
async def reconcile(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, nodes_index: kopf.Index,
                    **kwargs: Any) -> None:
    memo.nudge = asyncio.Event()
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    METRICS.track(namespace, name)
    loop = asyncio.get_running_loop()
    _WAKE[(namespace, name)] = lambda: loop.call_soon_threadsafe(memo.nudge.set)
    try:
        while not stopped:
            memo.nudge.clear()
            try:
                await measurement_moment(body, memo)
                # Snapshots taken on the event loop, where kopf updates the index and the body: kopf's
                # daemon ``body`` is a live view whose source each watch event replaces, so this copy
                # is the newest object the watch has delivered, and stays as it was for the whole pass
                # (its resourceVersion is the status write's precondition). Only the nodes its classes
                # can match: the pass costs nothing per node of other classes.
                snapshot = copy.deepcopy(dict(body))
                nodes = select_nodes(nodes_index, snapshot.get("spec"))
                children = children_of(kwargs, namespace, name)
                delay = await asyncio.to_thread(run_pass, snapshot, nodes, children)
            except Exception:
                log.exception("%s/%s: reconcile pass failed; retrying", namespace, name)
                delay = 5.0
            # Sleep until the planner's requeue time, a watch event (nudge), or kopf stopping the daemon
            # (deletion, shutdown): the latter must not wait out a 30 s requeue.
            nudged = asyncio.ensure_future(memo.nudge.wait())
            halted = asyncio.ensure_future(stopped.wait())
            _, pending = await asyncio.wait({nudged, halted}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
    finally:
        # Deleted, no longer matching, or this replica paused or exiting: its per-object series go.
        METRICS.forget(namespace, name)
        _conflicts.pop((namespace, name), None)
        _WAKE.pop((namespace, name), None)
        MEASUREMENTS.forget((namespace, name, "canary"), (namespace, name, "stable"))
