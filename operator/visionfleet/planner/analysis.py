"""Judge one measurement of the canary: Passed, Failed, Inconclusive or Error — never a bare bool.

Each configured check (``latency``, ``errorRate``, ``drift``) gives its own result:

    the provider could not answer (unreachable, refused query, timeout) ► Error        (retried)
    no series yet, NaN, several series ──────────────────────────────────► Inconclusive
    requests < slo.minRequests ──────────────────────────────────────────► Inconclusive (too little traffic)
    p99 > slo.latencyP99Ms  /  errors > slo.errorRate ───────────────────► Failed
    drift window not yet full ───────────────────────────────────────────► Inconclusive
    drift p-value < drift.pValue ────────────────────────────────────────► Failed       (the inputs moved)
    shadow step, pairs < liveAgreement.minPairs ─────────────────────────► Inconclusive
    shadow step, agreement < liveAgreement.min ──────────────────────────► Failed       (answers differ)
    otherwise ───────────────────────────────────────────────────────────► Passed

The measurement's verdict is the worst of its checks, in the order Failed > Error > Inconclusive >
Passed: a canary already too slow is failed even while the drift window fills or the drift monitor is
unreachable. Checks named in ``analysis.dryRun`` are measured and reported (``dry_run``) but take no
part in the verdict. With no check configured the step is judged by its pause alone (Passed, the
reason says so), as Argo Rollouts does without an analysis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from visionfleet.api.spec import AnalysisSpec, Check
from visionfleet.api.status import Verdict, VisionDeploymentStatus

from .durations import seconds


@dataclass(frozen=True)
class Measurement:
    """What the providers read for one revision over the last interval."""

    p99_ms: float | None = None
    error_rate: float | None = None
    requests: float | None = None
    slo_error: str | None = None  # the SLO source could not answer (unreachable, refused query, timeout)
    slo_unknown: str | None = None  # it answered, without one usable number (no series, NaN, several series)
    drift_p_value: float | None = None
    drift_window_fill: float | None = None  # 0..1
    drift_error: str | None = None
    drift_unknown: str | None = None
    # The monitors' always-on input-space test (KS per reduced input dimension), read for the stable
    # revision only: it raises InputDrift, never judges a canary (an input shift is not the canary's
    # fault). None: not read, no pod tested a full window yet, or a monitor image without the test.
    drift_input_p_value: float | None = None
    # A shadow step's pairs (canary and stable answering the same mirrored request), over the window.
    live_pairs: float | None = None
    live_agreement: float | None = None  # 0..1, the mean agreement of those pairs
    live_error: str | None = None
    live_unknown: str | None = None


@dataclass(frozen=True)
class Assessment:
    verdict: Verdict
    reason: str
    p99_ms: float | None = None
    error_rate: float | None = None
    requests: float | None = None
    drift_p_value: float | None = None
    dry_run: str | None = None  # what the dry-run checks found, for status only
    live_agreement: float | None = None
    live_pairs: float | None = None


SEVERITY = {Verdict.PASSED: 0, Verdict.INCONCLUSIVE: 1, Verdict.ERROR: 2, Verdict.FAILED: 3}


def _bad(x: float | None) -> bool:
    return x is None or math.isnan(x) or math.isinf(x)


def _live(m: Measurement, analysis: AnalysisSpec) -> tuple[Verdict, str]:
    live = analysis.live_agreement
    assert live is not None
    if m.live_error:
        return Verdict.ERROR, f"live agreement: {m.live_error}"
    if m.live_unknown:
        return Verdict.INCONCLUSIVE, f"live agreement: {m.live_unknown}"
    if _bad(m.live_pairs) or m.live_pairs < live.min_pairs:
        n = 0 if _bad(m.live_pairs) else m.live_pairs
        return Verdict.INCONCLUSIVE, f"{n:.0f} live pairs < minPairs {live.min_pairs}"
    if _bad(m.live_agreement):
        return Verdict.INCONCLUSIVE, "no live agreement for the canary"
    if m.live_agreement < live.min:
        return Verdict.FAILED, (f"live agreement with the stable {m.live_agreement:.3f} < {live.min:g} "
                                f"({m.live_pairs:.0f} mirrored images)")
    return Verdict.PASSED, f"live agreement {m.live_agreement:.3f}"


def _checks(m: Measurement, analysis: AnalysisSpec, shadow: bool = False) -> list[tuple[Check, Verdict, str]]:
    out: list[tuple[Check, Verdict, str]] = []
    slo, drift = analysis.slo, analysis.drift
    if slo is not None:
        common: tuple[Verdict, str] | None = None
        if m.slo_error:
            common = (Verdict.ERROR, f"SLO source: {m.slo_error}")
        elif m.slo_unknown:
            common = (Verdict.INCONCLUSIVE, f"SLO source: {m.slo_unknown}")
        elif _bad(m.requests):
            common = (Verdict.INCONCLUSIVE, "no request count for the canary")
        elif m.requests < slo.min_requests:
            common = (Verdict.INCONCLUSIVE, f"{m.requests:.0f} requests < minRequests {slo.min_requests}")
        if common is not None:
            out += [(Check.LATENCY, *common), (Check.ERROR_RATE, *common)]
        else:
            if _bad(m.p99_ms):
                out.append((Check.LATENCY, Verdict.INCONCLUSIVE, "no p99 latency for the canary"))
            elif m.p99_ms > slo.latency_p99_ms:
                out.append((Check.LATENCY, Verdict.FAILED, f"p99 {m.p99_ms:.1f} ms > {slo.latency_p99_ms:g} ms"))
            else:
                out.append((Check.LATENCY, Verdict.PASSED, f"p99 {m.p99_ms:.1f} ms <= {slo.latency_p99_ms:g} ms"))
            if _bad(m.error_rate):
                out.append((Check.ERROR_RATE, Verdict.INCONCLUSIVE, "no error rate for the canary"))
            elif m.error_rate > slo.error_rate:
                out.append((Check.ERROR_RATE, Verdict.FAILED, f"error rate {m.error_rate:.2%} > {slo.error_rate:.2%}"))
            else:
                out.append((Check.ERROR_RATE, Verdict.PASSED, f"errors {m.error_rate:.2%}"))
    if drift is not None:
        if m.drift_error:
            out.append((Check.DRIFT, Verdict.ERROR, f"drift monitor: {m.drift_error}"))
        elif m.drift_unknown:
            out.append((Check.DRIFT, Verdict.INCONCLUSIVE, f"drift monitor: {m.drift_unknown}"))
        elif _bad(m.drift_window_fill) or m.drift_window_fill < 1.0:
            fill = 0.0 if _bad(m.drift_window_fill) else m.drift_window_fill
            out.append((Check.DRIFT, Verdict.INCONCLUSIVE, f"drift window {fill:.0%} full (needs {drift.window} samples)"))
        elif _bad(m.drift_p_value):
            out.append((Check.DRIFT, Verdict.INCONCLUSIVE, "no drift p-value for the canary"))
        elif m.drift_p_value < drift.p_value:
            out.append((Check.DRIFT, Verdict.FAILED, f"input drift: p={m.drift_p_value:.3g} < {drift.p_value:g}"))
        else:
            out.append((Check.DRIFT, Verdict.PASSED, f"drift p={m.drift_p_value:.3g}"))
    if shadow and analysis.live_agreement is not None:
        out.append((Check.LIVE_AGREEMENT, *_live(m, analysis)))
    return out


def _summary(checks: list[tuple[Check, Verdict, str]]) -> tuple[Verdict, str]:
    worst = max((v for _, v, _ in checks), key=SEVERITY.__getitem__)
    texts: list[str] = []
    for _, v, text in checks:
        if v == worst and text not in texts:
            texts.append(text)
    return worst, "; ".join(texts)


def assess(m: Measurement, analysis: AnalysisSpec, shadow: bool = False) -> Assessment:
    """``shadow``: the canary is in a shadow step (the only time its live agreement is judged)."""
    dry = {Check(c) for c in analysis.dry_run or []}
    checks = _checks(m, analysis, shadow)
    acted = [c for c in checks if c[0] not in dry]
    trial = [c for c in checks if c[0] in dry]
    numbers = dict(p99_ms=None if _bad(m.p99_ms) else m.p99_ms,
                   error_rate=None if _bad(m.error_rate) else m.error_rate,
                   requests=None if _bad(m.requests) else m.requests,
                   drift_p_value=None if _bad(m.drift_p_value) else m.drift_p_value,
                   live_agreement=None if _bad(m.live_agreement) or not shadow else m.live_agreement,
                   live_pairs=None if _bad(m.live_pairs) or not shadow else m.live_pairs)
    dry_run = None
    if trial:
        dry_run = "; ".join(f"{c.value}: {v.value} ({text})" for c, v, text in trial)
    if not acted:
        reason = "no SLO or drift test configured: judged by the pause alone" if not checks else \
            "every check is a dry run: judged by the pause alone"
        return Assessment(Verdict.PASSED, reason, dry_run=dry_run, **numbers)
    if all(v == Verdict.PASSED for _, v, _ in acted):
        return Assessment(Verdict.PASSED, "; ".join(t for _, _, t in acted), dry_run=dry_run, **numbers)
    verdict, reason = _summary(acted)
    return Assessment(verdict, reason, dry_run=dry_run, **numbers)


def measurement_due(analysis: AnalysisSpec, status: VisionDeploymentStatus, now: datetime) -> bool:
    """Whether a pass planned at ``now`` from ``status`` may judge a measurement of the canary: the
    handler reads Prometheus only then (not on every pass of a compile, of a step's initial delay, or
    between two measurements).

        no canary, no Prometheus, or nothing to check ───────────────────► no
        step started: its initial delay over, and no measurement since,
                      or the last one an interval old ───────────────────► yes
        no step started: it starts in this pass (no initial delay),
                      or the canary served and its last measurement is an
                      interval old (unready, or a class joining compiles) ─► yes
        otherwise ───────────────────────────────────────────────────────► no

    That is when ``steps.measure`` judges one, but for the pass that first sees a canary turn unready
    (or a joining class compile) inside a step's initial delay: the planner, given no measurement,
    requeues at once and starts the step over, and the next pass's status says due. The price is
    one pass; the gain, no read on each pass of a compile (every 2 s) or a delay.

    ``now`` must be the planner's: the handler passes the same one to both.
    """
    from .model import parse_iso  # model imports this module

    if status.canary_revision is None or analysis.prometheus is None or \
            (analysis.slo is None and analysis.drift is None):
        return False
    interval = seconds(analysis.interval)
    initial = seconds(analysis.initial_delay) if analysis.initial_delay is not None else interval
    last = parse_iso(status.analysis.at) if status.analysis is not None else None
    stale = last is not None and (now - last).total_seconds() >= interval
    started = parse_iso(status.step_started_at)
    if started is None:
        return initial <= 0 or stale
    first_at = started + timedelta(seconds=initial)
    return now >= first_at and (last is None or last < first_at or stale)
