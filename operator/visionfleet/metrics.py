"""The operator's own Prometheus metrics (``visionfleet-operator --metrics-port``, default 8080).

Rollout counters are derived from status transitions, never from what a pass merely *saw*:
``transitions(old, new)`` compares the status a pass read with the status the planner wrote (history
entries appended, a new ``analysis.at``, a new canary revision). The status is the operator's only
memory, so a restarted operator reads back what it wrote and counts nothing twice. Each pass counts
its transitions only after ``apply_plan`` returned, i.e. once the status write went through.

    visionfleet_reconcile_total{result}                 ok | error | invalid_spec
    visionfleet_reconcile_duration_seconds              one observe -> plan -> act pass
    visionfleet_api_writes_total{kind}                  apply | delete | status | event (the WriteCounter)
    visionfleet_rollouts_started_total                  a new canary revision
    visionfleet_promotions_total                        history outcome Promoted
    visionfleet_rollbacks_total{reason}                 ROLLBACK_REASONS (a closed set)
    visionfleet_rollouts_superseded_total               history outcome Superseded
    visionfleet_analysis_verdicts_total{verdict}        Passed | Failed | Inconclusive | Error
    visionfleet_time_to_rollback_seconds{reason}        rollout start -> rollback recorded
    visionfleet_visiondeployment_phase{namespace,name,phase}   1 for the current phase, 0 for the others
    visionfleet_canary_weight{namespace,name}           the canary's weight in percent (0: none)

plus ``process_*`` and ``python_*`` from the process, platform and GC collectors. Everything lives on
a dedicated registry (``REGISTRY``), not prometheus_client's global one. Every label takes values
from a closed set, or is a VisionDeployment's namespace/name (one series set per object, removed by
``forget`` when its daemon stops); no free text ever becomes a label.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from visionfleet.api.status import HistoryEntry, Phase, Verdict, VisionDeploymentStatus
from visionfleet.planner.conditions import CondType, get_condition
from visionfleet.planner.rollout import FAILED_OUTCOMES

log = logging.getLogger("visionfleet.metrics")

PREFIX = "visionfleet_"
PHASES: tuple[str, ...] = tuple(p.value for p in Phase)
VERDICTS: tuple[str, ...] = tuple(v.value for v in Verdict)
RESULTS = ("ok", "error", "invalid_spec")
# ``kind`` label -> the WriteCounter field it reads.
WRITE_KINDS = {"apply": "applies", "delete": "deletes", "status": "status_writes", "event": "events"}

# Why a canary was rolled back, from the planner's history outcomes (rollout.FAILED_OUTCOMES):
#   RolledBack after failureLimit Failed measurements ........... analysis_failed
#   RolledBack after inconclusiveLimit Inconclusive in a row .... analysis_inconclusive
#   Aborted (the visionfleet.io/abort annotation) ............... aborted
#   CompileFailed (no class compiled; the canary never served) .. compile_failed
#   anything else (a future outcome) ............................ other
ROLLBACK_REASONS = ("analysis_failed", "analysis_inconclusive", "progress_deadline", "aborted", "compile_failed",
                    "other")

ROLLOUT_STARTED = "rollout_started"
PROMOTED = "promoted"
ROLLED_BACK = "rolled_back"
SUPERSEDED = "superseded"
VERDICT = "verdict"

RECONCILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ROLLBACK_BUCKETS = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Transition:
    """One thing that happened in a pass, as the status records it."""

    kind: str                     # ROLLOUT_STARTED | PROMOTED | ROLLED_BACK | SUPERSEDED | VERDICT
    revision: str | None = None
    label: str | None = None      # ROLLED_BACK: a ROLLBACK_REASONS value; VERDICT: a VERDICTS value
    seconds: float | None = None  # ROLLED_BACK: time to rollback, when the status tells it


def _time(s: str | None) -> datetime | None:
    if not s:
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


def _key(h: HistoryEntry) -> tuple[str, str, str]:
    return (h.revision, h.outcome, h.at)


def rollback_reason(entry: HistoryEntry, new: VisionDeploymentStatus) -> str | None:
    """The bounded ``reason`` label of a history entry, or None when the entry is not a rollback."""
    if entry.outcome not in FAILED_OUTCOMES:
        return None
    if entry.outcome == "Aborted":
        return "aborted"
    if entry.outcome == "CompileFailed":
        return "compile_failed"
    if entry.outcome == "RolledBack":
        # The measurement that decided it is the status's analysis, judged in the same pass.
        a = new.analysis
        if a is not None and a.at == entry.at:
            if a.verdict == Verdict.FAILED.value:
                return "analysis_failed"
            if a.verdict in (Verdict.INCONCLUSIVE.value, Verdict.ERROR.value):
                return "analysis_inconclusive"
        text = (entry.reason or "").lower()
        if "progressdeadline" in text:
            return "progress_deadline"
        if "inconclusive" in text:
            return "analysis_inconclusive"
        if "failed measurement" in text:
            return "analysis_failed"
    return "other"


def rollout_started_at(old: VisionDeploymentStatus) -> datetime | None:
    """When the canary in flight in ``old`` started: the Progressing condition's last flip to True,
    or, when a canary superseded another (Progressing stays True), the newest history entry's time."""
    if not old.canary_revision:
        return None
    progressing = get_condition(old.conditions, CondType.PROGRESSING)
    if progressing is None or progressing.status != "True":
        return None
    times = [t for t in [_time(progressing.last_transition_time)] + [_time(h.at) for h in old.history or []]
             if t is not None]
    return max(times) if times else None


