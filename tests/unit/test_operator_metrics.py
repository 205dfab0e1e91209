"""The operator's own metrics (visionfleet.metrics): counters derived from status transitions, the
registry's exposition, bounded labels, per-object series removed on forget, and the wiring in the
handlers and the CLI."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from visionfleet import metrics as m
from visionfleet.act.apply import WriteCounter
from visionfleet.api.status import HISTORY_MAX, AnalysisResult, HistoryEntry, VisionDeploymentStatus
from visionfleet.planner.model import ANNOTATION_ABORT, iso
from visionfleet.planner.revision import revision_of
from visionfleet.planner.rollout import FAILED_OUTCOMES

from .planner_sim import NO_DATA, SLOW, T0, World, spec

NS, NAME = "vision", "doorbell"


class Recorder:
    """A simulated world whose every pass is fed to ``OperatorMetrics.record`` as the handlers do:
    the status the pass read, and the status it wrote."""

    def __init__(self, world: World, metrics: m.OperatorMetrics | None = None):
        self.w = world
        self.metrics = metrics or m.OperatorMetrics(CollectorRegistry())
        self.metrics.track(NS, NAME)
        self.found: list[m.Transition] = []
        self.started_at: dict[str, datetime] = {}  # revision -> the sim time of the pass that made it the canary

    def tick(self, seconds: float = 5) -> None:
        old = self.w.status
        p = self.w.tick(seconds)
        if p.status.canary_revision and p.status.canary_revision != old.canary_revision:
            self.started_at[p.status.canary_revision] = self.w.now
        self.found += self.metrics.record(NS, NAME, old, p.status)

    def run_until(self, phase: str, seconds: float = 5, max_ticks: int = 300) -> None:
        for _ in range(max_ticks):
            self.tick(seconds)
            if self.w.status.phase == phase:
                return
        raise AssertionError(f"never reached {phase}")

    def kinds(self, kind: str) -> list[m.Transition]:
        return [t for t in self.found if t.kind == kind]

    def text(self) -> str:
        return generate_latest(self.metrics.registry).decode()


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset], float]:
    """Every sample of the registry's exposition text, parsed back."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def own(registry: CollectorRegistry) -> dict[tuple[str, frozenset], float]:
    """The operator's own samples (the process and GC collectors' move by themselves)."""
    return {k: v for k, v in samples(registry).items() if k[0].startswith("visionfleet_")}


def value(registry: CollectorRegistry, metric: str, **labels: str) -> float | None:
    return samples(registry).get((metric, frozenset(labels.items())))


def healthy() -> Recorder:
    r = Recorder(World(spec()))
    r.run_until("Healthy")
    return r


# -- the pure function ------------------------------------------------------------------------------


def test_no_change_no_transition_and_a_restart_counts_nothing_twice():
    r = healthy()
    r.w.set_spec(spec(model__version="2"))
    r.w.measurement = SLOW
    r.run_until("RolledBack")
    s = r.w.status
    assert m.transitions(s, s) == []
    assert m.transitions(VisionDeploymentStatus(), VisionDeploymentStatus()) == []
    # A restarted operator reads back the status it wrote: nothing more is counted...
    before = own(r.metrics.registry)
    r.metrics.record(NS, NAME, s, s.model_copy(deep=True))
    assert own(r.metrics.registry) == before
    # ...and its next passes (the same world, from status alone) count nothing either.
    restarted = Recorder(World(r.w.spec, status=s.model_copy(deep=True), generation=r.w.generation, now=r.w.now,
                               jobs=dict(r.w.jobs), pods={k: list(v) for k, v in r.w.pods.items()},
                               snapshots=dict(r.w.snapshots)))
    for _ in range(10):
        restarted.tick(30)
    assert restarted.found == []


def test_first_revision_is_one_rollout_started_then_promoted_without_analysis():
    r = healthy()
    rev = revision_of(r.w.spec)
    assert [(t.kind, t.revision) for t in r.found] == [(m.ROLLOUT_STARTED, rev), (m.PROMOTED, rev)]


