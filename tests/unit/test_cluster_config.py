"""What the harness hands kwokctl: local binaries only, loopback only, and the full set of stages
(kwokctl drops all of its defaults as soon as one Stage is given)."""

from __future__ import annotations

from pathlib import Path

import yaml

from visionfleet_e2e.cluster import BINARIES, STAGES_FILE, LocalCluster

REPO = Path(__file__).resolve().parents[2]


def rendered(tmp_path):
    cluster = LocalCluster("unit", state_root=tmp_path, bin_dir=Path("/opt/vf/bin"))
    return list(yaml.safe_load_all(cluster._config_text()))


def test_config_points_every_component_at_local_binaries(tmp_path):
    conf = rendered(tmp_path)[0]
    assert conf["kind"] == "KwokctlConfiguration"
    opts = conf["options"]
    assert opts["runtime"] == "binary" and opts["bindAddress"] == "127.0.0.1"
    for key, value in opts.items():
        if key.endswith("Binary"):
            assert value.startswith("/opt/vf/bin/"), key
    binaries = {Path(v).name for k, v in opts.items() if k.endswith("Binary")}
    assert binaries == set(BINARIES) - {"kwokctl", "helm", "syft"}
    patches = {p["name"]: p["extraArgs"] for p in conf["componentsPatches"]}
    assert {"key": "advertise-address", "value": "127.0.0.1"} in patches["kube-apiserver"]


def test_all_needed_stages_are_given():
    stages = [d for d in yaml.safe_load_all(STAGES_FILE.read_text()) if d]
    names = [s["metadata"]["name"] for s in stages]
    assert len(names) == len(set(names))
    assert set(names) == {"node-initialize", "node-heartbeat-with-lease", "pod-ready", "pod-delete",
                          "pod-not-ready", "pod-complete", "pod-fail", "pod-fail-by-toleration",
                          "compile-complete", "pod-image-pull-error",
                          # readiness that takes time (docs/local-fleet.md: sim.visionfleet.io/ready-after)
                          "pod-starting", "pod-ready-after-delay", "pod-turn-unready"}
    kinds = {s["spec"]["resourceRef"]["kind"] for s in stages}
    assert kinds == {"Node", "Pod"}


def test_simulated_outcomes_are_mutually_exclusive():
    """A pod must match at most one of complete/fail (kwok picks at random among matches)."""
    stages = {d["metadata"]["name"]: d for d in yaml.safe_load_all(STAGES_FILE.read_text()) if d}

    def outcome_rule(stage):
        return next(e for e in stages[stage]["spec"]["selector"]["matchExpressions"]
                    if "sim.visionfleet.io/outcome" in e["key"])

    complete, fail = outcome_rule("pod-complete"), outcome_rule("pod-fail")
    assert complete["operator"] == "NotIn" and fail["operator"] == "In"
    assert set(fail["values"]) <= set(complete["values"])
    ready, not_ready = outcome_rule("pod-ready"), outcome_rule("pod-not-ready")
    assert ready["operator"] == "NotIn" and not_ready["operator"] == "In"
    assert set(not_ready["values"]) <= set(ready["values"])
