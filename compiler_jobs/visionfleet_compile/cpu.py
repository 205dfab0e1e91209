"""What this node's CPU can do for inference, read once from /proc/cpuinfo.

    vnni     int8 dot products without AVX2's int16 saturation (AVX-512 VNNI, AVX-VNNI or AMX-INT8)
    avx512   AVX-512 foundation
    bf16     bfloat16 arithmetic (AVX-512 BF16 or AMX-BF16): OpenVINO's CPU plugin then runs fp32
             models in bf16 unless told otherwise (its INFERENCE_PRECISION_HINT default)
    fp16     fp16 arithmetic for inference (AMX-FP16; AVX-512 FP16 alone is not used by OpenVINO)
    amx      Advanced Matrix Extensions tiles (int8 and/or bf16)

The compile Job runs on a node of the class it compiles for, so these are the serving CPU's.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

FLAGS = {
    "vnni": ("avx512_vnni", "avx_vnni", "amx_int8"),
    "avx512": ("avx512f",),
    "bf16": ("avx512_bf16", "amx_bf16"),
    "fp16": ("amx_fp16",),
    "amx": ("amx_tile",),
    "avx2": ("avx2",),
}


def parse_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def features_of(flags: set[str]) -> dict[str, bool]:
    return {name: any(f in flags for f in wanted) for name, wanted in FLAGS.items()}


@functools.lru_cache(maxsize=1)
def features() -> dict[str, bool]:
    """This CPU's features (all False off Linux: nothing is assumed)."""
    try:
        return features_of(parse_flags(Path("/proc/cpuinfo").read_text()))
    except OSError:
        return features_of(set())


def model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """One line for logs and benchmarks: the model name and each feature as yes/no."""
    f = features()
    return f"{model_name()}: " + ", ".join(f"{k.upper() if k != 'avx512' else 'AVX-512'} {'yes' if v else 'no'}"
                                           for k, v in f.items())
