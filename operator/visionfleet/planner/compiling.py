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
    any pass: a compile Job still running that the pass does not want (a superseded, rolled back or
        aborted revision; a class removed from the spec or whose nodes are gone; a catch-up the
        canary overtook) is deleted — whichever path forgot it, a running Job outlives no plan

    a Job whose pod waits (Pending): the class's compile message says why (the scheduler's message,
        the missing claim by its spec field, an image that cannot be pulled, a missing Secret), with
        a Warning Event CompileWaiting when that changes; a pod unschedulable for longer than
        compile.scheduleTimeout (policy: read from the spec as it is now) fails its class — Job
        deleted, Event CompileUnschedulable — and the other classes go on as with any failed class

    no canary, a class with no stable revision (a node group discovered after the stable revision
    was promoted): the stable revision is compiled and served there — the class catches up
    without waiting for a spec change
"""

from __future__ import annotations

from datetime import timedelta

from visionfleet.api.status import ClassStatus, CompileResult, CompileState

from .classes import ResolvedClass
from .durations import seconds
from .model import DeleteCompileJob, EnsureCompileJob, ObservedJob, Outcome, WaitReason, iso
from .state import PassState
from .storage import assess_missing_claims
from .waits import aware, describe, is_wait

TERMINAL = {CompileState.SUCCEEDED.value, CompileState.FAILED.value}
RETRYING = "retrying: the failed compile Job is being replaced"


def _waiting(p: PassState, rev: str, job: ObservedJob) -> tuple[str | None, str | None]:
    """A Pending Job's pod that waits: (the class's compile message, the failure when it has been
    unschedulable past compile.scheduleTimeout). (job.message, None) when its pod says nothing."""
    w = job.waiting
    if w is None:
        return job.message, None
    if w.reason != WaitReason.UNSCHEDULABLE:
        return describe(w, "compile", "spec.compile.image (gpuImage, or the class's compileImage)"), None
    limit = p.spec.compile.schedule_timeout
    claims = "; ".join(assess_missing_claims(p.spec_of(rev), p.observed, p.vd.namespace))
    why = f"{claims}; the scheduler: {w.message}" if claims else w.message
    if w.since is None:  # (the API server always sets it; without it there is no deadline to keep)
        return f"waiting: compile pod {w.pod} is unschedulable: {why}", None
    deadline = aware(w.since) + timedelta(seconds=seconds(limit))
    if p.now >= deadline:
        return None, (f"the compile pod could not be scheduled within compile.scheduleTimeout {limit}: {why} "
                      "(fix the class's nodeSelector, tolerations or resources, or the claim, then retry or "
                      "change the spec)")
    p.wake_in((deadline - p.now).total_seconds())
    return (f"waiting: compile pod {w.pod} is unschedulable: {why} (the class fails at {iso(deadline)}, "
            f"compile.scheduleTimeout {limit}, unless it schedules)"), None


def _advance(p: PassState, c: ResolvedClass, rev: str) -> bool:
    """One class's compile of ``rev``; True while it is not terminal."""
    cs = p.cs[c.name]
    before = cs.compile.message if cs.compile is not None and cs.compile.revision == rev else None
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
        r = job.result
        p.event("Normal", "CompileSucceeded", f"class {c.name}: revision {rev} compiled"
                + (f" ({r.accuracy_metric or 'accuracy'} {r.accuracy:.4f})" if r.accuracy is not None else "")
                + (f"; {r.choice}" if r.choice else f"; {r.fp32_layers} int8 layers kept in fp32"
                   if r.fp32_layers else ""))
        return False
    if job.state in TERMINAL:
        message = job.message or "the compile Job failed without a message"
        if job.state == CompileState.SUCCEEDED.value:
            message = f"the compile Job succeeded but its result could not be read: {message}"
        cs.compile = CompileResult(state=CompileState.FAILED, revision=rev, message=message[:2048])
        p.event("Warning", "CompileFailed", f"class {c.name}: revision {rev}: {message}")
        return False
    message, failure = _waiting(p, rev, job) if job.state == CompileState.PENDING.value else (job.message, None)
    if failure is not None:
        # Not compile.timeout's job: that deadline runs for the whole Job, and one class that cannot
        # schedule would hold every class's rollout until it passed.
        p.actions.append(DeleteCompileJob(c.name, rev))
        cs.compile = CompileResult(state=CompileState.FAILED, revision=rev, message=failure[:2048])
        p.event("Warning", "CompileUnschedulable", f"class {c.name}: revision {rev}: {failure}")
        return False
    p.actions.append(EnsureCompileJob(p.class_of(rev, c), rev, spec))
    cs.compile = CompileResult(state=CompileState(job.state), revision=rev, message=message[:2048] if message else None)
    if is_wait(cs.compile.message) and cs.compile.message != before:
        p.event("Warning", "CompileWaiting", f"class {c.name}: revision {rev}: {cs.compile.message}")
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
        _forget_compile(cs, rev)


def _forget_compile(cs: ClassStatus, rev: str) -> None:
    """A compile of ``rev`` stopped before it ended. Not a compile failure: the class goes back to
    what it had (the stable's result, if any)."""
    if cs.compile is not None and cs.compile.revision == rev and cs.compile.state not in TERMINAL:
        cs.compile, cs.stable = (cs.stable, None) if cs.stable is not None else (None, None)


def stop_unwanted_compiles(p: PassState) -> None:
    """Delete every compile Job still running that this pass does not want: its (class, revision) got
    no EnsureCompileJob. Whatever ended the revision or the class's part in it (supersede, rollback,
    abort, a class removed or vanished, a catch-up overtaken by a canary), a Job left running holds
    the class's nodes and accelerators until compile.timeout, and its result would be read by nobody."""
    wanted = {(a.cls.name, a.revision) for a in p.actions if isinstance(a, EnsureCompileJob)}
    deleting = {(a.class_name, a.revision) for a in p.actions if isinstance(a, DeleteCompileJob)}
    for j in p.observed.jobs:
        key = (j.class_name, j.revision)
        if j.state in TERMINAL or key in wanted or key in deleting:
            continue
        p.actions.append(DeleteCompileJob(j.class_name, j.revision))
        deleting.add(key)
        if (cs := p.cs.get(j.class_name)) is not None:
            _forget_compile(cs, j.revision)


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
