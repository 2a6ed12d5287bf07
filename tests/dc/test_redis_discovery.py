"""Discovery through a real redis-server on loopback, alone and under whole groups.

Every test starts its own ``redis-server`` (see ``conftest.RedisServer``) and is skipped
only when that program is not installed. Members on different "hosts" bind 127.0.0.2,
127.0.0.3, ... Time-to-live values are long where a test must show that news arrived by
notification rather than by expiry or by the periodic re-read.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ctlwire.dc.codec import MemberRecord
from ctlwire.dc.discovery import RedisDiscovery
from ctlwire.dc.election import Timings
from ctlwire.dc.group import EventKind, Group

# Relaxed enough that a loaded 2-core box does not start elections by mistake.
TIMINGS = Timings(0.1, 0.5, 1.0, 2.0, 20.0)


def rec(n: int, host: str = "127.0.0.1", group: str = "T.g") -> MemberRecord:
    return MemberRecord(group, bytes([n]) * 16, host, 5000 + n)


@pytest.fixture
def discoveries(redis_server: Any) -> Iterator[Any]:
    """``make(ttl=30, **kw)`` builds a RedisDiscovery on the test's server."""
    made: list[RedisDiscovery] = []

    def make(ttl: float = 30.0, **kw: Any) -> RedisDiscovery:
        d = RedisDiscovery(redis_server.url, **kw)
        d.ttl = ttl
        made.append(d)
        return d

    yield make
    for d in made:
        d.unregister()


def test_members_find_each_other(discoveries, wait):
    a, b = discoveries(), discoveries()
    a.register(rec(1))
    b.register(rec(2))
    wait(lambda: a.members() == [rec(2)] and b.members() == [rec(1)], timeout=10)


def test_a_join_is_pushed_and_wakes_the_member(discoveries, wait):
    a = discoveries(ttl=60)  # re-read every 60 s: news within the test is pushed
    a.register(rec(1))
    wait(lambda: a.reachable, timeout=10)
    a.members()  # drain the wake-up pipe
    b = discoveries(ttl=60)
    b.register(rec(2))
    readable, _, _ = select.select([a.fileno()], [], [], 10)
    assert readable, "no wake-up on the discovery's file descriptor"
    wait(lambda: a.members() == [rec(2)], timeout=5)
    assert a.stats["joins"] == 1


def test_a_goodbye_is_seen_at_once(discoveries, wait):
    a, b = discoveries(ttl=60), discoveries(ttl=60)
    a.register(rec(1))
    b.register(rec(2))
    wait(lambda: a.members() == [rec(2)], timeout=10)
    t0 = time.monotonic()
    b.unregister()
    wait(lambda: a.members() == [], timeout=10)
    assert time.monotonic() - t0 < 30  # far sooner than the 60 s time to live


def test_a_member_that_dies_silently_expires(redis_server, discoveries, wait):
    a = discoveries(ttl=60)
    a.register(rec(1))
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from ctlwire.dc.codec import MemberRecord
        from ctlwire.dc.discovery import RedisDiscovery
        d = RedisDiscovery({redis_server.url!r})
        d.ttl = 1.0
        d.register(MemberRecord("T.g", bytes([2]) * 16, "127.0.0.1", 5002))
        while not d.reachable:
            time.sleep(0.01)
        print("up", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "up"
        wait(lambda: a.members() == [rec(2)], timeout=10)
        os.kill(child.pid, signal.SIGKILL)  # no goodbye, no DEL: only the TTL tells
        t0 = time.monotonic()
        wait(lambda: a.members() == [], timeout=15)
        # a re-reads only every 60 s: the keyspace notification of the expiry told it
        assert time.monotonic() - t0 < 30
        assert a.stats["departures"] == 1
    finally:
        child.kill()
        child.wait()


def test_advertised_address_is_announced(discoveries, wait):
    a, b = discoveries(), discoveries(advertise="127.0.0.9")
    a.register(rec(1))
    b.register(rec(2, host="0.0.0.0"))
    wait(lambda: a.members() == [rec(2, host="127.0.0.9")], timeout=10)


def test_other_groups_are_not_reported(discoveries, wait):
    a, b, c = discoveries(), discoveries(), discoveries()
    a.register(rec(1))
    b.register(rec(2, group="T.other"))
    c.register(rec(3))
    wait(lambda: a.members() == [rec(3)], timeout=10)
    assert rec(2, group="T.other") not in a.members()


def test_outage_keeps_known_members_warns_and_recovers(redis_server, discoveries, wait,
                                                       caplog):
    a, b = discoveries(ttl=2.0), discoveries(ttl=2.0)
    a.register(rec(1))
    b.register(rec(2))
    wait(lambda: a.members() == [rec(2)] and b.members() == [rec(1)], timeout=10)
    caplog.set_level(logging.WARNING, logger="ctlwire.dc.discovery")
    redis_server.stop()
    wait(lambda: not a.reachable and not b.reachable, timeout=15)
    assert any("unreachable" in r.getMessage() and "keeping the 1 members" in r.getMessage()
               for r in caplog.records)
    assert a.members() == [rec(2)]  # what it knew stays usable through the outage
    redis_server.start()
    wait(lambda: a.reachable and b.reachable, timeout=15)
    c = discoveries(ttl=2.0)
    c.register(rec(3))
    wait(lambda: sorted(a.members(), key=lambda r: r.member) == [rec(2), rec(3)], timeout=10)
    assert sorted(c.members(), key=lambda r: r.member) == [rec(1), rec(2)]
    assert a.stats["outages"] == 1
    assert sum("reachable again" in r.getMessage() for r in caplog.records) >= 2


def test_missing_client_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError, match=r"ctlwire\[redis\]"):
        RedisDiscovery("redis://127.0.0.1:1/0")


