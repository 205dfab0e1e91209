"""``VisionDeployment.status``: written only by the operator, through the status subresource.

Everything needed to resume a rollout after a restart lives here (revisions, step, weight, the
analysis counters), so the operator keeps no state of its own. ``phase`` is derived from the rest
by the planner, never set by hand; it is what ``kubectl get vd`` and the Argo CD health check read.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated

from pydantic import AfterValidator, Field

from .common import DnsLabel, Model, URI_MAX
from .spec import AccuracyMetric, Precision, Runtime

REVISION = Annotated[str, Field(pattern=r"^[a-f0-9]{8,64}$")]
MESSAGE = Annotated[str, Field(max_length=2048)]
# A config.pbtxt parameter name or value: plain, so it needs no escaping in protobuf text format.
TRITON_PARAMETER = r"^[A-Za-z0-9_.\-]+$"


def _plain_names(parameters: dict[str, str]) -> dict[str, str]:
    # Checked here, not as a key pattern in the schema: that would become patternProperties, which a
    # CRD's structural schema does not allow.
    bad = [k for k in parameters if not re.fullmatch(TRITON_PARAMETER, k)]
    if bad:
        raise ValueError(f"parameter names must match {TRITON_PARAMETER}: {bad}")
    return parameters
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
    """Triton batching of an artifact, as written into its config.pbtxt: chosen by the compile Job (batching
    mode auto) or taken from the spec (manual)."""

    max_batch_size: Annotated[int, Field(ge=0, le=1024)] = Field(description=(
        "Triton's max_batch_size: the largest batch the dynamic batcher forms; 0 means no dynamic batching."))
    preferred_batch_sizes: Annotated[list[Annotated[int, Field(ge=1, le=1024)]], Field(max_length=8)] | None = Field(
        default=None, description="Batch sizes the dynamic batcher prefers to form.")
    max_queue_delay_microseconds: Annotated[int, Field(ge=0)] | None = Field(default=None, description=(
        "How long in microseconds Triton holds a request to fill a batch."))
    instance_count: Annotated[int, Field(ge=1, le=64)] | None = Field(default=None, description=(
        "Model instances per Triton pod (instance_group count; 1 when unset)."))


class CompileCandidate(Model):
    """One artifact a compile Job built and gated (precision auto tries several; a single precision is one)."""

    precision: Precision = Field(description="Precision of the candidate: int8, fp16, bf16 or fp32.")
    mixed: bool | None = Field(default=None, description=(
        "True for the accuracy-aware int8 (fp32Layers of its layers kept in fp32)."))
    fp32_layers: Annotated[int, Field(ge=0)] | None = Field(default=None, description=(
        "Mixed int8: layers kept in fp32 (the best the search found when none passed)."))
    accuracy: Annotated[float, Field(ge=0, le=1)] | None = Field(default=None, description=(
        "The gate's metric on the held-out images; unset when the candidate never reached the held-out check."))
    search_agreement: Annotated[float, Field(ge=0, le=1)] | None = Field(default=None, description=(
        "Mixed int8: the best top-1 agreement its search reached on calibration images."))
    passed: bool = Field(description="Whether the candidate passed the accuracy gate.")
    throughput: Annotated[float, Field(ge=0)] | None = Field(default=None, description=(
        "Inferences per second at the batching chosen for it (within the latency budget); 0 when no batch fits."))
    batch: Annotated[int, Field(ge=0, le=1024)] | None = Field(default=None, description=(
        "The max batch size chosen for it."))
    p99_ms: Annotated[float, Field(ge=0)] | None = Field(default=None, description=(
        "Profiled p99 latency in ms at that batch."))
    seconds: Annotated[float, Field(ge=0)] | None = Field(default=None, description=(
        "Seconds it took to build and gate (the search included)."))
    chosen: bool | None = Field(default=None, description="True for the candidate the class serves.")


class CompileResult(Model):
    """What one class's compile Job produced for one revision (read from its termination message)."""

    state: CompileState = Field(description="State of the compile: Pending, Running, Succeeded or Failed.")
    revision: REVISION | None = Field(default=None, description="The revision this result belongs to.")
    job: Annotated[str, Field(max_length=253)] | None = Field(default=None, description=(
        "Reserved for the compile Job's name; not set by this operator version (the Job is "
        "<vd>-<class>-<rev8>-compile)."))
    artifact: Annotated[str, Field(max_length=URI_MAX)] | None = Field(default=None, description=(
        "URI of the compiled artifact in the model repository, e.g. "
        "pvc://models/repository/<model>/<revision>-<class>/model.onnx."))
    sha256: Annotated[str, Field(pattern=r"^[a-f0-9]{64}$", max_length=64)] | None = Field(
        default=None, description="Hex sha256 of the artifact file.")
    files: Annotated[dict[Annotated[str, Field(max_length=253)],
                          Annotated[str, Field(pattern=r"^[a-f0-9]{64}$")]],
                     Field(json_schema_extra={"maxProperties": 16})] | None = Field(default=None, description=(
        "Every file of the artifact's repository entry but config.pbtxt, with its hex sha256: what a Triton pod's "
        "init container fetches from an s3:// repository and checks, so the revision runs exactly these bytes."))
    accuracy: Annotated[float, Field(ge=0, le=1)] | None = Field(default=None, description=(
        "The accuracy gate's metric (accuracyMetric, 0 to 1) measured on the held-out images."))
    accuracy_metric: AccuracyMetric | None = Field(default=None, description=(
        "Which metric accuracy is: compile.accuracyGate.metric, or the task's default (top1Agreement, detectionF1, "
        "maskMiou, outputCosine). Unset in results from before this field (top1Agreement)."))
    metrics: Annotated[dict[AccuracyMetric, Annotated[float, Field(ge=0, le=1)]],
                       Field(json_schema_extra={"maxProperties": 8})] | None = Field(default=None, description=(
        "Detection, segmentation and other models: every gate metric the compile Job measured (detectionF1, "
        "detectionMap50 and labelMap50; maskMiou and labelMiou; outputCosine), label* only with labels."))
    p99_ms_at_batch: Annotated[dict[Annotated[str, Field(max_length=8)], float],
                               Field(json_schema_extra={"maxProperties": 32})] | None = Field(
        default=None, description="Profiled p99 latency in ms, keyed by batch size (1 to 32), measured by the "
                                  "compile Job on a node of the class.")
    batching: ChosenBatching | None = Field(default=None, description=(
        "Batching settings written into the artifact's config.pbtxt."))
    # Rendered as the compile Job rendered them, never derived here: an operator with another thread
    # rule must not change the config.pbtxt of a revision that exists.
    parameters: Annotated[dict[Annotated[str, Field(max_length=64)],
                               Annotated[str, Field(max_length=64, pattern=TRITON_PARAMETER)]],
                          AfterValidator(_plain_names), Field(json_schema_extra={"maxProperties": 16})] | None = Field(default=None, description=(
        "Triton backend parameters written into the artifact's config.pbtxt by the compile Job: the CPU threads "
        "derived from the class's resources.limits.cpu (onnxruntime: intra_op_thread_count, "
        "inter_op_thread_count; openvino: INFERENCE_NUM_THREADS, NUM_STREAMS). Unset: none (no CPU limit, "
        "runtime tensorrt, or a result from before this field)."))
    precision: Precision | None = Field(default=None, description=(
        "Precision of the artifact the compile Job kept: with precision auto, the winner among candidates. Unset in "
        "results from before this field (the class's precision)."))
    fp32_layers: Annotated[int, Field(ge=0)] | None = Field(default=None, description=(
        "int8 artifacts: layers the accuracy-aware fallback kept in fp32 so that the gate passes; unset when none."))
    candidates: Annotated[list[CompileCandidate], Field(max_length=8)] | None = Field(default=None, description=(
        "Every candidate built and gated, with its accuracy and, for those that passed, speed at its batching."))
    choice: MESSAGE | None = Field(default=None, description=(
        "precision auto: why the winner won (its speed against the others' and which failed the gate)."))
    compile_seconds: Annotated[float, Field(ge=0)] | None = Field(default=None, description=(
        "Seconds the compile Job spent building, gating and profiling the candidates."))
    message: MESSAGE | None = Field(default=None, description=(
        "Why the compile failed, or what it waits for (an unschedulable pod, no matching node)."))


