"""The operator, run as its own process (``visionfleet-operator``) against the local fleet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from visionfleet_e2e.cli import install_crds

REPO = Path(__file__).resolve().parents[2]


class OperatorProcess:
    def __init__(self, cluster, log_path: Path, env: dict[str, str] | None = None, args: list[str] | None = None):
        self.cluster = cluster
        self.log_path = log_path
        self.extra_env = env or {}
        self.args = args or []
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**self.cluster.env(), **self.extra_env}
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "visionfleet-operator"), *self.args], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])


@pytest.fixture()
def namespace(namespace, cluster):
    """The shared fresh namespace, plus the bound "models" claim the specs keep their models on (the
    operator mounts it into compile Jobs, so their pods need it to schedule, as in a real cluster)."""
    cluster.ensure_claim(namespace, "models")
    return namespace


SESSION: dict[str, OperatorProcess] = {}


@pytest.fixture(scope="session")
def operator(cluster, tmp_path_factory):
    from visionfleet_e2e.local_process import free_port

    install_crds(cluster)
    port = free_port()
    op = OperatorProcess(cluster, tmp_path_factory.mktemp("operator") / "operator.log",
                         args=[f"--metrics-port={port}", "--metrics-address=127.0.0.1"])
    op.metrics_url = f"http://127.0.0.1:{port}/metrics"
    op.start()
    time.sleep(1)
    assert op.proc.poll() is None, f"the operator exited at once:\n{op.tail()}"
    SESSION["operator"] = op
    yield op
    SESSION.pop("operator", None)
    op.stop()


@pytest.fixture()
def without_session_operator():
    """For a test that runs its own operator: the session's (cluster-wide, admin) operator is stopped
    for the test's duration and started again afterwards, so exactly one operator acts."""
    op = SESSION.get("operator")
    was_running = op is not None and op.running
    if was_running:
        op.stop()
    yield
    if was_running:
        op.start()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On an e2e failure, show the operator's last log lines next to the assertion."""
    outcome = yield
    report = outcome.get_result()
    op = item.funcargs.get("operator") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and op is not None:
        report.sections.append(("operator log (tail)", op.tail()))


@pytest.fixture(scope="session")
def triton_sim(cluster):
    from visionfleet_e2e.triton_sim import TritonMetricsSim

    def pods():
        return cluster.kubectl_json("get", "pods", "-A", "-l", "app.kubernetes.io/component=triton")["items"]

    sim = TritonMetricsSim(pods).start()
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def prometheus(triton_sim, tmp_path_factory):
    """Debian's real Prometheus, scraping the simulated Triton pods' metrics every second."""
    from visionfleet_e2e.prometheus import PrometheusServer

    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"),
                              {"triton": f"127.0.0.1:{triton_sim.port}"}).start()
    yield server
    server.stop()


@pytest.fixture()
def behave(triton_sim):
    """Set how revisions behave for one test; back to a healthy default afterwards."""
    yield triton_sim.behave
    triton_sim.behaviours.clear()
    triton_sim.behave(None)
