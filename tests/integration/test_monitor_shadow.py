"""The drift monitor sidecar against a real Triton (pytriton's tritonserver 2.51): its own model entry
keeps the SLO series clean, and shadow steps forward every request and measure live agreement.

One server plays both revisions, with four entries laid out as the pods lay them out
(``write_monitor_entry``: the monitor entry is config.pbtxt with another name and one instance, and a
symlink to the served version directory):

    good            the canary of an identical revision (a small ONNX classifier)
    good__monitor   the same artifact: the monitor's entry, and the stable's for the good canary
    bad             the canary of a worse revision: the same network with perturbed weights
    bad__monitor    the *good* artifact: the stable's monitor entry as the bad canary sees it
"""

from __future__ import annotations

import http.client
import json
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from visionfleet_compile.fetch import write_monitor_entry
from visionfleet_contract import (CONFIG_FILE, LIVE_AGREEMENT, LIVE_PAIR_ERRORS, LIVE_PAIRS, monitor_config,
                                  monitor_model_name, reference, triton_config)
from visionfleet_e2e.local_process import free_port, stop_process, wait_ready
from visionfleet_e2e.monitor import infer_body, mirrored_stream
from visionfleet_e2e.triton import TritonServer

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

INPUT, OUTPUT, CLASSES, BATCH = "images", "logits", 10, 4
MODEL_SPEC = {"name": "good", "inputs": [{"name": INPUT, "dataType": "FP32", "dims": [3, 16, 16]}],
              "outputs": [{"name": OUTPUT, "dataType": "FP32", "dims": [CLASSES]}]}
BATCHING = {"maxBatchSize": 8, "preferredBatchSizes": [4, 8], "maxQueueDelayMicroseconds": 200, "instanceCount": 2}


def classifier(path: Path, perturb: float = 0.0) -> Path:
    """A small ONNX classifier: conv 3→16 (3×3), ReLU, global average pool, dense 16→10. ``perturb``
    adds Gaussian noise of that many times the dense weights' spread: a worse model."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    conv = rng.normal(0, 0.5, (16, 3, 3, 3)).astype(np.float32)
    dense = rng.normal(0, 1.0, (16, CLASSES)).astype(np.float32)
    if perturb:
        dense = dense + np.random.default_rng(1).normal(0, perturb * dense.std(), dense.shape).astype(np.float32)
    bias = np.zeros(CLASSES, dtype=np.float32)
    nodes = [helper.make_node("Conv", [INPUT, "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "d", "b"], [OUTPUT])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", CLASSES])],
                              [numpy_helper.from_array(conv, "w"), numpy_helper.from_array(dense, "d"),
                               numpy_helper.from_array(bias, "b")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(path))
    return path


def images(n: int, seed: int) -> np.ndarray:
    """Noise over a colour cast per image: the cast decides the class (5 classes come up), the noise
    makes every image its own."""
    r = np.random.default_rng(seed)
    return (r.normal(0, 1, (n, 3, 16, 16)) + r.normal(0, 1.5, (n, 3, 1, 1))).astype(np.float32)


def entry(repo: Path, name: str, artifact: Path) -> None:
    d = repo / name
    (d / "1").mkdir(parents=True)
    (d / "1" / "model.onnx").write_bytes(artifact.read_bytes())
    (d / CONFIG_FILE).write_text(triton_config.render({**MODEL_SPEC, "name": name}, "onnxruntime", BATCHING))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("models")
    good, bad = classifier(work / "good.onnx"), classifier(work / "bad.onnx", perturb=1.0)
    repo = tmp_path_factory.mktemp("repo")
    entry(repo, "good", good)
    entry(repo, "bad", bad)
    write_monitor_entry(repo, "good")
    # The bad canary's stable: the good artifact under the monitor name the bad canary asks for.
    (repo / "bad__monitor").mkdir()
    (repo / "bad__monitor" / "1").symlink_to(Path("..") / "good" / "1", target_is_directory=True)
    (repo / "bad__monitor" / CONFIG_FILE).write_text(monitor_config((repo / "bad" / CONFIG_FILE).read_text(), "bad"))
    sess = ort.InferenceSession(str(good), providers=["CPUExecutionProvider"])
    x = images(200, 0)
    ref = reference.write(reference.build(x, sess.run([OUTPUT], {INPUT: x})[0]), work)
    triton = TritonServer(repo, tmp_path_factory.mktemp("triton"),
                          models=["good", "good__monitor", "bad", "bad__monitor"]).start(timeout=300)
    yield triton, repo, ref
    triton.stop()


class Sidecar:
    """``visionfleet-monitor`` as the pod runs it, on free loopback ports."""

    def __init__(self, workdir: Path, ref: Path, triton_url: str, model: str, *extra: str, shadow: bool = False):
        self.port = free_port()
        self.shadow_port = free_port() if shadow else None
        args = [sys.executable, "-m", "visionfleet_monitor.service", f"--reference={ref}", f"--model={model}",
                f"--input={INPUT}", f"--output={OUTPUT}", f"--triton=http://{triton_url}", "--window=50",
                "--interval=0.5", "--max-rate=1000", "--queue=1000", f"--listen=127.0.0.1:{self.port}", *extra]
        if shadow:
            args.append(f"--shadow-listen=127.0.0.1:{self.shadow_port}")
        self.log_path = workdir / f"monitor-{model}.log"
        self.proc = subprocess.Popen(args, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT)
        if not wait_ready(self.proc, f"{self.url}/readyz", 120):
            self.stop()
            raise RuntimeError(f"the monitor did not start:\n{self.log_path.read_text()[-3000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def shadow_url(self) -> str:
        return f"http://127.0.0.1:{self.shadow_port}"

    def status(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/v1/status", timeout=5) as r:
            return json.loads(r.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self) -> None:
        stop_process(self.proc, 10)


def series(text: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def counts(triton: TritonServer, model: str) -> tuple[float, float, float]:
    """(successful requests, inferences (images), failed requests) of ``model`` in Triton's metrics."""
    text = triton.metrics()
    return (series(text, "nv_inference_request_success", model=model), series(text, "nv_inference_count", model=model),
            series(text, "nv_inference_request_failure", model=model))


