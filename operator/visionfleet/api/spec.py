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
# and for tests; pvc:// names <claim>/<path> in the VisionDeployment's namespace. gs:// matches the
# pattern so that the CEL rules below can refuse it with a message that says what to use instead.
URI_PATTERN = r"^(pvc|s3|gs|https|file)://.+$"
NO_GS = ("gs:// is not supported: use s3:// (storage.s3 for endpoint and credentials; GCS serves the S3 API at "
         "https://storage.googleapis.com with HMAC keys), an https:// URL (a signed URL works) or pvc://")
# Where Triton pods can load artifacts from: a claim every serving pod mounts, or an S3 bucket the
# pods' init container fetches from (verifying each file against the compile Job's checksums).
REPOSITORY_RULE = ("serving.modelRepository must be pvc://<claim>/<path> (ReadWriteMany or ReadOnlyMany storage) "
                   "or s3://<bucket>/<prefix>: Triton pods load artifacts only from those")
SHA256_PATTERN = r"^[a-f0-9]{64}$"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, the release tested locally
COMPILE_IMAGE = "ghcr.io/visionfleet/compile:0.1.0"  # CPU classes: ONNX Runtime, OpenVINO
COMPILE_GPU_IMAGE = "ghcr.io/visionfleet/compile-gpu:0.1.0"  # tensorrt classes: TensorRT, CUDA
MONITOR_IMAGE = "ghcr.io/visionfleet/monitor:0.1.0"  # detector bbsd-ks (no torch)
MONITOR_MMD_IMAGE = "ghcr.io/visionfleet/monitor-mmd:0.1.0"  # detector mmd (with torch, alibi-detect's backend)

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
    BF16 = "bf16"
    INT8 = "int8"
    AUTO = "auto"


class TensorSpec(Model):
    """One model input or output, as Triton's config.pbtxt declares it (batch dimension excluded)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.:/-]*$", min_length=1, max_length=128)] = Field(
        description="Tensor name as in the ONNX graph; the compile Job checks it against the model and writes it "
                    "into Triton's config.pbtxt.")
    data_type: DataType = Field(description=(
        "Element type, in Triton's names: FP32, FP16, INT8, UINT8, INT32 or INT64; checked against the ONNX graph."))
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
OUTPUT_NAME = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.:/-]*$", min_length=1, max_length=128)]


class Task(str, Enum):
    """What the model computes; it decides how its outputs are read (accuracy gate, drift summaries)."""

    CLASSIFICATION = "classification"
    DETECTION = "detection"
    SEGMENTATION = "segmentation"
    OTHER = "other"


class DetectionLayout(str, Enum):
    BOXES = "boxes"
    ANCHOR_FREE = "anchorFree"
    OBJECTNESS = "objectness"


class SegmentationLayout(str, Enum):
    LOGITS = "logits"
    PROBABILITY = "probability"
    MASK = "mask"


class BoxFormat(str, Enum):
    XYXY = "xyxy"
    XYWH = "xywh"
    CXCYWH = "cxcywh"


class DetectionOutputs(Model):
    """How a detector's outputs are read (docs/compile.md, "The gate per task")."""

    layout: DetectionLayout = Field(description=(
        "boxes: NMS is in the graph; outputs boxes [N, D, 4], scores [N, D], optional classes [N, D] and count [N] "
        "(name them below). anchorFree: one raw head [N, 4 + C, anchors] (cx, cy, w, h in input pixels, then C "
        "class scores; YOLOv8 style), decoded and NMS-ed by the compile Job and the drift monitor. objectness: one "
        "raw head [N, anchors, 5 + C] (cx, cy, w, h, objectness, C class scores; YOLOv5/YOLOX exported with "
        "decoding)."))
    output: OUTPUT_NAME | None = Field(default=None, description=(
        "anchorFree and objectness: the head's output name. Unset: the first of model.outputs."))
    boxes: OUTPUT_NAME | None = Field(default=None, description="boxes (required): the output with the boxes [N, D, 4].")
    scores: OUTPUT_NAME | None = Field(default=None, description="boxes (required): the output with the scores [N, D].")
    classes: OUTPUT_NAME | None = Field(default=None, description=(
        "boxes: the output with the class ids [N, D]. Unset: one class."))
    count: OUTPUT_NAME | None = Field(default=None, description=(
        "boxes: the output with the number of valid detections per image [N] or [N, 1] (padded outputs, e.g. "
        "TensorRT's EfficientNMS). Unset: every row with a score at least scoreThreshold counts."))
    box_format: BoxFormat | None = Field(default=None, description=(
        "boxes: xyxy (corners), xywh (corner, size) or cxcywh (centre, size), in input pixels. Default xyxy."))
    score_threshold: Annotated[float, Field(gt=0, le=1)] | None = Field(default=None, description=(
        "Detections scoring at least this count (accuracy gate F1, drift summaries). Default 0.25."))
    iou_threshold: Annotated[float, Field(gt=0, le=1)] | None = Field(default=None, description=(
        "anchorFree and objectness: IoU above which NMS suppresses the lower-scoring box of a class. Default 0.45."))
    max_detections: Annotated[int, Field(ge=1, le=10_000)] | None = Field(default=None, description=(
        "anchorFree and objectness: most detections kept per image after NMS. Default 300."))

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("self.layout != 'boxes' || (has(self.boxes) && has(self.scores))",
                "layout boxes needs the names of its boxes and scores outputs (model.detection.boxes, "
                "model.detection.scores)", field_path=".boxes", reason="FieldValueRequired"),
            cel("self.layout == 'boxes' || !(has(self.boxes) || has(self.scores) || has(self.classes) "
                "|| has(self.count) || has(self.boxFormat))",
                "boxes, scores, classes, count and boxFormat belong to layout boxes; a raw head (anchorFree, "
                "objectness) is one output: name it in model.detection.output", field_path=".layout",
                reason="FieldValueInvalid"),
            cel("self.layout != 'boxes' || (!has(self.output) && !has(self.iouThreshold) && !has(self.maxDetections))",
                "layout boxes has NMS in the graph: output, iouThreshold and maxDetections apply to anchorFree and "
                "objectness heads only", field_path=".layout", reason="FieldValueInvalid"),
        )
    }


class SegmentationOutputs(Model):
    """How a segmenter's output is read (docs/compile.md, "The gate per task")."""

    layout: SegmentationLayout = Field(description=(
        "logits: class scores [N, C, H, W], the class of a pixel is the highest (C = 1: one sigmoid logit, "
        "foreground above threshold); probability: a foreground probability [N, 1, H, W] (e.g. DBNet's text map); "
        "mask: class ids [N, H, W] or [N, 1, H, W] (argmax in the graph)."))
    output: OUTPUT_NAME | None = Field(default=None, description=(
        "The output read. Unset: the first of model.outputs."))
    threshold: Annotated[float, Field(gt=0, lt=1)] | None = Field(default=None, description=(
        "probability, and logits with one channel: foreground when the probability is above this. Default 0.5."))
    num_classes: Annotated[int, Field(ge=1, le=4096)] | None = Field(default=None, description=(
        "mask: the number of classes (ids 0 to numClasses - 1). Unset: the highest id seen plus one."))

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("self.layout == 'mask' || !has(self.numClasses)",
                "numClasses is for layout mask (logits and probability carry their classes in the shape)",
                field_path=".numClasses", reason="FieldValueInvalid"),
            cel("self.layout != 'mask' || !has(self.threshold)",
                "threshold is for layouts probability and logits (mask already holds class ids)",
                field_path=".threshold", reason="FieldValueInvalid"),
        )
    }


