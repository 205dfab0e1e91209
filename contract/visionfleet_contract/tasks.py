"""What a model's outputs mean, per task: how detections and masks are read from the output tensors,
and the per-image summaries the drift test compares. The compile program (accuracy gate, drift
reference) and the drift monitor (live windows) both read outputs through these functions, so a
reference and a live window are always summarised the same way.

    task            outputs (spec.model.outputs, batch first)                what is read from them
    classification  logits or probabilities [N, C]                           softmax [N, C]
    detection       layout boxes:      boxes [N, D, 4], scores [N, D],       Detections per image
                                       classes [N, D] (optional), count [N]   (NMS done in the graph)
                    layout anchorFree: one head [N, 4 + C, A]                 decoded, then class-aware
                                       (cx, cy, w, h, C class scores)         NMS here (YOLOv8 style)
                    layout objectness: one head [N, A, 5 + C]                 decoded, then class-aware
                                       (cx, cy, w, h, objectness, C scores)   NMS here (YOLOv5/YOLOX)
    segmentation    layout logits:      [N, C, H, W] (C = 1: a sigmoid logit)  class per pixel [N, H, W]
                    layout probability: [N, 1, H, W] foreground probability   (thresholded)
                    layout mask:        [N, H, W] or [N, 1, H, W] class ids
    other           any                                                      the tensors themselves

``params`` is the model spec's ``detection`` / ``segmentation`` object as the API server stores it
(camelCase keys); ``resolve`` fills the defaults. Only numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping

import numpy as np


class Task(str, Enum):
    CLASSIFICATION = "classification"
    DETECTION = "detection"
    SEGMENTATION = "segmentation"
    OTHER = "other"


class DetectionLayout(str, Enum):
    BOXES = "boxes"
    ANCHOR_FREE = "anchorFree"
    OBJECTNESS = "objectness"


class SegmentationLayout(str, Enum):
    LOGITS = "logits"
    PROBABILITY = "probability"
    MASK = "mask"


class BoxFormat(str, Enum):
    XYXY = "xyxy"
    XYWH = "xywh"
    CXCYWH = "cxcywh"


# Defaults of spec.model.detection / spec.model.segmentation (the CRD states the same numbers).
SCORE_THRESHOLD = 0.25
IOU_THRESHOLD = 0.45
MAX_DETECTIONS = 300
PROBABILITY_THRESHOLD = 0.5
# Candidates kept before NMS (highest scores first): a raw head has thousands of anchors.
MAX_CANDIDATES = 3000
# mAP ranks every detection down to this score (the decision threshold is for F1 and drift).
MAP_SCORE_FLOOR = 0.001


def task_of(model: Mapping[str, Any]) -> Task:
    return Task(model.get("task") or Task.CLASSIFICATION.value)


def resolve(model: Mapping[str, Any]) -> dict[str, Any]:
    """The model's task parameters with their defaults filled in."""
    task = task_of(model)
    if task == Task.DETECTION:
        p = dict(model.get("detection") or {})
        p.setdefault("scoreThreshold", SCORE_THRESHOLD)
        p.setdefault("iouThreshold", IOU_THRESHOLD)
        p.setdefault("maxDetections", MAX_DETECTIONS)
        p.setdefault("boxFormat", BoxFormat.XYXY.value)
        if p.get("layout") != DetectionLayout.BOXES.value:
            p.setdefault("output", model["outputs"][0]["name"])
        return p
    if task == Task.SEGMENTATION:
        p = dict(model.get("segmentation") or {})
        p.setdefault("output", model["outputs"][0]["name"])
        p.setdefault("threshold", PROBABILITY_THRESHOLD)
        return p
    return {}


@dataclass(frozen=True)
class Detections:
    """One image's detections: boxes xyxy in input pixels, scores, class ids; highest score first."""

    boxes: np.ndarray  # [K, 4] float32
    scores: np.ndarray  # [K] float32
    classes: np.ndarray  # [K] int64

    def above(self, threshold: float) -> "Detections":
        keep = self.scores >= threshold
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep])

    def __len__(self) -> int:
        return len(self.scores)


