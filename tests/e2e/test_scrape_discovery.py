"""The documented Triton scrape job, run by a real Prometheus discovering real pods through the API server.

    operator ──► Triton pods (kwok) ◄── watch ── Prometheus kubernetes_sd_configs (kubeconfig_file: the
    decoy pods ─────────────────────┘            fleet's admin kubeconfig, client certificates)
                                                    └─ relabel_configs of charts/visionfleet/files/triton-scrape-config.yaml
                                                         └─ /api/v1/targets: the labels every series will carry

Given the operator and a VisionDeployment with drift on (its Triton pods carry Triton's `metrics` port
and the drift monitor's `drift` port), and beside them pods that must not be scraped (another app with a
`metrics` port, a VisionFleet pod that is not Triton, a Triton-looking pod without a revision),
When upstream Prometheus (Debian's has no Kubernetes discovery) runs the job exactly as the file has it,
Then every Triton pod is two targets, labelled with exactly job/instance/namespace/pod/container/
vision_deployment/revision/class from the pod itself, and the decoys were discovered and dropped.
And the chart's PodMonitor, turned into a scrape job the way prometheus-operator v0.79.2 does it
(pkg/prometheus/promcfg.go generatePodMonitorConfig, reproduced below), gives the very same label sets.

Then the scrape itself: pods on a kwok node whose pod range lies in 127.0.0.0/8, a local exporter on each
pod IP serving what Triton and the drift monitor serve (without the analysis labels), and the operator's
own ``measure()`` answering from what Prometheus scraped with the documented job.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import random
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from visionfleet.api.spec import PrometheusSource, VisionDeploymentSpec
from visionfleet.observe.prometheus import measure
from visionfleet_e2e.chart import render
from visionfleet_e2e.prometheus import PrometheusServer, prometheus_with_kubernetes_sd

from visionfleet_contract import LABEL_CLASS, LABEL_REVISION, LABEL_VD, MONITOR_PORT

from ..helpers import registry_needed, wait_for
from ..unit.test_scrape_config import PUBLIC, job, sanitize
from .test_operator_rollout import VD, Given

# The first test to run builds upstream Prometheus (about 5 minutes cold on two cores) in its setup.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]
XEON = {"node.kubernetes.io/instance-type": "c7i.4xlarge"}  # untainted kwok nodes of the demo fleet


@pytest.fixture(scope="module")
def prometheus_binary():
    # about 5 minutes the first time on two cores (then cached by build-binaries.sh)
    with registry_needed("upstream Prometheus' Go modules (not yet in the module cache)"):
        return prometheus_with_kubernetes_sd()


def drifted_vd() -> dict:
    obj = copy.deepcopy(VD)
    obj["spec"]["analysis"] = {"prometheus": {"url": "http://127.0.0.1:9"}, "drift": {"window": 100}}
    obj["spec"]["compile"] = {"calibration": {"uri": "pvc://models/calib.npz"}}
    return obj


def decoy(name: str, labels: dict[str, str], port: str = "metrics") -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"nodeSelector": XEON, "automountServiceAccountToken": False,
                     "containers": [{"name": "main", "image": "example.invalid/app:1",
                                     "ports": [{"name": port, "containerPort": 8002}]}]}}


# Labelled for a VisionDeployment that does not exist, so the operator's selectors never meet them.
DECOYS = [
    decoy("another-app", {"app.kubernetes.io/name": "web", "app.kubernetes.io/component": "triton"}),
    decoy("not-triton", {"app.kubernetes.io/name": "visionfleet", "app.kubernetes.io/component": "compile",
                         LABEL_VD: "decoy", LABEL_CLASS: "xeon", LABEL_REVISION: "0123456789ab"}),
    decoy("no-revision", {"app.kubernetes.io/name": "visionfleet", "app.kubernetes.io/component": "triton",
                          LABEL_VD: "decoy", LABEL_CLASS: "xeon"}),
]


def pods(cluster, namespace: str, selector: str) -> list[dict]:
    return cluster.kubectl_json("get", "pods", "-n", namespace, "-l", selector)["items"]


def expected_targets(pods: list[dict]) -> list[dict[str, str]]:
    """What each Triton pod must become: one target per metrics port, labelled from the pod itself."""
    out = []
    for p in pods:
        md, ip = p["metadata"], p["status"]["podIP"]
        for c in p["spec"]["containers"]:
            for port in c.get("ports", []):
                if port["name"] in ("metrics", "drift"):
                    out.append({"job": "visionfleet-triton", "instance": f"{ip}:{port['containerPort']}",
                                "namespace": md["namespace"], "pod": md["name"], "container": c["name"],
                                "vision_deployment": md["labels"][LABEL_VD], "revision": md["labels"][LABEL_REVISION],
                                "class": md["labels"][LABEL_CLASS]})
    return sorted(out, key=lambda t: t["instance"])


def active(prom: PrometheusServer, namespace: str) -> list[dict[str, str]]:
    return sorted((t["labels"] for t in prom.api_targets()["activeTargets"]
                   if t["discoveredLabels"].get("__meta_kubernetes_namespace") == namespace),
                  key=lambda t: t["instance"])


def with_kubeconfig(scrape_job: dict, kubeconfig) -> dict:
    scrape_job = copy.deepcopy(scrape_job)
    for sd in scrape_job["kubernetes_sd_configs"]:
        sd["kubeconfig_file"] = str(kubeconfig)
    return scrape_job


# -- the PodMonitor as prometheus-operator turns it into scrape jobs ------------------------------------

def snake(key: str) -> str:
    return "".join(f"_{ch.lower()}" if ch.isupper() else ch for ch in key)


def podmonitor_scrape_jobs(pm: dict, kubeconfig) -> list[dict]:
    """prometheus-operator v0.79.2's generatePodMonitorConfig for the fields the chart's PodMonitor
    uses (one Prometheus shard, the default relabel selector mechanism): its own relabelings first,
    the PodMonitor's after them, then sharding."""
    md, spec = pm["metadata"], pm["spec"]
    sd: dict = {"role": "pod", "kubeconfig_file": str(kubeconfig)}
    if not spec["namespaceSelector"].get("any"):
        sd["namespaces"] = {"names": spec["namespaceSelector"].get("matchNames") or [md["namespace"]]}
    jobs = []
    for i, ep in enumerate(spec["podMetricsEndpoints"]):
        rules = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
                 {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"}]
        for k in sorted(spec["selector"].get("matchLabels", {})):
            rules.append({"action": "keep", "regex": f"({spec['selector']['matchLabels'][k]});true",
                          "source_labels": [f"__meta_kubernetes_pod_label_{sanitize(k)}",
                                            f"__meta_kubernetes_pod_labelpresent_{sanitize(k)}"]})
        assert not spec["selector"].get("matchExpressions"), "extend the translation for matchExpressions"
        rules += [
            {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": ep["port"]},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"target_label": "job", "replacement": f"{md['namespace']}/{md['name']}"},
            {"target_label": "endpoint", "replacement": ep["port"]},
        ]
        rules += [{snake(k): v for k, v in r.items()} for r in ep.get("relabelings", [])]
        rules += [
            {"source_labels": ["__address__", "__tmp_hash"], "target_label": "__tmp_hash", "regex": "(.+);",
             "replacement": "$1", "action": "replace"},
            {"source_labels": ["__tmp_hash"], "target_label": "__tmp_hash", "modulus": 1, "action": "hashmod"},
            {"source_labels": ["__tmp_hash"], "regex": "0", "action": "keep"},
        ]
        jobs.append({"job_name": f"podMonitor/{md['namespace']}/{md['name']}/{i}",
                     "honor_labels": ep.get("honorLabels", False), "scrape_interval": ep["interval"],
                     "kubernetes_sd_configs": [sd], "relabel_configs": rules})
    return jobs


def test_documented_job_discovers_the_triton_pods_with_the_analysis_labels_and_nothing_else(
        cluster, operator, namespace, prometheus_binary, tmp_path):
    # Given a VisionDeployment's Triton pods (with drift monitors) and pods that must not be scraped
    g = Given(cluster, namespace).apply(drifted_vd())
    g.wait_phase("Healthy", timeout=120)
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": DECOYS}))

    def triton_pods():
        found = pods(cluster, namespace, f"app.kubernetes.io/component=triton,{LABEL_VD}=doorbell")
        return found if len(found) == 3 and all(p.get("status", {}).get("podIP") for p in found) else None

    serving = wait_for(triton_pods, timeout=60, what="3 Triton pods with an IP (l4: 2, xeon: 1)")
    # Prometheus's pod discovery makes no target of a pod without an IP: the decoys must have one, or
    # their absence below would prove nothing
    wait_for(lambda: all(cluster.kubectl_json("get", "pod", d["metadata"]["name"], "-n", namespace)
                         .get("status", {}).get("podIP") for d in DECOYS),
             timeout=60, what="the decoy pods running with an IP")
    expected = expected_targets(serving)
    assert len(expected) == 6 and {t["instance"].rsplit(":", 1)[1] for t in expected} == {"8002", str(MONITOR_PORT)}

    # When Prometheus runs the file's job as it is, discovering through the fleet's API server
    prom = PrometheusServer(tmp_path / "plain", {}, scrape_configs=[with_kubeconfig(job(), cluster.kubeconfig)],
                            binary=prometheus_binary).start()
    try:
        seen: list = []

        def as_expected():
            seen[:] = active(prom, namespace)
            return seen == expected and list(seen)

        try:
            got = wait_for(as_expected, timeout=60, what=f"the Triton targets of {namespace}")
        except AssertionError as e:
            raise AssertionError(f"{e}\nexpected: {expected}\nactive:   {seen}") from None
        data = prom.api_targets()
    finally:
        prom.stop()

    # Then: every label the analysis selects by, from the pod, and no other label
    assert all(set(t) == PUBLIC for t in got), got
    # the decoys were seen by discovery and dropped by the relabelling, not missed
    dropped = {t["discoveredLabels"].get("__meta_kubernetes_pod_name") for t in data["droppedTargets"]
               if t["discoveredLabels"].get("__meta_kubernetes_namespace") == namespace}
    assert {d["metadata"]["name"] for d in DECOYS} <= dropped, dropped
    # in any namespace, nothing but VisionFleet's Triton pods' two metric ports is ever a target
    for t in data["activeTargets"]:
        d = t["discoveredLabels"]
        assert (d["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
                d["__meta_kubernetes_pod_label_app_kubernetes_io_component"]) == ("visionfleet", "triton"), d
        assert d["__meta_kubernetes_pod_container_port_name"] in ("metrics", "drift"), d

    # And the chart's PodMonitor (namespaced mode, watching this namespace) gives the same label sets
    pm = next(d for d in render(cluster, extra=["--set", "metrics.podMonitor.enabled=true",
                                                "--set", "watch.mode=namespaced",
                                                "--set", f"watch.namespaces={{{namespace}}}"])
              if d["kind"] == "PodMonitor")
    jobs = podmonitor_scrape_jobs(pm, cluster.kubeconfig)
    assert [j["kubernetes_sd_configs"][0]["namespaces"] for j in jobs] == [{"names": [namespace]}] * 2
    prom = PrometheusServer(tmp_path / "podmonitor", {}, scrape_configs=jobs, binary=prometheus_binary).start()
    try:
        via_podmonitor = wait_for(lambda: (lambda t: t if len(t) == len(expected) else None)(active(prom, namespace)),
                                  timeout=60, what="the PodMonitor's targets")
        everywhere = prom.api_targets()["activeTargets"]
    finally:
        prom.stop()
    assert via_podmonitor == got
    assert {t["discoveredLabels"]["__meta_kubernetes_namespace"] for t in everywhere} == {namespace}
    # each port is scraped by exactly one of the PodMonitor's two endpoints (else the drift tests count twice)
    assert sorted(t["scrapePool"].rsplit("/", 1)[1] for t in everywhere) == ["0"] * 3 + ["1"] * 3


# -- the scrape itself: pods whose IPs a local process can listen on -----------------------------------
#
# kwok gives a pod an IP from its node's spec.podCIDR (pkg/kwok/controllers/pod_controller.go). A node of
# our own with a range inside 127.0.0.0/8, which Linux routes to the loopback device whole, makes every
# pod IP one this machine can bind: an exporter there is what Triton and the drift monitor would be.

class PodExporter:
    """Triton's series on <pod IP>:8002 and the drift monitor's on <pod IP>:8010, labelled as Triton and
    prometheus_client label them (model/version; nothing): the relabelling must add everything else."""

    def __init__(self, ips: list[str], rps: float, error_ratio: float, p99_ms: float, p_value: float):
        self.t0 = time.monotonic()
        self.rps, self.error_ratio, self.p99_ms, self.p_value = rps, error_ratio, p99_ms, p_value
        self.servers = [ThreadingHTTPServer((ip, port), self._handler(kind))
                        for ip in ips for port, kind in ((8002, "triton"), (MONITOR_PORT, "drift"))]
        for s in self.servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def render(self, kind: str) -> str:
        if kind == "drift":
            return (f"# TYPE visionfleet_drift_p_value gauge\nvisionfleet_drift_p_value {self.p_value}\n"
                    "# TYPE visionfleet_drift_window_fill gauge\nvisionfleet_drift_window_fill 1\n")
        total, lbl = self.rps * (time.monotonic() - self.t0), 'model="efficientnet-lite0",version="1"'
        return (f"# TYPE nv_inference_request_success counter\n"
                f"nv_inference_request_success{{{lbl}}} {total * (1 - self.error_ratio):.3f}\n"
                f"# TYPE nv_inference_request_failure counter\n"
                f"nv_inference_request_failure{{{lbl}}} {total * self.error_ratio:.3f}\n"
                f"# TYPE nv_inference_request_summary_us summary\n"
                f'nv_inference_request_summary_us{{{lbl},quantile="0.99"}} {self.p99_ms * 1000:.1f}\n'
                f"nv_inference_request_summary_us_count{{{lbl}}} {total:.0f}\n"
                f"nv_inference_request_summary_us_sum{{{lbl}}} {total * self.p99_ms * 500:.0f}\n")

    def _handler(self, kind: str):
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = exporter.render(kind).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler

    def stop(self) -> None:
        for s in self.servers:
            s.shutdown()
            s.server_close()


def loopback_node(name: str, cidr: str) -> dict:
    """A kwok node only this test's pods go to (its taint), handing out pod IPs from ``cidr``."""
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "type": "kwok", "scrape-test": name}},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr],
                     "taints": [{"key": "scrape-test", "value": name, "effect": "NoSchedule"}]},
            "status": {"capacity": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                       "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                       "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "osImage": "kwok",
                                    "kubeletVersion": "kwok", "kubeProxyVersion": "kwok",
                                    "containerRuntimeVersion": "kwok", "kernelVersion": "kwok",
                                    "machineID": "", "systemUUID": "", "bootID": ""}}}


