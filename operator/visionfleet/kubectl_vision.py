"""``kubectl vision``: look at and steer VisionDeployment rollouts from the command line.

    kubectl vision status  VD [-o json|yaml]     the rollout at a glance: steps, classes, analysis, conditions
    kubectl vision history VD                    what became of each revision, newest last
    kubectl vision watch   VD [--until-done]     ``status``, re-rendered on every change of the object
    kubectl vision promote VD [--wait]           promote the canary now (skips the remaining steps and analysis)
    kubectl vision abort   VD [--wait]           roll the canary back now
    kubectl vision retry   VD [--wait]           try the spec's revision again after a rollback, abort or failed compile
    kubectl vision pause   VD / resume VD        hold / release the current step

kubectl finds the plugin as ``kubectl-vision`` on the PATH (the ``kubectl-vision`` console script).

How commands reach the operator
-------------------------------
Only through ``metadata.annotations`` (``visionfleet.io/promote``, ``visionfleet.io/abort``,
``visionfleet.io/retry``, ``visionfleet.io/paused``; see ``visionfleet.planner.model``), written
with a JSON merge patch that names only that one key, under the field manager ``kubectl-vision``.
The plugin never writes ``spec`` (the user's, or Git's) nor ``status`` (the operator's). promote,
abort and retry are one-shot: each sends a fresh value (a timestamp with microseconds) that the
operator acts on once and records in ``status.handledPromote`` / ``handledAbort`` /
``handledRetry``, which is what ``--wait`` waits for, and then for what the value does: the canary
promoted (once its pods are Ready at full size) or rolled back, or the retried revision's canary.

GitOps (Argo CD)
----------------
An annotation that the Git manifest does not mention is not drift for Argo CD: with its default
client-side diff, fields present only on the live object (not in the desired manifest, nor in the
last-applied configuration) are ignored, so the Application stays Synced and self-heal leaves the
annotation alone; with server-side diff / ServerSideApply, Argo CD only compares the fields its own
manager owns, and these belong to ``kubectl-vision``. The one exception is an annotation that *is*
in Git: then Git wins (Argo CD shows OutOfSync and self-heal puts the Git value back, e.g. undoing a
``resume`` of a VisionDeployment whose manifest says ``paused: "true"``); change it in Git instead.
The plugin warns when another field manager or the last-applied configuration also holds the key.

Layout: pure render and decision functions (``render_status``, ``render_history``,
``command_annotation``, ``is_done``, ``human_duration``) and one thin I/O class, ``Cluster``, over
the official client's ``CustomObjectsApi``; the unit tests run the whole CLI against a fake of that
one object. The operator never imports this module.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, TextIO

import yaml

from visionfleet.api.crd import GROUP, PLURAL, SINGULAR, VERSION
from visionfleet.api.spec import DEFAULT_STEPS
from visionfleet.planner.durations import seconds as duration_seconds
from visionfleet.planner.model import ANNOTATION_ABORT, ANNOTATION_PAUSED, ANNOTATION_PROMOTE, ANNOTATION_RETRY

FIELD_MANAGER = "kubectl-vision"
MERGE_PATCH = "application/merge-patch+json"
TERMINAL_PHASES = ("Healthy", "RolledBack", "Failed")
# The phases the operator derives when the newest outcome of the revision the spec asks for is one
# of RETRYABLE_OUTCOMES (planner/phases.py): RollingBack while the canary's objects are removed,
# then RolledBack; Failed for CompileFailed. ``retry`` is accepted in these only.
RETRYABLE_PHASES = ("RolledBack", "RollingBack", "Failed")
RETRYABLE_OUTCOMES = ("RolledBack", "Aborted", "CompileFailed")
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Field managers of one-off edits by hand (ours included): their annotations are not Git's.
# argocd-server: Argo CD's resource actions (charts/visionfleet/argocd/actions/) and live edits in its
# UI; what Argo CD syncs from Git is written by the application controller (argocd-controller).
IMPERATIVE_MANAGERS = {FIELD_MANAGER, "kubectl-annotate", "kubectl-edit", "kubectl-patch", "kubectl-label",
                       "argocd-server"}
CLEAR_SCREEN = "\x1b[H\x1b[2J"
REV = 12  # revisions are shown by their first 12 hex digits (the operator's own length)


class CliError(Exception):
    """A failure the user can act on: printed as ``error: <message>``, no traceback."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class NotFound(CliError):
    def __init__(self, name: str, namespace: str):
        super().__init__(f"{SINGULAR} {name} not found in namespace {namespace}")


# -- time --------------------------------------------------------------------------------------


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp as the API server and the operator write them; None if absent or odd."""
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def human_duration(seconds: float) -> str:
    """A duration as kubectl prints ages (k8s.io/apimachinery/pkg/util/duration.HumanDuration):
    "45s", "5m12s", "42m", "3h", "3h5m", "20h", "2d", "2d3h", "30d", "2y"."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def age(value: str | None, now: datetime) -> str:
    t = parse_time(value)
    return human_duration((now - t).total_seconds()) if t else "-"


def parse_timeout(value: str) -> float:
    """``--timeout``: seconds ("90") or a duration ("90s", "5m", "1h30m"); 0 means no limit."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return duration_seconds(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {value!r} (use seconds, or e.g. 90s, 5m, 1h)") from None


# -- rendering (pure) --------------------------------------------------------------------------


def short(rev: str | None) -> str:
    return rev[:REV] if rev else "-"


def table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """Columns as kubectl aligns them (left-aligned, three spaces apart); the last one is not padded."""
    cells = [[str(c) for c in headers]] + [["-" if c is None or c == "" else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["   ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "   " + r[-1] if len(r) > 1 else r[0]
            for r in cells]


def candidates_line(comp: dict) -> str:
    """The compile Job's candidates in one line: precision, gate metric, passed or not, speed."""
    parts = []
    for k in comp.get("candidates") or []:
        name = k.get("precision", "?")
        if k.get("mixed"):
            name += f" mixed ({k['fp32Layers']} layers fp32)" if k.get("fp32Layers") is not None else " mixed"
        if k.get("accuracy") is not None:
            name += f" {k['accuracy']:.4f}"
        elif k.get("searchAgreement") is not None:
            name += f" ≤{k['searchAgreement']:.4f}"
        name += " passed" if k.get("passed") else " failed"
        if k.get("throughput") is not None:
            name += f" {k['throughput']:g}/s at batch {k.get('batch', '?')}"
        parts.append(name + (" (chosen)" if k.get("chosen") else ""))
    if not parts and comp.get("fp32Layers"):
        parts.append(f"int8 with {comp['fp32Layers']} layers kept in fp32")
    return ", ".join(parts)


