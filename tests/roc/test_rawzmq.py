"""The compiled libzmq multipart path against pyzmq as the reference."""
from __future__ import annotations

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
