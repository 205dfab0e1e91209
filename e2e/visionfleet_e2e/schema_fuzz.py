"""Hypothesis strategies generated from the CRD's own OpenAPI schema (crds/…yaml), for fuzzing
VisionDeployment specs against the real API server (tests/e2e/test_fuzz_specs.py).

``conforming(schema)`` draws objects that satisfy the structural schema (types, enums, bounds,
patterns, required fields, list and map sizes) — the CEL rules may still refuse them, which is the
point: they are what a user can send. ``mutated(schema)`` draws one of those and breaks it in one
place (a required field removed, a value of the wrong type, a string over its bound, an unknown
field), to check that every refusal names the field.

hypothesis-jsonschema would do the first half, but its last release (0.23.1) fails with the
Hypothesis this project pins (an internal API it uses is gone); this walker covers the subset of
OpenAPI v3 a CRD schema may use.
"""

from __future__ import annotations

import copy
import string
from typing import Any

from hypothesis import strategies as st

LABEL_KEYS = st.sampled_from(["node.kubernetes.io/instance-type", "nvidia.com/gpu.product", "kubernetes.io/arch",
                              "topology.kubernetes.io/zone", "team", "visionfleet.io/fleet-class"])
QUANTITIES = st.sampled_from(["1", "2", "500m", "1Gi", "512Mi", "0"])
MAX_LIST = 3
MAX_TEXT = 24
# The accuracy gate's metrics per model.task, the default first (operator/visionfleet/api/spec.py
# TASK_METRICS, whose root CEL rule refuses a metric of another task), and those read against labels
# (they need compile.calibration, the labelled set).
TASK_METRICS = {"classification": ("top1Agreement", "top1Accuracy"),
                "detection": ("detectionF1", "detectionMap50", "labelMap50"),
                "segmentation": ("maskMiou", "labelMiou"),
                "other": ("outputCosine",)}
LABELLED_METRICS = ("top1Accuracy", "labelMap50", "labelMiou")
DETECTION_BOXES_ONLY = ("boxes", "scores", "classes", "count", "boxFormat")
DETECTION_HEAD_ONLY = ("output", "iouThreshold", "maxDetections")


def _bounded_text(schema: dict) -> st.SearchStrategy[str]:
    lo, hi = schema.get("minLength", 0), min(schema.get("maxLength", MAX_TEXT), MAX_TEXT)
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(
            lambda s: schema.get("minLength", 0) <= len(s) <= schema.get("maxLength", 10**6)).filter(
            lambda s: "\x00" not in s)
    return st.text(alphabet=string.ascii_letters + string.digits + "-_./:", min_size=lo, max_size=max(lo, hi))


def conforming(schema: dict, depth: int = 0) -> st.SearchStrategy[Any]:
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if schema.get("x-kubernetes-int-or-string"):
        return st.one_of(st.integers(0, 64), QUANTITIES)
    t = schema.get("type")
    if t == "object":
        props = schema.get("properties") or {}
        if props:
            required = set(schema.get("required", []))
            return st.fixed_dictionaries(
                {k: conforming(v, depth + 1) for k, v in props.items() if k in required},
                optional={k: conforming(v, depth + 1) for k, v in props.items() if k not in required})
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return st.dictionaries(LABEL_KEYS, conforming(extra, depth + 1),
                                   max_size=min(schema.get("maxProperties", MAX_LIST), MAX_LIST))
        return st.just({})
    if t == "array":
        items = schema.get("items") or {}
        lo = schema.get("minItems", 0)
        hi = max(lo, min(schema.get("maxItems", MAX_LIST), MAX_LIST))
        unique_by = schema.get("x-kubernetes-list-map-keys")
        if unique_by:
            return st.lists(conforming(items, depth + 1), min_size=lo, max_size=hi,
                            unique_by=lambda o: tuple(str(o.get(k)) for k in unique_by))
        return st.lists(conforming(items, depth + 1), min_size=lo, max_size=hi)
    if t == "string":
        return _bounded_text(schema)
    if t == "integer":
        lo = schema.get("minimum", -5)
        hi = schema.get("maximum", lo + 1000)
        if schema.get("exclusiveMinimum") is True:
            lo += 1
        if schema.get("exclusiveMaximum") is True:
            hi -= 1
        return st.integers(lo, hi)
    if t == "number":
        lo, hi = schema.get("minimum", -1e6), schema.get("maximum", 1e6)
        return st.floats(lo, hi, allow_nan=False, allow_infinity=False,
                         exclude_min=schema.get("exclusiveMinimum") is True,
                         exclude_max=schema.get("exclusiveMaximum") is True)
    if t == "boolean":
        return st.booleans()
    return st.none()


def _paths(obj: Any, schema: dict, path: tuple = ()) -> list[tuple[tuple, dict, Any]]:
    out = [(path, schema, obj)]
    if isinstance(obj, dict):
        props = schema.get("properties") or {}
        for k, v in obj.items():
            sub = props.get(k) or (schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else {})
            out += _paths(v, sub, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, schema.get("items") or {}, (*path, i))
    return out


