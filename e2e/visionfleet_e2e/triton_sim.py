"""Plays the metrics of the simulated Triton pods, for a real Prometheus to scrape.

kwok's pods run nothing, so this exporter stands in for their ``:8002/metrics``: for every Ready
Triton pod of the fleet it serves Triton's own series — ``nv_inference_request_success``,
``nv_inference_request_failure`` (counters), ``nv_inference_request_summary_us`` (a summary
with quantiles), ``nv_inference_count``, ``nv_inference_exec_count`` and
``nv_inference_queue_duration_us`` (counters: inferences, executions, µs spent queued) — and the
drift monitor's ``visionfleet_drift_*`` gauges, labelled with the
``namespace``, ``vision_deployment``, ``revision`` and ``class`` the scrape config of a real
cluster attaches. A test chooses how each revision behaves (p99, error ratio, drift p-value) and
thereby makes a canary slow, failing or drifted.

A revision given ``rps_total`` instead shares that load among its Ready pods (as a Service would:
scaling out lowers each pod's rate) and its counters are integrated over time, so a change of load
changes their slope and never their value: what an autoscaling test on ``rate()`` needs.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from .local_process import free_port


def served_model(pod: dict) -> str:
    """The model entry the pod's Triton serves, as Triton labels its series: the name in the path its
    artifact is mounted at (/models/<model>/1)."""
    for c in pod.get("spec", {}).get("containers", []):
        for m in c.get("volumeMounts", []):
            parts = m.get("mountPath", "").split("/")
            if len(parts) == 4 and parts[1] == "models" and parts[3] == "1":
                return parts[2]
    return pod["metadata"].get("labels", {}).get("app.kubernetes.io/instance", "")


@dataclass
class Behaviour:
    p99_ms: float = 8.0
    error_ratio: float = 0.0
    rps_per_pod: float = 40.0
    drift_p_value: float = 0.5
    drift_window_fill: float = 1.0
    queue_ms: float = 0.5            # mean time a request waits in Triton's queue
    rps_total: float | None = None   # load shared by the revision's Ready pods (see the module doc)


class TritonMetricsSim:
    def __init__(self, list_pods: Callable[[], list[dict]]):
        self.list_pods = list_pods  # () -> pod objects (kubectl JSON) of component=triton
        self.behaviours: dict[str, Behaviour] = {}
        self.default = Behaviour()
        self.port = free_port()
        self.started = {}  # pod uid -> monotonic start
        self.counters: dict[str, dict[str, float]] = {}  # pod uid -> integrated counters (rps_total)
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
            "# TYPE nv_inference_count counter",
            "# TYPE nv_inference_exec_count counter",
            "# TYPE nv_inference_queue_duration_us counter",
        ]
        serving = []
        for pod in self.list_pods():
            lbl = pod["metadata"].get("labels", {})
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))
            if ready and "visionfleet.io/revision" in lbl:
                serving.append(pod)
        ready_per_revision: dict[tuple[str, str], int] = {}  # (namespace, revision) -> pods sharing rps_total
        for pod in serving:
            if pod["metadata"].get("deletionTimestamp"):
                continue
            key = (pod["metadata"]["namespace"], pod["metadata"]["labels"]["visionfleet.io/revision"])
            ready_per_revision[key] = ready_per_revision.get(key, 0) + 1
        for pod in serving:
            md = pod["metadata"]
            lbl = md.get("labels", {})
            rev = lbl["visionfleet.io/revision"]
            with self.lock:
                b = self.behaviours.get(rev, self.default)
                start = self.started.setdefault(md["uid"], now)
            if b.rps_total is not None and md.get("deletionTimestamp"):
                continue  # a terminating pod leaves the Service's endpoints: no share of the load
            labels = (f'namespace="{md["namespace"]}",vision_deployment="{lbl.get("visionfleet.io/vision-deployment", "")}",'
                      f'revision="{rev}",class="{lbl.get("visionfleet.io/class", "")}",pod="{md["name"]}",'
                      f'model="{served_model(pod)}",version="1"')
            if b.rps_total is None:
                total = b.rps_per_pod * (now - start)
                ok, failed = total * (1 - b.error_ratio), total * b.error_ratio
                queued_us = ok * b.queue_ms * 1000
            else:
                rate = b.rps_total / ready_per_revision[(md["namespace"], rev)]
                with self.lock:
                    c = self.counters.setdefault(md["uid"], {"t": now, "ok": 0.0, "failed": 0.0, "queued_us": 0.0})
                    dt, c["t"] = max(0.0, now - c["t"]), max(now, c["t"])
                    c["ok"] += rate * (1 - b.error_ratio) * dt
                    c["failed"] += rate * b.error_ratio * dt
                    c["queued_us"] += rate * (1 - b.error_ratio) * b.queue_ms * 1000 * dt
                    ok, failed, queued_us = c["ok"], c["failed"], c["queued_us"]
                total = ok + failed
            lines += [
                f"nv_inference_request_success{{{labels}}} {ok:.3f}",
                f"nv_inference_request_failure{{{labels}}} {failed:.3f}",
                f"nv_inference_count{{{labels}}} {ok:.3f}",
                f"nv_inference_exec_count{{{labels}}} {ok:.3f}",
                f"nv_inference_queue_duration_us{{{labels}}} {queued_us:.1f}",
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
