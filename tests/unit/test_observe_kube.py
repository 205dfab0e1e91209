"""gather() (observe/kube.py) against fake list calls: snapshots read back from ControllerRevisions
(an unreadable one left out, and said so), the children as raw JSON for the act layer, the drift
Service among them."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

from visionfleet.builders.manifests import (
    build_config_map,
    build_controller_revision,
    build_drift_service,
    build_revision_service,
    build_service,
    build_triton_deployment,
    compile_job_name,
    serving_name,
    snapshot_name,
)
from visionfleet.observe.kube import gather
from visionfleet.planner.classes import resolve_classes
from visionfleet.planner.model import ObservedDeployment, RevisionSnapshot, Track
from visionfleet.planner.snapshot import snapshot_to_data

from .test_apply_children import NS, RESULT, REV, UID, VD, cls, served, spec


class Lister:
    """One list call: raw JSON (``_preload_content=False``) or, for Jobs and pods, model-like objects."""

    def __init__(self, items):
        self.items, self.selectors = items, []

    def __call__(self, namespace, label_selector="", _preload_content=True):
        assert namespace == NS
        self.selectors.append(label_selector)
        if _preload_content:
            return SimpleNamespace(items=self.items)
        return SimpleNamespace(data=json.dumps({"kind": "List", "items": self.items}).encode())


def cr(revision: str, data, outcome=None, number=1):
    obj = served(build_controller_revision(VD, NS, UID, revision, data, number, outcome))
    obj["data"] = data
    return obj


def world(crs, deployments=(), services=(), config_maps=(), jobs=()):
    core = SimpleNamespace(list_namespaced_pod=Lister([]), list_namespaced_config_map=Lister(list(config_maps)),
                           list_namespaced_service=Lister(list(services)))
    batch = SimpleNamespace(list_namespaced_job=Lister(list(jobs)))
    apps = SimpleNamespace(list_namespaced_controller_revision=Lister(list(crs)),
                           list_namespaced_deployment=Lister(list(deployments)))
    return core, batch, apps


def test_snapshots_come_back_from_controller_revisions(caplog):
    s = spec()
    snap = RevisionSnapshot(REV, s, tuple(resolve_classes(s, [])))
    crs = [cr(REV, snapshot_to_data(snap), "RolledBack", 3),
           cr("fedcba987654", {"format": 99}),  # written by a newer operator
           cr("aaaaaaaaaaaa", "not a dict")]
    core, batch, apps = world(crs)
    with caplog.at_level(logging.WARNING, logger="visionfleet.observe"):
        obs = gather(core, batch, apps, VD, NS, nodes=[])
    assert obs.snapshots == [RevisionSnapshot(REV, s, snap.classes, "RolledBack")]
    assert apps.list_namespaced_controller_revision.selectors == [
        f"visionfleet.io/vision-deployment={VD},app.kubernetes.io/component=revision"]
    # every one is in live (so none is created over), with what MarkOutcome compares and the number
    names = {n for k, n in obs.live if k == "ControllerRevision"}
    assert names == {snapshot_name(VD, r) for r in (REV, "fedcba987654", "aaaaaaaaaaaa")}
    mine = obs.live[("ControllerRevision", snapshot_name(VD, REV))]
    assert mine["revision"] == 3 and mine["metadata"]["annotations"]["visionfleet.io/outcome"] == "RolledBack"
    assert mine["data"]["revision"] == REV, "the data comes along: a new outcome re-creates the snapshot with it"
    unreadable = [r.getMessage() for r in caplog.records]
    assert len(unreadable) == 2 and all("left out" in m for m in unreadable)
    assert any(snapshot_name(VD, "fedcba987654") in m and "format 99" in m for m in unreadable)


def test_children_are_observed_as_the_api_server_returns_them():
    s = spec()
    c = cls(s)
    dep = served(build_triton_deployment(VD, NS, UID, s, c, REV, 2, RESULT, Track.STABLE))
    dep["status"]["readyReplicas"] = 1
    svcs = [served(build_service(VD, NS, UID)), served(build_drift_service(VD, NS, UID)),
            served(build_revision_service(VD, NS, UID, REV))]
    cm = served(build_config_map(VD, NS, UID, s, c, REV, RESULT))
    job = SimpleNamespace(
        metadata=SimpleNamespace(name=compile_job_name(VD, "l4", REV), labels={"visionfleet.io/class": "l4",
                                                                               "visionfleet.io/revision": REV},
                                 annotations=None),
        status=SimpleNamespace(conditions=[SimpleNamespace(type="Complete", status="True")], active=0))
    core, batch, apps = world([], [dep], svcs, [cm], [job])
    obs = gather(core, batch, apps, VD, NS, nodes=[])
    assert obs.deployments == [ObservedDeployment("l4", REV, 2, 1)]
    assert obs.live[("Deployment", serving_name(VD, "l4", REV))] == dep
    assert obs.live[("ConfigMap", serving_name(VD, "l4", REV))] == cm
    assert {n for k, n in obs.live if k == "Service"} == {VD, f"{VD}-drift", f"{VD}-{REV[:8]}"}
    assert obs.revision_services == {f"{VD}-{REV[:8]}": REV}
    assert ("Job", compile_job_name(VD, "l4", REV)) in obs.live
    assert obs.jobs[0].state == "Succeeded"
    assert core.list_namespaced_service.selectors == [f"visionfleet.io/vision-deployment={VD}"], \
        "every Service of the VisionDeployment, the drift monitors' too"
