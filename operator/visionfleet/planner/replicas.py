"""How many pods each revision of a class runs, and what share of the traffic that gives the canary.

Replica traffic: a class's Service spreads requests over every Ready pod of the class, so the canary's
real share is its fraction of the Ready pods. A step's weight is approximated with up to
``replicas.max`` pods in all, the stable never below ``replicas.min`` while the canary runs:

    min 1, max 10, setWeight 10 ──► stable 9 + canary 1 = 10 %     (not 1 + 1 = 50 %)
    min 2, max 4,  setWeight 20 ──► stable 3 + canary 1 = 25 %     (the closest four pods get)
    min 1, max 4,  setWeight 10 ──► stable 3 + canary 1 = 25 %     more than 5 points off: reported,
                                                                   with the replicas.max that would do
    setWeight 100 ──► canary at min; the stable goes to 0 only once every canary pod is Ready

Gateway API traffic: the route sets the share; the stable keeps its size for the whole rollout (a
rollback needs no pod to start: Argo Rollouts' default with traffic routing), the canary gets pods
for its share of the class's load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WEIGHT_TOLERANCE = 5  # percentage points between the asked and the achievable replica share
CLOSE_ENOUGH = 1.0  # a split this close to the asked weight is taken with the fewest pods
REPLICA_SEARCH_MAX = 1000  # the CRD's bound on replicas.max


@dataclass(frozen=True)
class Split:
    stable: int
    canary: int
    share: int  # the canary's share of the pods, percent (what replica traffic gives it once all are Ready)


def _best(base: int, limit: int, weight: int) -> Split:
    """The fewest pods within CLOSE_ENOUGH of ``weight``, else the closest split ``limit`` pods allow."""
    best: tuple[float, int, int] | None = None
    for total in range(base + 1, max(limit, base + 1) + 1):
        canary = min(max(round(total * weight / 100), 1), total - base)
        err = abs(100 * canary / total - weight)
        if best is None or err < best[0] - 1e-9:
            best = (err, total - canary, canary)
        if err <= CLOSE_ENOUGH:
            break
    assert best is not None
    _, stable, canary = best
    return Split(stable, canary, round(100 * canary / (stable + canary)))


def split_replicas(base: int, max_total: int, weight: int, canary_ready: bool) -> Split:
    """(stable, canary) pods of one class for a canary share of ``weight`` percent, replica traffic.
    ``canary_ready``: every canary pod of the 100 % split is Ready (only then may the stable go)."""
    if weight <= 0:
        return Split(base, 0, 0)
    if weight >= 100:
        return Split(0 if canary_ready else base, base, 100)
    return _best(base, max_total, weight)


def replicas_needed(base: int, weight: int) -> int | None:
    """The smallest ``replicas.max`` whose split is within WEIGHT_TOLERANCE of ``weight``."""
    for total in range(base + 1, REPLICA_SEARCH_MAX + 1):
        if abs(_best(base, total, weight).share - weight) <= WEIGHT_TOLERANCE:
            return total
    return None


def gateway_canary_replicas(base: int, weight: int) -> int:
    """Gateway API traffic: canary pods for ``weight`` percent of a class's load that ``base`` pods carry."""
    if weight <= 0:
        return 0
    return base if weight >= 100 else max(1, math.ceil(base * weight / 100))


def share(canary_ready: int, total_ready: int) -> int:
    """The canary's percent of a class's Ready pods (0 when none is Ready)."""
    return round(100 * canary_ready / total_ready) if total_ready else 0
