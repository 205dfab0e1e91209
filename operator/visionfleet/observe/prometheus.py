"""Analysis provider: the canary's latency, errors and drift, read from Prometheus
(through ``prometheus-api-client``).

All queries live here. They use Triton's own metric names, and the drift monitor's, with the
labels the scrape configuration attaches to every series of a VisionFleet pod (see
docs/observability.md): ``namespace``, ``vision_deployment``, ``revision``, ``class``.

    requests   sum(increase(nv_inference_request_success{model=M}[W])) + sum(increase(nv_inference_request_failure{…}[W]))
    errors     sum(increase(nv_inference_request_failure[W])) / requests
    p99        max(nv_inference_request_summary_us{quantile="0.99"}) / 1000       (worst pod, ms)
    drift      clamp_max(min(visionfleet_drift_p_value) * count(visionfleet_drift_p_value), 1)
               min(visionfleet_drift_window_fill)
    input      clamp_max(min(visionfleet_drift_input_p_value) * count(visionfleet_drift_input_p_value), 1)
               (the monitors' input-space test; stable revision only, see measure_drift)
    live       sum(increase(visionfleet_live_agreement_total[W])) / sum(increase(visionfleet_live_pairs_total[W]))
               (a shadow step's pairs: the canary's answers against the stable's, see docs/drift.md)

The Triton series are those of the served model's own entry (``model`` = spec.model.name): the drift
monitor asks Triton under a second entry (<model>__monitor), so its requests never count as users'.

Each pod's monitor tests its own window, so a revision with k pods runs k tests: the smallest p-value
is Bonferroni-corrected by k, which keeps the false-alarm rate at drift.pValue however many pods
the revision has; the window counts as full only when every pod's is.

Anything but exactly one finite number per query becomes a string on the Measurement, never a
pass: Prometheus answering without one usable number (no series yet, several series, NaN) is
*unknown* (the planner judges it Inconclusive); Prometheus not answering (unreachable, refused
query, timeout) is a provider *error* (Error: retried up to analysis.consecutiveErrorLimit times
in a row before it counts as inconclusive).

Cost and isolation (docs/operator.md, "Analysis"):

    one client per Prometheus (URL, timeout) ── kept-alive connections, shared by every measurement
    a measurement whose Prometheus did not answer (unreachable, timed out) asks nothing more: its other
        checks carry the same error, so one measurement waits at most one ``prometheus.timeout``
    ``Measurements`` ── the handler asks for a measurement only when the planner may judge one
        (planner.analysis.measurement_due); it runs on this module's own threads, never on the
        threads that run passes, and wakes its VisionDeployment when it is done: a slow Prometheus
        delays no pass, not even its own VisionDeployment's abort or rollback
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Hashable

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from visionfleet.api.spec import AnalysisSpec
from visionfleet.planner.analysis import Measurement
from visionfleet.planner.durations import seconds

from visionfleet_contract import DRIFT_INPUT_P_VALUE, DRIFT_P_VALUE, DRIFT_WINDOW_FILL, LIVE_AGREEMENT, LIVE_PAIRS


@dataclass(frozen=True)
class Queries:
    requests: str
    errors: str
    p99_ms: str
    drift_p_value: str
    drift_window_fill: str
    drift_input_p_value: str
    live_pairs: str
    live_agreement: str


def queries(namespace: str, vd: str, revision: str, window: str, model: str | None = None) -> Queries:
    sel = f'namespace="{namespace}",vision_deployment="{vd}",revision="{revision}"'
    served = sel + (f',model="{model}"' if model else "")  # Triton's series of the served entry only
    ok = f"sum(increase(nv_inference_request_success{{{served}}}[{window}]))"
    bad = f"sum(increase(nv_inference_request_failure{{{served}}}[{window}]))"
    pairs = f"sum(increase({LIVE_PAIRS}{{{sel}}}[{window}]))"
    return Queries(
        requests=f"({ok} + {bad})",
        errors=f"({bad} / ({ok} + {bad}))",
        p99_ms=f'(max(nv_inference_request_summary_us{{{served},quantile="0.99"}}) / 1000)',
        live_pairs=pairs,
        live_agreement=f"(sum(increase({LIVE_AGREEMENT}{{{sel}}}[{window}])) / {pairs})",
        drift_p_value=f"clamp_max(min({DRIFT_P_VALUE}{{{sel}}}) * count({DRIFT_P_VALUE}{{{sel}}}), 1)",
        drift_window_fill=f"min({DRIFT_WINDOW_FILL}{{{sel}}})",
        drift_input_p_value=f"clamp_max(min({DRIFT_INPUT_P_VALUE}{{{sel}}}) * count({DRIFT_INPUT_P_VALUE}{{{sel}}}), 1)",
    )


log = logging.getLogger("visionfleet.observe")


class QueryError(Exception):
    """Prometheus did not answer: unreachable, refused the query, timed out. ``down``: it did not
    answer at all (unreachable, timed out), so no other query to it this measurement is worth asking."""

    def __init__(self, message: str, down: bool = False):
        super().__init__(message)
        self.down = down


class NoValue(Exception):
    """Prometheus answered, without exactly one finite number."""


_CLIENTS: dict[tuple[str, float], PrometheusConnect] = {}
_CLIENTS_LOCK = threading.Lock()


def connect(url: str, timeout: float) -> PrometheusConnect:
    """The one client of this Prometheus (and timeout), made on first use. No client-side retries:
    the planner's inconclusive count is the retry policy, and a measurement must not stall on a
    Prometheus that is down."""
    with _CLIENTS_LOCK:
        prom = _CLIENTS.get((url, timeout))
        if prom is None:
            prom = _CLIENTS[(url, timeout)] = PrometheusConnect(url=url, timeout=timeout,
                                                                retry=Retry(total=0, read=False))
        return prom


def instant(prom: PrometheusConnect, query: str) -> float:
    """One instant query that must return exactly one finite sample."""
    try:
        result = prom.custom_query(query)
    except PrometheusApiClientException as e:
        raise QueryError(f"Prometheus refused the query: {str(e)[:300]}") from e
    except requests.exceptions.Timeout as e:
        raise QueryError(f"Prometheus at {prom.url} did not answer in time", down=True) from e
    except requests.exceptions.RequestException as e:
        raise QueryError(f"Prometheus unreachable at {prom.url}: {type(e).__name__}", down=True) from e
    except (ValueError, KeyError) as e:
        raise QueryError("Prometheus answered with something that is not a query result") from e
    if len(result) == 0:
        raise NoValue("no data for the canary yet")
    if len(result) > 1:
        raise NoValue(f"{len(result)} series where one was expected")
    try:
        value = float(result[0]["value"][1])
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise QueryError("Prometheus answered with something that is not a query result") from e
    if math.isnan(value) or math.isinf(value):
        raise NoValue(f"the query returned {value}")
    return value


def measure_drift(analysis: AnalysisSpec, namespace: str, vd: str, revision: str) -> Measurement | None:
    """The drift tests of one revision alone (the stable one: its SLOs are not the rollout's business):
    the configured detector's and the input-space test's."""
    if analysis.prometheus is None or analysis.drift is None:
        return None
    return measure(analysis.model_copy(update={"slo": None}), namespace, vd, revision, input_space=True)


def measure(analysis: AnalysisSpec, namespace: str, vd: str, revision: str,
            input_space: bool = False, model: str | None = None, live: bool = False) -> Measurement | None:
    """The canary's numbers, or None when no analysis source is configured. ``input_space``: also the
    monitors' input-space p-value (the stable revision's InputDrift; a canary is not judged on it);
    ``model``: the served entry's name (Triton series of other entries, the monitor's, are not
    counted); ``live``: a shadow step's agreement with the stable (when analysis.liveAgreement is set)."""
    if analysis.prometheus is None or (analysis.slo is None and analysis.drift is None):
        return None
    prom = connect(analysis.prometheus.url, seconds(analysis.prometheus.timeout))
    window = f"{max(int(seconds(analysis.interval)), 10)}s"
    q = queries(namespace, vd, revision, window, model)
    values: dict[str, float | None] = {}
    problems: dict[str, str] = {}
    down: list[str] = []  # Prometheus did not answer: the checks after it are not asked

    def failed(key: str, e: QueryError) -> None:
        problems[key] = str(e)
        if e.down:
            down.append(str(e))

    if analysis.slo is not None:
        try:
            values["requests"] = instant(prom, q.requests)
            if values["requests"] > 0:
                values["error_rate"] = instant(prom, q.errors)
                values["p99_ms"] = instant(prom, q.p99_ms)
        except QueryError as e:
            failed("slo_error", e)
        except NoValue as e:
            problems["slo_unknown"] = str(e)
    if analysis.drift is not None and down:
        problems["drift_error"] = down[0]
    elif analysis.drift is not None:
        try:
            values["drift_window_fill"] = instant(prom, q.drift_window_fill)
            if values["drift_window_fill"] >= 1.0:  # a filling window has no p-value yet, and needs none
                values["drift_p_value"] = instant(prom, q.drift_p_value)
        except QueryError as e:
            failed("drift_error", e)
        except NoValue as e:
            problems["drift_unknown"] = str(e)
        if input_space and not problems:
            # Each pod exports it once its own input window was tested (it fills at least as fast as
            # the detector's): the pods that did are Bonferroni-corrected by their count. None when
            # no pod did yet, or the monitors predate the test: the detector's verdict alone counts.
            try:
                values["drift_input_p_value"] = instant(prom, q.drift_input_p_value)
            except QueryError as e:
                failed("drift_error", e)
            except NoValue:
                pass
    if live and analysis.live_agreement is not None and down:
        problems["live_error"] = down[0]
    elif live and analysis.live_agreement is not None:
        try:
            values["live_pairs"] = instant(prom, q.live_pairs)
            if values["live_pairs"] > 0:
                values["live_agreement"] = instant(prom, q.live_agreement)
        except QueryError as e:
            failed("live_error", e)
        except NoValue as e:
            problems["live_unknown"] = str(e)
    return Measurement(**problems, **values)


