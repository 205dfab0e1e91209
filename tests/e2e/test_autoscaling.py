"""End to end: the operator's HorizontalPodAutoscaler scales a class during a canary, on Triton's own
metrics, without breaking the canary's share or fighting the operator over ``replicas``.

The chain is the real one: simulated Triton pods' series (triton_sim: a revision's load shared by its
Ready pods) → a real Prometheus → visionfleet-metrics-adapter (ours, on
sigs.k8s.io/custom-metrics-apiserver) registered with the API server's aggregation layer as
custom.metrics.k8s.io/v1beta2 and external.metrics.k8s.io/v1beta1 → the HPA controller of the real
kube-controller-manager (sync every 5 s; the HPA's scale-in stabilization 75 s, from the spec) → the
stable Deployment's replicas (the scale subresource) → the operator, which sizes the canary from
the stable's current size → kwok's pods.

The load follows the operator's HTTPRoute: the test reads the route's weights and gives each
revision its share of the class's load (tests/e2e/test_gateway.py shows Traefik splitting real
requests by those weights, within ±2 of 200).

Given an autoscaled class (1..6 replicas, 20 inferences/s per pod) serving v1 at 10/s and a canary v2
at 25 %, When the load steps to 100/s, Then the HPA grows the stable to 5 and the canary follows to
⌈25 % of 5⌉ = 2, the route stays 75/25 at every sample, the stable's replicas never move backwards
while the load rises, and the operator owns no ``spec.replicas`` of the stable. When v2 is promoted
at that load, the HPA moves to v2 and the class never has fewer Ready pods than the HPA asked for.
When the load falls to 10/s, the HPA scales v2 back to 1. Times are printed.
"""

from __future__ import annotations

import json
import math
import time

import pytest

from visionfleet_e2e.cli import install_gateway_api_crds
from visionfleet_e2e.metrics_adapter import quantity

from ..helpers import wait_for
from .test_operator_rollout import VD, Given

pytestmark = pytest.mark.cluster

TARGET = 20.0          # inferences/s per pod the HPA aims at
LOW, HIGH = 10.0, 100.0
MIN, MAX = 1, 6
WEIGHT = 25


def autoscaled(version: str) -> dict:
    obj = json.loads(json.dumps(VD))
    obj["spec"]["model"]["version"] = version
    xeon = next(c for c in obj["spec"]["fleet"]["classes"] if c["name"] == "xeon")
    # scale-in stabilization over the adapter's 1m rate() window: a promotion moves the load from v1's
    # series to v2's, whose rate climbs for a minute (Kubernetes' default 5m would only make the test long)
    xeon["replicas"] = {"min": MIN, "max": MAX, "autoscale": {"metric": "inferenceRate", "target": TARGET,
                                                              "scaleDownStabilization": "75s"}}
    obj["spec"]["fleet"]["classes"] = [xeon]
    obj["spec"]["rollout"] = {"steps": [{"setWeight": WEIGHT, "pause": "1h"}, {"setWeight": 100}],
                              "traffic": {"method": "GatewayAPI", "gatewayAPI": {"httpRoute": "doorbell"}}}
    return obj


ROUTE = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "doorbell"},
         "spec": {"parentRefs": [{"name": "edge-gateway"}],
                  "rules": [{"backendRefs": [{"name": "doorbell", "port": 8000}]}]}}


class Fleet:
    """The class over time, sampled every half second: each revision's Deployment (spec.replicas,
    readyReplicas), the route's weights, the HPA's target; the simulated load follows the route."""

    def __init__(self, g: Given, behave):
        self.g, self.behave = g, behave
        self.load = LOW
        self.revisions: list[str] = []
        self.samples: list[dict] = []

    def weights(self) -> dict[str, int]:
        route = self.g.c.kubectl_json("get", "httproute", "doorbell", "-n", self.g.ns)
        return {b["name"].rsplit("-", 1)[1]: b.get("weight", 1) for b in route["spec"]["rules"][0]["backendRefs"]}

    def sample(self) -> dict:
        deps = self.g.c.kubectl_json("get", "deployments", "-n", self.g.ns, "-l", "visionfleet.io/class=xeon")["items"]
        hpa = self.g.c.kubectl_json("get", "hpa", "-n", self.g.ns)["items"]
        s = {"t": time.monotonic(), "weights": self.weights(), "hpa": hpa[0]["spec"]["scaleTargetRef"]["name"] if hpa else None,
             "deps": {d["metadata"]["labels"]["visionfleet.io/revision"][:8]:
                      (d["spec"]["replicas"], (d.get("status") or {}).get("readyReplicas") or 0) for d in deps}}
        # the load obeys the route: each revision gets its weight's share of the class's load
        total = sum(s["weights"].values()) or 1
        for rev8, w in s["weights"].items():
            full = next((r for r in self.revisions if r.startswith(rev8)), None)
            if full:
                self.behave(full, rps_total=self.load * w / total, queue_ms=3.0)
        self.samples.append(s)
        return s

    def since(self, t0: float) -> list[dict]:
        return [s for s in self.samples if s["t"] >= t0]


