"""Group ports over real loopback sockets."""
from __future__ import annotations

import pickle
import struct
import time

import pytest
import zmq

from ctlwire.dc.codec import KIND_APP, CodecError, encode_frames, make_codec
from ctlwire.dc.ports import (GroupAnsPort, GroupPubPort, GroupQryPort, GroupSpec,
                              GroupSubPort, PortDirectionError, PortError, PortInfo,
                              PortTimeout)
from ctlwire.dc.security import CurveSecurity


def connect(sub, pub):
    info = pub.getInfo()
    sub.update(info.portHost, info.portNum)


def test_get_info_is_none_before_setup_socket(zctx):
    port = GroupPubPort(None, None, GroupSpec("gt", "i1", context=zctx))
    port.setup()
    assert port.getInfo() is None


def test_pub_info_reports_bound_port(make_port):
    info = make_port(GroupPubPort, messageType="Status").getInfo()
    assert (info.portKind, info.portScope, info.portName, info.msgType, info.portHost) == \
        ("gpub", "global", "gt.i1_pub", "Status", "127.0.0.1")
    assert info.portNum > 0


def test_sub_info_reports_port_minus_one(make_port):
    assert make_port(GroupSubPort).getInfo() == \
        PortInfo("gsub", "global", "gt.i1_sub", "group-msg", "127.0.0.1", -1)


def test_qry_info_reports_leader_message_types(make_port):
    info = make_port(GroupQryPort).getInfo()
    assert (info.portKind, info.portName, info.msgType, info.portNum) == \
        ("gqry", "gt.i1_qry", "group-mtl#group-mfl", -1)


def test_ans_port_number_is_none_until_bound(make_port):
    ans = make_port(GroupAnsPort)
    assert ans.getInfo().portNum is None
    num = ans.bind()
    assert ans.getInfo().portNum == num > 0


def test_in_socket_false_only_for_pub(make_port):
    assert [make_port(c).inSocket() for c in
            (GroupPubPort, GroupSubPort, GroupQryPort, GroupAnsPort)] == [False, True, True, True]


def test_generic_send_and_recv_move_bytes(make_port, publish):
    pub, sub = make_port(GroupPubPort), make_port(GroupSubPort)
    connect(sub, pub)
    assert publish(pub, sub, b"hello") == b"hello"
    assert sub.lastSender == pub.spec.memberId


def test_send_pyobj_uses_msgpack_by_default(make_port, publish):
    pub, sub = make_port(GroupPubPort), make_port(GroupSubPort)
    connect(sub, pub)
    publish(pub, sub, b"sync")
    pub.send_pyobj({"a": [1, 2.5, "x"]})
    assert sub.recv_pyobj(timeout=5) == {"a": [1, 2.5, "x"]}


def test_recv_pyobj_refuses_pickle_by_default(make_port, publish):
    pub, sub = make_port(GroupPubPort), make_port(GroupSubPort)
    connect(sub, pub)
    publish(pub, sub, b"sync")
    pub.send(pickle.dumps(object()))
    with pytest.raises(CodecError, match="msgpack payload"):
        sub.recv_pyobj(timeout=5)


def test_pickle_codec_when_asked(make_port, publish, zctx):
    codec = make_codec("pickle", allow_pickle=True)
    pub = make_port(GroupPubPort, codec=codec)
    sub = make_port(GroupSubPort, codec=codec)
    connect(sub, pub)
    publish(pub, sub, b"sync")
    pub.send_pyobj({1, 2})
    assert sub.recv_pyobj(timeout=5) == {1, 2}


def test_timed_messages_record_send_and_receive_time(make_port, publish):
    pub, sub = make_port(GroupPubPort, timed=True), make_port(GroupSubPort, timed=True)
    connect(sub, pub)
    before = time.time()
    publish(pub, sub, b"t")
    after = time.time()
    assert before <= sub.sendTime <= sub.recvTime <= after


