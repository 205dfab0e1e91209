"""The fleet file: how nodes are shared out, what each node carries, and clear errors."""

from __future__ import annotations

import pytest

from visionfleet_e2e.fleet import CLASS_LABEL, FleetError, load_fleet

DEMO = load_fleet("demo")


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param(4, {"h100": 1, "l4": 1, "xeon": 1, "jetson": 1}, id="one-each"),
        pytest.param(10, {"h100": 2, "l4": 3, "xeon": 3, "jetson": 2}, id="demo-size"),
        pytest.param(1000, {"h100": 200, "l4": 300, "xeon": 399, "jetson": 101}, id="scale"),
    ],
)
def test_nodes_are_shared_by_weight_with_one_per_class(size, expected):
    counts = DEMO.counts(size)
    assert counts == expected
    assert sum(counts.values()) == size


def test_size_below_class_count_is_refused():
    with pytest.raises(FleetError, match="size 3 is smaller than the number of classes"):
        DEMO.counts(3)


def test_default_size_is_about_ten():
    assert len(DEMO.nodes()) == 10


def test_nodes_carry_class_labels_taints_capacity_and_arch():
    nodes = {n["metadata"]["name"]: n for n in DEMO.nodes(8)}
    h100 = nodes["demo-h100-0000"]
    labels = h100["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert labels["nvidia.com/cuda.driver.major"] == "550"
    assert labels[CLASS_LABEL] == "h100"
    assert labels["kubernetes.io/hostname"] == "demo-h100-0000"
    assert h100["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert h100["status"]["allocatable"] == h100["status"]["capacity"]
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in h100["spec"]["taints"]
    assert h100["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"

    jetson = next(n for n in nodes.values() if n["metadata"]["labels"][CLASS_LABEL] == "jetson")
    assert jetson["metadata"]["labels"]["kubernetes.io/arch"] == "arm64"
    assert jetson["status"]["nodeInfo"]["architecture"] == "arm64"
    assert {"key": "node-role.kubernetes.io/edge", "effect": "NoSchedule"} in jetson["spec"]["taints"]

    xeon = next(n for n in nodes.values() if n["metadata"]["labels"][CLASS_LABEL] == "xeon")
    assert "taints" not in xeon["spec"] and "nvidia.com/gpu" not in xeon["status"]["capacity"]
    assert xeon["metadata"]["labels"]["feature.node.kubernetes.io/cpu-cpuid.AVX512VNNI"] == "true"


def test_zones_are_spread_round_robin():
    zones = [n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in DEMO.nodes(9)]
    assert zones[:3] == ["zone-a", "zone-b", "zone-c"] and len(set(zones)) == 3


def test_node_names_are_stable_and_unique():
    names = [n["metadata"]["name"] for n in DEMO.nodes(1000)]
    assert len(set(names)) == 1000
    assert names == [n["metadata"]["name"] for n in DEMO.nodes(1000)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("name: x\nclasses: []\n", "classes: List should have at least 1 item", id="no-classes"),
        pytest.param("name: x\nclasses: [{name: a, capacity: {cpu: '1'}}]\n", "capacity needs memory, pods",
                     id="capacity"),
        pytest.param("name: x\nclasses: [{name: a, capacity: {cpu: 1, memory: 1Gi, pods: 1}},"
                     " {name: a, capacity: {cpu: 1, memory: 1Gi, pods: 1}}]\n", "repeated: a", id="dupes"),
        pytest.param("name: x\nsizes: 3\nclasses: [{name: a, capacity: {cpu: 1, memory: 1Gi, pods: 1}}]\n",
                     "sizes: Extra inputs are not permitted", id="typo"),
        pytest.param("name: x\nclasses: [{name: a, arch: s390x, capacity: {cpu: 1, memory: 1Gi, pods: 1}}]\n",
                     "classes.0.arch", id="arch"),
    ],
)
def test_bad_fleet_files_name_the_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(FleetError) as err:
        load_fleet(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_unknown_fleet_name_lists_the_known_ones():
    with pytest.raises(FleetError, match="demo"):
        load_fleet("no-such-fleet")
