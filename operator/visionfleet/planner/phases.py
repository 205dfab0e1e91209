"""``derive_phase(status)``: the phase is derived from the rest of the status, never set by hand."""

from __future__ import annotations

from visionfleet.api.status import Phase, VisionDeploymentStatus

from .model import Outcome


def derive_phase(st: VisionDeploymentStatus, *, desired: str, compiling: bool, paused: bool,
                 rolling_back: bool) -> Phase:
    """``desired``: the spec's revision. ``paused``: held by the annotation or by inconclusive analysis.
    ``rolling_back``: the revision just rolled back still has pods (they serve until the stable is
    Ready again). RolledBack (and Failed, for a revision that compiled nowhere) lasts while the spec
    still asks for that revision; once the spec returns to the stable revision the phase is Healthy."""
    last = st.history[-1] if st.history else None
    if st.canary_revision:
        if compiling:
            return Phase.COMPILING
        if paused:
            return Phase.PAUSED
        if st.step_started_at is None and not st.full_promotion:
            return Phase.VERIFYING  # canary pods starting, or a first revision waiting to be Ready
        return Phase.ROLLING_OUT
    # The newest outcome of the revision the spec asks for, wherever it is in the history: after
    # B failed, C was promoted and the spec went back to B, B is still refused (not retried).
    mine = next((h for h in reversed(st.history or []) if h.revision == desired), None) \
        if desired != st.stable_revision else None
    if mine is not None and mine.outcome in (Outcome.ROLLED_BACK.value, Outcome.ABORTED.value):
        return Phase.ROLLING_BACK if rolling_back else Phase.ROLLED_BACK
    if mine is not None and mine.outcome == Outcome.COMPILE_FAILED.value:
        # The revision the spec asks for compiled on no class and is not retried: that is a failure
        # even while an older stable revision keeps serving (a GitOps change that never deployed must
        # not read Healthy). Reverting the spec to the stable revision makes the phase Healthy again.
        return Phase.FAILED
    if st.stable_revision:
        return Phase.HEALTHY
    if last is not None and last.outcome == Outcome.COMPILE_FAILED.value:
        return Phase.FAILED
    return Phase.PENDING