def test_failed_analysis_rollback_counts_one_verdict_one_rollback_and_its_time():
    r = healthy()
    r.found.clear()
    r.w.set_spec(spec(model__version="2"))
    v2 = revision_of(r.w.spec)
    r.w.measurement = SLOW
    r.run_until("RolledBack")
    assert [t.revision for t in r.kinds(m.ROLLOUT_STARTED)] == [v2]
    assert [t.label for t in r.kinds(m.VERDICT)] == ["Failed"]  # failureLimit 1
    (rb,) = r.kinds(m.ROLLED_BACK)
    assert (rb.revision, rb.label) == (v2, "analysis_failed")
    rolled_back_at = datetime.fromisoformat(r.w.status.history[-1].at.replace("Z", "+00:00"))
    assert rb.seconds == (rolled_back_at - r.started_at[v2]).total_seconds() > 0
    assert r.kinds(m.PROMOTED) == []
    # the phase stays RolledBack, however long we wait: no more counts
    r.found.clear()
    for _ in range(20):
        r.tick(30)
    assert r.found == []


def test_inconclusive_analyses_count_each_verdict_and_roll_back_as_inconclusive():
    r = healthy()
    r.found.clear()
    r.w.set_spec(spec(model__version="2", analysis__onInconclusive="Rollback"))
    r.w.measurement = NO_DATA
    r.run_until("RolledBack", seconds=30)
    # consecutiveErrorLimit 4: the 4th, 5th and 6th provider errors count as inconclusive (limit 3)
    assert [t.label for t in r.kinds(m.VERDICT)] == ["Error"] * 6
    assert [t.label for t in r.kinds(m.ROLLED_BACK)] == ["analysis_inconclusive"]


def test_a_canary_never_ready_is_rolled_back_for_its_progress_deadline():
    r = healthy()
    r.found.clear()
    r.w.set_spec(spec(model__version="2", rollout__progressDeadline="1m"))
    r.w.ready_delay = 3600  # the canary's pods never get Ready; the stable's already are
    r.run_until("RolledBack", seconds=30)
    assert [t.label for t in r.kinds(m.ROLLED_BACK)] == ["progress_deadline"]


def test_good_canary_counts_every_passed_verdict_and_one_promotion():
    r = healthy()
    r.found.clear()
    r.w.set_spec(spec(model__version="2"))
    v2 = revision_of(r.w.spec)
    while r.w.status.stable_revision != v2:
        r.tick(10)
    verdicts = r.kinds(m.VERDICT)
    assert verdicts and {t.label for t in verdicts} == {"Passed"}
    # one verdict per distinct analysis.at the planner wrote: 3 steps with a 1m pause and a 30s interval
    assert len(verdicts) >= 3
    assert [t.kind for t in r.found if t.kind != m.VERDICT] == [m.ROLLOUT_STARTED, m.PROMOTED]
    assert r.kinds(m.PROMOTED)[0].revision == v2


def test_abort_annotation_is_an_aborted_rollback():
    r = healthy()
    r.w.set_spec(spec(model__version="2"))
    r.run_until("RollingOut")
    r.found.clear()
    r.w.annotations[ANNOTATION_ABORT] = "now"
    r.tick()
    (rb,) = r.kinds(m.ROLLED_BACK)
    assert rb.label == "aborted" and rb.seconds is not None and rb.seconds > 0


def test_compile_failure_everywhere_is_a_compile_failed_rollback():
    r = healthy()
    r.found.clear()
    r.w.set_spec(spec(model__version="2"))
    r.w.fail_compile = {"l4", "xeon"}
    for _ in range(5):
        r.tick()
    assert [t.label for t in r.kinds(m.ROLLED_BACK)] == ["compile_failed"]
    assert len(r.kinds(m.ROLLOUT_STARTED)) == 1 and r.kinds(m.VERDICT) == []


