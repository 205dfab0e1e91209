"""Traffic by Gateway API: the operator sets HTTPRoute backend weights per revision (CRDs from the
sigs.k8s.io/gateway-api module pinned in e2e/cluster/gomod/gateway-api)."""

from __future__ import annotations

import copy
import json

import pytest

from visionfleet_e2e.cli import install_gateway_api_crds

from ..helpers import wait_for
from .test_operator_rollout import VD, Given

pytestmark = pytest.mark.cluster

ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "doorbell"},
    "spec": {
        "parentRefs": [{"name": "edge-gateway"}],
        "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/v2/models"}}],
             "backendRefs": [{"name": "doorbell", "port": 8000}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/legacy"}}],
             "backendRefs": [{"name": "legacy", "port": 80}]},
        ],
    },
}


@pytest.fixture(scope="module")
def gateway_api(cluster):
    install_gateway_api_crds(cluster)


def routed(version, pause="1h"):
    obj = copy.deepcopy(VD)
    obj["spec"]["model"]["version"] = version
    obj["spec"]["rollout"] = {"steps": [{"setWeight": 20, "pause": pause}, {"setWeight": 100}],
                              "traffic": {"method": "GatewayAPI", "gatewayAPI": {"httpRoute": "doorbell"}}}
    return obj


def backends(g):
    route = g.c.kubectl_json("get", "httproute", "doorbell", "-n", g.ns)
    return {r["name"]: r.get("weight") for r in route["spec"]["rules"][0]["backendRefs"]}, \
        route["spec"]["rules"][1]["backendRefs"]


def test_route_weights_follow_the_rollout(cluster, gateway_api, operator, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(ROUTE))
    g = Given(cluster, namespace).apply(routed("1"))
    v1 = g.wait_phase("Healthy")["stableRevision"]
    svc1 = f"doorbell-{v1[:8]}"
    wait_for(lambda: backends(g)[0] == {svc1: 100}, what="all traffic on v1's Service")
    # other rules are left alone (the API server's defaults filled in, nothing else)
    assert backends(g)[1] == [{"group": "", "kind": "Service", "name": "legacy", "port": 80, "weight": 1}]
    selector = g.c.kubectl_json("get", "service", svc1, "-n", namespace)["spec"]["selector"]
    assert selector["visionfleet.io/revision"] == v1

    g.apply(routed("2"))
    v2 = g.wait_phase("RollingOut")["canaryRevision"]
    svc2 = f"doorbell-{v2[:8]}"
    wait_for(lambda: backends(g)[0] == {svc1: 80, svc2: 20}, what="20% on the canary")

    g.c.kubectl("annotate", "vd", "doorbell", "-n", namespace, "visionfleet.io/promote=now")
    wait_for(lambda: backends(g)[0] == {svc2: 100}, what="all traffic on v2 after promotion")
    wait_for(lambda: not g.c.kubectl("get", "service", svc1, "-n", namespace, check=False).returncode == 0,
             what="v1's Service removed")


def test_abort_sends_route_traffic_back_to_stable(cluster, gateway_api, operator, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(ROUTE))
    g = Given(cluster, namespace).apply(routed("1"))
    v1 = g.wait_phase("Healthy")["stableRevision"]
    g.apply(routed("2"))
    v2 = g.wait_phase("RollingOut")["canaryRevision"]
    wait_for(lambda: backends(g)[0] == {f"doorbell-{v1[:8]}": 80, f"doorbell-{v2[:8]}": 20}, what="20% on canary")
    g.c.kubectl("annotate", "vd", "doorbell", "-n", namespace, "visionfleet.io/abort=sre")
    g.wait_phase("RolledBack")
    wait_for(lambda: backends(g)[0] == {f"doorbell-{v1[:8]}": 100}, what="all traffic back on stable")