# --- whole groups --------------------------------------------------------------------------

@pytest.fixture
def groups(redis_server: Any) -> Iterator[Any]:
    """``join(host, **kw)`` joins a Group found through the test's Redis; all left after."""
    made: list[Group] = []

    def join(host: str, **kw: Any) -> Group:
        g = Group("Redis", "five", timings=TIMINGS, host=host,
                  discovery=RedisDiscovery(redis_server.url), **kw)
        g.join()
        made.append(g)
        return g

    yield join
    for g in made:
        g.leave()


def agree(members: list[Group], wait: Any, size: int) -> bytes:
    def check() -> bytes | None:
        views = {g.leader_id for g in members}
        ok = all(g.size == size for g in members) and len(views) == 1
        leader = views.pop() if ok else None
        return leader if leader in {g.memberId for g in members} else None
    return wait(check, timeout=30, interval=0.05)


def test_five_members_on_five_hosts_join_and_leave(groups, wait):
    hosts = [f"127.0.0.{i}" for i in range(2, 7)]
    members = [groups(h) for h in hosts]
    agree(members, wait, 5)
    for g in members:  # each connected to the four others at their own host addresses
        others = {f"tcp://{h}:{o.pub.getInfo().portNum}" for h, o in zip(hosts, members)
                  if o is not g}
        assert set(g.sub.peers) == others
    leaving = members[3:]
    for g in leaving:
        g.leave()
    staying = members[:3]
    agree(staying, wait, 3)
    left = {g.memberId for g in leaving}
    for g in staying:
        events = [ev for ev in g.events(timeout=0.05)]
        gone = {ev.member for ev in events if ev.kind is EventKind.MEMBER_LEFT}
        assert left <= gone
        assert {r.member for r in g.discovery.members()} == \
            {o.memberId for o in staying if o is not g}
    late = groups("127.0.0.7")
    agree([*staying, late], wait, 4)


def test_group_survives_a_redis_restart(redis_server, groups, wait):
    members = [groups(f"127.0.0.{i}") for i in range(2, 6)]
    leader = agree(members, wait, 4)
    term = members[0].term
    for g in members:
        list(g.events(timeout=0.05))  # forget the joining events
    redis_server.restart()
    # Every member saw the outage (its subscription broke) and came back by itself.
    wait(lambda: all(g.discovery.stats["outages"] >= 1 and g.discovery.reachable
                     for g in members), timeout=20)
    late = groups("127.0.0.6")
    assert agree([*members, late], wait, 5) == leader
    assert members[0].term == term
    for g in members:
        kinds = {ev.kind for ev in g.events(timeout=0.05)}
        assert EventKind.MEMBER_LEFT not in kinds and EventKind.LEADER_LOST not in kinds


def test_group_announces_its_advertised_address(tmp_path, wait):
    from ctlwire.dc.discovery import DirectoryDiscovery
    with Group("Adv", "a", timings=TIMINGS, host="127.0.0.2", advertise="node7.example",
               discovery=DirectoryDiscovery(tmp_path)) as g:
        other = DirectoryDiscovery(tmp_path)
        other.register(rec(9, group="Adv.a"))
        found = wait(lambda: other.members(), timeout=10)
        assert [(r.member, r.host) for r in found] == [(g.memberId, "node7.example")]
        other.unregister()


def test_group_takes_the_discoverys_advertised_address(redis_server):
    disc = RedisDiscovery(redis_server.url, advertise="node8.example")
    try:
        assert Group("Adv", "b", host="127.0.0.3", discovery=disc).advertise == "node8.example"
    finally:
        disc.unregister()


@pytest.mark.parametrize("host", ["0.0.0.0", "*"])
def test_binding_every_interface_needs_advertise(host):
    with pytest.raises(ValueError, match="pass advertise="):
        Group("Adv", "c", host=host)
