"""A revision's drift reference: what the model's inputs and outputs looked like on the calibration
set, built by the compile Job next to the artifact (``drift-reference.npz`` in the model repository
entry), so every revision of every class carries its own.

    probs      [N, F] float32   what the default detector (bbsd-ks) tests, per calibration sample:
                                classification: the artifact's softmax outputs (black-box shift
                                detection, BBSD); detection, segmentation, other: the per-image
                                summaries of the artifact's outputs (``tasks.summaries``)
    meta       JSON             task, its output parameters (spec.model.detection/segmentation with
                                defaults), classes and input height/width: how the monitor summarises
                                live outputs the same way (absent in older references: classification)
    reduced    [N, D] float32   the inputs reduced to D dimensions (the MMD detector tests these):
                                images [N, ch, H, W] are average-pooled to ch × 8 × 8, then every
                                input is projected by a fixed random Gaussian matrix (seeded, so the
                                monitor reduces live inputs with the same matrix) — the "untrained
                                encoder" reduction that Rabanser et al. found as good as a trained one
    seed, pool  the reduction's parameters

Only numpy: the compile program writes it, the monitor reads it; the operator never imports it.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, Mapping
from pathlib import Path

import numpy as np

from . import REFERENCE_FILE, tasks

FORMAT = 1
POOL = 8
REDUCED_DIMS = 32
MAX_REFERENCE = 2000  # samples kept: enough for KS/MMD, small enough for the monitor's memory
MIN_SAMPLES = 20  # fewer and no test means anything: the compile program writes no reference, load refuses one


def softmax(outputs: np.ndarray) -> np.ndarray:
    """Class probabilities from a classifier's outputs: logits are soft-maxed; outputs that already
    are probabilities (non-negative rows summing to 1) are kept as they are."""
    x = np.asarray(outputs, dtype=np.float32).reshape(len(outputs), -1)
    if x.size and (x >= 0).all() and np.allclose(x.sum(axis=1), 1.0, atol=1e-3):
        return x
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _pooled(x: np.ndarray, pool: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4 and x.shape[2] >= pool and x.shape[3] >= pool:
        n, c, h, w = x.shape
        hs = np.linspace(0, h, pool + 1).astype(int)
        ws = np.linspace(0, w, pool + 1).astype(int)
        rows = np.stack([x[:, :, hs[i]:hs[i + 1], :].mean(axis=2) for i in range(pool)], axis=2)  # n,c,pool,w
        out = np.stack([rows[:, :, :, ws[j]:ws[j + 1]].mean(axis=3) for j in range(pool)], axis=3)
        return out.reshape(n, -1)
    return x.reshape(len(x), -1)


def projection(dims_in: int, seed: int, dims_out: int = REDUCED_DIMS) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((dims_in, dims_out)) / np.sqrt(dims_out)).astype(np.float32)


def reduce_inputs(x: np.ndarray, seed: int, pool: int = POOL) -> np.ndarray:
    """Live or reference inputs -> [N, REDUCED_DIMS]; the same for both because the seed is stored."""
    flat = _pooled(x, pool)
    return flat @ projection(flat.shape[1], seed)


@dataclass(frozen=True)
class Reference:
    probs: np.ndarray
    reduced: np.ndarray
    seed: int
    pool: int
    meta: dict = field(default_factory=dict)

    @property
    def task(self) -> tasks.Task:
        return tasks.Task(self.meta.get("task") or tasks.Task.CLASSIFICATION.value)

    def features(self, outputs: "np.ndarray | Mapping[str, np.ndarray]") -> np.ndarray:
        """Live outputs (the first output's array, or every output by name) summarised as the
        reference's ``probs`` were."""
        return output_features(outputs, self.meta)

    @property
    def samples(self) -> int:
        return len(self.probs)

    @property
    def classes(self) -> int:
        return self.probs.shape[1]

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        extra = {"meta": np.array(json.dumps(self.meta, sort_keys=True))} if self.meta else {}
        np.savez(buf, format=np.int64(FORMAT), probs=self.probs, reduced=self.reduced,
                 seed=np.int64(self.seed), pool=np.int64(self.pool), **extra)
        return buf.getvalue()


class ReferenceError(ValueError):
    pass


def output_features(outputs: "np.ndarray | Mapping[str, np.ndarray]", meta: Mapping[str, Any]) -> np.ndarray:
    """What bbsd-ks tests per sample: softmax of a classifier's (first) output; per-image summaries
    of a detector's, segmenter's or other model's outputs (``tasks.summaries``)."""
    task = tasks.Task(meta.get("task") or tasks.Task.CLASSIFICATION.value)
    if task == tasks.Task.CLASSIFICATION:
        first = outputs if isinstance(outputs, np.ndarray) else outputs[meta.get("output") or next(iter(outputs))]
        return softmax(first)
    if isinstance(outputs, np.ndarray):
        raise ReferenceError(f"task {task.value} needs every output by name, not one array")
    hw = meta.get("imageHW")
    return tasks.summaries(task, outputs, meta.get("params") or {}, tuple(hw) if hw else None, meta.get("classes"))


def build(inputs: np.ndarray, outputs: "np.ndarray | Mapping[str, np.ndarray]", seed: int = 0, pool: int = POOL,
          max_samples: int = MAX_REFERENCE, meta: Mapping[str, Any] | None = None) -> Reference:
    """The reference from calibration inputs and the artifact's outputs on them: the first output's
    array (a classifier), or every output by name with ``meta`` saying how to summarise them."""
    meta = dict(meta or {})
    first = outputs if isinstance(outputs, np.ndarray) else next(iter(outputs.values()))
    if len(inputs) != len(first) or len(inputs) == 0:
        raise ReferenceError(f"{len(inputs)} inputs and {len(first)} outputs: a reference needs one output "
                             f"per calibration sample")
    n = min(len(inputs), max_samples)
    head = outputs[:n] if isinstance(outputs, np.ndarray) else {k: v[:n] for k, v in outputs.items()}
    if meta.get("task") in (None, tasks.Task.CLASSIFICATION.value):
        meta = {}  # a classifier's reference reads as before (and by older monitors)
    return Reference(probs=output_features(head, meta), reduced=reduce_inputs(inputs[:n], seed, pool).astype(np.float32),
                     seed=seed, pool=pool, meta=meta)


def write(ref: Reference, out_dir: Path) -> Path:
    path = out_dir / REFERENCE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(ref.to_bytes())
    tmp.replace(path)
    return path


def load(path: Path) -> Reference:
    try:
        with np.load(path) as z:
            if int(z["format"]) != FORMAT:
                raise ReferenceError(f"{path}: reference format {int(z['format'])}, this monitor reads {FORMAT} "
                                     f"(recompile the revision with a matching compile image)")
            ref = Reference(probs=z["probs"].astype(np.float32), reduced=z["reduced"].astype(np.float32),
                            seed=int(z["seed"]), pool=int(z["pool"]),
                            meta=json.loads(str(z["meta"])) if "meta" in z.files else {})
    except FileNotFoundError:
        raise ReferenceError(f"{path}: no drift reference (the compile Job writes {REFERENCE_FILE} next to the "
                             f"artifact; was this revision compiled by an older compile image?)") from None
    except (OSError, KeyError, ValueError) as e:
        if isinstance(e, ReferenceError):
            raise
        raise ReferenceError(f"{path}: not a drift reference ({type(e).__name__}: {e})") from e
    if ref.probs.ndim != 2 or ref.reduced.ndim != 2 or len(ref.probs) != len(ref.reduced) or len(ref.probs) < MIN_SAMPLES:
        raise ReferenceError(f"{path}: malformed reference (probs {ref.probs.shape}, reduced {ref.reduced.shape}; "
                             f"at least {MIN_SAMPLES} samples needed)")
    return ref
