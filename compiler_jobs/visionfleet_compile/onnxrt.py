"""The ONNX Runtime target, and the checks every target shares.

    model.onnx ──► check_io (names, types, shapes vs spec.model)   error names e.g. model.inputs[0].dims
        ├─ fp32: ORT graph optimisation (ORT_ENABLE_ALL), saved as the artifact
        └─ int8: static QDQ quantisation with the calibration set (per-channel weights)
    artifact vs fp32 reference on held-out samples ──► top-1 agreement (and top-1 accuracy with labels)
    artifact on this node ──► p50/p99 latency and throughput per batch size (the batching profile)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from .batching import ProfilePoint

ONNX_TO_TRITON = {
    onnx.TensorProto.FLOAT: "FP32", onnx.TensorProto.FLOAT16: "FP16", onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.UINT8: "UINT8", onnx.TensorProto.INT32: "INT32", onnx.TensorProto.INT64: "INT64",
}
NUMPY = {"FP32": np.float32, "FP16": np.float16, "INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32,
         "INT64": np.int64}


class ModelMismatch(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def load_model(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # onnx raises DecodeError, ValidationError, … for a file that is not ONNX
        raise ModelMismatch("model.uri", f"{path.name} is not a valid ONNX model: {str(e).splitlines()[0][:300]}") from e
    return model


def _dims(value_info: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]


def check_io(model: onnx.ModelProto, spec_model: dict) -> None:
    """The ONNX graph's inputs/outputs must be what ``spec.model`` declares (batch dimension first)."""
    initializers = {i.name for i in model.graph.initializer}
    graph_io = {
        "inputs": [v for v in model.graph.input if v.name not in initializers],
        "outputs": list(model.graph.output),
    }
    for kind, declared in (("inputs", spec_model["inputs"]), ("outputs", spec_model["outputs"])):
        actual = {v.name: v for v in graph_io[kind]}
        if len(declared) != len(actual):
            raise ModelMismatch(f"model.{kind}", f"the spec declares {len(declared)}, the model has {len(actual)} "
                                                  f"({', '.join(actual)})")
        for i, t in enumerate(declared):
            v = actual.get(t["name"])
            if v is None:
                raise ModelMismatch(f"model.{kind}[{i}].name",
                                    f"no {kind[:-1]} named {t['name']!r} in the model (it has {', '.join(actual)})")
            dtype = ONNX_TO_TRITON.get(v.type.tensor_type.elem_type, str(v.type.tensor_type.elem_type))
            if dtype != t["dataType"]:
                raise ModelMismatch(f"model.{kind}[{i}].dataType", f"the model's {t['name']} is {dtype}, "
                                                                  f"the spec says {t['dataType']}")
            dims = _dims(v)
            if len(dims) != len(t["dims"]) + 1:
                raise ModelMismatch(f"model.{kind}[{i}].dims",
                                    f"the model's {t['name']} has shape {dims} (batch first); the spec's dims "
                                    f"{t['dims']} need {len(t['dims']) + 1} dimensions with the batch")
            for want, got in zip(t["dims"], dims[1:]):
                if want != -1 and got != -1 and want != got:
                    raise ModelMismatch(f"model.{kind}[{i}].dims", f"the model's {t['name']} is {dims[1:]} "
                                                                  f"without the batch, the spec says {t['dims']}")


