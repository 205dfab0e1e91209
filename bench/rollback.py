"""Benchmark: how fast a failing canary is rolled back, and what a steady state costs in API writes.

    .venv/bin/python bench/rollback.py [--runs 3] [--interval 2s]

On a fresh local fleet (cluster "vf-bench"), with the operator as its own process, a real
Prometheus and simulated Triton metrics:

  1. time to rollback: from the first Prometheus sample that shows the canary's p99 over budget to
     the canary's Deployments being gone (all traffic on stable), per run, for a given analysis
     interval;
  2. steady-state writes: API requests that write (APPLY/PATCH/POST/PUT/DELETE) to
     VisionDeployments, Deployments, Jobs, ConfigMaps, Services and Events, counted from the API
     server's own apiserver_request_total over a window in which a Healthy VisionDeployment is
     resynced (nudged) N times.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.conftest import OperatorProcess  # noqa: E402
from tests.e2e.test_operator_rollout import VD  # noqa: E402
from visionfleet_e2e.cli import install_crds  # noqa: E402
from visionfleet_e2e.cluster import LocalCluster  # noqa: E402
from visionfleet_e2e.fleet import load_fleet  # noqa: E402
from visionfleet_e2e.prometheus import PrometheusServer  # noqa: E402
from visionfleet_e2e.triton_sim import TritonMetricsSim  # noqa: E402

WRITE_VERBS = ("APPLY", "PATCH", "POST", "PUT", "DELETE")
RESOURCES = ("visiondeployments", "deployments", "jobs", "configmaps", "services", "events")


def writes_so_far(cluster: LocalCluster) -> float:
    text = cluster.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    total = 0.0
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if labels.get("verb") in WRITE_VERBS and labels.get("resource") in RESOURCES:
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait(predicate, timeout=180, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError("benchmark condition not reached")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--interval", default="2s", help="analysis interval (default %(default)s)")
    ap.add_argument("--resyncs", type=int, default=10, help="nudged passes in the steady-state window")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vf-bench-"))
    cluster = LocalCluster("vf-bench", state_root=work)
    cluster.up(load_fleet("demo"))
    install_crds(cluster)
    ns = "bench"
    cluster.kubectl("create", "namespace", ns)
    sim = TritonMetricsSim(lambda: cluster.kubectl_json("get", "pods", "-n", ns,
                                                        "-l", "app.kubernetes.io/component=triton")["items"]).start()
    prom = PrometheusServer(work / "prometheus", {"triton": f"127.0.0.1:{sim.port}"}).start()
    op = OperatorProcess(cluster, work / "operator.log")
    op.start()

    def apply(version: str) -> None:
        obj = copy.deepcopy(VD)
        obj["spec"]["model"]["version"] = version
        obj["spec"]["rollout"] = {"steps": [{"setWeight": 50, "pause": "30s"}, {"setWeight": 100}]}
        obj["spec"]["analysis"] = {"interval": args.interval, "prometheus": {"url": prom.url, "timeout": "2s"},
                                   "slo": {"latencyP99Ms": 20, "errorRate": 0.01, "minRequests": 10}}
        cluster.kubectl("apply", "--server-side", "--field-manager=bench", "-n", ns, "-f", "-", input=json.dumps(obj))

    def status():
        return cluster.kubectl_json("get", "vd", "doorbell", "-n", ns).get("status", {})

    try:
        apply("1")
        v1 = wait(lambda: status().get("phase") == "Healthy" and status()["stableRevision"])
        sim.behave(v1)
        sim.behave(None, p99_ms=45.0)
        times = []
        for run in range(args.runs):
            apply(f"slow-{run}")
            canary = wait(lambda: status().get("canaryRevision"))
            q = f'max(nv_inference_request_summary_us{{revision="{canary}",quantile="0.99"}}) / 1000 > 20'
            wait(lambda: prom.query(q), interval=0.05)
            visible = time.monotonic()
            wait(lambda: not [d for d in cluster.kubectl_json("get", "deployments", "-n", ns)["items"]
                              if d["metadata"]["labels"].get("visionfleet.io/revision") == canary], interval=0.05)
            back = time.monotonic()
            times.append(back - visible)
            assert status()["phase"] in ("RolledBack", "RollingBack")
            print(f"run {run + 1}: failing canary visible in Prometheus -> traffic back on stable: {back - visible:.2f}s")
        print(f"time to rollback (analysis interval {args.interval}): median {statistics.median(times):.2f}s, "
              f"max {max(times):.2f}s over {len(times)} runs")

        # Steady state: a Healthy VisionDeployment, nudged --resyncs times (each nudge = one full pass).
        apply("1")  # back to the good stable revision: Healthy, nothing in flight
        wait(lambda: status().get("phase") == "Healthy" and not status().get("canaryRevision"))
        time.sleep(5)
        before = writes_so_far(cluster)
        for i in range(args.resyncs):
            cluster.kubectl("annotate", "vd", "doorbell", "-n", ns, f"bench.visionfleet.io/nudge={i}", "--overwrite")
            time.sleep(1.0)
        after = writes_so_far(cluster)
        ours = (after - before) - args.resyncs  # the nudges themselves are writes (PATCH) by this script
        print(f"steady state: {ours:.0f} operator writes over {args.resyncs} resyncs "
              f"({ours / args.resyncs:.2f} per resync)")
    finally:
        op.stop()
        prom.stop()
        sim.stop()
        cluster.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
