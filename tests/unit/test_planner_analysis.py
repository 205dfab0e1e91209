"""assess(): one measurement in, a verdict with its numbers and reason out."""

from __future__ import annotations

import math

import pytest

from visionfleet.api.spec import AnalysisSpec
from visionfleet.planner.analysis import Measurement, assess

SLO_AND_DRIFT = AnalysisSpec.model_validate({
    "prometheus": {"url": "http://p:9090"},
    "slo": {"latencyP99Ms": 20, "errorRate": 0.01, "minRequests": 100},
    "drift": {"pValue": 0.01, "window": 500},
})
GOOD = dict(p99_ms=12.0, error_rate=0.001, requests=1000, drift_p_value=0.4, drift_window_fill=1.0)


@pytest.mark.parametrize(
    ("changes", "verdict", "reason"),
    [
        pytest.param({}, "Passed", "p99 12.0 ms <= 20 ms", id="good"),
        pytest.param({"p99_ms": 31.2}, "Failed", "p99 31.2 ms > 20 ms", id="slow"),
        pytest.param({"error_rate": 0.05}, "Failed", "error rate 5.00% > 1.00%", id="errors"),
        pytest.param({"drift_p_value": 0.001}, "Failed", "input drift: p=0.001 < 0.01", id="drift"),
        pytest.param({"slo_error": "connection refused"}, "Error", "SLO source: connection refused",
                     id="prometheus-down"),
        pytest.param({"slo_unknown": "no data for the canary yet"}, "Inconclusive", "SLO source: no data",
                     id="no-series"),
        pytest.param({"requests": 40}, "Inconclusive", "40 requests < minRequests 100", id="too-little-traffic"),
        pytest.param({"requests": None}, "Inconclusive", "no request count", id="no-requests"),
        pytest.param({"p99_ms": math.nan}, "Inconclusive", "no p99 latency", id="nan-p99"),
        pytest.param({"error_rate": math.inf}, "Inconclusive", "no error rate", id="inf-errors"),
        pytest.param({"drift_window_fill": 0.4}, "Inconclusive", "drift window 40% full", id="window-filling"),
        pytest.param({"drift_error": "monitor unreachable"}, "Error", "drift monitor: monitor unreachable",
                     id="monitor-down"),
        pytest.param({"p99_ms": 50.0, "drift_window_fill": 0.1}, "Failed", "p99 50.0 ms", id="failed-beats-inconclusive"),
        pytest.param({"p99_ms": 50.0, "drift_error": "down"}, "Failed", "p99 50.0 ms", id="failed-beats-error"),
        pytest.param({"drift_window_fill": 0.1, "drift_error": None, "slo_error": "down"}, "Error", "SLO source: down",
                     id="error-beats-inconclusive"),
    ],
)
def test_assess(changes, verdict, reason):
    a = assess(Measurement(**(GOOD | changes)), SLO_AND_DRIFT)
    assert a.verdict == verdict
    assert reason in a.reason


@pytest.mark.parametrize(("dry", "verdict", "trial"), [
    (["latency"], "Passed", "latency: Failed (p99 31.2 ms > 20 ms)"),
    (["drift"], "Failed", "drift: Passed"),
    (["latency", "errorRate", "drift"], "Passed", "errorRate: Passed"),
])
def test_dry_run_checks_are_reported_and_take_no_part_in_the_verdict(dry, verdict, trial):
    analysis = SLO_AND_DRIFT.model_copy(update={"dry_run": dry})
    a = assess(Measurement(**(GOOD | {"p99_ms": 31.2})), analysis)
    assert a.verdict == verdict and trial in a.dry_run


def test_numbers_travel_with_the_verdict_and_nan_is_dropped():
    a = assess(Measurement(**(GOOD | {"p99_ms": 31.2, "error_rate": math.nan})), SLO_AND_DRIFT)
    assert (a.p99_ms, a.error_rate, a.requests, a.drift_p_value) == (31.2, None, 1000, 0.4)


def test_without_slo_or_drift_the_pause_alone_judges():
    a = assess(Measurement(), AnalysisSpec())
    assert a.verdict == "Passed" and "pause alone" in a.reason


def test_slo_only_ignores_missing_drift_numbers():
    analysis = AnalysisSpec.model_validate({"prometheus": {"url": "http://p:9090"}, "slo": {"latencyP99Ms": 20}})
    assert assess(Measurement(p99_ms=5, error_rate=0, requests=500), analysis).verdict == "Passed"


def drifting_world():
    from .planner_sim import World, spec

    w = World(spec(analysis__drift={"pValue": 0.01, "window": 500},
                   compile__calibration={"uri": "pvc://models/calib.npz"}))
    w.measurement = Measurement(p99_ms=12.0, error_rate=0.0, requests=500, drift_p_value=0.4, drift_window_fill=1.0)
    w.run_until("Healthy")
    return w


