"""The compiled sender and receiver against the pure-Python reference, over real sockets.

Random bursts of well-formed and malformed messages go through a real loopback socket
into :class:`ctlwire.dc._framing.Receiver`; what it keeps, drops and hands to the slow
path must be what the reference (``test_codec.reference_decode``) says. Both the raw
libzmq path and the pyzmq path are checked.
"""
from __future__ import annotations

import time

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctlwire.dc import codec, ports  # noqa: F401  (importing ports binds raw libzmq)
from ctlwire.dc.codec import _framing, make_codec

from .test_codec import reference_decode, reference_frame

KNOWN = b"\x11" * 16
STRANGER = b"\x22" * 16
BANNED = b"\x33" * 16


def reference_drain(frames: list[list[bytes]], timed: bool, order: str, channel: str,
                    router: bool) -> tuple[list, list, int, int]:
    """What the receiver should do with each message: (kept, slow, malformed, filtered)."""
    kept, slow, malformed, filtered = [], [], 0, 0
    for parts in frames:
        if len(parts) != (2 if router else 1):
            malformed += 1
            continue
        got = reference_decode(parts[-1], timed, order)
        if got is None or (router and parts[0] != got[1]):
            malformed += 1
            continue
        kind, sender, payload, t, term = got
        if sender == BANNED:
            filtered += 1
        elif kind == codec.KIND_APP and (sender == KNOWN or channel != "group"):
            kept.append((sender, payload, term, t))
        else:
            slow.append((kind, sender, payload, t, term))
    return kept, slow, malformed, filtered


message = st.builds(
    reference_frame, st.sampled_from([codec.KIND_APP, codec.KIND_CONTROL]),
    st.sampled_from([KNOWN, STRANGER, BANNED]), st.binary(max_size=20),
    st.none() | st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["network", "native"]), st.integers(0, 2**64 - 1))
garbage = st.binary(max_size=40)


