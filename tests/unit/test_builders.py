"""Manifests and Triton config: pure functions, checked field by field."""

from __future__ import annotations

import pytest

from visionfleet.api.spec import DetectionOutputs, TensorSpec, VisionDeploymentSpec
from visionfleet.api.status import ChosenBatching, CompileResult
from visionfleet.builders.manifests import (
    ANNOTATION_APPLIED,
    NAME_MAX,
    build_compile_job,
    build_config_map,
    build_controller_revision,
    build_service,
    build_triton_deployment,
    child_name,
    compile_job_name,
    drift_monitor_container,
    manifest_hash,
    snapshot_name,
    with_applied_hash,
)
from visionfleet.builders.triton_config import build_triton_config
from visionfleet.planner.classes import ObservedNode, resolve_classes
from visionfleet.planner.model import Track

from .planner_sim import SPEC

REV = "0123456789ab"
RESULT = CompileResult(state="Succeeded", artifact="pvc://models/repo/x", accuracy=0.99,
                       batching=ChosenBatching(max_batch_size=8, preferred_batch_sizes=[4, 8],
                                               max_queue_delay_microseconds=400, instance_count=2))


def spec(**serving):
    raw = dict(SPEC, serving=serving) if serving else dict(SPEC)
    return VisionDeploymentSpec.model_validate(raw)


def classes(s=None):
    return {c.name: c for c in resolve_classes(s or spec(), [])}


def restricted(pod_spec):
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod_spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
    assert pod_spec.get("hostNetwork") is not True and pod_spec.get("hostPID") is not True


