"""The planner's inputs and outputs: plain values, no I/O.

    VisionDeploymentView (spec, status, generation, annotations) ─┐
    Observed (nodes, compile Jobs, Triton Deployments, measurement)├─► plan() ─► Plan(actions, status, events)
    now                                                           ─┘

Actions are intents ("a compile Job for class l4 at revision r"), rendered into manifests by
``visionfleet.builders`` and carried out by ``visionfleet.act``; the planner never sees a manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from visionfleet.api.spec import VisionDeploymentSpec
from visionfleet.api.status import CompileResult, VisionDeploymentStatus

from .analysis import Measurement
from .classes import ObservedNode, ResolvedClass

# Annotations that drive a rollout by hand (kubectl annotate, or committed to Git).
ANNOTATION_PAUSED = "visionfleet.io/paused"   # "true": hold the current step (level)
ANNOTATION_PROMOTE = "visionfleet.io/promote"  # any new value: promote the canary now (one-shot)
ANNOTATION_ABORT = "visionfleet.io/abort"      # any new value: roll the canary back now (one-shot)


@dataclass(frozen=True)
class VisionDeploymentView:
    name: str
    namespace: str
    generation: int
    spec: VisionDeploymentSpec
    status: VisionDeploymentStatus
    annotations: dict[str, str] = field(default_factory=dict)
    uid: str = ""


@dataclass(frozen=True)
class ObservedJob:
    class_name: str
    revision: str
    state: str  # Pending | Running | Succeeded | Failed   (CompileState values)
    result: CompileResult | None = None  # parsed from the compile container's termination message
    message: str | None = None


@dataclass(frozen=True)
class ObservedDeployment:
    class_name: str
    revision: str
    replicas: int
    ready: int


@dataclass(frozen=True)
class Observed:
    nodes: tuple[ObservedNode, ...] = ()
    jobs: tuple[ObservedJob, ...] = ()
    deployments: tuple[ObservedDeployment, ...] = ()
    measurement: Measurement | None = None  # the canary's, while one is in flight
    stable_drift: Measurement | None = None  # the stable revision's drift test, when drift is configured

    def job(self, class_name: str, revision: str) -> ObservedJob | None:
        return next((j for j in self.jobs if j.class_name == class_name and j.revision == revision), None)

    def deployment(self, class_name: str, revision: str) -> ObservedDeployment | None:
        return next((d for d in self.deployments if d.class_name == class_name and d.revision == revision), None)


# -- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnsureCompileJob:
    cls: ResolvedClass
    revision: str


@dataclass(frozen=True)
class EnsureServing:
    """The Triton Deployment (and its config) of one class at one revision, with this many replicas."""

    cls: ResolvedClass
    revision: str
    replicas: int
    compile: CompileResult
    track: str  # "stable" | "canary"


@dataclass(frozen=True)
class DeleteServing:
    class_name: str
    revision: str


@dataclass(frozen=True)
class EnsureService:
    pass


@dataclass(frozen=True)
class SetRouteWeights:
    """Gateway API traffic: the named HTTPRoute's backends for this VisionDeployment become one
    per-revision Service each, with these weights (percent, summing to 100)."""

    route: str
    weights: tuple[tuple[str, int], ...]  # (revision, weight)


Action = EnsureCompileJob | EnsureServing | DeleteServing | EnsureService | SetRouteWeights


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    actions: list[Action]
    status: VisionDeploymentStatus
    events: list[Event]
    requeue_seconds: float


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(s: str | None) -> datetime | None:
    if not s:
        return None
    from datetime import timezone
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
