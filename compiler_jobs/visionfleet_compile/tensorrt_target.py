"""The TensorRT target (NVIDIA GPU): a serialized engine built on the node class that will run it.

    model.onnx ──► fp16: TensorRT's FP16 builder flag (or, where this TensorRT has no weak typing,
                         an fp16 copy of the graph built strongly typed)
              └──► int8: the calibrated QDQ graph (ONNX Runtime's static quantisation on the
                         calibration images) built as explicit quantisation, strongly typed
    optimisation profile: batch 1 … max(BATCHES); the engine is ``model.plan`` beside
    ``engine-key.json`` (GPU product, compute capability, TensorRT version).

An engine only runs on the GPU model and TensorRT version it was built with; TensorRT refuses to
deserialize it elsewhere. The key travels in the Job's result, so the operator can tell which
hardware an engine belongs to, and the compile Job runs on a node of the class it serves.

Without a GPU or without TensorRT the target is unavailable and the Job fails with exit code 2 and
a message that says which is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

ARTIFACT = "model.plan"
KEY_FILE = "engine-key.json"


def gpu() -> dict[str, str] | None:
    """The first GPU's product name and compute capability, or None without a usable NVIDIA GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.strip().splitlines()[0] if out.strip() else ""
    if "," not in line:
        return None
    name, cc = (s.strip() for s in line.split(",", 1))
    return {"product": name, "computeCapability": cc}


def available() -> str | None:
    """None when the target can run here, else what is missing."""
    missing = []
    if gpu() is None:
        missing.append("no NVIDIA GPU is visible (nvidia-smi is absent or lists no GPU; "
                       "the compile Job must request nvidia.com/gpu on a GPU node class)")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        missing.append("the tensorrt package is not installed in this compile image")
    try:
        import torch

        if not torch.cuda.is_available():
            missing.append("CUDA is not usable from this process (torch.cuda.is_available() is False)")
    except ImportError:
        missing.append("torch (CUDA buffers for the accuracy gate and profile) is not installed")
    return "; ".join(missing) or None


def engine_key() -> dict[str, str]:
    """The hardware the engine belongs to: CUDA device 0 (the one the builder used)."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability(0)
    return {"gpu": torch.cuda.get_device_name(0), "computeCapability": f"{major}.{minor}",
            "tensorrt": trt.__version__}


def versions() -> dict[str, str]:
    return engine_key()


def _fp16_onnx(src: Path, dest: Path) -> Path:
    import onnx
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dest))
    return dest


def build(src: Path, out_dir: Path, precision: str, calibration: np.ndarray, input_name: str,
          max_batch: int, workdir: Path, exclude: list[str] | None = None,
          op_types: tuple[str, ...] | None = None) -> Path:
    """``exclude``: ONNX nodes of an int8 build left without Q/DQ, so the strongly typed network keeps
    them in fp32 (a detector's head when the gate needs it)."""
    import tensorrt as trt

    from .onnxrt import build_int8

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    strongly_typed = True
    onnx_path = src
    if precision == "int8":
        # GPUs have no AVX2 saturation issue: full 8-bit weights.
        onnx_path = build_int8(src, workdir / "model.qdq.onnx", calibration, input_name, reduce_range=False,
                               symmetric=True, exclude=exclude, op_types=op_types)
    elif precision == "fp16":
        if hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
            strongly_typed = False
        else:
            onnx_path = _fp16_onnx(src, workdir / "model.fp16.onnx")
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        from .onnxrt import ModelMismatch

        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelMismatch("model.uri", f"TensorRT {trt.__version__} cannot parse the model: {errors[:1500]}")
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dims = tuple(t.shape)[1:]
        profile.set_shape(t.name, (1, *dims), (max(1, max_batch // 4), *dims), (max_batch, *dims))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the log above)")
    dest = out_dir / ARTIFACT
    dest.write_bytes(bytes(serialized))
    (out_dir / KEY_FILE).write_text(json.dumps(engine_key(), indent=2) + "\n")
    return dest


class Runner:
    """Runs the engine with device buffers from torch; returns the outputs on the host."""

    def __init__(self, plan: Path):
        import tensorrt as trt
        import torch

        self.torch, self.trt = torch, trt
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {plan} on this GPU (built for other hardware?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.stream = torch.cuda.Stream()

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.run_all(x)[self.outputs[0]]

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output on the host by name (the accuracy gate of detectors reads them all)."""
        torch = self.torch
        with torch.cuda.stream(self.stream):
            inp = torch.from_numpy(np.ascontiguousarray(x)).cuda(non_blocking=False)
            if not self.context.set_input_shape(self.inputs[0], tuple(x.shape)):
                raise RuntimeError(f"input shape {tuple(x.shape)} is outside the engine's optimisation profile")
            self.context.set_tensor_address(self.inputs[0], inp.data_ptr())
            outs = []
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                dtype = torch.from_numpy(np.empty(0, dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
                out = torch.empty(shape, dtype=dtype, device="cuda")
                self.context.set_tensor_address(name, out.data_ptr())
                outs.append(out)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            self.stream.synchronize()
        return {name: (out.float() if out.is_floating_point() else out).cpu().numpy()
                for name, out in zip(self.outputs, outs)}


def artifact_files(out_dir: Path) -> list[Path]:
    return [out_dir / ARTIFACT, out_dir / KEY_FILE]
