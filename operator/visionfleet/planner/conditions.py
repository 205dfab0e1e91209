"""Conditions in the standard ``metav1.Condition`` shape, and the reasons the operator uses.

``lastTransitionTime`` moves only when a condition's status flips; a changed message or reason on
the same status keeps the old time (as cert-manager and Argo Rollouts do), so a steady state
rewrites nothing.
"""

from __future__ import annotations

from enum import Enum

from visionfleet.api.status import Condition


class CondType(str, Enum):
    COMPILED = "Compiled"
    PROGRESSING = "Progressing"
    AVAILABLE = "Available"
    DEGRADED = "Degraded"
    ROLLED_BACK = "RolledBack"
    PAUSED = "Paused"
    INPUT_DRIFT = "InputDrift"
    TRAFFIC_SPLIT = "TrafficSplit"


class Reason(str, Enum):
    COMPILING = "Compiling"
    COMPILE_SUCCEEDED = "CompileSucceeded"
    COMPILE_PARTIAL = "CompilePartiallyFailed"
    COMPILE_FAILED = "CompileFailed"
    ROLLING_OUT = "RollingOut"
    PROMOTED = "Promoted"
    ANALYSIS_FAILED = "AnalysisFailed"
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    ABORTED = "Aborted"
    PAUSED_BY_USER = "PausedByUser"
    STABLE = "Stable"
    NO_NODES = "NoNodes"
    REPLICAS_READY = "ReplicasReady"
    REPLICAS_NOT_READY = "ReplicasNotReady"
    NONE = "AsExpected"
    DRIFT_DETECTED = "DriftDetected"
    INVALID_SPEC = "InvalidSpec"
    WEIGHT_APPROXIMATED = "WeightApproximated"
    WEIGHT_NOT_APPROXIMATED = "WeightNotApproximated"
    PODS_WAITING = "PodsWaiting"  # a compile or serving pod cannot be scheduled or started (messages say why)
    CLAIM_NOT_FOUND = "ClaimNotFound"  # a pvc:// of the spec names a claim that does not exist (or is unbound)
    REPOSITORY_NOT_SHARED = "ModelRepositoryNotShared"  # a ReadWriteOnce repository claim, pods on several nodes


def set_condition(conditions: list[Condition], type_: CondType, status: bool, reason: Reason, message: str,
                  now: str, generation: int | None) -> list[Condition]:
    """A new list with ``type_`` set; the transition time moves only when the status flips."""
    value = "True" if status else "False"
    out = []
    found = False
    for c in conditions:
        if c.type != type_.value:
            out.append(c)
            continue
        found = True
        out.append(Condition(
            type=type_.value, status=value, reason=reason.value, message=message[:32768],
            observed_generation=generation,
            last_transition_time=c.last_transition_time if c.status == value else now,
        ))
    if not found:
        out.append(Condition(type=type_.value, status=value, reason=reason.value, message=message[:32768],
                             observed_generation=generation, last_transition_time=now))
    return out


def get_condition(conditions: list[Condition] | None, type_: CondType) -> Condition | None:
    return next((c for c in conditions or [] if c.type == type_.value), None)
