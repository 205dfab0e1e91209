"""Accuracy-aware int8: keep the layers int8 hurts most in higher precision, the fewest that pass.

    int8 QDQ graph (ONNX Runtime, calibrated once: its ranges cached) ──► rank: each quantised layer
                                    alone in int8, every other in fp32, rebuilt from the cached ranges;
                                    the divergence of the model's output from fp32's on calibration
                                    images (``rank``)
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

# The nodes that compute in int8 (float in, float out in the QDQ graph). The others that a QDQ graph
# quantises only move data (Reshape, Pad, Concat, MaxPool, …) so that int8 flows through them, or are
# fused into the layer before them (Clip, Relu): keeping one of those in fp32 is not worth a trial.
COMPUTE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Sub", "Div", "AveragePool",
               "GlobalAveragePool", "Sigmoid", "HardSigmoid", "HardSwish", "Softmax", "LeakyRelu",
               "ReduceMean", "InstanceNormalization", "LayerNormalization"}
DEFAULT_BUDGET_SECONDS = 120.0
MAX_FRACTION = 0.5  # beyond half the layers in fp32 the int8 artifact has lost its point
SEARCH_SAMPLES = 192  # calibration images each trial of the search is judged on
RANK_SAMPLES = 64  # calibration images each layer's rank is measured on
RANK_SHARE = 0.5  # of the budget, the most the ranking may take (the search gets the rest)
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


def divergence(reference: np.ndarray, outputs: np.ndarray) -> float:
    """How far ``outputs`` (logits [N, classes]) moved from ``reference``: the mean KL divergence of
    their softmax from the reference's. Continuous where top-1 agreement is a step: a layer that
    moves every image's scores a little ranks above one that flips nothing yet."""
    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64).reshape(len(z), -1)
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    lp, lq = log_softmax(reference), log_softmax(outputs)
    return float((np.exp(lp) * (lp - lq)).sum(axis=1).mean())


def rank(layers: list[str], alone: Callable[[str], float], budget_s: float,
         clock: Callable[[], float] = time.monotonic) -> tuple[list[tuple[str, float]], str]:
    """``layers`` most sensitive first, by ``alone(layer)``: the model's output divergence when that
    layer alone is quantised and every other runs in fp32 (``divergence``). Measured at the output,
    not at the layer: on EfficientNet-Lite0 each layer's own quantisation error (noise-to-signal of
    its output) ranked the layers so that 32 of 60 kept in fp32 still agreed on only 0.958 of the
    held-out views; this ranking reached 0.9725 with the same 32 and 0.9625 with 8 (0.9525 before).
    Layers not measured when the budget runs out follow in graph order. → (ranked, note)."""
    t0 = clock()
    scored: list[tuple[str, float]] = []
    for name in layers:
        if clock() - t0 > budget_s:
            break
        scored.append((name, alone(name)))
    scored.sort(key=lambda t: -t[1])
    rest = [(n, float("nan")) for n in layers[len(scored):]]
    note = (f"{len(scored)} layers ranked in {clock() - t0:.1f} s" if not rest else
            f"budget of {budget_s:g} s ranked {len(scored)} of {len(layers)} layers; the rest follow in graph order")
    return scored + rest, note


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


@dataclass
class Outcome:
    """What the accuracy-aware fallback found: ``kept`` (compute layers kept in fp32, most sensitive
    first), ``exclude`` (their closure: the ONNX nodes the artifact leaves unquantised), how many
    quantised layers there were, the ranking's note and the search."""

    kept: list[str]
    exclude: list[str]
    layers: int
    ranking: str
    search: Search
    seconds: float
    ranked: list[str] = field(default_factory=list)  # every quantised layer, most sensitive first
    limit: int = 0  # the most layers that may be kept

    def keep(self, fp32: onnx.ModelProto, k: int) -> list[str]:
        """The ONNX nodes to leave unquantised for the ``k`` most sensitive layers."""
        return closure(fp32, self.ranked[:k]) if k else []

    @property
    def passed(self) -> bool:
        return self.search.passed

    def as_result(self) -> dict:
        """The result JSON's ``fallback``: what was tried and why it stopped."""
        return {"fp32Layers": len(self.kept), "int8Layers": self.layers - len(self.kept),
                "searchAgreement": self.search.score, "target": round(self.search.target, 6),
                "trials": [{"fp32Layers": t.layers, "agreement": t.score, "seconds": t.seconds}
                           for t in self.search.trials],
                "ranking": self.ranking, "stopped": self.search.stopped, "seconds": self.seconds}


def accuracy_aware(fp32: onnx.ModelProto, qdq: onnx.ModelProto, build: Callable[[list[str]], object],
                   images: np.ndarray, reference: np.ndarray, least: float, budget_s: float = DEFAULT_BUDGET_SECONDS,
                   max_fraction: float = MAX_FRACTION, clock: Callable[[], float] = time.monotonic) -> Outcome:
    """The fewest layers of the int8 graph ``qdq`` to keep in fp32 for top-1 agreement with
    ``reference`` (the fp32 logits of ``images``, calibration images) to reach ``search_target(least)``.
    ``build(exclude)`` → a runner of the int8 graph with those ONNX nodes unquantised (a rebuild
    from the cached calibration ranges). Within ``budget_s``: the ranking takes at most
    ``RANK_SHARE`` of it, the search the rest; at most ``max_fraction`` of the layers are kept."""
    from .onnxrt import predict

    t0 = clock()
    layers = quantised_nodes(qdq)
    everything = closure(fp32, layers)
    rank_x, rank_ref = images[:RANK_SAMPLES], reference[:RANK_SAMPLES]

    def alone(name: str) -> float:
        keep = set(closure(fp32, [name]))
        return divergence(rank_ref, predict(build([n for n in everything if n not in keep]), rank_x))

    ranked, note = rank(layers, alone, budget_s * RANK_SHARE, clock)
    names = [n for n, _ in ranked]
    ref_top1 = np.asarray(reference).argmax(axis=1)

    def score(kept: list[str]) -> float:
        return top1_agreement(ref_top1, predict(build(closure(fp32, kept)), images))

    limit = max(1, int(max_fraction * len(layers))) if layers else 0
    found = search(names, score, search_target(least), max(0.0, budget_s - (clock() - t0)), max_layers=limit,
                   clock=clock)
    return Outcome(kept=found.kept, exclude=closure(fp32, found.kept) if found.kept else [], layers=len(layers),
                   ranking=note, search=found, seconds=round(clock() - t0, 2), ranked=names, limit=limit)

