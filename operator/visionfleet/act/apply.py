"""Carry out a plan: snapshots of new revisions, server-side apply of the children that should exist
(each held to what we render), deletes of what should not, one status write per pass (only when it
changed, and only onto the object the pass read) and the plan's Events.

    EnsureSnapshot ──► ControllerRevision <vd>-rev-<rev> created when absent (its data is immutable:
                       never re-applied; 409 AlreadyExists is fine)
    MarkOutcome ─────► merge patch of its visionfleet.io/outcome annotation, when it differs
    each child rendered (from its revision's frozen spec) and compared with the object as observed:
      absent ............................................ server-side apply (it is created)
      desired ⊆ live (``differences`` yields nothing) ... no write: the steady state costs zero writes
      differs, our own wish changed since the last apply  server-side apply (a planned change: a
                                                          canary scaled up, a new config)
      differs, our wish unchanged ....................... someone else changed it (kubectl scale,
                                                          kubectl set image…): server-side apply with
                                                          force restores it, Warning Event ChildDrifted
      a compile Job that exists ......................... nothing: its pod template is immutable, and
                                                          a Job runs once; there is nothing to restore
    status ──────────► server-side apply of the status subresource *with the resourceVersion the pass
                       read*: if the object changed since (a newer watch event the pass did not see),
                       the API server answers 409 and ``StatusConflict`` makes the handler re-plan from
                       the fresh object instead of overwriting a newer status with a stale one.

"desired ⊆ live": every field we render is present in the live object with an equal value; the
fields the API server defaults (strategy, dnsPolicy, clusterIP, protocol…) or that other managers
own are not ours and are left alone — server-side apply sends only what we render, so they are
never touched either. Equal allows for what the API server rewrites: resource quantities in
canonical form ("1000m" is "1", "0.5" is "500m", "1024Mi" is "1Gi"), false/0/""/{}/[] for an
omitted field. Were a difference to survive our own apply (a mutating webhook that pins images by
digest, say), chasing it would write on every pass: the value the API server kept is remembered and
not fought again, while any other value there is still restored.

Whether our wish changed is what the ``visionfleet.io/applied-hash`` annotation (the hash of the
manifest last applied) is still kept for; it is never a reason to skip the comparison.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import os
import signal
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Iterator, Mapping

from kubernetes import client
from kubernetes.client.rest import ApiException

from visionfleet.api import crd
from visionfleet.api.status import VisionDeploymentStatus
from visionfleet.builders.manifests import (
    ANNOTATION_APPLIED,
    ANNOTATION_OUTCOME,
    build_compile_job,
    build_config_map,
    build_controller_revision,
    build_drift_service,
    build_metrics_service,
    build_revision_service,
    build_service,
    build_triton_deployment,
    compile_job_name,
    mirror_filters,
    ANNOTATION_AUTOSCALED,
    autoscaler_name,
    build_autoscaler,
    shadow_target,
    build_stable_service,
    revision_service_name,
    route_backends,
    serving_name,
    snapshot_name,
    with_applied_hash,
)
from visionfleet.planner.model import (
    EnsureAutoscaler,
    DeleteCompileJob,
    DeleteServing,
    DeleteSnapshot,
    EnsureCompileJob,
    EnsureService,
    EnsureServing,
    EnsureSnapshot,
    MarkOutcome,
    Plan,
    SetRouteWeights,
    VisionDeploymentView,
)
from visionfleet.planner.snapshot import snapshot_to_data

FIELD_MANAGER = "visionfleet"
log = logging.getLogger("visionfleet.act")

_PATHS = {
    "Job": "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps/{name}",
    "Service": "/api/v1/namespaces/{ns}/services/{name}",
    "HTTPRoute": "/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes/{name}",
    "ControllerRevision": "/apis/apps/v1/namespaces/{ns}/controllerrevisions/{name}",
    "HorizontalPodAutoscaler": "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/{name}",
}
# Holds a Deployment's spec.replicas for one apply while the operator lets go of it: the class's
# HorizontalPodAutoscaler sizes it from then on (see hand_over_replicas).
HANDOVER_MANAGER = "visionfleet-handover"
DRIFT_REASON = "ChildDrifted"
DRIFT_PATHS_SHOWN = 3  # differing fields named in a ChildDrifted Event


@dataclass
class WriteCounter:
    applies: int = 0
    deletes: int = 0
    status_writes: int = 0
    events: int = 0

    @property
    def total(self) -> int:
        return self.applies + self.deletes + self.status_writes + self.events


def request(api: client.ApiClient, method: str, path: str, body: Any = None,
            query: list[tuple[str, str]] | None = None, content_type: str = "application/json") -> dict[str, Any]:
    """One raw API call through the official client (its auth, TLS and retries), JSON in and out."""
    params = api.param_serialize(method=method, resource_path=path, query_params=query or [],
                                 header_params={"Content-Type": content_type, "Accept": "application/json"},
                                 body=body, auth_settings=["BearerToken"])
    resp = api.call_api(*params)
    data = resp.read()
    if not 200 <= resp.status < 300:
        raise ApiException(status=resp.status, reason=resp.reason, body=data)
    return json.loads(data) if data else {}


def object_path(kind: str, namespace: str, name: str) -> str:
    if kind == crd.KIND:
        return f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{namespace}/{crd.PLURAL}/{name}"
    return _PATHS[kind].format(ns=namespace, name=name)


_SURROGATE_PAIR = re.compile(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})", re.IGNORECASE)


def apply_patch_body(obj: dict[str, Any]) -> bytes:
    """An apply patch is YAML, and JSON is YAML, with one catch found by fuzzing specs: the API
    server's YAML reader rejects the surrogate-pair escapes (\\ud83d\\ude00) json.dumps writes for a
    character beyond the BMP — and raw C1 control characters, so ``ensure_ascii=False`` is no way out.
    So: ASCII JSON, with each surrogate pair turned back into its (raw UTF-8) character."""
    text = json.dumps(obj)
    return _SURROGATE_PAIR.sub(lambda m: chr(0x10000 + ((int(m[1], 16) - 0xD800) << 10) + (int(m[2], 16) - 0xDC00)),
                               text).encode()


def server_side_apply(api: client.ApiClient, obj: dict[str, Any], subresource: str | None = None,
                      manager: str = FIELD_MANAGER) -> dict[str, Any]:
    md = obj["metadata"]
    path = object_path(obj["kind"], md["namespace"], md["name"]) + (f"/{subresource}" if subresource else "")
    body = apply_patch_body(obj)
    return request(api, "PATCH", path, body=body, query=[("fieldManager", manager), ("force", "true")],
                   content_type="application/apply-patch+yaml")


def owns_replicas(live: Mapping[str, Any] | None) -> bool:
    """The operator's field manager holds the Deployment's spec.replicas (server-side apply)."""
    for entry in ((live or {}).get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply" \
                and "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {}):
            return True
    return False


def hand_over_replicas(api: client.ApiClient, obj: dict[str, Any]) -> None:
    """Let go of a Deployment's spec.replicas without resetting it (Kubernetes' documented way to
    hand a field to an autoscaler): another manager applies the same value, so the field has a
    second owner, then the operator applies its manifest without the field. From then on only the
    HorizontalPodAutoscaler (through the scale subresource) changes it; dropping the field from our
    own apply while we were its only owner would have reset it to 1."""
    md = obj["metadata"]
    server_side_apply(api, {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                            "metadata": {"name": md["name"], "namespace": md["namespace"]},
                            "spec": {"replicas": obj["spec"]["replicas"]}}, manager=HANDOVER_MANAGER)
    without = copy.deepcopy(obj)
    without["spec"].pop("replicas", None)
    apply_forced(api, without)


def autoscaled(obj: Mapping[str, Any]) -> bool:
    return obj.get("kind") == "Deployment" and \
        ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_AUTOSCALED) == "true"


# -- is what we render still what the object holds? -------------------------------------------


class _Unset:
    def __repr__(self) -> str:
        return "unset"


UNSET: Any = _Unset()  # a field the live object does not have

_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:[eE]([+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")
_SUFFIX = {None: Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
           "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
           "P": Decimal(10) ** 15, "E": Decimal(10) ** 18, "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20,
           "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60}
# Keys whose values (or whose map's values) are resource quantities, which the API server stores in
# canonical form: "1000m" comes back as "1", "0.5" as "500m", "2048Mi" as "2Gi".
_QUANTITY_MAPS = {"requests", "limits"}
_QUANTITY_KEYS = {"sizeLimit"}


def parse_quantity(value: Any) -> Decimal | None:
    """A Kubernetes resource quantity ("1", "500m", "1.5Gi", "1e3", 2) as an exact number; None when
    it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if not isinstance(value, str):
        return None
    m = _QUANTITY.match(value.strip())
    if not m:
        return None
    try:
        number = Decimal(m[1])
        if m[2] is not None:
            return number.scaleb(int(m[2]))
        return number * _SUFFIX[m[3]]
    except InvalidOperation:
        return None


