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
    def __init__(self, cluster, log_path: Path):
        self.cluster = cluster
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = self.cluster.env()
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "visionfleet-operator")], env=env,
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

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])


@pytest.fixture()
def namespace(namespace, cluster):
    """The shared fresh namespace, plus the bound "models" claim the specs keep their models on (the
    operator mounts it into compile Jobs, so their pods need it to schedule, as in a real cluster)."""
    cluster.ensure_claim(namespace, "models")
    return namespace


@pytest.fixture(scope="session")
def operator(cluster, tmp_path_factory):
    install_crds(cluster)
    op = OperatorProcess(cluster, tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    time.sleep(1)
    assert op.proc.poll() is None, f"the operator exited at once:\n{op.tail()}"
    yield op
    op.stop()


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
