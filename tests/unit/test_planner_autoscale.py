"""Canary-aware autoscaling: a class's HorizontalPodAutoscaler sizes its stable on the class's whole
load; the canary's pods follow the stable's current size (its share of that load); the operator
never sets the stable's replicas once the HPA has it; promotion hands the HPA to the new stable at
the size the old one had (no dip)."""

from __future__ import annotations

import math

import pytest

from visionfleet.api.spec import VisionDeploymentSpec
from visionfleet.planner.model import EnsureAutoscaler, EnsureServing, Track
from visionfleet.planner.revision import revision_of

from .planner_sim import World, spec

GW = {"method": "GatewayAPI", "gatewayAPI": {"httpRoute": "doorbell"}}
AUTO = {"min": 2, "max": 10, "autoscale": {"metric": "inferenceRate", "target": 20}}
STEPS = [{"setWeight": 20, "pause": "1m"}, {"setWeight": 50, "pause": "1m"}, {"setWeight": 100, "pause": "1m"}]


def auto_spec(**changes) -> VisionDeploymentSpec:
    return spec(**{"rollout__traffic": GW, "rollout__steps": STEPS, "fleet__classes__1__replicas": AUTO, **changes})


def healthy() -> World:
    w = World(auto_spec())
    w.ready_delay = 15.0
    w.run_until("Healthy")
    return w


def canary_started_at(w: World, weight: int) -> str:
    """Apply v2 to a healthy world and run until its step at ``weight`` has started; v2's revision."""
    w.set_spec(auto_spec(model__version="2"))
    for _ in range(100):
        w.tick(5)
        if w.status.canary_weight == weight and w.status.step_started_at:
            break
    return revision_of(w.spec)


def test_the_hpa_targets_the_stable_between_min_and_max():
    w = healthy()
    v1 = w.status.stable_revision
    assert w.autoscalers == {"xeon": (v1, 2, 10)}  # only the autoscaled class
    ensure = [a for a in w.last.actions if isinstance(a, EnsureServing) and a.cls.name == "xeon"]
    assert ensure[0].autoscaled and ensure[0].replicas == 2
    assert not next(a for a in w.last.actions if isinstance(a, EnsureServing) and a.cls.name == "l4").autoscaled


def test_the_operator_never_moves_what_the_hpa_set():
    w = healthy()
    w.hpa_scales("xeon", 7)
    for _ in range(10):
        w.tick(5)
        assert w.deployments[("xeon", w.status.stable_revision)].replicas == 7
    assert next(c for c in w.status.classes if c.name == "xeon").stable_replicas == 7


@pytest.mark.parametrize("stable_size", [2, 6, 10])
def test_the_canary_gets_its_weight_of_the_stables_current_size(stable_size):
    w = healthy()
    w.hpa_scales("xeon", stable_size)
    w.run_until("Healthy", max_ticks=3)
    w.set_spec(auto_spec(model__version="2"))
    v2 = revision_of(w.spec)
    seen = set()
    for _ in range(400):
        w.tick(5)
        if w.status.canary_revision != v2:
            break
        weight = w.status.canary_weight
        canary = w.deployments.get(("xeon", v2))
        if canary is not None and w.status.step_started_at is not None:
            assert canary.replicas == max(1, math.ceil(stable_size * weight / 100)), (weight, canary)
            seen.add(weight)
    assert seen == {20, 50, 100}
    assert w.status.stable_revision == v2


def test_the_share_follows_the_hpa_during_a_step():
    w = healthy()
    v2 = canary_started_at(w, 50)
    assert w.deployments[("xeon", v2)].replicas == 1  # 50 % of 2
    w.hpa_scales("xeon", 8)  # load rose: the HPA grows the stable
    w.tick(5)
    assert w.deployments[("xeon", v2)].replicas == 4  # the canary keeps 50 % of the class's size
    w.hpa_scales("xeon", 4)
    w.tick(5)
    assert w.deployments[("xeon", v2)].replicas == 2


def test_promotion_hands_the_hpa_to_the_new_stable_without_a_dip():
    w = healthy()
    v1 = w.status.stable_revision
    w.hpa_scales("xeon", 6)
    w.set_spec(auto_spec(model__version="2"))
    v2 = revision_of(w.spec)
    low = None
    for _ in range(400):
        w.tick(5)
        ready = sum(d.ready for (c, r), d in w.deployments.items() if c == "xeon")
        # capacity for the class's load never drops below what the HPA asked
        if w.status.stable_revision == v2:
            low = min(low if low is not None else ready, ready)
        if w.status.phase == "Healthy" and w.status.stable_revision == v2 and ("xeon", v1) not in w.deployments:
            break
    assert w.autoscalers["xeon"] == (v2, 2, 10)
    assert w.deployments[("xeon", v2)].replicas == 6  # the size the HPA had given the old stable
    assert low is not None and low >= 6


def test_the_hpa_counts_the_load_users_send_not_a_shadows_mirrored_copies():
    steps = [{"shadow": {"duration": "1m"}}, {"setWeight": 50, "pause": "1m"}]
    w = World(auto_spec(rollout__steps=steps))
    w.ready_delay = 15.0
    w.run_until("Healthy")
    v1 = w.status.stable_revision

    def counted() -> tuple[str, ...]:
        return next(a.counted for a in w.last.actions if isinstance(a, EnsureAutoscaler))

    assert counted() == (v1,)
    w.set_spec(auto_spec(rollout__steps=steps, model__version="2"))
    v2 = revision_of(w.spec)
    seen = set()
    for _ in range(200):
        w.tick(5)
        if w.status.canary_revision != v2:
            break
        if w.status.canary_mirror:  # the canary sees copies of every request: not the class's load
            assert counted() == (v1,)
            seen.add("shadow")
        elif w.status.canary_weight == 50:
            assert counted() == tuple(sorted([v1, v2]))
            seen.add("weighted")
    assert seen == {"shadow", "weighted"}
    assert w.status.stable_revision == v2 and counted() == (v2,)


def test_an_hpa_scale_up_during_a_step_keeps_the_route_and_the_step_going():
    """Canary pods added because the HPA grew the stable take time to be Ready; meanwhile the step
    goes on and the route keeps the step's weight (it is not pulled to 0 and back at every scale-up)."""
    w = healthy()
    v2 = canary_started_at(w, 20)
    started, route = w.status.step_started_at, dict(w.route)
    assert route[v2] == 20
    w.hpa_scales("xeon", 10)  # the canary now needs 2 pods; its second is Ready only after 15 s
    for _ in range(10):
        w.tick(2)
        assert w.deployments[("xeon", v2)].replicas == 2
        assert dict(w.route) == route and w.status.step_started_at == started, (w.route, w.status.step_started_at)
    assert w.deployments[("xeon", v2)].ready == 2


def test_a_canary_on_an_autoscaled_class_looks_at_the_stables_size_every_few_seconds():
    from visionfleet.planner.serving import HPA_FOLLOW_SECONDS

    w = healthy()
    assert w.last.requeue_seconds > HPA_FOLLOW_SECONDS  # nothing to follow without a canary
    canary_started_at(w, 20)
    assert w.last.requeue_seconds <= HPA_FOLLOW_SECONDS  # the HPA does not wake the operator