def _names_an_output(path: str, label: str) -> dict:
    # has() of a field under an absent object is an evaluation error ("no such key"): test the parent first.
    parent = path.split(".")[0]
    return cel(f"!has(self.{parent}) || !has(self.{path}) || self.outputs.exists(o, o.name == self.{path})",
               f"model.{path} must name one of model.outputs[*].name ({label})", field_path=f".{path}",
               reason="FieldValueInvalid")



class ModelSpec(Model):
    """The trained model: any change here is a new revision."""

    name: DnsLabel = Field(description=(
        "Model name (DNS label): the Triton model name and the model's folder in the model repository."))
    version: Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$")] = Field(
        description="The user's version label. Changing it makes a new revision."
    )
    uri: Annotated[str, Field(pattern=URI_PATTERN, max_length=URI_MAX)] = Field(
        description="Where the ONNX file is: pvc://<claim>/<path> (mounted into the compile Job), s3://<bucket>/<key> "
                    "(storage.s3 gives endpoint and credentials), https:// or file:// (a path on the node)."
    )
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN, min_length=64, max_length=64)] | None = Field(
        default=None, description="Hex sha256 of the ONNX file; required for https://, s3:// and gs:// URIs. "
                                  "When set, the compile Job fails on a file that does not match."
    )
    inputs: TensorList = Field(description=(
        "The model's inputs (1 to 16, unique names), checked against the ONNX graph by the compile Job; the drift "
        "monitor reads the first one."))
    outputs: TensorList = Field(description=(
        "The model's outputs (1 to 16, unique names), checked against the ONNX graph by the compile Job; the drift "
        "monitor (bbsd-ks) reads a classifier's first one, and every output of other tasks."))
    task: Task | None = Field(default=None, description=(
        "What the model computes: classification, detection, segmentation or other. It decides the accuracy gate's "
        "metrics and what the default drift test summarises (docs/compile.md, docs/drift.md). Default "
        "classification."))
    detection: DetectionOutputs | None = Field(default=None, description=(
        "task detection (required): how boxes, scores and classes are read from the outputs."))
    segmentation: SegmentationOutputs | None = Field(default=None, description=(
        "task segmentation (required): how the class of each pixel is read from the output."))

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel(
                "!(self.uri.startsWith('https://') || self.uri.startsWith('s3://') || self.uri.startsWith('gs://'))"
                " || has(self.sha256)",
                "sha256 is required when the model is fetched from https://, s3:// or gs:// (pin the exact file)",
                field_path=".sha256",
                reason="FieldValueRequired",
            ),
            cel("!self.uri.startsWith('gs://')", NO_GS, field_path=".uri", reason="FieldValueInvalid"),
            cel("self.inputs.all(a, self.inputs.exists_one(b, b.name == a.name))",
                "input names must be unique", field_path=".inputs", reason="FieldValueInvalid"),
            cel("self.outputs.all(a, self.outputs.exists_one(b, b.name == a.name))",
                "output names must be unique", field_path=".outputs", reason="FieldValueInvalid"),
            cel("has(self.task) && self.task == 'detection' ? has(self.detection) : !has(self.detection)",
                "model.detection (the output layout: boxes, anchorFree or objectness) is required with task "
                "detection and read by no other task", field_path=".detection", reason="FieldValueInvalid"),
            cel("has(self.task) && self.task == 'segmentation' ? has(self.segmentation) : !has(self.segmentation)",
                "model.segmentation (the output layout: logits, probability or mask) is required with task "
                "segmentation and read by no other task", field_path=".segmentation", reason="FieldValueInvalid"),
            _names_an_output("detection.output", "the detection head"),
            _names_an_output("detection.boxes", "the boxes output"),
            _names_an_output("detection.scores", "the scores output"),
            _names_an_output("detection.classes", "the class ids output"),
            _names_an_output("detection.count", "the detection count output"),
            _names_an_output("segmentation.output", "the segmentation output"),
        )
    }


class Toleration(Model):
    """A Kubernetes pod toleration, copied into the class's compile Job and Triton pods."""

    key: Annotated[str, Field(max_length=LABEL_KEY_MAX)] | None = Field(default=None, description=(
        "Taint key to tolerate; omitted (operator Exists), every key matches."))
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description=(
        "Equal: the taint's value must equal value; Exists: any value of key (value must be unset). Default Equal."))
    value: Annotated[str, Field(max_length=LABEL_VALUE_MAX)] | None = Field(default=None, description=(
        "Taint value to match with operator Equal."))
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(default=None, description=(
        "Taint effect to match: NoSchedule, PreferNoSchedule or NoExecute; omitted, every effect."))
    toleration_seconds: Annotated[int, Field(ge=0)] | None = Field(default=None, description=(
        "With effect NoExecute: seconds the pod stays on a node after the taint appears; omitted, forever."))

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("self.operator != 'Exists' || !has(self.value)",
                "a toleration with operator Exists must not set value", field_path=".value"),
        )
    }


class AutoscaleMetric(str, Enum):
    INFERENCE_RATE = "inferenceRate"
    QUEUE_TIME = "queueTime"


class Autoscale(Model):
    """A HorizontalPodAutoscaler per class, fed Triton's own metrics through a custom/external metrics
    adapter (docs/serving.md): it sizes the stable; the canary gets its share from the stable's size."""

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("!has(self.scaleDownStabilization) || duration(self.scaleDownStabilization) <= duration('1h')",
                "scaleDownStabilization is at most 1h (the HorizontalPodAutoscaler's limit)",
                field_path=".scaleDownStabilization"),
        )
    }

    metric: AutoscaleMetric = Field(default=AutoscaleMetric.INFERENCE_RATE, description=(
        "inferenceRate: the class's inferences per second (the stable's and a weighted canary's pods), held at "
        "target per pod; "
        "queueTime: the class's mean queue time in ms, held at target. Default inferenceRate."))
    target: Annotated[float, Field(gt=0, le=1_000_000)] = Field(description=(
        "Inferences per second per pod (inferenceRate) or queue milliseconds (queueTime) the autoscaler holds."))
    scale_down_stabilization: Duration = Field(default="5m", description=(
        "The autoscaler scales in to the highest size it recommended over this window (its "
        "behavior.scaleDown.stabilizationWindowSeconds; Kubernetes' default 5m). Keep it longer than the metric's "
        "rate window (1m in the chart's adapter rules): at a promotion the class's load moves from the old "
        "stable's series to the new one's, whose rate() climbs over that window, and a shorter stabilization "
        "would scale the new stable in meanwhile. Default 5m."))


