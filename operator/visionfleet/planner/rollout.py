"""The rollout state machine: ``plan(vd, observed, now) -> Plan(actions, status, events)``.

Pure: the same inputs and ``now`` give the same plan. Every fact needed to resume lives in
``status``, so an operator restarted at any moment picks up where it was.

    spec ──► revision r
      r == stable ..................................... steady state: serve stable per class
      r failed before (history) ....................... blocked: never retried until r changes
      r new ──► canary = r, step 0 (a canary in flight is superseded: traffic back to stable)
         │
         ├─ Compiling: one Job per class; results come back in the Job's termination message
         │     none succeeded ──► revision CompileFailed (history), stable keeps serving
         │     some failed ─────► those classes are held back on stable; the others go on
         ├─ first revision (no stable yet): serve it fully, promote once its pods are Ready
         └─ per step i: set weight ─► canary Ready ─► pause + analysis every interval
               Passed since the step began and pause over ──► next step / promote after the last
               Failed × failureLimit ────────────────────────► roll back
               Inconclusive × inconclusiveLimit (in a row) ──► roll back (never a pass)
               annotations: promote (now), abort (roll back now), paused=true (hold)

Traffic by replica ratio: the stable Deployment keeps its full size for the whole rollout (it is
never scaled below its minimum while a canary runs), the canary gets enough replicas for its share;
at 100 % the stable is scaled to zero only once every canary replica is Ready.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from visionfleet.api.status import (
    HISTORY_MAX,
    AnalysisResult,
    ClassStatus,
    CompileResult,
    CompileState,
    HistoryEntry,
    Verdict,
    VisionDeploymentStatus,
)

from .analysis import Measurement, assess
from .classes import ResolvedClass, resolve_classes
from .conditions import CondType, Reason, get_condition, set_condition
from .durations import seconds
from .model import (
    ANNOTATION_ABORT,
    ANNOTATION_PAUSED,
    ANNOTATION_PROMOTE,
    Action,
    DeleteServing,
    EnsureCompileJob,
    EnsureService,
    EnsureServing,
    Event,
    SetRouteWeights,
    Observed,
    Plan,
    VisionDeploymentView,
    iso,
    parse_iso,
)
from .phases import derive_phase
from .revision import revision_of

TERMINAL = {CompileState.SUCCEEDED.value, CompileState.FAILED.value}
FAILED_OUTCOMES = {"RolledBack", "CompileFailed", "Aborted"}
MIN_REQUEUE, MAX_REQUEUE = 1.0, 30.0


def base_replicas(cls: ResolvedClass) -> int:
    return max(cls.spec.replicas.min, 1)


def split_replicas(base: int, weight: int, canary_ready: bool) -> tuple[int, int]:
    """(stable, canary) replicas for a canary share of ``weight`` percent of one class's traffic."""
    if weight <= 0:
        return base, 0
    if weight >= 100:
        return (0 if canary_ready else base), base
    canary = max(1, math.ceil(base * weight / (100 - weight)))
    return base, min(canary, base * 99)


def route_weights(canary: str | None, canary_weight: int, stable: dict[str, int]) -> tuple[tuple[str, int], ...]:
    """Percent of the route's traffic per revision: the canary its weight, the stable revisions the
    rest in proportion to their replicas; integers that sum to exactly 100."""
    shares: dict[str, float] = {}
    rest = 100 - (canary_weight if canary else 0)
    total = sum(stable.values())
    for rev, n in sorted(stable.items()):
        shares[rev] = rest * n / total if total else 0.0
    if canary:
        shares[canary] = float(canary_weight) if total else 100.0
    if not shares:
        return ()
    out = {rev: int(v) for rev, v in shares.items()}
    left = 100 - sum(out.values())
    for rev in sorted(shares, key=lambda r: (-(shares[r] - int(shares[r])), r))[:left]:
        out[rev] += 1
    return tuple(sorted(out.items()))


