"""The CRD on the real API server: examples apply with their defaults, bad specs are refused with a
message that names the field, the status subresource and printer columns work."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from visionfleet_e2e.cli import install_crds

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "docs" / "examples").glob("*.yaml"))

BASE = {
    "apiVersion": "visionfleet.io/v1alpha1",
    "kind": "VisionDeployment",
    "metadata": {"name": "probe"},
    "spec": {
        "model": {
            "name": "efficientnet-lite0",
            "version": "1",
            "uri": "pvc://models/m.onnx",
            "inputs": [{"name": "images", "dataType": "FP32", "dims": [3, 224, 224]}],
            "outputs": [{"name": "logits", "dataType": "FP32", "dims": [1000]}],
        },
        "fleet": {"classes": [
            {"name": "l4", "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"}, "runtime": "tensorrt",
             "precision": "fp16", "resources": {"limits": {"nvidia.com/gpu": 1}}},
            {"name": "xeon", "nodeSelector": {"node.kubernetes.io/instance-type": "c7i.4xlarge"},
             "runtime": "onnxruntime"},
        ]},
        "serving": {"modelRepository": "pvc://models/repository"},
    },
}


@pytest.fixture(scope="module")
def crd(cluster):
    install_crds(cluster)
    return cluster


def apply(cluster, namespace, obj, check=True):
    return cluster.kubectl("apply", "--server-side", "--field-manager=tests", "-n", namespace, "-f", "-",
                           input=json.dumps(obj), check=check)


def mutate(fn):
    obj = copy.deepcopy(BASE)
    fn(obj)
    return obj


def s(obj):
    return obj["spec"]


# (id, mutation, substrings the API server's error must contain: the field path, and the hint)
BAD_SPECS = [
    ("missing-model", lambda o: s(o).pop("model"), ["spec.model", "Required value"]),
    ("uri-scheme", lambda o: s(o)["model"].update(uri="ftp://host/m.onnx"), ["spec.model.uri", "should match"]),
    ("https-without-sha256", lambda o: s(o)["model"].update(uri="https://x/m.onnx"),
     ["spec.model.sha256", "sha256 is required"]),
    ("sha256-not-hex", lambda o: s(o)["model"].update(sha256="Z" * 64), ["spec.model.sha256"]),
    ("no-inputs", lambda o: s(o)["model"].update(inputs=[]), ["spec.model.inputs", "at least 1 items"]),
    ("zero-dim", lambda o: s(o)["model"]["inputs"][0].update(dims=[3, 0, 224]),
     ["spec.model.inputs[0].dims", "positive sizes"]),
    ("bad-datatype", lambda o: s(o)["model"]["inputs"][0].update(dataType="BF16"),
     ["spec.model.inputs[0].dataType", "Unsupported value", "FP32"]),
    ("duplicate-inputs", lambda o: s(o)["model"]["inputs"].append(dict(s(o)["model"]["inputs"][0])),
     ["spec.model.inputs", "input names must be unique"]),
    ("no-classes", lambda o: s(o)["fleet"].update(classes=[]), ["spec.fleet", "set fleet.classes"]),
    ("duplicate-class", lambda o: s(o)["fleet"]["classes"].append(dict(s(o)["fleet"]["classes"][1])),
     [".spec.fleet.classes", 'duplicate entries for key [name="xeon"]']),
    ("fp16-on-cpu", lambda o: s(o)["fleet"]["classes"][1].update(precision="fp16"),
     ["spec.fleet.classes[1].precision", "fp16 needs runtime tensorrt"]),
    ("bf16-on-onnxruntime", lambda o: s(o)["fleet"]["classes"][1].update(precision="bf16"),
     ["spec.fleet.classes[1].precision", "bf16 needs runtime openvino"]),
    ("bf16-on-tensorrt", lambda o: s(o)["fleet"]["classes"][0].update(precision="bf16"),
     ["spec.fleet.classes[0].precision", "bf16 needs runtime openvino"]),
    ("discover-bf16-on-onnxruntime", lambda o: s(o).update(fleet={"discover": {
        "groupBy": ["pool"], "cpuRuntime": "onnxruntime", "cpuPrecision": "bf16"}}),
     ["spec.fleet.discover.cpuPrecision", "bf16 needs cpuRuntime openvino"]),
    ("discover-gpu-fp32", lambda o: s(o).update(fleet={"discover": {"groupBy": ["pool"], "gpuPrecision": "fp32"}}),
     ["spec.fleet.discover.gpuPrecision", "fp16, int8 or auto"]),
    ("fallback-fraction-zero", lambda o: s(o).update(compile={"int8Fallback": {"maxLayersFraction": 0}}),
     ["spec.compile.int8Fallback.maxLayersFraction", "greater than 0"]),
    ("fallback-budget-over-an-hour", lambda o: s(o).update(compile={"int8Fallback": {"budgetSeconds": 7200}}),
     ["spec.compile.int8Fallback.budgetSeconds", "less than or equal to 3600"]),
    ("tensorrt-without-gpu", lambda o: s(o)["fleet"]["classes"][0].pop("resources"),
     ["spec.fleet.classes[0].resources", "nvidia.com/gpu"]),
    ("replicas-min-above-max", lambda o: s(o)["fleet"]["classes"][0].update(replicas={"min": 5, "max": 2}),
     ["spec.fleet.classes[0].replicas.min", "less than or equal to replicas.max"]),
    ("unknown-runtime", lambda o: s(o)["fleet"]["classes"][0].update(runtime="tvm"),
     ["spec.fleet.classes[0].runtime", "Unsupported value", "tensorrt"]),
    ("class-name-uppercase", lambda o: s(o)["fleet"]["classes"][0].update(name="L4"),
     ["spec.fleet.classes[0].name"]),
    ("weight-over-100", lambda o: s(o).update(rollout={"steps": [{"setWeight": 150}]}),
     ["spec.rollout.steps[0].setWeight", "less than or equal to 100"]),
    ("weights-descending", lambda o: s(o).update(rollout={"steps": [{"setWeight": 50}, {"setWeight": 10}]}),
     ["spec.rollout.steps", "strictly ascend"]),
    ("wave-unknown-class", lambda o: s(o).update(rollout={"waves": [["xeon"], ["h100"]]}),
     ["spec.rollout.waves", "must be one of fleet.classes"]),
    ("class-in-two-waves", lambda o: s(o).update(rollout={"waves": [["xeon"], ["xeon", "l4"]]}),
     ["spec.rollout.waves", "only one wave"]),
    ("int8-without-calibration", lambda o: s(o)["fleet"]["classes"][1].update(precision="int8"),
     ["spec.compile.calibration", "int8 needs calibration"]),
    ("manual-batching-without-max", lambda o: s(o).update(compile={"batching": {"mode": "manual"}}),
     ["spec.compile.batching.maxBatchSize", "manual needs maxBatchSize"]),
    ("preferred-above-max", lambda o: s(o).update(compile={"batching": {
        "mode": "manual", "maxBatchSize": 8, "preferredBatchSizes": [4, 16]}}),
     ["spec.compile.batching.preferredBatchSizes", "at most maxBatchSize"]),
    ("timeout-not-duration", lambda o: s(o).update(compile={"timeout": "30 minutes"}),
     ["spec.compile.timeout", "should match"]),
    ("gateway-method-without-route", lambda o: s(o).update(rollout={"traffic": {"method": "GatewayAPI"}}),
     ["spec.rollout.traffic.gatewayAPI", "exactly when traffic.method is GatewayAPI"]),
    ("slo-without-prometheus", lambda o: s(o).update(analysis={"slo": {"latencyP99Ms": 20}}),
     ["spec.analysis.prometheus", "needs analysis.prometheus.url"]),
    ("drift-without-prometheus", lambda o: s(o).update(analysis={"drift": {"window": 500}}),
     ["spec.analysis.prometheus", "analysis.drift needs analysis.prometheus.url"]),
    ("drift-without-calibration", lambda o: (s(o).update(analysis={"prometheus": {"url": "http://p:9090"},
                                                                   "drift": {"window": 500}}),
                                             s(o).get("compile", {}).pop("calibration", None)),
     ["spec.compile.calibration", "analysis.drift needs compile.calibration.uri"]),
    ("p-value-out-of-range", lambda o: s(o).update(analysis={"drift": {"pValue": 1.5}}),
     ["spec.analysis.drift.pValue"]),
    ("no-model-repository", lambda o: s(o).pop("serving"),
     ["spec.serving.modelRepository", "modelRepository is required"]),
    ("https-model-repository", lambda o: s(o)["serving"].update(modelRepository="https://models.example/triton"),
     ["spec.serving.modelRepository", "pvc://<claim>/<path>", "s3://<bucket>/<prefix>"]),
    ("file-model-repository", lambda o: s(o)["serving"].update(modelRepository="file:///models"),
     ["spec.serving.modelRepository", "Triton pods load artifacts only from those"]),
    ("gs-model-uri", lambda o: s(o)["model"].update(uri="gs://bucket/m.onnx", sha256="a" * 64),
     ["spec.model.uri", "gs:// is not supported", "s3://"]),
    ("gs-calibration", lambda o: s(o).update(compile={"calibration": {"uri": "gs://b/c.npz"}}),
     ["spec.compile.calibration.uri", "gs:// is not supported"]),
    ("reserved-env", lambda o: s(o).update(compile={"env": [{"name": "VISIONFLEET_COMPILE_REQUEST", "value": "{}"}]}),
     ["spec.compile.env[0].name", "set by the operator"]),
    ("env-value-and-value-from", lambda o: s(o).update(compile={"env": [
        {"name": "TOKEN", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
     ["spec.compile.env[0].valueFrom", "not both"]),
    ("env-from-both-kinds", lambda o: s(o).update(compile={"envFrom": [
        {"secretRef": {"name": "s"}, "configMapRef": {"name": "c"}}]}),
     ["spec.compile.envFrom[0]", "exactly one of secretRef or configMapRef"]),
    ("s3-endpoint-not-url", lambda o: s(o).update(storage={"s3": {"endpoint": "minio:9000"}}),
     ["spec.storage.s3.endpoint", "should match"]),
    ("drain-negative", lambda o: s(o)["serving"].update(drainSeconds=-1), ["spec.serving.drainSeconds"]),
    ("duplicate-env", lambda o: s(o).update(compile={"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}),
     ["spec.compile.env", "names must be unique"]),
    ("detection-without-layout", lambda o: s(o)["model"].update(task="detection"),
     ["spec.model.detection", "required with task detection"]),
    ("layout-without-task", lambda o: s(o)["model"].update(segmentation={"layout": "mask"}),
     ["spec.model.segmentation", "required with task segmentation and read by no other task"]),
    ("boxes-layout-without-scores", lambda o: s(o)["model"].update(task="detection", detection={
        "layout": "boxes", "boxes": "logits"}), ["spec.model.detection.boxes", "needs the names of its boxes and scores"]),
    ("detection-head-not-an-output", lambda o: s(o)["model"].update(task="detection", detection={
        "layout": "anchorFree", "output": "output0"}), ["spec.model.detection.output", "must name one of model.outputs"]),
    ("raw-head-with-boxes-fields", lambda o: s(o)["model"].update(task="detection", detection={
        "layout": "objectness", "scores": "logits"}), ["spec.model.detection.layout", "belong to layout boxes"]),
    ("gate-metric-of-another-task", lambda o: (s(o)["model"].update(task="detection", detection={"layout": "anchorFree"}),
                                               s(o).update(compile={"accuracyGate": {"metric": "top1Agreement"}})),
     ["spec.compile.accuracyGate.metric", "does not fit model.task", "detectionF1"]),
    ("label-map-without-calibration", lambda o: (s(o)["model"].update(task="detection", detection={"layout": "anchorFree"}),
                                                 s(o).update(compile={"accuracyGate": {"metric": "labelMap50"}})),
     ["spec.compile.calibration", "labelMap50 and labelMiou need a labelled calibration set"]),
    ("mask-threshold", lambda o: s(o)["model"].update(task="segmentation", segmentation={"layout": "mask", "threshold": 0.5}),
     ["spec.model.segmentation.threshold", "probability and logits"]),
    ("shadow-without-gateway", lambda o: s(o).update(rollout={"steps": [{"shadow": {"duration": "5m"}}, {"setWeight": 50}]}),
     ["spec.rollout.traffic.method", "shadow needs rollout.traffic.method GatewayAPI"]),
    ("shadow-and-weight-in-one-step", lambda o: s(o).update(rollout={
        "traffic": {"method": "GatewayAPI", "gatewayAPI": {"httpRoute": "r"}},
        "steps": [{"setWeight": 10, "shadow": {"duration": "5m"}}]}),
     ["spec.rollout.steps[0].setWeight", "exactly one of rollout.steps[*].setWeight and rollout.steps[*].shadow"]),
    ("step-without-weight-or-shadow", lambda o: s(o).update(rollout={"steps": [{"pause": "1m"}]}),
     ["spec.rollout.steps[0].setWeight", "exactly one of"]),
    ("shadow-with-pause", lambda o: s(o).update(rollout={
        "traffic": {"method": "GatewayAPI", "gatewayAPI": {"httpRoute": "r"}},
        "steps": [{"shadow": {"duration": "5m"}, "pause": "1m"}, {"setWeight": 100}]}),
     ["spec.rollout.steps[0].pause", "holds for shadow.duration"]),
    ("shadow-after-weight", lambda o: s(o).update(rollout={
        "traffic": {"method": "GatewayAPI", "gatewayAPI": {"httpRoute": "r"}},
        "steps": [{"setWeight": 10}, {"shadow": {"duration": "5m"}}]}),
     ["spec.rollout.steps", "shadow steps come first"]),
    ("live-agreement-without-shadow", lambda o: s(o).update(
        analysis={"prometheus": {"url": "http://p:9090"}, "drift": {}, "liveAgreement": {"min": 0.99}},
        compile={"calibration": {"uri": "pvc://models/c.npz"}}),
     ["spec.analysis.liveAgreement", "judged during shadow steps"]),
    ("live-agreement-without-drift", lambda o: s(o).update(
        analysis={"prometheus": {"url": "http://p:9090"}, "liveAgreement": {"min": 0.99}}),
     ["spec.analysis.drift", "liveAgreement needs analysis.drift"]),
    ("autoscale-with-replica-traffic", lambda o: s(o)["fleet"]["classes"][1].update(
        replicas={"min": 1, "max": 8, "autoscale": {"target": 20}}),
     ["spec.rollout.traffic.method", "replicas.autoscale needs rollout.traffic.method GatewayAPI"]),
    ("autoscale-without-target", lambda o: (s(o)["fleet"]["classes"][1].update(
        replicas={"min": 1, "max": 8, "autoscale": {"metric": "queueTime"}}),
        s(o).update(rollout={"traffic": {"method": "GatewayAPI", "gatewayAPI": {"httpRoute": "r"}}})),
     ["spec.fleet.classes[1].replicas.autoscale.target", "Required value"]),
    ("autoscale-stabilization-over-the-hpas-limit", lambda o: (s(o)["fleet"]["classes"][1].update(
        replicas={"min": 1, "max": 8, "autoscale": {"target": 20, "scaleDownStabilization": "2h"}}),
        s(o).update(rollout={"traffic": {"method": "GatewayAPI", "gatewayAPI": {"httpRoute": "r"}}})),
     ["spec.fleet.classes[1].replicas.autoscale.scaleDownStabilization", "at most 1h"]),
    ("name-too-long", lambda o: o["metadata"].update(name="a" * 41), ["metadata.name", "at most 40 characters"]),
    ("unknown-field", lambda o: s(o)["model"].update(shaa256="x"), [".spec.model.shaa256", "field not declared in schema"]),
]


def test_the_base_spec_is_accepted(crd, namespace):
    assert "serverside-applied" in apply(crd, namespace, BASE).stdout


def test_every_new_identity_storage_and_serving_field_is_accepted(crd, namespace):
    def full(o):
        s(o).update(
            storage={"s3": {"endpoint": "http://minio.storage:9000", "region": "eu-west-1",
                            "credentialsSecret": "s3-credentials"}},
            compile={"serviceAccountName": "model-writer",
                     "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
                             {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}}],
                     "envFrom": [{"configMapRef": {"name": "proxy"}}]})
        s(o)["serving"].update(modelRepository="s3://models/triton", serviceAccountName="model-reader",
                               drainSeconds=20)
        s(o)["fleet"]["classes"][0].update(runtimeClassName="nvidia", priorityClassName="serving",
                                           compileResources={"requests": {"cpu": 4, "memory": "16Gi"}})
    obj = mutate(full)
    obj["metadata"]["name"] = "full-identity"
    assert "serverside-applied" in apply(crd, namespace, obj).stdout
    got = json.loads(crd.kubectl("get", "vd", "full-identity", "-n", namespace, "-o", "json").stdout)["spec"]
    assert got["storage"] == s(obj)["storage"] and got["compile"]["envFrom"] == [{"configMapRef": {"name": "proxy"}}]


@pytest.mark.parametrize(("mutation", "expected"), [(m, e) for _, m, e in BAD_SPECS], ids=[i for i, _, _ in BAD_SPECS])
def test_bad_spec_is_rejected_naming_the_field(crd, namespace, mutation, expected):
    proc = apply(crd, namespace, mutate(mutation), check=False)
    assert proc.returncode != 0, f"accepted: {proc.stdout}"
    for text in expected:
        assert text in proc.stderr, f"{text!r} not in the API server's answer:\n{proc.stderr}"
    assert crd.kubectl("get", "vd", "probe", "-n", namespace, check=False).returncode != 0


def test_at_least_fifteen_bad_specs():
    assert len(BAD_SPECS) >= 15


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_applies(crd, namespace, example):
    doc = yaml.safe_load(example.read_text())
    out = crd.kubectl("apply", "--server-side", "--field-manager=tests", "-n", namespace, "-f", str(example))
    assert "serverside-applied" in out.stdout
    stored = crd.kubectl_json("get", "vd", doc["metadata"]["name"], "-n", namespace)
    assert stored["spec"]["model"] == doc["spec"]["model"]


def test_precision_auto_needs_no_calibration_and_bf16_applies_on_openvino(crd, namespace):
    def auto(o):
        s(o)["fleet"]["classes"][1].update(precision="auto")
        s(o)["fleet"]["classes"].append({"name": "spr", "nodeSelector": {"pool": "spr"}, "runtime": "openvino",
                                         "precision": "bf16"})
        s(o)["fleet"]["classes"][0].update(precision="auto")
    obj = mutate(auto)
    obj["metadata"]["name"] = "precision-auto"
    assert "serverside-applied" in apply(crd, namespace, obj).stdout
    got = crd.kubectl_json("get", "vd", "precision-auto", "-n", namespace)["spec"]["fleet"]["classes"]
    assert [c["precision"] for c in got] == ["auto", "auto", "bf16"]


def test_server_fills_defaults(crd, namespace):
    apply(crd, namespace, BASE)
    spec = crd.kubectl_json("get", "vd", "probe", "-n", namespace)["spec"]
    assert spec["analysis"] == {"interval": "30s", "failureLimit": 1, "inconclusiveLimit": 3,
                                "onInconclusive": "Pause", "consecutiveErrorLimit": 4}
    assert (spec["rollout"]["scaleDownDelay"], spec["rollout"]["progressDeadline"]) == ("30s", "10m")
    assert spec["rollout"]["steps"] == [{"setWeight": 10, "pause": "1m"}, {"setWeight": 50, "pause": "2m"},
                                        {"setWeight": 100}]
    assert spec["rollout"]["traffic"] == {"method": "Replicas"}
    # The gate's defaults depend on model.task: left unset, the compile program resolves them.
    assert "accuracyGate" not in spec["compile"]
    assert spec["compile"]["batching"] == {"mode": "auto", "latencyBudgetMs": 50}
    assert spec["compile"]["int8Fallback"] == {"budgetSeconds": 120, "maxLayersFraction": 0.5}
    xeon = spec["fleet"]["classes"][1]
    assert xeon["precision"] == "fp32" and xeon["replicas"] == {"min": 1, "max": 4}


def test_status_subresource_and_printer_columns(crd, namespace):
    apply(crd, namespace, BASE)
    status = {"status": {"phase": "RollingOut", "stableRevision": "7f3c0a1b2c3d", "canaryRevision": "9a21ffee0011",
                         "canaryWeight": 10, "effectiveWeight": 25,
                         "analysis": {"verdict": "Passed", "p99Ms": 12.5, "driftPValue": 0.43}}}
    crd.kubectl("patch", "vd", "probe", "-n", namespace, "--subresource=status", "--type=merge",
                "-p", json.dumps(status))
    table = crd.kubectl("get", "vd", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "STABLE", "WEIGHT", "P99-MS", "DRIFT-P", "AGE"]
    assert table[1].split()[:6] == ["probe", "RollingOut", "7f3c0a1b2c3d", "25", "12.5", "0.43"], \
        "WEIGHT is the effective weight"
    wide = crd.kubectl("get", "vd", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:6] == ["NAME", "PHASE", "STABLE", "CANARY", "WEIGHT", "SET-WEIGHT"]
    assert wide[1].split()[4:6] == ["25", "10"]
    short = crd.kubectl("get", "vd", "-n", namespace, "-o", "name").stdout.strip()
    assert short == "visiondeployment.visionfleet.io/probe"
    # status written through the main resource is ignored; spec written through status is ignored
    crd.kubectl("patch", "vd", "probe", "-n", namespace, "--type=merge", "-p", json.dumps({"status": {"phase": "Failed"}}))
    assert crd.kubectl_json("get", "vd", "probe", "-n", namespace)["status"]["phase"] == "RollingOut"
    bad = crd.kubectl("patch", "vd", "probe", "-n", namespace, "--subresource=status", "--type=merge",
                      "-p", json.dumps({"status": {"phase": "Bogus"}}), check=False)
    assert bad.returncode != 0 and "status.phase" in bad.stderr and "Unsupported value" in bad.stderr


@pytest.mark.parametrize("path, says", [
    ("visiondeployments.spec.rollout", "Default 10m"),
    ("visiondeployments.spec.analysis.interval", "Default 30s"),
    ("visiondeployments.spec.fleet.classes.compileImage", "compile.gpuImage"),
    ("visiondeployments.status.effectiveWeight", "Ready"),
])
def test_kubectl_explain_documents_every_field(crd, path, says):
    """The API server publishes the models' descriptions: a field's page and its children's carry
    them, never `<empty>` (every field of the tree is checked in tests/unit/test_crd.py)."""
    out = crd.kubectl("explain", path).stdout
    assert "<empty>" not in out, out
    assert says in out, out
