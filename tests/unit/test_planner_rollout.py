"""The rollout state machine, scenario by scenario, tick by tick (no cluster)."""

from __future__ import annotations

import pytest

from visionfleet.planner.model import ANNOTATION_ABORT, ANNOTATION_PAUSED, ANNOTATION_PROMOTE
from visionfleet.planner.revision import revision_of
from visionfleet.planner.rollout import split_replicas

from .planner_sim import GOOD, NO_DATA, SLOW, UNKNOWN, World, spec


def healthy_world() -> World:
    w = World(spec())
    w.run_until("Healthy")
    return w


def conditions(w: World) -> dict[str, str]:
    return {c.type: c.status for c in w.status.conditions}


def test_first_revision_compiles_everywhere_then_becomes_healthy():
    w = World(spec())
    phases = w.run_until("Healthy")
    assert phases[0] == "Compiling" and "Verifying" in phases
    rev = revision_of(w.spec)
    assert w.status.stable_revision == rev and w.status.canary_revision is None
    assert {c.name: c.compile.state for c in w.status.classes} == {"l4": "Succeeded", "xeon": "Succeeded"}
    assert {c.name: c.stable_revision for c in w.status.classes} == {"l4": rev, "xeon": rev}
    assert w.serving() == {("l4", rev): 2, ("xeon", rev): 2}
    assert [h.outcome for h in w.status.history] == ["Promoted"]
    assert conditions(w)["Available"] == "True" and conditions(w)["Progressing"] == "False"
    assert conditions(w)["Compiled"] == "True" and conditions(w)["Degraded"] == "False"


def test_steady_state_writes_nothing():
    w = healthy_world()
    w.writes = 0
    for _ in range(20):
        w.tick(30)
    assert w.writes == 0


def test_slow_canary_is_rolled_back_and_never_retried():
    w = healthy_world()
    v1 = w.status.stable_revision
    w.set_spec(spec(model__version="2"))
    v2 = revision_of(w.spec)
    w.measurement = SLOW
    w.run_until("RolledBack")
    assert w.status.stable_revision == v1 and w.status.canary_revision is None
    last = w.status.history[-1]
    assert (last.revision, last.outcome) == (v2, "RolledBack") and "p99 31.2 ms > 20 ms" in last.reason
    assert conditions(w)["RolledBack"] == "True"
    assert ("Warning", "RolledBack") in [(t, r) for t, r, _ in w.all_events]
    assert w.status.analysis.verdict == "Failed" and w.status.analysis.p99_ms == 31.2
    # all traffic and replicas back on stable, canary gone
    assert w.serving() == {("l4", v1): 2, ("xeon", v1): 2}
    # the failed revision is not retried while the spec stays the same, however long we wait
    w.measurement = GOOD
    for _ in range(30):
        w.tick(30)
    assert w.status.canary_revision is None and w.status.phase == "RolledBack"
    # a new revision starts a new rollout
    w.set_spec(spec(model__version="3"))
    w.tick()
    assert w.status.canary_revision == revision_of(w.spec)


def test_good_canary_walks_every_step_and_is_promoted():
    w = healthy_world()
    v1 = w.status.stable_revision
    w.set_spec(spec(model__version="2"))
    v2 = revision_of(w.spec)
    weights = []
    for _ in range(200):
        w.tick(10)
        if w.status.canary_revision and w.status.canary_weight not in weights:
            weights.append(w.status.canary_weight)
        if w.status.stable_revision == v2:
            break
    assert weights == [20, 50, 100]
    assert w.status.phase == "Healthy" and w.status.canary_revision is None
    assert [h.outcome for h in w.status.history] == ["Promoted", "Promoted"]
    w.tick(31)
    assert w.serving() == {("l4", v2): 2, ("xeon", v2): 2}, \
        "the old stable is removed once the new one is Ready and rollout.scaleDownDelay (30s) is over"
    assert v1 != v2


def test_pause_is_respected_before_the_next_step():
    w = healthy_world()
    w.set_spec(spec(model__version="2"))
    w.run_until("RollingOut")
    started = w.now
    while w.status.step == 0:
        w.tick(5)
    assert (w.now - started).total_seconds() >= 60, "step 0 has a 1m pause"


