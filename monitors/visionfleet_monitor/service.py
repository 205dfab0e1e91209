"""visionfleet-monitor: the drift monitor that runs as a sidecar in every Triton pod of a revision
whose spec asks for a drift test.

Where its samples come from (see docs/drift.md): a *mirror* of the inference requests. The gateway
(Gateway API ``RequestMirror``, Istio ``mirror``, NGINX ``mirror`` …) sends a copy of each request to
the monitor's port, fire-and-forget: the client's request is answered by Triton as before and the
mirror's answer is thrown away, so the serving path does not wait on the monitor. The monitor
accepts exactly what Triton accepts — ``POST /v2/models/<model>/infer``, KServe v2 JSON or its
binary-data extension — so any mirroring proxy works unchanged.

For the default test (bbsd-ks) it needs the model's outputs: it asks its own pod's Triton
(``--triton``, localhost) for them, at most ``--max-rate`` samples a second, through a bounded queue
(a full queue drops the sample and counts it). It asks under the model's *monitor entry*,
``<model>__monitor`` (``--monitor-model``; the same artifact under a second name in the pod's
repository), so its requests never land in the ``nv_inference_*`` series of ``<model>`` that the SLO
analysis reads. A Triton without that entry is asked under ``<model>`` itself, as before, with a
warning and ``visionfleet_drift_monitor_entry 0`` until the entry appears. A classifier's reference needs one
output (``--output``, default the first: softmax); a detector's, segmenter's or other model's
reference summarises every output, so all of them are asked for. The mmd test needs no Triton.

Whatever the detector, every sample taken also goes, reduced to 32 dimensions, into a second window
for the input-space test (KS per dimension, Bonferroni; ``detect.InputTest``): it sees shifts the
model's outputs hide, needs no Triton, and costs milliseconds. With mmd both tests read one window.

The mirror endpoint refuses before it reads a byte of the body: a body over ``--max-body`` (413; by
default 6 × a full batch of the model's inputs in binary, from Triton's model config — room for the
same batch as JSON text — and 16 MiB until that config is known) and a request that finds the rate
limit's bucket empty (429). A chunked body is counted as it streams and refused once past the limit.

With ``--shadow-listen`` it also serves shadow steps (``shadow.py``): every request mirrored to that
port is forwarded to the pod's Triton under the model's own name, and a sample is compared with the
stable's answer to the same inputs (``visionfleet_live_*``).

Metrics (``GET /metrics``; Prometheus attaches namespace/vision_deployment/revision/class from the
pod's labels, as for Triton):

    visionfleet_drift_p_value            last test's p-value (absent until the window is first full)
    visionfleet_drift_distance           last test's distance (max KS statistic, or MMD²)
    visionfleet_drift_detected           1 when the last test found drift (p < --p-value)
    visionfleet_drift_window_fill        samples held / window size (0..1)
    visionfleet_drift_samples_total      samples added to the window
    visionfleet_drift_samples_dropped_total{reason}   rate_limited | queue_full | bad_request | inference_failed
    visionfleet_drift_tests_total        tests run
    visionfleet_drift_test_seconds       duration of the last test
    visionfleet_drift_input_p_value      last input-space test's p-value (absent until its window is first full)
    visionfleet_drift_input_distance     last input-space test's largest KS statistic
    visionfleet_drift_input_detected     1 when the last input-space test found drift (p < --p-value)
    visionfleet_drift_requests_refused_total{reason}  too_large (413) | rate_limited (429): refused unread
    visionfleet_drift_monitor_entry      1 while Triton is asked under <model>__monitor, 0 under <model>
    visionfleet_live_pairs_total, visionfleet_live_agreement_total, visionfleet_live_pair_errors_total{reason},
    visionfleet_shadow_requests_total{code}           with --shadow-listen (see shadow.py)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from visionfleet_contract import (DRIFT_INPUT_DETECTED, DRIFT_INPUT_P_VALUE, DRIFT_P_VALUE, DRIFT_WINDOW_FILL,
                                  MONITOR_MODEL_SUFFIX, SHADOW_PORT, STABLE_URL_ENV, monitor_model_name)
from visionfleet_contract.reference import ReferenceError, load

from .detect import DETECTORS, Detector, DetectorUnavailable, InputTest
from .window import TokenBucket, Window

log = logging.getLogger("visionfleet.monitor")

DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "UINT8": np.uint8, "INT8": np.int8,
          "INT16": np.int16, "INT32": np.int32, "INT64": np.int64}
MAX_BODY = 64 * 1024 * 1024  # what the app's reader would ever take (the admission limit is lower)
MAX_BODY_FALLBACK = 16 * 1024 * 1024  # --max-body until Triton's model config says what a full batch is
MIN_MAX_BODY = 64 * 1024  # a derived limit never goes below this (the JSON header of a small model)
BODY_FACTOR = 6  # × a full batch in binary: the same batch as JSON text (≤ ~24 bytes a float32)
TRITON_BYTES = {"TYPE_FP32": 4, "TYPE_FP16": 2, "TYPE_BF16": 2, "TYPE_FP64": 8, "TYPE_UINT8": 1, "TYPE_INT8": 1,
                "TYPE_UINT16": 2, "TYPE_INT16": 2, "TYPE_UINT32": 4, "TYPE_INT32": 4, "TYPE_UINT64": 8, "TYPE_INT64": 8,
                "TYPE_BOOL": 1}
ENTRY_RECHECK = 30.0  # seconds between looks for the monitor entry while asking under the served name


def body_limit(config: dict) -> int | None:
    """--max-body derived from Triton's model config (GET /v2/models/<model>/config): BODY_FACTOR × the
    binary size of a full batch of every input; None when an input has a variable dimension or a type
    of no fixed size (BYTES)."""
    total = 0
    for t in config.get("input") or []:
        size = TRITON_BYTES.get(t.get("data_type", ""))
        dims = [int(d) for d in t.get("dims") or []]
        if size is None or any(d < 0 for d in dims):
            return None
        total += size * math.prod(dims)
    if not total:
        return None
    return max(MIN_MAX_BODY, BODY_FACTOR * max(1, int(config.get("max_batch_size") or 0)) * total)


class BadRequest(ValueError):
    pass


def parse_infer(body: bytes, header_length: str | None, input_name: str | None) -> tuple[str, np.ndarray]:
    """(name, tensor) of one input of a KServe v2 inference request (JSON, or JSON header + binary
    data): ``input_name``, or the first input when it is None."""
    try:
        if header_length is not None:
            n = int(header_length)
            header, binary = json.loads(body[:n]), body[n:]
        else:
            header, binary = json.loads(body), b""
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"not a KServe v2 inference request: {e}") from e
    inputs = header.get("inputs") if isinstance(header, dict) else None
    if not inputs:
        raise BadRequest("the request has no inputs")
    offset = 0
    for t in inputs:
        size = int((t.get("parameters") or {}).get("binary_data_size", 0))
        if input_name is None or t.get("name") == input_name:
            dtype = DTYPES.get(t.get("datatype", ""))
            if dtype is None:
                raise BadRequest(f"input {t.get('name')}: datatype {t.get('datatype')!r} is not one of {sorted(DTYPES)}")
            shape = [int(s) for s in t.get("shape", [])]
            if size:
                arr = np.frombuffer(binary[offset:offset + size], dtype=dtype)
            elif "data" in t:
                arr = np.asarray(t["data"], dtype=dtype)
            else:
                raise BadRequest(f"input {t.get('name')} carries no data")
            try:
                return t.get("name"), arr.reshape(shape).astype(np.float32)
            except ValueError as e:
                raise BadRequest(f"input {t.get('name')}: {arr.size} values do not make shape {shape}") from e
        offset += size
    raise BadRequest(f"the request has no input named {input_name!r}")


def _arg(args: argparse.Namespace, name: str):
    """A setting by name, the parser's default when ``args`` lacks it (a Namespace built by hand)."""
    return getattr(args, name, parser().get_default(name))