def stable_result_of(cs: ClassStatus) -> CompileResult | None:
    """The compile result of the class's stable revision: ``stable`` while a newer revision is in
    ``compile``, else ``compile`` itself (kept once, not twice, in a steady state)."""
    if cs.stable is not None:
        return cs.stable
    if cs.compile is not None and cs.stable_revision and cs.compile.revision == cs.stable_revision:
        return cs.compile
    return None


class _Pass:
    """One planning pass: a working copy of the status, plus what the pass decided."""

    def __init__(self, vd: VisionDeploymentView, observed: Observed, now: datetime):
        self.vd = vd
        self.spec = vd.spec
        self.observed = observed
        self.now = now
        self.now_s = iso(now)
        self.st: VisionDeploymentStatus = vd.status.model_copy(deep=True)
        self.events: list[Event] = []
        self.actions: list[Action] = [EnsureService()]
        self.classes = resolve_classes(self.spec, list(observed.nodes))
        self.by_name = {c.name: c for c in self.classes}
        old = {c.name: c for c in self.st.classes or []}
        self.cs: dict[str, ClassStatus] = {}
        for c in self.classes:
            cs = old.get(c.name) or ClassStatus(name=c.name)
            cs.runtime, cs.precision, cs.nodes = c.spec.runtime, c.spec.precision, c.nodes
            self.cs[c.name] = cs
        self.requeue = MAX_REQUEUE
        self.desired = ""

    # -- history and events --------------------------------------------------------------------

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def record(self, revision: str, outcome: str, reason: str) -> None:
        history = list(self.st.history or [])
        history.append(HistoryEntry(revision=revision, outcome=outcome, reason=reason[:2048], at=self.now_s))
        self.st.history = history[-HISTORY_MAX:]

    def failed_revisions(self) -> set[str]:
        return {h.revision for h in self.st.history or [] if h.outcome in FAILED_OUTCOMES}

    def clear_canary(self) -> None:
        self.st.canary_revision = None
        self.st.step = None
        self.st.wave = None
        self.st.canary_weight = None
        self.st.step_started_at = None

    def start_canary(self, revision: str) -> None:
        self.st.canary_revision = revision
        self.st.step = 0
        self.st.wave = 0
        self.st.canary_weight = self.spec.rollout.steps[0].set_weight
        self.st.step_started_at = None
        self.st.analysis = None
        self.event("Normal", "NewRevision", f"revision {revision}: compiling for {len(self.classes)} node classes")

    # -- A: which revision is the canary -------------------------------------------------------

    def choose_canary(self, desired: str) -> None:
        st = self.st
        if desired == st.stable_revision:
            if st.canary_revision:
                self.record(st.canary_revision, "Superseded", "spec returned to the stable revision")
                self.event("Normal", "Superseded", f"canary {st.canary_revision} dropped: spec is back to stable {desired}")
                self.clear_canary()
            return
        if desired == st.canary_revision:
            return
        if desired in self.failed_revisions():
            if st.canary_revision:
                self.clear_canary()
            return
        if st.canary_revision:
            self.record(st.canary_revision, "Superseded", f"spec changed to revision {desired} during the rollout")
            self.event("Normal", "Superseded",
                       f"canary {st.canary_revision} superseded by {desired}: traffic back to stable, analysis restarts")
        self.start_canary(desired)

    # -- B: compile -----------------------------------------------------------------------------

    def compile(self) -> list[str] | None:
        """Advance compile states; returns the classes that compiled, or None while compiling."""
        rev = self.st.canary_revision
        assert rev is not None
        compiling = False
        for c in self.classes:
            cs = self.cs[c.name]
            if cs.compile is None or cs.compile.revision != rev:
                if cs.stable is None and cs.compile is not None and cs.compile.revision == cs.stable_revision:
                    cs.stable = cs.compile  # keep the stable's result while `compile` tracks the new revision
                cs.compile = CompileResult(state=CompileState.PENDING, revision=rev)
            if cs.compile.state in TERMINAL:
                continue
            job = self.observed.job(c.name, rev)
            if job is None:
                self.actions.append(EnsureCompileJob(c, rev))
                cs.compile = CompileResult(
                    state=CompileState.PENDING, revision=rev,
                    message=None if c.nodes else "no node matches the class's nodeSelector: the Job waits for one")
                compiling = True
            elif job.state == CompileState.SUCCEEDED.value and job.result is not None:
                cs.compile = job.result.model_copy(update={"state": CompileState.SUCCEEDED, "revision": rev})
                self.event("Normal", "CompileSucceeded", f"class {c.name}: revision {rev} compiled"
                           + (f" (accuracy {job.result.accuracy:.4f})" if job.result.accuracy is not None else ""))
            elif job.state in (CompileState.FAILED.value, CompileState.SUCCEEDED.value):
                message = job.message or "the compile Job failed without a message"
                if job.state == CompileState.SUCCEEDED.value:
                    message = f"the compile Job succeeded but its result could not be read: {message}"
                cs.compile = CompileResult(state=CompileState.FAILED, revision=rev, message=message[:2048])
                self.event("Warning", "CompileFailed", f"class {c.name}: revision {rev}: {message}"[:1024])
            else:
                self.actions.append(EnsureCompileJob(c, rev))
                cs.compile = CompileResult(state=CompileState(job.state), revision=rev, message=job.message)
                compiling = True
        if compiling:
            return None
        ok = [c.name for c in self.classes if self.cs[c.name].compile.state == CompileState.SUCCEEDED.value]
        if not ok:
            reasons = "; ".join(f"{c.name}: {self.cs[c.name].compile.message}" for c in self.classes) or "no node classes"
            self.record(rev, "CompileFailed", reasons)
            self.event("Warning", "CompileFailed", f"revision {rev} failed to compile on every class: {reasons}"[:1024])
            self.clear_canary()
            return None
        return ok

    # -- E: rollout -----------------------------------------------------------------------------

    def waves(self) -> list[list[str]]:
        """Class names in rollout order; classes no wave names go last, together."""
        names = [c.name for c in self.classes]
        declared = [[n for n in w if n in names] for w in (self.spec.rollout.waves or [])]
        declared = [w for w in declared if w]
        listed = {n for w in declared for n in w}
        rest = [n for n in names if n not in listed]
        return (declared + ([rest] if rest else [])) or [names]

    def class_weight(self, c: ResolvedClass) -> int:
        """The canary's share on class ``c``: 100 for waves already through, the step's weight for
        the current wave, 0 (no canary yet) for later waves."""
        index = next((i for i, w in enumerate(self.waves()) if c.name in w), 0)
        current = self.st.wave or 0
        if index < current:
            return 100
        if index == current:
            return self.st.canary_weight or 0
        return 0

    def canary_ready(self, ok: list[str]) -> bool:
        rev = self.st.canary_revision
        for c in self.classes:
            if c.name not in ok or (not self.first_rollout(c) and self.class_weight(c) == 0):
                continue
            want = self.canary_replicas(c)
            d = self.observed.deployment(c.name, rev)
            if d is None or d.ready < want or d.replicas < want:
                return False
        return True

    def canary_replicas(self, c: ResolvedClass) -> int:
        if self.first_rollout(c):
            return base_replicas(c)
        return split_replicas(base_replicas(c), self.class_weight(c), True)[1]

    def first_rollout(self, c: ResolvedClass) -> bool:
        return self.cs[c.name].stable_revision is None

    def promote(self, ok: list[str], reason: str) -> None:
        rev = self.st.canary_revision
        for name in ok:
            cs = self.cs[name]
            cs.stable_revision = rev
            cs.stable = None  # `compile` now holds the stable's result
        self.st.stable_revision = rev
        self.record(rev, "Promoted", reason)
        self.event("Normal", "Promoted", f"revision {rev} promoted on {', '.join(ok)}: {reason}")
        self.clear_canary()

    def rollback(self, reason: str, outcome: str = "RolledBack") -> None:
        rev = self.st.canary_revision
        self.record(rev, outcome, reason)
        self.event("Warning", "RolledBack", f"revision {rev} rolled back, all traffic on stable "
                   f"{self.st.stable_revision}: {reason}"[:1024])
        self.clear_canary()

    def command(self, annotation: str, handled_field: str) -> bool:
        value = self.vd.annotations.get(annotation)
        if value and value != getattr(self.st, handled_field):
            setattr(self.st, handled_field, value)
            return True
        return False

    def rollout(self, ok: list[str]) -> None:
        st, spec = self.st, self.spec
        promote_cmd = self.command(ANNOTATION_PROMOTE, "handled_promote")
        abort_cmd = self.command(ANNOTATION_ABORT, "handled_abort")
        if abort_cmd:
            self.rollback("aborted by the visionfleet.io/abort annotation", outcome="Aborted")
            return
        if promote_cmd:
            self.promote(ok, "promoted by the visionfleet.io/promote annotation")
            return
        if not self.canary_ready(ok):
            self.requeue = min(self.requeue, 2.0)
            return
        if all(self.first_rollout(c) for c in self.classes if c.name in ok):
            self.promote(ok, "first revision on these classes: nothing to compare against")
            return
        if st.step_started_at is None:
            st.step_started_at = self.now_s
        started = parse_iso(st.step_started_at)
        analysis = spec.analysis
        interval = seconds(analysis.interval)
        last = st.analysis
        last_at = parse_iso(last.at) if last else None
        due = last_at is None or last_at < started or (self.now - last_at).total_seconds() >= interval
        if due:
            measurement = self.observed.measurement
            if measurement is None and analysis.slo is None and analysis.drift is None:
                measurement = Measurement()
            if measurement is not None:
                self.judge(measurement)
                if st.canary_revision is None:
                    return
            else:
                self.requeue = min(self.requeue, MIN_REQUEUE)
        if self.vd.annotations.get(ANNOTATION_PAUSED) == "true":
            return
        step = spec.rollout.steps[st.step or 0]
        pause_end = started + timedelta(seconds=seconds(step.pause))
        last = st.analysis
        passed = last is not None and last.verdict == Verdict.PASSED.value and parse_iso(last.at) >= started
        if passed and self.now >= pause_end:
            if (st.step or 0) + 1 >= len(spec.rollout.steps):
                waves = self.waves()
                if (st.wave or 0) + 1 < len(waves):
                    st.wave = (st.wave or 0) + 1
                    st.step = 0
                    st.canary_weight = spec.rollout.steps[0].set_weight
                    st.step_started_at = None
                    self.event("Normal", "WaveAdvanced", f"wave {st.wave} ({', '.join(waves[st.wave])}): "
                               f"canary weight {st.canary_weight}%; earlier waves stay fully on the canary")
                    self.requeue = MIN_REQUEUE
                    return
                self.promote(ok, f"all {len(spec.rollout.steps)} steps passed their analysis"
                             + (f" in {len(waves)} waves" if len(waves) > 1 else ""))
                return
            st.step = (st.step or 0) + 1
            st.canary_weight = spec.rollout.steps[st.step].set_weight
            st.step_started_at = None
            self.event("Normal", "StepAdvanced", f"step {st.step}: canary weight {st.canary_weight}%")
            self.requeue = MIN_REQUEUE
            return
        waits = [interval]
        if self.now < pause_end:
            waits.append((pause_end - self.now).total_seconds())
        self.requeue = min(self.requeue, max(MIN_REQUEUE, min(waits)))

    def judge(self, m: Measurement) -> None:
        st, analysis = self.st, self.spec.analysis
        a = assess(m, analysis)
        prev = st.analysis
        failures = prev.failures if prev else 0
        inconclusive = prev.inconclusive if prev else 0
        if a.verdict == Verdict.FAILED:
            failures += 1
        elif a.verdict == Verdict.INCONCLUSIVE:
            inconclusive += 1
        else:
            inconclusive = 0
        st.analysis = AnalysisResult(at=self.now_s, verdict=a.verdict, p99_ms=a.p99_ms, error_rate=a.error_rate,
                                     requests=a.requests, drift_p_value=a.drift_p_value, reason=a.reason[:2048],
                                     failures=failures, inconclusive=inconclusive)
        if a.verdict == Verdict.FAILED:
            self.event("Warning", "AnalysisFailed", f"revision {st.canary_revision}: {a.reason}"[:1024])
            if failures >= analysis.failure_limit:
                self.rollback(f"{a.reason} ({failures} of {analysis.failure_limit} failed measurements)")
        elif a.verdict == Verdict.INCONCLUSIVE:
            self.event("Warning", "AnalysisInconclusive", f"revision {st.canary_revision}: {a.reason}"[:1024])
            if inconclusive >= analysis.inconclusive_limit:
                self.rollback(f"analysis inconclusive {inconclusive} times in a row: {a.reason}")

    # -- D: what serves -------------------------------------------------------------------------

    def serving(self, ok: list[str] | None) -> None:
        canary = self.st.canary_revision
        wanted: set[tuple[str, str]] = set()
        for c in self.classes:
            cs = self.cs[c.name]
            base = base_replicas(c)
            in_canary = canary is not None and ok is not None and c.name in ok and (
                cs.stable_revision is None or self.class_weight(c) > 0)
            stable_n, canary_n = base, 0
            if in_canary:
                if cs.stable_revision is None:
                    stable_n, canary_n = 0, base
                else:
                    weight = self.class_weight(c)
                    d = self.observed.deployment(c.name, canary)
                    want = split_replicas(base, weight, True)[1]
                    ready = d is not None and d.ready >= want
                    stable_n, canary_n = split_replicas(base, weight, ready)
                self.actions.append(EnsureServing(c, canary, canary_n, cs.compile, "canary"))
                wanted.add((c.name, canary))
            stable_result = stable_result_of(cs)
            if cs.stable_revision and stable_result is not None:
                self.actions.append(EnsureServing(c, cs.stable_revision, stable_n, stable_result, "stable"))
                wanted.add((c.name, cs.stable_revision))
            stable_d = self.observed.deployment(c.name, cs.stable_revision) if cs.stable_revision else None
            canary_d = self.observed.deployment(c.name, canary) if in_canary else None
            cs.stable_replicas = stable_d.replicas if stable_d else 0
            cs.canary_replicas = canary_d.replicas if canary_d else 0
            cs.ready = (stable_d.ready if stable_d else 0) + (canary_d.ready if canary_d else 0)
        promoted = {h.revision for h in self.st.history or [] if h.outcome == "Promoted"}
        for d in self.observed.deployments:
            if (d.class_name, d.revision) in wanted:
                continue
            cs = self.cs.get(d.class_name)
            stable_d = self.observed.deployment(d.class_name, cs.stable_revision) if cs and cs.stable_revision else None
            if d.revision in promoted and d.revision not in self.failed_revisions() and cs and (
                    stable_d is None or stable_d.ready < base_replicas(self.by_name[d.class_name])):
                # A previous stable is left as it is, serving, until its successor is fully Ready
                # (a scale-down delay); the next pass after that deletes it.
                continue
            self.actions.append(DeleteServing(d.class_name, d.revision))

    def traffic(self) -> None:
        """Gateway API: weights per revision on the user's HTTPRoute (replica ratio needs nothing)."""
        gw = self.spec.rollout.traffic.gateway_api
        if self.spec.rollout.traffic.method != "GatewayAPI" or gw is None:
            return
        stable: dict[str, int] = {}
        canary_weight = 0
        canary = self.st.canary_revision
        for a in self.actions:
            if isinstance(a, EnsureServing) and a.track == "stable" and a.replicas > 0:
                stable[a.revision] = stable.get(a.revision, 0) + a.replicas
        if canary is not None:
            serving_canary = any(isinstance(a, EnsureServing) and a.revision == canary and a.replicas > 0
                                 for a in self.actions)
            # No traffic before the canary's pods are Ready (the step clock starts then).
            if serving_canary and (self.st.step_started_at is not None or not stable):
                canary_weight = self.st.canary_weight or 0
            elif not serving_canary:
                canary = None
        if canary is not None and not stable:
            ready = all((d := self.observed.deployment(c.name, canary)) is not None and d.ready > 0
                        for c in self.classes if self.cs[c.name].compile and
                        self.cs[c.name].compile.state == CompileState.SUCCEEDED.value)
            canary_weight = 100 if ready else 0
            if not ready:
                canary = None
        weights = route_weights(canary if canary_weight else None, canary_weight, stable)
        if weights:
            self.actions.append(SetRouteWeights(gw.http_route, weights))

    # -- conditions -----------------------------------------------------------------------------

    def conditions(self, compiling: bool) -> None:
        st, now, gen = self.st, self.now_s, self.vd.generation
        conds = list(st.conditions or [])
        newest = st.canary_revision or (st.history[-1].revision if st.history else st.stable_revision)
        compiled = [c for c in self.classes if self.cs[c.name].compile and self.cs[c.name].compile.revision == newest]
        failed = [c.name for c in compiled if self.cs[c.name].compile.state == CompileState.FAILED.value]
        if compiling:
            conds = set_condition(conds, CondType.COMPILED, False, Reason.COMPILING,
                                  f"compiling revision {newest}", now, gen)
        elif failed and len(failed) == len(self.classes):
            conds = set_condition(conds, CondType.COMPILED, False, Reason.COMPILE_FAILED,
                                  f"revision {newest} failed to compile on every class", now, gen)
        elif failed:
            conds = set_condition(conds, CondType.COMPILED, True, Reason.COMPILE_PARTIAL,
                                  f"revision {newest} failed on {', '.join(failed)} (held back on stable)", now, gen)
        elif newest:
            conds = set_condition(conds, CondType.COMPILED, True, Reason.COMPILE_SUCCEEDED,
                                  f"revision {newest} compiled on every class", now, gen)
        if st.canary_revision:
            conds = set_condition(conds, CondType.PROGRESSING, True, Reason.ROLLING_OUT,
                                  f"revision {st.canary_revision} at step {st.step}, weight {st.canary_weight}%", now, gen)
        else:
            conds = set_condition(conds, CondType.PROGRESSING, False, Reason.STABLE,
                                  f"serving revision {st.stable_revision}" if st.stable_revision else "nothing to serve yet",
                                  now, gen)
        serving = [c for c in self.classes if self.cs[c.name].stable_revision]
        unready = [c.name for c in serving
                   if (d := self.observed.deployment(c.name, self.cs[c.name].stable_revision)) is None
                   or d.ready < d.replicas or d.replicas == 0]
        if serving and not unready:
            conds = set_condition(conds, CondType.AVAILABLE, True, Reason.REPLICAS_READY,
                                  f"stable replicas Ready on {', '.join(c.name for c in serving)}", now, gen)
        else:
            conds = set_condition(conds, CondType.AVAILABLE, False, Reason.REPLICAS_NOT_READY,
                                  f"not Ready: {', '.join(unready)}" if unready else "no stable revision yet", now, gen)
        no_nodes = [c.name for c in self.classes if c.nodes == 0]
        if failed or no_nodes:
            parts = ([f"compile failed on {', '.join(failed)}"] if failed else []) + \
                    ([f"no nodes for {', '.join(no_nodes)}"] if no_nodes else [])
            conds = set_condition(conds, CondType.DEGRADED, True,
                                  Reason.COMPILE_FAILED if failed else Reason.NO_NODES, "; ".join(parts), now, gen)
        else:
            conds = set_condition(conds, CondType.DEGRADED, False, Reason.NONE, "all classes compiled and placed", now, gen)
        last = st.history[-1] if st.history else None
        if last is not None and last.outcome in ("RolledBack", "Aborted") and not st.canary_revision \
                and last.revision == self.desired:
            conds = set_condition(conds, CondType.ROLLED_BACK, True, Reason.ANALYSIS_FAILED if last.outcome == "RolledBack"
                                  else Reason.ABORTED, f"revision {last.revision}: {last.reason}", now, gen)
        elif get_condition(conds, CondType.ROLLED_BACK) is not None:
            conds = set_condition(conds, CondType.ROLLED_BACK, False, Reason.NONE,
                                  "no rollback since the last revision started", now, gen)
        paused = self.vd.annotations.get(ANNOTATION_PAUSED) == "true"
        inconclusive = st.canary_revision and st.analysis and st.analysis.verdict == Verdict.INCONCLUSIVE.value
        if st.canary_revision and (paused or inconclusive):
            conds = set_condition(conds, CondType.PAUSED, True,
                                  Reason.PAUSED_BY_USER if paused else Reason.ANALYSIS_INCONCLUSIVE,
                                  "paused by the visionfleet.io/paused annotation" if paused else st.analysis.reason,
                                  now, gen)
        elif get_condition(conds, CondType.PAUSED) is not None:
            conds = set_condition(conds, CondType.PAUSED, False, Reason.NONE, "not paused", now, gen)
        conds = self.stable_drift(conds)
        st.conditions = conds

    def stable_drift(self, conds: list) -> list:
        """Drift on the stable revision: the input moved, not the model. A condition and a Warning
        Event when it starts, never a rollback (there is nothing better to roll back to)."""
        drift, m = self.vd.spec.analysis.drift, self.observed.stable_drift
        if drift is None:
            return [c for c in conds if c.type != CondType.INPUT_DRIFT.value]
        if m is None or m.drift_error or m.drift_p_value is None or m.drift_window_fill is None \
                or m.drift_window_fill < 1.0:
            return conds  # no verdict yet: what was last known stands
        rev, now, gen = self.st.stable_revision, self.now_s, self.vd.generation
        before = get_condition(conds, CondType.INPUT_DRIFT)
        if m.drift_p_value < drift.p_value:
            message = (f"the inputs of stable revision {rev} drifted from its calibration set: "
                       f"p={m.drift_p_value:.3g} < {drift.p_value:g} over the last {drift.window} samples")
            if before is None or before.status != "True":
                self.event("Warning", "InputDrift", message)
            return set_condition(conds, CondType.INPUT_DRIFT, True, Reason.DRIFT_DETECTED, message, now, gen)
        return set_condition(conds, CondType.INPUT_DRIFT, False, Reason.NONE,
                             f"stable revision {rev}: p={m.drift_p_value:.3g} >= {drift.p_value:g}", now, gen)


