"""The README's main command, end to end: ``visionfleet-fleet demo`` on a cluster of its own.

It installs the chart, runs the operator as the chart's ServiceAccount, compiles the real model,
serves each revision with a real Triton and must end with the slow v2 rolled back by the analysis.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster
FLEET = str(Path(sys.executable).parent / "visionfleet-fleet")


def test_demo_rolls_the_slow_v2_back():
    name = "vf-demo-test"
    try:
        proc = subprocess.run([FLEET, "--name", name, "demo", "--timeout", "300"], capture_output=True, text=True,
                              timeout=900)
        out = proc.stdout
        assert proc.returncode == 0, out[-4000:] + proc.stderr[-3000:]
        assert "v2 was rolled back automatically" in out
        assert "phase=Healthy" in out and "analysis Failed: p99=" in out
        # kubectl get vd, then kubectl vision history: v1 Promoted (stable), v2 RolledBack with the reason
        tail = out[out.index("kubectl get vd; kubectl vision history"):]
        assert "RolledBack" in tail.splitlines()[2]
        history = [line.split() for line in tail.splitlines() if "Promoted" in line or "RolledBack   " in line]
        assert [h[1] for h in history[-2:]] == ["Promoted", "RolledBack"], tail
        assert "> 150 ms" in tail
    finally:
        subprocess.run([FLEET, "--name", name, "down"], capture_output=True, timeout=120)
