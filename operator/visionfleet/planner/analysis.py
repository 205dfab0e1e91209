"""Judge one measurement of the canary: Passed, Failed or Inconclusive — never a bare bool.

    source unreachable / query error ─────────────► Inconclusive  (never a pass)
    no value, NaN, several series ────────────────► Inconclusive
    requests < slo.minRequests ───────────────────► Inconclusive  (too little traffic to judge)
    p99 > slo.latencyP99Ms  or  errors > errorRate ► Failed
    drift window not yet full ────────────────────► Inconclusive
    drift p-value < drift.pValue ─────────────────► Failed        (the canary's inputs moved)
    otherwise ────────────────────────────────────► Passed

Failed wins over Inconclusive when both apply: a canary that is already too slow is failed even
if the drift window is still filling. With neither an SLO nor a drift test configured the step is
judged by its pause alone (Passed, reason says so), as Argo Rollouts does without an analysis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from visionfleet.api.spec import AnalysisSpec
from visionfleet.api.status import Verdict


@dataclass(frozen=True)
class Measurement:
    """What the providers read for one revision over the last interval."""

    p99_ms: float | None = None
    error_rate: float | None = None
    requests: float | None = None
    slo_error: str | None = None  # the SLO source could not answer (unreachable, bad query, several series)
    drift_p_value: float | None = None
    drift_window_fill: float | None = None  # 0..1
    drift_error: str | None = None


@dataclass(frozen=True)
class Assessment:
    verdict: Verdict
    reason: str
    p99_ms: float | None = None
    error_rate: float | None = None
    requests: float | None = None
    drift_p_value: float | None = None


def _bad(x: float | None) -> bool:
    return x is None or math.isnan(x) or math.isinf(x)


def assess(m: Measurement, analysis: AnalysisSpec) -> Assessment:
    failed: list[str] = []
    unknown: list[str] = []
    slo, drift = analysis.slo, analysis.drift

    if slo is not None:
        if m.slo_error:
            unknown.append(f"SLO source: {m.slo_error}")
        elif _bad(m.requests):
            unknown.append("no request count for the canary")
        elif m.requests < slo.min_requests:
            unknown.append(f"{m.requests:.0f} requests < minRequests {slo.min_requests}")
        else:
            if _bad(m.p99_ms):
                unknown.append("no p99 latency for the canary")
            elif m.p99_ms > slo.latency_p99_ms:
                failed.append(f"p99 {m.p99_ms:.1f} ms > {slo.latency_p99_ms:g} ms")
            if _bad(m.error_rate):
                unknown.append("no error rate for the canary")
            elif m.error_rate > slo.error_rate:
                failed.append(f"error rate {m.error_rate:.2%} > {slo.error_rate:.2%}")

    if drift is not None:
        if m.drift_error:
            unknown.append(f"drift monitor: {m.drift_error}")
        elif _bad(m.drift_window_fill) or m.drift_window_fill < 1.0:
            fill = 0.0 if _bad(m.drift_window_fill) else m.drift_window_fill
            unknown.append(f"drift window {fill:.0%} full (needs {drift.window} samples)")
        elif _bad(m.drift_p_value):
            unknown.append("no drift p-value for the canary")
        elif m.drift_p_value < drift.p_value:
            failed.append(f"input drift: p={m.drift_p_value:.3g} < {drift.p_value:g}")

    numbers = dict(p99_ms=None if _bad(m.p99_ms) else m.p99_ms,
                   error_rate=None if _bad(m.error_rate) else m.error_rate,
                   requests=None if _bad(m.requests) else m.requests,
                   drift_p_value=None if _bad(m.drift_p_value) else m.drift_p_value)
    if failed:
        return Assessment(Verdict.FAILED, "; ".join(failed), **numbers)
    if unknown:
        return Assessment(Verdict.INCONCLUSIVE, "; ".join(unknown), **numbers)
    if slo is None and drift is None:
        return Assessment(Verdict.PASSED, "no SLO or drift test configured: judged by the pause alone", **numbers)
    parts = []
    if slo is not None:
        parts.append(f"p99 {m.p99_ms:.1f} ms <= {slo.latency_p99_ms:g} ms, errors {m.error_rate:.2%}")
    if drift is not None:
        parts.append(f"drift p={m.drift_p_value:.3g}")
    return Assessment(Verdict.PASSED, "; ".join(parts), **numbers)
