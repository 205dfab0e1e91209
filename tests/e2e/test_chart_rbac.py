"""The operator as the chart's ServiceAccount, through a whole rollout, in a namespace that enforces the
Pod Security Standard ``restricted``.

Given the chart installed (cluster mode) and a bound token of its ServiceAccount,
When the operator runs with that identity and a VisionDeployment is applied, promoted to a second
revision and deleted, Then nothing is denied (no 403 anywhere in the operator's log), every pod the
operator asked for was admitted under ``restricted`` (no FailedCreate), and the rollout ends Healthy.

Twice: as a process with a kubeconfig holding the token, and from the operator image exactly as the
chart's pod spec runs it (its user, read-only root filesystem, dropped capabilities, arguments and
env, rendered by ``helm template``), with the token, CA and namespace where a pod has them
(/var/run/secrets/kubernetes.io/serviceaccount) and KUBERNETES_SERVICE_HOST/PORT set, so it takes the
in-cluster configuration path.
"""

from __future__ import annotations

import pytest

import base64
import json
import re
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import yaml

from visionfleet_e2e import images
from visionfleet_e2e.chart import CHART, helm, render, service_account_kubeconfig
from visionfleet_e2e.cli import install_crds
from visionfleet_e2e.local_process import free_port

from ..helpers import registry_needed, wait_for
from .conftest import OperatorProcess
from .test_operator_rollout import VD, Given, vd_with

pytestmark = pytest.mark.cluster
RELEASE, SYSTEM_NS = "vf-rbac", "vf-rbac-system"


class OperatorContainer:
    """The operator image run by podman as the chart's Deployment runs it."""

    def __init__(self, ref: str, pod: dict, sa_dir: Path, server: str, log_path: Path):
        self.name = f"vf-operator-{uuid.uuid4().hex[:6]}"
        url = urllib.parse.urlsplit(server)
        self.cmd = ["run", "-d", f"--name={self.name}",
                    *images.run_args(pod, "operator", service_account_dir=sa_dir,
                                     field_refs={"metadata.name": f"{RELEASE}-visionfleet-0"}),
                    f"--env=KUBERNETES_SERVICE_HOST={url.hostname}", f"--env=KUBERNETES_SERVICE_PORT={url.port}",
                    ref, *images.command_of(pod, "operator")]
        self.log_path = log_path

    def start(self) -> None:
        images.podman(*self.cmd)

    def stop(self) -> None:
        self.log_path.write_text(self.logs())
        images.podman("rm", "-f", "-t", "20", self.name, check=False)

    def logs(self) -> str:
        p = images.podman("logs", self.name, check=False)
        return p.stdout + p.stderr

    @property
    def running(self) -> bool:
        p = images.podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return p.stdout.strip() == "true"

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])


def service_account_dir(cluster, namespace: str, sa: str, dest: Path) -> tuple[Path, str]:
    """What the kubelet mounts for a pod of ``sa``: token, ca.crt, namespace → (dir, API server URL)."""
    kubeconfig = yaml.safe_load(service_account_kubeconfig(cluster, namespace, sa, dest / "sa.kubeconfig").read_text())
    server = kubeconfig["clusters"][0]["cluster"]
    dest = dest / "serviceaccount"
    dest.mkdir()
    (dest / "token").write_text(kubeconfig["users"][0]["user"]["token"])
    ca = server.get("certificate-authority-data")
    (dest / "ca.crt").write_bytes(base64.b64decode(ca) if ca else Path(server["certificate-authority"]).read_bytes())
    (dest / "namespace").write_text(namespace)
    for f in dest.iterdir():
        f.chmod(0o644)  # the kubelet's projected volume is readable by the pod's user
    return dest, server["server"]


