"""What the status tells an SRE: per-class numbers, the canary's real weight, and the conditions.

    effectiveWeight (per class) ── the canary's share of the class's Ready pods (replica traffic) or its
                                   route weight while it has a Ready pod (Gateway API); counted as it
                                   will be once the pass's scale-downs are done
    effectiveWeight (top level) ── the canary's share of all the VisionDeployment's Ready pods: its one
                                   Service <vd> spreads requests over every Ready pod of every class
    TrafficSplit condition ──────── False when a step's weight cannot be approximated with the class's
                                   replicas.max (replica traffic), naming the replicas.max that would do
    waits (class message, Progressing) ─ a compile pod that waits (its compile message, set by
                                   ``compiling``) or a serving pod of the class's stable or canary that is
                                   not Ready and says why (unschedulable, image pull, missing Secret,
                                   crash loop); a Warning Event ServingPodWaiting when a new one appears
    Degraded ───────────────────── compile failures, classes without nodes, a claim the spec names that
                                   does not exist, a model repository claim only one node can mount
"""

from __future__ import annotations

from visionfleet.api.spec import DriftSpec
from visionfleet.api.status import CompileState, Condition

from .conditions import CondType, Reason, get_condition, set_condition
from .judging import held_by_analysis
from .model import Outcome
from .replicas import WEIGHT_TOLERANCE, replicas_needed, share, split_replicas
from .serving import ClassServing
from .state import PassState, base_replicas
from .steps import class_weight, first_rollout, gateway, paused
from .storage import assess_missing_claims, assess_repository_claim
from .waits import describe, is_wait


def _serving_waits(p: PassState, name: str) -> list[str]:
    """Why the class's stable or canary serving pods are not Ready, when a pod says (one per revision)."""
    cs, out = p.cs[name], []
    for rev in dict.fromkeys(r for r in (cs.stable_revision, p.st.canary_revision) if r):
        d = p.observed.deployment(name, rev)
        if d is not None and d.waiting is not None and d.ready < d.replicas:
            out.append(describe(d.waiting, f"serving (revision {rev})", "spec.serving.image"))
    return out


def report_classes(p: PassState, serving: dict[str, ClassServing], route_canary: int | None) -> None:
    canary = p.st.canary_revision
    all_ready = all_canary = 0
    for c in p.classes:
        cs, s = p.cs[c.name], serving[c.name]
        total = sum(s.ready.values())
        cs.ready = total
        cs.canary_ready = s.canary_ready if canary else None
        before = cs.message or ""
        cs.message = None
        if canary is None:
            cs.effective_weight = None
        elif route_canary is not None:
            cs.effective_weight = route_canary if s.canary_ready > 0 else 0
        else:
            cs.effective_weight = share(s.canary_ready, total)
        all_ready += total
        all_canary += s.canary_ready
        if c.nodes == 0:
            cs.message = "no node matches the class's nodeSelector" + \
                ("; its objects are kept and serve what they served" if total else "")
        weight = class_weight(p, c) if canary else 0
        if canary and route_canary is None and not first_rollout(p, c) and 0 < weight < 100:
            best = split_replicas(base_replicas(c), c.spec.replicas.max, weight, True).share
            if abs(best - weight) > WEIGHT_TOLERANCE:
                need = replicas_needed(base_replicas(c), weight)
                cs.message = (f"setWeight {weight}% cannot be approximated with replicas.max {c.spec.replicas.max}: "
                              f"the canary gets {best}% of the pods"
                              + (f"; replicas.max {need} would give {weight}±{WEIGHT_TOLERANCE}%" if need else ""))
        waits = _serving_waits(p, c.name)
        for w in waits:
            if w not in before:
                p.event("Warning", "ServingPodWaiting", f"class {c.name}: {w}")
        if cs.compile is not None and cs.compile.state not in (CompileState.SUCCEEDED.value,
                                                               CompileState.FAILED.value) \
                and is_wait(cs.compile.message):
            waits.insert(0, cs.compile.message)
        p.waits += [(c.name, w) for w in waits]
        # (a setWeight message stays first: the TrafficSplit condition looks for it there)
        cs.message = "; ".join(([cs.message] if cs.message else []) + waits)[:2048] or None
    if canary is None:
        p.st.effective_weight = None
    elif route_canary is not None:
        p.st.effective_weight = route_canary
    else:
        p.st.effective_weight = share(all_canary, all_ready)


