"""Benchmark: how long a failing canary leaves traffic off its stable, with pods that take time to be
Ready, at 50 % and at 100 %; and what a steady state costs in API writes.

    .venv/bin/python bench/rollback.py [--runs 3] [--interval 2s] [--ready-after 15s]
    .venv/bin/python bench/rollback.py --quick      # one run per weight, 3 resyncs

On a fresh local fleet (cluster "vf-bench"), with the operator as its own process, a real
Prometheus and simulated Triton metrics, in a namespace whose Triton pods turn Ready --ready-after
after they start (the fleet's sim.visionfleet.io/ready-after; docs/local-fleet.md):

  1. time to rollback, per run and per weight the canary failed at (50 %: slow from its first
     measurement; 100 %: turned slow once it carries all traffic): from "the failure is visible"
     (the first Prometheus sample that shows the canary's p99 over budget: what the failing
     measurement reads) to "the stable carries all traffic again" (every class has replicas.min
     Ready stable pods and no Ready canary pod: weight 0 behind the Service), from a watch of the
     pods (visionfleet_e2e.ready_sampler); and, from the same watch, how long a class that served
     had no Ready Triton pod at all (the outage; 0 when the stable is Ready before the canary goes);
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
from visionfleet_e2e.ready_sampler import ReadySampler  # noqa: E402
from visionfleet_e2e.sim_policies import set_ready_delay  # noqa: E402
from visionfleet_e2e.triton_sim import TritonMetricsSim  # noqa: E402

WRITE_VERBS = ("APPLY", "PATCH", "POST", "PUT", "DELETE")
RESOURCES = ("visiondeployments", "deployments", "jobs", "configmaps", "services", "events")
MIN_READY = {c["name"]: (c.get("replicas") or {}).get("min", 1) for c in VD["spec"]["fleet"]["classes"]}
SLOW_P99_MS, BUDGET_MS = 45.0, 20


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
    ap.add_argument("--runs", type=int, default=3, help="runs per weight (default %(default)s)")
    ap.add_argument("--interval", default="2s", help="analysis interval (default %(default)s)")
    ap.add_argument("--ready-after", default="15s",
                    help="how long a Triton pod takes to turn Ready (default %(default)s; 0s: at once)")
    ap.add_argument("--weights", default="50,100", help="weights the canary fails at (default %(default)s)")
    ap.add_argument("--resyncs", type=int, default=10, help="nudged passes in the steady-state window")
    ap.add_argument("--quick", action="store_true", help="one run per weight and 3 resyncs")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.resyncs = 1, 3
    weights = [int(w) for w in args.weights.split(",")]

    work = Path(tempfile.mkdtemp(prefix="vf-bench-"))
    cluster = LocalCluster("vf-bench", state_root=work)
    cluster.up(load_fleet("demo"))
    install_crds(cluster)
    ns = "bench"
    cluster.kubectl("create", "namespace", ns)
    if args.ready_after not in ("0", "0s"):
        set_ready_delay(cluster, ns, args.ready_after)
    cluster.ensure_claim(ns, "models")
    sim = TritonMetricsSim(lambda: cluster.kubectl_json("get", "pods", "-n", ns,
                                                        "-l", "app.kubernetes.io/component=triton")["items"]).start()
    prom = PrometheusServer(work / "prometheus", {"triton": f"127.0.0.1:{sim.port}"}).start()
    op = OperatorProcess(cluster, work / "operator.log")
    op.start()
    ready = ReadySampler(cluster, ns, "doorbell").start()

    def apply(version: str, steps: list[dict]) -> None:
        obj = copy.deepcopy(VD)
        obj["spec"]["model"]["version"] = version
        obj["spec"]["rollout"] = {"steps": steps}
        obj["spec"]["analysis"] = {"interval": args.interval, "prometheus": {"url": prom.url, "timeout": "2s"},
                                   "slo": {"latencyP99Ms": BUDGET_MS, "errorRate": 0.01, "minRequests": 10}}
        cluster.kubectl("apply", "--server-side", "--field-manager=bench", "-n", ns, "-f", "-", input=json.dumps(obj))

    def status():
        return cluster.kubectl_json("get", "vd", "doorbell", "-n", ns).get("status", {})

    def stable_carries_all(stable: str, canary: str):
        return lambda s: (all(s.ready(c, stable) >= n for c, n in MIN_READY.items())
                          and all(s.ready(c, canary) == 0 for c in MIN_READY))

    results: dict[int, list[tuple[float, float]]] = {w: [] for w in weights}
    try:
        apply("1", [{"setWeight": 50, "pause": "30s"}, {"setWeight": 100}])
        v1 = wait(lambda: (st := status()).get("phase") == "Healthy" and st["stableRevision"], timeout=300)
        sim.behave(v1)  # the stable stays good whatever the default
        for weight in weights:
            for run in range(args.runs):
                if weight < 100:  # slow from its first measurement: fails at its first step
                    sim.behave(None, p99_ms=SLOW_P99_MS)
                    apply(f"slow-{weight}-{run}", [{"setWeight": weight, "pause": "1h"}, {"setWeight": 100}])
                    canary = wait(lambda: status().get("canaryRevision"))
                else:  # good until it carries all traffic, then slow
                    sim.behave(None)
                    apply(f"late-{run}", [{"setWeight": 50, "pause": "2s"}, {"setWeight": 100, "pause": "1h"}])
                    canary = wait(lambda: status().get("canaryRevision"))
                    wait(lambda: (st := status()).get("canaryWeight") == 100 and st.get("stepStartedAt"), timeout=300)
                    sim.behave(canary, p99_ms=SLOW_P99_MS)
                q = (f'max(nv_inference_request_summary_us{{revision="{canary}",quantile="0.99"}}) / 1000 '
                     f'> {BUDGET_MS}')
                wait(lambda: prom.query(q), interval=0.05)
                visible = ready.mark(f"{weight}% run {run + 1}: failure visible")
                ready.wait_until(stable_carries_all(v1, canary), timeout=300,
                                 what=f"stable {v1} carrying all traffic, canary {canary} without Ready pods")
                back = ready.mark(f"{weight}% run {run + 1}: stable carries all traffic")
                wait(lambda: status().get("phase") == "RolledBack", timeout=120)
                ready.sync()
                outage = max((g.seconds for g in ready.gaps(1, visible, back)), default=0.0)
                results[weight].append((back - visible, outage))
                print(f"{weight:>3}% run {run + 1}: failure visible -> stable Ready with all traffic "
                      f"{back - visible:6.2f}s; no Ready pod in a class for {outage:5.2f}s", flush=True)
                sim.behaviours.pop(canary, None)

        print(f"\ntime to rollback (analysis interval {args.interval}, pods Ready {args.ready_after} after start, "
              f"{args.runs} run(s) per weight)")
        print(f"{'canary at':>10} | {'to stable Ready + all traffic':>30} | {'longest outage (no Ready pod)':>30}")
        print(f"{'':>10} | {'median':>14} {'max':>15} | {'median':>14} {'max':>15}")
        for weight in weights:
            times = [t for t, _ in results[weight]]
            gaps = [g for _, g in results[weight]]
            print(f"{weight:>9}% | {statistics.median(times):>13.2f}s {max(times):>14.2f}s | "
                  f"{statistics.median(gaps):>13.2f}s {max(gaps):>14.2f}s")

        # Steady state: a Healthy VisionDeployment, nudged --resyncs times (each nudge = one full pass).
        sim.behave(None)
        apply("1", [{"setWeight": 50, "pause": "30s"}, {"setWeight": 100}])  # back to the good stable revision
        wait(lambda: (st := status()).get("phase") == "Healthy" and not st.get("canaryRevision"), timeout=300)
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
        ready.stop()
        op.stop()
        prom.stop()
        sim.stop()
        cluster.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