def test_inconclusive_analysis_never_promotes_and_rolls_back_at_the_limit_when_the_policy_says_so():
    w = healthy_world()
    w.set_spec(spec(model__version="2", analysis__onInconclusive="Rollback"))
    w.measurement = UNKNOWN
    phases = w.run_until("RolledBack", seconds=30)
    assert "Healthy" not in phases
    assert w.status.history[-1].outcome == "RolledBack"
    assert "inconclusive 3 times in a row (onInconclusive: Rollback)" in w.status.history[-1].reason
    assert w.status.step in (None, 0)


def test_inconclusive_streak_resets_on_a_pass():
    w = healthy_world()
    w.set_spec(spec(model__version="2", analysis__onInconclusive="Rollback"))
    w.run_until("RollingOut")
    for m in (UNKNOWN, UNKNOWN, GOOD, UNKNOWN, UNKNOWN):
        w.measurement = m
        w.tick(31)
    assert w.status.canary_revision is not None, "two inconclusive, a pass, two inconclusive: no rollback"


def test_compile_failure_on_one_class_holds_it_back_and_the_others_go_on():
    w = healthy_world()
    v1 = w.status.stable_revision
    w.set_spec(spec(model__version="2"))
    w.fail_compile = {"l4"}
    for _ in range(200):
        w.tick(10)
        if w.status.stable_revision != v1:
            break
    v2 = revision_of(w.spec)
    by_class = {c.name: c for c in w.status.classes}
    assert by_class["l4"].compile.state == "Failed" and "accuracy gate" in by_class["l4"].compile.message
    assert by_class["l4"].stable_revision == v1, "held back on its stable revision"
    assert by_class["xeon"].stable_revision == v2
    assert conditions(w)["Degraded"] == "True"
    assert ("Warning", "CompileFailed") in [(t, r) for t, r, _ in w.all_events]


def test_compile_failure_everywhere_fails_the_revision_and_stable_keeps_serving():
    w = healthy_world()
    v1 = w.status.stable_revision
    w.set_spec(spec(model__version="2"))
    w.fail_compile = {"l4", "xeon"}
    for _ in range(10):
        w.tick()
    assert w.status.history[-1].outcome == "CompileFailed"
    assert w.status.canary_revision is None and w.status.stable_revision == v1
    assert w.serving() == {("l4", v1): 2, ("xeon", v1): 2}
    assert conditions(w)["Compiled"] == "False"


def test_first_revision_failing_everywhere_is_phase_failed():
    w = World(spec())
    w.fail_compile = {"l4", "xeon"}
    for _ in range(5):
        w.tick()
    assert w.status.phase == "Failed" and w.serving() == {}


def test_spec_change_mid_rollout_sends_traffic_back_to_stable_and_restarts():
    w = healthy_world()
    v1 = w.status.stable_revision
    w.set_spec(spec(model__version="2"))
    v2 = revision_of(w.spec)
    while w.status.step != 1:
        w.tick(10)
    assert ("l4", v2) in w.serving()
    w.set_spec(spec(model__version="3"))
    v3 = revision_of(w.spec)
    w.tick()
    assert w.status.canary_revision == v3 and w.status.step == 0 and w.status.analysis is None
    assert ("l4", v2) not in w.serving() and w.serving()[("l4", v1)] == 2
    assert [h.outcome for h in w.status.history][-1] == "Superseded"


def test_policy_only_change_is_not_a_new_revision():
    w = healthy_world()
    before = w.status.stable_revision
    w.set_spec(spec(analysis__interval="1m", rollout__steps=[{"setWeight": 5}, {"setWeight": 100}],
                    fleet__classes__1__replicas={"min": 3, "max": 6}))
    w.tick()
    assert w.status.stable_revision == before and w.status.canary_revision is None
    assert w.serving()[("xeon", before)] == 3, "replicas follow the spec without a new revision"


