"""Status trees: pure tree semantics, then through the broker's relay."""
from __future__ import annotations

import time

import pytest

from ctlwire.roc import RocStatusUpdater, merge_tree, statusUpdateIterator
from ctlwire.roc.status import mask_update


def test_update_below_mask_is_included_whole():
    assert mask_update("system.foo", {"cpu": 0.3}, "system") == {
        "system": {"foo": {"cpu": 0.3}}}


def test_update_from_above_mask_is_cut_to_the_masked_subtree():
    assert mask_update("system", {"foo": {"cpu": 1}, "bar": 2}, "system.foo") == {
        "system": {"foo": {"cpu": 1}}}


def test_update_from_above_without_the_masked_part_is_dropped():
    assert mask_update("system", {"bar": 2}, "system.foo") is None


def test_sibling_prefix_is_not_a_match():
    assert mask_update("system.foobar", {"cpu": 1}, "system.foo") is None


def test_leaf_and_nested_forms_say_the_same_thing():
    assert mask_update("mount.encoder.1", 37.5, "mount") == mask_update(
        "mount.encoder", {"1": 37.5}, "mount") == {"mount": {"encoder": {"1": 37.5}}}


def test_lists_are_indexed_by_number():
    assert mask_update("mount", {"enc": [1, 2]}, "mount.enc.1") == {
        "mount": {"enc": {"1": 2}}}


def test_empty_mask_takes_everything():
    assert mask_update("a.b", 1, "") == {"a": {"b": 1}}


def test_merge_changes_only_named_leaves():
    tree = {"system": {"foo": {"cpu": 0.1, "memory": 0.5}}}
    merge_tree(tree, {"system": {"foo": {"cpu": 0.3}}})
    assert tree == {"system": {"foo": {"cpu": 0.3, "memory": 0.5}}}


def test_empty_sensor_id_is_rejected(ep, broker):
    with RocStatusUpdater(ep) as up:
        with pytest.raises(ValueError, match="non-empty"):
            up.emit("", {"x": 1})
        with pytest.raises(ValueError, match="empty component"):
            up.emit("system..foo", 1)


def _first_nonempty(it, emit, limit: float = 10.0) -> dict:
    """Emit and read until something arrives (publish/subscribe joins lazily)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        emit()
        got = next(it)
        if got:
            return got
    raise AssertionError("no status update arrived")


def _joined(it, up, sensor_id: str, expect, limit: float = 10.0) -> None:
    """Emit a fresh token until it comes back.

    Publish/subscribe joins lazily, so the first emits may be lost; on a loaded
    machine one may also arrive after the reader has timed out and emitted again.
    Each try sends a new token and reading goes on until the latest one is seen.
    The broker's snapshot (sent when it reads the subscription) may still repeat
    the token afterwards: read what follows with ``_next_nonempty(it, skip=...)``.
    """
    deadline = time.monotonic() + limit
    token = 0
    while time.monotonic() < deadline:
        token += 1
        up.emit(sensor_id, token)
        while True:
            got = next(it)
            if not got:
                break                   # timed out: emit again
            if got == expect(token):
                return
    raise AssertionError("no status update arrived")


def _holds(tree: dict, path: str) -> bool:
    for part in path.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def _next_nonempty(it, limit: float = 5.0, skip: str | None = None) -> dict:
    """The next update, passing over tokens of ``_joined`` at path ``skip``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        got = next(it)
        if got and not (skip and _holds(got, skip)):
            return got
    raise AssertionError("no status update arrived")


def test_updates_travel_through_the_relay(ep, broker):
    it = statusUpdateIterator(ep, "system", timeout=0.05)
    with RocStatusUpdater(ep) as up:
        got = _first_nonempty(it, lambda: up.emit("system.foo", {"cpu": 0.3}))
    it.close()
    assert got == {"system": {"foo": {"cpu": 0.3}}}


def test_relay_applies_mask_semantics(ep, broker):
    it = statusUpdateIterator(ep, "system.foo", timeout=0.05)
    with RocStatusUpdater(ep) as up:
        _joined(it, up, "system.foo.ready",
                lambda n: {"system": {"foo": {"ready": n}}})
        up.emit("system.foobar", {"cpu": 9})            # sibling: excluded
        up.emit("system", {"bar": 1, "foo": {"cpu": 2}})  # from above: cut down
        up.emit("system.foo", {"memory": 3})              # below: whole
        skip = "system.foo.ready"
        assert _next_nonempty(it, skip=skip) == {"system": {"foo": {"cpu": 2}}}
        assert _next_nonempty(it, skip=skip) == {"system": {"foo": {"memory": 3}}}
    it.close()


def test_several_masks(ep, broker):
    it = statusUpdateIterator(ep, ["a.x", "b"], timeout=0.05)
    with RocStatusUpdater(ep) as up:
        _joined(it, up, "b.ready", lambda n: {"b": {"ready": n}})
        up.emit("a.y", 1)
        up.emit("a", {"x": 5, "y": 6})
        assert _next_nonempty(it, skip="b.ready") == {"a": {"x": 5}}
    it.close()


def test_timeout_yields_an_empty_status(ep, broker):
    it = statusUpdateIterator(ep, "nothing", timeout=0.05)
    assert next(it) == {}
    it.close()