def field_lines(pairs: list[tuple[str, str]], indent: str = "") -> list[str]:
    width = max(len(k) for k, _ in pairs) + 3  # "Key:" and at least two spaces, as kubectl describe
    return [f"{indent}{(k + ':').ljust(width)}{v}" for k, v in pairs]


def fmt_us(us: int | None) -> str:
    if us is None:
        return "-"
    return f"{us}us" if us < 1000 else f"{us / 1000:g}ms"


def fmt_num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _steps(spec: dict) -> list[dict]:
    steps = ((spec.get("rollout") or {}).get("steps"))
    return steps if steps else [s.to_wire() for s in DEFAULT_STEPS]


def _waves(obj: dict) -> list[list[str]]:
    """Class names in rollout order, the way the planner groups them: the declared waves (classes
    that exist), then every class no wave names, together."""
    names = [c.get("name") for c in (obj.get("status") or {}).get("classes") or []]
    declared = [[n for n in w if n in names] for w in ((obj.get("spec") or {}).get("rollout") or {}).get("waves") or []]
    declared = [w for w in declared if w]
    listed = {n for w in declared for n in w}
    rest = [n for n in names if n not in listed]
    return (declared + ([rest] if rest else [])) or [names]


def _annotations(obj: dict) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _step_detail(obj: dict, now: datetime) -> str:
    st, spec = obj.get("status") or {}, obj.get("spec") or {}
    steps = _steps(spec)
    i = st.get("step") or 0
    step = steps[i] if i < len(steps) else {}
    weight = st.get("canaryWeight")
    out = f"{i + 1}/{len(steps)}   weight {weight if weight is not None else step.get('setWeight', '?')}% on the canary"
    shadow = step.get("shadow") or {}
    if st.get("canaryMirror") is not None or shadow:
        out = (f"{i + 1}/{len(steps)}   shadow: {st.get('canaryMirror') or shadow.get('percent', 100)}% of requests "
               "mirrored to the canary, users answered by the stable only")
    phase = st.get("phase")
    if phase == "Compiling":
        return out + " (once it has compiled)"
    started = parse_time(st.get("stepStartedAt"))
    if started is None:
        return out + " (waiting for its pods to be Ready)"
    held = human_duration((now - started).total_seconds())
    pause = step.get("pause") or shadow.get("duration")
    if _annotations(obj).get(ANNOTATION_PAUSED) == "true":
        return out + f", held {held} (paused by {ANNOTATION_PAUSED})"
    if phase == "Paused":
        return out + f", held {held} (the last analysis was inconclusive)"
    if not pause:
        return out + f", held {held}; next after a passed analysis"
    left = (started + timedelta(seconds=duration_seconds(pause)) - now).total_seconds()
    if left > 0:
        return out + f", held {held} of {pause} ({human_duration(left)} left)"
    return out + f", held {held}, pause {pause} over; next after a passed analysis"


