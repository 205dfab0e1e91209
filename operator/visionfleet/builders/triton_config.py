"""Triton's ``config.pbtxt`` for one compiled artifact, from the operator's models. The text itself
is the shared contract's (``visionfleet_contract.triton_config``): the compile program writes the
same bytes into the model repository entry.
"""

from __future__ import annotations

from visionfleet.api.spec import ModelSpec
from visionfleet.api.status import ChosenBatching, CompileResult

from visionfleet_contract import ARTIFACT_FILE, triton_config

__all__ = ["ARTIFACT_FILE", "build_triton_config", "build_triton_config_for"]


def build_triton_config(model: ModelSpec, runtime: str, batching: ChosenBatching | None,
                        parameters: dict[str, str] | None = None) -> str:
    """config.pbtxt text (protobuf text format) for ``model`` compiled for ``runtime``."""
    return triton_config.render(model.to_wire(), runtime, batching.to_wire() if batching else None, parameters)


def build_triton_config_for(model: ModelSpec, runtime: str, result: CompileResult) -> str:
    """The config.pbtxt of a compile result: its batching and backend parameters (the CPU threads) as
    the compile Job chose and wrote them. Nothing is derived here (not even the threads from the
    class's CPU limit), so the text is the Job's byte for byte, and a result from before the
    parameters existed renders exactly as it did."""
    return build_triton_config(model, runtime, result.batching, result.parameters)