def settle(read, want, timeout: float = 30.0):
    """Poll ``read()`` until it returns ``want`` (Triton refreshes its metrics once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        got = read()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


# -- (a)/(b) the monitor's own entry ---------------------------------------------------------------------

def test_the_monitor_entry_is_the_same_artifact_under_its_own_name_with_one_instance(served):
    triton, repo, _ = served
    assert (repo / "good__monitor" / "1").is_symlink() and (repo / "good__monitor" / "1" / "model.onnx").is_file()
    with urllib.request.urlopen(f"http://{triton.url}/v2/models/good__monitor/config", timeout=5) as r:
        mon = json.loads(r.read())
    with urllib.request.urlopen(f"http://{triton.url}/v2/models/good/config", timeout=5) as r:
        own = json.loads(r.read())
    assert mon["name"] == "good__monitor" and own["name"] == "good"
    assert [g["count"] for g in mon["instance_group"]] == [1] and [g["count"] for g in own["instance_group"]] == [2]
    for key in ("max_batch_size", "input", "output", "dynamic_batching", "backend"):
        assert mon[key] == own[key], key
    # Same answers, bit for bit.
    body, headers = infer_body(INPUT, images(4, 3), OUTPUT)
    a = post(f"http://{triton.url}/v2/models/good/infer", body, headers)
    b = post(f"http://{triton.url}/v2/models/good__monitor/infer", body, headers)
    assert a[0] == b[0] == 200
    ha, hb = int(a[2]["Inference-Header-Content-Length"]), int(b[2]["Inference-Header-Content-Length"])
    assert json.loads(a[1][:ha])["model_name"] == "good" and json.loads(b[1][:hb])["model_name"] == "good__monitor"
    assert a[1][ha:] == b[1][hb:] and len(a[1][ha:]) == 4 * CLASSES * 4


def test_with_the_monitor_on_the_served_models_slo_series_count_exactly_the_clients_requests(served, tmp_path):
    triton, _, ref = served
    requests, per = 30, BATCH
    before = counts(triton, "good")
    before_mon = counts(triton, "good__monitor")
    side = Sidecar(tmp_path, ref, triton.url, "good", "--detector=bbsd-ks")
    try:
        assert settle(lambda: side.status()["tritonModel"], "good__monitor") == "good__monitor"
        ok = mirrored_stream(triton.url, side.url, "good", INPUT, OUTPUT, images(requests * per, 5), batch=per)
        assert ok == requests
        assert settle(lambda: side.status()["samplesTotal"], requests * per) == requests * per  # outputs all came
        metrics = side.metrics()
        assert "visionfleet_drift_monitor_entry 1.0" in metrics
        want = (before[0] + requests, before[1] + requests * per, before[2])
        assert settle(lambda: counts(triton, "good"), want) == want  # exactly the clients' requests
        # The monitor's own requests, all of them, and only there: one per mirrored request.
        want_mon = (before_mon[0] + requests, before_mon[1] + requests * per, before_mon[2])
        assert settle(lambda: counts(triton, "good__monitor"), want_mon) == want_mon
        assert series(metrics, "visionfleet_drift_samples_dropped_total") == 0
        # The body limit came from Triton's model config: 6 × a full batch of 8 images in binary.
        assert side.status()["maxBody"] == 6 * 8 * 3 * 16 * 16 * 4 and side.status()["maxBodyFrom"] == "model config"
    finally:
        side.stop()


# -- shadow steps ------------------------------------------------------------------------------------------

def shadow_run(triton, side: Sidecar, model: str, requests: int, seed: int) -> dict:
    """``requests`` binary and JSON requests sent to the sidecar's shadow port and the same bytes to Triton
    directly; returns what was measured."""
    direct_s, shadow_s, identical = [], [], 0
    # One kept-alive connection each way, as a gateway holds them: the difference is the forwarding.
    conns = {"direct": http.client.HTTPConnection(*triton.url.split(":"), timeout=30),
             "shadow": http.client.HTTPConnection("127.0.0.1", side.shadow_port, timeout=30)}

    def send(which: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        c = conns[which]
        c.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
        r = c.getresponse()
        return r.status, r.read(), dict(r.getheaders())

    for i in range(requests):
        x = images(BATCH, seed + i)
        if i % 2:
            body, headers = infer_body(INPUT, x, OUTPUT)
        else:  # KServe v2 JSON, answered in JSON
            body = json.dumps({"inputs": [{"name": INPUT, "shape": list(x.shape), "datatype": "FP32",
                                           "data": x.ravel().tolist()}]}).encode()
            headers = {"Content-Type": "application/json"}
        t = time.perf_counter()
        d = send("direct", body, headers)
        direct_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        s = send("shadow", body, headers)
        shadow_s.append(time.perf_counter() - t)
        assert d[0] == s[0] == 200, (d, s)
        assert s[2].get("Inference-Header-Content-Length") == d[2].get("Inference-Header-Content-Length")
        assert s[2].get("Content-Type") == d[2].get("Content-Type")
        identical += d[1] == s[1]
    for c in conns.values():
        c.close()
    return {"identical": identical, "direct_ms": 1000 * statistics.median(direct_s),
            "shadow_ms": 1000 * statistics.median(shadow_s)}


@pytest.mark.parametrize("canary,low,high", [("good", 0.999, 1.0), ("bad", 0.3, 0.8)])
def test_shadow_forwards_every_request_and_measures_agreement_with_the_stable(served, tmp_path, canary, low, high):
    triton, _, ref = served
    requests = 40
    before, before_mon = counts(triton, canary), counts(triton, monitor_model_name(canary))
    # The stable is this same server: its monitor entry <canary>__monitor serves the good artifact.
    side = Sidecar(tmp_path, ref, triton.url, canary, "--detector=bbsd-ks", f"--stable-url=http://{triton.url}",
                   "--max-pair-rate=1000", "--pair-concurrency=64", "--pair-timeout=30", shadow=True)  # every request
    try:
        got = shadow_run(triton, side, canary, requests, seed=100)
        assert got["identical"] == requests, got  # byte for byte what Triton answers directly
        settle(lambda: series(side.metrics(), LIVE_PAIRS), requests * BATCH, timeout=60)
        m = side.metrics()
        assert series(m, LIVE_PAIRS) == requests * BATCH, m
        assert series(m, LIVE_PAIR_ERRORS) == 0, m
        agreement = series(m, LIVE_AGREEMENT) / series(m, LIVE_PAIRS)
        assert low <= agreement <= high, agreement
        assert series(m, "visionfleet_shadow_requests_total", code="200") == requests
        # The canary's series: the direct and the forwarded requests; the pairs only under the monitor entry.
        want = (before[0] + 2 * requests, before[1] + 2 * requests * BATCH, before[2])
        assert settle(lambda: counts(triton, canary), want) == want
        want_mon = (before_mon[0] + requests, before_mon[1] + requests * BATCH, before_mon[2])
        assert settle(lambda: counts(triton, monitor_model_name(canary)), want_mon) == want_mon
        print(f"\n{canary}: agreement {agreement:.3f} over {requests * BATCH} images; median latency direct "
              f"{got['direct_ms']:.2f} ms, through the shadow listener {got['shadow_ms']:.2f} ms")
    finally:
        side.stop()


def test_an_unreachable_stable_is_counted_and_never_fails_the_forwarded_request(served, tmp_path):
    triton, _, ref = served
    side = Sidecar(tmp_path, ref, triton.url, "good", "--detector=bbsd-ks", f"--stable-url=http://127.0.0.1:{free_port()}",
                   "--max-pair-rate=1000", shadow=True)
    try:
        got = shadow_run(triton, side, "good", 6, seed=300)
        assert got["identical"] == 6
        assert settle(lambda: series(side.metrics(), LIVE_PAIR_ERRORS, reason="stable_unreachable"), 6) == 6
        assert series(side.metrics(), LIVE_PAIRS) == 0
    finally:
        side.stop()


def test_the_operator_reads_a_worse_canarys_live_agreement_through_prometheus_and_fails_it(served, tmp_path):
    """The whole chain of the judgment: the sidecar's pair counters → a real Prometheus (scraping the
    sidecar and Triton with the labels a pod's relabelling gives) → the operator's own provider
    (``measure(..., live=True)``) → ``assess`` in a shadow step: the perturbed canary passes its
    latency and errors, and fails on live agreement alone."""
    from visionfleet.api.spec import AnalysisSpec
    from visionfleet.observe.prometheus import measure
    from visionfleet.planner.analysis import Verdict, assess
    from visionfleet_e2e.prometheus import PrometheusServer

    triton, _, ref = served
    pod = {"namespace": "vision", "vision_deployment": "doorbell", "revision": "bad-rev", "class": "xeon"}
    side = Sidecar(tmp_path, ref, triton.url, "bad", "--detector=bbsd-ks", f"--stable-url=http://{triton.url}",
                   "--max-pair-rate=1000", "--pair-concurrency=64", "--pair-timeout=30", shadow=True)
    prom = PrometheusServer(tmp_path / "prometheus", {"monitor": (f"127.0.0.1:{side.port}", pod),
                                                      "triton": (triton.metrics_url.split("//")[1].split("/")[0], pod)})
    prom.start()
    try:
        # Scraped before the requests (Prometheus applies its first targets ~5 s after it starts), so
        # increase() sees the counters from before the first pair.
        assert settle(lambda: len(prom.query("up == 1")), 2) == 2, prom.api_targets()
        time.sleep(1.5)
        shadow_run(triton, side, "bad", 40, seed=400)
        settle(lambda: series(side.metrics(), LIVE_PAIRS), 40 * BATCH, timeout=60)
        direct = series(side.metrics(), LIVE_AGREEMENT) / series(side.metrics(), LIVE_PAIRS)
        time.sleep(3)  # the last counts scraped
        analysis = AnalysisSpec.model_validate({
            "interval": "30s", "prometheus": {"url": prom.url, "timeout": "5s"},
            "slo": {"latencyP99Ms": 5000, "errorRate": 0.5, "minRequests": 10},
            "drift": {"detector": "bbsd-ks", "pValue": 0.01, "window": 50},
            "liveAgreement": {"min": 0.98, "minPairs": 100}})
        m = measure(analysis, pod["namespace"], pod["vision_deployment"], pod["revision"], model="bad", live=True)
        targets = [(t["labels"].get("job"), t["health"], t.get("lastError")) for t in prom.api_targets()["activeTargets"]]
        assert m is not None and m.live_error is None and m.live_unknown is None, (m, targets)
        # increase() extrapolates to the window's edges: the count a little above the true 160
        assert 40 * BATCH <= m.live_pairs <= 40 * BATCH * 1.3, m.live_pairs
        assert abs(m.live_agreement - direct) < 0.02, (m.live_agreement, direct)
        a = assess(m, analysis, shadow=True)
        print(f"\nbad canary through Prometheus: live agreement {m.live_agreement:.3f} over {m.live_pairs:.0f} pairs "
              f"(sidecar: {direct:.3f}); p99 {m.p99_ms} ms, errors {m.error_rate}; verdict {a.verdict}: {a.reason}")
        assert a.verdict == Verdict.FAILED and "agreement" in a.reason.lower(), a
        # the same measurement outside a shadow step is not judged on agreement
        assert assess(m, analysis, shadow=False).verdict != Verdict.FAILED
    finally:
        prom.stop()
        side.stop()