def test_compile_job_runs_on_its_class_without_api_access():
    job = build_compile_job("doorbell", "vision", "uid-1", spec(), classes()["l4"], REV)
    assert job["metadata"]["name"] == "doorbell-l4-01234567-compile"
    assert job["metadata"]["ownerReferences"][0] == {
        "apiVersion": "visionfleet.io/v1alpha1", "kind": "VisionDeployment", "name": "doorbell", "uid": "uid-1",
        "controller": True, "blockOwnerDeletion": True}
    js = job["spec"]
    assert js["backoffLimit"] == 1 and js["activeDeadlineSeconds"] == 1800 and js["ttlSecondsAfterFinished"] > 0
    assert js["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2, 3]
    pod = js["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    # the class's GPU, and what a compile needs besides: never BestEffort
    assert pod["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": "1", "memory": "8Gi"},
                                                 "requests": {"cpu": "1", "memory": "2Gi"}}
    assert "serviceAccountName" not in pod and "envFrom" not in pod["containers"][0]
    assert pod["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"
    restricted(pod)
    labels = js["template"]["metadata"]["labels"]
    assert labels["visionfleet.io/class"] == "l4" and labels["visionfleet.io/revision"] == REV


def test_compile_job_mounts_every_named_claim_read_only_but_the_repository():
    s = spec(modelRepository="pvc://repo/triton")
    job = build_compile_job("doorbell", "vision", "u", s, classes(s)["xeon"], REV)
    pod = job["spec"]["template"]["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"]["readOnly"]
              for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"models": True, "repo": False}  # model.uri is pvc://models/m.onnx
    paths = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/pvc/models", "/pvc/repo", "/tmp"} == paths


def test_pvc_model_repository_is_mounted_at_the_artifact_dir():
    s = spec(modelRepository="pvc://models/repository")
    dep = build_triton_deployment("doorbell", "vision", "u", s, classes(s)["xeon"], REV, 3, RESULT, "canary")
    pod = dep["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/models/effnet/1"]["subPath"] == f"repository/effnet/{REV}-xeon"
    assert mounts["/models/effnet/config.pbtxt"]["subPath"] == "config.pbtxt"
    claims = [v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [{"claimName": "models", "readOnly": True}]


def test_triton_deployment_probes_selector_and_security():
    dep = build_triton_deployment("doorbell", "vision", "u", spec(), classes()["l4"], REV, 2, RESULT, "stable")
    assert dep["metadata"]["name"] == "doorbell-l4-01234567" and dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"]["matchLabels"] == {"visionfleet.io/vision-deployment": "doorbell",
                                                      "visionfleet.io/class": "l4", "visionfleet.io/revision": REV}
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert "--metrics-config=summary_latencies=true" in c["args"] and "--load-model=effnet" in c["args"]
    assert {p["containerPort"] for p in c["ports"]} == {8000, 8001, 8002}
    restricted(dep["spec"]["template"]["spec"])
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("track, value", [(Track.CANARY, "canary"), (Track.STABLE, "stable"), ("canary", "canary")])
def test_track_annotation_is_the_tracks_plain_value(track, value):
    dep = build_triton_deployment("doorbell", "vision", "u", spec(), classes()["l4"], REV, 1, RESULT, track)
    assert type(dep["metadata"]["annotations"]["visionfleet.io/track"]) is str
    assert dep["metadata"]["annotations"]["visionfleet.io/track"] == value


def test_controller_revision_holds_the_snapshot_and_its_outcome():
    data = {"format": 1, "revision": REV}
    cr = build_controller_revision("doorbell", "vision", "u", REV, data, 7, "Promoted")
    assert cr["apiVersion"] == "apps/v1" and cr["kind"] == "ControllerRevision"
    assert cr["metadata"]["name"] == snapshot_name("doorbell", REV) == f"doorbell-rev-{REV}"
    assert cr["metadata"]["labels"]["app.kubernetes.io/component"] == "revision"
    assert cr["metadata"]["labels"]["visionfleet.io/revision"] == REV
    assert cr["metadata"]["ownerReferences"][0]["uid"] == "u"
    assert cr["metadata"]["annotations"] == {"visionfleet.io/outcome": "Promoted"}
    assert cr["data"] is data and cr["revision"] == 7
    assert "annotations" not in build_controller_revision("doorbell", "vision", "u", REV, data, 1)["metadata"]


def test_discovered_cpu_class_avoids_gpu_nodes_by_affinity():
    raw = dict(SPEC)
    raw["fleet"] = {"discover": {"groupBy": ["nvidia.com/gpu.product"], "cpuPrecision": "fp32"}}
    s = VisionDeploymentSpec.model_validate(raw)
    nodes = [ObservedNode("x", {"kubernetes.io/arch": "amd64"}), ObservedNode("g", {"nvidia.com/gpu.product": "L4"}, gpus=1)]
    cpu = next(c for c in resolve_classes(s, nodes) if c.name == "none")
    job = build_compile_job("vd", "ns", "u", s, cpu, REV)
    terms = job["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "DoesNotExist"}]}]


def test_service_selects_every_triton_pod_of_the_visiondeployment():
    svc = build_service("doorbell", "vision", "u")
    assert svc["spec"]["selector"] == {"visionfleet.io/vision-deployment": "doorbell",
                                       "app.kubernetes.io/component": "triton"}


def test_config_pbtxt_for_each_runtime():
    s = spec()
    trt = build_triton_config(s.model, "tensorrt", RESULT.batching)
    assert trt == """name: "effnet"
platform: "tensorrt_plan"
default_model_filename: "model.plan"
max_batch_size: 8
input [
  {
    name: "images"
    data_type: TYPE_FP32
    dims: [ 3, 224, 224 ]
  }
]
output [
  {
    name: "logits"
    data_type: TYPE_FP32
    dims: [ 1000 ]
  }
]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 400
}
instance_group [
  {
    count: 2
    kind: KIND_GPU
  }
]
"""
    ov = build_triton_config(s.model, "openvino", None)
    assert 'backend: "openvino"' in ov and "max_batch_size: 0" in ov and "dynamic_batching" not in ov
    assert "kind: KIND_CPU" in ov and 'default_model_filename: "model.xml"' in ov


def test_config_map_carries_the_config():
    cm = build_config_map("doorbell", "vision", "u", spec(), classes()["xeon"], REV, RESULT)
    assert cm["data"]["config.pbtxt"].startswith('name: "effnet"\nbackend: "onnxruntime"')


def cpu_limited(limits=None, requests=None, runtime="onnxruntime"):
    """The spec with its xeon class given these resources (and runtime)."""
    import copy

    raw = copy.deepcopy(SPEC)
    xeon = next(c for c in raw["fleet"]["classes"] if c["name"] == "xeon")
    xeon["runtime"] = runtime
    xeon["resources"] = {k: v for k, v in (("limits", limits), ("requests", requests)) if v is not None}
    return VisionDeploymentSpec.model_validate(raw)


def compile_request_of(job):
    import json

    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    return json.loads(env["VISIONFLEET_COMPILE_REQUEST"])


@pytest.mark.parametrize(("limits", "requests", "cpu_limit"), [
    pytest.param(None, None, None, id="no-resources"),
    pytest.param(None, {"cpu": "2"}, None, id="a-request-is-no-limit"),
    pytest.param({"memory": "4Gi"}, None, None, id="memory-only"),
    pytest.param({"cpu": "1500m"}, None, "1500m", id="millicores"),
    pytest.param({"cpu": 2}, {"cpu": 1}, "2", id="integer"),
])
def test_the_compile_request_carries_the_classs_cpu_limit(limits, requests, cpu_limit):
    """The compile program derives the thread parameters from it; no limit, no field (the request of before)."""
    s = cpu_limited(limits, requests)
    request = compile_request_of(build_compile_job("doorbell", "vision", "u", s, classes(s)["xeon"], REV))
    assert request.get("cpuLimit") == cpu_limit and ("cpuLimit" in request) == (cpu_limit is not None)


# config.pbtxt of the xeon class for RESULT as the operator rendered it before results carried
# parameters: a revision compiled then must keep exactly these bytes under a newer operator.
OLD_XEON_CONFIG = """name: "effnet"
backend: "onnxruntime"
default_model_filename: "model.onnx"
max_batch_size: 8
input [
  {
    name: "images"
    data_type: TYPE_FP32
    dims: [ 3, 224, 224 ]
  }
]
output [
  {
    name: "logits"
    data_type: TYPE_FP32
    dims: [ 1000 ]
  }
]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 400
}
instance_group [
  {
    count: 2
    kind: KIND_CPU
  }
]
"""


@pytest.mark.parametrize("limits", [None, {"cpu": "2"}, {"cpu": "500m"}])
def test_an_old_result_renders_exactly_as_before_whatever_the_cpu_limit(limits):
    """A result without parameters (a compile program older than them) renders the text of before,
    even for a class with a CPU limit: the operator derives nothing itself."""
    from visionfleet.observe.kube import parse_result

    old, why = parse_result('{"artifact": "pvc://models/repo/x", "sha256": "' + "a" * 64 + '", "accuracy": 0.99, '
                            '"p99MsAtBatch": {"1": 2.0}, "batching": {"maxBatchSize": 8, "preferredBatchSizes": '
                            '[4, 8], "maxQueueDelayMicroseconds": 400, "instanceCount": 2}}')
    assert why is None and old.parameters is None
    s = cpu_limited(limits)
    assert build_config_map("doorbell", "vision", "u", s, classes(s)["xeon"], REV, old)["data"]["config.pbtxt"] \
        == OLD_XEON_CONFIG


@pytest.mark.parametrize(("runtime", "parameters"), [
    ("onnxruntime", {"intra_op_thread_count": "1", "inter_op_thread_count": "1"}),
    ("openvino", {"NUM_STREAMS": "2", "INFERENCE_NUM_THREADS": "2"}),
])
def test_the_config_map_renders_the_results_parameters(runtime, parameters):
    """As the compile Job wrote them (sorted), appended to the text of before; Triton's ModelConfig reads them."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from visionfleet.observe.kube import parse_result

    raw = {**RESULT.to_wire(), "parameters": parameters, "sha256": "a" * 64}
    import json

    result, why = parse_result(json.dumps(raw))
    assert why is None and result.parameters == parameters
    s = cpu_limited({"cpu": "2"}, runtime=runtime)
    text = build_config_map("doorbell", "vision", "u", s, classes(s)["xeon"], REV, result)["data"]["config.pbtxt"]
    assert text.startswith(build_triton_config(s.model, runtime, result.batching))
    cfg = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert {k: v.string_value for k, v in cfg.parameters.items()} == parameters


@pytest.mark.parametrize("parameters", [{"a b": "1"}, {"k": 'x"'}, {"k": "1" * 65}])
def test_a_result_with_parameters_config_pbtxt_cannot_carry_is_unreadable(parameters):
    import json

    from visionfleet.observe.kube import parse_result

    result, why = parse_result(json.dumps({**RESULT.to_wire(), "parameters": parameters}))
    assert result is None and "parameters" in why


def test_a_newer_programs_extra_candidate_keys_are_dropped_not_fatal():
    """Candidates are read as this operator knows them: a key a newer compile program adds inside one
    must not make the whole result unreadable (the class would fail a compile that succeeded)."""
    import json

    from visionfleet.observe.kube import parse_result

    raw = {**RESULT.to_wire(), "precision": "int8", "fp32Layers": 3, "choice": "int8: fastest that passed",
           "candidates": [{"precision": "int8", "mixed": True, "fp32Layers": 3, "accuracy": 0.991, "passed": True,
                           "throughput": 700.0, "batch": 8, "p99Ms": 12.0, "seconds": 40, "chosen": True,
                           "energyJoules": 1.5}],
           "fallback": {"trials": []}, "compileSeconds": 95.2}
    result, why = parse_result(json.dumps(raw))
    assert why is None and result.precision == "int8" and result.fp32_layers == 3
    assert result.candidates[0].mixed and result.candidates[0].throughput == 700.0 and result.compile_seconds == 95.2
    result, why = parse_result(json.dumps({**raw, "candidates": [{"precision": "fp64", "passed": True}]}))
    assert result is None and "candidates" in why


@pytest.mark.parametrize("parts", [("a" * 40, "b" * 40, REV[:8], "compile"), ("vd", "c" * 63, REV[:8])])
def test_long_names_are_cut_to_63_with_a_hash_and_stay_unique(parts):
    name = child_name(*parts)
    assert len(name) <= NAME_MAX and name == child_name(*parts)
    assert name != child_name(*parts[:-1], parts[-1] + "x")


def test_applied_hash_is_stable_and_tracks_content():
    job = build_compile_job("doorbell", "vision", "u", spec(), classes()["l4"], REV)
    a, b = with_applied_hash(job), with_applied_hash(job)
    assert a == b and a["metadata"]["annotations"][ANNOTATION_APPLIED] == manifest_hash(job)
    assert "annotations" not in job["metadata"], "the input is not modified"
    other = build_compile_job("doorbell", "vision", "u", spec(), classes()["xeon"], REV)
    assert manifest_hash(other) != manifest_hash(job)
    assert compile_job_name("doorbell", "xeon", REV) == other["metadata"]["name"]


@pytest.mark.parametrize("runtime", ["tensorrt", "onnxruntime", "openvino"])
@pytest.mark.parametrize("batched", [True, False])
def test_config_pbtxt_parses_with_tritons_own_model_config(runtime, batched):
    """Triton's ModelConfig protobuf (from tritonclient) reads back every field the builder writes."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    s = spec()
    cfg = text_format.Parse(build_triton_config(s.model, runtime, RESULT.batching if batched else None),
                            model_config_pb2.ModelConfig())
    assert cfg.name == "effnet" and [i.name for i in cfg.input] == ["images"] and list(cfg.input[0].dims) == [3, 224, 224]
    assert cfg.input[0].data_type == model_config_pb2.TYPE_FP32 and list(cfg.output[0].dims) == [1000]
    assert (cfg.platform == "tensorrt_plan") if runtime == "tensorrt" else (cfg.backend == runtime)
    kind = model_config_pb2.ModelInstanceGroup.KIND_GPU if runtime == "tensorrt" else \
        model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert cfg.instance_group[0].kind == kind
    if batched:
        assert cfg.max_batch_size == 8 and list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 400 and cfg.instance_group[0].count == 2
    else:
        assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")


def test_the_compile_programs_config_check_rejects_what_triton_would():
    from google.protobuf.text_format import ParseError

    from visionfleet_compile.program import check_triton_config

    check_triton_config('name: "m"\nbackend: "onnxruntime"\nmax_batch_size: 4\n')
    with pytest.raises(ParseError):
        check_triton_config('name: "m"\nmax_batch: 4\n')  # no such field in ModelConfig


def drift_spec(**drift):
    raw = dict(SPEC, serving={"modelRepository": "pvc://models/repo"},
               compile={"calibration": {"uri": "pvc://models/calib.npz"}},
               analysis={"prometheus": {"url": "http://prom:9090"}, "drift": {"window": 300, **drift}})
    return VisionDeploymentSpec.model_validate(raw)


def test_drift_monitor_sidecar_reads_its_revisions_reference_and_its_own_triton():
    s = drift_spec(detector="mmd", pValue=0.05)
    dep = build_triton_deployment("doorbell", "vision", "u", s, classes(s)["l4"], REV, 2, RESULT, "canary")
    pod = dep["spec"]["template"]["spec"]
    triton, mon = pod["containers"]
    assert mon["name"] == "drift-monitor" and mon["image"] == "ghcr.io/visionfleet/monitor-mmd:0.1.0"
    args = mon["args"]
    assert mon["command"] == ["visionfleet-monitor"] and "--detector=mmd" in args and "--window=300" in args
    assert "--p-value=0.05" in args and "--triton=http://127.0.0.1:8000" in args and "--model=effnet" in args
    assert "--reference=/reference/drift-reference.npz" in args and "--max-rate=50" in args
    ref = next(m for m in mon["volumeMounts"] if m["mountPath"] == "/reference")
    art = next(m for m in triton["volumeMounts"] if m["name"] == "artifact")
    # The same claim and sub-path as the artifact Triton serves: this revision's, this class's reference.
    assert ref["name"] == "artifact" and ref["subPath"] == art["subPath"] == f"repo/effnet/{REV}-l4" and ref["readOnly"]
    assert dep["spec"]["template"]["metadata"]["annotations"]["visionfleet.io/drift-port"] == "8010"
    restricted(pod)
    # No drift test, no sidecar.
    plain = build_triton_deployment("doorbell", "vision", "u", spec(), classes()["l4"], REV, 2, RESULT, "stable")
    assert [c["name"] for c in plain["spec"]["template"]["spec"]["containers"]] == ["triton"]


def test_drift_service_and_mirror_filter():
    from visionfleet.builders.manifests import build_drift_service, mirror_filters

    svc = build_drift_service("doorbell", "vision", "u")
    assert svc["metadata"]["name"] == "doorbell-drift" and svc["spec"]["ports"][0]["port"] == 8010
    assert svc["spec"]["selector"] == {"visionfleet.io/vision-deployment": "doorbell",
                                       "app.kubernetes.io/component": "triton"}
    theirs = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}]}}
    on = mirror_filters([theirs], "doorbell", True)
    assert on[0] == theirs and on[1]["requestMirror"]["backendRef"]["name"] == "doorbell-drift"
    assert mirror_filters(on, "doorbell", True) == on  # idempotent: no write on the next pass
    assert mirror_filters(on, "doorbell", False) == [theirs]  # drift switched off: only ours removed


