"""Pipelined connections (a ctlwire extension of 7/MDP): a ctlwire broker hands one
connection of a RocServer several calls at once; any other MDP broker sees ordinary
workers and gives each one call at a time, and the server works with both."""
from __future__ import annotations

import threading
from collections import deque

import pytest
import zmq

from ctlwire.roc import RocClient, RocServer


def _calls_in_flight(client: RocClient, rec, n: int) -> None:
    """``n`` calls at once: all answered, each run once, never two at a time."""
    futures = [client.call_async("rec", "work", i) for i in range(n)]
    assert [f.result() for f in futures] == list(range(n))
    assert rec.most == 1 and sorted(rec.order) == list(range(n))


@pytest.mark.parametrize("pipeline, deepest", [(8, (2, 8)), (1, (1, 1))],
                         ids=["pipelined", "plain"])
def test_calls_in_flight_through_a_ctlwire_broker(ep, broker, serve, wait_for, recorder,
                                                  pipeline, deepest):
    serve("rec", recorder, connections=2, pipeline=pipeline)
    with RocClient(ep, timeout=10.0) as c:
        wait_for(lambda: broker.stats()["services"].get("rec") == 2, 10,
                 "both connections registered")
        _calls_in_flight(c, recorder, 40)
    # pipelined: several calls on one connection at once, never past the depth;
    # plain 7/MDP: one
    low, high = deepest
    assert low <= broker.stats()["deepest"] <= high


def test_pipeline_must_be_between_1_and_255(ep, camera):
    for bad in (0, 256, 2.0):
        with pytest.raises(ValueError, match="pipeline must be an int from 1 to 255"):
            RocServer(ep, "cam", camera, pipeline=bad)


class PlainBroker:
    """The least a 7/MDP 0.1 broker does, knowing nothing of ctlwire: routing ids are
    opaque, each worker gets one request and the next only after its reply."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.idle: deque[bytes] = deque()
        self.busy: dict[bytes, bytes] = {}     # worker -> client it serves
        self.waiting: deque[tuple[bytes, list[bytes]]] = deque()
        self.identities: set[bytes] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def _dispatch(self) -> None:
        while self.idle and self.waiting:
            worker = self.idle.popleft()
            client, body = self.waiting.popleft()
            self.busy[worker] = client
            self.sock.send_multipart([worker, b"", b"MDPW01", b"\x02", client, b""] + body)

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(50):
                continue
            frames = self.sock.recv_multipart()
            sender, proto = frames[0], frames[2]
            if proto == b"MDPC01":
                self.waiting.append((sender, frames[4:]))
            elif frames[3] == b"\x01":                       # READY
                self.identities.add(sender)
                self.idle.append(sender)
            elif frames[3] == b"\x03":                       # REPLY
                assert self.busy.pop(sender) == frames[4]
                self.sock.send_multipart([frames[4], b"", b"MDPC01", b"rec"] + frames[6:])
                self.idle.append(sender)
            self._dispatch()
        self.sock.close(0)


def test_a_pipelined_server_works_with_a_broker_that_knows_nothing_of_it(serve, wait_for,
                                                                         recorder):
    ctx = zmq.Context()
    plain = PlainBroker(ctx)
    plain.thread.start()
    endpoint = f"tcp://127.0.0.1:{plain.port}"
    serve("rec", recorder, 0.5, endpoint=endpoint, connections=3, pipeline=32)
    try:
        with RocClient(endpoint, timeout=10.0, retry=False) as c:
            wait_for(lambda: len(plain.identities) == 3, 10, "three connections registered")
            # the routing ids announce the extension; this broker just does not use it
            assert all(len(i) == 17 and i.endswith(b"\x20") for i in plain.identities)
            _calls_in_flight(c, recorder, 20)
    finally:
        plain.stop.set()
        plain.thread.join(5)
        ctx.destroy(linger=0)
