"""``visionfleet-load``: drive a Triton model with real images and report what clients saw.

    visionfleet-load --url 127.0.0.1:8000 --model effnet --rate 50 --duration 30      # open loop
    visionfleet-load --url triton.vision:8000 --model effnet --concurrency 8 --duration 30  # closed loop

Works against any Triton (KServe v2 HTTP or gRPC API, tritonclient's asyncio clients): the input name,
data type and shape come from the server's model metadata. Images: the held-out views of the
packaged sample set (``--images FILE.npz`` for your own ``images`` array), sent as batches of
``--batch`` (default 1).

Open loop (``--rate``): requests are sent on a fixed schedule whatever the server does, and each
latency is measured from the request's *scheduled* time, so a stalling server is not hidden by
the client waiting for it (no coordinated omission). Closed loop (``--concurrency``): that many
requests are always in flight.

A progress line each second (stderr); at the end a report (stdout, ``--json`` for JSON):
requests, errors (by message), throughput, p50/p95/p99/max latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Stats:
    started: float = field(default_factory=time.perf_counter)
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    sent: int = 0
    images: int = 0

    def report(self, elapsed: float) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        ok = len(self.latencies_ms)
        pct = {f"p{q}": round(float(np.percentile(lat, q)), 3) for q in (50, 95, 99)}
        return {"requests": self.sent, "ok": ok, "errors": sum(self.errors.values()),
                "errorRate": round(sum(self.errors.values()) / max(self.sent, 1), 4),
                "errorMessages": dict(self.errors.most_common(5)), "seconds": round(elapsed, 2),
                "throughputRps": round(ok / elapsed, 2) if elapsed else 0.0,
                "imagesPerSecond": round(self.images / elapsed, 2) if elapsed else 0.0,
                "latencyMs": {**pct, "max": round(float(np.nanmax(lat)), 3)}}


def sample_images(path: str | None) -> np.ndarray:
    if path:
        return np.load(path)["images"].astype(np.float32)
    from visionfleet_compile import zoo

    info = zoo.ensure_sample_model(log=lambda m: print(m, file=sys.stderr))
    return np.load(info["data"])["images"][info["calibrationSamples"]:].astype(np.float32)


async def _run(args, images: np.ndarray, stats: Stats) -> dict:
    from tritonclient.utils import InferenceServerException, triton_to_np_dtype

    grpc = getattr(args, "protocol", "http") == "grpc"
    if grpc:
        import tritonclient.grpc.aio as aio

        client = aio.InferenceServerClient(args.url)
    else:
        import tritonclient.http.aio as aio

        client = aio.InferenceServerClient(args.url, conn_limit=max(64, args.concurrency or 0),
                                           conn_timeout=args.timeout)
    try:
        if grpc:
            meta = await client.get_model_metadata(args.model, as_json=True)
            config = (await client.get_model_config(args.model, as_json=True))["config"]
            outputs = [aio.InferRequestedOutput(o["name"]) for o in meta["outputs"]]
        else:
            meta = await client.get_model_metadata(args.model)
            config = await client.get_model_config(args.model)
            outputs = [aio.InferRequestedOutput(o["name"], binary_data=True) for o in meta["outputs"]]
        inp = meta["inputs"][0]
        batched = int(config.get("max_batch_size", 0)) > 0
        dtype = triton_to_np_dtype(inp["datatype"])
        data = images.astype(dtype)
        counter = 0

        async def one(scheduled: float) -> None:
            nonlocal counter
            i = counter % max(1, len(data) - args.batch + 1)
            counter += 1
            x = data[i:i + args.batch] if batched else data[i]
            request = aio.InferInput(inp["name"], list(x.shape), inp["datatype"])
            if grpc:
                request.set_data_from_numpy(np.ascontiguousarray(x))
            else:
                request.set_data_from_numpy(np.ascontiguousarray(x), binary_data=True)
            stats.sent += 1
            try:
                if grpc:
                    await client.infer(args.model, [request], outputs=outputs, client_timeout=args.timeout)
                else:
                    await client.infer(args.model, [request], outputs=outputs, timeout=int(args.timeout * 1e6))
            except InferenceServerException as e:
                stats.errors[(e.message() or str(e))[:120]] += 1
                return
            except Exception as e:  # connection reset, timeout: the client saw an error
                stats.errors[f"{type(e).__name__}: {e}"[:120]] += 1
                return
            stats.latencies_ms.append((time.perf_counter() - scheduled) * 1000)
            stats.images += args.batch if batched else 1

        stop = time.perf_counter() + args.duration
        progress = asyncio.create_task(_progress(stats, stop, args.quiet))
        if args.rate:
            interval, tasks, n = 1.0 / args.rate, set(), 0
            start = time.perf_counter()
            while True:
                scheduled = start + n * interval
                if scheduled >= stop:
                    break
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                t = asyncio.create_task(one(scheduled))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                n += 1
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=args.timeout)
                for t in pending:  # still unanswered after the timeout: the client saw an error
                    t.cancel()
                    stats.errors[f"no response within {args.timeout:g}s"] += 1
        else:
            async def worker() -> None:
                while time.perf_counter() < stop:
                    await one(time.perf_counter())
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        progress.cancel()
        return stats.report(time.perf_counter() - stats.started)
    finally:
        await client.close()


async def _progress(stats: Stats, stop: float, quiet: bool) -> None:
    last_ok, last_t = 0, time.perf_counter()
    while True:
        await asyncio.sleep(1)
        if quiet:
            continue
        now, ok = time.perf_counter(), len(stats.latencies_ms)
        recent = stats.latencies_ms[last_ok:]
        p99 = f"{np.percentile(recent, 99):.1f}" if recent else "-"
        print(f"  {now - stats.started:5.0f}s  sent {stats.sent:6d}  ok {ok:6d}  errors {sum(stats.errors.values()):5d}"
              f"  {(ok - last_ok) / (now - last_t):7.1f} req/s  p99(last s) {p99} ms  ({max(0, stop - now):.0f}s left)",
              file=sys.stderr, flush=True)
        last_ok, last_t = ok, now


def run_load(url: str, model: str, duration: float, rate: float | None = None, concurrency: int | None = None,
             batch: int = 1, images: np.ndarray | None = None, timeout: float = 30, quiet: bool = True,
             protocol: str = "http") -> dict:
    """The same load from Python (tests, benchmarks)."""
    args = argparse.Namespace(url=url, model=model, duration=duration, rate=rate, concurrency=concurrency or 0,
                              batch=batch, timeout=timeout, quiet=quiet, protocol=protocol)
    imgs = images if images is not None else sample_images(None)
    return asyncio.run(_run(args, imgs, Stats()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="visionfleet-load", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="Triton endpoint, host:port (HTTP port, or gRPC with --protocol grpc)")
    ap.add_argument("--protocol", choices=("http", "grpc"), default="http")
    ap.add_argument("--model", required=True)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=float, help="open loop: requests per second")
    mode.add_argument("--concurrency", type=int, help="closed loop: requests in flight")
    ap.add_argument("--duration", type=float, default=30, help="seconds (default 30)")
    ap.add_argument("--batch", type=int, default=1, help="images per request (batched models)")
    ap.add_argument("--images", help=".npz with an 'images' array (default: the packaged sample views)")
    ap.add_argument("--timeout", type=float, default=30, help="per-request timeout, seconds")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)
    if (args.rate is not None and args.rate <= 0) or (args.concurrency is not None and args.concurrency < 1):
        ap.error("--rate must be > 0 and --concurrency ≥ 1")
    args.concurrency = args.concurrency or 0
    try:
        report = asyncio.run(_run(args, sample_images(args.images), Stats()))
    except Exception as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        lat = report["latencyMs"]
        print(f"{report['requests']} requests in {report['seconds']}s: {report['throughputRps']} req/s ok, "
              f"{report['imagesPerSecond']} images/s, errors {report['errors']} ({report['errorRate']:.2%})\n"
              f"latency ms  p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}")
        for msg, n in report["errorMessages"].items():
            print(f"  {n} × {msg}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
