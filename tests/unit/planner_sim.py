"""A tiny simulated world for planner tests: it carries out a plan's actions the way the cluster
would (Jobs run then finish, Deployments become Ready) and feeds the result back, tick by tick.

Only ``status`` travels from one tick to the next, exactly as in the operator: what the planner
remembers is what it wrote to ``status``.
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
    DeleteServing,
    EnsureCompileJob,
    EnsureServing,
    Observed,
    ObservedDeployment,
    ObservedJob,
    Plan,
    VisionDeploymentView,
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
NO_DATA = Measurement(slo_error="Prometheus unreachable: connection refused")


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
    deployments: dict[tuple[str, str], ObservedDeployment] = field(default_factory=dict)
    measurement: Measurement | None = GOOD
    stable_drift: Measurement | None = None
    fail_compile: set[str] = field(default_factory=set)   # classes whose compile Job fails
    never_ready: bool = False
    last: Plan | None = None
    writes: int = 0
    all_events: list[tuple[str, str, str]] = field(default_factory=list)

    def set_spec(self, s: VisionDeploymentSpec) -> None:
        self.spec = s
        self.generation += 1

    def tick(self, seconds: float = 5) -> Plan:
        """Advance the clock, let the cluster progress, then run one planner pass and apply it."""
        self.now += timedelta(seconds=seconds)
        # The cluster moves: running Jobs finish, Deployments become Ready.
        for key, job in list(self.jobs.items()):
            if job.state == "Running":
                if key[0] in self.fail_compile:
                    self.jobs[key] = replace(job, state="Failed", message="accuracy gate: top1Agreement 0.91 < 0.99")
                else:
                    self.jobs[key] = replace(job, state="Succeeded", result=result())
        for key, d in list(self.deployments.items()):
            if d.ready != d.replicas and not self.never_ready:
                self.deployments[key] = replace(d, ready=d.replicas)
        vd = VisionDeploymentView(name="doorbell", namespace="vision", generation=self.generation, spec=self.spec,
                                  status=self.status, annotations=dict(self.annotations))
        observed = Observed(nodes=NODES, jobs=tuple(self.jobs.values()), deployments=tuple(self.deployments.values()),
                            measurement=self.measurement, stable_drift=self.stable_drift)
        p = plan(vd, observed, self.now)
        for a in p.actions:
            if isinstance(a, EnsureCompileJob):
                self.jobs.setdefault((a.cls.name, a.revision), ObservedJob(a.cls.name, a.revision, "Running"))
            elif isinstance(a, EnsureServing):
                key = (a.cls.name, a.revision)
                old = self.deployments.get(key)
                ready = min(old.ready, a.replicas) if old else 0
                self.deployments[key] = ObservedDeployment(a.cls.name, a.revision, a.replicas, ready)
            elif isinstance(a, DeleteServing):
                self.deployments.pop((a.class_name, a.revision), None)
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
