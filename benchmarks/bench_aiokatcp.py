"""Benchmark: one aiokatcp device source served by aiokatcp and by ctlwire.aiokatcp.

The device (``?echo`` plus 1,000 integer sensors) is written once against aiokatcp's
API and run by each library in its own process, on uvloop; a raw uvloop ``Protocol``
that answers each line and does nothing else is the limit. This process measures:

1. one-at-a-time ``?echo`` round trips per second over a raw socket (the limit: the
   raw echo server);
2. server CPU per request (user + system time of the server process, from
   ``/proc/<pid>/stat``, over the one-at-a-time rounds);
3. pipelined round trips per second (``--batch`` requests per write);
4. ``#sensor-status`` fan-out: 10 clients sample all 1,000 sensors with ``auto`` while
   a device task sets every sensor as fast as it can (pausing while a client has more
   than 1 MiB queued, the same code in both);
5. ``Client.request`` with 64 requests in flight, ctlwire.aiokatcp's client against
   aiokatcp's, both against the same (ctlwire.aiokatcp) server.

Rounds alternate the servers (ABBA) and the medians are reported. Run::

    python benchmarks/bench_aiokatcp.py              # about a minute and a half
    python benchmarks/bench_aiokatcp.py --rounds 2 --fanout-rounds 1   # quicker

Targets (issue 12): one-at-a-time >= 0.85 of the raw echo server, server CPU per
request <= 0.6 of aiokatcp's, pipelined >= 10x, fan-out >= 10x, client >= 2x.
"""
# No "from __future__ import annotations": aiokatcp reads handler annotations as types.

import argparse
import asyncio
import os
import subprocess
import sys
import time

from ctlwire._testing.proc import child_env

# the raw-socket load of the KATCP server benchmark, run here against both aiokatcp servers
from bench_katcp_server import Conn, fan_out, pipelined  # noqa: E402

N_SENSORS = 1000
IN_FLIGHT = 64
BACKLOG_LIMIT = 1 << 20
KINDS = ("ctlwire", "aiokatcp")


# -- servers (child processes) -----------------------------------------------------------------
def _device_server(mod) -> None:
    """The device, written once against the aiokatcp API of ``mod``."""

    class Bench(mod.DeviceServer):
        VERSION = "bench-1.0"
        BUILD_STATE = "bench-1.0.0"

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.bench_sensors = [mod.Sensor(int, f"sensor.{i:04d}", "Bench sensor")
                                  for i in range(N_SENSORS)]
            for s in self.bench_sensors:
                self.sensors.add(s)

        async def request_echo(self, ctx, text: str) -> str:
            """Echo the text back."""
            return text

        async def request_start_updates(self, ctx) -> None:
            """Set every sensor as fast as possible, in a service task."""
            self.add_service_task(asyncio.get_running_loop().create_task(self._update()))

        async def _update(self):
            sensors = self.bench_sensors
            n = 0
            while True:
                n += 1
                for s in sensors:
                    s.value = n
                await asyncio.sleep(0)
                while any(c.get_write_buffer_size() > BACKLOG_LIMIT
                          for c in self._connections):
                    await asyncio.sleep(0.0005)

    async def main():
        server = Bench("127.0.0.1", 0, max_backlog=1 << 30)
        await server.start()
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.join()

    _run(main())


def _echo_server() -> None:
    """The limit: answers each line with a fixed reply and does nothing else."""

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            transport.write(b"#version-connect katcp-protocol 5.1-MIB\n"
                            b"#version-connect katcp-library echo-1 echo-1\n"
                            b"#version-connect katcp-device echo-1 echo-1\n")

        def data_received(self, data):
            self.transport.write(b"!echo ok hello\n" * data.count(b"\n"))

    async def main():
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    _run(main())


def _run(coro) -> None:
    import uvloop
    uvloop.run(coro)


def _spawn(kind: str) -> tuple:
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", kind],
                            stdout=subprocess.PIPE, env=child_env(), text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line.strip():
        proc.kill()
        raise RuntimeError(f"{kind} server did not start")
    return proc, int(line)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- raw-socket drivers -------------------------------------------------------------------------
def one_at_a_time(port: int, seconds: float) -> tuple:
    """(round trips per second, requests made)."""
    conn = Conn(port)
    try:
        req = b"?echo hello\n"
        sock = conn.sock
        for _ in range(200):
            sock.sendall(req)
            conn.read_lines(1)
        n = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            for _ in range(100):
                sock.sendall(req)
                data = sock.recv(4096)
                while not data.endswith(b"\n"):
                    data += sock.recv(4096)
            n += 100
            now = time.perf_counter()
            if now >= end:
                return n / (now - t0), n + 200
    finally:
        conn.close()