def _set(obj: Any, path: tuple, value: Any) -> None:
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


@st.composite
def mutated(draw, schema: dict) -> tuple[dict, str]:
    """(a spec broken in one place, how). The how names the JSON path that was broken."""
    obj = copy.deepcopy(draw(conforming(schema)))
    candidates = [(p, s, v) for p, s, v in _paths(obj, schema) if p]
    kind = draw(st.sampled_from(["drop-required", "wrong-type", "too-long", "unknown-field"]))
    if kind == "drop-required":
        holders = [(p, s, v) for p, s, v in _paths(obj, schema) if isinstance(v, dict) and s.get("required")]
        if holders:
            p, s, v = draw(st.sampled_from(holders))
            key = draw(st.sampled_from(sorted(s["required"])))
            if key in v:
                del v[key]
                return obj, f"dropped required {'.'.join(map(str, (*p, key)))}"
    if kind == "too-long":
        strings = [(p, s, v) for p, s, v in candidates if isinstance(v, str) and "maxLength" in s and "enum" not in s]
        if strings:
            p, s, v = draw(st.sampled_from(strings))
            _set(obj, p, "x" * (s["maxLength"] + 1))
            return obj, f"{'.'.join(map(str, p))} over maxLength"
    if kind == "unknown-field":
        objects = [(p, s, v) for p, s, v in _paths(obj, schema) if isinstance(v, dict) and s.get("properties")]
        p, s, v = draw(st.sampled_from(objects))
        v["notAField"] = 1
        return obj, f"unknown field {'.'.join(map(str, (*p, 'notAField')))}"
    p, s, v = draw(st.sampled_from(candidates))
    wrong = {str: 12345, int: "twelve", float: "fast", bool: "yes", list: {"a": 1}, dict: ["a"]}.get(type(v), [])
    _set(obj, p, wrong)
    return obj, f"{'.'.join(map(str, p))} of the wrong type"


