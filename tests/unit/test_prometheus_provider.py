"""The Prometheus provider turns every answer that is not exactly one finite sample into an error
the planner judges Inconclusive (a canned HTTP server plays Prometheus' query API)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from visionfleet.api.spec import AnalysisSpec
from visionfleet.observe.prometheus import measure, queries

ANSWERS: dict[str, tuple[int, object, float]] = {}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        code, body, delay = ANSWERS["next"]
        time.sleep(delay)
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def fake_prometheus():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def vector(*values):
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": {"pod": f"p{i}"}, "value": [0, v]}
                                                     for i, v in enumerate(values)]}}


def analysis(url):
    return AnalysisSpec.model_validate({"prometheus": {"url": url, "timeout": "1s"},
                                        "slo": {"latencyP99Ms": 20}})


@pytest.mark.parametrize(
    ("answer", "kind", "error"),
    [
        pytest.param((200, vector(), 0), "slo_unknown", "no data for the canary yet", id="empty"),
        pytest.param((200, vector("3", "4"), 0), "slo_unknown", "2 series where one was expected", id="several-series"),
        pytest.param((200, vector("NaN"), 0), "slo_unknown", "the query returned nan", id="nan"),
        pytest.param((200, vector("+Inf"), 0), "slo_unknown", "the query returned inf", id="inf"),
        pytest.param((400, {"status": "error", "error": "parse error"}, 0), "slo_error", "refused the query",
                     id="bad-query"),
        pytest.param((503, {"status": "error"}, 0), "slo_error", "refused the query", id="unavailable"),
        pytest.param((200, vector("1"), 2.5), "slo_error", "did not answer in time", id="timeout"),
    ],
)
def test_anything_but_one_finite_sample_is_unknown_or_an_error(fake_prometheus, answer, kind, error):
    """An answer without one number is unknown (Inconclusive); no answer is a provider error (Error)."""
    ANSWERS["next"] = answer
    m = measure(analysis(fake_prometheus), "ns", "vd", "abc")
    assert getattr(m, kind) is not None and error in getattr(m, kind)
    other = "slo_error" if kind == "slo_unknown" else "slo_unknown"
    assert getattr(m, other) is None
    assert m.p99_ms is None


def test_one_sample_per_query_gives_the_numbers(fake_prometheus):
    ANSWERS["next"] = (200, vector("12.5"), 0)
    m = measure(analysis(fake_prometheus), "ns", "vd", "abc")
    assert m.slo_error is None and (m.requests, m.error_rate, m.p99_ms) == (12.5, 12.5, 12.5)


def test_unreachable():
    m = measure(analysis("http://127.0.0.1:9"), "ns", "vd", "abc")
    assert "Prometheus unreachable at http://127.0.0.1:9" in m.slo_error


def test_no_source_configured_measures_nothing():
    assert measure(AnalysisSpec(), "ns", "vd", "abc") is None


def test_queries_select_the_revision_with_trition_metric_names():
    q = queries("vision", "doorbell", "abc123", "30s")
    assert 'nv_inference_request_success{namespace="vision",vision_deployment="doorbell",revision="abc123"}[30s]' \
        in q.requests
    assert 'quantile="0.99"' in q.p99_ms and q.p99_ms.endswith("/ 1000)")


def test_slo_queries_read_the_served_entry_only_and_live_agreement_is_a_ratio_of_counters():
    q = queries("vision", "doorbell", "abc123", "30s", model="effnet")
    sel = 'namespace="vision",vision_deployment="doorbell",revision="abc123"'
    # The monitor asks Triton under effnet__monitor: an exact model match leaves its series out.
    assert f'nv_inference_request_success{{{sel},model="effnet"}}[30s]' in q.requests
    assert f'nv_inference_request_failure{{{sel},model="effnet"}}[30s]' in q.errors
    assert f'{sel},model="effnet",quantile="0.99"' in q.p99_ms
    assert q.live_pairs == f"sum(increase(visionfleet_live_pairs_total{{{sel}}}[30s]))"
    assert q.live_agreement == f"(sum(increase(visionfleet_live_agreement_total{{{sel}}}[30s])) / {q.live_pairs})"


def test_live_agreement_is_read_only_when_asked(fake_prometheus):
    analysis = AnalysisSpec.model_validate({"prometheus": {"url": fake_prometheus, "timeout": "1s"},
                                            "drift": {"window": 500}, "liveAgreement": {"min": 0.99}})
    ANSWERS["next"] = (200, vector("1"), 0)
    m = measure(analysis, "ns", "vd", "abc", model="effnet", live=True)
    assert (m.live_pairs, m.live_agreement) == (1.0, 1.0)
    m = measure(analysis, "ns", "vd", "abc", model="effnet")
    assert (m.live_pairs, m.live_agreement) == (None, None)


def drift_analysis(url):
    return AnalysisSpec.model_validate({"prometheus": {"url": url, "timeout": "1s"},
                                        "drift": {"pValue": 0.01, "window": 500}})


def test_input_space_p_value_is_bonferroni_over_pods_and_read_for_the_stable_only(fake_prometheus):
    from visionfleet.observe.prometheus import measure_drift

    q = queries("vision", "doorbell", "abc123", "30s")
    sel = 'namespace="vision",vision_deployment="doorbell",revision="abc123"'
    assert q.drift_input_p_value == (f"clamp_max(min(visionfleet_drift_input_p_value{{{sel}}}) * "
                                     f"count(visionfleet_drift_input_p_value{{{sel}}}), 1)")
    assert q.drift_input_p_value == q.drift_p_value.replace("visionfleet_drift_p_value",
                                                            "visionfleet_drift_input_p_value")
    ANSWERS["next"] = (200, vector("1"), 0)
    stable = measure_drift(drift_analysis(fake_prometheus), "ns", "vd", "abc")
    assert (stable.drift_window_fill, stable.drift_p_value, stable.drift_input_p_value) == (1.0, 1.0, 1.0)
    canary = measure(drift_analysis(fake_prometheus), "ns", "vd", "abc")
    assert canary.drift_p_value == 1.0 and canary.drift_input_p_value is None  # never judges a canary


def test_no_input_space_series_leaves_the_detectors_verdict_alone(fake_prometheus, monkeypatch):
    """Monitors that predate the input test, or whose input windows are not yet tested: no series."""
    from visionfleet.observe import prometheus
    from visionfleet.observe.prometheus import measure_drift

    asked = []

    def instant(prom, query):
        asked.append(query)
        if "visionfleet_drift_input_p_value" in query:
            raise prometheus.NoValue("no data for the canary yet")
        return 0.5 if "visionfleet_drift_p_value" in query else 1.0

    monkeypatch.setattr(prometheus, "instant", instant)
    m = measure_drift(drift_analysis(fake_prometheus), "ns", "vd", "abc")
    assert m.drift_p_value == 0.5 and m.drift_input_p_value is None and m.drift_unknown is None
    assert len(asked) == 3

    def down(prom, query):
        if "visionfleet_drift_input_p_value" in query:
            raise prometheus.QueryError("Prometheus at x did not answer in time")
        return 1.0

    monkeypatch.setattr(prometheus, "instant", down)
    assert "did not answer" in measure_drift(drift_analysis(fake_prometheus), "ns", "vd", "abc").drift_error


def test_one_client_per_prometheus():
    from visionfleet.observe.prometheus import connect

    assert connect("http://prom-a:9090", 1.0) is connect("http://prom-a:9090", 1.0)
    assert connect("http://prom-a:9090", 1.0) is not connect("http://prom-b:9090", 1.0)


def test_a_prometheus_that_does_not_answer_is_waited_for_once_per_measurement(fake_prometheus):
    """Every check would time out: the first timeout answers for the others (an Error each)."""
    both = AnalysisSpec.model_validate({"prometheus": {"url": fake_prometheus, "timeout": "1s"},
                                        "slo": {"latencyP99Ms": 20}, "drift": {"window": 500},
                                        "liveAgreement": {"min": 0.99}})
    ANSWERS["next"] = (200, vector("1"), 2.5)
    t0 = time.monotonic()
    m = measure(both, "ns", "vd", "abc", live=True)
    assert time.monotonic() - t0 < 2.0
    assert "did not answer in time" in m.slo_error and m.drift_error == m.slo_error == m.live_error


def test_a_refused_query_does_not_stop_the_other_checks(fake_prometheus, monkeypatch):
    from visionfleet.observe import prometheus

    def instant(prom, query):
        if "nv_inference" in query:
            raise prometheus.QueryError("Prometheus refused the query: bad")
        return 1.0

    monkeypatch.setattr(prometheus, "instant", instant)
    m = measure(drift_analysis(fake_prometheus).model_copy(update={"slo": analysis(fake_prometheus).slo}),
                "ns", "vd", "abc")
    assert "refused" in m.slo_error and m.drift_error is None and m.drift_p_value == 1.0


def test_measurements_run_off_the_callers_thread_and_each_result_is_taken_once():
    from visionfleet.observe.prometheus import Measurement, Measurements

    pool = Measurements(workers=1)
    gate, woken, calls = threading.Event(), threading.Event(), []

    def slow():
        calls.append(threading.current_thread().name)
        gate.wait(5)
        return Measurement(requests=1.0)

    t0 = time.monotonic()
    assert pool.poll("vd", "step-0", slow, on_done=woken.set) is None  # started, not waited for
    assert time.monotonic() - t0 < 0.5 and pool.pending("vd")
    assert pool.poll("vd", "step-0", slow) is None  # still running: not started twice
    gate.set()
    assert woken.wait(5)
    assert pool.poll("vd", "step-0", slow) == Measurement(requests=1.0)
    assert calls == [calls[0]] and calls[0].startswith("visionfleet-prometheus")
    # taken: the next poll starts a new one
    woken.clear()
    assert pool.poll("vd", "step-0", slow, on_done=woken.set) is None
    assert woken.wait(5) and len(calls) == 2


def test_a_result_asked_for_by_another_step_is_never_returned():
    from visionfleet.observe.prometheus import Measurement, Measurements

    pool = Measurements(workers=1)
    done = threading.Event()
    pool.poll("vd", "step-0", lambda: Measurement(requests=0.0), on_done=done.set)
    assert done.wait(5)
    done.clear()
    assert pool.poll("vd", "step-1", lambda: Measurement(requests=1.0), on_done=done.set) is None
    assert done.wait(5)
    assert pool.poll("vd", "step-1", lambda: Measurement(requests=2.0)) == Measurement(requests=1.0)


def test_every_limits_how_often_a_slot_is_measured_and_a_bug_is_an_error():
    from visionfleet.observe.prometheus import Measurements

    pool = Measurements(workers=1)
    done = threading.Event()

    def broken():
        raise ZeroDivisionError("oops")

    pool.poll("stable", "r1", broken, every=60, on_done=done.set)
    assert done.wait(5)
    m = pool.poll("stable", "r1", broken, every=60)
    assert "ZeroDivisionError" in m.slo_error and m.drift_error == m.slo_error
    assert pool.poll("stable", "r1", broken, every=60) is None and not pool.pending("stable")  # not yet again
