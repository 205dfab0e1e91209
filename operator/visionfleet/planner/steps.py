"""Which revision is the canary, how it walks its steps and waves, and the commands a person gives.

    spec ──► revision r
      r == stable ......................... steady state (a canary in flight is superseded)
      r's newest outcome failed ........... not tried again until the spec changes or visionfleet.io/retry
      r new ──► canary = r, step 0, snapshot taken (a canary in flight is superseded, its compiles stopped)

    per step i (after compile):
      canary pods not all Ready ─► wait; past rollout.progressDeadline ─► roll back (the reason names the
                                   class); a canary that turns unready mid-step is still judged, and its
                                   step starts over once it is Ready again
      Ready ─► the step starts (the weight has taken effect): the first measurement after
               analysis.initialDelay (default one interval, the query window), then every interval
      Passed (after the initial delay) and the pause over ─► next step / next wave / promote after the last
      Failed × failureLimit ─► roll back          Inconclusive past the limit ─► Pause (or Rollback)

    annotations (one-shot, by new value): abort (any moment, compile too), promote (full: the canary is
    scaled to full size, promoted once Ready, analysis skipped), retry (the spec's failed revision);
    paused=true holds the current step
"""

from __future__ import annotations

from datetime import timedelta

from datetime import datetime

from visionfleet.api.spec import Step, TrafficMethod
from visionfleet.api.status import Verdict

from .analysis import Measurement
from .classes import ResolvedClass
from .compiling import mark_retry, stop_compiles
from .durations import seconds
from .judging import judge, shadowing
from .model import ANNOTATION_ABORT, ANNOTATION_PAUSED, ANNOTATION_PROMOTE, ANNOTATION_RETRY, Outcome, parse_iso
from .replicas import gateway_canary_replicas, split_replicas
from .state import MIN_REQUEUE, PassState, base_replicas


def command(p: PassState, annotation: str, handled_field: str) -> bool:
    """A one-shot command: the annotation carries a value not acted on before."""
    value = p.vd.annotations.get(annotation)
    if value and value != getattr(p.st, handled_field):
        setattr(p.st, handled_field, value)
        return True
    return False


def paused(p: PassState) -> bool:
    return p.vd.annotations.get(ANNOTATION_PAUSED) == "true"


def served_before(p: PassState) -> bool:
    """The canary in flight has served users in this rollout (a step had started)."""
    st = p.st
    return st.canary_revision is not None and (st.analysis is not None or st.step_started_at is not None)


def clamp_position(p: PassState) -> None:
    """``rollout.steps`` and ``rollout.waves`` are policy, editable mid-rollout: a step or wave index
    past the new end is brought back to the last one (and its weight), never an IndexError."""
    st, steps = p.st, p.spec.rollout.steps
    if st.canary_revision is None:
        return
    if st.wave is not None and st.wave >= len(waves(p)):
        st.wave = len(waves(p)) - 1
    if st.step is not None and st.step >= len(steps):
        st.step = len(steps) - 1
    if st.step is not None and (st.canary_weight, st.canary_mirror) != position(steps[st.step]):
        enter_step(p, st.step)


def position(step: Step) -> tuple[int, int | None]:
    """(canaryWeight, canaryMirror) a step asks for."""
    return step.weight, (step.shadow.percent if step.shadow is not None else None)


def enter_step(p: PassState, index: int) -> None:
    """The canary moves to step ``index``: its weight (0 for a shadow step) and mirror; the step
    starts once the canary is Ready at it."""
    st = p.st
    st.step = index
    st.canary_weight, st.canary_mirror = position(p.spec.rollout.steps[index])
    st.step_started_at = None


# -- which revision is the canary ---------------------------------------------------------------


def start_canary(p: PassState, revision: str) -> None:
    st = p.st
    if st.stable_revision:
        stop_compiles(p, st.stable_revision)  # a class catching up with the stable: the canary goes first
    p.ensure_snapshot(revision)
    st.canary_revision = revision
    st.wave = 0
    enter_step(p, 0)
    st.canary_unready_since = None
    st.full_promotion = None
    st.analysis = None
    p.event("Normal", "NewRevision", f"revision {revision}: compiling for {len(p.classes)} node classes")


