"""Gateway API traffic: weights per revision, and the HTTPRoute backends they become."""

from __future__ import annotations

import pytest

from visionfleet.builders.manifests import route_backends
from visionfleet.planner.rollout import route_weights


@pytest.mark.parametrize(
    ("canary", "weight", "stable", "expected"),
    [
        pytest.param(None, 0, {"aaa": 2}, (("aaa", 100),), id="steady"),
        pytest.param("bbb", 20, {"aaa": 2}, (("aaa", 80), ("bbb", 20)), id="canary-20"),
        pytest.param("bbb", 100, {"aaa": 2}, (("aaa", 0), ("bbb", 100)), id="canary-100"),
        pytest.param("ccc", 10, {"aaa": 1, "bbb": 2}, (("aaa", 30), ("bbb", 60), ("ccc", 10)),
                     id="held-back-class-on-an-older-stable"),
        pytest.param("ccc", 33, {"aaa": 1, "bbb": 1}, (("aaa", 34), ("bbb", 33), ("ccc", 33)), id="rounding"),
        pytest.param("bbb", 20, {}, (("bbb", 100),), id="first-revision"),
        pytest.param(None, 0, {}, (), id="nothing"),
    ],
)
def test_route_weights(canary, weight, stable, expected):
    got = route_weights(canary, weight, stable)
    assert got == expected
    assert not got or sum(w for _, w in got) == 100


def test_route_backends_replace_only_this_visiondeployments_refs():
    refs = [{"name": "doorbell", "port": 8000}, {"name": "legacy", "port": 80, "weight": 5}]
    new = route_backends(refs, "doorbell", {"doorbell"}, [("aaaaaaaa1111", 80), ("bbbbbbbb2222", 20)])
    assert new == [{"name": "legacy", "port": 80, "weight": 5},
                   {"group": "", "kind": "Service", "name": "doorbell-aaaaaaaa", "port": 8000, "weight": 80},
                   {"group": "", "kind": "Service", "name": "doorbell-bbbbbbbb", "port": 8000, "weight": 20}]
    # idempotent: applying the same weights to the result changes nothing
    assert route_backends(new, "doorbell", {"doorbell", "doorbell-aaaaaaaa", "doorbell-bbbbbbbb"},
                          [("aaaaaaaa1111", 80), ("bbbbbbbb2222", 20)]) == new
    assert route_backends([{"name": "other", "port": 80}], "doorbell", {"doorbell"}, [("a" * 12, 100)]) is None