def plan(vd: VisionDeploymentView, observed: Observed, now: datetime) -> Plan:
    p = _Pass(vd, observed, now)
    desired = p.desired = revision_of(vd.spec)
    if p.st.canary_revision is None:
        # promote/abort act on the rollout in flight when their value changes. A value set while
        # none is in flight is recorded and ignored, so that a stale annotation (left in Git, say)
        # can never wave a future canary through without its analysis.
        p.command(ANNOTATION_PROMOTE, "handled_promote")
        p.command(ANNOTATION_ABORT, "handled_abort")
    p.choose_canary(desired)
    ok: list[str] | None = None
    compiling = False
    if p.st.canary_revision:
        ok = p.compile()
        compiling = ok is None and p.st.canary_revision is not None
        if ok is not None:
            p.rollout(ok)
            if p.st.canary_revision is None:
                ok = None
    if compiling:
        p.requeue = min(p.requeue, 2.0)
    p.serving(ok)
    p.traffic()
    p.st.classes = [p.cs[c.name] for c in p.classes]
    p.st.observed_generation = vd.generation
    p.conditions(compiling)
    p.st.phase = derive_phase(p.st, desired=desired, compiling=compiling, paused=vd.annotations.get(ANNOTATION_PAUSED) == "true",
                              rolling_back=any(isinstance(a, DeleteServing) for a in p.actions)
                              and bool(p.st.history) and p.st.history[-1].outcome in ("RolledBack", "Aborted"))
    return Plan(actions=p.actions, status=p.st, events=p.events, requeue_seconds=p.requeue)
