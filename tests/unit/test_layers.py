"""The operator's layers only point downward (handlers -> act/observe -> builders -> planner -> api),
and the planner and builders stay pure: no kopf, kubernetes, network or Prometheus imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "operator" / "visionfleet"
# metrics: the operator's own /metrics (prometheus_client), beside act and observe.
RANK = {"api": 0, "planner": 1, "builders": 2, "observe": 3, "act": 3, "metrics": 3, "handlers": 4, "main": 5}
IMPURE = ("kopf", "kubernetes", "urllib", "requests", "httpx", "aiohttp", "socket", "subprocess", "prometheus")


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = path.relative_to(PKG.parent).with_suffix("").parts[: -node.level]
                out.add(".".join((*base, node.module)) if node.module else ".".join(base))
            elif node.module:
                out.add(node.module)
    return out


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "visionfleet" and len(parts) > 1 and parts[1] in RANK else None


MODULES = sorted(p for p in PKG.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PKG)) for p in MODULES])
def test_layers_point_downward(path):
    own = layer("visionfleet." + ".".join(path.relative_to(PKG).with_suffix("").parts))
    if own is None:
        return
    for imported in imports(path):
        other = layer(imported)
        if other is not None and other != own:
            assert RANK[other] < RANK[own], \
                f"{path.relative_to(PKG)} ({own}) imports {imported} ({other}): layers must point downward"


@pytest.mark.parametrize("sub", ["api", "planner", "builders"])
def test_pure_layers_import_no_io(sub):
    for path in (PKG / sub).rglob("*.py"):
        for imported in imports(path):
            assert imported.split(".")[0] not in IMPURE, f"{path.relative_to(PKG)} imports {imported}"
