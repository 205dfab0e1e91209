"""``kubectl vision``: the pure renderers and decisions on realistic objects (built from the real
status model, and from the planner's own simulated rollouts), and the whole CLI against a fake
``CustomObjectsApi`` (the one object the plugin talks to; the kubernetes client's own Watch runs on
top of it)."""

from __future__ import annotations

import ast
import copy
import io
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from kubernetes.client.rest import ApiException

from visionfleet import kubectl_vision as kv
from visionfleet.api.spec import VisionDeploymentSpec
from visionfleet.api.status import (
    AnalysisResult,
    ChosenBatching,
    ClassStatus,
    CompileCandidate,
    CompileResult,
    Condition,
    HistoryEntry,
    VisionDeploymentStatus,
)
from visionfleet.kubectl_vision import (
    CliError,
    Cluster,
    Env,
    command_annotation,
    connect,
    human_duration,
    is_done,
    main,
    other_owners,
    render_history,
    render_status,
)

from .planner_sim import SLOW, World, spec as sim_spec

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
STABLE, CANARY, OLDER, BAD, DROPPED = "3f9a1c2b7d4e", "8b1e0a9c5f27", "0a1b2c3d4e5f", "c0ffee000001", "d15ea5e00001"
PKG = Path(kv.__file__).resolve().parent
REPO = PKG.parents[1]


def at(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


SPEC = VisionDeploymentSpec.model_validate(yaml.safe_load("""
model:
  name: effnet
  version: "7"
  uri: pvc://models/effnet-lite0.onnx
  inputs: [{name: images, dataType: FP32, dims: [3, 224, 224]}]
  outputs: [{name: logits, dataType: FP32, dims: [1000]}]
fleet:
  classes:
    - {name: xeon, nodeSelector: {node.kubernetes.io/instance-type: c7i.4xlarge}, runtime: onnxruntime}
    - name: l4
      nodeSelector: {nvidia.com/gpu.product: NVIDIA-L4}
      runtime: tensorrt
      precision: fp16
      resources: {limits: {nvidia.com/gpu: 1}}
    - name: a100
      nodeSelector: {nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB}
      runtime: tensorrt
      precision: fp16
      resources: {limits: {nvidia.com/gpu: 1}}
compile:
  calibration: {uri: pvc://models/calib.npz}
rollout:
  steps: [{setWeight: 10, pause: 1m}, {setWeight: 50, pause: 2m}, {setWeight: 100}]
  waves: [[xeon], [l4, a100]]
analysis:
  interval: 30s
  prometheus: {url: http://prometheus.monitoring:9090}
  slo: {latencyP99Ms: 20, errorRate: 0.01, minRequests: 100}
  drift: {pValue: 0.01}
  failureLimit: 2
  inconclusiveLimit: 3
"""))


def compiled(rev: str, accuracy: float, batch: int, delay: int) -> CompileResult:
    return CompileResult(state="Succeeded", revision=rev, artifact=f"pvc://models/repo/{rev}/model.plan",
                         accuracy=accuracy, p99_ms_at_batch={"1": 2.1, str(batch): 6.4},
                         batching=ChosenBatching(max_batch_size=batch, max_queue_delay_microseconds=delay))


def mid_rollout_status() -> VisionDeploymentStatus:
    """Wave 2 of 2 (l4, a100), step 2 of 3 at 50 %; a100 failed its accuracy gate and stays on stable."""
    return VisionDeploymentStatus(
        observed_generation=3, phase="RollingOut", stable_revision=STABLE, canary_revision=CANARY,
        step=1, wave=1, canary_weight=50, step_started_at=at(35),
        handled_promote="2026-11-20T09:14:03.118204Z",
        classes=[
            ClassStatus(name="xeon", runtime="onnxruntime", precision="fp32", nodes=6, stable_revision=STABLE,
                        stable=compiled(STABLE, 0.9968, 8, 2000), compile=compiled(CANARY, 0.9971, 16, 4000),
                        stable_replicas=0, canary_replicas=2, ready=2),
            ClassStatus(name="l4", runtime="tensorrt", precision="fp16", nodes=4, stable_revision=STABLE,
                        stable=compiled(STABLE, 0.9952, 32, 500), compile=compiled(CANARY, 0.9949, 32, 100),
                        stable_replicas=2, canary_replicas=2, ready=3),
            ClassStatus(name="a100", runtime="tensorrt", precision="fp16", nodes=2, stable_revision=STABLE,
                        compile=CompileResult(state="Failed", revision=CANARY,
                                              message="accuracy gate: top1Agreement 0.9712 < 0.99"),
                        stable_replicas=1, canary_replicas=0, ready=1),
        ],
        analysis=AnalysisResult(at=at(12), verdict="Passed", p99_ms=14.2, error_rate=0.0012, requests=1840,
                                drift_p_value=0.41, reason="p99 14.2 ms <= 20 ms, errors 0.12%, drift p=0.41",
                                failures=0, inconclusive=0),
        conditions=[
            Condition(type="Compiled", status="True", reason="CompilePartiallyFailed", last_transition_time=at(400),
                      message=f"revision {CANARY} failed on a100 (held back on stable)", observed_generation=3),
            Condition(type="Progressing", status="True", reason="RollingOut", last_transition_time=at(312),
                      message=f"revision {CANARY} at step 1, weight 50%", observed_generation=3),
            Condition(type="Available", status="True", reason="ReplicasReady", last_transition_time=at(3 * 86400),
                      message="stable replicas Ready on xeon, l4, a100", observed_generation=3),
            Condition(type="Degraded", status="True", reason="CompileFailed", last_transition_time=at(400),
                      message="compile failed on a100", observed_generation=3),
        ],
        history=[
            HistoryEntry(revision=OLDER, outcome="Promoted", at=at(9 * 86400),
                         reason="first revision on these classes: nothing to compare against"),
            HistoryEntry(revision=BAD, outcome="RolledBack", at=at(2 * 86400 + 3 * 3600),
                         reason="p99 31.2 ms > 20 ms (2 of 2 failed measurements)"),
            HistoryEntry(revision=STABLE, outcome="Promoted", at=at(2 * 86400),
                         reason="all 3 steps passed their analysis in 2 waves"),
            HistoryEntry(revision=DROPPED, outcome="Superseded", at=at(3 * 3600),
                         reason=f"spec changed to revision {CANARY} during the rollout"),
        ],
    )


def vd(status: VisionDeploymentStatus | None = None, *, generation: int = 3, annotations: dict | None = None,
       spec: VisionDeploymentSpec = SPEC, name: str = "doorbell", namespace: str = "vision") -> dict:
    """A VisionDeployment as the API server returns it; the status serialised as the operator writes it."""
    obj = {
        "apiVersion": "visionfleet.io/v1alpha1", "kind": "VisionDeployment",
        "metadata": {"name": name, "namespace": namespace, "generation": generation, "resourceVersion": "4711",
                     "uid": "5b0c1f8e-0000-4000-8000-000000000001", "creationTimestamp": at(10 * 86400),
                     "annotations": dict(annotations or {}),
                     "managedFields": [{"manager": "argocd-controller", "operation": "Apply",
                                        "fieldsV1": {"f:spec": {}}}]},
        "spec": spec.to_wire(),
    }
    if status is not None:
        obj["status"] = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    return obj


def healthy_status() -> VisionDeploymentStatus:
    st = mid_rollout_status()
    st.phase, st.canary_revision, st.step, st.wave, st.canary_weight, st.step_started_at = "Healthy", *([None] * 5)
    return st


ROLLED_BACK_REASON = "p99 31.2 ms > 20 ms (2 of 2 failed measurements)"


def rolled_back_status(outcome: str = "RolledBack", phase: str = "RolledBack") -> VisionDeploymentStatus:
    """The canary of mid_rollout_status() failed its analysis (or was aborted, or compiled nowhere):
    no canary, the stable revision serves, the spec still asks for CANARY."""
    st = healthy_status()
    st.phase = phase
    st.history.append(HistoryEntry(revision=CANARY, outcome=outcome, at=at(60), reason=ROLLED_BACK_REASON))
    return st


# -- ages ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds, text", [
    (-5, "<invalid>"), (-0.5, "0s"), (0, "0s"), (45, "45s"), (119, "119s"), (120, "2m"), (312, "5m12s"),
    (600, "10m"), (42 * 60, "42m"), (3 * 3600, "3h"), (3 * 3600 + 5 * 60, "3h5m"), (20 * 3600, "20h"),
    (48 * 3600, "2d"), (51 * 3600, "2d3h"), (30 * 86400, "30d"), (800 * 86400, "2y70d"), (10 * 365 * 86400, "10y"),
])
def test_ages_read_like_kubectl(seconds, text):
    assert human_duration(seconds) == text


