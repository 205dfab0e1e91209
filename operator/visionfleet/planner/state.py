"""The working state of one planning pass, shared by the planner's concern modules.

``PassState`` holds a working copy of the status and collects what the pass decides (actions,
Events, the requeue delay). The concern modules (``compiling``, ``steps``, ``judging``,
``serving``, ``traffic``, ``reporting``) read and change it; ``rollout.plan`` runs them in order.

Revisions are frozen: whatever a revision's children need (spec, node classes) comes from its
snapshot (``RevisionSnapshot``), taken the first time the revision is planned; ``spec_of`` and
``class_of`` are the only way the concern modules get at them.
"""

from __future__ import annotations

from datetime import datetime

from visionfleet.api.spec import VisionDeploymentSpec
from visionfleet.api.status import HISTORY_MAX, ClassStatus, HistoryEntry, VisionDeploymentStatus

from .classes import ResolvedClass, resolve_classes
from .model import (
    FAILED_OUTCOMES,
    Action,
    EnsureService,
    EnsureSnapshot,
    Event,
    MarkOutcome,
    Observed,
    Outcome,
    RevisionSnapshot,
    VisionDeploymentView,
    iso,
)
from .revision import desired_revision

MIN_REQUEUE, MAX_REQUEUE = 1.0, 30.0
# Outcomes also written onto the revision's snapshot, so that a failure is remembered after it has
# left the bounded history (and a retry clears it).
MARKED_OUTCOMES = FAILED_OUTCOMES | {Outcome.RETRIED.value}


def base_replicas(cls: ResolvedClass) -> int:
    """A class's serving size: ``replicas.min``, at least one pod."""
    return max(cls.spec.replicas.min, 1)


class PassState:
    def __init__(self, vd: VisionDeploymentView, observed: Observed, now: datetime):
        self.vd = vd
        self.spec = vd.spec
        self.observed = observed
        self.now = now
        self.now_s = iso(now)
        self.st: VisionDeploymentStatus = vd.status.model_copy(deep=True)
        self.events: list[Event] = []
        self.actions: list[Action] = [EnsureService()]
        self.requeue = MAX_REQUEUE
        self.waits: list[tuple[str, str]] = []  # (class, why a pod of it waits), filled by reporting
        self.desired = desired_revision(vd.spec, self.st.stable_revision, self.st.canary_revision)
        self.new_snapshots: dict[str, RevisionSnapshot] = {}
        self.classes = resolve_classes(self.spec, list(observed.nodes))
        self._keep_vanished_classes()
        self.by_name = {c.name: c for c in self.classes}
        old = {c.name: c for c in self.st.classes or []}
        self.cs: dict[str, ClassStatus] = {}
        for c in self.classes:
            cs = old.get(c.name) or ClassStatus(name=c.name)
            cs.runtime, cs.precision, cs.nodes = c.spec.runtime, c.spec.precision, c.nodes
            self.cs[c.name] = cs

    def _keep_vanished_classes(self) -> None:
        """A discovered class whose nodes are all gone keeps serving what it served (its objects stay,
        the class is reported with 0 nodes): the nodes may come back, and deleting Ready pods is not
        the planner's call. Its definition comes from the snapshot of the revision it serves."""
        if self.spec.fleet.discover is None:
            return
        names = {c.name for c in self.classes}
        for cs in self.st.classes or []:
            if cs.name in names or not cs.stable_revision:
                continue
            snap = self.observed.snapshot(cs.stable_revision)
            cls = snap.cls(cs.name) if snap else None
            if cls is not None and cls.discovered:
                self.classes.append(ResolvedClass(spec=cls.spec, nodes=0, discovered=True,
                                                  absent_labels=cls.absent_labels))
                names.add(cls.name)

    @staticmethod
    def vanished(c: ResolvedClass) -> bool:
        """A discovered class kept only because it serves: its nodes are gone (no new compile there)."""
        return c.discovered and c.nodes == 0

    # -- time -------------------------------------------------------------------------------------

    def wake_in(self, seconds: float) -> None:
        self.requeue = min(self.requeue, max(MIN_REQUEUE, seconds))

    # -- frozen revisions -------------------------------------------------------------------------

    def snapshot(self, revision: str) -> RevisionSnapshot | None:
        return self.new_snapshots.get(revision) or self.observed.snapshot(revision)

    def ensure_snapshot(self, revision: str) -> RevisionSnapshot:
        """The revision's snapshot; taken now from the spec and the resolved classes when it has none
        (only ever for the revision the spec asks for: the spec describes no other)."""
        snap = self.snapshot(revision)
        if snap is None:
            snap = RevisionSnapshot(revision=revision, spec=self.spec,
                                    classes=tuple(c for c in self.classes if not self.vanished(c)))
            self.new_snapshots[revision] = snap
            self.actions.append(EnsureSnapshot(snap))
        return snap

    def spec_of(self, revision: str) -> VisionDeploymentSpec:
        """What revision ``revision`` runs. A revision without a snapshot was planned by an operator
        that took none (an upgrade mid-rollout): the current spec is the best knowledge there is."""
        snap = self.snapshot(revision)
        return snap.spec if snap is not None else self.spec

    def class_of(self, revision: str, c: ResolvedClass) -> ResolvedClass:
        """Class ``c`` as revision ``revision`` was planned for it (selector, resources, runtime), with
        today's node count; a class that joined the fleet later is taken as resolved now."""
        snap = self.snapshot(revision)
        frozen = snap.cls(c.name) if snap is not None else None
        if frozen is None:
            return c
        return ResolvedClass(spec=frozen.spec.model_copy(update={"replicas": c.spec.replicas}), nodes=c.nodes,
                             discovered=frozen.discovered, absent_labels=frozen.absent_labels,
                             node_names=c.node_names)

    # -- history and events -----------------------------------------------------------------------

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message[:1024]))

    def record(self, revision: str, outcome: Outcome, reason: str) -> None:
        history = list(self.st.history or [])
        history.append(HistoryEntry(revision=revision, outcome=outcome.value, reason=reason[:2048], at=self.now_s))
        self.st.history = history[-HISTORY_MAX:]
        snap = self.observed.snapshot(revision)
        if outcome.value in MARKED_OUTCOMES and snap is not None and snap.outcome != outcome.value:
            self.actions.append(MarkOutcome(revision, outcome.value))

    def newest_outcome(self, revision: str) -> str | None:
        """The newest outcome of ``revision``: from the history, else from its snapshot (the history
        is bounded; the snapshot remembers a failure for as long as it exists)."""
        mine = next((h.outcome for h in reversed(self.st.history or []) if h.revision == revision), None)
        if mine is not None:
            return mine
        snap = self.snapshot(revision)
        return snap.outcome if snap is not None else None

    def failed(self, revision: str) -> bool:
        return self.newest_outcome(revision) in FAILED_OUTCOMES

    # -- the canary -------------------------------------------------------------------------------

    def clear_canary(self) -> None:
        st = self.st
        st.canary_revision = st.step = st.wave = st.canary_weight = st.step_started_at = None
        st.canary_mirror = None
        st.full_promotion = st.canary_unready_since = None
