"""The client's compiled socket round trip (``ctlwire.katcp._roundtrip``: ``recv_reply``,
``send_nowait``, ``RoundTrip``) against the plain path it replaces: ``sock.recv`` then
``StreamParser.feed``.

Run over a real connected socket pair (AF_UNIX stream: the same recv semantics as TCP
for these calls, and no port to find).
"""
from __future__ import annotations

import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctlwire.katcp import KatcpSyntaxError, Message, StreamParser
from ctlwire._ext import load_extension
from ctlwire.katcp.core import encode_message

_roundtrip = load_extension("ctlwire.katcp._roundtrip")
RoundTrip = _roundtrip.RoundTrip
recv_reply = _roundtrip.recv_reply
send_nowait = _roundtrip.send_nowait

names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,12}\Z")
mids = st.one_of(st.none(), st.integers(min_value=1, max_value=2**31 - 1))
messages = st.builds(
    lambda t, n, a, m: Message(t, n, a, m),
    st.integers(min_value=0, max_value=2), names,
    st.lists(st.binary(max_size=20), max_size=5), mids)
# whole lines, garbage lines and partial lines, as a server might send them
pieces = st.one_of(
    messages.map(lambda m: bytes(m) + b"\n"),
    messages.map(lambda m: bytes(m) + b"\r\n"),
    messages.map(bytes),  # no end of line yet
    st.sampled_from([b"\n", b"!bad\\z\n", b"#x[0] y\n", b"!", b"\r"]),
)


def reference(carried: bytes, chunk: bytes, mid: bytes):
    """What the plain path gives: feed() the chunk after the carried-over bytes."""
    sp = StreamParser(max_line_length=256)
    sp.feed(carried)
    items = sp.feed(chunk)
    return items, sp.buffered


