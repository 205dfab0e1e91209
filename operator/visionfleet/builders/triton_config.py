"""Triton's ``config.pbtxt`` for one compiled artifact: the one text both the cluster's Triton pods
and the local Triton load, so what is tested locally is byte for byte what is deployed.

    runtime       backend / platform        instance kind     artifact file
    tensorrt      platform tensorrt_plan    KIND_GPU          model.plan
    onnxruntime   backend onnxruntime       KIND_CPU          model.onnx
    openvino      backend openvino          KIND_CPU          model.xml (+ model.bin)
"""

from __future__ import annotations

from visionfleet.api.spec import ModelSpec, Runtime
from visionfleet.api.status import ChosenBatching

ARTIFACT_FILE = {
    Runtime.TENSORRT.value: "model.plan",
    Runtime.ONNXRUNTIME.value: "model.onnx",
    Runtime.OPENVINO.value: "model.xml",
}


def _tensors(ts, kind: str) -> str:
    body = ",\n".join(
        f'  {{\n    name: "{t.name}"\n    data_type: TYPE_{t.data_type}\n    dims: [ {", ".join(str(d) for d in t.dims)} ]\n  }}'
        for t in ts
    )
    return f"{kind} [\n{body}\n]"


def build_triton_config(model: ModelSpec, runtime: str, batching: ChosenBatching | None) -> str:
    """config.pbtxt text (protobuf text format) for ``model`` compiled for ``runtime``."""
    lines = [f'name: "{model.name}"']
    if runtime == Runtime.TENSORRT.value:
        lines.append('platform: "tensorrt_plan"')
    else:
        lines.append(f'backend: "{runtime}"')
    lines.append(f'default_model_filename: "{ARTIFACT_FILE[runtime]}"')
    max_batch = batching.max_batch_size if batching else 0
    lines.append(f"max_batch_size: {max_batch}")
    lines.append(_tensors(model.inputs, "input"))
    lines.append(_tensors(model.outputs, "output"))
    if batching and max_batch > 0:
        dyn = []
        if batching.preferred_batch_sizes:
            dyn.append(f"  preferred_batch_size: [ {', '.join(str(b) for b in batching.preferred_batch_sizes)} ]")
        if batching.max_queue_delay_microseconds is not None:
            dyn.append(f"  max_queue_delay_microseconds: {batching.max_queue_delay_microseconds}")
        lines.append("dynamic_batching {\n" + "\n".join(dyn) + ("\n" if dyn else "") + "}")
    kind = "KIND_GPU" if runtime == Runtime.TENSORRT.value else "KIND_CPU"
    count = batching.instance_count if batching and batching.instance_count else 1
    lines.append(f"instance_group [\n  {{\n    count: {count}\n    kind: {kind}\n  }}\n]")
    return "\n".join(lines) + "\n"
