"""The drift monitor's parts without a Triton: reference files, the window, the rate limit, parsing
mirrored KServe v2 requests, the tests' decisions on synthetic shifts, and the service over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import json

import numpy as np
import pytest

from visionfleet_contract import reference
from visionfleet_monitor.detect import Detector, InputTest
from visionfleet_monitor.service import BadRequest, Monitor, parse_infer
from visionfleet_monitor.window import TokenBucket, Window


def logits(rng, n, classes=10, shift=0.0):
    x = rng.normal(0, 1, (n, classes)).astype(np.float32)
    x[:, 0] += 2.0 + shift  # class 0 is the usual winner; a shift changes how often
    return x


def images(rng, n, brightness=0.0):
    return (rng.normal(0, 1, (n, 3, 16, 16)) + brightness).astype(np.float32)


@pytest.fixture
def ref(tmp_path):
    rng = np.random.default_rng(0)
    r = reference.build(images(rng, 400), logits(rng, 400))
    return reference.write(r, tmp_path)


def test_reference_round_trip_and_softmax(ref):
    r = reference.load(ref)
    assert r.probs.shape == (400, 10) and r.reduced.shape == (400, reference.REDUCED_DIMS)
    assert np.allclose(r.probs.sum(axis=1), 1, atol=1e-5) and (r.probs > 0).all()
    # Probabilities are kept as they are; the reduction is the same for the same seed.
    assert np.array_equal(reference.softmax(r.probs), r.probs)
    x = images(np.random.default_rng(1), 3)
    assert np.array_equal(reference.reduce_inputs(x, r.seed), reference.reduce_inputs(x, r.seed))
    assert not np.allclose(reference.reduce_inputs(x, 1), reference.reduce_inputs(x, 2))


def test_reference_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(reference.ReferenceError, match="compile Job writes drift-reference.npz"):
        reference.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(reference.ReferenceError, match="not a drift reference"):
        reference.load(tmp_path / "bad.npz")
    with pytest.raises(reference.ReferenceError, match="one output per calibration sample"):
        reference.build(np.zeros((3, 4)), np.zeros((2, 4)))


def test_window_keeps_the_newest_rows_in_order():
    w = Window(5, 2)
    w.add(np.arange(6).reshape(3, 2))
    assert w.fill == 0.6 and not w.full and w.values()[:, 0].tolist() == [0, 2, 4]
    w.add(np.arange(6, 14).reshape(4, 2))
    assert w.full and w.total == 7 and w.values()[:, 0].tolist() == [4, 6, 8, 10, 12]
    w.add(np.arange(100, 120).reshape(10, 2))  # more than the window at once
    assert w.values()[:, 0].tolist() == [110, 112, 114, 116, 118] and w.count == 5
    assert w._data.nbytes == 5 * 2 * 4  # bounded whatever was added


def test_token_bucket_bounds_samples_per_second():
    now = [0.0]
    b = TokenBucket(10, clock=lambda: now[0])
    assert b.take(25) == 10 and b.take(1) == 0
    now[0] = 0.5
    assert b.take(25) == 5
    now[0] = 100.0
    assert b.take(25) == 10  # a quiet spell does not bank more than a second's worth


def test_parse_infer_json_and_binary():
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    body = json.dumps({"inputs": [{"name": "images", "shape": [2, 6], "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()
    assert parse_infer(body, None, "images")[0] == "images" and np.array_equal(parse_infer(body, None, "images")[1], x)
    # Binary extension, the wanted input second: its bytes come after the first input's.
    first = np.ones(3, dtype=np.int64)
    header = json.dumps({"inputs": [
        {"name": "ids", "shape": [3], "datatype": "INT64", "parameters": {"binary_data_size": first.nbytes}},
        {"name": "images", "shape": [2, 6], "datatype": "FP16", "parameters": {"binary_data_size": x.astype(np.float16).nbytes}},
    ]}).encode()
    name, got = parse_infer(header + first.tobytes() + x.astype(np.float16).tobytes(), str(len(header)), "images")
    assert name == "images" and got.dtype == np.float32 and np.array_equal(got, x)
    # No name asked for: the first input, by its own name (the monitor asks Triton with it).
    assert parse_infer(header + first.tobytes() + x.astype(np.float16).tobytes(), str(len(header)), None)[0] == "ids"
    with pytest.raises(BadRequest, match="no input named 'other'"):
        parse_infer(body, None, "other")
    with pytest.raises(BadRequest, match="do not make shape"):
        parse_infer(json.dumps({"inputs": [{"name": "a", "shape": [5], "datatype": "FP32", "data": [1, 2]}]}).encode(),
                    None, None)
    with pytest.raises(BadRequest, match="datatype 'BYTES'"):
        parse_infer(json.dumps({"inputs": [{"name": "a", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}).encode(),
                    None, None)
    with pytest.raises(BadRequest, match="not a KServe v2"):
        parse_infer(b"{", None, None)


@pytest.mark.parametrize("kind", ["bbsd-ks", "mmd"])
def test_detectors_pass_a_clean_window_and_flag_a_shifted_one(ref, kind):
    r = reference.load(ref)
    det = Detector(r, kind, p_value=0.01)
    rng = np.random.default_rng(7)
    clean = det.features(images(rng, 300), logits(rng, 300))
    shifted = det.features(images(rng, 300, brightness=0.5), logits(rng, 300, shift=1.5))
    ok, bad = det.test(clean), det.test(shifted)
    assert not ok.drift and ok.p_value >= 0.01, ok
    assert bad.drift and bad.p_value < 0.01 and bad.distance > ok.distance, bad
    assert bad.samples == 300 and bad.seconds > 0


def test_bbsd_p_value_is_bonferroni_adjusted(ref):
    r = reference.load(ref)
    det = Detector(r, "bbsd-ks", p_value=0.05)
    rng = np.random.default_rng(3)
    res = det.test(det.features(None, logits(rng, 200)))
    raw = det._cd.predict(det.features(None, logits(np.random.default_rng(3), 200)), return_p_val=True)["data"]["p_val"]
    assert res.p_value == pytest.approx(min(1.0, raw.min() * 10))
    with pytest.raises(ValueError, match="7 outputs per sample, the reference has 10"):
        det.features(None, np.zeros((2, 7)))


def args(ref, **kw):
    base = dict(reference=str(ref), detector="mmd", window=50, p_value=0.01, model="m", input="images", output=None,
                triton="http://127.0.0.1:1", listen="127.0.0.1:0", interval=0.05, max_rate=1000.0, queue=4, workers=1)
    return argparse.Namespace(**{**base, **kw})


def test_service_fills_its_window_from_mirrored_requests_and_exports_metrics(ref):
    from aiohttp.test_utils import TestClient, TestServer

    async def run():
        mon = Monitor(args(ref))
        async with TestClient(TestServer(mon.app())) as c:
            metrics = await (await c.get("/metrics")).text()
            assert "visionfleet_drift_window_fill 0.0" in metrics and "visionfleet_drift_p_value" not in metrics
            rng = np.random.default_rng(0)
            for _ in range(3):
                x = images(rng, 20)
                body = {"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
                r = await c.post("/v2/models/m/infer", json=body)
                assert (await r.json())["accepted"] == 20
            r = await c.post("/v2/models/m/infer", data=b"nope")
            assert r.status == 400 and "not a KServe v2" in (await r.json())["error"]
            task = asyncio.create_task(mon.scheduler())
            for _ in range(200):
                if mon.last:
                    break
                await asyncio.sleep(0.05)
            task.cancel()
            metrics = await (await c.get("/metrics")).text()
            status = await (await c.get("/v1/status")).json()
        return metrics, status

    metrics, status = asyncio.run(run())
    assert "visionfleet_drift_window_fill 1.0" in metrics and "visionfleet_drift_samples_total 60.0" in metrics
    assert 'visionfleet_drift_samples_dropped_total{reason="bad_request"} 1.0' in metrics
    p = float(next(l.split()[1] for l in metrics.splitlines() if l.startswith("visionfleet_drift_p_value")))
    assert p >= 0.01 and "visionfleet_drift_detected 0.0" in metrics
    assert status["held"] == 50 and status["samplesTotal"] == 60 and status["lastTest"]["drift"] is False


def test_service_drops_beyond_its_rate(ref):
    from aiohttp.test_utils import TestClient, TestServer

    async def run():
        mon = Monitor(args(ref, max_rate=5.0))
        async with TestClient(TestServer(mon.app())) as c:
            x = images(np.random.default_rng(0), 8)
            body = {"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
            accepted = (await (await c.post("/v2/models/m/infer", json=body)).json())["accepted"]
            return accepted, await (await c.get("/metrics")).text()

    accepted, metrics = asyncio.run(run())
    assert accepted == 5 and 'visionfleet_drift_samples_dropped_total{reason="rate_limited"} 3.0' in metrics


def test_command_line_refuses_bad_settings(ref, tmp_path, capsys):
    from visionfleet_monitor.service import main

    assert main(["--reference", str(ref), "--model", "m", "--window", "5"]) == 2
    assert "--window 5: must be ≥ 20" in capsys.readouterr().err
    assert main(["--reference", str(ref), "--model", "m", "--p-value", "1.5"]) == 2
    assert main(["--reference", str(tmp_path / "none.npz"), "--model", "m", "--listen", "127.0.0.1:0"]) == 2
    assert "no drift reference" in capsys.readouterr().err


# -- per task: a detector's reference summarises every output -------------------------------------------

DETECTION_META = {"task": "detection", "classes": 3, "imageHW": [16, 16],
                  "params": {"layout": "boxes", "boxes": "boxes", "scores": "scores", "classes": "labels",
                             "count": "num", "scoreThreshold": 0.25, "iouThreshold": 0.45, "maxDetections": 10,
                             "boxFormat": "xyxy"}}


def detector_outputs(rng, n, busy=0.0):
    """A boxes-layout detector's outputs: ``busy`` shifts how many confident detections an image has."""
    d = 10
    xy = rng.uniform(0, 12, (n, d, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 4, (n, d, 2))], axis=2).astype(np.float32)
    scores = np.sort(rng.beta(2 + 4 * busy, 5, (n, d)), axis=1)[:, ::-1].astype(np.float32)
    return {"boxes": boxes, "scores": scores, "labels": rng.integers(0, 3, (n, d)).astype(np.float32),
            "num": np.full(n, d, dtype=np.int32)}