class Measurements:
    """Measurements run on their own threads, one at a time per slot (a VisionDeployment's canary,
    or its stable revision's drift test); a pass takes a finished one, or finds it still running.

    ``poll(slot, key, fn)``:

        a finished measurement of ``key`` ─► returned, and forgotten (each one is judged once)
        one of ``key`` still running ──────► None (``on_done`` wakes the VisionDeployment later)
        none, or one of another key ───────► ``fn`` started (unless ``every`` seconds have not passed
                                             since the slot's last start), None; another key's
                                             result is dropped when it comes

    ``key`` says what the pass wants measured (the revision, the step, the last measurement's time):
    a result asked for by an earlier step is never judged in a later one. The pool is small and its
    own: a Prometheus that times out holds these threads, never the passes'. ``start`` begins one
    without taking it: the daemon gives a fresh one a moment before the pass (observe -> plan ->
    act) that takes it, without holding a thread.
    """

    def __init__(self, workers: int = 4):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="visionfleet-prometheus")
        self._lock = threading.Lock()
        self._jobs: dict[Hashable, tuple[Hashable, Future]] = {}
        self._started: dict[Hashable, float] = {}

    def poll(self, slot: Hashable, key: Hashable, fn: Callable[[], Measurement | None], *, every: float = 0.0,
             on_done: Callable[[], None] | None = None) -> Measurement | None:
        with self._lock:
            job = self._jobs.get(slot)
            if job is not None and job[0] == key and job[1].done():
                del self._jobs[slot]
                return _result(job[1])
        self.start(slot, key, fn, every=every, on_done=on_done)
        return None

    def start(self, slot: Hashable, key: Hashable, fn: Callable[[], Measurement | None], *, every: float = 0.0,
              on_done: Callable[[], None] | None = None) -> Future | None:
        """The measurement of ``key`` in ``slot``: the one running or finished, else ``fn`` started
        now (None: ``every`` seconds have not passed since the slot's last start)."""
        with self._lock:
            job = self._jobs.get(slot)
            if job is not None and job[0] == key:
                return job[1]
            if time.monotonic() - self._started.get(slot, float("-inf")) < every:
                return None
            fut = self._pool.submit(fn)
            self._jobs[slot] = (key, fut)
            self._started[slot] = time.monotonic()
        if on_done is not None:
            fut.add_done_callback(lambda _: on_done())
        return fut

    def pending(self, slot: Hashable) -> bool:
        with self._lock:
            job = self._jobs.get(slot)
            return job is not None and not job[1].done()

    def forget(self, *slots: Hashable) -> None:
        """A VisionDeployment gone: its results are dropped (a running measurement finishes unseen)."""
        with self._lock:
            for slot in slots:
                self._jobs.pop(slot, None)
                self._started.pop(slot, None)


def _result(fut: Future) -> Measurement | None:
    try:
        return fut.result()
    except Exception as e:  # a bug, not Prometheus: an error the planner retries, not a silent pass
        log.exception("measurement failed")
        why = f"the measurement failed: {type(e).__name__}: {e}"[:300]
        return Measurement(slo_error=why, drift_error=why, live_error=why)
