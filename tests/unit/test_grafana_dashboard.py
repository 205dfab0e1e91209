"""The chart's Grafana dashboard (charts/visionfleet/files/grafana-dashboard.json), and the metric names
used in it and in the Prometheus rules: each must be one that something exposes — the operator
(visionfleet.metrics, read from a live registry), Triton or the drift monitor (listed here) — so that
renaming a metric breaks this test instead of a dashboard or an alert, silently."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from visionfleet import metrics as m
from visionfleet.act.apply import WriteCounter
from visionfleet.api.status import VisionDeploymentStatus

REPO = Path(__file__).resolve().parents[2]
FILES = REPO / "charts" / "visionfleet" / "files"
DASHBOARD = FILES / "grafana-dashboard.json"
RULES = FILES / "prometheus-rules.yaml"
MONITOR_SOURCE = REPO / "monitors" / "visionfleet_monitor" / "service.py"
PROMTOOL = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)

# Triton's metrics the analysis and the dashboard read (--metrics-config=summary_latencies=true).
TRITON = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_request_summary_us",
    "nv_inference_request_summary_us_count",
    "nv_inference_request_summary_us_sum",
}
# The drift monitor's (monitors/visionfleet_monitor/service.py); checked against its source below.
MONITOR = {
    "visionfleet_drift_p_value",
    "visionfleet_drift_distance",
    "visionfleet_drift_detected",
    "visionfleet_drift_window_fill",
    "visionfleet_drift_samples_total",
    "visionfleet_drift_samples_dropped_total",
    "visionfleet_drift_tests_total",
    "visionfleet_drift_test_seconds",
    "visionfleet_drift_input_p_value",
    "visionfleet_drift_input_distance",
    "visionfleet_drift_input_detected",
    "visionfleet_drift_requests_refused_total",
    "visionfleet_drift_monitor_entry",
}
PROMETHEUS = {"up"}

KEYWORDS = {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
            "inf", "nan", "atan2"}
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "${datasource}": "x"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (a regex, not a parser: strings, label matchers,
    ranges, grouping clauses and function calls are stripped first)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", s)
    out = set()
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        name, call = match.groups()
        if not call and name not in KEYWORDS:
            out.add(name)
    return out


def operator_names() -> set[str]:
    """Every sample name the operator's registry exposes (histogram _bucket/_sum/_count included)."""
    metrics = m.OperatorMetrics(CollectorRegistry())
    metrics.track_writes(WriteCounter())
    metrics.track("ns", "vd")
    metrics.state("ns", "vd", VisionDeploymentStatus(phase="Healthy"))
    names = set()
    for family in metrics.registry.collect():
        names |= {s.name for s in family.samples}
    return names


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(d: dict) -> list[dict]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out += p.get("panels", [])  # collapsed rows hold their panels
    return out


def dashboard_exprs(d: dict) -> list[str]:
    exprs = [t["expr"] for p in panels(d) for t in p.get("targets", [])]
    exprs += [a["expr"] for a in d["annotations"]["list"] if a.get("expr")]
    return exprs


def variable_metrics(d: dict) -> set[str]:
    out = set()
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            match = re.match(r"\s*label_values\(\s*([a-zA-Z_:][\w:]*)", q)
            assert match, f"variable {v['name']}: {q}"
            out.add(match.group(1))
    return out


def rule_file() -> dict:
    return yaml.safe_load(RULES.read_text())


def recorded() -> set[str]:
    return {r["record"] for g in rule_file()["groups"] for r in g["rules"] if "record" in r}


def known() -> set[str]:
    return operator_names() | TRITON | MONITOR | PROMETHEUS | recorded()


def test_the_extractor_finds_metric_names_only():
    expr = ('sum by (le, reason) (rate(foo_bucket{job=~"$job",a="b c"}[$__rate_interval])) / on (x) group_left (y) '
            'bar:baz:rate5m offset 5m > 0.5 and on () absent(up{job=~".*x.*"} == 1) or vector(1e3) * clamp_max(q, 1)')
    assert metric_names(expr) == {"foo_bucket", "bar:baz:rate5m", "up", "q"}