def repair(spec: dict) -> dict:
    """Make a conforming draw satisfy the CRD's cross-field (CEL) rules, so that the operator — not
    only the API server's admission — sees a wide range of specs. Each fix mirrors one rule in
    operator/visionfleet/api/spec.py; the unrepaired draws keep exercising the rules themselves."""
    spec = copy.deepcopy(spec)
    model = spec.setdefault("model", {})
    if str(model.get("uri", "")).startswith("gs://"):
        model["uri"] = "s3://" + model["uri"][len("gs://"):]
    if str(model.get("uri", "")).startswith(("https://", "s3://")):
        model["sha256"] = "0" * 64
    serving = spec.setdefault("serving", {})
    if not str(serving.get("modelRepository", "")).startswith(("pvc://", "s3://")):
        serving["modelRepository"] = "pvc://models/repository"
    for io in ("inputs", "outputs"):
        seen: set[str] = set()
        for i, t in enumerate(model.get(io) or []):
            if t.get("name") in seen:
                t["name"] = f"t{i}"
            seen.add(t.get("name"))
            t["dims"] = [d if d != 0 else 1 for d in t.get("dims", [])]
    _repair_task(model)
    fleet = spec.setdefault("fleet", {})
    names: set[str] = set()
    classes = []
    for c in fleet.get("classes") or []:
        if c.get("name") in names:
            continue
        names.add(c.get("name"))
        if c.get("runtime") != "tensorrt" and c.get("precision") == "fp16":
            c["precision"] = "fp32"
        if c.get("runtime") != "openvino" and c.get("precision") == "bf16":
            c["precision"] = "fp16" if c.get("runtime") == "tensorrt" else "fp32"
        if c.get("runtime") == "tensorrt":
            c.setdefault("resources", {}).setdefault("limits", {})["nvidia.com/gpu"] = 1
        if not c.get("nodeSelector"):
            c["nodeSelector"] = {"kubernetes.io/arch": "amd64"}
        for t in c.get("tolerations") or []:
            if t.get("operator") == "Exists":
                t.pop("value", None)
        _repair_replicas(c.get("replicas"))
        classes.append(c)
    if classes:
        fleet["classes"] = classes
    else:
        fleet.pop("classes", None)
    if "discover" in fleet:
        d = fleet["discover"]
        if d.get("cpuRuntime") == "tensorrt":
            d["cpuRuntime"] = "openvino"
        if d.get("cpuPrecision") == "fp16":
            d["cpuPrecision"] = "fp32"
        if d.get("cpuPrecision") == "bf16" and d.get("cpuRuntime", "openvino") != "openvino":
            d["cpuPrecision"] = "fp32"
        if d.get("gpuPrecision") not in (None, "fp16", "int8", "auto"):
            d["gpuPrecision"] = "fp16"
        _repair_replicas(d.get("replicas"))
    if not fleet.get("classes") and "discover" not in fleet:
        fleet["classes"] = [{"name": "xeon", "nodeSelector": {"node.kubernetes.io/instance-type": "c7i.4xlarge"},
                             "runtime": "openvino"}]
    comp = spec.setdefault("compile", {})
    cal = comp.get("calibration")
    if cal and str(cal.get("uri", "")).startswith("gs://"):
        cal["uri"] = "s3://" + cal["uri"][len("gs://"):]
    for e in comp.get("env") or []:
        if str(e.get("name", "")).startswith("VISIONFLEET_"):
            e["name"] = "X" + e["name"]
        if "valueFrom" in e:
            e.pop("value", None)
            src = e["valueFrom"]
            if ("secretKeyRef" in src) == ("configMapKeyRef" in src):
                e["valueFrom"] = {"secretKeyRef": src.get("secretKeyRef") or {"name": "s", "key": "k"}}
    for ef in comp.get("envFrom") or []:
        if ("secretRef" in ef) == ("configMapRef" in ef):
            ef.clear()
            ef["secretRef"] = {"name": "s"}
    gate = comp.get("accuracyGate")
    task_metrics = TASK_METRICS[model.get("task") or "classification"]
    if gate and "metric" in gate and gate["metric"] not in task_metrics:
        gate["metric"] = task_metrics[0]
    needs_calibration = any(c.get("precision") == "int8" for c in fleet.get("classes") or []) \
        or ("discover" in fleet and "int8" in (fleet["discover"].get("cpuPrecision", "int8"),  # its default
                                               fleet["discover"].get("gpuPrecision"))) \
        or (gate or {}).get("metric") in LABELLED_METRICS \
        or "drift" in (spec.get("analysis") or {})
    if needs_calibration:
        comp.setdefault("calibration", {"uri": "pvc://models/calib.npz"})
    b = comp.get("batching")
    if b is not None:
        if b.get("mode", "auto") == "auto":
            b.setdefault("latencyBudgetMs", 10)
        if b.get("mode") == "manual":
            b.setdefault("maxBatchSize", 8)
        if "preferredBatchSizes" in b and "maxBatchSize" in b:
            b["preferredBatchSizes"] = [x for x in b["preferredBatchSizes"] if x <= b["maxBatchSize"]] or [1]
    ro = spec.get("rollout") or {}
    if "steps" in ro:
        # weighted steps only: a shadow step (no setWeight) needs Gateway API traffic and comes first,
        # which the generator does not know
        weighted = [s for s in ro["steps"] if "setWeight" in s]
        ro["steps"] = sorted({s["setWeight"]: s for s in weighted}.values(), key=lambda s: s["setWeight"])
        if not ro["steps"]:
            ro.pop("steps")
    if "waves" in ro:
        known, used, waves = {c.get("name") for c in fleet.get("classes") or []}, set(), []
        for w in ro["waves"]:
            w = [n for n in dict.fromkeys(w) if n in known and n not in used]
            used.update(w)
            if w:
                waves.append(w)
        if waves:
            ro["waves"] = waves
        else:
            ro.pop("waves")
    tr = ro.get("traffic")
    if tr is not None:
        if tr.get("method") == "GatewayAPI":
            tr.setdefault("gatewayAPI", {"httpRoute": "route"})
        else:
            tr.pop("gatewayAPI", None)
    an = spec.get("analysis") or {}
    if ("slo" in an or "drift" in an) and "prometheus" not in an:
        an["prometheus"] = {"url": "http://127.0.0.1:9"}
    return spec


def _repair_replicas(r: dict | None) -> None:
    """replicas.min <= replicas.max, the unset one at its default (min 1, max 4)."""
    if r and r.get("min", 1) > r.get("max", 4):
        if "max" in r:
            r["min"], r["max"] = min(r["min"], r["max"]), max(r["min"], r["max"])
        else:
            r["max"] = r["min"]


def _repair_task(model: dict) -> None:
    """model.task against model.detection / model.segmentation (ModelSpec, DetectionOutputs and
    SegmentationOutputs in spec.py): each layout present exactly with its task, holding only the fields
    of its layout, and naming only outputs the model declares."""
    task = model.get("task") or "classification"
    outputs = [o.get("name") for o in model.get("outputs") or [] if o.get("name")] or ["output0"]
    if not model.get("outputs"):
        model["outputs"] = [{"name": "output0", "dataType": "FP32", "dims": [1]}]
    for key in ("detection", "segmentation"):
        if task != key:
            model.pop(key, None)
    if task == "detection":
        det = model.setdefault("detection", {"layout": "anchorFree"})
        det.setdefault("layout", "anchorFree")
        if det["layout"] == "boxes":
            for k in DETECTION_HEAD_ONLY:
                det.pop(k, None)
            det.setdefault("boxes", outputs[0])
            det.setdefault("scores", outputs[-1])
        else:
            for k in DETECTION_BOXES_ONLY:
                det.pop(k, None)
        for k in ("output", *DETECTION_BOXES_ONLY[:4]):
            if k in det and det[k] not in outputs:
                det[k] = outputs[0]
    if task == "segmentation":
        seg = model.setdefault("segmentation", {"layout": "logits"})
        seg.setdefault("layout", "logits")
        seg.pop("threshold" if seg["layout"] == "mask" else "numClasses", None)
        if "output" in seg and seg["output"] not in outputs:
            seg["output"] = outputs[0]
