"""The compiled libzmq multipart path against pyzmq as the reference."""
from __future__ import annotations

import time

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from ctlwire._zmq import bind_random
from ctlwire.roc._fastzmq import raw_socket

_messages = st.lists(st.binary(max_size=300), min_size=1, max_size=9)


@pytest.fixture(scope="module")
def pair():
    ctx = zmq.Context.instance()
    a = ctx.socket(zmq.DEALER)
    b = ctx.socket(zmq.DEALER)
    for s in (a, b):
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVTIMEO, 5000)
    port = bind_random(a)
    b.connect(f"tcp://127.0.0.1:{port}")
    b.send(b"ping")  # both ends connected before the first example
    assert a.recv() == b"ping"
    ra, rb = raw_socket(a), raw_socket(b)
    if ra is None:
        pytest.skip("raw libzmq path unavailable on this platform")
    yield a, b, ra, rb
    a.close()
    b.close()


@settings(max_examples=200, deadline=None)
@given(_messages)
def test_raw_send_is_received_intact_by_pyzmq(pair, frames):
    a, b, ra, rb = pair
    assert ra.send_multipart(frames) is True
    assert b.recv_multipart() == frames


@settings(max_examples=200, deadline=None)
@given(_messages)
def test_pyzmq_send_is_received_intact_raw(pair, frames):
    a, b, ra, rb = pair
    b.send_multipart(frames)
    assert ra.recv_multipart() == frames


def test_nonblocking_receive_with_nothing_queued_returns_none(pair):
    a, b, ra, rb = pair
    assert ra.recv_multipart(False) is None


def test_send_without_peer_under_immediate_reports_false():
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.IMMEDIATE, 1)
    s.connect("tcp://127.0.0.1:9")  # nobody listens on the discard port
    try:
        raw = raw_socket(s)
        if raw is None:
            pytest.skip("raw libzmq path unavailable")
        assert raw.send_multipart([b"", b"x"]) is False
    finally:
        s.close()


def test_non_bytes_frame_is_a_type_error(pair):
    a, b, ra, rb = pair
    with pytest.raises(TypeError):
        ra.send_multipart(["text"])


# -- RawMulti: one receiver over several sockets, against a plain model -----------------
N_MULTI = 3


@pytest.fixture(scope="module")
def multi_pairs():
    """Three connected DEALER pairs: ``near`` ends under one RawMulti (if available) and
    one pyzmq stand-in, ``far`` ends to send from."""
    from ctlwire.roc import _fastzmq
    ctx = zmq.Context.instance()
    near, far = [], []
    for _ in range(N_MULTI):
        a, b = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
        for s in (a, b):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVTIMEO, 5000)
        b.connect(f"tcp://127.0.0.1:{bind_random(a)}")
        b.send(b"ping")
        assert a.recv() == b"ping"
        near.append(a)
        far.append(b)
    mod = _fastzmq._setup()
    yield near, far, mod
    for s in near + far:
        s.close()


_script = st.lists(st.one_of(
    # (socket, frames) sent from the far end; or ("echo", socket): near end sends
    st.tuples(st.integers(0, N_MULTI - 1), _messages),
    st.tuples(st.just("echo"), st.integers(0, N_MULTI - 1)),
    st.tuples(st.just("recv"), st.none()),
), max_size=30)


def _run_multi(mux, far, script) -> None:
    # reference: per socket, a FIFO of what was sent; every message must come out of
    # mux.recv exactly once, in order per socket, and nothing else
    expected: list[list] = [[] for _ in range(N_MULTI)]
    for a, b in script:
        if a == "echo":
            assert mux.send(b, [b"echo"]) is True
            assert far[b].recv_multipart() == [b"echo"]
        elif a == "recv":
            if any(expected):
                got = mux.recv(5000)
                assert got is not None, "a queued message was not delivered"
                i, frames = got
                assert expected[i] and frames == expected[i].pop(0)
        else:
            far[a].send_multipart(b)
            expected[a].append(b)
    while any(expected):
        got = mux.recv(5000)
        assert got is not None, "a queued message was not delivered"
        i, frames = got
        assert expected[i] and frames == expected[i].pop(0)
    assert mux.recv(0) is None  # nothing else came out


@settings(max_examples=100, deadline=None)
@given(_script)
def test_raw_multi_delivers_every_message_once_in_order(multi_pairs, script):
    near, far, mod = multi_pairs
    if mod is None:
        pytest.skip("raw libzmq path unavailable on this platform")
    _run_multi(mod.RawMulti(near), far, script)


@settings(max_examples=30, deadline=None)
@given(_script)
def test_pyzmq_multi_delivers_every_message_once_in_order(multi_pairs, script):
    from ctlwire.roc._fastzmq import _PyMulti
    near, far, _ = multi_pairs
    _run_multi(_PyMulti(near), far, script)


_script_one = st.lists(st.one_of(
    st.tuples(st.just(0), _messages),
    st.tuples(st.just("echo"), st.just(0)),
    st.tuples(st.just("recv"), st.none()),
), max_size=30)


@settings(max_examples=50, deadline=None)
@given(_script_one)
def test_one_socket_multi_delivers_every_message_once_in_order(multi_pairs, script):
    # one socket (a server's usual case) gets a plain blocking receive instead
    from ctlwire.roc._fastzmq import _Single, multi
    near, far, _ = multi_pairs
    mux = multi(near[:1])
    assert isinstance(mux, _Single)
    _run_multi(mux, far, script)


def test_raw_multi_times_out_when_nothing_arrives(multi_pairs):
    near, far, mod = multi_pairs
    if mod is None:
        pytest.skip("raw libzmq path unavailable on this platform")
    mux = mod.RawMulti(near)
    t0 = time.monotonic()
    assert mux.recv(50) is None
    assert time.monotonic() - t0 < 5.0
