"""The local fleet on the real control plane: node classes as a scheduler sees them, Deployments
that land on the right class and become Ready, Jobs that complete or fail on request."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from visionfleet_e2e.cluster import LocalCluster
from visionfleet_e2e.fleet import CLASS_LABEL, FLEET_LABEL

from ..helpers import wait_for

pytestmark = pytest.mark.cluster


def test_control_plane_is_the_pinned_upstream_release(cluster):
    version = cluster.kubectl_json("version")
    assert version["serverVersion"]["gitVersion"] == "v1.36.3"
    assert version["clientVersion"]["gitVersion"] == "v1.36.3"
    components = cluster.kubectl("get", "--raw", "/readyz?verbose").stdout
    assert "readyz check passed" in components and "[+]etcd ok" in components


def test_fleet_nodes_have_the_classes_labels_and_capacity(cluster, fleet):
    nodes = cluster.kubectl_json("get", "nodes", "-l", f"{FLEET_LABEL}={fleet.name}")["items"]
    by_class = Counter(n["metadata"]["labels"][CLASS_LABEL] for n in nodes)
    assert by_class == Counter(fleet.counts())
    spec = {c.name: c for c in fleet.classes}
    for node in nodes:
        cls = spec[node["metadata"]["labels"][CLASS_LABEL]]
        for key, value in cls.labels.items():
            assert node["metadata"]["labels"][key] == value, (node["metadata"]["name"], key)
        for resource, quantity in cls.capacity.items():
            assert node["status"]["capacity"][resource] == quantity
            assert node["status"]["allocatable"][resource] == quantity
        assert {(t["key"], t["effect"]) for t in node["spec"].get("taints", [])} == \
            {(t.key, t.effect) for t in cls.taints}
        assert node["status"]["nodeInfo"]["architecture"] == cls.arch
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", node["metadata"]["name"]


def deployment(name, replicas, node_selector, tolerations, limits, labels=None):
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, **(labels or {})}},
                "spec": {
                    "nodeSelector": node_selector,
                    "tolerations": tolerations,
                    "containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver:24.10-py3",
                                    "resources": {"limits": limits, "requests": limits}}],
                },
            },
        },
    }


def pods_of(cluster, namespace, app):
    return cluster.kubectl_json("get", "pods", "-n", namespace, "-l", f"app={app}")["items"]


def node_class(cluster, node_name):
    return cluster.kubectl_json("get", "node", node_name)["metadata"]["labels"][CLASS_LABEL]


def test_gpu_deployment_lands_on_gpu_nodes_only_and_gets_ready(cluster, namespace):
    gpu_toleration = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    dep = deployment("l4-triton", 3, {"nvidia.com/gpu.product": "NVIDIA-L4"}, gpu_toleration,
                     {"nvidia.com/gpu": "1", "cpu": "4", "memory": "16Gi"})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(dep))
    cluster.kubectl("rollout", "status", "deployment/l4-triton", "-n", namespace, "--timeout=120s", timeout=150)
    pods = pods_of(cluster, namespace, "l4-triton")
    assert len(pods) == 3
    for pod in pods:
        assert pod["status"]["phase"] == "Running"
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
        assert node_class(cluster, pod["spec"]["nodeName"]) == "l4"


def test_gpu_request_without_gpu_nodes_in_reach_stays_pending(cluster, namespace):
    # Asking for a GPU on the CPU class: the scheduler must refuse, not place it anywhere.
    dep = deployment("xeon-gpu", 1, {"node.kubernetes.io/instance-type": "c7i.4xlarge"}, [],
                     {"nvidia.com/gpu": "1"})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(dep))

    def unschedulable():
        pods = pods_of(cluster, namespace, "xeon-gpu")
        conds = pods[0]["status"].get("conditions", []) if pods else []
        return any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conds) and pods
    pod = wait_for(unschedulable, what="the pod to be reported Unschedulable")[0]
    assert "nodeName" not in pod["spec"]
    message = next(c["message"] for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert "nvidia.com/gpu" in message


def test_untolerated_taint_keeps_pods_off_edge_nodes(cluster, fleet, namespace):
    # Jetson nodes carry the edge taint: a pod tolerating only the GPU taint cannot land there.
    dep = deployment("jetson-no-edge", 1, {"kubernetes.io/arch": "arm64"},
                     [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}], {"cpu": "1"})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(dep))
    pod = wait_for(lambda: [p for p in pods_of(cluster, namespace, "jetson-no-edge")
                            if any(c.get("reason") == "Unschedulable" for c in p["status"].get("conditions", []))],
                   what="Unschedulable")[0]
    assert "nodeName" not in pod["spec"]
    assert f"{fleet.counts()['jetson']} node(s) had untolerated taint(s)" in next(c["message"] for c in pod["status"]["conditions"])


def job(name, pod_labels=None, pod_annotations=None, node_selector=None, tolerations=None):
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": pod_labels or {}, "annotations": pod_annotations or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": node_selector or {},
                    "tolerations": tolerations or [],
                    "containers": [{"name": "compile", "image": "ghcr.io/visionfleet/compile:0.1.0"}],
                },
            },
        },
    }


def job_condition(cluster, namespace, name):
    """The Job's true conditions once it has finished (Complete or Failed), else {}.

    The Job controller sets FailureTarget / SuccessCriteriaMet first and Failed / Complete only when
    its pods are done, so waiting for any condition would race."""
    conds = cluster.kubectl_json("get", "job", name, "-n", namespace)["status"].get("conditions", [])
    true = {c["type"]: c for c in conds if c["status"] == "True"}
    return true if {"Complete", "Failed"} & set(true) else {}


def test_job_runs_on_its_class_then_completes_with_its_termination_message(cluster, namespace):
    result = '{"artifact": "pvc://models/x.plan", "accuracy": 0.995}'
    j = job("compile-h100", pod_annotations={"sim.visionfleet.io/run-for": "2s",
                                              "sim.visionfleet.io/termination-message": result},
            node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(j))
    # It runs first (Job pods do not finish at once), then succeeds.
    running = wait_for(lambda: [p for p in cluster.kubectl_json("get", "pods", "-n", namespace,
                                                                 "-l", "job-name=compile-h100")["items"]
                                if p["status"].get("phase") == "Running"], what="a Running Job pod")
    assert node_class(cluster, running[0]["spec"]["nodeName"]) == "h100"
    done = wait_for(lambda: job_condition(cluster, namespace, "compile-h100"), what="Job to finish")
    assert "Complete" in done, done
    pod = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "job-name=compile-h100")["items"][0]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and json.loads(terminated["message"])["accuracy"] == 0.995


@pytest.mark.parametrize(("outcome", "exit_code"), [("OOMKilled", 137), ("Error", 1)])
def test_a_chosen_job_fails(cluster, namespace, outcome, exit_code):
    name = f"compile-{outcome.lower()}"
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=json.dumps(job(name, pod_labels={"sim.visionfleet.io/outcome": outcome})))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job(f"{name}-ok")))
    done = wait_for(lambda: job_condition(cluster, namespace, name), what=f"Job {name} to finish")
    assert "Failed" in done and done["Failed"]["reason"] == "BackoffLimitExceeded"
    pod = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", f"job-name={name}")["items"][0]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == (outcome, exit_code)
    # ...while its neighbour without the label still succeeds.
    assert "Complete" in wait_for(lambda: job_condition(cluster, namespace, f"{name}-ok"), what="neighbour Job")


def test_not_ready_pods_stay_unready(cluster, namespace):
    dep = deployment("never-ready", 1, {"node.kubernetes.io/instance-type": "c7i.4xlarge"}, [], {"cpu": "1"},
                     labels={"sim.visionfleet.io/outcome": "NotReady"})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(dep))
    pod = wait_for(lambda: [p for p in pods_of(cluster, namespace, "never-ready")
                            if p["status"].get("phase") == "Running"], what="pod Running")[0]
    time.sleep(2)  # give kwok time to (wrongly) mark it Ready
    pod = pods_of(cluster, namespace, "never-ready")[0]
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "False"
    dep_status = cluster.kubectl_json("get", "deployment", "never-ready", "-n", namespace)["status"]
    assert dep_status.get("readyReplicas", 0) == 0


def test_a_second_cluster_starts_warm_and_stops_without_leftovers(cluster, tmp_path):
    """up/down of a bare cluster (no fleet): warm start time, and nothing left running after down."""
    other = LocalCluster("vf-lifecycle", state_root=tmp_path, bin_dir=cluster.bin_dir)
    t0 = time.monotonic()
    try:
        other.up()
        startup = time.monotonic() - t0
        assert other.is_up()
        procs = other.processes()
        assert len(procs) >= 5, procs  # etcd, apiserver, controller-manager, scheduler, kwok
        print(f"\nwarm start of a bare cluster: {startup:.1f}s, {len(procs)} processes")
    finally:
        other.down()
    assert other.processes() == []
    assert not other.is_up()
