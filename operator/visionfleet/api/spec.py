"""``VisionDeployment.spec``: what the user (or Argo CD) owns.

The operator never writes ``spec``. Which parts of it define a *revision* (model, compile, serving
and the per-class compile targets) and which are only rollout policy (rollout, analysis) is decided
by the planner; this module only describes and validates the shape.

Rules the OpenAPI schema cannot express are CEL rules (``x-kubernetes-validations``) declared next
to the model they constrain, each with a message that names the field and says how to fix it.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal

from pydantic import Field

from .common import (
    IMAGE_MAX,
    LABEL_KEY_MAX,
    LABEL_VALUE_MAX,
    MAX_CLASSES,
    MAX_SELECTOR_TERMS,
    URI_MAX,
    DnsLabel,
    Duration,
    Model,
    Quantity,
    cel,
    default_object,
    validations,
)

# Where a model, a calibration set or a model repository may live. file:// is for the local fleet
# and for tests; pvc:// names <claim>/<path> in the VisionDeployment's namespace.
URI_PATTERN = r"^(pvc|s3|gs|https|file)://.+$"
SHA256_PATTERN = r"^[a-f0-9]{64}$"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, the release tested locally
COMPILE_IMAGE = "ghcr.io/visionfleet/compile:0.1.0"
MONITOR_IMAGE = "ghcr.io/visionfleet/monitor:0.1.0"

NodeSelector = Annotated[
    dict[
        Annotated[str, Field(min_length=1, max_length=LABEL_KEY_MAX)],
        Annotated[str, Field(max_length=LABEL_VALUE_MAX)],
    ],
    Field(max_length=MAX_SELECTOR_TERMS, json_schema_extra={"maxProperties": MAX_SELECTOR_TERMS}),
]


class DataType(str, Enum):
    FP32 = "FP32"
    FP16 = "FP16"
    INT8 = "INT8"
    UINT8 = "UINT8"
    INT32 = "INT32"
    INT64 = "INT64"


class Runtime(str, Enum):
    TENSORRT = "tensorrt"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class TensorSpec(Model):
    """One model input or output, as Triton's config.pbtxt declares it (batch dimension excluded)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.:/-]*$", min_length=1, max_length=128)]
    data_type: DataType = Field(description="Element type, in Triton's names (FP32, INT8, ...).")
    dims: Annotated[
        list[Annotated[int, Field(ge=-1, le=65536)]],
        Field(min_length=1, max_length=8, description="Shape without the batch dimension; -1 is a variable size."),
    ]

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("self.dims.all(d, d != 0)", "dims must be positive sizes, or -1 for a variable size",
                field_path=".dims"),
        )
    }


TensorList = Annotated[list[TensorSpec], Field(min_length=1, max_length=16)]


class ModelSpec(Model):
    """The trained model: any change here is a new revision."""

    name: DnsLabel = Field(description="Model name; also the Triton model name.")
    version: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$")] = Field(
        description="The user's version label. Changing it makes a new revision."
    )
    uri: Annotated[str, Field(pattern=URI_PATTERN, max_length=URI_MAX)] = Field(
        description="Where the ONNX file is: pvc://<claim>/<path>, s3://, gs://, https:// or file://."
    )
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN, min_length=64, max_length=64)] | None = Field(
        default=None, description="Hex sha256 of the ONNX file; required for https://, s3:// and gs:// URIs."
    )
    inputs: TensorList
    outputs: TensorList

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel(
                "!(self.uri.startsWith('https://') || self.uri.startsWith('s3://') || self.uri.startsWith('gs://'))"
                " || has(self.sha256)",
                "sha256 is required when the model is fetched from https://, s3:// or gs:// (pin the exact file)",
                field_path=".sha256",
                reason="FieldValueRequired",
            ),
            cel("self.inputs.all(a, self.inputs.exists_one(b, b.name == a.name))",
                "input names must be unique", field_path=".inputs", reason="FieldValueInvalid"),
            cel("self.outputs.all(a, self.outputs.exists_one(b, b.name == a.name))",
                "output names must be unique", field_path=".outputs", reason="FieldValueInvalid"),
        )
    }


