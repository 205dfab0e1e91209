"""Manifests of everything a VisionDeployment creates. Pure: dicts in, dicts out.

    VisionDeployment <vd>
      ├─ ControllerRevision <vd>-rev-<rev>           the revision's frozen spec and classes (its data
      │                                              never changes; annotation visionfleet.io/outcome)
      ├─ Job         <vd>-<class>-<rev8>-compile     one per class and revision, runs on the class
      ├─ ConfigMap   <vd>-<class>-<rev8>             config.pbtxt of that artifact
      ├─ Deployment  <vd>-<class>-<rev8>             Triton serving that artifact on the class
      ├─ Service     <vd>                            every Ready Triton pod of the VisionDeployment (http, grpc)
      ├─ Service     <vd>-metrics                    headless: each Triton pod's metrics (and drift) port
      ├─ Service     <vd>-drift                      the drift monitor sidecars (the traffic mirror's
      │                                              target), when spec.analysis.drift is set
      ├─ Service     <vd>-<rev8>                     Gateway API traffic: one revision's pods (the route's
      │                                              weighted backends; a shadow step's mirror target)
      ├─ Service     <vd>-stable                     Gateway API traffic: the stable revision's pods, where
      │                                              a shadow canary's monitor asks for the stable's answers
      └─ HorizontalPodAutoscaler <vd>-<class>        an autoscaled class's: sizes its stable Deployment on the
                                                     class's Triton metrics (external metrics API)

Names are deterministic (a restart recreates nothing) and at most 63 characters (they become label
values); a long name is cut and given a short hash of the full name, so it stays unique. Every
object carries an owner reference to the VisionDeployment (garbage collection on delete) and the
labels Argo CD and ``kubectl`` users filter by. Everything of a revision is rendered from that
revision's frozen spec (``RevisionSnapshot.spec``), never from the spec as it is now.

Pods follow the Pod Security Standard ``restricted``: non-root, no privilege escalation, all
capabilities dropped, RuntimeDefault seccomp, read-only root filesystem (an emptyDir for /tmp).
The compile Job's pod gets no service account token at all: its result goes back through the
container's termination message, so it needs no API access. Its ServiceAccount (compile.
serviceAccountName) only carries a workload identity for object storage.

Model repositories: pvc:// is mounted (subPath = the entry) read-only into Triton; s3:// is fetched by
an init container (``visionfleet-compile fetch-entry``) into an emptyDir, every file checked against
the sha256 the compile Job reported, so a revision serves exactly the bytes that passed its gate.
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
                                  MONITOR_PORT, PERMANENT_EXIT_CODES, monitor_config, monitor_model_name, PVC_ROOT, REFERENCE_FILE, SHADOW_PORT,
                                  STABLE_URL_ENV)

from .triton_config import build_triton_config_for

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
    return {} if cls.spec.resources is None else _resources_of(cls.spec.resources)


# A compile Job without a class's resources would run BestEffort: first evicted, and its profile
# (which picks the batching) measured on whatever CPU is left over.
COMPILE_REQUESTS = {"cpu": "1", "memory": "2Gi"}
COMPILE_MEMORY_LIMIT = "8Gi"  # NNCF/TensorRT int8 calibration of a mid-size CNN peaks around 3-5 GB


def compile_resources(cls: ResolvedClass) -> dict[str, Any]:
    """The class's compileResources; else its serving resources (same CPUs and GPU, so the profile
    measures what a Triton pod will have), with the missing requests and memory limit filled in."""
    if cls.spec.compile_resources is not None:
        out = _resources_of(cls.spec.compile_resources)
        if out:
            return out
    out = _resources(cls)
    requests = dict(out.get("requests") or {})
    limits = dict(out.get("limits") or {})
    class_limits = dict(limits)
    if "memory" not in limits and "memory" not in requests:
        # (a memory request of the class's own, without a limit, stays unbounded: a default limit
        # could fall below it, which the API server refuses)
        limits["memory"] = COMPILE_MEMORY_LIMIT
    for k, v in COMPILE_REQUESTS.items():
        # A request above the class's limit is refused by the API server: take the limit then.
        requests.setdefault(k, class_limits.get(k, v))
    return {"requests": requests, "limits": limits}


def _resources_of(r: Any) -> dict[str, Any]:
    out = {}
    if r.requests:
        out["requests"] = {k: str(v) for k, v in r.requests.items()}
    if r.limits:
        out["limits"] = {k: str(v) for k, v in r.limits.items()}
    return out


def _s3_env(spec: VisionDeploymentSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(env, envFrom) that point boto3 at storage.s3: endpoint, region, credentials Secret."""
    s3 = spec.storage.s3 if spec.storage else None
    if s3 is None:
        return [], []
    env = []
    if s3.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": s3.endpoint})
    if s3.region:
        env += [{"name": "AWS_REGION", "value": s3.region}, {"name": "AWS_DEFAULT_REGION", "value": s3.region}]
    env_from = [{"secretRef": {"name": s3.credentials_secret}}] if s3.credentials_secret else []
    return env, env_from


