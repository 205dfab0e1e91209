"""A real Prometheus server (Debian's ``prometheus`` package) for the e2e suite and the demo.

Started on 127.0.0.1 with its own config and a throw-away TSDB; ``stop()`` ends it. The binary is
found on PATH or at /usr/bin/prometheus; ``e2e/prometheus/ensure-prometheus.sh`` installs it.

Debian's package has Kubernetes service discovery removed; a test of a ``kubernetes_sd_configs`` job
runs upstream Prometheus instead (``prometheus_with_kubernetes_sd()``, built from its pinned module).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from .cluster import BUILD_SCRIPT
from .local_process import free_port, http_ok, stop_process, wait_ready


class PrometheusError(RuntimeError):
    pass


def find_prometheus() -> str:
    path = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if not path:
        raise PrometheusError("prometheus not found: run `make prometheus` (installs Debian's prometheus "
                              "package through e2e/prometheus/ensure-prometheus.sh)")
    return path


def prometheus_with_kubernetes_sd() -> str:
    """Upstream Prometheus built with Kubernetes discovery (e2e/cluster/gomod/prometheus), by
    build-binaries.sh on request: about 5 minutes the first time, cached afterwards. Its path in the
    build cache, not the links directory (a later build without the request drops the link)."""
    # one try: `make test` has just built it, or waited out the network's hiccups trying
    env = {**os.environ, "VISIONFLEET_BUILD_PROMETHEUS": "1", "VISIONFLEET_NETWORK_ATTEMPTS": "1"}
    proc = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env, timeout=1800)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-30:])
        raise PrometheusError(f"building upstream Prometheus failed (exit {proc.returncode}); the end of its log:\n{tail}")
    for line in proc.stdout.splitlines():
        name, _, path = line.partition(" ")
        if name == "prometheus-kubernetes-sd":
            return path
    raise PrometheusError(f"build-binaries.sh built no prometheus-kubernetes-sd:\n{proc.stdout}")


def _static(target: str | tuple[str, dict[str, str]]) -> dict:
    if isinstance(target, str):
        return {"targets": [target]}
    address, labels = target
    return {"targets": [address], "labels": dict(labels)}


class PrometheusServer:
    def __init__(self, workdir: Path, scrape_targets: dict[str, str | tuple[str, dict[str, str]]],
                 scrape_interval: str = "1s", file_sd: dict[str, Path] | None = None,
                 scrape_configs: list[dict] | None = None, binary: str | None = None):
        self.workdir = workdir
        # job name -> host:port, or (host:port, labels): the labels a real cluster's relabelling puts on
        # a Triton pod's series (namespace, vision_deployment, revision, class), given here statically.
        self.targets = scrape_targets
        self.interval = scrape_interval
        # job name -> a file_sd JSON file ([{targets, labels}]), re-read by Prometheus when it changes:
        # targets that come and go (a Triton per revision in the demo).
        self.file_sd = file_sd or {}
        # whole scrape_configs entries, as written (a kubernetes_sd_configs job under test)
        self.scrape_configs = scrape_configs or []
        self.binary = binary
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "PrometheusServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "scrape_configs": [
                # honor_labels: the scraped series carry namespace/revision/class themselves, as the
                # relabelled series of a real Triton pod would.
                {"job_name": job, "honor_labels": True, "static_configs": [_static(target)]}
                for job, target in self.targets.items()
            ] + [
                {"job_name": job, "honor_labels": True,
                 "file_sd_configs": [{"files": [str(path)], "refresh_interval": "5s"}]}
                for job, path in self.file_sd.items()
            ] + self.scrape_configs,
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(conf))
        self.log = open(self.workdir / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [self.binary or find_prometheus(), f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=2h", "--web.enable-lifecycle"],
            stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_ready(self.proc, f"{self.url}/-/ready", timeout):
            raise PrometheusError(f"prometheus did not start; log: {self.workdir / 'prometheus.log'}")
        return self

    def ready(self) -> bool:
        return http_ok(f"{self.url}/-/ready")

    def api_targets(self) -> dict:
        """/api/v1/targets: activeTargets (labels after relabelling, discoveredLabels) and droppedTargets."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as r:
            return json.loads(r.read())["data"]

    def query(self, q: str) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": q}), timeout=5) as r:
            return json.loads(r.read())["data"]["result"]

    def stop(self) -> None:
        stop_process(self.proc, grace=10)
        if getattr(self, "log", None):
            self.log.close()

