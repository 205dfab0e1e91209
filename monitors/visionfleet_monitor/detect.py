"""The drift tests, with alibi-detect, on one window against the revision's reference.

    bbsd-ks (default)  black-box shift detection: one two-sample Kolmogorov–Smirnov test per column
                       of what the reference's ``probs`` hold, Bonferroni-corrected (Rabanser,
                       Günnemann & Lipton, "Failing Loudly", NeurIPS 2019: the best detector they
                       measured on images) — a classifier's softmax outputs (one column per class),
                       or a detector's, segmenter's or other model's per-image output summaries
                       (``visionfleet_contract.tasks.summaries``). Needs the model's outputs for every
                       sample (a classifier's first output; every output of the other tasks).
    mmd                maximum mean discrepancy on the inputs reduced to 32 dimensions (see
                       visionfleet_contract.reference), p-value by permutation. Needs the inputs only.

    input-ks           (``InputTest``: always on, next to either of the above) one two-sample KS test
                       per dimension of the reduced inputs, Bonferroni-corrected: cheap (32 tests, no
                       torch, no Triton) and it sees shifts the model's outputs hide (haze, a darker
                       scene) — reported as its own metrics, for the stable revision's InputDrift.

Every test reports one p-value that is compared with the spec's ``drift.pValue`` as it is: for the
KS tests it is the Bonferroni-adjusted one, min(1, D × min_d p_d), so "p < pValue" is exactly
alibi-detect's own is_drift decision.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from visionfleet_contract.reference import Reference, reduce_inputs
from visionfleet_contract.tasks import Task

DETECTORS = ("bbsd-ks", "mmd")


@dataclass(frozen=True)
class TestResult:
    p_value: float
    distance: float  # bbsd-ks: the largest KS statistic; mmd: the MMD² estimate
    drift: bool
    samples: int
    seconds: float


class DetectorUnavailable(ValueError):
    """The detector cannot run in this image (a missing backend); no restart can fix it."""


def _ks(x_ref: np.ndarray, p_value: float):
    from alibi_detect.cd import KSDrift

    return KSDrift(x_ref, p_val=p_value, correction="bonferroni")


def _ks_result(cd, window: np.ndarray, started: float) -> TestResult:
    out = cd.predict(window, return_p_val=True, return_distance=True)["data"]
    p_vals = np.asarray(out["p_val"], dtype=np.float64)
    p = float(min(1.0, np.nanmin(p_vals) * len(p_vals)))
    return TestResult(p_value=p, distance=float(np.nanmax(out["distance"])), drift=bool(out["is_drift"]),
                      samples=len(window), seconds=time.perf_counter() - started)


class InputTest:
    """The always-on input-space test: two-sample KS per dimension of the reduced inputs
    (``reference.reduced`` against the window's), Bonferroni-corrected. numpy/scipy only."""

    kind = "input-ks"

    def __init__(self, reference: Reference, p_value: float = 0.01):
        self.p_value, self.reference = p_value, reference
        self._cd = _ks(reference.reduced, p_value)

    @property
    def dims(self) -> int:
        return self.reference.reduced.shape[1]

    def features(self, inputs: np.ndarray) -> np.ndarray:
        return reduce_inputs(inputs, self.reference.seed, self.reference.pool)

    def test(self, window: np.ndarray) -> TestResult:
        return _ks_result(self._cd, window, time.perf_counter())


class Detector:
    """Built once per reference (alibi-detect precomputes on it), then called per window."""

    def __init__(self, reference: Reference, kind: str = "bbsd-ks", p_value: float = 0.01, seed: int = 0):
        if kind not in DETECTORS:
            raise ValueError(f"detector {kind!r}: choose one of {', '.join(DETECTORS)}")
        self.kind, self.p_value, self.reference = kind, p_value, reference
        if kind == "bbsd-ks":
            self._cd = _ks(reference.probs, p_value)
        else:
            try:
                import torch
            except ImportError:
                raise DetectorUnavailable(
                    "detector mmd needs torch (alibi-detect's pytorch backend) and this monitor has none: use "
                    "the monitor-mmd image (the default for mmd when analysis.drift.image is unset), or "
                    "analysis.drift.detector bbsd-ks") from None
            from alibi_detect.cd import MMDDrift

            torch.manual_seed(seed)
            # Enough permutations that p-values near the threshold are resolved (≥ 10 below it).
            self._cd = MMDDrift(reference.reduced, backend="pytorch", p_val=p_value,
                                n_permutations=max(100, math.ceil(10 / p_value)), device="cpu")

    @property
    def needs_outputs(self) -> bool:
        return self.kind == "bbsd-ks"

    @property
    def needs_all_outputs(self) -> bool:
        """bbsd-ks on a detector, segmenter or other model: its summaries read every output by name."""
        return self.needs_outputs and self.reference.task != Task.CLASSIFICATION

    @property
    def dims(self) -> int:
        """Features per sample in the window."""
        return self.reference.probs.shape[1] if self.needs_outputs else self.reference.reduced.shape[1]

    def features(self, inputs: np.ndarray | None,
                 outputs: "np.ndarray | Mapping[str, np.ndarray] | None") -> np.ndarray:
        """What the window stores per sample: the reference's output features (bbsd-ks: a
        classifier's softmax, the other tasks' per-image summaries) or reduced inputs (mmd)."""
        if self.kind == "bbsd-ks":
            if outputs is None:
                raise ValueError("bbsd-ks needs the model's outputs for each sample")
            feats = self.reference.features(outputs)
            if feats.shape[1] != self.reference.probs.shape[1]:
                what = "outputs" if self.reference.task == Task.CLASSIFICATION else "output summaries"
                raise ValueError(f"{feats.shape[1]} {what} per sample, the reference has "
                                 f"{self.reference.probs.shape[1]}")
            return feats
        if inputs is None:
            raise ValueError("mmd needs the inputs of each sample")
        return reduce_inputs(inputs, self.reference.seed, self.reference.pool)

    def test(self, window: np.ndarray) -> TestResult:
        started = time.perf_counter()
        if self.kind == "bbsd-ks":
            return _ks_result(self._cd, window, started)
        out = self._cd.predict(window, return_p_val=True, return_distance=True)["data"]
        p, distance = float(out["p_val"]), float(out["distance"])
        return TestResult(p_value=p, distance=distance, drift=bool(out["is_drift"]), samples=len(window),
                          seconds=time.perf_counter() - started)
