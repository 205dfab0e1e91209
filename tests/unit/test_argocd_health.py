"""The Argo CD health check ``charts/visionfleet/argocd/health.lua``, run in Lua 5.1 (Argo CD's
gopher-lua dialect) on statuses the planner itself wrote, tick by tick in the simulated world.

``run_health(obj)`` runs the script the way Argo CD does (a fresh state, ``obj`` a global, only the
base, table, package and a safe os library, no string metatable) and returns ``{"status",
"message"}``; an e2e test can import it to judge live objects.

``argocd-cm-patch.yaml`` embeds ``health.lua`` and the resource actions (``actions/``, tested in
test_argocd_actions.py). Regenerate it after editing any of them:
``.venv/bin/python -m tests.unit.test_argocd_health``.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Sequence

import pytest
import yaml
from lupa import lua51

from visionfleet.api import crd
from visionfleet.api.status import Phase, VisionDeploymentStatus
from visionfleet.planner.analysis import Measurement
from visionfleet.planner.model import ANNOTATION_ABORT, ANNOTATION_PAUSED
from visionfleet.planner.revision import revision_of

from .planner_sim import GOOD, NO_DATA, SLOW, World, spec

ROOT = Path(__file__).resolve().parents[2]
ARGOCD_DIR = ROOT / "charts" / "visionfleet" / "argocd"
HEALTH_LUA = ARGOCD_DIR / "health.lua"
CM_PATCH = ARGOCD_DIR / "argocd-cm-patch.yaml"
CM_KEY = f"resource.customizations.health.{crd.GROUP}_{crd.KIND}"
ACTIONS_DIR = ARGOCD_DIR / "actions"
CM_ACTIONS_KEY = f"resource.customizations.actions.{crd.GROUP}_{crd.KIND}"
ACTION_NAMES = ("promote", "abort", "retry", "pause", "resume")  # the order of argocd-cm's definitions

# What Argo CD accepts from a health script (anything else becomes Unknown).
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
INVALID_HEALTH = "Lua returned an invalid health status"

# The mapping health.lua documents. A phase added to the API fails test_every_phase_is_mapped until
# both this table and the script handle it.
PHASE_TO_ARGO = {
    Phase.PENDING: "Progressing",
    Phase.COMPILING: "Progressing",
    Phase.VERIFYING: "Progressing",
    Phase.ROLLING_OUT: "Progressing",
    Phase.PAUSED: "Suspended",
    Phase.HEALTHY: "Healthy",
    Phase.ROLLING_BACK: "Progressing",
    Phase.ROLLED_BACK: "Degraded",
    Phase.FAILED: "Degraded",
}

# Argo CD opens package, base and table, and its own "safe" os with only time and date
# (util/lua/lua.go runLua, oslib_safe.go). OpenSafeOs registers those two under the name of the table
# library, so there is no global os: scripts reach it as require("os") (preloaded), as Argo CD's own
# Rollout restart action does. No string library means no string metatable either. ``NOW`` (set by
# argo_lua) pins os.date and os.time to a fixed time for tests whose output holds the date.
_ARGO_SANDBOX = """
local time, date, pairs = os.time, os.date, pairs
local safe_os = {}
function safe_os.time(t)
  if t == nil and NOW ~= nil then
    return NOW
  end
  return time(t)
end
function safe_os.date(fmt, t)
  t = t or NOW
  if t == nil then
    return date(fmt)
  end
  return date(fmt, t)
end
debug.setmetatable("", nil)
string, math, io, debug, coroutine, os = nil, nil, nil, nil, nil, nil
for name in pairs(package.loaded) do
  if name ~= "_G" and name ~= "package" and name ~= "table" then
    package.loaded[name] = nil
  end
