"""The Helm chart with the real ``helm`` (built from its pinned module) and the real API server.

lint and template with every values file in charts/visionfleet/ci/; what the rendered objects must
hold (restricted pod security, no wildcard RBAC, only the operator's verbs, HA and namespaced modes);
a server-side dry run of every rendering; ``helm install`` / ``upgrade`` / ``uninstall`` on the fleet.
The operator run as the chart's ServiceAccount through a rollout is in tests/e2e/test_chart_rbac.py.
"""

from __future__ import annotations

import json

import pytest
import yaml

from visionfleet_e2e.chart import CHART, VALUES_DIR, helm, install_monitoring_crds, module_dir, render

from ..helpers import registry_needed, wait_for

pytestmark = pytest.mark.cluster
VALUES = sorted(VALUES_DIR.glob("*.yaml"))
IDS = [v.stem for v in VALUES]

# Every verb the operator's code uses, per resource (act/apply.py, observe/kube.py, kopf itself).
# The chart may grant these and nothing else.
ALLOWED = {
    ("visionfleet.io", "visiondeployments"): {"get", "list", "watch", "patch"},
    ("visionfleet.io", "visiondeployments/status"): {"patch"},
    # the children: watched (handlers.py's indexes; a pass reads them from there), written by act/apply.py
    ("batch", "jobs"): {"list", "watch", "create", "patch", "delete"},
    ("apps", "deployments"): {"list", "watch", "create", "patch", "delete"},
    ("apps", "controllerrevisions"): {"list", "watch", "create", "delete"},
    ("", "configmaps"): {"list", "watch", "create", "patch", "delete"},
    ("", "services"): {"list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"list", "watch"},
    ("", "persistentvolumeclaims"): {"get"},  # one GET per claim the spec names (observe/kube.py)
    ("", "events"): {"create"},
    ("", "nodes"): {"list", "watch"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "update"},
    # an autoscaled class's HorizontalPodAutoscaler (act/apply.py; observe/kube.py lists them)
    ("autoscaling", "horizontalpodautoscalers"): {"list", "watch", "create", "patch", "delete"},
    ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
    ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"},
}


@pytest.fixture(scope="module")
def rendered(cluster):
    return {v.stem: render(cluster, [v]) for v in VALUES}


def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def pod_templates(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


@pytest.mark.parametrize("values", VALUES, ids=IDS)
def test_helm_lint_strict_passes(cluster, values):
    proc = helm(cluster, "lint", "--strict", str(CHART), "-f", str(values), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("flag, says", [
    ("replicaCount=0", "/replicaCount"),
    ("watch.mode=everywhere", "/watch/mode"),
    ("image.digest=latest", "/image/digest"),
    ("metrics.port=8081", "/metrics/port"),
    ("replicas=2", "additional properties 'replicas' not allowed"),
], ids=["replicas-zero", "bad-mode", "bad-digest", "port-clash", "unknown-key"])
def test_bad_values_are_refused_naming_the_value(cluster, flag, says):
    proc = helm(cluster, "template", "t", str(CHART), "--set", flag, check=False)
    assert proc.returncode != 0 and says in proc.stderr, proc.stderr


@pytest.mark.parametrize("name", IDS)
def test_every_pod_template_is_pss_restricted(rendered, name):
    templates = list(pod_templates(rendered[name]))
    assert templates, "no pod template rendered"
    for obj, spec in templates:
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), obj
        assert not any("hostPath" in v for v in spec.get("volumes", [])), obj
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault", obj
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert sc["readOnlyRootFilesystem"] is True and not sc.get("privileged"), c["name"]
            assert not sc.get("capabilities", {}).get("add"), c["name"]
            assert c["resources"]["limits"]["memory"], c["name"]


@pytest.mark.parametrize("name", IDS)
def test_rbac_grants_only_the_operators_verbs_and_no_wildcards(rendered, name):
    roles = of_kind(rendered[name], "ClusterRole") + of_kind(rendered[name], "Role")
    assert roles
    for role in roles:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], role["metadata"]["name"]
            assert "resourceNames" not in rule and "nonResourceURLs" not in rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    extra = set(rule["verbs"]) - ALLOWED.get((group, resource), set())
                    assert not extra, f"{role['metadata']['name']} grants {sorted(extra)} on {group}/{resource}"
    # every binding points at a role of this chart and at the chart's ServiceAccount only
    sa = of_kind(rendered[name], "ServiceAccount")[0]["metadata"]["name"]
    for b in of_kind(rendered[name], "ClusterRoleBinding") + of_kind(rendered[name], "RoleBinding"):
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "visionfleet-system"}]
        assert b["roleRef"]["name"] in {r["metadata"]["name"] for r in roles}