def _empty(value: Any) -> bool:
    """What an omitted field reads as: the API server drops false/0/""/{}/[] of an ``omitempty`` field."""
    if value is None:
        return True
    if isinstance(value, bool):
        return value is False
    if isinstance(value, (int, float)):
        return value == 0
    return isinstance(value, (str, dict, list)) and not value


def _same(desired: Any, live: Any, quantity: bool) -> bool:
    if live is UNSET or live is None:
        return _empty(desired)
    if quantity:
        d, lv = parse_quantity(desired), parse_quantity(live)
        if d is not None and lv is not None:
            return d == lv
    if isinstance(desired, bool) or isinstance(live, bool):
        return type(desired) is type(live) and desired == live
    if isinstance(desired, (int, float)) and isinstance(live, (int, float)):
        return desired == live
    if isinstance(desired, int) and isinstance(live, str):  # an int-or-string the server kept as text
        return str(desired) == live
    return desired == live


def _named(items: list[Any]) -> bool:
    """A list of objects each with a distinct ``name`` (containers, volumes, env, ports, mounts, owner
    references): server-side apply merges those by key, so items other managers added stay."""
    names = [i.get("name") for i in items if isinstance(i, dict)]
    return bool(items) and len(names) == len(items) and all(isinstance(n, str) for n in names) \
        and len(set(names)) == len(names)


