"""Group behaviour in one process (each member its own zmq context), over loopback."""
from __future__ import annotations

import time
import uuid

import pytest
import zmq

from ctlwire.dc.codec import (KIND_APP, KIND_CONTROL, Heartbeat, MemberRecord, encode_control,
                              encode_frames)
from ctlwire.dc.discovery import DirectoryDiscovery
from ctlwire.dc.election import Timings
from ctlwire.dc.group import EventKind, Group, NoLeaderError
from ctlwire.dc.ports import PortError, PortTimeout
from ctlwire.dc.security import CurveSecurity

from .conftest import FAST_TIMINGS

def settled(groups, wait):
    """Wait until every group names the same leader and sees all members."""
    def ok():
        leaders = {g.leader_id for g in groups}
        return (len(leaders) == 1 and leaders <= {g.memberId for g in groups}
                and all(g.size == len(groups) for g in groups))
    wait(ok, timeout=15)
    return next(g for g in groups if g.is_leader)


def test_send_reaches_every_other_member(make_group, wait):
    groups = [make_group() for _ in range(3)]
    settled(groups, wait)
    groups[0].send({"x": 1})
    for g in groups[1:]:
        msg = g.recv(timeout=5)
        assert (msg.sender, msg.obj(), msg.channel) == (groups[0].memberId, {"x": 1}, "group")


def test_sender_does_not_receive_its_own_message(make_group, wait):
    groups = [make_group() for _ in range(2)]
    settled(groups, wait)
    groups[0].send("x")
    groups[1].recv(timeout=5)
    with pytest.raises(PortTimeout):
        groups[0].recv(timeout=0.2)


def test_send_to_leader_and_answer(make_group, wait):
    groups = [make_group() for _ in range(3)]
    leader = settled(groups, wait)
    member = next(g for g in groups if g is not leader)
    member.send_to_leader({"q": 1})
    query = leader.recv(timeout=5)
    assert (query.channel, query.sender, query.obj()) == ("query", member.memberId, {"q": 1})
    leader.answer(query.sender, {"a": 1})
    answer = member.recv(timeout=5)
    assert (answer.channel, answer.sender, answer.obj()) == ("answer", leader.memberId, {"a": 1})


def test_only_the_leader_answers(make_group, wait):
    groups = [make_group() for _ in range(2)]
    leader = settled(groups, wait)
    member = next(g for g in groups if g is not leader)
    with pytest.raises(PortError, match="only the leader"):
        member.answer(leader.memberId, "x")


def test_send_to_leader_without_leader_raises(make_group):
    g = make_group(timings=Timings(0.5, 1.0, 2.0, 5.0))  # first candidacy after >= 6 s
    with pytest.raises(NoLeaderError):
        g.send_to_leader("anyone?")


def test_group_size_and_leader_agree(make_group, wait):
    groups = [make_group() for _ in range(3)]
    leader = settled(groups, wait)
    assert [g.size for g in groups] == [3, 3, 3]
    assert sum(g.is_leader for g in groups) == 1
    assert {g.leader_id for g in groups} == {leader.memberId}
    assert groups[0].members == {g.memberId for g in groups}


def test_events_report_join_and_leader(make_group, wait):
    a = make_group()
    b = make_group()
    settled([a, b], wait)
    kinds = {(e.kind, e.member) for e in a.events(timeout=0.2)}
    assert (EventKind.MEMBER_JOINED, b.memberId) in kinds
    assert any(k is EventKind.LEADER_ELECTED for k, _ in kinds)


def test_callback_sees_member_leave_with_bye(make_group, wait):
    seen = []
    a = make_group(on_event=seen.append)
    b = make_group()
    settled([a, b], wait)
    b.leave()
    wait(lambda: any(e.kind is EventKind.MEMBER_LEFT and e.member == b.memberId
                     and e.reason == "bye" for e in seen), timeout=5)


def test_leader_leaving_is_replaced(make_group, wait):
    groups = [make_group() for _ in range(3)]
    leader = settled(groups, wait)
    leader.leave()
    rest = [g for g in groups if g is not leader]
    new = settled(rest, wait)
    assert new.memberId != leader.memberId and new.term > leader.term


def test_timed_group_reports_send_and_receive_times(make_group, wait):
    a, b = make_group(timed=True), make_group(timed=True)
    settled([a, b], wait)
    before = time.time()
    a.send("t")
    msg = b.recv(timeout=5)
    assert before <= msg.send_time <= msg.recv_time <= time.time()


def test_send_after_leave_raises(make_group):
    g = make_group()
    g.leave()
    with pytest.raises(PortError, match="left"):
        g.send("x")


def test_leave_is_idempotent(make_group):
    g = make_group()
    g.leave()
    g.leave()


# --- garbage on every port -----------------------------------------------------------------

class FakeMember:
    """A raw PUB socket announced through discovery as a group member."""

    def __init__(self, root, ctx):
        self.id = uuid.uuid4().bytes
        self.pub = ctx.socket(zmq.PUB)
        self.port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.disc = DirectoryDiscovery(root)
        self.disc.register(MemberRecord("Test.g1", self.id, "127.0.0.1", self.port))

    def send(self, frames):
        self.disc.refresh()
        self.pub.send_multipart(frames)


def test_garbage_on_sub_is_dropped_and_group_keeps_working(make_group, tmp_path, zctx, wait):
    g = make_group()
    fake = FakeMember(tmp_path, zctx)
    junk = [[b"junk"], [b"a", b"b", b"c", b"d"], [b"DC\x01A" + b"\x00" * 3, b"x"],
            encode_frames(KIND_CONTROL, fake.id, b"\xc1not msgpack")]

    def spray():
        for frames in junk:
            fake.send(frames)
        return g.dropped["malformed"] >= len(junk)
    wait(spray, timeout=10, interval=0.05)
    fake.send(encode_frames(KIND_APP, fake.id, g.codec.encode("still here")))
    msg = g.recv(timeout=5)
    assert (msg.sender, msg.obj()) == (fake.id, "still here")
    fake.pub.close()


