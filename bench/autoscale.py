"""Benchmark: a load step on an autoscaled class during a canary — how long until the new replicas
serve, and how far the canary's share moved meanwhile.

    .venv/bin/python bench/autoscale.py [--loads 60,100,200] [--weight 25]
    .venv/bin/python bench/autoscale.py --quick     # one step (10 -> 100/s), no scale-in

On a fresh local fleet (cluster "vf-bench-hpa"), with the operator as its own process, simulated
Triton metrics (a revision's load shared by its Ready pods), a real Prometheus, the fleet's metrics
adapter on the aggregation layer and the real HPA controller (sync 5 s, downscale stabilization
15 s): one autoscaled class (1..12 replicas, 20 inferences/s per pod, HPA on the class's inference
rate), v1 stable and v2 a canary at --weight %, Gateway API traffic (the simulated load follows the
route's weights, as Traefik does: tests/e2e/test_gateway.py). For each load in --loads, from 10/s:

  - time from the load step to the HPA's first decision, to the stable's new size Ready, and to
    the canary's share of it Ready (⌈weight·stable⌉ pods, from the stable's current size);
  - the canary's share of the class's Ready pods over the transition (min–max) against its settled
    value, and the route's weight at every sample (the traffic share: it must not move);
  - the per-pod load of canary and stable pods at the worst sample (how unequal the transition left
    them), and, unless --quick, the time back to 1 pod once the load falls again.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.conftest import OperatorProcess  # noqa: E402
from tests.e2e.test_autoscaling import LOW, ROUTE, TARGET, Fleet, autoscaled  # noqa: E402
from tests.e2e.test_operator_rollout import Given  # noqa: E402
from tests.helpers import wait_for  # noqa: E402
from visionfleet_e2e.cli import install_crds, install_gateway_api_crds  # noqa: E402
from visionfleet_e2e.cluster import LocalCluster  # noqa: E402
from visionfleet_e2e.fleet import load_fleet  # noqa: E402
from visionfleet_e2e.prometheus import PrometheusServer  # noqa: E402
from visionfleet_e2e.triton_sim import TritonMetricsSim  # noqa: E402

MAX = 12


wait = functools.partial(wait_for, timeout=300)  # the bench's steps take minutes, not the tests' 90 s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loads", default="60,100,200", help="class loads (inferences/s) to step to from 10/s")
    ap.add_argument("--weight", type=int, default=25, help="the canary's weight (default %(default)s)")
    ap.add_argument("--quick", action="store_true", help="one step to 100/s, no scale-in")
    args = ap.parse_args()
    loads = [100.0] if args.quick else [float(x) for x in args.loads.split(",")]
    w = args.weight

    work = Path(tempfile.mkdtemp(prefix="vf-bench-hpa-"))
    cluster = LocalCluster("vf-bench-hpa", state_root=work)
    cluster.up(load_fleet("demo"))
    install_crds(cluster)
    install_gateway_api_crds(cluster)
    ns = "bench"
    cluster.kubectl("create", "namespace", ns)
    cluster.ensure_claim(ns, "models")
    sim = TritonMetricsSim(lambda: cluster.kubectl_json("get", "pods", "-n", ns,
                                                        "-l", "app.kubernetes.io/component=triton")["items"]).start()
    prom = PrometheusServer(work / "prometheus", {"triton": f"127.0.0.1:{sim.port}"}).start()
    op = OperatorProcess(cluster, work / "operator.log")
    op.start()
    rows = []
    try:
        cluster.metrics_adapter(prom.url)
        cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(ROUTE))
        g = Given(cluster, ns)

        def spec(version: str) -> dict:
            obj = autoscaled(version)
            xeon = obj["spec"]["fleet"]["classes"][0]
            xeon["replicas"]["max"] = MAX
            obj["spec"]["rollout"]["steps"][0]["setWeight"] = w
            return obj

        g.apply(spec("1"))
        fleet = Fleet(g, sim.behave)
        v1 = wait(lambda: (st := g.status()).get("phase") == "Healthy" and st["stableRevision"], what="v1 Healthy")
        g.apply(spec("2"))
        v2 = wait(lambda: g.status().get("canaryRevision"), what="v2 canary")
        fleet.revisions = [v1, v2]
        s1, s2 = v1[:8], v2[:8]
        wait(lambda: fleet.sample()["weights"] == {s1: 100 - w, s2: w} and fleet.samples[-1]["deps"].get(s2, (0, 0))[1]
             >= 1, what=f"v2 Ready at {w} %")

        def settled_at(n: int):
            s = fleet.sample()
            return s["deps"][s1][0] == n and s["deps"][s2][0] == max(1, math.ceil(n * w / 100)) and \
                s["deps"][s1][1] == n and s["deps"][s2][1] == max(1, math.ceil(n * w / 100))

        for load in loads:
            fleet.load = LOW
            wait(lambda: settled_at(1), timeout=400, what="the class back at 1 stable pod")
            # a full rate() window of the low load, so the step is what is measured (quick: part of one)
            time.sleep(20 if args.quick else 65)
            want = min(MAX, math.ceil(load / TARGET))
            want_c = max(1, math.ceil(want * w / 100))
            t0 = time.monotonic()
            fleet.load = load
            wait(lambda: settled_at(want), timeout=400, what=f"stable {want} and canary {want_c} Ready")
            for _ in range(10):
                fleet.sample()
                time.sleep(0.5)
            up = fleet.since(t0)
            first = next(s["t"] - t0 for s in up if s["deps"][s1][0] > 1)
            stable_ready = next(s["t"] - t0 for s in up if s["deps"][s1][1] >= want)
            canary_ready = next(s["t"] - t0 for s in up if s["deps"][s2][1] >= want_c)
            shares = [s["deps"][s2][1] / max(1, s["deps"][s1][1] + s["deps"][s2][1]) for s in up]
            weights_ok = all(s["weights"] == {s1: 100 - w, s2: w} for s in up)
            # per-pod load: canary pods carry load·w over their Ready pods, stable pods the rest
            worst = max(up, key=lambda s: (load * w / 100 / max(1, s["deps"][s2][1])) /
                        (load * (100 - w) / 100 / max(1, s["deps"][s1][1])))
            per_c = load * w / 100 / max(1, worst["deps"][s2][1])
            per_s = load * (100 - w) / 100 / max(1, worst["deps"][s1][1])
            down = None
            if not args.quick:
                t1 = time.monotonic()
                fleet.load = LOW
                wait(lambda: settled_at(1), timeout=400, what="scale-in to 1")
                down = time.monotonic() - t1
            rows.append((load, want, want_c, first, stable_ready, canary_ready, min(shares), max(shares),
                         want_c / (want + want_c), weights_ok, per_c, per_s, down))
            print(f"load {LOW:g} -> {load:g}/s: first HPA decision {first:.1f}s, stable {want} Ready {stable_ready:.1f}s, "
                  f"canary {want_c} Ready {canary_ready:.1f}s; canary share of Ready pods {min(shares):.2f}-"
                  f"{max(shares):.2f} (settled {want_c / (want + want_c):.2f}); route {100 - w}/{w} at every sample: "
                  f"{weights_ok}", flush=True)

        print(f"\nload step on an autoscaled class with a {w} % canary (HPA target {TARGET:g} inferences/s per pod, "
              f"rate() over 1m, HPA sync 5 s)")
        print(f"{'load/s':>7} | {'pods s+c':>8} | {'1st decision':>12} | {'stable Ready':>12} | {'canary Ready':>12} | "
              f"{'canary pod share':>18} | {'route':>5} | {'worst per-pod load c/s':>22} | {'back to 1':>9}")
        for (load, want, want_c, first, sr, cr, lo, hi, settled, ok, pc, ps, down) in rows:
            print(f"{load:>7g} | {want:>4}+{want_c:<3} | {first:>11.1f}s | {sr:>11.1f}s | {cr:>11.1f}s | "
                  f"{lo:.2f}-{hi:.2f} ({settled:.2f}) | {'fixed' if ok else 'MOVED':>5} | "
                  f"{pc:>8.1f}/{ps:<6.1f} ({pc / ps:.2f}x) | {(f'{down:.1f}s' if down is not None else '-'):>9}")
    finally:
        op.stop()
        prom.stop()
        sim.stop()
        cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