end
package.loaded.os = safe_os
package.path, package.cpath = "", ""
"""


def argo_lua(now: int | None = None) -> Any:
    """A fresh Lua 5.1 state restricted as Argo CD's (``_ARGO_SANDBOX``); ``now``: a fixed time for
    os.date/os.time, in seconds since the epoch (None: the real clock)."""
    lua = lua51.LuaRuntime(register_eval=False, register_builtins=False, unpack_returned_tuples=False)
    if now is not None:
        lua.globals().NOW = now
    lua.execute(_ARGO_SANDBOX)
    return lua


def _to_lua(lua: Any, value: Any) -> Any:
    """Python (JSON) values as Argo CD hands them to Lua: maps and lists become tables (lists
    1-based), null keys are absent."""
    if isinstance(value, dict):
        table = lua.table()
        for k, v in value.items():
            if v is not None:
                table[k] = _to_lua(lua, v)
        return table
    if isinstance(value, (list, tuple)):
        table = lua.table()
        for i, v in enumerate(value, start=1):
            table[i] = _to_lua(lua, v)
        return table
    return value


def run_health(obj: dict[str, Any], script: str | None = None) -> dict[str, str]:
    """Run the health check on ``obj`` (a VisionDeployment as the API server returns it) and return
    ``{"status": ..., "message": ...}``, as Argo CD would show it. A Lua error raises
    (``lupa.LuaError``); a result that is not a table raises TypeError; an invalid status becomes
    Unknown, as in Argo CD."""
    script = HEALTH_LUA.read_text() if script is None else script
    lua = argo_lua()
    chunk = lua.compile(script)  # a syntax error raises here
    lua.globals().obj = _to_lua(lua, json.loads(json.dumps(obj)))
    hs = chunk()
    if lua51.lua_type(hs) != "table":
        raise TypeError(f"expect table output from Lua script, not {lua51.lua_type(hs) or type(hs).__name__}")
    out = {"status": hs["status"], "message": hs["message"] if hs["message"] is not None else ""}
    if out["status"] not in ARGO_STATUSES:
        return {"status": "Unknown", "message": INVALID_HEALTH}
    return out


def vd_object(w: World, status: VisionDeploymentStatus | None = None) -> dict[str, Any]:
    """The VisionDeployment as Argo CD reads it: the spec with its defaults (as the API server
    stores it), the world's generation and annotations, and the status exactly as ``write_status``
    sends it (``to_wire()``: camelCase, no nulls, JSON values)."""
    st = w.status if status is None else status
    return {
        "apiVersion": f"{crd.GROUP}/{crd.VERSION}",
        "kind": crd.KIND,
        "metadata": {"name": "doorbell", "namespace": "vision", "generation": w.generation,
                     "uid": "7f7c1b4e-0000-4000-8000-000000000001", "annotations": dict(w.annotations),
                     "finalizers": [f"{crd.GROUP}/finalizer"]},
        "spec": w.spec.to_wire(),
        "status": st.to_wire(),
    }


def health(w: World) -> dict[str, str]:
    return run_health(vd_object(w))


def healthy_world(**kwargs) -> World:
    w = World(spec(), **kwargs)
    w.run_until("Healthy")
    return w


# -- the script itself ------------------------------------------------------------------------------


def test_script_compiles_in_lua51_and_returns_a_table_without_any_status():
    lua = lua51.LuaRuntime()
    assert lua.eval("_VERSION") == "Lua 5.1"
    lua.compile(HEALTH_LUA.read_text())  # raises LuaSyntaxError on anything 5.1 does not parse
    bare = {"apiVersion": f"{crd.GROUP}/{crd.VERSION}", "kind": crd.KIND,
            "metadata": {"name": "doorbell", "namespace": "vision", "generation": 1}, "spec": {}}
    assert run_health(bare) == {"status": "Progressing",
                                "message": "waiting for the operator to observe generation 1"}
    assert run_health({"metadata": {}})["status"] == "Progressing"
    assert run_health({})["status"] == "Progressing"


def test_sandbox_is_as_strict_as_argo_cd():
    """run_health must fail a script that leans on a library Argo CD does not open."""
    for uses in ('string.format("%d", 1)', '("x"):upper()', "math.floor(1.5)", "os.date()",
                 'require("string").rep("x", 2)', 'io.write("x")'):
        with pytest.raises(Exception):
            run_health({}, f"local hs = {{status = 'Healthy', message = {uses}}} return hs")
    assert run_health({}, 'local os = require("os") return {status = "Healthy", message = os.date("!%Y")}')["message"]
    assert run_health({}, "return {status = 'Fine'}") == {"status": "Unknown", "message": INVALID_HEALTH}


@pytest.mark.parametrize("phase", list(Phase), ids=[p.value for p in Phase])
def test_every_phase_is_mapped(phase):
    assert phase in PHASE_TO_ARGO, f"phase {phase.value} is new: map it in health.lua and PHASE_TO_ARGO"
    obj = {"metadata": {"generation": 3}, "status": {"observedGeneration": 3, "phase": phase.value}}
    hs = run_health(obj)
    assert hs["status"] == PHASE_TO_ARGO[phase] and hs["status"] in ARGO_STATUSES - {"Unknown"}
    assert "unknown phase" not in hs["message"] and hs["message"]
    assert phase.value in HEALTH_LUA.read_text(), "document the phase in health.lua's header"


def test_an_unknown_phase_is_progressing_and_named():
    obj = {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "phase": "Teleporting"}}
    assert run_health(obj) == {"status": "Progressing", "message": "unknown phase Teleporting"}


def test_cm_patch_embeds_health_lua_byte_for_byte():
    patch = yaml.safe_load(CM_PATCH.read_text())
    assert patch["kind"] == "ConfigMap" and patch["metadata"]["name"] == "argocd-cm"
    embedded = patch["data"][CM_KEY]
    assert embedded.encode() == HEALTH_LUA.read_bytes(), \
        "argocd-cm-patch.yaml is stale: .venv/bin/python -m tests.unit.test_argocd_health"
    assert CM_PATCH.read_text() == render_cm_patch_from_files(), \
        "argocd-cm-patch.yaml is stale: .venv/bin/python -m tests.unit.test_argocd_health"
    assert CM_KEY in (ARGOCD_DIR / "README.md").read_text()


# -- real statuses, scenario by scenario -------------------------------------------------------------


def test_every_status_the_planner_writes_maps_to_its_phase():
    """Every tick of several rollouts (first, good canary, slow canary, inconclusive, paused, abort,
    compile failure): the Lua's verdict is always the documented one for the status's phase."""
    seen: set[str] = set()

    def check(w: World) -> None:
        hs = health(w)
        phase = Phase(w.status.phase)
        seen.add(phase.value)
        assert hs["status"] == PHASE_TO_ARGO[phase], (phase, hs)
        assert hs["message"] and "?" not in hs["message"].split(), (phase, hs)

    def run(w: World, ticks: int, seconds: float = 10) -> None:
        for _ in range(ticks):
            w.tick(seconds)
            check(w)

    w = World(spec())
    run(w, 10)
    w.set_spec(spec(model__version="2"))
    run(w, 60)                                    # good canary through every step
    w.set_spec(spec(model__version="3"))
    w.measurement = SLOW
    run(w, 20)                                    # rolled back
    w.set_spec(spec(model__version="4"))
    w.measurement = NO_DATA
    run(w, 20, seconds=31)                        # inconclusive, paused, rolled back at the limit
    w.set_spec(spec(model__version="5"))
    w.measurement = GOOD
    run(w, 8)
    w.annotations[ANNOTATION_PAUSED] = "true"
    run(w, 5)
    del w.annotations[ANNOTATION_PAUSED]
    w.annotations[ANNOTATION_ABORT] = "stop"
    run(w, 5)
    w.set_spec(spec(model__version="6"))
    w.fail_compile = {"l4", "xeon"}
    run(w, 5)
    first = World(spec())
    first.fail_compile = {"l4", "xeon"}
    run(first, 5)
    assert seen >= {"Compiling", "Verifying", "RollingOut", "Paused", "Healthy", "RollingBack", "RolledBack",
                    "Failed"}, seen


def test_first_rollout_ends_healthy_on_its_revision():
    w = World(spec())
    w.tick()
    assert w.status.phase == "Compiling"
    hs = health(w)
    rev = revision_of(w.spec)
    assert hs["status"] == "Progressing"
    assert hs["message"].startswith(f"compiling revision {rev}") and "l4 " in hs["message"] and "xeon " in hs["message"]
    w.run_until("Healthy")
    assert health(w) == {"status": "Healthy", "message": f"serving stable revision {rev}"}


def test_canary_mid_rollout_is_progressing_with_step_weight_and_analysis():
    w = healthy_world()
    w.set_spec(spec(model__version="2"))
    v2 = revision_of(w.spec)
    while not (w.status.step == 1 and w.status.phase == "RollingOut" and w.status.analysis is not None):
        w.tick(10)
    hs = health(w)
    assert hs["status"] == "Progressing"
    assert f"rolling out revision {v2}" in hs["message"]
    assert "step 1" in hs["message"] and "canary weight 50%" in hs["message"]
    assert "last analysis Passed: p99 12.0 ms <= 20 ms" in hs["message"]


def test_canary_pods_starting_is_progressing():
    w = healthy_world()
    w.set_spec(spec(model__version="2"))
    w.never_ready = True
    w.run_until("Verifying")
    hs = health(w)
    assert hs["status"] == "Progressing"
    assert "waiting for the canary pods to become Ready" in hs["message"] and "canary weight 20%" in hs["message"]


def test_failed_analysis_rolls_back_and_is_degraded_with_the_reason():
    w = healthy_world()
    v1 = w.status.stable_revision
    w.set_spec(spec(model__version="2"))
    v2 = revision_of(w.spec)
    w.measurement = SLOW
    phases = w.run_until("RolledBack")
    hs = health(w)
    assert hs["status"] == "Degraded"
    assert f"revision {v2} rolled back" in hs["message"] and "p99 31.2 ms > 20 ms" in hs["message"]
    assert f"stable revision {v1} keeps serving" in hs["message"]
    assert "Healthy" not in phases
    # Back to Healthy once the spec returns to the stable revision.
    w.set_spec(spec(model__version="1"))
    w.tick()
    assert health(w)["status"] == "Healthy"


def test_abort_annotation_is_progressing_while_rolling_back_then_degraded():
    w = healthy_world()
    w.set_spec(spec(model__version="2"))
    w.run_until("RollingOut")
    w.annotations[ANNOTATION_ABORT] = "2026-11-28T12:00:00Z"
    w.tick()
    assert w.status.phase == "RollingBack"
    hs = health(w)
    assert hs["status"] == "Progressing" and "rolling back revision" in hs["message"] and "Aborted" in hs["message"]
    w.tick()
    hs = health(w)
    assert hs["status"] == "Degraded" and "aborted: aborted by the visionfleet.io/abort annotation" in hs["message"]


def test_paused_by_annotation_is_suspended():
    w = healthy_world()
    w.set_spec(spec(model__version="2"))
    v2 = revision_of(w.spec)
    w.run_until("RollingOut")
    w.annotations[ANNOTATION_PAUSED] = "true"
    w.tick(30)
    assert w.status.phase == "Paused"
    hs = health(w)
    assert hs["status"] == "Suspended"
    assert "paused by the visionfleet.io/paused annotation" in hs["message"]
    assert f"revision {v2} held at step 0, canary weight 20%" in hs["message"]
    assert "last analysis Passed" in hs["message"], "status.analysis.reason is in the message"
    del w.annotations[ANNOTATION_PAUSED]
    w.tick(30)
    assert health(w)["status"] == "Progressing"


def test_inconclusive_analysis_is_suspended_with_its_reason_and_count():
    w = healthy_world()
    w.set_spec(spec(model__version="2"))
    w.measurement = NO_DATA
    w.run_until("Paused", seconds=30)
    cond = next(c for c in w.status.conditions if c.type == "Paused")
    assert cond.reason == "AnalysisInconclusive"
    hs = health(w)
    assert hs["status"] == "Suspended"
    assert "analysis inconclusive (3 in a row, 6 provider errors in a row)" in hs["message"]
    assert "Prometheus unreachable: connection refused" in hs["message"]
    assert "a Passed analysis resumes the rollout" in hs["message"]


def test_inconclusive_analysis_rolls_back_at_the_limit_when_the_policy_says_so():
    w = healthy_world()
    w.set_spec(spec(model__version="2", analysis__onInconclusive="Rollback"))
    w.measurement = NO_DATA
    w.run_until("RolledBack", seconds=30)
    hs = health(w)
    assert hs["status"] == "Degraded" and "inconclusive 3 times in a row" in hs["message"]


def test_first_revision_that_compiles_nowhere_is_degraded():
    w = World(spec())
    w.fail_compile = {"l4", "xeon"}
    for _ in range(5):
        w.tick()
    assert w.status.phase == "Failed"
    hs = health(w)
    assert hs["status"] == "Degraded"
    assert f"revision {revision_of(w.spec)} failed to compile on every class" in hs["message"]
    assert "accuracy gate: top1Agreement 0.91 < 0.99" in hs["message"]


def test_new_revision_that_compiles_nowhere_is_degraded_while_stable_serves():
    """A Git change that never deployed is not Healthy: the phase is Failed (planner/phases.py) while
    the spec asks for that revision, and the message says the stable one keeps serving."""
    w = healthy_world()
    v1 = w.status.stable_revision
    w.set_spec(spec(model__version="2"))
    w.fail_compile = {"l4", "xeon"}
    for _ in range(5):
        w.tick()
    assert w.status.phase == Phase.FAILED.value
    hs = health(w)
    assert hs["status"] == "Degraded"
    assert f"revision {revision_of(w.spec)} failed to compile on every class" in hs["message"]
    assert f"stable revision {v1} keeps serving" in hs["message"]
    # reverting the spec to the stable revision is Healthy again
    w.set_spec(spec())
    for _ in range(3):
        w.tick()
    assert w.status.phase == Phase.HEALTHY.value and health(w)["status"] == "Healthy"


def test_compile_failure_on_one_class_is_a_warning_on_healthy():
    w = healthy_world()
    w.set_spec(spec(model__version="2"))
    w.fail_compile = {"l4"}
    for _ in range(200):
        w.tick(10)
        if w.status.stable_revision == revision_of(w.spec):
            break
    hs = health(w)
    assert hs["status"] == "Healthy" and "warning: compile failed on l4" in hs["message"]


class _NoMetrics:
    """Stands in for the operator's process-wide metrics, so this test counts nothing there."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def test_invalid_spec_is_degraded_with_the_operators_message(monkeypatch):
    """The status the operator's own InvalidSpec path writes (handlers.run_pass, undecorated, with
    the API, the write counter and the metrics stubbed)."""
    from visionfleet import handlers
    from visionfleet.act.apply import WriteCounter

    w = healthy_world()
    written: list[VisionDeploymentStatus] = []
    monkeypatch.setattr(handlers, "api_client", lambda: None)
    monkeypatch.setattr(handlers, "write_status", lambda api, name, ns, old, new, *rest: written.append(new) or True)
    monkeypatch.setattr(handlers, "WRITES", WriteCounter(), raising=False)
    monkeypatch.setattr(handlers, "METRICS", _NoMetrics(), raising=False)
    obj = vd_object(w)
    obj["metadata"]["generation"] = w.generation + 1
    obj["spec"]["rollout"]["steps"] = [{"setWeight": 150}]
    assert inspect.unwrap(handlers.run_pass)(obj) == 60.0
    obj["status"] = written[-1].to_wire()
    hs = run_health(obj)
    assert hs["status"] == "Degraded"
    assert hs["message"].startswith("spec.rollout.steps.0.setWeight") and "nothing is rolled out" in hs["message"]


