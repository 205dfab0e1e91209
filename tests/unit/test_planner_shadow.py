"""Shadow steps: the canary answers a mirror of live requests while every user is answered by the
stable, and is judged on its own latency, errors, drift and live agreement with the stable.

Stated over every instant of simulated time (pods take seconds to become Ready): no user request
ever reaches a canary in a shadow step — its route weight is 0 on every pass — and a failing one is
rolled back with the route never having named it.
"""

from __future__ import annotations

import pytest

from visionfleet.api.spec import AnalysisSpec
from visionfleet.api.status import Verdict
from visionfleet.planner.analysis import Measurement, assess
from visionfleet.planner.model import EnsureService, EnsureServing, Track
from visionfleet.planner.revision import revision_of

from .planner_sim import GOOD, SLOW, World, spec

GW = {"method": "GatewayAPI", "gatewayAPI": {"httpRoute": "doorbell"}}
SHADOW_STEPS = [{"shadow": {"duration": "2m"}}, {"setWeight": 50, "pause": "1m"}, {"setWeight": 100}]
LIVE = {"min": 0.99, "minPairs": 100}
DRIFT = {"window": 100}


def shadow_world(**changes) -> World:
    changes = {"rollout__traffic": GW, "rollout__steps": SHADOW_STEPS, **changes}
    w = World(spec(**changes))
    w.ready_delay = 20.0  # a Triton pod loads its model
    w.run_until("Healthy")
    return w


def start(w: World, version: str = "2", **changes) -> str:
    w.set_spec(spec(model__version=version, **{"rollout__traffic": GW, "rollout__steps": SHADOW_STEPS, **changes}))
    return revision_of(w.spec)


def canary_weight_on_route(w: World, rev: str) -> int:
    return dict(w.route).get(rev, 0)


def test_a_shadow_step_mirrors_to_the_canary_and_routes_no_user_to_it():
    w = shadow_world()
    v1 = w.status.stable_revision
    v2 = start(w)
    seen_mirror = False
    for _ in range(200):
        w.tick(5)
        assert canary_weight_on_route(w, v2) == 0 or w.status.step != 0, "a shadow canary got user traffic"
        if w.status.step == 0 and w.status.canary_revision == v2:
            assert (w.status.canary_weight, w.status.canary_mirror) == (0, 100)
            assert dict(w.route) == {v1: 100}
            if w.mirror is not None:
                seen_mirror = True
                assert (w.mirror.revision, w.mirror.percent) == (v2, 100)
                ready = sum(d.ready for (cls, rev), d in w.deployments.items() if rev == v2)
                assert ready > 0, "the mirror names a canary with no Ready pod"
                # The shadow canary takes the whole mirrored load: as many pods per class as the stable.
                assert all(w.deployments[(c, v2)].replicas == 2 for c in ("l4", "xeon"))
        if w.status.step == 1:
            break
    assert seen_mirror
    # Step 1: the mirror is gone (on the pass that moved on, or the next), the canary gets its weight.
    for _ in range(20):
        w.tick(5)
        if w.status.step_started_at is not None:
            break
    assert w.mirror is None and w.status.canary_mirror is None and w.status.canary_weight == 50
    assert canary_weight_on_route(w, v2) == 50
    assert ("Normal", "StepAdvanced") in [(t, r) for t, r, _ in w.all_events]
    assert any("shadow" not in m and "canary weight 50%" in m for t, r, m in w.all_events if r == "StepAdvanced")
    w.run_until("Healthy")
    assert w.status.stable_revision == v2


def test_the_shadow_step_lasts_its_duration_and_needs_a_passing_measurement():
    w = shadow_world()
    start(w)
    started = None
    for _ in range(200):
        w.tick(5)
        if w.status.step == 0 and w.status.step_started_at and started is None:
            started = w.now
        if w.status.step == 1:
            break
    assert started is not None and (w.now - started).total_seconds() >= 120


def test_a_slow_canary_fails_its_shadow_step_without_a_user_request_reaching_it():
    w = shadow_world()
    v1 = w.status.stable_revision
    v2 = start(w)
    w.measurement = SLOW
    named = set()
    for _ in range(200):
        w.tick(5)
        named |= {rev for rev, weight in w.route if weight > 0}
        if w.status.phase == "RolledBack":
            break
    assert w.status.phase == "RolledBack"
    assert v2 not in named, "the route gave the shadow canary a share of users"
    assert w.mirror is None and dict(w.route) == {v1: 100}
    assert "p99 31.2 ms > 20 ms" in w.status.history[-1].reason


def test_live_agreement_below_the_minimum_rolls_back_during_the_shadow_step():
    w = shadow_world(analysis__drift=DRIFT, analysis__liveAgreement=LIVE, compile__calibration={"uri": "pvc://m/c.npz"})
    v2 = start(w, analysis__drift=DRIFT, analysis__liveAgreement=LIVE, compile__calibration={"uri": "pvc://m/c.npz"})
    w.measurement = Measurement(p99_ms=12.0, error_rate=0.0, requests=500, drift_window_fill=1.0, drift_p_value=0.5,
                                live_pairs=400, live_agreement=0.93)
    w.run_until("RolledBack")
    assert w.status.history[-1].revision == v2
    assert "live agreement with the stable 0.930 < 0.99 (400 mirrored images)" in w.status.history[-1].reason
    assert w.status.analysis.live_agreement == pytest.approx(0.93)


