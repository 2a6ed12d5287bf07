"""KATCP clients, blocking and asyncio: ctlwire's beside aiokatcp's and katcp-python's,
and the raw socket client.

One ctlwire ``DeviceServer`` process serves every client; each measurement runs in a
fresh child process (``bench_katcp_client.py --child``), so no client's threads or loop
linger into the next. The limits: a raw socket sending ``?watchdog`` and reading
whatever comes back, parsing nothing (one at a time), and a raw socket keeping 64
requests in flight, counting reply lines (``_limits.py raw-client-window``). Both the
blocking and the asyncio rows come from the same rounds, beside the same peers.

Imports: the client script, the limits, the harness.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import _limits
import bench_katcp_client as bkc
from _harness import Measure, Target, stop

DEPTH = bkc.DEPTH


@pytest.fixture(scope="module")
def server_port():
    proc, port = bkc._start_server("ctlwire")
    try:
        yield port
    finally:
        stop(proc)


def _client(name: str, mode: str, port: int, seconds: float):
    return lambda: bkc._run_child(name, mode, port, seconds)


def _raw_window(port: int, seconds: float):
    def run() -> float:
        out = subprocess.run([sys.executable, _limits.__file__, "raw-client-window",
                              str(port), str(DEPTH), str(seconds)], capture_output=True,
                             timeout=60 + seconds * 4)
        if out.returncode:
            raise RuntimeError(f"raw window client failed:\n{out.stderr.decode()[-2000:]}")
        return json.loads(out.stdout.decode().splitlines()[-1])["rate"]
    return run


def test_one_request_at_a_time(benchmark, suite, server_port):
    seconds = suite.pick(0.3, 1.0)
    impls = {name: _client(name, "seq", server_port, seconds)
             for name in ("ctlwire", "ctlwire-aio", "aiokatcp", "katcp-python",
                          "raw-socket")}
    m = Measure("KATCP client", "one request at a time", "req/s", impls,
                limit="raw-socket")
    suite.run(benchmark, m, rounds=suite.pick(2, 6), rows=[
        dict(name="BlockingClient, one request at a time",
             impls={"ctlwire": "ctlwire", "aiokatcp": "aiokatcp",
                    "katcp-python": "katcp-python", "raw-socket": "raw socket"},
             targets=[Target("limit", 0.9)]),
        dict(family="KATCP asyncio client", name="AioClient, one request at a time",
             impls={"ctlwire-aio": "ctlwire", "aiokatcp": "aiokatcp",
                    "raw-socket": "raw socket"}, targets=[]),
    ])


def test_64_in_flight(benchmark, suite, server_port):
    seconds = suite.pick(0.3, 1.0)
    impls = {name: _client(name, "64", server_port, seconds)
             for name in ("ctlwire", "ctlwire-aio", "aiokatcp", "katcp-python")}
    impls["raw-window"] = _raw_window(server_port, seconds)
    m = Measure("KATCP client", f"{DEPTH} requests in flight", "req/s", impls,
                limit="raw-window")
    suite.run(benchmark, m, rounds=suite.pick(2, 6), rows=[
        dict(name=f"CallbackClient, {DEPTH} requests in flight",
             impls={"ctlwire": "ctlwire", "aiokatcp": "aiokatcp",
                    "katcp-python": "katcp-python", "raw-window": "raw socket"},
             targets=[Target("peer", 2.0, "aiokatcp")]),
        dict(family="KATCP asyncio client", name=f"AioClient, {DEPTH} tasks in flight",
             impls={"ctlwire-aio": "ctlwire", "aiokatcp": "aiokatcp",
                    "raw-window": "raw socket"}, targets=[]),
    ])