class Toleration(Model):
    key: Annotated[str, Field(max_length=LABEL_KEY_MAX)] | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: Annotated[str, Field(max_length=LABEL_VALUE_MAX)] | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: Annotated[int, Field(ge=0)] | None = None

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("self.operator != 'Exists' || !has(self.value)",
                "a toleration with operator Exists must not set value", field_path=".value"),
        )
    }


class ReplicaRange(Model):
    min: Annotated[int, Field(ge=0, le=1000)] = 1
    max: Annotated[int, Field(ge=1, le=1000)] = 4

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("self.min <= self.max", "replicas.min must be less than or equal to replicas.max",
                field_path=".min"),
        )
    }


# The precisions each runtime builds. ONNX Runtime and OpenVINO serve on CPUs here, where only fp32
# and int8 (static quantization with the calibration set) are worth building; fp16 is a GPU format.
PRECISION_RULE = cel(
    "self.runtime == 'tensorrt' || self.precision != 'fp16'",
    "precision fp16 needs runtime tensorrt; onnxruntime and openvino build fp32 or int8",
    field_path=".precision",
    reason="FieldValueInvalid",
)


class Resources(Model):
    """Requests and limits of a Triton pod of the class (the compile Job gets the same)."""

    requests: Annotated[dict[Annotated[str, Field(max_length=LABEL_KEY_MAX)], Quantity],
                        Field(json_schema_extra={"maxProperties": 8})] | None = None
    limits: Annotated[dict[Annotated[str, Field(max_length=LABEL_KEY_MAX)], Quantity],
                      Field(json_schema_extra={"maxProperties": 8})] | None = None


class NodeClass(Model):
    """One class of nodes: one compile Job runs on it, and one pair of Triton Deployments serves on it."""

    name: DnsLabel
    node_selector: NodeSelector = Field(description="Labels that select the class's nodes.")
    tolerations: Annotated[list[Toleration], Field(max_length=16)] | None = None
    runtime: Runtime
    precision: Precision = Precision.FP32
    resources: Resources | None = None
    replicas: ReplicaRange = default_object(ReplicaRange)

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            PRECISION_RULE,
            cel(
                "self.runtime != 'tensorrt' || (has(self.resources) && has(self.resources.limits)"
                " && 'nvidia.com/gpu' in self.resources.limits)",
                "runtime tensorrt needs a GPU: set resources.limits['nvidia.com/gpu'] (e.g. 1)",
                field_path=".resources",
                reason="FieldValueRequired",
            ),
            cel("size(self.nodeSelector) > 0",
                "nodeSelector must select the class's nodes with at least one label", field_path=".nodeSelector",
                reason="FieldValueRequired"),
        )
    }


class Discover(Model):
    """Classes found from node labels: one class per distinct value tuple of ``groupBy``."""

    group_by: Annotated[list[Annotated[str, Field(min_length=1, max_length=LABEL_KEY_MAX)]],
                        Field(min_length=1, max_length=4)]
    node_selector: NodeSelector | None = Field(default=None, description="Only nodes with these labels.")
    gpu_precision: Precision = Field(default=Precision.FP16, description="Precision for GPU classes (TensorRT).")
    cpu_runtime: Runtime = Field(default=Runtime.OPENVINO, description="Runtime for CPU classes.")
    cpu_precision: Precision = Field(default=Precision.INT8, description="Precision for CPU classes.")
    replicas: ReplicaRange = default_object(ReplicaRange)

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("self.cpuRuntime != 'tensorrt'", "cpuRuntime must be onnxruntime or openvino",
                field_path=".cpuRuntime", reason="FieldValueInvalid"),
            cel("self.cpuPrecision != 'fp16'", "cpuPrecision must be fp32 or int8 (fp16 is a GPU format)",
                field_path=".cpuPrecision", reason="FieldValueInvalid"),
        )
    }


