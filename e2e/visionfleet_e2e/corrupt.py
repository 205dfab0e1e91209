"""Image corruptions in the style of ImageNet-C (Hendrycks & Dietterich, ICLR 2019), five severities
each, with their published parameters, on uint8 HWC images: the shifted inputs the drift benchmark
and the drift tests feed the monitor.

    brightness        HSV value + c,          c = .1 .2 .3 .4 .5
    gaussian_blur     Gaussian blur, sigma    1 2 3 4 6
    gaussian_noise    + N(0, c²) on [0, 1],   c = .08 .12 .18 .26 .38
    jpeg              JPEG quality            25 18 15 10 7
"""

from __future__ import annotations

import io

import numpy as np

CORRUPTIONS = ("brightness", "gaussian_blur", "gaussian_noise", "jpeg")
SEVERITIES = (1, 2, 3, 4, 5)
_PARAMS = {
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "gaussian_blur": (1, 2, 3, 4, 6),
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "jpeg": (25, 18, 15, 10, 7),
}


def corrupt(image: np.ndarray, kind: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 HWC RGB image, corrupted."""
    if kind not in _PARAMS:
        raise ValueError(f"corruption {kind!r}: one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity}: 1 to 5")
    c = _PARAMS[kind][severity - 1]
    from PIL import Image, ImageFilter

    if kind == "brightness":
        hsv = np.asarray(Image.fromarray(image).convert("HSV"), dtype=np.float32) / 255.0
        hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        return np.asarray(Image.fromarray((hsv * 255).round().astype(np.uint8), "HSV").convert("RGB"))
    if kind == "gaussian_blur":
        return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=c)))
    if kind == "gaussian_noise":
        x = image.astype(np.float32) / 255.0 + rng.normal(0, c, image.shape)
        return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=c)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def corrupt_all(images: np.ndarray, kind: str, severity: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([corrupt(im, kind, severity, rng) for im in images])
