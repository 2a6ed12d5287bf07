"""State for late joiners: the broker keeps the status tree and sends it first."""
from __future__ import annotations

import time

from ctlwire import _json
from ctlwire.roc import RocStatusUpdater, statusUpdateIterator
from ctlwire.roc.status import PREFIX, StatusStore


# -- the store, without sockets -----------------------------------------------------
def test_store_merges_partial_trees():
    s = StatusStore()
    s.apply("system.foo", {"cpu": 0.3, "memory": 0.5}, None, 0.0)
    s.apply("system", {"foo": {"cpu": 0.4}}, None, 0.0)
    s.apply("mount.encoder.1", 37.5, None, 0.0)
    assert s.tree == {"system": {"foo": {"cpu": 0.4, "memory": 0.5}},
                      "mount": {"encoder": {"1": 37.5}}}


def test_snapshot_for_every_subscription_prefix():
    s = StatusStore()
    s.apply("system.foo", {"cpu": 1}, None, 0.0)
    s.apply("systemd", 2, None, 0.0)
    s.apply("mount", {"ra": 3}, None, 0.0)
    whole = s.snapshot(b"")
    assert whole == [[PREFIX, _json.dumps(s.tree)]]
    assert s.snapshot(b"mount") == [[PREFIX + b"mount", _json.dumps({"ra": 3})]]
    # a byte prefix: both names starting with "system"
    assert sorted(m[0] for m in s.snapshot(b"system")) == [PREFIX + b"system",
                                                          PREFIX + b"systemd"]
    assert s.snapshot(b"system.f") == [[PREFIX + b"system.foo", _json.dumps({"cpu": 1})]]
    assert s.snapshot(b"nothing") == [] and s.snapshot(b"\xff") == []


def test_paths_with_a_ttl_disappear_unless_sent_again():
    s = StatusStore()
    s.apply("dome.wind", 5, 1.0, now=0.0)
    s.apply("dome.shutter", "open", None, now=0.0)
    s.apply("cam.temp", -20, 1.0, now=0.0)
    s.apply("cam.temp", -21, 1.0, now=0.8)          # refreshed
    assert s.expire(1.5) == 1.8
    assert s.tree == {"dome": {"shutter": "open"}, "cam": {"temp": -21}}
    s.apply("cam", {"temp": -22}, None, now=1.6)    # sent without a TTL: permanent
    assert s.expire(10.0) is None
    assert s.tree == {"dome": {"shutter": "open"}, "cam": {"temp": -22}}
    assert s.expired == 1


def test_an_expired_path_takes_its_emptied_parents_with_it():
    s = StatusStore()
    s.apply("a.b.c", 1, 0.5, now=0.0)
    s.expire(1.0)
    assert s.tree == {}


# -- through a broker ---------------------------------------------------------------
def _publish(ep, broker, updates) -> None:
    with RocStatusUpdater(ep) as up:
        deadline = time.monotonic() + 10
        want = broker.status.updates + len(updates)
        # pub/sub joins lazily: send until the broker has kept them all
        while broker.status.updates < want:
            assert time.monotonic() < deadline, "the broker never got the updates"
            before = broker.status.updates
            for path, data, ttl in updates:
                up.emit(path, data, ttl=ttl)
            time.sleep(0.05)
            if broker.status.updates - before == len(updates):
                break


def _first(it) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = next(it)
        if got:
            return got
    raise AssertionError("nothing arrived")


def test_a_late_subscriber_gets_the_whole_current_tree_at_once(ep, broker):
    _publish(ep, broker, [("system.foo", {"cpu": 0.3}, None), ("system.bar", 1, None),
                          ("mount.state", "tracking", None)])
    it = statusUpdateIterator(ep, timeout=0.1)
    try:
        assert _first(it) == {"system": {"foo": {"cpu": 0.3}, "bar": 1},
                              "mount": {"state": "tracking"}}
    finally:
        it.close()


def test_masks_apply_to_the_snapshot_as_to_updates(ep, broker):
    _publish(ep, broker, [("system", {"foo": {"cpu": 1}, "foobar": 2, "bar": 3}, None),
                          ("mount.ra", 4, None)])
    it = statusUpdateIterator(ep, "system.foo", timeout=0.1)
    try:
        assert _first(it) == {"system": {"foo": {"cpu": 1}}}
    finally:
        it.close()


def test_updates_after_the_snapshot_follow_it_in_order(ep, broker):
    _publish(ep, broker, [("x.n", 1, None)])
    it = statusUpdateIterator(ep, "x", timeout=0.1)
    try:
        assert _first(it) == {"x": {"n": 1}}
        with RocStatusUpdater(ep) as up:
            time.sleep(0.2)  # let the publisher's connection settle: pub/sub is lazy
            for n in range(2, 6):
                up.emit("x.n", n)
            assert [_first(it) for _ in range(4)] == [{"x": {"n": n}} for n in range(2, 6)]
    finally:
        it.close()


def test_a_path_with_a_ttl_is_not_given_to_late_subscribers_once_expired(ep, broker):
    _publish(ep, broker, [("dome.wind", 5, 0.2), ("dome.shutter", "open", None)])
    deadline = time.monotonic() + 10
    while broker.status.expired == 0:
        assert time.monotonic() < deadline, "the path never expired"
        time.sleep(0.02)
    it = statusUpdateIterator(ep, "dome", timeout=0.1)
    try:
        assert _first(it) == {"dome": {"shutter": "open"}}
    finally:
        it.close()


def test_a_subscriber_moves_to_the_standby_when_its_broker_goes(free_port):
    from ctlwire.roc import Broker, Endpoints
    p_ep, s_ep = Endpoints("127.0.0.1", free_port()), Endpoints("127.0.0.1", free_port())
    primary = Broker(p_ep, has_standby=True).start()
    standby = Broker(s_ep, standby_for=p_ep).start()
    it = None
    try:
        # publishers send to every broker of the pair, so both keep the whole tree
        with RocStatusUpdater([p_ep, s_ep]) as up:
            deadline = time.monotonic() + 10
            while primary.status.updates == 0 or standby.status.updates == 0:
                assert time.monotonic() < deadline, "the pair never got the update"
                up.emit("x.n", 1)
                time.sleep(0.05)
            it = statusUpdateIterator([p_ep, s_ep], "x", timeout=0.1)
            assert _first(it) == {"x": {"n": 1}}
            primary.stop()
            # the standby's snapshot first, then what is published from now on
            assert _first(it) == {"x": {"n": 1}}
            deadline = time.monotonic() + 10
            got: dict = {}
            while got != {"x": {"n": 2}}:
                assert time.monotonic() < deadline, "no update through the standby"
                up.emit("x.n", 2)
                got = next(it)
    finally:
        if it is not None:
            it.close()
        standby.stop()
        primary.stop()
