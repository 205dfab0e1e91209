"""What every local server of the harness needs (Prometheus, Triton, the simulated metrics): free
loopback ports, waiting for an HTTP readiness URL while the process is alive, and a clean stop."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (the sockets are held until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def http_ok(url: str, timeout: float = 1) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except Exception:
        return False


def wait_ready(proc: subprocess.Popen, url: str, timeout: float, interval: float = 0.2) -> bool:
    """True once ``url`` answers 200; False if the process exits or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while not http_ok(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def stop_process(proc: subprocess.Popen | None, grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