def transitions(old: VisionDeploymentStatus, new: VisionDeploymentStatus) -> list[Transition]:
    """What one pass did, from the status it read (``old``) and the status it wrote (``new``).

    Pure. ``transitions(s, s) == []``: a pass that changed nothing (or a restarted operator reading
    back what it wrote) counts nothing."""
    out: list[Transition] = []
    seen = {_key(h) for h in old.history or []}
    appended = [h for h in new.history or [] if _key(h) not in seen]

    started: list[str] = []
    if new.canary_revision and new.canary_revision != old.canary_revision:
        started.append(new.canary_revision)
    for h in appended:  # a canary can start and end in one pass (no class to compile for, say)
        if h.revision != old.canary_revision and h.revision not in started:
            started.append(h.revision)
    out += [Transition(ROLLOUT_STARTED, revision=r) for r in started]

    a = new.analysis
    if a is not None and a.at and (old.analysis is None or old.analysis.at != a.at):
        out.append(Transition(VERDICT, revision=old.canary_revision or new.canary_revision, label=a.verdict))

    start = rollout_started_at(old)
    for h in appended:
        if h.outcome == "Promoted":
            out.append(Transition(PROMOTED, revision=h.revision))
        elif h.outcome == "Superseded":
            out.append(Transition(SUPERSEDED, revision=h.revision))
        else:
            reason = rollback_reason(h, new)
            if reason is None:
                continue
            seconds = None
            if h.revision != old.canary_revision:
                seconds = 0.0  # started and rolled back in this very pass
            elif start is not None and (end := _time(h.at)) is not None:
                seconds = max(0.0, (end - start).total_seconds())
            out.append(Transition(ROLLED_BACK, revision=h.revision, label=reason, seconds=seconds))
    return out


class _Writes:
    """``visionfleet_api_writes_total`` read at scrape time from the handlers' WriteCounter: the
    counter apply_plan increments stays the one source of truth."""

    def __init__(self, counter: Any):
        self.counter = counter

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(PREFIX + "api_writes", "Writes to the Kubernetes API by kind: server-side "
                                   "applies (and HTTPRoute updates), deletes, status writes, Events posted.",
                                   labels=["kind"])

    def describe(self) -> Iterable[CounterMetricFamily]:
        yield self._family()

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = self._family()
        for kind, attr in WRITE_KINDS.items():
            family.add_metric([kind], float(getattr(self.counter, attr, 0)))
        yield family