class ClassStatus(Model):
    """One node class: what it serves, its compile results and pods, and the canary's real share."""

    name: DnsLabel = Field(description="Name of the node class (from fleet.classes, or derived by discover).")
    runtime: Runtime | None = Field(default=None, description=(
        "Runtime of the class: tensorrt, onnxruntime or openvino."))
    precision: Precision | None = Field(default=None, description=(
        "Precision of the class as the spec asks: fp32, fp16, bf16, int8 or auto (compile.precision says which "
        "auto chose)."))
    nodes: Annotated[int, Field(ge=0)] | None = Field(default=None, description=(
        "Nodes that match the class now; at 0 the class keeps serving what it served and Degraded names it."))
    stable_revision: REVISION | None = Field(default=None, description="The revision this class serves as stable.")
    stable: CompileResult | None = Field(default=None, description=(
        "Compile result of the stable revision, kept here while compile holds a newer revision's."))
    compile: CompileResult | None = Field(default=None, description=(
        "Compile result of the newest revision (the stable's own once nothing newer is in flight)."))
    stable_replicas: Annotated[int, Field(ge=0)] = Field(default=0, description=(
        "Triton pods the operator asks for the stable revision on this class."))
    canary_replicas: Annotated[int, Field(ge=0)] = Field(default=0, description=(
        "Triton pods the operator asks for the canary revision on this class (0 without a canary here)."))
    ready: Annotated[int, Field(ge=0)] = Field(default=0, description=(
        "Ready Triton pods of the class, every revision, counted as they will be once this pass's scale-downs "
        "are done."))
    canary_ready: Annotated[int, Field(ge=0)] | None = Field(default=None, description=(
        "Ready canary pods on this class; unset without a canary."))
    effective_weight: Annotated[int, Field(ge=0, le=100)] | None = Field(default=None, description=(
        "Percent of the class's traffic the canary really gets: its share of the Ready pods (replica traffic) "
        "or its route weight (Gateway API)."))
    message: MESSAGE | None = Field(default=None, description=(
        "What needs attention on this class (a step weight its replicas cannot approximate, no nodes left)."))


