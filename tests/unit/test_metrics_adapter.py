"""The pieces of the local fleet's HPA path that need no cluster: the adapter's metric config, the
control-plane flags the harness hands kwokctl, and the simulated Triton pods' load sharing
(tests/e2e/test_autoscaling.py runs them all together)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from visionfleet_e2e.cluster import LocalCluster
from visionfleet_e2e.metrics_adapter import CONFIG, NAME, _rbac, external_metric_names, metric_names, quantity
from visionfleet_e2e.triton_sim import TritonMetricsSim

REPO = Path(__file__).resolve().parents[2]


def test_the_config_serves_triton_rate_and_queue_per_pod():
    conf = yaml.safe_load(CONFIG.read_text())
    assert (conf["podLabel"], conf["namespaceLabel"]) == ("pod", "namespace")
    queries = {m["name"]: " ".join(m["query"].split()) for m in conf["metrics"]}
    assert metric_names() == ["visionfleet_triton_inference_rate", "visionfleet_triton_queue_ms"]
    mine = '<<.LabelMatchers>>,model!~".+__monitor"'  # not the drift monitor's own requests
    assert queries["visionfleet_triton_inference_rate"] == \
        f"sum by (<<.GroupBy>>) (rate(nv_inference_count{{{mine}}}[1m]))"
    assert queries["visionfleet_triton_queue_ms"] == (
        f"sum by (<<.GroupBy>>) (rate(nv_inference_queue_duration_us{{{mine}}}[1m]))"
        f" / sum by (<<.GroupBy>>) (rate(nv_inference_request_success{{{mine}}}[1m])) / 1000")


def test_the_config_serves_the_external_metrics_the_operators_hpa_reads():
    from visionfleet.builders.manifests import AUTOSCALE_METRICS

    assert sorted(external_metric_names()) == sorted(AUTOSCALE_METRICS.values())
    conf = yaml.safe_load(CONFIG.read_text())
    for m in conf["externalMetrics"]:
        q = " ".join(m["query"].split())
        assert q.startswith("sum(") and "by" not in q  # one total over what the selector picked
        assert '<<.LabelMatchers>>,model!~".+__monitor"' in q


def test_the_scrape_config_gives_the_labels_the_adapter_selects_by():
    scrape = yaml.safe_load((REPO / "charts/visionfleet/files/triton-scrape-config.yaml").read_text())
    targets = {r.get("target_label"): r.get("source_labels") for r in scrape["relabel_configs"]}
    assert targets["namespace"] == ["__meta_kubernetes_namespace"]
    assert targets["pod"] == ["__meta_kubernetes_pod_name"]


def test_the_adapter_source_knows_the_placeholders():
    main = (REPO / "e2e/cluster/gomod/metrics-adapter/main.go").read_text()
    assert '"LabelMatchers"' in main and '"GroupBy"' in main and 'Delims("<<", ">>")' in main


@pytest.mark.parametrize("q,value", [("12", 12.0), ("12500m", 12.5), ("222m", 0.222), ("1500k", 1.5e6)])
def test_quantities(q, value):
    assert quantity(q) == pytest.approx(value)


def test_rbac_lets_the_adapter_delegate_and_the_hpa_read():
    objs = {(o["kind"], o["metadata"]["name"]) for o in _rbac()}
    assert ("ClusterRoleBinding", f"{NAME}:system:auth-delegator") in objs
    assert ("RoleBinding", f"{NAME}-auth-reader") in objs
    assert ("ClusterRoleBinding", "hpa-controller-custom-metrics") in objs


def test_control_plane_flags_for_the_aggregation_layer_and_the_hpa(tmp_path):
    cluster = LocalCluster("unit", state_root=tmp_path, bin_dir=Path("/opt/vf/bin"))
    conf = list(yaml.safe_load_all(cluster._config_text()))[0]
    patches = {p["name"]: {a["key"]: a["value"] for a in p["extraArgs"]} for p in conf["componentsPatches"]}
    api = patches["kube-apiserver"]
    assert api["requestheader-client-ca-file"] == str(cluster.cluster_dir / "pki" / "ca.crt")
    assert api["requestheader-allowed-names"] == "kwok-admin"  # the proxy client certificate kwokctl gives it
    assert api["requestheader-username-headers"] == "X-Remote-User"
    kcm = patches["kube-controller-manager"]
    assert kcm["horizontal-pod-autoscaler-sync-period"] == "5s"
    assert kcm["horizontal-pod-autoscaler-downscale-stabilization"] == "15s"


def pod(name, revision="r", ready=True):
    return {"metadata": {"name": name, "namespace": "ns", "uid": name,
                         "labels": {"visionfleet.io/revision": revision}},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def values(text, series):
    out = {}
    for line in text.splitlines():
        if line.startswith(series + "{"):
            out[line.split('pod="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


def test_a_shared_load_splits_over_ready_pods_and_its_counters_never_jump():
    pods = [pod("a"), pod("b"), pod("c", ready=False)]
    sim = TritonMetricsSim(lambda: pods)
    sim.behave("r", rps_total=100.0, queue_ms=2.0)
    sim.render()
    time.sleep(0.2)
    first = values(sim.render(), "nv_inference_count")
    assert set(first) == {"a", "b"}
    assert first["a"] == pytest.approx(100.0 / 2 * 0.2, rel=0.25)
    # more load: the counters go on from where they were, faster
    sim.behave("r", rps_total=1000.0, queue_ms=2.0)
    time.sleep(0.2)
    text = sim.render()
    second = values(text, "nv_inference_count")
    assert second["a"] - first["a"] == pytest.approx(1000.0 / 2 * 0.2, rel=0.25)
    queued, ok = values(text, "nv_inference_queue_duration_us"), values(text, "nv_inference_request_success")
    assert queued["a"] / ok["a"] / 1000 == pytest.approx(2.0, rel=1e-3)  # the text rounds


def test_without_a_shared_load_the_series_are_as_before():
    sim = TritonMetricsSim(lambda: [pod("a")])
    sim.behave("r", rps_per_pod=40.0, error_ratio=0.25)
    sim.render()
    time.sleep(0.1)
    text = sim.render()
    ok, failed = values(text, "nv_inference_request_success")["a"], values(text, "nv_inference_request_failure")["a"]
    assert failed / (ok + failed) == pytest.approx(0.25, rel=0.01)
    assert values(text, "nv_inference_count")["a"] == ok
