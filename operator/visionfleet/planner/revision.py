"""What a *revision* is: the hash of the spec parts that change what is served.

    model      ─┐
    compile    ─┤ canonical JSON ─► sha256 ─► first 12 hex digits
    serving    ─┤
    fleet      ─┘ (minus replicas: scaling a class is not a new artifact)

``rollout`` and ``analysis`` are policy: changing a pause or an SLO must not recompile anything or
restart a rollout, so they are left out. The hash is taken over the *defaulted* model dump, so a
field written out with its default value and the same field omitted give the same revision.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from visionfleet.api.spec import VisionDeploymentSpec

REVISION_LENGTH = 12


def _strip_replicas(fleet: dict[str, Any]) -> dict[str, Any]:
    out = dict(fleet)
    if "classes" in out:
        out["classes"] = [{k: v for k, v in c.items() if k != "replicas"} for c in out["classes"]]
    if "discover" in out:
        out["discover"] = {k: v for k, v in out["discover"].items() if k != "replicas"}
    return out


def revision_parts(spec: VisionDeploymentSpec) -> dict[str, Any]:
    wire = spec.to_wire()
    return {
        "model": wire["model"],
        "compile": wire["compile"],
        "serving": wire["serving"],
        "fleet": _strip_replicas(wire["fleet"]),
    }


def revision_of(spec: VisionDeploymentSpec) -> str:
    canonical = json.dumps(revision_parts(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:REVISION_LENGTH]