class Fleet(Model):
    classes: Annotated[list[NodeClass], Field(max_length=MAX_CLASSES, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})] | None = Field(
        default=None, description="Explicit node classes. Names are unique (a list-map keyed by name)."
    )
    discover: Discover | None = None

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("(has(self.classes) && size(self.classes) > 0) || has(self.discover)",
                "set fleet.classes (at least one class) or fleet.discover", reason="FieldValueRequired"),
        )
    }


class Calibration(Model):
    uri: Annotated[str, Field(pattern=URI_PATTERN, max_length=URI_MAX)]
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN, min_length=64, max_length=64)] | None = None
    samples: Annotated[int, Field(ge=1, le=100_000)] = 512


class AccuracyMetric(str, Enum):
    TOP1_AGREEMENT = "top1Agreement"
    TOP1_ACCURACY = "top1Accuracy"


class AccuracyGate(Model):
    metric: AccuracyMetric = AccuracyMetric.TOP1_AGREEMENT
    min: Annotated[float, Field(ge=0, le=1)] = 0.99


class BatchingMode(str, Enum):
    AUTO = "auto"
    MANUAL = "manual"


class Batching(Model):
    """Triton dynamic batching: chosen from the compile Job's profile (auto) or given (manual)."""

    mode: BatchingMode = BatchingMode.AUTO
    latency_budget_ms: Annotated[float, Field(gt=0, le=60_000)] | None = Field(
        default=None, description="auto: the p99 latency the chosen settings must stay under."
    )
    max_batch_size: Annotated[int, Field(ge=1, le=1024)] | None = None
    preferred_batch_sizes: Annotated[list[Annotated[int, Field(ge=1, le=1024)]], Field(max_length=8)] | None = None
    max_queue_delay_microseconds: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    instance_count: Annotated[int, Field(ge=1, le=16)] | None = None

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("self.mode != 'auto' || has(self.latencyBudgetMs)",
                "batching.mode auto needs latencyBudgetMs (the p99 budget the settings are chosen under)",
                field_path=".latencyBudgetMs", reason="FieldValueRequired"),
            cel("self.mode != 'manual' || has(self.maxBatchSize)",
                "batching.mode manual needs maxBatchSize", field_path=".maxBatchSize",
                reason="FieldValueRequired"),
            cel("!has(self.preferredBatchSizes) || !has(self.maxBatchSize)"
                " || self.preferredBatchSizes.all(b, b <= self.maxBatchSize)",
                "every preferredBatchSizes entry must be at most maxBatchSize", field_path=".preferredBatchSizes"),
        )
    }


class CompileSpec(Model):
    image: Annotated[str, Field(min_length=1, max_length=IMAGE_MAX)] = COMPILE_IMAGE
    calibration: Calibration | None = None
    accuracy_gate: AccuracyGate = default_object(AccuracyGate)
    batching: Batching = default_object(lambda: Batching(latency_budget_ms=50))
    timeout: Duration = "30m"

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("!(has(self.accuracyGate) && self.accuracyGate.metric == 'top1Accuracy') || has(self.calibration)",
                "accuracyGate.metric top1Accuracy needs a labelled calibration set: set compile.calibration",
                field_path=".calibration", reason="FieldValueRequired"),
        )
    }


class ServingSpec(Model):
    image: Annotated[str, Field(min_length=1, max_length=IMAGE_MAX)] = TRITON_IMAGE
    model_repository: Annotated[str, Field(pattern=URI_PATTERN, max_length=URI_MAX)] | None = Field(
        default=None, description="Where compiled artifacts are kept; defaults to an emptyDir per pod."
    )


