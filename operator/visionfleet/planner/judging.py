"""Count a canary's measurements and decide what they mean for the rollout (Argo Rollouts' meaning).

    Failed ─────── failures += 1 (over the whole rollout) ── failures >= failureLimit ─► roll back
    Error ──────── errors += 1 (in a row) ───── errors >= consecutiveErrorLimit ──► counts as Inconclusive
    Inconclusive ─ inconclusive += 1 (in a row) ─ >= inconclusiveLimit ─► onInconclusive: Pause (hold;
                                                                           goes on once one passes)
                                                                           or Rollback
    Passed ─────── errors = inconclusive = 0 (a Prometheus that comes back resumes the rollout)

Only a Passed measurement taken after the step's initial delay moves a step on; nothing else ever
does. A rollout held by inconclusive analysis is Paused (condition Paused, reason
AnalysisInconclusive), never promoted.
"""

from __future__ import annotations

from visionfleet.api.spec import InconclusivePolicy
from visionfleet.api.status import AnalysisResult, Verdict

from .analysis import Measurement, assess
from .state import PassState


def shadowing(p: PassState) -> bool:
    """The canary is in a shadow step: it gets a mirror of live requests, users none of its answers."""
    return p.st.canary_revision is not None and p.st.canary_mirror is not None and not p.st.full_promotion


def held_by_analysis(p: PassState) -> bool:
    """The rollout is paused by its analysis: inconclusive (or provider errors) past their limits."""
    a, spec = p.st.analysis, p.spec.analysis
    if a is None or a.verdict == Verdict.PASSED.value:
        return False
    return a.inconclusive >= spec.inconclusive_limit


def judge(p: PassState, m: Measurement) -> str | None:
    """Record one measurement; returns a rollback reason when the rollout must roll back."""
    st, analysis = p.st, p.spec.analysis
    a = assess(m, analysis, shadow=shadowing(p))
    prev = st.analysis
    failures = prev.failures if prev else 0
    inconclusive = prev.inconclusive if prev else 0
    errors = prev.errors if prev else 0
    if a.verdict == Verdict.FAILED:
        failures += 1
        errors = 0
    elif a.verdict == Verdict.ERROR:
        errors += 1
        if errors >= analysis.consecutive_error_limit:
            inconclusive += 1
    elif a.verdict == Verdict.INCONCLUSIVE:
        inconclusive += 1
        errors = 0
    else:
        inconclusive = errors = 0
    st.analysis = AnalysisResult(at=p.now_s, verdict=a.verdict, p99_ms=a.p99_ms, error_rate=a.error_rate,
                                 requests=a.requests, drift_p_value=a.drift_p_value, reason=a.reason[:2048],
                                 live_agreement=a.live_agreement, live_pairs=a.live_pairs,
                                 failures=failures, inconclusive=inconclusive, errors=errors,
                                 dry_run=a.dry_run[:2048] if a.dry_run else None)
    rev = st.canary_revision
    if a.verdict == Verdict.FAILED:
        p.event("Warning", "AnalysisFailed", f"revision {rev}: {a.reason}")
        if failures >= analysis.failure_limit:
            return f"{a.reason} ({failures} of {analysis.failure_limit} failed measurements)"
        return None
    if a.verdict in (Verdict.INCONCLUSIVE, Verdict.ERROR):
        counted = a.verdict == Verdict.INCONCLUSIVE or errors >= analysis.consecutive_error_limit
        what = "inconclusive" if a.verdict == Verdict.INCONCLUSIVE else \
            f"provider error {errors} of {analysis.consecutive_error_limit} in a row"
        p.event("Warning", "AnalysisInconclusive" if counted else "AnalysisError", f"revision {rev}: {what}: {a.reason}")
        if counted and inconclusive >= analysis.inconclusive_limit:
            if analysis.on_inconclusive == InconclusivePolicy.ROLLBACK.value:
                return f"analysis inconclusive {inconclusive} times in a row (onInconclusive: Rollback): {a.reason}"
            if inconclusive == analysis.inconclusive_limit:
                p.event("Warning", "RolloutPaused", f"revision {rev}: paused after {inconclusive} inconclusive "
                        f"measurements in a row ({a.reason}); it goes on once a measurement passes")
    return None