class AnalysisResult(Model):
    """The canary's last measurement and the counters the limits of spec.analysis apply to."""

    at: Annotated[str, Field(max_length=64)] | None = Field(default=None, json_schema_extra={"format": "date-time"},
                                                           description="When the measurement was taken.")
    verdict: Verdict = Field(description=(
        "Passed, Failed, Inconclusive (no usable data, too little traffic, drift window filling) or Error (the "
        "provider did not answer): the worst of the acted-on checks."))
    p99_ms: float | None = Field(default=None, description=(
        "The canary's p99 latency in ms over the window (worst pod)."))
    error_rate: float | None = Field(default=None, description=(
        "The canary's share of failed requests over the window, 0 to 1."))
    requests: float | None = Field(default=None, description="Requests the canary served over the window.")
    drift_p_value: float | None = Field(default=None, description=(
        "The canary's drift p-value, Bonferroni-corrected over its pods; low means drift."))
    live_agreement: float | None = Field(default=None, description=(
        "During a shadow step: the share of mirrored images on which the canary's answer agreed with the "
        "stable's over the window, 0 to 1 (spec.analysis.liveAgreement)."))
    live_pairs: float | None = Field(default=None, description=(
        "Images the canary and the stable both answered over the window (the pairs liveAgreement counts)."))
    reason: MESSAGE | None = Field(default=None, description=(
        "Why the verdict, e.g. p99 31.2 ms > 20 ms."))
    failures: Annotated[int, Field(ge=0)] = Field(default=0, description=(
        "Failed measurements of this canary so far; rollback at spec.analysis.failureLimit."))
    inconclusive: Annotated[int, Field(ge=0)] = Field(default=0, description=(
        "Inconclusive measurements in a row; spec.analysis.onInconclusive applies at inconclusiveLimit."))
    errors: Annotated[int, Field(ge=0)] = Field(default=0, description=(
        "Provider errors in a row; from spec.analysis.consecutiveErrorLimit on, each one counts as inconclusive."))
    dry_run: MESSAGE | None = Field(default=None, description="What the dry-run checks measured (never acted on).")