# -- status ----------------------------------------------------------------------------------------


def test_status_of_a_rollout_in_its_second_wave():
    text = render_status(vd(mid_rollout_status()), NOW)
    lines = text.splitlines()
    assert lines[:9] == [
        "Name:        doorbell",
        "Namespace:   vision",
        "Phase:       RollingOut",
        "Generation:  3 (observed)",
        f"Stable:      {STABLE}",
        f"Canary:      {CANARY}",
        "Step:        2/3   weight 50% on the canary, held 35s of 2m (85s left)",
        "Wave:        2/2 (l4, a100)",
        "",
    ]
    classes = lines[lines.index("Classes:") + 1:]
    assert classes[0].split() == ["CLASS", "RUNTIME", "NODES", "COMPILE", "ACCURACY", "MAX-BATCH", "QUEUE-DELAY",
                                  "STABLE", "CANARY", "READY"]
    assert classes[1].split() == ["xeon", "onnxruntime/fp32", "6", "Succeeded", "0.9971", "16", "4ms", "0", "2", "2/2"]
    assert classes[2].split() == ["l4", "tensorrt/fp16", "4", "Succeeded", "0.9949", "32", "100us", "2", "2", "3/4"]
    assert classes[3].split() == ["a100", "tensorrt/fp16", "2", "Failed", "-", "-", "-", "1", "0", "1/1"]
    assert f"  a100: compile Failed ({CANARY}): accuracy gate: top1Agreement 0.9712 < 0.99" in lines
    # columns line up
    assert len({row.index("NODES") if "NODES" in row else None for row in classes[:1]}) == 1
    assert classes[1].index("onnxruntime") == classes[0].index("RUNTIME") == classes[2].index("tensorrt")
    assert "Analysis (12s ago, 2026-11-28T11:59:48Z):" in lines
    assert "  Verdict:        Passed" in lines
    assert "  p99:            14.2 ms (SLO 20 ms)" in lines
    assert "  Error rate:     0.12% (SLO 1%)" in lines
    assert "  Requests:       1840 (min 100)" in lines
    assert "  Drift p-value:  0.41 (drift below 0.01)" in lines
    assert "  Failures:       0 of 2 allowed" in lines
    assert "  Inconclusive:   0 in a row of 3 allowed" in lines
    assert "  Reason:         p99 14.2 ms <= 20 ms, errors 0.12%, drift p=0.41" in lines
    conds = lines[lines.index("Conditions:") + 1:]
    assert conds[0].split() == ["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]
    assert conds[1].split()[:4] == ["Compiled", "True", "CompilePartiallyFailed", "6m40s"]
    assert conds[2].split()[:4] == ["Progressing", "True", "RollingOut", "5m12s"]
    assert conds[3].split()[:4] == ["Available", "True", "ReplicasReady", "3d"]
    assert conds[4].endswith("compile failed on a100")


def test_status_names_what_precision_auto_chose_and_every_candidate():
    st = mid_rollout_status()
    xeon = st.classes[0]
    xeon.runtime, xeon.precision = "openvino", "auto"
    xeon.compile = xeon.compile.model_copy(update={
        "precision": "int8", "fp32_layers": 8, "choice": "int8: fastest that passed, 740.0 inferences/s at batch 8",
        "candidates": [
            CompileCandidate(precision="int8", accuracy=0.915, passed=False, seconds=21),
            CompileCandidate(precision="int8", mixed=True, fp32_layers=8, accuracy=0.9925, passed=True,
                             throughput=740.0, batch=8, p99_ms=12.1, seconds=60, chosen=True),
            CompileCandidate(precision="bf16", accuracy=0.9875, passed=False, seconds=3)]})
    lines = render_status(vd(st), NOW).splitlines()
    classes = lines[lines.index("Classes:") + 1:]
    assert classes[1].split()[:2] == ["xeon", "openvino/auto→int8"]
    assert ("  xeon: candidates int8 0.9150 failed, int8 mixed (8 layers fp32) 0.9925 passed 740/s at batch 8 "
            "(chosen), bf16 0.9875 failed; chose int8: fastest that passed, 740.0 inferences/s at batch 8") in lines
    # a single precision with nothing kept in fp32 adds no line
    assert not any(line.startswith("  l4: candidates") for line in lines)


def test_status_of_a_shadow_step_says_users_see_only_the_stable():
    gw = {"method": "GatewayAPI", "gatewayAPI": {"httpRoute": "doorbell"}}
    raw = SPEC.to_wire()
    raw["rollout"] = {"traffic": gw, "steps": [{"shadow": {"duration": "10m"}}, {"setWeight": 100}]}
    raw["analysis"] = {**raw.get("analysis", {}), "prometheus": {"url": "http://p:9090"}, "drift": {},
                       "liveAgreement": {"min": 0.99}}
    raw.setdefault("compile", {})["calibration"] = {"uri": "pvc://m/c.npz"}
    spec = VisionDeploymentSpec.model_validate(raw)
    st = mid_rollout_status()
    st.step, st.wave, st.canary_weight, st.canary_mirror = 0, 0, 0, 100
    st.analysis.live_agreement, st.analysis.live_pairs = 0.9962, 1875
    lines = render_status(vd(st, spec=spec), NOW).splitlines()
    assert "Step:        1/2   shadow: 100% of requests mirrored to the canary, users answered by the stable " \
           "only, held 35s of 10m (9m25s left)" in lines
    assert "  Live agreement:  0.996 over 1875 mirrored images (min 0.99)" in lines
    history = render_history(vd(st, spec=spec), NOW)
    assert history.splitlines()[-1].endswith("step 1/2, shadow 100%")


def test_status_header_follows_the_phase_and_the_annotations():
    st = mid_rollout_status()
    paused = render_status(vd(st, annotations={"visionfleet.io/paused": "true"}), NOW)
    assert "Step:         2/3   weight 50% on the canary, held 35s (paused by visionfleet.io/paused)" in paused
    assert "Annotations:  visionfleet.io/paused=true" in paused
    st.step_started_at = None
    st.phase = "Verifying"
    assert "2/3   weight 50% on the canary (waiting for its pods to be Ready)" in render_status(vd(st), NOW)
    st.phase, st.step, st.wave, st.canary_weight = "Compiling", 0, 0, 10
    text = render_status(vd(st), NOW)
    assert "Step:        1/3   weight 10% on the canary (once it has compiled)" in text
    assert "Wave:        1/2 (xeon)" in text
    # pause over: only a passed analysis is missing
    st = mid_rollout_status()
    st.step_started_at = at(150)
    assert "held 2m30s, pause 2m over; next after a passed analysis" in render_status(vd(st), NOW)


def test_status_says_when_the_spec_is_newer_than_the_status():
    text = render_status(vd(healthy_status(), generation=4), NOW)
    assert "Generation:  4 (not observed yet: the status is of generation 3)" in text
    assert "Canary:      -" in text and "Step:" not in text


def test_status_of_a_fresh_object_and_a_held_back_class():
    assert render_status(vd(None, generation=1), NOW).splitlines()[2:4] == [
        "Phase:       - (the operator has not reported yet)", "Generation:  1 (not observed yet)"]
    st = healthy_status()
    st.stable_revision = CANARY
    for c in st.classes[:2]:
        c.stable_revision = CANARY
    assert f"  a100: serves {STABLE} as stable (held back from {CANARY})" in render_status(vd(st), NOW)


def test_status_shows_why_a_class_waits_once():
    st = healthy_status()
    c = st.classes[0]
    wait = "waiting: compile pod p is unschedulable: 0/3 nodes are available; the scheduler: x"
    c.compile = c.compile.model_copy(update={"state": "Pending", "message": wait})
    c.message = f"{wait}; waiting: serving (revision {STABLE}) pod t: ImagePullBackOff: nope; check spec.serving.image"
    lines = render_status(vd(st), NOW).splitlines()
    assert [line for line in lines if "waiting: compile pod p" in line] == [
        f"  {c.name}: compile Pending ({c.compile.revision[:12]}): {wait}"], "the compile's wait once"
    assert f"  {c.name}: waiting: serving (revision {STABLE}) pod t: ImagePullBackOff: nope; " \
           "check spec.serving.image" in lines


def simulated(until: str, steps_into: int = 0) -> tuple[dict, datetime]:
    """A VisionDeployment as the planner itself leaves it (tests/unit/planner_sim), as the API returns it."""
    w = World(sim_spec())
    w.run_until("Healthy")
    w.set_spec(sim_spec(model__version="2"))
    w.run_until(until)
    for _ in range(steps_into):
        w.tick(30)
    obj = {"apiVersion": "visionfleet.io/v1alpha1", "kind": "VisionDeployment",
           "metadata": {"name": "doorbell", "namespace": "vision", "generation": w.generation,
                        "annotations": dict(w.annotations)},
           "spec": w.spec.to_wire(), "status": w.status.to_wire()}
    return obj, w.now


@pytest.mark.parametrize("until", ["Compiling", "Verifying", "RollingOut"])
def test_status_of_the_planners_own_rollouts(until):
    obj, now = simulated(until, steps_into=3 if until == "RollingOut" else 0)
    text = render_status(obj, now)
    st = obj["status"]
    assert f"Phase:       {st['phase']}" in text
    assert f"Step:        {st['step'] + 1}/3   weight {st['canaryWeight']}% on the canary" in text
    for c in st["classes"]:
        assert any(line.split()[:1] == [c["name"]] for line in text.splitlines())
    history = render_history(obj, now)
    assert history.splitlines()[-1].split()[:2] == [st["canaryRevision"], "InProgress"]


# -- history ---------------------------------------------------------------------------------------


def test_history_newest_last_with_stable_and_canary_marked():
    lines = render_history(vd(mid_rollout_status()), NOW).splitlines()
    assert lines[0] == f"visiondeployment vision/doorbell: stable {STABLE}, canary {CANARY}"
    rows = [line.split(None, 5) for line in lines[1:]]
    assert rows[0] == ["REVISION", "OUTCOME", "AGE", "WHEN", "CURRENT", "REASON"]
    assert [r[:4] for r in rows[1:]] == [
        [OLDER, "Promoted", "9d", "2026-11-19T12:00:00Z"],
        [BAD, "RolledBack", "2d3h", "2026-11-26T09:00:00Z"],
        [STABLE, "Promoted", "2d", "2026-11-26T12:00:00Z"],
        [DROPPED, "Superseded", "3h", "2026-11-28T09:00:00Z"],
        [CANARY, "InProgress", "-", "-"],
    ]
    assert [r[4] for r in rows[1:]] == ["-", "-", "stable", "-", "canary"]
    assert lines[6].endswith("canary    RollingOut: step 2/3, weight 50%")
    assert lines[3].endswith("-         p99 31.2 ms > 20 ms (2 of 2 failed measurements)")
    assert sum(" stable " in line for line in lines[1:]) == 1


def test_history_when_empty_and_when_the_stable_entry_was_trimmed():
    assert render_history(vd(None), NOW).splitlines()[1] == "no history yet"
    st = healthy_status()
    st.history = st.history[3:]
    text = render_history(vd(st), NOW)
    assert f"(stable {STABLE} was promoted before the oldest entry kept)" in text
    assert "canary" not in text.splitlines()[-2]


def test_done_means_a_terminal_phase_for_the_current_spec():
    assert is_done(vd(healthy_status()))
    assert not is_done(vd(healthy_status(), generation=4))  # the operator has not seen the new spec yet
    assert not is_done(vd(mid_rollout_status()))
    for phase in ("RolledBack", "Failed"):
        st = healthy_status()
        st.phase = phase
        assert is_done(vd(st))
    assert not is_done(vd(None))


# -- commands as annotations -----------------------------------------------------------------------


def test_promote_and_abort_need_a_canary():
    for command in ("promote", "abort"):
        with pytest.raises(CliError, match=rf"visiondeployment doorbell in namespace vision has no canary in flight "
                                           rf"\(phase Healthy, stable {STABLE}\): nothing to {command}"):
            command_annotation(vd(healthy_status()), command, NOW)


def test_promote_and_abort_set_a_fresh_one_shot_value():
    obj = vd(mid_rollout_status(), annotations={"visionfleet.io/promote": "2026-11-20T09:14:03.118204Z"})
    promote = command_annotation(obj, "promote", NOW)
    assert promote.key == "visionfleet.io/promote" and promote.handled_field == "handledPromote"
    assert promote.value == "2026-11-28T12:00:00.000000Z" and promote.before == "2026-11-20T09:14:03.118204Z"
    assert datetime.fromisoformat(promote.value.replace("Z", "+00:00")) == NOW
    assert promote.patch == {"metadata": {"annotations": {"visionfleet.io/promote": promote.value}}}
    later = command_annotation(obj, "promote", NOW + timedelta(microseconds=7))
    assert later.value != promote.value
    # the same microsecond as the value already there: still a new value
    obj["metadata"]["annotations"]["visionfleet.io/promote"] = promote.value
    assert command_annotation(obj, "promote", NOW).value == "2026-11-28T12:00:00.000001Z"
    abort = command_annotation(obj, "abort", NOW)
    assert (abort.key, abort.handled_field, abort.before) == ("visionfleet.io/abort", "handledAbort", None)
    assert abort.describe(obj) == ('visiondeployment vision/doorbell: visionfleet.io/abort: (unset) -> '
                                   '"2026-11-28T12:00:00.000000Z"')


def test_promote_while_compiling_says_when_it_acts():
    st = mid_rollout_status()
    st.phase = "Compiling"
    assert command_annotation(vd(st), "promote", NOW).notes == (
        "the canary is still compiling: the operator promotes it once it has compiled and its pods are Ready",)
    # abort acts during the compile too
    assert command_annotation(vd(st), "abort", NOW).notes == (
        "the canary is still compiling: the operator aborts it now and stops its compile Jobs",)
    st.phase, st.step_started_at = "Verifying", None
    assert command_annotation(vd(st), "promote", NOW).notes == (
        "the canary's pods are not all Ready yet: the operator sends it 100% once they are",)
    assert command_annotation(vd(mid_rollout_status()), "promote", NOW).notes == ()


# -- retry -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome, phase", [("RolledBack", "RolledBack"), ("Aborted", "RolledBack"),
                                            ("Aborted", "RollingBack"), ("CompileFailed", "Failed")])
