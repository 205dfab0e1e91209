"""A real Triton Inference Server on this CPU: the ``tritonserver`` 2.51 that the ``nvidia-pytriton``
wheel ships, with its python backend.

``TritonServer(repo, workdir).start()`` runs it on free loopback ports (HTTP, gRPC, metrics) over a
model repository laid out as the cluster's Triton pods have it (``<model>/config.pbtxt``,
``<model>/<version>/<artifact>``). The backend directory it is given holds:

    python/        pytriton's libtriton_python.so, triton_python_backend_utils.py and the stub
                   for this interpreter's Python version
    onnxruntime/   ┐ triton_backends/runner_model.py as a Python-based backend, so the very
    openvino/      ┘ config.pbtxt the operator generates (backend: "onnxruntime"/"openvino") loads

The stub links Debian's libpython 3.11.2 while this interpreter may be another 3.11 build: the
interpreter's own ``lib/`` goes first on LD_LIBRARY_PATH, and the venv's site-packages on
PYTHONPATH, or the model fails to load. Latency summaries are on (``summary_latencies``), so a
p99 can be read from Triton's own metrics.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

from .local_process import free_ports, http_ok, stop_process, wait_ready

BACKENDS = ("onnxruntime", "openvino")


class TritonError(RuntimeError):
    pass


def pytriton_dir() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonError("nvidia-pytriton is not installed (make venv installs it): it ships tritonserver")
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise TritonError(f"no tritonserver binary under {root}")
    return root


def backend_dir(dest: Path) -> Path:
    """Assemble the backend directory (idempotent)."""
    root = pytriton_dir()
    py = dest / "python"
    py.mkdir(parents=True, exist_ok=True)
    for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(root / "backends" / "python" / f, py / f)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copy2(root / "python_backend_stubs" / version / "triton_python_backend_stub", py / "triton_python_backend_stub")
    model_py = Path(__file__).parent / "triton_backends" / "runner_model.py"
    for name in BACKENDS:
        (dest / name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(model_py, dest / name / "model.py")
    return dest


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or str(Path(sys.base_prefix) / "lib")
    # The stub finds pytriton's bundled libraries through an RPATH relative to where the wheel put it;
    # the copy in our backend directory needs them named.
    bundled = pytriton_dir().parent.parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, str(bundled), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PYTHONPATH"] = ":".join(p for p in (sysconfig.get_paths()["purelib"], env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


class TritonServer:
    def __init__(self, repository: Path, workdir: Path, env: dict[str, str] | None = None,
                 models: list[str] | None = None):
        self.repository, self.workdir, self.extra_env, self.models = repository, workdir, env or {}, models
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self, timeout: float = 120) -> "TritonServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        backends = backend_dir(self.workdir / "backends")
        args = [str(pytriton_dir() / "bin" / "tritonserver"), f"--model-repository={self.repository}",
                f"--backend-directory={backends}", f"--http-port={self.http_port}",
                f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}",
                "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1",
                "--allow-metrics=true", "--metrics-config=summary_latencies=true",
                "--metrics-interval-ms=1000", "--log-verbose=0", "--exit-on-error=true"]
        if self.models is not None:
            args += ["--model-control-mode=explicit"] + [f"--load-model={m}" for m in self.models]
        self.log_path = self.workdir / "tritonserver.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=environment(self.extra_env))
        if not wait_ready(self.proc, f"http://{self.url}/v2/health/ready", timeout, interval=0.3):
            self.stop()
            tail = self.log_path.read_text()[-3000:]
            raise TritonError(f"tritonserver did not become ready; log {self.log_path}:\n{tail}")
        return self

    def ready(self) -> bool:
        return http_ok(f"http://{self.url}/v2/health/ready")

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as r:
            return r.read().decode()

    def stop(self) -> None:
        stop_process(self.proc, grace=20)
        if getattr(self, "log", None):
            self.log.close()


def repository_entry(repo: Path, model: str, version: str, artifact_dir: Path) -> Path:
    """Lay out one compiled entry as Triton reads it: <repo>/<model>/config.pbtxt, <repo>/<model>/<version>/*."""
    dest = repo / model
    (dest / version).mkdir(parents=True, exist_ok=True)
    for f in artifact_dir.iterdir():
        if f.name == "config.pbtxt":
            shutil.copy2(f, dest / "config.pbtxt")
        elif f.is_file():
            shutil.copy2(f, dest / version / f.name)
    return dest