def test_superseded_canary_and_time_to_rollback_from_the_new_canarys_start():
    r = healthy()
    r.found.clear()
    r.w.set_spec(spec(model__version="2"))
    v2 = revision_of(r.w.spec)
    while r.w.status.step != 1:
        r.tick(10)
    r.w.set_spec(spec(model__version="3"))
    v3 = revision_of(r.w.spec)
    r.tick(60)
    assert [t.revision for t in r.kinds(m.SUPERSEDED)] == [v2]
    assert [t.revision for t in r.kinds(m.ROLLOUT_STARTED)] == [v2, v3]
    r.w.measurement = SLOW
    r.run_until("RolledBack")
    (rb,) = r.kinds(m.ROLLED_BACK)
    rolled_back_at = datetime.fromisoformat(r.w.status.history[-1].at.replace("Z", "+00:00"))
    # The Progressing condition stayed True since v2 started; the time counts from v3's start.
    assert rb.revision == v3 and rb.seconds == (rolled_back_at - r.started_at[v3]).total_seconds()
    assert r.started_at[v3] > r.started_at[v2]


def test_a_full_history_that_drops_its_oldest_entry_still_counts_the_new_one():
    def entry(i: int, outcome: str = "Promoted") -> HistoryEntry:
        return HistoryEntry(revision=f"{i:08x}", outcome=outcome, at=iso(T0 + timedelta(minutes=i)))

    old = VisionDeploymentStatus(history=[entry(i) for i in range(HISTORY_MAX)])
    new = VisionDeploymentStatus(history=[entry(i) for i in range(1, HISTORY_MAX)] + [entry(HISTORY_MAX, "Aborted")])
    assert len(new.history) == HISTORY_MAX
    found = m.transitions(old, new)
    assert [(t.kind, t.label) for t in found if t.kind != m.ROLLOUT_STARTED] == [(m.ROLLED_BACK, "aborted")]


def test_one_verdict_per_new_analysis_time():
    a1 = AnalysisResult(at="2026-11-28T12:00:00Z", verdict="Passed")
    a2 = AnalysisResult(at="2026-11-28T12:00:30Z", verdict="Failed", failures=1)
    base = VisionDeploymentStatus(canary_revision="abcdef12")
    with_a1 = base.model_copy(update={"analysis": a1})
    with_a2 = base.model_copy(update={"analysis": a2})
    assert [(t.kind, t.label) for t in m.transitions(base, with_a1)] == [(m.VERDICT, "Passed")]
    assert [(t.kind, t.label) for t in m.transitions(with_a1, with_a2)] == [(m.VERDICT, "Failed")]
    assert m.transitions(with_a2, with_a2.model_copy(deep=True)) == []
    assert m.transitions(with_a2, base) == []  # analysis cleared (a new canary): nothing judged


# -- bounded reasons ---------------------------------------------------------------------------------


def test_every_failed_outcome_of_the_planner_has_its_own_reason():
    new = VisionDeploymentStatus()
    for outcome in FAILED_OUTCOMES:
        h = HistoryEntry(revision="abcdef12", outcome=outcome, reason="p99 31.2 ms > 20 ms (1 of 1 failed measurements)",
                         at="2026-11-28T12:00:00Z")
        assert m.rollback_reason(h, new) in set(m.ROLLBACK_REASONS) - {"other"}, outcome
    for outcome in ("Promoted", "Superseded"):
        assert m.rollback_reason(HistoryEntry(revision="abcdef12", outcome=outcome, at="2026-11-28T12:00:00Z"), new) is None


def test_free_text_never_becomes_a_label():
    mx = m.OperatorMetrics(CollectorRegistry())
    weird = 'something "new" {broke}\nnewline ' + "x" * 500
    old = VisionDeploymentStatus(canary_revision="abcdef12")
    new = VisionDeploymentStatus(history=[HistoryEntry(revision="abcdef12", outcome="RolledBack", reason=weird,
                                                       at="2026-11-28T12:00:00Z")])
    (t,) = m.transitions(old, new)
    assert t.label == "other"
    mx.count([t, m.Transition(m.ROLLED_BACK, label=weird), m.Transition(m.VERDICT, label=weird)])
    got = samples(mx.registry)
    reasons = {dict(labels)["reason"] for name, labels in got if name == "visionfleet_rollbacks_total"}
    verdicts = {dict(labels)["verdict"] for name, labels in got if name == "visionfleet_analysis_verdicts_total"}
    assert reasons == set(m.ROLLBACK_REASONS) and verdicts == set(m.VERDICTS)
    assert value(mx.registry, "visionfleet_rollbacks_total", reason="other") == 2
    assert "broke" not in generate_latest(mx.registry).decode()


