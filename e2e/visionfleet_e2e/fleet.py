"""A simulated fleet described in a file (``e2e/fleets/*.yaml``) and rendered to kwok Node objects.

The file names node classes with the labels, taints and capacity real nodes of that kind carry
(GPU feature discovery, node feature discovery, cloud labels). ``size`` nodes are shared out by
class ``weight`` with the largest-remainder method, every class getting at least one node, so the
same file describes a 10-node demo and a 1,000-node scale run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

FLEET_LABEL = "visionfleet.io/fleet"
CLASS_LABEL = "visionfleet.io/fleet-class"
FLEETS_DIR = Path(__file__).resolve().parents[1] / "fleets"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
KWOK_VERSION = "kwok-v0.8.0"


class FleetError(ValueError):
    """A fleet file that cannot be used; the message names the file and the field."""


class Taint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodeClassSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=40)]
    weight: Annotated[float, Field(gt=0)] = 1
    arch: Literal["amd64", "arm64"] = "amd64"
    labels: dict[str, str] = {}
    taints: list[Taint] = []
    capacity: dict[str, str]

    @field_validator("capacity", mode="before")
    @classmethod
    def _quantities_as_strings(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: str(q) for k, q in v.items()}
        return v

    @field_validator("capacity")
    @classmethod
    def _needs_basics(cls, v: dict[str, str]) -> dict[str, str]:
        missing = [k for k in ("cpu", "memory", "pods") if k not in v]
        if missing:
            raise ValueError(f"capacity needs {', '.join(missing)} (e.g. cpu: \"16\", memory: 32Gi, pods: \"110\")")
        return v


class FleetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=20)]
    size: Annotated[int, Field(ge=1, le=10_000)] = 10
    zones: Annotated[list[str], Field(min_length=1)] = ["zone-a"]
    classes: Annotated[list[NodeClassSpec], Field(min_length=1)]

    @field_validator("classes")
    @classmethod
    def _unique_names(cls, v: list[NodeClassSpec]) -> list[NodeClassSpec]:
        names = [c.name for c in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"class names must be unique; repeated: {', '.join(dupes)}")
        return v

    def counts(self, size: int | None = None) -> dict[str, int]:
        """Nodes per class for ``size`` nodes in all (largest remainder, at least one each)."""
        total = self.size if size is None else size
        if total < len(self.classes):
            raise FleetError(f"size {total} is smaller than the number of classes ({len(self.classes)}): "
                             "every class needs at least one node")
        spare = total - len(self.classes)
        weight_sum = sum(c.weight for c in self.classes)
        exact = {c.name: spare * c.weight / weight_sum for c in self.classes}
        out = {n: 1 + int(x) for n, x in exact.items()}
        left = total - sum(out.values())
        for name in sorted(exact, key=lambda n: (-(exact[n] - int(exact[n])), n))[:left]:
            out[name] += 1
        return out

    def nodes(self, size: int | None = None) -> list[dict[str, Any]]:
        """kwok Node objects for the whole fleet, in a stable order with stable names."""
        out: list[dict[str, Any]] = []
        counts = self.counts(size)
        i = 0
        for cls in self.classes:
            for k in range(counts[cls.name]):
                out.append(self._node(cls, k, self.zones[i % len(self.zones)]))
                i += 1
        return out

    def _node(self, cls: NodeClassSpec, index: int, zone: str) -> dict[str, Any]:
        name = f"{self.name}-{cls.name}-{index:04d}"
        labels = {
            **cls.labels,
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": cls.arch,
            "topology.kubernetes.io/zone": zone,
            "type": "kwok",
            FLEET_LABEL: self.name,
            CLASS_LABEL: cls.name,
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": labels,
                # kwok manages only nodes with this annotation; the rest of the cluster is left alone.
                "annotations": {"kwok.x-k8s.io/node": "fake"},
            },
            "spec": {"taints": [t.model_dump(exclude_none=True) for t in cls.taints]} if cls.taints else {},
            "status": {
                "capacity": dict(cls.capacity),
                "allocatable": dict(cls.capacity),
                # All of NodeSystemInfo is required by the schema; kwok's own values where it has them.
                "nodeInfo": {
                    "architecture": cls.arch, "operatingSystem": "linux", "osImage": f"kwok ({cls.name})",
                    "kubeletVersion": KWOK_VERSION, "kubeProxyVersion": KWOK_VERSION,
                    "containerRuntimeVersion": KWOK_VERSION, "kernelVersion": KWOK_VERSION,
                    "machineID": "", "systemUUID": "", "bootID": "",
                },
            },
        }


def load_fleet(path_or_name: str | Path) -> FleetSpec:
    """Load ``e2e/fleets/<name>.yaml`` or a path; errors name the file and the field."""
    path = Path(path_or_name)
    if not path.suffix:
        path = FLEETS_DIR / f"{path_or_name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in FLEETS_DIR.glob("*.yaml")))
        raise FleetError(f"fleet file {path} not found (fleets in {FLEETS_DIR}: {known})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise FleetError(f"{path}: not valid YAML: {e}") from e
    try:
        return FleetSpec.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: invalid fleet file"]
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {where}: {err['msg']}")
        raise FleetError("\n".join(lines)) from e
