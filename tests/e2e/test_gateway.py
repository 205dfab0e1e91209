"""Requests through a real Gateway API implementation: Traefik (e2e/visionfleet_e2e/gateway.py) reads
the HTTPRoutes and the Services' EndpointSlices of the local API server, and connects to the pod IPs
of kwok pods, which the pod network (e2e/visionfleet_e2e/podnet.py) makes answer as tiny local HTTP
servers that say who answered. No mock of the API server or of the gateway: Deployments on the kwok
nodes, Services with selectors, an HTTPRoute with weighted backendRefs and RequestMirror filters.

Tolerances. Traefik's weighted round robin (pkg/server/service/loadbalancer/wrr) is an earliest-
deadline-first scheduler: deterministic, each backend's deadline advancing by 1/weight per pick. Over
any run of N consecutive picks a backend's count is within 1 of N·w/W, so ±2 (for a request the
test's readiness probe took just before the window, and rounding) is the tolerance here. Its mirror
(pkg/server/service/loadbalancer/mirror) sends request k to a mirror when count·100 < k·percent: at
100 % every request, at 50 % every other one, within 1 of N/2.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from visionfleet_e2e.cli import install_gateway_api_crds
from visionfleet_e2e.podnet import PodNetwork

from ..helpers import wait_for

pytestmark = pytest.mark.cluster

PORT = 80  # the Services' port
CONTAINER_PORT = 8080  # the pods' container port "http": where the pod network listens on each pod IP


class EchoServer:
    """A local HTTP server that plays one Service's pods: answers {"server": name, "gen": …} and records
    every request it got (method, path, body, the X-Route-Gen and X-Req headers)."""

    def __init__(self, name: str):
        self.name = name
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rec = {"server": outer.name, "method": self.command, "path": self.path, "body": body.decode(),
                       "gen": self.headers.get("X-Route-Gen"), "req": self.headers.get("X-Req")}
                with outer.lock:
                    outer.requests.append(rec)
                out = json.dumps({"server": outer.name, "gen": rec["gen"]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = self.httpd.server_address
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def received(self, req_prefix: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if (r["req"] or "").startswith(req_prefix)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def gateway(cluster):
    return cluster.gateway()


@pytest.fixture()
def servers():
    s = {n: EchoServer(n) for n in ("blue", "green", "mirror", "mirror2")}
    yield s
    for srv in s.values():
        srv.close()


@pytest.fixture()
def backends(cluster, namespace, servers):
    """Deployments blue, green and mirror (one kwok pod each) behind Services of the same names, their
    pod IPs forwarded to the local servers."""
    items = []
    for name in servers:
        labels = {"app": name}
        items.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
                      "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                          "metadata": {"labels": labels},
                          "spec": {"tolerations": [{"operator": "Exists"}],
                                   "containers": [{"name": "echo", "image": "example.invalid/echo:1",
                                                   "ports": [{"name": "http", "containerPort": CONTAINER_PORT}]}]}}}})
        items.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
                      "spec": {"selector": labels, "ports": [{"name": "http", "port": PORT, "targetPort": "http"}]}})
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    net = PodNetwork(cluster, namespace).start()
    try:
        for name, srv in servers.items():
            net.forward({"app": name}, "http", srv.address)
        for name in servers:
            net.wait_forwarding({"app": name}, 1, timeout=60)
        yield net
    finally:
        net.stop()


def request(gateway, host: str, path: str = "/", body: bytes | None = None, req: str = "") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        conn.request("POST" if body is not None else "GET", path, body=body, headers={"Host": host, "X-Req": req})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if resp.status == 200 else {"raw": data.decode(errors="replace")})
    finally:
        conn.close()


def diagnose(cluster, gateway, namespace: str) -> str:
    """For a failed assertion: the namespace's pods and EndpointSlices, and Traefik's view of them."""
    out = [cluster.kubectl("get", "pods,endpointslices", "-n", namespace, "-o", "wide", check=False).stdout]
    try:
        for svc in gateway.routers()["services"]:
            if namespace in svc["name"]:
                out.append(json.dumps({k: svc.get(k) for k in ("name", "status", "serverStatus", "loadBalancer",
                                                              "weighted", "mirroring")}))
    except Exception as e:  # Traefik itself gone
        out.append(f"Traefik's API: {e!r}")
    return "\n".join(out)


def route(gateway, namespace: str, host: str, gen: str, backend_refs: list[dict], mirrors: list[dict] = ()) -> dict:
    """One rule for ``host``: sets X-Route-Gen (so a test knows which version of the route answered),
    then the RequestMirror filters, to the weighted backends."""
    filters = [{"type": "RequestHeaderModifier",
                "requestHeaderModifier": {"set": [{"name": "X-Route-Gen", "value": gen}]}}]
    filters += [{"type": "RequestMirror", "requestMirror": m} for m in mirrors]
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"parentRefs": [gateway.parent_ref()], "hostnames": [host],
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                                "filters": filters, "backendRefs": backend_refs}]}}


def apply_route(cluster, gateway, obj: dict, host: str, gen: str, timeout: float = 60) -> None:
    """Apply, wait until Traefik accepted this generation, then until requests carry ``gen``."""
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
    ns = obj["metadata"]["namespace"]
    gateway.wait_route(ns, obj["metadata"]["name"], timeout=timeout)
    rule = obj["spec"]["rules"][0]
    gateway.wait_backends(ns, [b["name"] for b in rule["backendRefs"] if b.get("weight", 1)]
                          + [f["requestMirror"]["backendRef"]["name"] for f in rule["filters"] if f["type"] == "RequestMirror"])
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = request(gateway, host, req="probe")
        if last[0] == 200 and last[1].get("gen") == gen:
            return
        assert time.monotonic() < deadline, f"route generation {gen} never answered: last {last}"
        time.sleep(0.1)


def backend(name: str, weight: int) -> dict:
    return {"group": "", "kind": "Service", "name": name, "port": PORT, "weight": weight}


def split(gateway, host: str, n: int, gen: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in range(n):
        status, body = request(gateway, host, req=f"split-{gen}-{i}")
        assert status == 200, (status, body)
        assert body["gen"] == gen, body
        counts[body["server"]] = counts.get(body["server"], 0) + 1
    return counts


def test_weighted_backends_split_and_reweight(cluster, gateway, namespace, servers, backends):
    host = f"{namespace}.split.test"
    t0 = time.monotonic()
    apply_route(cluster, gateway, route(gateway, namespace, host, "1", [backend("blue", 3), backend("green", 1)]),
                host, "1")
    n = 200
    counts = split(gateway, host, n, "1")
    print(f"weights blue:green = 3:1, {n} requests -> {counts}")
    assert set(counts) <= {"blue", "green"}
    assert abs(counts.get("blue", 0) - n * 3 / 4) <= 2 and abs(counts.get("green", 0) - n / 4) <= 2, counts

    # A weight change on the live route takes effect: 1:4, then the other way round, 0:1.
    apply_route(cluster, gateway, route(gateway, namespace, host, "2", [backend("blue", 1), backend("green", 4)]),
                host, "2")
    counts = split(gateway, host, n, "2")
    print(f"weights blue:green = 1:4, {n} requests -> {counts}")
    assert abs(counts.get("blue", 0) - n / 5) <= 2 and abs(counts.get("green", 0) - n * 4 / 5) <= 2, counts
    apply_route(cluster, gateway, route(gateway, namespace, host, "3", [backend("blue", 0), backend("green", 1)]),
                host, "3")
    counts = split(gateway, host, 50, "3")
    assert counts == {"green": 50}, counts
    # Every answer really went through each pod's IP: the pod network relayed the connections.
    weighted = [k for k, target in backends.listeners().items()
                if target in (servers["blue"].address, servers["green"].address)]
    assert len(weighted) == 2 and all(backends.connections.get(k, 0) > 0 for k in weighted), backends.connections
    print(f"split test took {time.monotonic() - t0:.1f}s")


def test_request_mirror(cluster, gateway, namespace, servers, backends):
    host = f"{namespace}.mirror.test"
    mirror_ref = {"backendRef": {"group": "", "kind": "Service", "name": "mirror", "port": PORT}}
    apply_route(cluster, gateway, route(gateway, namespace, host, "1", [backend("blue", 1), backend("green", 1)],
                                        mirrors=[mirror_ref]), host, "1")
    n = 60
    answered: dict[str, int] = {}
    for i in range(n):
        status, body = request(gateway, host, path=f"/v2/models/m/infer?i={i}", body=f"body-{i}".encode(),
                               req=f"m1-{i}")
        if status != 200:
            pytest.fail(f"request {i}: {status} {body}\n{diagnose(cluster, gateway, namespace)}")
        answered[body["server"]] = answered.get(body["server"], 0) + 1
    # The client only ever hears the weighted backends, split 1:1.
    assert set(answered) == {"blue", "green"} and abs(answered["blue"] - n / 2) <= 2, answered
    # The mirror got every request, body, method and path included (mirrors are sent asynchronously).
    deadline = time.monotonic() + 15
    while len(servers["mirror"].received("m1-")) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    got = servers["mirror"].received("m1-")
    print(f"RequestMirror 100 %: client answers {answered}, mirror received {len(got)} of {n}")
    assert sorted((r["req"], r["method"], r["path"], r["body"]) for r in got) == \
        sorted((f"m1-{i}", "POST", f"/v2/models/m/infer?i={i}", f"body-{i}") for i in range(n))
    served = servers["blue"].received("m1-") + servers["green"].received("m1-")
    assert sorted(r["body"] for r in served) == sorted(f"body-{i}" for i in range(n))

    # Two RequestMirror filters on one rule: percent 50 mirrors every other request (Traefik's mirror
    # counts; within 1 of n/2), the second mirror (no percent) gets them all.
    mirror2_ref = {"backendRef": {"group": "", "kind": "Service", "name": "mirror2", "port": PORT}}
    apply_route(cluster, gateway, route(gateway, namespace, host, "2", [backend("blue", 1), backend("green", 1)],
                                        mirrors=[{**mirror_ref, "percent": 50}, mirror2_ref]), host, "2")
    for i in range(n):
        status, body = request(gateway, host, body=f"half-{i}".encode(), req=f"m2-{i}")
        assert status == 200 and body["server"] in ("blue", "green"), (status, body)
    deadline = time.monotonic() + 15
    while len(servers["mirror2"].received("m2-")) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    half, full = servers["mirror"].received("m2-"), servers["mirror2"].received("m2-")
    print(f"RequestMirror 50 % + 100 %: mirror received {len(half)} of {n}, mirror2 {len(full)} of {n}")
    assert abs(len(half) - n / 2) <= 1, len(half)
    assert sorted(r["body"] for r in full) == sorted(f"half-{i}" for i in range(n))


# -- the operator's own HTTPRoute, through the gateway ------------------------------------------------


def test_operator_route_split_through_the_gateway(cluster, gateway, operator, namespace):
    """The route the operator writes (GatewayAPI traffic: weighted per-revision Services) carries
    traffic as its status says: each revision's Triton pods are played by a local server through the
    pod network, and requests through Traefik land on v1 and v2 as the canary weight says."""
    from .test_operator_gateway_api import routed
    from .test_operator_rollout import Given

    install_gateway_api_crds(cluster)
    host = f"{namespace}.doorbell.test"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "doorbell"},
        "spec": {"parentRefs": [gateway.parent_ref()], "hostnames": [host],
                 "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v2/models"}}],
                            "backendRefs": [{"name": "doorbell", "port": 8000}]}]}}))
    v1_server, v2_server = EchoServer("v1"), EchoServer("v2")
    net = PodNetwork(cluster, namespace).start()
    try:
        g = Given(cluster, namespace).apply(routed("1"))
        v1 = g.wait_phase("Healthy")["stableRevision"]
        net.forward_revision(v1, "http", v1_server.address)
        gateway.wait_route(namespace, "doorbell")
        gateway.wait_backends(namespace, [f"doorbell-{v1[:8]}"])

        def answers(n: int, strict: bool = True) -> dict[str, int]:
            counts: dict[str, int] = {}
            for i in range(n):
                status, body = request(gateway, host, path="/v2/models/efficientnet-lite0/infer", body=b"{}")
                if status != 200 and not strict:  # while the pod network catches up with new pods
                    return {}
                assert status == 200, (status, body)
                counts[body["server"]] = counts.get(body["server"], 0) + 1
            return counts

        wait_for(lambda: request(gateway, host, path="/v2/models/x")[0] == 200, what="v1 answering through Traefik")
        assert answers(20) == {"v1": 20}

        g.apply(routed("2"))
        status = g.wait_phase("RollingOut")
        v2 = status["canaryRevision"]
        net.forward_revision(v2, "http", v2_server.address)
        svc1, svc2 = f"doorbell-{v1[:8]}", f"doorbell-{v2[:8]}"

        def weights() -> dict[str, int]:
            r = cluster.kubectl_json("get", "httproute", "doorbell", "-n", namespace)
            return {b["name"]: b.get("weight") for b in r["spec"]["rules"][0]["backendRefs"]}
        wait_for(lambda: weights() == {svc1: 80, svc2: 20}, what="the operator's 80/20 on the route")
        gateway.wait_route(namespace, "doorbell")
        gateway.wait_backends(namespace, [svc1, svc2])
        wait_for(lambda: "v2" in answers(10, strict=False), what="the canary answering through Traefik")
        n = 200
        counts = answers(n)
        print(f"operator route {svc1}:{svc2} = 80:20 ({g.status().get('canaryWeight')} % canary), "
              f"{n} requests -> {counts}")
        assert abs(counts.get("v2", 0) - n * 0.2) <= 2 and abs(counts.get("v1", 0) - n * 0.8) <= 2, counts

        g.c.kubectl("annotate", "vd", "doorbell", "-n", namespace, "visionfleet.io/promote=now")
        wait_for(lambda: weights() == {svc2: 100}, what="all traffic on v2 after promotion")
        gateway.wait_route(namespace, "doorbell")
        wait_for(lambda: answers(10, strict=False) == {"v2": 10}, what="only v2 answering after promotion")
    finally:
        net.stop()
        v1_server.close()
        v2_server.close()
