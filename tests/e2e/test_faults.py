"""The fault suite: whatever fails, the operator ends in a safe state, says why, and never promotes
what it has not measured. Each test injects one fault on the real API server / a real HTTP endpoint
and asserts the safe end state.

    Prometheus answering badly (timeout, no series, NaN, several series, query error, 503)
        -> never a pass; with onInconclusive: Rollback, rolled back at inconclusiveLimit
    Prometheus down for a while (the default onInconclusive: Pause) -> Paused, never rolled back;
        the rollout goes on by itself once data returns
    the operator SIGKILLed between two writes of a pass, or while a compile Job runs
        -> resumes from status: no duplicate object, no duplicate history, the rollout finishes
    deleted while the operator is down -> the finalizer is removed once it is back
    two replicas with peering -> exactly one acts; the other takes over when it goes
    canary pods that never become Ready -> never promoted, the weight never advances; abort works
    abort with the canary at 100 % -> all traffic back on stable
    compile Jobs: OOMKilled, image pull failure, unschedulable, deadline exceeded -> Failed, with why
    API server errors (500, 429 with Retry-After, 409) and stalled watches -> the rollout still
        completes, nothing duplicated
"""

from __future__ import annotations

import collections
import copy
import signal
import time
import uuid
from pathlib import Path

import pytest
import yaml

from visionfleet_e2e.chart import CHART, service_account_kubeconfig
from visionfleet_e2e.faults import (
    HEALTHY,
    PROMETHEUS_MODES,
    ApiFaults,
    FaultyApiServer,
    FaultyPrometheus,
    proxy_kubeconfig,
)

from ..helpers import wait_for
from .conftest import OperatorProcess
from .test_operator_rollout import VD, Given, vd_with

pytestmark = pytest.mark.cluster
SIM = "sim.visionfleet.io/outcome"


@pytest.fixture()
def operators(cluster, tmp_path, without_session_operator):
    """Start operators of our own (the session's is stopped meanwhile); all stopped at the end."""
    from visionfleet_e2e.cli import install_crds

    install_crds(cluster)
    started: list[OperatorProcess] = []

    def start(name: str = "op", env: dict | None = None, args: list[str] | None = None) -> OperatorProcess:
        op = OperatorProcess(cluster, tmp_path / f"{name}.log", env=env, args=["--metrics-port=0", *(args or [])])
        op.start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


def no_duplicates(g: Given) -> None:
    """One Job per (class, revision), one Deployment per (class, revision, track), history unique."""
    jobs = collections.Counter((j["metadata"]["labels"]["visionfleet.io/class"],
                                j["metadata"]["labels"]["visionfleet.io/revision"]) for j in g.objects("jobs"))
    assert all(n == 1 for n in jobs.values()), jobs
    deps = collections.Counter((d["metadata"]["labels"]["visionfleet.io/class"],
                                d["metadata"]["labels"]["visionfleet.io/revision"],
                                d["metadata"]["annotations"].get("visionfleet.io/track"))
                               for d in g.objects("deployments"))
    assert all(n == 1 for n in deps.values()), deps
    hist = [(h["revision"], h["outcome"]) for h in g.status().get("history", [])]
    assert len(hist) == len(set(hist)), hist


def watch_weights(g: Given, until, timeout=120, interval=0.3):
    """Poll the status until ``until(status)``; return (final status, every (phase, weight, verdict) seen)."""
    seen = []

    def done():
        st = g.status()
        seen.append((st.get("phase"), st.get("canaryWeight"), (st.get("analysis") or {}).get("verdict")))
        return until(st) and st
    return wait_for(done, timeout=timeout, interval=interval, what="the expected end state"), seen


# --- Prometheus -----------------------------------------------------------------------------------

