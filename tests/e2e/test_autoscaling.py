"""End to end: the standard HorizontalPodAutoscaler scales a Triton Deployment on Triton's own metrics.

The chain is the real one: simulated Triton pods' series (triton_sim, load shared by the Ready pods)
→ a real Prometheus → visionfleet-metrics-adapter (ours, on sigs.k8s.io/custom-metrics-apiserver)
registered with the API server's aggregation layer as custom.metrics.k8s.io/v1beta2 → the HPA
controller of the real kube-controller-manager (sync every 5 s, downscale stabilization 15 s on the
local fleet) → the Deployment's replicas → kwok's pods.

Given a Triton Deployment with an autoscaling/v2 HPA on the Pods metric
visionfleet_triton_inference_rate (target average 20 inferences/s per pod, 1..6 replicas) and a
load of 10/s, When the load steps to 100/s, Then the HPA scales it out to 5 (within its bounds);
When the load falls back to 10/s, Then it scales in to 1. Both times are printed.
"""

from __future__ import annotations

import json
import math
import time

import pytest

from visionfleet_e2e.metrics_adapter import quantity

from ..helpers import wait_for

pytestmark = pytest.mark.cluster

TARGET = 20.0          # inferences/s per pod the HPA aims at
LOW, HIGH = 10.0, 100.0
MIN, MAX = 1, 6


def deployment(namespace: str, revision: str) -> dict:
    labels = {"app.kubernetes.io/name": "visionfleet", "app.kubernetes.io/component": "triton",
              "visionfleet.io/revision": revision}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "triton-hpa", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, "visionfleet.io/class": "xeon",
                                        "visionfleet.io/vision-deployment": "hpa"}},
                "spec": {
                    "nodeSelector": {"node.kubernetes.io/instance-type": "c7i.4xlarge"},
                    "containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver:25.01-py3",
                                    "ports": [{"name": "metrics", "containerPort": 8002}]}],
                },
            },
        },
    }


def hpa(namespace: str) -> dict:
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "triton-hpa", "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton-hpa"},
            "minReplicas": MIN, "maxReplicas": MAX,
            # no spec.behavior: the controller's own defaults (and the local fleet's short downscale
            # stabilization) apply, as for any HPA that does not say otherwise
            "metrics": [{"type": "Pods", "pods": {
                "metric": {"name": "visionfleet_triton_inference_rate"},
                "target": {"type": "AverageValue", "averageValue": f"{TARGET:g}"}}}],
        },
    }


class Replicas:
    """The Deployment's replicas over time, sampled every half second (spec: the HPA's decision)."""

    def __init__(self, cluster, namespace: str):
        self.cluster, self.namespace = cluster, namespace
        self.samples: list[tuple[float, int, int]] = []  # (monotonic, spec.replicas, readyReplicas)

    def sample(self) -> tuple[int, int]:
        d = self.cluster.kubectl_json("get", "deployment", "triton-hpa", "-n", self.namespace)
        spec, ready = d["spec"]["replicas"], (d.get("status") or {}).get("readyReplicas") or 0
        self.samples.append((time.monotonic(), spec, ready))
        return spec, ready

    def first(self, since: float, pred) -> float | None:
        return next((t - since for t, spec, _ in self.samples if t >= since and pred(spec)), None)

    def first_ready(self, since: float, pred) -> float | None:
        return next((t - since for t, _, ready in self.samples if t >= since and pred(ready)), None)


def hpa_status(cluster, namespace: str) -> dict:
    return cluster.kubectl_json("get", "hpa", "triton-hpa", "-n", namespace).get("status") or {}