def differences(desired: Any, live: Any, path: str = "", quantity: bool = False) -> Iterator[tuple[str, Any, Any]]:
    """(path, live value, desired value) for every field we render that the live object does not hold
    (``UNSET`` where it has no such field). Nothing yielded: ``desired`` is contained in ``live``.

    Maps: every key of ``desired`` (only those). Lists of named objects: each desired item against a
    live item of the same name (another manager's extra items are not ours). Other lists (args,
    tolerations, match expressions: atomic, which server-side apply replaces whole): the same
    length, item by item."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            if not (_empty(desired) and (live is UNSET or live is None)):
                yield path, live, desired
            return
        for key, value in desired.items():
            sub = f"{path}.{key}" if path else key
            yield from differences(value, live.get(key, UNSET), sub,
                                   key in _QUANTITY_KEYS or (quantity and not isinstance(value, dict))
                                   or (key in _QUANTITY_MAPS and isinstance(value, dict)))
        return
    if isinstance(desired, list):
        if not isinstance(live, list):
            if not (_empty(desired) and (live is UNSET or live is None)):
                yield path, live, desired
            return
        if _named(desired):
            for item in desired:
                sub = f"{path}[{item['name']}]"
                same_name = [i for i in live if isinstance(i, dict) and i.get("name") == item["name"]]
                # A name held twice (another manager's item beside ours): ours is the one that matches.
                found = [list(differences(item, i, sub)) for i in same_name] or [[(sub, UNSET, item)]]
                if all(found):
                    yield from found[0]
            return
        if len(desired) != len(live):
            yield path, live, desired
            return
        for i, (d, lv) in enumerate(zip(desired, live)):
            yield from differences(d, lv, f"{path}[{i}]", quantity)
        return
    if not _same(desired, live, quantity):
        yield path, live, desired


def contained(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    """Whether the live object already holds everything we render (kind and apiVersion aside: list
    responses leave them out of their items)."""
    return not any(differences(_comparable(desired), live))


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}


def _show(value: Any) -> str:
    if value is UNSET:
        return "unset"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def drift_message(kind: str, name: str, diffs: list[tuple[str, Any, Any]]) -> str:
    """``Deployment doorbell-xeon-ab12cd34: spec.replicas was 0, restored to 2`` (the first few)."""
    shown = "; ".join(f"{p} was {_show(old)}, restored to {_show(new)}" for p, old, new in diffs[:DRIFT_PATHS_SHOWN])
    more = len(diffs) - DRIFT_PATHS_SHOWN
    return f"{kind} {name}: {shown}" + (f"; and {more} more" if more > 0 else "")


# (namespace, kind, name) -> (applied hash, {path: value}): what the API server kept after our own
# apply of exactly that manifest. Not fought again while it stays so; process memory only (after a
# restart the first pass applies once more, and learns it again).
_SERVER_KEEPS: dict[tuple[str, str, str], tuple[str, dict[str, Any]]] = {}


APPLY_CONFLICT_TRIES = 4


def apply_forced(api: client.ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    """A forced server-side apply carries no precondition, so a 409 on it can only be transient (an
    overloaded or proxied API server): it is tried again in the pass, unlike the status write, whose
    409 means a newer object and re-plans."""
    for attempt in range(APPLY_CONFLICT_TRIES):
        try:
            return server_side_apply(api, obj)
        except ApiException as e:
            if e.status != 409 or attempt == APPLY_CONFLICT_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def apply_child(api: client.ApiClient, vd: VisionDeploymentView, obj: dict[str, Any],
                live: Mapping[str, Any] | None) -> tuple[bool, str | None]:
    """Hold one child to ``obj`` (carrying its applied hash): (written, the ChildDrifted message when
    someone else had changed it)."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    want = obj["metadata"]["annotations"][ANNOTATION_APPLIED]
    key = (vd.namespace, kind, name)
    if live is not None:
        if kind == "Job":
            # A Job's pod template is immutable and the Job runs once: an existing one is left as it is
            # (the planner replaces a Job it no longer wants with DeleteCompileJob).
            return False, None
        kept = _SERVER_KEEPS.get(key)
        kept_paths = kept[1] if kept and kept[0] == want else {}
        diffs = [d for d in differences(_comparable(obj), live)
                 if not (d[0] in kept_paths and kept_paths[d[0]] == d[1])]
        if not diffs:
            return False, None
        ours = ((live.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_APPLIED)
        drifted = drift_message(kind, name, diffs) if ours == want else None
    else:
        drifted = None
    result = apply_forced(api, obj)
    rest = list(differences(_comparable(obj), result)) if result else []
    if rest:
        log.warning("%s/%s: the API server keeps %s different from what was applied (a mutating webhook?); "
                    "not applied again for that", vd.namespace, vd.name, drift_message(kind, name, rest))
        _SERVER_KEEPS[key] = (want, {p: old for p, old, _ in rest})
    else:
        _SERVER_KEEPS.pop(key, None)
    return True, drifted


def delete(api: client.ApiClient, kind: str, namespace: str, name: str) -> bool:
    try:
        request(api, "DELETE", object_path(kind, namespace, name), body={"propagationPolicy": "Background"})
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    finally:
        _SERVER_KEEPS.pop((namespace, kind, name), None)


def render(vd: VisionDeploymentView, plan: Plan) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Manifests to apply and (kind, name) pairs to delete. Compile Jobs, ConfigMaps and Deployments
    come from their action's ``spec`` (the revision's frozen spec), never from ``vd.spec``; the
    Services belong to no revision and the drift Service follows the spec as it is now."""
    apply_, delete_, snapshots = [], [], []
    for a in plan.actions:
        if isinstance(a, EnsureService):
            apply_.append(build_service(vd.name, vd.namespace, vd.uid))
            apply_.append(build_metrics_service(vd.name, vd.namespace, vd.uid, vd.spec.analysis.drift is not None))
            if vd.spec.analysis.drift is not None:
                apply_.append(build_drift_service(vd.name, vd.namespace, vd.uid))
            if a.stable is not None:
                apply_.append(build_stable_service(vd.name, vd.namespace, vd.uid, a.stable))
        elif isinstance(a, EnsureCompileJob):
            apply_.append(build_compile_job(vd.name, vd.namespace, vd.uid, a.spec, a.cls, a.revision))
        elif isinstance(a, DeleteCompileJob):
            delete_.append(("Job", compile_job_name(vd.name, a.class_name, a.revision)))
        elif isinstance(a, EnsureServing):
            apply_.append(build_config_map(vd.name, vd.namespace, vd.uid, a.spec, a.cls, a.revision, a.compile))
            apply_.append(build_triton_deployment(vd.name, vd.namespace, vd.uid, a.spec, a.cls, a.revision,
                                                  a.replicas, a.compile, a.track, autoscaled=a.autoscaled))
        elif isinstance(a, EnsureAutoscaler):
            apply_.append(build_autoscaler(vd.name, vd.namespace, vd.uid, a.cls, a.revision, a.min, a.max,
                                           a.counted or (a.revision,)))
        elif isinstance(a, DeleteServing):
            name = serving_name(vd.name, a.class_name, a.revision)
            delete_ += [("Deployment", name), ("ConfigMap", name)]
        elif isinstance(a, SetRouteWeights):
            apply_ += [build_revision_service(vd.name, vd.namespace, vd.uid, rev) for rev in routed_revisions(a)]
        elif isinstance(a, DeleteSnapshot):
            snapshots.append(("ControllerRevision", snapshot_name(vd.name, a.revision)))
    # A revision's snapshot goes after its children: were the pass to stop in between, the next one
    # still has the snapshot to render them from.
    return apply_, delete_ + snapshots


def routed_revisions(a: SetRouteWeights) -> list[str]:
    """The revisions whose Services the route names: its weighted backends and a shadow mirror."""
    revs = [rev for rev, _ in a.weights]
    if a.mirror is not None and a.mirror.revision not in revs:
        revs.append(a.mirror.revision)
    return revs


def _plain(outcome: Any) -> str | None:
    """An Outcome member or a plain string: the annotation holds the plain value."""
    return None if outcome is None else str(getattr(outcome, "value", outcome))


def create_snapshot(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> bool:
    """POST one ControllerRevision; False when it exists already (another replica, or a pass that
    stopped, made it: its data is the same revision's)."""
    try:
        request(api, "POST", f"/apis/apps/v1/namespaces/{namespace}/controllerrevisions", body=body,
                query=[("fieldManager", FIELD_MANAGER)])
        return True
    except ApiException as e:
        if e.status != 409:
            raise
        return False


def apply_snapshots(api: client.ApiClient, vd: VisionDeploymentView, plan: Plan,
                    live: Mapping[tuple[str, str], Mapping[str, Any]]) -> int:
    """EnsureSnapshot and MarkOutcome; the number of writes. A snapshot is created once (with the
    outcome the same plan marks, if any) and never re-applied: Kubernetes refuses any change of a
    ControllerRevision's data, and a revision must keep running what it was created with."""
    writes = 0
    marks = {a.revision: _plain(a.outcome) for a in plan.actions if isinstance(a, MarkOutcome)}
    number = max((int(o.get("revision") or 0) for (kind, _), o in live.items() if kind == "ControllerRevision"),
                 default=0) + 1
    created: set[str] = set()
    for a in plan.actions:
        if not isinstance(a, EnsureSnapshot):
            continue
        rev = a.snapshot.revision
        if ("ControllerRevision", snapshot_name(vd.name, rev)) in live or rev in created:
            continue
        body = build_controller_revision(vd.name, vd.namespace, vd.uid, rev, snapshot_to_data(a.snapshot), number,
                                         marks.get(rev, _plain(a.snapshot.outcome)))
        if create_snapshot(api, vd.namespace, body):
            writes += 1
            number += 1
        created.add(rev)
    for rev, outcome in marks.items():
        if rev in created:
            continue
        obj = live.get(("ControllerRevision", snapshot_name(vd.name, rev)))
        if obj is None:
            log.info("%s/%s: no snapshot of revision %s to mark %s", vd.namespace, vd.name, rev, outcome)
            continue
        if ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_OUTCOME) == outcome:
            continue
        # Not a patch: any update of a ControllerRevision is refused ("data: field is immutable") when
        # the API server's re-encoding of the stored data differs by a byte from what was sent (50.0
        # re-encoded as 50, key order, spacing). So the snapshot is created again, with the same data
        # and number, carrying the outcome. A crash between the two requests loses only the memory of
        # an outcome the history still holds; the next pass that needs the snapshot takes it again.
        delete(api, "ControllerRevision", vd.namespace, snapshot_name(vd.name, rev))
        body = build_controller_revision(vd.name, vd.namespace, vd.uid, rev, obj.get("data"),
                                         int(obj.get("revision") or number), outcome)
        create_snapshot(api, vd.namespace, body)
        writes += 2
    return writes


