"""Benchmark: does the compile step's batching choice matter on a real Triton? Side by side in one run.

    .venv/bin/python bench/serving.py [--budget-ms 100] [--seconds 2] [--quick]

The OpenVINO int8 EfficientNet-Lite0 artifact, built by the compile program (its profile: one
latency/throughput point per batch size, 6 measurements), served by the local tritonserver 2.51
with three kinds of ``config.pbtxt``:

    default   no dynamic batching, one instance: what users deploy without tuning
    chosen    the compile step's choice under the budget (max_batch_size, preferred size, queue delay,
              instance count)
    grid      every combination of max_batch_size {1,2,4,8,16} × queue delay {0, 5, 20 ms} ×
              instances {1, 2} (Model Analyzer's brute force)

Each configuration is scored the same way: closed-loop load with batch-1 requests at
concurrency 1, 2, 4, … (``--seconds`` each) until p99 exceeds the budget; its score is the best
throughput whose p99 stayed within the budget. The report prints every configuration's score, the
ratios chosen / default and chosen / grid best, and what each search cost: the compile step's
profile points against the grid's load runs.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from visionfleet.api.spec import ModelSpec
from visionfleet.api.status import ChosenBatching
from visionfleet.builders.triton_config import build_triton_config
from visionfleet_compile import program, zoo
from visionfleet_e2e.load import run_load, sample_images
from visionfleet_e2e.triton import TritonServer, repository_entry

CONCURRENCY = (1, 2, 4, 8, 16, 32)


def score(entry: Path, model: ModelSpec, batching: ChosenBatching | None, budget_ms: float, seconds: float,
          images: np.ndarray, work: Path) -> tuple[float, int, list[tuple[int, float, float]]]:
    """(best throughput within the budget, load measurements taken, [(concurrency, req/s, p99)])."""
    repo = Path(tempfile.mkdtemp(dir=work, prefix="repo-"))
    repository_entry(repo, "effnet", "1", entry)  # then this configuration's config.pbtxt replaces the chosen one
    if batching is None:  # default: no dynamic batching, one instance (batch dimension kept)
        cfg = build_triton_config(model, "openvino", ChosenBatching(max_batch_size=8, instance_count=1))
        cfg = cfg[:cfg.index("dynamic_batching")] + cfg[cfg.index("instance_group"):]
    else:
        cfg = build_triton_config(model, "openvino", batching)
    (repo / "effnet" / "config.pbtxt").write_text(cfg)
    threads = {"VISIONFLEET_TRITON_THREADS": str(max(1, (os.cpu_count() or 2) // (batching.instance_count or 1)))} \
        if batching and (batching.instance_count or 1) > 1 else {}
    server = TritonServer(repo, Path(tempfile.mkdtemp(dir=work, prefix="triton-")), env=threads).start()
    best, runs, points = 0.0, 0, []
    try:
        run_load(server.url, "effnet", duration=0.5, concurrency=1, images=images)  # warm
        for c in CONCURRENCY:
            r = run_load(server.url, "effnet", duration=seconds, concurrency=c, images=images)
            runs += 1
            p99 = r["latencyMs"]["p99"]
            points.append((c, r["throughputRps"], p99))
            if r["errors"] or p99 > budget_ms:
                break
            best = max(best, r["throughputRps"])
    finally:
        server.stop()
    return best, runs, points


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-ms", type=float, default=100.0, help="p99 latency budget (default 100)")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per load measurement")
    ap.add_argument("--quick", action="store_true", help="a smaller grid (max_batch_size {1,4,16}, instances 1)")
    args = ap.parse_args(argv)

    info = zoo.ensure_sample_model(log=lambda m: print(m, file=sys.stderr))
    work = Path(tempfile.mkdtemp(prefix="vf-bench-serving-"))
    req = zoo.compile_request(info, "openvino", "int8", {"metric": "top1Accuracy", "min": 0.8}, args.budget_ms,
                              "effnet/bench")
    print("compiling (OpenVINO int8) and profiling on this node …", file=sys.stderr)
    result = program.compile_request(req, work / "compile")
    entry = work / "compile" / "repository" / "effnet" / "bench"
    model = ModelSpec.model_validate(req["model"])
    chosen = ChosenBatching.model_validate(result["batching"])
    images = sample_images(None)

    rows = []
    t0 = time.perf_counter()
    thr, runs, pts = score(entry, model, None, args.budget_ms, args.seconds, images, work)
    rows.append(("default (no batching, 1 instance)", thr, runs, pts))
    print(f"default: {thr:.1f} req/s", file=sys.stderr)
    thr, runs, pts = score(entry, model, chosen, args.budget_ms, args.seconds, images, work)
    rows.append((f"chosen {result['batching']}", thr, runs, pts))
    profile_points = len(result["p99MsAtBatch"])
    print(f"chosen: {thr:.1f} req/s", file=sys.stderr)
    sizes, delays, instances = ((1, 4, 16), (0, 5000, 20000), (1,)) if args.quick else \
        ((1, 2, 4, 8, 16), (0, 5000, 20000), (1, 2))
    grid, grid_runs = [], 0
    for mb, delay, inst in itertools.product(sizes, delays, instances):
        b = ChosenBatching(max_batch_size=mb, preferred_batch_sizes=[mb], max_queue_delay_microseconds=delay,
                           instance_count=inst)
        thr, runs, pts = score(entry, model, b, args.budget_ms, args.seconds, images, work)
        grid_runs += runs
        grid.append((f"grid mb={mb} delay={delay // 1000}ms inst={inst}", thr, runs, pts))
        print(f"{grid[-1][0]}: {thr:.1f} req/s", file=sys.stderr)
    best = max(grid, key=lambda r: r[1])

    print(f"\nOpenVINO int8 EfficientNet-Lite0 on local Triton 2.51, batch-1 requests, p99 budget {args.budget_ms:g} ms, "
          f"{args.seconds:g}s per measurement, {time.perf_counter() - t0:.0f}s in all")
    print(f"{'configuration':<72} {'req/s @ p99≤budget':>18} {'load runs to score':>18}")
    for name, thr, runs, _ in rows + sorted(grid, key=lambda r: -r[1]):
        print(f"{name:<72} {thr:18.1f} {runs:18d}")
    default, chosen_row = rows[0][1], rows[1][1]
    print(f"\nchosen / default:   {chosen_row / default:.2f}× throughput" if default else "\ndefault: never within budget")
    print(f"chosen / grid best: {chosen_row / best[1]:.3f} ({best[0]}: {best[1]:.1f} req/s)" if best[1] else "")
    print(f"search cost: the compile step chose from {profile_points} profile points; the grid needed "
          f"{grid_runs} load runs over {len(grid)} server configurations ({profile_points / grid_runs:.2f} of the grid's "
          f"measurements)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