def test_timed_frame_is_network_byte_order_on_the_wire(make_port, zctx):
    pub = make_port(GroupPubPort, timed=True)
    raw = zctx.socket(zmq.SUB)
    raw.setsockopt(zmq.SUBSCRIBE, b"")
    raw.connect(f"tcp://127.0.0.1:{pub.getInfo().portNum}")
    deadline = time.monotonic() + 5
    while not raw.poll(20):
        assert time.monotonic() < deadline
        pub.send(b"x")
    frames = raw.recv_multipart()
    raw.close()
    assert len(frames) == 1 and frames[0][4] == 1  # flags: timed, network order
    assert abs(struct.unpack("!d", frames[0][32:40])[0] - time.time()) < 60


def test_native_byte_order_option(make_port, publish):
    pub = make_port(GroupPubPort, timed=True, byteOrder="native")
    sub = make_port(GroupSubPort, timed=True, byteOrder="native")
    connect(sub, pub)
    publish(pub, sub, b"t")
    assert abs(sub.sendTime - time.time()) < 60


def test_recv_on_pub_port_raises_direction_error(make_port):
    with pytest.raises(PortDirectionError, match="send-only"):
        make_port(GroupPubPort).recv()


def test_send_on_sub_port_raises_direction_error(make_port):
    with pytest.raises(PortDirectionError, match="receive-only"):
        make_port(GroupSubPort).send(b"x")


def test_bound_port_refuses_update(make_port):
    with pytest.raises(PortError, match="bound port"):
        make_port(GroupPubPort).update("127.0.0.1", 1234)


def test_send_before_setup_socket_raises(zctx):
    port = GroupPubPort(None, None, GroupSpec("gt", "i1", context=zctx))
    with pytest.raises(PortError, match="setupSocket"):
        port.send(b"x")


def test_send_rejects_non_bytes(make_port):
    with pytest.raises(TypeError, match="send_pyobj"):
        make_port(GroupPubPort).send("text")


def test_sub_update_repeat_is_ignored(make_port):
    pub, sub = make_port(GroupPubPort), make_port(GroupSubPort)
    connect(sub, pub)
    connect(sub, pub)
    assert len(sub.peers) == 1


def test_sub_hears_every_publisher(make_port, publish):
    pubs = [make_port(GroupPubPort) for _ in range(3)]
    sub = make_port(GroupSubPort)
    for pub in pubs:
        connect(sub, pub)
    senders = {pub.spec.memberId for pub in pubs}
    for pub in pubs:
        publish(pub, sub, b"x")
    heard = set()
    deadline = time.monotonic() + 5
    while heard != senders and time.monotonic() < deadline:
        for pub in pubs:
            pub.send(b"x")
        if sub.getSocket().poll(20):
            sub.recv()
            heard.add(sub.lastSender)
    assert heard == senders


def test_qry_reaches_ans_and_gets_answer_by_member_id(make_port):
    ans, qry = make_port(GroupAnsPort), make_port(GroupQryPort)
    qry.update("127.0.0.1", ans.bind())
    qry.send(b"question")
    assert ans.recv(timeout=5) == b"question"
    assert ans.lastIdentity == qry.spec.memberId
    ans.send(b"answer", identity=qry.spec.memberId)
    assert qry.recv(timeout=5) == b"answer"


def test_ans_answers_last_sender_by_default(make_port):
    ans, qry = make_port(GroupAnsPort), make_port(GroupQryPort)
    qry.update("127.0.0.1", ans.bind())
    qry.send_pyobj({"q": 1})
    assert ans.recv_pyobj(timeout=5) == {"q": 1}
    ans.send_pyobj({"a": 1})
    assert qry.recv_pyobj(timeout=5) == {"a": 1}


def test_ans_answers_each_of_two_members_separately(make_port):
    ans = make_port(GroupAnsPort)
    num = ans.bind()
    q1, q2 = make_port(GroupQryPort), make_port(GroupQryPort)
    for q in (q1, q2):
        q.update("127.0.0.1", num)
        q.send(b"hi")
    for _ in range(2):
        ans.recv(timeout=5)
    ans.send(b"to-2", identity=q2.spec.memberId)
    ans.send(b"to-1", identity=q1.spec.memberId)
    assert (q1.recv(timeout=5), q2.recv(timeout=5)) == (b"to-1", b"to-2")


def test_member_ids_are_unique_uuid4_bytes():
    ids = {GroupSpec("gt", "i1").memberId for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 16 for i in ids)


