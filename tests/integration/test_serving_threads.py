"""The CPU thread parameters a compile result carries, rendered by the operator into config.pbtxt and
loaded by a real tritonserver (pytriton's 2.51): Triton parses them, hands them to the backend, and
the local runner backend runs each instance on the threads a cluster's C++ backend would.

One server, one model per case; each instance logs what its runtime reports back
(``visionfleet runner: {…}``), which is what is checked, with the OS threads of its process."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from visionfleet.api.spec import ModelSpec
from visionfleet.api.status import ChosenBatching, CompileResult
from visionfleet.builders.triton_config import build_triton_config_for
from visionfleet_contract import cpu_threads
from visionfleet_e2e.triton import TritonError, TritonServer

from ..unit.test_compile_program import CLASSES, C, H, W, tiny_classifier

MODEL = {"version": "1", "uri": "pvc://models/tiny.onnx",
         "inputs": [{"name": "images", "dataType": "FP32", "dims": [C, H, W]}],
         "outputs": [{"name": "logits", "dataType": "FP32", "dims": [CLASSES]}]}
# name: (runtime, CPU limit, instances) -> the settings each instance's runtime must report
CASES = {
    "ort-none": ("onnxruntime", None, 1, {"intra_op_num_threads": 0, "inter_op_num_threads": 0}),
    "ort-1cpu": ("onnxruntime", "1", 1, {"intra_op_num_threads": 1, "inter_op_num_threads": 1}),
    "ort-2cpu": ("onnxruntime", "2", 1, {"intra_op_num_threads": 2, "inter_op_num_threads": 1}),
    "ort-2cpu-2inst": ("onnxruntime", "2", 2, {"intra_op_num_threads": 1, "inter_op_num_threads": 1}),
    "ov-1500m": ("openvino", "1500m", 1, {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1}),
    "ov-2cpu": ("openvino", "2", 1, {"INFERENCE_NUM_THREADS": 2, "NUM_STREAMS": 1}),
    # NUM_STREAMS 2 of 2 threads in the C++ backend: each instance's request runs on a 1-thread stream
    "ov-2cpu-2inst": ("openvino", "2", 2, {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1}),
}


def result_for(runtime: str, limit: str | None, instances: int) -> CompileResult:
    """A compile result as the compile program reports it for that class (parameters from the contract)."""
    raw = {"state": "Succeeded", "batching": {"maxBatchSize": 4, "preferredBatchSizes": [4],
                                              "maxQueueDelayMicroseconds": 100, "instanceCount": instances}}
    params = cpu_threads.thread_parameters(runtime, limit, instances)
    if params:
        raw["parameters"] = params
    return CompileResult.model_validate(raw)


def start(repo, work, attempts: int = 2) -> TritonServer:
    """The server over ``repo``, started again in a fresh directory (a fresh copy of the python
    backend's stub) when an instance's stub could not be executed: with 11 stub processes launched at
    once on this shared 2-core machine, exec of the stub failed with "Text file busy" in about 1 of 5
    starts, with or without --model-load-thread-count=1 (the python backend probes, chmods and execs
    the stub per instance, r24.10 src/stub_launcher.cc); the server then waits for the stub instead
    of exiting, hence the short timeout (a good start takes 10–30 s here). Any other failure fails."""
    attempt = 1
    while True:
        try:
            return TritonServer(repo, work / f"triton-{attempt}").start(timeout=90)
        except TritonError:
            log = (work / f"triton-{attempt}" / "tritonserver.log").read_text()
            if attempt == attempts or "Text file busy" not in log:
                raise
            attempt += 1


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import openvino as ov

    work = tmp_path_factory.mktemp("threads")
    onnx_path = tiny_classifier(work / "tiny.onnx")
    ir = work / "ir"
    ir.mkdir()
    ov.save_model(ov.convert_model(str(onnx_path)), str(ir / "model.xml"), compress_to_fp16=False)
    repo = work / "repository"
    configs = {}
    for name, (runtime, limit, instances, _) in CASES.items():
        version = repo / name / "1"
        version.mkdir(parents=True)
        if runtime == "onnxruntime":
            (version / "model.onnx").write_bytes(onnx_path.read_bytes())
        else:
            for f in ("model.xml", "model.bin"):
                (version / f).write_bytes((ir / f).read_bytes())
        model = ModelSpec.model_validate({**MODEL, "name": name})
        configs[name] = build_triton_config_for(model, runtime, result_for(runtime, limit, instances))
        (repo / name / "config.pbtxt").write_text(configs[name])
    s = start(repo, work)
    try:
        yield s, configs
    finally:
        s.stop()


def runner_lines(server) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for m in re.finditer(r"visionfleet runner: (\{.*\})", server.log_path.read_text()):
        line = json.loads(m[1].replace('\\"', '"'))  # Triton's log escapes the quotes of a message
        out.setdefault(line["instance"].rsplit("_", 2)[0], []).append(line)
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_instance_runs_on_the_threads_its_config_gives(server, name):
    s, configs = server
    runtime, limit, instances, settings = CASES[name]
    lines = runner_lines(s)[name]
    assert len(lines) == instances, lines  # one stub process per instance, each logs once
    want = cpu_threads.thread_parameters(runtime, limit, instances)
    for line in lines:
        assert line["backend"] == runtime and line["parameters"] == want
        assert {k: line["settings"][k] for k in settings} == settings, line
    assert ("parameters [" in configs[name]) == (limit is not None)


def test_onnxruntime_intra_op_threads_are_real_threads(server):
    """ONNX Runtime's intra-op pool has intra_op_num_threads - 1 threads (the caller is the last):
    the 2-thread instance's process has exactly one OS thread more than the 1-thread one's."""
    s, _ = server
    lines = runner_lines(s)
    assert lines["ort-2cpu"][0]["os_threads"] - lines["ort-1cpu"][0]["os_threads"] == 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_model_serves(server, name):
    import tritonclient.http as http

    s, _ = server
    client = http.InferenceServerClient(s.url)
    x = np.random.default_rng(0).standard_normal((2, C, H, W)).astype(np.float32)
    inp = http.InferInput("images", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    out = client.infer(name, [inp]).as_numpy("logits")
    assert out.shape == (2, CLASSES) and np.isfinite(out).all()
