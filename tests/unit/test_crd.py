"""The CRD in crds/ is exactly what the pydantic models generate, and it is a structural schema
whose CEL rules the API server can afford (every list, map and string bounded)."""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Annotated, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from visionfleet.api import VisionDeploymentSpec, VisionDeploymentStatus
from visionfleet.api import crd as crdmod
from visionfleet.api.spec import AnalysisSpec, RolloutSpec

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
    assert columns == ["Phase", "Stable", "Canary", "Weight", "Set-weight", "P99-ms", "Drift-p", "Age", "Message"]
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
    # The gate's defaults depend on model.task: unset in the schema, resolved by the compile program.
    gate = spec["compile"]["properties"]["accuracyGate"]
    assert "default" not in gate and "default" not in gate["properties"]["min"]


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


# -- descriptions: `kubectl explain vd.spec...` must never print <empty> --------------------------


def _properties(node, path):
    """(path, property schema) of every property under ``node``: nested objects, list items
    (``path[]``) and map values (``path{}``)."""
    for name, child in (node.get("properties") or {}).items():
        yield f"{path}.{name}", child
        yield from _properties(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _properties(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _properties(node["additionalProperties"], path + "{}")


def _checked_in_schema():
    crd = yaml.safe_load((REPO / "crds" / crdmod.CRD_FILE).read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("which", ["generated", "checked-in"])
def test_every_spec_and_status_field_has_a_description(which):
    root = schema() if which == "generated" else _checked_in_schema()
    paths = [(p, n) for part in ("spec", "status") for p, n in _properties(root["properties"][part], part)]
    assert len(paths) > 150, "the walk found too few fields: is the schema's shape still the one walked here?"
    missing = [p for p, n in paths if not str(n.get("description") or "").strip()]
    assert not missing, f"{len(missing)} fields without a description (kubectl explain shows <empty>): " + \
        ", ".join(missing)
    for part in ("spec", "status"):
        assert root["properties"][part].get("description")


def _model_in(tp):
    """The pydantic model a field holds (directly, Optional, Annotated, or as list items), and
    whether it is a list of them."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _model_in(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            found = _model_in(arg)
            if found[0] is not None:
                return found
        return None, False
    if origin is list:
        model, _ = _model_in(get_args(tp)[0])
        return (model, True) if model is not None else (None, False)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp, False
    return None, False


def _field_descriptions(model, node, path):
    for name, field in model.model_fields.items():
        alias = field.alias or name
        prop = node["properties"][alias]
        yield f"{path}.{alias}", field.description, prop.get("description")
        nested, is_list = _model_in(field.annotation)
        if nested is not None:
            yield from _field_descriptions(nested, prop["items"] if is_list else prop,
                                           f"{path}.{alias}" + ("[]" if is_list else ""))


def test_field_descriptions_reach_the_schema_and_win_over_model_docstrings():
    """Every field's own description survives the $ref/anyOf inlining of crd.py, word for word, even
    where the field's type is a model with a docstring of its own (the field's text is the one
    kubectl explain must show for that field)."""
    root = schema()
    rows = [*_field_descriptions(VisionDeploymentSpec, root["properties"]["spec"], "spec"),
            *_field_descriptions(VisionDeploymentStatus, root["properties"]["status"], "status")]
    assert len(rows) > 150
    undescribed = [p for p, mine, _ in rows if not mine]
    assert not undescribed, "fields without description= in the models: " + ", ".join(undescribed)
    lost = [f"{p}: {got!r} instead of {mine!r}" for p, mine, got in rows if mine != got]
    assert not lost, "descriptions dropped or replaced by crd.py: " + "; ".join(lost)


KEY_DEFAULTS = [
    ("analysis.interval", AnalysisSpec, "interval", "30s"),
    ("analysis.consecutiveErrorLimit", AnalysisSpec, "consecutive_error_limit", 4),
    ("analysis.failureLimit", AnalysisSpec, "failure_limit", 1),
    ("analysis.inconclusiveLimit", AnalysisSpec, "inconclusive_limit", 3),
    ("rollout.progressDeadline", RolloutSpec, "progress_deadline", "10m"),
    ("rollout.scaleDownDelay", RolloutSpec, "scale_down_delay", "30s"),
]


@pytest.mark.parametrize("path, model, field, default", KEY_DEFAULTS, ids=[k[0] for k in KEY_DEFAULTS])
def test_key_descriptions_state_their_default(path, model, field, default):
    assert model.model_fields[field].default == default, f"the default of spec.{path} changed: update this test"
    node = schema()["properties"]["spec"]
    for name in path.split("."):
        node = node["properties"][name]
    assert node["default"] == default
    assert re.search(rf"\bDefault {re.escape(str(default))}\b", node["description"]), \
        f"spec.{path}: the description should say 'Default {default}.': {node['description']!r}"


def test_every_scalar_spec_default_is_in_its_description():
    """A user reads the default in kubectl explain, which does not show the schema's default."""
    missing = []
    for path, node in _properties(schema()["properties"]["spec"], "spec"):
        default = node.get("default")
        if default is None or isinstance(default, (dict, list)):
            continue
        if f"Default {default}" not in node.get("description", ""):
            missing.append(f"{path} (default {default})")
    assert not missing, "descriptions that do not say 'Default <value>': " + ", ".join(missing)


def test_every_cel_rule_uses_a_reason_the_api_server_accepts():
    """The API server refuses a CRD whose x-kubernetes-validations name another reason (caught once
    only by installing the CRD on a real API server)."""
    allowed = {"FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired"}
    rules = [(path, r) for path, node in walk(schema()) if isinstance(node, dict)
             for r in node.get("x-kubernetes-validations", [])]
    assert len(rules) > 20
    assert [(path, r["reason"]) for path, r in rules if r.get("reason", "FieldValueInvalid") not in allowed] == []
