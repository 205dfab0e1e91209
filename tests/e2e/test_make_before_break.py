"""Make before break, with time in it: Triton pods take ~15 s to turn Ready, as a real one loading its
model does, and a watch records the Ready pods of every class all along. Whatever ends a canary —
a failed analysis at 50 % or at 100 %, an abort, a newer revision — and whatever a new revision
changes (the model, or only the serving image), a class that served is never left without a Ready
Triton pod: the stable is Ready again *before* the canary goes.

    Given  a namespace whose Triton pods are Ready 15 s after they start (sim.visionfleet.io/ready-after)
      and  a sampler watching the Ready Triton pods per class
    When   the canary is rolled back / aborted / superseded / promoted
    Then   no instant without a Ready serving pod in any class that has served

The delay comes from the local fleet's kwok stages and admission policy (docs/local-fleet.md). The
first test checks that machinery itself: the delay, a pod turning unready mid-flight, the sampler.
"""

from __future__ import annotations

import copy
import json
import time

import pytest

from visionfleet_e2e.ready_sampler import ReadySampler
from visionfleet_e2e.sim_policies import READY_AFTER, UNREADY, set_ready_delay

from ..helpers import wait_for
from .test_operator_rollout import VD, Given

pytestmark = pytest.mark.cluster

DELAY_S = 15
MIN_READY = {"l4": 2, "xeon": 1}  # replicas.min of VD's classes: what the stable serves with
NEW_IMAGE = "nvcr.io/nvidia/tritonserver:24.11-py3"
SLOW = {"steps": [{"setWeight": 50, "pause": "30s"}, {"setWeight": 100, "pause": "1h"}]}
TO_FULL = {"steps": [{"setWeight": 50, "pause": "2s"}, {"setWeight": 100, "pause": "1h"}]}
QUICK = {"steps": [{"setWeight": 50, "pause": "2s"}, {"setWeight": 100, "pause": "2s"}]}


def spec(version: str = "1", rollout: dict | None = None, prometheus: str | None = None,
         image: str | None = None) -> dict:
    obj = copy.deepcopy(VD)
    obj["spec"]["model"]["version"] = version
    obj["spec"]["rollout"] = copy.deepcopy(rollout or TO_FULL)
    if image:
        obj["spec"]["serving"]["image"] = image
    if prometheus:
        obj["spec"]["analysis"] = {"interval": "2s", "prometheus": {"url": prometheus, "timeout": "2s"},
                                   "slo": {"latencyP99Ms": 20, "errorRate": 0.01, "minRequests": 10},
                                   "failureLimit": 1, "inconclusiveLimit": 5}
    return obj


class Timed(Given):
    """Given/When/Then around one VisionDeployment whose Triton pods take DELAY_S to turn Ready,
    with ``self.ready`` recording the Ready pods of each class from a watch."""

    def __init__(self, cluster, namespace, sampler: ReadySampler):
        super().__init__(cluster, namespace)
        self.ready = sampler
        self.seen: list[tuple[float, str | None, int | None, str | None]] = []  # (t, phase, weight, canary)

    def status_until(self, predicate, timeout: float = 150, what: str = "status"):
        """Poll the status until ``predicate(status)``; every (phase, weight, canary) seen is kept."""
        last: dict = {}

        def check():
            st = last["status"] = self.status()
            self.seen.append((time.monotonic(), st.get("phase"), st.get("canaryWeight"), st.get("canaryRevision")))
            return predicate(st) and st
        try:
            return wait_for(check, timeout=timeout, interval=0.3, what=what)
        except AssertionError as e:
            st = last.get("status") or {}
            said = {k: st.get(k) for k in ("phase", "stableRevision", "canaryRevision", "canaryWeight", "step")}
            raise AssertionError(f"{e}\nstatus: {said}; last history: {(st.get('history') or [None])[-1]}; "
                                 f"analysis: {st.get('analysis')}\nReady pods:\n{self.ready.describe()}") from None

    def healthy(self, obj: dict) -> str:
        """Given a first revision applied and Healthy (its pods through the delay); its revision."""
        t0 = time.monotonic()
        self.apply(obj)
        st = self.status_until(lambda s: s.get("phase") == "Healthy", what="the first revision Healthy")
        pods = self.ready.pods()
        assert pods and all((p["metadata"].get("annotations") or {}).get(READY_AFTER) == f"{DELAY_S}s" for p in pods), \
            "the namespace's readiness delay did not reach every Triton pod"
        assert time.monotonic() - t0 >= DELAY_S - 1, "Healthy before the pods could be Ready: is the delay on?"
        return st["stableRevision"]

    def canary(self) -> str:
        return self.status_until(lambda s: s.get("canaryRevision"), what="a canary")["canaryRevision"]

    def at_full_weight(self) -> dict:
        return self.status_until(lambda s: s.get("canaryWeight") == 100 and s.get("stepStartedAt"),
                                 what="the canary at 100 % with its pods Ready")

    def stable_back(self, stable: str, canary: str, timeout: float = 120) -> float:
        """Wait until the stable has replicas.min Ready pods in every class and no canary pod is
        Ready; returns when (monotonic)."""
        self.ready.wait_until(
            lambda s: all(s.ready(c, stable) >= n for c, n in MIN_READY.items())
            and all(s.ready(c, canary) == 0 for c in MIN_READY),
            timeout=timeout, what=f"stable {stable} Ready at full size and canary {canary} without Ready pods")
        return time.monotonic()

    def weights(self, since: float = 0) -> set[int | None]:
        return {w for t, _, w, _ in self.seen if t >= since}


