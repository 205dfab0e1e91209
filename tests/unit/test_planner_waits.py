"""Why a compile or a rollout waits, and what ends a wait: tables of named scenarios.

Given a pod that cannot be scheduled or started, or a claim that is missing or only one node can mount,
When the planner runs a pass, Then the status says why (the class's compile message, its message, the
Progressing or Degraded condition) and an Event is posted once, when it changes. A compile pod
unschedulable past compile.scheduleTimeout fails its class, and the others go on. No compile Job the
plan no longer wants is left running.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from visionfleet.planner.model import (
    ANNOTATION_ABORT,
    DeleteCompileJob,
    EnsureCompileJob,
    Observed,
    ObservedClaim,
    ObservedDeployment,
    ObservedJob,
    PodWaiting,
    VisionDeploymentView,
    WaitReason,
)
from visionfleet.planner.revision import revision_of, revision_parts
from visionfleet.planner.rollout import plan

from .planner_sim import NODES, T0, World, result, spec

PVC_MISSING = '0/10 nodes are available: persistentvolumeclaim "models" not found. not found'
NO_NODE = "0/10 nodes are available: 10 node(s) didn't match Pod's node affinity/selector."


def cond(w_or_status, type_):
    st = getattr(w_or_status, "status", w_or_status)
    return next(c for c in st.conditions if c.type == type_)


def cls_status(w, name):
    return next(c for c in w.status.classes if c.name == name)


def events(w, reason):
    return [m for _, r, m in w.all_events if r == reason]


# -- A: a compile pod's wait reaches what the user reads ----------------------------------------

WAITS = [
    pytest.param(PodWaiting("p", WaitReason.UNSCHEDULABLE, PVC_MISSING, T0),
                 ['is unschedulable', 'persistentvolumeclaim "models" not found', "compile.scheduleTimeout 20m"],
                 id="given_a_missing_claim_then_the_schedulers_message_and_the_deadline"),
    pytest.param(PodWaiting("p", WaitReason.IMAGE_PULL_BACK_OFF, 'Back-off pulling image "ghcr.io/x/compile:nope"'),
                 ["ImagePullBackOff", "ghcr.io/x/compile:nope", "spec.compile.image"],
                 id="given_an_image_that_cannot_be_pulled_then_the_image_field_and_credentials"),
    pytest.param(PodWaiting("p", WaitReason.ERR_IMAGE_PULL, "rpc error: not found"),
                 ["ErrImagePull", "rpc error: not found"], id="given_err_image_pull_then_the_pull_error"),
    pytest.param(PodWaiting("p", WaitReason.CREATE_CONTAINER_CONFIG_ERROR, 'secret "s3-creds" not found'),
                 ["CreateContainerConfigError", 'secret "s3-creds" not found', "create the Secret"],
                 id="given_a_missing_secret_then_the_secret_and_the_fix"),
]


def waiting_world(waiting: PodWaiting) -> tuple[World, str]:
    """A first revision whose l4 compile pod waits (as ``waiting`` says); xeon compiles."""
    w = World(spec())
    rev = revision_of(w.spec)
    w.jobs[("l4", rev)] = ObservedJob("l4", rev, "Pending", message=waiting.message, waiting=waiting)
    w.jobs[("xeon", rev)] = ObservedJob("xeon", rev, "Running")
    w.unschedulable["l4"] = waiting.message  # (the world keeps the pod Pending)
    w.compile_ticks = 1000
    return w, rev


@pytest.mark.parametrize("waiting, says", WAITS)
def test_when_a_compile_pod_waits_then_status_and_one_event_say_why(waiting, says):
    w, rev = waiting_world(waiting)
    w.tick(1)
    l4 = cls_status(w, "l4")
    for text in says:
        assert text in l4.compile.message, l4.compile.message
        assert text in l4.message, "the class message repeats the compile's wait"
        assert text in cond(w, "Progressing").message
    assert l4.compile.state == "Pending" and l4.compile.message.startswith("waiting: compile pod p")
    assert cond(w, "Progressing").reason == "PodsWaiting" and cond(w, "Compiled").reason == "Compiling"
    assert w.status.phase == "Compiling"
    assert len(events(w, "CompileWaiting")) == 1
    w.tick(1)
    assert len(events(w, "CompileWaiting")) == 1, "the same wait posts no second Event"
    assert cls_status(w, "xeon").message is None


def test_when_the_wait_ends_then_the_messages_go():
    w, rev = waiting_world(PodWaiting("p", WaitReason.IMAGE_PULL_BACK_OFF, "back-off"))
    w.tick(1)
    w.jobs[("l4", rev)] = ObservedJob("l4", rev, "Running")
    w.tick(1)
    assert cls_status(w, "l4").compile.message is None and cls_status(w, "l4").message is None
    assert cond(w, "Progressing").reason == "RollingOut" and "waiting" not in cond(w, "Progressing").message


# -- B: compile.scheduleTimeout -----------------------------------------------------------------


def test_given_a_class_that_cannot_schedule_when_schedule_timeout_passes_then_it_fails_and_the_other_rolls_out():
    w = World(spec(compile={"scheduleTimeout": "2m"}))
    w.unschedulable["l4"] = NO_NODE
    rev = revision_of(w.spec)
    w.tick(1)  # the Jobs are created at 12:00:01; the next pass sees l4's pod unschedulable
    w.tick(1)
    assert w.status.phase == "Compiling"
    assert "the class fails at 2026-11-28T12:02:01Z" in cls_status(w, "l4").compile.message
    assert w.last.requeue_seconds <= 2.0
    w.run_until("Healthy", max_ticks=40)
    l4, xeon = cls_status(w, "l4"), cls_status(w, "xeon")
    assert l4.compile.state == "Failed" and NO_NODE in l4.compile.message
    assert "compile.scheduleTimeout 2m" in l4.compile.message
    assert l4.stable_revision is None and xeon.stable_revision == rev
    assert ("l4", rev) not in w.jobs, "the unschedulable Job is deleted"
    assert len(events(w, "CompileUnschedulable")) == 1
    assert cond(w, "Degraded").reason == "CompileFailed" and "l4" in cond(w, "Degraded").message
    assert w.now >= T0 + timedelta(minutes=2, seconds=1)


def test_given_a_pod_unschedulable_just_under_the_timeout_then_the_class_still_waits():
    w = World(spec(compile={"scheduleTimeout": "2m"}))
    w.unschedulable["l4"] = NO_NODE
    w.tick(1)
    w.tick(1)
    w.tick(118)  # 1 s short of the deadline (12:02:01)
    assert cls_status(w, "l4").compile.state == "Pending" and w.status.phase == "Compiling"
    w.unschedulable.clear()  # a node joins: the pod schedules
    w.run_until("Healthy", max_ticks=40)
    assert cls_status(w, "l4").compile.state == "Succeeded"


def test_schedule_timeout_is_policy_not_part_of_the_revision():
    assert revision_of(spec(compile={"scheduleTimeout": "1m"})) == revision_of(spec())
    assert "scheduleTimeout" not in revision_parts(spec(compile={"scheduleTimeout": "1m"}), defaults=True)["compile"]


# -- C: no compile Job the plan does not want keeps running --------------------------------------


def _compiling(**changes) -> tuple[World, str]:
    w = World(spec(**changes))
    w.compile_ticks = 1000  # the Jobs run until the scenario ends them
    w.tick(1)
    return w, revision_of(w.spec)


def _superseded(w, rev):
    w.set_spec(spec(model__version="2"))


def _aborted(w, rev):
    w.annotations[ANNOTATION_ABORT] = "now"


def _leftover(w, rev):
    w.jobs[("xeon", "0123456789ab")] = ObservedJob("xeon", "0123456789ab", "Running")  # status lost: no one knows it


STOPS = [
    pytest.param(_superseded, {("l4", None), ("xeon", None)}, id="superseded_while_compiling"),
    pytest.param(_aborted, {("l4", None), ("xeon", None)}, id="aborted_while_compiling"),
    pytest.param(_leftover, {("xeon", "0123456789ab")}, id="a_running_job_of_a_revision_no_status_names"),
]


@pytest.mark.parametrize("when, deleted", STOPS)
def test_given_running_compile_jobs_when_the_plan_no_longer_wants_one_then_it_is_deleted(when, deleted):
    w, rev = _compiling()
    when(w, rev)
    p = w.tick(1)
    got = {(a.class_name, a.revision) for a in p.actions if isinstance(a, DeleteCompileJob)}
    assert got == {(c, r or rev) for c, r in deleted}
    wanted = {(a.cls.name, a.revision) for a in p.actions if isinstance(a, EnsureCompileJob)}
    assert not got & wanted
    assert all(j.revision != rev or (j.class_name, j.revision) in wanted for j in w.jobs.values()), \
        "no Job of the old revision is left running"


def test_given_a_vanished_class_when_the_canary_is_promoted_then_its_job_is_deleted():
    # A class whose Job runs but which the pass no longer compiles (its nodes gone): never left running.
    w, rev = _compiling()
    w.jobs[("xeon", rev)] = replace(w.jobs[("xeon", rev)], state="Succeeded", result=result())
    w.jobs[("h100", rev)] = ObservedJob("h100", rev, "Running")
    p = w.tick(1)
    assert DeleteCompileJob("h100", rev) in p.actions


def test_finished_jobs_of_a_superseded_revision_are_left_to_their_ttl():
    w = World(spec())
    w.run_until("Healthy")
    v1 = w.status.stable_revision
    w.set_spec(spec(model__version="2"))
    p = w.tick(1)
    assert not [a for a in p.actions if isinstance(a, DeleteCompileJob) and a.revision == v1]
    assert w.jobs[("l4", v1)].state == "Succeeded"


# -- D: the claims the spec names ----------------------------------------------------------------


def _plan(s, claims=(), deployments=(), jobs=(), status=None):
    vd = VisionDeploymentView(name="doorbell", namespace="vision", generation=1, spec=s,
                              status=status or World(s).status)
    return plan(vd, Observed(nodes=NODES, claims=tuple(claims), deployments=tuple(deployments), jobs=tuple(jobs)),
                T0)


REPO = {"serving": {"modelRepository": "pvc://models/repository"}}
OTHER_REPO = {"serving": {"modelRepository": "pvc://repository/r"}}
ONE = {"fleet": {"classes": [{"name": "xeon", "nodeSelector": {"node.kubernetes.io/instance-type": "c7i.4xlarge"},
                              "runtime": "onnxruntime"}]}}

CLAIMS = [
    pytest.param(OTHER_REPO, [ObservedClaim("models", exists=False)], "ClaimNotFound",
                 ["spec.model.uri names PersistentVolumeClaim 'models'", "does not exist in namespace vision"],
                 id="given_no_models_claim_then_degraded_names_the_field_and_claim"),
    pytest.param(REPO, [ObservedClaim("models", exists=False)], "ClaimNotFound",
                 ["spec.model.uri and spec.serving.modelRepository name PersistentVolumeClaim 'models'"],
                 id="given_one_missing_claim_named_twice_then_both_fields"),
    pytest.param(REPO, [ObservedClaim("models", exists=True, access_modes=("ReadWriteMany",), phase="Pending")],
                 None, [], id="given_an_unbound_claim_then_nothing_is_said_it_may_wait_for_its_first_consumer"),
    pytest.param(REPO, [ObservedClaim("models", exists=True, access_modes=("ReadWriteOnce",), phase="Bound")],
                 "ModelRepositoryNotShared",
                 ["spec.serving.modelRepository names PersistentVolumeClaim 'models' with access modes ReadWriteOnce",
                  "4 across 2 classes", "ReadWriteMany or ReadOnlyMany", "NFS", "s3://"],
                 id="given_a_rwo_repository_and_two_classes_then_degraded_says_why_and_the_fix"),
    pytest.param({**REPO, **ONE}, [ObservedClaim("models", exists=True, access_modes=("ReadWriteOncePod",))],
                 None, [], id="given_a_rwop_repository_one_class_one_replica_then_nothing_is_said"),
    pytest.param(REPO, [ObservedClaim("models", exists=True, access_modes=("ReadWriteMany",), phase="Bound")],
                 None, [], id="given_a_rwx_repository_then_nothing_is_said"),
    pytest.param(REPO, [], None, [], id="given_a_claim_not_read_then_nothing_is_said"),
]


@pytest.mark.parametrize("changes, claims, reason, says", CLAIMS)
def test_claims_the_spec_names(changes, claims, reason, says):
    p = _plan(spec(**changes), claims)
    degraded = cond(p.status, "Degraded")
    if reason is None:
        assert degraded.status == "False", degraded.message
        assert not [e for e in p.events if e.reason in ("ClaimNotFound", "ModelRepositoryNotShared")]
        return
    assert (degraded.status, degraded.reason) == ("True", reason)
    for text in says:
        assert text in degraded.message, degraded.message
    assert [e.reason for e in p.events if e.reason == reason] == [reason]
    again = _plan(spec(**changes), claims, status=p.status)
    assert not [e for e in again.events if e.reason == reason], "the same finding posts no second Event"


def test_given_a_missing_claim_when_the_compile_pod_waits_then_its_message_names_the_field():
    s = spec(**OTHER_REPO)
    rev = revision_of(s)
    first = _plan(s, [ObservedClaim("models", exists=False)])
    job = ObservedJob("xeon", rev, "Pending", waiting=PodWaiting("p", WaitReason.UNSCHEDULABLE, PVC_MISSING, T0))
    p = _plan(s, [ObservedClaim("models", exists=False)], jobs=[job], status=first.status)
    xeon = next(c for c in p.status.classes if c.name == "xeon")
    assert "spec.model.uri names PersistentVolumeClaim 'models', which does not exist" in xeon.compile.message
    assert f"the scheduler: {PVC_MISSING}" in xeon.compile.message


# -- A: serving pods -----------------------------------------------------------------------------


def test_given_a_serving_pod_that_cannot_pull_its_image_then_the_class_and_progressing_say_why():
    w = World(spec())
    w.run_until("Healthy")
    v1 = w.status.stable_revision
    stuck = PodWaiting("doorbell-xeon-pod", WaitReason.IMAGE_PULL_BACK_OFF, 'Back-off pulling image "triton:nope"')
    deps = [ObservedDeployment("l4", v1, 2, 2), ObservedDeployment("xeon", v1, 2, 1, waiting=stuck)]
    p = _plan(w.spec, deployments=deps, jobs=w.jobs.values(), status=w.status)
    xeon = next(c for c in p.status.classes if c.name == "xeon")
    assert "waiting: serving (revision" in xeon.message and "ImagePullBackOff" in xeon.message
    assert "spec.serving.image" in xeon.message
    prog = cond(p.status, "Progressing")
    assert prog.reason == "PodsWaiting" and "triton:nope" in prog.message
    assert [e.reason for e in p.events] == ["ServingPodWaiting"]
    again = _plan(w.spec, deployments=deps, jobs=w.jobs.values(), status=p.status)
    assert not again.events
    ready = [ObservedDeployment("l4", v1, 2, 2), ObservedDeployment("xeon", v1, 2, 2, waiting=stuck)]
    assert next(c for c in _plan(w.spec, deployments=ready, jobs=w.jobs.values(), status=p.status).status.classes
                if c.name == "xeon").message is None, "every pod Ready: nothing to tell"
