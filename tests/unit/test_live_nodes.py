"""The node index may keep a node whose deletion it missed (kopf drops index entries only on DELETED
events); ``handlers.live`` filters the snapshot by one metadata-only list every few minutes."""

from __future__ import annotations

from visionfleet import handlers
from visionfleet.observe.kube import node_from_body
from visionfleet.planner.classes import ObservedNode


def node(name: str, uid: str) -> ObservedNode:
    return node_from_body({"metadata": {"name": name, "uid": uid, "labels": {"a": "b"}},
                           "status": {"conditions": [{"type": "Ready", "status": "True"}]}})


def test_stale_and_recreated_nodes_are_dropped_and_the_list_is_shared(monkeypatch):
    calls = []

    def listed(api):
        calls.append(api)
        return {("n1", "u1"), ("n2", "u2-new")}

    monkeypatch.setattr(handlers, "live_node_keys", listed)
    monkeypatch.setattr(handlers, "_LIVE", {"at": float("-inf"), "keys": None})
    snapshot = [node("n1", "u1"), node("n2", "u2-old"), node("n2", "u2-new"), node("gone", "u3")]
    assert [(n.name, n.uid) for n in handlers.live(object(), snapshot)] == [("n1", "u1"), ("n2", "u2-new")]
    handlers.live(object(), snapshot)
    assert len(calls) == 1, "one list for the whole operator per period, not one per pass"


def test_without_a_list_the_index_is_used_as_it_is(monkeypatch):
    def fails(api):
        raise RuntimeError("API down")

    monkeypatch.setattr(handlers, "live_node_keys", fails)
    monkeypatch.setattr(handlers, "_LIVE", {"at": float("-inf"), "keys": None})
    snapshot = [node("n1", "u1")]
    assert handlers.live(object(), snapshot) == snapshot