def session(path: Path, parameters: Mapping[str, str] | None = None) -> ort.InferenceSession:
    """A CPU session set up as Triton's onnxruntime backend sets up one instance's session from the
    config.pbtxt ``parameters`` (its README, "Model Config Options": intra_op_thread_count,
    inter_op_thread_count, execution_mode; 0 or absent = ORT's default), so a profile measures what
    will be served."""
    from visionfleet_contract.cpu_threads import ORT_INTER_OP, ORT_INTRA_OP

    parameters = parameters or {}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # not a warning per unused initializer of a QDQ graph
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if int(parameters.get("execution_mode", "0")) == 1:
        opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    if int(parameters.get(ORT_INTRA_OP, "0")) > 0:
        opts.intra_op_num_threads = int(parameters[ORT_INTRA_OP])
    if int(parameters.get(ORT_INTER_OP, "0")) > 0:
        opts.inter_op_num_threads = int(parameters[ORT_INTER_OP])
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def build_fp32(src: Path, dest: Path) -> Path:
    """ORT's offline graph optimisation: the optimised graph is the artifact."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(dest)
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    return dest


class _Calibration:
    def __init__(self, input_name: str, samples: np.ndarray, batch: int = 8):
        self.batches = [{input_name: samples[i:i + batch]} for i in range(0, len(samples), batch)]

    def get_next(self):
        return self.batches.pop(0) if self.batches else None

    def rewind(self):  # some ORT versions call it
        pass


def cpu_has_vnni() -> bool:
    """x86 VNNI (AVX-512 VNNI, AVX-VNNI or AMX) multiplies int8 without the int16 saturation of AVX2's
    vpmaddubsw; without it, 8-bit weights can overflow and flip predictions."""
    from .cpu import features

    f = features()
    return f["vnni"] or not f["avx2"]  # not x86 (or no AVX2): nothing to work around


def head_nodes(src: Path, depth: int = 1) -> list[str]:
    """The output side of the graph, the layers int8 hurts most in a detector or segmenter: every node
    after the last ``depth`` convolutions (Conv, ConvTranspose, MatMul, Gemm) on each path to an
    output, those convolutions included. Names, for ``build_int8(exclude=…)``."""
    model = onnx.load(str(src), load_external_data=False)
    nodes = list(model.graph.node)
    compute = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    # Walk back from the outputs; a path stops after it has crossed ``depth`` convolutions.
    seen: dict[int, int] = {}
    stack = [(producer[o.name], 0) for o in model.graph.output if o.name in producer]
    while stack:
        i, crossed = stack.pop()
        crossed += nodes[i].op_type in compute
        if seen.get(i, depth + 1) <= crossed:
            continue
        seen[i] = crossed
        if crossed >= depth:
            continue  # this convolution is kept in fp32; the layers before it are not
        stack += [(producer[t], crossed) for t in nodes[i].input if t in producer]
    return sorted({nodes[i].name or f"{nodes[i].op_type}_{i}" for i in seen})


# Weighted operations: where int8 pays. Quantising only these (and not every elementwise Add and Mul)
# is the first fallback of a detector or segmenter that misses its gate: measured on the PP-OCRv4
# DBNet segmenter, maskMiou 0.78 with every op quantised, 0.96 with only these.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
MIN_QDQ_OPSET = 13  # per-channel DequantizeLinear (its axis attribute) needs opset 13


def with_node_names(src: Path, model: onnx.ModelProto, workdir: Path) -> Path:
    """``src``, or a copy of it whose unnamed nodes are named ``<op_type>_<index>`` (as ``head_nodes``
    names them): the fallbacks keep layers in fp32 by node name, and an exporter may leave names out.
    ``model``: ``src`` as loaded (``load_model``); its unnamed nodes get the names."""
    if all(n.name for n in model.graph.node):
        return src
    taken = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in taken:
                name += "_"
            n.name = name
            taken.add(name)
    workdir.mkdir(parents=True, exist_ok=True)
    dest = workdir / f"{src.stem}.named.onnx"
    onnx.save(model, str(dest))
    return dest


def _opset_for_qdq(src: Path, workdir: Path) -> Path:
    """``src``, converted to opset 13 when it is older: ONNX Runtime's quantiser writes per-channel
    Q/DQ with an axis, which older opsets refuse at load ("Unrecognized attribute: axis")."""
    model = onnx.load(str(src))
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MIN_QDQ_OPSET)
    if version >= MIN_QDQ_OPSET:
        return src
    from onnx import version_converter

    dest = workdir / f"{src.stem}.opset{MIN_QDQ_OPSET}.onnx"
    onnx.save(version_converter.convert_version(model, MIN_QDQ_OPSET), str(dest))
    return dest


def activation_type(symmetric: bool):
    """uint8 activations (U8S8) on x86, int8 (S8S8) elsewhere and where symmetric is needed (TensorRT).

    ONNX Runtime's x86 int8 kernels are written for uint8 activations × int8 weights (VPMADDUBSW,
    VNNI's VPDPBUSD); int8 activations are shifted to uint8 on every call. Measured on
    EfficientNet-Lite0 on a Xeon with AVX-512 VNNI and AMX, batch 8, 2 threads: S8S8 ~32 img/s,
    slower than ORT fp32 (~33), U8S8 ~48, same agreement (0.95 vs 0.945 on 200 views)."""
    import platform

    from onnxruntime.quantization import QuantType

    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
    return QuantType.QUInt8 if x86 and not symmetric else QuantType.QInt8


def build_int8(src: Path, dest: Path, calibration: np.ndarray, input_name: str,
               reduce_range: bool | None = None, symmetric: bool = False, exclude: list[str] | None = None,
               op_types: tuple[str, ...] | None = None, calibration_cache: Path | None = None) -> Path:
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on ``calibration``.

    On a CPU without VNNI the weights use 7 bits (ONNX Runtime's ``reduce_range``), which keeps
    AVX2's int16 accumulation from saturating: measured on EfficientNet-Lite0 on an AVX2-only
    CPU, top-1 agreement with fp32 0.81 → 0.91 on the held-out sample views."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    cached = calibration_cache is not None and Path(calibration_cache).is_file()
    reader = None if cached else type("Reader", (_Calibration, CalibrationDataReader), {})(input_name, calibration)
    src = _opset_for_qdq(src, dest.parent)
    # calibration_cache: the ranges of the first build, reused by the accuracy-aware fallback's
    # trials (the same ranges, other nodes excluded) without running the calibration again.
    cache = {"calibration_cache_path": str(calibration_cache)} if calibration_cache is not None else {}
    quantize_static(str(src), str(dest), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    nodes_to_exclude=list(exclude or []), op_types_to_quantize=list(op_types) if op_types else None,
                    reduce_range=(not cpu_has_vnni()) if reduce_range is None else reduce_range,
                    activation_type=activation_type(symmetric), weight_type=QuantType.QInt8, **cache,
                    # TensorRT accepts only symmetric (zero-point 0) quantisation.
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True} if symmetric else None)
    return dest


class Runner:
    """The interface every target's runner has: ``run(batch) -> first output`` (numpy)."""

    def __init__(self, path: Path, parameters: Mapping[str, str] | None = None):
        self.session = session(path, parameters)
        self.name = self.session.get_inputs()[0].name

        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.name: x})[0]

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(None, {self.name: x})))


