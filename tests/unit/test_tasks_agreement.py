"""``tasks.agreement``: per image, how far a canary's answer agrees with the stable's to the same request."""

from __future__ import annotations

import numpy as np
import pytest

from visionfleet_contract import tasks
from visionfleet_contract.tasks import AgreementError, agreement


def test_classification_compares_the_top_1_class_per_image():
    stable = {"logits": np.array([[3, 1, 0], [0, 2, 1], [1, 0, 5], [0.2, 0.1, 0]], dtype=np.float32)}
    canary = {"logits": np.array([[9, 1, 0], [0, 1, 2], [1, 0, 5], [0.0, 0.1, 0]], dtype=np.float32)}
    assert agreement("classification", {}, canary, stable) == [1.0, 0.0, 1.0, 0.0]
    # Probabilities and logits of the same ranking agree; the named output is read, not another one.
    probs = {"logits": np.exp(stable["logits"]) / np.exp(stable["logits"]).sum(1, keepdims=True),
             "features": np.zeros((4, 2), dtype=np.float32)}
    assert agreement(tasks.Task.CLASSIFICATION, {"output": "logits"}, {**stable, "features": np.ones((4, 2))}, probs) \
        == [1.0] * 4
    with pytest.raises(AgreementError, match="shape"):
        agreement("classification", {}, {"logits": np.zeros((2, 3))}, {"logits": np.zeros((3, 3))})
    with pytest.raises(AgreementError, match="no output in both"):
        agreement("classification", {}, {"a": np.zeros((2, 3))}, {"b": np.zeros((2, 3))})


BOXES = tasks.resolve({"task": "detection", "outputs": [{"name": "boxes"}],
                       "detection": {"layout": "boxes", "boxes": "boxes", "scores": "scores", "classes": "labels",
                                     "count": "num"}})


def det(boxes, scores, labels, d=4):
    """One batch of a boxes-layout detector's outputs, padded to ``d`` detections per image."""
    n = len(boxes)
    b = np.zeros((n, d, 4), np.float32)
    s = np.zeros((n, d), np.float32)
    c = np.zeros((n, d), np.float32)
    num = np.zeros(n, np.int32)
    for i in range(n):
        k = len(boxes[i])
        if k:
            b[i, :k], s[i, :k], c[i, :k] = boxes[i], scores[i], labels[i]
        num[i] = k
    return {"boxes": b, "scores": s, "labels": c, "num": num}


def test_detection_is_the_f1_of_the_canarys_boxes_against_the_stables_at_iou_half():
    stable = det([[[0, 0, 10, 10], [20, 20, 30, 30]], [[0, 0, 10, 10]], [], [[0, 0, 10, 10]], [[0, 0, 10, 10]]],
                 [[0.9, 0.8], [0.9], [], [0.9], [0.9]], [[0, 1], [0], [], [0], [0]])
    canary = det([[[1, 1, 10, 10], [20, 20, 30, 30]],  # both found (IoU .81 and 1)
                  [[0, 0, 10, 10], [40, 40, 50, 50]],  # one more box: P = 1/2, R = 1 → F1 = 2/3
                  [],                                  # neither found anything: agree
                  [[0, 0, 4, 10]],                     # IoU 0.4 < 0.5: no match → 0
                  [[0, 0, 10, 10]]],                   # same box, another class → 0
                 [[0.9, 0.7], [0.9, 0.6], [], [0.9], [0.9]], [[0, 1], [0, 0], [], [0], [2]])
    got = agreement("detection", BOXES, canary, stable)
    assert got == pytest.approx([1.0, 2 / 3, 1.0, 0.0, 0.0])
    # Below the score threshold a detection does not count (0.1 < 0.25): agrees with finding nothing.
    weak = det([[[0, 0, 10, 10]]], [[0.1]], [[0]])
    assert agreement("detection", BOXES, weak, det([[]], [[]], [[]])) == [1.0]
    with pytest.raises(AgreementError, match="missing"):
        agreement("detection", BOXES, {k: v for k, v in canary.items() if k != "scores"}, stable)


def test_detection_of_a_raw_head_is_decoded_before_it_is_compared():
    p = tasks.resolve({"task": "detection", "outputs": [{"name": "head"}], "detection": {"layout": "objectness"}})
    head = np.zeros((1, 3, 7), np.float32)  # cx, cy, w, h, objectness, 2 class scores
    head[0, 0] = [10, 10, 8, 8, 0.9, 0.9, 0.1]
    head[0, 1] = [40, 40, 8, 8, 0.9, 0.1, 0.9]
    moved = head.copy()
    moved[0, 1, :2] = [60, 60]  # the second box elsewhere: one of two matches on each side
    assert agreement("detection", p, {"head": head}, {"head": head}) == [1.0]
    assert agreement("detection", p, {"head": moved}, {"head": head}) == pytest.approx([0.5])


def test_segmentation_is_the_mean_iou_of_the_foreground_classes():
    p = tasks.resolve({"task": "segmentation", "outputs": [{"name": "mask"}], "segmentation": {"layout": "mask"}})
    stable = np.zeros((3, 4, 4), np.int64)
    stable[0, :2, :2] = 1  # 4 pixels of class 1
    stable[1, :, :2] = 1
    stable[1, :, 2:] = 2
    canary = stable.copy()
    canary[0, :2, :1] = 0  # the canary keeps 2 of the 4: IoU 0.5
    canary[1, :, 2] = 1  # class 1: 8 vs 12 → 8/12; class 2: 4 vs 8 → 4/8
    got = agreement("segmentation", p, {"mask": canary}, {"mask": stable})
    # Image 2: no foreground on either side agrees (background is left out: it would flatter any mask).
    assert got == pytest.approx([0.5, (8 / 12 + 4 / 8) / 2, 1.0])
    # Logits: the class map is the argmax over channels.
    logits = np.zeros((1, 2, 4, 4), np.float32)
    logits[0, 1, :2, :2] = 5.0
    pl = tasks.resolve({"task": "segmentation", "outputs": [{"name": "out"}], "segmentation": {"layout": "logits"}})
    assert agreement("segmentation", pl, {"out": logits}, {"out": logits}) == [1.0]
    assert agreement("segmentation", pl, {"out": logits}, {"out": -logits}) == [0.0]


def test_other_tasks_compare_the_cosine_similarity_of_every_output():
    rng = np.random.default_rng(0)
    a = {"emb": rng.normal(size=(3, 8)).astype(np.float32), "aux": rng.normal(size=(3, 2)).astype(np.float32)}
    same = agreement("other", {}, a, {k: v * 2 for k, v in a.items()})  # scale does not matter
    assert same == pytest.approx([1.0] * 3, abs=1e-6)
    opposite = agreement("other", {}, a, {k: -v for k, v in a.items()})
    assert opposite == [0.0] * 3  # clipped at 0
    noisy = agreement("other", {}, a, {k: v + rng.normal(0, 1, v.shape) for k, v in a.items()})
    assert all(0 < x < 0.95 for x in noisy)
    zero = {"emb": np.zeros((1, 8)), "aux": np.zeros((1, 2))}
    assert agreement("other", {}, zero, zero) == [1.0]
    with pytest.raises(AgreementError):
        agreement("other", {}, a, {"emb": a["emb"][:, :4], "aux": a["aux"]})
