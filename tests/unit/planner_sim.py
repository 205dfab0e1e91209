"""A small simulated world for planner tests: it carries out a plan's actions the way the cluster
would and feeds the result back, tick by tick. Time is real in it: Jobs run then finish, each new
pod becomes Ready ``ready_delay`` seconds after it was created (a Triton pod pulls its image and
loads its model), a Ready pod can crash and is Ready again ``ready_delay`` later, and a scale-down
removes pods at once (not-yet-Ready ones first, as the ReplicaSet controller does).

Only ``status`` (and the revisions' snapshots, as the operator's ControllerRevisions) travel from one
tick to the next: what the planner remembers is what it wrote.

``ready_before`` / ``ready_after`` hold each class's Ready pods just before and just after the pass
applied its actions, so a test can check what the *operator* did to capacity, apart from crashes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

import yaml

from visionfleet.api.spec import VisionDeploymentSpec
from visionfleet.api.status import ChosenBatching, CompileResult, VisionDeploymentStatus
from visionfleet.planner.analysis import Measurement
from visionfleet.planner.classes import ObservedNode
from visionfleet.planner.model import (
    DeleteCompileJob,
    DeleteServing,
    DeleteSnapshot,
    EnsureCompileJob,
    EnsureAutoscaler,
    EnsureServing,
    Mirror,
    EnsureSnapshot,
    MarkOutcome,
    Observed,
    ObservedDeployment,
    ObservedClaim,
    ObservedJob,
    Plan,
    PodWaiting,
    RevisionSnapshot,
    SetRouteWeights,
    VisionDeploymentView,
    WaitReason,
)
from visionfleet.planner.rollout import plan

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)

SPEC = yaml.safe_load("""
model:
  name: effnet
  version: "1"
  uri: pvc://models/m.onnx
  inputs: [{name: images, dataType: FP32, dims: [3, 224, 224]}]
  outputs: [{name: logits, dataType: FP32, dims: [1000]}]
fleet:
  classes:
    - name: l4
      nodeSelector: {nvidia.com/gpu.product: NVIDIA-L4}
      runtime: tensorrt
      precision: fp16
      resources: {limits: {nvidia.com/gpu: 1}}
      replicas: {min: 2, max: 4}
    - name: xeon
      nodeSelector: {node.kubernetes.io/instance-type: c7i.4xlarge}
      runtime: onnxruntime
      replicas: {min: 2, max: 4}
serving:
  modelRepository: pvc://models/repository
rollout:
  steps: [{setWeight: 20, pause: 1m}, {setWeight: 50, pause: 1m}, {setWeight: 100}]
