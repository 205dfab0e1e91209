"""Shadow steps: the canary is served a mirror of live traffic, and its answers are compared with the
stable's.

    gateway ──(RequestMirror, every live request)──► this listener (--shadow-listen, port SHADOW_PORT)
      │  forward: the request as received (method, path, query, body, headers but hop-by-hop ones)
      ├─► the pod's own Triton (--triton), under the model's own name: Triton's answer is returned
      │   byte for byte (the gateway discards it). Triton counts it in nv_inference_* of <model>,
      │   which is what the canary is judged on — its latency and errors under live traffic.
      └─► pairing, for at most --max-pair-rate requests a second, after the answer is on its way and
          never in its path (a bounded number at a time, each with --pair-timeout): the same inputs
          sent to the stable (--stable-url, env VISIONFLEET_STABLE_URL) under its monitor entry
          <model>__monitor (so the stable's SLO series do not see them), and the two answers compared
          per image with ``tasks.agreement`` (top-1 for a classifier, F1 at IoU 0.5 of the boxes for
          a detector, mask IoU for a segmenter, cosine similarity otherwise).

Counters (on the drift metrics endpoint, MONITOR_PORT):

    visionfleet_live_pairs_total            images compared (LIVE_PAIRS)
    visionfleet_live_agreement_total        sum of their agreement, each in [0, 1] (LIVE_AGREEMENT)
    visionfleet_live_pair_errors_total{reason}   requests sampled for a pair that none came of
                                            (LIVE_PAIR_ERRORS): canary_failed (Triton 5xx, down, no
                                            answer), stable_unreachable, stable_timeout, stable_failed
                                            (e.g. no monitor entry there), bad_request (unreadable, or
                                            Triton answered 4xx), shapes_differ, compare_failed, busy
                                            (--pair-concurrency pairs already in flight)
    visionfleet_shadow_requests_total{code} requests forwarded, by Triton's status (or 502/504 when
                                            Triton could not be reached / did not answer in time)

The operator's live agreement of a revision is increase(pairs agreement) / increase(pairs).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import zlib
from typing import Any, Mapping

import numpy as np
from aiohttp import ClientConnectionError, ClientSession, ClientTimeout, TCPConnector, web
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry, Counter

from visionfleet_contract import LIVE_AGREEMENT, LIVE_PAIR_ERRORS, LIVE_PAIRS, monitor_model_name
from visionfleet_contract.tasks import AgreementError, DetectionLayout, Task, agreement

from .window import TokenBucket

log = logging.getLogger("visionfleet.monitor.shadow")

# Triton's own default --http-max-input-size: whatever Triton would take is forwarded.
SHADOW_MAX_BODY = 64 * 1024 * 1024
# Not forwarded either way (RFC 9110 §7.6.1), plus what the client library sets itself.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length", "expect"})
INFER_PATH = re.compile(r"^/v2/models/(?P<model>[^/]+)(/versions/(?P<version>[^/]+))?/infer$")

DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "UINT8": np.uint8, "UINT16": np.uint16,
          "UINT32": np.uint32, "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
          "INT64": np.int64, "BOOL": np.bool_}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


class PairError(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def decoded(body: bytes, encoding: str | None) -> bytes:
    """A body as Triton reads it: gzip / deflate undone (Triton's HTTP endpoint accepts both)."""
    enc = (encoding or "").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc == "gzip":
        return gzip.decompress(body)
    if enc == "deflate":
        return zlib.decompress(body)
    raise ValueError(f"Content-Encoding {encoding!r}")


def split_body(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """(JSON header, binary part) of a KServe v2 request or response (binary-data extension)."""
    n = int(header_length) if header_length is not None else len(body)
    header = json.loads(body[:n])
    if not isinstance(header, dict):
        raise ValueError("the JSON header is not an object")
    return header, body[n:]


def tensors(entries: list[dict], binary: bytes) -> dict[str, np.ndarray]:
    """Every numeric tensor of a request's ``inputs`` or a response's ``outputs``, by name (a BYTES
    tensor, e.g. the classification extension's labels, is skipped: it has no numbers to compare)."""
    out, offset = {}, 0
    for t in entries:
        size = int((t.get("parameters") or {}).get("binary_data_size", 0))
        dtype = DTYPES.get(t.get("datatype", ""))
        shape = [int(s) for s in t.get("shape", [])]
        if size:
            chunk = binary[offset:offset + size]
            offset += size
            if dtype is None:
                continue
            if len(chunk) != size:
                raise ValueError(f"tensor {t.get('name')}: {len(chunk)} of {size} bytes")
            arr = np.frombuffer(chunk, dtype=dtype)
        elif "data" in t:
            if dtype is None:
                continue
            arr = np.asarray(t["data"], dtype=dtype)
        else:
            continue
        try:
            out[t["name"]] = arr.reshape(shape)
        except ValueError as e:
            raise ValueError(f"tensor {t.get('name')}: {arr.size} values do not make shape {shape}") from e
    return out


def infer_body(inputs: Mapping[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """A KServe v2 request (binary-data extension) with ``inputs`` that asks for every output, binary."""
    arrays = {n: np.ascontiguousarray(x) for n, x in inputs.items()}
    header = json.dumps({"inputs": [{"name": n, "shape": list(x.shape), "datatype": NAMES[x.dtype],
                                     "parameters": {"binary_data_size": x.nbytes}} for n, x in arrays.items()],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + b"".join(x.tobytes() for x in arrays.values()), {
        "Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}


class Shadow:
    """The shadow listener of one sidecar: forwards to ``triton`` and pairs a sample with ``stable``."""

    def __init__(self, *, model: str, triton: str, stable: str | None, task: Task, params: Mapping[str, Any],
                 pair_rate: float, pair_concurrency: int = 4, pair_timeout: float = 5.0,
                 forward_timeout: float = 60.0, registry: CollectorRegistry | None = None,
                 max_body: int = SHADOW_MAX_BODY):
        self.model, self.task, self.params = model, Task(task), dict(params)
        self.triton = triton if "://" in triton else f"http://{triton}"
        self.triton = self.triton.rstrip("/")
        self.stable = (stable if "://" in stable else f"http://{stable}").rstrip("/") if stable else None
        self.bucket = TokenBucket(pair_rate) if pair_rate > 0 and self.stable else None
        self.pair_concurrency = max(1, pair_concurrency)
        self.in_flight = 0
        self.pair_timeout, self.forward_timeout, self.max_body = pair_timeout, forward_timeout, max_body
        r = self.registry = registry or CollectorRegistry()
        self.c_pairs = Counter(LIVE_PAIRS, "images answered by both the canary and the stable, compared", registry=r)
        self.c_agreement = Counter(LIVE_AGREEMENT, "sum over compared images of their agreement (0..1)", registry=r)
        self.c_errors = Counter(LIVE_PAIR_ERRORS, "requests sampled for a pair that none came of", ["reason"],
                                registry=r)
        self.c_forwarded = Counter("visionfleet_shadow_requests", "mirrored requests forwarded to Triton", ["code"],
                                   registry=r)
        self.c_pairs.inc(0)
        self.c_agreement.inc(0)
        self.session: ClientSession | None = None
        self.pair_session: ClientSession | None = None
        self.tasks: set[asyncio.Task] = set()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        # The forwarded request's bytes go as they are and its answer comes back as Triton sent it: no
        # header of the client library's own (Accept-Encoding would have Triton compress the answer)
        # and no decompression.
        self.session = ClientSession(connector=TCPConnector(limit=256), auto_decompress=False,
                                     skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"))
        self.pair_session = ClientSession(connector=TCPConnector(limit=2 * self.pair_concurrency),
                                          skip_auto_headers=("Accept-Encoding",))

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        for s in (self.session, self.pair_session):
            if s is not None:
                await s.close()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        app.on_startup.append(lambda _: self.start())
        app.on_cleanup.append(lambda _: self.close())
        return app

    # -- forwarding --------------------------------------------------------------------------------

    async def forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        url = self.triton + request.raw_path  # path and query as received
        try:
            async with self.session.request(request.method, url, data=body if body else None, headers=headers,
                                            timeout=ClientTimeout(total=self.forward_timeout)) as r:
                answer, status = await r.read(), r.status
                answer_headers = [(k, v) for k, v in r.headers.items() if k.lower() not in HOP_BY_HOP]
        except asyncio.TimeoutError:
            self.c_forwarded.labels("504").inc()
            self._maybe_pair(request, body, None, None, None)
            return web.json_response({"error": f"Triton did not answer in {self.forward_timeout:g} s"}, status=504)
        except Exception as e:  # Triton down or restarting: the canary failed this request
            self.c_forwarded.labels("502").inc()
            self._maybe_pair(request, body, None, None, None)
            return web.json_response({"error": f"Triton unreachable: {e}"}, status=502)
        self.c_forwarded.labels(str(status)).inc()
        self._maybe_pair(request, body, status, answer, dict(answer_headers))
        return web.Response(status=status, body=answer, headers=CIMultiDict(answer_headers))

    # -- pairing -----------------------------------------------------------------------------------

    def _maybe_pair(self, request: web.Request, body: bytes, status: int | None, answer: bytes | None,
                    answer_headers: Mapping[str, str] | None) -> None:
        """Take a pair when this request is an inference of the model and the rate allows; the work
        runs as its own task, after this request's answer, and never raises into it."""
        if self.bucket is None or request.method != "POST":
            return
        m = INFER_PATH.match(request.path)
        if not m or m.group("model") != self.model or self.bucket.take(1) < 1:
            return
        if self.in_flight >= self.pair_concurrency:
            self.c_errors.labels("busy").inc()
            return
        self.in_flight += 1
        req = {"headers": dict(request.headers), "body": body, "version": m.group("version")}
        task = asyncio.get_running_loop().create_task(self._pair(req, status, answer, answer_headers))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _pair(self, req: dict, status: int | None, answer: bytes | None,
                    answer_headers: Mapping[str, str] | None) -> None:
        try:
            values = await self.pair(req, status, answer, answer_headers)
            self.c_pairs.inc(len(values))
            self.c_agreement.inc(float(sum(values)))
        except PairError as e:
            self.c_errors.labels(e.reason).inc()
            log.debug("pair: %s", e)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.c_errors.labels("compare_failed").inc()
            log.warning("pair failed: %s", str(e)[:300])
        finally:
            self.in_flight -= 1

    def needed(self) -> list[str] | None:
        """The outputs the agreement reads (None: whatever both answers have)."""
        p = self.params
        if self.task == Task.DETECTION:
            if p.get("layout") == DetectionLayout.BOXES.value:
                return [p[k] for k in ("boxes", "scores", "classes", "count") if p.get(k)]
            return [p["output"]]
        if self.task == Task.SEGMENTATION:
            return [p["output"]]
        if self.task == Task.CLASSIFICATION and p.get("output"):
            return [p["output"]]
        return None

    async def pair(self, req: dict, status: int | None, answer: bytes | None,
                   answer_headers: Mapping[str, str] | None) -> list[float]:
        if status is not None and 400 <= status < 500:  # the client's request refused: the stable would too
            raise PairError("bad_request", f"Triton answered {status}")
        if status != 200 or answer is None:
            raise PairError("canary_failed", f"Triton answered {status}")
        h = {k.lower(): v for k, v in req["headers"].items()}
        try:
            body = await asyncio.to_thread(decoded, req["body"], h.get("content-encoding"))
            header, binary = split_body(body, h.get("inference-header-content-length"))
            inputs = await asyncio.to_thread(tensors, header.get("inputs") or [], binary)
        except Exception as e:
            raise PairError("bad_request", str(e)[:200]) from None
        if not inputs:
            raise PairError("bad_request", "no numeric input")
        ah = {k.lower(): v for k, v in (answer_headers or {}).items()}
        try:
            a_header, a_binary = split_body(decoded(answer, ah.get("content-encoding")),
                                            ah.get("inference-header-content-length"))
            canary = await asyncio.to_thread(tensors, a_header.get("outputs") or [], a_binary)
        except Exception as e:
            raise PairError("canary_failed", f"unreadable answer: {e}") from None
        need = self.needed()
        if (need and not all(n in canary for n in need)) or not canary:
            # The client asked for other outputs (or the classification extension's labels): ask the
            # canary's own monitor entry for all of them, out of the SLO's series.
            canary = await self._infer(self.triton, monitor_model_name(self.model), req["version"], inputs,
                                       "canary_failed")
        stable = await self._infer(self.stable, monitor_model_name(self.model), req["version"], inputs, "stable")
        try:
            return await asyncio.to_thread(agreement, self.task, self.params, canary, stable)
        except AgreementError as e:
            raise PairError("shapes_differ", str(e)) from None

    async def _infer(self, base: str, model: str, version: str | None, inputs: Mapping[str, np.ndarray],
                     who: str) -> dict[str, np.ndarray]:
        body, headers = infer_body(inputs)
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        unreachable = "stable_unreachable" if who == "stable" else who
        timeout = "stable_timeout" if who == "stable" else who
        failed = "stable_failed" if who == "stable" else who
        try:
            async with self.pair_session.post(base + path, data=body, headers=headers,
                                              timeout=ClientTimeout(total=self.pair_timeout)) as r:
                text = await r.read()
                if r.status != 200:
                    raise PairError(failed, f"{base}{path}: {r.status} {text[:200]!r}")
                header, binary = split_body(text, r.headers.get("Inference-Header-Content-Length"))
        except PairError:
            raise
        except asyncio.TimeoutError:
            raise PairError(timeout, f"{base}{path}: no answer in {self.pair_timeout:g} s") from None
        except (ClientConnectionError, OSError) as e:
            raise PairError(unreachable, f"{base}{path}: {e}") from None
        except Exception as e:  # an answer that is not KServe v2
            raise PairError(failed, f"{base}{path}: unreadable answer: {e}") from None
        return await asyncio.to_thread(tensors, header.get("outputs") or [], binary)
