"""Calls that run once: the reply cache, and a repeated request through a real broker."""
from __future__ import annotations

import zmq

from ctlwire import _json
from ctlwire.roc import RocClient, rpc


class Counter:
    def __init__(self) -> None:
        self.value = 0

    def increment(self) -> int:
        self.value += 1
        return self.value


def test_a_repeated_request_is_answered_from_the_cache_without_running():
    c, cache = Counter(), rpc.ReplyCache()
    body = rpc.encode_request(7, "increment", client="abc")
    first = rpc.execute(c, body, cache)
    assert rpc.execute(c, body, cache) == first
    assert c.value == 1 and cache.hits == 1
    # another client's call 7, and the same client's call 8, are other calls
    rpc.execute(c, rpc.encode_request(7, "increment", client="xyz"), cache)
    rpc.execute(c, rpc.encode_request(8, "increment", client="abc"), cache)
    assert c.value == 3


def test_without_a_client_id_or_a_cache_every_request_runs():
    c, cache = Counter(), rpc.ReplyCache()
    body = rpc.encode_request(7, "increment")
    rpc.execute(c, body, cache)
    rpc.execute(c, body, cache)
    rpc.execute(c, rpc.encode_request(7, "increment", client="abc"))
    rpc.execute(c, rpc.encode_request(7, "increment", client="abc"))
    assert c.value == 4


def test_the_cache_is_bounded_per_client_and_in_clients():
    cache = rpc.ReplyCache(per_client=3, clients=2)
    for i in range(5):
        cache.put("a", i, b"r%d" % i)
    assert [cache.get("a", i) for i in range(5)] == [None, None, b"r2", b"r3", b"r4"]
    cache.put("b", 0, b"b0")
    cache.put("c", 0, b"c0")      # a third client: the least recently heard goes
    assert cache.get("a", 4) is None
    assert cache.get("b", 0) == b"b0" and cache.get("c", 0) == b"c0"
    assert len(cache) == 2


def test_errors_are_cached_too_so_a_failing_call_does_not_run_again():
    calls = []

    class Flaky:
        def go(self):
            calls.append(1)
            raise RuntimeError("no")

    cache = rpc.ReplyCache()
    body = rpc.encode_request(1, "go", client="c")
    assert rpc.execute(Flaky(), body, cache) == rpc.execute(Flaky(), body, cache)
    assert len(calls) == 1


def test_the_same_request_sent_twice_through_the_broker_runs_once(broker, serve, ep,
                                                                  wait_for):
    counter = Counter()
    serve("counter", counter)
    client = RocClient(ep, timeout=5.0)
    try:
        wait_for(lambda: client.service_available("counter"), 5, "the server")
    finally:
        client.close()
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, 5000)
    dealer.connect(ep.rocBroker)
    try:
        msg = [b"", b"MDPC01", b"counter", rpc.encode_request(1, "increment", client="me")]
        dealer.send_multipart(msg)
        dealer.send_multipart(msg)
        replies = [_json.loads(dealer.recv_multipart()[3]) for _ in range(2)]
        assert [r["result"] for r in replies] == [1, 1]
        assert counter.value == 1
    finally:
        dealer.close()