def _xyxy(boxes: np.ndarray, fmt: str) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float32)
    if fmt == BoxFormat.XYXY.value:
        return b
    if fmt == BoxFormat.XYWH.value:
        return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:4]], axis=-1)
    half = b[..., 2:4] / 2
    return np.concatenate([b[..., :2] - half, b[..., :2] + half], axis=-1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [K, 4] with every box of ``b`` [M, 4] (xyxy) → [K, M]."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    # Degenerate (zero-area) boxes overlap only themselves: an identical box is a match.
    same = np.all(a[:, None, :] == b[None, :, :], axis=2)
    return np.where(union > 0, inter / np.maximum(union, 1e-12), same).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, limit: int) -> np.ndarray:
    """Greedy class-aware non-maximum suppression → indices kept, highest score first."""
    order = np.argsort(-scores, kind="stable")
    if len(order) == 0:
        return order
    # Boxes of different classes never overlap once shifted apart by class (the usual offset trick).
    span = float(np.abs(boxes).max()) + 1.0
    shifted = boxes + (classes.astype(np.float32) * span * 2)[:, None]
    keep: list[int] = []
    while len(order) and len(keep) < limit:
        i = order[0]
        keep.append(int(i))
        if len(order) == 1:
            break
        ious = iou_matrix(shifted[i:i + 1], shifted[order[1:]])[0]
        order = order[1:][ious <= iou]
    return np.asarray(keep, dtype=np.int64)


def _from_head(head: np.ndarray, layout: str, p: Mapping[str, Any], floor: float) -> list[Detections]:
    x = np.asarray(head, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"detection output {p['output']!r} has shape {list(x.shape)}; layout {layout} needs "
                         f"[N, {'4 + C, anchors' if layout == DetectionLayout.ANCHOR_FREE.value else 'anchors, 5 + C'}]")
    if layout == DetectionLayout.ANCHOR_FREE.value:
        x = x.transpose(0, 2, 1)  # [N, A, 4 + C]
        if x.shape[2] < 5:
            raise ValueError(f"anchorFree head {p['output']!r} has {x.shape[2]} rows; it needs 4 box rows and at "
                             f"least one class")
        cls_scores = x[:, :, 4:]
    else:
        if x.shape[2] < 6:
            raise ValueError(f"objectness head {p['output']!r} has {x.shape[2]} values per anchor; it needs "
                             f"4 box values, the objectness and at least one class")
        cls_scores = x[:, :, 5:] * x[:, :, 4:5]
    out = []
    for n in range(len(x)):
        cls = cls_scores[n].argmax(axis=1)
        score = cls_scores[n][np.arange(len(cls)), cls]
        idx = np.nonzero(score >= floor)[0]
        if len(idx) > MAX_CANDIDATES:
            idx = idx[np.argsort(-score[idx], kind="stable")[:MAX_CANDIDATES]]
        boxes = _xyxy(x[n, idx, :4], BoxFormat.CXCYWH.value)
        keep = nms(boxes, score[idx], cls[idx], float(p["iouThreshold"]), int(p["maxDetections"]))
        out.append(Detections(boxes[keep], score[idx][keep].astype(np.float32), cls[idx][keep].astype(np.int64)))
    return out


def detections(outputs: Mapping[str, np.ndarray], p: Mapping[str, Any], floor: float | None = None) -> list[Detections]:
    """Each image's detections with score ≥ ``floor`` (default: the scoreThreshold)."""
    floor = float(p["scoreThreshold"]) if floor is None else floor
    layout = p["layout"]
    if layout != DetectionLayout.BOXES.value:
        return _from_head(outputs[p["output"]], layout, p, floor)
    boxes = _xyxy(outputs[p["boxes"]], p["boxFormat"])
    scores = np.asarray(outputs[p["scores"]], dtype=np.float32).reshape(len(boxes), -1)
    classes = (np.asarray(outputs[p["classes"]]).reshape(len(boxes), -1).astype(np.int64)
               if p.get("classes") else np.zeros(scores.shape, dtype=np.int64))
    counts = (np.asarray(outputs[p["count"]]).reshape(len(boxes)).astype(np.int64) if p.get("count")
              else np.full(len(boxes), scores.shape[1]))
    out = []
    for n in range(len(boxes)):
        k = int(min(counts[n], scores.shape[1]))
        s, b, c = scores[n, :k], boxes[n, :k].reshape(-1, 4), classes[n, :k]
        keep = s >= floor
        order = np.argsort(-s[keep], kind="stable")
        out.append(Detections(b[keep][order], s[keep][order], c[keep][order]))
    return out


