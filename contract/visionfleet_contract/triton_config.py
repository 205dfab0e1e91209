"""Triton's ``config.pbtxt`` for one compiled artifact: the one text both the cluster's Triton pods
(the operator's ConfigMap) and the model repository entry (the compile program) carry, so what is
tested locally is byte for byte what is deployed. Plain dicts in the wire shapes of ``schema``.

    runtime       backend / platform        instance kind     artifact file
    tensorrt      platform tensorrt_plan    KIND_GPU          model.plan
    onnxruntime   backend onnxruntime       KIND_CPU          model.onnx
    openvino      backend openvino          KIND_CPU          model.xml (+ model.bin)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from . import ARTIFACT_FILE
from .schema import Batching, Tensor


def _tensors(ts: Sequence[Tensor], kind: str) -> str:
    body = ",\n".join(
        f'  {{\n    name: "{t["name"]}"\n    data_type: TYPE_{t["dataType"]}\n'
        f'    dims: [ {", ".join(str(d) for d in t["dims"])} ]\n  }}'
        for t in ts
    )
    return f"{kind} [\n{body}\n]"


# Names and values that need no escaping in protobuf text format: a parameter that would need it is
# refused rather than written in a form the two renderings (Job, operator) might escape differently.
_PLAIN = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _parameters(parameters: Mapping[str, str]) -> str:
    for k, v in parameters.items():
        if not (_PLAIN.fullmatch(k) and _PLAIN.fullmatch(v)):
            raise ValueError(f"config.pbtxt parameter {k!r}: {v!r} is not plain ([A-Za-z0-9_.-]+)")
    # Sorted: the operator's copy comes back from the API server, which keeps no key order.
    body = ",\n".join(f'  {{\n    key: "{k}"\n    value {{\n      string_value: "{parameters[k]}"\n    }}\n  }}'
                      for k in sorted(parameters))
    return f"parameters [\n{body}\n]"


def render(model: Mapping, runtime: str, batching: Batching | None,
           parameters: Mapping[str, str] | None = None) -> str:
    """config.pbtxt text (protobuf text format) for ``model`` (spec.model on the wire) compiled for
    ``runtime`` with the chosen ``batching`` (None: no batching) and the backend ``parameters``
    (``ModelConfig.parameters``, e.g. the CPU threads of ``cpu_threads``; None or empty: none, and
    the text is exactly what it was before parameters existed)."""
    if runtime not in ARTIFACT_FILE:
        raise ValueError(f"unknown runtime {runtime!r} (one of {', '.join(ARTIFACT_FILE)})")
    batching = batching or {}
    lines = [f'name: "{model["name"]}"']
    lines.append('platform: "tensorrt_plan"' if runtime == "tensorrt" else f'backend: "{runtime}"')
    lines.append(f'default_model_filename: "{ARTIFACT_FILE[runtime]}"')
    max_batch = batching.get("maxBatchSize") or 0
    lines.append(f"max_batch_size: {max_batch}")
    lines.append(_tensors(model["inputs"], "input"))
    lines.append(_tensors(model["outputs"], "output"))
    if max_batch > 0:
        dyn = []
        if batching.get("preferredBatchSizes"):
            dyn.append(f"  preferred_batch_size: [ {', '.join(str(b) for b in batching['preferredBatchSizes'])} ]")
        if batching.get("maxQueueDelayMicroseconds") is not None:
            dyn.append(f"  max_queue_delay_microseconds: {batching['maxQueueDelayMicroseconds']}")
        lines.append("dynamic_batching {\n" + "\n".join(dyn) + ("\n" if dyn else "") + "}")
    kind = "KIND_GPU" if runtime == "tensorrt" else "KIND_CPU"
    count = batching.get("instanceCount") or 1
    lines.append(f"instance_group [\n  {{\n    count: {count}\n    kind: {kind}\n  }}\n]")
    if parameters:
        lines.append(_parameters(parameters))
    return "\n".join(lines) + "\n"
