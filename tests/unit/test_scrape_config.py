"""The Triton scrape job (charts/visionfleet/files/triton-scrape-config.yaml) against what it must serve.

    builder's Triton pod ──(pod discovery, as Prometheus builds its targets)──► targets
        ──(the job's relabel_configs, Prometheus's semantics)──► labels ──► the operator's own queries

The relabelling is evaluated here by a small model of Prometheus's (keep, drop, replace, labelkeep: the
actions the job uses), on the pods ``build_triton_deployment`` renders, so a renamed pod label, port or
query label fails here in a second; tests/e2e/test_scrape_discovery.py runs the same job in the real
Prometheus against real pods (upstream's: Debian's prometheus and promtool have no Kubernetes discovery,
so cannot even parse the job). The chart's PodMonitor embedding it is tested in
tests/integration/test_chart_scrape.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from visionfleet.api.spec import VisionDeploymentSpec
from visionfleet.api.status import CompileResult
from visionfleet.builders.manifests import TRITON_METRICS, build_compile_job, build_triton_deployment
from visionfleet.observe.prometheus import queries
from visionfleet.planner.classes import resolve_classes

from visionfleet_contract import LABEL_CLASS, LABEL_REVISION, LABEL_VD, MONITOR_PORT

from .planner_sim import SPEC

REPO = Path(__file__).resolve().parents[2]
SCRAPE = REPO / "charts" / "visionfleet" / "files" / "triton-scrape-config.yaml"
RULES = REPO / "charts" / "visionfleet" / "files" / "prometheus-rules.yaml"
DOC = REPO / "docs" / "observability.md"
REV = "0123456789ab"
RESULT = CompileResult(state="Succeeded", artifact="pvc://models/repo/x", accuracy=0.99)
# The labels every series of a VisionFleet pod carries after the relabelling, and nothing else.
PUBLIC = {"job", "instance", "namespace", "pod", "container", "vision_deployment", "revision", "class"}


def job() -> dict:
    return yaml.safe_load(SCRAPE.read_text())


# -- a model of Prometheus's pod discovery and relabelling --------------------------------------------

def sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_targets(pod: dict, ip: str = "10.0.0.7", phase: str = "Running") -> list[dict[str, str]]:
    """What ``kubernetes_sd_configs: [{role: pod}]`` makes of a pod: one target per container port (a
    container without ports: one without a port), with the pod's meta labels."""
    md = pod["metadata"]
    common = {"__meta_kubernetes_namespace": md["namespace"], "__meta_kubernetes_pod_name": md["name"],
              "__meta_kubernetes_pod_phase": phase}
    for k, v in md.get("labels", {}).items():
        common[f"__meta_kubernetes_pod_label_{sanitize(k)}"] = v
        common[f"__meta_kubernetes_pod_labelpresent_{sanitize(k)}"] = "true"
    out = []
    for c in pod["spec"]["containers"]:
        for port in c.get("ports") or [None]:
            t = {**common, "__meta_kubernetes_pod_container_name": c["name"], "__address__": ip}
            if port:
                t["__address__"] = f"{ip}:{port['containerPort']}"
                t["__meta_kubernetes_pod_container_port_name"] = port.get("name", "")
                t["__meta_kubernetes_pod_container_port_number"] = str(port["containerPort"])
            out.append(t)
    return out


def relabel(labels: dict[str, str], rules: list[dict]) -> dict[str, str] | None:
    """Prometheus's relabelling (model/relabel): regexes anchored, sources joined by ';', replacement
    '$1' by default, an empty result deletes the label; None when the target is dropped."""
    labels = dict(labels)
    for r in rules:
        action = r.get("action", "replace").lower()
        regex = re.compile(f"^(?:{r.get('regex', '(.*)')})$")
        value = r.get("separator", ";").join(labels.get(s, "") for s in r.get("source_labels", []))
        if action == "keep" and not regex.match(value):
            return None
        if action == "drop" and regex.match(value):
            return None
        if action == "labelkeep":
            labels = {k: v for k, v in labels.items() if regex.match(k)}
        elif action == "replace":
            m = regex.match(value)
            if m:
                new = re.sub(r"\$\{?(\d+)\}?", lambda g: m.group(int(g.group(1))) or "", r.get("replacement", "$1"))
                if new:
                    labels[r["target_label"]] = new
                else:
                    labels.pop(r["target_label"], None)
        elif action not in ("keep", "drop"):
            raise AssertionError(f"the model does not know action {action}: extend it with Prometheus's semantics")
    return labels


def scraped(pod: dict, **kw) -> list[dict[str, str]]:
    """The public label sets of the targets the job keeps for ``pod``."""
    out = []
    for t in pod_targets(pod, **kw):
        lbl = relabel(t, job()["relabel_configs"])
        if lbl is not None:
            public = {k: v for k, v in lbl.items() if not k.startswith("__")}
            public.setdefault("instance", lbl["__address__"])
            out.append(public)
    return sorted(out, key=lambda x: x["instance"])


# -- the pods the operator renders ---------------------------------------------------------------------

def spec(drift: bool) -> VisionDeploymentSpec:
    raw = dict(SPEC)
    if drift:
        raw = dict(raw, serving={"modelRepository": "pvc://models/repo"},
                   compile={"calibration": {"uri": "pvc://models/calib.npz"}},
                   analysis={**SPEC["analysis"], "drift": {"window": 300}})
    return VisionDeploymentSpec.model_validate(raw)


def triton_pod(drift: bool = True, name: str = "doorbell-l4-01234567-abcde") -> dict:
    s = spec(drift)
    cls = {c.name: c for c in resolve_classes(s, [])}["l4"]
    dep = build_triton_deployment("doorbell", "vision", "u", s, cls, REV, 2, RESULT, "canary")
    return {"metadata": {**dep["spec"]["template"]["metadata"], "name": name, "namespace": "vision"},
            "spec": dep["spec"]["template"]["spec"]}


