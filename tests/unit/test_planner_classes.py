"""Node classes: explicit ones counted, discovered ones grouped from node labels."""

from __future__ import annotations

from visionfleet.api.spec import VisionDeploymentSpec
from visionfleet.planner.classes import ObservedNode, class_name_for, resolve_classes
from visionfleet.planner.conditions import CondType, Reason, set_condition

MODEL = {"name": "m", "version": "1", "uri": "pvc://m/m.onnx",
         "inputs": [{"name": "x", "dataType": "FP32", "dims": [3]}],
         "outputs": [{"name": "y", "dataType": "FP32", "dims": [10]}]}
GPU_TAINT = ("nvidia.com/gpu", "present", "NoSchedule")
EDGE_TAINT = ("node-role.kubernetes.io/edge", None, "NoSchedule")
NODES = [
    ObservedNode("h100-0", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "kubernetes.io/arch": "amd64"},
                 taints=(GPU_TAINT,), gpus=8),
    ObservedNode("h100-1", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "kubernetes.io/arch": "amd64"},
                 taints=(GPU_TAINT,), gpus=8),
    ObservedNode("jetson-0", {"nvidia.com/gpu.product": "NVIDIA-Jetson-AGX-Orin", "kubernetes.io/arch": "arm64"},
                 taints=(GPU_TAINT, EDGE_TAINT), gpus=1),
    ObservedNode("xeon-0", {"kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "c7i.4xlarge"}),
    ObservedNode("xeon-1", {"kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "c7i.4xlarge"}),
]


def discover_spec(**discover):
    return VisionDeploymentSpec.model_validate({
        "model": MODEL,
        "fleet": {"discover": {"groupBy": ["nvidia.com/gpu.product", "kubernetes.io/arch"], **discover}},
        "compile": {"calibration": {"uri": "pvc://c/c.npz"}},
    })


def test_discovery_makes_one_class_per_label_group():
    classes = {c.name: c for c in resolve_classes(discover_spec(), NODES)}
    assert set(classes) == {"nvidia-h100-80gb-hbm3-amd64", "nvidia-jetson-agx-orin-arm64", "none-amd64"}
    h100 = classes["nvidia-h100-80gb-hbm3-amd64"]
    assert h100.nodes == 2 and h100.spec.runtime == "tensorrt" and h100.spec.precision == "fp16"
    assert h100.spec.resources.limits == {"nvidia.com/gpu": 1}
    assert h100.spec.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "kubernetes.io/arch": "amd64"}
    assert [t.key for t in h100.spec.tolerations] == ["nvidia.com/gpu"]
    cpu = classes["none-amd64"]
    assert cpu.spec.runtime == "openvino" and cpu.spec.precision == "int8" and cpu.nodes == 2
    assert cpu.absent_labels == ("nvidia.com/gpu.product",), "a CPU group must not land on GPU nodes"
    assert cpu.spec.node_selector == {"kubernetes.io/arch": "amd64"}
    jetson = classes["nvidia-jetson-agx-orin-arm64"]
    assert {t.key for t in jetson.spec.tolerations} == {"nvidia.com/gpu", "node-role.kubernetes.io/edge"}
    edge = next(t for t in jetson.spec.tolerations if t.key == "node-role.kubernetes.io/edge")
    assert edge.operator == "Exists" and edge.value is None


def test_discovery_respects_its_node_selector():
    classes = resolve_classes(discover_spec(nodeSelector={"kubernetes.io/arch": "arm64"}), NODES)
    assert [c.name for c in classes] == ["nvidia-jetson-agx-orin-arm64"]
    assert classes[0].spec.node_selector["kubernetes.io/arch"] == "arm64"


def test_explicit_classes_are_counted_not_changed():
    spec = VisionDeploymentSpec.model_validate({"model": MODEL, "fleet": {"classes": [
        {"name": "xeon", "nodeSelector": {"node.kubernetes.io/instance-type": "c7i.4xlarge"}, "runtime": "onnxruntime"},
        {"name": "l4", "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"}, "runtime": "tensorrt",
         "precision": "fp16", "resources": {"limits": {"nvidia.com/gpu": 1}}},
    ]}})
    classes = resolve_classes(spec, NODES)
    assert [(c.name, c.nodes) for c in classes] == [("xeon", 2), ("l4", 0)]
    assert classes[0].spec == spec.fleet.classes[0]


def test_long_class_names_are_shortened_stably():
    name = class_name_for(("A" * 60, "amd64"))
    assert len(name) <= 40 and name == class_name_for(("A" * 60, "amd64")) and name != class_name_for(("A" * 61, "amd64"))


def test_condition_transition_time_moves_only_on_a_flip():
    conds = set_condition([], CondType.AVAILABLE, True, Reason.REPLICAS_READY, "ok", "t1", 1)
    conds = set_condition(conds, CondType.AVAILABLE, True, Reason.REPLICAS_READY, "still ok", "t2", 2)
    assert conds[0].last_transition_time == "t1" and conds[0].message == "still ok"
    conds = set_condition(conds, CondType.AVAILABLE, False, Reason.REPLICAS_NOT_READY, "down", "t3", 2)
    assert conds[0].last_transition_time == "t3" and conds[0].status == "False"
