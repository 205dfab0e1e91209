"""The Argo CD resource actions ``charts/visionfleet/argocd/actions/`` (discovery.lua and promote,
abort, retry, pause, resume), run in Lua 5.1 restricted as Argo CD runs them, on statuses the planner
itself wrote in the simulated world, and on the fixtures of ``actions/action_test.yaml`` (the layout
of Argo CD's own ``resource_customizations/*/actions/action_test.yaml``).

A click is played the way Argo CD's API server plays it (server/application RunResourceAction):
action.lua runs on the live object, the table it returns is encoded as gopher-json does, empty maps
are restored from the live object (``cleanReturnedObj``), a JSON merge patch is computed between the
live object and the result, and the API server applies that patch. The tests check that the patch
names exactly one annotation, and let the planner act on the result.
"""

from __future__ import annotations

import copy
import re
from datetime import datetime, timezone
from typing import Any

import pytest
import yaml
from lupa import lua51

from visionfleet.api.status import Phase, VisionDeploymentStatus
from visionfleet.planner.model import ANNOTATION_ABORT, ANNOTATION_PAUSED, ANNOTATION_PROMOTE, ANNOTATION_RETRY

from .planner_sim import GOOD, NO_DATA, SLOW, World, spec
from .test_argocd_health import (
    ACTION_NAMES,
    ACTIONS_DIR,
    ARGOCD_DIR,
    CM_ACTIONS_KEY,
    CM_PATCH,
    _to_lua,
    argo_lua,
    render_cm_patch_from_files,
    vd_object,
)

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
NOW_EPOCH = int(NOW.timestamp())
DISCOVERY_LUA = ACTIONS_DIR / "discovery.lua"
ONE_SHOT = {"promote": (ANNOTATION_PROMOTE, "handledPromote"), "abort": (ANNOTATION_ABORT, "handledAbort"),
            "retry": (ANNOTATION_RETRY, "handledRetry")}
