"""The OpenVINO target (CPU): OpenVINO IR, fp32 or int8.

    model.onnx ──► ov.convert_model ──► fp32 IR (weights kept in fp32: the gate compares like with like)
                                   └──► int8: NNCF post-training quantisation (MinMax statistics + bias
                                        correction) on the calibration images ──► int8 IR
    written as model.xml + model.bin, the layout Triton's openvino backend loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

ARTIFACT = "model.xml"


def available() -> str | None:
    """None when the target can run here, else why not."""
    try:
        import openvino  # noqa: F401
    except ImportError as e:
        return f"the openvino package is not installed in this compile image ({e})"
    return None


def versions() -> dict[str, str]:
    import openvino as ov

    out = {"openvino": ov.__version__.split("-")[0]}
    try:
        import nncf

        out["nncf"] = nncf.__version__
    except ImportError:
        pass
    return out


def build(src: Path, out_dir: Path, precision: str, calibration: np.ndarray, exclude: list[str] | None = None) -> Path:
    """``exclude``: ONNX node names NNCF leaves unquantised (a detector's head when the gate needs it);
    OpenVINO names each converted operation after its ONNX node."""
    import openvino as ov

    model = ov.convert_model(str(src))
    if precision == "int8":
        import logging

        import nncf

        nncf.set_log_level(logging.WARNING)
        # One item per image, so subset_size counts images (NNCF counts dataset items).
        dataset = nncf.Dataset([calibration[i:i + 1] for i in range(len(calibration))])
        # Without VNNI, int8 products are summed in int16 and can saturate: 7-bit weights everywhere
        # (NNCF's overflow fix) instead of only in the first layer. Full bias correction, not the fast
        # one. Measured on EfficientNet-Lite0 on an AVX2-only CPU (bench/compile.py): top-1 agreement
        # with fp32 0.84 → 0.93, throughput unchanged.
        from .onnxrt import cpu_has_vnni

        fix = nncf.OverflowFix.FIRST_LAYER if cpu_has_vnni() else nncf.OverflowFix.ENABLE
        model = nncf.quantize(model, dataset, subset_size=len(calibration),
                              preset=nncf.QuantizationPreset.PERFORMANCE, fast_bias_correction=False,
                              advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=fix),
                              ignored_scope=_ignored(model, exclude))
    dest = out_dir / ARTIFACT
    ov.save_model(model, str(dest), compress_to_fp16=False)
    return dest


def _ignored(model, exclude: list[str] | None):
    """NNCF's IgnoredScope for the operations converted from ``exclude`` (ONNX node names), or None."""
    if not exclude:
        return None
    import nncf

    # OpenVINO splits an ONNX Conv with a bias into "<name>/WithoutBiases" (the convolution) and
    # "<name>" (the bias Add): both are the node's.
    wanted = set(exclude)
    wanted |= {f"{name}/WithoutBiases" for name in exclude}
    names = [op.get_friendly_name() for op in model.get_ops() if op.get_friendly_name() in wanted]
    return nncf.IgnoredScope(names=names, validate=False) if names else None


class Runner:
    """Synchronous inference on the CPU plugin; the first output as a numpy array.

    ``parameters`` are config.pbtxt's, read as Triton's openvino backend reads them (its README,
    "Parameters": INFERENCE_NUM_THREADS, NUM_STREAMS, HINT_BF16): the whole model's threads split
    into streams, one per instance. One synchronous request runs on one stream, so the profile
    measures one instance's share, as served. ``precision``: fp32 pins the plugin's inference
    precision to f32 and bf16 to bf16 (the compile program refuses either where Triton would run
    another); int8 keeps the plugin's default for the layers left in float, as Triton does.
    ``inference_precision`` is what the plugin reports it runs."""

    def __init__(self, xml: Path, hint: str = "LATENCY", parameters: Mapping[str, str] | None = None,
                 precision: str | None = None):
        import openvino as ov

        from visionfleet_contract.cpu_threads import OV_STREAMS, OV_THREADS

        props: dict = {"PERFORMANCE_HINT": hint}
        for key in (OV_THREADS, OV_STREAMS):  # explicit values win over the hint's (OpenVINO's rule)
            if (parameters or {}).get(key):
                props[key] = int(parameters[key])
        if precision in ("fp32", "bf16"):
            props["INFERENCE_PRECISION_HINT"] = {"fp32": "f32", "bf16": "bf16"}[precision]
        self.compiled = ov.Core().compile_model(str(xml), "CPU", props)
        runs = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        name = runs.get_type_name() if hasattr(runs, "get_type_name") else str(runs)
        self.inference_precision = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(name, name)
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.request.infer([x])[self.output]

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        res = self.request.infer([x])
        return {o.get_any_name(): np.asarray(res[o]) for o in self.compiled.outputs}


def artifact_files(out_dir: Path) -> list[Path]:
    return [out_dir / ARTIFACT, out_dir / "model.bin"]
