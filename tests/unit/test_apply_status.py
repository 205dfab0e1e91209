"""The status written with optimistic concurrency (act/apply.py, handlers.py): onto the object the
pass read (its resourceVersion), a 409 re-plans shortly from the fresh object instead of putting a
stale status over a newer one."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest

from visionfleet.act import apply as act
from visionfleet.act.apply import StatusConflict, WriteCounter, apply_plan, write_status
from visionfleet.api.status import VisionDeploymentStatus
from visionfleet.planner.model import Event, Plan

from .test_apply_children import NS, VD, FakeApi, view


@pytest.fixture
def fake(monkeypatch):
    f = FakeApi()
    monkeypatch.setattr(act, "request", f)
    return f


NEW = VisionDeploymentStatus(phase="Compiling", canary_revision="0123456789ab")


def test_status_is_applied_with_the_resource_version_read(fake):
    assert write_status(None, VD, NS, VisionDeploymentStatus(), NEW, "48213")
    (call,) = fake.calls
    assert call.method == "PATCH"
    assert call.path == f"/apis/visionfleet.io/v1alpha1/namespaces/{NS}/visiondeployments/{VD}/status"
    assert call.content_type == "application/apply-patch+yaml" and ("force", "true") in call.query
    assert call.body["metadata"] == {"name": VD, "namespace": NS, "resourceVersion": "48213"}
    assert call.body["status"] == NEW.to_wire()


def test_an_unchanged_status_is_not_written(fake):
    assert not write_status(None, VD, NS, NEW, NEW.model_copy(deep=True), "1")
    assert fake.calls == []


def test_a_newer_object_is_a_status_conflict(fake):
    fake.fail[("PATCH", "/status")] = 409
    with pytest.raises(StatusConflict):
        write_status(None, VD, NS, VisionDeploymentStatus(), NEW, "48213")


def test_without_a_resource_version_a_409_is_an_ordinary_error(fake):
    fake.fail[("PATCH", "/status")] = 409
    with pytest.raises(act.ApiException):
        write_status(None, VD, NS, VisionDeploymentStatus(), NEW)


def test_a_conflict_posts_none_of_the_passes_events(fake):
    """The Events describe the status transition the write would have made: the re-planned pass
    posts them, once, if the transition still holds."""
    fake.fail[("PATCH", "/status")] = 409
    p = Plan(actions=[], status=NEW, events=[Event("Normal", "NewRevision", "revision 0123456789ab")],
             requeue_seconds=1)
    counter = WriteCounter()
    with pytest.raises(StatusConflict):
        apply_plan(None, view(), p, {}, counter, resource_version="7")
    assert fake.events() == [] and counter.status_writes == 0


# -- the handler re-plans -----------------------------------------------------------------------------


def _body(spec_: dict) -> dict:
    return {"metadata": {"name": VD, "namespace": NS, "uid": "u-1", "generation": 3, "resourceVersion": "777"},
            "spec": spec_, "status": {}}


def test_run_pass_passes_the_bodys_resource_version_and_requeues_shortly_on_conflict(monkeypatch):
    from visionfleet import handlers
    from visionfleet.observe.kube import ObservedObjects

    from .planner_sim import SPEC

    seen = {}
    monkeypatch.setattr(handlers, "_conflicts", {})
    monkeypatch.setattr(handlers, "api_client", lambda: object())
    monkeypatch.setattr(handlers, "gather", lambda *a, **kw: ObservedObjects())
    monkeypatch.setattr(handlers, "plan", lambda vd, observed, now: Plan([], NEW, [], 30.0))

    def conflicting(api, vd, p, live, writes, revision_services, resource_version=None):
        seen["rv"] = resource_version
        raise StatusConflict("changed")

    monkeypatch.setattr(handlers, "apply_plan", conflicting)
    run = inspect.unwrap(handlers.run_pass)
    assert run(_body(SPEC)) == handlers.CONFLICT_REQUEUE
    assert seen["rv"] == "777"
    # a watch that lags far behind: the requeue doubles, up to a bound; a pass that goes through resets it
    assert [run(_body(SPEC)) for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    monkeypatch.setattr(handlers, "apply_plan", lambda *a, **kw: None)
    monkeypatch.setattr(handlers, "METRICS", SimpleNamespace(record=lambda *a: None))
    assert run(_body(SPEC)) == 30.0
    monkeypatch.setattr(handlers, "apply_plan", conflicting)
    assert run(_body(SPEC)) == handlers.CONFLICT_REQUEUE


def test_refuse_writes_onto_the_object_read_and_requeues_shortly_on_conflict(monkeypatch):
    from visionfleet import handlers

    calls = []

    def write(api, name, ns, old, new, resource_version=None):
        calls.append(resource_version)
        raise StatusConflict("changed")

    monkeypatch.setattr(handlers, "_conflicts", {})
    monkeypatch.setattr(handlers, "api_client", lambda: None)
    monkeypatch.setattr(handlers, "write_status", write)
    monkeypatch.setattr(handlers, "METRICS", SimpleNamespace(invalid_spec=lambda: None, record=lambda *a: None))
    assert inspect.unwrap(handlers.run_pass)(_body({"model": {"name": 5}})) == handlers.CONFLICT_REQUEUE
    assert calls == ["777"]


@pytest.mark.parametrize("repository, says", [
    pytest.param(None, "spec.serving.modelRepository is required", id="none"),
    pytest.param("gs://bucket/triton", "spec.serving.modelRepository 'gs://bucket/triton' is not supported", id="gs"),
])
def test_a_stored_spec_without_a_model_repository_is_refused_before_anything_is_built(monkeypatch, repository, says):
    """Stored before the CRD required serving.modelRepository: Triton pods would have nothing to load,
    so the pass writes Degraded (InvalidSpec) naming the field and gathers or applies nothing."""
    import copy

    from visionfleet import handlers
    from .planner_sim import SPEC

    written = []
    monkeypatch.setattr(handlers, "_conflicts", {})
    monkeypatch.setattr(handlers, "api_client", lambda: None)
    monkeypatch.setattr(handlers, "write_status", lambda api, name, ns, old, new, resource_version=None:
                        written.append(new) or True)
    monkeypatch.setattr(handlers, "gather", lambda *a, **k: pytest.fail("nothing is gathered for a refused spec"))
    monkeypatch.setattr(handlers, "METRICS", SimpleNamespace(invalid_spec=lambda: None, record=lambda *a: None))
    raw = copy.deepcopy(SPEC)
    raw.pop("serving")
    if repository:
        raw["serving"] = {"modelRepository": repository}
    assert inspect.unwrap(handlers.run_pass)(_body(raw)) == 60.0
    (cond,) = [c for c in written[0].conditions if c.type == "Degraded"]
    assert cond.status == "True" and cond.reason == "InvalidSpec"
    assert cond.message.startswith(says) and "s3://<bucket>/<prefix>" in cond.message