@pytest.fixture()
def namespaces(cluster, namespace):
    """``n`` fresh namespaces: the test's own and n - 1 more (each with the "models" claim), for cases
    that run side by side under one operator; deleted afterwards."""
    made: list[str] = []

    def make(n: int) -> list[str]:
        new = []
        for _ in range(n - 1):
            name = f"t-{uuid.uuid4().hex[:8]}"
            cluster.kubectl("create", "namespace", name)
            cluster.ensure_claim(name, "models")
            new.append(name)
        for name in new:  # as the namespace fixture: pods are refused until the default ServiceAccount exists
            wait_for(lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
                     timeout=60, what=f"default ServiceAccount of {name}")
        made.extend(new)
        return [namespace, *new]

    yield make
    for name in made:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_a_bad_prometheus_never_passes_and_rolls_back_at_the_limit(cluster, operators, namespaces):
    """Every way of answering badly, side by side: one namespace and one FaultyPrometheus per mode,
    one operator for all (the cases are independent; run in turn they took six times as long)."""
    proms = {mode: FaultyPrometheus(mode, delay=30).start() for mode in PROMETHEUS_MODES}
    try:
        operators()
        steps = [{"setWeight": 50, "pause": "1s"}, {"setWeight": 100}]

        def analysis(mode):
            return {"interval": "2s", "prometheus": {"url": proms[mode].url, "timeout": "2s"},
                    "slo": {"latencyP99Ms": 100, "errorRate": 0.05, "minRequests": 10},
                    "failureLimit": 1, "inconclusiveLimit": 2, "consecutiveErrorLimit": 2,
                    "onInconclusive": "Rollback"}
        def vd(mode, **changes):
            # The CPU class only: six canaries side by side would not fit the fleet's L4 GPUs, and
            # what is judged here (the analysis) is the same for every class.
            obj = vd_with(rollout__steps=steps, analysis=analysis(mode), **changes)
            obj["spec"]["fleet"]["classes"] = [c for c in obj["spec"]["fleet"]["classes"] if c["name"] == "xeon"]
            return obj
        given = {mode: Given(cluster, ns) for mode, ns in zip(PROMETHEUS_MODES, namespaces(len(PROMETHEUS_MODES)))}
        for mode, g in given.items():
            g.apply(vd(mode))
        v1 = {mode: g.wait_phase("Healthy")["stableRevision"] for mode, g in given.items()}  # nothing to compare against
        for mode, g in given.items():
            g.apply(vd(mode, model__version="2"))
        seen: dict[str, list] = {mode: [] for mode in given}
        ended: dict[str, dict] = {}

        def all_rolled_back():
            for mode, g in given.items():
                if mode in ended:
                    continue
                st = g.status()
                seen[mode].append((st.get("phase"), st.get("canaryWeight"), (st.get("analysis") or {}).get("verdict")))
                if st.get("phase") == "RolledBack":
                    ended[mode] = st
            return len(ended) == len(given)
        try:
            wait_for(all_rolled_back, timeout=180, interval=0.3, what="every mode RolledBack")
        except AssertionError as e:
            raise AssertionError(f"{e}; not RolledBack: {sorted(set(given) - set(ended))}") from None
        for mode, g in given.items():
            st = ended[mode]
            assert st["stableRevision"] == v1[mode] and not st.get("canaryRevision"), mode
            assert st["history"][-1]["outcome"] == "RolledBack", mode
            assert "inconclusive 2 times in a row" in st["history"][-1]["reason"], (mode, st["history"][-1])
            assert all(v != "Passed" for _, _, v in seen[mode]), f"{mode}: a bad Prometheus produced a pass"
            assert all((w or 0) <= 50 for _, w, _ in seen[mode]), f"{mode}: the weight advanced without a pass"
            assert proms[mode].queries > 0, mode
            no_duplicates(g)
    finally:
        for prom in proms.values():
            prom.stop()


def test_a_prometheus_outage_pauses_the_rollout_which_goes_on_when_data_returns(cluster, operators, namespace):
    prom = FaultyPrometheus(HEALTHY).start()
    try:
        operators()
        analysis = {"interval": "2s", "prometheus": {"url": prom.url, "timeout": "2s"},
                    "slo": {"latencyP99Ms": 100, "errorRate": 0.05, "minRequests": 10},
                    "inconclusiveLimit": 2, "consecutiveErrorLimit": 2}  # onInconclusive: Pause (default)
        steps = [{"setWeight": 50, "pause": "1s"}, {"setWeight": 100}]
        g = Given(cluster, namespace).apply(vd_with(rollout__steps=steps, analysis=analysis))
        v1 = g.wait_phase("Healthy")["stableRevision"]
        prom.mode = "server-error"
        g.apply(vd_with(model__version="2", rollout__steps=steps, analysis=analysis))
        st = g.wait_phase("Paused", timeout=120)
        paused = next(c for c in st["conditions"] if c["type"] == "Paused")
        assert paused["status"] == "True" and paused["reason"] == "AnalysisInconclusive", paused
        assert st["analysis"]["verdict"] == "Error" and "refused" in st["analysis"]["reason"], st["analysis"]
        # the outage lasts: the rollout holds at its step, never rolls back, never advances
        end = time.monotonic() + 15
        while time.monotonic() < end:
            s = g.status()
            assert s.get("phase") == "Paused" and s.get("canaryWeight") == 50, (s.get("phase"), s.get("canaryWeight"))
            time.sleep(0.5)
        v2 = g.status()["canaryRevision"]
        prom.mode = HEALTHY
        st = wait_for(lambda: (s := g.status()).get("phase") == "Healthy" and s.get("stableRevision") == v2 and s,
                      timeout=120, what="the rollout to go on once Prometheus answers again")
        assert st["stableRevision"] != v1
        assert [h["outcome"] for h in st["history"]] == ["Promoted", "Promoted"]
    finally:
        prom.stop()


