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


def test_the_daemon_gives_a_due_measurement_a_moment_so_one_pass_judges_it(handlers, monkeypatch):
    """A fast Prometheus: the pass that follows the due time has the measurement (no second pass);
    the wait holds no thread and ends when the measurement does."""
    import asyncio
    import copy
    from types import SimpleNamespace

    from .planner_sim import SPEC

    monkeypatch.setattr(handlers, "measure", lambda *a, **kw: GOOD)
    monkeypatch.setattr(handlers, "measure_drift", lambda *a, **kw: None)
    monkeypatch.setattr(handlers.METRICS, "track", lambda *a: None)
    monkeypatch.setattr(handlers.METRICS, "forget", lambda *a: None)
    started = iso(handlers.datetime.now(handlers.timezone.utc) - timedelta(minutes=5))
    body = {"metadata": {"name": "vd", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": copy.deepcopy(SPEC),
            "status": {"stableRevision": "11111111", "canaryRevision": "abcdef12", "step": 0,
                       "stepStartedAt": started}}

    class Stopped:
        flag = False

        def __bool__(self):
            return self.flag

        async def wait(self):
            await asyncio.sleep(3600)

    stopped, seen = Stopped(), []

    def one_pass(snapshot, nodes, children):
        md = snapshot["metadata"]
        vd = VisionDeploymentView(name=md["name"], namespace=md["namespace"], generation=1,
                                  spec=handlers.VisionDeploymentSpec.model_validate(snapshot["spec"]),
                                  status=handlers.status_from(snapshot["status"]))
        seen.append(handlers.take_measurements(vd, handlers.datetime.now(handlers.timezone.utc))[0])
        stopped.flag = True
        return 30.0

    monkeypatch.setattr(handlers, "run_pass", one_pass)
    asyncio.run(asyncio.wait_for(handlers.reconcile(body=body, memo=SimpleNamespace(), stopped=stopped,
                                                    nodes_index={}), timeout=10))
    assert seen == [GOOD]