def test_the_mirror_goes_to_the_monitor_sidecars_when_the_canary_has_them():
    w = shadow_world(analysis__drift=DRIFT, analysis__liveAgreement=LIVE, compile__calibration={"uri": "pvc://m/c.npz"})
    start(w, analysis__drift=DRIFT, analysis__liveAgreement=LIVE, compile__calibration={"uri": "pvc://m/c.npz"})
    w.measurement = Measurement(p99_ms=12.0, error_rate=0.0, requests=500, drift_window_fill=1.0, drift_p_value=0.5,
                                live_pairs=400, live_agreement=0.999)
    for _ in range(100):
        w.tick(5)
        if w.mirror is not None:
            break
    assert w.mirror is not None and w.mirror.to_monitor
    # and without drift (no sidecar) straight to Triton
    w2 = shadow_world()
    start(w2)
    for _ in range(100):
        w2.tick(5)
        if w2.mirror is not None:
            break
    assert w2.mirror is not None and not w2.mirror.to_monitor


def test_too_few_pairs_hold_the_shadow_step_inconclusive():
    w = shadow_world(analysis__drift=DRIFT, analysis__liveAgreement=LIVE, compile__calibration={"uri": "pvc://m/c.npz"})
    start(w, analysis__drift=DRIFT, analysis__liveAgreement=LIVE, compile__calibration={"uri": "pvc://m/c.npz"})
    w.measurement = Measurement(p99_ms=12.0, error_rate=0.0, requests=500, drift_window_fill=1.0, drift_p_value=0.5,
                                live_pairs=12, live_agreement=1.0)
    w.run_until("Paused", max_ticks=300)
    assert w.status.step == 0 and w.status.canary_weight == 0
    assert "12 live pairs < minPairs 100" in w.status.analysis.reason


def test_a_partial_mirror_sizes_the_canary_for_its_share():
    steps = [{"shadow": {"duration": "1m", "percent": 25}}, {"setWeight": 100}]
    w = shadow_world(rollout__steps=steps, fleet__classes__0__replicas={"min": 4, "max": 8})
    v2 = start(w, rollout__steps=steps, fleet__classes__0__replicas={"min": 4, "max": 8})
    for _ in range(100):
        w.tick(5)
        if w.mirror is not None:
            break
    assert w.mirror.percent == 25 and w.status.canary_mirror == 25
    assert w.deployments[("l4", v2)].replicas == 1  # a quarter of the 4 pods' load


def test_promotion_by_hand_during_a_shadow_step_skips_it():
    w = shadow_world()
    v2 = start(w)
    for _ in range(100):
        w.tick(5)
        if w.mirror is not None:
            break
    w.annotations["visionfleet.io/promote"] = "now"
    w.run_until("Healthy")
    assert w.status.stable_revision == v2 and w.mirror is None


def test_the_stable_service_follows_the_stable_revision():
    w = shadow_world()
    v1 = w.status.stable_revision
    assert [a.stable for a in w.last.actions if isinstance(a, EnsureService)] == [v1]
    v2 = start(w)
    w.run_until("Healthy")
    assert [a.stable for a in w.last.actions if isinstance(a, EnsureService)] == [v2]
    # replica traffic has no <vd>-stable
    w2 = World(spec())
    w2.run_until("Healthy")
    assert [a.stable for a in w2.last.actions if isinstance(a, EnsureService)] == [None]


@pytest.mark.parametrize("shadow, agreement, pairs, verdict", [
    (True, 0.999, 500, Verdict.PASSED),
    (True, 0.90, 500, Verdict.FAILED),
    (True, 1.0, 10, Verdict.INCONCLUSIVE),
    (False, 0.90, 500, Verdict.PASSED),  # outside a shadow step the agreement is not judged
], ids=["agrees", "disagrees", "too-few-pairs", "not-shadowing"])
def test_assess_judges_live_agreement_only_in_a_shadow_step(shadow, agreement, pairs, verdict):
    analysis = AnalysisSpec.model_validate({"prometheus": {"url": "http://p:9090"}, "drift": DRIFT,
                                            "liveAgreement": LIVE})
    m = Measurement(drift_window_fill=1.0, drift_p_value=0.5, live_pairs=pairs, live_agreement=agreement)
    a = assess(m, analysis, shadow=shadow)
    assert a.verdict == verdict
    assert (a.live_agreement is not None) == shadow


def test_a_shadow_canary_with_a_live_agreement_dry_run_is_reported_not_acted_on():
    analysis = AnalysisSpec.model_validate({"prometheus": {"url": "http://p:9090"}, "drift": DRIFT,
                                            "liveAgreement": LIVE, "dryRun": ["liveAgreement"]})
    m = Measurement(drift_window_fill=1.0, drift_p_value=0.5, live_pairs=500, live_agreement=0.5)
    a = assess(m, analysis, shadow=True)
    assert a.verdict == Verdict.PASSED and "liveAgreement: Failed" in a.dry_run
