"""The accuracy-aware int8 fallback's parts on tiny graphs: the search over a ranked list, the layers
a kept one takes along, the ranking by output divergence, the whole fallback, and the CPU features
it is chosen by."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from visionfleet_compile import cpu, fallback, onnxrt

C, H, W = 3, 8, 8


def chain(path, seed=0, noisy=1):
    """Conv -> Clip -> Pad -> Conv -> Add: the second conv's weights scaled so that int8 hurts it most
    when ``noisy`` is large (a wide weight range per channel)."""
    rng = np.random.default_rng(seed)
    w2 = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    w2[:, 0] *= noisy
    inits = [numpy_helper.from_array(rng.standard_normal((8, C, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
             numpy_helper.from_array(rng.standard_normal((1, 4, 1, 1)).astype(np.float32), "bias")]
    nodes = [helper.make_node("Conv", ["images", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="clip1"),
             helper.make_node("Pad", ["r1", "pads"], ["p1"], name="pad2"),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Add", ["c2", "bias"], ["logits4d"], name="add"),
             helper.make_node("Flatten", ["logits4d"], ["logits"], name="flat")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", C, H, W])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4 * H * W])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(("passing_from", "budget", "want", "trials"), [
    pytest.param(1, 100, 1, [1], id="first-passes"),
    pytest.param(5, 100, 5, [1, 2, 4, 8, 6, 5], id="doubles-then-bisects"),
    pytest.param(8, 100, 8, [1, 2, 4, 8, 6, 7], id="exact-power"),
    pytest.param(None, 100, 0, [1, 2, 4, 8, 10], id="none-pass-up-to-the-limit"),
])
def test_search_finds_the_fewest_layers_that_pass(passing_from, budget, want, trials):
    ranked = [f"n{i}" for i in range(20)]
    score = (lambda kept: 1.0 if passing_from is not None and len(kept) >= passing_from else 0.5)
    s = fallback.search(ranked, score, target=0.99, budget_s=budget, max_layers=10)
    assert [t.layers for t in s.trials] == trials
    assert len(s.kept) == want and s.passed == bool(want) and s.kept == ranked[:want]


def test_search_stops_at_its_budget_with_what_it_has():
    now = [0.0]

    def clock():
        return now[0]

    def score(kept):
        now[0] += 10  # each trial takes 10 s
        return 1.0 if len(kept) >= 3 else 0.0

    s = fallback.search([f"n{i}" for i in range(20)], score, 0.99, budget_s=25, clock=clock)
    # 1, 2 fail; 4 passes at t=30 > 25: no narrowing to 3 (the budget is spent), 4 is the answer
    assert [t.layers for t in s.trials] == [1, 2, 4] and len(s.kept) == 4 and "budget" in s.stopped


def test_a_kept_layer_takes_the_data_movement_before_it_along(tmp_path):
    model = onnx.load(chain(tmp_path / "m.onnx"))
    assert fallback.closure(model, ["conv2"]) == ["conv2", "pad2"]
    assert fallback.closure(model, ["add"]) == ["add"]


def test_search_target_leaves_room_above_the_gate():
    assert fallback.search_target(0.99) == pytest.approx(0.9925)
    assert fallback.search_target(1.0) == 1.0


def test_divergence_is_zero_for_the_same_outputs_and_grows_with_the_change():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((16, 10))
    noise = rng.standard_normal((16, 10))
    assert fallback.divergence(ref, ref) == pytest.approx(0.0, abs=1e-12)
    assert 0 < fallback.divergence(ref, ref + 0.1 * noise) < fallback.divergence(ref, ref + noise)


def test_rank_puts_the_largest_divergence_first_and_stops_at_its_budget():
    now = [0.0]

    def alone(name):
        now[0] += 10
        return {"a": 0.1, "b": 0.5, "c": 0.3, "d": 0.9}[name]

    ranked, note = fallback.rank(["a", "b", "c", "d"], alone, budget_s=100, clock=lambda: now[0])
    assert [n for n, _ in ranked] == ["d", "b", "c", "a"] and "4 layers ranked" in note
    now[0] = 0.0
    ranked, note = fallback.rank(["a", "b", "c", "d"], alone, budget_s=15, clock=lambda: now[0])
    # a and b measured (the budget is checked before each), c and d follow unranked in graph order
    assert [n for n, _ in ranked] == ["b", "a", "c", "d"] and "2 of 4" in note


class FakeInt8:
    """Logits = images · M, plus noise from each quantised layer not kept in fp32 (conv2's the worst)."""

    NOISE = {"conv1": 0.02, "conv2": 3.0, "add": 0.05}

    def __init__(self, excluded):
        rng = np.random.default_rng(7)
        self.m = rng.standard_normal((C * H * W, 10)).astype(np.float32)
        self.n = rng.standard_normal((C * H * W, 10)).astype(np.float32)
        self.scale = sum(v for k, v in self.NOISE.items() if k not in set(excluded))

    def run(self, x):
        flat = x.reshape(len(x), -1)
        return flat @ self.m + self.scale * (flat @ self.n)


def test_accuracy_aware_keeps_the_layer_that_moves_the_output_most(tmp_path):
    src = chain(tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((64, C, H, W)).astype(np.float32)
    q = onnxrt.build_int8(src, tmp_path / "q.onnx", x, "images", reduce_range=False)
    assert fallback.quantised_nodes(onnx.load(q)) == ["conv1", "conv2", "add"]
    reference = FakeInt8(["conv1", "conv2", "add"]).run(x)
    built = []

    def build(exclude):
        built.append(sorted(exclude))
        return FakeInt8(exclude)

    out = fallback.accuracy_aware(onnx.load(src), onnx.load(q), build, x, reference, least=0.99, max_fraction=1.0)
    assert out.passed and out.kept == ["conv2"] and out.exclude == ["conv2", "pad2"]  # with the Pad before it
    assert out.layers == 3 and out.as_result()["fp32Layers"] == 1 and out.as_result()["int8Layers"] == 2
    assert [t["fp32Layers"] for t in out.as_result()["trials"]] == [1]
    # ranking: each layer alone in int8, every other (with its closure) excluded
    assert built[:3] == [["add", "conv2", "pad2"], ["add", "conv1"], ["conv1", "conv2", "pad2"]]
    # at most a third of the layers: conv2 alone still fits; none at all passes → no mix
    assert fallback.accuracy_aware(onnx.load(src), onnx.load(q), build, x, reference, least=0.99,
                                   max_fraction=0.34).kept == ["conv2"]
    FakeInt8.NOISE = {"conv1": 3.0, "conv2": 3.0, "add": 3.0}
    try:
        none = fallback.accuracy_aware(onnx.load(src), onnx.load(q), build, x, reference, least=0.99, max_fraction=0.34)
    finally:
        FakeInt8.NOISE = {"conv1": 0.02, "conv2": 3.0, "add": 0.05}
    assert not none.passed and none.exclude == [] and "most allowed" in none.search.stopped


def test_excluding_a_layer_with_the_calibration_cache_skips_the_calibration(tmp_path):
    src = chain(tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((16, C, H, W)).astype(np.float32)
    cache = tmp_path / "ranges.json"
    onnxrt.build_int8(src, tmp_path / "q.onnx", x, "images", calibration_cache=cache)
    assert cache.is_file()
    # no calibration images at all: the ranges come from the cache
    out = onnxrt.build_int8(src, tmp_path / "q2.onnx", x[:0], "images", exclude=fallback.closure(onnx.load(src), ["conv2"]),
                            calibration_cache=cache)
    model = onnx.load(out)
    prod = {o: n for n in model.graph.node for o in n.output}
    conv2 = next(n for n in model.graph.node if n.name == "conv2")
    assert not any(prod.get(i) is not None and prod[i].op_type == "DequantizeLinear" for i in conv2.input)
    assert onnxrt.Runner(out).run(x).shape == (16, 4 * H * W)


@pytest.mark.parametrize(("flags", "want"), [
    ("fma avx2", {"vnni": False, "avx512": False, "bf16": False, "fp16": False, "amx": False, "avx2": True}),
    ("avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16",
     {"vnni": True, "avx512": True, "bf16": True, "fp16": False, "amx": True, "avx2": True}),
    ("avx2 avx_vnni", {"vnni": True, "avx512": False, "bf16": False, "fp16": False, "amx": False, "avx2": True}),
])
def test_cpu_features_from_cpuinfo_flags(flags, want):
    assert cpu.features_of(cpu.parse_flags(f"processor : 0\nflags\t\t: {flags}\n")) == want


def test_onnxruntime_int8_uses_uint8_activations_on_x86_and_int8_for_tensorrt(monkeypatch):
    import platform

    from onnxruntime.quantization import QuantType

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert onnxrt.activation_type(symmetric=False) == QuantType.QUInt8
    assert onnxrt.activation_type(symmetric=True) == QuantType.QInt8
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert onnxrt.activation_type(symmetric=False) == QuantType.QInt8
