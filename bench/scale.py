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
    nudged once; writes must be 0).

Sizes are run side by side so that what grows faster than linearly shows in the per-VD columns.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.conftest import OperatorProcess  # noqa: E402
from visionfleet_e2e.cli import install_crds  # noqa: E402
from visionfleet_e2e.cluster import LocalCluster  # noqa: E402
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


def operator_writes(url: str) -> float:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("visionfleet_api_writes_total{"))


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


def run_size(nodes: int, vds: int, timeout: float) -> dict:
    cluster = LocalCluster("vf-scale")
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
        time.sleep(5)
        reads2, writes2 = apiserver_reads(cluster), operator_writes(metrics)
        for i in range(vds):
            cluster.kubectl("annotate", "vd", f"model-{i:03d}", "-n", ns, "bench.visionfleet.io/nudge=1", "--overwrite")
        time.sleep(max(10.0, vds * 0.2))
        reads3, writes3, cpu3 = apiserver_reads(cluster), operator_writes(metrics), sampler.cpu_seconds()
        sampler.stop_flag.set()
        return {
            "nodes": nodes, "vds": vds, "healthy": healthy, "toHealthyS": round(to_healthy, 1),
            "peakRssMb": round(sampler.peak_mb, 1), "cpuToHealthyS": round(cpu1 - cpu0, 1),
            "readsPerVd": round((reads1 - reads0) / vds, 1), "writesPerVd": round((writes1 - writes0) / vds, 1),
            "steadyReadsPerResync": round((reads3 - reads2) / vds, 1),
            "steadyWritesPerResync": round((writes3 - writes2) / vds, 2),
            "steadyCpuPerResyncMs": round((cpu3 - cpu1) * 1000 / vds, 1),
        }
    finally:
        op.stop()
        cluster.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="250:25,1000:100", help="NODES:VDS,... (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for all Healthy per size")
    args = parser.parse_args()
    rows = []
    for spec in args.sizes.split(","):
        nodes, vds = (int(x) for x in spec.split(":"))
        print(f"== {nodes} nodes, {vds} VisionDeployments", file=sys.stderr, flush=True)
        rows.append(run_size(nodes, vds, args.timeout))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"\nratios (largest / smallest; VDs ×{b['vds'] / a['vds']:.0f}, nodes ×{b['nodes'] / a['nodes']:.0f}):")
        for c in ("toHealthyS", "peakRssMb", "cpuToHealthyS", "readsPerVd", "writesPerVd", "steadyReadsPerResync",
                  "steadyCpuPerResyncMs"):
            if a[c]:
                print(f"  {c:22} ×{b[c] / a[c]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