class Step(Model):
    set_weight: Annotated[int, Field(ge=0, le=100)] = Field(description="Percent of traffic to the canary.")
    pause: Duration | None = Field(default=None, description="How long to hold the weight before the next step.")


DEFAULT_STEPS = (Step(set_weight=10, pause="1m"), Step(set_weight=50, pause="2m"), Step(set_weight=100))


class TrafficMethod(str, Enum):
    REPLICAS = "Replicas"
    GATEWAY_API = "GatewayAPI"


class GatewayAPITraffic(Model):
    http_route: DnsLabel = Field(description="Name of the HTTPRoute (same namespace) whose backend weights are set.")


class Traffic(Model):
    method: TrafficMethod = TrafficMethod.REPLICAS
    gateway_api: GatewayAPITraffic | None = Field(default=None, alias="gatewayAPI")

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("(self.method == 'GatewayAPI') == has(self.gatewayAPI)",
                "traffic.gatewayAPI is set exactly when traffic.method is GatewayAPI", field_path=".gatewayAPI"),
        )
    }


class RolloutSpec(Model):
    steps: Annotated[list[Step], Field(min_length=1, max_length=16)] = Field(
        default_factory=lambda: [s.model_copy() for s in DEFAULT_STEPS],
        json_schema_extra={"default": [s.to_wire() for s in DEFAULT_STEPS]},
    )
    traffic: Traffic = default_object(Traffic)
    waves: Annotated[list[Annotated[list[DnsLabel], Field(min_length=1, max_length=MAX_CLASSES)]],
                     Field(max_length=MAX_CLASSES)] | None = Field(
        default=None, description="Node classes in waves: each wave rolls out after the previous one is promoted."
    )
    scale_down_delay: Duration = Field(default="30s", description=(
        "How long the previous stable revision keeps serving after a promotion, once its successor is Ready "
        "(Argo Rollouts' scaleDownDelaySeconds): a quick way back while clients and caches move over."))
    progress_deadline: Duration = Field(default="10m", description=(
        "A canary whose pods are not all Ready for this long (at the start of a step, or after turning unready "
        "mid-step) is rolled back with the reason."))

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("self.steps.all(i, s, i == 0 || self.steps[i - 1].setWeight < s.setWeight)",
                "rollout.steps[*].setWeight must strictly ascend (e.g. 10, 50, 100)", field_path=".steps"),
            cel("!has(self.waves) || self.waves.all(i, w, w.all(n,"
                " !self.waves.exists(j, v, j != i && n in v) && w.exists_one(m, m == n)))",
                "a node class may appear in only one wave, once", field_path=".waves",
                reason="FieldValueInvalid"),
        )
    }


class PrometheusSource(Model):
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=URI_MAX)]
    timeout: Duration = "10s"


class SLO(Model):
    latency_p99_ms: Annotated[float, Field(gt=0, le=600_000)]
    error_rate: Annotated[float, Field(ge=0, le=1)] = 0.01
    min_requests: Annotated[int, Field(ge=0, le=100_000_000)] = 100


class InconclusivePolicy(str, Enum):
    PAUSE = "Pause"
    ROLLBACK = "Rollback"


class Check(str, Enum):
    """The checks of one measurement, by name (for ``analysis.dryRun``)."""

    LATENCY = "latency"
    ERROR_RATE = "errorRate"
    DRIFT = "drift"


class DriftDetector(str, Enum):
    BBSD_KS = "bbsd-ks"
    MMD = "mmd"


class DriftSpec(Model):
    """The drift monitor, a sidecar in every Triton pod (docs/drift.md)."""

    detector: DriftDetector = Field(default=DriftDetector.BBSD_KS, description=(
        "bbsd-ks: KS tests on the model's softmax outputs, Bonferroni-corrected; mmd: MMD on reduced inputs."))
    p_value: Annotated[float, Field(gt=0, lt=1)] = Field(default=0.01, description="Drift when p < this.")
    window: Annotated[int, Field(ge=20, le=100_000)] = Field(
        default=500, description="Samples per test; the canary is judged only once its window is full.")
    max_samples_per_second: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=50, description="Samples each monitor takes from the mirrored traffic; the rest are dropped.")
    image: Annotated[str, Field(min_length=1, max_length=IMAGE_MAX)] = MONITOR_IMAGE


