"""The compile program on a tiny real ONNX classifier with ONNX Runtime: fp32 and int8 artifacts,
accuracy gate, profile, batching, config.pbtxt, and a result the operator can read."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from visionfleet.observe.kube import parse_result
from visionfleet_compile import cpu, program, tensorrt_target

C, H, W, CLASSES = 3, 8, 8, 10
HOST = cpu.features()  # this CPU's own (the ``files`` fixture hides its bf16)


def tiny_classifier(path, seed=0):
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm: a real (small) image classifier graph."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((16, C, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32) * 0.1, "conv_b"),
        numpy_helper.from_array(rng.standard_normal((16, CLASSES)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(CLASSES).astype(np.float32) * 0.1, "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", C, H, W])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


@pytest.fixture()
def files(tmp_path, monkeypatch):
    root = tmp_path / "pvc"
    (root / "models").mkdir(parents=True)
    model = tiny_classifier(root / "models" / "tiny.onnx")
    rng = np.random.default_rng(1)
    np.savez(root / "models" / "calib.npz", images=rng.standard_normal((96, C, H, W)).astype(np.float32),
             labels=rng.integers(0, CLASSES, 96))
    monkeypatch.setenv("VISIONFLEET_PVC_ROOT", str(root))
    monkeypatch.setenv("VISIONFLEET_TERMINATION_LOG", str(tmp_path / "termination-log"))
    monkeypatch.setenv("VISIONFLEET_PROFILE_SECONDS", "0.05")
    # The same answers on every CPU: no bf16 (openvino fp32 is allowed and pinned to f32), unless a
    # test says otherwise (``with_bf16``).
    monkeypatch.setattr(cpu, "features", lambda: {**HOST, "bf16": False})
    return {"root": root, "sha": hashlib.sha256(model.read_bytes()).hexdigest(), "tmp": tmp_path}


def request(files, precision="fp32", runtime="onnxruntime", **compile_changes):
    compile_spec = {"calibration": {"uri": "pvc://models/calib.npz", "samples": 64},
                    "accuracyGate": {"metric": "top1Agreement", "min": 0.9},
                    "batching": {"mode": "auto", "latencyBudgetMs": 50}}
    compile_spec.update(compile_changes)
    return {
        "revision": "0123456789ab", "class": "xeon", "runtime": runtime, "precision": precision,
        "model": {"name": "tiny", "version": "1", "uri": "pvc://models/tiny.onnx", "sha256": files["sha"],
                  "inputs": [{"name": "images", "dataType": "FP32", "dims": [C, H, W]}],
                  "outputs": [{"name": "logits", "dataType": "FP32", "dims": [CLASSES]}]},
        "compile": compile_spec,
        "output": {"repository": "pvc://models/repository", "dir": "repository/tiny/0123456789ab-xeon"},
    }


def run(files, req, capsys):
    path = files["tmp"] / "request.json"
    path.write_text(json.dumps(req))
    code = program.main(["compile", "--request", str(path), "--workdir", str(files["tmp"] / "work")])
    message = (files["tmp"] / "termination-log").read_text()
    capsys.readouterr()
    return code, message


ARTIFACT = {"onnxruntime": "model.onnx", "openvino": "model.xml"}


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_compiles_and_reports_a_result_the_operator_reads(files, capsys, precision, runtime):
    code, message = run(files, request(files, precision, runtime), capsys)
    assert code == 0, message
    result, why = parse_result(message)
    assert why is None and result.state == "Succeeded"
    raw = json.loads(message)
    out = files["root"] / "models" / "repository" / "tiny" / "0123456789ab-xeon"
    artifact = ARTIFACT[runtime]
    assert result.artifact == f"pvc://models/repository/tiny/0123456789ab-xeon/{artifact}"
    assert result.sha256 == hashlib.sha256((out / artifact).read_bytes()).hexdigest()
    assert result.accuracy >= 0.9
    assert set(result.p99_ms_at_batch) == {"1", "2", "4", "8", "16", "32"}
    assert result.batching.max_batch_size in (1, 2, 4, 8, 16, 32)
    assert raw["runtime"]["name"] == runtime and raw["runtime"]["precision"] == precision
    assert raw["runtime"][runtime].count(".") >= 2, "the runtime's version is recorded"
    assert raw["files"][artifact] == result.sha256
    config = (out / "config.pbtxt").read_text()
    assert f'backend: "{runtime}"' in config and f"max_batch_size: {result.batching.max_batch_size}" in config
    assert f'default_model_filename: "{artifact}"' in config
    if runtime == "onnxruntime" and precision == "int8":
        ops = {n.op_type for n in onnx.load(out / "model.onnx").graph.node}
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops, "a real int8 (QDQ) graph"
    if runtime == "openvino":
        assert (out / "model.bin").stat().st_size > 0 and raw["files"]["model.bin"]
        xml = (out / "model.xml").read_text()
        assert ("FakeQuantize" in xml or "FakeConvert" in xml) == (precision == "int8"), "int8 IR iff int8"
        if precision == "fp32":  # pinned: the gate and profile measured f32, not the plugin's default
            assert raw["runtime"]["inferencePrecision"] == "fp32"


def test_accuracy_gate_failure_exits_3_with_the_numbers(files, capsys):
    code, message = run(files, request(files, "int8", accuracyGate={"metric": "top1Agreement", "min": 1.01}), capsys)
    assert code == 3
    assert "accuracy gate failed: top1Agreement" in message and "< 1.01" in message and "held-out samples" in message


def test_manual_batching_overrides_the_profile(files, capsys):
    manual = {"mode": "manual", "maxBatchSize": 4, "preferredBatchSizes": [2, 4], "maxQueueDelayMicroseconds": 700}
    code, message = run(files, request(files, batching=manual), capsys)
    result, _ = parse_result(message)
    assert code == 0 and result.batching.max_batch_size == 4 and result.batching.max_queue_delay_microseconds == 700


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        pytest.param(lambda r: r["model"]["inputs"][0].update(dims=[C, 16, 16]), "model.inputs[0].dims",
                     "without the batch", id="shape"),
        pytest.param(lambda r: r["model"]["inputs"][0].update(name="pixels"), "model.inputs[0].name",
                     "no input named 'pixels'", id="name"),
        pytest.param(lambda r: r["model"]["outputs"][0].update(dataType="FP16"), "model.outputs[0].dataType",
                     "is FP32, the spec says FP16", id="dtype"),
        pytest.param(lambda r: r["model"].update(sha256="0" * 64), "model.sha256", "the spec says", id="hash"),
        pytest.param(lambda r: r["model"].update(uri="pvc://models/calib.npz", sha256=None), "model.uri",
                     "is not a valid ONNX model", id="not-onnx"),
        pytest.param(lambda r: r.update(runtime="tensorrt", precision="fp16"), "fleet.classes[].runtime",
                     "tensorrt cannot run on this node: no NVIDIA GPU is visible", id="no-gpu",
                     marks=pytest.mark.skipif(tensorrt_target.gpu() is not None, reason="this machine has a GPU")),
        pytest.param(lambda r: r.update(runtime="openvino", precision="fp16"), "fleet.classes[].precision",
                     "openvino on CPU builds fp32, bf16 or int8 (or auto), not fp16", id="openvino-fp16"),
        pytest.param(lambda r: r.update(runtime="onnxruntime", precision="bf16"), "fleet.classes[].precision",
                     "onnxruntime on CPU builds fp32 or int8 (or auto), not bf16", id="onnxruntime-bf16"),
        pytest.param(lambda r: r.update(runtime="openvino", precision="bf16"), "fleet.classes[].precision",
                     "bf16 needs a CPU with AVX-512 BF16 or AMX", id="bf16-without-bf16"),
        pytest.param(lambda r: r["compile"].pop("calibration") and r.update(precision="int8"), "compile.calibration",
                     "int8 needs calibration data", id="int8-without-calibration"),
    ],
)
def test_bad_input_exits_2_naming_the_field(files, capsys, change, field, text):
    req = request(files)
    change(req)
    code, message = run(files, req, capsys)
    assert code == 2 and message.startswith(field + ":") and text in message


def test_openvino_fp32_is_refused_where_the_plugin_would_run_bf16(files, capsys, monkeypatch):
    """Triton's openvino backend cannot pin f32: on a CPU with bf16 an fp32 artifact would be served in
    bf16, so the compile Job refuses it and names what runs."""
    monkeypatch.setattr(cpu, "features", lambda: {**HOST, "bf16": True})
    code, message = run(files, request(files, "fp32", "openvino"), capsys)
    assert code == 2 and message.startswith("fleet.classes[].precision:") and "choose bf16" in message


@pytest.mark.skipif(not HOST["bf16"], reason="this CPU has no AVX-512 BF16 or AMX")
def test_openvino_bf16_runs_bf16_and_tells_triton_so(files, capsys, monkeypatch):
    monkeypatch.setattr(cpu, "features", lambda: HOST)
    code, message = run(files, request(files, "bf16", "openvino"), capsys)
    assert code == 0, message
    raw = json.loads(message)
    assert raw["precision"] == "bf16" and raw["runtime"]["inferencePrecision"] == "bf16"
    assert raw["parameters"] == {"HINT_BF16": "YES"} and "bf16" in raw["runtime"]["cpuFeatures"]
    out = files["root"] / "models" / "repository" / "tiny" / "0123456789ab-xeon"
    assert 'key: "HINT_BF16"' in (out / "config.pbtxt").read_text()


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_auto_gates_every_candidate_and_keeps_the_fastest_that_passes(files, capsys, runtime):
    code, message = run(files, request(files, "auto", runtime), capsys)
    assert code == 0, message
    result, why = parse_result(message)
    assert why is None
    raw = json.loads(message)
    tried = raw["candidates"]
    assert [c["precision"] for c in tried] == ["int8", "fp32"] and all(c["passed"] for c in tried)
    chosen = [c for c in tried if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["throughput"] == max(c["throughput"] for c in tried)
    assert raw["precision"] == raw["runtime"]["precision"] == chosen[0]["precision"] == result.precision
    assert raw["choice"].startswith(f"{chosen[0]['precision']}: fastest that passed")
    assert [c.precision for c in result.candidates] == ["int8", "fp32"] and result.compile_seconds > 0
    # the entry holds the winner's files, and only those
    out = files["root"] / "models" / "repository" / "tiny" / "0123456789ab-xeon"
    artifact = out / ARTIFACT[runtime]
    assert raw["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    if runtime == "onnxruntime":
        ops = {n.op_type for n in onnx.load(artifact).graph.node}
        assert ("QuantizeLinear" in ops) == (raw["precision"] == "int8")


def test_auto_without_calibration_images_tries_the_float_format_only(files, capsys):
    req = request(files, "auto")
    req["compile"].pop("calibration")
    code, message = run(files, req, capsys)
    assert code == 0, message
    assert [c["precision"] for c in json.loads(message)["candidates"]] == ["fp32"]


def test_auto_with_no_candidate_passing_exits_3_naming_each(files, capsys):
    code, message = run(files, request(files, "auto", accuracyGate={"metric": "top1Agreement", "min": 1.01},
                                       int8Fallback={"budgetSeconds": 0}), capsys)
    assert code == 3 and message.startswith("no candidate passed the accuracy gate (top1Agreement ≥ 1.01): int8 ")
    assert "; fp32 top1Agreement 1.0000" in message


def narrow_calibration(files):
    """The calibration images scaled to a thousandth: every activation range too narrow, int8 saturates."""
    data = np.load(files["root"] / "models" / "calib.npz")
    images = data["images"].copy()
    images[:64] *= 0.001
    np.savez(files["root"] / "models" / "narrow.npz", images=images, labels=data["labels"])
    return {"uri": "pvc://models/narrow.npz", "samples": 64}


def test_int8_that_misses_the_gate_keeps_its_most_sensitive_layers_in_fp32(files, capsys):
    req = request(files, "int8", calibration=narrow_calibration(files), int8Fallback={"maxLayersFraction": 1.0},
                  accuracyGate={"metric": "top1Agreement", "min": 0.97})
    code, message = run(files, req, capsys)
    assert code == 0, message
    raw = json.loads(message)
    result, _ = parse_result(message)
    assert raw["accuracy"] >= 0.97 and raw["precision"] == "int8" and raw["fp32Layers"] >= 1
    assert result.fp32_layers == raw["fp32Layers"] == raw["fallback"]["fp32Layers"]
    plain, mixed = raw["candidates"]
    assert plain == {**plain, "precision": "int8", "passed": False} and plain["accuracy"] < 0.97
    assert mixed["mixed"] and mixed["passed"] and mixed["fp32Layers"] == raw["fp32Layers"]
    assert raw["fallback"]["trials"][-1]["agreement"] >= raw["fallback"]["target"] or len(raw["fallback"]["trials"]) > 1
    # the artifact served is the mix: some compute layers read no int8 tensor
    out = files["root"] / "models" / "repository" / "tiny" / "0123456789ab-xeon"
    model = onnx.load(out / "model.onnx")
    prod = {o: n for n in model.graph.node for o in n.output}
    plain_compute = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")
                     and not any(prod.get(i) is not None and prod[i].op_type == "DequantizeLinear" for i in n.input)]
    assert len(plain_compute) >= 1


def test_the_fallback_off_or_at_its_limit_fails_the_gate_with_what_it_tried(files, capsys):
    calibration = narrow_calibration(files)
    code, message = run(files, request(files, "int8", calibration=calibration, int8Fallback={"budgetSeconds": 0},
                                       accuracyGate={"metric": "top1Agreement", "min": 0.97}), capsys)
    assert code == 3 and "accuracy-aware" not in message
    code, message = run(files, request(files, "int8", calibration=calibration,
                                       int8Fallback={"maxLayersFraction": 0.01},
                                       accuracyGate={"metric": "top1Agreement", "min": 0.97}), capsys)
    # one layer at most (a fraction never rounds below one): the mix passes the search's images (the
    # narrow calibration ones) but not the held-out ones, and may keep no more
    assert code == 3 and message.startswith("accuracy gate failed: top1Agreement ")
    assert "the most allowed stopped the held-out retries at 1" in message


def test_a_runtime_crash_still_reaches_the_operator(files, capsys, monkeypatch):
    """Anything unexpected (a runtime's own error, OOM in a library): exit 1 (the Job may retry) and the
    message in the termination log, never a silent traceback."""
    def boom(*args, **kwargs):
        raise RuntimeError("the runtime fell over")

    monkeypatch.setattr(program, "build_artifact", boom)
    code, message = run(files, request(files), capsys)
    assert code == 1 and message == "RuntimeError: the runtime fell over"


def profiled_threads(runner) -> dict[str, int]:
    """What the runtime the profile ran on reports back: its own settings, not what was asked."""
    if hasattr(runner, "session"):
        opts = runner.session.get_session_options()
        return {"intra_op_thread_count": opts.intra_op_num_threads, "inter_op_thread_count": opts.inter_op_num_threads}
    return {k: int(runner.compiled.get_property(k)) for k in ("INFERENCE_NUM_THREADS", "NUM_STREAMS")}


# (runtime, CPU limit, manual instance count or None for auto) -> what the profile runs on, per instance
THREADS = [
    ("onnxruntime", "500m", None, {"intra_op_thread_count": 1, "inter_op_thread_count": 1}),
    ("onnxruntime", "2", None, {"intra_op_thread_count": 2, "inter_op_thread_count": 1}),
    ("onnxruntime", "2", 2, {"intra_op_thread_count": 1, "inter_op_thread_count": 1}),
    ("openvino", "1500m", None, {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1}),
    ("openvino", "2", None, {"INFERENCE_NUM_THREADS": 2, "NUM_STREAMS": 1}),
    # two streams of one thread: the one synchronous request of the profile runs on one of them
    ("openvino", "2", 2, {"INFERENCE_NUM_THREADS": 2, "NUM_STREAMS": 2}),
]


@pytest.mark.parametrize(("runtime", "limit", "instances", "profiled"), THREADS,
                         ids=[f"{t[0]}-{t[1]}-x{t[2] or 'auto'}" for t in THREADS])
def test_the_cpu_limit_sets_the_threads_profiled_written_and_reported(files, capsys, monkeypatch, runtime, limit,
                                                                      instances, profiled):
    """The program derives the parameters from the request's cpuLimit, profiles under them, writes them
    into config.pbtxt and reports them; the operator's ConfigMap for that result is the same bytes."""
    from visionfleet.api.spec import VisionDeploymentSpec
    from visionfleet.builders.manifests import build_config_map
    from visionfleet.planner.classes import resolve_classes
    from visionfleet_compile import onnxrt
    from visionfleet_contract import cpu_threads

    seen = []
    real_profile = onnxrt.profile
    monkeypatch.setattr(onnxrt, "profile", lambda runner, *a, **k: seen.append(profiled_threads(runner))
                        or real_profile(runner, *a, **k))
    batching = ({"mode": "manual", "maxBatchSize": 4, "instanceCount": instances} if instances
                else {"mode": "auto", "latencyBudgetMs": 50})
    req = {**request(files, runtime=runtime, batching=batching), "cpuLimit": limit}
    code, message = run(files, req, capsys)
    assert code == 0, message
    want = cpu_threads.thread_parameters(runtime, limit, instances or 1)
    assert seen == [profiled]
    raw = json.loads(message)
    assert raw["parameters"] == want
    result, why = parse_result(message)
    assert why is None and result.parameters == want
    out = files["root"] / "models" / "repository" / "tiny" / "0123456789ab-xeon"
    written = (out / "config.pbtxt").read_text()
    spec = VisionDeploymentSpec.model_validate({
        "model": req["model"], "compile": {"calibration": {"uri": "pvc://models/calib.npz"}},
        "fleet": {"classes": [{"name": "xeon", "nodeSelector": {"kubernetes.io/arch": "amd64"}, "runtime": runtime,
                               "resources": {"limits": {"cpu": limit}}}]},
        "serving": {"modelRepository": "pvc://models/repository"}})
    cls = next(c for c in resolve_classes(spec, []) if c.name == "xeon")
    assert build_config_map("vd", "ns", "u", spec, cls, "0123456789ab", result)["data"]["config.pbtxt"] == written
    assert "parameters [" in written


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_without_a_cpu_limit_nothing_changes(files, capsys, runtime):
    code, message = run(files, request(files, runtime=runtime), capsys)
    assert code == 0, message
    assert "parameters" not in json.loads(message)
    out = files["root"] / "models" / "repository" / "tiny" / "0123456789ab-xeon"
    assert "parameters" not in (out / "config.pbtxt").read_text()


@pytest.mark.parametrize("limit", ["two", "-1", "0"])
def test_a_cpu_limit_that_is_no_quantity_exits_2_naming_the_field(files, capsys, limit):
    code, message = run(files, {**request(files), "cpuLimit": limit}, capsys)
    assert code == 2 and message.startswith("fleet.classes[].resources.limits.cpu:") and limit in message


def test_a_truncated_message_keeps_what_config_pbtxt_is_rendered_from(files):
    """Past the kubelet's 4 KiB the extras go, but never the parameters: without them the operator's
    ConfigMap would differ from the config.pbtxt the Job wrote."""
    result = {"artifact": "pvc://a/b", "sha256": "a" * 64, "accuracy": 0.9, "p99MsAtBatch": {"1": 1.0},
              "batching": {"maxBatchSize": 1}, "parameters": {"NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": "2"},
              "runtime": {"name": "openvino", "cpu": "x" * 5000}}
    program.write_termination_message(result)
    kept = json.loads((files["tmp"] / "termination-log").read_text())
    assert "runtime" not in kept and kept["parameters"] == result["parameters"]
    assert kept["batching"] == {"maxBatchSize": 1}


# -- tasks other than classification -----------------------------------------------------------------

ANCHORS = H * W
SCALE = np.array([W, H, 4, 4, 1, 1], dtype=np.float32)  # cx, cy, w, h in pixels; objectness, class score


def tiny_detector(path, seed=0):
    """Conv -> Conv -> Sigmoid, reshaped to an objectness head [N, anchors, 5 + 1] (YOLOX-style, decoded)."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, C, 3, 3)).astype(np.float32), "w1"),
        # sharp objectness and class scores (near 0 or 1), as a trained detector's are
        numpy_helper.from_array((rng.standard_normal((6, 8, 1, 1)) * np.array([1, 1, 1, 1, 10, 10])[:, None, None, None])
                                .astype(np.float32), "w2"),
        numpy_helper.from_array(np.array([0, 6, ANCHORS], dtype=np.int64), "shape"),
        numpy_helper.from_array(SCALE, "scale"),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "w1"], ["c1"], pads=[1, 1, 1, 1], name="backbone_conv"),
        helper.make_node("Relu", ["c1"], ["r1"], name="backbone_relu"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="head_conv"),
        helper.make_node("Sigmoid", ["c2"], ["s"], name="head_sigmoid"),
        helper.make_node("Reshape", ["s", "shape"], ["flat"], name="head_reshape"),
        helper.make_node("Transpose", ["flat"], ["t"], perm=[0, 2, 1], name="head_transpose"),
        helper.make_node("Mul", ["t", "scale"], ["detections"], name="head_decode"),
    ]
    graph = helper.make_graph(nodes, "tinydet", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", C, H, W])],
                              [helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["N", ANCHORS, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def detector_request(files, precision="fp32", detection=None, **compile_changes):
    req = request(files, precision, **compile_changes)
    model = files["root"] / "models" / "tinydet.onnx"
    if not model.exists():
        tiny_detector(model)
        rng = np.random.default_rng(2)
        boxes = np.array([[i, 0, 1, 1, 5, 5] for i in range(64, 96)], dtype=np.float32)
        np.savez(files["root"] / "models" / "det.npz", images=rng.standard_normal((96, C, H, W)).astype(np.float32),
                 boxes=boxes)
    req["model"].update(uri="pvc://models/tinydet.onnx", sha256=hashlib.sha256(model.read_bytes()).hexdigest(),
                        task="detection", detection=detection or {"layout": "objectness"},
                        outputs=[{"name": "detections", "dataType": "FP32", "dims": [ANCHORS, 6]}])
    req["compile"]["calibration"]["uri"] = "pvc://models/det.npz"
    req["compile"].pop("accuracyGate")
    req["compile"].update(compile_changes)
    return req


def test_a_detector_is_gated_on_detections_and_carries_a_detection_reference(files, capsys):
    from visionfleet_contract.reference import load

    code, message = run(files, detector_request(files), capsys)
    assert code == 0, message
    raw = json.loads(message)
    assert raw["accuracyMetric"] == "detectionF1" and raw["accuracy"] == 1.0  # fp32 of the same graph
    assert set(raw["metrics"]) == {"detectionF1", "detectionMap50", "labelMap50"}
    assert 0 <= raw["referenceMetrics"]["labelMap50"] <= 1 and "top1Agreement" not in raw
    result, why = parse_result(message)
    assert why is None and result.accuracy_metric == "detectionF1" and result.metrics
    ref = load(files["root"] / "models" / "repository" / "tiny" / "0123456789ab-xeon" / "drift-reference.npz")
    assert ref.meta["task"] == "detection" and ref.meta["classes"] == 1 and ref.meta["imageHW"] == [H, W]
    assert ref.probs.shape == (64, 7)  # six summaries and one class share per calibration image


def test_head_nodes_are_the_output_side_of_the_graph(files):
    from visionfleet_compile import onnxrt

    path = tiny_detector(files["tmp"] / "d.onnx")
    head = ["head_conv", "head_decode", "head_reshape", "head_sigmoid", "head_transpose"]
    assert onnxrt.head_nodes(path, 1) == head
    assert onnxrt.head_nodes(path, 2) == sorted(head + ["backbone_conv", "backbone_relu"])


def test_an_int8_detector_that_misses_the_gate_is_rebuilt_with_its_head_in_fp32_before_it_fails(files, capsys):
    path = files["tmp"] / "request.json"
    path.write_text(json.dumps(detector_request(files, "int8", accuracyGate={"min": 1.0, "metric": "detectionMap50"})))
    code = program.main(["compile", "--request", str(path), "--workdir", str(files["tmp"] / "work")])
    out = capsys.readouterr().out
    message = (files["tmp"] / "termination-log").read_text()
    rebuilds = [json.loads(line) for line in out.splitlines() if '"phase": "rebuild"' in line]
    if code == 0:  # a fallback made the artifact exact: the result says what stayed in higher precision
        assert rebuilds and set(json.loads(message)) & {"fp32Nodes", "int8OpTypes"}
        return
    # only the weighted operations in int8, then the head in fp32 as well, one convolution deep, then two
    assert code == 3 and [r["depth"] for r in rebuilds] == [0, 1, 2]
    assert [r.get("fp32Nodes") for r in rebuilds] == [None, 5, 7]
    assert all(r["int8OpTypes"] == ["Conv", "ConvTranspose", "MatMul", "Gemm"] for r in rebuilds)
    assert "accuracy gate failed: detectionMap50" in message and "head kept in fp32: 7 nodes" in message
    assert "int8 only on Conv, ConvTranspose, MatMul, Gemm" in message


@pytest.mark.parametrize("change, code, text", [
    (dict(accuracyGate={"metric": "labelMiou"}), 2, "compile.accuracyGate.metric"),
    (dict(detection={"layout": "objectness", "output": "nope"}), 2, "model.detection"),
    (dict(detection={"layout": "boxes", "boxes": "detections", "scores": "scores"}), 2, "model.detection"),
])
def test_a_detector_whose_outputs_or_labels_do_not_fit_exits_2_naming_the_field(files, capsys, change, code, text):
    detection = change.pop("detection", None)
    got, message = run(files, detector_request(files, detection=detection, **change), capsys)
    assert got == code and text in message, message


def test_other_models_are_gated_on_output_cosine(files, capsys):
    req = request(files, "int8", accuracyGate={"min": 0.5})
    req["model"]["task"] = "other"
    code, message = run(files, req, capsys)
    assert code == 0, message
    raw = json.loads(message)
    assert raw["accuracyMetric"] == "outputCosine" and 0.5 <= raw["metrics"]["outputCosine"] <= 1.0


def test_int8_of_a_model_older_than_opset_13_is_a_loadable_graph(files):
    """Per-channel Q/DQ needs opset 13 (DequantizeLinear's axis): an older model is converted first."""
    from visionfleet_compile import onnxrt

    model = onnx.load(tiny_classifier(files["tmp"] / "m.onnx"))
    model.opset_import[0].version = 11
    onnx.save(model, files["tmp"] / "m11.onnx")
    x = np.random.default_rng(0).standard_normal((16, C, H, W)).astype(np.float32)
    out = onnxrt.build_int8(files["tmp"] / "m11.onnx", files["tmp"] / "q.onnx", x, "images")
    assert next(o.version for o in onnx.load(out).opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert onnxrt.Runner(out).run(x).shape == (16, CLASSES)
