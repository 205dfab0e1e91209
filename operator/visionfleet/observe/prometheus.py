"""Analysis provider: the canary's latency, errors and drift, read from Prometheus.

All queries live here. They use Triton's own metric names, and the drift monitor's, with the
labels the scrape configuration attaches to every series of a VisionFleet pod (see
docs/observability.md): ``namespace``, ``vision_deployment``, ``revision``, ``class``.

    requests   sum(increase(nv_inference_request_success[W])) + sum(increase(nv_inference_request_failure[W]))
    errors     sum(increase(nv_inference_request_failure[W])) / requests
    p99        max(nv_inference_request_summary_us{quantile="0.99"}) / 1000       (worst pod, ms)
    drift      min(visionfleet_drift_p_value), min(visionfleet_drift_window_fill)

Anything but exactly one finite number per query — no series, several series, NaN, an HTTP or
query error, a timeout — becomes an error string on the Measurement, which the planner judges
Inconclusive: never a pass.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from visionfleet.api.spec import AnalysisSpec
from visionfleet.planner.analysis import Measurement
from visionfleet.planner.durations import seconds


@dataclass(frozen=True)
class Queries:
    requests: str
    errors: str
    p99_ms: str
    drift_p_value: str
    drift_window_fill: str


def queries(namespace: str, vd: str, revision: str, window: str) -> Queries:
    sel = f'namespace="{namespace}",vision_deployment="{vd}",revision="{revision}"'
    ok = f"sum(increase(nv_inference_request_success{{{sel}}}[{window}]))"
    bad = f"sum(increase(nv_inference_request_failure{{{sel}}}[{window}]))"
    return Queries(
        requests=f"({ok} + {bad})",
        errors=f"({bad} / ({ok} + {bad}))",
        p99_ms=f'(max(nv_inference_request_summary_us{{{sel},quantile="0.99"}}) / 1000)',
        drift_p_value=f"min(visionfleet_drift_p_value{{{sel}}})",
        drift_window_fill=f"min(visionfleet_drift_window_fill{{{sel}}})",
    )


class QueryError(Exception):
    pass


def instant(url: str, query: str, timeout: float) -> float:
    """One instant query that must return exactly one finite sample."""
    full = f"{url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(full, timeout=timeout) as resp:
            payload = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("error", "")
        except Exception:
            detail = ""
        raise QueryError(f"HTTP {e.code} from Prometheus{': ' + detail if detail else ''}") from e
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise QueryError(f"Prometheus unreachable at {url}: {reason}") from e
    except json.JSONDecodeError as e:
        raise QueryError("Prometheus answered with something that is not JSON") from e
    if payload.get("status") != "success":
        raise QueryError(f"query failed: {payload.get('error', 'unknown error')}")
    result = payload.get("data", {}).get("result", [])
    if len(result) == 0:
        raise QueryError("no data for the canary yet")
    if len(result) > 1:
        raise QueryError(f"{len(result)} series where one was expected")
    value = float(result[0]["value"][1])
    if math.isnan(value) or math.isinf(value):
        raise QueryError(f"the query returned {value}")
    return value


def measure(analysis: AnalysisSpec, namespace: str, vd: str, revision: str) -> Measurement | None:
    """The canary's numbers, or None when no analysis source is configured."""
    if analysis.prometheus is None or (analysis.slo is None and analysis.drift is None):
        return None
    url, timeout = analysis.prometheus.url, seconds(analysis.prometheus.timeout)
    window = f"{max(int(seconds(analysis.interval)), 10)}s"
    q = queries(namespace, vd, revision, window)
    values: dict[str, float | None] = {}
    slo_error = drift_error = None
    if analysis.slo is not None:
        try:
            values["requests"] = instant(url, q.requests, timeout)
            if values["requests"] > 0:
                values["error_rate"] = instant(url, q.errors, timeout)
                values["p99_ms"] = instant(url, q.p99_ms, timeout)
        except QueryError as e:
            slo_error = str(e)
    if analysis.drift is not None:
        try:
            values["drift_window_fill"] = instant(url, q.drift_window_fill, timeout)
            values["drift_p_value"] = instant(url, q.drift_p_value, timeout)
        except QueryError as e:
            drift_error = str(e)
    return Measurement(slo_error=slo_error, drift_error=drift_error, **values)
