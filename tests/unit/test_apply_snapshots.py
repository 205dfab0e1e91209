"""Frozen revisions as ControllerRevisions (act/apply.py): created once and never re-applied; a new
outcome is written by creating the snapshot again with the same data (the API server refuses any
update whose re-encoded data differs by a byte), only when it changes; deleted after the revision's
children."""

from __future__ import annotations

import pytest

from visionfleet.act import apply as act
from visionfleet.act.apply import apply_plan
from visionfleet.api.status import VisionDeploymentStatus
from visionfleet.builders.manifests import snapshot_name
from visionfleet.planner.classes import resolve_classes
from visionfleet.planner.model import (
    DeleteServing,
    DeleteSnapshot,
    EnsureSnapshot,
    MarkOutcome,
    Outcome,
    Plan,
    RevisionSnapshot,
)
from visionfleet.planner.snapshot import snapshot_from_data, snapshot_to_data

from .test_apply_children import NS, REV, UID, VD, FakeApi, spec, view

OTHER = "fedcba987654"


@pytest.fixture
def fake(monkeypatch):
    f = FakeApi()
    monkeypatch.setattr(act, "request", f)
    return f


def snapshot(revision: str = REV, outcome: str | None = None) -> RevisionSnapshot:
    s = spec()
    return RevisionSnapshot(revision=revision, spec=s, classes=tuple(resolve_classes(s, [])), outcome=outcome)


def plan_of(*actions) -> Plan:
    return Plan(actions=list(actions), status=VisionDeploymentStatus(), events=[], requeue_seconds=30)


def observed_cr(revision: str, number: int, outcome: str | None = None):
    md = {"name": snapshot_name(VD, revision), "namespace": NS, "labels": {"visionfleet.io/revision": revision}}
    if outcome is not None:
        md["annotations"] = {"visionfleet.io/outcome": outcome}
    return {("ControllerRevision", md["name"]): {"metadata": md, "revision": number,
                                                 "data": {"format": 1, "revision": revision, "latency": 50.0}}}


def test_a_new_revision_is_created_as_a_controller_revision(fake):
    w = apply_plan(None, view(), plan_of(EnsureSnapshot(snapshot())), observed_cr(OTHER, 4))
    assert w.applies == 1
    (call,) = fake.calls
    assert (call.method, call.path) == ("POST", f"/apis/apps/v1/namespaces/{NS}/controllerrevisions")
    cr = call.body
    assert cr["apiVersion"] == "apps/v1" and cr["kind"] == "ControllerRevision"
    assert cr["metadata"]["name"] == f"{VD}-rev-{REV}"
    assert cr["metadata"]["labels"]["visionfleet.io/vision-deployment"] == VD
    assert cr["metadata"]["labels"]["visionfleet.io/revision"] == REV
    assert cr["metadata"]["labels"]["app.kubernetes.io/component"] == "revision"
    assert cr["metadata"]["ownerReferences"] == [{"apiVersion": "visionfleet.io/v1alpha1", "kind": "VisionDeployment",
                                                  "name": VD, "uid": UID, "controller": True,
                                                  "blockOwnerDeletion": True}]
    assert "annotations" not in cr["metadata"]
    assert cr["revision"] == 5, "after the highest observed"
    assert cr["data"] == snapshot_to_data(snapshot())
    assert snapshot_from_data(REV, cr["data"]) == snapshot(), "what is stored reads back as the same snapshot"


def test_an_existing_snapshot_is_never_sent_again(fake):
    assert apply_plan(None, view(), plan_of(EnsureSnapshot(snapshot())), observed_cr(REV, 1)).total == 0
    assert fake.calls == []


def test_already_exists_is_fine(fake):
    """Created by another replica (or an earlier pass cut short) after this pass listed them."""
    fake.fail[("POST", "/controllerrevisions")] = 409
    assert apply_plan(None, view(), plan_of(EnsureSnapshot(snapshot())), {}).applies == 0


def test_other_errors_are_raised(fake):
    fake.fail[("POST", "/controllerrevisions")] = 403
    with pytest.raises(act.ApiException):
        apply_plan(None, view(), plan_of(EnsureSnapshot(snapshot())), {})


def test_a_created_snapshot_carries_the_outcome_marked_in_the_same_plan(fake):
    p = plan_of(EnsureSnapshot(snapshot()), MarkOutcome(REV, Outcome.COMPILE_FAILED.value))
    w = apply_plan(None, view(), p, {})
    assert w.applies == 1 and len(fake.calls) == 1
    assert fake.calls[0].body["metadata"]["annotations"] == {"visionfleet.io/outcome": "CompileFailed"}


@pytest.mark.parametrize("observed, outcome, sent", [
    (None, "RolledBack", {"visionfleet.io/outcome": "RolledBack"}),
    ("Promoted", "RolledBack", {"visionfleet.io/outcome": "RolledBack"}),
    ("RolledBack", None, {"visionfleet.io/outcome": None}),  # retry: the annotation goes
    ("RolledBack", "RolledBack", None),
    (None, None, None),
], ids=["set", "change", "clear", "same", "already-clear"])
def test_mark_outcome_recreates_the_snapshot_only_on_a_change(fake, observed, outcome, sent):
    w = apply_plan(None, view(), plan_of(MarkOutcome(REV, outcome)), observed_cr(REV, 7, observed))
    if sent is None:
        assert w.total == 0 and fake.calls == []
        return
    delete_, create = fake.calls
    assert delete_.method == "DELETE" and delete_.path == f"/apis/apps/v1/namespaces/{NS}/controllerrevisions/{VD}-rev-{REV}"
    assert create.method == "POST" and create.path == f"/apis/apps/v1/namespaces/{NS}/controllerrevisions"
    assert create.body["data"] == {"format": 1, "revision": REV, "latency": 50.0}, "the same data, untouched"
    assert create.body["revision"] == 7
    assert (create.body["metadata"].get("annotations") or {}).get("visionfleet.io/outcome") == \
        sent["visionfleet.io/outcome"]


def test_an_outcome_member_is_written_as_its_value(fake):
    apply_plan(None, view(), plan_of(MarkOutcome(REV, Outcome.ABORTED)), observed_cr(REV, 1, "Aborted"))
    assert fake.calls == []
    apply_plan(None, view(), plan_of(MarkOutcome(REV, Outcome.PROMOTED)), observed_cr(REV, 1))
    value = fake.calls[1].body["metadata"]["annotations"]["visionfleet.io/outcome"]
    assert type(value) is str and value == "Promoted"


def test_marking_a_missing_snapshot_writes_nothing(fake):
    assert apply_plan(None, view(), plan_of(MarkOutcome(REV, "Aborted")), {}).total == 0


def test_a_snapshot_is_deleted_after_its_revisions_children(fake):
    live = {**observed_cr(REV, 1), ("Deployment", f"{VD}-l4-{REV[:8]}"): {}, ("ConfigMap", f"{VD}-l4-{REV[:8]}"): {}}
    w = apply_plan(None, view(), plan_of(DeleteSnapshot(REV), DeleteServing("l4", REV)), live)
    assert w.deletes == 3
    assert [c.path.rsplit("/", 2)[1] for c in fake.calls] == ["deployments", "configmaps", "controllerrevisions"]
    assert fake.calls[-1].path.endswith(f"/controllerrevisions/{VD}-rev-{REV}")
    assert apply_plan(None, view(), plan_of(DeleteSnapshot(OTHER)), live).total == 0, "not observed: no request"
