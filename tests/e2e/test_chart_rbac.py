"""The operator as the chart's ServiceAccount, through a whole rollout, in a namespace that enforces the
Pod Security Standard ``restricted``.

Given the chart installed (cluster mode) and a kubeconfig holding a bound token of its ServiceAccount,
When the operator runs with that identity and a VisionDeployment is applied, promoted to a second
revision and deleted, Then nothing is denied (no 403 anywhere in the operator's log), every pod the
operator asked for was admitted under ``restricted`` (no FailedCreate), and the rollout ends Healthy.
"""

from __future__ import annotations

import pytest

from visionfleet_e2e.chart import CHART, helm, service_account_kubeconfig
from visionfleet_e2e.cli import install_crds

from ..helpers import wait_for
from .conftest import OperatorProcess
from .test_operator_rollout import VD, Given, vd_with

pytestmark = pytest.mark.cluster
RELEASE, SYSTEM_NS = "vf-rbac", "vf-rbac-system"


@pytest.fixture()
def chart_operator(cluster, namespace, tmp_path, without_session_operator):
    install_crds(cluster)
    helm(cluster, "uninstall", RELEASE, "-n", SYSTEM_NS, check=False)
    helm(cluster, "install", RELEASE, str(CHART), "-n", SYSTEM_NS, "--create-namespace", "--set", "crds.install=false")
    sa = f"{RELEASE}-visionfleet"
    kubeconfig = service_account_kubeconfig(cluster, SYSTEM_NS, sa, tmp_path / "operator.kubeconfig")
    # The pods the operator creates must pass the API server's own Pod Security admission.
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest", "--overwrite")
    op = OperatorProcess(cluster, tmp_path / "operator.log", env={"KUBECONFIG": str(kubeconfig)},
                         args=["--metrics-port=0"])
    op.start()
    yield op
    op.stop()
    helm(cluster, "uninstall", RELEASE, "-n", SYSTEM_NS, check=False)


def denials(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if "403" in line or "forbidden" in line.lower() or "Unauthorized" in line]


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
    log = who.log_path.read_text()
    assert not denials(log), "\n".join(denials(log)[:10])
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert secret not in log and secret not in events and secret not in str(st)
    # and the chart's identity could not have read it
    assert cluster.kubectl("auth", "can-i", "get", "secrets", "-n", namespace,
                           f"--as=system:serviceaccount:{SYSTEM_NS}:{RELEASE}-visionfleet", check=False).stdout.strip() == "no"
    assert who.running, who.tail()
