"""The Helm chart on the local fleet: render it, install it, and act as its ServiceAccount.

    helm (built from the pinned module) ─► template / lint / install charts/visionfleet
    TokenRequest for the chart's ServiceAccount ─► a kubeconfig that *is* the operator's identity,
    so a locally run operator hits exactly the RBAC the chart grants (any denial is a 403 in its log).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from .cluster import REPO, ClusterError, LocalCluster

CHART = REPO / "charts" / "visionfleet"
VALUES_DIR = CHART / "ci"
GOMOD = REPO / "e2e" / "cluster" / "gomod"


def helm(cluster: LocalCluster, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(cluster.binary("helm")), *args], env=cluster.env(), text=True,
                          capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise ClusterError(f"helm {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc


def render(cluster: LocalCluster, values: list[Path] | None = None, namespace: str = "visionfleet-system",
           release: str = "visionfleet", extra: list[str] | None = None) -> list[dict[str, Any]]:
    """``helm template`` → the documents, in order."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    for v in values or []:
        args += ["-f", str(v)]
    out = helm(cluster, *args, *(extra or [])).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def module_dir(gomod: str, module: str) -> Path:
    """The source of a Go module pinned (go.sum verified) in e2e/cluster/gomod/<gomod>, fetched
    through the module proxy into the Go module cache."""
    proc = subprocess.run(["go", "mod", "download", "-json", module], cwd=GOMOD / gomod,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"could not fetch {module}: {proc.stderr or proc.stdout}")
    return Path(json.loads(proc.stdout)["Dir"])


def install_monitoring_crds(cluster: LocalCluster) -> None:
    """prometheus-operator's ServiceMonitor, PodMonitor and PrometheusRule CRDs (pinned release), so the
    API server validates the chart's monitoring objects against their real schemas."""
    root = module_dir("prometheus-operator", "github.com/prometheus-operator/prometheus-operator")
    for kind in ("servicemonitors", "podmonitors", "prometheusrules"):
        cluster.kubectl("apply", "--server-side", "--field-manager=visionfleet-fleet", "-f",
                        str(root / "example" / "prometheus-operator-crd" / f"monitoring.coreos.com_{kind}.yaml"))
    cluster.wait_established("servicemonitors.monitoring.coreos.com", "podmonitors.monitoring.coreos.com",
                             "prometheusrules.monitoring.coreos.com")


def service_account_kubeconfig(cluster: LocalCluster, namespace: str, name: str, dest: Path,
                               hours: int = 2) -> Path:
    """A kubeconfig that authenticates as ServiceAccount ``namespace/name`` with a bound token
    (TokenRequest), against the same API server and CA as the cluster's admin kubeconfig."""
    token = cluster.kubectl("create", "token", name, "-n", namespace, f"--duration={hours}h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    ctx = next(c["context"] for c in admin["contexts"] if c["name"] == admin["current-context"])
    server = next(c["cluster"] for c in admin["clusters"] if c["name"] == ctx["cluster"])
    conf = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "local", "cluster": server}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": name, "namespace": namespace}}],
    }
    dest.write_text(yaml.safe_dump(conf))
    dest.chmod(0o600)
    return dest