def test_retry_sets_a_fresh_one_shot_value_after_a_failure(outcome, phase):
    obj = vd(rolled_back_status(outcome, phase))
    retry = command_annotation(obj, "retry", NOW)
    assert (retry.key, retry.handled_field, retry.before) == ("visionfleet.io/retry", "handledRetry", None)
    assert retry.value == "2026-11-28T12:00:00.000000Z"
    assert retry.patch == {"metadata": {"annotations": {"visionfleet.io/retry": retry.value}}}
    assert retry.notes == (f"newest failed attempt in the history: revision {CANARY}, {outcome}: {ROLLED_BACK_REASON}",)
    # a value the operator has handled already is not sent again
    obj["status"]["handledRetry"] = retry.value
    assert command_annotation(obj, "retry", NOW).value == "2026-11-28T12:00:00.000001Z"
    paused = vd(rolled_back_status(outcome, phase), annotations={"visionfleet.io/paused": "true"})
    assert command_annotation(paused, "retry", NOW).notes[-1] == (
        'visionfleet.io/paused is "true": the retried rollout holds at its first step until resumed')


def test_retry_refuses_unless_the_spec_revision_failed():
    where = "visiondeployment doorbell in namespace vision"
    cases = [
        (vd(healthy_status()),
         f"{where} has nothing to retry (phase Healthy, stable {STABLE}): retry re-attempts the revision the spec "
         f"asks for only when its newest outcome is RolledBack, Aborted or CompileFailed"),
        (vd(mid_rollout_status()),
         f"{where} has a canary in flight (revision {CANARY}, phase RollingOut): nothing to retry (abort it first, "
         f"or let it finish)"),
        (vd(rolled_back_status(), generation=4),
         f"{where}: the operator has not observed generation 4 yet (the status is of generation 3, phase "
         f"RolledBack): nothing to retry until it has"),
        (vd(None), f"{where} has nothing to retry (phase unknown, stable -): retry re-attempts the revision"),
    ]
    # The history ends in a failure, but of another revision: the phase (the operator's verdict on
    # the revision the spec asks for) says Healthy, so there is nothing to retry.
    other = healthy_status()
    other.history.append(HistoryEntry(revision=BAD, outcome="RolledBack", at=at(30), reason="slow"))
    cases.append((vd(other), f"{where} has nothing to retry (phase Healthy"))
    for obj, message in cases:
        with pytest.raises(CliError) as e:
            command_annotation(obj, "retry", NOW)
        assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_failed_attempt_is_the_newest_entry_off_the_stable_revision():
    assert kv.failed_attempt(vd(rolled_back_status()))["revision"] == CANARY
    assert kv.failed_attempt(vd(healthy_status())) is None  # newest off-stable entry: Superseded
    st = rolled_back_status("CompileFailed", "Failed")
    st.stable_revision = None  # a first revision that compiled nowhere
    assert kv.failed_attempt(vd(st))["outcome"] == "CompileFailed"
    st.history = st.history[:-1] + [HistoryEntry(revision=CANARY, outcome="Retried", at=at(5), reason="retried")]
    assert kv.failed_attempt(vd(st)) is None
    assert kv.failed_attempt(vd(None)) is None