@pytest.fixture()
def timed(cluster, operator, namespace):
    """The namespace's Triton pods take DELAY_S to be Ready; a sampler watches them."""
    set_ready_delay(cluster, namespace, f"{DELAY_S}s")
    with ReadySampler(cluster, namespace, "doorbell") as sampler:
        yield Timed(cluster, namespace, sampler)


def triton_deployment(name: str, cls: str, component: str = "triton") -> dict:
    labels = {"app": name, "app.kubernetes.io/component": component, "visionfleet.io/class": cls,
              "visionfleet.io/revision": "r1"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"nodeSelector": {"node.kubernetes.io/instance-type": "c7i.4xlarge"},
                                           "containers": [{"name": "c", "image": "triton"}]}}}}


# --- the machinery: delay, unready mid-flight, the sampler -------------------------------------------

def test_the_delay_and_unready_pods_are_simulated_and_sampled(cluster, namespace):
    set_ready_delay(cluster, namespace, "4s")
    with ReadySampler(cluster, namespace) as ready:
        t0 = ready.mark("created")
        docs = [triton_deployment("served", "xeon"), triton_deployment("other", "xeon", component="web")]
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                              "items": docs}))
        # Given a Triton pod in the namespace: Running at once, but not Ready
        ready.wait_until(lambda s: any(p["status"].get("phase") == "Running" for p in s.pods()), timeout=30,
                         what="the Triton pod Running")
        pod = ready.pods()[0]
        assert pod["metadata"]["annotations"][READY_AFTER] == "4s"
        assert ready.ready("xeon") == 0
        # ... Ready about 4 s after it started
        ready.wait_until(lambda s: s.ready("xeon") == 1, timeout=30, what="the Triton pod Ready")
        became = ready.first_reached("xeon")
        # (lastTransitionTime has whole seconds: the deadline can come up to 1 s early)
        assert 2.5 <= became - t0 <= 15, f"Ready {became - t0:.1f}s after creation"
        # a pod that is not Triton's gets no delay (the policy selects component=triton only)
        other = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "app=other")["items"][0]
        assert READY_AFTER not in (other["metadata"].get("annotations") or {})

        # When its readiness probe fails mid-flight, Then the sampler records the gap
        name = pod["metadata"]["name"]
        t_unready = ready.mark("unready")
        cluster.kubectl("annotate", "pod", name, "-n", namespace, f"{UNREADY}=true")
        ready.wait_until(lambda s: s.ready("xeon") == 0, timeout=15, what="the pod turned unready")
        time.sleep(1)
        cluster.kubectl("annotate", "pod", name, "-n", namespace, f"{UNREADY}-")
        ready.wait_until(lambda s: s.ready("xeon") == 1, timeout=30, what="the pod Ready again")
        ready.sync()
        gaps = ready.gaps(1, t_unready)
        assert len(gaps) == 1 and gaps[0].cls == "xeon" and gaps[0].minimum == 0, gaps
        assert 2.5 <= gaps[0].seconds <= 15, f"Ready again after {gaps[0].seconds:.1f}s (ready-after is 4s)"
        assert ready.minimum(t_unready) == {"xeon": 0} and ready.minimum(t0, "unready") == {"xeon": 1}
        with pytest.raises(AssertionError, match="fell below 1"):
            ready.assert_never_below(1, t0)
        ready.assert_never_below(1, t0, "unready")


# --- rollbacks --------------------------------------------------------------------------------------

