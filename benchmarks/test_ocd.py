"""OCD heartbeat round trip between two processes on loopback: ctlwire's
``HeartBeatQuery`` to an ``ocd-heartbeat --respond`` process, beside the straightforward
baseline (a bare pyzmq PUB/SUB echo with stdlib json, from ``bench_tcs.py``) and the
limit (the same echo passing the frames back unchanged, ``_limits.py zmq-echo``). OCD
has no installable peer.

Each path has its own PUB socket and responder process, so an enquiry wakes only its
own responder. Figures are the median round trip of each round's queries.

Imports: the TCS script (its echo), the limits, the harness, ctlwire.tcs and ctlwire.ocd.
"""
from __future__ import annotations

import json
import statistics
import time

import pytest
import zmq

import _limits
import bench_tcs as bt
from _harness import Measure, Target, spawn_port, stop
from ctlwire.ocd.heart_beat import HeartBeatQuery
from ctlwire.tcs.server import ZMQServer

FAMILY = "OCD"
ENQUIRY, REPLY = b"ocd.heartbeat.enquiry", b"ocd.heartbeat.reply"


class BareQuery:
    """One enquiry on the PUB, one blocking receive on a SUB: no id check, no resend."""

    def __init__(self, server: ZMQServer, reply_url: str, use_json: bool) -> None:
        self.server, self.use_json = server, use_json
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, REPLY)
        self.sock.connect(reply_url)
        deadline = time.monotonic() + 30
        while True:  # both subscriptions (responder's and ours) must be in place
            server.socket.send_multipart([ENQUIRY, b"{}"])
            if self.sock.poll(50):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the bare echo did not answer")
        while self.sock.poll(100):
            self.sock.recv_multipart()

    def communicate(self) -> object:
        if self.use_json:
            self.server.socket.send_multipart([ENQUIRY, json.dumps({"id": "x"}).encode()])
        else:
            self.server.socket.send_multipart([ENQUIRY, b'{"id": "x"}'])
        if not self.sock.poll(5000):
            raise RuntimeError("a bare echo lost a message")
        payload = self.sock.recv_multipart()[-1]
        return json.loads(payload) if self.use_json else payload

    def close(self) -> None:
        self.sock.close(linger=0)


RESPONDERS = {
    "ctlwire": lambda endpoint: ["-m", "ctlwire.cli.ocd_heartbeat", "--respond", "--bind",
                                 "tcp://127.0.0.1:0", "--listen", endpoint,
                                 "--duration", "600"],
    "bare pyzmq+json": lambda endpoint: ["-c", bt.ECHO, endpoint],
    "bare pyzmq echo": lambda endpoint: [_limits.__file__, "zmq-echo", endpoint],
}


@pytest.fixture(scope="module")
def queries():
    made, procs, servers = {}, [], []
    try:
        for name, argv in RESPONDERS.items():
            server = ZMQServer("tcp://127.0.0.1:0")
            servers.append(server)
            proc, line = spawn_port(argv(server.endpoint), f"{name} responder")
            procs.append(proc)
            reply_url = line.split()[1]
            if name == "ctlwire":
                query = HeartBeatQuery(server, reply_url, timeout=10.0)
                assert query.communicate() is not None  # joins, and warms up
            else:
                query = BareQuery(server, reply_url, use_json=name.endswith("json"))
            made[name] = query
        yield made
    finally:
        for query in made.values():
            query.close()
        stop(*procs)
        for server in servers:
            server.close()


def test_heartbeat_round_trip(benchmark, suite, queries):
    n = suite.pick(300, 1000)

    def median_rtt_us(query) -> float:
        rtt = []
        for _ in range(n):
            t0 = time.perf_counter()
            ok = query.communicate()
            rtt.append(time.perf_counter() - t0)
            assert ok is not None
        return statistics.median(rtt) * 1e6

    m = Measure(FAMILY, "heartbeat round trip, two processes, median", "us",
                {name: (lambda q=q: median_rtt_us(q)) for name, q in queries.items()},
                limit="bare pyzmq echo", higher_is_better=False,
                targets=[Target("max", 300.0)])
    suite.run(benchmark, m, rounds=suite.pick(2, 4))