def predict(runner, x: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([runner.run(x[i:i + batch]) for i in range(0, len(x), batch)])


def predict_all(runner, x: np.ndarray, batch: int = 32) -> dict[str, np.ndarray]:
    """Every output of ``runner`` on ``x`` by name (``run_all``), batch by batch."""
    parts = [runner.run_all(x[i:i + batch]) for i in range(0, len(x), batch)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


@dataclass(frozen=True)
class Accuracy:
    top1_agreement: float
    top1_accuracy: float | None
    reference_accuracy: float | None
    samples: int
    labelled: int = 0


def compare(reference, artifact, x: np.ndarray, labels: np.ndarray | None) -> Accuracy:
    """Top-1 agreement of two runners (the artifact's against the fp32 reference's) on ``x``."""
    ref = predict(reference, x).argmax(axis=1)
    got = predict(artifact, x).argmax(axis=1)
    agreement = float((ref == got).mean())
    known = labels >= 0 if labels is not None else None  # -1: no label for this sample
    if known is None or not known.any():
        return Accuracy(agreement, None, None, len(x))
    acc = float((got[known] == labels[known]).mean())
    ref_acc = float((ref[known] == labels[known]).mean())
    return Accuracy(agreement, acc, ref_acc, len(x), int(known.sum()))


def profile(runner, sample: np.ndarray, batches: list[int], seconds_per_point: float = 1.0,
            min_runs: int = 20, stop_above_ms: float | None = None) -> list[ProfilePoint]:
    """Latency percentiles and throughput of each batch size, run back to back on this node. With
    ``stop_above_ms`` (auto batching's latency budget) the larger sizes are skipped once one batch
    alone takes longer than that at its median: no larger batch can fit the budget (measured: ~250 s
    of a 380 s compile of a 416×416 detector went to batches it could never choose)."""
    points = []
    for b in batches:
        if stop_above_ms is not None and points and points[-1].p50_ms > stop_above_ms:
            break
        x = np.repeat(sample[:1], b, axis=0)
        for _ in range(3):  # warm-up
            runner.run(x)
        times = []
        start = time.perf_counter()
        while len(times) < min_runs or time.perf_counter() - start < seconds_per_point:
            t0 = time.perf_counter()
            runner.run(x)
            times.append((time.perf_counter() - t0) * 1000)
            if len(times) >= 10_000:
                break
        arr = np.array(times)
        points.append(ProfilePoint(batch=b, p50_ms=float(np.percentile(arr, 50)),
                                   p99_ms=float(np.percentile(arr, 99)),
                                   throughput=float(b * 1000 / arr.mean())))
    return points
