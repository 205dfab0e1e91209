"""Accuracy-aware int8: keep the layers int8 hurts most in higher precision, the fewest that pass.

    int8 QDQ graph + fp32 graph ──► sensitivity: each quantised layer alone, its inputs and weights
                                    quantised as the artifact quantises them, fed the fp32 activations;
                                    noise-to-signal ratio of its output on calibration images
                                    (one ONNX Runtime pass over a graph holding every layer twice)
        ranked, most sensitive first
    search on the calibration images (never the held-out ones): k = 1, 2, 4, … layers kept until the
    agreement with fp32 reaches the gate plus a margin, then bisect down to the fewest; every trial is a
    cheap edit of the int8 artifact (no new calibration), within a time budget
    the program then re-checks the winner on the held-out images (the gate), and keeps more layers if
    it misses there

How each runtime keeps a layer in higher precision (the same ONNX node names throughout):

    onnxruntime  ``quantize_static(nodes_to_exclude=closure(…))`` from the calibration ranges of the
                 first int8 build (ONNX Runtime's calibration cache): a trial costs a fraction of a
                 second, not a calibration
    openvino     NNCF's ignored scope (``openvino_target.build(exclude=…)``); the ranking and the
                 search come from the ONNX Runtime QDQ graph (one NNCF run costs a minute here)
    tensorrt     the QDQ graph built with ``nodes_to_exclude`` (strongly typed: those run in fp32), or
                 for fp16 engines layer precision constraints (``tensorrt_target.constrain_layers``)

Why not NNCF's accuracy control: it reverts one layer at a time, each judged on the validation
metric, and did not finish in 13 minutes on 2 cores; a ranking in one pass and a bisection of a
ranked list need a handful of trials.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

# The nodes that compute in int8 (float in, float out in the QDQ graph). The others that a QDQ graph
# quantises only move data (Reshape, Pad, Concat, MaxPool, …) so that int8 flows through them, or are
# fused into the layer before them (Clip, Relu): keeping one of those in fp32 is not worth a trial.
COMPUTE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Sub", "Div", "AveragePool",
               "GlobalAveragePool", "Sigmoid", "HardSigmoid", "HardSwish", "Softmax", "LeakyRelu",
               "ReduceMean", "InstanceNormalization", "LayerNormalization"}
DEFAULT_BUDGET_SECONDS = 120.0
MAX_FRACTION = 0.5  # beyond half the layers in fp32 the int8 artifact has lost its point
SEARCH_SAMPLES = 192
# Data movement a QDQ graph also runs in int8 (the Q/DQ pair around it shares one scale): a layer
# kept in fp32 keeps the ones feeding it in fp32 too, or its input would still be rounded there.
LAYOUT_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Pad", "Slice", "Concat", "Split",
              "Resize", "MaxPool", "Identity"}


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output}


def quantised_nodes(qdq: onnx.ModelProto) -> list[str]:
    """Names of the compute nodes of a QDQ graph that read an int8 tensor (a DequantizeLinear)."""
    prod = _producers(qdq.graph)
    out = []
    for n in qdq.graph.node:
        if n.op_type not in COMPUTE_OPS or not n.name:
            continue
        if any(i in prod and prod[i].op_type == "DequantizeLinear" for i in n.input):
            out.append(n.name)
    return out


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {i.name: i for i in model.graph.initializer}


def closure(fp32: onnx.ModelProto, names: list[str] | set[str]) -> list[str]:
    """``names`` and the nodes between each and the layer before it that only move or clamp data
    (Pad, Reshape, Concat, …, Clip, Relu): excluded from quantisation with it, or the layer's input
    would still be rounded to int8 there (a QDQ graph quantises data movement too, and folds a
    Clip/Relu into the Q after it). Measured on EfficientNet-Lite0: every compute layer excluded but
    not its Pads and Clips, top-1 agreement 0.90; with them, 1.00."""
    by_name = {n.name: n for n in fp32.graph.node if n.name}
    prod = _producers(fp32.graph)
    out: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in out or name not in by_name:
            continue
        out.add(name)
        for t in by_name[name].input:
            p = prod.get(t)
            if p is not None and p.name and p.op_type in LAYOUT_OPS:
                stack.append(p.name)
    return sorted(out)


def _reference_graph(fp32: onnx.ModelProto, qdq: onnx.ModelProto, names: list[str]) -> tuple[onnx.ModelProto, list[str]]:
    """The fp32 graph plus, for each of ``names``, a copy of the node fed its inputs quantised as the
    QDQ graph quantises them (from the fp32 activations), and two scalar outputs: the squared error
    of the copy's first output and the squared size of the original's. → (model, names measured)."""
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    g = model.graph
    tensors = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {i.name for i in g.initializer}
    by_name = {n.name: n for n in g.node if n.name}
    qprod = _producers(qdq.graph)
    qinits = _initializers(qdq)
    qnodes = {n.name: n for n in qdq.graph.node if n.name}
    measured = []
    for k, name in enumerate(names):
        src, qn = by_name.get(name), qnodes.get(name)
        if src is None or qn is None or len(src.input) != len(qn.input):
            continue
        inputs, extra_nodes, extra_inits, ok = [], [], [], True
        for i, t in enumerate(qn.input):
            dq = qprod.get(t)
            if dq is None or dq.op_type != "DequantizeLinear":
                inputs.append(src.input[i])
                continue
            p = f"vf_sens{k}_{i}"
            dq_inputs = []
            for j, a in enumerate(dq.input):
                if j == 0 or not a:
                    dq_inputs.append(a)
                    continue
                init = onnx.TensorProto()
                init.CopyFrom(qinits[a])
                init.name = f"{p}_{j}"
                extra_inits.append(init)
                dq_inputs.append(init.name)
            q_src = dq.input[0]
            if q_src in qprod and qprod[q_src].op_type == "QuantizeLinear":
                qnode = qprod[q_src]
                if qnode.input[0] not in tensors:
                    ok = False
                    break
                q_inputs = [qnode.input[0]] + [dq_inputs[j] if j < len(dq_inputs) else "" for j in (1, 2)][:len(qnode.input) - 1]
                extra_nodes.append(helper.make_node("QuantizeLinear", q_inputs, [f"{p}_q"], name=f"{p}_Q",
                                                    **{a.name: helper.get_attribute_value(a) for a in qnode.attribute}))
                dq_inputs[0] = f"{p}_q"
            elif q_src in qinits:
                init = onnx.TensorProto()
                init.CopyFrom(qinits[q_src])
                init.name = f"{p}_w"
                extra_inits.append(init)
                dq_inputs[0] = init.name
            else:
                ok = False
                break
            extra_nodes.append(helper.make_node("DequantizeLinear", dq_inputs, [f"{p}_dq"], name=f"{p}_DQ",
                                                **{a.name: helper.get_attribute_value(a) for a in dq.attribute}))
            inputs.append(f"{p}_dq")
        if not ok:
            continue
        copy = helper.make_node(src.op_type, inputs, [f"vf_sens{k}_out{j}" for j in range(len(src.output))],
                                name=f"vf_sens{k}", domain=src.domain or None)
        copy.attribute.extend(src.attribute)
        err, size = f"vf_err{k}", f"vf_size{k}"
        extra_nodes += [copy,
                        helper.make_node("Sub", [copy.output[0], src.output[0]], [f"vf_diff{k}"], name=f"vf_sub{k}"),
                        helper.make_node("ReduceSumSquare", [f"vf_diff{k}"], [err], keepdims=0, name=f"vf_e{k}"),
                        helper.make_node("ReduceSumSquare", [src.output[0]], [size], keepdims=0, name=f"vf_s{k}")]
        g.node.extend(extra_nodes)
        g.initializer.extend(extra_inits)
        g.output.extend([helper.make_tensor_value_info(err, onnx.TensorProto.FLOAT, []),
                         helper.make_tensor_value_info(size, onnx.TensorProto.FLOAT, [])])
        measured.append(name)
    return model, measured


def sensitivity(fp32: onnx.ModelProto, qdq: onnx.ModelProto, samples: np.ndarray, input_name: str,
                batch: int = 8) -> list[tuple[str, float]]:
    """Every quantised layer of ``qdq`` with its noise-to-signal ratio (squared error of its output
    over the output's squared size, summed over ``samples``) when it alone is quantised: most
    sensitive first. One ONNX Runtime pass over ``_reference_graph``."""
    import onnxruntime as ort

    from .onnxrt import MIN_QDQ_OPSET

    version = next((o.version for o in fp32.opset_import if o.domain in ("", "ai.onnx")), MIN_QDQ_OPSET)
    if version < MIN_QDQ_OPSET:
        from onnx import version_converter

        fp32 = version_converter.convert_version(fp32, MIN_QDQ_OPSET)
    model, names = _reference_graph(fp32, qdq, quantised_nodes(qdq))
    if not names:
        return []
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outs = [f"vf_err{i}" for i in range(len(model.graph.output)) if f"vf_err{i}" in
            {o.name for o in model.graph.output}]
    sizes = [o.replace("err", "size") for o in outs]
    err = np.zeros(len(outs))
    size = np.zeros(len(outs))
    for i in range(0, len(samples), batch):
        res = sess.run(outs + sizes, {input_name: samples[i:i + batch]})
        err += np.array(res[:len(outs)], dtype=np.float64)
        size += np.array(res[len(outs):], dtype=np.float64)
    nsr = err / np.maximum(size, 1e-30)
    return sorted(zip(names, (float(v) for v in nsr)), key=lambda t: -t[1])


@dataclass
class Trial:
    layers: int
    score: float
    seconds: float


@dataclass
class Search:
    """The outcome: ``kept`` (the fewest of the ranked layers that reached ``target`` on the search
    images, empty when none did within the budget), every trial, and why it stopped."""

    target: float
    kept: list[str] = field(default_factory=list)
    score: float | None = None
    trials: list[Trial] = field(default_factory=list)
    stopped: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.kept) and self.score is not None and self.score >= self.target


def search(ranked: list[str], score: Callable[[list[str]], float], target: float, budget_s: float,
           max_layers: int | None = None, start: int = 1, clock: Callable[[], float] = time.monotonic) -> Search:
    """The fewest of ``ranked`` (most sensitive first) whose keeping in fp32 makes ``score(kept)``
    reach ``target``: k = start, 2·start, 4·start, … until one passes, then bisection between the
    last that failed and the first that passed. Stops at ``budget_s`` with the best passing k found
    (or none). ``score`` builds and measures one trial."""
    t0 = clock()
    limit = min(len(ranked), max_layers if max_layers is not None else len(ranked))
    out = Search(target=target)
    results: dict[int, float] = {}

    def trial(k: int) -> float:
        t = clock()
        s = score(ranked[:k])
        results[k] = s
        out.trials.append(Trial(k, round(s, 6), round(clock() - t, 2)))
        return s

    lo, hi = start - 1, None  # lo: largest k known to fail; hi: smallest known to pass
    k = max(1, start)
    while hi is None:
        if k > limit:
            if lo < limit:
                k = limit
            else:
                out.stopped = f"{limit} layers (the most allowed) still below {target:.4f}"
                break
        if clock() - t0 > budget_s:
            out.stopped = f"budget of {budget_s:g} s spent before any passed"
            break
        if trial(k) >= target:
            hi = k
        else:
            lo = k
            k = k * 2 if k < limit else limit + 1
    while hi is not None and hi - lo > 1:
        if clock() - t0 > budget_s:
            out.stopped = f"budget of {budget_s:g} s spent while narrowing {lo + 1}…{hi}"
            break
        mid = (lo + hi) // 2
        if trial(mid) >= target:
            hi = mid
        else:
            lo = mid
    if hi is not None:
        out.kept, out.score = ranked[:hi], results[hi]
        out.stopped = out.stopped or f"{hi} layers reach {target:.4f}, {hi - 1} do not"
    out.seconds = round(clock() - t0, 2)
    return out


def top1_agreement(reference_top1: np.ndarray, outputs: np.ndarray) -> float:
    return float((np.asarray(outputs).argmax(axis=1) == reference_top1).mean())


def search_target(least: float) -> float:
    """What the search asks of the calibration images: the gate plus a quarter of the room above it,
    so that the held-out check (other photos) passes without another round."""
    return min(1.0, least + (1.0 - least) / 4)


def load(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path))
