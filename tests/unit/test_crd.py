"""The CRD in crds/ is exactly what the pydantic models generate, and it is a structural schema
whose CEL rules the API server can afford (every list, map and string bounded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from visionfleet.api import VisionDeploymentSpec
from visionfleet.api import crd as crdmod

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "docs" / "examples").glob("*.yaml"))


def walk(node, path="$"):
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def schema():
    return crdmod.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_checked_in_crd_matches_the_models():
    path = REPO / "crds" / crdmod.CRD_FILE
    assert path.read_text() == crdmod.render(), "crds/ is stale: run `make crd` (visionfleet-crd) and commit it"


def test_the_charts_copy_matches_the_models():
    assert crdmod.chart_copy_path().read_text() == crdmod.render(), \
        "charts/visionfleet/files/crds/ is stale: run `make crd` (visionfleet-crd) and commit it"


def test_checked_in_reference_matches_the_models():
    path = REPO / "docs" / "reference.md"
    assert path.read_text() == crdmod.render_reference(), "docs/reference.md is stale: run `make crd`"


def test_check_mode_reports_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "crd.yaml"
    stale.write_text(crdmod.render().replace("shortNames:", "shortNamez:"))
    assert crdmod.main(["--check", "--out", str(stale)]) == 1
    assert "-    shortNamez:" in capsys.readouterr().out
    stale.write_text(crdmod.render())
    assert crdmod.main(["--check", "--out", str(stale)]) == 0


def test_schema_is_structural():
    for path, node in walk(schema()):
        if isinstance(node, dict):
            for banned in ("$ref", "anyOf", "oneOf", "allOf", "title", "propertyNames", "$defs"):
                assert banned not in node, f"{path} has {banned}"
            if "properties" in node:
                assert node.get("type") == "object", f"{path} has properties but no type: object"
            if node.get("type") == "object" and "properties" not in node and path != "$.properties.metadata":
                assert "additionalProperties" in node or node.get("x-kubernetes-preserve-unknown-fields"), path


def test_every_spec_string_list_and_map_is_bounded():
    spec = schema()["properties"]["spec"]
    for path, node in walk(spec):
        if not isinstance(node, dict) or "type" not in node or ".x-kubernetes" in path:
            continue
        if node["type"] == "string":
            assert "maxLength" in node or "enum" in node, f"{path}: unbounded string"
        if node["type"] == "array":
            assert "maxItems" in node, f"{path}: unbounded list"
        if node["type"] == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, f"{path}: unbounded map"


def test_crd_surface():
    crd = crdmod.build_crd()
    assert crd["spec"]["names"]["shortNames"] == ["vd"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Stable", "Canary", "Weight", "Set-weight", "P99-ms", "Drift-p", "Age"]
    rules = [r["rule"] for _, n in walk(schema()) if isinstance(n, dict) for r in n.get("x-kubernetes-validations", [])]
    assert any("setWeight <" in r for r in rules), "steps must be checked for ascending weights"
    assert any("self.min <= self.max" in r for r in rules)
    assert any("precision != 'fp16'" in r for r in rules)
    classes = schema()["properties"]["spec"]["properties"]["fleet"]["properties"]["classes"]
    assert classes["x-kubernetes-list-type"] == "map" and classes["x-kubernetes-list-map-keys"] == ["name"]


def test_defaults_reach_the_schema():
    spec = schema()["properties"]["spec"]["properties"]
    # Whole objects, not {}: the API server checks defaults against CEL rules before nested defaulting.
    assert spec["analysis"]["default"] == {"interval": "30s", "failureLimit": 1, "inconclusiveLimit": 3,
                                           "onInconclusive": "Pause", "consecutiveErrorLimit": 4}
    assert spec["fleet"]["properties"]["classes"]["items"]["properties"]["replicas"]["default"] == {"min": 1, "max": 4}
    assert spec["analysis"]["properties"]["interval"]["default"] == "30s"
    assert spec["rollout"]["properties"]["steps"]["default"][0] == {"setWeight": 10, "pause": "1m"}
    assert spec["compile"]["properties"]["accuracyGate"]["properties"]["min"]["default"] == 0.99


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_validate_against_the_models(example):
    doc = yaml.safe_load(example.read_text())
    assert doc["apiVersion"] == "visionfleet.io/v1alpha1" and doc["kind"] == "VisionDeployment"
    VisionDeploymentSpec.model_validate(doc["spec"])


def test_models_refuse_unknown_fields():
    doc = yaml.safe_load((REPO / "docs/examples/minimal-cpu.yaml").read_text())
    doc["spec"]["model"]["shaa256"] = "x"
    with pytest.raises(ValidationError, match="shaa256"):
        VisionDeploymentSpec.model_validate(doc["spec"])