def supersede(p: PassState, why: str, message: str) -> None:
    rev = p.st.canary_revision
    assert rev is not None
    p.record(rev, Outcome.SUPERSEDED, why)
    p.event("Normal", "Superseded", message)
    stop_compiles(p, rev)
    p.clear_canary()


def choose_canary(p: PassState) -> None:
    st, desired = p.st, p.desired
    if desired == st.stable_revision:
        if st.canary_revision:
            supersede(p, "spec returned to the stable revision",
                      f"canary {st.canary_revision} dropped: spec is back to stable {desired}")
        elif p.snapshot(desired) is None:
            p.ensure_snapshot(desired)  # adopt a stable revision planned before snapshots existed
        return
    if desired == st.canary_revision:
        return
    if p.failed(desired):
        if st.canary_revision:
            supersede(p, f"spec changed to revision {desired}, which failed before",
                      f"canary {st.canary_revision} dropped: the spec asks for {desired}, not retried "
                      "(visionfleet.io/retry tries it again)")
        return
    if st.canary_revision:
        supersede(p, f"spec changed to revision {desired} during the rollout",
                  f"canary {st.canary_revision} superseded by {desired}: traffic back to stable, analysis restarts")
    start_canary(p, desired)


def handle_commands(p: PassState) -> bool:
    """abort / promote / retry; True when the pass must stop here (the canary was aborted)."""
    st = p.st
    promote = command(p, ANNOTATION_PROMOTE, "handled_promote")
    abort = command(p, ANNOTATION_ABORT, "handled_abort")
    retry = command(p, ANNOTATION_RETRY, "handled_retry")
    if retry and st.canary_revision is None and p.failed(p.desired):
        rev = p.desired
        p.record(rev, Outcome.RETRIED, "retried by the visionfleet.io/retry annotation")
        p.event("Normal", "Retried", f"revision {rev} is tried again (visionfleet.io/retry)")
        mark_retry(p, rev)
    if st.canary_revision is None:
        # A promote/abort value set while no rollout is in flight is recorded and ignored, so that a
        # stale annotation (left in Git, say) can never wave a future canary through its analysis.
        return False
    if abort:
        rollback(p, "aborted by the visionfleet.io/abort annotation", Outcome.ABORTED)
        return True
    if promote:
        st.full_promotion = True
        st.step_started_at = None
        p.event("Normal", "PromotionRequested", f"revision {st.canary_revision}: promotion by the visionfleet.io/"
                "promote annotation: scaling the canary to full size, promoted once Ready")
    return False


# -- outcomes -----------------------------------------------------------------------------------


def promote(p: PassState, ok: list[str], reason: str) -> None:
    rev = p.st.canary_revision
    assert rev is not None
    for name in ok:
        cs = p.cs[name]
        cs.stable_revision = rev
        cs.stable = None  # `compile` now holds the stable's result
    p.st.stable_revision = rev
    p.record(rev, Outcome.PROMOTED, reason)
    p.event("Normal", "Promoted", f"revision {rev} promoted on {', '.join(ok)}: {reason}")
    p.clear_canary()


def rollback(p: PassState, reason: str, outcome: Outcome = Outcome.ROLLED_BACK) -> None:
    rev = p.st.canary_revision
    assert rev is not None
    p.record(rev, outcome, reason)
    stop_compiles(p, rev)
    p.event("Warning", "RolledBack", f"revision {rev} rolled back, traffic back to stable "
            f"{p.st.stable_revision} as soon as it is Ready: {reason}")
    p.clear_canary()


# -- steps and waves ----------------------------------------------------------------------------


def waves(p: PassState) -> list[list[str]]:
    """Class names in rollout order; classes no wave names go last, together."""
    names = [c.name for c in p.classes]
    declared = [[n for n in w if n in names] for w in (p.spec.rollout.waves or [])]
    declared = [w for w in declared if w]
    listed = {n for w in declared for n in w}
    rest = [n for n in names if n not in listed]
    return (declared + ([rest] if rest else [])) or [names]


