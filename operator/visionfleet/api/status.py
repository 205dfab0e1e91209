"""``VisionDeployment.status``: written only by the operator, through the status subresource.

Everything needed to resume a rollout after a restart lives here (revisions, step, weight, the
analysis counters), so the operator keeps no state of its own. ``phase`` is derived from the rest
by the planner, never set by hand; it is what ``kubectl get vd`` and the Argo CD health check read.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import Field

from .common import DnsLabel, Model, URI_MAX
from .spec import Precision, Runtime

REVISION = Annotated[str, Field(pattern=r"^[a-f0-9]{8,64}$")]
MESSAGE = Annotated[str, Field(max_length=2048)]
HISTORY_MAX = 20


class Phase(str, Enum):
    PENDING = "Pending"
    COMPILING = "Compiling"
    VERIFYING = "Verifying"
    ROLLING_OUT = "RollingOut"
    PAUSED = "Paused"
    HEALTHY = "Healthy"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


class CompileState(str, Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Verdict(str, Enum):
    PASSED = "Passed"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"  # the provider could not answer (unreachable, refused query, timeout)


class ChosenBatching(Model):
    max_batch_size: Annotated[int, Field(ge=0, le=1024)]
    preferred_batch_sizes: Annotated[list[Annotated[int, Field(ge=1, le=1024)]], Field(max_length=8)] | None = None
    max_queue_delay_microseconds: Annotated[int, Field(ge=0)] | None = None
    instance_count: Annotated[int, Field(ge=1, le=64)] | None = None


class CompileResult(Model):
    state: CompileState
    revision: REVISION | None = None
    job: Annotated[str, Field(max_length=253)] | None = None
    artifact: Annotated[str, Field(max_length=URI_MAX)] | None = None
    sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$", max_length=64)] | None = None
    accuracy: Annotated[float, Field(ge=0, le=1)] | None = None
    p99_ms_at_batch: Annotated[dict[Annotated[str, Field(max_length=8)], float],
                               Field(json_schema_extra={"maxProperties": 32})] | None = None
    batching: ChosenBatching | None = None
    message: MESSAGE | None = None


class ClassStatus(Model):
    name: DnsLabel
    runtime: Runtime | None = None
    precision: Precision | None = None
    nodes: Annotated[int, Field(ge=0)] | None = None
    stable_revision: REVISION | None = Field(default=None, description="The revision this class serves as stable.")
    stable: CompileResult | None = Field(default=None, description="Compile result of the stable revision.")
    compile: CompileResult | None = Field(default=None, description="Compile result of the newest revision.")
    stable_replicas: Annotated[int, Field(ge=0)] = 0
    canary_replicas: Annotated[int, Field(ge=0)] = 0
    ready: Annotated[int, Field(ge=0)] = 0
    canary_ready: Annotated[int, Field(ge=0)] | None = Field(default=None, description="Ready canary pods.")
    effective_weight: Annotated[int, Field(ge=0, le=100)] | None = Field(default=None, description=(
        "Percent of the class's traffic the canary really gets: its share of the Ready pods (replica traffic) "
        "or its route weight (Gateway API)."))
    message: MESSAGE | None = Field(default=None, description=(
        "What needs attention on this class (a step weight its replicas cannot approximate, no nodes left)."))


class AnalysisResult(Model):
    at: Annotated[str, Field(max_length=64)] | None = Field(default=None, json_schema_extra={"format": "date-time"})
    verdict: Verdict
    p99_ms: float | None = None
    error_rate: float | None = None
    requests: float | None = None
    drift_p_value: float | None = None
    reason: MESSAGE | None = None
    failures: Annotated[int, Field(ge=0)] = 0
    inconclusive: Annotated[int, Field(ge=0)] = 0
    errors: Annotated[int, Field(ge=0)] = Field(default=0, description="Provider errors in a row.")
    dry_run: MESSAGE | None = Field(default=None, description="What the dry-run checks measured (never acted on).")


class Condition(Model):
    """The standard ``metav1.Condition`` shape."""

    type: Annotated[str, Field(max_length=316, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")]
    status: Annotated[str, Field(pattern=r"^(True|False|Unknown)$")]
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    last_transition_time: Annotated[str, Field(max_length=64)] = Field(json_schema_extra={"format": "date-time"})
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    message: Annotated[str, Field(max_length=32768)]


class HistoryEntry(Model):
    revision: REVISION
    outcome: Annotated[str, Field(max_length=64)]
    reason: MESSAGE | None = None
    at: Annotated[str, Field(max_length=64)] = Field(json_schema_extra={"format": "date-time"})


class VisionDeploymentStatus(Model):
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    phase: Phase | None = None
    stable_revision: REVISION | None = None
    canary_revision: REVISION | None = None
    step: Annotated[int, Field(ge=0)] | None = None
    wave: Annotated[int, Field(ge=0)] | None = Field(default=None, description="Index of the rollout wave in flight.")
    canary_weight: Annotated[int, Field(ge=0, le=100)] | None = Field(
        default=None, description="Percent of traffic the current step asks for (on the current wave's classes).")
    effective_weight: Annotated[int, Field(ge=0, le=100)] | None = Field(
        default=None, description="Percent of the current wave's traffic the canary really gets (Ready canary share).")
    full_promotion: bool | None = Field(
        default=None, description="A promotion by hand is in progress: the canary is scaled to full size and "
                                  "promoted once Ready.")
    canary_unready_since: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, json_schema_extra={"format": "date-time"},
        description="Since when the canary's pods are not all Ready (the progress deadline counts from here).")
    step_started_at: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, json_schema_extra={"format": "date-time"},
        description="When the canary of the current step became ready (the pause counts from here).")
    handled_promote: Annotated[str, Field(max_length=256)] | None = Field(
        default=None, description="Value of the last visionfleet.io/promote annotation acted on.")
    handled_abort: Annotated[str, Field(max_length=256)] | None = Field(
        default=None, description="Value of the last visionfleet.io/abort annotation acted on.")
    handled_retry: Annotated[str, Field(max_length=256)] | None = Field(
        default=None, description="Value of the last visionfleet.io/retry annotation acted on.")
    classes: Annotated[list[ClassStatus], Field(max_length=64, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})] | None = None
    analysis: AnalysisResult | None = None
    conditions: Annotated[list[Condition], Field(max_length=16, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})] | None = None
    history: Annotated[list[HistoryEntry], Field(max_length=HISTORY_MAX)] | None = None