# -- the asyncio clients ---------------------------------------------------------------------
def client_in_flight(module_name: str, port: int, seconds: float) -> float:
    """``Client.request`` calls per second with IN_FLIGHT outstanding (uvloop)."""
    import importlib
    mod = importlib.import_module(module_name)

    async def main():
        client = await mod.Client.connect("127.0.0.1", port)
        done = 0
        stop = False

        async def worker():
            nonlocal done
            while not stop:
                await client.request("echo", "hello")
                done += 1

        workers = [asyncio.ensure_future(worker()) for _ in range(IN_FLIGHT)]
        await asyncio.sleep(0.3)  # warm up
        start_done, t0 = done, time.perf_counter()
        await asyncio.sleep(seconds)
        rate = (done - start_done) / (time.perf_counter() - t0)
        stop = True
        await asyncio.gather(*workers)
        client.close()
        await client.wait_closed()
        return rate

    import uvloop
    return uvloop.run(main())


def _median(values: list) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", choices=["ctlwire", "aiokatcp", "echo"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=0.75,
                        help="measuring time per request round (default 0.75)")
    parser.add_argument("--rounds", type=int, default=8,
                        help="request rounds, alternating the servers (default 8)")
    parser.add_argument("--fanout-seconds", type=float, default=2.0)
    parser.add_argument("--fanout-rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100,
                        help="requests per write when pipelining (default 100)")
    args = parser.parse_args(argv)
    if args.serve == "echo":
        _echo_server()
        return 0
    if args.serve:
        import importlib
        _device_server(importlib.import_module(
            "ctlwire.aiokatcp" if args.serve == "ctlwire" else "aiokatcp"))
        return 0

    kinds = list(KINDS) + ["echo"]
    samples: dict = {k: {} for k in kinds}

    def record(kind: str, measure: str, value: float, fmt: str = "12,.0f") -> None:
        samples[kind].setdefault(measure, []).append(value)
        print(f"  {kind:9s} {measure:26s} {value:{fmt}}", flush=True)

    procs = {kind: _spawn(kind) for kind in kinds}
    try:
        for r in range(args.rounds):
            order = kinds if r % 2 == 0 else kinds[::-1]
            for kind in order:
                proc, port = procs[kind]
                cpu0 = _cpu_seconds(proc.pid)
                rate, n = one_at_a_time(port, args.seconds)
                cpu = _cpu_seconds(proc.pid) - cpu0
                record(kind, "one-at-a-time req/s", rate)
                record(kind, "server CPU us/request", cpu / n * 1e6, "12.1f")
            for kind in order:
                record(kind, "pipelined req/s", pipelined(procs[kind][1], args.seconds,
                                                          args.batch))
        port = procs["ctlwire"][1]
        for r in range(max(2, args.rounds // 2)):
            order = KINDS if r % 2 == 0 else KINDS[::-1]
            for kind in order:
                record(kind, f"client {IN_FLIGHT} in flight req/s", client_in_flight(
                    "ctlwire.aiokatcp" if kind == "ctlwire" else "aiokatcp", port,
                    args.seconds))
    finally:
        for proc, _ in procs.values():
            proc.kill()
            proc.wait(10)
    for _ in range(args.fanout_rounds):
        for kind in KINDS:
            proc, port = _spawn(kind)  # fresh: the update task runs until the end
            try:
                record(kind, "fan-out informs/s", fan_out(port, args.fanout_seconds))
            finally:
                proc.kill()
                proc.wait(10)

    print()
    print(f"{'median of the rounds':30s} {'ctlwire':>12s} {'aiokatcp':>12s} {'raw echo':>12s}"
          "   ctlwire/aiokatcp  ctlwire/echo")
    for measure in samples["ctlwire"]:
        ours = _median(samples["ctlwire"][measure])
        theirs = _median(samples["aiokatcp"][measure])
        echo = samples["echo"].get(measure)
        limit = _median(echo) if echo else None
        fmt = "12.1f" if "CPU" in measure else "12,.0f"
        line = f"{measure:30s} {ours:{fmt}} {theirs:{fmt}} " + (
            f"{limit:{fmt}}" if limit is not None else f"{'-':>12s}")
        line += f"   {ours / theirs:14.2f}x"
        if limit is not None:
            line += f"  {ours / limit:10.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