class OperatorMetrics:
    """The operator's metrics on their own registry. Tests build one per test; the operator uses
    ``METRICS``."""

    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.reconcile = Counter(PREFIX + "reconcile", "Reconcile passes (observe -> plan -> act) by result: ok, "
                                 "error (the pass raised; retried in 5 s), invalid_spec (the spec does not validate; "
                                 "nothing is rolled out).", ["result"], registry=r)
        self.reconcile_duration = Histogram(PREFIX + "reconcile_duration_seconds",
                                            "Duration of one reconcile pass, including the API writes (the "
                                            "Prometheus queries run on their own threads, outside it).", buckets=RECONCILE_BUCKETS, registry=r)
        self.rollouts_started = Counter(PREFIX + "rollouts_started", "Canary rollouts started (a new revision "
                                        "became the canary).", registry=r)
        self.promotions = Counter(PREFIX + "promotions", "Revisions promoted to stable (every step passed, the "
                                  "promote annotation, or a first revision once Ready).", registry=r)
        self.rollbacks = Counter(PREFIX + "rollbacks", "Canaries rolled back, by reason: analysis_failed, "
                                 "analysis_inconclusive, aborted (abort annotation), compile_failed (no class "
                                 "compiled; the canary never served), other.", ["reason"], registry=r)
        self.superseded = Counter(PREFIX + "rollouts_superseded", "Canaries dropped because the spec moved on "
                                  "(a newer revision, or back to the stable one) before they finished.", registry=r)
        self.verdicts = Counter(PREFIX + "analysis_verdicts", "Canary analysis measurements judged, by verdict.",
                                ["verdict"], registry=r)
        self.time_to_rollback = Histogram(
            PREFIX + "time_to_rollback_seconds",
            "Seconds from the start of a canary's rollout (the pass that made the revision the canary) to the "
            "pass that rolled it back (the history entry's time), by reason. Both ends come from the status: "
            "the Progressing condition's transition time, or the entry that superseded the previous canary.",
            ["reason"], buckets=ROLLBACK_BUCKETS, registry=r)
        self.phase = Gauge(PREFIX + "visiondeployment_phase", "1 for the VisionDeployment's current "
                           "status.phase, 0 for every other phase.", ["namespace", "name", "phase"], registry=r)
        self.canary_weight = Gauge(PREFIX + "canary_weight", "Traffic weight (percent) of the current rollout "
                                   "step's canary; 0 when no canary is in flight.", ["namespace", "name"], registry=r)
        # Every closed label set starts at 0, so that increase() sees the first event of each.
        for result in RESULTS:
            self.reconcile.labels(result)
        for reason in ROLLBACK_REASONS:
            self.rollbacks.labels(reason)
            self.time_to_rollback.labels(reason)
        for verdict in VERDICTS:
            self.verdicts.labels(verdict)
        self._lock = threading.Lock()
        self._tracked: set[tuple[str, str]] = set()
        self._local = threading.local()
        self._writes: _Writes | None = None

    # -- reconcile passes ------------------------------------------------------------------------

    def timed_pass(self, fn: F) -> F:
        """Decorate the (synchronous) pass: count it by result and time it. An exception is an
        ``error``; a pass that calls ``invalid_spec()`` is an ``invalid_spec``; else ``ok``."""

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self._local.result = "ok"
            start = time.perf_counter()
            result = "error"
            try:
                out = fn(*args, **kwargs)
                result = self._local.result
                return out
            finally:
                self.reconcile.labels(result).inc()
                self.reconcile_duration.observe(time.perf_counter() - start)

        return wrapper  # type: ignore[return-value]

    def invalid_spec(self) -> None:
        self._local.result = "invalid_spec"

    def track_writes(self, counter: Any) -> None:
        """Export ``counter`` (a WriteCounter) as ``visionfleet_api_writes_total``; once."""
        if self._writes is None:
            self._writes = _Writes(counter)
            self.registry.register(self._writes)

    # -- transitions and per-object state --------------------------------------------------------

    def count(self, found: Iterable[Transition]) -> None:
        for t in found:
            if t.kind == ROLLOUT_STARTED:
                self.rollouts_started.inc()
            elif t.kind == PROMOTED:
                self.promotions.inc()
            elif t.kind == SUPERSEDED:
                self.superseded.inc()
            elif t.kind == VERDICT and t.label in VERDICTS:
                self.verdicts.labels(t.label).inc()
            elif t.kind == ROLLED_BACK:
                reason = t.label if t.label in ROLLBACK_REASONS else "other"
                self.rollbacks.labels(reason).inc()
                if t.seconds is not None:
                    self.time_to_rollback.labels(reason).observe(t.seconds)

    def record(self, namespace: str, name: str, old: VisionDeploymentStatus,
               new: VisionDeploymentStatus) -> list[Transition]:
        """After a pass wrote ``new`` over ``old``: count its transitions, export its state."""
        found = transitions(old, new)
        self.count(found)
        self.state(namespace, name, new)
        for t in found:
            log.debug("%s/%s: %s %s %s", namespace, name, t.kind, t.revision, t.label or "")
        return found

    def track(self, namespace: str, name: str) -> None:
        """A daemon now owns this VisionDeployment: its state is exported until ``forget``."""
        with self._lock:
            self._tracked.add((namespace, name))

    def state(self, namespace: str, name: str, status: VisionDeploymentStatus) -> None:
        """Phase and canary weight of a tracked VisionDeployment (others are ignored, so that a pass
        finishing after its daemon stopped cannot bring a deleted object's series back)."""
        with self._lock:
            if (namespace, name) not in self._tracked:
                return
            for phase in PHASES:
                self.phase.labels(namespace, name, phase).set(1 if status.phase == phase else 0)
            weight = (status.canary_weight or 0) if status.canary_revision else 0
            self.canary_weight.labels(namespace, name).set(weight)

    def forget(self, namespace: str, name: str) -> None:
        """Remove every series of one VisionDeployment (deleted, or no longer ours)."""
        with self._lock:
            self._tracked.discard((namespace, name))
            for phase in PHASES:
                try:
                    self.phase.remove(namespace, name, phase)
                except KeyError:
                    pass
            try:
                self.canary_weight.remove(namespace, name)
            except KeyError:
                pass

    # -- serving ---------------------------------------------------------------------------------

    def serve(self, port: int, address: str = "0.0.0.0") -> bool:
        """Serve ``/metrics`` on a daemon thread; False (and an error logged) when the port is taken:
        the operator keeps reconciling, and the scrape target shows up as down."""
        try:
            start_http_server(port, addr=address, registry=self.registry)
        except OSError as e:
            log.error("cannot serve metrics on %s:%d: %s; continuing without /metrics", address, port, e)
            return False
        log.info("serving metrics on http://%s:%d/metrics", address, port)
        return True


METRICS = OperatorMetrics()
REGISTRY = METRICS.registry
