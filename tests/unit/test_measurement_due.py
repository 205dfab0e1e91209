"""``measurement_due``: the handler reads Prometheus only when the planner may judge a measurement.

Two properties, over simulated rollouts: every pass that judged a measurement was one the function
called due (so gating the reads never starves the planner), and passes that compile or wait between
measurements are not due (so Prometheus is not read on each of them). A rollout gated that way goes
through the same outcomes as one that is given a measurement on every pass.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from visionfleet.api.spec import AnalysisSpec
from visionfleet.api.status import AnalysisResult, VisionDeploymentStatus
from visionfleet.planner.analysis import Measurement, measurement_due
from visionfleet.planner.model import iso

from .planner_sim import GOOD, SLOW, T0, UNKNOWN, World, spec

ANALYSIS = AnalysisSpec.model_validate({"interval": "30s", "prometheus": {"url": "http://p:9090"},
                                        "slo": {"latencyP99Ms": 20}})


def at(seconds: float) -> str:
    return iso(T0 + timedelta(seconds=seconds))


def status(**fields) -> VisionDeploymentStatus:
    last = fields.pop("last", None)
    st = VisionDeploymentStatus(**fields)
    if last is not None:
        st.analysis = AnalysisResult(at=at(last), verdict="Passed")
    return st


@pytest.mark.parametrize(
    ("analysis", "st", "now", "due"),
    [
        pytest.param(ANALYSIS, status(), 0, False, id="no-canary"),
        pytest.param(AnalysisSpec(), status(canary_revision="abcdef12", step_started_at=at(0)), 100, False,
                     id="no-prometheus"),
        pytest.param(AnalysisSpec.model_validate({"prometheus": {"url": "http://p:9090"}}),
                     status(canary_revision="abcdef12", step_started_at=at(0)), 100, False, id="nothing-to-check"),
        pytest.param(ANALYSIS, status(canary_revision="abcdef12"), 100, False, id="compiling"),
        pytest.param(ANALYSIS.model_copy(update={"initial_delay": "0s"}), status(canary_revision="abcdef12"), 100, True,
                     id="step-starts-now-without-initial-delay"),
        pytest.param(ANALYSIS, status(canary_revision="abcdef12", step_started_at=at(0)), 5, False,
                     id="inside-the-initial-delay"),
        pytest.param(ANALYSIS, status(canary_revision="abcdef12", step_started_at=at(0)), 30, True,
                     id="initial-delay-over"),
        pytest.param(ANALYSIS, status(canary_revision="abcdef12", step_started_at=at(0), last=40), 60, False,
                     id="between-measurements"),
        pytest.param(ANALYSIS, status(canary_revision="abcdef12", step_started_at=at(0), last=40), 70, True,
                     id="an-interval-after-the-last"),
        pytest.param(ANALYSIS, status(canary_revision="abcdef12", step_started_at=at(100), last=60), 110, False,
                     id="next-step-inside-its-initial-delay"),
        pytest.param(ANALYSIS, status(canary_revision="abcdef12", step_started_at=at(100), last=90), 130, True,
                     id="next-step-initial-delay-over"),
        pytest.param(ANALYSIS, status(canary_revision="abcdef12", last=90), 100, False,
                     id="unready-or-joining-class-between-measurements"),
        pytest.param(ANALYSIS, status(canary_revision="abcdef12", last=90), 120, True,
                     id="unready-or-joining-class-an-interval-after-the-last"),
    ],
)
def test_due(analysis, st, now, due):
    assert measurement_due(analysis, st, T0 + timedelta(seconds=now)) is due


class Gated(World):
    """The handler's side: a measurement is read (``source``) only on passes the function calls due.
    ``judged``/``due`` record, per pass, whether the planner judged one and whether it was due."""

    def __init__(self, *args, source: Measurement = GOOD, gate: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.source, self.gate = source, gate
        self.log: list[tuple[bool, bool, str]] = []  # (due, judged, phase)

    def tick(self, seconds: float = 5):
        now = self.now + timedelta(seconds=seconds)
        due = measurement_due(self.spec.analysis, self.status, now)
        self.measurement = self.source if due or not self.gate else None
        before = self.status.analysis.at if self.status.analysis else None
        p = super().tick(seconds)
        judged = p.status.analysis is not None and p.status.analysis.at == iso(now) and before != iso(now)
        self.log.append((due, judged, p.status.phase))
        return p


def canary_world(source: Measurement, gate: bool, **kwargs) -> Gated:
    w = Gated(spec(), source=source, gate=gate, **kwargs)
    w.run_until("Healthy")
    w.log.clear()
    w.set_spec(spec(model__version="2"))
    return w


@pytest.mark.parametrize("ready_delay", [0, 12])
@pytest.mark.parametrize("seconds", [1, 5, 13])
def test_every_judged_pass_was_due_and_compiles_read_nothing(ready_delay, seconds):
    w = canary_world(GOOD, gate=False, ready_delay=ready_delay, compile_ticks=8)
    for _ in range(400):
        w.tick(seconds)
        if w.status.canary_revision is None:
            break
    assert w.status.phase == "Healthy" and w.status.history[-1].outcome == "Promoted"
    assert all(due for due, judged, _ in w.log if judged), "a judged pass that was not called due"
    assert not any(due for due, _, phase in w.log if phase == "Compiling")
    # Due but not judged: at most one pass per step, the one that starts it (its canary might have
    # been unready, and been measured at once).
    assert sum(1 for d, j, _ in w.log if d and not j) <= len(w.spec.rollout.steps)
    assert sum(1 for _, j, _ in w.log if j) >= len(w.spec.rollout.steps)

@pytest.mark.parametrize(("source", "outcome"), [(GOOD, "Promoted"), (SLOW, "RolledBack"), (UNKNOWN, None)])
def test_gated_reads_give_the_same_rollout(source, outcome):
    runs = []
    for gate in (False, True):
        w = canary_world(source, gate=gate, ready_delay=7, compile_ticks=3)
        for _ in range(120):
            w.tick(5)
        runs.append(([(h.outcome, h.reason) for h in w.status.history], w.status.phase,
                     w.status.analysis.verdict if w.status.analysis else None))
    assert runs[0] == runs[1]
    if outcome is not None:
        assert runs[1][0][-1][0] == outcome
    else:
        assert runs[1][1] == "Paused"
