"""Each shipped component imports only itself and the shared contract, so each image carries only
its component; the contract imports no third-party package but numpy (and only in ``reference``).
And the README's two commands reach every installer they need (``make -n``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from visionfleet.api.status import CompileResult
from visionfleet_contract import schema

REPO = Path(__file__).resolve().parents[2]
OWN = {"visionfleet", "visionfleet_contract", "visionfleet_compile", "visionfleet_monitor", "visionfleet_e2e"}
COMPONENTS = {  # folder -> (its package, the project packages it may import)
    "operator": ("visionfleet", {"visionfleet", "visionfleet_contract"}),
    "compiler_jobs": ("visionfleet_compile", {"visionfleet_compile", "visionfleet_contract"}),
    "monitors": ("visionfleet_monitor", {"visionfleet_monitor", "visionfleet_contract"}),
    "contract": ("visionfleet_contract", {"visionfleet_contract"}),
}


def top_level_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("folder", sorted(COMPONENTS))
def test_a_component_imports_only_itself_and_the_contract(folder):
    package, allowed = COMPONENTS[folder]
    for path in sorted((REPO / folder / package).rglob("*.py")):
        wrong = (top_level_imports(path) & OWN) - allowed
        assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}: components share only visionfleet_contract"


def test_the_contract_needs_no_third_party_package_but_numpy_for_the_reference_and_tasks():
    stdlib = set(sys.stdlib_module_names)
    for path in sorted((REPO / "contract" / "visionfleet_contract").rglob("*.py")):
        third = top_level_imports(path) - stdlib - {"visionfleet_contract"}
        assert third <= ({"numpy"} if path.name in ("reference.py", "tasks.py") else set()), (path.name, third)


def test_the_contracts_result_schema_names_every_field_the_operator_reads():
    # state, revision, job and message are the operator's own bookkeeping, not the program's output.
    wire = {f.alias or name for name, f in CompileResult.model_fields.items()} - {"state", "revision", "job", "message"}
    assert wire <= set(schema.CompileResult.__annotations__), wire - set(schema.CompileResult.__annotations__)
    assert set(schema.RESULT_REQUIRED) <= wire


def test_what_config_pbtxt_is_rendered_from_survives_a_truncated_result():
    """The operator renders the ConfigMap from the result's batching and parameters: a message cut to
    what the kubelet keeps must still carry both, or the ConfigMap differs from the Job's file."""
    assert {"batching", "parameters"} <= set(schema.RESULT_KEPT)
    assert set(schema.RESULT_KEPT) <= set(schema.CompileResult.__annotations__)


def test_the_compile_request_the_operator_writes_is_the_contracts():
    """Every key of the operator's compile request (a class with a CPU limit, so cpuLimit is there) is
    in the contract's schema; "class" is a keyword, so the schema names it in a comment."""
    import json

    from visionfleet.api.spec import VisionDeploymentSpec
    from visionfleet.builders.manifests import build_compile_job
    from visionfleet.planner.classes import resolve_classes

    spec = VisionDeploymentSpec.model_validate({
        "model": {"name": "m", "version": "1", "uri": "pvc://models/m.onnx",
                  "inputs": [{"name": "x", "dataType": "FP32", "dims": [3]}],
                  "outputs": [{"name": "y", "dataType": "FP32", "dims": [2]}]},
        "fleet": {"classes": [{"name": "cpu", "nodeSelector": {"kubernetes.io/arch": "amd64"},
                               "runtime": "openvino", "resources": {"limits": {"cpu": "1500m"}}}]}})
    cls = resolve_classes(spec, [])[0]
    job = build_compile_job("vd", "ns", "u", spec, cls, "0123456789ab")
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    request = json.loads(env["VISIONFLEET_COMPILE_REQUEST"])
    assert request["cpuLimit"] == "1500m"
    assert set(request) - {"class"} <= set(schema.CompileRequest.__annotations__)


def make_n(target: str) -> str:
    # -B: as on a fresh machine, where no stamp exists and every prerequisite runs.
    return subprocess.run(["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True, check=True).stdout


INSTALLERS = {  # what a fresh machine lacks -> the line that installs it
    "venv": "e2e/venv/install-venv.sh",  # pip install, from the index or the wheel cache
    "the Go binaries": "e2e/cluster/build-binaries.sh",
    "prometheus": "e2e/prometheus/ensure-prometheus.sh",
    "buildah, podman, runc, debootstrap": "e2e/images/ensure-image-tools.sh",
}


@pytest.mark.parametrize("target, needs, last", [
    ("demo", ("venv", "the Go binaries", "prometheus"), "visionfleet-fleet demo"),
    ("test", ("venv", "the Go binaries", "prometheus", "buildah, podman, runc, debootstrap"), "tests/parallel.py"),
])
def test_the_readme_commands_install_everything_before_they_run(target, needs, last):
    out = make_n(target)
    end = out.index(last)
    for what in needs:
        assert INSTALLERS[what] in out[:end], f"`make {target}` never installs {what} before `{last}`:\n{out}"