def test_a_shadow_mirror_to_the_canary_beside_the_drift_mirror():
    from visionfleet.builders.manifests import mirror_filters, shadow_target

    theirs = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "someone-elses", "port": 80}}}
    shadow = shadow_target("doorbell", REV, 100, True)
    assert shadow == ("doorbell-01234567", 8011, 100)  # the canary's monitor sidecars (shadow port)
    on = mirror_filters([theirs], "doorbell", True, {"doorbell-01234567"}, shadow)
    assert on[0] == theirs
    assert [f["requestMirror"]["backendRef"]["name"] for f in on[1:]] == ["doorbell-drift", "doorbell-01234567"]
    assert on[2]["requestMirror"] == {"backendRef": {"group": "", "kind": "Service", "name": "doorbell-01234567",
                                                     "port": 8011}}  # 100 %: no percent (portable)
    assert mirror_filters(on, "doorbell", True, {"doorbell-01234567"}, shadow) == on  # idempotent
    # The step is over: the shadow mirror goes, the drift mirror and theirs stay.
    off = mirror_filters(on, "doorbell", True, {"doorbell-01234567"}, None)
    assert [f["requestMirror"]["backendRef"]["name"] for f in off] == ["someone-elses", "doorbell-drift"]
    # A partial mirror says its percent; a canary without sidecars is mirrored to Triton itself.
    part = mirror_filters([], "doorbell", False, set(), shadow_target("doorbell", REV, 25, False))
    assert part == [{"type": "RequestMirror", "requestMirror": {"percent": 25, "backendRef": {
        "group": "", "kind": "Service", "name": "doorbell-01234567", "port": 8000}}}]