def test_retry_on_the_planners_own_rolled_back_status():
    w = World(sim_spec())
    w.run_until("Healthy")
    w.set_spec(sim_spec(model__version="2"))
    w.measurement = SLOW
    w.run_until("RolledBack")
    obj = {"apiVersion": "visionfleet.io/v1alpha1", "kind": "VisionDeployment",
           "metadata": {"name": "doorbell", "namespace": "vision", "generation": w.generation, "annotations": {}},
           "spec": w.spec.to_wire(), "status": w.status.to_wire()}
    retry = command_annotation(obj, "retry", w.now)
    assert retry.key == "visionfleet.io/retry"
    assert retry.notes[0].startswith(f"newest failed attempt in the history: revision {w.status.history[-1].revision}, "
                                     f"RolledBack: p99 31.2 ms > 20 ms")
    w.set_spec(sim_spec(model__version="1"))  # back to the stable revision: Healthy, nothing to retry
    w.tick()
    obj["metadata"]["generation"], obj["status"] = w.generation, w.status.to_wire()
    with pytest.raises(CliError, match="has nothing to retry \\(phase Healthy"):
        command_annotation(obj, "retry", w.now)


def test_pause_and_resume_are_levels():
    running = vd(mid_rollout_status())
    pause = command_annotation(running, "pause", NOW)
    assert pause.patch == {"metadata": {"annotations": {"visionfleet.io/paused": "true"}}}
    assert pause.handled_field is None and "analysis keeps running" in pause.notes[-1]
    paused = vd(mid_rollout_status(), annotations={"visionfleet.io/paused": "true"})
    assert command_annotation(paused, "pause", NOW) is None
    resume = command_annotation(paused, "resume", NOW)
    assert resume.patch == {"metadata": {"annotations": {"visionfleet.io/paused": None}}}
    assert resume.describe(paused) == 'visiondeployment vision/doorbell: visionfleet.io/paused: "true" -> (unset)'
    assert command_annotation(running, "resume", NOW) is None
    idle = command_annotation(vd(healthy_status()), "pause", NOW)
    assert idle.notes[0].startswith("no canary in flight now: the next rollout holds at its first step")