def render_status(obj: dict, now: datetime) -> str:
    """The rollout at a glance, from the object as the API server returns it."""
    md, spec, st = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    lines: list[str] = []
    generation, observed = md.get("generation"), st.get("observedGeneration")
    if observed is None:
        gen = f"{generation} (not observed yet)"
    elif generation is not None and observed < generation:
        gen = f"{generation} (not observed yet: the status is of generation {observed})"
    else:
        gen = f"{generation} (observed)"
    pairs = [("Name", md.get("name", "?")), ("Namespace", md.get("namespace", "?")),
             ("Phase", st.get("phase") or "- (the operator has not reported yet)"), ("Generation", gen),
             ("Stable", short(st.get("stableRevision"))), ("Canary", short(st.get("canaryRevision")))]
    if st.get("canaryRevision"):
        pairs.append(("Step", _step_detail(obj, now)))
        waves = _waves(obj)
        w = st.get("wave") or 0
        if len(waves) > 1 or w:
            current = ", ".join(waves[w]) if w < len(waves) else "?"
            pairs.append(("Wave", f"{w + 1}/{len(waves)} ({current})"))
    ann = _annotations(obj)
    commands = [f"{k}={ann[k]}" for k in (ANNOTATION_PAUSED, ANNOTATION_PROMOTE, ANNOTATION_ABORT, ANNOTATION_RETRY)
                if k in ann]
    if commands:
        pairs.append(("Annotations", ", ".join(commands)))
    lines += field_lines(pairs)

    classes = st.get("classes") or []
    if classes:
        rows, notes = [], []
        for c in classes:
            comp = c.get("compile") or {}
            batching = comp.get("batching") or {}
            stable_n, canary_n, ready = c.get("stableReplicas", 0), c.get("canaryReplicas", 0), c.get("ready", 0)
            runtime = "/".join(x for x in (c.get("runtime"), c.get("precision")) if x)
            if comp.get("precision") and comp["precision"] != c.get("precision"):
                runtime += f"→{comp['precision']}"  # what precision auto chose
            rows.append([c.get("name"), runtime, c.get("nodes"), comp.get("state"),
                         fmt_num(comp.get("accuracy"), ".4f"), batching.get("maxBatchSize"),
                         fmt_us(batching.get("maxQueueDelayMicroseconds")), stable_n, canary_n,
                         f"{ready}/{stable_n + canary_n}"])
            if comp.get("message"):
                notes.append(f"  {c.get('name')}: compile {comp.get('state', '?')} ({short(comp.get('revision'))}): "
                             f"{comp['message']}")
            if len(comp.get("candidates") or []) > 1 or comp.get("fp32Layers"):
                notes.append(f"  {c.get('name')}: candidates {candidates_line(comp)}"
                             + (f"; chose {comp['choice']}" if comp.get("choice") else ""))
            # The class's own message (a serving pod that waits, a weight its replicas cannot give, no
            # nodes), less the compile message it repeats.
            rest = "; ".join(p for p in (c.get("message") or "").split("; ")
                             if p and p not in (comp.get("message") or ""))
            if rest:
                notes.append(f"  {c.get('name')}: {rest}")
            if c.get("stableRevision") and st.get("stableRevision") and c["stableRevision"] != st["stableRevision"]:
                notes.append(f"  {c.get('name')}: serves {short(c['stableRevision'])} as stable "
                             f"(held back from {short(st['stableRevision'])})")
        lines += ["", "Classes:"]
        lines += ["  " + r for r in table(["CLASS", "RUNTIME", "NODES", "COMPILE", "ACCURACY", "MAX-BATCH",
                                           "QUEUE-DELAY", "STABLE", "CANARY", "READY"], rows)]
        lines += notes

    a = st.get("analysis")
    if a:
        analysis = spec.get("analysis") or {}
        slo = analysis.get("slo") or {}
        drift = analysis.get("drift") or {}
        p99 = fmt_num(a.get("p99Ms"), ".1f") + (" ms" if a.get("p99Ms") is not None else "")
        if slo.get("latencyP99Ms") is not None:
            p99 += f" (SLO {slo['latencyP99Ms']:g} ms)"
        err = "-" if a.get("errorRate") is None else f"{a['errorRate'] * 100:.2f}%"
        if slo.get("errorRate") is not None:
            err += f" (SLO {slo['errorRate'] * 100:g}%)"
        reqs = fmt_num(a.get("requests"), ".0f")
        if slo.get("minRequests") is not None:
            reqs += f" (min {slo['minRequests']})"
        dp = fmt_num(a.get("driftPValue"), ".3g")
        if drift and a.get("driftPValue") is not None:
            dp += f" (drift below {drift.get('pValue', 0.01):g})"
        live = analysis.get("liveAgreement") or {}
        agree = fmt_num(a.get("liveAgreement"), ".3f")
        if a.get("liveAgreement") is not None:
            agree += f" over {fmt_num(a.get('livePairs'), '.0f')} mirrored images"
            if live.get("min") is not None:
                agree += f" (min {live['min']:g})"
        when = f"{age(a.get('at'), now)} ago, {a['at']}" if a.get("at") else "time unknown"
        lines += ["", f"Analysis ({when}):"]
        lines += field_lines([
            ("Verdict", a.get("verdict", "?")), ("p99", p99), ("Error rate", err), ("Requests", reqs),
            ("Drift p-value", dp),
            *([("Live agreement", agree)] if live or a.get("liveAgreement") is not None else []),
            ("Failures", f"{a.get('failures', 0)} of {analysis.get('failureLimit', 1)} allowed"),
            ("Inconclusive", f"{a.get('inconclusive', 0)} in a row of {analysis.get('inconclusiveLimit', 3)} allowed"),
            ("Reason", a.get("reason") or "-"),
        ], indent="  ")

    conds = st.get("conditions") or []
    if conds:
        lines += ["", "Conditions:"]
        lines += ["  " + r for r in table(["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], [
            [c.get("type"), c.get("status"), c.get("reason"), age(c.get("lastTransitionTime"), now), c.get("message")]
            for c in conds])]
    return "\n".join(lines) + "\n"


def render_history(obj: dict, now: datetime) -> str:
    """``status.history`` oldest first, newest last, with the revision now stable and the canary in
    flight marked."""
    st = obj.get("status") or {}
    history = st.get("history") or []
    stable, canary = st.get("stableRevision"), st.get("canaryRevision")
    # The stable revision is the one its latest "Promoted" entry is about.
    stable_row = max((i for i, h in enumerate(history)
                      if h.get("revision") == stable and h.get("outcome") == "Promoted"), default=None)
    rows = []
    for i, h in enumerate(history):
        t = parse_time(h.get("at"))
        rows.append([short(h.get("revision")), h.get("outcome"), age(h.get("at"), now),
                     t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else h.get("at"), "stable" if i == stable_row else "",
                     h.get("reason")])
    if canary:
        steps = _steps(obj.get("spec") or {})
        detail = f"{st.get('phase') or 'in flight'}: step {(st.get('step') or 0) + 1}/{len(steps)}, " + \
            (f"shadow {st['canaryMirror']}%" if st.get("canaryMirror") is not None
             else f"weight {st.get('canaryWeight') or 0}%")
        rows.append([short(canary), "InProgress", "-", "-", "canary", detail])
    md = obj.get("metadata") or {}
    lines = [f"{SINGULAR} {md.get('namespace', '?')}/{md.get('name', '?')}: "
             f"stable {short(stable)}, canary {short(canary)}"]
    if not rows:
        lines.append("no history yet")
    else:
        lines += table(["REVISION", "OUTCOME", "AGE", "WHEN", "CURRENT", "REASON"], rows)
    if stable and stable_row is None:
        lines.append(f"(stable {short(stable)} was promoted before the oldest entry kept)")
    return "\n".join(lines) + "\n"


def is_done(obj: dict) -> bool:
    """A terminal phase (Healthy, RolledBack, Failed) that describes the current spec: a freshly
    changed spec that the operator has not observed yet still shows the old phase."""
    md, st = obj.get("metadata") or {}, obj.get("status") or {}
    return (st.get("phase") in TERMINAL_PHASES and not st.get("canaryRevision")
            and st.get("observedGeneration") is not None and st["observedGeneration"] >= (md.get("generation") or 0))