def test_garbage_on_answer_port_is_dropped(make_group, zctx, wait):
    leader = make_group()
    wait(lambda: leader.is_leader, timeout=10)
    raw = zctx.socket(zmq.DEALER)
    raw.connect(f"tcp://127.0.0.1:{leader.ans.getInfo().portNum}")
    before = leader.dropped["malformed"]
    raw.send_multipart([b"\x00", b"garbage", b"frames"])
    raw.send(b"x")
    wait(lambda: leader.dropped["malformed"] >= before + 2, timeout=5)
    member = make_group()
    settled([leader, member], wait)
    member.send_to_leader("still answering?")
    assert leader.recv(timeout=5).obj() == "still answering?"
    raw.close()


def test_garbage_on_query_port_is_dropped(make_group, tmp_path, zctx, wait):
    g = make_group()
    fake = FakeMember(tmp_path, zctx)
    router = zctx.socket(zmq.ROUTER)
    rport = router.bind_to_random_port("tcp://127.0.0.1")
    hb = encode_frames(KIND_CONTROL, fake.id,
                       encode_control(Heartbeat(term=100, host="127.0.0.1", port=rport)))

    def follows():
        fake.send(hb)
        return g.leader_id == fake.id
    wait(follows, timeout=10, interval=0.05)
    g.send_to_leader("hello")
    assert router.poll(5000)
    ident = router.recv_multipart()[0]
    router.send_multipart([ident, b"junk"])
    router.send_multipart([ident, encode_frames(KIND_APP, fake.id, b"\x01", None)[0][:20]])
    router.send_multipart([ident, *encode_frames(KIND_APP, fake.id, g.codec.encode("ok"))])
    msg = g.recv(timeout=5)
    assert (msg.channel, msg.obj()) == ("answer", "ok")
    assert g.dropped["malformed"] >= 2
    router.close()
    fake.pub.close()


def test_messages_with_undiscovered_sender_ids_are_dropped(make_group, tmp_path, zctx, wait):
    g = make_group()
    fake = FakeMember(tmp_path, zctx)
    forged = encode_frames(KIND_APP, uuid.uuid4().bytes, g.codec.encode("forged"))

    def spray():
        fake.send(forged)
        return g.dropped["unknown"] > 0
    wait(spray, timeout=10, interval=0.05)
    fake.send(encode_frames(KIND_APP, fake.id, g.codec.encode("genuine")))
    assert g.recv(timeout=5).obj() == "genuine"
    fake.pub.close()


# --- CURVE -------------------------------------------------------------------------------

def test_curve_group_members_with_own_keys_cooperate(make_group, wait):
    ka, kb = CurveSecurity.generate(), CurveSecurity.generate()
    ka.allow(kb.public_key)
    kb.allow(ka.public_key)
    a, b = make_group(security=ka), make_group(security=kb)
    settled([a, b], wait)
    a.send("secret")
    assert b.recv(timeout=5).obj() == "secret"


def test_curve_group_ignores_member_not_on_allow_list(make_group, wait):
    ka, kb, kc = (CurveSecurity.generate() for _ in range(3))
    ka.allow(kb.public_key)
    kb.allow(ka.public_key)
    kc.allow(ka.public_key, kb.public_key)  # c trusts them; they do not trust c
    a, b = make_group(security=ka), make_group(security=kb)
    c = make_group(security=kc)
    settled([a, b], wait)
    c.send("let me in")
    with pytest.raises(PortTimeout):
        a.recv(timeout=0.5)
    assert a.size == 2 and c.memberId not in a.members


def test_callback_may_send_to_the_new_leader(make_group, tmp_path, wait):
    sent = []

    def on_event(ev):
        if ev.kind is EventKind.LEADER_ELECTED and ev.member != b.memberId and not sent:
            b.send_to_leader("hello from a callback")
            sent.append(ev.member)

    a = make_group()
    wait(lambda: a.is_leader, timeout=15)  # a lone member elects itself
    b = Group("Test", "g1", timings=FAST_TIMINGS, discovery=DirectoryDiscovery(tmp_path),
              on_event=on_event)
    try:
        b.join()
        wait(lambda: sent, timeout=15)
        assert sent == [a.memberId]
        assert a.recv(timeout=5).obj() == "hello from a callback"
    finally:
        b.leave()


def test_vanished_member_is_left_then_forgotten_and_disconnected(make_group, tmp_path, zctx,
                                                                 wait):
    from ctlwire.dc.codec import Presence
    g = make_group(timings=Timings(0.05, 0.25, 0.5, 1.0, forget_timeout=1.5))
    fake = FakeMember(tmp_path, zctx)
    endpoint = f"tcp://127.0.0.1:{fake.port}"
    hello = encode_frames(KIND_CONTROL, fake.id, encode_control(Presence(0)))

    def joined():
        fake.send(hello)
        return fake.id in g.members
    wait(joined, timeout=10, interval=0.05)
    fake.disc.unregister()  # vanishes without a goodbye
    ev = next(e for e in g.events(timeout=5) if e.kind is EventKind.MEMBER_LEFT)
    assert (ev.member, ev.reason) == (fake.id, "timeout")
    wait(lambda: endpoint not in g.sub.peers, timeout=10)
    fake.pub.close()


def test_answer_port_is_bound_by_the_time_a_member_is_leader(make_group, wait):
    g = make_group()
    wait(lambda: g.is_leader, timeout=10, interval=0.001)
    assert g.ans.getInfo().portNum is not None
