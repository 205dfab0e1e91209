"""CPU threads of a served model, from the class's CPU limit: the Triton backend parameters that go into
``config.pbtxt``, and the ones the compile program profiles under.

Why: ONNX Runtime and OpenVINO size their thread pools to the node's cores, not to the container's
CPU quota. A pod limited to 2 CPUs on a 64-core node then runs 64 busy threads that spend the
quota in a few milliseconds of each CFS period (100 ms) and sit throttled for the rest, which shows
up as p99 latency far above what the batching profile predicted. So each runtime gets at most as
many compute threads as the limit has whole CPUs:

    cores = max(1, floor(limit))        "1500m" → 1, "2" → 2, "500m" → 1 (one thread cannot do less)

A fraction of a CPU is left idle rather than used by an extra thread: with 1.5 CPUs, 2 busy threads
run out of quota after 75 ms of every 100 ms period and then stall 25 ms, exactly the tail latency
the limit was meant to bound.

    runtime       parameters (Triton backend docs)                        threads busy at once
    onnxruntime   intra_op_thread_count = max(1, cores // instances)      instances × intra
                  inter_op_thread_count = 1
    openvino      INFERENCE_NUM_THREADS = cores                           cores
                  NUM_STREAMS = min(instances, cores)
    tensorrt      none (the GPU computes; the CPU threads are Triton's)

The two backends differ in what an instance is. The onnxruntime backend clones the session
options into one session per model instance (r24.10 src/onnxruntime.cc, ModelState: "session
options that will be cloned and used for each instance"), so the CPUs are divided between the
instances. The openvino backend compiles the model once per model and every instance creates an
infer request on that one compiled model (r24.10 src/openvino.cc, ModelInstanceState): its
INFERENCE_NUM_THREADS is the whole pod's, split into one stream per instance, so that each
instance's request runs on its own stream of cores / instances threads. OpenVINO itself clamps
streams to threads (at least one thread per stream; measured with OpenVINO 2026.4), and so does
this rule, so the file says what runs. More instances than whole CPUs oversubscribe the limit on
onnxruntime (one thread per session is the least there is): keep instances ≤ cores.

No CPU limit, no parameters: the config is what it was before this rule existed (the runtimes
then use every core of the node, which is right for a pod that may use them all).

Pure and dependency-free: the compile program derives the parameters once, profiles under them,
writes them into config.pbtxt and reports them in its result; the operator renders the ConfigMap
from that result and never derives them itself, so a revision's config.pbtxt cannot change when a
newer operator changes this rule.
"""

from __future__ import annotations

import re
from fractions import Fraction

# Kubernetes quantity grammar (k8s.io/apimachinery resource.Quantity): a decimal number and a
# binary-SI, decimal-SI or exponent suffix. CPU is written as "2", "1500m", "0.5" or, oddly, "2e0".
_QUANTITY = re.compile(r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                       r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_SUFFIX = {None: Fraction(1), "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
           "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
           "P": Fraction(10**15), "E": Fraction(10**18), "Ki": Fraction(2**10), "Mi": Fraction(2**20),
           "Gi": Fraction(2**30), "Ti": Fraction(2**40), "Pi": Fraction(2**50), "Ei": Fraction(2**60)}

# The runtimes that compute on the CPU, and so the only ones whose threads follow the CPU limit.
CPU_RUNTIMES = ("onnxruntime", "openvino")

# Parameter names exactly as the backends read them from config.pbtxt's `parameters` map.
# onnxruntime backend README, "Model Config Options":
#   https://github.com/triton-inference-server/onnxruntime_backend#model-config-options
ORT_INTRA_OP = "intra_op_thread_count"  # threads inside one operator; 0 = ORT's default (the cores)
ORT_INTER_OP = "inter_op_thread_count"  # threads across operators; used only with execution_mode 1
# openvino backend README (r24.10), "Parameters":
#   https://github.com/triton-inference-server/openvino_backend/blob/r24.10/README.md#parameters
OV_THREADS = "INFERENCE_NUM_THREADS"  # the most threads inference may use; default the cores
OV_STREAMS = "NUM_STREAMS"  # executor partitions: requests that run at once, threads / streams each


def cpu_quantity(value: str | int | float) -> Fraction:
    """A Kubernetes CPU quantity as a number of CPUs ("1500m" → 3/2); ValueError if it is not one."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a CPU quantity")
    if isinstance(value, (int, float)):
        cpus = Fraction(value)
    else:
        m = _QUANTITY.fullmatch(value.strip())
        if m is None:
            raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 2, 1500m, 0.5)")
        suffix = m["suffix"]
        scale = Fraction(10) ** int(suffix[1:]) if suffix and suffix[0] in "eE" else _SUFFIX[suffix]
        cpus = Fraction(m["num"]) * scale
    if cpus <= 0:
        raise ValueError(f"{value!r}: a CPU limit must be positive")
    return cpus


def cpu_cores(limit: str | int | float) -> int:
    """Whole CPUs of a limit, at least 1: the compute threads the pod can keep busy unthrottled."""
    return max(1, int(cpu_quantity(limit)))  # int() of a positive Fraction is its floor


def thread_parameters(runtime: str, cpu_limit: str | int | float | None, instance_count: int = 1) -> dict[str, str]:
    """Triton backend parameters (name → string value, as config.pbtxt carries them) that hold
    ``runtime``'s threads to ``cpu_limit`` with ``instance_count`` model instances; {} when there is
    no limit or the runtime computes on a GPU. ValueError for a limit that is not a CPU quantity."""
    if cpu_limit is None or runtime not in CPU_RUNTIMES:
        return {}
    if instance_count < 1:
        raise ValueError(f"instance count must be at least 1, got {instance_count}")
    cores = cpu_cores(cpu_limit)
    if runtime == "onnxruntime":
        # Sequential execution (the backend's default execution_mode 0) ignores the inter-op pool;
        # 1 still bounds it should a config turn on parallel execution (its default is the cores).
        return {ORT_INTRA_OP: str(max(1, cores // instance_count)), ORT_INTER_OP: "1"}
    return {OV_THREADS: str(cores), OV_STREAMS: str(min(instance_count, cores))}