# -- commands (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One annotation to set (``value``) or remove (``value is None``), as a merge patch."""

    key: str
    value: str | None
    before: str | None
    handled_field: str | None = None  # the status field that records a one-shot value once acted on
    notes: tuple[str, ...] = ()

    @property
    def patch(self) -> dict[str, Any]:
        return {"metadata": {"annotations": {self.key: self.value}}}

    def describe(self, obj: dict) -> str:
        md = obj.get("metadata") or {}
        fmt = lambda v: "(unset)" if v is None else json.dumps(v)  # noqa: E731
        return f"{SINGULAR} {md.get('namespace')}/{md.get('name')}: {self.key}: {fmt(self.before)} -> {fmt(self.value)}"


COMMANDS = {
    "promote": (ANNOTATION_PROMOTE, "handledPromote"),
    "abort": (ANNOTATION_ABORT, "handledAbort"),
    "retry": (ANNOTATION_RETRY, "handledRetry"),
}


def fresh_value(now: datetime) -> str:
    """A one-shot command value: an RFC 3339 UTC timestamp with microseconds (new on every call)."""
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def failed_attempt(obj: dict) -> dict | None:
    """The history entry ``retry`` would re-attempt, as far as the status tells: the newest entry
    whose revision is not the stable one, when its outcome is RolledBack, Aborted or CompileFailed.
    The status does not carry the revision the spec asks for, so this only names it (for the user);
    whether there is anything to retry at all is the operator's own verdict, the phase."""
    st = obj.get("status") or {}
    stable = st.get("stableRevision")
    newest = next((h for h in reversed(st.get("history") or []) if h.get("revision") != stable), None)
    return newest if newest is not None and newest.get("outcome") in RETRYABLE_OUTCOMES else None


def _check_retry(obj: dict) -> None:
    """Refuse ``retry`` (CliError, one line) unless the operator reports that the revision the
    spec asks for has failed: no canary in flight, the status is of the current generation, and the
    phase is RolledBack, RollingBack or Failed. The operator derives exactly these phases from the
    newest outcome of that revision (RolledBack/Aborted, CompileFailed), which the plugin cannot
    compute itself: the history is trimmed to 20 entries and may hold a newer failure of another
    revision (B rolled back, C promoted, the spec back to B)."""
    md, st = obj.get("metadata") or {}, obj.get("status") or {}
    where = f"{SINGULAR} {md.get('name')} in namespace {md.get('namespace')}"
    phase = st.get("phase") or "unknown"
    if st.get("canaryRevision"):
        raise CliError(f"{where} has a canary in flight (revision {short(st['canaryRevision'])}, phase {phase}): "
                       f"nothing to retry (abort it first, or let it finish)")
    generation, observed = md.get("generation"), st.get("observedGeneration")
    if observed is not None and generation is not None and observed < generation:
        raise CliError(f"{where}: the operator has not observed generation {generation} yet (the status is of "
                       f"generation {observed}, phase {phase}): nothing to retry until it has")
    if phase not in RETRYABLE_PHASES:
        raise CliError(f"{where} has nothing to retry (phase {phase}, stable {short(st.get('stableRevision'))}): "
                       f"retry re-attempts the revision the spec asks for only when its newest outcome is "
                       f"{', '.join(RETRYABLE_OUTCOMES[:-1])} or {RETRYABLE_OUTCOMES[-1]}")


def _one_shot_notes(obj: dict, command: str) -> list[str]:
    st = obj.get("status") or {}
    phase, ann = st.get("phase"), _annotations(obj)
    notes = []
    if command == "promote" and phase == "Compiling":
        notes.append("the canary is still compiling: the operator promotes it once it has compiled and its pods "
                     "are Ready")
    elif command == "promote" and phase == "Verifying":
        notes.append("the canary's pods are not all Ready yet: the operator sends it 100% once they are")
    elif command == "abort" and phase == "Compiling":
        notes.append("the canary is still compiling: the operator aborts it now and stops its compile Jobs")
    elif command == "retry":
        failed = failed_attempt(obj)
        if failed is not None:
            reason = f": {failed['reason']}" if failed.get("reason") else ""
            notes.append(f"newest failed attempt in the history: revision {short(failed.get('revision'))}, "
                         f"{failed.get('outcome')}{reason}")
        if ann.get(ANNOTATION_PAUSED) == "true":
            notes.append(f"{ANNOTATION_PAUSED} is \"true\": the retried rollout holds at its first step until resumed")
    return notes


def command_annotation(obj: dict, command: str, now: datetime) -> Change | None:
    """What ``command`` (promote, abort, retry, pause, resume) changes on ``obj``; None when nothing
    needs changing. Raises CliError when the command makes no sense now (promote/abort with no
    canary; retry when the revision the spec asks for has not failed: see ``_check_retry``)."""
    md, st = obj.get("metadata") or {}, obj.get("status") or {}
    ann = _annotations(obj)
    name, ns = md.get("name"), md.get("namespace")
    if command in COMMANDS:
        key, handled = COMMANDS[command]
        if command == "retry":
            _check_retry(obj)
        elif not st.get("canaryRevision"):
            raise CliError(f"{SINGULAR} {name} in namespace {ns} has no canary in flight "
                           f"(phase {st.get('phase') or 'unknown'}, stable {short(st.get('stableRevision'))}): "
                           f"nothing to {command}")
        value = fresh_value(now)
        if value in (ann.get(key), st.get(handled)):  # the same microsecond twice: make it new
            value = fresh_value(now + timedelta(microseconds=1))
        return Change(key, value, ann.get(key), handled, tuple(_one_shot_notes(obj, command)))
    if command == "pause":
        if ann.get(ANNOTATION_PAUSED) == "true":
            return None
        notes = ["analysis keeps running while paused: a failing canary is still rolled back"]
        if not st.get("canaryRevision"):
            notes.insert(0, "no canary in flight now: the next rollout holds at its first step until resumed")
        return Change(ANNOTATION_PAUSED, "true", ann.get(ANNOTATION_PAUSED), None, tuple(notes))
    if command == "resume":
        if ANNOTATION_PAUSED not in ann:
            return None
        return Change(ANNOTATION_PAUSED, None, ann[ANNOTATION_PAUSED])
    raise ValueError(f"unknown command {command!r}")