def test_the_stable_service_and_the_revision_services_shadow_port():
    from visionfleet.builders.manifests import build_revision_service, build_stable_service

    stable = build_stable_service("doorbell", "vision", "u", REV)
    assert stable["metadata"]["name"] == "doorbell-stable"
    assert stable["spec"]["selector"] == {"visionfleet.io/vision-deployment": "doorbell",
                                          "app.kubernetes.io/component": "triton", "visionfleet.io/revision": REV}
    assert {p["name"]: p["port"] for p in stable["spec"]["ports"]} == {"http": 8000, "grpc": 8001}
    rev = build_revision_service("doorbell", "vision", "u", REV)
    assert {p["name"]: (p["port"], p["targetPort"]) for p in rev["spec"]["ports"]}["shadow"] == (8011, "shadow")


def test_the_monitor_asks_triton_under_its_own_entry_and_pairs_with_the_stable():
    s = VisionDeploymentSpec.model_validate(dict(
        SPEC, serving={"modelRepository": "pvc://models/repo"}, compile={"calibration": {"uri": "pvc://models/c.npz"}},
        analysis={"prometheus": {"url": "http://prom:9090"}, "drift": {"window": 300},
                  "liveAgreement": {"min": 0.99, "maxPairsPerSecond": 7}},
        rollout={"traffic": {"method": "GatewayAPI", "gatewayAPI": {"httpRoute": "r"}},
                 "steps": [{"shadow": {"duration": "5m"}}, {"setWeight": 100}]}))
    dep = build_triton_deployment("doorbell", "vision", "u", s, classes(s)["l4"], REV, 2, RESULT, "canary")
    triton, mon = dep["spec"]["template"]["spec"]["containers"]
    # Triton serves a second entry, the monitor's: the same artifact mounted again, its own config.
    assert "--load-model=effnet" in triton["args"] and "--load-model=effnet__monitor" in triton["args"]
    mounts = {m["mountPath"]: m for m in triton["volumeMounts"]}
    assert mounts["/models/effnet__monitor/1"]["subPath"] == mounts["/models/effnet/1"]["subPath"]
    assert mounts["/models/effnet__monitor/config.pbtxt"]["subPath"] == "monitor-config.pbtxt"
    cm = build_config_map("doorbell", "vision", "u", s, classes(s)["l4"], REV, RESULT)
    assert 'name: "effnet__monitor"' in cm["data"]["monitor-config.pbtxt"]
    assert 'name: "effnet"' in cm["data"]["config.pbtxt"]
    # The shadow port, the pair rate, and where the stable answers.
    assert "--shadow-listen=0.0.0.0:8011" in mon["args"] and "--max-pair-rate=7" in mon["args"]
    assert {"name": "VISIONFLEET_STABLE_URL", "value": "http://doorbell-stable.vision:8000"} in mon["env"]
    assert {"name": "shadow", "containerPort": 8011} in mon["ports"]
    # Without drift: one entry, no monitor.
    plain = build_triton_deployment("doorbell", "vision", "u", spec(), classes()["l4"], REV, 2, RESULT, "stable")
    assert [a for a in plain["spec"]["template"]["spec"]["containers"][0]["args"] if "load-model" in a] == \
        ["--load-model=effnet"]



