"""The compile program on a real detector and a real segmenter: ddddocr's YOLOX character detector and
rapidocr's PP-OCRv4 DBNet text segmenter (ONNX files from PyPI wheels), on real photos with text drawn
on them (zoo.ensure_sample_detector / ensure_sample_segmenter: the labels are what was drawn). No
cluster needed; the compiles are shared by module fixtures (a few minutes on a small CPU)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from visionfleet_compile import program, zoo
from visionfleet_contract import EXIT_GATE, REFERENCE_FILE, reference, tasks

# The profile is not what these tests check (test_compile_efficientnet does): two batch sizes, short
# points. A full profile of the 416×416 detector (batches 1–32, 20 runs each) takes minutes here.
PROFILE = {"VISIONFLEET_PROFILE_SECONDS": "0.1"}
BATCHES = (1, 2)
CALIBRATION = 24  # the segmenter's calibration images (the drift reference needs ≥ 20)


@pytest.fixture(scope="module")
def detector():
    return zoo.ensure_sample_detector()


@pytest.fixture(scope="module")
def segmenter():
    return zoo.ensure_sample_segmenter()


def _compile(req, workdir):
    """program.compile_request with a short profile → (result, the artifact's directory)."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in PROFILE.items():
            mp.setenv(k, v)
        mp.setattr(program, "BATCHES", BATCHES)
        result = program.compile_request(req, workdir)
    return result, workdir / "repository" / req["output"]["dir"]


@pytest.fixture(scope="module")
def detector_int8(detector, tmp_path_factory):
    req = zoo.detector_compile_request(detector, "onnxruntime", "int8", {}, 500, "text-detector/onnxruntime-int8")
    return _compile(req, tmp_path_factory.mktemp("detector-int8"))


@pytest.fixture(scope="module")
def segmenter_int8(segmenter, tmp_path_factory):
    """OpenVINO int8 (NNCF) on 24 of the calibration images (bias correction is the slow part). (ONNX
    Runtime's QDQ int8 of every op misses the gate on this DBNet, maskMiou ≈ 0.78: it quantises every
    Add and Mul of PP-LCNetV3's affine blocks; its first fallback quantises only the weighted ops,
    maskMiou ≈ 0.96: test_int8_segmenter_on_onnxruntime_passes_through_the_weighted_ops_fallback.)"""
    return _segmenter_int8(segmenter, "openvino", tmp_path_factory.mktemp("segmenter-int8"))


def _segmenter_int8(segmenter, runtime, work):
    """The segmenter compiled int8 for ``runtime``, calibrated on the first CALIBRATION images."""
    data, n = np.load(segmenter["data"]), segmenter["calibrationSamples"]
    keep = np.r_[0:CALIBRATION, n:len(data["images"])]
    np.savez(work / "calibration.npz", images=data["images"][keep], masks=data["masks"][keep])
    req = zoo.segmenter_compile_request(segmenter, runtime, "int8", {}, 500, f"text-segmenter/{runtime}-int8",
                                        calibration_uri=f"file://{work / 'calibration.npz'}")
    req["compile"]["calibration"]["samples"] = CALIBRATION
    return _compile(req, work)


def test_sample_detector_is_decoded_with_a_dynamic_batch_and_drawn_labels(detector):
    model = onnx.load(detector["model"])
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "images" and inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert out.name == "detections" and [d.dim_value for d in out.type.tensor_type.shape.dim[1:]] == [3549, 6]
    data = np.load(detector["data"])
    n = detector["calibrationSamples"] + detector["heldOutSamples"]
    assert data["images"].shape == (n, 3, 416, 416) and data["images"].dtype == np.uint8
    boxes = data["boxes"]
    assert boxes.shape == (detector["boxes"], 6) and set(np.unique(boxes[:, 1])) == {0.0}
    held = boxes[boxes[:, 0] >= detector["calibrationSamples"]]
    assert len(np.unique(held[:, 0])) == detector["heldOutSamples"], "every held-out image has characters"
    assert (held[:, 4] > held[:, 2]).all() and (held[:, 5] > held[:, 3]).all() and held[:, 2:].max() <= 416


def test_int8_detector_passes_the_default_gate_on_real_images(detector_int8):
    result, out = detector_int8
    assert result["accuracyMetric"] == "detectionF1" and result["accuracy"] >= 0.9
    metrics, ref = result["metrics"], result["referenceMetrics"]
    assert metrics["detectionF1"] >= 0.9 and metrics["detectionMap50"] >= 0.85
    # The fp32 model finds the drawn characters (mAP@0.5 against the drawn boxes); int8 keeps that.
    assert ref["labelMap50"] >= 0.8
    assert abs(metrics["labelMap50"] - ref["labelMap50"]) <= 0.05
    assert (out / "model.onnx").is_file() and (out / "config.pbtxt").is_file()


def test_detector_drift_reference_summarises_detections(detector, detector_int8):
    result, out = detector_int8
    ref = reference.load(out / REFERENCE_FILE)
    assert result["driftReference"].endswith(REFERENCE_FILE)
    assert ref.task == tasks.Task.DETECTION and ref.meta["classes"] == 1 and ref.meta["imageHW"] == [416, 416]
    assert ref.meta["params"]["layout"] == "objectness" and ref.meta["params"]["output"] == "detections"
    assert ref.probs.shape == (detector["calibrationSamples"], len(tasks.DETECTION_SUMMARY) + 1)
    assert (ref.probs[:, 0] > 0).all(), "every calibration image has detections"


def test_gate_rejects_a_detector_quantised_with_a_broken_calibration_set(detector, tmp_path, monkeypatch, capsys):
    """Calibrate on images darkened to a twentieth: every activation range is far too narrow, the int8
    artifact saturates, the fallbacks (weighted ops only, the head in fp32) cannot save it, and the
    command line exits 3 with the numbers (8 calibration and 16 held-out images: four int8 builds and
    gates)."""
    data = np.load(detector["data"])
    calibration, held, n = 8, 16, detector["calibrationSamples"]
    images = data["images"][n:n + held]
    bad = np.concatenate([images[:calibration] // 20, images])  # calibration: held-out photos, darkened
    boxes = data["boxes"][(data["boxes"][:, 0] >= n) & (data["boxes"][:, 0] < n + held)].copy()
    boxes[:, 0] += calibration - n
    path = tmp_path / "bad-calibration.npz"
    np.savez(path, images=bad, boxes=boxes)
    req = zoo.detector_compile_request(detector, "onnxruntime", "int8", {}, 500, "text-detector/bad",
                                       calibration_uri=f"file://{path}")
    req["compile"]["calibration"]["samples"] = calibration
    (tmp_path / "request.json").write_text(json.dumps(req))
    monkeypatch.setenv("VISIONFLEET_TERMINATION_LOG", str(tmp_path / "term"))
    code = program.main(["compile", "--request", str(tmp_path / "request.json"), "--workdir", str(tmp_path / "work")])
    message = (tmp_path / "term").read_text()
    assert code == EXIT_GATE == 3, message
    assert message.startswith("accuracy gate failed: detectionF1 ") and "< 0.9 on 16 held-out samples" in message
    logs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"ts"')]
    measured = [e for e in logs if e["phase"] == "accuracy"]
    steps = program.fallback_steps("onnxruntime")  # weighted ops only, then the head in fp32 as well
    assert len(measured) == 1 + len(steps) and all(e["detectionF1"] < 0.9 for e in measured)
    assert [e["phase"] for e in logs].count("rebuild") == len(steps)
    assert not any(e["phase"] == "profile" for e in logs), "nothing is profiled or written after a failed gate"


def test_int8_segmenter_passes_the_default_gate_on_real_images(segmenter, segmenter_int8):
    result, out = segmenter_int8
    assert result["accuracyMetric"] == "maskMiou" and result["metrics"]["maskMiou"] >= 0.9
    # The fp32 model's text regions against the drawn words' (DB-shrunk) boxes; int8 keeps them.
    assert result["referenceMetrics"]["labelMiou"] >= 0.7
    assert abs(result["metrics"]["labelMiou"] - result["referenceMetrics"]["labelMiou"]) <= 0.05
    ref = reference.load(out / REFERENCE_FILE)
    assert ref.task == tasks.Task.SEGMENTATION and ref.meta["classes"] == 2
    assert ref.probs.shape == (CALIBRATION, 3)  # share of background, of text, mean confidence


def test_int8_segmenter_on_onnxruntime_passes_through_the_weighted_ops_fallback(segmenter, tmp_path):
    result, _ = _segmenter_int8(segmenter, "onnxruntime", tmp_path)
    assert result["metrics"]["maskMiou"] >= 0.9
    assert result["int8OpTypes"] == ["Conv", "ConvTranspose", "MatMul", "Gemm"]


def test_the_detectors_drift_reference_tells_clean_traffic_from_haze_and_blur(detector, detector_int8):
    """The monitor's tests (monitors/visionfleet_monitor/detect.py) on the compiled detector's own drift
    reference: live traffic drawn like the calibration set (its photos, new text) passes both; blur
    changes what the detector finds (the output summaries see it, the input space does not), haze
    leaves the detections alike and moves the input space (the input-space test sees it)."""
    from visionfleet_compile import onnxrt
    from visionfleet_e2e.corrupt import corrupt_all
    from visionfleet_monitor.detect import Detector, InputTest

    result, out = detector_int8
    ref = reference.load(out / REFERENCE_FILE)
    runner = onnxrt.Runner(out / "model.onnx")
    rng = np.random.default_rng(7)
    calibration_photos, _ = zoo.split(zoo.photos())
    live = [zoo.draw_characters(photo, rng)[0] for photo in zoo._pick(calibration_photos, 64, rng)]
    hwc = np.stack(live)
    held = zoo._bgr_chw(hwc)
    streams = {
        "clean": held,
        "blur": corrupt_all(hwc, "gaussian_blur", 3).transpose(0, 3, 1, 2),
        "haze": np.clip(0.55 * held + 0.45 * 220.0, 0, 255).astype(np.uint8),
    }
    outputs_test, inputs_test = Detector(ref, "bbsd-ks", 0.01), InputTest(ref, 0.01)
    seen = {}
    for name, images in streams.items():
        x = images.astype(np.float32)
        outputs = onnxrt.predict_all(runner, x, batch=8)
        seen[name] = (outputs_test.test(outputs_test.features(x, outputs)).drift,
                      inputs_test.test(inputs_test.features(x)).drift)
    assert seen == {"clean": (False, False), "blur": (True, False), "haze": (False, True)}, seen