def first_rollout(p: PassState, c: ResolvedClass) -> bool:
    return p.cs[c.name].stable_revision is None


def class_weight(p: PassState, c: ResolvedClass) -> int:
    """The canary's asked share on class ``c``: 100 for waves already through (and during a full
    promotion), the step's weight for the current wave, 0 (no canary yet) for later waves."""
    if p.st.full_promotion or first_rollout(p, c):
        return 100
    index = next((i for i, w in enumerate(waves(p)) if c.name in w), 0)
    current = p.st.wave or 0
    if index < current:
        return 100
    if index == current:
        return p.st.canary_weight or 0
    return 0


def gateway(p: PassState) -> bool:
    return p.spec.rollout.traffic.method == TrafficMethod.GATEWAY_API.value


def class_mirror(p: PassState, c: ResolvedClass) -> int:
    """Percent of class ``c``'s live requests mirrored to the canary (a shadow step, current wave)."""
    if not shadowing(p) or first_rollout(p, c):
        return 0
    index = next((i for i, w in enumerate(waves(p)) if c.name in w), 0)
    return (p.st.canary_mirror or 0) if index == (p.st.wave or 0) else 0


def autoscaled(c: ResolvedClass) -> bool:
    return c.spec.replicas.autoscale is not None


def stable_size(p: PassState, c: ResolvedClass) -> int:
    """The stable's size on class ``c``: ``replicas.min``, or for an autoscaled class what its
    HorizontalPodAutoscaler set (the class's whole load: the autoscaler reads every revision's pods),
    kept within min and max."""
    base = base_replicas(c)
    rev = p.cs[c.name].stable_revision
    if not autoscaled(c) or rev is None:
        return base
    d = p.observed.deployment(c.name, rev)
    return min(max(d.replicas if d else base, base), max(c.spec.replicas.max, base))


def canary_size(p: PassState, c: ResolvedClass) -> int:
    """Canary pods class ``c`` needs at its current asked weight (or mirror: a shadow canary takes
    the mirrored share of the class's load), from the stable's current size (Argo Rollouts' way with
    an HPA: the canary's share follows the autoscaled stable)."""
    base, weight = base_replicas(c), class_weight(p, c)
    if first_rollout(p, c):
        return base
    if gateway(p):
        return gateway_canary_replicas(stable_size(p, c), max(weight, class_mirror(p, c)))
    return split_replicas(base, c.spec.replicas.max, weight, True).canary


def unready_classes(p: PassState, ok: list[str]) -> list[str]:
    """Classes where the step's split is not yet in place ("l4: 1/2 Ready"): the canary has fewer
    Ready pods than its weight needs, or (replica traffic) the stable fewer than the split gives it,
    so the Ready share is not yet the step's weight."""
    rev = p.st.canary_revision
    out = []
    for c in p.classes:
        if c.name not in ok:
            continue
        want = canary_size(p, c)
        if want == 0:
            continue
        d = p.observed.deployment(c.name, rev)
        ready = d.ready if d else 0
        if d is not None and ready > 0 and p.st.step_started_at is not None and autoscaled(c) and gateway(p):
            # The HPA grew the stable and the canary's share with it: its new pods join as they turn
            # Ready, with the step going on and the route unchanged (pulling the canary's traffic at
            # every scale-up would make the weight users get jump to 0 and back).
            continue
        if d is None or ready < want or d.replicas < want:
            out.append(f"{c.name}: {ready}/{want} Ready")
            continue
        stable = p.cs[c.name].stable_revision
        if stable and not gateway(p) and class_weight(p, c) < 100:
            need = split_replicas(base_replicas(c), c.spec.replicas.max, class_weight(p, c), True).stable
            s = p.observed.deployment(c.name, stable)
            if (s.ready if s else 0) < need:
                out.append(f"{c.name}: stable {s.ready if s else 0}/{need} Ready")
    return out


