"""The monitor's mirror endpoint refuses abuse before reading a body, and the shadow listener forwards
every request as received while a sample is paired with the stable's answer — against fake Tritons
(aiohttp servers) that record what reached them."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from visionfleet_contract import LIVE_AGREEMENT, LIVE_PAIR_ERRORS, LIVE_PAIRS, reference
from visionfleet_monitor.service import MAX_BODY_FALLBACK, Monitor, body_limit, parser
from visionfleet_monitor.shadow import Shadow, infer_body, split_body, tensors


@pytest.fixture
def ref(tmp_path):
    rng = np.random.default_rng(0)
    return reference.write(reference.build(rng.normal(0, 1, (100, 3, 16, 16)).astype(np.float32),
                                           rng.normal(0, 1, (100, 10)).astype(np.float32)), tmp_path)


def args(ref, **kw):
    a = parser().parse_args(["--reference", str(ref), "--model", "m", "--detector", "mmd", "--input", "images",
                             "--triton", "http://127.0.0.1:1"])
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def json_request(x: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()


async def raw(port: int, head: str, body: bytes = b"", wait: float = 2.0, full: bool = False) -> bytes:
    """Send ``head`` (and ``body``) on a plain socket and return what comes back within ``wait`` s —
    the request's body need not have been sent: a refusal must come without it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + body)
    await writer.drain()
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait)
        if not full:
            return head
        length = next(int(l.split(b":", 1)[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
        return head + await asyncio.wait_for(reader.readexactly(length), wait)
    except (asyncio.TimeoutError, asyncio.IncompleteReadError):
        return b""
    finally:
        writer.close()


# -- the mirror endpoint: refused before the body is read ----------------------------------------------------

def test_an_oversized_body_is_refused_with_413_before_it_is_read(ref):
    async def run():
        mon = Monitor(args(ref, max_body=10_000))
        async with TestServer(mon.app()) as server:
            # Content-Length over the limit, no body sent at all: the answer comes anyway.
            head = raw(server.port, "POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                    "Content-Length: 5000000\r\n\r\n")
            got = await head
            # Chunked: refused once the chunks pass the limit.
            chunk = b"x" * 8000
            chunked = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * 3
            got_chunked = await raw(server.port, "POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n"
                                                 "Transfer-Encoding: chunked\r\n\r\n", chunked)
            async with TestClient(server) as c:
                ok = await c.post("/v2/models/m/infer", data=json_request(np.zeros((1, 3, 16, 16), np.float32)))
                metrics = await (await c.get("/metrics")).text()
                return got, got_chunked, ok.status, metrics

    got, got_chunked, ok, metrics = asyncio.run(run())
    assert got.startswith(b"HTTP/1.1 413"), got
    assert got_chunked.startswith(b"HTTP/1.1 413"), got_chunked
    assert ok == 200  # a body under the limit is taken as before
    assert 'visionfleet_drift_requests_refused_total{reason="too_large"} 2.0' in metrics


def test_over_the_rate_a_request_is_refused_with_429_before_its_body_is_read(ref):
    async def run():
        mon = Monitor(args(ref, max_rate=2.0))
        async with TestServer(mon.app()) as server:
            async with TestClient(server) as c:
                x = np.zeros((2, 3, 16, 16), np.float32)
                first = await (await c.post("/v2/models/m/infer", data=json_request(x))).json()
                # The bucket is empty: headers only, and the refusal comes without the body.
                got = await raw(server.port, "POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n"
                                             "Content-Length: 100000\r\n\r\n")
                metrics = await (await c.get("/metrics")).text()
                return first, got, metrics

    first, got, metrics = asyncio.run(run())
    assert first["accepted"] == 2
    assert got.startswith(b"HTTP/1.1 429"), got
    assert 'visionfleet_drift_requests_refused_total{reason="rate_limited"} 1.0' in metrics


def test_the_body_limit_is_a_few_full_batches_of_the_models_inputs():
    config = {"max_batch_size": 8, "input": [{"name": "images", "data_type": "TYPE_FP32", "dims": [3, 224, 224]}]}
    assert body_limit(config) == 6 * 8 * 3 * 224 * 224 * 4  # 28.9 MB: 8 images as JSON text fit
    assert body_limit({"max_batch_size": 0, "input": [{"data_type": "TYPE_UINT8", "dims": [1, 3, 4, 4]}]}) == 64 * 1024
    assert body_limit({"input": [{"data_type": "TYPE_FP32", "dims": [-1, 3]}]}) is None  # variable: the fallback
    assert body_limit({"input": [{"data_type": "TYPE_STRING", "dims": [1]}]}) is None
    assert MAX_BODY_FALLBACK == 16 * 1024 * 1024


# -- the shadow listener -------------------------------------------------------------------------------------

class FakeTriton:
    """Answers KServe v2 inference requests for any model: logits = the first 3 input values of each
    image × ``sign`` (binary when asked for, else JSON); records every request."""

    def __init__(self, sign: float = 1.0, delay: float = 0.0):
        self.sign, self.delay, self.seen = sign, delay, []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.method, request.path_qs, dict(request.headers), body))
        if self.delay:
            await asyncio.sleep(self.delay)
        if request.path == "/v2/health/ready":
            return web.Response(text="")
        if request.match_info["model"] == "broken":
            return web.json_response({"error": "broken"}, status=400)
        header, binary = split_body(body, request.headers.get("Inference-Header-Content-Length"))
        x = tensors(header["inputs"], binary)["images"]
        logits = (x.reshape(len(x), -1)[:, :3] * self.sign).astype(np.float32)
        binary_out = (header.get("parameters") or {}).get("binary_data_output") or any(
            (o.get("parameters") or {}).get("binary_data") for o in header.get("outputs") or [])
        out = {"name": "logits", "datatype": "FP32", "shape": list(logits.shape)}
        asked = [o["name"] for o in header.get("outputs") or []]
        if asked and "logits" not in asked:  # the client asked for other outputs: none of ours
            return web.json_response({"model_name": request.match_info["model"], "outputs": []})
        if binary_out:
            h = json.dumps({"model_name": request.match_info["model"],
                            "outputs": [{**out, "parameters": {"binary_data_size": logits.nbytes}}]}).encode()
            return web.Response(body=h + logits.tobytes(), headers={
                "Inference-Header-Content-Length": str(len(h)), "Content-Type": "application/octet-stream",
                "X-Trace": "kept"})
        return web.json_response({"model_name": request.match_info["model"],
                                  "outputs": [{**out, "data": logits.ravel().tolist()}]})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 26)
        app.router.add_post("/v2/models/{model}/infer", self.handle)
        app.router.add_get("/v2/health/ready", self.handle)
        return app


def shadow_for(canary: TestServer | None, stable: TestServer | None, **kw) -> Shadow:
    return Shadow(model="m", triton=f"http://127.0.0.1:{canary.port if canary else 1}",
                  stable=f"http://127.0.0.1:{stable.port}" if stable else "http://127.0.0.1:1",
                  task="classification", params={"output": "logits"}, pair_rate=kw.pop("pair_rate", 1000.0), **kw)


async def settle(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def value(metrics: str, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    key = f"{name}{{{want}}}" if labels else name
    return sum(float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines() if l.split(" ")[0] == key)


def test_shadow_forwards_every_request_as_received_and_returns_trions_answer_byte_for_byte():
    async def run():
        canary = FakeTriton()
        async with TestServer(canary.app()) as cs:
            shadow = shadow_for(cs, None, pair_rate=0)  # forwarding alone
            async with TestClient(TestServer(shadow.app())) as c:
                x = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
                body, headers = infer_body({"images": x})
                # Exactly these headers from the client: the proxy must add none of its own.
                reply = await raw(c.port, "POST /v2/models/m/infer?x=1 HTTP/1.1\r\nHost: canary\r\n"
                                          "Content-Type: application/octet-stream\r\nInference-Header-Content-Length: "
                                          f"{headers['Inference-Header-Content-Length']}\r\nX-Request-Id: abc\r\n"
                                          f"Connection: keep-alive\r\nContent-Length: {len(body)}\r\n\r\n", body,
                                  full=True)
                head, answer = reply.split(b"\r\n\r\n", 1)
                answer_headers = dict(l.split(": ", 1) for l in head.decode().split("\r\n")[1:])
                status = int(head.split()[1])
                j = await c.post("/v2/models/m/infer", data=json_request(x), headers={"Content-Type": "application/json"})
                broken = await c.post("/v2/models/broken/infer", data=json_request(x))
                health = await c.get("/v2/health/ready")
                return canary.seen, status, answer, answer_headers, (j.status, await j.read()), \
                    (broken.status, await broken.json()), health.status, body

    seen, status, answer, headers, (jstatus, janswer), broken, health, body = asyncio.run(run())
    method, path, got_headers, got_body = seen[0]
    assert (method, path, got_body) == ("POST", "/v2/models/m/infer?x=1", body)
    got_headers = {k.lower(): v for k, v in got_headers.items()}
    # As received, but the hop-by-hop Connection; nothing of the proxy's own (no Accept-Encoding: Triton
    # would compress its answer; no User-Agent).
    assert set(got_headers) == {"host", "content-type", "inference-header-content-length", "x-request-id",
                                "content-length"}, got_headers
    assert got_headers["x-request-id"] == "abc" and got_headers["content-length"] == str(len(body))
    h = int(headers["Inference-Header-Content-Length"])
    assert status == 200 and headers["X-Trace"] == "kept" and headers["Content-Type"] == "application/octet-stream"
    assert np.array_equal(np.frombuffer(answer[h:], np.float32).reshape(2, 3), np.array([[0, 1, 2], [48, 49, 50]]))
    assert jstatus == 200 and json.loads(janswer)["outputs"][0]["data"] == [0, 1, 2, 48, 49, 50]
    assert broken == (400, {"error": "broken"}) and health == 200


def test_a_sample_is_paired_with_the_stables_monitor_entry_and_its_agreement_counted():
    async def run(sign):
        canary, stable = FakeTriton(), FakeTriton(sign=sign)
        async with TestServer(canary.app()) as cs, TestServer(stable.app()) as ss:
            shadow = shadow_for(cs, ss)
            async with TestClient(TestServer(shadow.app())) as c:
                x = np.random.default_rng(0).normal(size=(4, 3, 4, 4)).astype(np.float32)
                for _ in range(3):
                    assert (await c.post("/v2/models/m/infer", data=json_request(x))).status == 200
                await c.post("/v2/models/other/infer", data=json_request(x))  # another model: not paired
                await settle(lambda: value(_metrics(shadow), LIVE_PAIRS) >= 12)
                return canary.seen, stable.seen, _metrics(shadow)

    canary_seen, stable_seen, metrics = asyncio.run(run(1.0))
    assert value(metrics, LIVE_PAIRS) == 12 and value(metrics, LIVE_AGREEMENT) == 12
    assert [s[1] for s in stable_seen] == ["/v2/models/m__monitor/infer"] * 3
    # The canary's answer was read from the forwarded one: its Triton saw only the client's 4 requests.
    assert [s[1] for s in canary_seen] == ["/v2/models/m/infer"] * 3 + ["/v2/models/other/infer"]
    _, _, metrics = asyncio.run(run(-1.0))  # a stable whose top-1 is the canary's lowest
    assert value(metrics, LIVE_PAIRS) == 12 and value(metrics, LIVE_AGREEMENT) == 0


def _metrics(shadow: Shadow) -> str:
    from prometheus_client import generate_latest

    return generate_latest(shadow.registry).decode()


def test_pairing_never_delays_or_fails_the_forwarded_request():
    async def run():
        canary, stable = FakeTriton(), FakeTriton(delay=1.0)
        async with TestServer(canary.app()) as cs, TestServer(stable.app()) as ss:
            shadow = shadow_for(cs, ss, pair_timeout=0.3, pair_concurrency=1)
            async with TestClient(TestServer(shadow.app())) as c:
                x = np.zeros((1, 3, 4, 4), np.float32)
                took = []
                for _ in range(3):
                    t = time.perf_counter()
                    assert (await c.post("/v2/models/m/infer", data=json_request(x))).status == 200
                    took.append(time.perf_counter() - t)
                await settle(lambda: value(_metrics(shadow), LIVE_PAIR_ERRORS, reason="stable_timeout") >= 1)
                slow = _metrics(shadow)
            # Stable unreachable, and the canary's Triton down: the client still gets Triton's failure.
            down = shadow_for(cs, None)
            async with TestClient(TestServer(down.app())) as c:
                assert (await c.post("/v2/models/m/infer", data=json_request(x))).status == 200
                await settle(lambda: value(_metrics(down), LIVE_PAIR_ERRORS, reason="stable_unreachable") >= 1)
            gone = shadow_for(None, ss)
            async with TestClient(TestServer(gone.app())) as c:
                r = await c.post("/v2/models/m/infer", data=json_request(x))
                gone_status = r.status
                await settle(lambda: value(_metrics(gone), LIVE_PAIR_ERRORS, reason="canary_failed") >= 1)
            return took, slow, _metrics(down), gone_status, _metrics(gone)

    took, slow, down, gone_status, gone = asyncio.run(run())
    assert max(took) < 0.5, took  # the stable takes 1 s: not waited for
    assert value(slow, LIVE_PAIR_ERRORS, reason="stable_timeout") == 1
    assert value(slow, LIVE_PAIR_ERRORS, reason="busy") == 2  # one pair in flight at a time
    assert value(down, LIVE_PAIR_ERRORS, reason="stable_unreachable") == 1 and value(down, LIVE_PAIRS) == 0
    assert gone_status == 502 and value(gone, "visionfleet_shadow_requests_total", code="502") == 1
    assert value(gone, LIVE_PAIR_ERRORS, reason="canary_failed") == 1


def test_the_shadow_counters_are_on_the_drift_metrics_endpoint(ref):
    async def run():
        mon = Monitor(args(ref))
        mon.shadow = shadow_for(None, None)
        async with TestClient(TestServer(mon.app())) as c:
            return await (await c.get("/metrics")).text()

    metrics = asyncio.run(run())
    assert f"{LIVE_PAIRS} 0.0" in metrics and f"{LIVE_AGREEMENT} 0.0" in metrics


def test_an_answer_without_the_compared_output_is_completed_from_the_canarys_monitor_entry():
    async def run():
        canary, stable = FakeTriton(), FakeTriton()
        async with TestServer(canary.app()) as cs, TestServer(stable.app()) as ss:
            shadow = shadow_for(cs, ss)
            async with TestClient(TestServer(shadow.app())) as c:
                x = np.random.default_rng(1).normal(size=(2, 3, 4, 4)).astype(np.float32)
                body = json.dumps({"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32",
                                               "data": x.ravel().tolist()}],
                                   "outputs": [{"name": "features"}]}).encode()
                assert (await c.post("/v2/models/m/infer", data=body)).status == 200
                await settle(lambda: value(_metrics(shadow), LIVE_PAIRS) >= 2)
                return canary.seen, _metrics(shadow)

    seen, metrics = asyncio.run(run())
    # The client's request under the model's name, the pair's under the monitor entry (out of the SLO).
    assert [s[1] for s in seen] == ["/v2/models/m/infer", "/v2/models/m__monitor/infer"]
    assert value(metrics, LIVE_PAIRS) == 2 and value(metrics, LIVE_AGREEMENT) == 2


class FakeRepository:
    """Plays the pod's Triton for ``watch_triton``: which entries are ready, the index, m's config."""

    def __init__(self, entries: dict[str, str]):
        self.entries = entries  # name -> READY | LOADING | (absent from the repository)

    def app(self) -> web.Application:
        async def ready(request):
            return web.Response(status=200 if self.entries.get(request.match_info["model"]) == "READY" else 400)

        async def index(_):
            return web.json_response([{"name": n, "state": st} for n, st in self.entries.items()])

        async def config(_):
            return web.json_response({"name": "m", "max_batch_size": 4,
                                      "input": [{"name": "images", "data_type": "TYPE_FP32", "dims": [3, 16, 16]}]})

        app = web.Application()
        app.router.add_get("/v2/models/{model}/ready", ready)
        app.router.add_post("/v2/repository/index", index)
        app.router.add_get("/v2/models/m/config", config)
        return app


@pytest.mark.parametrize("entries,model,gauge", [
    ({"m": "READY", "m__monitor": "READY"}, "m__monitor", 1.0),
    ({"m": "READY", "m__monitor": "LOADING"}, "m__monitor", 1.0),  # wait for it, do not fall back
    ({"m": "READY"}, "m", 0.0),  # an older pod: asked under the served name, and it shows
])
def test_the_monitor_asks_under_its_own_entry_and_falls_back_only_when_there_is_none(ref, entries, model, gauge):
    async def run():
        async with TestServer(FakeRepository(entries).app()) as triton:
            mon = Monitor(args(ref, detector="bbsd-ks", triton=f"http://127.0.0.1:{triton.port}"))
            assert mon.infer_model == "m__monitor" and mon.max_body == MAX_BODY_FALLBACK
            task = asyncio.create_task(mon.watch_triton())
            await settle(lambda: mon.max_body_source == "model config")
            await asyncio.sleep(0.1)
            task.cancel()
            async with TestClient(TestServer(mon.app())) as c:
                return mon, await (await c.get("/metrics")).text()

    mon, metrics = asyncio.run(run())
    assert mon.infer_model == model and f"visionfleet_drift_monitor_entry {gauge}" in metrics
    assert mon.max_body == 6 * 4 * 3 * 16 * 16 * 4  # from the model's config
