"""A spec the CRD admits but the models refuse (e.g. from an older CRD) is never acted on: the
operator says which field in a Degraded condition instead of crashing or guessing."""

from __future__ import annotations

import copy
import json

import pytest

from .test_crd_admission import BASE, apply, crd  # noqa: F401  (crd is a fixture)

pytestmark = pytest.mark.cluster


def test_invalid_spec_is_reported_by_field(crd, namespace, monkeypatch):  # noqa: F811
    monkeypatch.setenv("KUBECONFIG", str(crd.kubeconfig))
    from visionfleet import handlers

    handlers._local.api = None  # this thread's client must use the test cluster
    apply(crd, namespace, BASE)
    body = crd.kubectl_json("get", "vd", "probe", "-n", namespace)
    bad = copy.deepcopy(body)
    bad["spec"]["model"]["inputs"][0]["dims"] = [3, "two-hundred", 224]
    assert handlers.run_pass(bad) == 60.0
    st = crd.kubectl_json("get", "vd", "probe", "-n", namespace)["status"]
    degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "InvalidSpec"
    assert degraded["message"].startswith("spec.model.inputs.0.dims.1:")
    assert st["observedGeneration"] == body["metadata"]["generation"]
    # nothing was created for it
    assert json.loads(crd.kubectl("get", "deployments,jobs", "-n", namespace, "-o", "json").stdout)["items"] == []
    handlers._local.api = None