def _cpu_limit(cls: ResolvedClass) -> int | str | None:
    r = cls.spec.resources
    return (r.limits or {}).get("cpu") if r is not None else None


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
        # The compile program derives the CPU threads from it (visionfleet_contract.cpu_threads), profiles
        # under them and writes them into config.pbtxt; absent without a limit, as before it existed.
        **({"cpuLimit": str(cpu)} if (cpu := _cpu_limit(cls)) is not None else {}),
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
    s3_env, s3_env_from = _s3_env(spec)
    # One entry per name (server-side apply refuses a list-map with a repeated key): the user's
    # compile.env over storage.s3's; the request is added last and no user name may take it.
    by_name = {e["name"]: e for e in s3_env}
    by_name.update((e.name, e.model_dump(by_alias=True, exclude_none=True, mode="json")) for e in spec.compile.env or [])
    env = list(by_name.values())
    env_from = s3_env_from + [e.model_dump(by_alias=True, exclude_none=True, mode="json")
                              for e in spec.compile.env_from or []]
    container: dict[str, Any] = {
        "name": "compile",
        "image": compile_image(spec, cls),
        "args": ["compile"],
        # The request last: a user's variable can never stand in for it (VISIONFLEET_* are refused too).
        "env": env + [{"name": COMPILE_REQUEST_ENV, "value": json.dumps(request, sort_keys=True)}],
        "resources": compile_resources(cls),
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": mounts,
        # The result JSON is written to /dev/termination-log; a crash leaves the log tail instead.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env_from:
        container["envFrom"] = env_from
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # Workload identity (IRSA, EKS Pod Identity, GKE) needs only the ServiceAccount's name: its
        # webhook or metadata server supplies the cloud token. The Kubernetes API token stays unmounted.
        **({"serviceAccountName": spec.compile.service_account_name} if spec.compile.service_account_name else {}),
        "automountServiceAccountToken": False,
        **({"runtimeClassName": cls.spec.runtime_class_name} if cls.spec.runtime_class_name else {}),
        "securityContext": RESTRICTED_POD,
        **_placement(cls),
        "containers": [container],
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
        "data": _configs(spec, cls, result),
    }


MONITOR_CONFIG_KEY = "monitor-" + CONFIG_FILE


def _configs(spec: VisionDeploymentSpec, cls: ResolvedClass, result: CompileResult) -> dict[str, str]:
    """config.pbtxt of the served entry, and with drift on the monitor's own entry's (<model>__monitor:
    the monitor's requests stay out of the served entry's nv_inference_* series the SLO reads)."""
    config = build_triton_config_for(spec.model, cls.spec.runtime, result)
    out = {CONFIG_FILE: config}
    if spec.analysis.drift is not None:
        out[MONITOR_CONFIG_KEY] = monitor_config(config, spec.model.name)
    return out


