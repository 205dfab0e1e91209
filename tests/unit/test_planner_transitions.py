"""Transitions with time in them: pods that take a minute to be Ready, crash, and come back.

Every scenario checks, at every tick, what the operator did to each class's Ready pods:
make-before-break means a pass never leaves a class with fewer Ready pods than
min(replicas.min, what it had just before).
"""

from __future__ import annotations

import pytest

from visionfleet.api.spec import TRITON_IMAGE, AccuracyGate, VisionDeploymentSpec
from visionfleet.planner.classes import ObservedNode
from visionfleet.planner.model import (
    ANNOTATION_ABORT,
    ANNOTATION_PROMOTE,
    ANNOTATION_RETRY,
    DeleteCompileJob,
    EnsureSnapshot,
)
from visionfleet.planner.revision import desired_revision, revision_of, revision_parts

from .planner_sim import GOOD, NO_DATA, SLOW, UNKNOWN, World, spec

DELAY = 60.0  # seconds a Triton pod takes to become Ready (image pull, model load)


def capacity_kept(w: World, base: int = 2) -> None:
    for cls, before in w.ready_before.items():
        assert w.ready_after.get(cls, 0) >= min(base, before), \
            f"{cls}: the pass took Ready pods from {before} to {w.ready_after.get(cls, 0)} ({w.last.actions})"


def run(w: World, ticks: int, seconds: float = 5, until=None) -> None:
    for _ in range(ticks):
        w.tick(seconds)
        capacity_kept(w)
        if until is not None and until(w):
            return
    if until is not None:
        raise AssertionError(f"condition never met; phase {w.status.phase}")


def healthy(**changes) -> World:
    w = World(spec(**changes))
    w.ready_delay = DELAY
    run(w, 100, until=lambda w: w.status.phase == "Healthy")
    return w


def at_weight(w: World, weight: int, version: str = "2", **changes) -> str:
    """Start revision ``version`` and walk it to ``weight`` with every canary pod Ready."""
    w.set_spec(spec(model__version=version, **changes))
    rev = revision_of(w.spec)
    run(w, 400, until=lambda w: w.status.canary_weight == weight and w.status.step_started_at is not None
        and all((c.effective_weight or 0) >= min(weight, 100) - 10 for c in w.status.classes))
    return rev


@pytest.mark.parametrize("weight", [50, 100])
def test_rollback_keeps_ready_pods_until_the_stable_is_back(weight):
    w = healthy()
    v1 = w.status.stable_revision
    v2 = at_weight(w, weight)
    if weight == 100:
        assert w.deployments[("l4", v1)].replicas == 0, "at 100 % on replica traffic the stable is at 0"
    w.measurement = SLOW
    run(w, 100, until=lambda w: w.status.phase in ("RollingBack", "RolledBack"))
    rolled_back_at = w.now
    # the canary serves until the stable is Ready again
    run(w, 100, until=lambda w: ("l4", v2) not in w.pods and ("xeon", v2) not in w.pods)
    assert w.deployments[("l4", v1)].ready == 2 and w.deployments[("xeon", v1)].ready == 2
    waited = (w.now - rolled_back_at).total_seconds()
    assert (waited >= DELAY) == (weight == 100), "at 100 % the canary stays until the stable is Ready"
    w.tick()
    assert w.status.phase == "RolledBack"


def test_abort_at_full_weight_is_make_before_break():
    w = healthy()
    v1 = w.status.stable_revision
    v2 = at_weight(w, 100)
    w.annotations[ANNOTATION_ABORT] = "now"
    w.tick()
    capacity_kept(w)
    assert w.status.history[-1].outcome == "Aborted" and w.status.phase == "RollingBack"
    assert ("l4", v2) in w.pods, "the canary keeps serving while the stable starts"
    run(w, 100, until=lambda w: w.status.phase == "RolledBack")
    assert set(w.pods) == {("l4", v1), ("xeon", v1)}


def test_supersede_at_full_weight_is_make_before_break():
    w = healthy()
    v1 = w.status.stable_revision
    v2 = at_weight(w, 100)
    w.set_spec(spec(model__version="3"))
    v3 = revision_of(w.spec)
    w.tick()
    capacity_kept(w)
    assert w.status.canary_revision == v3 and ("l4", v2) in w.pods
    run(w, 100, until=lambda w: ("l4", v2) not in w.pods and ("xeon", v2) not in w.pods)
    assert w.deployments[("l4", v1)].ready == 2
    run(w, 400, until=lambda w: w.status.stable_revision == v3)