# --- the operator killed ----------------------------------------------------------------------------

@pytest.mark.parametrize("point", ["after-child-apply", "after-weight-change", "while-compiling"])
def test_operator_killed_at_a_transition_resumes_without_duplicates(cluster, operators, namespace, point):
    steps = [{"setWeight": 50, "pause": "2s"}, {"setWeight": 100}]
    op = operators("first")
    g = Given(cluster, namespace).apply(vd_with(rollout__steps=steps))
    v1 = g.wait_phase("Healthy")["stableRevision"]
    op.stop()
    if point == "while-compiling":
        op = operators("second")
        g.apply(vd_with(model__version="2", rollout__steps=steps))
        wait_for(lambda: g.status().get("phase") == "Compiling" and g.objects("jobs") and
                 any(p["status"].get("phase") == "Running" for p in
                     cluster.kubectl_json("get", "pods", "-n", namespace, "-l",
                                          "app.kubernetes.io/component=compile")["items"]),
                 timeout=60, interval=0.1, what="a compile Job running")
        op.stop(signal.SIGKILL)
    else:
        # the next pass that writes at this point SIGKILLs the operator itself, mid-pass
        op = operators("crashing", env={"VISIONFLEET_TEST_CRASH_AT": point})
        g.apply(vd_with(model__version="2", rollout__steps=steps))
        wait_for(lambda: op.proc.poll() is not None, timeout=90, what=f"the operator to crash at {point}")
        assert op.proc.returncode == -signal.SIGKILL
        assert f"crash point {point}" in op.log_path.read_text()
    operators("restarted")
    st = wait_for(lambda: (s := g.status()).get("phase") == "Healthy" and s.get("stableRevision") != v1 and s,
                  timeout=120, what="the restarted operator to finish the rollout")
    assert [h["outcome"] for h in st["history"]] == ["Promoted", "Promoted"]
    no_duplicates(g)
    wait_for(lambda: {d["metadata"]["labels"]["visionfleet.io/revision"] for d in g.objects("deployments")}
             == {st["stableRevision"]}, what="only the new stable serving")


def test_deletion_while_the_operator_is_down(cluster, operators, namespace):
    op = operators()
    g = Given(cluster, namespace).apply(VD)
    g.wait_phase("Healthy")
    op.stop()
    cluster.kubectl("delete", "vd", "doorbell", "-n", namespace, "--wait=false")
    time.sleep(2)
    vd = g.vd()  # still there: the finalizer waits for the operator
    assert vd["metadata"].get("deletionTimestamp") and "visionfleet.io/finalizer" in vd["metadata"]["finalizers"]
    operators("back")
    wait_for(lambda: cluster.kubectl("get", "vd", "doorbell", "-n", namespace, check=False).returncode != 0,
             timeout=60, what="the VisionDeployment gone once the operator is back")
    wait_for(lambda: not g.objects("deployments") and not g.objects("jobs"), timeout=60,
             what="its children garbage-collected")


