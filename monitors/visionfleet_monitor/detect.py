"""The drift tests, with alibi-detect, on one window against the revision's reference.

    bbsd-ks (default)  black-box shift detection: the model's softmax outputs, one two-sample
                       Kolmogorov–Smirnov test per class, Bonferroni-corrected (Rabanser, Günnemann
                       & Lipton, "Failing Loudly", NeurIPS 2019: the best detector they measured on
                       images). Needs the model's outputs for every sample.
    mmd                maximum mean discrepancy on the inputs reduced to 32 dimensions (see
                       visionfleet_contract.reference), p-value by permutation. Needs the inputs only.

Every test reports one p-value that is compared with the spec's ``drift.pValue`` as it is: for
bbsd-ks it is the Bonferroni-adjusted one, min(1, C × min_c p_c), so "p < pValue" is exactly
alibi-detect's own is_drift decision.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from visionfleet_contract.reference import Reference, reduce_inputs, softmax

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


class Detector:
    """Built once per reference (alibi-detect precomputes on it), then called per window."""

    def __init__(self, reference: Reference, kind: str = "bbsd-ks", p_value: float = 0.01, seed: int = 0):
        if kind not in DETECTORS:
            raise ValueError(f"detector {kind!r}: choose one of {', '.join(DETECTORS)}")
        self.kind, self.p_value, self.reference = kind, p_value, reference
        if kind == "bbsd-ks":
            from alibi_detect.cd import KSDrift

            self._cd = KSDrift(reference.probs, p_val=p_value, correction="bonferroni")
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

    def features(self, inputs: np.ndarray | None, outputs: np.ndarray | None) -> np.ndarray:
        """What the window stores per sample: softmax outputs (bbsd-ks) or reduced inputs (mmd)."""
        if self.kind == "bbsd-ks":
            if outputs is None:
                raise ValueError("bbsd-ks needs the model's outputs for each sample")
            probs = softmax(outputs)
            if probs.shape[1] != self.reference.classes:
                raise ValueError(f"{probs.shape[1]} outputs per sample, the reference has {self.reference.classes}")
            return probs
        if inputs is None:
            raise ValueError("mmd needs the inputs of each sample")
        return reduce_inputs(inputs, self.reference.seed, self.reference.pool)

    def test(self, window: np.ndarray) -> TestResult:
        started = time.perf_counter()
        out = self._cd.predict(window, return_p_val=True, return_distance=True)["data"]
        if self.kind == "bbsd-ks":
            p_vals = np.asarray(out["p_val"], dtype=np.float64)
            p = float(min(1.0, np.nanmin(p_vals) * len(p_vals)))
            distance = float(np.nanmax(out["distance"]))
        else:
            p, distance = float(out["p_val"]), float(out["distance"])
        return TestResult(p_value=p, distance=distance, drift=bool(out["is_drift"]), samples=len(window),
                          seconds=time.perf_counter() - started)