def build_triton_deployment(vd: str, namespace: str, uid: str, spec: VisionDeploymentSpec, cls: ResolvedClass,
                            revision: str, replicas: int, result: CompileResult, track: Track | str,
                            autoscaled: bool = False) -> dict[str, Any]:
    """``autoscaled``: the class's HorizontalPodAutoscaler sizes it (annotation visionfleet.io/autoscaled;
    the act layer then sets ``replicas`` only when it creates the Deployment)."""
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
    init_containers = []
    entries = [model]
    if spec.analysis.drift is not None:
        # The monitor's entry: the same artifact mounted a second time, its own config.pbtxt.
        monitor = monitor_model_name(model)
        entries.append(monitor)
        mounts.append({"name": "config", "mountPath": f"/models/{monitor}/{CONFIG_FILE}",
                       "subPath": MONITOR_CONFIG_KEY, "readOnly": True})
    if repo:
        volumes.append({"name": "artifact", "persistentVolumeClaim": {"claimName": repo[0], "readOnly": True}})
        mounts += [{"name": "artifact", "mountPath": f"/models/{e}/1",
                    "subPath": artifact_dir(spec, cls.name, revision), "readOnly": True} for e in entries]
    else:
        # s3:// (the CRD admits only pvc:// and s3://; an older object with another is refused before
        # anything is built): the init container fills the version directory, Triton reads it.
        if not (spec.serving.model_repository or "").startswith("s3://"):
            raise ValueError(f"serving.modelRepository {spec.serving.model_repository!r}: not pvc:// or s3://")
        volumes.append({"name": "artifact", "emptyDir": {}})
        mounts += [{"name": "artifact", "mountPath": f"/models/{e}/1", "readOnly": True} for e in entries]
        init_containers.append(fetch_container(spec, cls, revision, result))
    probe = {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5, "failureThreshold": 3}
    container = {
        "name": "triton",
        "image": spec.serving.image,
        "args": ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit",
                 *[f"--load-model={e}" for e in entries], "--strict-readiness=true", "--allow-metrics=true",
                 "--metrics-config=summary_latencies=true", "--exit-on-error=true",
                 f"--exit-timeout-secs={TRITON_EXIT_TIMEOUT}"],
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
        # Told to stop, the pod first leaves the Service's endpoints; it keeps serving meanwhile, so
        # requests routed before the endpoint update reach a live server. Triton then drains its
        # own in-flight requests on SIGTERM (--exit-timeout-secs).
        **_drain(spec),
    }
    containers = [container]
    pod_annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(TRITON_METRICS)}
    if spec.analysis.drift is not None:
        containers.append(drift_monitor_container(spec, mounts, vd, namespace))
        pod_annotations["visionfleet.io/drift-port"] = str(MONITOR_PORT)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(name, namespace, vd, uid, labels(vd, "triton", cls.name, revision),
                         {TRACK_ANNOTATION: Track(track).value, "visionfleet.io/artifact": result.artifact or "",
                          **({ANNOTATION_AUTOSCALED: "true"} if autoscaled else {})}),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": {
                    **({"serviceAccountName": spec.serving.service_account_name}
                       if spec.serving.service_account_name else {}),
                    "automountServiceAccountToken": False,
                    **({"runtimeClassName": cls.spec.runtime_class_name} if cls.spec.runtime_class_name else {}),
                    **({"priorityClassName": cls.spec.priority_class_name} if cls.spec.priority_class_name else {}),
                    # the drain, Triton's own drain, and a margin before SIGKILL
                    "terminationGracePeriodSeconds": drain_seconds(spec) + TRITON_EXIT_TIMEOUT + 5,
                    "securityContext": RESTRICTED_POD,
                    **_placement(cls),
                    **({"initContainers": init_containers} if init_containers else {}),
                    "containers": containers,
                    "volumes": volumes,
                },
            },
        },
    }


DRAIN_SECONDS = 15  # serving.drainSeconds unset: endpoint removal reaches kube-proxy and gateways in seconds
TRITON_EXIT_TIMEOUT = 30  # tritonserver --exit-timeout-secs default: how long it drains in-flight requests


def drain_seconds(spec: VisionDeploymentSpec) -> int:
    return DRAIN_SECONDS if spec.serving.drain_seconds is None else spec.serving.drain_seconds


def _drain(spec: VisionDeploymentSpec) -> dict[str, Any]:
    """The preStop sleep of a serving container (none for 0: the API server refuses a 0 s sleep
    before Kubernetes 1.33)."""
    n = drain_seconds(spec)
    return {"lifecycle": {"preStop": {"sleep": {"seconds": n}}}} if n > 0 else {}


def fetch_image(spec: VisionDeploymentSpec, cls: ResolvedClass) -> str:
    """Image of the fetch init container: the class's CPU compile image (already pulled on the class's
    nodes by its compile Job); for tensorrt classes compile.image, never the multi-GB GPU image."""
    if cls.spec.runtime == Runtime.TENSORRT.value:
        # a class's own image (a Jetson's, arm64) before the CPU default, which may not run there
        return cls.spec.compile_image or spec.compile.image
    return compile_image(spec, cls)


def entry_uri(spec: VisionDeploymentSpec, class_name: str, revision: str) -> str:
    """Where the compile Job of (class, revision) wrote its entry in an s3:// repository."""
    return f"{(spec.serving.model_repository or '').rstrip('/')}/{artifact_dir(spec, class_name, revision)}"