def test_two_replicas_exactly_one_acts(cluster, operators, namespace):
    cluster.kubectl("apply", "--server-side", "--field-manager=tests", "-f", str(CHART / "crds" / "kopf-peerings.yaml"))
    cluster.wait_established("clusterkopfpeerings.kopf.dev")
    peering = f"vf-ha-{namespace}"
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": peering}}))
    try:
        low = operators("low", env={"VISIONFLEET_PEERING": peering, "VISIONFLEET_PRIORITY": "10"})
        high = operators("high", env={"VISIONFLEET_PEERING": peering, "VISIONFLEET_PRIORITY": "20"})
        time.sleep(3)
        g = Given(cluster, namespace).apply(VD)
        g.wait_phase("Healthy")
        acted = lambda op: "NewRevision" in op.log_path.read_text()  # noqa: E731
        assert acted(high) and not acted(low), "the lower-priority replica acted while the higher one ran"
        high.stop()  # graceful: it leaves the peering at once, the other resumes
        g.apply(vd_with(model__version="2"))
        wait_for(lambda: (s := g.status()).get("phase") == "Healthy" and len(s.get("history", [])) == 2,
                 timeout=120, what="the standby replica to take over and promote revision 2")
        assert acted(low)
        no_duplicates(g)
    finally:
        cluster.kubectl("delete", "clusterkopfpeering", peering, "--ignore-not-found")


# --- canaries that misbehave, aborts ----------------------------------------------------------------

def with_outcome(obj: dict, outcome: str, cls: int = 1) -> dict:
    obj = copy.deepcopy(obj)
    c = obj["spec"]["fleet"]["classes"][cls]
    c["tolerations"] = [*c.get("tolerations", []),
                        {"key": SIM, "operator": "Equal", "value": outcome, "effect": "NoSchedule"}]
    return obj


def test_canary_pods_that_never_become_ready_are_never_promoted_and_abort_works(cluster, operators, namespace):
    operators()
    steps = [{"setWeight": 50, "pause": "1s"}, {"setWeight": 100}]
    g = Given(cluster, namespace).apply(vd_with(rollout__steps=steps))
    v1 = g.wait_phase("Healthy")["stableRevision"]
    # v2's Triton pods on the xeon class never start (its compile pods do: the kwok stage holds only
    # the non-compile pods with this toleration)
    g.apply(with_outcome(vd_with(model__version="2", rollout__steps=steps), "ServingNotReady"))
    time.sleep(15)
    st = g.status()
    assert st["stableRevision"] == v1 and st.get("canaryRevision") and st["phase"] == "Verifying"
    assert not st.get("stepStartedAt") and st.get("step") == 0, "the step's pause began without Ready pods"
    g.c.kubectl("annotate", "vd", "doorbell", "-n", namespace, "visionfleet.io/abort=now", "--overwrite")
    st = g.wait_phase("RolledBack")
    assert st["history"][-1]["outcome"] == "Aborted" and st["stableRevision"] == v1
    wait_for(lambda: {d["metadata"]["labels"]["visionfleet.io/revision"] for d in g.objects("deployments")} == {v1},
             what="the never-Ready canary removed")
    no_duplicates(g)


def test_abort_with_the_canary_at_full_weight_sends_traffic_back(cluster, operators, namespace):
    operators()
    steps = [{"setWeight": 50, "pause": "1s"}, {"setWeight": 100, "pause": "1h"}]
    g = Given(cluster, namespace).apply(vd_with(rollout__steps=steps))
    v1 = g.wait_phase("Healthy")["stableRevision"]
    g.apply(vd_with(model__version="2", rollout__steps=steps))
    wait_for(lambda: g.status().get("canaryWeight") == 100 and g.status().get("stepStartedAt"), timeout=90,
             what="the canary at 100 %")
    g.c.kubectl("annotate", "vd", "doorbell", "-n", namespace, "visionfleet.io/abort=1", "--overwrite")
    st = g.wait_phase("RolledBack")
    assert st["stableRevision"] == v1 and st["history"][-1]["outcome"] == "Aborted"
    wait_for(lambda: (deps := g.objects("deployments")) and
             {d["metadata"]["labels"]["visionfleet.io/revision"] for d in deps} == {v1} and
             all(d["spec"]["replicas"] >= 1 and d["status"].get("readyReplicas") == d["spec"]["replicas"]
                 for d in deps), what="stable back at full size, canary gone")


# --- compile Jobs -----------------------------------------------------------------------------------

COMPILE_FAULTS = {  # fault -> what the class's compile message must say
    "OOMKilled": "OOMKilled",
    "ErrImagePull": "DeadlineExceeded",
    "unschedulable": "DeadlineExceeded",
    "deadline": "DeadlineExceeded",
}