def test_ans_send_to_unknown_member_raises(make_port):
    ans = make_port(GroupAnsPort)
    ans.bind()
    with pytest.raises(PortError, match="not connected"):
        ans.send(b"x", identity=b"\x00" * 16)


def test_ans_send_with_no_sender_yet_raises(make_port):
    ans = make_port(GroupAnsPort)
    ans.bind()
    with pytest.raises(PortError, match="no member to answer"):
        ans.send(b"x")


def test_qry_update_follows_new_leader(make_port):
    old, new, qry = make_port(GroupAnsPort), make_port(GroupAnsPort), make_port(GroupQryPort)
    qry.update("127.0.0.1", old.bind())
    qry.update("127.0.0.1", new.bind())
    qry.send(b"q")
    assert new.recv(timeout=5) == b"q"
    assert not old.getSocket().poll(100)


def test_qry_update_none_disconnects(make_port):
    ans, qry = make_port(GroupAnsPort), make_port(GroupQryPort)
    qry.update("127.0.0.1", ans.bind())
    qry.update(None, None)
    with pytest.raises(PortError, match="not connected to a leader"):
        qry.send(b"q")


def test_recv_timeout(make_port):
    with pytest.raises(PortTimeout):
        make_port(GroupSubPort).recv(timeout=0.05)


def test_garbage_on_sub_raises_codec_error_and_port_keeps_working(make_port, zctx, publish):
    sub = make_port(GroupSubPort)
    raw = zctx.socket(zmq.PUB)
    num = raw.bind_to_random_port("tcp://127.0.0.1")
    sub.update("127.0.0.1", num)
    deadline = time.monotonic() + 5
    while not sub.getSocket().poll(20):
        assert time.monotonic() < deadline
        raw.send_multipart([b"garbage", b"more", b"frames"])
    with pytest.raises(CodecError, match="gt.i1_sub"):
        sub.recv(timeout=1)
    while sub.getSocket().poll(0):  # flush the rest of the garbage burst
        with pytest.raises(CodecError):
            sub.recv()
    raw.send_multipart(encode_frames(KIND_APP, b"\x05" * 16, b"good"))
    assert sub.recv(timeout=5) == b"good"
    raw.close()


def test_garbage_on_ans_raises_codec_error_and_port_keeps_working(make_port, zctx):
    ans = make_port(GroupAnsPort)
    raw = zctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.ROUTING_ID, b"\x05" * 16)
    raw.connect(f"tcp://127.0.0.1:{ans.bind()}")
    raw.send(b"\xff" * 7)
    with pytest.raises(CodecError, match="shorter than the 32-byte header"):
        ans.recv(timeout=5)
    raw.send_multipart(encode_frames(KIND_APP, b"\x05" * 16, b"fine"))
    assert ans.recv(timeout=5) == b"fine"
    raw.close()


def test_garbage_on_qry_raises_codec_error_and_port_keeps_working(make_port, zctx):
    qry = make_port(GroupQryPort)
    raw = zctx.socket(zmq.ROUTER)
    qry.update("127.0.0.1", raw.bind_to_random_port("tcp://127.0.0.1"))
    qry.send(b"hello")
    assert raw.poll(5000)
    ident = raw.recv_multipart()[0]
    raw.send_multipart([ident, b"junk"])
    with pytest.raises(CodecError):
        qry.recv(timeout=5)
    raw.send_multipart([ident, *encode_frames(KIND_APP, b"\x05" * 16, b"ok")])
    assert qry.recv(timeout=5) == b"ok"
    raw.close()


def test_pub_reset_keeps_port_number_and_subscribers(make_port, publish):
    pub, sub = make_port(GroupPubPort), make_port(GroupSubPort)
    connect(sub, pub)
    num = pub.getInfo().portNum
    pub.reset()
    assert pub.getInfo().portNum == num
    assert publish(pub, sub, b"after reset") == b"after reset"


def test_sub_reset_reconnects_known_publishers(make_port, publish):
    pub, sub = make_port(GroupPubPort), make_port(GroupSubPort)
    connect(sub, pub)
    sub.reset()
    assert publish(pub, sub, b"again") == b"again"


def test_setup_socket_twice_raises(make_port):
    with pytest.raises(PortError, match="already set up"):
        make_port(GroupPubPort).setupSocket(None)


