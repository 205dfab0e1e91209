"""The handler reads Prometheus only when a measurement is due, on the measurement threads: a pass
never waits for it, and a finished measurement wakes the daemon for the pass that judges it."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from visionfleet.api.status import AnalysisResult, VisionDeploymentStatus
from visionfleet.observe.prometheus import Measurements
from visionfleet.planner.model import VisionDeploymentView, iso

from .planner_sim import GOOD, T0, spec


@pytest.fixture()
def handlers(monkeypatch):
    from visionfleet import handlers

    monkeypatch.setattr(handlers, "MEASUREMENTS", Measurements(workers=2))
    monkeypatch.setattr(handlers, "_WAKE", {})
    return handlers


def view(**status) -> VisionDeploymentView:
    return VisionDeploymentView(name="vd", namespace="ns", generation=1, spec=spec(analysis__drift={"window": 100}),
                                status=VisionDeploymentStatus(stable_revision="11111111", **status))


def test_compiling_reads_nothing(handlers, monkeypatch):
    asked = []
    monkeypatch.setattr(handlers, "measure", lambda *a, **kw: asked.append(a) or GOOD)
    monkeypatch.setattr(handlers, "measure_drift", lambda *a, **kw: None)
    for s in range(0, 60, 2):
        assert handlers.take_measurements(view(canary_revision="abcdef12"), T0 + timedelta(seconds=s))[0] is None
    time.sleep(0.2)
    assert asked == []


def test_a_due_measurement_runs_aside_and_wakes_the_daemon(handlers, monkeypatch):
    release, woken = threading.Event(), threading.Event()

    def slow_measure(*a, **kw):
        release.wait(5)
        return GOOD

    monkeypatch.setattr(handlers, "measure", slow_measure)
    monkeypatch.setattr(handlers, "measure_drift", lambda *a, **kw: None)
    handlers._WAKE[("ns", "vd")] = woken.set
    vd = view(canary_revision="abcdef12", step=0, step_started_at=iso(T0))
    now = T0 + timedelta(seconds=31)
    t0 = time.monotonic()
    assert handlers.take_measurements(vd, now)[0] is None  # started; the pass goes on without it
    assert handlers.take_measurements(vd, now)[0] is None
    assert time.monotonic() - t0 < 0.5
    release.set()
    assert woken.wait(5)
    assert handlers.take_measurements(vd, now + timedelta(seconds=1))[0] == GOOD
    # judged: the status the next pass reads says when, and nothing is due for an interval
    vd.status.analysis = AnalysisResult(at=iso(now), verdict="Passed")
    assert handlers.take_measurements(vd, now + timedelta(seconds=10))[0] is None
    assert not handlers.MEASUREMENTS.pending(("ns", "vd", "canary"))


def test_the_stable_drift_is_read_at_most_once_an_interval(handlers, monkeypatch):
    asked = []
    monkeypatch.setattr(handlers, "measure_drift", lambda *a, **kw: asked.append(a) or GOOD)
    for _ in range(20):
        handlers.take_measurements(view(), T0)
        time.sleep(0.01)
    assert len(asked) == 1
