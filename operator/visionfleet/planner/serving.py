"""What serves on each class: the stable and canary Deployments, and make-before-break for the rest.

    per class:  stable S (what the class serves), canary C (while in flight and compiled there)
      replica traffic: S and C sized by ``replicas.split_replicas`` (the stable never below its
                       minimum until every canary pod of the 100 % step is Ready)
      Gateway API:     S keeps its size for the whole rollout, C gets pods for its share
    any other revision on the class (a canary rolled back, aborted or superseded; the stable before a
    promotion) is *leaving*: it keeps its pods, untouched, until the class's wanted revisions have
    ``replicas.min`` Ready pods — and, for the previous stable, ``rollout.scaleDownDelay`` after the
    promotion — and only then is it deleted. So a class that has served never has fewer Ready pods than
    min(replicas.min, what it had) because of the operator, whatever the transition:

        rollback at 100 %:  S 0 → min (starting)   C min (Ready, serving)   ─► S Ready ─► C deleted

    A class removed from the spec by the user is the exception: its Deployments are deleted at once.

Each class's status gets what users really get: its replicas, Ready pods and the canary's share of
them (``effectiveWeight``), counted as they will be once this pass's scale-downs are done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from visionfleet.api.status import ClassStatus, CompileResult, CompileState

from .durations import seconds
from .model import DeleteServing, EnsureAutoscaler, EnsureServing, Outcome, Track, parse_iso
from .replicas import split_replicas
from .state import PassState, base_replicas
from .steps import autoscaled, canary_size, class_mirror, class_weight, first_rollout, gateway, stable_size


HPA_FOLLOW_SECONDS = 5.0  # how soon a canary's size looks at an autoscaled stable's again


@dataclass
class ClassServing:
    """One class after this pass: Ready pods per revision, as they will be once scale-downs are done."""

    ready: dict[str, int] = field(default_factory=dict)
    canary_ready: int = 0
    waiting: bool = False  # a leaving revision is kept for make-before-break


def stable_result_of(cs: ClassStatus) -> CompileResult | None:
    """The compile result of the class's stable revision: ``stable`` while a newer revision is in
    ``compile``, else ``compile`` itself (kept once, not twice, in a steady state)."""
    if cs.stable is not None:
        return cs.stable
    if cs.compile is not None and cs.stable_revision and cs.compile.revision == cs.stable_revision:
        return cs.compile
    return None


def _promoted_at(p: PassState, revision: str | None):
    at = next((h.at for h in reversed(p.st.history or []) if h.revision == revision
               and h.outcome == Outcome.PROMOTED.value), None)
    return parse_iso(at)


def serve(p: PassState, ok: list[str] | None) -> dict[str, ClassServing]:
    canary = p.st.canary_revision
    out: dict[str, ClassServing] = {}
    wanted: dict[str, dict[str, int]] = {}
    for c in p.classes:
        cs = p.cs[c.name]
        base = stable_size(p, c)
        in_canary = canary is not None and ok is not None and c.name in ok and \
            (class_weight(p, c) > 0 or class_mirror(p, c) > 0)
        stable_n, canary_n = base, 0
        if in_canary:
            weight = class_weight(p, c)
            if first_rollout(p, c):
                canary_n = base_replicas(c)
            elif gateway(p):
                canary_n = canary_size(p, c)
                if autoscaled(c):
                    # the HPA moves the stable without telling the operator: look again soon, so the
                    # canary's share follows within one HPA sync
                    p.wake_in(HPA_FOLLOW_SECONDS)
            else:
                want = split_replicas(base, c.spec.replicas.max, weight, True).canary
                d = p.observed.deployment(c.name, canary)
                split = split_replicas(base, c.spec.replicas.max, weight, d is not None and d.ready >= want)
                stable_n, canary_n = split.stable, split.canary
            p.actions.append(EnsureServing(p.class_of(canary, c), canary, canary_n, cs.compile, Track.CANARY,
                                           p.spec_of(canary)))
            wanted.setdefault(c.name, {})[canary] = canary_n
        stable_result = stable_result_of(cs)
        if cs.stable_revision and stable_result is not None:
            rev = cs.stable_revision
            scaled = autoscaled(c)
            p.actions.append(EnsureServing(p.class_of(rev, c), rev, stable_n, stable_result, Track.STABLE,
                                           p.spec_of(rev), autoscaled=scaled))
            if scaled:
                counted = {rev} | ({canary} if in_canary and canary and class_weight(p, c) > 0 else set())
                p.actions.append(EnsureAutoscaler(c, rev, base_replicas(c), max(c.spec.replicas.max, base_replicas(c)),
                                                  tuple(sorted(counted))))
            wanted.setdefault(c.name, {})[rev] = stable_n
        cls_out = out[c.name] = ClassServing()
        for rev, n in wanted.get(c.name, {}).items():
            d = p.observed.deployment(c.name, rev)
            cls_out.ready[rev] = min(d.ready, n) if d else 0
        cs.stable_replicas = stable_n if cs.stable_revision and stable_result is not None else 0
        cs.canary_replicas = canary_n

    for d in p.observed.deployments:
        mine = wanted.get(d.class_name, {})
        if d.revision in mine:
            continue
        c = p.by_name.get(d.class_name)
        if c is None:
            p.actions.append(DeleteServing(d.class_name, d.revision))  # the class left the spec
            continue
        cs = p.cs[c.name]
        ready_wanted = sum(out[c.name].ready.values())
        # What replaces the leaving revision: the class's stable, or a canary still compiling for it
        # (a first revision superseded before its promotion serves until its successor is Ready).
        replaced = bool(cs.stable_revision) or (canary is not None and not (
            cs.compile is not None and cs.compile.revision == canary and cs.compile.state == CompileState.FAILED.value))
        need = base_replicas(c) if replaced else 0
        keep = ready_wanted < need
        promoted = _promoted_at(p, cs.stable_revision)
        if not keep and promoted is not None and p.newest_outcome(d.revision) == Outcome.PROMOTED.value:
            until = promoted + timedelta(seconds=seconds(p.spec.rollout.scale_down_delay))
            if p.now < until:
                keep = True
                p.wake_in((until - p.now).total_seconds())
        if keep:
            out[c.name].ready[d.revision] = d.ready
            out[c.name].waiting = True
            p.wake_in(2.0)
        else:
            p.actions.append(DeleteServing(d.class_name, d.revision))
    for s in out.values():
        s.canary_ready = s.ready.get(canary, 0) if canary else 0
    return out
