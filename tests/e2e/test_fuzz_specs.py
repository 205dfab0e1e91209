"""Property-based fuzzing of VisionDeployment specs, generated from the CRD's own schema and sent to the
real API server with the operator running.

Every spec is either refused by the API server with a message that names the field (``spec.…``), or
accepted and then handled by the operator without a crash: it observes the generation (a status with
``observedGeneration``), at worst with a Degraded condition that says why. Examples are derandomized
so CI sees the same ones each run; VISIONFLEET_FUZZ_EXAMPLES=500 explores more locally.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from visionfleet_e2e.schema_fuzz import conforming, mutated, repair

from ..helpers import wait_for

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "visionfleet.io_visiondeployments.yaml").read_text())
SPEC_SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
EXAMPLES = int(os.environ.get("VISIONFLEET_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture()
def api(cluster):
    return client.CustomObjectsApi(config.new_client_from_config(config_file=str(cluster.kubeconfig)))


def create(api, namespace: str, spec: dict) -> tuple[str | None, str | None]:
    """(name, None) when admitted, (None, the API server's message) when refused."""
    name = f"fz-{uuid.uuid4().hex[:10]}"
    body = {"apiVersion": "visionfleet.io/v1alpha1", "kind": "VisionDeployment",
            "metadata": {"name": name}, "spec": spec}
    try:
        api.create_namespaced_custom_object("visionfleet.io", "v1alpha1", namespace, "visiondeployments", body,
                                            field_validation="Strict")
        return name, None
    except ApiException as e:
        assert e.status in (400, 422), f"unexpected {e.status}: {e.body}"
        return None, e.body.decode() if isinstance(e.body, bytes) else str(e.body)


def handled(api, namespace, names, operator, since: int) -> None:
    """Every admitted object observed by the operator, which is still running, with no failed pass."""
    def observed():
        items = api.list_namespaced_custom_object("visionfleet.io", "v1alpha1", namespace, "visiondeployments")["items"]
        mine = {i["metadata"]["name"]: i for i in items if i["metadata"]["name"] in names}
        late = [n for n, i in mine.items()
                if (i.get("status") or {}).get("observedGeneration") != i["metadata"]["generation"]]
        return not late and mine
    objs = wait_for(observed, timeout=60 + 2 * len(names), interval=1,
                    what=f"the operator to observe all {len(names)} admitted specs")
    assert operator.running, operator.tail()
    log = operator.log_path.read_text()[since:]
    failed = [line for line in log.splitlines() if "reconcile pass failed" in line and any(n in line for n in names)]
    assert not failed, "\n".join(failed[:5]) + "\n" + operator.tail(80)
    for obj in objs.values():
        for c in obj["status"].get("conditions", []):
            if c["type"] == "Degraded" and c["reason"] == "InvalidSpec":
                assert c["message"].startswith("spec.") or "refused" in c["message"], c


def send_all(api, namespace, strategy) -> tuple[list[str], list[str]]:
    """Create every drawn spec; (names admitted, refusals). A refusal must name its field."""
    admitted, refused = [], []

    @FUZZ
    @given(spec=strategy)
    def one(spec):
        name, why = create(api, namespace, spec)
        if name:
            admitted.append(name)
        else:
            assert "spec." in why, f"the refusal names no field: {why}"
            refused.append(why)

    one()
    return admitted, refused


def test_specs_drawn_from_the_schema_are_refused_by_field_or_handled(api, cluster, operator, namespace):
    since = len(operator.log_path.read_text())
    admitted, refused = send_all(api, namespace, conforming(SPEC_SCHEMA))
    # Raw draws rarely pass every cross-field rule together (the next test repairs them for that);
    # the point here is that each refusal names its field, and that whatever passes is handled.
    assert admitted or refused, "no spec was drawn"
    if admitted:
        handled(api, namespace, set(admitted), operator, since)
    print(f"{len(admitted)} admitted and handled, {len(refused)} refused by CEL rules with the field named")


def test_specs_that_pass_admission_are_handled_by_the_operator(api, cluster, operator, namespace):
    """The draws repaired to satisfy the cross-field rules: most are admitted, and every admitted one
    is acted on (compile Jobs, placement, conditions) without a crash."""
    since = len(operator.log_path.read_text())
    admitted, refused = send_all(api, namespace, conforming(SPEC_SCHEMA).map(repair))
    assert len(admitted) >= EXAMPLES // 2, f"only {len(admitted)} admitted; refusals: {refused[:3]}"
    handled(api, namespace, set(admitted), operator, since)
    print(f"{len(admitted)} admitted and handled, {len(refused)} refused")


def test_specs_broken_in_one_place_are_refused_naming_the_field(api, cluster, operator, namespace):
    admitted = []
    since = len(operator.log_path.read_text())

    @FUZZ
    @given(case=mutated(SPEC_SCHEMA))
    def one(case):
        spec, how = case
        name, why = create(api, namespace, spec)
        if name:  # e.g. a required field dropped where the schema defaults it: fine, if handled
            admitted.append(name)
            return
        assert "spec." in why, f"{how}: the refusal names no field: {why}"

    one()
    if admitted:
        handled(api, namespace, set(admitted), operator, since)