class Condition(Model):
    """The standard ``metav1.Condition`` shape."""

    type: Annotated[str, Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Compiled, Progressing, Available, Degraded, RolledBack, Paused, TrafficSplit or InputDrift.")]
    status: Annotated[str, Field(pattern=r"^(True|False|Unknown)$", description="True, False or Unknown.")]
    observed_generation: Annotated[int, Field(ge=0)] | None = Field(default=None, description=(
        "The VisionDeployment's metadata.generation when the condition was set."))
    last_transition_time: Annotated[str, Field(max_length=64)] = Field(
        json_schema_extra={"format": "date-time"},
        description="When status last changed (a new reason or message on the same status keeps it).")
    reason: Annotated[str, Field(
        min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Machine-readable CamelCase reason, e.g. CompileFailed, PausedByUser, WeightNotApproximated.")]
    message: Annotated[str, Field(max_length=32768)] = Field(description="Human-readable details.")


class HistoryEntry(Model):
    """One outcome of a revision's attempt."""

    revision: REVISION = Field(description="The revision.")
    outcome: Annotated[str, Field(max_length=64)] = Field(description=(
        "How the attempt ended: Promoted, RolledBack, Aborted, CompileFailed, Superseded or Retried."))
    reason: MESSAGE | None = Field(default=None, description=(
        "Why, e.g. the failed analysis, the progress deadline or the annotation that acted."))
    at: Annotated[str, Field(max_length=64)] = Field(json_schema_extra={"format": "date-time"},
                                                     description="When it happened.")


class VisionDeploymentStatus(Model):
    observed_generation: Annotated[int, Field(ge=0)] | None = Field(default=None, description=(
        "The metadata.generation of the spec the operator last planned from."))
    phase: Phase | None = Field(default=None, description=(
        "Derived from the rest of the status: Pending, Compiling, Verifying, RollingOut, Paused, Healthy, "
        "RollingBack, RolledBack or Failed."))
    stable_revision: REVISION | None = Field(default=None, description=(
        "The revision promoted last: 12 hex digits of the hash of model, compile, serving, fleet (without "
        "replicas) and analysis.drift."))
    canary_revision: REVISION | None = Field(default=None, description=(
        "The revision rolling out as the canary; unset when none is in flight."))
    step: Annotated[int, Field(ge=0)] | None = Field(default=None, description=(
        "Index (from 0) of the canary's current entry in spec.rollout.steps."))
    wave: Annotated[int, Field(ge=0)] | None = Field(default=None, description="Index of the rollout wave in flight.")
    canary_weight: Annotated[int, Field(ge=0, le=100)] | None = Field(
        default=None, description="Percent of traffic the current step asks for (on the current wave's classes).")
    canary_mirror: Annotated[int, Field(ge=0, le=100)] | None = Field(
        default=None, description=("During a shadow step: percent of live requests mirrored to the canary, whose "
                                   "answers no user gets (canaryWeight is 0)."))
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
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})] | None = Field(
        default=None, description="Per node class: runtime, nodes, compile results, pods and the canary's share.")
    analysis: AnalysisResult | None = Field(default=None, description=(
        "The canary's last measurement and counters; cleared when a new canary starts."))
    conditions: Annotated[list[Condition], Field(max_length=16, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})] | None = Field(
        default=None, description="Standard conditions: Compiled, Progressing, Available, Degraded, RolledBack, "
                                  "Paused, TrafficSplit (replica traffic during a rollout) and InputDrift.")
    history: Annotated[list[HistoryEntry], Field(max_length=HISTORY_MAX)] | None = Field(
        default=None, description=f"The last {HISTORY_MAX} outcomes (Promoted, RolledBack, Aborted, CompileFailed, "
                                  "Superseded, Retried), oldest first.")