def test_per_object_series_are_bounded_by_phases_plus_one():
    mx = m.OperatorMetrics(CollectorRegistry())
    for i in range(5):
        mx.track(NS, f"vd-{i}")
        mx.state(NS, f"vd-{i}", VisionDeploymentStatus(phase="Healthy"))
        mx.state(NS, f"vd-{i}", VisionDeploymentStatus(phase="RollingOut", canary_revision="abcdef12", canary_weight=20))
    got = samples(mx.registry)
    per_vd = [k for k in got if k[0] in ("visionfleet_visiondeployment_phase", "visionfleet_canary_weight")]
    assert len(per_vd) == 5 * (len(m.PHASES) + 1)
    phases = {dict(labels)["phase"] for name, labels in per_vd if name == "visionfleet_visiondeployment_phase"}
    assert phases == set(m.PHASES)


# -- the exposition ---------------------------------------------------------------------------------


def test_exposition_after_a_rollback():
    r = healthy()
    r.w.set_spec(spec(model__version="2"))
    r.w.measurement = SLOW
    r.run_until("RolledBack")
    reg = r.metrics.registry
    text = r.text()
    assert "# TYPE visionfleet_rollbacks_total counter" in text
    assert 'visionfleet_rollbacks_total{reason="analysis_failed"} 1.0' in text
    assert value(reg, "visionfleet_rollouts_started_total") == 2
    assert value(reg, "visionfleet_promotions_total") == 1
    assert value(reg, "visionfleet_rollouts_superseded_total") == 0
    assert value(reg, "visionfleet_analysis_verdicts_total", verdict="Failed") == 1
    assert value(reg, "visionfleet_analysis_verdicts_total", verdict="Passed") == 0
    for reason in ("analysis_inconclusive", "aborted", "compile_failed", "other"):
        assert value(reg, "visionfleet_rollbacks_total", reason=reason) == 0  # present at 0: increase() sees the first
    assert value(reg, "visionfleet_time_to_rollback_seconds_count", reason="analysis_failed") == 1
    (rb,) = r.kinds(m.ROLLED_BACK)
    assert value(reg, "visionfleet_time_to_rollback_seconds_sum", reason="analysis_failed") == rb.seconds
    assert value(reg, "visionfleet_visiondeployment_phase", namespace=NS, name=NAME, phase="RolledBack") == 1
    assert value(reg, "visionfleet_visiondeployment_phase", namespace=NS, name=NAME, phase="Healthy") == 0
    assert sum(v for (name, labels), v in samples(reg).items()
               if name == "visionfleet_visiondeployment_phase" and dict(labels)["name"] == NAME) == 1
    assert value(reg, "visionfleet_canary_weight", namespace=NS, name=NAME) == 0
    # the process, platform and GC collectors are on the dedicated registry too
    if Path("/proc/self/stat").exists():
        assert "process_resident_memory_bytes" in text and "process_cpu_seconds_total" in text
    assert "python_info" in text and "python_gc_collections_total" in text


def test_canary_weight_follows_the_step():
    r = healthy()
    r.w.set_spec(spec(model__version="2"))
    r.run_until("RollingOut")
    assert value(r.metrics.registry, "visionfleet_canary_weight", namespace=NS, name=NAME) == 20
    assert value(r.metrics.registry, "visionfleet_visiondeployment_phase", namespace=NS, name=NAME,
                 phase="RollingOut") == 1