def test_an_annotation_also_held_in_git_is_flagged():
    obj = vd(mid_rollout_status(), annotations={"visionfleet.io/paused": "true"})
    obj["metadata"]["managedFields"] = [
        {"manager": "argocd-controller", "operation": "Apply",
         "fieldsV1": {"f:metadata": {"f:annotations": {"f:visionfleet.io/paused": {}}}}},
        {"manager": "kubectl-vision", "operation": "Update",
         "fieldsV1": {"f:metadata": {"f:annotations": {"f:visionfleet.io/promote": {}}}}},
    ]
    assert other_owners(obj, "visionfleet.io/paused") == ["field manager argocd-controller"]
    assert other_owners(obj, "visionfleet.io/promote") == []
    obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json.dumps(
        {"metadata": {"annotations": {"visionfleet.io/promote": "go"}}})
    assert other_owners(obj, "visionfleet.io/promote") == [
        'kubectl.kubernetes.io/last-applied-configuration (value "go")']
    # Argo CD's resource actions patch as argocd-server: by hand, not Git
    obj["metadata"]["managedFields"].append({"manager": "argocd-server", "operation": "Update", "fieldsV1": {
        "f:metadata": {"f:annotations": {"f:visionfleet.io/retry": {}}}}})
    assert other_owners(obj, "visionfleet.io/retry") == []


def test_status_lists_the_retry_annotation():
    text = render_status(vd(rolled_back_status(), annotations={"visionfleet.io/retry": "2026-11-28T11:59:00Z"}), NOW)
    assert "Annotations:  visionfleet.io/retry=2026-11-28T11:59:00Z" in text


# -- the CLI against a fake CustomObjectsApi --------------------------------------------------------


def api_error(status: int, reason: str, message: str, name: str | None = None) -> ApiException:
    e = ApiException(status=status, reason=reason)
    body = {"kind": "Status", "status": "Failure", "message": message, "reason": reason, "code": status}
    if name:
        body["details"] = {"name": name, "group": "visionfleet.io", "kind": "visiondeployments"}
    e.body = json.dumps(body)
    return e


def merge(target: dict, patch: dict) -> None:
    """RFC 7386 JSON merge patch, as the API server applies it."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict):
            merge(target.setdefault(k, {}), v)
        else:
            target[k] = v


class FakeResponse:
    """What the client's Watch reads a watch from: newline-delimited JSON events."""

    def __init__(self, events):
        self.status, self.events, self.closed = 200, events, False

    def stream(self, amt=None, decode_content=False):
        for e in self.events:
            if callable(e):
                e()
                continue
            yield (json.dumps(e) + "\n").encode()

    def close(self):
        self.closed = True

    def release_conn(self):
        pass


class FakeCustomObjects:
    """The four CustomObjectsApi methods the plugin uses, over an in-memory store."""

    def __init__(self, *objs):
        self.store = {(o["metadata"]["namespace"], o["metadata"]["name"]): copy.deepcopy(o) for o in objs}
        self.calls: list[tuple[str, tuple, dict]] = []
        self.rv = 100
        self.on_get = None  # plays the operator: called with the stored object on each GET
        self.watches: list[list] = []  # the events of each successive watch request
        self.error: Exception | None = None

    def _find(self, group, version, namespace, plural, name):
        assert (group, version, plural) == ("visionfleet.io", "v1alpha1", "visiondeployments")
        if self.error is not None:
            raise self.error
        if (namespace, name) not in self.store:
            raise api_error(404, "NotFound", f'visiondeployments.visionfleet.io "{name}" not found', name)
        return self.store[(namespace, name)]

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("get", (namespace, name), {}))
        obj = self._find(group, version, namespace, plural, name)
        if self.on_get is not None:
            self.on_get(obj)
        return copy.deepcopy(obj)

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body, **kwargs):
        self.calls.append(("patch", (namespace, name, copy.deepcopy(body)), kwargs))
        obj = self._find(group, version, namespace, plural, name)
        merge(obj, body)
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(obj)

    def list_namespaced_custom_object(self, group, version, namespace, plural, **kwargs):
        assert (group, version, plural) == ("visionfleet.io", "v1alpha1", "visiondeployments")
        self.calls.append(("watch" if kwargs.get("watch") else "list", (namespace,), kwargs))
        if kwargs.get("watch"):
            return FakeResponse(self.watches.pop(0) if self.watches else [])
        name = kwargs["field_selector"].removeprefix("metadata.name=")
        items = [copy.deepcopy(o) for (ns, n), o in self.store.items() if ns == namespace and n == name]
        return {"apiVersion": "visionfleet.io/v1alpha1", "kind": "VisionDeploymentList", "items": items,
                "metadata": {"resourceVersion": str(self.rv)}}

    def patches(self):
        return [c for c in self.calls if c[0] == "patch"]


class Clock:
    def __init__(self, step: float = 0.0):
        self.t, self.step, self.sleeps = 0.0, step, []

    def __call__(self) -> float:
        self.t += self.step
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


def run(fake: FakeCustomObjects, *argv: str, tty: bool = False, clock: Clock | None = None):
    out, err = io.StringIO(), io.StringIO()
    clock = clock or Clock()
    env = Env(cluster=Cluster(fake, host="https://10.0.0.1:6443"), namespace="default", out=out, err=err,
              now=lambda: NOW, clock=clock, sleep=clock.sleep, tty=tty)
    code = main(list(argv), env=env)
    return code, out.getvalue(), err.getvalue()