@pytest.fixture()
def loopback_class(cluster):
    """(node name, CIDR) of a fresh kwok node with a 127.x.y.0/24 pod range; removed afterwards (it must
    not become a class for another test's node discovery)."""
    name = f"scrape-{uuid.uuid4().hex[:6]}"
    cidr = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24"  # apart from a concurrent run's
    doc = json.dumps(loopback_node(name, cidr))
    cluster.kubectl("apply", "--server-side", "--field-manager=tests", "-f", "-", input=doc)
    cluster.kubectl("apply", "--server-side", "--field-manager=tests", "--subresource=status", "-f", "-", input=doc)
    cluster.kubectl("wait", "--for=condition=Ready", f"node/{name}", "--timeout=60s", timeout=90)
    yield name, cidr
    cluster.kubectl("delete", "node", name, "--wait=false", check=False)


def test_scraped_series_answer_the_operators_own_queries(cluster, operator, namespace, prometheus_binary,
                                                         loopback_class, tmp_path):
    node, cidr = loopback_class
    # Given a VisionDeployment whose one class runs on the loopback node (2 Triton pods, drift on)
    vd = drifted_vd()
    vd["spec"]["fleet"] = {"classes": [{"name": "local", "nodeSelector": {"scrape-test": node}, "runtime": "onnxruntime",
                                        "tolerations": [{"key": "scrape-test", "operator": "Exists"}],
                                        "replicas": {"min": 2, "max": 2}}]}
    vd["spec"]["analysis"] = {"interval": "30s", "prometheus": {"url": "http://127.0.0.1:9", "timeout": "5s"},
                              "slo": {"latencyP99Ms": 20, "errorRate": 0.05, "minRequests": 1},
                              "drift": {"window": 100, "pValue": 0.01}}
    g = Given(cluster, namespace).apply(vd)
    revision = g.wait_phase("Healthy", timeout=120)["stableRevision"]

    def serving():
        found = pods(cluster, namespace, f"app.kubernetes.io/component=triton,{LABEL_VD}=doorbell")
        return found if len(found) == 2 and all(p.get("status", {}).get("podIP") for p in found) else None

    ips = [p["status"]["podIP"] for p in wait_for(serving, timeout=60, what="2 Triton pods with an IP")]
    net = ipaddress.ip_network(cidr)
    assert all(ipaddress.ip_address(ip) in net for ip in ips), (ips, cidr)

    # And behind every pod IP what Triton and the drift monitor would serve
    exporter = PodExporter(ips, rps=20, error_ratio=0.02, p99_ms=12.5, p_value=0.2)
    # When Prometheus scrapes with the documented job, as it is
    prom = PrometheusServer(tmp_path / "scrape", {}, scrape_configs=[with_kubeconfig(job(), cluster.kubeconfig)],
                            binary=prometheus_binary).start()
    try:
        sel = f'job="visionfleet-triton",namespace="{namespace}"'
        up = wait_for(lambda: (lambda r: r if len(r) == 4 and all(s["value"][1] == "1" for s in r) else None)(
            prom.query(f"up{{{sel}}}")), timeout=60, what="4 targets (2 pods x Triton, drift monitor) up")
        assert {s["metric"]["instance"] for s in up} == {f"{ip}:{port}" for ip in ips for port in (8002, MONITOR_PORT)}
        # Then the operator's own analysis, through its own queries, gets one number for each
        analysis = VisionDeploymentSpec.model_validate(g.vd()["spec"]).analysis.model_copy(
            update={"prometheus": PrometheusSource(url=prom.url, timeout="5s")})

        def measured():
            m = measure(analysis, namespace, "doorbell", revision)
            return m if m.drift_p_value is not None and m.requests and m.requests > 0 else None

        m = wait_for(measured, timeout=60, interval=2,
                     what=f"a full measurement (last: {measure(analysis, namespace, 'doorbell', revision)})")
        series = prom.query(f'nv_inference_request_success{{{sel}}}')
    finally:
        prom.stop()
        exporter.stop()
    assert (m.slo_error, m.slo_unknown, m.drift_error, m.drift_unknown) == (None, None, None, None), m
    assert m.p99_ms == pytest.approx(12.5) and m.error_rate == pytest.approx(0.02, rel=0.05)
    # two pods' tests, each p=0.2, Bonferroni-corrected by the number of pods: each drift port scraped once
    assert m.drift_p_value == pytest.approx(0.4) and m.drift_window_fill == 1.0
    # and the series carry the labels from the pod, Triton's own (model, version) beside them
    assert {tuple(sorted(s["metric"])) for s in series} == {tuple(sorted(
        PUBLIC | {"__name__", "model", "version"}))}
    assert {(s["metric"]["vision_deployment"], s["metric"]["revision"], s["metric"]["class"]) for s in series} == \
        {("doorbell", revision, "local")}