def test_namespaced_mode_grants_nothing_cluster_wide_but_reading_nodes(rendered):
    docs = rendered["namespaced-values"]
    cluster_roles = of_kind(docs, "ClusterRole")
    assert [r["rules"] for r in cluster_roles] == [[{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]}]]
    assert sorted(r["metadata"]["namespace"] for r in of_kind(docs, "Role")) == ["vision-a", "vision-b"]
    args = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=vision-a" in args and "--namespace=vision-b" in args and "--all-namespaces" not in args


def test_one_replica_recreates_several_peer(rendered):
    single = of_kind(rendered["default-values"], "Deployment")[0]
    assert single["spec"]["replicas"] == 1 and single["spec"]["strategy"]["type"] == "Recreate"
    env = {e["name"] for e in single["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "VISIONFLEET_PEERING" not in env and not of_kind(rendered["default-values"], "ClusterKopfPeering")

    ha = rendered["ha-values"]
    dep = of_kind(ha, "Deployment")[0]
    assert dep["spec"]["replicas"] == 3 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VISIONFLEET_PRIORITY"]["value"] == "auto"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    peering = of_kind(ha, "ClusterKopfPeering")
    assert [p["metadata"]["name"] for p in peering] == [env["VISIONFLEET_PEERING"]["value"]]
    assert of_kind(ha, "PodDisruptionBudget")[0]["spec"]["minAvailable"] == 1


def test_the_crd_is_the_generated_one_and_survives_uninstall(rendered):
    crd = next(d for d in rendered["default-values"] if d["kind"] == "CustomResourceDefinition")
    generated = yaml.safe_load((CHART.parents[1] / "crds" / "visionfleet.io_visiondeployments.yaml").read_text())
    assert crd["spec"] == generated["spec"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_image_by_digest_and_monitoring_objects(rendered):
    docs = rendered["monitoring-values"]
    pod = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "ghcr.io/visionfleet/operator:0.1.0@sha256:" + "0" * 64
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    rule = of_kind(docs, "PrometheusRule")[0]
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert "VisionFleetRollback" in alerts
    dash = of_kind(docs, "ConfigMap")[0]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dash["data"]["visionfleet.json"])["panels"]
    assert of_kind(docs, "ServiceMonitor")[0]["spec"]["endpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize("values", VALUES, ids=IDS)
def test_server_side_dry_run_accepts_every_rendering(cluster, values):
    with registry_needed("prometheus-operator's CRDs (a Go module not yet in the module cache)"):
        module_dir("prometheus-operator", "github.com/prometheus-operator/prometheus-operator")  # the fetch alone
    install_monitoring_crds(cluster)
    for ns in ("visionfleet-system", "vision-a", "vision-b"):
        cluster.kubectl("create", "namespace", ns, check=False)
    docs = render(cluster, [values], extra=["--include-crds"])
    # CRDs first, as Helm installs its crds/ before the templates (the peering objects need theirs)
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    rest = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    for batch in (crds, rest):
        if not batch:
            continue
        if batch is crds:
            cluster.kubectl("apply", "--server-side", "--field-manager=chart-test", "-f", "-",
                            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": batch}))
            cluster.wait_established(*(d["metadata"]["name"] for d in batch))
            continue
        proc = cluster.kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=chart-test",
                               "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": batch}),
                               check=False)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("(server dry run)") == len(batch), proc.stdout


def test_helm_install_upgrade_uninstall_on_the_fleet(cluster):
    release, ns = "vf-chart", "vf-chart-system"
    helm(cluster, "uninstall", release, "-n", ns, check=False)
    # The CRD already exists (applied with kubectl by earlier tests, as on a cluster that had
    # VisionFleet before the chart): adopt it into the release the documented way (docs/operating.md).
    crd = "crd/visiondeployments.visionfleet.io"
    if cluster.kubectl("get", crd, check=False).returncode == 0:
        cluster.kubectl("annotate", "--overwrite", crd, f"meta.helm.sh/release-name={release}",
                        f"meta.helm.sh/release-namespace={ns}")
        cluster.kubectl("label", "--overwrite", crd, "app.kubernetes.io/managed-by=Helm")
    try:
        helm(cluster, "install", release, str(CHART), "-n", ns, "--create-namespace", "--wait", "--timeout", "180s")
        dep = cluster.kubectl_json("get", "deployment", "-n", ns, "-l", "app.kubernetes.io/component=operator")
        assert len(dep["items"]) == 1
        name = dep["items"][0]["metadata"]["name"]
        wait_for(lambda: cluster.kubectl_json("get", "deployment", name, "-n", ns).get("status", {})
                 .get("availableReplicas") == 1, timeout=120, what="the operator Deployment Available (kwok pod)")
        helm(cluster, "upgrade", release, str(CHART), "-n", ns, "-f", str(VALUES_DIR / "ha-values.yaml"),
             "--wait", "--timeout", "180s")
        wait_for(lambda: cluster.kubectl_json("get", "deployment", name, "-n", ns).get("status", {})
                 .get("availableReplicas") == 3, timeout=120, what="3 replicas after the HA upgrade")
        assert cluster.kubectl("get", "clusterkopfpeering", name, check=False).returncode == 0
        history = json.loads(helm(cluster, "history", release, "-n", ns, "-o", "json").stdout)
        assert [h["status"] for h in history] == ["superseded", "deployed"]
    finally:
        helm(cluster, "uninstall", release, "-n", ns, "--wait", check=False)
    # the CRD is kept (helm.sh/resource-policy: keep): uninstalling never deletes users' VisionDeployments
    assert cluster.kubectl("get", "crd", "visiondeployments.visionfleet.io", check=False).returncode == 0
    assert cluster.kubectl("get", "clusterrole", f"{release}-visionfleet", check=False).returncode != 0


def test_rendering_is_stable(cluster):
    """Two renderings with the same values are byte-identical (no random names or timestamps), so Argo CD
    never sees the chart drift by itself."""
    args = ["template", "t", str(CHART), "-f", str(VALUES_DIR / "monitoring-values.yaml")]
    assert helm(cluster, *args).stdout == helm(cluster, *args).stdout


def test_kubectl_auth_can_i_matches_the_mode(cluster):
    """Namespaced mode, installed for real: the ServiceAccount may act in its namespaces and nowhere else."""
    release, ns = "vf-ns", "vf-ns-system"
    for n in ("vision-a", "vision-b", "elsewhere"):
        cluster.kubectl("create", "namespace", n, check=False)
    helm(cluster, "uninstall", release, "-n", ns, check=False)
    try:
        helm(cluster, "install", release, str(CHART), "-n", ns, "--create-namespace",
             "-f", str(VALUES_DIR / "namespaced-values.yaml"), "--set", "crds.install=false")
        who = f"--as=system:serviceaccount:{ns}:{release}-visionfleet"

        def can(*args: str) -> bool:
            proc = cluster.kubectl("auth", "can-i", *args, who, check=False)
            return proc.stdout.strip() == "yes"

        assert can("patch", "deployments.apps", "-n", "vision-a") and can("patch", "visiondeployments.visionfleet.io/status", "-n", "vision-b")
        assert not can("patch", "deployments.apps", "-n", "elsewhere")
        assert not can("list", "visiondeployments.visionfleet.io", "-A")
        assert can("list", "nodes") and not can("get", "secrets", "-n", "vision-a")
        assert not can("update", "deployments.apps", "-n", "vision-a") and not can("update", "jobs.batch", "-n", "vision-a")
        assert not can("delete", "visiondeployments.visionfleet.io", "-n", "vision-a")
    finally:
        helm(cluster, "uninstall", release, "-n", ns, check=False)