def other_owners(obj: dict, key: str) -> list[str]:
    """Who else holds the annotation ``key``: other field managers, or the last-applied
    configuration (a client-side ``kubectl apply`` / Argo CD from Git). Empty when nobody."""
    md = obj.get("metadata") or {}
    out = []
    for entry in md.get("managedFields") or []:
        fields = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {}
        if f"f:{key}" in fields and entry.get("manager") not in IMPERATIVE_MANAGERS:
            out.append(f"field manager {entry.get('manager')}")
    last = (md.get("annotations") or {}).get(LAST_APPLIED)
    if last:
        try:
            applied = ((json.loads(last).get("metadata") or {}).get("annotations") or {})
        except (ValueError, AttributeError):
            applied = {}
        if key in applied:
            out.append(f"{LAST_APPLIED} (value {json.dumps(applied[key])})")
    return out


def printable(obj: dict) -> dict:
    """The object as ``kubectl get -o yaml`` shows it (without managedFields)."""
    out = json.loads(json.dumps(obj))
    (out.get("metadata") or {}).pop("managedFields", None)
    return out


# -- I/O: the one place that talks to the API server -------------------------------------------


def _watch_stream(func: Callable[..., Any], **kwargs: Any) -> Iterator[dict]:
    from kubernetes import watch
    return watch.Watch().stream(func, **kwargs)


class Cluster:
    """VisionDeployments through a ``CustomObjectsApi`` (or anything with its methods)."""

    def __init__(self, custom: Any, host: str | None = None,
                 stream: Callable[..., Iterator[dict]] = _watch_stream):
        self.custom = custom
        self.host = host
        self._stream = stream

    def get(self, namespace: str, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def patch(self, namespace: str, name: str, body: dict) -> dict:
        """A JSON merge patch (only the keys in ``body`` change), under our own field manager."""
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body,
                                                          field_manager=FIELD_MANAGER, _content_type=MERGE_PATCH)

    def list_one(self, namespace: str, name: str) -> tuple[dict | None, str]:
        """The object (or None) and the list's resourceVersion, to start a watch from."""
        lst = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                        field_selector=f"metadata.name={name}")
        items = lst.get("items") or []
        return (items[0] if items else None), (lst.get("metadata") or {}).get("resourceVersion", "")

    def watch(self, namespace: str, name: str, resource_version: str, timeout_seconds: int) -> Iterator[dict]:
        """Events on the one object from ``resource_version`` on, for at most ``timeout_seconds``;
        an expired resourceVersion raises ApiException(410)."""
        return self._stream(self.custom.list_namespaced_custom_object, group=GROUP, version=VERSION,
                            namespace=namespace, plural=PLURAL, field_selector=f"metadata.name={name}",
                            resource_version=resource_version, allow_watch_bookmarks=True,
                            timeout_seconds=max(1, int(timeout_seconds)))


