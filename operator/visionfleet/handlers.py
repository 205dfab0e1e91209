"""Thin kopf handlers: observe -> plan -> act, level-based.

One daemon per VisionDeployment runs passes in a loop: it reads the world, asks the planner, applies
the plan, then sleeps for the planner's requeue delay — or less, when a watch event on the object
nudges it (``memo.nudge``). No handler keys on ``status.phase`` changes: every pass starts from the
current state, so a restart at any moment resumes from ``status`` alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from datetime import datetime, timezone
from typing import Any

import kopf
from kubernetes import client, config

from pydantic import ValidationError

from visionfleet.act.apply import WriteCounter, apply_plan, status_from, write_status
from visionfleet.api import crd
from visionfleet.api.spec import VisionDeploymentSpec
from visionfleet.observe.kube import gather
from visionfleet.observe.prometheus import measure, measure_drift
from visionfleet.planner.conditions import CondType, Reason, set_condition
from visionfleet.planner.model import Observed, VisionDeploymentView, iso
from visionfleet.planner.rollout import plan

log = logging.getLogger("visionfleet")
_local = threading.local()
WRITES = WriteCounter()


def api_client() -> client.ApiClient:
    """One ApiClient per worker thread (the sync client is not safe to share across threads)."""
    if getattr(_local, "api", None) is None:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:
            config.load_kube_config()
        _local.api = client.ApiClient()
    return _local.api


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = f"{crd.GROUP}/finalizer"
    settings.posting.enabled = False  # our Events come from the plan, not from kopf's own logging
    # The nudge handler runs on every watch event; its per-event success line would drown the log.
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.watching.server_timeout = 300
    settings.peering.standalone = os.environ.get("VISIONFLEET_PEERING") is None
    if not settings.peering.standalone:
        settings.peering.name = os.environ["VISIONFLEET_PEERING"]
        settings.peering.priority = int(os.environ.get("VISIONFLEET_PRIORITY", "0"))
        settings.peering.clusterwide = True


@kopf.on.event(crd.GROUP, crd.VERSION, crd.PLURAL)
def nudge(memo: kopf.Memo, **_: Any) -> None:
    event = memo.get("nudge")
    if event is not None:
        event.set()


def run_pass(body: dict[str, Any]) -> float:
    """One observe -> plan -> act pass (blocking I/O; runs in a worker thread)."""
    md = body["metadata"]
    name, namespace = md["name"], md["namespace"]
    status = status_from(body.get("status"))
    try:
        spec = VisionDeploymentSpec.model_validate(body.get("spec") or {})
    except ValidationError as e:
        # The CRD admitted what the models refuse (an older CRD, say): act on nothing, and say which
        # field in a Degraded condition rather than crash or guess.
        first = e.errors()[0]
        where = "spec." + ".".join(str(p) for p in first["loc"])
        message = f"{where}: {first['msg']} (nothing is rolled out until the spec is fixed)"
        log.error("%s/%s: %s", namespace, name, message)
        new = status.model_copy(deep=True)
        new.conditions = set_condition(list(new.conditions or []), CondType.DEGRADED, True, Reason.INVALID_SPEC,
                                       message, iso(datetime.now(timezone.utc)),
                                       md.get("generation"))
        new.observed_generation = md.get("generation")
        write_status(api_client(), name, namespace, status, new)
        return 60.0
    vd = VisionDeploymentView(name=name, namespace=namespace, generation=md.get("generation", 0), spec=spec,
                              status=status, annotations=dict(md.get("annotations") or {}),
                              uid=md["uid"])
    api = api_client()
    core, batch, apps = client.CoreV1Api(api), client.BatchV1Api(api), client.AppsV1Api(api)
    seen = gather(core, batch, apps, name, namespace)
    canary = vd.status.canary_revision
    measurement = measure(spec.analysis, namespace, name, canary) if canary else None
    stable = vd.status.stable_revision
    stable_drift = measure_drift(spec.analysis, namespace, name, stable) if stable else None
    observed = Observed(nodes=tuple(seen.nodes), jobs=tuple(seen.jobs), deployments=tuple(seen.deployments),
                        measurement=measurement, stable_drift=stable_drift)
    p = plan(vd, observed, datetime.now(timezone.utc))
    apply_plan(api, vd, p, seen.applied, WRITES, seen.revision_services)
    for e in p.events:
        log.info("%s/%s: %s %s", namespace, name, e.reason, e.message)
    return p.requeue_seconds


@kopf.daemon(crd.GROUP, crd.VERSION, crd.PLURAL, cancellation_timeout=10)
async def reconcile(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    memo.nudge = asyncio.Event()
    while not stopped:
        memo.nudge.clear()
        try:
            delay = await asyncio.to_thread(run_pass, dict(body))
        except Exception:
            log.exception("%s/%s: reconcile pass failed; retrying", body["metadata"]["namespace"], body["metadata"]["name"])
            delay = 5.0
        # Sleep until the planner's requeue time, a watch event (nudge), or kopf stopping the daemon
        # (deletion, shutdown): the latter must not wait out a 30 s requeue.
        nudged = asyncio.ensure_future(memo.nudge.wait())
        halted = asyncio.ensure_future(stopped.wait())
        _, pending = await asyncio.wait({nudged, halted}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