def test_forget_removes_every_series_of_the_object_and_ignores_a_late_pass():
    r = healthy()
    other = "gate"
    r.metrics.track(NS, other)
    r.metrics.state(NS, other, VisionDeploymentStatus(phase="Healthy"))
    r.metrics.forget(NS, NAME)
    names = {dict(labels).get("name") for (_, labels) in samples(r.metrics.registry)}
    assert NAME not in names and other in names
    # a pass that finishes after its daemon stopped brings nothing back
    r.metrics.record(NS, NAME, r.w.status, r.w.status)
    assert NAME not in {dict(labels).get("name") for (_, labels) in samples(r.metrics.registry)}
    # fleet counters stay (they are not per object)
    assert value(r.metrics.registry, "visionfleet_promotions_total") == 1
    r.metrics.forget(NS, NAME)  # twice: harmless
    r.metrics.track(NS, NAME)   # recreated: exported again
    r.metrics.state(NS, NAME, r.w.status)
    assert value(r.metrics.registry, "visionfleet_visiondeployment_phase", namespace=NS, name=NAME, phase="Healthy") == 1


def test_timed_pass_counts_results_and_durations():
    mx = m.OperatorMetrics(CollectorRegistry())

    @mx.timed_pass
    def run(kind: str) -> float:
        if kind == "boom":
            raise RuntimeError("API server unreachable")
        if kind == "invalid":
            mx.invalid_spec()
        return 30.0

    assert run("ok") == 30.0 and run("invalid") == 30.0 and run("ok") == 30.0
    with pytest.raises(RuntimeError):
        run("boom")
    reg = mx.registry
    assert value(reg, "visionfleet_reconcile_total", result="ok") == 2
    assert value(reg, "visionfleet_reconcile_total", result="invalid_spec") == 1
    assert value(reg, "visionfleet_reconcile_total", result="error") == 1
    assert value(reg, "visionfleet_reconcile_duration_seconds_count") == 4


def test_api_writes_read_the_write_counter():
    mx = m.OperatorMetrics(CollectorRegistry())
    writes = WriteCounter()
    mx.track_writes(writes)
    mx.track_writes(WriteCounter())  # once: the first counter stays the source
    writes.applies += 3
    writes.status_writes += 1
    writes.events += 2
    reg = mx.registry
    assert value(reg, "visionfleet_api_writes_total", kind="apply") == 3
    assert value(reg, "visionfleet_api_writes_total", kind="delete") == 0
    assert value(reg, "visionfleet_api_writes_total", kind="status") == 1
    assert value(reg, "visionfleet_api_writes_total", kind="event") == 2
    assert "# TYPE visionfleet_api_writes_total counter" in generate_latest(reg).decode()


# -- serving and the CLI -----------------------------------------------------------------------------