def masks(outputs: Mapping[str, np.ndarray], p: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    """(class id per pixel [N, H, W], number of classes) from a segmentation output."""
    x = np.asarray(outputs[p["output"]])
    layout = p["layout"]
    if layout == SegmentationLayout.MASK.value:
        m = x.reshape(x.shape[0], *x.shape[-2:]) if x.ndim == 4 and x.shape[1] == 1 else x
        if m.ndim != 3:
            raise ValueError(f"mask output {p['output']!r} has shape {list(x.shape)}; it needs [N, H, W]")
        m = m.astype(np.int64)
        return m, int(p.get("numClasses") or (int(m.max()) + 1 if m.size else 1))
    if x.ndim != 4:
        raise ValueError(f"segmentation output {p['output']!r} has shape {list(x.shape)}; layout {layout} needs "
                         f"[N, C, H, W]")
    if layout == SegmentationLayout.PROBABILITY.value or x.shape[1] == 1:
        # One channel: a foreground probability (probability) or a sigmoid logit (logits).
        threshold = float(p["threshold"])
        if layout == SegmentationLayout.LOGITS.value:
            threshold = float(np.log(threshold / (1 - threshold)))
        return (x[:, 0] > threshold).astype(np.int64), 2
    return x.argmax(axis=1).astype(np.int64), int(x.shape[1])


# -- per-image summaries for the drift test ----------------------------------------------------------

DETECTION_SUMMARY = ("count", "max_score", "mean_score", "mean_size", "mean_center_x", "mean_center_y")


def summaries(task: Task, outputs: Mapping[str, np.ndarray], p: Mapping[str, Any],
              image_hw: tuple[int, int] | None = None, classes: int | None = None) -> np.ndarray:
    """One row per image of what the drift test compares (two-sample KS per column).

    detection: log(1 + detections), max and mean score, mean box size (√area over the image's),
    mean box centre (x, y, relative), then the share of each class among the detections;
    segmentation: the share of pixels of each class and the mean confidence of the class map;
    other: mean, standard deviation, min and max of each output."""
    if task == Task.DETECTION:
        dets = detections(outputs, p)
        h, w = image_hw or (1.0, 1.0)
        n_cls = classes or 1
        rows = []
        for d in dets:
            hist = np.bincount(np.clip(d.classes, 0, n_cls - 1), minlength=n_cls).astype(np.float32)
            if len(d) == 0:
                rows.append(np.concatenate([[0, 0, 0, 0, 0.5, 0.5], hist]))
                continue
            size = np.sqrt(np.clip((d.boxes[:, 2] - d.boxes[:, 0]) * (d.boxes[:, 3] - d.boxes[:, 1]), 0, None) / (h * w))
            cx = ((d.boxes[:, 0] + d.boxes[:, 2]) / 2 / w).mean()
            cy = ((d.boxes[:, 1] + d.boxes[:, 3]) / 2 / h).mean()
            rows.append(np.concatenate([[np.log1p(len(d)), d.scores.max(), d.scores.mean(), size.mean(), cx, cy],
                                        hist / len(d)]))
        return np.asarray(rows, dtype=np.float32).reshape(len(dets), len(DETECTION_SUMMARY) + n_cls)
    if task == Task.SEGMENTATION:
        m, n_cls = masks(outputs, p)
        n_cls = classes or n_cls
        flat = np.clip(m.reshape(len(m), -1), 0, n_cls - 1)
        share = np.stack([np.bincount(r, minlength=n_cls) for r in flat]).astype(np.float32) / flat.shape[1]
        x = np.asarray(outputs[p["output"]], dtype=np.float32)
        if p["layout"] == SegmentationLayout.PROBABILITY.value:
            conf = np.abs(x.reshape(len(x), -1) - 0.5).mean(axis=1, keepdims=True) * 2
        elif p["layout"] == SegmentationLayout.LOGITS.value:
            conf = np.abs(x.reshape(len(x), -1)).mean(axis=1, keepdims=True)  # margin of the logits
        else:
            conf = np.zeros((len(x), 1), dtype=np.float32)
        return np.concatenate([share, conf], axis=1).astype(np.float32)
    cols = []
    for name in sorted(outputs):
        x = np.asarray(outputs[name], dtype=np.float32).reshape(len(outputs[name]), -1)
        cols += [x.mean(axis=1), x.std(axis=1), x.min(axis=1), x.max(axis=1)]
    return np.stack(cols, axis=1).astype(np.float32)


# -- live agreement: the canary's and the stable's answers to the same request (shadow steps) ---------

AGREEMENT_IOU = 0.5  # a canary box agrees with a stable box of its class at IoU ≥ this (VOC's rule)


class AgreementError(ValueError):
    """The two answers cannot be compared (different outputs, shapes or batch sizes): the pair is
    counted as an error by the caller, never as disagreement."""


def _pair_tensors(canary: Mapping[str, np.ndarray], stable: Mapping[str, np.ndarray],
                  names: list[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    c, s = {}, {}
    for n in names:
        if n not in canary or n not in stable:
            raise AgreementError(f"output {n!r} missing from the {'canary' if n not in canary else 'stable'}'s answer")
        a, b = np.asarray(canary[n]), np.asarray(stable[n])
        if a.shape != b.shape:
            raise AgreementError(f"output {n!r}: canary shape {list(a.shape)}, stable shape {list(b.shape)}")
        c[n], s[n] = a, b
    return c, s


def _detection_f1(a: Detections, b: Detections, iou: float) -> float:
    """F1 of ``a`` against ``b`` taken as the truth: a box of ``a`` (highest score first) matches a
    still-unmatched box of ``b`` of its class at IoU ≥ ``iou``; 1.0 when neither has a detection."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    tp = 0
    if len(a) and len(b):
        ious = iou_matrix(a.boxes, b.boxes)
        ious[a.classes[:, None] != b.classes[None, :]] = 0
        used = np.zeros(len(b), dtype=bool)
        for i in range(len(a)):
            row = np.where(used, 0, ious[i])
            j = int(row.argmax())
            if row[j] >= iou:
                tp, used[j] = tp + 1, True
    return 2 * tp / (len(a) + len(b))


def _mask_iou(a: np.ndarray, b: np.ndarray, n_cls: int) -> float:
    """Mean IoU over the foreground classes (1 … n_cls − 1) present in either map; with no foreground
    in either, 1.0. Background is left out: a text mask covering 2 % of the image would otherwise
    agree at 0.98 whatever it said."""
    a, b = a.reshape(-1), b.reshape(-1)
    present = np.union1d(np.unique(a), np.unique(b))
    fg = present[(present > 0) & (present < max(n_cls, 2))] if n_cls > 1 else present
    if not len(fg):
        return 1.0
    ious = []
    for k in fg:
        inter = np.count_nonzero((a == k) & (b == k))
        union = np.count_nonzero((a == k) | (b == k))
        ious.append(inter / union if union else 1.0)
    return float(np.mean(ious))


def agreement(task: "Task | str", p: Mapping[str, Any], canary: Mapping[str, np.ndarray],
              stable: Mapping[str, np.ndarray]) -> list[float]:
    """Per image of the batch, how far the canary's answer agrees with the stable's, in [0, 1]:

        classification  1.0 when the top-1 class is the same, else 0.0 (``p["output"]``, default the
                        first output name both answers have, in name order)
        detection       F1 of the canary's detections against the stable's (above scoreThreshold,
                        same class, IoU ≥ 0.5; 1.0 when neither found anything)
        segmentation    mean IoU of the class maps over the foreground classes either has (1.0
                        when neither has any foreground)
        other           cosine similarity of every output (the names both have, flattened per
                        image, concatenated), clipped at 0; two all-zero answers agree (1.0)

    ``p`` is ``resolve(model)`` for detection and segmentation (the reference's ``meta["params"]``);
    for classification it may name the ``output``. Raises ``AgreementError`` when the answers cannot
    be compared (an output missing or shaped differently, batch sizes differ)."""
    task = Task(task)
    if task == Task.DETECTION:
        if p["layout"] == DetectionLayout.BOXES.value:
            names = [p[k] for k in ("boxes", "scores", "classes", "count") if p.get(k)]
        else:
            names = [p["output"]]
        c, s = _pair_tensors(canary, stable, names)
        dc, ds = detections(c, p), detections(s, p)
        return [_detection_f1(a, b, AGREEMENT_IOU) for a, b in zip(dc, ds)]
    if task == Task.SEGMENTATION:
        c, s = _pair_tensors(canary, stable, [p["output"]])
        (mc, kc), (ms, ks) = masks(c, p), masks(s, p)
        n_cls = int(p.get("numClasses") or max(kc, ks))
        return [_mask_iou(a, b, n_cls) for a, b in zip(mc, ms)]
    common = sorted(set(canary) & set(stable))
    if not common:
        raise AgreementError(f"no output in both answers (canary {sorted(canary)}, stable {sorted(stable)})")
    if task == Task.CLASSIFICATION:
        name = p.get("output") or common[0]
        c, s = _pair_tensors(canary, stable, [name])
        a, b = c[name], s[name]
        if a.ndim == 0:
            raise AgreementError(f"output {name!r} is a scalar: no class to compare")
        a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
        return [float(x) for x in (a.argmax(axis=1) == b.argmax(axis=1))]
    c, s = _pair_tensors(canary, stable, common)
    batch = {len(v) if np.ndim(v) else 1 for v in (*c.values(), *s.values())}
    if len(batch) != 1:
        raise AgreementError(f"outputs have different batch sizes {sorted(batch)}")
    n = batch.pop()
    a = np.concatenate([np.asarray(c[k], dtype=np.float64).reshape(n, -1) for k in common], axis=1)
    b = np.concatenate([np.asarray(s[k], dtype=np.float64).reshape(n, -1) for k in common], axis=1)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    out = []
    for i in range(n):
        if na[i] == 0 or nb[i] == 0:
            out.append(1.0 if na[i] == nb[i] else 0.0)
        else:
            out.append(float(np.clip(a[i] @ b[i] / (na[i] * nb[i]), 0.0, 1.0)))
    return out
