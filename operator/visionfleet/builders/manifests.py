"""Manifests of everything a VisionDeployment creates. Pure: dicts in, dicts out.

    VisionDeployment <vd>
      ├─ ControllerRevision <vd>-rev-<rev>           the revision's frozen spec and classes (its data
      │                                              never changes; annotation visionfleet.io/outcome)
      ├─ Job         <vd>-<class>-<rev8>-compile     one per class and revision, runs on the class
      ├─ ConfigMap   <vd>-<class>-<rev8>             config.pbtxt of that artifact
      ├─ Deployment  <vd>-<class>-<rev8>             Triton serving that artifact on the class
      ├─ Service     <vd>                            every Ready Triton pod of the VisionDeployment
      └─ Service     <vd>-drift                      the drift monitor sidecars (the traffic mirror's
                                                     target), when spec.analysis.drift is set

Names are deterministic (a restart recreates nothing) and at most 63 characters (they become label
values); a long name is cut and given a short hash of the full name, so it stays unique. Every
object carries an owner reference to the VisionDeployment (garbage collection on delete) and the
labels Argo CD and ``kubectl`` users filter by. Everything of a revision is rendered from that
revision's frozen spec (``RevisionSnapshot.spec``), never from the spec as it is now.

Pods follow the Pod Security Standard ``restricted``: non-root, no privilege escalation, all
capabilities dropped, RuntimeDefault seccomp, read-only root filesystem (an emptyDir for /tmp).
The compile Job's pod gets no service account token at all: its result goes back through the
container's termination message, so it needs no API access.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from visionfleet.api import crd
from visionfleet.api.spec import (COMPILE_GPU_IMAGE, COMPILE_IMAGE, MONITOR_IMAGE, MONITOR_MMD_IMAGE, DriftDetector,
                                  Runtime, VisionDeploymentSpec)
from visionfleet.api.status import CompileResult
from visionfleet.planner.classes import ResolvedClass
from visionfleet.planner.durations import seconds
from visionfleet.planner.model import Track

from visionfleet_contract import (COMPILE_REQUEST_ENV, CONFIG_FILE, LABEL_CLASS, LABEL_REVISION, LABEL_VD,
                                  MONITOR_PORT, PERMANENT_EXIT_CODES, PVC_ROOT, REFERENCE_FILE)

from .triton_config import build_triton_config

NAME_MAX = 63
LABEL_COMPONENT = "app.kubernetes.io/component"
ANNOTATION_APPLIED = "visionfleet.io/applied-hash"
ANNOTATION_OUTCOME = "visionfleet.io/outcome"  # on a revision's ControllerRevision: its newest outcome
TRACK_ANNOTATION = "visionfleet.io/track"
COMPONENT_REVISION = "revision"
TRITON_HTTP, TRITON_GRPC, TRITON_METRICS = 8000, 8001, 8002


def child_name(*parts: str) -> str:
    name = "-".join(parts)
    if len(name) <= NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{name[:NAME_MAX - 7].rstrip('-')}-{digest}"


def serving_name(vd: str, class_name: str, revision: str) -> str:
    return child_name(vd, class_name, revision[:8])


def compile_job_name(vd: str, class_name: str, revision: str) -> str:
    return child_name(vd, class_name, revision[:8], "compile")


def snapshot_name(vd: str, revision: str) -> str:
    """The revision's ControllerRevision: the whole revision (12 hex digits), not its first 8."""
    return child_name(vd, "rev", revision)


def labels(vd: str, component: str, class_name: str | None = None, revision: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "visionfleet",
        "app.kubernetes.io/instance": vd,
        LABEL_COMPONENT: component,
        "app.kubernetes.io/managed-by": "visionfleet",
        LABEL_VD: vd,
    }
    if class_name:
        out[LABEL_CLASS] = class_name
    if revision:
        out[LABEL_REVISION] = revision
    return out


def owner_reference(vd: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": f"{crd.GROUP}/{crd.VERSION}", "kind": crd.KIND, "name": vd, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def meta(name: str, namespace: str, vd: str, uid: str, lbls: dict[str, str],
         annotations: dict[str, str] | None = None) -> dict[str, Any]:
    out = {"name": name, "namespace": namespace, "labels": lbls, "ownerReferences": [owner_reference(vd, uid)]}
    if annotations:
        out["annotations"] = annotations
    return out


RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                  "seccompProfile": {"type": "RuntimeDefault"}}