def fetch_container(spec: VisionDeploymentSpec, cls: ResolvedClass, revision: str,
                    result: CompileResult) -> dict[str, Any]:
    """Init container of a Triton pod serving from s3://: fetches the revision's entry and checks every
    file against the sha256 the compile Job reported (its result, frozen in status), so the pod runs
    exactly the bytes that passed the accuracy gate, or does not start and says why."""
    model = spec.model.name
    env, env_from = _s3_env(spec)
    out: dict[str, Any] = {
        "name": "fetch-model",
        "image": fetch_image(spec, cls),
        "command": ["visionfleet-compile"],
        "args": ["fetch-entry", f"--source={entry_uri(spec, cls.name, revision)}", f"--dest=/models/{model}/1",
                 *[f"--file={n}={h}" for n, h in sorted((result.files or {}).items())]],
        "env": env,
        # An entry is a few MB to a few GB; boto3 streams it to disk.
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                         {"name": "artifact", "mountPath": f"/models/{model}/1"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if env_from:
        out["envFrom"] = env_from
    return out


def drift_monitor_container(spec: VisionDeploymentSpec, triton_mounts: list[dict[str, Any]], vd: str,
                            namespace: str) -> dict[str, Any]:
    """The drift monitor sidecar: reads this revision's reference next to the artifact (read-only),
    takes mirrored requests on its port, asks the pod's own Triton for outputs (bbsd-ks). On its shadow
    port it takes a shadow step's mirror: every request goes on to the pod's Triton (what the canary
    is judged on), a sample also to the stable (``<vd>-stable``) to pair the two answers."""
    drift, model = spec.analysis.drift, spec.model
    live = spec.analysis.live_agreement
    pair_rate = live.max_pairs_per_second if live is not None else 20
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
                 f"--max-rate={drift.max_samples_per_second}",
                 f"--shadow-listen=0.0.0.0:{SHADOW_PORT}", f"--max-pair-rate={pair_rate}"],
        "env": [{"name": STABLE_URL_ENV, "value": f"http://{stable_service_name(vd)}.{namespace}:{TRITON_HTTP}"}],
        "ports": [{"name": "drift", "containerPort": MONITOR_PORT},
                  {"name": "shadow", "containerPort": SHADOW_PORT}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "drift"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "drift"}, "periodSeconds": 10, "failureThreshold": 3},
        "startupProbe": {"httpGet": {"path": "/healthz", "port": "drift"}, "periodSeconds": 5, "failureThreshold": 60},
        # A window of 500 × 1000 classes is 2 MB; the rest is the Python runtime with alibi-detect and torch.
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                         {**artifact, "mountPath": "/reference", "readOnly": True}],
        # mirrored requests keep arriving until the endpoints update, as they do for Triton
        **_drain(spec),
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


def mirror_filters(filters: list[dict[str, Any]], vd: str, drift: bool, ours: set[str] | frozenset[str] = frozenset(),
                   shadow: tuple[str, int, int] | None = None) -> list[dict[str, Any]]:
    """A rule's filters with this VisionDeployment's RequestMirrors present exactly as wanted: to its
    drift Service when drift is on, and a shadow step's to the canary (``shadow``: Service, port,
    percent); every other filter kept as it is. ``ours``: the per-revision Service names (a shadow
    mirror to one of them that is no longer wanted is removed)."""
    name = drift_service_name(vd)
    mine = {name, *ours}
    kept = [f for f in filters if not (f.get("type") == "RequestMirror"
                                       and (f.get("requestMirror") or {}).get("backendRef", {}).get("name") in mine)]
    if drift:
        kept.append({"type": "RequestMirror", "requestMirror": {"backendRef": {
            "group": "", "kind": "Service", "name": name, "port": MONITOR_PORT}}})
    if shadow is not None:
        service, port, percent = shadow
        mirror: dict[str, Any] = {"backendRef": {"group": "", "kind": "Service", "name": service, "port": port}}
        if percent < 100:
            mirror["percent"] = percent  # omitted at 100 %: implementations without percent mirror all
        kept.append({"type": "RequestMirror", "requestMirror": mirror})
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
            # Clients only: metrics are scraped per pod (the chart's PodMonitor, or <vd>-metrics).
            "ports": [{"name": "http", "port": TRITON_HTTP, "targetPort": "http"},
                      {"name": "grpc", "port": TRITON_GRPC, "targetPort": "grpc"}],
        },
    }


def metrics_service_name(vd: str) -> str:
    return child_name(vd, "metrics")


