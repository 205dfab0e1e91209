"""The accuracy gate, per task: the compiled artifact against the fp32 ONNX reference on held-out
samples (and against labels where the calibration .npz has them).

    task            metrics (every one 0..1, higher is better)          default gate
    classification  top1Agreement   artifact's top-1 = reference's      top1Agreement ≥ 0.99
                    top1Accuracy    artifact's top-1 = label
    detection       detectionF1     artifact's detections matched to    detectionF1 ≥ 0.9
                                    the reference's (IoU ≥ 0.5, same
                                    class, scores ≥ scoreThreshold)
                    detectionMap50  mAP@0.5 of the artifact's ranked
                                    detections, the reference's as truth
                    labelMap50      mAP@0.5 against the labelled boxes
    segmentation    maskMiou        mIoU of the artifact's class map     maskMiou ≥ 0.9
                                    against the reference's
                    labelMiou       mIoU against the labelled masks
    other           outputCosine    lowest, over the outputs, mean       outputCosine ≥ 0.99
                                    cosine similarity per sample
                                    (maxRelativeError reported beside)

Labels in the calibration .npz (held-out images only are evaluated):
    classification  labels [N] int (-1 = unknown)
    detection       boxes [M, 6] float: image index (in images), class, x1, y1, x2, y2 in input pixels
    segmentation    masks [N, H, W] int class per pixel (negative, or 255 in a uint8 array = unknown)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from visionfleet_contract import tasks
from visionfleet_contract.tasks import Detections, Task

IOU_MATCH = 0.5
DEFAULT_GATE = {
    Task.CLASSIFICATION: ("top1Agreement", 0.99),
    Task.DETECTION: ("detectionF1", 0.9),
    Task.SEGMENTATION: ("maskMiou", 0.9),
    Task.OTHER: ("outputCosine", 0.99),
}
METRICS = {
    Task.CLASSIFICATION: ("top1Agreement", "top1Accuracy"),
    Task.DETECTION: ("detectionF1", "detectionMap50", "labelMap50"),
    Task.SEGMENTATION: ("maskMiou", "labelMiou"),
    Task.OTHER: ("outputCosine",),
}
LABELLED = {"top1Accuracy": "labels", "labelMap50": "boxes", "labelMiou": "masks"}


def gate_of(task: Task, gate: Mapping[str, Any] | None) -> tuple[str, float]:
    """(metric, min) of spec.compile.accuracyGate, the task's defaults where unset."""
    metric, least = DEFAULT_GATE[task]
    gate = gate or {}
    return gate.get("metric") or metric, float(gate["min"]) if gate.get("min") is not None else least


@dataclass
class Measured:
    """The gate's numbers: ``metrics`` (name → value, the gate reads one), ``reference`` (the fp32
    model's own numbers against labels), ``details`` (extra figures for the log and result)."""

    samples: int
    metrics: dict[str, float] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    labelled: int = 0


# -- detection ---------------------------------------------------------------------------------------

def _match(pred: Detections, boxes: np.ndarray, classes: np.ndarray, iou: float = IOU_MATCH) -> np.ndarray:
    """For each prediction (highest score first) whether it matches a still-unmatched truth box of
    its class at IoU ≥ ``iou`` (the VOC/COCO rule)."""
    tp = np.zeros(len(pred), dtype=bool)
    if len(pred) == 0 or len(boxes) == 0:
        return tp
    ious = tasks.iou_matrix(pred.boxes, boxes)
    ious[pred.classes[:, None] != classes[None, :]] = 0
    used = np.zeros(len(boxes), dtype=bool)
    for i in range(len(pred)):
        row = np.where(used, 0, ious[i])
        j = int(row.argmax())
        if row[j] >= iou:
            tp[i], used[j] = True, True
    return tp


def f1(preds: list[Detections], truths: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, int, int, int]:
    """(F1, true positives, false positives, false negatives) over every image; 1.0 when neither side
    has a detection."""
    tp = fp = fn = 0
    for p, (b, c) in zip(preds, truths):
        hit = _match(p, b, c)
        tp += int(hit.sum())
        fp += int((~hit).sum())
        fn += len(b) - int(hit.sum())
    return (1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)), tp, fp, fn


