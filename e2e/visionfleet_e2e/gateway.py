"""The local fleet's Gateway API implementation: Traefik, as a local process beside the cluster.

    build-binaries.sh ──► traefik v3.7.13 (+ gomod/traefik/gateway-request-mirror.patch: RequestMirror)
    LocalCluster.gateway()
      ├─ the Gateway API CRDs Traefik watches (standard channel, gomod/gateway-api's release)
      ├─ namespace visionfleet-gateway: ServiceAccount traefik, ClusterRole/Binding (Traefik's documented
      │  RBAC for its kubernetesGateway provider), a token for it (kubectl create token)
      ├─ traefik --providers.kubernetesGateway (endpoint, token, CA of the local API server)
      │         --entryPoints.web.address=127.0.0.1:<free port>     (a companion: down() stops it)
      └─ GatewayClass visionfleet-traefik (controllerName traefik.io/gateway-controller) and
         Gateway visionfleet-gateway/fleet: one HTTP listener on that port, routes from all namespaces

An HTTPRoute names the Gateway with ``gateway.parent_ref()``; requests to ``gateway.url`` go through
Traefik, which reads the route and the Services' EndpointSlices and connects to the pod IPs — a
``podnet.PodNetwork`` makes those answer. ``gateway.wait_route(namespace, name)`` waits until Traefik
accepted a route with every backend resolved.

Started once per cluster and reused: a second ``LocalCluster(name).gateway()`` (another test session,
the demo) finds the running process through ``<state>/gateway/gateway.json`` and its pid file.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .cluster import ClusterError, LocalCluster, _running_with
from .local_process import free_ports, http_ok

NAMESPACE = "visionfleet-gateway"
GATEWAY_NAME = "fleet"
GATEWAY_CLASS = "visionfleet-traefik"
CONTROLLER_NAME = "traefik.io/gateway-controller"
SERVICE_ACCOUNT = "traefik"
COMPANION = "traefik"
# Every Gateway API resource Traefik's provider lists and watches (its informers wait for all of them):
# the fleet installs the first four (cli.install_gateway_api_crds), the gateway adds the rest.
CRDS = ("gatewayclasses", "gateways", "httproutes", "referencegrants", "grpcroutes", "backendtlspolicies", "tlsroutes")
# Traefik's documented RBAC for the kubernetesGateway provider (docs/content/reference/
# dynamic-configuration/kubernetes-gateway-rbac.yml in github.com/traefik/traefik/v3 v3.7.13).
RULES = [
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["services", "secrets", "configmaps"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    {"apiGroups": ["gateway.networking.k8s.io"],
     "resources": ["gatewayclasses", "gateways", "httproutes", "grpcroutes", "tcproutes", "tlsroutes",
                   "referencegrants", "backendtlspolicies"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["gateway.networking.k8s.io"],
     "resources": ["gatewayclasses/status", "gateways/status", "httproutes/status", "grpcroutes/status",
                   "tcproutes/status", "tlsroutes/status", "referencegrants/status", "backendtlspolicies/status"],
     "verbs": ["update"]},
]


class GatewayError(ClusterError):
    pass


@dataclass
class Gateway:
    """A running Traefik serving the cluster's Gateway ``namespace``/``gateway_name``."""

    cluster: LocalCluster = field(repr=False)
    port: int  # the listener's (and Traefik's "web" entrypoint's) port on 127.0.0.1
    admin_port: int  # Traefik's own entrypoint: /ping, /api (read-only, loopback)
    gateway_name: str = GATEWAY_NAME
    namespace: str = NAMESPACE
    gateway_class: str = GATEWAY_CLASS

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def parent_ref(self) -> dict[str, str]:
        """An HTTPRoute's ``spec.parentRefs`` entry for this Gateway."""
        return {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                "namespace": self.namespace, "name": self.gateway_name}

    @property
    def log_path(self) -> Path:
        return self.cluster.state_dir / f"{COMPANION}.log"

    def running(self) -> bool:
        return self._process_alive() and http_ok(f"{self.admin_url}/ping")

    def routers(self) -> dict[str, Any]:
        """Traefik's view of its HTTP routers and services (its read-only API), for debugging."""
        import urllib.request

        out = {}
        for kind in ("routers", "services"):  # the API pages by 100 unless asked otherwise
            with urllib.request.urlopen(f"{self.admin_url}/api/http/{kind}?per_page=100000", timeout=5) as r:
                out[kind] = json.loads(r.read())
        return out

    def servers(self, namespace: str, service: str) -> list[str]:
        """The servers (pod URLs) Traefik currently sends to for Service ``namespace``/``service``, over
        every route that uses it (as a backend or a mirror); empty while it has no ready endpoint."""
        urls: set[str] = set()
        # the provider names a backend's service <router>-svc-<namespace>-<service>-<index>
        pattern = re.compile(rf"-svc-{re.escape(namespace)}-{re.escape(service)}-\d+$")
        for svc in self.routers()["services"]:
            if pattern.search(svc["name"].split("@")[0]):
                urls.update(s["url"] for s in (svc.get("loadBalancer") or {}).get("servers") or [])
        return sorted(urls)

    def wait_backends(self, namespace: str, services: list[str], timeout: float = 60) -> None:
        """Wait until Traefik has at least one server for each Service. Pods are Ready (and the pod
        network listens) before the endpointslice controller and then Traefik's informers catch up;
        a request in between finds a backend with no server ("no available server", or a mirror
        silently dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            missing = [s for s in services if not self.servers(namespace, s)]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise GatewayError(f"Traefik has no server for {namespace}/{', '.join(missing)} after {timeout:.0f}s")
            time.sleep(0.2)

    def wait_route(self, namespace: str, name: str, timeout: float = 60) -> dict[str, Any]:
        """Wait until Traefik has accepted HTTPRoute ``namespace``/``name`` on this Gateway with all its
        backends resolved, for the route's current generation; returns the route."""
        cluster = self.cluster
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            route = cluster.kubectl_json("get", "httproute", name, "-n", namespace)
            gen = route["metadata"].get("generation")
            for parent in (route.get("status") or {}).get("parents") or []:
                ref = parent.get("parentRef", {})
                if parent.get("controllerName") != CONTROLLER_NAME or ref.get("name") != self.gateway_name:
                    continue
                conds = {c["type"]: c for c in parent.get("conditions") or []}
                last = conds
                if all(conds.get(t, {}).get("status") == "True" and conds[t].get("observedGeneration") == gen
                       for t in ("Accepted", "ResolvedRefs")):
                    return route
            if time.monotonic() > deadline:
                raise GatewayError(f"HTTPRoute {namespace}/{name} not accepted with resolved refs by "
                                   f"{self.gateway_name} within {timeout:.0f}s; conditions: {last}")
            time.sleep(0.25)

    # -- start --------------------------------------------------------------------------------------

    @classmethod
    def start(cls, cluster: LocalCluster, timeout: float = 90) -> "Gateway":
        state = cluster.state_dir / "gateway"
        info_file = state / "gateway.json"
        if info_file.exists():
            found = cls(cluster, **json.loads(info_file.read_text()))
            if found.running():
                cluster.log(f"gateway: reusing Traefik at {found.url} (admin {found.admin_url})")
                return found
        t0 = time.monotonic()
        if not cluster.binary("traefik").exists():
            raise GatewayError(f"no traefik in {cluster.bin_dir}: e2e/cluster/build-binaries.sh builds it "
                               "(group traefik; `make` targets run that script)")
        state.mkdir(parents=True, exist_ok=True)
        from .cli import gateway_api_crd_files

        crd_dir = gateway_api_crd_files()[0].parent  # the pinned release's config/crd/standard
        for name in CRDS:
            cluster.kubectl("apply", "--server-side", "--field-manager=visionfleet-fleet",
                            "-f", str(crd_dir / f"gateway.networking.k8s.io_{name}.yaml"))
        cluster.wait_established(*[f"{name}.gateway.networking.k8s.io" for name in CRDS])
        cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": "visionfleet-gateway-traefik"}, "rules": RULES},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "visionfleet-gateway-traefik"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "visionfleet-gateway-traefik"},
             "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]},
        ]}))
        token = cluster.kubectl("create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, "--duration=48h").stdout.strip()
        token_file = state / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        kc = yaml.safe_load(cluster.kubeconfig.read_text())
        ctx = next(c["context"] for c in kc["contexts"] if c["name"] == kc["current-context"])
        kcluster = next(c["cluster"] for c in kc["clusters"] if c["name"] == ctx["cluster"])
        server, ca = kcluster["server"], kcluster.get("certificate-authority")
        port, admin_port = free_ports(2)
        gw = cls(cluster, port, admin_port)
        argv = [str(cluster.binary("traefik")),
                "--global.checkNewVersion=false", "--global.sendAnonymousUsage=false",
                f"--entryPoints.web.address=127.0.0.1:{port}",
                f"--entryPoints.traefik.address=127.0.0.1:{admin_port}",
                "--ping=true", "--api=true", "--api.insecure=true", "--api.dashboard=false",
                f"--log.level={os.environ.get('VISIONFLEET_TRAEFIK_LOG', 'INFO')}", "--log.noColor=true",
                # the provider's events are applied after this quiet time (default 2 s)
                "--providers.providersThrottleDuration=100ms",
                "--providers.kubernetesGateway=true",
                f"--providers.kubernetesGateway.endpoint={server}",
                f"--providers.kubernetesGateway.token={token_file}",
                "--providers.kubernetesGateway.statusAddress.ip=127.0.0.1"]
        if ca:
            argv.append(f"--providers.kubernetesGateway.certAuthFilePath={ca}")
        # Not the admin's kubeconfig: with KUBECONFIG set, Traefik would take it over endpoint and token.
        env = {k: v for k, v in cluster.env().items() if k != "KUBECONFIG"}
        cluster.start_companion(COMPANION, argv, env=env)
        deadline = time.monotonic() + timeout
        while not http_ok(f"{gw.admin_url}/ping"):
            if time.monotonic() > deadline or not gw._process_alive():
                pidfile = cluster.state_dir / f"{COMPANION}.pid"
                raise GatewayError(f"Traefik did not answer /ping within {timeout:.0f}s (process "
                                   f"{'alive' if gw._process_alive() else 'gone'}, pid file "
                                   f"{pidfile.read_text().split() if pidfile.exists() else 'missing'}); "
                                   f"log {gw.log_path}:\n" + _tail(gw.log_path))
            time.sleep(0.2)
        # The GatewayClass and the Gateway: one plain-HTTP listener on the "web" entrypoint's port
        # (Traefik maps a listener to the entrypoint with the same port).
        cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass", "metadata": {"name": GATEWAY_CLASS},
             "spec": {"controllerName": CONTROLLER_NAME}},
            {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
             "metadata": {"name": GATEWAY_NAME, "namespace": NAMESPACE},
             "spec": {"gatewayClassName": GATEWAY_CLASS,
                      "listeners": [{"name": "http", "protocol": "HTTP", "port": port,
                                     "allowedRoutes": {"namespaces": {"from": "All"}}}]}},
        ]}))
        while True:
            g = cluster.kubectl_json("get", "gateway", GATEWAY_NAME, "-n", NAMESPACE)
            conds = {c["type"]: c for c in (g.get("status") or {}).get("conditions") or []}
            if conds.get("Programmed", {}).get("status") == "True" and \
                    conds["Programmed"].get("observedGeneration") == g["metadata"]["generation"]:
                break
            if time.monotonic() > deadline or not gw._process_alive():
                raise GatewayError(f"Gateway {NAMESPACE}/{GATEWAY_NAME} not Programmed within {timeout:.0f}s "
                                   f"(conditions {conds}); log {gw.log_path}:\n" + _tail(gw.log_path))
            time.sleep(0.25)
        (state / "gateway.json").write_text(json.dumps({"port": port, "admin_port": admin_port}))
        cluster.log(f"gateway: Traefik at {gw.url} serving Gateway {NAMESPACE}/{GATEWAY_NAME} "
                    f"(ready in {time.monotonic() - t0:.1f}s; log {gw.log_path})")
        return gw

    def _process_alive(self) -> bool:
        pidfile = self.cluster.state_dir / f"{COMPANION}.pid"
        if not pidfile.exists():
            return False
        pid, _, exe = pidfile.read_text().partition("\n")
        # Right after exec, /proc/<pid>/cmdline can read empty for a moment (seen here, ~1 start in 2):
        # gone means gone three times over 100 ms.
        for _ in range(3):
            if _running_with(int(pid), exe.strip()):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self.cluster.stop_companion(COMPANION)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