def _placement(cls: ResolvedClass) -> dict[str, Any]:
    out: dict[str, Any] = {"nodeSelector": dict(cls.spec.node_selector)}
    if cls.spec.tolerations:
        out["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in cls.spec.tolerations]
    if cls.absent_labels:
        out["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": k, "operator": "DoesNotExist"} for k in cls.absent_labels]}]}}}
    return out


def _resources(cls: ResolvedClass) -> dict[str, Any]:
    r = cls.spec.resources
    if r is None:
        return {}
    out = {}
    if r.requests:
        out["requests"] = {k: str(v) for k, v in r.requests.items()}
    if r.limits:
        out["limits"] = {k: str(v) for k, v in r.limits.items()}
    return out


def _pvc(uri: str | None) -> tuple[str, str] | None:
    """pvc://<claim>/<path> -> (claim, path)."""
    if not uri or not uri.startswith("pvc://"):
        return None
    claim, _, path = uri[len("pvc://"):].partition("/")
    return claim, path


def artifact_dir(spec: VisionDeploymentSpec, class_name: str, revision: str) -> str:
    """Where in the model repository the artifact of (class, revision) lives."""
    repo = _pvc(spec.serving.model_repository)
    base = repo[1].strip("/") if repo else ""
    return "/".join(p for p in (base, spec.model.name, f"{revision}-{class_name}") if p)


def compile_image(spec: VisionDeploymentSpec, cls: ResolvedClass) -> str:
    """The class's own compile image, else the one for its runtime: compile.gpuImage for tensorrt; an
    own compile.image for every class when gpuImage is unset (one image built for both, as specs and
    frozen revisions from before gpuImage existed have it); else the GPU default."""
    if cls.spec.compile_image:
        return cls.spec.compile_image
    if cls.spec.runtime != Runtime.TENSORRT.value:
        return spec.compile.image
    if spec.compile.gpu_image:
        return spec.compile.gpu_image
    return spec.compile.image if spec.compile.image != COMPILE_IMAGE else COMPILE_GPU_IMAGE


def monitor_image(spec: VisionDeploymentSpec) -> str:
    """analysis.drift.image, else the image for the detector (only the mmd one carries torch)."""
    drift = spec.analysis.drift
    if drift.image:
        return drift.image
    return MONITOR_MMD_IMAGE if drift.detector == DriftDetector.MMD.value else MONITOR_IMAGE


def build_compile_job(vd: str, namespace: str, uid: str, spec: VisionDeploymentSpec, cls: ResolvedClass,
                      revision: str) -> dict[str, Any]:
    request = {
        "revision": revision,
        "class": cls.name,
        "runtime": cls.spec.runtime,
        "precision": cls.spec.precision,
        "model": spec.model.to_wire(),
        "compile": spec.compile.to_wire(),
        "output": {"repository": spec.serving.model_repository, "dir": artifact_dir(spec, cls.name, revision)},
    }
    volumes = [{"name": "tmp", "emptyDir": {}}]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    # Every claim the request names is mounted at /pvc/<claim> (the compile program's
    # VISIONFLEET_PVC_ROOT); only the model repository's is writable.
    repo = _pvc(spec.serving.model_repository)
    sources = [spec.model.uri, spec.compile.calibration.uri if spec.compile.calibration else None]
    claims = {c[0]: False for u in sources if (c := _pvc(u))}
    if repo:
        claims[repo[0]] = True
    for i, (claim, writable) in enumerate(sorted(claims.items())):
        volumes.append({"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": claim, "readOnly": not writable}})
        mounts.append({"name": f"pvc-{i}", "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": not writable})
    lbls = labels(vd, "compile", cls.name, revision)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": RESTRICTED_POD,
        **_placement(cls),
        "containers": [{
            "name": "compile",
            "image": compile_image(spec, cls),
            "args": ["compile"],
            "env": [{"name": COMPILE_REQUEST_ENV, "value": json.dumps(request, sort_keys=True)}],
            "resources": _resources(cls),
            "securityContext": RESTRICTED_CONTAINER,
            "volumeMounts": mounts,
            # The result JSON is written to /dev/termination-log; a crash leaves the log tail instead.
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }],
        "volumes": volumes,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta(compile_job_name(vd, cls.name, revision), namespace, vd, uid, lbls),
        "spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": int(seconds(spec.compile.timeout)),
            "ttlSecondsAfterFinished": 24 * 3600,
            "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {
                "containerName": "compile", "operator": "In", "values": list(PERMANENT_EXIT_CODES)}}]},
            "template": {"metadata": {"labels": lbls}, "spec": pod_spec},
        },
    }