def average_precision(preds: list[Detections], truths: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """mAP@0.5: per class, the area under the precision envelope of the detections ranked by score
    over every image (all-point interpolation), averaged over the classes that have truth boxes;
    1.0 when no image has any (and no detection either), 0.0 when only detections exist."""
    per_class: dict[int, list[tuple[float, bool]]] = {}
    totals: dict[int, int] = {}
    for p, (b, c) in zip(preds, truths):
        for cls in np.unique(c):
            totals[int(cls)] = totals.get(int(cls), 0) + int((c == cls).sum())
        hit = _match(p, b, c)
        for s, k, h in zip(p.scores, p.classes, hit):
            per_class.setdefault(int(k), []).append((float(s), bool(h)))
    if not totals:
        return 1.0 if not per_class else 0.0
    aps = []
    for cls, total in totals.items():
        ranked = sorted(per_class.get(cls, []), key=lambda t: -t[0])
        hits = np.array([h for _, h in ranked], dtype=bool)
        if not len(hits):
            aps.append(0.0)
            continue
        tp = np.cumsum(hits)
        recall = tp / total
        precision = tp / np.arange(1, len(hits) + 1)
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        steps = np.diff(np.concatenate([[0.0], recall]))
        aps.append(float((steps * envelope).sum()))
    return float(np.mean(aps))


def _truth(d: Detections) -> tuple[np.ndarray, np.ndarray]:
    return d.boxes, d.classes


def label_boxes(boxes: np.ndarray, index: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The labelled boxes ([M, 6]: image, class, x1, y1, x2, y2) of the images ``index`` (positions
    in the .npz's images array), one (boxes, classes) per image."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 6)
    return [(b[b[:, 0] == i, 2:6], b[b[:, 0] == i, 1].astype(np.int64)) for i in index]


def detection(reference: Mapping[str, np.ndarray], artifact: Mapping[str, np.ndarray], p: Mapping[str, Any],
              labels: list[tuple[np.ndarray, np.ndarray]] | None) -> Measured:
    ref_all = tasks.detections(reference, p, floor=tasks.MAP_SCORE_FLOOR)
    got_all = tasks.detections(artifact, p, floor=tasks.MAP_SCORE_FLOOR)
    threshold = float(p["scoreThreshold"])
    ref = [d.above(threshold) for d in ref_all]
    got = [d.above(threshold) for d in got_all]
    score, tp, fp, fn = f1(got, [_truth(d) for d in ref])
    m = Measured(samples=len(ref), details={
        "referenceDetections": int(sum(len(d) for d in ref)), "artifactDetections": int(sum(len(d) for d in got)),
        "matched": tp, "missed": fn, "extra": fp})
    m.metrics["detectionF1"] = score
    m.metrics["detectionMap50"] = average_precision(got_all, [_truth(d) for d in ref])
    if labels is not None and any(len(b) for b, _ in labels):
        m.labelled = len(labels)
        m.metrics["labelMap50"] = average_precision(got_all, labels)
        m.reference["labelMap50"] = average_precision(ref_all, labels)
        m.details["labelledBoxes"] = int(sum(len(b) for b, _ in labels))
    return m


# -- segmentation ------------------------------------------------------------------------------------

def mean_iou(pred: np.ndarray, truth: np.ndarray, classes: int) -> float:
    """mIoU over the set: per class, intersection over union summed over every image, averaged over
    the classes present in either map; truth < 0 (or ≥ classes) is ignored. 1.0 when both are empty."""
    valid = (truth >= 0) & (truth < classes)
    p, t = pred[valid].astype(np.int64), truth[valid].astype(np.int64)
    p = np.clip(p, 0, classes - 1)
    confusion = np.bincount(t * classes + p, minlength=classes * classes).reshape(classes, classes)
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else 1.0


def segmentation(reference: Mapping[str, np.ndarray], artifact: Mapping[str, np.ndarray], p: Mapping[str, Any],
                 labels: np.ndarray | None) -> Measured:
    ref, classes = tasks.masks(reference, p)
    got, _ = tasks.masks(artifact, p)
    m = Measured(samples=len(ref), details={"classes": classes})
    m.metrics["maskMiou"] = mean_iou(got, ref, classes)
    if labels is not None:
        raw = np.asarray(labels)
        lab = raw.astype(np.int64)
        if raw.dtype == np.uint8:
            lab[raw == 255] = -1
        if lab.shape != ref.shape:
            raise ValueError(f"masks are {list(lab.shape[1:])} per sample, the model's class map is "
                             f"{list(ref.shape[1:])}")
        if (lab >= 0).any():
            m.labelled = int(((lab >= 0).reshape(len(lab), -1).any(axis=1)).sum())
            m.metrics["labelMiou"] = mean_iou(got, lab, classes)
            m.reference["labelMiou"] = mean_iou(ref, lab, classes)
    return m


# -- other -------------------------------------------------------------------------------------------

def tensors(reference: Mapping[str, np.ndarray], artifact: Mapping[str, np.ndarray]) -> Measured:
    cosines, errors = {}, {}
    for name, r in reference.items():
        a = np.asarray(artifact[name], dtype=np.float64).reshape(len(r), -1)
        r = np.asarray(r, dtype=np.float64).reshape(len(r), -1)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(r, axis=1)
        same = np.all(a == r, axis=1)
        cos = np.where(norms > 0, (a * r).sum(axis=1) / np.maximum(norms, 1e-300), same.astype(np.float64))
        cosines[name] = float(cos.mean())
        scale = float(np.abs(r).max()) or 1.0
        errors[name] = float(np.abs(a - r).max() / scale)
    m = Measured(samples=len(next(iter(reference.values()))),
                 details={"cosine": cosines, "maxRelativeError": errors})
    m.metrics["outputCosine"] = min(cosines.values())
    return m
