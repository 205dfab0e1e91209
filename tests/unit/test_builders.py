"""Manifests and Triton config: pure functions, checked field by field."""

from __future__ import annotations

import pytest

from visionfleet.api.spec import VisionDeploymentSpec
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
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
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
    assert drift_monitor_container(s, [{"name": "artifact", "mountPath": f"/models/{s.model.name}/1"}])["image"] == image
    s2 = drift_spec(detector=detector, image="reg.example/monitor:2")
    assert drift_monitor_container(s2, [{"name": "artifact", "mountPath": f"/models/{s2.model.name}/1"}])["image"] \
        == "reg.example/monitor:2"