def connect(kubeconfig: str | None, context: str | None) -> tuple[Cluster, str]:
    """A Cluster and the default namespace, found the way kubectl finds them: ``--kubeconfig``, else
    ``$KUBECONFIG`` (a list of files), else ``~/.kube/config``; ``--context`` or the current
    context; its namespace, else "default". In a pod without a kubeconfig: the service account."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    files = [os.path.expanduser(p) for p in path.split(os.pathsep) if p]
    if kubeconfig and not os.path.exists(os.path.expanduser(kubeconfig)):
        raise CliError(f"kubeconfig {kubeconfig} does not exist")
    try:
        if not any(os.path.exists(f) for f in files):
            if os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig and not context:
                config.load_incluster_config()
                api = client.ApiClient()
                return Cluster(client.CustomObjectsApi(api), api.configuration.host), _pod_namespace()
            where = "$KUBECONFIG" if os.environ.get("KUBECONFIG") else "~/.kube/config"
            raise CliError(f"no kubeconfig: {where} ({path}) does not exist; point KUBECONFIG or --kubeconfig "
                           f"at your cluster's kubeconfig")
        contexts, current = config.list_kube_config_contexts(path)
        if context:
            chosen = next((c for c in contexts if c.get("name") == context), None)
            if chosen is None:
                raise CliError(f"context {context!r} not found in the kubeconfig ({path}); have: "
                               + ", ".join(c.get("name", "?") for c in contexts))
        else:
            chosen = current
            if not chosen:
                raise CliError(f"the kubeconfig ({path}) has no current context: pass --context")
        api = config.new_client_from_config(config_file=path, context=context, persist_config=False)
    except ConfigException as e:
        raise CliError(f"kubeconfig ({path}): {e}") from None
    ns = (chosen.get("context") or {}).get("namespace") or "default"
    return Cluster(client.CustomObjectsApi(api), api.configuration.host), ns


def _pod_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def describe_api_error(e: Exception, name: str, namespace: str, host: str | None) -> str:
    """A short message for an API or connection error (never a traceback)."""
    status = getattr(e, "status", None)
    if status is None:  # urllib3 / socket: the server could not be reached
        reason = getattr(e, "reason", None) or e
        return f"cannot reach the API server{f' at {host}' if host else ''}: {reason}"
    body = getattr(e, "body", None)
    try:
        data = json.loads(body) if body else {}
    except (ValueError, TypeError):
        data = {}
    message = data.get("message") if isinstance(data, dict) else None
    if status == 404:
        details = data.get("details") or {} if isinstance(data, dict) else {}
        if details.get("name") == name or not message or "could not find the requested resource" not in message:
            return f"{SINGULAR} {name} not found in namespace {namespace}"
        return f"the {PLURAL}.{GROUP} CRD is not installed on this cluster ({message})"
    if status == 401:
        return f"unauthorized: the API server refused the credentials of the kubeconfig's user ({message or e})"
    if status == 403:
        return f"forbidden: {message or getattr(e, 'reason', '')}"
    return f"API error {status} {getattr(e, 'reason', '') or ''}: {message or body or ''}".rstrip(": ")


# -- the commands --------------------------------------------------------------------------------


@dataclass
class Env:
    """What a command needs from the outside world (the tests pass their own)."""

    cluster: Cluster
    namespace: str
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    tty: bool | None = None

    def print(self, text: str = "") -> None:
        self.out.write(text if text.endswith("\n") else text + "\n")
        self.out.flush()


def get(env: Env, name: str) -> dict:
    from kubernetes.client.rest import ApiException
    try:
        return env.cluster.get(env.namespace, name)
    except ApiException as e:
        if e.status == 404:
            raise CliError(describe_api_error(e, name, env.namespace, env.cluster.host)) from None
        raise


def cmd_status(env: Env, args: argparse.Namespace) -> int:
    obj = get(env, args.name)
    if args.output == "json":
        env.print(json.dumps(printable(obj), indent=2))
    elif args.output == "yaml":
        env.print(yaml.safe_dump(printable(obj), sort_keys=False))
    else:
        env.out.write(render_status(obj, env.now()))
    return 0


def cmd_history(env: Env, args: argparse.Namespace) -> int:
    env.out.write(render_history(get(env, args.name), env.now()))
    return 0


def cmd_annotate(env: Env, args: argparse.Namespace) -> int:
    obj = get(env, args.name)
    change = command_annotation(obj, args.command, env.now())
    if change is None:
        state = "already paused" if args.command == "pause" else "not paused"
        env.print(f"{SINGULAR} {env.namespace}/{args.name}: {state}; nothing changed")
        return 0
    for owner in other_owners(obj, change.key):
        env.err.write(f"warning: {change.key} is also set by {owner}; if it comes from Git, Argo CD "
                      f"(self-heal) may put that value back: change it in Git instead\n")
    env.cluster.patch(env.namespace, args.name, change.patch)
    env.print(change.describe(obj))
    for note in change.notes:
        env.print(f"note: {note}")
    if change.handled_field is None or not getattr(args, "wait", False):
        return 0
    if args.command == "retry":
        return wait_retried(env, args.name, change, obj, args.timeout)
    return wait_handled(env, args.name, change, obj, args.timeout)


def _poll(env: Env, name: str, timeout: float, done: Callable[[dict], bool],
          waiting_for: Callable[[dict], str]) -> dict:
    """GET the object once a second until ``done(obj)``; CliError after ``timeout`` seconds (0: never)."""
    deadline = env.clock() + timeout if timeout else None
    while True:
        obj = get(env, name)
        if done(obj):
            return obj
        if deadline is not None and env.clock() >= deadline:
            raise CliError(f"timed out after {human_duration(timeout)} waiting for the operator to "
                           f"{waiting_for(obj)}")
        env.sleep(1.0)


def _not_acted_on(change: Change) -> Callable[[dict], str]:
    def text(obj: dict) -> str:
        st = obj.get("status") or {}
        return (f"act on {change.key}={change.value} (phase {st.get('phase') or '-'}); the annotation stays "
                f"set and is acted on when the operator gets to it (is the operator running?)")
    return text


def wait_handled(env: Env, name: str, change: Change, before: dict, timeout: float) -> int:
    """Poll until the operator has acted on ``change.value``: it records the value in its handled
    field and ends the canary that was in flight (``before``: the object as it was when the
    annotation was set): abort at once, promote once the canary's pods are Ready at full size. Then
    say what became of that canary."""
    st0 = before.get("status") or {}
    canary, seen = st0.get("canaryRevision"), st0.get("history") or []

    def handled(obj: dict) -> bool:
        return (obj.get("status") or {}).get(change.handled_field) == change.value

    def outcomes(obj: dict) -> list[dict]:
        history = (obj.get("status") or {}).get("history") or []
        return [h for h in history if h not in seen and h.get("revision") == canary]

    def done(obj: dict) -> bool:
        st = obj.get("status") or {}
        return handled(obj) and (bool(outcomes(obj)) or st.get("canaryRevision") != canary
                                 or st.get("phase") in TERMINAL_PHASES)

    def waiting_for(obj: dict) -> str:
        if not handled(obj):
            return _not_acted_on(change)(obj)
        st = obj.get("status") or {}
        promote = change.key == ANNOTATION_PROMOTE
        return (f"{'promote' if promote else 'roll back'} revision {short(canary)}: it took {change.key}="
                f"{change.value} (status.{change.handled_field}) but the revision is still the canary (phase "
                f"{st.get('phase') or '-'}, weight {st.get('canaryWeight') or 0}%)"
                + ("; it is promoted once its pods are Ready at full size" if promote else ""))

    obj = _poll(env, name, timeout, done, waiting_for)
    st = obj.get("status") or {}
    new = outcomes(obj)
    what = (f"{new[-1].get('outcome')} ({new[-1].get('reason')})" if new
            else "no outcome recorded (its rollout had ended when the operator got to the annotation)")
    env.print(f"handled by the operator: phase {st.get('phase') or '-'}; revision {short(canary)}: {what}; "
              f"stable {short(st.get('stableRevision'))}")
    return 0


def wait_retried(env: Env, name: str, change: Change, before: dict, timeout: float) -> int:
    """Poll until the operator has recorded ``change.value`` in ``status.handledRetry`` and the
    retry shows: a canary in flight, or a phase other than RolledBack/RollingBack/Failed (the value
    alone is not enough: a retry the operator recorded and ignored leaves the phase as it was)."""
    seen = (before.get("status") or {}).get("history") or []

    def handled(obj: dict) -> bool:
        return (obj.get("status") or {}).get(change.handled_field) == change.value

    def done(obj: dict) -> bool:
        st = obj.get("status") or {}
        return handled(obj) and (bool(st.get("canaryRevision")) or st.get("phase") not in RETRYABLE_PHASES)

    def waiting_for(obj: dict) -> str:
        if not handled(obj):
            return _not_acted_on(change)(obj)
        st = obj.get("status") or {}
        return (f"retry: it recorded {change.key}={change.value} (status.{change.handled_field}) but no canary is "
                f"in flight and the phase is still {st.get('phase') or '-'} (kubectl vision status)")

    obj = _poll(env, name, timeout, done, waiting_for)
    st = obj.get("status") or {}
    retried = [h for h in st.get("history") or [] if h not in seen and h.get("outcome") == "Retried"]
    parts = [f"handled by the operator: phase {st.get('phase') or '-'}"]
    if st.get("canaryRevision"):
        parts.append(f"revision {short(st['canaryRevision'])} is the canary again")
    else:
        parts.append("no canary in flight")
    if retried:
        parts.append(f"history: Retried ({retried[-1].get('reason')})" if retried[-1].get("reason")
                     else "history: Retried")
    parts.append(f"stable {short(st.get('stableRevision'))}")
    env.print("; ".join(parts))
    return 0


def cmd_watch(env: Env, args: argparse.Namespace) -> int:
    from kubernetes.client.rest import ApiException

    tty = env.tty if env.tty is not None else env.out.isatty()
    deadline = env.clock() + args.timeout if args.timeout else None
    last_key: str | None = None

    def show(obj: dict, force: bool = False) -> None:
        nonlocal last_key
        st = obj.get("status") or {}
        key = json.dumps([(obj.get("metadata") or {}).get("generation"), st,
                          {k: v for k, v in _annotations(obj).items() if k.startswith("visionfleet.io/")}],
                         sort_keys=True)
        if key == last_key and not (force and tty):
            return
        text = render_status(obj, env.now())
        if tty:
            env.out.write(CLEAR_SCREEN + f"Watching {env.namespace}/{args.name} (Ctrl-C to stop), "
                          f"{env.now().strftime('%H:%M:%SZ')}\n\n" + text)
        else:
            if last_key is not None:
                env.out.write("---\n")
            env.out.write(text)
        env.out.flush()
        last_key = key

    def relist() -> tuple[dict, str]:
        obj, rv = env.cluster.list_one(env.namespace, args.name)
        if obj is None:
            raise NotFound(args.name, env.namespace)
        return obj, rv

    obj, rv = relist()
    show(obj)
    while True:
        if args.until_done and is_done(obj):
            env.print(f"{args.name}: {obj['status']['phase']}")
            return 0
        remaining = None if deadline is None else deadline - env.clock()
        if remaining is not None and remaining <= 0:
            if not args.until_done:
                return 0  # the watch asked for has run its course
            env.err.write(f"watch: timed out after {human_duration(args.timeout)}, "
                          f"phase {(obj.get('status') or {}).get('phase') or '-'}\n")
            return 1
        # Short watches on a TTY re-render the ages; elsewhere only changes are printed.
        span = min(remaining if remaining is not None else 300, 30 if tty else 300)
        events = env.cluster.watch(env.namespace, args.name, rv, span)
        try:
            for event in events:
                kind, raw = event.get("type"), event.get("raw_object") or event.get("object") or {}
                if kind == "BOOKMARK":
                    rv = (raw.get("metadata") or {}).get("resourceVersion") or rv
                    continue
                if kind == "ERROR":
                    if raw.get("code") == 410:
                        raise ApiException(status=410, reason="Gone")
                    raise ApiException(status=raw.get("code"), reason=raw.get("reason"))
                if kind == "DELETED":
                    env.print(f"{SINGULAR} {args.name} was deleted")
                    return 1
                obj = raw
                rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                show(obj)
                if args.until_done and is_done(obj):
                    break
                if deadline is not None and env.clock() >= deadline:
                    break
            else:
                show(obj, force=True)
        except ApiException as e:
            if e.status != 410:
                raise
            obj, rv = relist()  # the resourceVersion expired: start again from a fresh list
            show(obj)
        finally:
            getattr(events, "close", lambda: None)()  # ends the request when we stop reading early


# -- argument parsing -----------------------------------------------------------------------------

DESCRIPTION = """\
Look at and steer VisionDeployment (visionfleet.io/v1alpha1, short name vd) rollouts.

