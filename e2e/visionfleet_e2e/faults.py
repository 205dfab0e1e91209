"""Fault injectors for the fault suite (tests/e2e/test_faults.py).

    FaultyPrometheus   a Prometheus HTTP API that answers badly on purpose: timeout, no series, NaN,
                       several series, a query error, or a server error
    FaultyApiServer    a reverse proxy in front of the real API server that answers a share of the
                       operator's requests with 409 / 429 (Retry-After) / 5xx, or stalls its watches

Both are plain loopback HTTP servers started in a thread; the operator is pointed at them (the
VisionDeployment's analysis.prometheus.url, or a kubeconfig whose server is the proxy) and must end
in a safe state whatever they do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import ssl
import threading
import time
from dataclasses import dataclass, field

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from .local_process import free_port

PROMETHEUS_MODES = ("timeout", "empty", "nan", "several", "query-error", "server-error")
HEALTHY = "healthy"  # one good number per query: 500 requests, 0 errors, p99 12 ms


class _LoopThread:
    """An asyncio loop in a daemon thread running one aiohttp application on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:  # pragma: no cover - overridden
        raise NotImplementedError

    def start(self):
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            # open watch streams must not hold the shutdown: give them a second
            self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
            self.loop.run_until_complete(self._runner.setup())
            self.loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            ready.set()
            self.loop.run_forever()

        threading.Thread(target=main, daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("fault injector did not start")
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner:
                await self._runner.cleanup()

        fut = asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
        try:
            fut.result(15)
        except (TimeoutError, concurrent.futures.TimeoutError):
            pass  # a client still holding a stream; the loop stops anyway
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)


class FaultyPrometheus(_LoopThread):
    """``/api/v1/query`` answering in ``mode`` (one of PROMETHEUS_MODES, or HEALTHY); ``queries`` counts
    the calls. ``mode`` may be changed while it serves."""

    def __init__(self, mode: str, delay: float = 30.0):
        super().__init__()
        if mode not in (*PROMETHEUS_MODES, HEALTHY):
            raise ValueError(f"mode {mode!r}: one of {PROMETHEUS_MODES} or {HEALTHY!r}")
        self.mode, self.delay, self.queries = mode, delay, 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/v1/query", self.query)
        return app

    async def query(self, request: web.Request) -> web.Response:
        self.queries += 1
        now = time.time()
        sample = lambda v, **labels: {"metric": labels, "value": [now, v]}  # noqa: E731
        if self.mode == "timeout":
            await asyncio.sleep(self.delay)
            return web.json_response({"status": "success", "data": {"resultType": "vector", "result": []}})
        if self.mode == "server-error":
            return web.Response(status=503, text="service unavailable")
        if self.mode == "query-error":
            return web.json_response({"status": "error", "errorType": "bad_data",
                                      "error": "1:1: parse error: unexpected character"}, status=400)
        if self.mode == HEALTHY:  # the mode may be switched while serving: an outage that ends
            q = request.query.get("query", "") or (await request.post()).get("query", "")
            value = "12" if "quantile" in q else "0" if " / (" in q else "500"
            return web.json_response({"status": "success", "data": {"resultType": "vector",
                                                                     "result": [sample(value)]}})
        result = {"empty": [], "nan": [sample("NaN")],
                  "several": [sample("12", pod="a"), sample("900", pod="b")]}[self.mode]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})


@dataclass
class ApiFaults:
    """What the proxy does to requests (a share of them, deterministically: every ``every``-th)."""

    status: int | None = None          # 409, 429, 500, 503 … for matching non-watch requests
    every: int = 3                     # every n-th matching request fails
    methods: tuple[str, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE")
    retry_after: int = 1               # seconds, with 429
    stall_watches: float = 0.0         # hold watch responses this long before passing any event
    counts: dict[str, int] = field(default_factory=dict)


class FaultyApiServer(_LoopThread):
    """A plain-HTTP reverse proxy to the real API server (TLS, the caller's bearer token passed on)."""

    def __init__(self, upstream: str, ca_file: str | None, client_cert: tuple[str, str] | None, faults: ApiFaults):
        super().__init__()
        self.upstream, self.faults = upstream.rstrip("/"), faults
        self.ssl = ssl.create_default_context(cafile=ca_file)
        if client_cert:
            self.ssl.load_cert_chain(*client_cert)
        self.seen = 0
        self.injected = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self.forward)
        return app

    async def forward(self, request: web.Request) -> web.StreamResponse:
        f = self.faults
        watch = request.query.get("watch") in ("true", "1")
        if not watch and f.status and request.method in f.methods:
            self.seen += 1
            if self.seen % f.every == 0:
                self.injected += 1
                f.counts[str(f.status)] = f.counts.get(str(f.status), 0) + 1
                headers = {"Retry-After": str(f.retry_after)} if f.status == 429 else {}
                body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": f.status,
                        "reason": {409: "Conflict", 429: "TooManyRequests"}.get(f.status, "InternalError"),
                        "message": f"injected by the fault proxy ({f.status})"}
                return web.json_response(body, status=f.status, headers=headers)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        data = await request.read()
        timeout = ClientTimeout(total=None, sock_read=None)
        session = ClientSession(connector=TCPConnector(ssl=self.ssl), timeout=timeout, auto_decompress=False)
        try:
            async with session.request(request.method, self.upstream + request.rel_url.path_qs, headers=headers,
                                       data=data or None) as up:
                resp = web.StreamResponse(status=up.status, headers={
                    k: v for k, v in up.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")})
                await resp.prepare(request)
                if watch and f.stall_watches:
                    f.counts["stalled-watch"] = f.counts.get("stalled-watch", 0) + 1
                    await asyncio.sleep(f.stall_watches)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        finally:
            await session.close()


def proxy_kubeconfig(admin_kubeconfig: dict, proxy_url: str, token: str) -> dict:
    """A kubeconfig pointing at the proxy (plain HTTP on loopback) with a bearer token."""
    return {"apiVersion": "v1", "kind": "Config", "current-context": "proxy",
            "clusters": [{"name": "proxy", "cluster": {"server": proxy_url}}],
            "users": [{"name": "op", "user": {"token": token}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "op"}}]}


def dump(obj: dict) -> str:
    return json.dumps(obj)
