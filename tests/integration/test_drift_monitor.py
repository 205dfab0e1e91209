"""Drift for real: EfficientNet-Lite0 compiled as the compile Job does (its drift reference written
next to the artifact), served by a real Triton, with real drift monitors beside it fed a mirror of
the requests, scraped by a real Prometheus and read by the operator's analysis provider; the
planner then promotes the clean canary and rolls the corrupted one back.

Two monitors play the canary revision of two rollouts: ``clean`` receives a fresh sample of the
calibration set's distribution, ``corrupt`` the same images with Gaussian noise at ImageNet-C
severity 3."""

from __future__ import annotations

import time

import numpy as np
import pytest

from visionfleet.api.spec import AnalysisSpec
from visionfleet.observe.prometheus import measure
from visionfleet.planner.analysis import Verdict, assess
from visionfleet_compile import program, zoo
from visionfleet_e2e.corrupt import corrupt_all
from visionfleet_e2e.monitor import MonitorProcess, mirrored_stream
from visionfleet_e2e.prometheus import PrometheusServer
from visionfleet_e2e.triton import TritonServer, repository_entry
from visionfleet_contract.reference import REFERENCE_FILE, load

NAMESPACE, VD, WINDOW = "vision", "effnet", 300
CORRUPTION = ("gaussian_noise", 3)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A calibration set and a live stream that are two independent samples of one distribution
    (a photo drawn at random from the 250, a random crop of it): production traffic drawn from
    what the model was calibrated on."""
    photos = zoo.photos()
    calib, _ = zoo.random_views(photos, 300, seed=1)
    live, labels = zoo.random_views(photos, WINDOW + 40, seed=2)
    path = tmp_path_factory.mktemp("data") / "drift-split.npz"
    np.savez(path, images=zoo.normalise(np.concatenate([calib, live])).astype(np.float16),
             labels=np.concatenate([np.full(len(calib), -1), labels]))
    return path, len(calib), live


@pytest.fixture(scope="module")
def entry(data, tmp_path_factory):
    path, n_calib, _ = data
    sample = zoo.ensure_sample_model()
    work = tmp_path_factory.mktemp("compile")
    req = zoo.compile_request(sample, "openvino", "int8", {"metric": "top1Agreement", "min": 0.8}, 150,
                              "effnet/0123456789ab-xeon", calibration_uri=f"file://{path}")
    req["compile"]["calibration"]["samples"] = n_calib
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VISIONFLEET_PROFILE_SECONDS", "0.2")
        result = program.compile_request(req, work)
    return work / "repository" / "effnet" / "0123456789ab-xeon", result


@pytest.fixture(scope="module")
def stack(entry, data, tmp_path_factory):
    out_dir, _ = entry
    _, _, live = data
    repo = tmp_path_factory.mktemp("repo")
    repository_entry(repo, "effnet", "1", out_dir)
    triton = TritonServer(repo, tmp_path_factory.mktemp("triton")).start()
    monitors, prom = {}, None
    try:
        for name in ("clean", "corrupt"):
            # ``clean`` is told the tensor names (as the operator does); ``corrupt`` takes the request's
            # first input and Triton's first output by their own names.
            names = dict(input_name=zoo.INPUT, output_name=zoo.OUTPUT) if name == "clean" else {}
            monitors[name] = MonitorProcess(out_dir / REFERENCE_FILE, tmp_path_factory.mktemp(f"monitor-{name}"),
                                            "effnet", triton.url, window=WINDOW, interval=0.5, **names).start()
        targets = {name: (m.url.split("//")[1], {"namespace": NAMESPACE, "vision_deployment": VD,
                                                 "revision": name, "class": "xeon"})
                   for name, m in monitors.items()}
        prom = PrometheusServer(tmp_path_factory.mktemp("prometheus"), targets).start()
        # Requests no larger than the batch the compile step allowed (it depends on this machine's profile).
        batch = min(4, entry[1]["batching"]["maxBatchSize"])
        yield triton, monitors, prom, live, batch
    finally:
        if prom:
            prom.stop()
        for m in monitors.values():
            m.stop()
        triton.stop()


def analysis(prom) -> AnalysisSpec:
    return AnalysisSpec.model_validate({"interval": "30s", "prometheus": {"url": prom.url, "timeout": "5s"},
                                        "drift": {"pValue": 0.01, "window": WINDOW}})


def test_the_compile_job_writes_the_reference_next_to_the_artifact(entry, data):
    out_dir, result = entry
    ref = load(out_dir / REFERENCE_FILE)
    assert ref.samples == data[1] and ref.classes == 1000
    assert np.allclose(ref.probs.sum(axis=1), 1, atol=1e-4)
    assert result["driftReference"].endswith(f"/{REFERENCE_FILE}") and REFERENCE_FILE in result["files"]


@pytest.fixture(scope="module")
def measured(stack):
    triton, monitors, prom, live, batch = stack
    spec = analysis(prom)
    deadline = time.monotonic() + 30
    while len([r for r in prom.query("up") if r["value"][1] == "1"]) < 2:
        assert time.monotonic() < deadline, "Prometheus never scraped both monitors"
        time.sleep(0.5)
    time.sleep(2)
    before = measure(spec, NAMESPACE, VD, "clean")
    streams = {"clean": zoo.normalise(live), "corrupt": zoo.normalise(corrupt_all(live, *CORRUPTION))}
    for name, images in streams.items():
        ok = mirrored_stream(triton.url, monitors[name].url, "effnet", zoo.INPUT, zoo.OUTPUT, images[:WINDOW], batch)
        assert ok == -(-WINDOW // batch)  # the serving path answered every request
    after = {}
    for name, m in monitors.items():
        deadline = time.monotonic() + 60
        while not (m.status().get("lastTest") or {}).get("samples") == WINDOW:
            assert time.monotonic() < deadline, f"{name}: no test over a full window: {m.status()}"
            time.sleep(0.5)
        p = m.status()["lastTest"]["pValue"]
        deadline = time.monotonic() + 20
        while True:  # until Prometheus has scraped the tested value
            after[name] = measure(spec, NAMESPACE, VD, name)
            if after[name].drift_p_value is not None and abs(after[name].drift_p_value - p) <= 1e-9 + 1e-6 * p:
                break
            assert time.monotonic() < deadline, (name, after[name], p)
            time.sleep(0.5)
    return spec, before, after, {n: m.status() for n, m in monitors.items()}


def test_an_empty_window_is_inconclusive(measured):
    spec, before, _, _ = measured
    a = assess(before, spec)
    assert a.verdict == Verdict.INCONCLUSIVE and "drift window 0% full" in a.reason, a.reason


def test_metrics_reach_prometheus_and_judge_clean_and_corrupted_streams(measured):
    spec, _, after, status = measured
    for name in ("clean", "corrupt"):
        assert after[name].drift_window_fill == 1.0 and after[name].drift_error is None
        assert status[name]["samplesTotal"] == WINDOW and status[name]["held"] == WINDOW
    clean, corrupt = assess(after["clean"], spec), assess(after["corrupt"], spec)
    assert clean.verdict == Verdict.PASSED, (clean.reason, status["clean"])
    assert corrupt.verdict == Verdict.FAILED and "input drift" in corrupt.reason, (corrupt.reason, status["corrupt"])


def test_the_planner_promotes_the_clean_canary_and_rolls_the_corrupted_one_back(measured):
    from tests.unit.planner_sim import World, spec as sim_spec

    _, _, after, _ = measured
    outcomes = {}
    for name in ("clean", "corrupt"):
        w = World(sim_spec(analysis__drift={"pValue": 0.01, "window": WINDOW}, analysis__slo=None,
                           compile__calibration={"uri": "pvc://models/calib.npz"}))
        w.measurement = after["clean"]  # v1 was measured healthy
        w.run_until("Healthy")
        v1 = w.status.stable_revision
        w.set_spec(sim_spec(model__version="2", analysis__drift={"pValue": 0.01, "window": WINDOW},
                            analysis__slo=None, compile__calibration={"uri": "pvc://models/calib.npz"}))
        w.measurement = after[name]
        for _ in range(400):  # until the new revision is decided, one way or the other
            w.tick()
            last = w.status.history[-1] if w.status.history else None
            if last is not None and last.revision != v1 and last.outcome in ("Promoted", "RolledBack"):
                break
        outcomes[name] = (w.status.stable_revision != v1, last)
    promoted, last = outcomes["clean"]
    assert promoted and last.outcome == "Promoted"
    promoted, last = outcomes["corrupt"]
    assert not promoted and last.outcome == "RolledBack" and "input drift" in last.reason


def test_memory_stays_bounded_under_more_traffic_than_the_window(stack, measured):
    """Past a full window the monitor keeps the newest samples only: held stays at the window."""
    triton, monitors, _, live, batch = stack
    m = monitors["clean"]
    mirrored_stream(triton.url, m.url, "effnet", zoo.INPUT, zoo.OUTPUT, zoo.normalise(live[WINDOW:WINDOW + 40]), batch)
    deadline = time.monotonic() + 30
    while m.status()["samplesTotal"] < WINDOW + 40:
        assert time.monotonic() < deadline, m.status()
        time.sleep(0.3)
    assert m.status()["held"] == WINDOW
