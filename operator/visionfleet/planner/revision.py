"""What a *revision* is: the hash of the spec parts that change what is served.

    model           ─┐
    compile         ─┤ canonical JSON ─► sha256 ─► first 12 hex digits
    serving         ─┤
    storage         ─┤ (when set: S3 endpoint and credentials reach the pods)
    fleet           ─┤ (minus replicas: scaling a class is not a new artifact)
                     (compile minus scheduleTimeout: how long to wait for a node is policy)
    analysis.drift  ─┘ (the drift monitor is a sidecar in every Triton pod: it is part of what runs)

``rollout`` and the rest of ``analysis`` are policy: changing a pause or an SLO must not recompile
anything or restart a rollout, so they are left out. ``analysis.drift`` is not: adding, changing or
removing the drift test changes the pods, and a revision's pods never change under it, so it is a
new revision that rolls out as a canary (with its own drift reference).

Defaults are left out of the hash: a field equal to its default counts as omitted. So a field written
out with its default value and the same field omitted give the same revision, and an operator upgrade
that changes a default starts no rollout: the revision keeps its hash, and what it runs stays frozen in
its snapshot (``snapshot.py``) with the defaults of the day it was planned. The new default reaches a
VisionDeployment with its next revision. (The price: a spec that spells out the old default value
explicitly gets a new revision when that default changes, since the value no longer equals the default.)

Revisions planned before defaults were left out (hashed over the defaulted dump) are recognised by
``desired_revision``, so upgrading to this hashing starts no rollout either.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from visionfleet.api.spec import VisionDeploymentSpec, gate_defaults

REVISION_LENGTH = 12


def _strip_replicas(fleet: dict[str, Any]) -> dict[str, Any]:
    out = dict(fleet)
    if "classes" in out:
        out["classes"] = [{k: v for k, v in c.items() if k != "replicas"} for c in out["classes"]]
    if "discover" in out:
        out["discover"] = {k: v for k, v in out["discover"].items() if k != "replicas"}
    return out


# Fields inside hashed parts that are policy: they change how long the operator waits, not what runs.
# Left out in both hashings (the older one included defaults: scheduleTimeout's default would have
# moved every legacy hash).
POLICY_COMPILE_FIELDS = ("scheduleTimeout",)
# Fields added to compile after the older hashing: left out of it at their defaults, so a revision
# hashed that way keeps its name when an upgrade fills them in.
LATER_COMPILE_FIELDS = ("int8Fallback",)


def _gate(compile_: dict[str, Any], spec: VisionDeploymentSpec, defaults: bool) -> dict[str, Any]:
    """compile with its accuracyGate normalised: the gate's metric and min default per task (unset in
    the schema), so the task's default value counts as omitted, as any other default does, and an
    object stored when the schema defaulted them (top1Agreement, 0.99) keeps its revision. The older
    hashing (``defaults``) saw them written out."""
    metric, least = gate_defaults(spec.model.task)
    gate = dict(compile_.get("accuracyGate") or {})  # (unset and {} alike: the task's defaults)
    if defaults:
        gate.setdefault("metric", metric.value)
        gate.setdefault("min", least)
    else:
        if gate.get("metric") == metric.value:
            del gate["metric"]
        if gate.get("min") == least:
            del gate["min"]
    out = {k: v for k, v in compile_.items() if k != "accuracyGate"}
    if defaults:
        for name in LATER_COMPILE_FIELDS:
            field = next(f for f in type(spec.compile).model_fields.values() if f.alias == name)
            if name in out and out[name] == field.get_default(call_default_factory=True).to_wire():
                del out[name]
    if gate:
        out["accuracyGate"] = gate
    return out


def revision_parts(spec: VisionDeploymentSpec, *, defaults: bool = False) -> dict[str, Any]:
    wire = spec.model_dump(by_alias=True, exclude_none=True, exclude_defaults=not defaults, mode="json")
    wire.setdefault("fleet", {})
    parts = {
        "model": wire["model"],
        "compile": _gate({k: v for k, v in wire.get("compile", {}).items() if k not in POLICY_COMPILE_FIELDS},
                         spec, defaults),
        "serving": wire.get("serving", {}),
        "fleet": _strip_replicas(wire["fleet"]),
    }
    if wire.get("storage"):  # (added later: absent, it leaves every older hash as it was)
        parts["storage"] = wire["storage"]
    if not defaults and spec.analysis.drift is not None:  # (the older hashing left it out)
        parts["drift"] = (wire.get("analysis") or {}).get("drift") or {}
    return parts


def _hash(parts: dict[str, Any]) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:REVISION_LENGTH]


def revision_of(spec: VisionDeploymentSpec) -> str:
    return _hash(revision_parts(spec))


def desired_revision(spec: VisionDeploymentSpec, stable: str | None, canary: str | None) -> str:
    """The spec's revision; a revision hashed the older way (defaults included) that is still stable
    or in flight keeps its name, so upgrading the operator never restarts a rollout by itself."""
    legacy = _hash(revision_parts(spec, defaults=True))
    return legacy if legacy in (stable, canary) else revision_of(spec)