def test_serve_exposes_the_registry_and_survives_a_taken_port():
    mx = m.OperatorMetrics(CollectorRegistry())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert mx.serve(port, "127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    assert 'visionfleet_reconcile_total{result="ok"} 0.0' in body
    assert mx.serve(port, "127.0.0.1") is False  # taken: logged, and the operator goes on


@pytest.mark.parametrize("argv", [
    ["--metrics-port", "8081", "--liveness", "http://0.0.0.0:8081/healthz"],
    ["--metrics-port", "-1"],
    ["--metrics-port", "70000"],
])
def test_cli_refuses_bad_metrics_ports(argv, capsys):
    from visionfleet.main import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "--metrics-port" in capsys.readouterr().err


def test_cli_help_documents_the_metrics_flags(capsys):
    from visionfleet.main import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--metrics-port" in out and "--metrics-address" in out and "0 disables" in out


# -- the wiring in the handlers ----------------------------------------------------------------------


def _body(spec_: dict, status: dict | None = None) -> dict:
    return {"metadata": {"name": NAME, "namespace": NS, "uid": "u-1", "generation": 1}, "spec": spec_,
            "status": status or {}}


def test_run_pass_counts_an_invalid_spec_and_its_status_write(monkeypatch):
    from visionfleet import handlers

    monkeypatch.setattr(handlers, "api_client", lambda: None)
    monkeypatch.setattr(handlers, "write_status", lambda *a: True)
    reg = handlers.METRICS.registry
    before = value(reg, "visionfleet_reconcile_total", result="invalid_spec")
    writes = value(reg, "visionfleet_api_writes_total", kind="status")
    assert handlers.run_pass(_body({"model": {"name": 5}})) == 60.0
    assert value(reg, "visionfleet_reconcile_total", result="invalid_spec") == before + 1
    assert value(reg, "visionfleet_api_writes_total", kind="status") == writes + 1


def test_run_pass_counts_a_new_rollout_once_apply_went_through(monkeypatch):
    from visionfleet import handlers

    from .planner_sim import NODES, SPEC

    monkeypatch.setattr(handlers, "api_client", lambda: object())
    monkeypatch.setattr(handlers, "gather", lambda *a, **kw: SimpleNamespace(
        nodes=list(NODES), jobs=[], deployments=[], live={}, snapshots=[], revision_services={}, claims=[]))
    calls = []

    def apply_plan(api, vd, p, *a, **kw):
        calls.append(p.status.canary_revision)
        if len(calls) == 1:
            raise RuntimeError("the API server went away mid-pass")

    monkeypatch.setattr(handlers, "apply_plan", apply_plan)
    reg = handlers.METRICS.registry
    started, ok, errors = (value(reg, "visionfleet_rollouts_started_total"),
                           value(reg, "visionfleet_reconcile_total", result="ok"),
                           value(reg, "visionfleet_reconcile_total", result="error"))
    with pytest.raises(RuntimeError):
        handlers.run_pass(_body(SPEC))
    assert value(reg, "visionfleet_rollouts_started_total") == started, "nothing counted: the status was not written"
    assert value(reg, "visionfleet_reconcile_total", result="error") == errors + 1
    assert handlers.run_pass(_body(SPEC)) > 0
    assert calls[1] is not None
    assert value(reg, "visionfleet_rollouts_started_total") == started + 1
    assert value(reg, "visionfleet_reconcile_total", result="ok") == ok + 1


def test_daemon_tracks_the_object_and_forgets_it_when_stopped(monkeypatch):
    from visionfleet import handlers

    class Stopped:
        def __init__(self):
            self.flag = False
            self.event = asyncio.Event()

        def __bool__(self):
            return self.flag

        async def wait(self):
            await self.event.wait()

    stopped = Stopped()
    seen = {}

    def one_pass(body, nodes, children):
        seen["nodes"], seen["children"] = nodes, children
        handlers.METRICS.state(NS, "daemon-vd", VisionDeploymentStatus(phase="Compiling", canary_revision="abcdef12",
                                                                       canary_weight=20))
        seen["during"] = value(handlers.METRICS.registry, "visionfleet_canary_weight", namespace=NS, name="daemon-vd")
        stopped.flag = True
        stopped.event.set()
        return 30.0

    monkeypatch.setattr(handlers, "run_pass", one_pass)
    body = {"metadata": {"name": "daemon-vd", "namespace": NS, "uid": "u-2"}}
    memo = SimpleNamespace()
    index = {None: ["node-a", "node-b"]}  # kopf.Index: key -> the values the index function returned
    job = {"metadata": {"name": "daemon-vd-l4-compile"}}
    jobs = {(NS, "daemon-vd"): [job], (NS, "another-vd"): [{"metadata": {"name": "theirs"}}]}
    asyncio.run(asyncio.wait_for(handlers.reconcile(body=body, memo=memo, stopped=stopped, nodes_index=index,
                                                    children_jobs=jobs, children_pods={}), timeout=10))
    assert seen["during"] == 20
    assert seen["nodes"] == ["node-a", "node-b"]  # the pass gets the indexed nodes, and lists none itself
    # and its own children from the watches' indexes, every kind present (empty where none is indexed)
    assert seen["children"]["Job"] == [job] and seen["children"]["Pod"] == []
    assert set(seen["children"]) == set(handlers.CHILD_RESOURCES)
    assert "daemon-vd" not in {dict(labels).get("name") for (_, labels) in samples(handlers.METRICS.registry)}
