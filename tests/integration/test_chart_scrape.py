"""The chart's PodMonitor for the Triton pods, rendered by the real ``helm``: the same relabelling as the
plain scrape job in charts/visionfleet/files/triton-scrape-config.yaml, rule for rule, on both ports,
in the namespaces the operator watches.

Only ``helm template`` is needed (no cluster). The API server's validation of the rendered PodMonitor
against prometheus-operator's own CRD is test_chart.py's server-side dry run (ci/monitoring-values.yaml
turns it on); what prometheus-operator makes of it, run in a real Prometheus, is
tests/e2e/test_scrape_discovery.py.
"""

from __future__ import annotations

import pytest

from visionfleet_e2e.chart import CHART, VALUES_DIR, helm, render
from visionfleet_e2e.cluster import LocalCluster

from ..unit.test_scrape_config import job


@pytest.fixture(scope="module")
def helm_only():
    # helm and its environment only: never started, so no API server is needed
    return LocalCluster("vf-helm-render")


def podmonitors(helm_only, values=(), sets=()):
    extra = [a for s in sets for a in ("--set", s)]
    return [d for d in render(helm_only, [VALUES_DIR / v for v in values], extra=extra) if d["kind"] == "PodMonitor"]


def camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w.title() for w in rest)


def test_off_by_default_as_it_needs_prometheus_operators_crds(helm_only):
    assert podmonitors(helm_only) == []
    assert podmonitors(helm_only, ["default-values.yaml"]) == []


def test_both_ports_carry_exactly_the_plain_jobs_relabelling(helm_only):
    [pm] = podmonitors(helm_only, ["monitoring-values.yaml"])
    assert pm["metadata"]["name"] == "visionfleet-triton" and pm["metadata"]["namespace"] == "visionfleet-system"
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    plain = job()
    wanted = [{camel(k): v for k, v in rule.items()} for rule in plain["relabel_configs"]]
    endpoints = pm["spec"]["podMetricsEndpoints"]
    assert [e["port"] for e in endpoints] == ["metrics", "drift"]
    for e in endpoints:
        assert e["relabelings"] == wanted, e["port"]
        assert e["interval"] == plain["scrape_interval"] and e["honorLabels"] is plain["honor_labels"] is False
    # the selector picks the pods the relabelling keeps (its first rule), so neither narrows the other
    keep = plain["relabel_configs"][0]
    assert keep["action"] == "keep" and keep["source_labels"] == [
        "__meta_kubernetes_pod_label_app_kubernetes_io_name", "__meta_kubernetes_pod_label_app_kubernetes_io_component"]
    sel = pm["spec"]["selector"]["matchLabels"]
    assert f'{sel["app.kubernetes.io/name"]};{sel["app.kubernetes.io/component"]}' == keep["regex"]


@pytest.mark.parametrize("values, sets, selector", [
    ([], [], {"any": True}),
    (["namespaced-values.yaml"], [], {"matchNames": ["vision-a", "vision-b"]}),
    ([], ["watch.mode=namespaced"], {"matchNames": ["visionfleet-system"]}),
], ids=["cluster-mode", "namespaced-mode", "namespaced-release-namespace"])
def test_it_looks_where_the_operator_watches(helm_only, values, sets, selector):
    [pm] = podmonitors(helm_only, values, ["metrics.podMonitor.enabled=true", *sets])
    assert pm["spec"]["namespaceSelector"] == selector


def test_interval_and_labels_are_set_from_values_and_checked(helm_only):
    [pm] = podmonitors(helm_only, sets=["metrics.podMonitor.enabled=true", "metrics.podMonitor.interval=5s",
                                        "metrics.podMonitor.labels.team=vision"])
    assert {e["interval"] for e in pm["spec"]["podMetricsEndpoints"]} == {"5s"}
    assert pm["metadata"]["labels"]["team"] == "vision"
    proc = helm(helm_only, "template", "t", str(CHART), "--set", "metrics.podMonitor.interval=often", check=False)
    assert proc.returncode != 0 and "/metrics/podMonitor/interval" in proc.stderr, proc.stderr


def test_not_tied_to_the_operators_own_metrics_port(helm_only):
    """metrics.enabled is about the operator's /metrics; turning it off must not stop Triton's scrape."""
    assert len(podmonitors(helm_only, sets=["metrics.podMonitor.enabled=true", "metrics.enabled=false"])) == 1
