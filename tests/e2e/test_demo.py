"""The README's main command, end to end: ``visionfleet-fleet demo`` on a cluster of its own.

It installs the chart, runs the operator as the chart's ServiceAccount, compiles the real model,
serves each revision with a real Triton behind the real Gateway (Traefik, by the operator's
HTTPRoute), and must end with the slow v2 rolled back in its shadow step, having answered no user.
"""

from __future__ import annotations

import re
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
        # v2 failed in its shadow step (a mirror of every request, weight 0), and the accounting of the
        # Tritons' own counters shows every answered request came from v1: none from v2
        assert re.search(r"phase=RollingOut step=0 canaryWeight=0 mirror=100%", out), out[-4000:]
        m = re.search(r"load sent through the Gateway: (\d+) answered, (\d+) errors; served by v1's Triton: (\d+), "
                      r"by v2's: (\d+) \(mirrored copies\); user requests answered by v2: (\d+)", out)
        assert m, out[-4000:]
        answered, errors, by_v1, by_v2, users_v2 = map(int, m.groups())
        assert answered > 50 and by_v1 >= answered and by_v2 > 0 and users_v2 == 0, m.group(0)
        # kubectl get vd, then kubectl vision history: v1 Promoted (stable), v2 RolledBack with the reason
        tail = out[out.index("kubectl get vd; kubectl vision history"):]
        assert "RolledBack" in tail.splitlines()[2]
        history = [line.split() for line in tail.splitlines() if "Promoted" in line or "RolledBack   " in line]
        assert [h[1] for h in history[-2:]] == ["Promoted", "RolledBack"], tail
        assert "> 150 ms" in tail
    finally:
        subprocess.run([FLEET, "--name", name, "down"], capture_output=True, timeout=120)