@pytest.fixture(scope="module")
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.mark.parametrize("raw", [True, False], ids=["libzmq", "pyzmq"])
@pytest.mark.parametrize("router", [False, True], ids=["pull", "router"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msgs=st.lists(st.one_of(message, garbage).map(lambda f: [f])
                     | st.lists(garbage, min_size=2, max_size=3), min_size=1, max_size=30),
       timed=st.booleans(), order=st.sampled_from(["network", "native"]),
       channel=st.sampled_from(["group", "query"]))
def test_receiver_matches_reference(ctx, raw, router, msgs, timed, order, channel):
    if router:
        rx_sock, tx_socks = ctx.socket(zmq.ROUTER), {}
    else:
        rx_sock, tx_socks = ctx.socket(zmq.PULL), {}
    port = rx_sock.bind_to_random_port("tcp://127.0.0.1")
    sent: list[list[bytes]] = []
    try:
        rx = _framing.Receiver(rx_sock, timed, order == "native", channel, make_codec(),
                               router=router, raw=raw)
        assert rx.raw == (raw and _framing.is_bound())
        for parts in msgs:
            if router:
                # the routing identity is the sender's id when the frame names one
                ident = parts[-1][16:32] if len(parts[-1]) >= 32 else b"\x44" * 16
                tx = tx_socks.get(ident)
                if tx is None:
                    tx = tx_socks[ident] = ctx.socket(zmq.DEALER)
                    tx.setsockopt(zmq.ROUTING_ID, ident)
                    tx.connect(f"tcp://127.0.0.1:{port}")
                tx.send_multipart(parts)
                sent.append([ident, *parts])
            else:
                tx = tx_socks.get(b"")
                if tx is None:
                    tx = tx_socks[b""] = ctx.socket(zmq.PUSH)
                    tx.connect(f"tcp://127.0.0.1:{port}")
                tx.send_multipart(parts)
                sent.append(parts)
        batch, heard, slow = [], {}, []
        got = malformed = filtered = 0
        deadline = time.monotonic() + 10
        while got < len(msgs) and time.monotonic() < deadline:
            rx_sock.poll(50)
            g, m, f = rx.drain(1000, {KNOWN: object()}, lambda s: s != BANNED, batch, heard,
                               slow)
            got, malformed, filtered = got + g, malformed + m, filtered + f
        # Several DEALERs: arrival order between them is not defined, so compare sorted.
        want_kept, want_slow, want_mal, want_filt = reference_drain(
            [p for p in sent] if not router else
            [[p[0], *p[1:]] for p in sent], timed, order, channel, router)
        assert got == len(msgs)
        assert (malformed, filtered) == (want_mal, want_filt)
        kept = [(m.sender, m.data, m.term, m.send_time) for m in batch]
        assert sorted(kept, key=repr) == sorted(want_kept, key=repr)
        assert sorted(slow, key=repr) == sorted(want_slow, key=repr)
        # Every well-formed, unfiltered message from a known member counts as hearing it.
        assert set(heard) == ({KNOWN} if any(k[0] == KNOWN for k in want_kept)
                              or any(s[1] == KNOWN for s in want_slow) else set())
        assert all(m.channel == channel for m in batch)
        if timed:
            assert all(m.recv_time is not None for m in batch)
    finally:
        for s in tx_socks.values():
            s.close(0)
        rx_sock.close(0)


@pytest.mark.parametrize("raw", [True, False], ids=["libzmq", "pyzmq"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(st.binary(max_size=50), min_size=1, max_size=20),
       timed=st.booleans(), order=st.sampled_from(["network", "native"]),
       term=st.integers(0, 2**64 - 1))
def test_sender_frames_match_reference(ctx, raw, payloads, timed, order, term):
    tx_sock, rx_sock = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    port = rx_sock.bind_to_random_port("tcp://127.0.0.1")
    tx_sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        tx = _framing.Sender(tx_sock, KNOWN, timed, order == "native", make_codec(), raw=raw)
        tx.term = term
        before = time.time()
        for p in payloads:
            assert tx.send(codec.KIND_APP, p)
        after = time.time()
        for p in payloads:
            assert rx_sock.poll(5000)
            frame = rx_sock.recv()
            kind, sender, payload, t, got_term = reference_decode(frame, timed, order)
            assert (kind, sender, payload, got_term) == (codec.KIND_APP, KNOWN, p, term)
            if timed:
                assert before <= t <= after
            assert frame == reference_frame(kind, sender, payload, t, order, term)
    finally:
        tx_sock.close(0)
        rx_sock.close(0)


def test_sender_refuses_after_close(ctx):
    sock = ctx.socket(zmq.PUB)
    try:
        tx = _framing.Sender(sock, KNOWN, False, False, make_codec(), KeyError, "g")
        tx.close()
        with pytest.raises(KeyError, match="g was left"):
            tx.send_obj({"x": 1})
    finally:
        sock.close(0)


def test_send_obj_of_unencodable_raises_codec_type_error(ctx):
    sock = ctx.socket(zmq.PUB)
    try:
        tx = _framing.Sender(sock, KNOWN, False, False, make_codec())
        with pytest.raises(TypeError, match="msgpack codec cannot encode"):
            tx.send_obj(object())
    finally:
        sock.close(0)


def test_message_obj_raises_codec_error_for_bad_payload():
    msg = _framing.GroupMessage(KNOWN, b"\xc1", "group", None, None, make_codec(), 3)
    assert msg.term == 3
    with pytest.raises(codec.CodecError, match="msgpack payload"):
        msg.obj()


def test_inbox_hands_out_batches_in_order_and_times_out():
    inbox = _framing.Inbox(KeyError, "g")
    inbox.put([1, 2])
    inbox.put([3])
    assert [inbox.get(0), inbox.get(), inbox.get(1)] == [1, 2, 3]
    t0 = time.monotonic()
    with pytest.raises(KeyError, match="g: no message within 0.05 s"):
        inbox.get(0.05)
    assert time.monotonic() - t0 >= 0.04


def test_inbox_wakes_a_blocked_reader():
    import threading
    inbox = _framing.Inbox()
    got: list = []
    reader = threading.Thread(target=lambda: got.extend([inbox.get(10), inbox.get(10)]))
    reader.start()
    time.sleep(0.05)  # let it block (an early put would be found without waiting)
    inbox.put(["a"])
    inbox.put(["b"])
    reader.join(10)
    assert got == ["a", "b"] and len(inbox) == 0


def test_group_binds_the_compiled_paths_unless_a_subclass_overrides_them(tmp_path):
    from ctlwire.dc.discovery import DirectoryDiscovery
    from ctlwire.dc.group import Group

    class Logged(Group):
        def send(self, obj):  # type: ignore[no-untyped-def]
            self.sent = obj
            super().send(obj)

    with Group("F", "a", discovery=DirectoryDiscovery(tmp_path)) as g:
        assert g.recv == g._inbox.get and g.send == g._sender.send_obj
    with Logged("F", "b", discovery=DirectoryDiscovery(tmp_path)) as h:
        h.send({"x": 1})
        assert h.sent == {"x": 1}