def test_help_lists_every_command_and_the_connection_flags(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for word in ("status", "history", "watch", "promote", "abort", "retry", "pause", "resume", "--namespace",
                 "--context", "--kubeconfig", "GitOps", "kubectl vision promote doorbell --wait",
                 "kubectl vision retry doorbell --wait"):
        assert word in text
    for command, words in {"promote": ["--wait", "--timeout", "--full", "visionfleet.io/promote", "handledPromote",
                                       "pods to be Ready"],
                           "abort": ["Aborted", "does not retry", "visionfleet.io/abort", "also while it compiles",
                                     "kubectl vision retry"],
                           "retry": ["--wait", "--timeout", "visionfleet.io/retry", "handledRetry",
                                     "RolledBack, Aborted or CompileFailed", "Retried",
                                     "RolledBack, RollingBack or Failed", "current generation",
                                     "a canary is in flight"],
                           "pause": ['visionfleet.io/paused="true"', "analysis still runs"],
                           "resume": ["null"], "watch": ["--until-done", "--timeout", "Healthy, RolledBack, Failed"],
                           "status": ["-o {json,yaml}", "conditions"], "history": ["last 20", "Retried"]}.items():
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert "-n NAMESPACE" in text and "VD" in text
        for word in words:
            assert word in " ".join(text.split()), (command, word)
    with pytest.raises(SystemExit) as e:
        main(["promote"])
    assert e.value.code == 2 and "VD" in capsys.readouterr().err


def test_status_namespace_before_or_after_the_command():
    fake = FakeCustomObjects(vd(mid_rollout_status()))
    for argv in (["status", "doorbell", "-n", "vision"], ["-n", "vision", "status", "doorbell"],
                 ["--namespace=vision", "status", "doorbell"]):
        code, out, err = run(fake, *argv)
        assert (code, err) == (0, "") and out == render_status(vd(mid_rollout_status()), NOW)
    assert [c[1] for c in fake.calls] == [("vision", "doorbell")] * 3


def test_status_prints_the_raw_object():
    obj = vd(mid_rollout_status())
    fake = FakeCustomObjects(obj)
    code, out, _ = run(fake, "status", "doorbell", "-n", "vision", "-o", "json")
    data = json.loads(out)
    assert code == 0 and data["status"] == obj["status"] and "managedFields" not in data["metadata"]
    code, out, _ = run(fake, "status", "doorbell", "-n", "vision", "-o", "yaml")
    assert code == 0 and yaml.safe_load(out)["status"]["canaryRevision"] == CANARY


def test_errors_are_one_line_without_traceback():
    fake = FakeCustomObjects(vd(mid_rollout_status()))
    assert run(fake, "status", "nope", "-n", "vision") == (
        1, "", "error: visiondeployment nope not found in namespace vision\n")
    assert run(fake, "promote", "doorbell") == (
        1, "", "error: visiondeployment doorbell not found in namespace default\n")
    fake.error = api_error(404, "NotFound", "the server could not find the requested resource")
    assert run(fake, "history", "doorbell", "-n", "vision")[2] == (
        "error: the visiondeployments.visionfleet.io CRD is not installed on this cluster "
        "(the server could not find the requested resource)\n")
    fake.error = api_error(403, "Forbidden", 'visiondeployments.visionfleet.io "doorbell" is forbidden: User '
                           '"dev" cannot patch resource "visiondeployments" in API group "visionfleet.io"')
    code, out, err = run(fake, "status", "doorbell", "-n", "vision")
    assert code == 1 and err.startswith("error: forbidden: ") and "User \"dev\" cannot patch" in err
    fake.error = api_error(500, "Internal Server Error", "etcdserver: request timed out")
    assert run(fake, "status", "doorbell", "-n", "vision")[2] == (
        "error: API error 500 Internal Server Error: etcdserver: request timed out\n")
    fake.error = ConnectionRefusedError(111, "Connection refused")
    assert run(fake, "status", "doorbell", "-n", "vision")[2] == (
        "error: cannot reach the API server at https://10.0.0.1:6443: [Errno 111] Connection refused\n")


def test_promote_refuses_without_a_canary():
    fake = FakeCustomObjects(vd(healthy_status()))
    code, out, err = run(fake, "promote", "doorbell", "-n", "vision")
    assert code == 1 and out == "" and "has no canary in flight" in err and "nothing to promote" in err
    code, _, err = run(fake, "abort", "doorbell", "-n", "vision", "--wait")
    assert code == 1 and "nothing to abort" in err
    assert fake.patches() == []


def test_promote_is_a_merge_patch_of_one_annotation_under_our_field_manager():
    fake = FakeCustomObjects(vd(mid_rollout_status()))
    code, out, err = run(fake, "promote", "doorbell", "-n", "vision")
    assert (code, err) == (0, "")
    assert out == 'visiondeployment vision/doorbell: visionfleet.io/promote: (unset) -> "2026-11-28T12:00:00.000000Z"\n'
    [(_, (ns, name, body), kwargs)] = fake.patches()
    assert (ns, name) == ("vision", "doorbell")
    assert body == {"metadata": {"annotations": {"visionfleet.io/promote": "2026-11-28T12:00:00.000000Z"}}}
    assert kwargs == {"field_manager": "kubectl-vision", "_content_type": "application/merge-patch+json"}
    stored = fake.store[("vision", "doorbell")]
    assert stored["spec"] == vd(mid_rollout_status())["spec"]  # never spec, never status
    assert stored["status"] == vd(mid_rollout_status())["status"]


def test_promote_wait_polls_until_the_operator_has_handled_it():
    fake = FakeCustomObjects(vd(mid_rollout_status()))
    gets = []

    def operator(obj):  # acts on the annotation on the third read after the patch
        gets.append(1)
        value = obj["metadata"]["annotations"].get("visionfleet.io/promote")
        if value and len(gets) >= 4 and obj["status"].get("handledPromote") != value:
            st = obj["status"]
            st.update(handledPromote=value, phase="Healthy", stableRevision=CANARY)
            for k in ("canaryRevision", "step", "wave", "canaryWeight", "stepStartedAt"):
                st.pop(k)
            st["history"].append({"revision": CANARY, "outcome": "Promoted", "at": at(0),
                                  "reason": "promoted by the visionfleet.io/promote annotation"})

    fake.on_get = operator
    clock = Clock()
    code, out, err = run(fake, "promote", "doorbell", "-n", "vision", "--wait", "--timeout", "30s", clock=clock)
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == (f"handled by the operator: phase Healthy; revision {CANARY}: Promoted "
                                    f"(promoted by the visionfleet.io/promote annotation); stable {CANARY}")
    assert clock.sleeps == [1.0, 1.0] and len(gets) == 4


def test_wait_says_when_the_rollout_had_already_ended():
    """The canary finished on its own between the check and the operator's pass: the value is
    recorded and ignored; an older entry of the same revision is not taken for the outcome."""
    st = mid_rollout_status()
    st.history.append(HistoryEntry(revision=CANARY, outcome="Superseded", at=at(7200), reason="earlier attempt"))
    fake = FakeCustomObjects(vd(st))

    def operator(obj):
        value = obj["metadata"]["annotations"].get("visionfleet.io/abort")
        if value:
            obj["status"].update(handledAbort=value, phase="Healthy")

    fake.on_get = operator
    code, out, _ = run(fake, "abort", "doorbell", "-n", "vision", "--wait")
    assert code == 0 and out.splitlines()[-1] == (
        f"handled by the operator: phase Healthy; revision {CANARY}: no outcome recorded (its rollout had ended "
        f"when the operator got to the annotation); stable {STABLE}")


def test_abort_wait_times_out_with_a_clear_message():
    fake = FakeCustomObjects(vd(mid_rollout_status()))
    clock = Clock()
    code, out, err = run(fake, "abort", "doorbell", "-n", "vision", "--wait", "--timeout", "5", clock=clock)
    assert code == 1 and out.startswith("visiondeployment vision/doorbell: visionfleet.io/abort: (unset) -> ")
    assert err.startswith("error: timed out after 5s waiting for the operator to act on visionfleet.io/abort=")
    assert "(phase RollingOut)" in err and len(clock.sleeps) == 5
    assert fake.store[("vision", "doorbell")]["metadata"]["annotations"]["visionfleet.io/abort"]


def test_promote_wait_waits_for_the_promotion_not_just_the_value():
    """The operator takes the promote at once (status.handledPromote) but promotes the canary only
    once its pods are Ready at full size: --wait returns then, with the outcome."""
    fake = FakeCustomObjects(vd(mid_rollout_status()))
    reads = []

    def operator(obj):
        reads.append(1)
        value = obj["metadata"]["annotations"].get("visionfleet.io/promote")
        st = obj["status"]
        if value and len(reads) == 2:  # took it: scaling the canary to full size
            st.update(handledPromote=value, phase="Verifying", canaryWeight=100)
            st.pop("stepStartedAt")
        if value and len(reads) == 4:  # its pods are Ready: promoted
            st.update(phase="Healthy", stableRevision=CANARY)
            for k in ("canaryRevision", "step", "wave", "canaryWeight"):
                st.pop(k)
            st["history"].append({"revision": CANARY, "outcome": "Promoted", "at": at(0),
                                  "reason": "promoted by the visionfleet.io/promote annotation"})

    fake.on_get = operator
    clock = Clock()
    code, out, _ = run(fake, "promote", "doorbell", "-n", "vision", "--wait", clock=clock)
    assert code == 0 and out.splitlines()[-1] == (
        f"handled by the operator: phase Healthy; revision {CANARY}: Promoted (promoted by the visionfleet.io/promote "
        f"annotation); stable {CANARY}")
    assert len(reads) == 4 and clock.sleeps == [1.0, 1.0]


def test_promote_wait_times_out_saying_the_canary_waits_for_its_pods():
    fake = FakeCustomObjects(vd(mid_rollout_status()))

    def operator(obj):
        value = obj["metadata"]["annotations"].get("visionfleet.io/promote")
        if value:
            obj["status"].update(handledPromote=value, phase="Verifying", canaryWeight=100)

    fake.on_get = operator
    code, _, err = run(fake, "promote", "doorbell", "-n", "vision", "--wait", "--timeout", "3")
    assert code == 1 and err == (
        f"error: timed out after 3s waiting for the operator to promote revision {CANARY}: it took "
        f"visionfleet.io/promote=2026-11-28T12:00:00.000000Z (status.handledPromote) but the revision is still the "
        f"canary (phase Verifying, weight 100%); it is promoted once its pods are Ready at full size\n")


def test_retry_is_a_merge_patch_of_one_annotation_under_our_field_manager():
    fake = FakeCustomObjects(vd(rolled_back_status()))
    code, out, err = run(fake, "retry", "doorbell", "-n", "vision")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        'visiondeployment vision/doorbell: visionfleet.io/retry: (unset) -> "2026-11-28T12:00:00.000000Z"',
        f"note: newest failed attempt in the history: revision {CANARY}, RolledBack: {ROLLED_BACK_REASON}"]
    [(_, (ns, name, body), kwargs)] = fake.patches()
    assert (ns, name) == ("vision", "doorbell")
    assert body == {"metadata": {"annotations": {"visionfleet.io/retry": "2026-11-28T12:00:00.000000Z"}}}
    assert kwargs == {"field_manager": "kubectl-vision", "_content_type": "application/merge-patch+json"}
    stored = fake.store[("vision", "doorbell")]
    assert stored["spec"] == vd(rolled_back_status())["spec"] and stored["status"] == vd(rolled_back_status())["status"]


