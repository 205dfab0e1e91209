"""The rollout state machine: ``plan(vd, observed, now) -> Plan(actions, status, events)``.

Pure: the same inputs and ``now`` give the same plan. Every fact needed to resume lives in
``status`` (and in the revisions' snapshots), so an operator restarted at any moment picks up where
it was. One pass, in order, one module per concern:

    steps.handle_commands   abort (any moment) / promote (full) / retry — one-shot annotations
    steps.choose_canary     which revision is the canary; its snapshot is taken when it is new
    compiling               compile Jobs per class (and a joining class catching up with the stable);
                            then every running Job the pass does not want is deleted
    steps.advance           readiness, progress deadline, initial delay, analysis, steps and waves
    serving                 Deployments per class and revision; make-before-break for leaving ones
    traffic                 Gateway API route weights
    reporting               per-class numbers, effective weight, conditions
    phases                  the phase, derived from all of the above

docs/operator.md draws the state machine as a table.
"""

from __future__ import annotations

from datetime import datetime

from visionfleet.api.status import CompileState

from .compiling import advance_compile, catch_up, stop_unwanted_compiles
from .judging import held_by_analysis
from .model import (
    EnsureService,
    FAILED_OUTCOMES,
    DeleteServing,
    DeleteSnapshot,
    Observed,
    Outcome,
    Plan,
    VisionDeploymentView,
    parse_iso,
)
from .phases import derive_phase
from .replicas import split_replicas
from .reporting import conditions, report_classes
from .serving import serve
from .state import PassState
from .steps import advance, choose_canary, clamp_position, gateway, handle_commands, measure, paused, served_before
from .traffic import route, route_weights

__all__ = ["FAILED_OUTCOMES", "plan", "route_weights", "split_replicas"]


def _collect_snapshots(p: PassState) -> None:
    """Snapshots no longer needed go: a revision neither serving, in flight, nor asked for, whose
    newest outcome is not a failure (failures are remembered for as long as the object lives)."""
    keep = {p.st.stable_revision, p.st.canary_revision, p.desired}
    keep |= {cs.stable_revision for cs in p.cs.values()}
    keep |= {d.revision for d in p.observed.deployments}
    for s in p.observed.snapshots:
        if s.revision not in keep and not p.failed(s.revision):
            p.actions.append(DeleteSnapshot(s.revision))


def plan(vd: VisionDeploymentView, observed: Observed, now: datetime) -> Plan:
    p = PassState(vd, observed, now)
    clamp_position(p)
    handle_commands(p)
    choose_canary(p)
    ok: list[str] | None = None
    compiling = False
    if p.st.canary_revision:
        ok = advance_compile(p)
        compiling = ok is None and p.st.canary_revision is not None
        if ok is not None:
            advance(p, ok)
            if p.st.canary_revision is None:
                ok = None
    if compiling and served_before(p):
        # A class joining mid-rollout: the classes compiled so far keep their canary pods as they are
        # (judged meanwhile) while the rest compiles. A canary that never served gets no pods before
        # every class has compiled: nothing serves users before its analysis can run.
        measure(p, parse_iso(p.st.analysis.at) if p.st.analysis else p.now)
        if p.st.canary_revision:
            ok = [c.name for c in p.classes if (r := p.cs[c.name].compile) is not None
                  and r.revision == p.st.canary_revision and r.state == CompileState.SUCCEEDED.value]
        else:
            compiling = False
    compiling = catch_up(p) or compiling
    stop_unwanted_compiles(p)
    served = serve(p, ok)
    route_canary = route(p, served)
    report_classes(p, served, route_canary)
    p.st.classes = [p.cs[c.name] for c in p.classes]
    p.st.observed_generation = vd.generation
    last = p.st.history[-1] if p.st.history else None
    rolling_back = last is not None and last.outcome in (Outcome.ROLLED_BACK.value, Outcome.ABORTED.value) and \
        any(d.revision == last.revision for d in observed.deployments)
    conditions(p, compiling, rolling_back)
    _collect_snapshots(p)
    p.st.phase = derive_phase(p.st, desired=p.desired, compiling=compiling and p.st.canary_revision is not None,
                              paused=paused(p) or held_by_analysis(p), rolling_back=rolling_back)
    if any(isinstance(a, DeleteServing) for a in p.actions):
        p.wake_in(2.0)
    if gateway(p) and p.st.stable_revision:
        # <vd>-stable: where a shadow step's canary asks for the stable's answers to the same requests
        p.actions = [EnsureService(stable=p.st.stable_revision) if isinstance(a, EnsureService) else a
                     for a in p.actions]
    return Plan(actions=p.actions, status=p.st, events=p.events, requeue_seconds=p.requeue)
