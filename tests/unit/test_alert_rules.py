"""The chart's Prometheus rules (charts/visionfleet/files/prometheus-rules.yaml), checked and unit-tested
with the real promtool: every alert fires on the series it is meant for and stays quiet otherwise
(tests/unit/alert_rules_test.yaml). Metric names are checked in test_grafana_dashboard.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "charts" / "visionfleet" / "files" / "prometheus-rules.yaml"
RULE_TESTS = Path(__file__).with_name("alert_rules_test.yaml")
PROMTOOL = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
ALERTS = {"VisionFleetRollback", "VisionFleetCompileFailed", "VisionFleetReconcileErrors", "VisionFleetOperatorDown",
          "VisionFleetRolloutStuck", "VisionFleetInputDrift", "VisionFleetInputSpaceDrift"}

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found (Debian's prometheus package; e2e/prometheus/ensure-prometheus.sh installs it in CI)")


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=RULE_TESTS.parent)


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


@needs_promtool
def test_promtool_checks_the_rule_file():
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_unit_tests_pass():
    out = promtool("test", "rules", RULE_TESTS.name)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_severity_summary_description_and_is_tested_both_ways():
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    assert set(alerts) == ALERTS
    for name, r in alerts.items():
        assert r["labels"]["severity"] in ("info", "warning", "critical"), name
        assert r["annotations"]["summary"] and r["annotations"]["description"], name
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired, quiet = set(), set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert fired == ALERTS, f"never fired in a test: {ALERTS - fired}"
    assert quiet == ALERTS, f"never shown quiet in a test: {ALERTS - quiet}"


def test_the_rule_test_file_points_at_the_charts_rule_file():
    listed = yaml.safe_load(RULE_TESTS.read_text())["rule_files"]
    assert [(RULE_TESTS.parent / p).resolve() for p in listed] == [RULES.resolve()]


def test_recording_rules_follow_the_naming_convention():
    for r in rules():
        if "record" in r:
            level, metric, ops = r["record"].split(":")
            assert level.startswith("visionfleet") and metric and ops, r["record"]