def set_route_weights(api: client.ApiClient, vd: VisionDeploymentView, action: SetRouteWeights,
                      revision_services: dict[str, str]) -> bool:
    """Point the HTTPRoute's backends for this VisionDeployment at its per-revision Services with the
    planned weights. Rules that route elsewhere are left alone. Written (with the route's
    resourceVersion, so a concurrent edit wins and we retry next pass) only when something changed."""
    path = object_path("HTTPRoute", vd.namespace, action.route)
    try:
        route = request(api, "GET", path)
    except ApiException as e:
        if e.status == 404:
            log.warning("%s/%s: HTTPRoute %s not found; traffic stays as it is", vd.namespace, vd.name, action.route)
            return False
        raise
    ours = {vd.name, *revision_services}
    changed = False
    for rule in route.get("spec", {}).get("rules", []):
        new = route_backends(rule.get("backendRefs", []), vd.name, ours, list(action.weights))
        if new is None:
            continue
        if new != rule.get("backendRefs"):
            rule["backendRefs"] = new
            changed = True
        m = action.mirror
        shadow = shadow_target(vd.name, m.revision, m.percent, m.to_monitor) if m is not None else None
        filters = mirror_filters(rule.get("filters") or [], vd.name, vd.spec.analysis.drift is not None,
                                 ours - {vd.name}, shadow)
        if filters != (rule.get("filters") or []):
            rule["filters"] = filters
            changed = True
    if changed:
        request(api, "PUT", path, body=route, query=[("fieldManager", FIELD_MANAGER)])
    return changed