def advance(p: PassState, ok: list[str]) -> None:
    """Walk the canary through its steps (after compile)."""
    st, spec = p.st, p.spec
    unready = unready_classes(p, ok)
    if unready:
        since = parse_iso(st.canary_unready_since) or p.now
        st.canary_unready_since = st.canary_unready_since or p.now_s
        deadline = seconds(spec.rollout.progress_deadline)
        waited = (p.now - since).total_seconds()
        if served_before(p) and not st.full_promotion:
            # A canary that has served (its step had started) is still judged while it is unready.
            measure(p, parse_iso(st.analysis.at) if st.analysis else p.now)
            if st.canary_revision is None:
                return
        # A class's first revision has nothing to fall back to: it waits (Verifying), never rolled back.
        if waited >= deadline and not all(first_rollout(p, c) for c in p.classes if c.name in ok):
            rollback(p, f"canary not Ready within progressDeadline {spec.rollout.progress_deadline} "
                        f"({', '.join(unready)})")
            return
        st.step_started_at = None  # the step starts over once the canary is Ready again
        p.wake_in(min(2.0, max(MIN_REQUEUE, deadline - waited)))
        return
    st.canary_unready_since = None
    if st.full_promotion:
        promote(p, ok, "promoted by the visionfleet.io/promote annotation once the canary was Ready")
        return
    if all(first_rollout(p, c) for c in p.classes if c.name in ok):
        promote(p, ok, "first revision on these classes: nothing to compare against")
        return
    if st.step_started_at is None:
        st.step_started_at = p.now_s
    started = parse_iso(st.step_started_at)
    assert started is not None
    analysis = spec.analysis
    interval = seconds(analysis.interval)
    configured = analysis.slo is not None or analysis.drift is not None
    initial = seconds(analysis.initial_delay) if analysis.initial_delay is not None else (interval if configured else 0)
    first_at = started + timedelta(seconds=initial)
    if p.now < first_at:
        p.wake_in((first_at - p.now).total_seconds())
        return
    measure(p, first_at)
    if st.canary_revision is None or paused(p):
        return
    step = spec.rollout.steps[st.step or 0]
    pause_end = started + timedelta(seconds=seconds(step.hold))
    last = st.analysis
    passed = last is not None and last.verdict == Verdict.PASSED.value and parse_iso(last.at) >= first_at
    if passed and p.now >= pause_end:
        next_step(p, ok)
        return
    waits = [interval]
    if p.now < pause_end:
        waits.append((pause_end - p.now).total_seconds())
    p.wake_in(min(waits))


def measure(p: PassState, since: datetime) -> None:
    """Judge a measurement when one is due: none yet since ``since``, or the last one an interval old."""
    st, analysis = p.st, p.spec.analysis
    interval = seconds(analysis.interval)
    last_at = parse_iso(st.analysis.at) if st.analysis else None
    if not (last_at is None or last_at < since or (p.now - last_at).total_seconds() >= interval):
        return
    m = p.observed.measurement
    if m is None and analysis.slo is None and analysis.drift is None:
        m = Measurement()
    if m is None:
        p.wake_in(MIN_REQUEUE)
        return
    reason = judge(p, m)
    if reason is not None:
        rollback(p, reason)


def next_step(p: PassState, ok: list[str]) -> None:
    st, spec = p.st, p.spec
    if (st.step or 0) + 1 < len(spec.rollout.steps):
        enter_step(p, (st.step or 0) + 1)
        what = f"shadow: {st.canary_mirror}% of requests mirrored to the canary, users see only the stable" \
            if st.canary_mirror is not None else f"canary weight {st.canary_weight}%"
        p.event("Normal", "StepAdvanced", f"step {st.step}: {what}")
        p.wake_in(MIN_REQUEUE)
        return
    ws = waves(p)
    if (st.wave or 0) + 1 < len(ws):
        st.wave = (st.wave or 0) + 1
        enter_step(p, 0)
        p.event("Normal", "WaveAdvanced", f"wave {st.wave} ({', '.join(ws[st.wave])}): "
                f"canary weight {st.canary_weight}%; earlier waves stay fully on the canary")
        p.wake_in(MIN_REQUEUE)
        return
    promote(p, ok, f"all {len(spec.rollout.steps)} steps passed their analysis"
            + (f" in {len(ws)} waves" if len(ws) > 1 else ""))

