"""Benchmark: the operator at fleet scale — N kwok nodes in 8 classes, M VisionDeployments at once.

    .venv/bin/python bench/scale.py                          # 250 nodes / 25 VDs, then 1,000 / 100
    .venv/bin/python bench/scale.py --sizes 1000:100         # one size only

For each size, on a fresh local fleet (cluster "vf-scale", e2e/fleets/scale.yaml), with the operator as
its own process: apply M VisionDeployments (two classes each, cycling over the 8) at once and print

  * time from apply to every VisionDeployment Healthy;
  * the operator's peak resident memory and CPU seconds (from /proc);
  * API requests per VisionDeployment until Healthy: the operator's reads (LIST/GET, from the API
    server's own apiserver_request_total, excluding resources only kwok and the controllers read) and
    its writes (its own visionfleet_api_writes_total);
  * steady state: reads and writes per resync pass once everything is Healthy (every VisionDeployment
    nudged once; writes must be 0), and the operator's CPU per resync: all of it over the window
    (``steadyCpuPerResyncMs``), its idle rate (watch events, timer passes) measured beforehand, and the
    nudged passes' own (``steadyNetCpuPerPassMs``: the window's less the idle rate's);
  * canaries in flight (skipped with ``--no-canaries``): every VisionDeployment gets a second revision
    judged by Prometheus analysis (interval 10 s) against a canned Prometheus in this process, its
    first step held by a long pause; the Prometheus queries made while the canaries compile (none
    are due), then over ``--window`` seconds with every canary measured: CPU and API reads per pass,
    passes and Prometheus queries per VisionDeployment and minute; then, with every answer of that
    Prometheus taking 1.9 s (its timeout 2 s), the time one VisionDeployment's abort takes.

Sizes are run side by side so that what grows faster than linearly shows in the per-VD and per-pass
columns (the per-pass CPU should not grow with the nodes).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.conftest import OperatorProcess  # noqa: E402
from visionfleet_e2e.cli import install_crds  # noqa: E402
from visionfleet_e2e.cluster import LocalCluster, ensure_binaries  # noqa: E402
from visionfleet_e2e.fleet import load_fleet  # noqa: E402
from visionfleet_e2e.local_process import free_port  # noqa: E402

GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
EDGE_TAINT = {"key": "node-role.kubernetes.io/edge", "operator": "Exists", "effect": "NoSchedule"}
CLASSES = [  # name, instance type, runtime, precision, tolerations, gpu
    ("h100", "p5.48xlarge", "tensorrt", "fp16", [GPU_TAINT], True),
    ("a100", "p4de.24xlarge", "tensorrt", "fp16", [GPU_TAINT], True),
    ("l4", "g6.12xlarge", "tensorrt", "int8", [GPU_TAINT], True),
    ("t4", "g4dn.xlarge", "tensorrt", "fp16", [GPU_TAINT], True),
    ("xeon", "c7i.4xlarge", "openvino", "int8", [], False),
    ("xeon-icl", "c6i.4xlarge", "openvino", "int8", [], False),
    ("epyc", "c7a.4xlarge", "onnxruntime", "fp32", [], False),
    ("jetson", "jetson-agx-orin-64gb", "tensorrt", "fp16", [GPU_TAINT, EDGE_TAINT], True),
]
READ_RESOURCES = ("visiondeployments", "jobs", "pods", "deployments", "configmaps", "services", "nodes", "httproutes")


def vd(i: int) -> dict:
    classes = []
    for k in (i % 8, (i + 3) % 8):
        name, itype, runtime, precision, tolerations, gpu = CLASSES[k]
        c = {"name": name, "nodeSelector": {"node.kubernetes.io/instance-type": itype}, "runtime": runtime,
             "precision": precision, "replicas": {"min": 1, "max": 2}}
        if tolerations:
            c["tolerations"] = tolerations
        if gpu:
            c["resources"] = {"limits": {"nvidia.com/gpu": 1}}
        classes.append(c)
    return {
        "apiVersion": "visionfleet.io/v1alpha1", "kind": "VisionDeployment",
        "metadata": {"name": f"model-{i:03d}"},
        "spec": {
            "model": {"name": f"model-{i:03d}", "version": "1", "uri": f"pvc://models/m{i}.onnx",
                      "inputs": [{"name": "images", "dataType": "FP32", "dims": [3, 224, 224]}],
                      "outputs": [{"name": "logits", "dataType": "FP32", "dims": [1000]}]},
            "fleet": {"classes": classes},
            "serving": {"modelRepository": "pvc://models/repository"},
            "compile": {"calibration": {"uri": "pvc://models/calib.npz", "samples": 64}},
            "rollout": {"steps": [{"setWeight": 50, "pause": "1s"}, {"setWeight": 100}]},
        },
    }


def apiserver_reads(cluster: LocalCluster) -> float:
    """LIST and GET requests on the resources the operator reads (WATCH excluded: kopf's one stream)."""
    text = cluster.kubectl("get", "--raw", "/metrics", timeout=120).stdout
    total = 0.0
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if labels.get("verb") in ("LIST", "GET") and labels.get("resource") in READ_RESOURCES \
                and not labels.get("subresource"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def operator_counter(url: str, prefix: str) -> float:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def operator_writes(url: str) -> float:
    return operator_counter(url, "visionfleet_api_writes_total{")


def operator_passes(url: str) -> float:
    return operator_counter(url, "visionfleet_reconcile_total{")


class CannedPrometheus(ThreadingHTTPServer):
    """Prometheus' instant-query API with one healthy sample per query (a canary within its SLO); it
    counts the queries."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _PromHandler)
        self.queries = 0
        self.delay = 0.0  # seconds before each answer: a slow Prometheus
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _PromHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        query = (parse_qs(urlsplit(self.path).query).get("query") or [""])[0]
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.queries += 1  # type: ignore[attr-defined]
        time.sleep(self.server.delay)  # type: ignore[attr-defined]
        if "quantile" in query:
            value = "5"  # p99, ms
        elif query.startswith("(sum(increase(nv_inference_request_failure"):
            value = "0"  # error rate
        else:
            value = "1000"  # requests
        body = json.dumps({"status": "success", "data": {"resultType": "vector",
                                                          "result": [{"metric": {}, "value": [time.time(), value]}]}})
        raw = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


def canary_patch(prometheus_url: str) -> dict:
    """A second revision judged by Prometheus every 10 s, held at its first step (a long pause)."""
    return {"spec": {
        "model": {"version": "2"},
        "analysis": {"interval": "10s", "prometheus": {"url": prometheus_url, "timeout": "2s"},
                     "slo": {"latencyP99Ms": 50, "errorRate": 0.05, "minRequests": 10}},
        "rollout": {"steps": [{"setWeight": 50, "pause": "1h"}, {"setWeight": 100}]},
    }}


class ProcSampler(threading.Thread):
    """Peak RSS (MB) and CPU seconds of one process, from /proc."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak_mb, self.stop_flag = pid, 0.0, threading.Event()

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while not self.stop_flag.is_set():
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)
            except FileNotFoundError:
                return
            time.sleep(0.5)


_BIN: list[Path] = []


def private_binaries() -> Path:
    """The fleet's binaries through links of this run's own: another run of build-binaries.sh (any
    test session starting) re-creates the shared ``current`` directory, and a kubectl started from it
    at that moment is not found."""
    if not _BIN:
        # VISIONFLEET_BIN_DIR: binaries already built (no build is started, nor checked for)
        given = os.environ.get("VISIONFLEET_BIN_DIR")
        shared = Path(given) if given else ensure_binaries()
        mine = Path(tempfile.mkdtemp(prefix="vf-scale-bin-"))
        for f in shared.iterdir():
            (mine / f.name).symlink_to(f.resolve())
        _BIN.append(mine)
    return _BIN[0]


def run_size(nodes: int, vds: int, timeout: float, canaries: bool = True, window: float = 60.0) -> dict:
    cluster = LocalCluster("vf-scale", bin_dir=private_binaries())
    cluster.down()
    cluster.up(load_fleet("scale"), size=nodes, timeout=600)
    install_crds(cluster)
    ns = "scale"
    cluster.kubectl("create", "namespace", ns)
    cluster.ensure_claim(ns, "models")
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="vf-scale-"))
    op = OperatorProcess(cluster, work / "operator.log", args=[f"--metrics-port={port}", "--metrics-address=127.0.0.1"])
    op.start()
    metrics = f"http://127.0.0.1:{port}/metrics"
    try:
        time.sleep(3)
        sampler = ProcSampler(op.proc.pid)
        sampler.start()
        reads0, writes0, cpu0 = apiserver_reads(cluster), operator_writes(metrics), sampler.cpu_seconds()
        docs = {"apiVersion": "v1", "kind": "List", "items": [vd(i) for i in range(vds)]}
        t0 = time.monotonic()
        cluster.kubectl("apply", "--server-side", "--field-manager=bench", "-n", ns, "-f", "-",
                        input=json.dumps(docs), timeout=300)
        healthy = 0
        while time.monotonic() - t0 < timeout:
            items = cluster.kubectl_json("get", "vd", "-n", ns)["items"]
            healthy = sum(1 for i in items if i.get("status", {}).get("phase") == "Healthy")
            if healthy == vds:
                break
            time.sleep(2)
        to_healthy = time.monotonic() - t0
        reads1, writes1, cpu1 = apiserver_reads(cluster), operator_writes(metrics), sampler.cpu_seconds()
        # Steady state: every VisionDeployment nudged once (one full pass each), nothing may be written.
        # The operator's CPU while idle (watch events, timer passes) is measured first, over 20 s, and
        # taken off the nudged window's: what is left is the CPU of the nudged passes themselves.
        time.sleep(5)
        t_a, cpu_a, passes_a = time.monotonic(), sampler.cpu_seconds(), operator_passes(metrics)
        time.sleep(20)
        t_b, cpu_b, passes_b = time.monotonic(), sampler.cpu_seconds(), operator_passes(metrics)
        idle_rate, idle_passes = (cpu_b - cpu_a) / (t_b - t_a), (passes_b - passes_a) / (t_b - t_a)
        reads2, writes2 = apiserver_reads(cluster), operator_writes(metrics)
        for i in range(vds):
            cluster.kubectl("annotate", "vd", f"model-{i:03d}", "-n", ns, "bench.visionfleet.io/nudge=1", "--overwrite")
        time.sleep(max(10.0, vds * 0.2))
        reads3, writes3, cpu3 = apiserver_reads(cluster), operator_writes(metrics), sampler.cpu_seconds()
        passes3, t_c = operator_passes(metrics), time.monotonic()
        nudged = max(passes3 - passes_b - idle_passes * (t_c - t_b), 1.0)
        row = {
            "nodes": nodes, "vds": vds, "healthy": healthy, "toHealthyS": round(to_healthy, 1),
            "peakRssMb": round(sampler.peak_mb, 1), "cpuToHealthyS": round(cpu1 - cpu0, 1),
            "readsPerVd": round((reads1 - reads0) / vds, 1), "writesPerVd": round((writes1 - writes0) / vds, 1),
            "steadyReadsPerResync": round((reads3 - reads2) / vds, 1),
            "steadyWritesPerResync": round((writes3 - writes2) / vds, 2),
            "steadyCpuPerResyncMs": round((cpu3 - cpu1) * 1000 / vds, 1),
            "idleCpuMsPerS": round(idle_rate * 1000, 1),
            "idlePassesPerVdMin": round(idle_passes * 60 / vds, 2),
            "steadyNetCpuPerPassMs": round(((cpu3 - cpu_b) - idle_rate * (t_c - t_b)) * 1000 / nudged, 1),
        }
        if canaries:
            row.update(run_canaries(cluster, ns, vds, metrics, sampler, timeout, window))
        sampler.stop_flag.set()
        row["peakRssMb"] = round(sampler.peak_mb, 1)
        return row
    finally:
        op.stop()
        cluster.down()