Every command that steers a rollout only sets or removes an annotation on the
VisionDeployment (merge patch, field manager "kubectl-vision"); it never touches
spec or status, so it is safe next to Argo CD / GitOps. The operator acts on it
on its next pass.
"""

EPILOG = """\
examples:
  kubectl vision status doorbell -n vision
  kubectl vision watch doorbell --until-done --timeout 30m
  kubectl vision history doorbell
  kubectl vision pause doorbell            # hold the current step
  kubectl vision resume doorbell
  kubectl vision promote doorbell --wait   # skip the remaining steps and analysis
  kubectl vision abort doorbell --wait     # roll the canary back now
  kubectl vision retry doorbell --wait     # try the rolled-back revision again, same spec

The namespace is -n/--namespace, else the kubeconfig context's namespace, else "default".
The kubeconfig is --kubeconfig, else $KUBECONFIG, else ~/.kube/config.
"""


def _common() -> argparse.ArgumentParser:
    """Connection flags, accepted before or after the subcommand (kubectl passes every argument to a
    plugin as is). SUPPRESS: a flag given in one place is not reset by the other's default."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-n", "--namespace", default=argparse.SUPPRESS,
                   help="namespace of the VisionDeployment (default: the context's namespace, else \"default\")")
    p.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context to use (default: the current one)")
    p.add_argument("--kubeconfig", default=argparse.SUPPRESS,
                   help="path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="kubectl vision", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=description, parents=[common],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("name", metavar="VD", help="name of the VisionDeployment")
        return p

    p = add("status", "show a rollout: phase, step, classes, last analysis, conditions",
            "Show a VisionDeployment's rollout: phase, stable and canary revisions, the step and canary\n"
            "weight, each node class (compile result, replicas), the last analysis and the conditions.")
    p.add_argument("-o", "--output", choices=["json", "yaml"], help="print the object as JSON or YAML instead")

    add("history", "list what became of each revision (newest last)",
        "List status.history, oldest first: each revision's outcome (Promoted, RolledBack, Aborted,\n"
        "Superseded, CompileFailed, and Retried when a retry was accepted), its reason and when; the\n"
        "stable revision and the canary in flight are marked. The operator keeps the last 20 entries.")

    for name, key, short_help, what, wait_help in (
        ("promote", ANNOTATION_PROMOTE, "promote the canary in flight now (skips remaining steps)",
         "Promote the canary in flight now: it becomes stable on every class that compiled it,\n"
         "skipping the remaining steps, pauses and analysis (like `kubectl argo rollouts promote\n"
         "--full`; there is no single-step promote). The operator first waits for the canary's pods\n"
         "to be Ready (and, while it compiles, for the compile Jobs), then sends it 100%.\n"
         "Refused when no canary is in flight.",
         "wait until the operator has promoted the canary (once its pods are Ready at full size),\n"
         "then print the resulting phase"),
        ("abort", ANNOTATION_ABORT, "abort the canary in flight now",
         "Roll the canary in flight back now, also while it compiles (its compile Jobs are stopped):\n"
         "all traffic returns to the stable revision and the history records the revision as Aborted.\n"
         "As with Argo Rollouts, the spec still asks for that revision, and the operator does not\n"
         "retry it on its own: `kubectl vision retry` tries it again, or change the spec (revert it\n"
         "in Git, or set a new model version) to move on. Refused when no canary is in flight.",
         "wait until the operator has acted on it, then print the resulting phase"),
        ("retry", ANNOTATION_RETRY, "re-attempt the spec's revision after a rollback, abort or failed compile",
         "Re-attempt the revision the spec asks for, without a spec change, when its newest outcome\n"
         "is RolledBack, Aborted or CompileFailed (like `kubectl argo rollouts retry rollout`): the\n"
         "operator records a Retried entry in the history and starts a new canary of it.\n"
         "\n"
         "The status does not carry the revision the spec asks for, and the history (the last 20\n"
         "entries) may end with another revision's failure, so the plugin goes by the phase, which\n"
         "the operator derives from exactly that outcome: retry is refused unless the phase is\n"
         "RolledBack, RollingBack or Failed, no canary is in flight, and the status is of the\n"
         "current generation. The note names the newest failed attempt in the history.",
         "wait until the operator has acted on it and a canary is in flight (or the phase has left\n"
         "RolledBack/RollingBack/Failed), then print the resulting phase"),
    ):
        handled = COMMANDS[name][1]
        p = add(name, short_help,
                what + f"\n\nSets the one-shot annotation {key} to a fresh timestamp; the operator acts on each\n"
                f"new value once and records it in status.{handled}.")
        p.add_argument("--wait", action="store_true", help=wait_help)
        p.add_argument("--timeout", type=parse_timeout, default=120.0, metavar="DURATION",
                       help="with --wait: give up after this long, in seconds or as a duration like 5m "
                            "(default 120; 0 waits forever)")

    add("pause", "hold the rollout at its current step",
        f"Set {ANNOTATION_PAUSED}=\"true\": the rollout holds at its current step (analysis still runs,\n"
        "so a failing canary is still rolled back). With no canary in flight, the next rollout holds\n"
        "at its first step.")
    add("resume", "release a paused rollout",
        f"Remove {ANNOTATION_PAUSED} (a merge patch with null): the rollout goes on from its step.")

    p = add("watch", "show status live, re-rendered on every change",
            "Show `status` and render it again whenever the VisionDeployment changes (a watch on the\n"
            "one object). On a terminal the screen is redrawn; otherwise each render follows a `---` line.")
    p.add_argument("--until-done", action="store_true",
                   help="exit 0 once the phase is terminal (Healthy, RolledBack, Failed) for the current spec")
    p.add_argument("--timeout", type=parse_timeout, default=0.0, metavar="DURATION",
                   help="stop after this long, in seconds or as a duration like 30m (default: never); "
                        "with --until-done, reaching it exits 1")
    return parser


HANDLERS = {"status": cmd_status, "history": cmd_history, "watch": cmd_watch, "promote": cmd_annotate,
            "abort": cmd_annotate, "retry": cmd_annotate, "pause": cmd_annotate, "resume": cmd_annotate}


def main(argv: list[str] | None = None, *, env: Env | None = None) -> int:
    """Entry point of ``kubectl-vision``. ``env``: an already connected environment (the tests'),
    in which case the kubeconfig is not read and its namespace is the default one."""
    args = build_parser().parse_args(argv)
    namespace = getattr(args, "namespace", None)
    err = env.err if env is not None else sys.stderr
    host = None
    try:
        if env is None:
            cluster, default_ns = connect(getattr(args, "kubeconfig", None), getattr(args, "context", None))
            host = cluster.host
            env = Env(cluster=cluster, namespace=namespace or default_ns)
        elif namespace:
            env.namespace = namespace
        host = env.cluster.host
        return HANDLERS[args.command](env, args)
    except CliError as e:
        err.write(f"error: {e}\n")
        return e.code
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # API and connection errors: a short message, no traceback
        from kubernetes.client.rest import ApiException
        from urllib3.exceptions import HTTPError
        if isinstance(e, (ApiException, HTTPError, OSError)):
            err.write(f"error: {describe_api_error(e, args.name, env.namespace if env else namespace or '?', host)}\n")
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