class ReplicaRange(Model):
    """Triton pods of a node class: its serving size, and how far a canary split may grow."""

    min: Annotated[int, Field(ge=0, le=1000)] = Field(default=1, description=(
        "Triton pods each serving revision runs on the class (at least 1, even when 0 is given); the stable never "
        "goes below it while a canary runs, except at a 100% step. Default 1."))
    max: Annotated[int, Field(ge=1, le=1000)] = Field(default=4, description=(
        "Replica traffic: most pods of the class in all (stable + canary) used to approximate a step's weight; "
        "one more when min leaves no room for a canary pod. With autoscale: the most the autoscaler gives the "
        "stable. Default 4."))
    autoscale: Autoscale | None = Field(default=None, description=(
        "Scale the class's stable between min and max on Triton's metrics (a HorizontalPodAutoscaler the "
        "operator owns; the operator then never sets the stable's replicas). Needs rollout.traffic.method "
        "GatewayAPI. Unset: the class runs min pods."))

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("self.min <= self.max", "replicas.min must be less than or equal to replicas.max",
                field_path=".min"),
        )
    }


# The precisions each runtime builds: fp16 is TensorRT's (a GPU format), bf16 OpenVINO's (on CPUs with
# AVX-512 BF16 or AMX; the compile Job refuses it elsewhere, and refuses openvino fp32 on such CPUs,
# where Triton's openvino backend cannot keep the plugin from computing in bf16).
PRECISION_RULE = cel(
    "self.runtime == 'tensorrt' || self.precision != 'fp16'",
    "precision fp16 needs runtime tensorrt; onnxruntime builds fp32, int8 or auto, openvino fp32, bf16, int8 or auto",
    field_path=".precision",
    reason="FieldValueInvalid",
)
BF16_RULE = cel(
    "self.runtime == 'openvino' || self.precision != 'bf16'",
    "precision bf16 needs runtime openvino (on a CPU with AVX-512 BF16 or AMX); tensorrt builds fp16, int8 or auto",
    field_path=".precision",
    reason="FieldValueInvalid",
)


class Resources(Model):
    """Requests and limits of a Triton pod of the class (the compile Job gets the same)."""

    requests: Annotated[dict[Annotated[str, Field(max_length=LABEL_KEY_MAX)], Quantity],
                        Field(json_schema_extra={"maxProperties": 8})] | None = Field(default=None, description=(
        "Resource requests (e.g. cpu: 2, memory: 4Gi) of the Triton container and of the compile Job's container."))
    limits: Annotated[dict[Annotated[str, Field(max_length=LABEL_KEY_MAX)], Quantity],
                      Field(json_schema_extra={"maxProperties": 8})] | None = Field(default=None, description=(
        "Resource limits of the Triton container and of the compile Job's container; runtime tensorrt needs "
        "nvidia.com/gpu here (e.g. 1)."))


NAME_REF = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]


class KeyRef(Model):
    """One key of a Secret or ConfigMap in the VisionDeployment's namespace."""

    name: NAME_REF = Field(description="Name of the Secret or ConfigMap (same namespace).")
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = Field(
        description="The key whose value becomes the variable's value.")
    optional: bool | None = Field(default=None, description=(
        "true: a missing Secret/ConfigMap or key leaves the variable unset instead of keeping the pod from "
        "starting."))


class EnvVarSource(Model):
    """Where an environment variable's value comes from: one Secret key or one ConfigMap key."""

    secret_key_ref: KeyRef | None = Field(default=None, description="A key of a Secret (e.g. an access key).")
    config_map_key_ref: KeyRef | None = Field(default=None, description="A key of a ConfigMap.")

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("has(self.secretKeyRef) != has(self.configMapKeyRef)",
                "valueFrom needs exactly one of secretKeyRef or configMapKeyRef"),
        )
    }


class EnvVar(Model):
    """An environment variable of the compile Job's container (a proxy, a CA path, a credential)."""

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")] = Field(
        description="Variable name; names starting with VISIONFLEET_ are reserved for the request the operator "
                    "passes.")
    value: Annotated[str, Field(max_length=4096)] | None = Field(default=None, description=(
        "Literal value (never a secret: the Job's spec is readable by anyone who can read Jobs)."))
    value_from: EnvVarSource | None = Field(default=None, description=(
        "The value from a Secret key or a ConfigMap key, instead of value."))

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("!(has(self.value) && has(self.valueFrom))", "set value or valueFrom, not both",
                field_path=".valueFrom"),
            cel("!self.name.startsWith('VISIONFLEET_')",
                "environment variables named VISIONFLEET_* are set by the operator (the compile request)",
                field_path=".name"),
        )
    }


class LocalRef(Model):
    name: NAME_REF = Field(description="Name of the object in the VisionDeployment's namespace.")


class EnvFromSource(Model):
    """Every key of a Secret or ConfigMap as environment variables of the compile Job's container."""

    secret_ref: LocalRef | None = Field(default=None, description="A Secret, e.g. with AWS_ACCESS_KEY_ID.")
    config_map_ref: LocalRef | None = Field(default=None, description="A ConfigMap, e.g. with HTTPS_PROXY.")

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("has(self.secretRef) != has(self.configMapRef)",
                "envFrom entries need exactly one of secretRef or configMapRef"),
        )
    }


class S3Storage(Model):
    """How compile Jobs and Triton pods reach s3:// URIs (model.uri, compile.calibration.uri and
    serving.modelRepository). Unset fields fall back to the AWS defaults and the pods' identity."""

    endpoint: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/.*)?$", max_length=URI_MAX)] | None = Field(
        default=None, description="Endpoint of an S3-compatible store (MinIO, Ceph RGW, GCS's S3 API at "
                                  "https://storage.googleapis.com), e.g. http://minio.storage:9000; unset, AWS S3.")
    region: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")] | None = Field(
        default=None, description="Region of the bucket, e.g. eu-west-1 (AWS_REGION); unset, the SDK's default chain.")
    credentials_secret: NAME_REF | None = Field(default=None, description=(
        "Secret (same namespace) with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (optionally "
        "AWS_SESSION_TOKEN), passed as environment to compile Jobs and to the Triton pods' fetch init container. "
        "Unset: the pods' own AWS identity (compile.serviceAccountName / serving.serviceAccountName with IRSA or EKS "
        "Pod Identity), or the node's role. GCS through its S3 API needs HMAC keys here."))


class Storage(Model):
    """Object storage settings shared by compile Jobs and serving pods."""

    s3: S3Storage | None = Field(default=None, description="Settings for s3:// URIs.")