@pytest.fixture
def det_ref(tmp_path):
    rng = np.random.default_rng(0)
    r = reference.build(images(rng, 400), detector_outputs(rng, 400), meta=DETECTION_META)
    return reference.write(r, tmp_path)


def test_bbsd_ks_on_a_detector_tests_the_summaries_of_every_output(det_ref):
    r = reference.load(det_ref)
    assert r.task.value == "detection" and r.probs.shape == (400, 6 + 3)
    det = Detector(r, "bbsd-ks", p_value=0.01)
    assert det.needs_all_outputs and det.dims == 9
    rng = np.random.default_rng(5)
    ok = det.test(det.features(None, detector_outputs(rng, 300)))
    bad = det.test(det.features(None, detector_outputs(rng, 300, busy=1.0)))
    assert not ok.drift and bad.drift and bad.p_value < 0.01 <= ok.p_value
    with pytest.raises(ValueError, match="every output by name"):
        det.features(None, np.zeros((2, 9)))
    # A classifier's reference still reads one output.
    assert not Detector(reference.build(images(rng, 40), logits(rng, 40)), "bbsd-ks").needs_all_outputs


def haze(x, amount):
    """Blend towards a bright grey: what fog or a dirty lens does to the pixels."""
    return ((1 - amount) * x + amount * 2.0).astype(np.float32)