def test_hpa_scales_triton_on_its_inference_rate(cluster, namespace, triton_sim, prometheus):
    adapter = cluster.metrics_adapter(prometheus.url)
    revision = f"hpa-{namespace}"
    triton_sim.behave(revision, rps_total=LOW, queue_ms=3.0)
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(deployment(namespace, revision)))
        cluster.kubectl("apply", "-f", "-", input=json.dumps(hpa(namespace)))
        replicas = Replicas(cluster, namespace)

        # The aggregated API answers with Prometheus's values, per pod, for both metrics.
        rate = wait_for(lambda: adapter.pod_values(namespace, "visionfleet_triton_inference_rate"),
                        timeout=60, what="visionfleet_triton_inference_rate through custom.metrics.k8s.io")
        raw = cluster.kubectl("get", "--raw", f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}"
                              "/pods/*/visionfleet_triton_inference_rate").stdout
        print(f"\nkubectl get --raw …/pods/*/visionfleet_triton_inference_rate:\n{raw}")
        item = json.loads(raw)["items"][0]
        assert item["describedObject"]["kind"] == "Pod" and item["metric"]["name"] == "visionfleet_triton_inference_rate"
        assert len(rate) == 1 and 0 < next(iter(rate.values())) <= LOW * 1.5, rate
        queue = wait_for(lambda: adapter.pod_values(namespace, "visionfleet_triton_queue_ms"), timeout=30,
                         what="visionfleet_triton_queue_ms")
        assert all(math.isclose(v, 3.0, rel_tol=0.05) for v in queue.values()), queue
        # The HPA controller's ServiceAccount may read it (RBAC, then the adapter's delegated check of
        # the user the aggregator forwards); a ServiceAccount without that role may not.
        path = f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/pods/*/visionfleet_triton_queue_ms"
        as_hpa = cluster.kubectl("get", "--raw", path, "--as=system:serviceaccount:kube-system:horizontal-pod-autoscaler",
                                 check=False)
        assert as_hpa.returncode == 0 and json.loads(as_hpa.stdout)["items"], as_hpa.stderr
        nobody = cluster.kubectl("get", "--raw", path, f"--as=system:serviceaccount:{namespace}:default", check=False)
        assert nobody.returncode != 0 and "forbidden" in nobody.stderr.lower(), nobody.stderr
        discovery = json.loads(cluster.kubectl("get", "--raw", "/apis/custom.metrics.k8s.io/v1beta2").stdout)
        assert {"pods/visionfleet_triton_inference_rate", "pods/visionfleet_triton_queue_ms"} <= \
            {r["name"] for r in discovery["resources"]}

        # The HPA reads it too, and holds one replica at the low load. rate() over 1m divides by the
        # whole minute, so a new pod's rate climbs for its first minute: the load step waits for a
        # full window, so the times below measure the step, not the warm-up.
        def settled_low():
            st = hpa_status(cluster, namespace)
            spec, _ = replicas.sample()
            metrics = st.get("currentMetrics") or []
            # an entry without "pods" while the HPA has no reading yet
            current = quantity(((metrics[0].get("pods") or {}).get("current") or {}).get("averageValue") or "0") \
                if metrics else 0.0
            return st if current >= 0.9 * LOW and spec == MIN else None
        st = wait_for(settled_low, timeout=120, what="the HPA's reading of the low load over a full window")
        print(f"HPA at the low load: {st['currentMetrics'][0]['pods']['current']}")

        # -- load up: 100/s over pods that aim at 20/s each -> 5 replicas --------------------------
        t_up = time.monotonic()
        triton_sim.behave(revision, rps_total=HIGH, queue_ms=3.0)
        want_up = math.ceil(HIGH / TARGET)
        wait_for(lambda: replicas.sample()[1] >= want_up, timeout=240,
                 what=f"{want_up} Ready replicas after the load rose to {HIGH:g}/s")
        first_up, full_up = replicas.first(t_up, lambda n: n > MIN), replicas.first(t_up, lambda n: n >= want_up)
        ready_up = replicas.first_ready(t_up, lambda n: n >= want_up)
        assert all(spec <= MAX for _, spec, _ in replicas.samples), replicas.samples
        # it settles within its bounds, at (or one above, while rate() lags) the load's need
        time.sleep(15)
        spec, _ = replicas.sample()
        assert want_up <= spec <= min(MAX, want_up + 1), replicas.samples[-10:]
        print(f"load {LOW:g}/s -> {HIGH:g}/s: first scale-up after {first_up:.1f}s, "
              f"{want_up} replicas decided after {full_up:.1f}s, Ready after {ready_up:.1f}s")
        print(f"HPA at the high load: {hpa_status(cluster, namespace)['currentMetrics'][0]['pods']['current']}")

        # -- load down: back to 10/s -> 1 replica ---------------------------------------------------
        t_down = time.monotonic()
        top = spec
        triton_sim.behave(revision, rps_total=LOW, queue_ms=3.0)
        wait_for(lambda: replicas.sample()[0] <= MIN, timeout=300,
                 what=f"the scale-in to {MIN} replica after the load fell to {LOW:g}/s")
        first_down = replicas.first(t_down, lambda n: n < top)
        full_down = replicas.first(t_down, lambda n: n <= MIN)
        assert all(MIN <= spec for _, spec, _ in replicas.samples)
        print(f"load {HIGH:g}/s -> {LOW:g}/s: first scale-in after {first_down:.1f}s, "
              f"{MIN} replica after {full_down:.1f}s (rate() over 1m, 15s downscale stabilization)")
        events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                                 "involvedObject.kind=HorizontalPodAutoscaler", "-o",
                                 "custom-columns=REASON:.reason,MESSAGE:.message", check=False).stdout
        print(events)
        assert "SuccessfulRescale" in events
    finally:
        cluster.kubectl("delete", "hpa", "triton-hpa", "-n", namespace, "--ignore-not-found", check=False)
        triton_sim.behaviours.pop(revision, None)