class NodeClass(Model):
    """One class of nodes: one compile Job runs on it, and one pair of Triton Deployments serves on it."""

    name: DnsLabel = Field(description=(
        "Class name (DNS label, unique): part of its Job and Deployment names (<vd>-<class>-<rev8>) and what "
        "rollout.waves name."))
    node_selector: NodeSelector = Field(description=(
        "Labels that select the class's nodes (at least one); set as the nodeSelector of its compile Job and "
        "Triton pods."))
    tolerations: Annotated[list[Toleration], Field(max_length=16)] | None = Field(default=None, description=(
        "Tolerations (at most 16) for the class's compile Job and Triton pods, e.g. for a tainted GPU pool."))
    runtime: Runtime = Field(description=(
        "Runtime the model is compiled for and served with: tensorrt (GPU; needs resources.limits nvidia.com/gpu), "
        "onnxruntime or openvino (CPU)."))
    precision: Precision = Field(default=Precision.FP32, description=(
        "Precision of the artifact: fp32 (onnxruntime; openvino on a CPU without bf16), bf16 (openvino on a CPU "
        "with AVX-512 BF16 or AMX), fp16 (tensorrt), int8 (needs compile.calibration; a classifier that misses "
        "the gate keeps its most sensitive layers in fp32, see compile.int8Fallback) or auto: the compile Job "
        "builds every candidate this class's hardware runs (int8 with calibration images, and the runtime's float "
        "format), gates each and keeps the fastest that passes within the latency budget; the result and status "
        "say which won and why. tensorrt builds fp16, int8 or auto. Default fp32."))
    resources: Resources | None = Field(default=None, description=(
        "Requests and limits of the class's Triton container and compile Job container; unset, none."))
    compile_image: Annotated[str, Field(min_length=1, max_length=IMAGE_MAX)] | None = Field(default=None, description=(
        "Image of this class's compile Job, for a class whose hardware needs its own build (e.g. a Jetson "
        "pool). Unset: compile.gpuImage for runtime tensorrt, compile.image for onnxruntime and openvino."))
    compile_resources: Resources | None = Field(default=None, description=(
        "Requests and limits of the class's compile Job container. Unset: the class's resources (so the profile "
        "that picks batching runs with the CPUs and GPU a Triton pod gets), with requests cpu 1 and memory 2Gi and "
        "a memory limit of 8Gi added where those are missing (never BestEffort)."))
    runtime_class_name: NAME_REF | None = Field(default=None, description=(
        "RuntimeClass of the class's Triton and compile pods (e.g. nvidia, where the GPU runtime is not the "
        "node's default); unset, the node's default runtime."))
    priority_class_name: NAME_REF | None = Field(default=None, description=(
        "PriorityClass of the class's Triton pods (serving usually outranks batch work on a shared pool); unset, "
        "the cluster's default."))
    replicas: Annotated[ReplicaRange, Field(description=(
        "Triton pods of the class (not part of the revision: changing it recompiles nothing). "
        "Default {min: 1, max: 4}."))] = default_object(ReplicaRange)

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            PRECISION_RULE,
            BF16_RULE,
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
                        Field(min_length=1, max_length=4)] = Field(description=(
        "Node label keys (1 to 4): one class per distinct tuple of their values, named after the values; a node "
        "without a key is grouped under the value none (its pods require the label to be absent)."))
    node_selector: NodeSelector | None = Field(default=None, description=(
        "Only nodes with these labels are grouped; unset, every node."))
    gpu_precision: Precision = Field(default=Precision.FP16, description=(
        "Precision for GPU classes (a node of the group has nvidia.com/gpu capacity; they run tensorrt with "
        "1 GPU): fp16, int8 or auto. Default fp16."))
    cpu_runtime: Runtime = Field(default=Runtime.OPENVINO, description=(
        "Runtime for CPU classes: onnxruntime or openvino. Default openvino."))
    cpu_precision: Precision = Field(default=Precision.INT8, description=(
        "Precision for CPU classes: fp32, bf16 (cpuRuntime openvino), int8 (needs compile.calibration) or auto "
        "(as fleet.classes[].precision). Default int8."))
    gpu_runtime_class_name: NAME_REF | None = Field(default=None, description=(
        "RuntimeClass of the Triton and compile pods of GPU classes (e.g. nvidia); unset, the node's default."))
    priority_class_name: NAME_REF | None = Field(default=None, description=(
        "PriorityClass of the Triton pods of every discovered class; unset, the cluster's default."))
    replicas: Annotated[ReplicaRange, Field(description=(
        "Triton pods of every discovered class (as fleet.classes[].replicas). Default {min: 1, max: 4}."))] = \
        default_object(ReplicaRange)

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("self.cpuRuntime != 'tensorrt'", "cpuRuntime must be onnxruntime or openvino",
                field_path=".cpuRuntime", reason="FieldValueInvalid"),
            cel("self.cpuPrecision != 'fp16'", "cpuPrecision must be fp32, bf16, int8 or auto (fp16 is a GPU format)",
                field_path=".cpuPrecision", reason="FieldValueInvalid"),
            cel("self.cpuPrecision != 'bf16' || self.cpuRuntime == 'openvino'",
                "cpuPrecision bf16 needs cpuRuntime openvino", field_path=".cpuPrecision", reason="FieldValueInvalid"),
            cel("self.gpuPrecision in ['fp16', 'int8', 'auto']", "gpuPrecision must be fp16, int8 or auto (tensorrt)",
                field_path=".gpuPrecision", reason="FieldValueInvalid"),
        )
    }


class Fleet(Model):
    """The node classes the model is compiled for and served on."""

    classes: Annotated[list[NodeClass], Field(max_length=MAX_CLASSES, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})] | None = Field(
        default=None, description="Explicit node classes (at most 32), taken as written; when set, discover is not "
                                  "used. Names are unique (a list-map keyed by name)."
    )
    discover: Discover | None = Field(default=None, description=(
        "Classes found from node labels, re-resolved as nodes come and go; used when classes is empty."))

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("(has(self.classes) && size(self.classes) > 0) || has(self.discover)",
                "set fleet.classes (at least one class) or fleet.discover", reason="FieldValueRequired"),
        )
    }


class Calibration(Model):
    """Sample inputs: int8 calibration, the accuracy gate's held-out set and the drift reference."""

    uri: Annotated[str, Field(pattern=URI_PATTERN, max_length=URI_MAX)] = Field(description=(
        "A .npz with an images array shaped like the first input (optional labels, -1 = unknown): "
        "pvc://<claim>/<path>, s3://<bucket>/<key>, https:// or file://."))
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN, min_length=64, max_length=64)] | None = Field(
        default=None, description="Hex sha256 of the .npz; when set, the compile Job fails on a file that does "
                                  "not match.")
    samples: Annotated[int, Field(ge=1, le=100_000)] = Field(default=512, description=(
        "The first samples images calibrate int8 and build the drift reference; the images after them are the "
        "accuracy gate's held-out set. Default 512."))

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("!self.uri.startsWith('gs://')", NO_GS, field_path=".uri", reason="FieldValueInvalid"),
        )
    }


class AccuracyMetric(str, Enum):
    TOP1_AGREEMENT = "top1Agreement"
    TOP1_ACCURACY = "top1Accuracy"
    DETECTION_F1 = "detectionF1"
    DETECTION_MAP50 = "detectionMap50"
    LABEL_MAP50 = "labelMap50"
    MASK_MIOU = "maskMiou"
    LABEL_MIOU = "labelMiou"
    OUTPUT_COSINE = "outputCosine"