def conditions(p: PassState, compiling: bool, rolling_back: bool) -> None:
    st, now, gen = p.st, p.now_s, p.vd.generation
    conds = list(st.conditions or [])
    newest = st.canary_revision or p.desired
    compiled = [c for c in p.classes if p.cs[c.name].compile and p.cs[c.name].compile.revision == newest]
    failed = [c.name for c in compiled if p.cs[c.name].compile.state == CompileState.FAILED.value]
    if compiling:
        conds = set_condition(conds, CondType.COMPILED, False, Reason.COMPILING, f"compiling revision {newest}", now, gen)
    elif failed and len(failed) == len(p.classes):
        conds = set_condition(conds, CondType.COMPILED, False, Reason.COMPILE_FAILED,
                              f"revision {newest} failed to compile on every class", now, gen)
    elif failed:
        conds = set_condition(conds, CondType.COMPILED, True, Reason.COMPILE_PARTIAL,
                              f"revision {newest} failed on {', '.join(failed)} (held back on stable)", now, gen)
    elif newest:
        conds = set_condition(conds, CondType.COMPILED, True, Reason.COMPILE_SUCCEEDED,
                              f"revision {newest} compiled on every class", now, gen)
    # What keeps the rollout (or the stable's pods) from going on, in the condition users read first.
    waiting = "".join(f"; {name}: {w}" for name, w in p.waits)
    if st.canary_revision:
        conds = set_condition(conds, CondType.PROGRESSING, True, Reason.PODS_WAITING if waiting else Reason.ROLLING_OUT,
                              f"revision {st.canary_revision} at step {st.step}, weight {st.canary_weight}% asked, "
                              f"{st.effective_weight}% effective{waiting}", now, gen)
    else:
        conds = set_condition(conds, CondType.PROGRESSING, False, Reason.PODS_WAITING if waiting else Reason.STABLE,
                              (f"serving revision {st.stable_revision}" if st.stable_revision
                               else "nothing to serve yet") + waiting, now, gen)
    serving = [c for c in p.classes if p.cs[c.name].stable_revision]
    unready = [c.name for c in serving
               if (d := p.observed.deployment(c.name, p.cs[c.name].stable_revision)) is None
               or d.ready < d.replicas or d.replicas == 0]
    # At 100 % on replica traffic the stable is at 0 on purpose: the class is available if its canary is.
    unready = [n for n in unready if p.cs[n].ready < base_replicas(p.by_name[n])]
    if serving and not unready:
        conds = set_condition(conds, CondType.AVAILABLE, True, Reason.REPLICAS_READY,
                              f"Ready serving pods on {', '.join(c.name for c in serving)}", now, gen)
    else:
        conds = set_condition(conds, CondType.AVAILABLE, False, Reason.REPLICAS_NOT_READY,
                              f"not Ready: {', '.join(unready)}" if unready else "no stable revision yet", now, gen)
    no_nodes = [c.name for c in p.classes if c.nodes == 0]
    missing = assess_missing_claims(p.spec, p.observed, p.vd.namespace)
    shared = assess_repository_claim(p.spec, p.observed, [(c.name, base_replicas(c)) for c in p.classes
                                                          if not p.vanished(c)])
    if failed or no_nodes or missing or shared:
        parts = ([f"compile failed on {', '.join(failed)}"] if failed else []) + missing + \
                ([shared] if shared else []) + ([f"no nodes for {', '.join(no_nodes)}"] if no_nodes else [])
        reason = (Reason.COMPILE_FAILED if failed else Reason.CLAIM_NOT_FOUND if missing
                  else Reason.REPOSITORY_NOT_SHARED if shared else Reason.NO_NODES)
        before = get_condition(conds, CondType.DEGRADED)
        if (missing or shared) and (before is None or before.message != "; ".join(parts)):
            for m in missing + ([shared] if shared else []):
                if before is None or m not in before.message:
                    p.event("Warning", Reason.CLAIM_NOT_FOUND.value if m in missing
                            else Reason.REPOSITORY_NOT_SHARED.value, m)
        conds = set_condition(conds, CondType.DEGRADED, True, reason, "; ".join(parts), now, gen)
    else:
        conds = set_condition(conds, CondType.DEGRADED, False, Reason.NONE, "all classes compiled and placed", now, gen)
    last = st.history[-1] if st.history else None
    if last is not None and last.outcome in (Outcome.ROLLED_BACK.value, Outcome.ABORTED.value) \
            and not st.canary_revision and last.revision == p.desired:
        conds = set_condition(conds, CondType.ROLLED_BACK, True,
                              Reason.ANALYSIS_FAILED if last.outcome == Outcome.ROLLED_BACK.value else Reason.ABORTED,
                              f"revision {last.revision}: {last.reason}"
                              + (" (the stable revision is starting; the canary serves until it is Ready)"
                                 if rolling_back else ""), now, gen)
    elif get_condition(conds, CondType.ROLLED_BACK) is not None:
        conds = set_condition(conds, CondType.ROLLED_BACK, False, Reason.NONE,
                              "no rollback since the last revision started", now, gen)
    by_user, by_analysis = paused(p), held_by_analysis(p)
    if st.canary_revision and (by_user or by_analysis):
        conds = set_condition(conds, CondType.PAUSED, True,
                              Reason.PAUSED_BY_USER if by_user else Reason.ANALYSIS_INCONCLUSIVE,
                              "paused by the visionfleet.io/paused annotation" if by_user else
                              f"{st.analysis.inconclusive} inconclusive measurements in a row: {st.analysis.reason}; "
                              "the rollout goes on once a measurement passes", now, gen)
    elif get_condition(conds, CondType.PAUSED) is not None:
        conds = set_condition(conds, CondType.PAUSED, False, Reason.NONE, "not paused", now, gen)
    conds = _traffic_split(p, conds)
    st.conditions = _stable_drift(p, conds)


