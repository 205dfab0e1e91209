"""The local fleet's custom metrics adapter: Triton's own series, from Prometheus, for the HPA.

    Prometheus ◄── PromQL (metrics_adapter.yaml) ── visionfleet-metrics-adapter (127.0.0.1:<port>, TLS)
                                                          ▲ aggregation layer (front-proxy client cert)
    kube-controller-manager (HPA) ──► kube-apiserver /apis/custom.metrics.k8s.io/v1beta2/...

``visionfleet-metrics-adapter`` (e2e/cluster/gomod/metrics-adapter/main.go, built by
build-binaries.sh) is ours, on ``sigs.k8s.io/custom-metrics-apiserver``. It runs as a local process
with its own ServiceAccount's token; the API server reaches it through an APIService
``v1beta2.custom.metrics.k8s.io`` whose Service is of type ExternalName ``127.0.0.1``: with
aggregator routing off (the default) the aggregator dials an ExternalName's name and the
APIService's port, checks the serving certificate against ``caBundle`` for the name
``<service>.<namespace>.svc``, and its availability check skips the endpoints (it looks for those
of ClusterIP Services only). A ClusterIP Service would send it to a virtual IP no kube-proxy serves.

Use ``cluster.metrics_adapter(prometheus.url)`` (started on first use, stopped with the cluster).
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from .local_process import free_port

if TYPE_CHECKING:
    from .cluster import LocalCluster

NAME = "visionfleet-metrics-adapter"  # binary, ServiceAccount, Service, companion process
NAMESPACE = "kube-system"
GROUP = "custom.metrics.k8s.io"
VERSION = "v1beta2"
EXTERNAL_GROUP = "external.metrics.k8s.io"
EXTERNAL_VERSION = "v1beta1"
APISERVICES = (f"{VERSION}.{GROUP}", f"{EXTERNAL_VERSION}.{EXTERNAL_GROUP}")
CONFIG = Path(__file__).resolve().parent / "metrics_adapter.yaml"


class MetricsAdapterError(RuntimeError):
    pass


def metric_names(config: Path = CONFIG) -> list[str]:
    return [m["name"] for m in yaml.safe_load(config.read_text())["metrics"]]


def external_metric_names(config: Path = CONFIG) -> list[str]:
    return [m["name"] for m in yaml.safe_load(config.read_text()).get("externalMetrics") or []]


def quantity(q: str) -> float:
    """A resource.Quantity as the API writes it ("12", "12500m", "1500k") -> float."""
    suffixes = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    if q and q[-1] in suffixes:
        return float(q[:-1]) * suffixes[q[-1]]
    return float(q)


def _rbac() -> list[dict]:
    sa = {"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}
    hpa = {"kind": "ServiceAccount", "name": "horizontal-pod-autoscaler", "namespace": NAMESPACE}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "namespace": NAMESPACE}},
        # the adapter delegates authentication (TokenReview) and authorization (SubjectAccessReview)
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": f"{NAME}:system:auth-delegator"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
         "subjects": [sa]},
        # ... and reads the front-proxy CA and header names from kube-system/extension-apiserver-authentication
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": f"{NAME}-auth-reader", "namespace": NAMESPACE},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "extension-apiserver-authentication-reader"},
         "subjects": [sa]},
        # it lists the pods a request selects (by label) to ask Prometheus about exactly those
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": f"{NAME}:pods"},
         "rules": [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": f"{NAME}:pods"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{NAME}:pods"},
         "subjects": [sa]},
        # who may read the metrics: the HPA controller's identity (as on a cluster whose controller-manager
        # uses per-controller credentials; here it runs with the admin's, which may anyway)
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "custom-metrics-reader"},
         "rules": [{"apiGroups": [GROUP, EXTERNAL_GROUP], "resources": ["*"], "verbs": ["get", "list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "hpa-controller-custom-metrics"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "custom-metrics-reader"},
         "subjects": [hpa]},
    ]


def _certs(d: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a serving certificate for the names the aggregator checks."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt, key, csr, crt = (d / n for n in ("ca.key", "ca.crt", "tls.key", "tls.csr", "tls.crt"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "7",
        "-subj", f"/CN={NAME}-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={NAME}.{NAMESPACE}.svc")
    ext = d / "san.cnf"
    ext.write_text(f"subjectAltName=DNS:{NAME}.{NAMESPACE}.svc,DNS:{NAME}.{NAMESPACE}.svc.cluster.local,"
                   "DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(crt), "-days", "7", "-extfile", str(ext))
    return ca_crt, crt, key


class MetricsAdapter:
    def __init__(self, cluster: "LocalCluster", prometheus_url: str, config: Path = CONFIG):
        self.cluster = cluster
        self.prometheus_url = prometheus_url
        self.config = config
        self.port = free_port()
        self.dir = cluster.state_dir / "metrics-adapter"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.cluster.state_dir / f"{NAME}.log"

    def start(self, timeout: float = 90) -> "MetricsAdapter":
        c = self.cluster
        t0 = time.monotonic()
        binary = c.binary(NAME)
        if not binary.exists():
            raise MetricsAdapterError(f"{binary} is missing: e2e/cluster/build-binaries.sh builds it (group metrics-adapter)")
        ca, crt, key = _certs(self.dir)
        c.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": _rbac()}))
        kubeconfig = self._kubeconfig()
        argv = [str(binary), f"--secure-port={self.port}", "--bind-address=127.0.0.1",
                f"--tls-cert-file={crt}", f"--tls-private-key-file={key}",
                f"--lister-kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}", f"--config={self.config}",
                f"--prometheus-url={self.prometheus_url}", "--v=2"]
        c.start_companion(NAME, argv)
        self._wait_healthy(timeout)
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME, "namespace": NAMESPACE},
                   "spec": {"type": "ExternalName", "externalName": "127.0.0.1",
                            "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}]}}
        apiservices = [{"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                        "metadata": {"name": f"{version}.{group}"},
                        "spec": {"group": group, "version": version, "groupPriorityMinimum": 100,
                                 "versionPriority": 200, "caBundle": base64.b64encode(ca.read_bytes()).decode(),
                                 "service": {"name": NAME, "namespace": NAMESPACE, "port": self.port}}}
                       for group, version in ((GROUP, VERSION), (EXTERNAL_GROUP, EXTERNAL_VERSION))]
        # kubectl apply keeps an ExternalName Service of an earlier start (another port) consistent
        c.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                         "items": [service, *apiservices]}))
        for name in APISERVICES:
            self._wait_available(name, timeout - (time.monotonic() - t0))
        c.log(f"{NAME} serving {GROUP}/{VERSION} and {EXTERNAL_GROUP}/{EXTERNAL_VERSION} at {self.url} in "
              f"{time.monotonic() - t0:.1f}s (metrics: {', '.join(metric_names(self.config))}; external: "
              f"{', '.join(external_metric_names(self.config))}; log {self.log_path})")
        return self

    def stop(self) -> None:
        # The APIService first: an aggregated API that does not answer breaks discovery, and with it
        # namespace deletion and `kubectl api-resources`, for everything else on the cluster.
        self.cluster.kubectl("delete", "apiservice", *APISERVICES, "--ignore-not-found", check=False)
        self.cluster.stop_companion(NAME)

    def running(self) -> bool:
        from .cluster import _running_with

        pidfile = self.cluster.state_dir / f"{NAME}.pid"
        if not pidfile.exists():
            return False
        pid, _, exe = pidfile.read_text().partition("\n")
        return _running_with(int(pid), exe.strip())

    # -- reading it through the API server, as the HPA does ----------------------------------------

    def raw(self, path: str) -> dict:
        return json.loads(self.cluster.kubectl("get", "--raw", f"/apis/{GROUP}/{VERSION}/{path.lstrip('/')}").stdout)

    def pod_values(self, namespace: str, metric: str, selector: str | None = None) -> dict[str, float]:
        """{pod: value} of ``metric`` for the pods of ``namespace`` (matching ``selector``)."""
        path = f"namespaces/{namespace}/pods/*/{metric}"
        if selector:
            path += "?labelSelector=" + urllib.request.quote(selector)
        return {i["describedObject"]["name"]: quantity(i["value"]) for i in self.raw(path)["items"]}

    def external_value(self, namespace: str, metric: str, selector: str | None = None) -> float | None:
        """The sum of external ``metric``'s items in ``namespace`` (as the HPA adds them); None if none."""
        path = f"/apis/{EXTERNAL_GROUP}/{EXTERNAL_VERSION}/namespaces/{namespace}/{metric}"
        if selector:
            path += "?labelSelector=" + urllib.request.quote(selector)
        r = self.cluster.kubectl("get", "--raw", path, check=False)
        if r.returncode != 0:
            return None
        items = json.loads(r.stdout)["items"]
        return sum(quantity(i["value"]) for i in items) if items else None

    # -- internals ------------------------------------------------------------------------------

    def _kubeconfig(self) -> Path:
        """A kubeconfig with the adapter's own ServiceAccount token (so its RBAC is what it needs)."""
        c = self.cluster
        token = c.kubectl("create", "token", NAME, "-n", NAMESPACE, "--duration=48h").stdout.strip()
        server, _, _ = c._server()
        admin = yaml.safe_load(c.kubeconfig.read_text())
        ca = next(cl["cluster"] for cl in admin["clusters"])
        cluster_entry = {"server": server}
        if ca.get("certificate-authority"):
            cluster_entry["certificate-authority"] = ca["certificate-authority"]
        elif ca.get("certificate-authority-data"):
            cluster_entry["certificate-authority-data"] = ca["certificate-authority-data"]
        else:
            cluster_entry["insecure-skip-tls-verify"] = True
        kc = {"apiVersion": "v1", "kind": "Config", "current-context": NAME,
              "clusters": [{"name": "local", "cluster": cluster_entry}],
              "users": [{"name": NAME, "user": {"token": token}}],
              "contexts": [{"name": NAME, "context": {"cluster": "local", "user": NAME}}]}
        path = self.dir / "kubeconfig"
        path.write_text(yaml.safe_dump(kc))
        path.chmod(0o600)
        return path

    def _wait_healthy(self, timeout: float) -> None:
        ctx = ssl.create_default_context(cafile=str(self.dir / "ca.crt"))
        deadline = time.monotonic() + timeout
        gone_since: float | None = None
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2, context=ctx) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            # Not running for 2 s in a row, not once: a just-started adapter was seen alive (our child,
            # serving soon after) while one look at /proc said otherwise.
            gone_since = None if self.running() else (gone_since or time.monotonic())
            if (gone_since is not None and time.monotonic() - gone_since > 2) or time.monotonic() > deadline:
                tail = self.log_path.read_text()[-3000:] if self.log_path.exists() else ""
                pidfile = self.cluster.state_dir / f"{NAME}.pid"
                pid = pidfile.read_text().split()[0] if pidfile.exists() else "?"
                state = "running" if self.running() else f"not running (pid {pid}, /proc entry " \
                    f"{'present' if Path(f'/proc/{pid}').exists() else 'gone'}{self._reap(pid)})"
                raise MetricsAdapterError(f"{NAME} did not become ready ({state}); log {self.log_path}:\n{tail}")
            time.sleep(0.3)

    @staticmethod
    def _reap(pid: str) -> str:
        """How a child of ours that ended did end (its exit status or signal), for the error."""
        import os

        try:
            got, status = os.waitpid(int(pid), os.WNOHANG)
        except (ChildProcessError, ValueError):
            return ""
        if got == 0:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()[:120]
            except OSError:
                return "; still our child"
            return f"; still our child, state {stat}, cmdline {cmd!r}"
        if os.WIFSIGNALED(status):
            return f"; killed by signal {os.WTERMSIG(status)}"
        return f"; exited with status {os.WEXITSTATUS(status)}"

    def _wait_available(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + max(timeout, 10)
        while True:
            status = self.cluster.kubectl_json("get", "apiservice", name).get("status") or {}
            cond = next((x for x in status.get("conditions") or [] if x["type"] == "Available"), {})
            if cond.get("status") == "True":
                return
            if time.monotonic() > deadline:
                raise MetricsAdapterError(f"APIService {name} not Available: {cond.get('reason')}: "
                                          f"{cond.get('message')} (adapter log {self.log_path})")
            time.sleep(0.5)
