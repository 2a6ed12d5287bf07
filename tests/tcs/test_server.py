"""ZMQServer, TCSSubscriber and TCSMockEvent over real loopback sockets."""
from __future__ import annotations

import json
import time

import pytest
import zmq

from ctlwire.tcs.server import TCSDBReplay, TCSMockEvent, TCSSubscriber, ZMQServer

URL = "tcp://127.0.0.1:0"


@pytest.fixture
def server():
    srv = ZMQServer(URL)
    yield srv
    srv.close()


@pytest.fixture
def subscriber(server):
    sub = TCSSubscriber(server.endpoint, timeout=5.0)
    assert server.wait_for_subscriber(timeout=5.0)
    yield sub
    sub.close()


def test_wait_for_subscriber_times_out_without_one(server):
    t0 = time.monotonic()
    assert server.wait_for_subscriber(timeout=0.2) is False
    assert time.monotonic() - t0 >= 0.19


def test_wait_for_subscriber_sees_a_topic_subscription(server):
    sub = TCSSubscriber(server.endpoint, topics=["tcs.weather"])
    try:
        assert server.wait_for_subscriber(timeout=5.0, topic="tcs.weather.wind")
        assert not server.wait_for_subscriber(timeout=0.05, topic="lrs2.hardware")
    finally:
        sub.close()


def test_wait_for_subscriber_matches_overlapping_prefixes(server):
    sub = TCSSubscriber(server.endpoint, topics=["tcs.weather.wind"])
    try:  # sending prefix "tcs." reaches a subscriber of "tcs.weather.wind"
        assert server.wait_for_subscriber(timeout=5.0, topic=["lrs2.", "tcs."])
        assert not server.wait_for_subscriber(timeout=0.05, topic=["tcs.tracker"])
    finally:
        sub.close()


def test_send_tcs_event_sets_wire_time(server, subscriber):
    before = time.time()
    server.send_tcs_event("tcs.tracker.position", {"__data": 1, "__wire_time": 0})
    topic, event = subscriber.recv(timeout=5.0)
    assert topic == "tcs.tracker.position"
    assert event["__data"] == 1 and event["__wire_time"] >= before


def test_send_tcs_event_accepts_a_json_string(server, subscriber):
    server.send_tcs_event("a.b.c", json.dumps({"__data": "x"}))
    assert subscriber.recv(timeout=5.0)[1]["__data"] == "x"


def test_send_tcs_event_rejects_bad_json(server):
    with pytest.raises(ValueError, match="not valid JSON"):
        server.send_tcs_event("a.b.c", "{nope")


def test_start_skips_none_and_returns_at_the_end(server, subscriber):
    sent = server.start(iter([["a.b.c", "{}"], None, [b"d.e.f", b'{"k": 1}']]))
    assert sent == 2
    assert [subscriber.recv(timeout=5.0)[0] for _ in range(2)] == ["a.b.c", "d.e.f"]
    assert subscriber.recv(timeout=0.1) is None


def test_start_streams_a_whole_replay(server, subscriber, small_db):
    replay = TCSDBReplay(small_db, speedup=float("inf"), topics=["tcs.sys2"])
    assert server.start(replay) == 7
    got = [subscriber.recv(timeout=5.0) for _ in range(7)]
    assert all(t.startswith("tcs.sys2") for t, _ in got)
    assert replay.stats.filtered == 13


def test_subscriber_skips_malformed_messages(server, subscriber):
    server.send_event(["a.b.c", "not json"])
    server.send_event(["a.b.c", '{"ok": true}'])
    assert subscriber.recv(timeout=5.0) == ("a.b.c", {"ok": True})
    assert subscriber.bad == 1


def test_subscriber_iteration_stops_after_timeout(server):
    sub = TCSSubscriber(server.endpoint, timeout=0.1)
    try:
        assert server.wait_for_subscriber(timeout=5.0)
        server.send_event(["a.b.c", "{}"])
        assert [t for t, _ in sub] == ["a.b.c"]
    finally:
        sub.close()


def test_close_leaves_a_shared_context_open():
    ctx = zmq.Context()
    try:
        srv = ZMQServer(URL, context=ctx)
        srv.close()
        assert not ctx.closed
        ctx.socket(zmq.PUB).close()
    finally:
        ctx.term()


def test_bind_failure_names_the_url(server):
    with pytest.raises(zmq.ZMQError, match="cannot bind"):
        ZMQServer(server.endpoint)


def test_mock_event_yields_lrs2_status_at_the_given_pace():
    mock = TCSMockEvent(sleep=0.05)
    t0 = time.monotonic()
    msgs = [next(mock) for _ in range(3)]
    assert time.monotonic() - t0 >= 0.099
    assert {m[0] for m in msgs} == {"lrs2.hardware.status"}
    assert json.loads(msgs[0][1])["__source"] == "hardware"


def _numbered(i):
    return [b"a.b.c", json.dumps({"i": i}).encode()]


def test_a_full_subscriber_is_counted_as_dropped_never_lost_silently():
    srv = ZMQServer(URL, hwm=10)
    sub = TCSSubscriber(srv.endpoint, hwm=10)
    try:
        assert srv.wait_for_subscriber(timeout=5.0)
        sent = 0
        while srv.dropped == 0 and sent < 2_000_000:  # the subscriber is not reading
            srv.send_frames(_numbered(sent))
            sent += 1
        assert srv.dropped > 0
        assert srv.delivered + srv.dropped == sent
        got = []
        while (item := sub.recv(timeout=2.0)) is not None:
            got.append(item[1]["i"])
        # exactly what the socket took arrives, in order; the refused ones are counted
        assert len(got) == srv.delivered
        assert got == sorted(got)
    finally:
        sub.close()
        srv.close(linger=0)


def test_blocking_sends_wait_for_a_slow_subscriber_and_lose_nothing():
    import threading
    srv = ZMQServer(URL, on_full="block", hwm=10)
    sub = TCSSubscriber(srv.endpoint, hwm=10)
    n = 20_000
    try:
        assert srv.wait_for_subscriber(timeout=5.0)
        sender = threading.Thread(target=lambda: [srv.send_frames(_numbered(i))
                                                   for i in range(n)])
        sender.start()
        got = [sub.recv(timeout=10.0)[1]["i"] for _ in range(n)]
        sender.join(10)
        assert got == list(range(n))
        assert srv.dropped == 0 and srv.delivered == n
    finally:
        sub.close()
        srv.close(linger=0)


def test_close_lets_queued_events_leave_before_the_context_ends():
    import threading
    ctx = zmq.Context()
    srv = ZMQServer(URL, context=ctx, on_full="block", hwm=50_000)
    sub = TCSSubscriber(srv.endpoint, hwm=10)  # its own context outlives srv's
    n = 30_000
    got = []
    try:
        assert srv.wait_for_subscriber(timeout=5.0)
        pad = "x" * 1000  # 30 MB: far more than the kernel's socket buffers hold
        for i in range(n):  # mostly queued, not yet read, when the server closes
            srv.send_frames([b"a.b.c", json.dumps({"i": i, "pad": pad}).encode()])
        reader = threading.Thread(target=lambda: got.extend(
            item[1]["i"] for item in iter(lambda: sub.recv(timeout=5.0), None)))
        reader.start()
        srv.close(linger=20.0)
        ctx.term()  # waits (bounded by the linger) for the queue to drain
        reader.join(30)
    finally:
        sub.close()
    assert got == list(range(n))


def test_wait_for_subscriber_rejects_a_negative_timeout(server):
    with pytest.raises(ValueError, match="timeout"):
        server.wait_for_subscriber(timeout=-5)