def test_rollback_at_50_percent_keeps_every_class_serving(timed, prometheus, behave):
    g = timed
    v1 = g.healthy(spec(prometheus=prometheus.url, rollout=SLOW))
    behave(v1)
    behave(None, p99_ms=45.0)  # every new revision is slow
    t0 = g.ready.mark("v2 applied")
    g.apply(spec("2", prometheus=prometheus.url, rollout=SLOW))
    v2 = g.canary()
    st = g.status_until(lambda s: s.get("phase") == "RolledBack", what="the slow canary rolled back")
    assert st["stableRevision"] == v1 and "p99" in st["history"][-1]["reason"]
    assert 100 not in g.weights(t0), "the failure was to be caught at 50 %"
    t1 = g.stable_back(v1, v2)
    g.ready.assert_always_serving(t0, t1, MIN_READY)


def test_rollback_at_100_percent_keeps_every_class_serving(timed, prometheus, behave):
    g = timed
    v1 = g.healthy(spec(prometheus=prometheus.url))
    behave(v1)
    t0 = g.ready.mark("v2 applied")
    g.apply(spec("2", prometheus=prometheus.url))
    v2 = g.canary()
    g.at_full_weight()
    g.ready.mark("v2 turns slow at 100 %")
    behave(v2, p99_ms=45.0)
    st = g.status_until(lambda s: s.get("phase") == "RolledBack", what="the canary rolled back from 100 %")
    assert st["stableRevision"] == v1 and "p99" in st["history"][-1]["reason"]
    t1 = g.stable_back(v1, v2)
    g.ready.assert_always_serving(t0, t1, MIN_READY)


def test_abort_at_100_percent_keeps_every_class_serving(timed):
    g = timed
    v1 = g.healthy(spec())
    t0 = g.ready.mark("v2 applied")
    g.apply(spec("2"))
    v2 = g.canary()
    g.at_full_weight()
    g.ready.mark("abort")
    g.c.kubectl("annotate", "vd", g.name, "-n", g.ns, "visionfleet.io/abort=by-test")
    st = g.status_until(lambda s: s.get("phase") == "RolledBack", what="the abort handled")
    assert st["stableRevision"] == v1 and st["history"][-1]["outcome"] == "Aborted"
    t1 = g.stable_back(v1, v2)
    g.ready.assert_always_serving(t0, t1, MIN_READY)


def test_a_newer_revision_at_100_percent_keeps_every_class_serving(timed):
    g = timed
    v1 = g.healthy(spec())
    t0 = g.ready.mark("v2 applied")
    g.apply(spec("2"))
    v2 = g.canary()
    g.at_full_weight()
    g.ready.mark("v3 applied")
    g.apply(spec("3", rollout=SLOW))
    st = g.status_until(lambda s: s.get("canaryRevision") not in (None, v2), what="v3 as the canary")
    assert st["stableRevision"] == v1 and st["history"][-1]["outcome"] == "Superseded"
    t1 = g.stable_back(v1, v2)
    g.ready.assert_always_serving(t0, t1, MIN_READY)


# --- an image-only change ---------------------------------------------------------------------------

def test_an_image_only_change_leaves_the_stable_untouched_until_promotion(timed):
    g = timed
    v1 = g.healthy(spec(rollout=QUICK))
    stable_deps = {d["metadata"]["name"]: d for d in g.objects("deployments")}
    old_templates = {n: d["spec"]["template"] for n, d in stable_deps.items()}
    old_image = {n: [c["image"] for c in t["spec"]["containers"]] for n, t in old_templates.items()}
    assert all(NEW_IMAGE not in imgs for imgs in old_image.values())
    t0 = g.ready.mark("image changed")
    g.apply(spec(rollout=QUICK, image=NEW_IMAGE))
    v2 = g.canary()
    assert v2 != v1, "a new serving image is a new revision"
    g.status_until(lambda s: s.get("stableRevision") == v2, timeout=180, what="the new image promoted")
    promoted = g.ready.mark("promoted")
    st = g.status_until(lambda s: s.get("phase") == "Healthy", what="Healthy on the new image")
    assert [h["outcome"] for h in st["history"]][-1] == "Promoted"
    # Then the stable's Deployments kept their pod template (image and all) until the promotion
    for name, template in old_templates.items():
        history = [d for d in g.ready.deployment_history(name) if d.t <= promoted and d.event != "DELETED"]
        assert history, f"no record of {name}"
        changed = [(round(d.t - t0, 1), d.images) for d in history if d.template != template]
        assert not changed, f"the stable Deployment {name}'s pod template changed before the promotion: {changed}"
    # the new image ran in the new revision's own Deployments only
    for d in g.ready.deployment_history():
        if NEW_IMAGE in d.images:
            assert d.revision == v2 and d.name not in old_templates, d
    t1 = g.ready.wait_until(lambda s: all(s.ready(c, v2) >= n for c, n in MIN_READY.items()) and time.monotonic(),
                            what="the new stable at full size")
    g.ready.assert_always_serving(t0, t1, MIN_READY)
