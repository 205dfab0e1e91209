"""Compile Jobs: one per class and revision, results from the Job's termination message.

    canary revision r
      per class: no result for r yet ──► EnsureCompileJob(class, r, r's frozen spec)
                 Job Succeeded + result ─► Succeeded (artifact, accuracy, batching)
                 Job Failed, or no result ► Failed (the message says why)
      every class terminal: none Succeeded ──► r CompileFailed (history), the stable keeps serving
                            some Failed ─────► those classes stay on stable; the others go on
    retry of r (visionfleet.io/retry): a Failed class is marked RETRYING; its old Job is deleted,
        then a new one created — a failed Job is never read again as the retry's result
    abort or supersede of r: Jobs still running are deleted (they hold a class's accelerators)

    no canary, a class with no stable revision (a node group discovered after the stable revision
    was promoted): the stable revision is compiled and served there — the class catches up
    without waiting for a spec change
"""

from __future__ import annotations

from visionfleet.api.status import CompileResult, CompileState

from .classes import ResolvedClass
from .model import DeleteCompileJob, EnsureCompileJob, Outcome
from .state import PassState

TERMINAL = {CompileState.SUCCEEDED.value, CompileState.FAILED.value}
RETRYING = "retrying: the failed compile Job is being replaced"


def _advance(p: PassState, c: ResolvedClass, rev: str) -> bool:
    """One class's compile of ``rev``; True while it is not terminal."""
    cs = p.cs[c.name]
    if cs.compile is None or cs.compile.revision != rev:
        if cs.stable is None and cs.compile is not None and cs.compile.revision == cs.stable_revision:
            cs.stable = cs.compile  # keep the stable's result while `compile` tracks the new revision
        cs.compile = CompileResult(state=CompileState.PENDING, revision=rev)
    if cs.compile.state in TERMINAL:
        return False
    job = p.observed.job(c.name, rev)
    if cs.compile.message == RETRYING and job is not None:
        if job.state in TERMINAL:
            p.actions.append(DeleteCompileJob(c.name, rev))
            return True
        cs.compile = CompileResult(state=CompileState(job.state), revision=rev)
    spec = p.spec_of(rev)
    if job is None:
        p.actions.append(EnsureCompileJob(p.class_of(rev, c), rev, spec))
        cs.compile = CompileResult(
            state=CompileState.PENDING, revision=rev,
            message=None if c.nodes else "no node matches the class's nodeSelector: the Job waits for one")
        return True
    if job.state == CompileState.SUCCEEDED.value and job.result is not None:
        cs.compile = job.result.model_copy(update={"state": CompileState.SUCCEEDED, "revision": rev})
        p.event("Normal", "CompileSucceeded", f"class {c.name}: revision {rev} compiled"
                + (f" (accuracy {job.result.accuracy:.4f})" if job.result.accuracy is not None else ""))
        return False
    if job.state in TERMINAL:
        message = job.message or "the compile Job failed without a message"
        if job.state == CompileState.SUCCEEDED.value:
            message = f"the compile Job succeeded but its result could not be read: {message}"
        cs.compile = CompileResult(state=CompileState.FAILED, revision=rev, message=message[:2048])
        p.event("Warning", "CompileFailed", f"class {c.name}: revision {rev}: {message}")
        return False
    p.actions.append(EnsureCompileJob(p.class_of(rev, c), rev, spec))
    cs.compile = CompileResult(state=CompileState(job.state), revision=rev, message=job.message)
    return True


def advance_compile(p: PassState) -> list[str] | None:
    """Advance the canary's compile on every class; the classes that compiled, or None while any is
    still compiling (or when none compiled: the revision is then recorded CompileFailed)."""
    rev = p.st.canary_revision
    assert rev is not None
    compiling = False
    targets = [c for c in p.classes if not p.vanished(c)]
    for c in targets:
        compiling = _advance(p, c, rev) or compiling
    if compiling:
        p.wake_in(2.0)
        return None
    ok = [c.name for c in targets if p.cs[c.name].compile.state == CompileState.SUCCEEDED.value]
    if not ok:
        reasons = "; ".join(f"{c.name}: {p.cs[c.name].compile.message}" for c in targets) or "no node classes"
        p.record(rev, Outcome.COMPILE_FAILED, reasons)
        p.event("Warning", "CompileFailed", f"revision {rev} failed to compile on every class: {reasons}")
        p.clear_canary()
        return None
    return ok


def stop_compiles(p: PassState, rev: str) -> None:
    """Delete the compile Jobs of ``rev`` that are still running (aborted or superseded revision)."""
    for j in p.observed.jobs:
        if j.revision == rev and j.state not in TERMINAL:
            p.actions.append(DeleteCompileJob(j.class_name, rev))
    for cs in p.cs.values():
        if cs.compile is not None and cs.compile.revision == rev and cs.compile.state not in TERMINAL:
            # Not a compile failure: the class goes back to what it had (the stable's result, if any).
            cs.compile, cs.stable = (cs.stable, None) if cs.stable is not None else (None, None)


def mark_retry(p: PassState, rev: str) -> None:
    """A retried revision recompiles where it failed — wherever its Job failed, whatever the class's
    status holds now (it may track a revision planned since); where it compiled, the result is reused."""
    failed_jobs = {j.class_name for j in p.observed.jobs if j.revision == rev and j.state == CompileState.FAILED.value}
    for name, cs in p.cs.items():
        mine = cs.compile is not None and cs.compile.revision == rev
        if not (name in failed_jobs or (mine and cs.compile.state == CompileState.FAILED.value)):
            continue
        if cs.stable is None and cs.compile is not None and cs.compile.revision == cs.stable_revision:
            cs.stable = cs.compile  # the stable's result stays known while `compile` tracks the retry
        cs.compile = CompileResult(state=CompileState.PENDING, revision=rev, message=RETRYING)


def catch_up(p: PassState) -> bool:
    """No canary in flight: classes without a stable revision get the stable one (a node group that
    joined the fleet). True while one of them is still compiling."""
    stable = p.st.stable_revision
    if stable is None or p.st.canary_revision is not None or p.failed(stable):
        return False
    if p.snapshot(stable) is None and p.desired != stable:
        return False  # planned before snapshots, and the spec describes another revision now
    compiling = False
    for c in p.classes:
        cs = p.cs[c.name]
        if cs.stable_revision is not None or c.nodes == 0:
            continue
        if cs.compile is not None and cs.compile.revision == stable and cs.compile.state == CompileState.FAILED.value:
            continue  # reported as a failed class; a retry or a spec change tries again
        if _advance(p, c, stable):
            compiling = True
        elif cs.compile.state == CompileState.SUCCEEDED.value:
            cs.stable_revision = stable
            p.event("Normal", "ClassJoined", f"class {c.name} ({c.nodes} nodes) now serves stable revision {stable}")
    if compiling:
        p.wake_in(2.0)
    return compiling