def _traffic_split(p: PassState, conds: list[Condition]) -> list[Condition]:
    off = [f"{c.name}: {p.cs[c.name].message}" for c in p.classes
           if p.cs[c.name].message and p.cs[c.name].message.startswith("setWeight")]
    if p.st.canary_revision and not gateway(p):
        if off:
            return set_condition(conds, CondType.TRAFFIC_SPLIT, False, Reason.WEIGHT_NOT_APPROXIMATED,
                                 "; ".join(off), p.now_s, p.vd.generation)
        return set_condition(conds, CondType.TRAFFIC_SPLIT, True, Reason.WEIGHT_APPROXIMATED,
                             f"every class within {WEIGHT_TOLERANCE} points of the asked weight", p.now_s,
                             p.vd.generation)
    return [c for c in conds if c.type != CondType.TRAFFIC_SPLIT.value]


def _stable_drift(p: PassState, conds: list[Condition]) -> list[Condition]:
    """Drift on the stable revision: the input moved, not the model. A condition and a Warning
    Event when it starts, never a rollback (there is nothing better to roll back to).

    Two tests speak here: the configured detector (bbsd-ks on the model's outputs or their summaries,
    or mmd on the inputs) and the monitors' always-on input-space test, which sees shifts the outputs
    hide (haze, a darker scene). Either one below pValue raises the condition, whose message names the
    test(s) that saw it; it clears only on the detector's own verdict (the input test alone, fine, while
    the detector's window refills is no verdict)."""
    drift: DriftSpec | None = p.spec.analysis.drift
    m = p.observed.stable_drift
    if drift is None:
        return [c for c in conds if c.type != CondType.INPUT_DRIFT.value]
    if m is None or m.drift_error or m.drift_unknown:
        return conds  # no verdict yet: what was last known stands
    seen: list[tuple[str, float]] = []  # (test, p) of the tests with a verdict
    if m.drift_p_value is not None and m.drift_window_fill is not None and m.drift_window_fill >= 1.0:
        detector = str(getattr(drift.detector, "value", drift.detector))
        seen.append((f"{'output summaries' if detector == 'bbsd-ks' else 'input space'} ({detector})",
                     m.drift_p_value))
    detector_known = bool(seen)
    if m.drift_input_p_value is not None:
        seen.append(("input space (input-ks)", m.drift_input_p_value))
    drifted = [(t, pv) for t, pv in seen if pv < drift.p_value]
    rev, now, gen = p.st.stable_revision, p.now_s, p.vd.generation
    if drifted:
        before = get_condition(conds, CondType.INPUT_DRIFT)
        message = (f"the inputs of stable revision {rev} drifted from its calibration set over the last "
                   f"{drift.window} samples: seen by " +
                   " and ".join(f"{t} p={pv:.3g} < {drift.p_value:g}" for t, pv in drifted))
        rest = [(t, pv) for t, pv in seen if pv >= drift.p_value]
        if rest:
            message += "; not by " + ", ".join(f"{t} p={pv:.3g}" for t, pv in rest)
        if before is None or before.status != "True":
            p.event("Warning", "InputDrift", message)
        return set_condition(conds, CondType.INPUT_DRIFT, True, Reason.DRIFT_DETECTED, message, now, gen)
    if not detector_known:
        return conds  # the detector's window is not full: what was last known stands
    return set_condition(conds, CondType.INPUT_DRIFT, False, Reason.NONE,
                         f"stable revision {rev}: " + ", ".join(f"{t} p={pv:.3g} >= {drift.p_value:g}"
                                                               for t, pv in seen), now, gen)

