"""The benchmarks' quick modes run with the suite, so a benchmark cannot rot unseen.

Only what holds on any machine is asserted (the run completes, make-before-break leaves no instant
without a Ready pod, a steady state writes nothing); the times themselves are the benchmark's
figures, printed, never pass/fail.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_rollback_bench_quick_mode():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "rollback.py"), "--quick", "--ready-after", "10s"],
                         cwd=REPO, capture_output=True, text=True, timeout=850)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    print(out.stdout)
    runs = re.findall(r"^ *(\d+)% run \d+: failure visible -> stable Ready with all traffic +([\d.]+)s; "
                      r"no Ready pod in a class for +([\d.]+)s", out.stdout, re.M)
    assert {int(w) for w, _, _ in runs} == {50, 100}, out.stdout
    assert all(float(gap) == 0.0 for _, _, gap in runs), f"a class was left without a Ready pod: {runs}"
    assert re.search(r"steady state: 0 operator writes over 3 resyncs", out.stdout), out.stdout


@pytest.mark.timeout(300)
def test_drift_bench_quick_mode():
    """The drift bench's quick mode: both tests run on clean and shifted windows and report a rate
    for each kind of shift (the rates are the bench's figures, not checked here)."""
    out = subprocess.run([sys.executable, str(REPO / "bench" / "drift.py"), "--quick"],
                         cwd=REPO, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    print(out.stdout)
    assert re.search(r"false-positive rate on clean windows .*bbsd-ks [\d.]+ .*input-ks [\d.]+", out.stdout), out.stdout
    rows = re.findall(r"^(haze|gaussian_noise|darken) +3 +([\d.]+) +([\d.]+)$", out.stdout, re.M)
    assert {kind for kind, _, _ in rows} == {"haze", "gaussian_noise", "darken"}, out.stdout


@pytest.mark.timeout(600)
def test_autoscale_bench_quick_mode():
    """One load step on an autoscaled class with a canary: the HPA's new replicas Ready, the canary's
    pods following, the route's weight fixed at every sample (the times are the bench's figures)."""
    out = subprocess.run([sys.executable, str(REPO / "bench" / "autoscale.py"), "--quick"],
                         cwd=REPO, capture_output=True, text=True, timeout=580)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    print(out.stdout)
    row = re.search(r"^ +100 \| +5\+2 +\| +[\d.]+s \| +[\d.]+s \| +[\d.]+s \| [\d.]+-[\d.]+ \(0\.29\) \| (\w+) \|",
                    out.stdout, re.M)
    assert row and row.group(1) == "fixed", out.stdout


@pytest.mark.timeout(600)
def test_compile_bench_quick_mode():
    """Every candidate builds and is timed, the accuracy-aware search runs and reports its trials, and
    precision auto names its choice (the speeds and agreements are the bench's figures)."""
    out = subprocess.run([sys.executable, str(REPO / "bench" / "compile.py"), "--quick"],
                         cwd=REPO, capture_output=True, text=True, timeout=580)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    print(out.stdout)
    assert re.search(r"^CPU: .*VNNI (yes|no), AVX-512 (yes|no), BF16 (yes|no)", out.stdout, re.M), out.stdout
    rows = re.findall(r"^(pytorch-eager fp32|onnxruntime fp32|onnxruntime int8 mixed|onnxruntime int8"
                      r"|openvino int8 mixed|openvino int8|openvino fp32)\b.* \d+\.\d{3} +\d+\.\d{3} \|", out.stdout, re.M)
    assert len(set(rows)) == 7, out.stdout
    assert re.search(r"^  trials \(layers kept in fp32 → agreement on calibration views\): 1 → ", out.stdout, re.M)
    assert re.search(r"^  onnxruntime: chose (int8|fp32) in \d+ s: ", out.stdout, re.M), out.stdout
