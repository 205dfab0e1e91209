"""Nodes indexed by their labels: a pass takes only the nodes its classes can match, so its cost does
not grow with the nodes of other classes; the planner then resolves exactly the classes it would have
resolved from every node."""

from __future__ import annotations

import pytest

from visionfleet.api.spec import VisionDeploymentSpec
from visionfleet.observe.kube import ALL_NODES, node_from_body, node_index_keys, node_selectors, select_nodes
from visionfleet.planner.classes import resolve_classes

from .planner_sim import SPEC

ITYPE, PRODUCT = "node.kubernetes.io/instance-type", "nvidia.com/gpu.product"


def node(name: str, **labels: str):
    return node_from_body({"metadata": {"name": name, "uid": f"u-{name}", "labels": labels},
                           "status": {"conditions": [{"type": "Ready", "status": "True"}]}})


FLEET = [node(f"l4-{i}", **{PRODUCT: "NVIDIA-L4", ITYPE: "g6.12xlarge", "zone": f"z{i % 3}"}) for i in range(3)] + \
    [node(f"xeon-{i}", **{ITYPE: "c7i.4xlarge", "zone": f"z{i % 3}"}) for i in range(5)] + \
    [node(f"epyc-{i}", **{ITYPE: "c7a.4xlarge", "zone": "z0"}) for i in range(400)]


def build_index(nodes) -> dict:
    """What kopf keeps from node_index_keys: key -> the values indexed under it."""
    index: dict = {}
    for n in nodes:
        for k, v in node_index_keys(n).items():
            index.setdefault(k, []).append(v)
    return index


def raw_spec(classes=None, discover=None) -> dict:
    raw = {**SPEC, "fleet": {}}
    if classes is not None:
        raw["fleet"]["classes"] = classes
    if discover is not None:
        raw["fleet"]["discover"] = discover
    return raw


def cls(name, **selector):
    return {"name": name, "nodeSelector": selector, "runtime": "onnxruntime"}


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        pytest.param(raw_spec(SPEC["fleet"]["classes"]), None, id="the-sample-spec"),
        pytest.param(raw_spec([cls("xeon", **{ITYPE: "c7i.4xlarge"})]), {f"xeon-{i}" for i in range(5)},
                     id="one-class-leaves-the-other-400-nodes-out"),
        pytest.param(raw_spec([cls("xeon-z0", **{ITYPE: "c7i.4xlarge", "zone": "z0"})]), {"xeon-0", "xeon-3"},
                     id="every-label-of-the-selector-matches"),
        pytest.param(raw_spec([cls("none", **{ITYPE: "no-such-type"})]), set(), id="no-node-carries-it"),
        pytest.param(raw_spec([cls("l4", **{PRODUCT: "NVIDIA-L4"}), cls("g6", **{ITYPE: "g6.12xlarge"})]),
                     {"l4-0", "l4-1", "l4-2"}, id="classes-sharing-nodes-list-each-node-once"),
        pytest.param(raw_spec(discover={"groupBy": [PRODUCT], "nodeSelector": {"zone": "z1"}}),
                     {"l4-1", "xeon-1", "xeon-4"}, id="discovery-within-its-node-selector"),
    ],
)
def test_a_pass_takes_the_nodes_its_classes_can_match(spec, names):
    picked = select_nodes(build_index(FLEET), spec)
    if names is not None:
        assert sorted(n.name for n in picked) == sorted(names)
    assert len({n.name for n in picked}) == len(picked)
    # The planner resolves the same classes, with the same node counts, as from the whole fleet.
    model = VisionDeploymentSpec.model_validate(spec)
    assert resolve_classes(model, picked) == resolve_classes(model, FLEET)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(raw_spec(discover={"groupBy": [PRODUCT]}), id="discovery-without-a-node-selector"),
        pytest.param(raw_spec([cls("all")]), id="a-class-with-an-empty-selector"),
        pytest.param({}, id="no-spec"),
        pytest.param({"fleet": {"classes": [{"name": "x", "nodeSelector": {"a": 5}}]}}, id="not-a-valid-selector"),
    ],
)
def test_every_node_when_the_spec_selects_every_node_or_does_not_say(spec):
    assert node_selectors(spec) is None
    assert len(select_nodes(build_index(FLEET), spec)) == len(FLEET)


def test_index_keys_are_every_node_and_each_label():
    n = FLEET[0]
    keys = node_index_keys(n)
    assert keys[ALL_NODES] is n and keys[(PRODUCT, "NVIDIA-L4")] is n and len(keys) == 1 + len(n.labels)


def test_a_fleet_without_classes_takes_no_node():
    assert select_nodes(build_index(FLEET), {"fleet": {}}) == []