class AnalysisSpec(Model):
    interval: Duration = "30s"
    prometheus: PrometheusSource | None = None
    slo: SLO | None = None
    drift: DriftSpec | None = None
    failure_limit: Annotated[int, Field(ge=1, le=100)] = Field(
        default=1, description="Failed measurements that trigger a rollback."
    )
    inconclusive_limit: Annotated[int, Field(ge=1, le=100)] = Field(
        default=3, description=(
            "Inconclusive measurements in a row (too little traffic, no series, drift window filling) after which "
            "onInconclusive applies. An inconclusive measurement never advances a step."))
    on_inconclusive: InconclusivePolicy = Field(default=InconclusivePolicy.PAUSE, description=(
        "Pause: the rollout holds (phase Paused) and goes on by itself once a measurement passes; Rollback: "
        "roll back once inconclusiveLimit is reached."))
    consecutive_error_limit: Annotated[int, Field(ge=1, le=100)] = Field(
        default=4, description=(
            "Provider errors in a row (Prometheus unreachable, refused query, timeout) tolerated as retries; at "
            "the limit the analysis counts as inconclusive (onInconclusive applies). Argo Rollouts' "
            "consecutiveErrorLimit."))
    initial_delay: Duration | None = Field(default=None, description=(
        "Wait after a step's weight took effect (canary Ready) before its first measurement; default one "
        "interval, the query window, so a measurement holds only traffic at the step's weight."))
    dry_run: Annotated[list[Check], Field(max_length=3)] | None = Field(default=None, description=(
        "Checks measured and reported (status.analysis.dryRun) but never acted on: trial a new SLO."))

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("!has(self.slo) || has(self.prometheus)",
                "analysis.slo needs analysis.prometheus.url to read latency and errors from",
                field_path=".prometheus", reason="FieldValueRequired"),
            cel("!has(self.drift) || has(self.prometheus)",
                "analysis.drift needs analysis.prometheus.url to read the drift monitors' p-values from",
                field_path=".prometheus", reason="FieldValueRequired"),
        )
    }


class VisionDeploymentSpec(Model):
    model: ModelSpec
    fleet: Fleet
    compile: CompileSpec = default_object(CompileSpec)
    serving: ServingSpec = default_object(ServingSpec)
    rollout: RolloutSpec = default_object(RolloutSpec)
    analysis: AnalysisSpec = default_object(AnalysisSpec)

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel(
                "!has(self.rollout.waves) || !has(self.fleet.classes) || has(self.fleet.discover)"
                " || self.rollout.waves.all(w, w.all(n, self.fleet.classes.exists(c, c.name == n)))",
                "every class named in rollout.waves must be one of fleet.classes[*].name",
                field_path=".rollout.waves",
                reason="FieldValueInvalid",
            ),
            cel(
                "has(self.compile.calibration)"
                " || !((has(self.fleet.classes) && self.fleet.classes.exists(c, c.precision == 'int8'))"
                " || (has(self.fleet.discover) && (self.fleet.discover.cpuPrecision == 'int8'"
                " || self.fleet.discover.gpuPrecision == 'int8')))",
                "precision int8 needs calibration data: set compile.calibration.uri (or choose fp32/fp16)",
                field_path=".compile.calibration",
                reason="FieldValueRequired",
            ),
            cel(
                "!has(self.analysis.drift) || has(self.compile.calibration)",
                "analysis.drift needs compile.calibration.uri: each revision's drift reference is built "
                "from its calibration set",
                field_path=".compile.calibration",
                reason="FieldValueRequired",
            ),
        )
    }

