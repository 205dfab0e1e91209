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
from enum import Enum

from visionfleet.api.spec import VisionDeploymentSpec
from visionfleet.api.status import CompileResult, VisionDeploymentStatus

from .analysis import Measurement
from .classes import ObservedNode, ResolvedClass

# Annotations that drive a rollout by hand (kubectl annotate, or committed to Git).
ANNOTATION_PAUSED = "visionfleet.io/paused"   # "true": hold the current step (level)
ANNOTATION_PROMOTE = "visionfleet.io/promote"  # any new value: promote the canary now (one-shot)
ANNOTATION_ABORT = "visionfleet.io/abort"      # any new value: roll the canary back now (one-shot)
ANNOTATION_RETRY = "visionfleet.io/retry"      # any new value: re-attempt the spec's failed revision (one-shot)


class Outcome(str, Enum):
    """How a revision's attempt ended (``status.history[*].outcome``, and the snapshot's annotation)."""

    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"
    COMPILE_FAILED = "CompileFailed"
    SUPERSEDED = "Superseded"
    RETRIED = "Retried"


# A revision with one of these as its newest outcome is not tried again until the spec changes or a
# person asks (visionfleet.io/retry).
FAILED_OUTCOMES = frozenset({Outcome.ROLLED_BACK.value, Outcome.ABORTED.value, Outcome.COMPILE_FAILED.value})


class Track(str, Enum):
    STABLE = "stable"
    CANARY = "canary"


@dataclass(frozen=True)
class RevisionSnapshot:
    """What a revision runs, frozen when it was first planned (stored as an apps/v1 ControllerRevision):
    the spec as it was then (defaults filled in) and the node classes it resolved to. Every child of
    the revision is rendered from this for the revision's whole life, whatever the spec says now."""

    revision: str
    spec: VisionDeploymentSpec
    classes: tuple[ResolvedClass, ...]
    outcome: str | None = None  # the newest terminal Outcome recorded on the snapshot, if any

    def cls(self, name: str) -> ResolvedClass | None:
        return next((c for c in self.classes if c.name == name), None)


@dataclass(frozen=True)
class VisionDeploymentView:
    name: str
    namespace: str
    generation: int
    spec: VisionDeploymentSpec
    status: VisionDeploymentStatus
    annotations: dict[str, str] = field(default_factory=dict)
    uid: str = ""


class WaitReason(str, Enum):
    """Why a pod that should run does not (the kubelet's or scheduler's reason, as the pod reports it)."""

    UNSCHEDULABLE = "Unschedulable"                  # PodScheduled False: no node fits, or a claim is missing
    ERR_IMAGE_PULL = "ErrImagePull"
    IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
    INVALID_IMAGE_NAME = "InvalidImageName"
    CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"  # a Secret or ConfigMap it names is missing
    CREATE_CONTAINER_ERROR = "CreateContainerError"
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"          # serving pods only: a compile pod's crash fails its Job
    CONTAINER_CREATING = "ContainerCreating"          # serving pods only: volumes not mounted yet (Multi-Attach…)


@dataclass(frozen=True)
class PodWaiting:
    """One pod that is not running (or not Ready) and why: what the status says about a wait."""

    pod: str
    reason: WaitReason
    message: str = ""
    since: datetime | None = None  # unschedulable since (the condition's lastTransitionTime, else creation)
    init_container: str | None = None  # the init container that keeps the pod from starting (fetch-model)


@dataclass(frozen=True)
class ObservedJob:
    class_name: str
    revision: str
    state: str  # Pending | Running | Succeeded | Failed   (CompileState values)
    result: CompileResult | None = None  # parsed from the compile container's termination message
    message: str | None = None
    waiting: PodWaiting | None = None  # Pending: its newest pod's wait, if it has one


@dataclass(frozen=True)
class ObservedDeployment:
    class_name: str
    revision: str
    replicas: int
    ready: int
    waiting: PodWaiting | None = None  # one of its pods that is not Ready, with a reason to tell


class ClaimUse(str, Enum):
    """Where the spec names a PersistentVolumeClaim (pvc://<claim>/<path>)."""

    MODEL = "spec.model.uri"
    CALIBRATION = "spec.compile.calibration.uri"
    REPOSITORY = "spec.serving.modelRepository"


@dataclass(frozen=True)
class ObservedClaim:
    """A PersistentVolumeClaim the spec names, as read this pass (absent from Observed.claims: not read)."""

    name: str
    exists: bool
    access_modes: tuple[str, ...] = ()
    phase: str | None = None  # Pending | Bound | Lost