class Monitor:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.reference = load(Path(args.reference))
        # Where Triton is asked for outputs: the monitor entry, or the served name while it is missing.
        self.monitor_model = _arg(args, "monitor_model") or monitor_model_name(args.model)
        self.infer_model = self.monitor_model
        self.max_body = _arg(args, "max_body") or MAX_BODY_FALLBACK
        self.max_body_source = "flag" if _arg(args, "max_body") else "fallback"
        self.detector = Detector(self.reference, args.detector, args.p_value)
        self.window = Window(args.window, self.detector.dims)
        # The input-space test: its own window of reduced inputs (32 floats a sample), or mmd's own.
        self.input_test = InputTest(self.reference, args.p_value)
        self.input_window = Window(args.window, self.input_test.dims) if self.detector.needs_outputs else self.window
        self.input_tested_total = -1
        self.last_input: dict | None = None
        self.bucket = TokenBucket(args.max_rate)
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=args.queue)
        self.tested_total = -1  # window.total at the last test
        self.last: dict | None = None
        r = self.registry = CollectorRegistry()
        # The last test's figures are exported only once a test ran: absent, never a default value.
        t = self.tested_registry = CollectorRegistry()
        self.g_p = Gauge(DRIFT_P_VALUE, "p-value of the last drift test", registry=t)
        self.g_dist = Gauge("visionfleet_drift_distance", "distance of the last drift test", registry=t)
        self.g_drift = Gauge("visionfleet_drift_detected", "1 when the last test found drift", registry=t)
        i = self.input_registry = CollectorRegistry()
        self.g_in_p = Gauge(DRIFT_INPUT_P_VALUE, "p-value of the last input-space drift test", registry=i)
        self.g_in_dist = Gauge("visionfleet_drift_input_distance", "largest KS statistic of the last input-space test",
                               registry=i)
        self.g_in_drift = Gauge(DRIFT_INPUT_DETECTED, "1 when the last input-space test found drift", registry=i)
        self.g_fill = Gauge(DRIFT_WINDOW_FILL, "samples held / window size", registry=r)
        self.c_samples = Counter("visionfleet_drift_samples", "samples added to the window", registry=r)
        self.c_dropped = Counter("visionfleet_drift_samples_dropped", "samples not used", ["reason"], registry=r)
        self.c_tests = Counter("visionfleet_drift_tests", "drift tests run", registry=r)
        self.g_secs = Gauge("visionfleet_drift_test_seconds", "duration of the last drift test", registry=r)
        self.c_refused = Counter("visionfleet_drift_requests_refused", "mirrored requests refused unread",
                                 ["reason"], registry=r)
        self.g_entry = Gauge("visionfleet_drift_monitor_entry",
                             "1 while Triton is asked under the monitor entry, 0 under the served model's name",
                             registry=r)
        self.g_entry.set(1)
        self.g_fill.set(0)
        self.triton = None  # one client for all output workers (bbsd-ks), made in start_workers
        self.shadow = None  # shadow.Shadow with --shadow-listen; its counters are exported with ours

    # -- samples ---------------------------------------------------------------------------------

    async def admit(self, request: web.Request) -> bytes | web.Response:
        """The body of a request that is admitted, or the refusal — decided before a byte of the body
        is read: over --max-body (413, and the connection closed rather than drained), the rate
        limit's bucket empty (429). A chunked body is counted as it arrives and refused past the limit."""
        length = request.content_length
        if length is not None and length > self.max_body:
            self.c_refused.labels("too_large").inc()
            resp = web.json_response({"error": f"body of {length} bytes is over the monitor's limit of "
                                               f"{self.max_body} (--max-body)"}, status=413)
            resp.force_close()
            return resp
        if self.bucket.available() < 1:
            self.c_refused.labels("rate_limited").inc()
            return web.json_response({"error": "over the monitor's rate (--max-rate): sample not taken"}, status=429,
                                     headers={"Retry-After": "1"})
        if length is not None:
            return await request.content.readexactly(length) if length else b""
        chunks, size = [], 0
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > self.max_body:
                self.c_refused.labels("too_large").inc()
                resp = web.json_response({"error": f"body over the monitor's limit of {self.max_body} bytes "
                                                   "(--max-body)"}, status=413)
                resp.force_close()
                return resp
            chunks.append(chunk)
        return b"".join(chunks)

    async def mirror(self, request: web.Request) -> web.Response:
        body = await self.admit(request)
        if isinstance(body, web.Response):
            return body
        try:
            name, x = parse_infer(body, request.headers.get("Inference-Header-Content-Length"), self.args.input)
        except BadRequest as e:
            self.c_dropped.labels("bad_request").inc()
            return web.json_response({"error": str(e)}, status=400)
        rows = len(x) if x.ndim > 1 else 1
        granted = self.bucket.take(rows)
        if granted < rows:
            self.c_dropped.labels("rate_limited").inc(rows - granted)
        if granted:
            x = x[:granted]
            if self.detector.needs_outputs:
                # The input test needs no Triton: every sample taken counts, even when the queue is full.
                self.input_window.add(self.input_test.features(x))
                try:
                    self.queue.put_nowait((name, x))
                except asyncio.QueueFull:
                    self.c_dropped.labels("queue_full").inc(granted)
                    granted = 0
            else:
                self.add(self.detector.features(x, None))  # mmd: the same window feeds the input test
        return web.json_response({"accepted": granted})

    def add(self, features: np.ndarray) -> None:
        self.window.add(features)
        self.c_samples.inc(len(features))
        self.g_fill.set(self.window.fill)

    def start_workers(self) -> list[asyncio.Task]:
        tasks = [asyncio.create_task(self.scheduler())]
        if self.detector.needs_outputs:
            import tritonclient.http.aio as httpclient

            self.triton = httpclient.InferenceServerClient(url=self.args.triton.split("://", 1)[-1])
            tasks += [asyncio.create_task(self.outputs_worker()) for _ in range(max(1, self.args.workers))]
        tasks.append(asyncio.create_task(self.watch_triton()))
        return tasks

    async def watch_triton(self) -> None:
        """Learns from the pod's Triton what it can only tell once it runs: whether the monitor entry is
        loaded (else ask under the served name, and look again every ENTRY_RECHECK s) and, without
        --max-body, the body limit from the model's config."""
        from aiohttp import ClientSession, ClientTimeout

        base = self.args.triton if "://" in self.args.triton else f"http://{self.args.triton}"
        async with ClientSession(timeout=ClientTimeout(total=5)) as s:
            async def get(path: str, method: str = "GET"):
                try:
                    async with s.request(method, base.rstrip("/") + path, json={} if method == "POST" else None) as r:
                        return r.status, (await r.json(content_type=None) if r.status == 200 else None)
                except Exception:
                    return None, None

            while True:
                entry, _ = await get(f"/v2/models/{self.monitor_model}/ready")
                served, _ = await get(f"/v2/models/{self.args.model}/ready")
                loading = False
                if entry != 200 and served == 200:  # is the entry still loading, or not there at all?
                    _, index = await get("/v2/repository/index", "POST")
                    loading = any(m.get("name") == self.monitor_model and m.get("state") == "LOADING"
                                  for m in index or [] if isinstance(m, dict))
                if entry == 200:
                    if self.infer_model != self.monitor_model:
                        log.info(json.dumps({"phase": "monitor-entry", "model": self.monitor_model}))
                    self.infer_model = self.monitor_model
                    self.g_entry.set(1)
                elif served == 200 and not loading and self.infer_model != self.args.model \
                        and self.detector.needs_outputs:
                    log.warning(json.dumps({"phase": "monitor-entry-missing", "entry": self.monitor_model,
                                            "askingUnder": self.args.model,
                                            "effect": "the monitor's requests count in the served model's "
                                                      "SLO series"}))
                    self.infer_model = self.args.model
                    self.g_entry.set(0)
                if self.max_body_source == "fallback" and served == 200:
                    _, config = await get(f"/v2/models/{self.args.model}/config")
                    limit = body_limit(config or {})
                    if limit:
                        self.max_body, self.max_body_source = limit, "model config"
                        log.info(json.dumps({"phase": "max-body", "bytes": limit, "from": "model config"}))
                known = entry == 200 and self.max_body_source != "fallback"
                await asyncio.sleep(ENTRY_RECHECK if known or (served == 200 and not loading) else 2.0)

    async def outputs_worker(self) -> None:
        import tritonclient.http.aio as httpclient

        client = self.triton
        while True:
            name, x = await self.queue.get()
            try:
                inp = httpclient.InferInput(name, list(x.shape), "FP32")  # the mirrored request's own input
                inp.set_data_from_numpy(x.astype(np.float32), binary_data=True)
                if self.detector.needs_all_outputs:  # summaries of a detector, segmenter…: every output
                    res = await client.infer(self.infer_model, [inp], outputs=None)
                    names = [o["name"] for o in res.get_response()["outputs"]]
                    self.add(self.detector.features(None, {n: res.as_numpy(n) for n in names}))
                    continue
                outputs = [httpclient.InferRequestedOutput(self.args.output, binary_data=True)] if self.args.output else None
                res = await client.infer(self.infer_model, [inp], outputs=outputs)
                out = self.args.output or res.get_response()["outputs"][0]["name"]
                self.add(self.detector.features(None, res.as_numpy(out)))
            except Exception as e:  # Triton down, model unloaded, shape mismatch: count, keep going
                self.c_dropped.labels("inference_failed").inc(len(x))
                log.warning("outputs for %d samples failed: %s", len(x), str(e)[:300])

    # -- tests -----------------------------------------------------------------------------------

    async def test_inputs(self) -> None:
        """The input-space test, when its window is full and has new samples (~30 ms: 32 KS tests)."""
        if not self.input_window.full or self.input_window.total == self.input_tested_total:
            return
        self.input_tested_total = self.input_window.total
        result = await asyncio.to_thread(self.input_test.test, self.input_window.values())
        self.g_in_p.set(result.p_value)
        self.g_in_dist.set(result.distance)
        self.g_in_drift.set(1 if result.drift else 0)
        self.last_input = {"pValue": result.p_value, "distance": result.distance, "drift": result.drift,
                           "samples": result.samples, "seconds": round(result.seconds, 3), "at": time.time()}
        log.info(json.dumps({"phase": "tested", "detector": self.input_test.kind, **self.last_input}))

    async def scheduler(self) -> None:
        while True:
            await asyncio.sleep(self.args.interval)
            try:
                await self.test_inputs()
            except Exception:
                log.exception("input-space drift test failed")
            if self.window.full and self.window.total != self.tested_total:
                self.tested_total = self.window.total
                try:
                    result = await asyncio.to_thread(self.detector.test, self.window.values())
                except Exception:
                    log.exception("drift test failed")
                    continue
                self.g_p.set(result.p_value)
                self.g_dist.set(result.distance)
                self.g_drift.set(1 if result.drift else 0)
                self.g_secs.set(result.seconds)
                self.c_tests.inc()
                self.last = {"pValue": result.p_value, "distance": result.distance, "drift": result.drift,
                             "samples": result.samples, "seconds": round(result.seconds, 3), "at": time.time()}
                log.info(json.dumps({"phase": "tested", "detector": self.detector.kind, **self.last}))

    # -- http ------------------------------------------------------------------------------------

    async def metrics(self, _: web.Request) -> web.Response:
        text = generate_latest(self.registry) + (generate_latest(self.tested_registry) if self.last else b"") \
            + (generate_latest(self.input_registry) if self.last_input else b"") \
            + (generate_latest(self.shadow.registry) if self.shadow is not None else b"")
        return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status(self, _: web.Request) -> web.Response:
        return web.json_response({"detector": self.detector.kind, "pValueThreshold": self.args.p_value,
                                  "window": self.window.size, "held": self.window.count,
                                  "samplesTotal": self.window.total, "referenceSamples": self.reference.samples,
                                  "queued": self.queue.qsize(), "lastTest": self.last,
                                  "tritonModel": self.infer_model, "maxBody": self.max_body,
                                  "maxBodyFrom": self.max_body_source,
                                  "input": {"test": self.input_test.kind, "held": self.input_window.count,
                                            "samplesTotal": self.input_window.total, "lastTest": self.last_input}})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.add_routes([web.post("/v2/models/{model}/infer", self.mirror),
                        web.post("/v2/models/{model}/versions/{version}/infer", self.mirror),
                        web.get("/metrics", self.metrics), web.get("/v1/status", self.status),
                        web.get("/healthz", _ok), web.get("/readyz", _ok)])
        return app


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok")  # ready as soon as it listens: the reference loaded before that