@pytest.fixture(scope="module")
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.settimeout(5)
    b.settimeout(5)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def fresh():
    """A socket pair of this test's own (blocking, no timeout), closed at teardown."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def _check(pair, carried: bytes, chunk: bytes, mid: bytes):
    tx, rx = pair
    sp = StreamParser(max_line_length=256)
    sp.feed(carried)
    tx.sendall(chunk)
    got = recv_reply(sp, rx.fileno(), mid)
    expected, buffered = reference(carried, chunk, mid)
    if isinstance(got, Message):
        # only ever for exactly one complete reply line carrying this mid
        assert expected == [got]
        assert got.mtype == Message.REPLY and got.mid == mid
        assert chunk.count(b"\n") == 1 and chunk.endswith(b"\n") and not carried
    else:
        assert [type(x) for x in got] == [type(x) for x in expected]
        assert [x for x in got if isinstance(x, Message)] == \
            [x for x in expected if isinstance(x, Message)]
        assert [str(x) for x in got if isinstance(x, KatcpSyntaxError)] == \
            [str(x) for x in expected if isinstance(x, KatcpSyntaxError)]
    # what is held back for the next read is the same either way
    assert sp.buffered == buffered


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(pieces, min_size=1, max_size=5), st.sampled_from([b"", b"!wat", b"#x 1"]),
       mids.map(lambda m: b"%d" % m if m else b"7"))
def test_recv_reply_agrees_with_recv_and_feed(pair, chunks, carried, mid):
    chunk = b"".join(chunks)
    if not chunk:
        return
    _check(pair, carried, chunk, mid)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=1, max_value=2**31 - 1), st.lists(st.binary(max_size=30),
                                                               max_size=4))
def test_recv_reply_returns_the_awaited_reply_itself(pair, mid, args):
    tx, rx = pair
    reply = Message(Message.REPLY, "some-request", args, mid)
    tx.sendall(bytes(reply) + b"\n")
    got = recv_reply(StreamParser(), rx.fileno(), b"%d" % mid)
    assert isinstance(got, Message) and got == reply


def test_round_trip_reads_with_its_parser_as_recv_reply_does(pair):
    tx, rx = pair
    sp = StreamParser()
    rt = RoundTrip(sp, threading.Lock(), bytearray())
    tx.sendall(b"#log info 1.0 x y\n!watchdog[3] ok\n")
    assert rt.recv_reply(rx.fileno(), b"3") == [
        Message.inform("log", "info", "1.0", "x", "y"), Message.reply("watchdog", "ok", mid=3)]
    tx.sendall(b"!watchdog[4] ok\n")
    assert rt.recv_reply(rx.fileno(), b"4") == Message.reply("watchdog", "ok", mid=4)


def test_the_codec_itself_does_no_io():
    codec = load_extension("ctlwire.katcp._codec")
    for name in ("recv_reply", "send_nowait", "RoundTrip"):
        assert not hasattr(codec, name)
    assert not hasattr(StreamParser, "recv_reply")


def test_recv_reply_gives_a_list_for_another_mid_or_an_inform(pair):
    tx, rx = pair
    sp = StreamParser()
    tx.sendall(b"!watchdog[8] ok\n")
    assert recv_reply(sp, rx.fileno(), b"7") == [Message.reply("watchdog", "ok", mid=8)]
    tx.sendall(b"#watchdog[7] working\n")
    assert recv_reply(sp, rx.fileno(), b"7") == [Message.inform("watchdog", "working", mid=7)]
    tx.sendall(b"!watchdog[7] ok\n")
    assert recv_reply(sp, rx.fileno(), b"7") == Message.reply("watchdog", "ok", mid=7)


def test_recv_reply_end_of_stream_and_errors(fresh):
    a, b = fresh
    sp = StreamParser()
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        recv_reply(sp, b.fileno(), b"1")  # nothing to read
    a.close()
    assert recv_reply(sp, b.fileno(), b"1") is None  # peer closed
    b.close()
    with pytest.raises(OSError):
        recv_reply(sp, b.fileno(), b"1")  # closed descriptor: -1 -> EBADF


def test_recv_reply_over_long_single_line_is_reported(fresh):
    a, b = fresh
    sp = StreamParser(max_line_length=10)
    a.sendall(b"!watchdog[1] " + b"x" * 20 + b"\n")
    out = recv_reply(sp, b.fileno(), b"1")
    assert len(out) == 1 and isinstance(out[0], KatcpSyntaxError)
    assert "longer than the limit of 10 bytes" in str(out[0])


def test_send_nowait_sends_and_reports_errors(fresh):
    a, b = fresh
    assert send_nowait(a.fileno(), b"?watchdog[1]\n") == 13
    assert b.recv(100) == b"?watchdog[1]\n"
    # a full buffer: partial send, then -1 (EAGAIN), never a block
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = b"x" * (1 << 20)
    first = send_nowait(a.fileno(), big)
    assert 0 < first < len(big)
    assert send_nowait(a.fileno(), big) == -1
    b.close()
    # the peer is gone: EPIPE gives -1 (MSG_NOSIGNAL: no SIGPIPE)
    assert send_nowait(a.fileno(), b"x") == -1
    assert send_nowait(-1, b"x") == -1


# --- RoundTrip: the compiled core of BlockingClient.blocking_request ---------------------

def _roundtrip(fd: int, first_mid: int = 1):
    sp = StreamParser(max_line_length=256)
    rt = RoundTrip(sp, threading.Lock(), bytearray(), first_mid=first_mid)
    rt.fd = fd
    return rt, sp


def test_roundtrip_mids_count_up_and_wrap():
    rt, _ = _roundtrip(-1, first_mid=2**31 - 2)
    assert [rt.next_mid() for _ in range(4)] == [b"2147483646", b"2147483647", b"1", b"2"]
    with pytest.raises(ValueError, match="first_mid"):
        _roundtrip(-1, first_mid=0)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names, st.lists(st.binary(max_size=20), max_size=4),
       st.lists(pieces, max_size=3), st.booleans(), st.lists(pieces, max_size=2),
       st.integers(min_value=1, max_value=2**31 - 1))
def test_roundtrip_agrees_with_send_recv_and_feed(pair, name, args, before, with_reply,
                                                  after, first_mid):
    # The server's answer is already waiting in the socket when the request goes out.
    tx, rx = pair
    rt, sp = _roundtrip(rx.fileno(), first_mid)
    mid = b"%d" % first_mid
    answer = b"".join(before) + (b"!%s[%s] ok\n" % (name.encode(), mid) if with_reply
                                  else b"") + b"".join(after)
    if answer:
        tx.sendall(answer)
    # (the pair's sockets have timeouts, so Python made them non-blocking: with no
    # answer the read finds nothing at once, as when SO_RCVTIMEO passes, and gives [])
    msg = Message.request(name, *args)
    got = rt.request(msg)
    assert msg.mid == mid
    sent = encode_message(Message.REQUEST, name, args, mid)
    assert tx.recv(65536) == sent  # exactly the request went out
    assert rt.reads == 1
    expected, buffered = reference(b"", answer, mid)
    if isinstance(got, Message):
        assert expected == [got] and got.mid == mid and got.mtype == Message.REPLY
    else:
        assert isinstance(got, list)
        assert [type(x) for x in got] == [type(x) for x in expected]
        assert [x for x in got if isinstance(x, Message)] == \
            [x for x in expected if isinstance(x, Message)]
    assert sp.buffered == buffered


def test_roundtrip_hands_back_what_it_could_not_send(pair):
    tx, rx = pair
    rt, _ = _roundtrip(-1)
    msg = Message.request("watchdog")
    assert rt.request(msg) == (-1, b"?watchdog[1]\n")  # not connected
    rt.fd = rx.fileno()
    big = Message.request("big", b"x" * 70000)
    assert rt.request(big) is None  # too big for the reader-role path: not sent
    assert big.mid == b"2"
    assert rt.reads == 0


def test_roundtrip_waits_behind_queued_output(fresh):
    a, b = fresh
    wq = bytearray(b"?earlier\n")
    rt = RoundTrip(StreamParser(), threading.Lock(), wq)
    rt.fd = b.fileno()
    assert rt.request(Message.request("later")) == (-1, b"?later[1]\n")
    a.setblocking(False)
    with pytest.raises(BlockingIOError):
        a.recv(100)  # nothing overtook the queued output


def test_roundtrip_reports_a_closed_connection(fresh):
    a, b = fresh
    rt, _ = _roundtrip(b.fileno())
    a.shutdown(socket.SHUT_WR)  # the server closes; our request still goes out
    assert rt.request(Message.request("watchdog")) is False
    assert a.recv(100) == b"?watchdog[1]\n"