def test_promotion_keeps_the_previous_stable_for_the_scale_down_delay():
    w = healthy(rollout__scaleDownDelay="2m")
    v1 = w.status.stable_revision
    w.set_spec(spec(model__version="2", rollout__scaleDownDelay="2m"))
    v2 = revision_of(w.spec)
    w.annotations[ANNOTATION_PROMOTE] = "go"
    run(w, 200, until=lambda w: w.status.stable_revision == v2)
    promoted = w.now
    run(w, 200, until=lambda w: ("l4", v1) not in w.pods)
    assert (w.now - promoted).total_seconds() >= 120


def test_a_class_never_loses_capacity_when_a_canary_crashes_at_full_weight():
    w = healthy()
    v1 = w.status.stable_revision
    v2 = at_weight(w, 100)
    w.crash("l4", v2, 2)
    w.tick()
    assert w.deployments[("l4", v1)].replicas == 2, "the stable comes back while the canary is down"
    assert w.status.step_started_at is None, "the step starts over once the canary is Ready again"


def test_an_image_change_leaves_the_stable_untouched_until_promotion():
    w = healthy()
    v1 = w.status.stable_revision
    w.set_spec(spec(serving__image="registry.example/tritonserver:25.01"))
    v2 = revision_of(w.spec)
    assert v1 != v2
    assert any(isinstance(a, EnsureSnapshot) for a in w.tick().actions)
    for _ in range(400):
        w.tick(5)
        if w.status.stable_revision == v2:
            break
        assert w.templates[("l4", v1)].serving.image == TRITON_IMAGE, "the stable's pods never change"
        if ("l4", v2) in w.templates:
            assert w.templates[("l4", v2)].serving.image == "registry.example/tritonserver:25.01"
    assert w.status.stable_revision == v2


def test_the_drift_test_is_part_of_the_revision_and_of_what_its_pods_run():
    calibration = {"uri": "pvc://models/calib.npz"}
    w = healthy(compile__calibration=calibration)
    v1 = w.status.stable_revision
    w.set_spec(spec(compile__calibration=calibration, analysis__drift={"pValue": 0.01, "window": 100}))
    v2 = revision_of(w.spec)
    assert v2 != v1, "adding the drift sidecar is a new revision, rolled out as a canary"
    assert revision_of(spec(compile__calibration=calibration, analysis__drift={"pValue": 0.01, "window": 100},
                            analysis__slo={"latencyP99Ms": 50})) == v2, "the SLO stays policy"
    for _ in range(20):
        w.tick(5)
        assert w.templates[("l4", v1)].analysis.drift is None, "the stable's pods never get the sidecar"
    assert w.templates[("l4", v2)].analysis.drift is not None


