"""Resolve the node classes a VisionDeployment targets: explicit ones, or discovered from node labels.

Explicit classes are taken as written; the number of matching nodes is only reported. Discovery
groups the observed nodes by the values of ``fleet.discover.groupBy``:

    nodes ──► filter by discover.nodeSelector ──► group by (label values…) ──► one class per group
                                                                   │
             any node of the group has nvidia.com/gpu capacity ──► tensorrt + gpuPrecision
             otherwise                                          ──► cpuRuntime + cpuPrecision

A node missing a groupBy label joins the group whose value is "none"; that group's pods require
the label to be absent (nodeAffinity), so a CPU group never lands on GPU nodes. Class names are derived from
the label values (lowercased, non-alphanumerics to "-"), shortened with a hash suffix when long,
so they are stable across reconciles and valid as parts of object names.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from visionfleet.api.spec import NodeClass, Precision, ReplicaRange, Resources, Runtime, Toleration, VisionDeploymentSpec

GPU_RESOURCE = "nvidia.com/gpu"
CLASS_NAME_MAX = 40


@dataclass(frozen=True)
class ObservedNode:
    name: str
    labels: dict[str, str]
    taints: tuple[tuple[str, str | None, str], ...] = ()  # (key, value, effect)
    gpus: int = 0
    ready: bool = True
    uid: str = ""  # tells a node from a re-created one of the same name


@dataclass(frozen=True)
class ResolvedClass:
    spec: NodeClass
    nodes: int
    discovered: bool = False
    # Labels the class's nodes must NOT carry (a discovered group whose groupBy label is missing):
    # rendered as nodeAffinity DoesNotExist terms, since a nodeSelector cannot say "absent".
    absent_labels: tuple[str, ...] = ()
    node_names: tuple[str, ...] = field(default=(), compare=False)

    @property
    def name(self) -> str:
        return self.spec.name


def _matches(labels: dict[str, str], selector: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def class_name_for(values: tuple[str, ...]) -> str:
    raw = "-".join(values).lower()
    slug = re.sub(r"[^a-z0-9]+", "-", raw).strip("-") or "default"
    if len(slug) <= CLASS_NAME_MAX:
        return slug
    digest = hashlib.sha256(raw.encode()).hexdigest()[:6]
    return f"{slug[:CLASS_NAME_MAX - 7].rstrip('-')}-{digest}"


def _tolerations_for(nodes: list[ObservedNode]) -> list[Toleration]:
    """Tolerate exactly the NoSchedule/NoExecute taints that every node of the group carries."""
    common: set[tuple[str, str | None, str]] | None = None
    for n in nodes:
        taints = {t for t in n.taints if t[2] in ("NoSchedule", "NoExecute")}
        common = taints if common is None else common & taints
    out = []
    for key, value, effect in sorted(common or set(), key=lambda t: (t[0], t[2])):
        if value is None:
            out.append(Toleration(key=key, operator="Exists", effect=effect))
        else:
            out.append(Toleration(key=key, operator="Equal", value=value, effect=effect))
    return out


def resolve_classes(spec: VisionDeploymentSpec, nodes: list[ObservedNode]) -> list[ResolvedClass]:
    if spec.fleet.classes:
        out = []
        for c in spec.fleet.classes:
            names = tuple(n.name for n in nodes if _matches(n.labels, c.node_selector))  # one match per node
            out.append(ResolvedClass(spec=c, nodes=len(names), node_names=names))
        return out
    discover = spec.fleet.discover
    if discover is None:
        return []
    groups: dict[tuple[str, ...], list[ObservedNode]] = {}
    for n in nodes:
        if discover.node_selector and not _matches(n.labels, discover.node_selector):
            continue
        key = tuple(n.labels.get(k, "none") for k in discover.group_by)
        groups.setdefault(key, []).append(n)
    out = []
    for key in sorted(groups):
        members = groups[key]
        gpu = any(n.gpus > 0 for n in members)
        selector = {k: v for k, v in zip(discover.group_by, key) if v != "none"}
        if discover.node_selector:
            selector = {**discover.node_selector, **selector}
        cls = NodeClass(
            name=class_name_for(key),
            node_selector=selector,
            tolerations=_tolerations_for(members) or None,
            runtime=Runtime.TENSORRT if gpu else Runtime(discover.cpu_runtime),
            precision=Precision(discover.gpu_precision) if gpu else Precision(discover.cpu_precision),
            resources=Resources(limits={GPU_RESOURCE: 1}) if gpu else None,
            runtime_class_name=discover.gpu_runtime_class_name if gpu else None,
            priority_class_name=discover.priority_class_name,
            replicas=ReplicaRange.model_validate(discover.replicas.to_wire()),
        )
        absent = tuple(k for k, v in zip(discover.group_by, key) if v == "none")
        out.append(ResolvedClass(spec=cls, nodes=len(members), discovered=True, absent_labels=absent,
                                 node_names=tuple(n.name for n in members)))
    return out