# Per task: the metrics the gate may read, the default one first, and the default minimum (the compile
# program's gates.DEFAULT_GATE states the same).
TASK_METRICS: dict[Task, tuple[tuple[AccuracyMetric, ...], float]] = {
    Task.CLASSIFICATION: ((AccuracyMetric.TOP1_AGREEMENT, AccuracyMetric.TOP1_ACCURACY), 0.99),
    Task.DETECTION: ((AccuracyMetric.DETECTION_F1, AccuracyMetric.DETECTION_MAP50, AccuracyMetric.LABEL_MAP50), 0.9),
    Task.SEGMENTATION: ((AccuracyMetric.MASK_MIOU, AccuracyMetric.LABEL_MIOU), 0.9),
    Task.OTHER: ((AccuracyMetric.OUTPUT_COSINE,), 0.99),
}


_TASK_METRICS_CEL = "{" + ", ".join(
    f"'{task.value}': [{', '.join(repr(m.value) for m in metrics)}]" for task, (metrics, _) in TASK_METRICS.items()) + "}"


def gate_defaults(task: Task | None) -> tuple[AccuracyMetric, float]:
    """The accuracy gate's (metric, min) when the spec leaves them unset."""
    metrics, least = TASK_METRICS[task or Task.CLASSIFICATION]
    return metrics[0], least


class AccuracyGate(Model):
    """The compiled artifact against the fp32 ONNX reference, on held-out images (docs/compile.md)."""

    metric: AccuracyMetric | None = Field(default=None, description=(
        "classification: top1Agreement (the artifact's top-1 class is the fp32 reference's) or top1Accuracy "
        "(against labels). detection: detectionF1 (detections matched to the reference's at IoU 0.5, same class), "
        "detectionMap50 (mAP@0.5 with the reference's detections as truth) or labelMap50 (mAP@0.5 against labelled "
        "boxes). segmentation: maskMiou (mIoU against the reference's class map) or labelMiou (against labelled "
        "masks). other: outputCosine (lowest mean cosine similarity of an output). label* and top1Accuracy need "
        "labels in compile.calibration. Default: the task's first."))
    min: Annotated[float, Field(ge=0, le=1)] | None = Field(default=None, description=(
        "Lowest acceptable value of metric (0 to 1); below it the compile Job fails (exit 3) and the class does "
        "not get the revision. Default 0.99 (classification, other) or 0.9 (detection, segmentation)."))


class Int8Fallback(Model):
    """Accuracy-aware int8 of a classifier whose int8 artifact misses the gate (docs/compile.md)."""

    budget_seconds: Annotated[int, Field(ge=0, le=3600)] = Field(default=120, description=(
        "Most seconds the search may take (ranking the layers by how much int8 moves the output, then the "
        "fewest kept in fp32 that pass); 0 turns the fallback off. Default 120."))
    max_layers_fraction: Annotated[float, Field(gt=0, le=1)] = Field(default=0.5, description=(
        "Most of the quantised layers that may be kept in fp32 (0 to 1); past it the int8 artifact has lost its "
        "point and the candidate fails. Default 0.5."))


class BatchingMode(str, Enum):
    AUTO = "auto"
    MANUAL = "manual"


class Batching(Model):
    """Triton dynamic batching: chosen from the compile Job's profile (auto) or given (manual)."""

    mode: BatchingMode = Field(default=BatchingMode.AUTO, description=(
        "auto: the compile Job picks the most throughput within latencyBudgetMs from its profile on the class's "
        "node; manual: maxBatchSize and the fields below are used as given. Default auto."))
    latency_budget_ms: Annotated[float, Field(gt=0, le=60_000)] | None = Field(
        default=None, description="auto (required): the p99 latency in ms the chosen settings must stay under, "
                                  "queueing included; ignored with manual."
    )
    max_batch_size: Annotated[int, Field(ge=1, le=1024)] | None = Field(default=None, description=(
        "manual (required): Triton's max_batch_size, the largest batch the dynamic batcher forms; ignored with auto."))
    preferred_batch_sizes: Annotated[list[Annotated[int, Field(ge=1, le=1024)]], Field(max_length=8)] | None = Field(
        default=None, description="manual: batch sizes the dynamic batcher prefers to form (each at most "
                                  "maxBatchSize); ignored with auto.")
    max_queue_delay_microseconds: Annotated[int, Field(ge=0, le=10_000_000)] | None = Field(
        default=None, description="manual: how long in microseconds Triton holds a request to fill a batch; "
                                  "ignored with auto.")
    instance_count: Annotated[int, Field(ge=1, le=16)] | None = Field(default=None, description=(
        "manual: model instances per Triton pod (instance_group count; 1 when unset); ignored with auto."))

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
    """How each class's compile Job builds and checks the artifact."""

    image: Annotated[str, Field(min_length=1, max_length=IMAGE_MAX)] = Field(default=COMPILE_IMAGE, description=(
        f"Image of the compile Jobs of CPU classes (runtime onnxruntime or openvino; runs visionfleet-compile). "
        f"Default {COMPILE_IMAGE}."))
    gpu_image: Annotated[str, Field(min_length=1, max_length=IMAGE_MAX)] | None = Field(default=None, description=(
        f"Image of the compile Jobs of GPU classes (runtime tensorrt: TensorRT and CUDA). Unset: compile.image "
        f"when that is set to an image of your own (one image for every class), else {COMPILE_GPU_IMAGE}. A "
        f"class's compileImage overrides either."))
    calibration: Calibration | None = Field(default=None, description=(
        "Sample images; required for int8 precision, for the labelled gate metrics (top1Accuracy, labelMap50, labelMiou) and for analysis.drift. "
        "Unset, the gate compares on random inputs."))
    # Unset rather than an empty default object: its defaults depend on model.task.
    accuracy_gate: AccuracyGate | None = Field(default=None, description=(
        "Accuracy check of each artifact against the fp32 reference; a class whose artifact fails it does not get "
        "the revision. Unset: the task's metric (top1Agreement, detectionF1, maskMiou, outputCosine) at least "
        "0.99 (classification, other) or 0.9 (detection, segmentation)."))
    int8_fallback: Annotated[Int8Fallback, Field(description=(
        "Accuracy-aware int8 (classification): when the int8 artifact misses the gate, its layers are ranked by "
        "how far int8 moves the model's output and the fewest are kept in fp32 until it passes, within a time "
        "budget. Default budgetSeconds 120, maxLayersFraction 0.5."))] = default_object(Int8Fallback)
    batching: Annotated[Batching, Field(description=(
        "Triton dynamic batching of the compiled model, written into its config.pbtxt. "
        "Default mode auto with latencyBudgetMs 50."))] = default_object(lambda: Batching(latency_budget_ms=50))
    timeout: Duration = Field(default="30m", description=(
        "Longest a compile Job may run (its activeDeadlineSeconds), a duration such as 45m or 1h; past it the "
        "class's compile fails. Default 30m."))
    schedule_timeout: Duration = Field(default="20m", description=(
        "Longest a class's compile pod may stay unschedulable (its PodScheduled condition False: no node fits its "
        "nodeSelector, tolerations and resources, or a claim it mounts is missing); past it that class's compile "
        "fails with the scheduler's message, its Job is deleted and the other classes go on. Policy: changing it "
        "makes no new revision. Default 20m: a GPU pool that scales up from zero takes 8-15 minutes to offer a "
        "node (boot, driver, device plugin), during which the pod is unschedulable."))

    service_account_name: NAME_REF | None = Field(default=None, description=(
        "ServiceAccount of the compile Jobs' pods: the identity that reads s3:// sources and writes an s3:// "
        "model repository through an AWS workload identity (IRSA, EKS Pod Identity). Its API token is not mounted "
        "(the Job needs no API access). Unset: the namespace's default ServiceAccount."))
    # (reason FieldValueInvalid: with FieldValueDuplicate the API server answers a bare "Duplicate value"
    # and drops the message)
    env: Annotated[list[EnvVar], Field(max_length=32, json_schema_extra={
        "x-kubernetes-validations": [cel("self.all(a, self.exists_one(b, b.name == a.name))",
                                         "compile.env names must be unique", reason="FieldValueInvalid")]})] | None = \
        Field(default=None, description=(
            "Extra environment variables of the compile Job's container (at most 32, unique names; they override "
            "storage.s3's), e.g. HTTPS_PROXY or a credential from a Secret key (valueFrom.secretKeyRef)."))
    env_from: Annotated[list[EnvFromSource], Field(max_length=8)] | None = Field(default=None, description=(
        "Secrets or ConfigMaps whose every key becomes an environment variable of the compile Job's container."))

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("!(has(self.accuracyGate) && has(self.accuracyGate.metric)"
                " && self.accuracyGate.metric in ['top1Accuracy', 'labelMap50', 'labelMiou']) || has(self.calibration)",
                "accuracyGate.metric top1Accuracy, labelMap50 and labelMiou need a labelled calibration set: set "
                "compile.calibration",
                field_path=".calibration", reason="FieldValueRequired"),
        )
    }