@dataclass(frozen=True)
class Observed:
    nodes: tuple[ObservedNode, ...] = ()
    jobs: tuple[ObservedJob, ...] = ()
    deployments: tuple[ObservedDeployment, ...] = ()
    measurement: Measurement | None = None  # the canary's, while one is in flight
    snapshots: tuple[RevisionSnapshot, ...] = ()  # the VisionDeployment's ControllerRevisions
    stable_drift: Measurement | None = None  # the stable revision's drift test, when drift is configured
    claims: tuple[ObservedClaim, ...] = ()  # the PersistentVolumeClaims the spec names (those read)

    def claim(self, name: str) -> ObservedClaim | None:
        return next((c for c in self.claims if c.name == name), None)

    def job(self, class_name: str, revision: str) -> ObservedJob | None:
        return next((j for j in self.jobs if j.class_name == class_name and j.revision == revision), None)

    def deployment(self, class_name: str, revision: str) -> ObservedDeployment | None:
        return next((d for d in self.deployments if d.class_name == class_name and d.revision == revision), None)

    def snapshot(self, revision: str | None) -> RevisionSnapshot | None:
        return next((s for s in self.snapshots if s.revision == revision), None) if revision else None


# -- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnsureSnapshot:
    """Create the revision's ControllerRevision if it does not exist (its data is never updated)."""

    snapshot: RevisionSnapshot


@dataclass(frozen=True)
class MarkOutcome:
    """Record the newest outcome on the revision's snapshot (annotation); None clears it (retry)."""

    revision: str
    outcome: str | None


@dataclass(frozen=True)
class DeleteSnapshot:
    revision: str


@dataclass(frozen=True)
class EnsureCompileJob:
    cls: ResolvedClass
    revision: str
    spec: VisionDeploymentSpec  # the revision's frozen spec (RevisionSnapshot.spec)


@dataclass(frozen=True)
class DeleteCompileJob:
    """Stop a compile Job that is no longer wanted (its revision aborted or superseded)."""

    class_name: str
    revision: str


@dataclass(frozen=True)
class EnsureServing:
    """The Triton Deployment (and its config) of one class at one revision, with this many replicas."""

    cls: ResolvedClass
    revision: str
    replicas: int
    compile: CompileResult
    track: Track
    spec: VisionDeploymentSpec  # the revision's frozen spec (RevisionSnapshot.spec)
    # The class's HorizontalPodAutoscaler sizes this Deployment (the stable of an autoscaled class):
    # ``replicas`` is its size now, set only when the Deployment is created; then the HPA owns it.
    autoscaled: bool = False


@dataclass(frozen=True)
class EnsureAutoscaler:
    """The class's HorizontalPodAutoscaler, sizing ``revision`` (the class's stable) between min and max
    on the load of the ``counted`` revisions: those users' requests reach (the stable, and a weighted
    canary — not a shadow canary's mirrored copies, which would count each request twice)."""

    cls: ResolvedClass
    revision: str
    min: int
    max: int
    counted: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeleteServing:
    class_name: str
    revision: str


@dataclass(frozen=True)
class EnsureService:
    """The VisionDeployment's Services; ``stable``: the revision ``<vd>-stable`` selects (where a
    shadow step's canary asks for the stable's answers), None before the first promotion."""

    stable: str | None = None


@dataclass(frozen=True)
class Mirror:
    """A shadow step's RequestMirror: ``percent`` of the route's requests also go to ``revision``'s
    Service, whose answers are dropped. ``to_monitor``: to its pods' monitor sidecars (they forward
    to Triton and pair answers with the stable), else straight to Triton."""

    revision: str
    percent: int
    to_monitor: bool


@dataclass(frozen=True)
class SetRouteWeights:
    """Gateway API traffic: the named HTTPRoute's backends for this VisionDeployment become one
    per-revision Service each, with these weights (percent, summing to 100)."""

    route: str
    weights: tuple[tuple[str, int], ...]  # (revision, weight)
    mirror: Mirror | None = None  # a shadow step's mirror to the canary


Action = (EnsureSnapshot | MarkOutcome | DeleteSnapshot | EnsureCompileJob | DeleteCompileJob | EnsureServing
          | DeleteServing | EnsureService | SetRouteWeights | EnsureAutoscaler)


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