def build_config_map(vd: str, namespace: str, uid: str, spec: VisionDeploymentSpec, cls: ResolvedClass,
                     revision: str, result: CompileResult) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(serving_name(vd, cls.name, revision), namespace, vd, uid,
                         labels(vd, "triton-config", cls.name, revision)),
        "data": {CONFIG_FILE: build_triton_config(spec.model, cls.spec.runtime, result.batching)},
    }


def build_triton_deployment(vd: str, namespace: str, uid: str, spec: VisionDeploymentSpec, cls: ResolvedClass,
                            revision: str, replicas: int, result: CompileResult, track: Track | str) -> dict[str, Any]:
    name = serving_name(vd, cls.name, revision)
    model = spec.model.name
    pod_labels = labels(vd, "triton", cls.name, revision)
    selector = {LABEL_VD: vd, LABEL_CLASS: cls.name, LABEL_REVISION: revision}
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "config", "configMap": {"name": name}},
    ]
    mounts = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "config", "mountPath": f"/models/{model}/{CONFIG_FILE}", "subPath": CONFIG_FILE, "readOnly": True},
    ]
    repo = _pvc(spec.serving.model_repository)
    if repo:
        volumes.append({"name": "artifact", "persistentVolumeClaim": {"claimName": repo[0], "readOnly": True}})
        mounts.append({"name": "artifact", "mountPath": f"/models/{model}/1",
                       "subPath": artifact_dir(spec, cls.name, revision), "readOnly": True})
    else:
        volumes.append({"name": "artifact", "emptyDir": {}})
        mounts.append({"name": "artifact", "mountPath": f"/models/{model}/1"})
    probe = {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5, "failureThreshold": 3}
    container = {
        "name": "triton",
        "image": spec.serving.image,
        "args": ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit",
                 f"--load-model={model}", "--strict-readiness=true", "--allow-metrics=true",
                 "--metrics-config=summary_latencies=true", "--exit-on-error=true"],
        "ports": [{"name": "http", "containerPort": TRITON_HTTP}, {"name": "grpc", "containerPort": TRITON_GRPC},
                  {"name": "metrics", "containerPort": TRITON_METRICS}],
        "readinessProbe": probe,
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10,
                          "failureThreshold": 3},
        "startupProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5,
                         "failureThreshold": 120},
        "resources": _resources(cls),
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": mounts,
    }
    containers = [container]
    pod_annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(TRITON_METRICS)}
    if spec.analysis.drift is not None:
        containers.append(drift_monitor_container(spec, mounts))
        pod_annotations["visionfleet.io/drift-port"] = str(MONITOR_PORT)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(name, namespace, vd, uid, labels(vd, "triton", cls.name, revision),
                         {TRACK_ANNOTATION: Track(track).value, "visionfleet.io/artifact": result.artifact or ""}),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": RESTRICTED_POD,
                    **_placement(cls),
                    "containers": containers,
                    "volumes": volumes,
                },
            },
        },
    }


def drift_monitor_container(spec: VisionDeploymentSpec, triton_mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """The drift monitor sidecar: reads this revision's reference next to the artifact (read-only),
    takes mirrored requests on its port, asks the pod's own Triton for outputs (bbsd-ks)."""
    drift, model = spec.analysis.drift, spec.model
    artifact = next(m for m in triton_mounts if m["mountPath"] == f"/models/{model.name}/1")
    return {
        "name": "drift-monitor",
        "image": monitor_image(spec),
        # The command is explicit so the sidecar does not depend on the image's entrypoint.
        "command": ["visionfleet-monitor"],
        "args": [f"--reference=/reference/{REFERENCE_FILE}", f"--detector={drift.detector}",
                 f"--window={drift.window}", f"--p-value={drift.p_value}", f"--model={model.name}",
                 f"--input={model.inputs[0].name}", f"--output={model.outputs[0].name}",
                 f"--triton=http://127.0.0.1:{TRITON_HTTP}", f"--listen=0.0.0.0:{MONITOR_PORT}",
                 f"--max-rate={drift.max_samples_per_second}"],
        "ports": [{"name": "drift", "containerPort": MONITOR_PORT}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "drift"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "drift"}, "periodSeconds": 10, "failureThreshold": 3},
        "startupProbe": {"httpGet": {"path": "/healthz", "port": "drift"}, "periodSeconds": 5, "failureThreshold": 60},
        # A window of 500 × 1000 classes is 2 MB; the rest is the Python runtime with alibi-detect and torch.
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                         {**artifact, "mountPath": "/reference", "readOnly": True}],
    }


def drift_service_name(vd: str) -> str:
    return child_name(vd, "drift")