def run_canaries(cluster: LocalCluster, ns: str, vds: int, metrics: str, sampler: ProcSampler, timeout: float,
                 window: float) -> dict:
    """Every VisionDeployment's second revision in flight, judged by Prometheus (see the docstring)."""
    prom = CannedPrometheus()
    try:
        patch = json.dumps(canary_patch(prom.url))
        for i in range(vds):
            cluster.kubectl("patch", "vd", f"model-{i:03d}", "-n", ns, "--type=merge", "-p", patch)
        t0, measured = time.monotonic(), 0
        while time.monotonic() - t0 < timeout:
            items = cluster.kubectl_json("get", "vd", "-n", ns)["items"]
            measured = sum(1 for i in items if (i.get("status") or {}).get("canaryRevision")
                           and ((i.get("status") or {}).get("analysis") or {}).get("verdict"))
            if measured == vds:
                break
            time.sleep(2)
        to_measured = time.monotonic() - t0
        queries_to_measured = prom.queries
        reads0, passes0, cpu0, q0 = apiserver_reads(cluster), operator_passes(metrics), sampler.cpu_seconds(), prom.queries
        time.sleep(window)
        reads1, passes1, cpu1, q1 = apiserver_reads(cluster), operator_passes(metrics), sampler.cpu_seconds(), prom.queries
        passes = max(passes1 - passes0, 1)
        # A slow Prometheus (each answer 1.9 s, the timeout 2 s) while every canary is measured: how
        # long one VisionDeployment's abort takes to be acted on (its canary rolled back in status).
        prom.delay = 1.9
        time.sleep(15)
        victim = f"model-{vds - 1:03d}"
        t1 = time.monotonic()
        cluster.kubectl("annotate", "vd", victim, "-n", ns, "visionfleet.io/abort=bench", "--overwrite")
        aborted = None
        while time.monotonic() - t1 < 300:
            st = cluster.kubectl_json("get", "vd", victim, "-n", ns).get("status") or {}
            if (st.get("history") or [{}])[-1].get("outcome") == "Aborted":
                aborted = time.monotonic() - t1
                break
            time.sleep(0.5)
        prom.delay = 0.0
        return {
            "canariesMeasured": measured, "toCanaryMeasuredS": round(to_measured, 1),
            # every VisionDeployment measured about once before this point: the rest were asked while compiling
            "promQueriesToFirstVerdictPerVd": round(queries_to_measured / vds, 1),
            "canaryPassesPerVdMin": round(passes * 60 / window / vds, 1),
            "canaryPromQueriesPerVdMin": round((q1 - q0) * 60 / window / vds, 1),
            "canaryReadsPerPass": round((reads1 - reads0) / passes, 1),
            "canaryCpuPerPassMs": round((cpu1 - cpu0) * 1000 / passes, 1),
            "canaryCpuPerVdMinS": round((cpu1 - cpu0) * 60 / window / vds, 2),
            "abortWithSlowPrometheusS": round(aborted, 1) if aborted is not None else "over 300",
        }
    finally:
        prom.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="250:25,1000:100", help="NODES:VDS,... (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for all Healthy per size")
    parser.add_argument("--no-canaries", action="store_true", help="first revisions and steady state only")
    parser.add_argument("--window", type=float, default=60, help="seconds the canaries in flight are measured over")
    args = parser.parse_args()
    rows = []
    for spec in args.sizes.split(","):
        nodes, vds = (int(x) for x in spec.split(":"))
        print(f"== {nodes} nodes, {vds} VisionDeployments", file=sys.stderr, flush=True)
        rows.append(run_size(nodes, vds, args.timeout, canaries=not args.no_canaries, window=args.window))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    # One row per figure, one column per size: the sizes side by side.
    cols = list(rows[0])
    print("| figure | " + " | ".join(f"{r['nodes']} nodes / {r['vds']} VDs" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for c in cols[2:]:
        print(f"| {c} | " + " | ".join(str(r.get(c, "")) for r in rows) + " |")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"\nratios (largest / smallest; VDs ×{b['vds'] / a['vds']:.0f}, nodes ×{b['nodes'] / a['nodes']:.0f}):")
        for c in ("toHealthyS", "peakRssMb", "cpuToHealthyS", "readsPerVd", "writesPerVd", "steadyReadsPerResync",
                  "steadyCpuPerResyncMs", "idleCpuMsPerS", "steadyNetCpuPerPassMs", "canaryReadsPerPass",
                  "canaryCpuPerPassMs", "canaryCpuPerVdMinS"):
            if a.get(c) and c in b:
                print(f"  {c:22} ×{b[c] / a[c]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
