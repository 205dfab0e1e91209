"""How each task's outputs are read (contract tasks), the accuracy gate's metrics per task (compile
gates) and the drift reference of a non-classifier: pure numpy, exact expected values."""

from __future__ import annotations

import numpy as np
import pytest

from visionfleet_compile import gates
from visionfleet_contract import reference, tasks
from visionfleet_contract.tasks import Detections, Task

DET = {"scoreThreshold": 0.25, "iouThreshold": 0.45, "maxDetections": 300, "boxFormat": "xyxy"}


def dets(boxes, scores, classes=None):
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return Detections(boxes, np.asarray(scores, dtype=np.float32),
                      np.asarray(classes if classes is not None else [0] * len(boxes), dtype=np.int64))


def test_iou_of_known_boxes():
    a = np.array([[0, 0, 10, 10]], dtype=np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=np.float32)
    assert np.allclose(tasks.iou_matrix(a, b), [[1.0, 50 / 150, 0.0]])
    assert tasks.iou_matrix(a, b[:0]).shape == (1, 0)
    flat = np.array([[5, 0, 5, 10]], dtype=np.float32)  # zero area: matches itself only
    assert tasks.iou_matrix(flat, np.concatenate([flat, a])).tolist() == [[1.0, 0.0]]


def test_nms_suppresses_overlaps_within_a_class_only():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], dtype=np.float32)
    classes = np.array([0, 0, 1, 0])
    assert tasks.nms(boxes, scores, classes, 0.45, 300).tolist() == [0, 2, 3]
    assert tasks.nms(boxes, scores, classes, 0.45, 2).tolist() == [0, 2]


def test_an_anchor_free_head_is_decoded_and_suppressed():
    # [N, 4 + C, A]: two anchors on one object (class 1), one weak anchor elsewhere.
    head = np.zeros((1, 6, 3), dtype=np.float32)
    head[0, :4, 0] = [50, 50, 20, 20]
    head[0, :4, 1] = [51, 50, 20, 20]
    head[0, :4, 2] = [200, 200, 10, 10]
    head[0, 4:, 0] = [0.1, 0.9]
    head[0, 4:, 1] = [0.1, 0.8]
    head[0, 4:, 2] = [0.2, 0.1]
    p = {**DET, "layout": "anchorFree", "output": "out"}
    (d,) = tasks.detections({"out": head}, p)
    assert len(d) == 1 and d.classes.tolist() == [1]
    assert np.allclose(d.boxes[0], [40, 40, 60, 60]) and d.scores[0] == pytest.approx(0.9)
    (low,) = tasks.detections({"out": head}, p, floor=0.001)
    assert len(low) == 2  # the weak anchor is ranked for mAP, below the decision threshold


def test_an_objectness_head_multiplies_objectness_and_class_score():
    head = np.zeros((2, 2, 6), dtype=np.float32)
    head[0, 0] = [50, 50, 20, 20, 0.5, 0.9]  # 0.45
    head[0, 1] = [150, 50, 20, 20, 0.2, 0.9]  # 0.18: below 0.25
    p = {**DET, "layout": "objectness", "output": "out"}
    first, second = tasks.detections({"out": head}, p)
    assert len(first) == 1 and first.scores[0] == pytest.approx(0.45) and len(second) == 0
    with pytest.raises(ValueError, match="objectness"):
        tasks.detections({"out": head[:, :, :5]}, p)


def test_boxes_layout_reads_counts_formats_and_classes():
    boxes = np.array([[[10, 10, 20, 20], [0, 0, 5, 5], [0, 0, 0, 0]]], dtype=np.float32)  # cxcywh
    out = {"b": boxes, "s": np.array([[0.9, 0.3, 0.99]]), "c": np.array([[2, 1, 7]]), "n": np.array([2])}
    p = {**DET, "layout": "boxes", "boxes": "b", "scores": "s", "classes": "c", "count": "n", "boxFormat": "cxcywh"}
    (d,) = tasks.detections(out, p)
    assert d.classes.tolist() == [2, 1]  # the padded third row is past the count
    assert np.allclose(d.boxes[0], [0, 0, 20, 20])


def test_resolve_fills_the_defaults_the_crd_documents():
    model = {"task": "detection", "outputs": [{"name": "head"}], "detection": {"layout": "anchorFree"}}
    assert tasks.resolve(model) == {"layout": "anchorFree", "output": "head", "scoreThreshold": 0.25,
                                    "iouThreshold": 0.45, "maxDetections": 300, "boxFormat": "xyxy"}
    assert tasks.resolve({"outputs": [{"name": "x"}]}) == {}
    assert tasks.task_of({}) == Task.CLASSIFICATION