def test_each_class_gets_the_compile_image_its_hardware_needs():
    """A mixed fleet: the GPU image for tensorrt classes, the CPU image for the others, and a class's
    own compileImage over either."""
    s = spec()
    gpu = {n for n, c in classes(s).items() if c.spec.runtime == "tensorrt"}
    cpu = set(classes(s)) - gpu
    assert gpu and cpu
    image = {n: build_compile_job("vd", "ns", "u", s, c, REV)["spec"]["template"]["spec"]["containers"][0]["image"]
             for n, c in classes(s).items()}
    assert {image[n] for n in gpu} == {"ghcr.io/visionfleet/compile-gpu:0.1.0"}
    assert {image[n] for n in cpu} == {"ghcr.io/visionfleet/compile:0.1.0"}
    raw = dict(SPEC, compile={**SPEC.get("compile", {}), "image": "reg.example/cpu:1", "gpuImage": "reg.example/gpu:1"})
    raw["fleet"] = {**SPEC["fleet"], "classes": [dict(c, compileImage="reg.example/jetson:1") if c["name"] == sorted(gpu)[0]
                                                 else c for c in SPEC["fleet"]["classes"]]}
    s2 = VisionDeploymentSpec.model_validate(raw)
    image2 = {n: build_compile_job("vd", "ns", "u", s2, c, REV)["spec"]["template"]["spec"]["containers"][0]["image"]
              for n, c in classes(s2).items()}
    assert image2[sorted(gpu)[0]] == "reg.example/jetson:1"
    assert {image2[n] for n in gpu - {sorted(gpu)[0]}} <= {"reg.example/gpu:1"}
    assert {image2[n] for n in cpu} == {"reg.example/cpu:1"}