class ServingSpec(Model):
    """The Triton pods that serve each class's artifact."""

    image: Annotated[str, Field(min_length=1, max_length=IMAGE_MAX)] = Field(default=TRITON_IMAGE, description=(
        f"Triton Inference Server image of the serving pods. Default {TRITON_IMAGE}."))
    model_repository: Annotated[str, Field(pattern=URI_PATTERN, max_length=URI_MAX)] | None = Field(
        default=None, description="Required. Where compile Jobs write artifacts and Triton pods load them: "
                                  "pvc://<claim>/<path>, a claim on ReadWriteMany or ReadOnlyMany storage mounted "
                                  "read-only into every Triton pod, or s3://<bucket>/<prefix> (storage.s3), "
                                  "fetched by each Triton pod's init container and checked against the compile "
                                  "Job's sha256 of every file (docs/serving.md)."
    )
    service_account_name: NAME_REF | None = Field(default=None, description=(
        "ServiceAccount of the Triton pods: the identity their init container reads an s3:// model repository "
        "with (IRSA, EKS Pod Identity). Its API token is not mounted. Unset: the namespace's default ServiceAccount."))
    drain_seconds: Annotated[int, Field(ge=0, le=3600)] | None = Field(default=None, description=(
        "Seconds a Triton pod keeps serving after it is asked to stop (a preStop sleep, Kubernetes 1.30+), so load "
        "balancers stop sending to it; then Triton finishes in-flight requests (up to 30 s). Its termination grace "
        "period is this plus 35 s; 0 means no preStop. Unset: 15."))

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("!has(self.modelRepository) || self.modelRepository.startsWith('pvc://')"
                " || self.modelRepository.startsWith('s3://')",
                REPOSITORY_RULE, field_path=".modelRepository", reason="FieldValueInvalid"),
        )
    }


class ShadowStep(Model):
    """A step where the canary gets a mirror of live requests while users see only the stable."""

    duration: Duration = Field(description=(
        "How long the canary serves the mirror (e.g. 10m), counted from when its pods are Ready; it is judged on "
        "its own latency, errors and drift (and analysis.liveAgreement) meanwhile, and must pass a measurement "
        "before the next step."))
    percent: Annotated[int, Field(ge=1, le=100)] = Field(default=100, description=(
        "Percent of live requests mirrored to the canary (1 to 100); the canary gets pods for that share of the "
        "load. Default 100."))


class Step(Model):
    """One canary step: a traffic weight held for at least its pause, or a shadow step; each ends only once a
    measurement passes."""

    set_weight: Annotated[int, Field(ge=0, le=100)] | None = Field(default=None, description=(
        "Percent of traffic to the canary (0 to 100) on the current wave's classes; strictly ascending over the "
        "steps. Set exactly one of setWeight and shadow."))
    pause: Duration | None = Field(default=None, description=(
        "How long to hold the weight before the next step (duration, e.g. 2m), counted from when the canary is "
        "Ready at it; unset, no pause (a passing measurement is still needed)."))
    shadow: ShadowStep | None = Field(default=None, description=(
        "Mirror live requests to the canary (Gateway API RequestMirror to its revision Service) while every "
        "user is answered by the stable: a failing canary is rolled back before any user request reaches it. "
        "Needs rollout.traffic.method GatewayAPI; shadow steps come before every setWeight step."))

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("has(self.setWeight) != has(self.shadow)",
                "set exactly one of rollout.steps[*].setWeight and rollout.steps[*].shadow",
                field_path=".setWeight", reason="FieldValueRequired"),
            cel("!has(self.shadow) || !has(self.pause)",
                "a shadow step holds for shadow.duration: leave rollout.steps[*].pause unset",
                field_path=".pause", reason="FieldValueForbidden"),
        )
    }

    @property
    def weight(self) -> int:
        """The canary's share of user traffic at this step (0 during a shadow step)."""
        return 0 if self.shadow is not None else (self.set_weight or 0)

    @property
    def hold(self) -> str | None:
        """How long the step lasts at least: a shadow step's duration, else its pause."""
        return self.shadow.duration if self.shadow is not None else self.pause


DEFAULT_STEPS = (Step(set_weight=10, pause="1m"), Step(set_weight=50, pause="2m"), Step(set_weight=100))


class TrafficMethod(str, Enum):
    REPLICAS = "Replicas"
    GATEWAY_API = "GatewayAPI"


class GatewayAPITraffic(Model):
    http_route: DnsLabel = Field(description="Name of the HTTPRoute (same namespace) whose backend weights are set.")


class Traffic(Model):
    """How requests are split between the stable and the canary revision."""

    method: TrafficMethod = Field(default=TrafficMethod.REPLICAS, description=(
        "Replicas: the canary's share is its share of the Ready pods behind the <vd> Service; GatewayAPI: the "
        "operator sets backend weights on gatewayAPI.httpRoute. Default Replicas."))
    gateway_api: GatewayAPITraffic | None = Field(default=None, alias="gatewayAPI", description=(
        "The HTTPRoute whose weights the operator sets; set exactly when method is GatewayAPI."))

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("(self.method == 'GatewayAPI') == has(self.gatewayAPI)",
                "traffic.gatewayAPI is set exactly when traffic.method is GatewayAPI", field_path=".gatewayAPI"),
        )
    }