CRASH_ENV = "VISIONFLEET_TEST_CRASH_AT"


def crash_point(name: str) -> None:
    """Fault-suite hook (tests/e2e/test_faults.py; never set in a cluster): with
    VISIONFLEET_TEST_CRASH_AT=<name> the process SIGKILLs itself here — a crash between two writes
    of one pass, the moment a restart must recover from."""
    if os.environ.get(CRASH_ENV) == name:
        log.warning("crash point %s: killing this process (%s is set)", name, CRASH_ENV)
        os.kill(os.getpid(), signal.SIGKILL)


class StatusConflict(Exception):
    """The VisionDeployment changed since the pass read it (409 on the status write): the pass's
    status is stale and must be planned again from the fresh object."""


def apply_plan(api: client.ApiClient, vd: VisionDeploymentView, plan: Plan,
               live: Mapping[tuple[str, str], Mapping[str, Any]], writes: WriteCounter | None = None,
               revision_services: dict[str, str] | None = None, resource_version: str | None = None) -> WriteCounter:
    """``live``: (kind, name) -> each child as observed (JSON as the API server returned it; a
    ControllerRevision's metadata and ``revision`` suffice); ``revision_services``: name -> revision
    of the per-revision Services that exist; ``resource_version``: of the VisionDeployment the pass
    planned from (the status write's precondition; None writes unconditionally).
    Raises StatusConflict when the status write found a newer object; everything before it (child
    applies, deletes) is idempotent and stays, and the Events wait for the pass that writes status."""
    writes = writes or WriteCounter()
    revision_services = revision_services or {}
    writes.applies += apply_snapshots(api, vd, plan, live)
    to_apply, to_delete = render(vd, plan)
    routed = {revision_service_name(vd.name, rev) for a in plan.actions if isinstance(a, SetRouteWeights)
              for rev in routed_revisions(a)}
    to_delete = [("Service", name) for name in revision_services if name not in routed] + to_delete
    scalers = {autoscaler_name(vd.name, a.cls.name) for a in plan.actions if isinstance(a, EnsureAutoscaler)}
    to_delete += [(kind, name) for kind, name in live if kind == "HorizontalPodAutoscaler" and name not in scalers]
    for obj in to_apply:
        current = live.get((obj["kind"], obj["metadata"]["name"]))
        handover = False
        if autoscaled(obj):
            # The class's HPA sizes this Deployment: the operator sets replicas only when it creates it
            # (or still holds the field, e.g. a canary just promoted), then hands the field over.
            if current is not None and not owns_replicas(current):
                obj["spec"].pop("replicas", None)
            else:
                handover = True
        obj = with_applied_hash(obj)
        written, drifted = apply_child(api, vd, obj, current)
        if handover:
            hand_over_replicas(api, obj)
            writes.applies += 2
        if not written:
            continue
        writes.applies += 1
        if drifted:
            log.warning("%s/%s: %s", vd.namespace, vd.name, drifted)
            post_event(api, vd, "Warning", DRIFT_REASON, drifted)
            writes.events += 1
        crash_point("after-child-apply")
    for a in plan.actions:
        if isinstance(a, SetRouteWeights) and set_route_weights(api, vd, a, revision_services):
            writes.applies += 1
    for kind, name in to_delete:
        # Only what was observed: a delete of what is already gone would be a request on every pass.
        if (kind, name) in live and delete(api, kind, vd.namespace, name):
            writes.deletes += 1
    if write_status(api, vd.name, vd.namespace, vd.status, plan.status, resource_version):
        writes.status_writes += 1
        if plan.status.canary_weight != vd.status.canary_weight:
            crash_point("after-weight-change")
    for e in plan.events:
        post_event(api, vd, e.type, e.reason, e.message)
        writes.events += 1
    return writes