def test_abort_annotation_rolls_back_now():
    w = healthy_world()
    w.set_spec(spec(model__version="2"))
    w.run_until("RollingOut")
    w.annotations[ANNOTATION_ABORT] = "2026-11-28T12:00:00Z"
    w.tick()
    assert w.status.phase in ("RollingBack", "RolledBack") and w.status.history[-1].outcome == "Aborted"
    w.tick()
    assert w.status.phase == "RolledBack"
    # the same annotation value is not acted on twice: a later revision rolls out normally
    w.set_spec(spec(model__version="3"))
    w.run_until("RollingOut")


def test_promote_annotation_skips_the_remaining_steps_once_the_canary_is_ready_at_full_size():
    w = healthy_world()
    w.ready_delay = 20
    w.set_spec(spec(model__version="2"))
    v2 = revision_of(w.spec)
    w.run_until("RollingOut")
    w.annotations[ANNOTATION_PROMOTE] = "now"
    w.tick()
    assert w.status.full_promotion and w.status.stable_revision != v2, "not before the canary is Ready"
    assert w.serving()[("l4", v2)] == 2 and w.serving()[("xeon", v2)] == 2, "scaled to full size first"
    w.run_until("Healthy")
    assert w.status.stable_revision == v2
    assert "once the canary was Ready" in w.status.history[-1].reason


def test_paused_annotation_holds_the_step():
    w = healthy_world()
    w.set_spec(spec(model__version="2"))
    w.run_until("RollingOut")
    w.annotations[ANNOTATION_PAUSED] = "true"
    for _ in range(20):
        w.tick(30)
    assert w.status.step == 0 and w.status.phase == "Paused"
    assert conditions(w)["Paused"] == "True"
    del w.annotations[ANNOTATION_PAUSED]
    w.run_until("Healthy", seconds=30)


def test_canary_that_never_becomes_ready_is_never_analysed_and_rolled_back_at_the_progress_deadline():
    w = healthy_world()
    v1 = w.status.stable_revision
    w.set_spec(spec(model__version="2"))
    w.never_ready = True
    for _ in range(19):  # 9.5 minutes: inside the 10m progressDeadline
        w.tick(30)
    assert w.status.phase == "Verifying" and w.status.analysis is None
    for _ in range(3):  # the deadline counts from the first pass that found the compiled canary unready
        w.tick(30)
    assert w.status.stable_revision == v1 and w.status.canary_revision is None
    assert w.status.history[-1].outcome == "RolledBack"
    assert "not Ready within progressDeadline 10m" in w.status.history[-1].reason
    assert "l4: 0/1 Ready" in w.status.history[-1].reason


def test_restart_resumes_from_status_alone():
    """A pass that starts from the status another pass wrote plans the same as one that continues."""
    w = healthy_world()
    w.set_spec(spec(model__version="2"))
    w.run_until("RollingOut")
    w2 = World(w.spec, status=w.status.model_copy(deep=True), generation=w.generation, now=w.now,
               jobs=dict(w.jobs), pods={k: list(v) for k, v in w.pods.items()}, snapshots=dict(w.snapshots))
    a, b = w.tick(), w2.tick()
    assert a.status == b.status and a.actions == b.actions and a.events == b.events


@pytest.mark.parametrize(
    ("base", "max_", "weight", "ready", "expected"),
    [
        (2, 4, 0, True, (2, 0, 0)),
        (2, 4, 20, True, (3, 1, 25)),
        (4, 8, 50, True, (4, 4, 50)),
        (1, 10, 10, True, (9, 1, 10)),
        (1, 1, 10, True, (1, 1, 50)),  # the canary needs a pod: one more than max, reported as off
        (1, 4, 10, True, (3, 1, 25)),
        (10, 20, 10, False, (10, 1, 9)),
        (2, 4, 100, False, (2, 2, 100)),
        (2, 4, 100, True, (0, 2, 100)),
    ],
)
def test_split_replicas(base, max_, weight, ready, expected):
    split = split_replicas(base, max_, weight, ready)
    assert (split.stable, split.canary, split.share) == expected
    assert split.stable >= base or (weight == 100 and ready), "stable never drops while the canary is not Ready"


def test_inconclusive_never_advances_a_step_however_long_it_lasts():
    w = healthy_world()
    w.set_spec(spec(model__version="2"))
    w.measurement = NO_DATA
    for _ in range(60):
        w.tick(30)
        assert w.status.step in (0, None) and w.status.stable_revision != revision_of(w.spec)
    assert w.status.phase == "Paused"
    w.measurement = GOOD
    w.run_until("Healthy", seconds=30)


