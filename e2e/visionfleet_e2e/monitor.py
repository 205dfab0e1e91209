"""A drift monitor process on this machine (``visionfleet-monitor``), and a mirror that sends each
inference request to Triton and the same bytes to the monitor, as a gateway's RequestMirror does."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np

from .local_process import free_port, stop_process, wait_ready


class MonitorProcess:
    def __init__(self, reference: Path, workdir: Path, model: str, triton_url: str, window: int = 500,
                 p_value: float = 0.01, detector: str = "bbsd-ks", interval: float = 1.0, max_rate: float = 200,
                 input_name: str | None = None, output_name: str | None = None):
        self.port = free_port()
        self.log_path = workdir / "monitor.log"
        self.args = [sys.executable, "-m", "visionfleet_monitor.service", "--reference", str(reference),
                     "--model", model, "--triton", triton_url, "--window", str(window), "--p-value", str(p_value),
                     "--detector", detector, "--interval", str(interval), "--max-rate", str(max_rate),
                     "--listen", f"127.0.0.1:{self.port}"]
        self.args += ["--input", input_name] if input_name else []
        self.args += ["--output", output_name] if output_name else []
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> "MonitorProcess":
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        if not wait_ready(self.proc, f"{self.url}/readyz", timeout):
            self.stop()
            raise RuntimeError(f"visionfleet-monitor did not start; log:\n{self.log_path.read_text()[-3000:]}")
        return self

    def status(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/v1/status", timeout=5) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        stop_process(self.proc, 10)


def infer_body(input_name: str, x: np.ndarray, output_name: str) -> tuple[bytes, dict[str, str]]:
    """A KServe v2 request with the binary-data extension (what tritonclient sends)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    header = json.dumps({"inputs": [{"name": input_name, "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": output_name, "parameters": {"binary_data": True}}]}).encode()
    return header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header)),
                                  "Content-Type": "application/octet-stream"}


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = 30) -> int:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        r.read()
        return r.status


def mirrored_stream(triton_url: str, monitor_url: str, model: str, input_name: str, output_name: str,
                    images: np.ndarray, batch: int = 4) -> int:
    """Send ``images`` to Triton in requests of ``batch``, each mirrored to the monitor; returns how
    many Triton answered with 200."""
    if "://" not in triton_url:
        triton_url = f"http://{triton_url}"
    ok = 0
    for i in range(0, len(images), batch):
        body, headers = infer_body(input_name, images[i:i + batch], output_name)
        ok += post(f"{triton_url}/v2/models/{model}/infer", body, headers) == 200
        post(f"{monitor_url}/v2/models/{model}/infer", body, headers)
    return ok