class RolloutSpec(Model):
    """How a new revision moves from canary to stable. Policy: editing it is not a new revision."""

    steps: Annotated[list[Step], Field(min_length=1, max_length=16)] = Field(
        default_factory=lambda: [s.model_copy() for s in DEFAULT_STEPS],
        json_schema_extra={"default": [s.to_wire() for s in DEFAULT_STEPS]},
        description="Canary steps in order (1 to 16), run once per wave; the canary is promoted after the last "
                    "one passes. Default 10% for 1m, 50% for 2m, then 100%.",
    )
    traffic: Annotated[Traffic, Field(description=(
        "How traffic is split between stable and canary. Default method Replicas."))] = default_object(Traffic)
    waves: Annotated[list[Annotated[list[DnsLabel], Field(min_length=1, max_length=MAX_CLASSES)]],
                     Field(max_length=MAX_CLASSES)] | None = Field(
        default=None, description="Node classes in waves, e.g. [[xeon], [h100, l4]]: each wave walks every step "
                                  "after the previous one finished; classes no wave names form a last wave."
    )
    scale_down_delay: Duration = Field(default="30s", description=(
        "How long the previous stable revision keeps serving after a promotion, once its successor is Ready "
        "(Argo Rollouts' scaleDownDelaySeconds): a quick way back while clients and caches move over. Default 30s."))
    progress_deadline: Duration = Field(default="10m", description=(
        "A canary whose pods are not all Ready for this long (at the start of a step, or after turning unready "
        "mid-step) is rolled back with the reason; a class's first revision only waits. Default 10m."))

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("self.steps.all(i, s, i == 0 || !has(s.setWeight) || !has(self.steps[i - 1].setWeight)"
                " || self.steps[i - 1].setWeight < s.setWeight)",
                "rollout.steps[*].setWeight must strictly ascend (e.g. 10, 50, 100)", field_path=".steps"),
            cel("self.steps.all(i, s, !has(s.shadow) || i == 0 || has(self.steps[i - 1].shadow))",
                "shadow steps come first: every rollout.steps[*].shadow must precede the setWeight steps",
                field_path=".steps", reason="FieldValueInvalid"),
            cel("!self.steps.exists(s, has(s.shadow))"
                " || (has(self.traffic) && has(self.traffic.method) && self.traffic.method == 'GatewayAPI')",
                "rollout.steps[*].shadow needs rollout.traffic.method GatewayAPI (the gateway mirrors requests "
                "to the canary); replica traffic cannot keep users off a canary's pods",
                field_path=".traffic.method", reason="FieldValueInvalid"),
            cel("!has(self.waves) || self.waves.all(i, w, w.all(n,"
                " !self.waves.exists(j, v, j != i && n in v) && w.exists_one(m, m == n)))",
                "a node class may appear in only one wave, once", field_path=".waves",
                reason="FieldValueInvalid"),
        )
    }


class PrometheusSource(Model):
    """The Prometheus that scrapes Triton and the drift monitors (docs/observability.md)."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=URI_MAX)] = Field(description=(
        "Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090."))
    timeout: Duration = Field(default="10s", description=(
        "Timeout of each query (duration); a query past it is a provider error. Default 10s."))


class SLO(Model):
    """Limits the canary's Triton metrics are held to at every measurement."""

    latency_p99_ms: Annotated[float, Field(gt=0, le=600_000)] = Field(description=(
        "Highest acceptable p99 latency in ms (Triton's server-side p99, worst canary pod); above it the "
        "measurement fails."))
    error_rate: Annotated[float, Field(ge=0, le=1)] = Field(default=0.01, description=(
        "Highest acceptable share of failed requests, 0 to 1 (0.01 = 1%); above it the measurement fails. "
        "Default 0.01."))
    min_requests: Annotated[int, Field(ge=0, le=100_000_000)] = Field(default=100, description=(
        "Fewest canary requests in the measurement window; with fewer the measurement is inconclusive. "
        "Default 100."))


class InconclusivePolicy(str, Enum):
    PAUSE = "Pause"
    ROLLBACK = "Rollback"


class Check(str, Enum):
    """The checks of one measurement, by name (for ``analysis.dryRun``)."""

    LATENCY = "latency"
    ERROR_RATE = "errorRate"
    DRIFT = "drift"
    LIVE_AGREEMENT = "liveAgreement"


class DriftDetector(str, Enum):
    BBSD_KS = "bbsd-ks"
    MMD = "mmd"


class DriftSpec(Model):
    """The drift monitor, a sidecar in every Triton pod (docs/drift.md)."""

    detector: DriftDetector = Field(default=DriftDetector.BBSD_KS, description=(
        "bbsd-ks: KS tests on the model's softmax outputs (a classifier) or per-image summaries of its outputs "
        "(detection count, scores, box sizes, classes; class shares of a segmenter's pixels), Bonferroni-corrected; "
        "mmd: MMD on reduced inputs. Default bbsd-ks."))
    p_value: Annotated[float, Field(gt=0, lt=1)] = Field(default=0.01, description=(
        "Drift when p < this (p Bonferroni-corrected over the revision's pods): the canary's measurement fails; "
        "on the stable, condition InputDrift, raised by this test or by the monitor's always-on input-space test "
        "(docs/drift.md). Default 0.01."))
    window: Annotated[int, Field(ge=20, le=100_000)] = Field(
        default=500, description="Samples per test; the canary is judged only once its window is full. Default 500.")
    max_samples_per_second: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=50, description="Samples per second each monitor takes from the mirrored traffic; the rest are "
                                "dropped. Default 50.")
    image: Annotated[str, Field(min_length=1, max_length=IMAGE_MAX)] | None = Field(default=None, description=(
        f"Image of the drift monitor sidecar. Unset: {MONITOR_IMAGE} for detector bbsd-ks, {MONITOR_MMD_IMAGE} "
        f"(with torch, alibi-detect's backend for mmd) for detector mmd."))


class LiveAgreement(Model):
    """The canary's agreement with the stable on production inputs, during shadow steps: the monitor sidecar
    of each canary pod asks the stable the same request and compares the two answers (docs/drift.md)."""

    min: Annotated[float, Field(ge=0, le=1)] = Field(description=(
        "Lowest acceptable agreement, 0 to 1: the share of images whose canary answer agrees with the stable's "
        "(top-1 class for a classifier; detection F1 at IoU 0.5; mask IoU for a segmenter; output cosine "
        "otherwise), as the compile Job's accuracy gate reads it against the fp32 reference."))
    min_pairs: Annotated[int, Field(ge=1, le=1_000_000)] = Field(default=100, description=(
        "Fewest compared images in the measurement window; with fewer the check is inconclusive. Default 100."))
    max_pairs_per_second: Annotated[int, Field(ge=1, le=10_000)] = Field(default=20, description=(
        "Requests per second each canary pod pairs with the stable (the extra load the stable takes); the rest "
        "are only forwarded to the canary. Default 20."))


