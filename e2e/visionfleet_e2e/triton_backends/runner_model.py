"""A Python-based Triton backend that runs a compiled artifact with its own runtime on the CPU.

The local Triton (nvidia-pytriton's tritonserver) has only the python backend. Installed under the
backend names ``onnxruntime`` and ``openvino``, this file lets it load the *same* model repository
entry the cluster's Triton loads with NVIDIA's C++ backends — the same ``config.pbtxt``, byte for
byte, and the same artifact — so what is measured locally is what is deployed. Dynamic batching,
instance groups and the metrics are Triton's own; only the execution of one batch is here.

The CPU thread parameters of ``config.pbtxt`` are obeyed as the C++ backends obey them, so the
local Triton runs on the threads a cluster's would:

    onnxruntime  intra_op_thread_count, inter_op_thread_count, execution_mode: this instance's
                 session options (the backend clones them into one session per instance)
    openvino     INFERENCE_NUM_THREADS split by NUM_STREAMS: the backend compiles the model once
                 and each instance's request runs on one stream of threads / streams threads; here
                 every instance is its own stub process, so each compiles with its stream's share

Each instance logs the settings its runtime reports back (``visionfleet runner: {…}`` in Triton's log).

Test hooks, read from the environment of the server (never set in a cluster):
    VISIONFLEET_TRITON_DELAY_MS    extra time per batch (a deliberately slow version)
    VISIONFLEET_TRITON_FAIL_EVERY  fail every Nth batch (a deliberately failing version)
    VISIONFLEET_TRITON_THREADS     runtime threads per instance, for a config.pbtxt without thread
                                   parameters (the config's own win)
The first two can be limited to one model version by VISIONFLEET_TRITON_HOOK_VERSION.
"""

import json
import os
import sys
import time
from pathlib import Path

# The stub starts an isolated interpreter that ignores PYTHONPATH: add it here, so the runtimes
# installed in the project's venv (numpy, onnxruntime, openvino) import.
for _p in reversed(os.environ.get("PYTHONPATH", "").split(os.pathsep)):
    if _p and _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


def parameters(config):
    """config.pbtxt's ``parameters`` as Triton hands them to a backend: name -> string value."""
    return {k: (v or {}).get("string_value", "") for k, v in (config.get("parameters") or {}).items()}


def _count(params, key):
    """A count as the C++ backends parse it: absent or empty = the runtime's default (0), a
    non-number refuses the model, as the backend's own parse does."""
    value = params.get(key, "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise pb_utils.TritonModelException(f"parameter {key}: expected a non-negative number, got {value!r}")
    return int(value)


def openvino_properties(params, fallback_threads=0):
    """compile_model properties for one instance. INFERENCE_NUM_THREADS is the whole model's, split into
    NUM_STREAMS streams that the backend's instances share (one compiled model per model, r24.10
    src/openvino.cc); each instance process here compiles with one stream's threads. OpenVINO gives
    every stream at least one thread, so streams beyond the threads count as the threads."""
    props = {"PERFORMANCE_HINT": "LATENCY"}
    threads = _count(params, "INFERENCE_NUM_THREADS") or fallback_threads
    streams_text = params.get("NUM_STREAMS", "").strip().upper()
    if streams_text and not streams_text.isdigit() and streams_text not in ("AUTO", "NUMA"):
        raise pb_utils.TritonModelException(f"parameter NUM_STREAMS: expected AUTO, NUMA or a number, "
                                            f"got {streams_text!r}")
    streams = int(streams_text) if streams_text.isdigit() else 1
    if threads:
        props["INFERENCE_NUM_THREADS"] = max(1, threads // max(1, min(streams, threads)))
        props["NUM_STREAMS"] = 1
    return props


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        filename = config.get("default_model_filename") or "model.onnx"
        artifact = version_dir / filename
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        backend = config.get("backend")
        params = parameters(config)
        threads = int(os.environ.get("VISIONFLEET_TRITON_THREADS", "0"))
        if backend == "openvino":
            import openvino as ov

            compiled = ov.Core().compile_model(str(artifact), "CPU", openvino_properties(params, threads))
            settings = {k: int(compiled.get_property(k)) for k in ("INFERENCE_NUM_THREADS", "NUM_STREAMS")}
            request = compiled.create_infer_request()
            outs = [compiled.output(name) for name in self.outputs]

            def run(feeds):
                result = request.infer([feeds[n] for n in self.inputs])
                return [result[o] for o in outs]

            self.run = run
        else:
            import onnxruntime as ort

            # As the backend's ModelState sets up the options it clones into each instance's session
            # (r24.10 src/onnxruntime.cc): execution_mode 0 or 1, then each thread count when > 0.
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            mode = _count(params, "execution_mode")
            if mode not in (0, 1):
                raise pb_utils.TritonModelException(f"parameter execution_mode: expected 0 or 1, got {mode}")
            opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL if mode else ort.ExecutionMode.ORT_SEQUENTIAL
            intra = _count(params, "intra_op_thread_count") or threads
            if intra:
                opts.intra_op_num_threads = intra
            if _count(params, "inter_op_thread_count"):
                opts.inter_op_num_threads = _count(params, "inter_op_thread_count")
            session = ort.InferenceSession(str(artifact), opts, providers=["CPUExecutionProvider"])
            got = session.get_session_options()
            settings = {"intra_op_num_threads": got.intra_op_num_threads,
                        "inter_op_num_threads": got.inter_op_num_threads,
                        "execution_mode": int(got.execution_mode == ort.ExecutionMode.ORT_PARALLEL)}
            self.run = lambda feeds: session.run(self.outputs, feeds)
        # What the runtime runs with (OpenVINO: the compiled model's own properties; ONNX Runtime: the
        # session's options, whose effect shows in the OS threads of this instance's process): what
        # the tests hold the config against.
        pb_utils.Logger.log_info("visionfleet runner: " + json.dumps({
            "instance": args.get("model_instance_name"), "backend": backend, "parameters": params,
            "settings": settings, "os_threads": len(os.listdir("/proc/self/task"))}, sort_keys=True))
        hook_version = os.environ.get("VISIONFLEET_TRITON_HOOK_VERSION")
        hooked = hook_version in (None, "", args["model_version"])
        self.delay = float(os.environ.get("VISIONFLEET_TRITON_DELAY_MS", "0")) / 1000 if hooked else 0.0
        self.fail_every = int(os.environ.get("VISIONFLEET_TRITON_FAIL_EVERY", "0")) if hooked else 0
        self.count = 0

    def execute(self, requests):
        # One batch: Triton's dynamic batcher hands us the requests it gathered; run them together.
        self.count += 1
        if self.fail_every and self.count % self.fail_every == 0:
            # Raised, as a crashing runtime would: Triton fails every request of the batch and counts
            # them in nv_inference_request_failure{reason="BACKEND"}. (An error set on a response
            # instead is counted as a *success* by Triton 2.51's metrics: measured.)
            raise pb_utils.TritonModelException("injected failure (VISIONFLEET_TRITON_FAIL_EVERY)")
        feeds, sizes = {}, []
        for name in self.inputs:
            arrays = [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            feeds[name] = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
            sizes = [len(a) for a in arrays]
        results = self.run(feeds)
        if self.delay:
            time.sleep(self.delay)
        responses, start = [], 0
        for n in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(out[start:start + n]))
                       for name, out in zip(self.outputs, results)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses
