"""TCS event replay: ctlwire's ``TCSDBReplay`` beside the straightforward pure-Python
replay (stdlib ``sqlite3`` + ``json``, the baseline the replay issue named) and the
limit, reading the same rows with the sqlite3 C API and handing them on unconverted
(``ctlwire.tcs._rawscan``). TCS has no installable peer.

The database is generated (``ctlwire.tcs.events.generate_database``: 8 attributes per
event, 1,000 events/s of telescope time); the baseline comes from ``bench_tcs.py``.
Unpaced replay runs in this process (rounds keep the best); paced replay sends into a
PUB socket drained by a subscriber process and reports the p99 lateness of each event
against its deadline.

Imports: the TCS script, the harness, ctlwire.tcs.
"""
from __future__ import annotations

import collections
import os
import subprocess

import pytest
import zmq

import bench_tcs as bt
from _harness import Measure, Target, spawn, stop
from ctlwire.tcs import _rawscan
from ctlwire.tcs.events import generate_database
from ctlwire.tcs.server import TCSDBReplay, ZMQServer

FAMILY = "TCS"
INF = float("inf")
DB_RATE = 1000.0  # events per second of telescope time in the generated databases


@pytest.fixture(scope="module")
def database(suite, tmp_path_factory):
    n = suite.pick(20_000, 200_000)
    path = str(tmp_path_factory.mktemp("tcs") / "events.sqlite")
    generate_database(path, n, rate=DB_RATE)
    return path, n


def _events_per_s(make_iter, n: int):
    import time

    t0 = time.perf_counter()
    count = sum(1 for msg in make_iter() if msg is not None)
    elapsed = time.perf_counter() - t0
    assert count == n, f"replayed {count} of {n} events"
    return n / elapsed


def test_unpaced_replay(benchmark, suite, database):
    db, n = database
    sink = collections.deque(maxlen=0).append

    def raw_scan() -> float:
        import time

        t0 = time.perf_counter()
        got = _rawscan.scan(db, sink)
        assert got == n
        return n / (time.perf_counter() - t0)

    m = Measure(FAMILY, "unpaced replay, file -> [topic, JSON], both conversions",
                "events/s",
                {"ctlwire": lambda: _events_per_s(
                    lambda: TCSDBReplay(db, speedup=INF, convert_number=True,
                                        convert_bool=True), n),
                 "pure Python sqlite3+json": lambda: _events_per_s(
                     lambda: bt.PyJoinReplay(db), n),
                 "C API read, no conversion": raw_scan},
                limit="C API read, no conversion", aggregate="best",
                targets=[Target("peer", 5.0, "pure Python sqlite3+json")])
    suite.run(benchmark, m, rounds=suite.pick(2, 3))


@pytest.fixture(scope="module")
def paced_database(suite, tmp_path_factory):
    n = suite.pick(10_000, 60_000)
    path = str(tmp_path_factory.mktemp("tcs_paced") / "paced.sqlite")
    generate_database(path, n, rate=DB_RATE)
    return path, n


def test_paced_replay(benchmark, suite, paced_database):
    db, n = paced_database
    rate = 20_000.0

    def paced() -> float:
        server = ZMQServer("tcp://127.0.0.1:0")
        server.socket.setsockopt(zmq.SNDHWM, 0)
        drain = spawn(["-c", bt.DRAIN, server.endpoint], stdout=subprocess.PIPE, text=True)
        try:
            if not server.wait_for_subscriber(timeout=30):
                raise RuntimeError("the subscriber process did not connect")
            replay = TCSDBReplay(db, speedup=rate / DB_RATE, convert_number=True,
                                 convert_bool=True)
            server.start(replay)
            assert replay.stats.sent == n
            return replay.stats.lateness_percentile(99) * 1e6
        finally:
            server.close()
            try:
                drain.wait(timeout=20)
            finally:
                stop(drain)

    m = Measure(FAMILY, f"paced replay at {rate:,.0f} events/s, p99 lateness", "us",
                {"ctlwire": paced}, higher_is_better=False,
                targets=[Target("max", 200.0)],
                note="no peer or limit: pure Python cannot keep this pace")
    suite.run(benchmark, m, rounds=suite.pick(1, 3))


def test_paced_replay_with_control_port(benchmark, suite, paced_database):
    db, n = paced_database
    rate = 20_000.0

    def paced(control: bool):
        def one() -> float:
            p50, p99, mx, sent = bt.paced_control_round(db, DB_RATE, rate, control)
            assert sent == n, f"sent {sent} of {n} events"
            return p99 * 1e6
        return one

    m = Measure(FAMILY, f"paced replay at {rate:,.0f} events/s with the KATCP control "
                        "port open, p99 lateness", "us",
                {"ctlwire": paced(True), "compiled loop, no control port": paced(False)},
                limit="compiled loop, no control port", higher_is_better=False,
                targets=[Target("max", 200.0)],
                note="tcs-replay --katcp-port: steered replay, a KATCP client sampling a "
                     "sensor; limit: the same events through the compiled loop alone")
    suite.run(benchmark, m, rounds=suite.pick(1, 3))


def test_unpaced_replay_into_a_recorder(benchmark, suite, database, tmp_path_factory):
    """Issue 14: the unpaced replay with back-pressure into a ``tcs-record`` process,
    in events per second until the recorder has committed every event (its index
    built, the process exited), beside the same replay with no subscriber (the limit:
    what the replay reaches when delivery costs nothing) and a subscriber process that
    only counts (what back-pressure through pyzmq costs by itself).  Every event is
    checked to be in the recording.  CPU: the child's µs per event, start-up included."""
    db, n = database
    tmp = str(tmp_path_factory.mktemp("tcs_record"))

    def into(child):
        def one():
            _, t_all, cpu = bt._unpaced_into(db, n, child, tmp)
            return n / t_all, (cpu if child else None)
        return one

    m = Measure(FAMILY, "unpaced replay into a tcs-record process, all committed",
                "events/s",
                {"ctlwire": into("record"),
                 "bare counting SUB process": into("count"),
                 "no subscriber": into(None)},
                limit="no subscriber", targets=[Target("limit", 0.8)],
                note="both processes and both zmq I/O threads share the machine's cores; "
                     "the recorder writes 9 sqlite rows per event and builds the "
                     "attribute_name index at the end (docs/tcs-ocd.md, Recorder)")
    suite.run(benchmark, m, rounds=suite.pick(1, 3))