def hpa_status(g: Given) -> dict:
    return g.c.kubectl_json("get", "hpa", "doorbell-xeon", "-n", g.ns).get("status") or {}


def test_the_hpa_scales_a_class_during_a_canary(cluster, operator, namespace, triton_sim, prometheus, behave):
    adapter = cluster.metrics_adapter(prometheus.url)
    install_gateway_api_crds(cluster)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(ROUTE))
    g = Given(cluster, namespace).apply(autoscaled("1"))
    fleet = Fleet(g, behave)
    v1 = g.wait_phase("Healthy")["stableRevision"]
    fleet.revisions = [v1]
    behave(v1, rps_total=LOW, queue_ms=3.0)
    hpa = cluster.kubectl_json("get", "hpa", "doorbell-xeon", "-n", namespace)
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"doorbell-xeon-{v1[:8]}"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (MIN, MAX)
    selector = hpa["spec"]["metrics"][0]["external"]["metric"]["selector"]
    assert selector["matchExpressions"] == [{"key": "revision", "operator": "In", "values": [v1]}]

    # The aggregated APIs answer with Prometheus's values: per pod (custom) and per class (external);
    # the HPA controller's identity may read them, a namespace's default ServiceAccount may not.
    rate = wait_for(lambda: adapter.pod_values(namespace, "visionfleet_triton_inference_rate"), timeout=60,
                    what="visionfleet_triton_inference_rate through custom.metrics.k8s.io")
    assert len(rate) == MIN and 0 < sum(rate.values()) <= LOW * 1.5, rate
    sel = f"vision_deployment=doorbell,class=xeon,revision in ({v1})"
    total = wait_for(lambda: adapter.external_value(namespace, "visionfleet_class_inference_rate", sel), timeout=30,
                     what="visionfleet_class_inference_rate through external.metrics.k8s.io")
    assert 0 < total <= LOW * 1.5, total
    path = f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/visionfleet_class_queue_ms"
    as_hpa = cluster.kubectl("get", "--raw", path, "--as=system:serviceaccount:kube-system:horizontal-pod-autoscaler",
                             check=False)
    assert as_hpa.returncode == 0 and json.loads(as_hpa.stdout)["items"], as_hpa.stderr
    nobody = cluster.kubectl("get", "--raw", path, f"--as=system:serviceaccount:{namespace}:default", check=False)
    assert nobody.returncode != 0 and "forbidden" in nobody.stderr.lower(), nobody.stderr

    # -- v2 as a canary at 25 % -----------------------------------------------------------------------
    g.apply(autoscaled("2"))
    v2 = g.wait_phase("RollingOut")["canaryRevision"]
    fleet.revisions = [v1, v2]
    wait_for(lambda: fleet.sample()["weights"] == {v1[:8]: 100 - WEIGHT, v2[:8]: WEIGHT}
             and fleet.samples[-1]["deps"].get(v2[:8], (0, 0))[1] >= 1, what="v2 Ready at 25 %")
    wait_for(lambda: hpa_status(g).get("currentReplicas") == MIN and fleet.sample()["deps"][v1[:8]][0] == MIN
             and (hpa_status(g).get("currentMetrics") or [{}])[0].get("external"), timeout=120,
             what="the HPA reading the class's low load")
    selector = cluster.kubectl_json("get", "hpa", "doorbell-xeon", "-n", namespace)["spec"]["metrics"][0]
    assert selector["external"]["metric"]["selector"]["matchExpressions"][0]["values"] == sorted([v1, v2])
    # rate() over 1m: let a full window of the low load pass, so the step below is what is timed
    time.sleep(20)

    # -- load up: 100/s over pods that aim at 20/s each -> 5 pods for the class's stable --------------
    want = math.ceil(HIGH / TARGET)
    t_up = time.monotonic()
    fleet.load = HIGH
    wait_for(lambda: fleet.sample()["deps"][v1[:8]][1] >= want and fleet.samples[-1]["deps"][v2[:8]][1] >=
             math.ceil(want * WEIGHT / 100), timeout=240, what=f"stable {want} and canary its share Ready")
    for _ in range(20):  # 10 s more of samples at the new size
        fleet.sample()
        time.sleep(0.5)
    up = fleet.since(t_up)
    stable_sizes = [s["deps"][v1[:8]][0] for s in up]
    first_up = next(s["t"] - t_up for s in up if s["deps"][v1[:8]][0] > MIN)
    ready_up = next(s["t"] - t_up for s in up if s["deps"][v1[:8]][1] >= want)
    canary_up = next(s["t"] - t_up for s in up if s["deps"][v2[:8]][1] >= math.ceil(want * WEIGHT / 100))
    # the route never moved; the stable only grew (no fight: nobody set it back to min)
    moved = [s for s in up if s["weights"] != {v1[:8]: 100 - WEIGHT, v2[:8]: WEIGHT}]
    assert not moved, (len(moved), len(up), moved[:3])
    assert stable_sizes == sorted(stable_sizes) and want <= stable_sizes[-1] <= min(MAX, want + 1), stable_sizes
    # the canary's pods follow the stable's current size: the operator looks every 5 s while a canary
    # runs on an autoscaled class (HPA_FOLLOW_SECONDS), plus the pass itself
    for s in up:
        recent = {x["deps"][v1[:8]][0] for x in fleet.samples if s["t"] - 8 <= x["t"] <= s["t"]}
        assert s["deps"][v2[:8]][0] in {max(1, math.ceil(n * WEIGHT / 100)) for n in recent}, (s, recent)
    last = up[-1]["deps"]
    share = last[v2[:8]][1] / (last[v1[:8]][1] + last[v2[:8]][1])
    print(f"\nload {LOW:g}/s -> {HIGH:g}/s at 25 % canary: the HPA first grew the stable after {first_up:.1f}s, "
          f"{want} stable pods Ready after {ready_up:.1f}s, the canary's {math.ceil(want * WEIGHT / 100)} after "
          f"{canary_up:.1f}s; route 75/25 at all {len(up)} samples; canary share of the class's pods "
          f"{share:.2f} (2 of 7: ⌈25 % of 5⌉)")
    # field ownership: spec.replicas of the stable is the HPA's (scale subresource), not the operator's
    dep = cluster.kubectl_json("get", "deployment", f"doorbell-xeon-{v1[:8]}", "-n", namespace, "--show-managed-fields")
    owners = {m["manager"]: m for m in dep["metadata"]["managedFields"]}
    assert "f:replicas" not in json.dumps(owners.get("visionfleet", {}).get("fieldsV1", {})), owners.keys()
    assert any("f:replicas" in json.dumps(m.get("fieldsV1", {})) for name, m in owners.items() if name != "visionfleet")

    # -- promotion at the high load: the HPA moves to v2, the class never dips below its need ----------
    t_promo = time.monotonic()
    cluster.kubectl("annotate", "vd", "doorbell", "-n", namespace, "visionfleet.io/promote=now")
    wait_for(lambda: fleet.sample()["hpa"] == f"doorbell-xeon-{v2[:8]}" and g.status().get("phase") == "Healthy"
             and v1[:8] not in fleet.samples[-1]["deps"], timeout=180, what="v2 stable, the HPA on it, v1 gone")
    promo = fleet.since(t_promo)
    low = min(sum(r for _, r in s["deps"].values()) for s in promo)
    v2_size = promo[-1]["deps"][v2[:8]][0]
    print(f"promotion at {HIGH:g}/s: the HPA moved to v2 after {promo[-1]['t'] - t_promo:.1f}s; v2 runs {v2_size} "
          f"pods; fewest Ready pods of the class meanwhile {low} (need {want})")
    assert low >= want, [s["deps"] for s in promo]
    assert v2_size >= want

    # -- load down: the HPA scales the new stable back in ---------------------------------------------
    t_down = time.monotonic()
    fleet.load = LOW
    wait_for(lambda: fleet.sample()["deps"][v2[:8]][0] <= MIN, timeout=300, what=f"v2 scaled in to {MIN}")
    down = fleet.since(t_down)
    first_down = next(s["t"] - t_down for s in down if s["deps"][v2[:8]][0] < v2_size)
    assert all(MIN <= s["deps"][v2[:8]][0] <= MAX for s in down)
    print(f"load {HIGH:g}/s -> {LOW:g}/s: first scale-in after {first_down:.1f}s, {MIN} pod after "
          f"{down[-1]['t'] - t_down:.1f}s (rate() over 1m, 75 s scale-in stabilization)")
    events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                             "involvedObject.kind=HorizontalPodAutoscaler", "-o",
                             "custom-columns=REASON:.reason,MESSAGE:.message", check=False).stdout
    assert "SuccessfulRescale" in events, events
