"""The compile request (operator → compile program) and result (compile program → operator), as
JSON on the wire. Field names are the CRD's (camelCase); ``model`` and ``compile`` are the
revision's ``spec.model`` and ``spec.compile`` exactly as the API server stores them.

The operator validates a result with its own pydantic model (``CompileResult`` in its api); the
compile program writes plain dicts of these shapes. ``total=False`` marks what may be absent.
"""

from __future__ import annotations

from typing import TypedDict


class Tensor(TypedDict):
    name: str
    dataType: str  # FP32 | FP16 | INT8 | UINT8 | INT32 | INT64
    dims: list[int]  # without the batch dimension; -1 for a variable size


class Batching(TypedDict, total=False):
    maxBatchSize: int  # 0: no batching
    preferredBatchSizes: list[int]
    maxQueueDelayMicroseconds: int
    instanceCount: int


class Output(TypedDict, total=False):
    repository: str  # pvc://claim/path | s3://bucket/prefix | absent: a local directory
    dir: str  # <path>/<model>/<revision>-<class> inside the repository


class CompileRequest(TypedDict, total=False):
    revision: str
    # "class" is a Python keyword: the request carries it as the key "class".
    runtime: str  # tensorrt | onnxruntime | openvino
    precision: str  # fp32 | fp16 | bf16 | int8 | auto (the program builds the candidates and keeps one)
    model: dict  # spec.model (name, version, uri, sha256, inputs: [Tensor], outputs: [Tensor])
    compile: dict  # spec.compile (calibration, accuracyGate, batching, timeout)
    output: Output
    # fleet.classes[].resources.limits.cpu as written (a Kubernetes quantity: 2, "1500m"); absent
    # without a CPU limit. The program derives the thread parameters from it (cpu_threads).
    cpuLimit: str | int


class CompileResult(TypedDict, total=False):
    artifact: str  # URI of the artifact file
    sha256: str
    accuracy: float  # the gate's metric as measured
    accuracyMetric: str  # which metric accuracy is (compile.accuracyGate.metric or the task's default)
    # Every gate metric of a detector, segmenter or other model (detectionF1, detectionMap50, labelMap50,
    # maskMiou, labelMiou, outputCosine: gates.py), and the fp32 reference's own against labels.
    metrics: dict[str, float]
    referenceMetrics: dict[str, float]
    fp32Nodes: int  # int8 nodes kept in fp32 (the head) so that the gate passes; absent when none
    precision: str  # the precision of the artifact kept (auto: the winner)
    fp32Layers: int  # a classifier's int8 layers the accuracy-aware fallback kept in fp32; absent when none
    candidates: list[dict]  # each built and gated: precision, mixed, fp32Layers, accuracy, searchAgreement,
    #                         passed, throughput, batch, p99Ms, seconds, chosen
    choice: str  # precision auto: why the winner won
    fallback: dict  # the accuracy-aware search: layers, trials, ranking, why it stopped
    compileSeconds: float
    int8OpTypes: list[str]  # the only operations quantised (a fallback that passed); absent: every one
    p99MsAtBatch: dict[str, float]
    batching: Batching
    runtime: dict  # name, precision, library versions, cpu
    files: dict[str, str]  # file name -> sha256, every file of the entry but config.pbtxt
    throughputAtBatch: dict[str, float]
    driftReference: str | None
    top1Agreement: float
    top1Accuracy: float
    referenceTop1Accuracy: float
    # Triton backend parameters written into config.pbtxt (name -> string value), e.g. the CPU
    # threads from cpu_threads.thread_parameters; absent when there are none (and in results from
    # compile programs older than this field, whose config.pbtxt has no parameters either).
    parameters: dict[str, str]


# What the operator must find in a result; a termination message longer than MESSAGE_MAX keeps only these.
# (files: an s3:// repository entry is fetched and checked file by file against it.)
RESULT_REQUIRED = ("artifact", "sha256", "accuracy", "p99MsAtBatch", "batching", "files")
# What a truncated message keeps: the required fields and every other one the operator renders
# config.pbtxt from, or its ConfigMap would differ from the file the compile Job wrote.
RESULT_KEPT = (*RESULT_REQUIRED, "parameters", "accuracyMetric", "metrics", "precision", "fp32Layers", "candidates",
               "choice", "compileSeconds")
