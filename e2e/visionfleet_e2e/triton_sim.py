"""Plays the metrics of the simulated Triton pods, for a real Prometheus to scrape.

kwok's pods run nothing, so this exporter stands in for their ``:8002/metrics``: for every Ready
Triton pod of the fleet it serves Triton's own series — ``nv_inference_request_success``,
``nv_inference_request_failure`` (counters) and ``nv_inference_request_summary_us`` (a summary
with quantiles) — and the drift monitor's ``visionfleet_drift_*`` gauges, labelled with the
``namespace``, ``vision_deployment``, ``revision`` and ``class`` the scrape config of a real
cluster attaches. A test chooses how each revision behaves (p99, error ratio, drift p-value) and
thereby makes a canary slow, failing or drifted.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from .local_process import free_port


@dataclass
class Behaviour:
    p99_ms: float = 8.0
    error_ratio: float = 0.0
    rps_per_pod: float = 40.0
    drift_p_value: float = 0.5
    drift_window_fill: float = 1.0


class TritonMetricsSim:
    def __init__(self, list_pods: Callable[[], list[dict]]):
        self.list_pods = list_pods  # () -> pod objects (kubectl JSON) of component=triton
        self.behaviours: dict[str, Behaviour] = {}
        self.default = Behaviour()
        self.port = free_port()
        self.started = {}  # pod uid -> monotonic start
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def behave(self, revision: str | None, **kw) -> None:
        with self.lock:
            if revision is None:
                self.default = Behaviour(**kw)
            else:
                self.behaviours[revision] = Behaviour(**kw)

    def render(self) -> str:
        now = time.monotonic()
        lines = [
            "# TYPE nv_inference_request_success counter",
            "# TYPE nv_inference_request_failure counter",
            "# TYPE nv_inference_request_summary_us summary",
            "# TYPE visionfleet_drift_p_value gauge",
            "# TYPE visionfleet_drift_window_fill gauge",
        ]
        for pod in self.list_pods():
            md = pod["metadata"]
            lbl = md.get("labels", {})
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))
            if not ready or "visionfleet.io/revision" not in lbl:
                continue
            rev = lbl["visionfleet.io/revision"]
            with self.lock:
                b = self.behaviours.get(rev, self.default)
                start = self.started.setdefault(md["uid"], now)
            labels = (f'namespace="{md["namespace"]}",vision_deployment="{lbl.get("visionfleet.io/vision-deployment", "")}",'
                      f'revision="{rev}",class="{lbl.get("visionfleet.io/class", "")}",pod="{md["name"]}",'
                      f'model="{lbl.get("app.kubernetes.io/instance", "")}",version="1"')
            total = b.rps_per_pod * (now - start)
            lines += [
                f"nv_inference_request_success{{{labels}}} {total * (1 - b.error_ratio):.3f}",
                f"nv_inference_request_failure{{{labels}}} {total * b.error_ratio:.3f}",
                f'nv_inference_request_summary_us{{{labels},quantile="0.5"}} {b.p99_ms * 500:.1f}',
                f'nv_inference_request_summary_us{{{labels},quantile="0.99"}} {b.p99_ms * 1000:.1f}',
                f"nv_inference_request_summary_us_count{{{labels}}} {total:.0f}",
                f"nv_inference_request_summary_us_sum{{{labels}}} {total * b.p99_ms * 600:.0f}",
                f"visionfleet_drift_p_value{{{labels}}} {b.drift_p_value}",
                f"visionfleet_drift_window_fill{{{labels}}} {b.drift_window_fill}",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> "TritonMetricsSim":
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path.startswith("/metrics"):
                    body = sim.render().encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                else:
                    body = json.dumps({"default": sim.default.__dict__}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