def build_drift_service(vd: str, namespace: str, uid: str) -> dict[str, Any]:
    """Every drift monitor of the VisionDeployment: where the gateway mirrors requests to. Each
    revision's pods get a share of the mirror as they get a share of the traffic."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(drift_service_name(vd), namespace, vd, uid, labels(vd, "drift-monitor")),
        "spec": {"selector": {LABEL_VD: vd, LABEL_COMPONENT: "triton"},
                 "ports": [{"name": "drift", "port": MONITOR_PORT, "targetPort": "drift"}]},
    }


def mirror_filters(filters: list[dict[str, Any]], vd: str, drift: bool) -> list[dict[str, Any]]:
    """A rule's filters with this VisionDeployment's RequestMirror (to its drift Service) present
    exactly when drift is on; every other filter kept as it is."""
    name = drift_service_name(vd)
    kept = [f for f in filters if not (f.get("type") == "RequestMirror"
                                       and (f.get("requestMirror") or {}).get("backendRef", {}).get("name") == name)]
    if drift:
        kept.append({"type": "RequestMirror", "requestMirror": {"backendRef": {
            "group": "", "kind": "Service", "name": name, "port": MONITOR_PORT}}})
    return kept


def build_service(vd: str, namespace: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(vd, namespace, vd, uid, labels(vd, "triton")),
        "spec": {
            # Every Ready Triton pod of every revision: with replica-ratio traffic the canary's share is
            # its share of the Ready pods.
            "selector": {LABEL_VD: vd, LABEL_COMPONENT: "triton"},
            "ports": [{"name": "http", "port": TRITON_HTTP, "targetPort": "http"},
                      {"name": "grpc", "port": TRITON_GRPC, "targetPort": "grpc"},
                      {"name": "metrics", "port": TRITON_METRICS, "targetPort": "metrics"}],
        },
    }


def revision_service_name(vd: str, revision: str) -> str:
    return child_name(vd, revision[:8])


def build_revision_service(vd: str, namespace: str, uid: str, revision: str) -> dict[str, Any]:
    """One revision's Triton pods, on every class: the backends an HTTPRoute splits traffic between."""
    svc = build_service(vd, namespace, uid)
    svc["metadata"]["name"] = revision_service_name(vd, revision)
    svc["metadata"]["labels"] = labels(vd, "triton", revision=revision)
    svc["spec"]["selector"] = {LABEL_VD: vd, LABEL_COMPONENT: "triton", LABEL_REVISION: revision}
    return svc


def route_backends(refs: list[dict[str, Any]], vd: str, ours: set[str],
                   weights: list[tuple[str, int]]) -> list[dict[str, Any]] | None:
    """An HTTPRoute rule's backendRefs with this VisionDeployment's backends replaced by weighted
    per-revision Services; None when the rule does not route to this VisionDeployment at all.
    ``ours``: Service names that belong to it (``<vd>`` and its per-revision Services)."""
    def mine(ref: dict[str, Any]) -> bool:
        return ref.get("kind", "Service") == "Service" and ref.get("group", "") == "" and ref.get("name") in ours
    if not any(mine(r) for r in refs):
        return None
    port = next(r.get("port", TRITON_HTTP) for r in refs if mine(r))
    return [r for r in refs if not mine(r)] + [
        {"group": "", "kind": "Service", "name": revision_service_name(vd, rev), "port": port, "weight": w}
        for rev, w in weights]


def build_controller_revision(vd: str, namespace: str, uid: str, revision: str, data: dict[str, Any],
                              number: int, outcome: str | None = None) -> dict[str, Any]:
    """A revision's frozen snapshot (``data``: ``planner.snapshot.snapshot_to_data``). Kubernetes never
    lets ``data`` change, which is the point: created once, only its outcome annotation is patched.
    ``number`` is the ControllerRevision's ``revision`` (≥ 0, ordering only)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": meta(snapshot_name(vd, revision), namespace, vd, uid,
                         labels(vd, COMPONENT_REVISION, revision=revision),
                         {ANNOTATION_OUTCOME: outcome} if outcome is not None else None),
        "data": data,
        "revision": number,
    }


def manifest_hash(obj: dict[str, Any]) -> str:
    """Hash of what we apply, stored on the object: not a reason to skip an apply (the act layer
    compares the object itself), but it tells whether *our* wish changed since the last apply — when
    it did not and the object differs, someone else changed the object (``ChildDrifted``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def with_applied_hash(obj: dict[str, Any]) -> dict[str, Any]:
    h = manifest_hash(obj)
    out = json.loads(json.dumps(obj))
    out["metadata"].setdefault("annotations", {})[ANNOTATION_APPLIED] = h
    return out