def test_a_promote_annotation_set_while_idle_never_skips_a_later_canarys_analysis():
    w = healthy_world()
    w.annotations[ANNOTATION_PROMOTE] = "left-in-git"
    w.tick()
    assert w.status.handled_promote == "left-in-git", "recorded as handled while nothing was in flight"
    w.set_spec(spec(model__version="2"))
    w.measurement = SLOW
    w.run_until("RolledBack")
    assert w.status.history[-1].outcome == "RolledBack"


def test_reverting_the_spec_to_stable_after_a_rollback_is_healthy_again():
    w = healthy_world()
    w.set_spec(spec(model__version="2"))
    w.measurement = SLOW
    w.run_until("RolledBack")
    w.set_spec(spec(model__version="1"))
    w.tick()
    assert w.status.phase == "Healthy"
    assert conditions(w)["RolledBack"] == "False"


def test_waves_roll_out_class_by_class_and_promote_at_the_end():
    w = World(spec(rollout__waves=[["xeon"], ["l4"]]))
    w.run_until("Healthy")
    v1 = w.status.stable_revision
    w.set_spec(spec(model__version="2", rollout__waves=[["xeon"], ["l4"]]))
    v2 = revision_of(w.spec)
    seen = []
    for _ in range(300):
        w.tick(10)
        if w.status.canary_revision:
            state = (w.status.wave, w.status.canary_weight, ("xeon", v2) in w.serving(), ("l4", v2) in w.serving())
            if not seen or seen[-1] != state:
                seen.append(state)
        if w.status.stable_revision == v2:
            break
    # wave 0: only xeon has a canary; wave 1: l4 joins while xeon stays fully on the canary
    assert all(not l4 for wave, _, _, l4 in seen if wave == 0)
    assert any(wave == 1 and l4 for wave, _, _, l4 in seen)
    steps = []
    for wave, weight, _, _ in seen:
        if not steps or steps[-1] != (wave, weight):
            steps.append((wave, weight))
    assert steps == [(0, 20), (0, 50), (0, 100), (1, 20), (1, 50), (1, 100)]
    assert w.status.stable_revision == v2 and w.status.phase == "Healthy"
    assert ("Normal", "WaveAdvanced") in [(t, r) for t, r, _ in w.all_events]
    assert v1 != v2


def test_a_failure_in_a_later_wave_rolls_every_class_back():
    w = World(spec(rollout__waves=[["xeon"], ["l4"]]))
    w.run_until("Healthy")
    v1 = w.status.stable_revision
    w.set_spec(spec(model__version="2", rollout__waves=[["xeon"], ["l4"]]))
    while w.status.wave != 1:
        w.tick(10)
    w.measurement = SLOW
    w.run_until("RolledBack")
    w.tick()
    assert w.serving() == {("l4", v1): 2, ("xeon", v1): 2}, "xeon, already through its wave, is back on stable too"


@pytest.mark.parametrize("outcome, phase", [("CompileFailed", "Failed"), ("RolledBack", "RolledBack"),
                                            ("Aborted", "RolledBack")])
def test_a_refused_revision_asked_for_again_is_not_healthy(outcome, phase):
    """B failed, C was promoted, the spec went back to B: B is never retried, and the phase says so
    (derived from B's own newest outcome, not from the last history entry)."""
    from visionfleet.api.status import HistoryEntry, VisionDeploymentStatus
    from visionfleet.planner.phases import derive_phase

    b, c = "b" * 12, "c" * 12
    st = VisionDeploymentStatus(stable_revision=c, history=[
        HistoryEntry(revision=b, outcome=outcome, reason="x", at="2026-11-28T00:00:00Z"),
        HistoryEntry(revision=c, outcome="Promoted", reason="y", at="2026-11-28T01:00:00Z")])
    got = derive_phase(st, desired=b, compiling=False, paused=False, rolling_back=False)
    assert got.value == phase
    # and asking for the stable revision again is Healthy
    assert derive_phase(st, desired=c, compiling=False, paused=False, rolling_back=False).value == "Healthy"