def test_a_generation_not_yet_observed_is_progressing():
    w = healthy_world()
    w.set_spec(spec(model__version="2"))  # generation 2; the operator has not run yet
    hs = health(w)
    assert hs == {"status": "Progressing", "message": "waiting for the operator to observe generation 2"}
    w.tick()
    assert "observe generation" not in health(w)["message"]


def test_stable_drift_is_healthy_with_a_warning():
    w = World(spec(analysis__drift={"pValue": 0.01, "window": 500},
                   compile__calibration={"uri": "pvc://models/calib.npz"}))
    w.measurement = Measurement(p99_ms=12.0, error_rate=0.0, requests=500, drift_p_value=0.4, drift_window_fill=1.0)
    w.run_until("Healthy")
    assert "warning" not in health(w)["message"]
    w.stable_drift = Measurement(drift_p_value=0.002, drift_window_fill=1.0)
    w.tick()
    hs = health(w)
    assert hs["status"] == "Healthy"
    assert "input drift on the stable revision (InputDrift)" in hs["message"] and "p=0.002 < 0.01" in hs["message"]
    w.stable_drift = Measurement(drift_p_value=0.5, drift_window_fill=1.0)
    w.tick()
    assert "drift" not in health(w)["message"]


# -- argocd-cm-patch.yaml --------------------------------------------------------------------------