def test_spec_rejects_dotted_instance_name():
    with pytest.raises(ValueError, match="instanceName"):
        GroupSpec("gt", "a.b")


# --- CURVE ------------------------------------------------------------------------------

@pytest.fixture
def keys():
    a, b, stranger = (CurveSecurity.generate() for _ in range(3))
    a.allow(b.public_key)
    b.allow(a.public_key)
    stranger.allow(a.public_key)  # the stranger trusts a, but a does not trust it
    yield a, b, stranger
    for k in (a, b, stranger):
        k.stop()


def test_curve_allowed_subscriber_receives(make_port, keys, publish):
    a, b, _ = keys
    pub, sub = make_port(GroupPubPort, security=a), make_port(GroupSubPort, security=b)
    sub.update("127.0.0.1", pub.getInfo().portNum, a.public_key)
    assert publish(pub, sub, b"secret") == b"secret"


def test_curve_subscriber_not_on_allow_list_receives_nothing(make_port, keys, zctx):
    a, _, stranger = keys
    pub, sub = make_port(GroupPubPort, security=a), make_port(GroupSubPort, security=stranger)
    sub.update("127.0.0.1", pub.getInfo().portNum, a.public_key)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        pub.send(b"secret")
        assert not sub.getSocket().poll(20)


def test_curve_client_refuses_server_key_not_on_allow_list(make_port, keys):
    _, b, stranger = keys
    sub = make_port(GroupSubPort, security=b)
    with pytest.raises(PermissionError, match="allow-list"):
        sub.update("127.0.0.1", 5999, stranger.public_key)


def test_curve_requires_server_key(make_port, keys):
    sub = make_port(GroupSubPort, security=keys[1])
    with pytest.raises(PortError, match="serverKey"):
        sub.update("127.0.0.1", 5999)


def test_curve_query_and_answer(make_port, keys):
    a, b, _ = keys
    ans, qry = make_port(GroupAnsPort, security=a), make_port(GroupQryPort, security=b)
    qry.update("127.0.0.1", ans.bind(), a.public_key)
    qry.send(b"q")
    assert ans.recv(timeout=5) == b"q"
    ans.send(b"a")
    assert qry.recv(timeout=5) == b"a"


def test_high_water_marks_are_on_the_right_side(make_port):
    pub, sub = make_port(GroupPubPort, hwm=123), make_port(GroupSubPort, hwm=456)
    assert pub.getSocket().getsockopt(zmq.SNDHWM) == 123
    assert sub.getSocket().getsockopt(zmq.RCVHWM) == 456


def test_ans_rejects_sender_id_that_differs_from_routing_identity(make_port, zctx):
    ans = make_port(GroupAnsPort)
    raw = zctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.ROUTING_ID, b"\x05" * 16)
    raw.connect(f"tcp://127.0.0.1:{ans.bind()}")
    raw.send_multipart(encode_frames(KIND_APP, b"\x06" * 16, b"forged"))
    with pytest.raises(CodecError, match="routing identity"):
        ans.recv(timeout=5)
    raw.close()


def test_drain_returns_waiting_messages_and_counts_garbage(make_port, zctx):
    sub = make_port(GroupSubPort)
    raw = zctx.socket(zmq.PUB)
    sub.update("127.0.0.1", raw.bind_to_random_port("tcp://127.0.0.1"))
    deadline = time.monotonic() + 5
    while not sub.getSocket().poll(20):
        assert time.monotonic() < deadline
        raw.send_multipart(encode_frames(KIND_APP, b"\x05" * 16, b"probe"))
    sub.drain()  # discard the probes
    raw.send_multipart(encode_frames(KIND_APP, b"\x05" * 16, b"one"))
    raw.send(b"garbage")
    raw.send_multipart(encode_frames(KIND_APP, b"\x05" * 16, b"two"))
    got, bad = [], 0
    while len(got) < 2 and time.monotonic() < deadline + 5:
        sub.getSocket().poll(100)
        envs, n = sub.drain()
        got += [e.payload for e in envs if e.payload != b"probe"]  # late probes
        bad += n
    assert (got, bad) == ([b"one", b"two"], 1)
    raw.close()


def test_drain_on_empty_port_returns_nothing(make_port):
    assert make_port(GroupSubPort).drain() == ([], 0)
