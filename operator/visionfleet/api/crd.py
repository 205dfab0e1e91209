"""Render the VisionDeployment CRD from the pydantic models (the one source of truth).

pydantic emits JSON Schema 2020-12; the API server wants a *structural* OpenAPI v3 schema. The
translation below is small and explicit:

  pydantic                                   structural schema
  ---------------------------------------    ------------------------------------------------
  $ref / $defs                                inlined (structural schemas have no references)
  anyOf [X, null]   (Optional[X])             X       (absent, never null, on the wire)
  anyOf [int, str] + int-or-string marker     x-kubernetes-int-or-string: true
  exclusiveMinimum: n   (draft 2020)          minimum: n, exclusiveMinimum: true (OpenAPI 3.0)
  additionalProperties: false (extra=forbid)  dropped: the API server prunes unknown fields
  propertyNames, title, default: null         dropped: not allowed / meaningless here

``visionfleet-crd`` writes ``crds/visionfleet.io_visiondeployments.yaml`` and the field reference
``docs/reference.md``; ``--check`` exits 1 when the CRD differs from what the models generate (a
test checks both files).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from .spec import VisionDeploymentSpec
from .status import VisionDeploymentStatus

GROUP = "visionfleet.io"
VERSION = "v1alpha1"
KIND = "VisionDeployment"
PLURAL = "visiondeployments"
SINGULAR = "visiondeployment"
SHORT_NAMES = ["vd"]
CRD_FILE = f"{GROUP}_{PLURAL}.yaml"

# metadata.name names the Service and the Triton Deployments (<name>-<class>-<track>), so it must be
# a DNS-1035 label, and short enough to leave room for the suffixes.
NAME_MAX = 40

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stableRevision"},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canaryRevision", "priority": 1},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.effectiveWeight",
     "description": "Percent of traffic the canary revision really gets (Ready canary share)"},
    {"name": "Set-weight", "type": "integer", "jsonPath": ".status.canaryWeight", "priority": 1,
     "description": "Percent of traffic the current step asks for"},
    {"name": "P99-ms", "type": "number", "jsonPath": ".status.analysis.p99Ms",
     "description": "p99 latency of the canary at the last analysis"},
    {"name": "Drift-p", "type": "number", "jsonPath": ".status.analysis.driftPValue",
     "description": "p-value of the last drift test on the canary's inputs (low = drift)"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    # kubectl get vd -o wide: what the rollout waits on (a compile pod unschedulable, a missing claim…)
    {"name": "Message", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Progressing")].message',
     "priority": 1, "description": "The Progressing condition's message: the step, and why a pod waits"},
]

_DROP = {"title", "propertyNames", "$defs", "discriminator"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(x, defs) for x in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        merged = dict(_resolve(target, defs))
        # Field-level keywords (description, default, extra rules) win over the referenced model's.
        for k, v in node.items():
            if k == "x-kubernetes-validations":
                merged[k] = merged.get(k, []) + v
            else:
                merged[k] = v
        return _resolve(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if rest.get("x-kubernetes-int-or-string"):
            return _clean(rest)
        if len(options) == 1:
            merged = dict(_resolve(options[0], defs))
            for k, v in rest.items():
                merged[k] = merged.get(k, []) + v if k == "x-kubernetes-validations" else v
            return _resolve(merged, defs)
        raise ValueError(f"cannot express anyOf {options!r} in a structural schema")
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        return _resolve({**inner, **node}, defs)
    return _clean({k: _resolve(v, defs) for k, v in node.items()})


def _clean(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k in _DROP or (k == "default" and v is None):
            continue
        if k == "additionalProperties" and v is False:
            continue
        if k in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(v, bool):
            out["minimum" if k == "exclusiveMinimum" else "maximum"] = v
            out[k] = True
            continue
        out[k] = v
    if "properties" in out or "additionalProperties" in out:
        out.setdefault("type", "object")
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def structural_schema(model: type) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _resolve(raw, raw.get("$defs", {}))


def build_crd() -> dict[str, Any]:
    spec = structural_schema(VisionDeploymentSpec)
    spec["description"] = "What to compile, where, and how to roll it out. Owned by the user; the operator never writes it."
    status = structural_schema(VisionDeploymentStatus)
    status["description"] = "Written by the operator only (status subresource)."
    root = {
        "type": "object",
        "description": "A vision model compiled per node class and rolled out on Triton as a canary.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [
            {
                "rule": f"size(self.metadata.name) <= {NAME_MAX}"
                " && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                "message": f"metadata.name must be a DNS-1035 label (lowercase letters, digits, '-', starting "
                f"with a letter) of at most {NAME_MAX} characters: it names the Service and Triton Deployments",
            }
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "annotations": {"visionfleet.io/generated-by": "visionfleet-crd (from visionfleet.api models)"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["visionfleet"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render() -> str:
    header = (
        "# GENERATED by `visionfleet-crd` from operator/visionfleet/api (pydantic models).\n"
        "# Do not edit: change the models and run `visionfleet-crd` (a test fails when this file is stale).\n"
    )
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


def _type_of(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    t = node.get("type", "")
    if t == "array":
        return f"list of {_type_of(node.get('items', {}))}"
    if t == "object" and "additionalProperties" in node and "properties" not in node:
        return f"map of {_type_of(node['additionalProperties'])}"
    return t


def _bounds(node: dict[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append(" \\| ".join(f"`{v}`" for v in node["enum"]))
    for key, label in (("minimum", "≥"), ("maximum", "≤"), ("minItems", "items ≥"), ("maxItems", "items ≤"),
                       ("minLength", "length ≥"), ("maxLength", "length ≤"), ("maxProperties", "entries ≤")):
        if key in node:
            excl = node.get("exclusiveMinimum" if key == "minimum" else "exclusiveMaximum") is True
            sign = label.replace("≥", ">").replace("≤", "<") if excl and key in ("minimum", "maximum") else label
            parts.append(f"{sign} {node[key]}")
    if "pattern" in node and "enum" not in node:
        parts.append("pattern `" + node["pattern"].replace("|", "\\|") + "`")
    return ", ".join(parts)


def _rows(node: dict[str, Any], path: str, required: bool, out: list[str], rules: list[tuple[str, str]]) -> None:
    default = node.get("default")
    shown = "" if default is None else f"`{json.dumps(default, separators=(',', ':'))}`"
    desc = (node.get("description") or "").replace("|", "\\|").replace("\n", " ")
    out.append(f"| `{path}` | {_type_of(node)} | {'yes' if required else ''} | {shown} | {_bounds(node)} | {desc} |")
    for r in node.get("x-kubernetes-validations", []):
        rules.append((path + r.get("fieldPath", ""), r["message"]))
    if node.get("type") == "array" and isinstance(node.get("items"), dict) and node["items"].get("type") == "object":
        node = node["items"]
        path = path + "[]"
        for r in node.get("x-kubernetes-validations", []):
            rules.append((path + r.get("fieldPath", ""), r["message"]))
    for name, child in (node.get("properties") or {}).items():
        _rows(child, f"{path}.{name}", name in node.get("required", []), out, rules)


def render_reference() -> str:
    """docs/reference.md: every field of spec and status, from the same schema as the CRD."""
    root = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    lines = [
        "# VisionDeployment reference",
        "",
        "<!-- GENERATED by `visionfleet-crd` from operator/visionfleet/api; a test fails when it is stale. -->",
        "",
        f"`{GROUP}/{VERSION}`, kind `{KIND}`, short name `vd`, namespaced. Every field, its type, default",
        "and bounds, as the API server enforces them; the rules below the tables are the CEL checks, with the",
        "message the API server returns.",
    ]
    for part in ("spec", "status"):
        rows: list[str] = []
        rules: list[tuple[str, str]] = []
        _rows(root["properties"][part], part, part == "spec", rows, rules)
        lines += ["", f"## {part}", "", "| field | type | required | default | allowed | description |",
                  "|---|---|---|---|---|---|", *rows]
        if rules:
            lines += ["", f"Rules on `{part}`:", ""] + [f"- `{where}`: {msg}" for where, msg in rules]
    return "\n".join(lines) + "\n"


def reference_path() -> Path:
    return Path(__file__).resolve().parents[3] / "docs" / "reference.md"


def default_path() -> Path:
    return Path(__file__).resolve().parents[3] / "crds" / CRD_FILE


def chart_copy_path() -> Path:
    """The Helm chart's copy (a chart can only read files inside itself); written and checked with crds/."""
    return Path(__file__).resolve().parents[3] / "charts" / "visionfleet" / "files" / "crds" / CRD_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="visionfleet-crd",
        description="Generate the VisionDeployment CRD from the pydantic models in visionfleet.api.",
    )
    parser.add_argument("--out", type=Path, default=default_path(), help="file to write (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 and show a diff when --out is stale")
    parser.add_argument("--stdout", action="store_true", help="print the CRD instead of writing it")
    parser.add_argument("--reference", type=Path, default=reference_path(),
                        help="the field reference (markdown) written beside the CRD (default: %(default)s)")
    args = parser.parse_args(argv)
    text = render()
    if args.stdout:
        sys.stdout.write(text)
        return 0
    outs = [args.out] + ([chart_copy_path()] if args.out == default_path() else [])
    if args.check:
        stale = 0
        for out in outs:
            current = out.read_text() if out.exists() else ""
            if current == text:
                print(f"{out}: up to date")
                continue
            stale += 1
            sys.stdout.writelines(difflib.unified_diff(
                current.splitlines(True), text.splitlines(True), str(out), "generated"))
            print(f"\n{out} is stale: run `visionfleet-crd` and commit the result", file=sys.stderr)
        return 1 if stale else 0
    for out in outs:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    args.reference.write_text(render_reference())
    print(f"wrote {', '.join(map(str, outs))} and {args.reference}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
