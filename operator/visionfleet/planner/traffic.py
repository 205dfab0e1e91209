"""Gateway API traffic: the weight of each revision's Service on the user's HTTPRoute.

    canary ─ the step's weight once its pods are Ready at the step (before that: 0); 100 for a first
             revision, once it has a Ready pod
    the rest ─ to the stable revisions in proportion to their pods once they are all Ready; until then
             in proportion to the Ready pods of the stable *and* of the leaving revisions (a canary
             rolled back at 100 % keeps its traffic until the stable can take it: make-before-break)

    shadow step ─ the canary's weight is 0; once its pods are Ready a RequestMirror sends the step's
             percent of the requests to its revision Service as well (answers dropped by the gateway):
             to its monitor sidecars when it has them (they pair answers with the stable), else to Triton

The route is written only when the weights change; the leaving revision's Deployment is deleted
after the route has moved (the act layer writes routes before it deletes).
"""

from __future__ import annotations

from .judging import shadowing
from .model import EnsureServing, Mirror, SetRouteWeights, Track
from .serving import ClassServing
from .state import PassState
from .steps import gateway


def route_weights(canary: str | None, canary_weight: int, others: dict[str, float]) -> tuple[tuple[str, int], ...]:
    """Percent of the route's traffic per revision: the canary its weight, the other revisions the
    rest in proportion to ``others``; integers that sum to exactly 100."""
    shares: dict[str, float] = {}
    rest = 100 - (canary_weight if canary else 0)
    total = sum(others.values())
    for rev, n in sorted(others.items()):
        shares[rev] = rest * n / total if total else 0.0
    if canary:
        shares[canary] = float(canary_weight) if total else 100.0
    if not shares:
        return ()
    out = {rev: int(v) for rev, v in shares.items()}
    left = 100 - sum(out.values())
    for rev in sorted(shares, key=lambda r: (-(shares[r] - int(shares[r])), r))[:left]:
        out[rev] += 1
    return tuple(sorted(out.items()))


def canary_route_weight(p: PassState, serving: dict[str, ClassServing]) -> int:
    """The canary's weight on the route this pass (0 until its pods are Ready at the step)."""
    st = p.st
    if st.canary_revision is None or not any(s.canary_ready > 0 for s in serving.values()):
        return 0
    stables = [a for a in p.actions if isinstance(a, EnsureServing) and a.track == Track.STABLE and a.replicas > 0]
    if not stables:
        return 100  # a first revision: nothing else to serve
    if st.step_started_at is None and not st.full_promotion:
        return 0  # the step's pods are not Ready yet (a full promotion keeps the weight it had)
    return st.canary_weight or 0


def shadow_mirror(p: PassState, serving: dict[str, ClassServing]) -> Mirror | None:
    """A shadow step's mirror to the canary, once its pods are Ready (none before: a mirror to a
    Service with no endpoint only makes errors)."""
    st = p.st
    if not shadowing(p) or st.canary_revision is None or not any(s.canary_ready > 0 for s in serving.values()):
        return None
    snap = p.snapshot(st.canary_revision)
    to_monitor = snap is not None and snap.spec.analysis.drift is not None
    return Mirror(st.canary_revision, st.canary_mirror or 100, to_monitor)


def route(p: PassState, serving: dict[str, ClassServing]) -> int | None:
    """Add the SetRouteWeights action; returns the canary's weight on the route (None: no route)."""
    gw = p.spec.rollout.traffic.gateway_api
    if not gateway(p) or gw is None:
        return None
    canary = p.st.canary_revision
    canary_weight = canary_route_weight(p, serving)
    planned: dict[str, int] = {}
    for a in p.actions:
        if isinstance(a, EnsureServing) and a.track == Track.STABLE and a.replicas > 0:
            planned[a.revision] = planned.get(a.revision, 0) + a.replicas
    ready: dict[str, float] = {}
    for s in serving.values():
        for rev, n in s.ready.items():
            if rev != canary:
                ready[rev] = ready.get(rev, 0) + n
    all_ready = all(ready.get(rev, 0) >= n for rev, n in planned.items())
    others: dict[str, float] = {k: float(v) for k, v in planned.items()} if all_ready and planned else \
        {rev: n for rev, n in ready.items() if n > 0}
    if not others:
        # Nothing but the canary is Ready: the route still names the revisions that should serve (a
        # route without them would have its per-revision Services deleted under it).
        others = {k: float(v) for k, v in planned.items()}
    if not others and not canary_weight:
        return 0
    weights = route_weights(canary if canary_weight else None, canary_weight, others)
    if weights:
        p.actions.append(SetRouteWeights(gw.http_route, weights, shadow_mirror(p, serving)))
    return dict(weights).get(canary, 0) if canary else 0