def test_retry_refused_is_one_line_and_patches_nothing():
    fake = FakeCustomObjects(vd(healthy_status()))
    code, out, err = run(fake, "retry", "doorbell", "-n", "vision", "--wait")
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("error: visiondeployment doorbell in namespace vision has nothing to retry (phase Healthy")
    assert fake.patches() == []


def test_retry_wait_returns_once_the_canary_is_in_flight_again():
    fake = FakeCustomObjects(vd(rolled_back_status()))
    gets = []

    def operator(obj):  # records the value on the second read after the patch, starts the canary on the third
        gets.append(1)
        value = obj["metadata"]["annotations"].get("visionfleet.io/retry")
        st = obj["status"]
        if value and len(gets) == 3:
            st["handledRetry"] = value
            st["history"].append({"revision": CANARY, "outcome": "Retried", "at": at(0),
                                  "reason": "retried by the visionfleet.io/retry annotation"})
        if value and len(gets) == 4:
            st.update(phase="Compiling", canaryRevision=CANARY, step=0, wave=0, canaryWeight=10)

    fake.on_get = operator
    clock = Clock()
    code, out, err = run(fake, "retry", "doorbell", "-n", "vision", "--wait", clock=clock)
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == (
        f"handled by the operator: phase Compiling; revision {CANARY} is the canary again; history: Retried "
        f"(retried by the visionfleet.io/retry annotation); stable {STABLE}")
    assert len(gets) == 4 and clock.sleeps == [1.0, 1.0]  # handled alone (the third read) is not enough


def test_retry_wait_also_ends_when_the_phase_moves_on():
    fake = FakeCustomObjects(vd(rolled_back_status()))

    def operator(obj):  # e.g. the spec went back to the stable revision meanwhile
        value = obj["metadata"]["annotations"].get("visionfleet.io/retry")
        if value:
            obj["status"].update(handledRetry=value, phase="Healthy")

    fake.on_get = operator
    code, out, _ = run(fake, "retry", "doorbell", "-n", "vision", "--wait")
    assert code == 0 and out.splitlines()[-1] == (
        f"handled by the operator: phase Healthy; no canary in flight; stable {STABLE}")


def test_retry_wait_times_out_saying_what_it_saw():
    fake = FakeCustomObjects(vd(rolled_back_status()))
    clock = Clock()
    code, _, err = run(fake, "retry", "doorbell", "-n", "vision", "--wait", "--timeout", "3", clock=clock)
    assert code == 1 and err.startswith("error: timed out after 3s waiting for the operator to act on "
                                        "visionfleet.io/retry=2026-11-28T12:00:00.000000Z (phase RolledBack); "
                                        "the annotation stays set")

    def records_and_ignores(obj):
        value = obj["metadata"]["annotations"].get("visionfleet.io/retry")
        if value:
            obj["status"]["handledRetry"] = value

    fake.on_get = records_and_ignores
    code, _, err = run(fake, "retry", "doorbell", "-n", "vision", "--wait", "--timeout", "3", clock=Clock())
    assert code == 1 and err == (
        "error: timed out after 3s waiting for the operator to retry: it recorded visionfleet.io/retry="
        "2026-11-28T12:00:00.000001Z (status.handledRetry) but no canary is in flight and the phase is still "
        "RolledBack (kubectl vision status)\n")


def test_pause_then_resume_sends_true_then_null():
    fake = FakeCustomObjects(vd(mid_rollout_status()))
    code, out, _ = run(fake, "pause", "doorbell", "-n", "vision")
    assert code == 0
    assert out.splitlines()[0] == 'visiondeployment vision/doorbell: visionfleet.io/paused: (unset) -> "true"'
    assert run(fake, "pause", "doorbell", "-n", "vision")[1] == (
        "visiondeployment vision/doorbell: already paused; nothing changed\n")
    code, out, _ = run(fake, "resume", "doorbell", "-n", "vision")
    assert out == 'visiondeployment vision/doorbell: visionfleet.io/paused: "true" -> (unset)\n'
    assert run(fake, "resume", "doorbell", "-n", "vision")[1] == (
        "visiondeployment vision/doorbell: not paused; nothing changed\n")
    bodies = [(c[1][2], c[2]) for c in fake.patches()]
    assert bodies == [({"metadata": {"annotations": {"visionfleet.io/paused": "true"}}},
                       {"field_manager": "kubectl-vision", "_content_type": "application/merge-patch+json"}),
                      ({"metadata": {"annotations": {"visionfleet.io/paused": None}}},
                       {"field_manager": "kubectl-vision", "_content_type": "application/merge-patch+json"})]
    assert "visionfleet.io/paused" not in fake.store[("vision", "doorbell")]["metadata"]["annotations"]


