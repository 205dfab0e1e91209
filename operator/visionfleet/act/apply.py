"""Carry out a plan: server-side apply of what should exist, deletes of what should not, one status
write per pass (only when it changed) and the plan's Events.

Writes in a steady state: zero. Each object we apply carries ``visionfleet.io/applied-hash``, the
hash of the manifest we rendered; an object whose hash already matches is not sent again, and the
status is written only when the planner's status differs from the one read.
"""

from __future__ import annotations

import json
import logging
import re
import os
import signal
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from visionfleet.api import crd
from visionfleet.api.status import VisionDeploymentStatus
from visionfleet.builders.manifests import (
    ANNOTATION_APPLIED,
    build_compile_job,
    build_config_map,
    build_drift_service,
    build_revision_service,
    build_service,
    build_triton_deployment,
    mirror_filters,
    revision_service_name,
    route_backends,
    serving_name,
    with_applied_hash,
)
from visionfleet.planner.model import (
    DeleteServing,
    EnsureCompileJob,
    EnsureService,
    EnsureServing,
    Plan,
    SetRouteWeights,
    VisionDeploymentView,
)

FIELD_MANAGER = "visionfleet"
log = logging.getLogger("visionfleet.act")

_PATHS = {
    "Job": "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps/{name}",
    "Service": "/api/v1/namespaces/{ns}/services/{name}",
    "HTTPRoute": "/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes/{name}",
}


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


def server_side_apply(api: client.ApiClient, obj: dict[str, Any], subresource: str | None = None) -> dict[str, Any]:
    md = obj["metadata"]
    path = object_path(obj["kind"], md["namespace"], md["name"]) + (f"/{subresource}" if subresource else "")
    body = apply_patch_body(obj)
    return request(api, "PATCH", path, body=body, query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                   content_type="application/apply-patch+yaml")


def delete(api: client.ApiClient, kind: str, namespace: str, name: str) -> bool:
    try:
        request(api, "DELETE", object_path(kind, namespace, name), body={"propagationPolicy": "Background"})
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise


def render(vd: VisionDeploymentView, plan: Plan) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Manifests to apply and (kind, name) pairs to delete."""
    apply_, delete_ = [], []
    for a in plan.actions:
        if isinstance(a, EnsureService):
            apply_.append(build_service(vd.name, vd.namespace, vd.uid))
            if vd.spec.analysis.drift is not None:
                apply_.append(build_drift_service(vd.name, vd.namespace, vd.uid))
        elif isinstance(a, EnsureCompileJob):
            apply_.append(build_compile_job(vd.name, vd.namespace, vd.uid, vd.spec, a.cls, a.revision))
        elif isinstance(a, EnsureServing):
            apply_.append(build_config_map(vd.name, vd.namespace, vd.uid, vd.spec, a.cls, a.revision, a.compile))
            apply_.append(build_triton_deployment(vd.name, vd.namespace, vd.uid, vd.spec, a.cls, a.revision,
                                                  a.replicas, a.compile, a.track))
        elif isinstance(a, DeleteServing):
            name = serving_name(vd.name, a.class_name, a.revision)
            delete_ += [("Deployment", name), ("ConfigMap", name)]
        elif isinstance(a, SetRouteWeights):
            apply_ += [build_revision_service(vd.name, vd.namespace, vd.uid, rev) for rev, _ in a.weights]
    return apply_, delete_


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
        filters = mirror_filters(rule.get("filters") or [], vd.name, vd.spec.analysis.drift is not None)
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


def apply_plan(api: client.ApiClient, vd: VisionDeploymentView, plan: Plan, applied: dict[tuple[str, str], str],
               writes: WriteCounter | None = None, revision_services: dict[str, str] | None = None) -> WriteCounter:
    """``applied``: (kind, name) -> the applied-hash annotation of each object as observed;
    ``revision_services``: name -> revision of the per-revision Services that exist."""
    writes = writes or WriteCounter()
    revision_services = revision_services or {}
    to_apply, to_delete = render(vd, plan)
    routed = {revision_service_name(vd.name, rev) for a in plan.actions if isinstance(a, SetRouteWeights)
              for rev, _ in a.weights}
    to_delete += [("Service", name) for name in revision_services if name not in routed]
    for obj in to_apply:
        obj = with_applied_hash(obj)
        key = (obj["kind"], obj["metadata"]["name"])
        if applied.get(key) == obj["metadata"]["annotations"][ANNOTATION_APPLIED]:
            continue
        server_side_apply(api, obj)
        writes.applies += 1
        crash_point("after-child-apply")
    for a in plan.actions:
        if isinstance(a, SetRouteWeights) and set_route_weights(api, vd, a, revision_services):
            writes.applies += 1
    for kind, name in to_delete:
        if delete(api, kind, vd.namespace, name):
            writes.deletes += 1
    if write_status(api, vd.name, vd.namespace, vd.status, plan.status):
        writes.status_writes += 1
        if plan.status.canary_weight != vd.status.canary_weight:
            crash_point("after-weight-change")
    for e in plan.events:
        post_event(api, vd, e.type, e.reason, e.message)
        writes.events += 1
    return writes


def write_status(api: client.ApiClient, name: str, namespace: str, old: VisionDeploymentStatus,
                 new: VisionDeploymentStatus) -> bool:
    """Server-side apply of the whole status, only when it differs from what was read."""
    wire = new.to_wire()
    if wire == old.to_wire():
        return False
    server_side_apply(api, {"apiVersion": f"{crd.GROUP}/{crd.VERSION}", "kind": crd.KIND,
                            "metadata": {"name": name, "namespace": namespace}, "status": wire},
                      subresource="status")
    return True


def post_event(api: client.ApiClient, vd: VisionDeploymentView, type_: str, reason: str, message: str) -> None:
    now = datetime.now(timezone.utc)
    body = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name=f"{vd.name}.", namespace=vd.namespace),
        involved_object=client.V1ObjectReference(api_version=f"{crd.GROUP}/{crd.VERSION}", kind=crd.KIND,
                                                  name=vd.name, namespace=vd.namespace, uid=vd.uid),
        reason=reason, message=message[:1024], type=type_,
        source=client.V1EventSource(component="visionfleet"),
        first_timestamp=now, last_timestamp=now, count=1,
        reporting_component="visionfleet.io/operator", reporting_instance="visionfleet-operator",
    )
    try:
        client.CoreV1Api(api).create_namespaced_event(vd.namespace, body)
    except ApiException as e:  # an Event is a courtesy; the status already records the transition
        log.warning("could not post event %s for %s/%s: %s", reason, vd.namespace, vd.name, e.reason)


def status_from(body_status: dict[str, Any] | None) -> VisionDeploymentStatus:
    return VisionDeploymentStatus.model_validate(body_status or {})