def _block(script: str, indent: int, what: str) -> str:
    """``script`` as the body of a YAML literal block indented by ``indent`` spaces (clip: the file
    ends in one newline, which the block keeps)."""
    assert script.endswith("\n") and not script.endswith("\n\n"), f"{what} must end in exactly one newline"
    assert "\t" not in script and all(line == line.rstrip() for line in script.splitlines()), \
        f"no tabs or trailing spaces in {what} (they would not survive the YAML block)"
    assert not script[:1].isspace(), f"{what} must not start with white space (the block's indentation)"
    return "".join(" " * indent + line + "\n" if line else "\n" for line in script.splitlines())


def render_cm_patch(script: str, discovery: str, actions: Sequence[tuple[str, str]]) -> str:
    """argocd-cm-patch.yaml: health.lua as a literal block, and the resource actions (the
    ``discovery.lua`` / ``definitions`` document Argo CD reads from the actions key) as a literal
    block holding literal blocks."""
    body = _block(script, 4, "health.lua")
    definitions = "".join(f"      - name: {name}\n        action.lua: |\n"
                          + _block(lua, 10, f"actions/{name}/action.lua") for name, lua in actions)
    return (
        "# Generated from health.lua and actions/ by `.venv/bin/python -m tests.unit.test_argocd_health`; do not\n"
        "# edit by hand (tests/unit/test_argocd_health.py and test_argocd_actions.py fail when they differ).\n"
        "#\n"
        "# kubectl -n argocd patch configmap argocd-cm --type merge --patch-file argocd-cm-patch.yaml\n"
        "# or list it under `patches:` of the kustomization that installs Argo CD.\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: argocd-cm\n"
        "  namespace: argocd\n"
        "  labels:\n"
        "    app.kubernetes.io/name: argocd-cm\n"
        "    app.kubernetes.io/part-of: argocd\n"
        "data:\n"
        f"  {CM_KEY}: |\n"
        f"{body}"
        f"  {CM_ACTIONS_KEY}: |\n"
        "    discovery.lua: |\n"
        f"{_block(discovery, 6, 'actions/discovery.lua')}"
        "    definitions:\n"
        f"{definitions}"
    )


def render_cm_patch_from_files() -> str:
    return render_cm_patch(HEALTH_LUA.read_text(), (ACTIONS_DIR / "discovery.lua").read_text(),
                           [(name, (ACTIONS_DIR / name / "action.lua").read_text()) for name in ACTION_NAMES])


if __name__ == "__main__":
    CM_PATCH.write_text(render_cm_patch_from_files())
    print(f"wrote {CM_PATCH.relative_to(ROOT)}")
