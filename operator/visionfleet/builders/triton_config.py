"""Triton's ``config.pbtxt`` for one compiled artifact, from the operator's models. The text itself
is the shared contract's (``visionfleet_contract.triton_config``): the compile program writes the
same bytes into the model repository entry.
"""

from __future__ import annotations

from visionfleet.api.spec import ModelSpec
from visionfleet.api.status import ChosenBatching

from visionfleet_contract import ARTIFACT_FILE, triton_config

__all__ = ["ARTIFACT_FILE", "build_triton_config"]


def build_triton_config(model: ModelSpec, runtime: str, batching: ChosenBatching | None) -> str:
    """config.pbtxt text (protobuf text format) for ``model`` compiled for ``runtime``."""
    return triton_config.render(model.to_wire(), runtime, batching.to_wire() if batching else None)