def make_shadow(args: argparse.Namespace, mon: Monitor):
    from .shadow import Shadow

    meta = mon.reference.meta or {}
    params = dict(meta.get("params") or {})
    if mon.reference.task.value == "classification" and args.output:
        params["output"] = args.output
    return Shadow(model=args.model, triton=args.triton, stable=args.stable_url or None, task=mon.reference.task,
                  params=params, pair_rate=args.pair_rate, pair_concurrency=args.pair_concurrency,
                  pair_timeout=args.pair_timeout)


async def serve(args: argparse.Namespace) -> None:
    mon = Monitor(args)
    runners = [web.AppRunner(mon.app(), access_log=None)]
    if args.shadow_listen:
        mon.shadow = make_shadow(args, mon)
        runners.append(web.AppRunner(mon.shadow.app(), access_log=None))
    for runner, listen in zip(runners, (args.listen, args.shadow_listen)):
        await runner.setup()
        host, _, port = listen.rpartition(":")
        await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
    tasks = mon.start_workers()
    log.info(json.dumps({"phase": "listening", "listen": args.listen, "detector": args.detector, "window": args.window,
                         "pValue": args.p_value, "referenceSamples": mon.reference.samples,
                         "tritonModel": mon.infer_model, "shadowListen": args.shadow_listen,
                         "stableUrl": args.stable_url if args.shadow_listen else None}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        for t in tasks:
            t.cancel()
        if mon.triton is not None:
            await mon.triton.close()
        for runner in reversed(runners):
            await runner.cleanup()


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="visionfleet-monitor", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Samples: POST /v2/models/<model>/infer (a mirror of Triton's traffic). "
                                        "Metrics: GET /metrics. State: GET /v1/status.")
    ap.add_argument("--reference", required=True, help="drift-reference.npz written by the compile Job")
    ap.add_argument("--detector", choices=DETECTORS, default="bbsd-ks", help="test (default bbsd-ks)")
    ap.add_argument("--window", type=int, default=500, help="samples per test (default 500)")
    ap.add_argument("--p-value", type=float, default=0.01, help="drift when p < this (default 0.01)")
    ap.add_argument("--model", required=True, help="the Triton model name")
    ap.add_argument("--input", default=None, help="input tensor to test (default: the request's first)")
    ap.add_argument("--output", default=None, help="a classifier's output tensor with the logits (default: the first; "
                                                  "the other tasks' summaries read every output)")
    ap.add_argument("--triton", default="http://127.0.0.1:8000", help="Triton asked for outputs (bbsd-ks)")
    ap.add_argument("--listen", default="0.0.0.0:8010", help="address for samples and metrics")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between tests (default 5)")
    ap.add_argument("--max-rate", type=float, default=50.0, help="samples a second taken, the rest dropped (default 50)")
    ap.add_argument("--queue", type=int, default=16, help="mirrored requests waiting for outputs (default 16)")
    ap.add_argument("--workers", type=int, default=2, help="concurrent output requests to Triton (default 2)")
    ap.add_argument("--monitor-model", default="", help=f"the model entry Triton is asked under for outputs "
                                                       f"(default <model>{MONITOR_MODEL_SUFFIX}: out of the SLO's series)")
    ap.add_argument("--max-body", type=int, default=0,
                    help=f"largest mirrored body taken, in bytes; larger ones are refused unread with 413 (default: "
                         f"{BODY_FACTOR} × a full batch of the model's inputs in binary, from Triton's model config; "
                         f"{MAX_BODY_FALLBACK // 2**20} MiB until it is known)")
    sh = ap.add_argument_group("shadow steps")
    sh.add_argument("--shadow-listen", default="", help=f"address of the shadow listener, e.g. 0.0.0.0:{SHADOW_PORT} "
                                                       "(default: none): every request is forwarded to --triton")
    sh.add_argument("--stable-url", default=os.environ.get(STABLE_URL_ENV, ""),
                    help=f"the stable revision's Triton (HTTP), asked under <model>{MONITOR_MODEL_SUFFIX} for the "
                         f"pairs (default ${STABLE_URL_ENV}; none: forward only)")
    sh.add_argument("--max-pair-rate", "--pair-rate", dest="pair_rate", type=float, default=10.0,
                    help="requests a second compared with the stable's answer, the rest only forwarded (default 10; "
                         "0: none)")
    sh.add_argument("--pair-concurrency", type=int, default=4, help="pairs in flight at most (default 4)")
    sh.add_argument("--pair-timeout", type=float, default=5.0, help="seconds a pair's requests may take (default 5)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for name, value, low in (("--window", args.window, 20), ("--max-rate", args.max_rate, 1), ("--queue", args.queue, 1),
                             ("--max-body", args.max_body, 0), ("--max-pair-rate", args.pair_rate, 0),
                             ("--pair-concurrency", args.pair_concurrency, 1), ("--pair-timeout", args.pair_timeout, 0.1)):
        if value < low:
            print(f"visionfleet-monitor: {name} {value}: must be ≥ {low}", file=sys.stderr)
            return 2
    if not 0 < args.p_value < 1:
        print(f"visionfleet-monitor: --p-value {args.p_value}: must be in (0, 1)", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(args))
    except (ReferenceError, DetectorUnavailable) as e:
        print(f"visionfleet-monitor: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