@pytest.fixture(params=["process", "image"])
def chart_operator(request, cluster, namespace, tmp_path, without_session_operator):
    install_crds(cluster)
    helm(cluster, "uninstall", RELEASE, "-n", SYSTEM_NS, check=False)
    metrics_port = free_port()
    values = ["--set", "crds.install=false", "--set", f"metrics.port={metrics_port}"]
    helm(cluster, "install", RELEASE, str(CHART), "-n", SYSTEM_NS, "--create-namespace", *values)
    sa = f"{RELEASE}-visionfleet"
    # The pods the operator creates must pass the API server's own Pod Security admission.
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest", "--overwrite")
    if request.param == "process":
        kubeconfig = service_account_kubeconfig(cluster, SYSTEM_NS, sa, tmp_path / "operator.kubeconfig")
        op = OperatorProcess(cluster, tmp_path / "operator.log", env={"KUBECONFIG": str(kubeconfig)},
                             args=["--metrics-port=0"])
    else:
        with registry_needed("Debian's and PyPI's packages for the operator image (not yet cached)"):
            built = images.build("operator", tmp_path / "build.log")
        docs = render(cluster, namespace=SYSTEM_NS, release=RELEASE, extra=values)
        pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
        sa_dir, server = service_account_dir(cluster, SYSTEM_NS, pod["serviceAccountName"], tmp_path)
        op = OperatorContainer(built.ref, pod, sa_dir, server, tmp_path / "operator.log")
        op.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    op.kind = request.param
    op.start()
    yield op
    op.stop()
    helm(cluster, "uninstall", RELEASE, "-n", SYSTEM_NS, check=False)


def conds_of(st: dict) -> dict:
    return {c["type"]: c for c in st.get("conditions") or []}


def denials(log: str) -> list[str]:
    # 403 as a status, not inside a number (a resourceVersion 4035 in a conflict line matched once)
    return [line for line in log.splitlines()
            if re.search(r"\b403\b", line) or "forbidden" in line.lower() or "Unauthorized" in line]


def test_the_chart_grants_everything_a_rollout_needs_and_pods_pass_restricted(cluster, namespace, chart_operator):
    who = chart_operator
    # registry credentials next to the workload, as a real namespace has them: they must never surface
    secret = f"s3cr3t-{namespace}"
    cluster.kubectl("create", "secret", "docker-registry", "registry-credentials", "-n", namespace,
                    "--docker-server=registry.example", "--docker-username=ci", f"--docker-password={secret}")
    g = Given(cluster, namespace).apply(VD)
    v1 = g.wait_phase("Healthy", timeout=120)["stableRevision"]
    g.apply(vd_with(model__version="2"))
    st = wait_for(lambda: (s := g.status()).get("phase") == "Healthy" and s.get("stableRevision") != v1 and s,
                  timeout=120, what="revision 2 promoted by the chart's identity")
    assert [h["outcome"] for h in st["history"]] == ["Promoted", "Promoted"]
    wait_for(lambda: {d["metadata"]["labels"]["visionfleet.io/revision"] for d in g.objects("deployments")}
             == {st["stableRevision"]}, what="the old revision's Deployments deleted")
    deps = g.objects("deployments")
    assert deps and all(d["status"].get("readyReplicas") == d["spec"]["replicas"] for d in deps)
    failed = [e for e in cluster.kubectl_json("get", "events", "-n", namespace)["items"]
              if e["reason"] in ("FailedCreate", "FailedCreatePodSandBox")]
    assert not failed, [e["message"] for e in failed]
    # Deletion: the finalizer is removed by the chart's identity too.
    cluster.kubectl("delete", "vd", "doorbell", "-n", namespace, "--timeout=60s")
    if who.kind == "image":
        # The chart's probes and metrics answer from the image (liveness on 8081, as the chart says).
        with urllib.request.urlopen("http://127.0.0.1:8081/healthz", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(who.metrics_url, timeout=5) as r:
            assert b"visionfleet_" in r.read()
        conf = json.loads(images.podman("inspect", who.name).stdout)[0]
        assert conf["HostConfig"]["ReadonlyRootfs"] is True and conf["Config"]["User"] == "65532:65532"
        assert not any(e.startswith("KUBECONFIG=") for e in conf["Config"]["Env"])  # in-cluster config only
        who.log_path.write_text(who.logs())
    log = who.log_path.read_text()
    assert not denials(log), "\n".join(denials(log)[:10])
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert secret not in log and secret not in events and secret not in str(st)
    # the claims the spec names (pvc://models) were read with the chart's grant: get, not list
    who_sa = f"--as=system:serviceaccount:{SYSTEM_NS}:{RELEASE}-visionfleet"
    assert [cluster.kubectl("auth", "can-i", verb, "persistentvolumeclaims", "-n", namespace, who_sa,
                            check=False).stdout.strip() for verb in ("get", "list")] == ["yes", "no"]
    assert conds_of(st)["Degraded"]["status"] == "False", "the bound RWX claim raises nothing"
    # and the chart's identity could not have read it
    assert cluster.kubectl("auth", "can-i", "get", "secrets", "-n", namespace,
                           f"--as=system:serviceaccount:{SYSTEM_NS}:{RELEASE}-visionfleet", check=False).stdout.strip() == "no"
    assert who.running, who.tail()
