"""``derive_phase(status)``: the phase is derived from the rest of the status, never set by hand."""

from __future__ import annotations

from visionfleet.api.status import Phase, Verdict, VisionDeploymentStatus


def derive_phase(st: VisionDeploymentStatus, *, desired: str, compiling: bool, paused: bool,
                 rolling_back: bool) -> Phase:
    """``desired``: the spec's revision. RolledBack lasts while the spec still asks for the revision
    that was rolled back; once the spec returns to the stable revision the phase is Healthy again."""
    last = st.history[-1] if st.history else None
    if st.canary_revision:
        if compiling:
            return Phase.COMPILING
        if paused or (st.analysis is not None and st.analysis.verdict == Verdict.INCONCLUSIVE.value):
            return Phase.PAUSED
        if st.step_started_at is None:
            return Phase.VERIFYING  # canary pods starting, or a first revision waiting to be Ready
        return Phase.ROLLING_OUT
    if last is not None and last.outcome in ("RolledBack", "Aborted") and last.revision == desired:
        return Phase.ROLLING_BACK if rolling_back else Phase.ROLLED_BACK
    if st.stable_revision:
        return Phase.HEALTHY
    if last is not None and last.outcome == "CompileFailed":
        return Phase.FAILED
    return Phase.PENDING
