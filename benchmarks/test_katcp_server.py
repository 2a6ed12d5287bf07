"""KATCP device server: ctlwire's beside aiokatcp's and the raw uvloop echo server.

The servers and their handlers come from ``bench_katcp_server.py``; the limit is
``_limits.py echo-server`` (canned replies, nothing parsed or formatted). Each runs in
its own process; this process drives them with raw sockets. One at a time, the server's
CPU time per request is recorded beside the rate: a round trip is mostly the kernel's
loopback and wake-ups, and CPU per request is what the server itself costs.

Imports: the server script, the limits, the harness.
"""
from __future__ import annotations

import pytest

import _limits
import bench_katcp_server as bks
from _harness import CpuMeter, Measure, Target, spawn_port, stop

FAMILY = "KATCP server"
SERVERS = {"ctlwire": [bks.__file__, "--serve", "ctlwire"],
           "aiokatcp": [bks.__file__, "--serve", "aiokatcp"],
           "raw uvloop echo": [_limits.__file__, "echo-server"]}


def _start(name: str):
    proc, port = spawn_port(SERVERS[name], f"{name} server")
    return proc, int(port)


@pytest.fixture(scope="module")
def servers():
    started = {}
    try:
        for name in SERVERS:
            started[name] = _start(name)
        yield started
    finally:
        stop(*(proc for proc, _ in started.values()))


def test_one_at_a_time(benchmark, suite, servers):
    seconds = suite.pick(0.3, 0.75)

    def measure(name: str):
        proc, port = servers[name]
        with CpuMeter(proc.pid) as cpu:
            rate = bks.one_at_a_time(port, seconds)
        # one_at_a_time warms up with 200 requests before its timed ones
        return rate, cpu.per_op(rate * seconds + 200)

    m = Measure(FAMILY, "one-at-a-time requests", "req/s",
                {name: (lambda name=name: measure(name)) for name in SERVERS},
                limit="raw uvloop echo",
                targets=[Target("limit", 0.85), Target("cpu", 0.6, "aiokatcp")])
    suite.run(benchmark, m, rounds=suite.pick(2, 8))


def test_pipelined(benchmark, suite, servers):
    seconds, batch = suite.pick(0.3, 0.75), 100

    def measure(name: str):
        proc, port = servers[name]
        with CpuMeter(proc.pid) as cpu:
            rate = bks.pipelined(port, seconds, batch)
        return rate, cpu.per_op(rate * seconds)

    m = Measure(FAMILY, f"pipelined requests ({batch} in flight)", "req/s",
                {name: (lambda name=name: measure(name)) for name in SERVERS},
                limit="raw uvloop echo", targets=[Target("peer", 2.0, "aiokatcp")])
    suite.run(benchmark, m, rounds=suite.pick(2, 8))


def test_fan_out(benchmark, suite):
    seconds = suite.pick(1.0, 2.0)

    def measure(name: str) -> float:
        # A fresh server each time: the update task runs until the process ends.
        proc, port = _start(name)
        try:
            return bks.fan_out(port, seconds)
        finally:
            stop(proc)

    m = Measure(FAMILY, f"#sensor-status fan-out, {bks.N_FANOUT_CLIENTS} clients x "
                f"{bks.N_SENSORS} sensors", "informs/s",
                {name: (lambda name=name: measure(name)) for name in SERVERS},
                limit="raw uvloop echo", targets=[Target("peer", 2.0, "aiokatcp")],
                note="limit: prebuilt lines written as fast as the sockets take them")
    suite.run(benchmark, m, rounds=suite.pick(1, 3))