def test_a_default_left_out_or_written_out_is_the_same_revision_and_defaults_are_not_hashed():
    a = spec()
    b = spec(serving__image=TRITON_IMAGE, analysis__interval="30s")
    assert revision_of(a) == revision_of(b)
    assert "image" not in revision_parts(a)["serving"], "a default value does not enter the hash"
    # a stable revision hashed the older way (defaults included) keeps its name
    legacy = revision_parts(a, defaults=True)
    import hashlib
    import json
    old = hashlib.sha256(json.dumps(legacy, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert desired_revision(a, old, None) == old
    assert desired_revision(a, "0" * 12, None) == revision_of(a)


@pytest.mark.parametrize(("replicas", "weight", "stable", "canary", "effective"), [
    ({"min": 1, "max": 10}, 10, 9, 1, 10),
    ({"min": 2, "max": 4}, 20, 3, 1, 25),
    ({"min": 1, "max": 2}, 50, 1, 1, 50),
])
def test_the_status_weight_is_the_weight_users_get(replicas, weight, stable, canary, effective):
    classes = [{"name": "xeon", "nodeSelector": {"node.kubernetes.io/instance-type": "c7i.4xlarge"},
                "runtime": "onnxruntime", "replicas": replicas}]
    steps = [{"setWeight": weight, "pause": "1m"}, {"setWeight": 100}]
    w = World(spec(fleet__classes=classes, rollout__steps=steps))
    w.run_until("Healthy")
    w.set_spec(spec(model__version="2", fleet__classes=classes, rollout__steps=steps))
    v2 = revision_of(w.spec)
    w.run_until("RollingOut")
    d = w.deployments
    v1 = w.status.stable_revision
    assert (d[("xeon", v1)].replicas, d[("xeon", v2)].replicas) == (stable, canary)
    assert w.status.canary_weight == weight and w.status.effective_weight == effective
    assert w.status.classes[0].effective_weight == effective


def test_a_weight_the_replicas_cannot_approximate_is_reported():
    classes = [{"name": "xeon", "nodeSelector": {"node.kubernetes.io/instance-type": "c7i.4xlarge"},
                "runtime": "onnxruntime", "replicas": {"min": 1, "max": 4}}]
    steps = [{"setWeight": 10, "pause": "1m"}, {"setWeight": 100}]
    w = World(spec(fleet__classes=classes, rollout__steps=steps))
    w.run_until("Healthy")
    w.set_spec(spec(model__version="2", fleet__classes=classes, rollout__steps=steps))
    w.run_until("RollingOut")
    cond = {c.type: c for c in w.status.conditions}["TrafficSplit"]
    assert cond.status == "False" and cond.reason == "WeightNotApproximated"
    assert "replicas.max 4" in cond.message and "25%" in cond.message and "replicas.max 7 would give 10±5%" in cond.message
    assert w.status.effective_weight == 25


def test_the_first_measurement_of_a_step_waits_one_window_and_the_last_step_is_measured_before_promotion():
    w = World(spec(rollout__steps=[{"setWeight": 50}, {"setWeight": 100}]))
    w.run_until("Healthy")
    w.set_spec(spec(model__version="2", rollout__steps=[{"setWeight": 50}, {"setWeight": 100}]))
    v2 = revision_of(w.spec)
    from visionfleet.planner.model import parse_iso
    measured: list[tuple[int, float]] = []
    for _ in range(200):
        before = w.status.analysis.at if w.status.analysis else None
        step, started = w.status.step, w.status.step_started_at
        w.tick(5)
        a = w.status.analysis
        if a is not None and a.at != before and started:
            measured.append((step, (parse_iso(a.at) - parse_iso(started)).total_seconds()))
        if w.status.stable_revision == v2:
            break
    assert w.status.stable_revision == v2
    assert measured and all(age >= 30 for _, age in measured), f"a measurement inside the initial delay: {measured}"
    assert any(step == 1 for step, _ in measured), "the 100 % step was measured before the promotion"


def test_a_prometheus_outage_pauses_the_rollout_which_goes_on_when_data_returns():
    w = healthy()
    v2 = at_weight(w, 20)
    w.measurement = NO_DATA
    phases = []
    for _ in range(12):
        w.tick(30)
        phases.append(w.status.phase)
    assert phases[0] == "RollingOut", "a provider error is retried before it counts"
    assert w.status.phase == "Paused" and w.status.canary_revision == v2
    assert {c.type: c.reason for c in w.status.conditions}["Paused"] == "AnalysisInconclusive"
    assert w.status.analysis.errors >= 4 and w.status.analysis.verdict == "Error"
    w.measurement = GOOD
    run(w, 400, until=lambda w: w.status.stable_revision == v2)


def test_errors_below_the_limit_neither_pause_nor_count_as_inconclusive():
    steps = [{"setWeight": 20, "pause": "10m"}, {"setWeight": 100}]
    w = healthy(rollout__steps=steps)
    at_weight(w, 20, rollout__steps=steps)
    for m in (NO_DATA, NO_DATA, NO_DATA, GOOD, NO_DATA, NO_DATA, NO_DATA):
        w.measurement = m
        w.tick(31)
        assert w.status.phase != "Paused"
    assert w.status.analysis.inconclusive == 0 and w.status.analysis.errors == 3


def test_dry_run_checks_are_reported_never_acted_on():
    w = healthy()
    w.set_spec(spec(model__version="2", analysis__dryRun=["latency"]))
    v2 = revision_of(w.spec)
    w.measurement = SLOW
    run(w, 400, until=lambda w: w.status.stable_revision == v2)
    assert all(h.outcome != "RolledBack" for h in w.status.history)
    assert "latency: Failed (p99 31.2 ms > 20 ms)" in w.status.analysis.dry_run


def test_retry_re_attempts_a_rolled_back_revision_without_a_spec_edit():
    w = healthy()
    w.set_spec(spec(model__version="2"))
    v2 = revision_of(w.spec)
    w.measurement = SLOW
    run(w, 200, until=lambda w: w.status.phase == "RolledBack")
    w.measurement = GOOD
    for _ in range(5):
        w.tick(30)
    assert w.status.canary_revision is None, "not retried by itself"
    w.annotations[ANNOTATION_RETRY] = "1"
    w.tick()
    assert w.status.canary_revision == v2 and w.status.handled_retry == "1"
    assert [h.outcome for h in w.status.history][-2:] == ["RolledBack", "Retried"]
    run(w, 400, until=lambda w: w.status.stable_revision == v2)
    assert w.status.phase == "Healthy"


def test_retry_recompiles_where_the_compile_failed():
    w = healthy()
    w.set_spec(spec(model__version="2"))
    v2 = revision_of(w.spec)
    w.fail_compile = {"l4", "xeon"}
    run(w, 20, until=lambda w: w.status.phase == "Failed")
    w.fail_compile = set()
    w.annotations[ANNOTATION_RETRY] = "again"
    p = w.tick()
    assert any(isinstance(a, DeleteCompileJob) for a in p.actions), "the failed Jobs are replaced"
    run(w, 400, until=lambda w: w.status.stable_revision == v2)


def test_a_failure_is_remembered_after_it_left_the_history():
    w = healthy()
    w.set_spec(spec(model__version="2"))
    v2 = revision_of(w.spec)
    w.measurement = SLOW
    run(w, 200, until=lambda w: w.status.phase == "RolledBack")
    assert w.snapshots[v2].outcome == "RolledBack"
    w.status = w.status.model_copy(update={"history": [h for h in w.status.history if h.revision != v2]})
    w.measurement = GOOD
    for _ in range(5):
        w.tick(30)
    assert w.status.canary_revision is None and w.status.phase != "RollingOut"


def test_abort_during_compile_stops_the_compile_jobs():
    w = healthy()
    w.compile_ticks = 10
    w.set_spec(spec(model__version="2"))
    w.tick()
    w.tick()
    assert w.status.phase == "Compiling"
    w.annotations[ANNOTATION_ABORT] = "stop"
    p = w.tick()
    assert {a.class_name for a in p.actions if isinstance(a, DeleteCompileJob)} == {"l4", "xeon"}
    assert w.status.history[-1].outcome == "Aborted" and w.status.phase == "RolledBack"


def test_a_canary_that_turns_unready_mid_step_is_still_judged():
    w = healthy()
    v2 = at_weight(w, 20)
    w.ready_delay = 3600
    w.crash("l4", v2)
    w.measurement = SLOW
    run(w, 20, seconds=31, until=lambda w: w.status.canary_revision is None)
    assert w.status.history[-1].outcome == "RolledBack" and "p99" in w.status.history[-1].reason


def test_a_canary_unready_mid_step_past_the_progress_deadline_is_rolled_back():
    w = healthy(rollout__progressDeadline="2m")
    v2 = at_weight(w, 20, rollout__progressDeadline="2m")
    w.ready_delay = 3600
    w.crash("xeon", v2)
    w.measurement = UNKNOWN
    run(w, 20, seconds=31, until=lambda w: w.status.canary_revision is None)
    assert "not Ready within progressDeadline 2m (xeon: 0/1 Ready)" in w.status.history[-1].reason


DISCOVER = {"discover": {"groupBy": ["node.kubernetes.io/instance-type"], "cpuRuntime": "onnxruntime",
                         "cpuPrecision": "fp32", "replicas": {"min": 2, "max": 4}}}


def test_a_discovered_group_with_no_nodes_left_keeps_serving_and_says_so():
    w = World(spec(fleet=DISCOVER))
    w.nodes = (ObservedNode("a-0", {"node.kubernetes.io/instance-type": "c7i"}),
               ObservedNode("b-0", {"node.kubernetes.io/instance-type": "m7i"}))
    w.run_until("Healthy")
    v1 = w.status.stable_revision
    w.nodes = w.nodes[:1]
    for _ in range(5):
        w.tick(30)
    assert ("m7i", v1) in w.pods, "the group's Deployment is kept"
    m7i = next(c for c in w.status.classes if c.name == "m7i")
    assert m7i.nodes == 0 and "no node matches" in m7i.message
    assert {c.type: c.reason for c in w.status.conditions}["Degraded"] == "NoNodes"


def test_a_new_discovered_group_gets_the_stable_revision_without_a_spec_change():
    w = World(spec(fleet=DISCOVER))
    w.nodes = (ObservedNode("a-0", {"node.kubernetes.io/instance-type": "c7i"}),)
    w.run_until("Healthy")
    v1 = w.status.stable_revision
    gen = w.generation
    w.nodes = w.nodes + (ObservedNode("b-0", {"node.kubernetes.io/instance-type": "m7i"}),)
    for _ in range(10):
        w.tick(5)
    assert w.generation == gen
    assert w.deployments[("m7i", v1)].ready == 2
    assert next(c for c in w.status.classes if c.name == "m7i").stable_revision == v1
    assert ("Normal", "ClassJoined") in [(t, r) for t, r, _ in w.all_events]


def test_gateway_rollback_at_full_weight_never_routes_to_a_revision_without_ready_pods():
    gw = {"method": "GatewayAPI", "gatewayAPI": {"httpRoute": "doorbell"}}
    w = World(spec(rollout__traffic=gw))
    w.ready_delay = DELAY
    w.run_until("Healthy")
    v2 = at_weight(w, 100, rollout__traffic=gw)
    assert dict(w.route).get(v2) == 100
    w.measurement = SLOW
    for _ in range(100):
        w.tick(5)
        capacity_kept(w)
        ready = {}
        for (cls, rev), d in w.deployments.items():
            ready[rev] = ready.get(rev, 0) + d.ready
        assert all(ready.get(rev, 0) > 0 for rev, weight in w.route if weight > 0), (w.route, ready)
        if w.status.phase == "RolledBack":
            break
    assert w.status.phase == "RolledBack" and dict(w.route).get(v2) is None


def test_steps_or_waves_shortened_mid_rollout_bring_the_position_back_to_the_last_one():
    steps = [{"setWeight": 20, "pause": "1m"}, {"setWeight": 50, "pause": "1m"}, {"setWeight": 100, "pause": "1m"}]
    waves = [["xeon"], ["l4"]]
    w = healthy(rollout__steps=steps, rollout__waves=waves)
    w.set_spec(spec(model__version="2", rollout__steps=steps, rollout__waves=waves))
    run(w, 600, until=lambda w: w.status.wave == 1 and w.status.step == 2)
    w.set_spec(spec(model__version="2", rollout__steps=steps[:2]))  # policy only: the same revision
    w.tick()
    assert (w.status.wave, w.status.step, w.status.canary_weight) == (0, 1, 50)
    run(w, 400, until=lambda w: w.status.phase == "Healthy")


def test_a_canary_gets_no_pods_before_every_class_has_compiled():
    w = healthy()
    w.slow_classes = {"l4": 20}
    w.set_spec(spec(model__version="2"))
    v2 = revision_of(w.spec)
    for _ in range(15):
        w.tick(5)
        assert not any(rev == v2 for _, rev in w.pods), "the canary served before its analysis could run"
    assert w.status.phase == "Compiling"


def test_retrying_a_compile_failed_revision_after_another_one_recompiles_it():
    w = healthy()
    w.set_spec(spec(model__version="2"))
    v2 = revision_of(w.spec)
    w.fail_compile = {"l4", "xeon"}
    run(w, 20, until=lambda w: w.status.phase == "Failed")
    w.fail_compile = set()
    w.set_spec(spec(model__version="3"))
    run(w, 400, until=lambda w: w.status.stable_revision == revision_of(w.spec))
    w.set_spec(spec(model__version="2"))
    w.tick()
    assert w.status.phase == "Failed", "asked for again: still refused"
    w.annotations[ANNOTATION_RETRY] = "now"
    p = w.tick()
    assert {a.class_name for a in p.actions if isinstance(a, DeleteCompileJob)} == {"l4", "xeon"}
    run(w, 400, until=lambda w: w.status.stable_revision == v2)


def test_abort_during_compile_is_no_compile_failure():
    w = healthy()
    w.compile_ticks = 10
    w.set_spec(spec(model__version="2"))
    w.tick()
    w.annotations[ANNOTATION_ABORT] = "stop"
    w.tick()
    conds = {c.type: (c.status, c.reason) for c in w.status.conditions}
    assert conds["Degraded"] == ("False", "AsExpected") and conds["Compiled"][1] != "CompileFailed"


def test_a_class_without_nodes_gets_no_compile_job_for_a_new_revision():
    w = World(spec(fleet=DISCOVER))
    w.nodes = (ObservedNode("a-0", {"node.kubernetes.io/instance-type": "c7i"}),
               ObservedNode("b-0", {"node.kubernetes.io/instance-type": "m7i"}))
    w.run_until("Healthy")
    w.nodes = w.nodes[:1]
    w.tick()
    w.set_spec(spec(fleet=DISCOVER, model__version="2"))
    v2 = revision_of(w.spec)
    run(w, 400, until=lambda w: w.status.stable_revision == v2)
    assert ("m7i", v2) not in w.jobs and ("c7i", v2) in w.jobs
    assert next(c for c in w.status.classes if c.name == "m7i").stable_revision != v2


def test_gateway_route_keeps_the_stable_when_only_the_canary_is_ready():
    gw = {"method": "GatewayAPI", "gatewayAPI": {"httpRoute": "doorbell"}}
    w = World(spec(rollout__traffic=gw))
    w.run_until("Healthy")
    v1 = w.status.stable_revision
    at_weight(w, 50, rollout__traffic=gw)
    w.ready_delay = 3600
    w.crash("l4", v1, 2)
    w.crash("xeon", v1, 1)
    p = w.tick()
    from visionfleet.planner.model import SetRouteWeights
    routes = [a for a in p.actions if isinstance(a, SetRouteWeights)]
    assert routes and v1 in dict(routes[0].weights), "the stable's Service stays on the route"


@pytest.mark.parametrize("example, legacy, current", [
    # (re-pinned when serving.modelRepository became required and the examples gained one)
    ("discovered-fleet", "d4c78697d4ce", "959db6affb9a"),
    # (re-pinned when its xeon class became precision auto: a new revision, as any precision change is)
    ("doorbell-classifier", "03e15f8c3c37", "334a7cbf6ddb"),
    ("edge-gateway-api", "5f372a46111d", "237b21cb83e3"),
    ("minimal-cpu", "a62622fc4112", "e28f4ddcbbac"),
])
def test_revision_hashes_of_the_examples_never_change(example, legacy, current):
    """Pinned, not recomputed: a new spec field with a default must change neither the hash nor the
    older (defaults included) one, or an operator upgrade would start a rollout by itself."""
    import yaml as _yaml
    from pathlib import Path as _Path

    from visionfleet.planner.revision import _hash, revision_of, revision_parts

    raw = _yaml.safe_load((_Path(__file__).resolve().parents[2] / "docs" / "examples" / f"{example}.yaml").read_text())
    s = VisionDeploymentSpec.model_validate(raw["spec"])
    assert (_hash(revision_parts(s, defaults=True)), revision_of(s)) == (legacy, current)


def test_a_spec_stored_before_the_repository_was_required_keeps_its_revision():
    """minimal-cpu as it was before serving.modelRepository became required (and before every field
    added since): the same hashes as then, so the fields added since, and their defaults, change no
    stored revision. (The operator refuses to roll it out until the repository is set; its revision
    name does not move under it.)"""
    import yaml as _yaml

    from visionfleet.planner.revision import _hash, revision_of, revision_parts

    s = VisionDeploymentSpec.model_validate(_yaml.safe_load("""
model:
  name: efficientnet-lite0
  version: "1"
  uri: pvc://models/effnet-lite0/1/model.onnx
  inputs:  [{name: images, dataType: FP32, dims: [3, 224, 224]}]
  outputs: [{name: logits, dataType: FP32, dims: [1000]}]
fleet:
  classes:
    - name: xeon
      nodeSelector: {node.kubernetes.io/instance-type: c7i.4xlarge}
      runtime: onnxruntime
"""))
    assert (_hash(revision_parts(s, defaults=True)), revision_of(s)) == ("7fa745676eb1", "ad83baa1f377")


def test_the_accuracy_gates_task_defaults_count_as_omitted():
    """The gate's metric and min default per model.task (unset in the schema): a stored object with
    the classifier's old schema defaults written out keeps its revision, the task's defaults hash as
    omitted, and any other value is a new revision."""
    from visionfleet.planner.revision import _hash, revision_of, revision_parts

    def rev(gate=None, **model):
        s = spec(**{f"model__{k}": v for k, v in model.items()})
        if gate is not None:
            s = s.model_copy(update={"compile": s.compile.model_copy(update={
                "accuracy_gate": AccuracyGate.model_validate(gate)})})
        return revision_of(s), _hash(revision_parts(s, defaults=True))

    assert rev({"metric": "top1Agreement", "min": 0.99}) == rev() == rev({})
    assert rev({"min": 0.98}) != rev()
    det = dict(task="detection", detection={"layout": "objectness"})
    assert rev({"metric": "detectionF1", "min": 0.9}, **det) == rev(**det)
    assert rev({"metric": "labelMap50"}, **det) != rev(**det)