def write_status(api: client.ApiClient, name: str, namespace: str, old: VisionDeploymentStatus,
                 new: VisionDeploymentStatus, resource_version: str | None = None) -> bool:
    """Server-side apply of the whole status, only when it differs from what was read, and only onto
    the object it was planned from: with ``resource_version`` the API server refuses (409) a write
    onto a newer object — StatusConflict. Without it the write is unconditional.

    Why: a pass plans from the body the watch last delivered. Were that body stale (the watch a beat
    behind another replica's or a user's write, or behind our own previous status write), a forced,
    unconditional apply would put the stale pass's status over the newer one — a weight or history
    entry lost. The precondition turns that into a re-plan from the fresh object."""
    wire = new.to_wire()
    if wire == old.to_wire():
        return False
    md: dict[str, Any] = {"name": name, "namespace": namespace}
    if resource_version:
        md["resourceVersion"] = resource_version
    body = {"apiVersion": f"{crd.GROUP}/{crd.VERSION}", "kind": crd.KIND, "metadata": md, "status": wire}
    try:
        server_side_apply(api, body, subresource="status")
    except ApiException as e:
        # With force, a 409 is not a field-manager conflict: the object is newer than resourceVersion —
        # unless a fresh read shows the very same version (a transient 409 from an overloaded or
        # proxied API server): then the write is tried once more, on that same version.
        if e.status != 409 or not resource_version:
            raise
        now = (request(api, "GET", object_path(crd.KIND, namespace, name)).get("metadata") or {}).get("resourceVersion")
        if now != resource_version:
            raise StatusConflict(f"{namespace}/{name} changed since resourceVersion {resource_version}") from e
        try:
            server_side_apply(api, body, subresource="status")
        except ApiException as again:
            if again.status == 409:
                raise StatusConflict(f"{namespace}/{name}: status write refused twice (409) on resourceVersion "
                                     f"{resource_version}") from again
            raise
    return True


def post_event(api: client.ApiClient, vd: VisionDeploymentView, type_: str, reason: str, message: str) -> None:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{vd.name}.", "namespace": vd.namespace},
        "involvedObject": {"apiVersion": f"{crd.GROUP}/{crd.VERSION}", "kind": crd.KIND, "name": vd.name,
                           "namespace": vd.namespace, "uid": vd.uid},
        "reason": reason, "message": message[:1024], "type": type_,
        "source": {"component": "visionfleet"},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "reportingComponent": "visionfleet.io/operator", "reportingInstance": "visionfleet-operator",
    }
    try:
        request(api, "POST", f"/api/v1/namespaces/{vd.namespace}/events", body=body)
    except ApiException as e:  # an Event is a courtesy; the status already records the transition
        log.warning("could not post event %s for %s/%s: %s", reason, vd.namespace, vd.name, e.reason)


def status_from(body_status: dict[str, Any] | None) -> VisionDeploymentStatus:
    return VisionDeploymentStatus.model_validate(body_status or {})