class AnalysisSpec(Model):
    """How each canary step is judged. Policy, except drift (it changes the pods: part of the revision)."""

    interval: Duration = Field(default="30s", description=(
        "How often the canary is measured, and the Prometheus query window (at least 10s); a duration such as "
        "30s or 1m. Default 30s."))
    prometheus: PrometheusSource | None = Field(default=None, description=(
        "Where latency, errors and drift p-values are read; required by slo and drift."))
    slo: SLO | None = Field(default=None, description=(
        "Latency and error-rate limits of the canary; with neither slo nor drift a step is judged by its pause "
        "alone."))
    drift: DriftSpec | None = Field(default=None, description=(
        "Input drift test by a monitor sidecar in every Triton pod; needs prometheus and compile.calibration. "
        "Setting or changing it is a new revision."))
    live_agreement: LiveAgreement | None = Field(default=None, description=(
        "During shadow steps, judge the canary's agreement with the stable on the mirrored live requests; needs "
        "analysis.drift (the monitor sidecar makes the pairs) and a shadow step in rollout.steps."))
    failure_limit: Annotated[int, Field(ge=1, le=100)] = Field(
        default=1, description="Failed measurements, counted over the rollout, that trigger a rollback. Default 1."
    )
    inconclusive_limit: Annotated[int, Field(ge=1, le=100)] = Field(
        default=3, description=(
            "Inconclusive measurements in a row (too little traffic, no series, drift window filling) after which "
            "onInconclusive applies. An inconclusive measurement never advances a step. Default 3."))
    on_inconclusive: InconclusivePolicy = Field(default=InconclusivePolicy.PAUSE, description=(
        "Pause: the rollout holds (phase Paused) and goes on by itself once a measurement passes; Rollback: "
        "roll back once inconclusiveLimit is reached. Default Pause."))
    consecutive_error_limit: Annotated[int, Field(ge=1, le=100)] = Field(
        default=4, description=(
            "Provider errors in a row (Prometheus unreachable, refused query, timeout) tolerated as retries; from "
            "this one on, each error counts as an inconclusive measurement (toward inconclusiveLimit). Default 4 "
            "(Argo Rollouts' consecutiveErrorLimit)."))
    initial_delay: Duration | None = Field(default=None, description=(
        "Wait after a step's weight took effect (canary Ready) before its first measurement (duration); default "
        "one interval, the query window, so a measurement holds only traffic at the step's weight."))
    dry_run: Annotated[list[Check], Field(max_length=4)] | None = Field(default=None, description=(
        "Checks (latency, errorRate, drift, liveAgreement) measured and reported (status.analysis.dryRun) but never acted on: "
        "trial a new SLO."))

    model_config = Model.model_config | {
        "json_schema_extra": validations(
            cel("!has(self.slo) || has(self.prometheus)",
                "analysis.slo needs analysis.prometheus.url to read latency and errors from",
                field_path=".prometheus", reason="FieldValueRequired"),
            cel("!has(self.liveAgreement) || has(self.drift)",
                "analysis.liveAgreement needs analysis.drift: the drift monitor sidecar of each canary pod pairs "
                "its answers with the stable's", field_path=".drift", reason="FieldValueRequired"),
            cel("!has(self.drift) || has(self.prometheus)",
                "analysis.drift needs analysis.prometheus.url to read the drift monitors' p-values from",
                field_path=".prometheus", reason="FieldValueRequired"),
        )
    }


class VisionDeploymentSpec(Model):
    model: ModelSpec = Field(description=(
        "The trained ONNX model: where it is, its version, inputs and outputs. Any change is a new revision."))
    fleet: Fleet = Field(description=(
        "The node classes to compile for and serve on: listed, or discovered from node labels. Part of the "
        "revision, except replicas."))
    compile: Annotated[CompileSpec, Field(description=(
        "How the compile Job of each class builds, checks and profiles the artifact. Part of the revision."))] = \
        default_object(CompileSpec)
    serving: Annotated[ServingSpec, Field(description=(
        "The Triton serving pods: image and model repository (required). Part of the revision."))] = \
        default_object(ServingSpec)
    storage: Storage | None = Field(default=None, description=(
        "Object storage settings (S3 endpoint, region, credentials) for compile Jobs and Triton pods. Part of the "
        "revision."))
    rollout: Annotated[RolloutSpec, Field(description=(
        "Canary steps, traffic method, waves and deadlines. Policy: editing it is not a new revision."))] = \
        default_object(RolloutSpec)
    analysis: Annotated[AnalysisSpec, Field(description=(
        "How each step is judged: interval, Prometheus, SLO, drift test and limits. Policy, except drift."))] = \
        default_object(AnalysisSpec)

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
                "has(self.serving) && has(self.serving.modelRepository)",
                "serving.modelRepository is required: where compile Jobs write each artifact and Triton pods load it "
                "(pvc://<claim>/<path> on ReadWriteMany/ReadOnlyMany storage, or s3://<bucket>/<prefix>)",
                field_path=".serving.modelRepository",
                reason="FieldValueRequired",
            ),
            cel(
                "(has(self.rollout.traffic) && has(self.rollout.traffic.method)"
                " && self.rollout.traffic.method == 'GatewayAPI')"
                " || !((has(self.fleet.classes) && self.fleet.classes.exists(c, has(c.replicas)"
                " && has(c.replicas.autoscale)))"
                " || (has(self.fleet.discover) && has(self.fleet.discover.replicas)"
                " && has(self.fleet.discover.replicas.autoscale)))",
                "replicas.autoscale needs rollout.traffic.method GatewayAPI: with replica traffic the canary's "
                "share is its share of the pods, which an autoscaler moving the stable would change",
                field_path=".rollout.traffic.method",
                reason="FieldValueInvalid",
            ),
            cel(
                "!has(self.analysis.liveAgreement) || self.rollout.steps.exists(s, has(s.shadow))",
                "analysis.liveAgreement is judged during shadow steps: add one to rollout.steps (e.g. "
                "{shadow: {duration: 10m}}) or remove analysis.liveAgreement",
                field_path=".analysis.liveAgreement",
                reason="FieldValueInvalid",
            ),
            cel(
                "!has(self.analysis.drift) || has(self.compile.calibration)",
                "analysis.drift needs compile.calibration.uri: each revision's drift reference is built "
                "from its calibration set",
                field_path=".compile.calibration",
                reason="FieldValueRequired",
            ),
            cel(
                "!has(self.compile.accuracyGate) || !has(self.compile.accuracyGate.metric) || " + _TASK_METRICS_CEL
                + "[has(self.model.task) ? self.model.task : 'classification'].exists(m, m == "
                "self.compile.accuracyGate.metric)",
                "compile.accuracyGate.metric does not fit model.task: classification reads top1Agreement or "
                "top1Accuracy; detection detectionF1, detectionMap50 or labelMap50; segmentation maskMiou or "
                "labelMiou; other outputCosine",
                field_path=".compile.accuracyGate.metric",
                reason="FieldValueInvalid",
            ),
        )
    }