def test_a_triton_pod_with_drift_is_scraped_on_its_two_metric_ports_with_exactly_the_public_labels():
    targets = scraped(triton_pod(drift=True))
    assert sorted(t["instance"] for t in targets) == sorted([f"10.0.0.7:{MONITOR_PORT}", f"10.0.0.7:{TRITON_METRICS}"])
    for t in targets:
        assert set(t) == PUBLIC, t
        assert (t["job"], t["namespace"], t["pod"], t["vision_deployment"], t["revision"], t["class"]) == \
            ("visionfleet-triton", "vision", "doorbell-l4-01234567-abcde", "doorbell", REV, "l4")
    assert {t["instance"]: t["container"] for t in targets} == {
        f"10.0.0.7:{MONITOR_PORT}": "drift-monitor", f"10.0.0.7:{TRITON_METRICS}": "triton"}


def test_without_drift_only_tritons_metrics_port_is_scraped():
    assert [t["instance"] for t in scraped(triton_pod(drift=False))] == [f"10.0.0.7:{TRITON_METRICS}"]


@pytest.mark.parametrize("field", ["requests", "errors", "p99_ms", "drift_p_value", "drift_window_fill"])
def test_every_label_the_operators_queries_select_by_is_on_the_series_with_the_pods_value(field):
    """The analysis's own query strings, parsed: each label matcher but Triton's `quantile` must be one
    the relabelling writes, with the value the operator asks for (the pod's namespace and labels)."""
    q = getattr(queries("vision", "doorbell", REV, "30s"), field)
    wanted = dict(re.findall(r'(\w+)="([^"]*)"', q))
    wanted.pop("quantile", None)
    assert set(wanted) >= {"namespace", "vision_deployment", "revision"}, q
    for t in scraped(triton_pod(drift=True)):
        assert {k: t.get(k) for k in wanted} == wanted, (field, q, t)


def test_the_pod_labels_read_are_the_contracts():
    sources = {s for r in job()["relabel_configs"] for s in r.get("source_labels", [])}
    for key in (LABEL_VD, LABEL_REVISION, LABEL_CLASS):
        assert f"__meta_kubernetes_pod_label_{sanitize(key)}" in sources, key
        assert f"__meta_kubernetes_pod_labelpresent_{sanitize(key)}" in sources, key


def another_apps_pod() -> dict:
    return {"metadata": {"name": "web-1", "namespace": "vision",
                         "labels": {"app.kubernetes.io/name": "web", "app.kubernetes.io/component": "triton"}},
            "spec": {"containers": [{"name": "web", "ports": [{"name": "metrics", "containerPort": 8002}]}]}}


def compile_pod() -> dict:
    s = spec(drift=True)
    cls = {c.name: c for c in resolve_classes(s, [])}["l4"]
    tpl = build_compile_job("doorbell", "vision", "u", s, cls, REV)["spec"]["template"]
    # the compile container has no ports; give it one named like Triton's, as a future change might
    tpl["spec"]["containers"][0]["ports"] = [{"name": "metrics", "containerPort": 8002}]
    return {"metadata": {**tpl["metadata"], "name": "doorbell-l4-compile-x", "namespace": "vision"}, "spec": tpl["spec"]}


def unlabelled_triton_pod() -> dict:
    pod = triton_pod()
    del pod["metadata"]["labels"][LABEL_REVISION]
    return pod


@pytest.mark.parametrize("pod, phase", [
    (another_apps_pod(), "Running"),
    (compile_pod(), "Running"),
    (unlabelled_triton_pod(), "Running"),
    (triton_pod(), "Succeeded"),
    (triton_pod(), "Failed"),
], ids=["another-app-with-a-metrics-port", "compile-job-pod", "triton-without-revision", "succeeded", "failed"])
def test_nothing_else_is_scraped(pod, phase):
    assert scraped(pod, phase=phase) == []


def test_the_model_of_relabelling_drops_what_it_should_and_keeps_what_it_should():
    """The model itself, on the cases the job relies on (a wrong model would make the tests above pass
    vacuously): anchored regexes, the ';' join, an empty replacement deleting the label."""
    assert relabel({"a": "metricsx"}, [{"source_labels": ["a"], "regex": "metrics|drift", "action": "keep"}]) is None
    assert relabel({"a": "x", "b": "y"}, [{"source_labels": ["a", "b"], "regex": "x;y", "action": "drop"}]) is None
    assert relabel({"a": "x"}, [{"source_labels": ["missing"], "target_label": "a"}]) == {}
    assert relabel({"a": "x", "__b": "y", "c": "z"}, [{"regex": "__.+|a", "action": "labelkeep"}]) == {"a": "x", "__b": "y"}


def test_the_job_is_outside_the_operator_down_alerts_matcher():
    """VisionFleetOperatorDown fires on no `up == 1` of the operator's job: Triton targets being up
    must not count as the operator being up."""
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    expr = next(r["expr"] for r in rules if r.get("alert") == "VisionFleetOperatorDown")
    matcher = re.search(r'job=~"([^"]+)"', expr).group(1)
    assert not re.fullmatch(matcher, job()["job_name"])
    assert {t["job"] for t in scraped(triton_pod())} == {job()["job_name"]}


def test_the_docs_show_this_very_job():
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)]
    shown = [b for b in blocks if isinstance(b, dict) and b.get("job_name") == job()["job_name"]]
    assert shown == [job()], "docs/observability.md must show charts/visionfleet/files/triton-scrape-config.yaml as it is"