def test_input_test_passes_a_clean_window_and_flags_haze(ref):
    r = reference.load(ref)
    t = InputTest(r, p_value=0.01)
    rng = np.random.default_rng(11)
    ok = t.test(t.features(images(rng, 300)))
    bad = t.test(t.features(haze(images(rng, 300), 0.3)))
    assert not ok.drift and ok.p_value >= 0.01 and t.dims == reference.REDUCED_DIMS
    assert bad.drift and bad.p_value < 0.01 and bad.distance > ok.distance
    raw = t._cd.predict(t.features(haze(images(np.random.default_rng(2), 300), 0.3)), return_p_val=True)["data"]["p_val"]
    assert t.test(t.features(haze(images(np.random.default_rng(2), 300), 0.3))).p_value == \
        pytest.approx(min(1.0, raw.min() * reference.REDUCED_DIMS))


def test_service_exports_the_input_test_next_to_mmd(ref):
    from aiohttp.test_utils import TestClient, TestServer

    async def run():
        mon = Monitor(args(ref))
        assert mon.input_window is mon.window  # mmd already holds the reduced inputs
        async with TestClient(TestServer(mon.app())) as c:
            x = haze(images(np.random.default_rng(0), 60), 0.5)
            body = {"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
            await c.post("/v2/models/m/infer", json=body)
            task = asyncio.create_task(mon.scheduler())
            for _ in range(200):
                if mon.last and mon.last_input:
                    break
                await asyncio.sleep(0.05)
            task.cancel()
            return await (await c.get("/metrics")).text(), await (await c.get("/v1/status")).json()

    metrics, status = asyncio.run(run())
    p = float(next(l.split()[1] for l in metrics.splitlines() if l.startswith("visionfleet_drift_input_p_value")))
    assert p < 0.01 and "visionfleet_drift_input_detected 1.0" in metrics
    assert status["input"]["lastTest"]["drift"] is True and status["input"]["test"] == "input-ks"


class FakeResult:
    def __init__(self, outputs):
        self.outputs = outputs

    def get_response(self):
        return {"outputs": [{"name": n} for n in self.outputs]}

    def as_numpy(self, name):
        return self.outputs[name]


class FakeTriton:
    """Plays the pod's Triton for the output workers: answers a detector's outputs, records what was asked."""

    def __init__(self, busy=0.0):
        self.asked, self.rng, self.busy = [], np.random.default_rng(9), busy

    async def infer(self, model, inputs, outputs=None):
        self.asked.append(outputs)
        n = inputs[0]._shape[0] if hasattr(inputs[0], "_shape") else inputs[0].shape()[0]
        return FakeResult(detector_outputs(self.rng, n, self.busy))


def test_service_asks_triton_for_every_output_of_a_detector_and_tests_inputs_without_it(det_ref):
    pytest.importorskip("tritonclient.http.aio")
    from aiohttp.test_utils import TestClient, TestServer

    async def run():
        mon = Monitor(args(det_ref, detector="bbsd-ks", window=40, queue=100))
        assert mon.input_window is not mon.window and mon.window.dims == 9
        mon.triton = FakeTriton()
        async with TestClient(TestServer(mon.app())) as c:
            rng = np.random.default_rng(0)
            for _ in range(5):
                x = images(rng, 10)
                body = {"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32",
                                    "data": x.ravel().tolist()}]}
                assert (await (await c.post("/v2/models/m/infer", json=body)).json())["accepted"] == 10
            # The input window fills as the samples arrive, before any output came back.
            assert mon.input_window.count == 40 and mon.window.count == 0
            tasks = [asyncio.create_task(mon.outputs_worker()), asyncio.create_task(mon.scheduler())]
            for _ in range(200):
                if mon.last and mon.last_input:
                    break
                await asyncio.sleep(0.05)
            for t in tasks:
                t.cancel()
            return mon, await (await c.get("/metrics")).text()

    mon, metrics = asyncio.run(run())
    assert mon.triton.asked and all(o is None for o in mon.triton.asked)  # every output, not --output
    assert mon.window.total == 50 and mon.last["drift"] is False and mon.last_input["drift"] is False
    assert "visionfleet_drift_p_value" in metrics and "visionfleet_drift_input_p_value" in metrics
    assert 'visionfleet_drift_samples_dropped_total{reason="inference_failed"}' not in metrics or \
        'visionfleet_drift_samples_dropped_total{reason="inference_failed"} 0.0' in metrics