def test_an_own_compile_image_serves_gpu_classes_too_until_gpu_image_is_set():
    """Specs (and frozen revisions) from before compile.gpuImage set compile.image to one image built
    for every class: tensorrt classes keep it."""
    s = spec()
    s.compile.image = "reg.example/all-in-one:1"
    assert {build_compile_job("vd", "ns", "u", s, c, REV)["spec"]["template"]["spec"]["containers"][0]["image"]
            for c in classes(s).values()} == {"reg.example/all-in-one:1"}


@pytest.mark.parametrize("detector, image", [("bbsd-ks", "ghcr.io/visionfleet/monitor:0.1.0"),
                                             ("mmd", "ghcr.io/visionfleet/monitor-mmd:0.1.0")])
def test_the_drift_monitor_image_fits_the_detector(detector, image):
    s = drift_spec(detector=detector)
    mounts = [{"name": "artifact", "mountPath": f"/models/{s.model.name}/1"}]
    assert drift_monitor_container(s, mounts, "vd", "ns")["image"] == image
    s2 = drift_spec(detector=detector, image="reg.example/monitor:2")
    assert drift_monitor_container(s2, mounts, "vd", "ns")["image"] \
        == "reg.example/monitor:2"


# -- compile Job identity and resources; s3:// repositories; serving pods ------------------------

def _raw(**changes):
    import copy

    raw = copy.deepcopy(SPEC)
    for path, value in changes.items():
        node = raw
        *parents, leaf = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return raw


S3_SPEC = dict(serving__modelRepository="s3://models/triton",
               storage__s3={"endpoint": "http://minio.storage:9000", "region": "eu-west-1",
                            "credentialsSecret": "s3-credentials"})
S3_RESULT = RESULT.model_copy(update={"files": {"model.xml": "a" * 64, "model.bin": "b" * 64,
                                                "drift-reference.npz": "c" * 64}})


@pytest.mark.parametrize("class_resources, compile_resources, expected", [
    pytest.param(None, None, {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "8Gi"}},
                 id="none-set:burstable-defaults"),
    pytest.param({"limits": {"cpu": "4", "memory": "16Gi"}}, None,
                 {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"cpu": "4", "memory": "16Gi"}},
                 id="class-limits:same-cpus-as-serving,requests-capped-at-the-limits"),
    pytest.param({"requests": {"cpu": "2"}}, None,
                 {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "8Gi"}},
                 id="class-requests:kept,missing-filled"),
    pytest.param({"requests": {"memory": "16Gi"}}, None,
                 {"requests": {"memory": "16Gi", "cpu": "1"}, "limits": {}},
                 id="class-memory-request:no-default-limit-below-it"),
    pytest.param({"limits": {"cpu": "1"}}, {"requests": {"cpu": "8", "memory": "24Gi"}, "limits": {"memory": "32Gi"}},
                 {"requests": {"cpu": "8", "memory": "24Gi"}, "limits": {"memory": "32Gi"}},
                 id="compileResources:taken-as-written"),
])
def test_compile_job_resources(class_resources, compile_resources, expected):
    raw = _raw()
    xeon = raw["fleet"]["classes"][1] = dict(raw["fleet"]["classes"][1])
    if class_resources:
        xeon["resources"] = class_resources
    if compile_resources:
        xeon["compileResources"] = compile_resources
    s = VisionDeploymentSpec.model_validate(raw)
    job = build_compile_job("doorbell", "vision", "u", s, classes(s)["xeon"], REV)
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"] == expected


def test_compile_job_identity_env_and_s3_settings():
    s = VisionDeploymentSpec.model_validate(_raw(
        **S3_SPEC, compile__serviceAccountName="model-writer",
        compile__env=[{"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
                      {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "tokens", "key": "hf"}}}],
        compile__envFrom=[{"configMapRef": {"name": "proxy-settings"}}]))
    pod = build_compile_job("doorbell", "vision", "u", s, classes(s)["xeon"], REV)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "model-writer" and pod["automountServiceAccountToken"] is False
    c = pod["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://minio.storage:9000"
    assert env["AWS_REGION"]["value"] == env["AWS_DEFAULT_REGION"]["value"] == "eu-west-1"
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "tokens", "key": "hf"}}
    assert c["env"][-1]["name"] == "VISIONFLEET_COMPILE_REQUEST", "the request goes last: nothing overrides it"
    assert c["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}, {"configMapRef": {"name": "proxy-settings"}}]
    import json as _json
    request = _json.loads(c["env"][-1]["value"])
    assert request["output"] == {"repository": "s3://models/triton", "dir": f"effnet/{REV}-xeon"}
    # an s3:// repository mounts no claim
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"]
                != "models"]


