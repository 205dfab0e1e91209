"""Property-based: random histories of ticks, measurements, spec changes, compile failures and
annotations, with the rollout invariants checked after every step.

  1. never promote on an inconclusive (or failed) analysis: a promotion over a stable revision
     follows a Passed verdict, or the promote annotation;
  2. a failed revision never returns without a spec change;
  3. a class's stable never drops below its minimum while its canary is not fully Ready;
  4. at most one rollout in flight: one canary revision at a time, and only its Deployments
     besides the stable's (and a previous stable during its scale-down delay);
  5. make before break: no pass leaves a class that has a stable revision with fewer Ready pods than
     min(replicas.min, what it had just before) — pods take time to be Ready and crash in these
     histories, and only the operator's own actions are held to this (a first revision aborted before
     its promotion is the documented exception: there is nothing to fall back to);
  6. the weight in status is the weight users get: each class's effectiveWeight is the canary's
     share of the Ready pods the pass leaves;
  7. no compile Job outlives its purpose: after every pass, the only compile Jobs still running (or
     waiting to schedule) are the canary's, or the stable's on a class catching up with it.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from visionfleet.planner.model import ANNOTATION_ABORT, ANNOTATION_PAUSED, ANNOTATION_PROMOTE

from .planner_sim import GOOD, NO_DATA, SLOW, UNKNOWN, World, spec

MEASUREMENTS = {"good": GOOD, "slow": SLOW, "no-data": NO_DATA, "unknown": UNKNOWN, "none": None}
FAILED = {"RolledBack", "CompileFailed", "Aborted"}


class Rollouts(RuleBasedStateMachine):
    # Short steps and a generous inconclusive limit, so that random histories reach the last step
    # (and its 100 % weight) often, inconclusive streaks included.
    SPEC = dict(analysis__inconclusiveLimit=50, rollout__waves=[["xeon"], ["l4"]], rollout__progressDeadline="3m",
                compile__scheduleTimeout="2m",
                rollout__steps=[{"setWeight": 50, "pause": "10s"}, {"setWeight": 100, "pause": "10s"}])

    @initialize()
    def start(self):
        self.w = World(spec(**self.SPEC))
        self.version = 1
        self.promote_tokens = 0
        self.failed_seen: set[str] = set()
        self.before = None

    @rule(seconds=st.sampled_from([1, 5, 15, 31, 61]))
    def tick(self, seconds):
        self.before = self.w.status
        before_stable = self.w.status.stable_revision
        before_canary = self.w.status.canary_revision
        self.w.tick(seconds)
        st_ = self.w.status
        if st_.stable_revision != before_stable and before_stable is not None:
            why = st_.history[-1].reason
            by_hand = "visionfleet.io/promote annotation" in why and st_.handled_promote == \
                self.w.annotations.get(ANNOTATION_PROMOTE)
            assert by_hand or (st_.analysis is not None and st_.analysis.verdict == "Passed"), \
                f"promoted {before_canary} over {before_stable} on {st_.analysis} ({why})"
        for h in st_.history or []:
            if h.outcome in FAILED:
                self.failed_seen.add(h.revision)

    @rule(kind=st.sampled_from(sorted(MEASUREMENTS)))
    def measure(self, kind):
        self.w.measurement = MEASUREMENTS[kind]

    @rule(version=st.integers(min_value=1, max_value=4))
    def change_spec(self, version):
        self.w.set_spec(spec(model__version=str(version), **self.SPEC))

    @rule(classes=st.sets(st.sampled_from(["l4", "xeon"])))
    def compile_failures(self, classes):
        self.w.fail_compile = set(classes)

    @rule(classes=st.sets(st.sampled_from(["l4", "xeon"])))
    def unschedulable(self, classes):
        """Compile pods of these classes wait for a node (and fail after compile.scheduleTimeout)."""
        self.w.unschedulable = {c: "0/3 nodes are available: node(s) didn't match the selector" for c in classes}

    @rule(flag=st.booleans())
    def readiness(self, flag):
        self.w.never_ready = flag

    @rule(delay=st.sampled_from([0, 20, 60]))
    def ready_delay(self, delay):
        self.w.ready_delay = delay

    @rule(cls=st.sampled_from(["l4", "xeon"]), canary=st.booleans())
    def crash(self, cls, canary):
        rev = self.w.status.canary_revision if canary else self.w.status.stable_revision
        if rev:
            self.w.crash(cls, rev)

    @rule()
    def retry(self):
        self.promote_tokens += 1
        self.w.annotations["visionfleet.io/retry"] = f"r{self.promote_tokens}"

    @rule()
    def promote(self):
        self.promote_tokens += 1
        self.w.annotations[ANNOTATION_PROMOTE] = f"p{self.promote_tokens}"

    @rule()
    def abort(self):
        self.promote_tokens += 1
        self.w.annotations[ANNOTATION_ABORT] = f"a{self.promote_tokens}"

    @rule(paused=st.booleans())
    def pause(self, paused):
        if paused:
            self.w.annotations[ANNOTATION_PAUSED] = "true"
        else:
            self.w.annotations.pop(ANNOTATION_PAUSED, None)

    @invariant()
    def failed_revision_never_returns_unless_retried(self):
        if not hasattr(self, "w"):
            return
        retried = {h.revision for h in self.w.status.history or [] if h.outcome == "Retried"}
        assert self.w.status.canary_revision not in self.failed_seen - retried
        assert self.w.status.stable_revision not in self.failed_seen or \
            self.w.status.stable_revision in {h.revision for h in self.w.status.history or [] if h.outcome == "Promoted"}

    @invariant()
    def make_before_break(self):
        if not hasattr(self, "w"):
            return
        has_stable = {cs.name for cs in self.before.classes or [] if cs.stable_revision} if self.before else set()
        for cls, before in self.w.ready_before.items():
            if cls not in has_stable:
                continue
            after = self.w.ready_after.get(cls, 0)
            assert after >= min(2, before), (cls, before, after, self.w.last.actions if self.w.last else None)

    @invariant()
    def status_weight_is_the_weight_users_get(self):
        if not hasattr(self, "w") or self.w.last is None:
            return
        st_ = self.w.status
        for cs in st_.classes or []:
            if not st_.canary_revision:
                assert cs.effective_weight is None
                continue
            ready = {rev: d.ready for (c, rev), d in self.w.after.items() if c == cs.name}
            total = sum(ready.values())
            want = round(100 * ready.get(st_.canary_revision, 0) / total) if total else 0
            assert cs.effective_weight == want, (cs.name, cs.effective_weight, ready)

    @invariant()
    def stable_keeps_its_minimum_while_the_canary_is_not_ready(self):
        if not hasattr(self, "w"):
            return
        canary = self.w.status.canary_revision
        for cs in self.w.status.classes or []:
            if not cs.stable_revision or not canary:
                continue
            stable_d = self.w.deployments.get((cs.name, cs.stable_revision))
            canary_d = self.w.deployments.get((cs.name, canary))
            if stable_d is None:
                continue
            base = 2  # both classes have replicas.min 2
            if canary_d is None or canary_d.ready < canary_d.replicas:
                assert stable_d.replicas >= base, (cs.name, stable_d, canary_d)

    @invariant()
    def one_rollout_in_flight(self):
        """Only the stable revisions and the one canary get pods; any other revision is leaving
        (kept, untouched, for make-before-break) and is never scaled up."""
        if not hasattr(self, "w") or self.w.last is None:
            return
        from visionfleet.planner.model import EnsureServing
        st_ = self.w.status
        promoted = {h.revision for h in st_.history or [] if h.outcome == "Promoted"}
        for a in self.w.last.actions:
            if isinstance(a, EnsureServing):
                assert a.revision in promoted or a.revision == st_.canary_revision, (a.revision, st_.canary_revision)


    @invariant()
    def no_compile_job_outlives_its_purpose(self):
        if not hasattr(self, "w") or self.w.last is None:
            return
        st_ = self.w.status
        for (cls, rev), job in self.w.jobs.items():
            if job.state in ("Pending", "Running"):
                assert rev in (st_.canary_revision, st_.stable_revision), (cls, rev, job.state, st_.canary_revision)


TestRollouts = Rollouts.TestCase
TestRollouts.settings = settings(max_examples=100, stateful_step_count=40, deadline=None,
                                 suppress_health_check=[HealthCheck.too_slow])