def test_resume_warns_when_git_holds_the_annotation():
    obj = vd(mid_rollout_status(), annotations={"visionfleet.io/paused": "true"})
    obj["metadata"]["managedFields"].append({"manager": "argocd-controller", "operation": "Apply", "fieldsV1": {
        "f:metadata": {"f:annotations": {"f:visionfleet.io/paused": {}}}}})
    code, _, err = run(FakeCustomObjects(obj), "resume", "doorbell", "-n", "vision")
    assert code == 0 and err.startswith("warning: visionfleet.io/paused is also set by field manager argocd-controller")


def event(kind: str, obj: dict) -> dict:
    return {"type": kind, "object": obj}


def moved(obj: dict, rv: str, **status) -> dict:
    obj = copy.deepcopy(obj)
    obj["metadata"]["resourceVersion"] = rv
    obj["status"].update(status)
    for k, v in list(obj["status"].items()):
        if v is None:
            del obj["status"][k]
    return obj


def test_watch_renders_each_change_until_done():
    start = vd(mid_rollout_status())
    fake = FakeCustomObjects(start)
    step3 = moved(start, "201", step=2, canaryWeight=100)
    done = moved(step3, "205", phase="Healthy", stableRevision=CANARY, canaryRevision=None, step=None, wave=None,
                 canaryWeight=None, stepStartedAt=None)
    fake.watches = [[event("MODIFIED", step3), {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "203"}}},
                     event("MODIFIED", done)]]
    code, out, err = run(fake, "watch", "doorbell", "-n", "vision", "--until-done")
    assert (code, err) == (0, "")
    renders = out.split("---\n")
    assert len(renders) == 3
    assert renders[0] == render_status(start, NOW)
    assert "Step:        3/3   weight 100% on the canary" in renders[1]
    assert renders[2].startswith(render_status(done, NOW)) and out.endswith("doorbell: Healthy\n")
    [(_, (ns,), kwargs)] = [c for c in fake.calls if c[0] == "watch"]
    assert ns == "vision" and kwargs["field_selector"] == "metadata.name=doorbell"
    assert kwargs["resource_version"] == "100" and kwargs["allow_watch_bookmarks"] is True
    assert kwargs["timeout_seconds"] == 300


def test_watch_starts_again_from_a_fresh_list_when_the_resource_version_expires():
    start = vd(mid_rollout_status())
    fake = FakeCustomObjects(start)
    done = moved(start, "300", phase="Healthy", stableRevision=CANARY, canaryRevision=None, step=None, wave=None,
                 canaryWeight=None, stepStartedAt=None)

    def operator_finishes():  # while the watch is down the rollout ends and etcd compacts
        fake.store[("vision", "doorbell")] = copy.deepcopy(done)
        fake.rv = 300

    fake.watches = [[operator_finishes, {"type": "ERROR", "object": {
        "kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version: 100 (250)"}}]]
    code, out, err = run(fake, "watch", "doorbell", "-n", "vision", "--until-done")
    assert (code, err) == (0, "")
    assert [c[0] for c in fake.calls] == ["list", "watch", "list"]
    assert out.split("---\n")[1].startswith(render_status(done, NOW))


def test_watch_on_a_terminal_clears_the_screen_and_stops_at_the_timeout():
    fake = FakeCustomObjects(vd(mid_rollout_status()))
    code, out, err = run(fake, "watch", "doorbell", "-n", "vision", "--timeout", "60", tty=True, clock=Clock(step=7))
    assert (code, err) == (0, "")
    assert out.startswith("\x1b[H\x1b[2JWatching vision/doorbell (Ctrl-C to stop), 12:00:00Z\n\nName:")
    assert out.count("\x1b[H\x1b[2J") >= 2  # quiet watches end every 30 s on a terminal: the ages are redrawn
    assert all(c[2]["timeout_seconds"] <= 30 for c in fake.calls if c[0] == "watch")
    code, out, err = run(fake, "watch", "doorbell", "-n", "vision", "--timeout", "60", "--until-done",
                         clock=Clock(step=7))
    assert code == 1 and err == "watch: timed out after 60s, phase RollingOut\n" and "---" not in out


def test_watch_stops_when_the_object_is_deleted():
    start = vd(mid_rollout_status())
    fake = FakeCustomObjects(start)
    fake.watches = [[event("DELETED", start)]]
    code, out, _ = run(fake, "watch", "doorbell", "-n", "vision")
    assert code == 1 and out.endswith("visiondeployment doorbell was deleted\n")
    assert run(fake, "watch", "nope", "-n", "vision")[2] == (
        "error: visiondeployment nope not found in namespace vision\n")


# -- kubeconfig, as kubectl reads it ----------------------------------------------------------------

KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: fleet, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: dev, user: {token: not-a-real-token}}]
contexts:
  - {name: fleet-vision, context: {cluster: fleet, user: dev, namespace: vision}}
  - {name: fleet-plain, context: {cluster: fleet, user: dev}}
current-context: fleet-vision
"""


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    path = tmp_path / "config"
    path.write_text(KUBECONFIG)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{path}")
    return path


def test_namespace_and_context_come_from_the_kubeconfig(kubeconfig, monkeypatch):
    from kubernetes.client import CustomObjectsApi

    cluster, ns = connect(None, None)
    assert ns == "vision" and cluster.host == "https://127.0.0.1:1"
    assert isinstance(cluster.custom, CustomObjectsApi)
    assert connect(None, "fleet-plain")[1] == "default"
    with pytest.raises(CliError, match="context 'prod' not found in the kubeconfig .*have: fleet-vision, fleet-plain"):
        connect(None, "prod")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig.parent / "missing"))
    with pytest.raises(CliError, match=r"no kubeconfig: \$KUBECONFIG \(.*missing\) does not exist"):
        connect(None, None)
    assert connect(str(kubeconfig), None)[1] == "vision"  # --kubeconfig wins over $KUBECONFIG
    with pytest.raises(CliError, match="kubeconfig /nowhere does not exist"):
        connect("/nowhere", None)


def test_an_unreachable_server_is_one_line(kubeconfig):
    """The real client, the real kubeconfig, a port nothing listens on."""
    proc = subprocess.run([sys.executable, "-m", "visionfleet.kubectl_vision", "status", "doorbell"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("error: cannot reach the API server at https://127.0.0.1:1: ")
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_no_kubeconfig_is_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    proc = subprocess.run([sys.executable, "-m", "visionfleet.kubectl_vision", "pause", "doorbell"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == f"error: no kubeconfig: $KUBECONFIG ({tmp_path / 'none'}) does not exist; point KUBECONFIG " \
                          f"or --kubeconfig at your cluster's kubeconfig\n"


# -- packaging --------------------------------------------------------------------------------------


def test_the_operator_never_imports_the_plugin():
    for path in PKG.rglob("*.py"):
        if path.name == "kubectl_vision.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            assert not any("kubectl_vision" in n for n in [module, *names]), path


def test_the_plugin_is_the_kubectl_vision_console_script():
    text = (REPO / "operator" / "pyproject.toml").read_text()
    assert 'kubectl-vision = "visionfleet.kubectl_vision:main"' in text