def test_the_listed_drift_monitor_metrics_are_the_monitors():
    import visionfleet_contract

    source = MONITOR_SOURCE.read_text()
    declared = set()
    # A metric's name is a literal, or one of the contract's constants (those the operator queries).
    for kind, name in re.findall(r'\b(Gauge|Counter)\(\s*("[a-z_]+"|[A-Z_]+)', source):
        name = name.strip('"') if name.startswith('"') else getattr(visionfleet_contract, name)
        declared.add(name + "_total" if kind == "Counter" else name)
    assert declared == MONITOR


def test_every_metric_in_the_dashboard_and_the_rules_is_exposed():
    names = known()
    d = dashboard()
    for expr in dashboard_exprs(d):
        unknown = metric_names(expr) - names
        assert not unknown, f"dashboard query uses {unknown}: {expr}"
    assert variable_metrics(d) <= names
    for g in rule_file()["groups"]:
        for r in g["rules"]:
            unknown = metric_names(r["expr"]) - names
            assert not unknown, f"rule {r.get('alert') or r.get('record')} uses {unknown}"
            # queries inside annotation templates ({{ ... | query }})
            for text in (r.get("annotations") or {}).values():
                used = set(re.findall(r"\b(?:visionfleet|nv)_[a-z0-9_]+", text))
                assert used <= names, f"annotation of {r.get('alert')} uses {used - names}"


def test_the_dashboard_shows_every_operator_metric():
    used = set().union(*(metric_names(e) for e in dashboard_exprs(dashboard())))
    families = {f.name for f in m.OperatorMetrics(CollectorRegistry()).registry.collect()
                if f.name.startswith("visionfleet_")}
    families.add("visionfleet_api_writes")
    for family in families:
        assert any(n == family or n.startswith(family + "_") for n in used), f"{family} is on no panel"


def test_every_panel_has_a_datasource_and_targets():
    d = dashboard()
    assert d["schemaVersion"] >= 38
    seen_ids = set()
    for p in panels(d):
        assert p["id"] not in seen_ids, f"duplicate panel id {p['id']}"
        seen_ids.add(p["id"])
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == "${datasource}", p["title"]


def test_the_datasource_and_the_filter_variables():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "vision_deployment"} <= set(variables)
    for name in ("job", "namespace", "vision_deployment"):
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    # every per-object query filters by the variables (the operator's label is `name`, Triton's `vision_deployment`)
    for expr in dashboard_exprs(dashboard()):
        if "visionfleet_visiondeployment_phase" in expr or "visionfleet_canary_weight" in expr:
            assert 'namespace=~"$namespace"' in expr and 'name=~"$vision_deployment"' in expr, expr
        if "nv_inference" in expr or "visionfleet_drift" in expr:
            assert 'namespace=~"$namespace"' in expr and 'vision_deployment=~"$vision_deployment"' in expr, expr


def test_panels_do_not_overlap():
    taken: dict[tuple[int, int], str] = {}
    for p in dashboard()["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for y in range(g["y"], g["y"] + g["h"]):
            for x in range(g["x"], g["x"] + g["w"]):
                assert (x, y) not in taken, f"{p['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = p["title"]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not found (e2e/prometheus/ensure-prometheus.sh installs it)")
def test_every_dashboard_query_is_valid_promql(tmp_path):
    """promtool parses each query (Grafana's variables replaced by values) as a recording rule."""
    out = []
    for i, expr in enumerate(dashboard_exprs(dashboard())):
        for var, val in GRAFANA_VARS.items():
            expr = expr.replace(var, val)
        expr = re.sub(r"\$\w+", ".*", expr)
        out.append({"record": f"dashboard:query:{i}", "expr": expr})
    f = tmp_path / "dashboard-queries.yaml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": out}]}))
    result = subprocess.run([PROMTOOL, "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