def build_metrics_service(vd: str, namespace: str, uid: str, drift: bool) -> dict[str, Any]:
    """Headless: one endpoint per Triton pod, for a ServiceMonitor (or any scraper that discovers
    endpoints) to scrape each pod, with the pod labels the relabelling turns into query labels. Kept
    off the client Service so clients are never offered the metrics port."""
    ports = [{"name": "metrics", "port": TRITON_METRICS, "targetPort": "metrics"}]
    if drift:
        ports.append({"name": "drift", "port": MONITOR_PORT, "targetPort": "drift"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(metrics_service_name(vd), namespace, vd, uid,
                         {**labels(vd, "metrics"), "visionfleet.io/metrics": "true"}),
        "spec": {"clusterIP": "None", "selector": {LABEL_VD: vd, LABEL_COMPONENT: "triton"}, "ports": ports},
    }


def revision_service_name(vd: str, revision: str) -> str:
    return child_name(vd, revision[:8])


def build_revision_service(vd: str, namespace: str, uid: str, revision: str) -> dict[str, Any]:
    """One revision's Triton pods, on every class: the backends an HTTPRoute splits traffic between,
    and (port shadow, the pods' monitor sidecars) where a shadow step mirrors requests to."""
    svc = build_service(vd, namespace, uid)
    svc["metadata"]["name"] = revision_service_name(vd, revision)
    svc["metadata"]["labels"] = labels(vd, "triton", revision=revision)
    svc["spec"]["selector"] = {LABEL_VD: vd, LABEL_COMPONENT: "triton", LABEL_REVISION: revision}
    svc["spec"]["ports"].append({"name": "shadow", "port": SHADOW_PORT, "targetPort": "shadow"})
    return svc


# External metrics an autoscaled class's HPA reads (served by a metrics adapter from Triton's series,
# docs/serving.md): selected by the labels every VisionFleet pod's series carry.
AUTOSCALE_METRICS = {
    "inferenceRate": "visionfleet_class_inference_rate",  # inferences/s over every pod of the class
    "queueTime": "visionfleet_class_queue_ms",  # mean queue time (ms) of the class's requests
}
ANNOTATION_AUTOSCALED = "visionfleet.io/autoscaled"  # on a Deployment the class's HPA sizes


def autoscaler_name(vd: str, class_name: str) -> str:
    return child_name(vd, class_name)


def _quantity(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{round(x * 1000)}m"


def build_autoscaler(vd: str, namespace: str, uid: str, cls: ResolvedClass, revision: str, min_replicas: int,
                     max_replicas: int, counted: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The class's HorizontalPodAutoscaler. It targets the class's stable Deployment (handed to the next
    stable at promotion) and reads the *class's* load — the ``counted`` revisions' pods: the stable and
    a weighted canary, not a shadow canary's mirrored copies — as an External metric with an
    AverageValue target: desired = load / target, the pods the class needs in all. The stable keeps
    that size through a rollout (Gateway API traffic) and the canary gets its share of it."""
    auto = cls.spec.replicas.autoscale
    assert auto is not None
    metric = {"name": AUTOSCALE_METRICS[str(auto.metric)],
              "selector": {"matchLabels": {"vision_deployment": vd, "class": cls.name},
                           "matchExpressions": [{"key": "revision", "operator": "In",
                                                 "values": sorted(counted or (revision,))}]}}
    if str(auto.metric) == "queueTime":
        target = {"type": "Value", "value": _quantity(auto.target)}
    else:
        target = {"type": "AverageValue", "averageValue": _quantity(auto.target)}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(autoscaler_name(vd, cls.name), namespace, vd, uid, labels(vd, "autoscaler", cls.name)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": serving_name(vd, cls.name, revision)},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [{"type": "External", "external": {"metric": metric, "target": target}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": int(seconds(auto.scale_down_stabilization))}},
        },
    }


def stable_service_name(vd: str) -> str:
    return child_name(vd, "stable")


def build_stable_service(vd: str, namespace: str, uid: str, revision: str) -> dict[str, Any]:
    """The stable revision's Triton pods under a name that does not change with the revision (Argo
    Rollouts' stableService): a shadow canary's monitor asks it for the stable's answers. Its selector
    moves at promotion, once the new stable is serving."""
    svc = build_service(vd, namespace, uid)
    svc["metadata"]["name"] = stable_service_name(vd)
    svc["metadata"]["labels"] = labels(vd, "triton")
    svc["spec"]["selector"] = {LABEL_VD: vd, LABEL_COMPONENT: "triton", LABEL_REVISION: revision}
    return svc


def shadow_target(vd: str, revision: str, percent: int, to_monitor: bool) -> tuple[str, int, int]:
    """A shadow step's mirror: (Service, port, percent) — the canary's monitor sidecars when it has
    them (they forward to Triton and pair answers), else its Triton."""
    return revision_service_name(vd, revision), SHADOW_PORT if to_monitor else TRITON_HTTP, percent


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

