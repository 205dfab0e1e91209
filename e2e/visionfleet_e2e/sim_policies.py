"""Admission policies of the local fleet: simulation knobs a test turns on per namespace.

kwok Stages select on the pod object only (its labels, annotations, spec, status), and the operator
renders the Triton pods: a test cannot put an annotation on them. A MutatingAdmissionPolicy
(``admissionregistration.k8s.io/v1``, GA and on by default in Kubernetes 1.36) bridges the two:

    namespace labelled  sim.visionfleet.io/ready-after=20s
        └─► every pod created there with app.kubernetes.io/component=triton gets the annotation
            sim.visionfleet.io/ready-after: "20s"   (unless it already carries one)
                └─► kwok stages pod-starting / pod-ready-after-delay: Running at once, Ready 20 s later

The namespace label is the switch: no label, no delay, so the rest of the suite keeps kwok's
instant readiness. The value is a Go duration that is also a valid label value (``15s``, ``1m30s``,
``2.5s``). Only pod CREATE is mutated, so relabelling a namespace affects the pods created after.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cluster import LocalCluster

READY_AFTER = "sim.visionfleet.io/ready-after"  # namespace label and pod annotation
UNREADY = "sim.visionfleet.io/unready"  # pod annotation: "true" turns a Ready serving pod not Ready
POLICY_NAME = "visionfleet-sim-ready-after"

_EXPR = f"""Object{{
  metadata: Object.metadata{{
    annotations: {{"{READY_AFTER}": namespaceObject.metadata.labels["{READY_AFTER}"]}}
  }}
}}"""


def ready_after_policy() -> list[dict[str, Any]]:
    """The MutatingAdmissionPolicy and its binding (cluster-scoped, applied by ``LocalCluster.up``)."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME, "labels": {"visionfleet.io/fleet-sim": "true"}},
        "spec": {
            "matchConstraints": {
                "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                   "resources": ["pods"]}],
                "namespaceSelector": {"matchExpressions": [{"key": READY_AFTER, "operator": "Exists"}]},
                "objectSelector": {"matchLabels": {"app.kubernetes.io/component": "triton"}},
            },
            "matchConditions": [{
                "name": "not-set-on-the-pod",
                "expression": f'!has(object.metadata.annotations) || !("{READY_AFTER}" in object.metadata.annotations)',
            }],
            # Only namespaces that opted in are matched at all; there, a broken policy must be loud
            # (a pod refused) rather than silently give a test no delay.
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "mutations": [{"patchType": "ApplyConfiguration", "applyConfiguration": {"expression": _EXPR}}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY_NAME, "labels": {"visionfleet.io/fleet-sim": "true"}},
        "spec": {"policyName": POLICY_NAME},
    }
    return [policy, binding]


def apply_sim_policies(cluster: "LocalCluster") -> None:
    """Create or update the fleet's simulation policies (idempotent)."""
    cluster.kubectl("apply", "--server-side", "--field-manager=visionfleet-fleet", "--force-conflicts", "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": ready_after_policy()}))


def set_ready_delay(cluster: "LocalCluster", namespace: str, delay: str | None) -> None:
    """Turn the Triton readiness delay of ``namespace`` on (``"20s"``) or off (``None``)."""
    arg = f"{READY_AFTER}-" if delay is None else f"{READY_AFTER}={delay}"
    cluster.kubectl("label", "namespace", namespace, arg, "--overwrite")
