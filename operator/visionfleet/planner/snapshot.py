"""Frozen revisions: what a revision runs, captured once, as plain data.

    spec change ─► revision r first planned ─► RevisionSnapshot(r, spec as it is now, resolved classes)
                                                  │  stored as ControllerRevision <vd>-<r> (data immutable)
                                                  ▼
       every child of r (compile Jobs, ConfigMaps, Deployments) is rendered from the snapshot,
       never from the current spec: editing serving.image while r is stable changes nothing that
       runs until the edited spec's own revision is promoted.

The snapshot holds the *defaulted* spec, so an operator upgrade that changes a default leaves every
running revision as it was; the revision hash leaves defaults out (``revision.py``), so the same
upgrade starts no rollout either. Pure: dicts in, dicts out.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from visionfleet.api.spec import NodeClass, VisionDeploymentSpec

from .classes import ResolvedClass
from .model import RevisionSnapshot

SNAPSHOT_FORMAT = 1


def snapshot_to_data(s: RevisionSnapshot) -> dict[str, Any]:
    """The ControllerRevision's ``data``."""
    return {
        "format": SNAPSHOT_FORMAT,
        "revision": s.revision,
        "spec": s.spec.to_wire(),
        "classes": [{"class": c.spec.to_wire(), "discovered": c.discovered, "absentLabels": list(c.absent_labels)}
                    for c in s.classes],
    }


def snapshot_from_data(revision: str, data: Any, outcome: str | None = None) -> RevisionSnapshot:
    """Parse a ControllerRevision's ``data``; ValueError (naming what is wrong) when it is unreadable."""
    if not isinstance(data, dict) or data.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"revision {revision}: snapshot format {data.get('format') if isinstance(data, dict) else None!r}"
                         f" is not {SNAPSHOT_FORMAT}")
    try:
        spec = VisionDeploymentSpec.model_validate(data["spec"])
        classes = tuple(ResolvedClass(spec=NodeClass.model_validate(c["class"]), nodes=0,
                                      discovered=bool(c.get("discovered")),
                                      absent_labels=tuple(c.get("absentLabels") or ()))
                        for c in data.get("classes") or [])
    except (KeyError, TypeError, ValidationError) as e:
        raise ValueError(f"revision {revision}: unreadable snapshot: {e}") from e
    return RevisionSnapshot(revision=revision, spec=spec, classes=classes, outcome=outcome)