def test_stable_drift_raises_a_condition_and_one_event_but_never_rolls_back():
    w = drifting_world()
    stable = w.status.stable_revision
    w.stable_drift = Measurement(drift_p_value=0.002, drift_window_fill=1.0)
    w.tick()
    cond = next(c for c in w.status.conditions if c.type == "InputDrift")
    assert cond.status == "True" and cond.reason == "DriftDetected" and "p=0.002 < 0.01" in cond.message
    assert [e for e in w.all_events if e[1] == "InputDrift"][0][0] == "Warning"
    for _ in range(5):
        w.tick()
    assert len([e for e in w.all_events if e[1] == "InputDrift"]) == 1  # once per episode, not per pass
    assert w.status.phase == "Healthy" and w.status.stable_revision == stable and not w.status.canary_revision
    # The monitor restarted (window filling): no verdict, the last known one stands.
    w.stable_drift = Measurement(drift_p_value=0.5, drift_window_fill=0.3)
    w.tick()
    assert next(c for c in w.status.conditions if c.type == "InputDrift").status == "True"
    # Back in distribution: the condition clears; a later episode warns again.
    w.stable_drift = Measurement(drift_p_value=0.5, drift_window_fill=1.0)
    w.tick()
    assert next(c for c in w.status.conditions if c.type == "InputDrift").status == "False"
    w.stable_drift = Measurement(drift_p_value=0.001, drift_window_fill=1.0)
    w.tick()
    assert len([e for e in w.all_events if e[1] == "InputDrift"]) == 2


def test_without_a_drift_test_there_is_no_drift_condition():
    from .planner_sim import World, spec

    w = World(spec())
    w.stable_drift = Measurement(drift_p_value=0.001, drift_window_fill=1.0)
    w.run_until("Healthy")
    assert all(c.type != "InputDrift" for c in w.status.conditions)


def test_the_input_space_test_never_judges_the_canary():
    """Both revisions see the same inputs: an input shift is not the canary's fault."""
    a = assess(Measurement(**(GOOD | {"drift_input_p_value": 1e-9})), SLO_AND_DRIFT)
    assert a.verdict == "Passed" and "input" not in a.reason


def test_stable_input_space_drift_raises_the_condition_and_says_which_test_saw_it():
    w = drifting_world()
    stable = w.status.stable_revision
    # The outputs hide it (haze): bbsd-ks passes, the input-space test does not.
    w.stable_drift = Measurement(drift_p_value=0.4, drift_window_fill=1.0, drift_input_p_value=0.0004)
    w.tick()
    cond = next(c for c in w.status.conditions if c.type == "InputDrift")
    assert cond.status == "True" and cond.reason == "DriftDetected"
    assert "seen by input space (input-ks) p=0.0004 < 0.01" in cond.message, cond.message
    assert "not by output summaries (bbsd-ks) p=0.4" in cond.message, cond.message
    events = [e for e in w.all_events if e[1] == "InputDrift"]
    assert len(events) == 1 and events[0][0] == "Warning" and "input space (input-ks)" in events[0][2]
    # Now the outputs see it too: the same episode (no second Event), both tests named.
    w.stable_drift = Measurement(drift_p_value=0.002, drift_window_fill=1.0, drift_input_p_value=0.0004)
    w.tick()
    cond = next(c for c in w.status.conditions if c.type == "InputDrift")
    assert "output summaries (bbsd-ks) p=0.002 < 0.01 and input space (input-ks) p=0.0004 < 0.01" in cond.message
    assert len([e for e in w.all_events if e[1] == "InputDrift"]) == 1
    assert w.status.phase == "Healthy" and w.status.stable_revision == stable and not w.status.canary_revision
    # The detector's window refills (monitor restarted): the input test alone, fine, is no verdict.
    w.stable_drift = Measurement(drift_p_value=None, drift_window_fill=0.2, drift_input_p_value=0.6)
    w.tick()
    assert next(c for c in w.status.conditions if c.type == "InputDrift").status == "True"
    # Both fine: the condition clears.
    w.stable_drift = Measurement(drift_p_value=0.5, drift_window_fill=1.0, drift_input_p_value=0.6)
    w.tick()
    cond = next(c for c in w.status.conditions if c.type == "InputDrift")
    assert cond.status == "False" and "output summaries (bbsd-ks) p=0.5 >= 0.01, input space (input-ks) p=0.6" \
        in cond.message
    # Input drift alone while the detector's window refills is a verdict: a new episode.
    w.stable_drift = Measurement(drift_window_fill=0.2, drift_input_p_value=0.003)
    w.tick()
    assert next(c for c in w.status.conditions if c.type == "InputDrift").status == "True"
    assert len([e for e in w.all_events if e[1] == "InputDrift"]) == 2


def test_with_mmd_the_stable_condition_names_both_input_space_tests():
    from .planner_sim import World, spec

    w = World(spec(analysis__drift={"pValue": 0.01, "window": 500, "detector": "mmd"},
                   compile__calibration={"uri": "pvc://models/calib.npz"}))
    w.measurement = Measurement(p99_ms=12.0, error_rate=0.0, requests=500, drift_p_value=0.4, drift_window_fill=1.0,
                                drift_input_p_value=1e-6)  # the canary ignores it
    w.run_until("Healthy")
    w.stable_drift = Measurement(drift_p_value=0.003, drift_window_fill=1.0, drift_input_p_value=0.2)
    w.tick()
    cond = next(c for c in w.status.conditions if c.type == "InputDrift")
    assert "seen by input space (mmd) p=0.003 < 0.01; not by input space (input-ks) p=0.2" in cond.message
