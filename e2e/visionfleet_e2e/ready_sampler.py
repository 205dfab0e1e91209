"""A continuous record of Ready Triton pods per class, from a watch: did serving ever stop?

    sampler = ReadySampler(cluster, namespace, "doorbell").start()
    t0 = sampler.mark("v2 applied")
    ...                                     # the rollout, a rollback, an abort...
    sampler.assert_always_serving(t0)       # sync with the API server, then: no instant without a
                                            # Ready pod in a class that served (else the timeline)
    sampler.minimum(t0)                     # {"l4": 2, "xeon": 1}
    sampler.gaps(1, t0)                     # [] or [Gap(cls="xeon", start=…, end=…, minimum=0, …)]

A background thread lists the namespace's Triton pods (``app.kubernetes.io/component=triton``,
optionally only one VisionDeployment's) and then *watches* them: every ADDED/MODIFIED/DELETED event
updates the pods it knows, and whenever the number of Ready pods of a (class, revision) changes it
appends a ``Sample`` with the time (``time.monotonic()``), the counts and what changed. A pod counts
when its ``Ready`` condition is ``True`` and it is not terminating (no ``deletionTimestamp``). A
second watch (``watch_deployments``) records every change of the VisionDeployment's Deployments
(replicas, the pod template's images), so a test can say what happened to the stable one.

Times are ``time.monotonic()`` seconds; ``mark(label)`` returns one and remembers it, and every
method taking ``t0``/``t1`` accepts a mark's label too. Messages show times relative to ``start()``.

"Served" and "dropped": a class is checked from the first instant it had at least ``n`` Ready pods
(before ``t0`` or inside the window) to ``t1``; a class that never reached ``n`` is not checked
(pass it in ``classes=`` to require it). So a first rollout's 0 -> 1 -> 2 is not a drop, while a
stable class scaled to zero under a rollback is.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from .cluster import LocalCluster

COMPONENT = "app.kubernetes.io/component"
LABEL_VD = "visionfleet.io/vision-deployment"
LABEL_CLASS = "visionfleet.io/class"
LABEL_REVISION = "visionfleet.io/revision"
TRACK_ANNOTATION = "visionfleet.io/track"

TimeRef = float | str | None


def pod_is_ready(pod: dict[str, Any]) -> bool:
    md, st = pod.get("metadata") or {}, pod.get("status") or {}
    if md.get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])


@dataclass(frozen=True)
class Sample:
    t: float                                  # time.monotonic() when the change was seen
    wall: float                               # time.time() at the same instant
    by_revision: dict[tuple[str, str], int]   # (class, revision) -> Ready pods
    cause: str                                # the event that changed the counts

    @property
    def ready(self) -> dict[str, int]:
        """Ready pods per class, every revision together."""
        out: dict[str, int] = {}
        for (cls, _), n in self.by_revision.items():
            out[cls] = out.get(cls, 0) + n
        return out


@dataclass(frozen=True)
class Gap:
    cls: str
    start: float            # monotonic: the count fell below n
    end: float | None       # monotonic: back to >= n (None: still below at the window's end)
    minimum: int            # the lowest count inside the gap
    cause: str              # what the sample that opened the gap says
    window_end: float = 0.0

    @property
    def seconds(self) -> float:
        return (self.end if self.end is not None else self.window_end) - self.start


@dataclass(frozen=True)
class DeploymentSnapshot:
    t: float
    event: str                   # ADDED, MODIFIED, DELETED, LISTED
    name: str
    cls: str | None
    revision: str | None
    track: str | None
    replicas: int | None
    ready_replicas: int
    images: tuple[str, ...]      # the pod template's container images, in order
    template: dict[str, Any] = field(compare=False, repr=False)


class ReadySampler:
    def __init__(self, cluster: "LocalCluster", namespace: str, vision_deployment: str | None = None,
                 watch_deployments: bool = True, watch_timeout: int = 5):
        self.cluster, self.namespace, self.vd = cluster, namespace, vision_deployment
        self.watch_deployments = watch_deployments
        self.watch_timeout = watch_timeout
        self.selector = f"{COMPONENT}=triton" + (f",{LABEL_VD}={vision_deployment}" if vision_deployment else "")
        self.samples: list[Sample] = []
        self.deployments: list[DeploymentSnapshot] = []
        self.marks: dict[str, float] = {}
        self.errors: list[str] = []
        self.events = 0
        self._pods: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._api: Any = None
        self.started_at = time.monotonic()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> "ReadySampler":
        from kubernetes import client, config

        self._api = config.new_client_from_config(config_file=str(self.cluster.kubeconfig))
        core, apps = client.CoreV1Api(self._api), client.AppsV1Api(self._api)
        self.started_at = time.monotonic()
        loops = [("pods", core.list_namespaced_pod, self.selector, self._on_pods)]
        if self.watch_deployments:
            dep_selector = f"{LABEL_VD}={self.vd}" if self.vd else f"{COMPONENT}=triton"
            loops.append(("deployments", apps.list_namespaced_deployment, dep_selector, self._on_deployments))
        first_lists = []
        for name, fn, sel, handler in loops:
            listed = threading.Event()
            first_lists.append(listed)
            th = threading.Thread(target=self._loop, args=(fn, sel, handler, listed), daemon=True,
                                  name=f"ready-sampler-{name}-{self.namespace}")
            th.start()
            self._threads.append(th)
        for listed in first_lists:
            if not listed.wait(30):
                raise RuntimeError(f"the sampler's first list in {self.namespace} did not answer in 30 s: "
                                   f"{self.errors}")
        return self

    def stop(self) -> None:
        self._stop.set()
        for th in self._threads:
            th.join(timeout=self.watch_timeout + 10)
        if self._api is not None:
            self._api.close()
            self._api = None

    def __enter__(self) -> "ReadySampler":
        return self.start() if not self._threads else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- the watch --------------------------------------------------------------------------------

    def _loop(self, list_fn: Callable[..., Any], selector: str, handler: Callable[[str, dict], None],
              listed: threading.Event) -> None:
        from kubernetes import watch
        from kubernetes.client.rest import ApiException

        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    lst = list_fn(self.namespace, label_selector=selector, _preload_content=False)
                    data = json.loads(lst.data)
                    handler("LISTED", {"items": data.get("items") or []})
                    rv = (data.get("metadata") or {}).get("resourceVersion")
                    listed.set()
                w = watch.Watch()
                for ev in w.stream(list_fn, self.namespace, label_selector=selector, resource_version=rv,
                                   allow_watch_bookmarks=True, timeout_seconds=self.watch_timeout,
                                   _request_timeout=self.watch_timeout + 30, deserialize=False):
                    kind, obj = ev["type"], ev.get("raw_object", ev.get("object"))
                    if kind == "ERROR":
                        if (obj or {}).get("code") == 410:
                            rv = None  # expired: list again
                            break
                        raise RuntimeError(f"watch error: {obj}")
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if kind != "BOOKMARK":
                        handler(kind, obj)
                    if self._stop.is_set():
                        w.stop()
                        break
            except ApiException as e:
                if e.status == 410:
                    rv = None
                else:
                    self.errors.append(f"{time.monotonic() - self.started_at:.1f}s {e.status} {e.reason}")
                    time.sleep(0.5)
            except Exception as e:  # a dropped connection, a server restart: list again
                self.errors.append(f"{time.monotonic() - self.started_at:.1f}s {type(e).__name__}: {e}")
                rv = None
                time.sleep(0.5)

    def _counts(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for pod in self._pods.values():
            lbl = (pod.get("metadata") or {}).get("labels") or {}
            cls = lbl.get(LABEL_CLASS)
            if cls is None:
                continue
            key = (cls, lbl.get(LABEL_REVISION, ""))
            out.setdefault(key, 0)
            if pod_is_ready(pod):
                out[key] += 1
        return out

    def _on_pods(self, kind: str, obj: dict[str, Any]) -> None:
        now, wall = time.monotonic(), time.time()
        with self._cond:
            before = self._counts()
            if kind == "LISTED":
                self._pods = {p["metadata"]["uid"]: p for p in obj["items"]}
                cause = f"listed {len(obj['items'])} pods"
            else:
                md = obj["metadata"]
                if kind == "DELETED":
                    self._pods.pop(md["uid"], None)
                else:
                    self._pods[md["uid"]] = obj
                lbl = md.get("labels") or {}
                state = "deleted" if kind == "DELETED" else "terminating" if md.get("deletionTimestamp") else \
                    "Ready" if pod_is_ready(obj) else "not Ready"
                cause = (f"{kind} pod {md['name']} (class {lbl.get(LABEL_CLASS)}, revision "
                         f"{lbl.get(LABEL_REVISION)}): {state}")
            self.events += 1
            after = self._counts()
            if after != before or not self.samples:
                self.samples.append(Sample(now, wall, {k: v for k, v in after.items()}, cause))
            self._cond.notify_all()

    def _on_deployments(self, kind: str, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        items = obj["items"] if kind == "LISTED" else [obj]
        with self._cond:
            for d in items:
                md, spec = d["metadata"], d.get("spec") or {}
                lbl, ann = md.get("labels") or {}, md.get("annotations") or {}
                template = (spec.get("template") or {})
                images = tuple(c.get("image", "") for c in (template.get("spec") or {}).get("containers") or [])
                self.deployments.append(DeploymentSnapshot(
                    now, kind, md["name"], lbl.get(LABEL_CLASS), lbl.get(LABEL_REVISION), ann.get(TRACK_ANNOTATION),
                    spec.get("replicas"), int((d.get("status") or {}).get("readyReplicas") or 0), images, template))
            self._cond.notify_all()

    # -- time ---------------------------------------------------------------------------------------

    def mark(self, label: str) -> float:
        """Remember now under ``label`` (usable as t0/t1 later); returns the monotonic time."""
        t = time.monotonic()
        self.marks[label] = t
        return t

    def _t(self, ref: TimeRef, default: float) -> float:
        if ref is None:
            return default
        if isinstance(ref, str):
            return self.marks[ref]
        return float(ref)

    def rel(self, t: float | None) -> str:
        return "now" if t is None else f"{t - self.started_at:+.1f}s"

    # -- state now ----------------------------------------------------------------------------------

    def ready(self, cls: str | None = None, revision: str | None = None) -> int | dict[str, int]:
        """Ready pods now: of one class (and revision), or per class when ``cls`` is None."""
        with self._cond:
            counts = self._counts()
        if cls is None:
            out: dict[str, int] = {}
            for (c, _), n in counts.items():
                out[c] = out.get(c, 0) + n
            return out
        return sum(n for (c, r), n in counts.items() if c == cls and (revision is None or r == revision))

    def pods(self) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(p) for p in self._pods.values()]

    def wait_until(self, predicate: Callable[["ReadySampler"], Any], timeout: float = 90,
                   what: str = "condition") -> Any:
        """Block until ``predicate(self)`` is truthy, re-checked at every watch event (and every second)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = predicate(self)
                if got:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}; Ready now {self.ready()}")
                self._cond.wait(min(left, 1.0))

    def sync(self, timeout: float = 15) -> None:
        """Wait until the record agrees with a fresh list of the pods (the watch has caught up)."""
        from kubernetes import client

        core = client.CoreV1Api(self._api)
        deadline = time.monotonic() + timeout
        while True:
            resp = core.list_namespaced_pod(self.namespace, label_selector=self.selector, _preload_content=False)
            want = {(p["metadata"]["uid"], pod_is_ready(p)) for p in json.loads(resp.data).get("items") or []}
            with self._cond:
                have = {(uid, pod_is_ready(p)) for uid, p in self._pods.items()}
            if want == have:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the sampler did not catch up with the API server in {timeout}s "
                                     f"(errors: {self.errors[-3:]})")
            time.sleep(0.2)

    # -- the record ------------------------------------------------------------------------------

    def _series(self, cls: str) -> list[tuple[float, int, str]]:
        with self._cond:
            return [(s.t, s.ready.get(cls, 0), s.cause) for s in self.samples]

    def classes(self) -> list[str]:
        with self._cond:
            return sorted({c for s in self.samples for (c, _) in s.by_revision})

    def first_reached(self, cls: str, n: int = 1) -> float | None:
        """When ``cls`` first had at least ``n`` Ready pods (None: never)."""
        return next((t for t, k, _ in self._series(cls) if k >= n), None)

    def _window(self, cls: str, n: int, t0: TimeRef, t1: TimeRef) -> tuple[float, float] | None:
        lo, hi = self._t(t0, self.started_at), self._t(t1, time.monotonic())
        served = self.first_reached(cls, n)
        if served is None or served > hi:
            return None
        return max(lo, served), hi

    def minimum(self, t0: TimeRef = None, t1: TimeRef = None, n: int = 1,
                classes: Iterable[str] | None = None) -> dict[str, int]:
        """The fewest Ready pods each class had between t0 and t1, counted from when it first had
        ``n`` (classes that never had ``n`` are left out unless named)."""
        out = {}
        for cls in (classes or self.classes()):
            win = self._window(cls, n, t0, t1)
            if win is None:
                out[cls] = 0
                continue
            lo, hi = win
            series = self._series(cls)
            at_lo = next((k for t, k, _ in reversed(series) if t <= lo), 0)
            inside = [k for t, k, _ in series if lo < t <= hi]
            out[cls] = min([at_lo, *inside])
        if classes is None:
            out = {c: v for c, v in out.items() if self._window(c, n, t0, t1) is not None}
        return out

    def gaps(self, n: int = 1, t0: TimeRef = None, t1: TimeRef = None,
             classes: Iterable[str] | None = None) -> list[Gap]:
        """Every interval in [t0, t1] in which a class that had reached ``n`` Ready pods had fewer."""
        out = []
        hi_all = self._t(t1, time.monotonic())
        for cls in (classes or self.classes()):
            win = self._window(cls, n, t0, t1)
            if win is None:
                continue
            lo, hi = win
            series = self._series(cls)
            prior = [(t, k, c) for t, k, c in series if t <= lo]
            start: float | None = None
            low, cause = 0, ""
            if prior and prior[-1][1] < n:
                start, low, cause = lo, prior[-1][1], prior[-1][2]
            for t, k, c in series:
                if t <= lo or t > hi:
                    continue
                if k < n and start is None:
                    start, low, cause = t, k, c
                elif k < n:
                    low = min(low, k)
                elif start is not None:
                    out.append(Gap(cls, start, t, low, cause, hi_all))
                    start = None
            if start is not None:
                out.append(Gap(cls, start, None, low, cause, hi))
        return sorted(out, key=lambda g: g.start)

    def describe(self, t0: TimeRef = None, t1: TimeRef = None, limit: int = 60) -> str:
        """The record as lines: time, Ready pods per class (per revision), what changed; and the marks."""
        lo, hi = self._t(t0, self.started_at), self._t(t1, time.monotonic())
        with self._cond:
            before = [s for s in self.samples if s.t <= lo][-1:]  # the state as the window opens
            rows = before + [s for s in self.samples if lo < s.t <= hi]
        events = [(s.t, "sample", s) for s in rows] + [(t, "mark", m) for m, t in self.marks.items() if lo <= t <= hi]
        lines = []
        for t, kind, x in sorted(events, key=lambda e: e[0])[-limit:]:
            if kind == "mark":
                lines.append(f"  {self.rel(t):>8}  -- {x} --")
            else:
                per = ", ".join(f"{c}={n}" for c, n in sorted(x.ready.items()))
                revs = " ".join(f"{c}/{r[:8]}:{n}" for (c, r), n in sorted(x.by_revision.items()) if n)
                lines.append(f"  {self.rel(t):>8}  {per:<22} [{revs}]  {x.cause}")
        return "\n".join(lines)

    def assert_never_below(self, n: int = 1, t0: TimeRef = None, t1: TimeRef = None,
                           classes: Iterable[str] | None = None) -> None:
        """Fail, with the timeline, if a class that had reached ``n`` Ready pods had fewer at any
        instant between t0 and t1. Classes named in ``classes`` must have reached ``n``."""
        if classes is not None:
            never = [c for c in classes if self._window(c, n, t0, t1) is None]
            assert not never, (f"class(es) {never} never had {n} Ready pod(s) by the end of the window\n"
                               + self.describe(t0, t1))
        found = self.gaps(n, t0, t1, classes)
        if found:
            what = "; ".join(f"{g.cls}: {g.minimum} Ready from {self.rel(g.start)} for {g.seconds:.1f}s"
                             f"{'' if g.end is not None else ' (still at the end)'}" for g in found)
            raise AssertionError(f"Ready Triton pods fell below {n} ({what})\n" + self.describe(t0, t1))

    def assert_always_serving(self, t0: TimeRef = None, t1: TimeRef = None,
                              classes: Iterable[str] | None = None, n: int = 1) -> dict[str, int]:
        """Then: catch up with the API server, fail if a class that served was ever left with fewer
        than ``n`` Ready pods between t0 and t1; returns the minimum per class (for a report)."""
        self.sync()
        self.assert_never_below(n, t0, t1, classes)
        return self.minimum(t0, t1, n, classes)

    def deployment_history(self, name: str | None = None, revision: str | None = None) -> list[DeploymentSnapshot]:
        with self._cond:
            return [d for d in self.deployments if (name is None or d.name == name)
                    and (revision is None or d.revision == revision)]