VALUE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ argocd rv\S+( #\d+)?$")

# What discovery.lua enables, by phase, with no annotation set (the docs' table).
CANARY_ACTIONS = frozenset({"promote", "abort", "pause"})
PHASE_TO_ENABLED = {
    Phase.PENDING: frozenset(),
    Phase.COMPILING: CANARY_ACTIONS,
    Phase.VERIFYING: CANARY_ACTIONS,
    Phase.ROLLING_OUT: CANARY_ACTIONS,
    Phase.PAUSED: CANARY_ACTIONS,              # an inconclusive analysis; by annotation: promote, abort, resume
    Phase.HEALTHY: frozenset(),
    Phase.ROLLING_BACK: frozenset(),
    Phase.ROLLED_BACK: frozenset({"retry"}),
    Phase.FAILED: frozenset({"retry"}),
}


# -- Argo CD's side of a click, in Python --------------------------------------------------------------


def _from_lua(value: Any, empty: Any) -> Any:
    """A Lua value as gopher-json encodes it (layeh.com/gopher-json): a table with the keys 1..n is
    an array, any other a map with string keys; an empty table is ``empty`` ([] in the version Argo CD
    pinned for years, null in the newer one)."""
    if lua51.lua_type(value) != "table":
        return value
    items = list(value.items())
    if not items:
        return copy.copy(empty)
    keys = [k for k, _ in items]
    if all(isinstance(k, (int, float)) and not isinstance(k, bool) for k in keys) and \
            sorted(keys) == list(range(1, len(keys) + 1)):
        return [_from_lua(v, empty) for _, v in sorted(items, key=lambda kv: kv[0])]
    return {(k if isinstance(k, str) else str(int(k)) if float(k).is_integer() else str(k)): _from_lua(v, empty)
            for k, v in items}


def _clean_returned(new: dict, old: dict) -> dict:
    """Argo CD's cleanReturnedObj (util/lua/lua.go): an empty array where the live object has a map
    becomes the live map again; recurses into maps and arrays."""
    for key, old_value in old.items():
        if key not in new:
            continue
        value = new[key]
        if isinstance(value, dict) and isinstance(old_value, dict):
            new[key] = _clean_returned(value, old_value)
        elif isinstance(value, list):
            if isinstance(old_value, dict) and not value:
                new[key] = old_value
            elif isinstance(old_value, list):
                new[key] = [_clean_returned(v, o) if isinstance(v, dict) and isinstance(o, dict) else v
                            for v, o in zip(value, old_value)] + value[len(old_value):]
    return new


def create_merge_patch(old: dict, new: dict) -> dict:
    """RFC 7386 merge patch from ``old`` to ``new`` (evanphx/json-patch CreateMergePatch)."""
    patch: dict = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif isinstance(value, dict) and isinstance(old[key], dict):
            sub = create_merge_patch(old[key], value)
            if sub:
                patch[key] = sub
        elif value != old[key]:
            patch[key] = value
    return patch


def apply_merge_patch(target: dict, patch: dict) -> dict:
    """RFC 7386, as the API server applies a merge patch."""
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            out[key] = apply_merge_patch(out[key] if isinstance(out.get(key), dict) else {}, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def run_discovery(obj: dict, script: str | None = None) -> dict[str, dict]:
    """discovery.lua on ``obj`` → {action: {"disabled", "iconClass", "displayName"}}, as Argo CD
    reads it (ExecuteResourceActionDiscovery: an action is enabled unless ``disabled`` is true)."""
    lua = argo_lua()
    chunk = lua.compile(DISCOVERY_LUA.read_text() if script is None else script)
    lua.globals().obj = _to_lua(lua, copy.deepcopy(obj))
    out = chunk()
    if lua51.lua_type(out) != "table":
        raise TypeError(f"expect table output from Lua script, not {lua51.lua_type(out)}")
    actions = {}
    for name, value in _from_lua(out, []).items():
        value = value if isinstance(value, dict) else {}
        actions[name] = {"disabled": value.get("disabled") is True,
                         **{k: value[k] for k in ("iconClass", "displayName") if k in value}}
    return actions


def enabled(obj: dict) -> frozenset[str]:
    return frozenset(name for name, a in run_discovery(obj).items() if not a["disabled"])


def run_action(name: str, obj: dict, now: int | None = NOW_EPOCH, empty: Any = ()) -> dict:
    """actions/<name>/action.lua on ``obj`` → the object Argo CD patches towards (encoded, cleaned).
    A Lua error (a refused action) raises ``lupa.LuaError``. ``empty``: how an empty table encodes."""
    lua = argo_lua(now)
    chunk = lua.compile((ACTIONS_DIR / name / "action.lua").read_text())
    lua.globals().obj = _to_lua(lua, copy.deepcopy(obj))
    out = chunk()
    if lua51.lua_type(out) != "table":
        raise TypeError(f"expect table output from Lua script, not {lua51.lua_type(out)}")
    new = _from_lua(out, [] if empty == () else empty)
    return _clean_returned(new, copy.deepcopy(obj))


def click(name: str, live: dict, now: int | None = NOW_EPOCH, empty: Any = ()) -> tuple[dict, dict]:
    """Run the action as Argo CD does: (the live object after the API server applied the merge patch,
    the patch). A patch that changes something bumps resourceVersion, as the API server does."""
    patch = create_merge_patch(live, run_action(name, live, now, empty))
    after = apply_merge_patch(live, patch) if patch else copy.deepcopy(live)
    if patch:
        after["metadata"]["resourceVersion"] = str(int(live["metadata"].get("resourceVersion", "0")) + 1)
    return after, patch


TRACKING = {"argocd.argoproj.io/tracking-id": "vision-models:visionfleet.io/VisionDeployment:vision/doorbell"}


def live(w: World, rv: int = 4711, status: VisionDeploymentStatus | None = None) -> dict:
    """The VisionDeployment as Argo CD reads it live: a resourceVersion, and Argo CD's tracking
    annotation (annotation tracking, the default since 3.0) next to the world's annotations."""
    obj = vd_object(w, status)
    obj["metadata"]["resourceVersion"] = str(rv)
    obj["metadata"]["annotations"] = {**TRACKING, **obj["metadata"]["annotations"]}
    return obj


def adopt(w: World, obj: dict) -> None:
    """The annotations of the patched object are what the operator sees on its next pass."""
    w.annotations = dict((obj["metadata"].get("annotations") or {}))


def healthy_world() -> World:
    w = World(spec())
    w.run_until("Healthy")
    return w


def canary_world(until: str = "RollingOut", **kwargs) -> World:
    w = healthy_world()
    w.set_spec(spec(model__version="2"))
    for k, v in kwargs.items():
        setattr(w, k, v)
    w.run_until(until)
    return w


def rolled_back_world() -> World:
    w = canary_world(until="RolledBack", measurement=SLOW)
    return w


# -- the scripts themselves ------------------------------------------------------------------------------


def test_every_action_has_a_script_a_discovery_entry_and_a_definition():
    assert sorted(p.parent.name for p in ACTIONS_DIR.glob("*/action.lua")) == sorted(ACTION_NAMES)
    lua = lua51.LuaRuntime()
    for path in [DISCOVERY_LUA, *(ACTIONS_DIR / n / "action.lua" for n in ACTION_NAMES)]:
        lua.compile(path.read_text())  # raises LuaSyntaxError on anything 5.1 does not parse
    found = run_discovery({"metadata": {"name": "doorbell", "generation": 1}})
    assert set(found) == set(ACTION_NAMES)
    for name, action in found.items():
        assert action["disabled"] is True, name  # nothing to act on before the operator wrote a status
        assert action["iconClass"].startswith("fa fa-fw fa-") and action["displayName"], name


def test_cm_patch_embeds_discovery_and_every_action_byte_for_byte():
    patch = yaml.safe_load(CM_PATCH.read_text())
    actions = yaml.safe_load(patch["data"][CM_ACTIONS_KEY])
    assert set(actions) == {"discovery.lua", "definitions"}
    assert actions["discovery.lua"].encode() == DISCOVERY_LUA.read_bytes(), \
        "argocd-cm-patch.yaml is stale: .venv/bin/python -m tests.unit.test_argocd_health"
    assert [d["name"] for d in actions["definitions"]] == list(ACTION_NAMES)
    for d in actions["definitions"]:
        assert set(d) == {"name", "action.lua"}
        assert d["action.lua"].encode() == (ACTIONS_DIR / d["name"] / "action.lua").read_bytes(), \
            f"argocd-cm-patch.yaml is stale for {d['name']}: .venv/bin/python -m tests.unit.test_argocd_health"
    assert CM_PATCH.read_text() == render_cm_patch_from_files()
    readme = (ARGOCD_DIR / "README.md").read_text()
    assert CM_ACTIONS_KEY in readme and all(f"`{n}`" in readme for n in ACTION_NAMES)


def test_sandbox_is_as_strict_as_argo_cd_for_actions():
    """No global os (only require("os"), with time and date), no string or math library."""
    bare = {"metadata": {"name": "x"}}
    for uses in ("os.date()", 'string.rep("x", 2)', '("x"):upper()', "math.floor(1.5)", 'require("io")'):
        lua = argo_lua(NOW_EPOCH)
        lua.globals().obj = _to_lua(lua, bare)
        with pytest.raises(Exception):
            lua.execute(f"obj.metadata.name = {uses} return obj")
    lua = argo_lua(NOW_EPOCH)
    assert lua.execute('local os = require("os") return os.date("!%Y-%m-%dT%H:%M:%SZ")') == "2026-11-28T12:00:00Z"
    assert lua.execute('local os = require("os") return os.time()') == NOW_EPOCH
    for name in ACTION_NAMES:
        text = (ACTIONS_DIR / name / "action.lua").read_text()
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
        assert "string." not in code and "math." not in code and ":find(" not in code, name
        if "os.date" in code:
            assert 'local os = require("os")' in code, name


# -- action_test.yaml, Argo CD's layout ----------------------------------------------------------------


def _action_tests() -> dict:
    return yaml.safe_load((ACTIONS_DIR / "action_test.yaml").read_text())


def _testdata(path: str) -> dict:
    return yaml.safe_load((ACTIONS_DIR / path).read_text())


@pytest.mark.parametrize("case", _action_tests()["discoveryTests"], ids=lambda c: c["inputPath"])
def test_action_test_yaml_discovery(case):
    found = run_discovery(_testdata(case["inputPath"]))
    want = {r["name"]: r for r in case["result"]}
    assert set(found) == set(want)
    for name, action in found.items():
        assert action == {k: v for k, v in want[name].items() if k != "name"}, name


@pytest.mark.parametrize("case", _action_tests()["actionTests"],
                         ids=lambda c: f"{c['action']}:{c['inputPath']}")
def test_action_test_yaml_actions(case):
    """The clock is pinned to 2026-11-28T12:00:00Z (action_test.yaml says so)."""
    before = _testdata(case["inputPath"])
    after = run_action(case["action"], before)
    assert after == _testdata(case["expectedOutputPath"])
    patch = create_merge_patch(before, after)
    assert patch == {} or (set(patch) == {"metadata"} and set(patch["metadata"]) == {"annotations"}), patch


# -- on statuses the planner wrote -------------------------------------------------------------------


def test_discovery_in_every_phase_the_planner_reaches():
    """Every tick of several rollouts (first, good canary, slow canary, inconclusive, paused, abort,
    compile failures): the enabled set is the documented one for the phase and the annotations."""
    seen: dict[str, set[frozenset[str]]] = {}

    def check(w: World) -> None:
        obj = live(w)
        got = enabled(obj)
        phase = Phase(w.status.phase)
        want = set(PHASE_TO_ENABLED[phase])
        if w.annotations.get(ANNOTATION_PAUSED) == "true":
            want = (want - {"pause"}) | {"resume"}
        assert got == want, (phase, got, want)
        seen.setdefault(phase.value, set()).add(got)

    def run(w: World, ticks: int, seconds: float = 10) -> None:
        for _ in range(ticks):
            w.tick(seconds)
            check(w)

    w = World(spec())
    run(w, 10)
    w.set_spec(spec(model__version="2"))
    run(w, 60)
    w.set_spec(spec(model__version="3"))
    w.measurement = SLOW
    run(w, 20)
    w.set_spec(spec(model__version="4"))
    w.measurement = NO_DATA
    run(w, 20, seconds=31)
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
    assert seen.keys() >= {"Compiling", "Verifying", "RollingOut", "Paused", "Healthy", "RollingBack", "RolledBack",
                           "Failed"}, seen
    assert frozenset({"promote", "abort", "resume"}) in seen["Paused"]   # by the annotation
    assert frozenset({"promote", "abort", "pause"}) in seen["Paused"]    # by an inconclusive analysis


def test_retry_is_disabled_while_the_operator_has_not_seen_the_spec():
    w = rolled_back_world()
    assert enabled(live(w)) == {"retry"}
    w.set_spec(spec(model__version="3"))  # a new revision: the operator rolls it out anyway
    assert enabled(live(w)) == frozenset()
    with pytest.raises(lua51.LuaError, match="has not observed generation 3 yet: nothing to retry"):
        run_action("retry", live(w))


@pytest.mark.parametrize("action", ["promote", "abort", "retry"])
def test_one_shot_actions_refuse_exactly_when_discovery_disables_them(action):
    """`argocd app actions run` runs an action whatever discovery says: the script refuses with a
    one-line message instead of leaving a value the operator would record and ignore."""
    worlds = {"healthy": healthy_world(), "compiling": canary_world("Compiling"),
              "rolling out": canary_world("RollingOut"), "rolled back": rolled_back_world()}
    for what, w in worlds.items():
        obj = live(w)
        if action in enabled(obj):
            after, patch = click(action, obj)
            assert patch == {"metadata": {"annotations": {ONE_SHOT[action][0]: after["metadata"]["annotations"][
                ONE_SHOT[action][0]]}}}, what
        else:
            with pytest.raises(lua51.LuaError, match=f"nothing to {action}") as e:
                run_action(action, obj)
            assert "\n" not in str(e.value) and "action.lua" not in str(e.value), what  # error(msg, 0): no position


@pytest.mark.parametrize("action", ["promote", "abort"])
def test_promote_and_abort_set_a_new_value_of_their_annotation_only(action):
    w = canary_world()
    obj = live(w)
    key = ONE_SHOT[action][0]
    after, patch = click(action, obj)
    value = after["metadata"]["annotations"][key]
    assert value == "2026-11-28T12:00:00Z argocd rv4711" and VALUE.match(value)
    assert patch == {"metadata": {"annotations": {key: value}}}
    assert after["spec"] == obj["spec"] and after["status"] == obj["status"]  # never spec, never status
    assert after["metadata"]["resourceVersion"] == "4712"


@pytest.mark.parametrize("action", ["promote", "abort", "retry"])
def test_two_clicks_send_two_values(action):
    """Each click reads the object the previous one changed (a new resourceVersion); two clicks
    that read the same version in the same second still differ (" #2"), also from a value the
    operator has already handled and that is no longer on the object."""
    w = rolled_back_world() if action == "retry" else canary_world()
    key, handled = ONE_SHOT[action]
    first, _ = click(action, live(w))
    second, patch = click(action, first)
    v1, v2 = first["metadata"]["annotations"][key], second["metadata"]["annotations"][key]
    assert (v1, v2) == ("2026-11-28T12:00:00Z argocd rv4711", "2026-11-28T12:00:00Z argocd rv4712")
    assert patch == {"metadata": {"annotations": {key: v2}}}
    same_version = copy.deepcopy(first)
    same_version["metadata"]["resourceVersion"] = "4711"
    assert run_action(action, same_version)["metadata"]["annotations"][key] == v1 + " #2"
    same_version["metadata"]["annotations"][key] = v1 + " #2"
    same_version["status"][handled] = v1
    assert run_action(action, same_version)["metadata"]["annotations"][key] == v1 + " #3"
    # the handled value alone (the annotation since removed) is not sent again either
    del same_version["metadata"]["annotations"][key]
    assert run_action(action, same_version)["metadata"]["annotations"][key] == v1 + " #2"
    # with the real clock the value still has the documented shape
    assert VALUE.match(run_action(action, live(w), now=None)["metadata"]["annotations"][key])


def test_pause_and_resume_are_levels():
    w = canary_world()
    obj = live(w)
    paused, patch = click("pause", obj)
    assert patch == {"metadata": {"annotations": {ANNOTATION_PAUSED: "true"}}}
    assert enabled(paused) == {"promote", "abort", "resume"}
    assert click("pause", paused)[1] == {}  # already paused: Argo CD sends nothing
    resumed, patch = click("resume", paused)
    assert patch == {"metadata": {"annotations": {ANNOTATION_PAUSED: None}}}
    assert resumed["metadata"].get("annotations", {}) == obj["metadata"].get("annotations", {})
    assert click("resume", resumed)[1] == {}  # not paused: nothing


@pytest.mark.parametrize("empty", [[], None], ids=["empty-table-as-array", "empty-table-as-null"])
def test_resume_when_paused_is_the_only_annotation(empty):
    """An emptied annotations table would encode as [] (Argo CD then puts the live map back, paused
    and all) or null: resume drops the map instead, so the patch removes it either way."""
    w = canary_world()
    obj = live(w)
    obj["metadata"]["annotations"] = {ANNOTATION_PAUSED: "true"}
    resumed, patch = click("resume", obj, empty=empty)
    assert patch == {"metadata": {"annotations": None}}
    assert "annotations" not in resumed["metadata"]
    other = live(w)
    other["metadata"]["annotations"][ANNOTATION_PAUSED] = "true"
    resumed, patch = click("resume", other, empty=empty)
    assert patch == {"metadata": {"annotations": {ANNOTATION_PAUSED: None}}}
    assert resumed["metadata"]["annotations"] == TRACKING


def test_actions_on_an_object_without_annotations():
    w = canary_world()
    obj = live(w)
    obj["metadata"].pop("annotations", None)
    for action, key in (("promote", ANNOTATION_PROMOTE), ("pause", ANNOTATION_PAUSED)):
        after, patch = click(action, obj)
        assert list(patch["metadata"]["annotations"]) == [key] and list(after["metadata"]["annotations"]) == [key]
    obj["metadata"]["annotations"] = {}  # an empty map: kept a map (Argo CD's cleanReturnedObj)
    assert click("resume", obj)[1] == {}


# -- clicks the planner acts on ----------------------------------------------------------------------


def test_promote_click_promotes_the_canary():
    w = canary_world()
    v2 = w.status.canary_revision
    obj, _ = click("promote", live(w))
    adopt(w, obj)
    value = w.annotations[ANNOTATION_PROMOTE]
    w.run_until("Healthy")
    assert w.status.handled_promote == value and w.status.stable_revision == v2
    assert enabled(live(w)) == frozenset()


def test_abort_click_rolls_back_then_retry_is_offered():
    w = canary_world()
    obj, _ = click("abort", live(w))
    adopt(w, obj)
    w.run_until("RolledBack")
    assert w.status.handled_abort == obj["metadata"]["annotations"][ANNOTATION_ABORT]
    assert w.status.history[-1].outcome == "Aborted"
    assert enabled(live(w)) == {"retry"}


def test_pause_click_holds_and_resume_click_releases():
    w = canary_world()
    obj, _ = click("pause", live(w))
    adopt(w, obj)
    w.tick(30)
    assert w.status.phase == "Paused"
    obj, _ = click("resume", live(w, rv=4800))
    adopt(w, obj)
    assert ANNOTATION_PAUSED not in w.annotations
    w.tick(30)
    assert w.status.phase != "Paused"


@pytest.mark.parametrize("how", ["rolled back", "aborted", "compile failed"])
def test_retry_click_starts_the_revision_again(how):
    """Needs the operator's side of visionfleet.io/retry (status.handledRetry)."""
    if "handled_retry" not in VisionDeploymentStatus.model_fields:
        pytest.skip("the planner does not handle visionfleet.io/retry yet (no status.handledRetry)")
    if how == "rolled back":
        w = rolled_back_world()
    elif how == "aborted":
        w = canary_world()
        w.annotations[ANNOTATION_ABORT] = "stop"
        w.run_until("RolledBack")
    else:
        w = healthy_world()
        w.set_spec(spec(model__version="2"))
        w.fail_compile = {"l4", "xeon"}
        w.run_until("Failed")
        w.fail_compile = set()
    assert enabled(live(w)) == {"retry"}
    obj, _ = click("retry", live(w))
    adopt(w, obj)
    value = w.annotations[ANNOTATION_RETRY]
    w.tick()
    st = w.status.to_wire()
    assert st.get("handledRetry") == value
    assert st.get("canaryRevision") or st.get("phase") not in ("RolledBack", "Failed"), st
    assert "retry" not in enabled(live(w))
