"""A full subscriber queue: the pub side waits, then drops with a count; never in silence.

A plain PUB socket drops a message for a subscriber whose queue is full and says
nothing. Here a subscriber that never reads fills its queue; every message a send
accepted must then reach it, in order, once it reads, and every refused one is counted.
"""
from __future__ import annotations

import logging
import threading
import time

import pytest
import zmq

from ctlwire.dc import _framing
from ctlwire.dc.codec import KIND_APP, KIND_CONTROL, NETWORK, decode_frames, make_codec
from ctlwire.dc.ports import GroupPubPort, GroupSpec, PortTimeout

from .conftest import wait_for

KNOWN = bytes(range(16))
BIG = b"x" * 65536          # fills the kernel's buffers in a few dozen messages
LIMIT = 5000                # bound of every filling loop


def _stalled_sub(ctx: zmq.Context, port: int) -> zmq.Socket:
    """A subscriber to everything, with the smallest queues, that reads only when told."""
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 1)
    sub.setsockopt(zmq.RCVBUF, 4096)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    return sub


def _joined(send, sub: zmq.Socket) -> None:
    """Probe until the subscriber hears one (before it joins, a PUB sends to nobody)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        send(b"probe")
        if sub.poll(20):
            sub.recv()
            return
    raise AssertionError("the subscriber never joined")


def _app_payloads(sub: zmq.Socket, until: bytes, timeout: float = 30.0) -> list[bytes]:
    """Read application payloads (probes and control messages left out) up to ``until``."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sub.poll(200):
            continue
        env = decode_frames([sub.recv()], False, NETWORK)
        if env.kind != KIND_APP or env.payload == b"probe":
            continue
        name = env.payload.split(b"|", 1)[0]
        got.append(name)
        if name == until:
            return got
    raise AssertionError(f"{until!r} never arrived; got {len(got)} messages")


def _fill(send, limit: int = LIMIT) -> int:
    """Send numbered big messages until one is refused; return how many were accepted."""
    for i in range(limit):
        if not send(b"m%d|" % i + BIG):
            return i
    raise AssertionError(f"{limit} messages of 64 KiB were all accepted by a subscriber "
                         "that reads nothing: something dropped them in silence")


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.mark.parametrize("raw", [True, False])
def test_sender_waits_then_counts_and_every_accepted_message_arrives(ctx, raw):
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.XPUB_NODROP, 1)
    pub.setsockopt(zmq.SNDHWM, 2)
    pub.setsockopt(zmq.SNDBUF, 4096)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = _stalled_sub(ctx, port)
    try:
        tx = _framing.Sender(pub, KNOWN, False, False, make_codec(), raw=raw,
                             send_timeout=0.05)
        _joined(lambda p: tx.send(KIND_APP, p), sub)
        accepted = _fill(lambda p: tx.send(KIND_APP, p))
        assert accepted > 0
        assert (tx.dropped, tx.dropped_control) == (1, 0)
        # control messages never wait, however long application messages may
        tx.send_timeout = 5.0
        t0 = time.monotonic()
        assert tx.send(KIND_CONTROL, b"heartbeat") is False
        assert time.monotonic() - t0 < 2.5
        assert (tx.dropped, tx.dropped_control) == (1, 1)
        # an application message waits for room: it goes once the subscriber reads
        reader_got: list[list[bytes]] = []
        reader = threading.Thread(
            target=lambda: reader_got.append(_app_payloads(sub, b"last")))
        reader.start()
        assert tx.send(KIND_APP, b"last|") is True
        reader.join(60)
        assert not reader.is_alive()
        assert reader_got == [[b"m%d" % i for i in range(accepted)] + [b"last"]]
        assert tx.dropped == 1
    finally:
        sub.close(0)
        pub.close(0)


def test_sender_refuses_a_negative_timeout(ctx):
    with ctx.socket(zmq.PUB) as sock, pytest.raises(ValueError,
                                                      match="send_timeout must be >= 0"):
        _framing.Sender(sock, KNOWN, False, False, make_codec(), send_timeout=-1.0)


def test_pub_port_raises_instead_of_dropping(make_port, zctx):
    pub = make_port(GroupPubPort, hwm=2, sendTimeout=0.05)
    sub = _stalled_sub(zctx, pub.getInfo().portNum)
    try:
        _joined(pub.send, sub)

        def send(payload: bytes) -> bool:
            try:
                pub.send(payload)
                return True
            except PortTimeout as exc:
                assert "queue stayed full for 0.05 s (hwm 2); message not sent" in str(exc)
                return False
        accepted = _fill(send)
        got = []
        reader = threading.Thread(target=lambda: got.append(_app_payloads(sub, b"last")))
        reader.start()
        wait_for(lambda: send(b"last|"), timeout=30)
        reader.join(60)
        assert got == [[b"m%d" % i for i in range(accepted)] + [b"last"]]
    finally:
        sub.close(0)


def test_spec_refuses_a_negative_send_timeout():
    with pytest.raises(ValueError, match="sendTimeout must be >= 0 seconds"):
        GroupSpec("gt", "i1", sendTimeout=-1)


def test_group_counts_what_it_could_not_send_and_says_so(make_group, caplog):
    caplog.set_level(logging.WARNING, logger="ctlwire.dc.group")
    g = make_group(hwm=2, sendTimeout=0.05)
    ctx = zmq.Context()
    sub = _stalled_sub(ctx, g.pub.getInfo().portNum)
    try:
        _joined(g.send_bytes, sub)
        accepted = _fill(g.send_bytes)
        assert g.send_dropped == 1
        wait_for(lambda: "not sent since the last heartbeat" in caplog.text, timeout=10)
        # heartbeats found the queue full as well: counted, not lost in silence
        assert g.control_dropped >= 1
        got = _app_payloads(sub, b"m%d" % (accepted - 1))
        assert got == [b"m%d" % i for i in range(accepted)]
    finally:
        sub.close(0)
        ctx.destroy(linger=0)