def test_compile_job_failures_end_failed_with_the_reason(cluster, operators, namespaces):
    """Each way a compile Job fails, side by side in its own namespace under one operator."""
    operators()
    given = {}
    for fault, ns in zip(COMPILE_FAULTS, namespaces(len(COMPILE_FAULTS))):
        obj = vd_with()
        obj["spec"]["fleet"]["classes"] = [obj["spec"]["fleet"]["classes"][1]]  # xeon only
        obj["spec"]["compile"] = {"timeout": "12s"}
        if fault == "unschedulable":  # the class exists, but no node of it can take the Job
            obj["spec"]["fleet"]["classes"][0]["resources"] = {"requests": {"cpu": "500"}}
        else:
            obj = with_outcome(obj, {"deadline": "NotReady"}.get(fault, fault), cls=0)
        given[fault] = Given(cluster, ns).apply(obj)
    # while they wait (until their 12 s deadline), the classes say why: both watched at once, each
    # recorded when first seen, so neither's window is shortened by waiting for the other
    expect = {"ErrImagePull": "ErrImagePull", "unschedulable": "Insufficient cpu"}
    said: set[str] = set()

    def both_said():
        for fault, text in expect.items():
            if fault not in said and text in str((given[fault].status().get("classes") or [{}])[0]
                                                 .get("compile", {}).get("message")):
                said.add(fault)
        return said == set(expect)
    try:
        wait_for(both_said, timeout=30, what="each waiting class's compile message to say why")
    except AssertionError as e:
        raise AssertionError(f"{e}; never said: {sorted(set(expect) - said)}") from None
    for fault, g in given.items():
        st = g.wait_phase("Failed", timeout=90)
        assert st["history"][-1]["outcome"] == "CompileFailed", fault
        assert COMPILE_FAULTS[fault] in st["classes"][0]["compile"]["message"], (fault, st["classes"][0]["compile"])
        assert not g.objects("deployments"), f"{fault}: nothing is served from a failed compile"


# --- the API server misbehaving ---------------------------------------------------------------------

@pytest.mark.parametrize("faults", [
    ApiFaults(status=500, every=4),
    ApiFaults(status=429, every=3, retry_after=1),
    ApiFaults(status=409, every=2, methods=("PATCH", "PUT")),
    ApiFaults(stall_watches=20.0),
], ids=["500", "429-retry-after", "409-on-writes", "stalled-watches"])
def test_api_server_errors_do_not_lose_or_duplicate_anything(cluster, operators, namespace, tmp_path, faults):
    sa, ns = "vf-faults", namespace
    cluster.kubectl("create", "serviceaccount", sa, "-n", ns)
    cluster.kubectl("create", "clusterrolebinding", f"vf-faults-{ns}", "--clusterrole=cluster-admin",
                    f"--serviceaccount={ns}:{sa}")
    try:
        direct = service_account_kubeconfig(cluster, ns, sa, tmp_path / "direct.kubeconfig")
        conf = yaml.safe_load(Path(direct).read_text())
        upstream = conf["clusters"][0]["cluster"]
        proxy = FaultyApiServer(upstream["server"], upstream.get("certificate-authority"), None, faults).start()
        try:
            kubeconfig = tmp_path / "proxy.kubeconfig"
            kubeconfig.write_text(yaml.safe_dump(proxy_kubeconfig(conf, proxy.url, conf["users"][0]["user"]["token"])))
            operators("behind-proxy", env={"KUBECONFIG": str(kubeconfig)})
            steps = [{"setWeight": 50, "pause": "1s"}, {"setWeight": 100}]
            g = Given(cluster, namespace).apply(vd_with(rollout__steps=steps))
            v1 = g.wait_phase("Healthy", timeout=150)["stableRevision"]
            g.apply(vd_with(model__version="2", rollout__steps=steps))
            st = wait_for(lambda: (s := g.status()).get("phase") == "Healthy" and s.get("stableRevision") != v1 and s,
                          timeout=150, what="revision 2 promoted through the faults")
            assert [h["outcome"] for h in st["history"]] == ["Promoted", "Promoted"]
            no_duplicates(g)
            assert proxy.injected > 0 or faults.counts.get("stalled-watch"), "no fault was injected"
        finally:
            proxy.stop()
    finally:
        cluster.kubectl("delete", "clusterrolebinding", f"vf-faults-{ns}", "--ignore-not-found")