def test_s3_repository_is_fetched_and_checked_by_an_init_container():
    s = VisionDeploymentSpec.model_validate(_raw(**S3_SPEC, serving__serviceAccountName="model-reader"))
    dep = build_triton_deployment("doorbell", "vision", "u", s, classes(s)["xeon"], REV, 2, S3_RESULT, "canary")
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "model-reader" and pod["automountServiceAccountToken"] is False
    (init,) = pod["initContainers"]
    assert init["image"] == "ghcr.io/visionfleet/compile:0.1.0" and init["command"] == ["visionfleet-compile"]
    assert init["args"] == ["fetch-entry", f"--source=s3://models/triton/effnet/{REV}-xeon", "--dest=/models/effnet/1",
                            f"--file=drift-reference.npz={'c' * 64}", f"--file=model.bin={'b' * 64}",
                            f"--file=model.xml={'a' * 64}"]
    assert init["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert {e["name"] for e in init["env"]} == {"AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"}
    assert init["resources"]["requests"] and init["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["artifact"] == {"name": "artifact", "emptyDir": {}}
    triton = pod["containers"][0]
    mounts = {m["mountPath"]: m for m in triton["volumeMounts"]}
    assert mounts["/models/effnet/1"] == {"name": "artifact", "mountPath": "/models/effnet/1", "readOnly": True}
    assert {m["mountPath"] for m in init["volumeMounts"]} == {"/tmp", "/models/effnet/1"}
    restricted({**pod, "containers": pod["containers"] + pod["initContainers"]})


def test_tensorrt_classes_fetch_with_the_cpu_compile_image_not_the_gpu_one():
    s = VisionDeploymentSpec.model_validate(_raw(**S3_SPEC))
    dep = build_triton_deployment("doorbell", "vision", "u", s, classes(s)["l4"], REV, 2, S3_RESULT, "canary")
    assert dep["spec"]["template"]["spec"]["initContainers"][0]["image"] == "ghcr.io/visionfleet/compile:0.1.0"


def test_pvc_repository_has_no_init_container():
    dep = build_triton_deployment("doorbell", "vision", "u", spec(modelRepository="pvc://models/repository"),
                                  classes()["xeon"], REV, 2, RESULT, "stable")
    assert "initContainers" not in dep["spec"]["template"]["spec"]


def test_serving_pods_drain_before_they_stop_and_take_the_class_runtime_and_priority():
    raw = _raw(serving__drainSeconds=20)
    raw["fleet"]["classes"][0] = dict(raw["fleet"]["classes"][0], runtimeClassName="nvidia",
                                      priorityClassName="serving-critical")
    s = VisionDeploymentSpec.model_validate(raw)
    for name, runtime_class, priority in (("l4", "nvidia", "serving-critical"), ("xeon", None, None)):
        dep = build_triton_deployment("doorbell", "vision", "u", s, classes(s)[name], REV, 2, RESULT, "stable")
        pod = dep["spec"]["template"]["spec"]
        assert pod.get("runtimeClassName") == runtime_class and pod.get("priorityClassName") == priority
        assert pod["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 20}}}
        assert pod["terminationGracePeriodSeconds"] == 55, "the drain, Triton's own 30 s exit timeout, 5 s margin"
        assert "--exit-timeout-secs=30" in pod["containers"][0]["args"]
    job = build_compile_job("doorbell", "vision", "u", s, classes(s)["l4"], REV)
    assert job["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"
    assert "priorityClassName" not in job["spec"]["template"]["spec"], "compiles do not outrank serving"
    default = build_triton_deployment("doorbell", "vision", "u", spec(), classes()["xeon"], REV, 2, RESULT, "stable")
    assert default["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] == 15
    # 0: no preStop at all (a 0 s sleep is refused before Kubernetes 1.33)
    none = build_triton_deployment("doorbell", "vision", "u", VisionDeploymentSpec.model_validate(
        _raw(serving__drainSeconds=0)), classes()["xeon"], REV, 2, RESULT, "stable")
    assert "lifecycle" not in none["spec"]["template"]["spec"]["containers"][0]


def test_compile_env_has_one_entry_per_name_and_the_request_last():
    s = VisionDeploymentSpec.model_validate(_raw(**S3_SPEC, compile__env=[{"name": "AWS_REGION", "value": "us-west-2"}]))
    env = build_compile_job("doorbell", "vision", "u", s, classes(s)["xeon"], REV)["spec"]["template"]["spec"][
        "containers"][0]["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names)) and names[-1] == "VISIONFLEET_COMPILE_REQUEST"
    assert {e["name"]: e.get("value") for e in env}["AWS_REGION"] == "us-west-2", "the user's value wins"


def test_a_tensorrt_class_with_its_own_compile_image_fetches_with_it():
    raw = _raw(**S3_SPEC)
    raw["fleet"]["classes"][0] = dict(raw["fleet"]["classes"][0], compileImage="registry/jetson-compile:1")
    s = VisionDeploymentSpec.model_validate(raw)
    dep = build_triton_deployment("doorbell", "vision", "u", s, classes(s)["l4"], REV, 2, S3_RESULT, "canary")
    assert dep["spec"]["template"]["spec"]["initContainers"][0]["image"] == "registry/jetson-compile:1"


def test_discovered_gpu_classes_get_the_runtime_class():
    raw = _raw()
    raw["fleet"] = {"discover": {"groupBy": ["nvidia.com/gpu.product"], "gpuRuntimeClassName": "nvidia",
                                 "priorityClassName": "serving"}}
    s = VisionDeploymentSpec.model_validate(raw)
    nodes = [ObservedNode("g", {"nvidia.com/gpu.product": "NVIDIA-L4"}, gpus=1), ObservedNode("c", {}, gpus=0)]
    got = {c.name: (c.spec.runtime_class_name, c.spec.priority_class_name) for c in resolve_classes(s, nodes)}
    assert sorted(got.values(), key=str) == sorted([("nvidia", "serving"), (None, "serving")], key=str)


def test_clients_see_no_metrics_port_and_a_headless_service_exposes_each_pod_for_scraping():
    from visionfleet.builders.manifests import build_metrics_service

    assert {p["name"] for p in build_service("doorbell", "vision", "u")["spec"]["ports"]} == {"http", "grpc"}
    m = build_metrics_service("doorbell", "vision", "u", drift=True)
    assert m["metadata"]["name"] == "doorbell-metrics" and m["spec"]["clusterIP"] == "None"
    assert {p["name"]: p["port"] for p in m["spec"]["ports"]} == {"metrics": 8002, "drift": 8010}
    assert m["spec"]["selector"] == {"visionfleet.io/vision-deployment": "doorbell",
                                     "app.kubernetes.io/component": "triton"}
    assert [p["name"] for p in build_metrics_service("doorbell", "vision", "u", drift=False)["spec"]["ports"]] == \
        ["metrics"]


def test_config_pbtxt_of_a_detector_with_variable_size_outputs():
    """NMS in the graph: boxes, scores and classes padded to the batch's most detections (-1), a count
    per image; Triton's ModelConfig reads them back, and the detector's task fields stay out of it."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    s = spec()
    model = s.model.model_copy(update={
        "task": "detection",
        "outputs": [TensorSpec.model_validate(t) for t in (
            {"name": "boxes", "dataType": "FP32", "dims": [-1, 4]}, {"name": "scores", "dataType": "FP32", "dims": [-1]},
            {"name": "classes", "dataType": "INT64", "dims": [-1]}, {"name": "count", "dataType": "INT32", "dims": [1]})],
        "detection": DetectionOutputs.model_validate({"layout": "boxes", "boxes": "boxes", "scores": "scores",
                                                      "classes": "classes", "count": "count"})})
    text = build_triton_config(model, "onnxruntime", RESULT.batching)
    cfg = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("boxes", [-1, 4]), ("scores", [-1]), ("classes", [-1]),
                                                           ("count", [1])]
    assert cfg.output[2].data_type == model_config_pb2.TYPE_INT64 and cfg.max_batch_size == 8
    assert "detection" not in text and "task" not in text


def test_an_autoscaled_class_gets_an_hpa_on_the_class_load_targeting_its_stable():
    from visionfleet.builders.manifests import build_autoscaler

    raw = dict(SPEC, serving={"modelRepository": "pvc://models/repo"},
               rollout={"traffic": {"method": "GatewayAPI", "gatewayAPI": {"httpRoute": "r"}}})
    raw["fleet"] = {"classes": [dict(SPEC["fleet"]["classes"][1], replicas={
        "min": 2, "max": 12, "autoscale": {"metric": "inferenceRate", "target": 22.5}})]}
    s = VisionDeploymentSpec.model_validate(raw)
    cls = next(iter(classes(s).values()))
    hpa = build_autoscaler("doorbell", "vision", "u", cls, REV, 2, 12)
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["metadata"]["name"] == f"doorbell-{cls.name}"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": f"doorbell-{cls.name}-01234567"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 12)
    # The class's load (the counted revisions' pods) over the target per pod: the pods the class needs.
    assert hpa["spec"]["metrics"] == [{"type": "External", "external": {
        "metric": {"name": "visionfleet_class_inference_rate",
                   "selector": {"matchLabels": {"vision_deployment": "doorbell", "class": cls.name},
                                "matchExpressions": [{"key": "revision", "operator": "In", "values": [REV]}]}},
        "target": {"type": "AverageValue", "averageValue": "22500m"}}}]
    # scale-in holds the highest recommendation of the last 5 min (Kubernetes' default, written out)
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}
    # a weighted canary's pods count too, in a stable order
    both = build_autoscaler("doorbell", "vision", "u", cls, REV, 2, 12, ("zz999999", REV))
    assert both["spec"]["metrics"][0]["external"]["metric"]["selector"]["matchExpressions"][0]["values"] == \
        sorted([REV, "zz999999"])
    raw["fleet"]["classes"][0]["replicas"]["autoscale"] = {"metric": "queueTime", "target": 5}
    s2 = VisionDeploymentSpec.model_validate(raw)
    q = build_autoscaler("doorbell", "vision", "u", next(iter(classes(s2).values())), REV, 2, 12)
    assert q["spec"]["metrics"][0]["external"]["metric"]["name"] == "visionfleet_class_queue_ms"
    assert q["spec"]["metrics"][0]["external"]["target"] == {"type": "Value", "value": "5"}
    dep = build_triton_deployment("doorbell", "vision", "u", s, cls, REV, 3, RESULT, "stable", autoscaled=True)
    assert dep["metadata"]["annotations"]["visionfleet.io/autoscaled"] == "true"
    assert dep["spec"]["replicas"] == 3  # the act layer drops it once the HPA holds the field