@pytest.mark.parametrize("layout,array,expected", [
    ("logits", np.array([[[[1.0, -1.0]], [[0.0, 2.0]]]]), [[[0, 1]]]),
    ("logits", np.array([[[[0.1, -0.1]]]]), [[[1, 0]]]),  # one sigmoid logit: > 0 is foreground at 0.5
    ("probability", np.array([[[[0.6, 0.4]]]]), [[[1, 0]]]),
    ("mask", np.array([[[3, 0]]]), [[[3, 0]]]),
])
def test_segmentation_layouts_give_a_class_per_pixel(layout, array, expected):
    m, _ = tasks.masks({"o": array}, {"layout": layout, "output": "o", "threshold": 0.5})
    assert m.tolist() == expected


def test_f1_matches_by_class_and_iou():
    truth = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=np.float32), np.array([0, 1]))]
    assert gates.f1([dets([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [0, 1])], truth)[0] == 1.0
    # right place, wrong class: one miss and one extra for that box
    score, tp, fp, fn = gates.f1([dets([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [0, 0])], truth)
    assert (tp, fp, fn) == (1, 1, 1) and score == pytest.approx(0.5)
    # shifted past IoU 0.5 (IoU 1/3): no match
    assert gates.f1([dets([[5, 0, 15, 10]], [0.9])], [(truth[0][0][:1], np.array([0]))])[1:] == (0, 1, 1)
    assert gates.f1([dets([], [])], [(np.zeros((0, 4)), np.zeros(0, dtype=np.int64))])[0] == 1.0


def test_average_precision_ranks_by_score():
    truth = [(np.array([[0, 0, 10, 10]], dtype=np.float32), np.array([0]))]
    assert gates.average_precision([dets([[0, 0, 10, 10]], [0.9])], truth) == pytest.approx(1.0)
    # a false positive ranked above the true one: precision 1/2 at recall 1
    ap = gates.average_precision([dets([[50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.8])], truth)
    assert ap == pytest.approx(0.5)
    # ranked below it, the false positive costs nothing
    assert gates.average_precision([dets([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8])], truth) == 1.0
    assert gates.average_precision([dets([], [])], truth) == 0.0


def test_label_boxes_group_by_image_index():
    boxes = np.array([[3, 1, 0, 0, 5, 5], [4, 0, 1, 1, 2, 2], [3, 0, 2, 2, 4, 4]], dtype=np.float32)
    per_image = gates.label_boxes(boxes, np.array([3, 4, 5]))
    assert [len(b) for b, _ in per_image] == [2, 1, 0] and per_image[0][1].tolist() == [1, 0]


def test_mean_iou_over_the_set_ignores_unknown_pixels():
    truth = np.array([[[0, 0, 1, 1]], [[1, 1, -1, -1]]])
    pred = np.array([[[0, 1, 1, 1]], [[1, 1, 0, 0]]])
    # class 0: intersection 1, union 2; class 1: intersection 4, union 5 (the -1 pixels are ignored)
    assert gates.mean_iou(pred, truth, 2) == pytest.approx((1 / 2 + 4 / 5) / 2)
    assert gates.mean_iou(truth.clip(0), truth.clip(0), 2) == 1.0


def test_segmentation_gate_reads_uint8_masks_with_255_unknown():
    ref = {"o": np.array([[[[0.9, 0.1, 0.9]]]])}
    got = {"o": np.array([[[[0.9, 0.9, 0.9]]]])}
    labels = np.array([[[1, 0, 255]]], dtype=np.uint8)
    m = gates.segmentation(ref, got, {"layout": "probability", "output": "o", "threshold": 0.5}, labels)
    assert m.metrics["maskMiou"] == pytest.approx((0 / 1 + 2 / 3) / 2)
    assert m.metrics["labelMiou"] == pytest.approx((0 + 1 / 2) / 2) and m.reference["labelMiou"] == 1.0


def test_detection_gate_reports_agreement_and_label_metrics():
    head = np.zeros((1, 2, 6), dtype=np.float32)
    head[0, 0] = [50, 50, 20, 20, 1.0, 0.9]
    head[0, 1] = [150, 150, 20, 20, 1.0, 0.8]
    worse = head.copy()
    worse[0, 1, 4] = 0.1  # the artifact loses the second object
    p = {**DET, "layout": "objectness", "output": "out"}
    labels = [(np.array([[40, 40, 60, 60]], dtype=np.float32), np.array([0]))]
    m = gates.detection({"out": head}, {"out": worse}, p, labels)
    assert m.metrics["detectionF1"] == pytest.approx(2 / 3)
    assert m.metrics["labelMap50"] == 1.0 and m.reference["labelMap50"] == pytest.approx(1.0)
    assert m.details["missed"] == 1
    assert gates.detection({"out": head}, {"out": head}, p, None).metrics == {
        "detectionF1": 1.0, "detectionMap50": 1.0}


def test_other_outputs_are_compared_by_cosine_and_relative_error():
    ref = {"a": np.array([[1.0, 0.0], [0.0, 2.0]]), "b": np.array([[1.0], [1.0]])}
    got = {"a": np.array([[1.0, 0.0], [0.0, 2.2]]), "b": np.array([[1.0], [-1.0]])}
    m = gates.tensors(ref, got)
    assert m.details["cosine"]["a"] == pytest.approx(1.0) and m.details["cosine"]["b"] == pytest.approx(0.0)
    assert m.metrics["outputCosine"] == pytest.approx(0.0)
    assert m.details["maxRelativeError"]["a"] == pytest.approx(0.1)


def test_default_gates_per_task():
    assert gates.gate_of(Task.DETECTION, None) == ("detectionF1", 0.9)
    assert gates.gate_of(Task.CLASSIFICATION, {"min": 0.5}) == ("top1Agreement", 0.5)
    assert gates.gate_of(Task.SEGMENTATION, {"metric": "labelMiou"}) == ("labelMiou", 0.9)


def test_the_operators_defaults_are_the_compile_programs():
    from visionfleet.api.spec import TASK_METRICS, Task as SpecTask

    for task, (metrics, least) in TASK_METRICS.items():
        assert gates.gate_of(Task(task.value), None) == (metrics[0].value, least)
        assert set(gates.METRICS[Task(task.value)]) == {m.value for m in metrics}
    assert {t.value for t in SpecTask} == {t.value for t in Task}


def test_a_detectors_reference_summarises_outputs_per_image_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    head = np.zeros((30, 4, 7), dtype=np.float32)
    head[:, :, :2] = rng.uniform(20, 80, (30, 4, 2))
    head[:, :, 2:4] = 10
    head[:, :, 4] = rng.uniform(0, 1, (30, 4))
    head[:, :, 5:] = rng.uniform(0, 1, (30, 4, 2))
    meta = {"task": "detection", "params": {**DET, "layout": "objectness", "output": "out"}, "classes": 2,
            "imageHW": [100, 100]}
    x = rng.standard_normal((30, 3, 16, 16)).astype(np.float32)
    ref = reference.build(x, {"out": head}, meta=meta)
    assert ref.probs.shape == (30, len(tasks.DETECTION_SUMMARY) + 2) and ref.task == Task.DETECTION
    loaded = reference.load(reference.write(ref, tmp_path))
    assert loaded.meta == meta and np.allclose(loaded.features({"out": head}), ref.probs)
    # a classifier's reference stays as it was: no meta, softmax of the first output
    cls = reference.build(x, rng.standard_normal((30, 5)).astype(np.float32))
    assert cls.meta == {} and cls.probs.shape == (30, 5)
    with pytest.raises(reference.ReferenceError, match="every output by name"):
        loaded.features(head)


def test_summaries_of_a_segmenter_are_class_shares():
    probs = np.zeros((2, 1, 2, 2), dtype=np.float32)
    probs[0, 0, 0, :] = 0.9
    rows = tasks.summaries(Task.SEGMENTATION, {"o": probs}, {"layout": "probability", "output": "o", "threshold": 0.5})
    assert rows[:, :2].tolist() == [[0.5, 0.5], [1.0, 0.0]]


def test_the_fuzzers_copy_of_the_task_metrics_is_the_specs():
    """schema_fuzz repairs generated specs from its own copy (the fuzzer reads only the CRD)."""
    from visionfleet.api.spec import TASK_METRICS
    from visionfleet_e2e import schema_fuzz

    assert schema_fuzz.TASK_METRICS == {t.value: tuple(m.value for m in metrics) for t, (metrics, _) in TASK_METRICS.items()}
    assert set(schema_fuzz.LABELLED_METRICS) == {m for m in gates.LABELLED}
