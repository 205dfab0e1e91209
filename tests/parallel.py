"""Runs the test suite as N pytest processes side by side (``make test``; N = VISIONFLEET_TEST_SHARDS,
default 2), each with its own local cluster (vf-test-1, vf-test-2, …): most of an end-to-end test is
waiting on a control plane, a rollout step or a scrape, so two shards on two cores finish well before
one process would. tests/conftest.py assigns whole modules to shards by their measured seconds
(tests/durations.json); each test runs in exactly one shard.

    python tests/parallel.py [PYTEST-ARGS...]

Each shard writes its full output to .fleet/test-shard-I.log; this prints a progress line a minute,
then every shard's summary (failures, skips and pytest's closing line), then one closing line for the
whole suite, `suite: N passed, N failed, N skipped`. The exit status is the first failing shard's
(pytest's: 1 tests failed, 2 interrupted, 3 internal error, 4 usage error), 5 when no shard ran a
test, 0 otherwise. VISIONFLEET_TEST_SHARDS=1 runs plain pytest in this process's place.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")
PROGRESS = re.compile(r"^(?:\S+\.py\s+)?([.sFExX]+)\s*(?:\[\s*\d+%\])?$")  # 'tests/x.py ..s.F  [ 40%]'


def closing_counts(log: str) -> dict[str, int]:
    """pytest's closing line ('=== 3 failed, 500 passed, 2 skipped in 80.1s ===') as counts."""
    for line in reversed(log.splitlines()):
        body = line.strip("= ")
        if COUNTS.match(body) and re.search(r" in [\d.]+s", body):  # '-q' prints it without the '='s
            counts: dict[str, int] = {}
            for n, what in COUNTS.findall(line):
                key = "errors" if what.startswith("error") else what
                counts[key] = counts.get(key, 0) + int(n)
            return counts
    return {}


def summary(log: str) -> str:
    """The log from pytest's 'short test summary info' on, or its last lines when it has none."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if "short test summary info" in line:
            return "\n".join(lines[i:])
    return "\n".join(lines[-15:])


def done_tests(log: str) -> int:
    return sum(len(m.group(1)) for line in log.splitlines() if (m := PROGRESS.match(line.strip())))


def _interrupt_when_parent_dies() -> None:
    """In the shard, before pytest starts: Linux sends it SIGINT (pytest's KeyboardInterrupt, so its
    clusters are torn down) if this runner dies without stopping it (killed outright)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)


def main(argv: list[str]) -> int:
    count = int(os.environ.get("VISIONFLEET_TEST_SHARDS", "2"))
    pytest = [sys.executable, "-m", "pytest"]
    if count <= 1:  # pytest in this process's place: a Ctrl-C reaches it alone, and it tears down
        os.chdir(REPO)
        os.execv(sys.executable, [*pytest, *argv])
    logs_dir = REPO / ".fleet"
    logs_dir.mkdir(exist_ok=True)
    shards: list = []
    t0 = time.monotonic()

    def stop(signum, frame):  # an interrupted make stops every shard (each tears its own cluster down)
        for _, proc, _, _ in shards:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)

    for i in range(1, count + 1):
        log = logs_dir / f"test-shard-{i}.log"
        env = {**os.environ, "VISIONFLEET_SHARD": f"{i}/{count}", "VISIONFLEET_TEST_CLUSTER": f"vf-test-{i}"}
        out = open(log, "w")
        # no cache plugin: two processes must not rewrite .pytest_cache under each other
        proc = subprocess.Popen([*pytest, "-p", "no:cacheprovider", *argv], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_interrupt_when_parent_dies)
        shards.append((i, proc, log, out))
    print(f"==> {count} shards side by side, each with its own cluster (vf-test-1…{count}); "
          f"their output: {', '.join(str(s[2].relative_to(REPO)) for s in shards)}", flush=True)

    last = time.monotonic()
    while any(proc.poll() is None for _, proc, _, _ in shards):
        time.sleep(2)
        if time.monotonic() - last >= 60:
            last = time.monotonic()
            state = ", ".join(f"shard {i}: {done_tests(log.read_text(errors='replace'))} done"
                              + ("" if proc.poll() is None else f" (ended, exit {proc.returncode})")
                              for i, proc, log, _ in shards)
            print(f"    {time.monotonic() - t0:6.0f}s  {state}", flush=True)

    total: dict[str, int] = {}
    codes = []
    for i, proc, log, out in shards:
        out.close()
        text = log.read_text(errors="replace")
        print(f"\n==> shard {i} of {count} (exit {proc.returncode}; full output {log.relative_to(REPO)})")
        print(summary(text), flush=True)
        for key, n in closing_counts(text).items():
            total[key] = total.get(key, 0) + n
        # killed by a signal: the shell's 128 + signal, not a negative status
        codes.append(proc.returncode if proc.returncode >= 0 else 128 - proc.returncode)
    elapsed = time.monotonic() - t0
    failed = total.get("failed", 0) + total.get("errors", 0)
    print(f"\n==> the whole suite in {elapsed / 60:.1f} min on {count} shards")
    print(f"suite: {total.get('passed', 0)} passed, {failed} failed, {total.get('skipped', 0)} skipped", flush=True)
    bad = [c for c in codes if c not in (0, 5)]
    if bad:
        return bad[0]
    return 5 if all(c == 5 for c in codes) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
