"""CPU threads from the class's CPU limit (``visionfleet_contract.cpu_threads``): the table of the rule,
the quantities Kubernetes writes, and config.pbtxt with the parameters read back by Triton's own
ModelConfig protobuf."""

from __future__ import annotations

from fractions import Fraction

import pytest

from visionfleet_contract import cpu_threads, triton_config

ORT = "onnxruntime"
OV = "openvino"


def ort(intra: int) -> dict[str, str]:
    return {"intra_op_thread_count": str(intra), "inter_op_thread_count": "1"}


def ov(threads: int, streams: int) -> dict[str, str]:
    return {"INFERENCE_NUM_THREADS": str(threads), "NUM_STREAMS": str(streams)}


# (CPU limit, instances) -> onnxruntime's per-instance session threads, openvino's whole-model
# threads and streams (one per instance, never more than threads).
TABLE = [
    ("500m", 1, ort(1), ov(1, 1)),  # half a CPU: one thread is the least there is
    ("500m", 2, ort(1), ov(1, 1)),
    ("1", 1, ort(1), ov(1, 1)),
    ("1", 2, ort(1), ov(1, 1)),  # more instances than CPUs: onnxruntime oversubscribes, openvino shares a stream
    ("2", 1, ort(2), ov(2, 1)),
    ("2", 2, ort(1), ov(2, 2)),
    ("1500m", 1, ort(1), ov(1, 1)),  # a fraction of a CPU stays idle rather than stall a second thread
    ("1500m", 2, ort(1), ov(1, 1)),
    ("16", 1, ort(16), ov(16, 1)),
    ("16", 2, ort(8), ov(16, 2)),
]


@pytest.mark.parametrize(("limit", "instances", "onnxruntime", "openvino"), TABLE,
                         ids=[f"{t[0]}-x{t[1]}" for t in TABLE])
def test_threads_follow_the_cpu_limit(limit, instances, onnxruntime, openvino):
    assert cpu_threads.thread_parameters(ORT, limit, instances) == onnxruntime
    assert cpu_threads.thread_parameters(OV, limit, instances) == openvino
    assert cpu_threads.thread_parameters("tensorrt", limit, instances) == {}  # the GPU computes


@pytest.mark.parametrize("runtime", [ORT, OV, "tensorrt"])
@pytest.mark.parametrize("instances", [1, 2])
def test_no_cpu_limit_no_parameters(runtime, instances):
    assert cpu_threads.thread_parameters(runtime, None, instances) == {}


@pytest.mark.parametrize(("quantity", "cpus"), [
    ("2", Fraction(2)), (2, Fraction(2)), ("1500m", Fraction(3, 2)), ("500m", Fraction(1, 2)),
    ("0.5", Fraction(1, 2)),
    ("2.5", Fraction(5, 2)), ("16", Fraction(16)), ("1e3", Fraction(1000)), ("2e0", Fraction(2)), ("1k", Fraction(1000)),
    ("100000000n", Fraction(1, 10)), (" 4 ", Fraction(4)),
])
def test_kubernetes_cpu_quantities(quantity, cpus):
    assert cpu_threads.cpu_quantity(quantity) == cpus


@pytest.mark.parametrize("quantity", ["", "two", "2 cores", "-1", "0", "0m", "1.5.0", "m", True])
def test_what_is_no_cpu_limit_is_refused(quantity):
    with pytest.raises(ValueError):
        cpu_threads.thread_parameters(ORT, quantity, 1)


def test_instances_must_be_positive():
    with pytest.raises(ValueError):
        cpu_threads.thread_parameters(OV, "2", 0)


MODEL = {"name": "effnet", "inputs": [{"name": "images", "dataType": "FP32", "dims": [3, 224, 224]}],
         "outputs": [{"name": "logits", "dataType": "FP32", "dims": [1000]}]}
BATCHING = {"maxBatchSize": 8, "preferredBatchSizes": [8], "maxQueueDelayMicroseconds": 400, "instanceCount": 2}


@pytest.mark.parametrize("runtime", [ORT, OV])
@pytest.mark.parametrize(("limit", "instances"), [("500m", 1), ("1", 2), ("2", 2), ("1500m", 1), ("16", 2)])
def test_config_pbtxt_carries_the_parameters_triton_reads(runtime, limit, instances):
    """Triton's own ModelConfig protobuf (tritonclient) reads the parameters back, with the names the
    backends document, and the rest of the file is what it was without them."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    batching = dict(BATCHING, instanceCount=instances)
    params = cpu_threads.thread_parameters(runtime, limit, instances)
    text = triton_config.render(MODEL, runtime, batching, params)
    cfg = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert {k: v.string_value for k, v in cfg.parameters.items()} == params
    assert cfg.instance_group[0].count == instances and cfg.backend == runtime
    assert text.startswith(triton_config.render(MODEL, runtime, batching)), "parameters only append"


def test_parameters_render_sorted_whatever_their_order():
    """The operator's copy of a result comes back from the API server, which keeps no key order."""
    a = triton_config.render(MODEL, OV, BATCHING, {"NUM_STREAMS": "2", "INFERENCE_NUM_THREADS": "2"})
    b = triton_config.render(MODEL, OV, BATCHING, {"INFERENCE_NUM_THREADS": "2", "NUM_STREAMS": "2"})
    assert a == b and a.index("INFERENCE_NUM_THREADS") < a.index("NUM_STREAMS")


@pytest.mark.parametrize("parameters", [{"a b": "1"}, {"k": 'x" }'}, {"k": ""}, {"k\n": "1"}])
def test_a_parameter_that_would_need_escaping_is_refused(parameters):
    with pytest.raises(ValueError):
        triton_config.render(MODEL, ORT, BATCHING, parameters)


@pytest.mark.parametrize("parameters", [None, {}])
def test_without_parameters_the_text_is_unchanged(parameters):
    assert triton_config.render(MODEL, ORT, BATCHING, parameters) == triton_config.render(MODEL, ORT, BATCHING)
    assert "parameters" not in triton_config.render(MODEL, ORT, BATCHING, parameters)


def test_a_changed_cpu_limit_is_a_new_revision():
    """The thread parameters are fixed when a revision compiles: a new limit must compile (and profile)
    a new revision, never re-render an existing one."""
    import copy

    from visionfleet.api.spec import VisionDeploymentSpec
    from visionfleet.planner.revision import revision_of

    from .planner_sim import SPEC

    def with_cpu(cpu):
        raw = copy.deepcopy(SPEC)
        next(c for c in raw["fleet"]["classes"] if c["name"] == "xeon")["resources"] = {"limits": {"cpu": cpu}}
        return revision_of(VisionDeploymentSpec.model_validate(raw))

    assert with_cpu("1") != with_cpu("2") and with_cpu("2") == with_cpu("2")