analysis:
  interval: 30s
  prometheus: {url: http://prometheus:9090}
  slo: {latencyP99Ms: 20, errorRate: 0.01, minRequests: 100}
  failureLimit: 1
  inconclusiveLimit: 3
""")

NODES = (
    ObservedNode("l4-0", {"nvidia.com/gpu.product": "NVIDIA-L4"}, gpus=4),
    ObservedNode("l4-1", {"nvidia.com/gpu.product": "NVIDIA-L4"}, gpus=4),
    ObservedNode("xeon-0", {"node.kubernetes.io/instance-type": "c7i.4xlarge"}),
)

GOOD = Measurement(p99_ms=12.0, error_rate=0.0, requests=500)
SLOW = Measurement(p99_ms=31.2, error_rate=0.0, requests=500)
NO_DATA = Measurement(slo_error="Prometheus unreachable: connection refused")  # a provider error
UNKNOWN = Measurement(slo_unknown="no data for the canary yet")  # Prometheus answers, without a number


def spec(**changes) -> VisionDeploymentSpec:
    raw = yaml.safe_load(yaml.safe_dump(SPEC))
    for path, value in changes.items():
        node = raw
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node.setdefault(k, {})
        node[keys[-1]] = value
    return VisionDeploymentSpec.model_validate(raw)


def result(accuracy: float = 0.995) -> CompileResult:
    return CompileResult(state="Succeeded", artifact="pvc://models/repo/effnet/1/model.plan", accuracy=accuracy,
                         p99_ms_at_batch={"1": 2.0, "8": 5.0}, batching=ChosenBatching(max_batch_size=8))


@dataclass
class World:
    spec: VisionDeploymentSpec
    status: VisionDeploymentStatus = field(default_factory=VisionDeploymentStatus)
    generation: int = 1
    annotations: dict[str, str] = field(default_factory=dict)
    now: datetime = T0
    jobs: dict[tuple[str, str], ObservedJob] = field(default_factory=dict)
    # (class, revision) -> when each pod is (or was) Ready; a pod in the future is starting
    pods: dict[tuple[str, str], list[datetime]] = field(default_factory=dict)
    snapshots: dict[str, RevisionSnapshot] = field(default_factory=dict)
    templates: dict[tuple[str, str], VisionDeploymentSpec] = field(default_factory=dict)  # what each Deployment runs
    measurement: Measurement | None = GOOD
    stable_drift: Measurement | None = None
    fail_compile: set[str] = field(default_factory=set)   # classes whose compile Job fails
    never_ready: bool = False
    ready_delay: float = 0.0  # seconds from a pod's creation (or crash) to Ready
    compile_ticks: int = 1  # passes a compile Job runs before it finishes
    slow_classes: dict[str, int] = field(default_factory=dict)  # class -> its own compile_ticks
    nodes: tuple = ()
    # class -> the scheduler's message: its compile pods stay Pending, unschedulable since their creation
    unschedulable: dict[str, str] = field(default_factory=dict)
    claims: tuple[ObservedClaim, ...] = ()
    route: tuple[tuple[str, int], ...] = ()
    autoscalers: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # class -> (target, min, max)
    mirror: Mirror | None = None  # the route's shadow mirror, as the last SetRouteWeights left it
    last: Plan | None = None
    writes: int = 0
    all_events: list[tuple[str, str, str]] = field(default_factory=list)
    ready_before: dict[str, int] = field(default_factory=dict)
    ready_after: dict[str, int] = field(default_factory=dict)
    after: dict[tuple[str, str], ObservedDeployment] = field(default_factory=dict)  # right after the last pass
    _job_age: dict[tuple[str, str], int] = field(default_factory=dict)

    def set_spec(self, s: VisionDeploymentSpec) -> None:
        self.spec = s
        self.generation += 1

    @property
    def deployments(self) -> dict[tuple[str, str], ObservedDeployment]:
        out = {}
        for key, pods in self.pods.items():
            ready = 0 if self.never_ready else sum(1 for t in pods if t <= self.now)
            out[key] = ObservedDeployment(key[0], key[1], len(pods), ready)
        return out

    def ready_by_class(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (cls, _), d in self.deployments.items():
            out[cls] = out.get(cls, 0) + d.ready
        return out

    def hpa_scales(self, cls: str, replicas: int) -> None:
        """The class's HorizontalPodAutoscaler sets its target Deployment's replicas."""
        self._scale((cls, self.autoscalers[cls][0]), replicas)

    def crash(self, cls: str, revision: str, n: int = 1) -> None:
        """``n`` Ready pods of a Deployment crash: Ready again ``ready_delay`` from now."""
        pods = self.pods.get((cls, revision), [])
        for i, t in enumerate(pods):
            if n and t <= self.now:
                pods[i] = self.now + timedelta(seconds=max(self.ready_delay, 1))
                n -= 1

    def _scale(self, key: tuple[str, str], replicas: int) -> None:
        pods = sorted(self.pods.get(key, []))  # Ready ones first
        if replicas > len(pods):
            pods += [self.now + timedelta(seconds=self.ready_delay, microseconds=1)] * (replicas - len(pods))
        else:
            pods = pods[:replicas]  # the starting ones go first
        self.pods[key] = pods

    def tick(self, seconds: float = 5) -> Plan:
        """Advance the clock, let the cluster progress, then run one planner pass and apply it."""
        self.now += timedelta(seconds=seconds)
        for key, job in list(self.jobs.items()):
            if job.state == "Pending" and key[0] not in self.unschedulable:
                self.jobs[key] = job = replace(job, state="Running", message=None, waiting=None)  # scheduled
            if job.state == "Running":
                self._job_age[key] = self._job_age.get(key, 0) + 1
                if self._job_age[key] < self.slow_classes.get(key[0], self.compile_ticks):
                    continue
                if key[0] in self.fail_compile:
                    self.jobs[key] = replace(job, state="Failed", message="accuracy gate: top1Agreement 0.91 < 0.99")
                else:
                    self.jobs[key] = replace(job, state="Succeeded", result=result())
        vd = VisionDeploymentView(name="doorbell", namespace="vision", generation=self.generation, spec=self.spec,
                                  status=self.status, annotations=dict(self.annotations))
        observed = Observed(nodes=self.nodes or NODES, jobs=tuple(self.jobs.values()),
                            deployments=tuple(self.deployments.values()),
                            measurement=self.measurement, stable_drift=self.stable_drift,
                            snapshots=tuple(self.snapshots.values()), claims=self.claims)
        self.ready_before = self.ready_by_class()
        p = plan(vd, observed, self.now)
        for a in p.actions:
            if isinstance(a, EnsureCompileJob) and a.cls.name in self.unschedulable:
                why = self.unschedulable[a.cls.name]
                self.jobs.setdefault((a.cls.name, a.revision), ObservedJob(
                    a.cls.name, a.revision, "Pending", message=why,
                    waiting=PodWaiting(f"{a.cls.name}-{a.revision[:8]}-compile-x", WaitReason.UNSCHEDULABLE, why, self.now)))
            elif isinstance(a, EnsureCompileJob):
                self.jobs.setdefault((a.cls.name, a.revision), ObservedJob(a.cls.name, a.revision, "Running"))
            elif isinstance(a, DeleteCompileJob):
                self.jobs.pop((a.class_name, a.revision), None)
                self._job_age.pop((a.class_name, a.revision), None)
            elif isinstance(a, EnsureServing):
                if not (a.autoscaled and (a.cls.name, a.revision) in self.pods):
                    self._scale((a.cls.name, a.revision), a.replicas)  # an HPA's Deployment: set at creation only
                self.templates[(a.cls.name, a.revision)] = a.spec
            elif isinstance(a, DeleteServing):
                self.pods.pop((a.class_name, a.revision), None)
            elif isinstance(a, EnsureSnapshot):
                self.snapshots.setdefault(a.snapshot.revision, a.snapshot)
            elif isinstance(a, MarkOutcome) and a.revision in self.snapshots:
                self.snapshots[a.revision] = replace(self.snapshots[a.revision], outcome=a.outcome)
            elif isinstance(a, DeleteSnapshot):
                self.snapshots.pop(a.revision, None)
            elif isinstance(a, EnsureAutoscaler):
                self.autoscalers[a.cls.name] = (a.revision, a.min, a.max)
            elif isinstance(a, SetRouteWeights):
                self.route = a.weights
                self.mirror = a.mirror
        self.ready_after = self.ready_by_class()
        self.after = self.deployments
        if p.status != self.status:
            self.writes += 1
        self.status = p.status
        self.last = p
        self.all_events += [(e.type, e.reason, e.message) for e in p.events]
        return p

    def run_until(self, phase: str, max_ticks: int = 200, seconds: float = 5) -> list[str]:
        phases = []
        for _ in range(max_ticks):
            p = self.tick(seconds)
            phases.append(p.status.phase)
            if p.status.phase == phase:
                return phases
        raise AssertionError(f"never reached {phase}; phases: {phases[-20:]}")

    def events(self) -> list[str]:
        return [e.reason for e in self.last.events] if self.last else []

    def serving(self) -> dict[tuple[str, str], int]:
        return {k: d.replicas for k, d in self.deployments.items()}
