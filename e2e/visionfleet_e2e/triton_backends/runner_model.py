"""A Python-based Triton backend that runs a compiled artifact with its own runtime on the CPU.

The local Triton (nvidia-pytriton's tritonserver) has only the python backend. Installed under the
backend names ``onnxruntime`` and ``openvino``, this file lets it load the *same* model repository
entry the cluster's Triton loads with NVIDIA's C++ backends — the same ``config.pbtxt``, byte for
byte, and the same artifact — so what is measured locally is what is deployed. Dynamic batching,
instance groups and the metrics are Triton's own; only the execution of one batch is here.

Test hooks, read from the environment of the server (never set in a cluster):
    VISIONFLEET_TRITON_DELAY_MS    extra time per batch (a deliberately slow version)
    VISIONFLEET_TRITON_FAIL_EVERY  fail every Nth batch (a deliberately failing version)
Both can be limited to one model version by VISIONFLEET_TRITON_HOOK_VERSION.
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


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        filename = config.get("default_model_filename") or "model.onnx"
        artifact = version_dir / filename
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        backend = config.get("backend")
        threads = int(os.environ.get("VISIONFLEET_TRITON_THREADS", "0"))
        if backend == "openvino":
            import openvino as ov

            props = {"PERFORMANCE_HINT": "LATENCY"}
            if threads:
                props["INFERENCE_NUM_THREADS"] = threads
            compiled = ov.Core().compile_model(str(artifact), "CPU", props)
            request = compiled.create_infer_request()
            outs = [compiled.output(name) for name in self.outputs]

            def run(feeds):
                result = request.infer([feeds[n] for n in self.inputs])
                return [result[o] for o in outs]

            self.run = run
        else:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if threads:
                opts.intra_op_num_threads = threads
            session = ort.InferenceSession(str(artifact), opts, providers=["CPUExecutionProvider"])
            self.run = lambda feeds: session.run(self.outputs, feeds)
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
