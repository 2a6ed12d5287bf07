"""Benchmark: ctlwire's KATCP device server against aiokatcp's, side by side.

Each server runs in its own process on 127.0.0.1 with the same handler (``?echo text``
replying ``!echo ok text``) and the same 1,000 integer sensors. This process drives
them with raw sockets and measures:

1. one-at-a-time request round trips per second (send, wait for the reply, repeat);
2. pipelined round trips per second (batches of ``--batch`` requests in flight);
3. sensor fan-out: ``#sensor-status`` informs per second delivered to 10 clients that
   each sample every sensor with ``auto`` while the device task updates all 1,000
   sensors as fast as it can (it pauses while any client has more than 1 MiB queued,
   in both servers, so neither drops slow clients).

Run::

    python benchmarks/bench_katcp_server.py            # about a minute
    python benchmarks/bench_katcp_server.py --rounds 2 --fanout-rounds 1  # quicker, noisier
    python benchmarks/bench_katcp_server.py --katcp-python  # katcp-python for reference
"""
# No "from __future__ import annotations": aiokatcp reads handler annotations as types.

import argparse
import asyncio
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from ctlwire._testing.proc import child_env

N_SENSORS = 1000
N_FANOUT_CLIENTS = 10
BACKLOG_LIMIT = 1 << 20


# -- servers (run in child processes) ---------------------------------------------------------
def _ctlwire_server() -> None:
    from ctlwire.katcp import DeviceServer, Sensor, Str, request, return_reply

    class Bench(DeviceServer):
        VERSION_INFO = ("bench", 1, 0)
        BUILD_INFO = ("bench", 1, 0, "")

        def setup_sensors(self):
            self.bench_sensors = [Sensor.integer(f"sensor.{i:04d}", "Bench sensor")
                                  for i in range(N_SENSORS)]
            for sensor in self.bench_sensors:
                self.add_sensor(sensor)

        @request(Str())
        @return_reply(Str())
        def request_echo(self, req, text):
            """Echo the text back."""
            return ("ok", text)

        def request_start_updates(self, req, msg):
            """Start updating every sensor as fast as possible."""
            self._updater = asyncio.get_running_loop().create_task(self._update())
            return req.make_reply("ok")

        async def _update(self):
            sensors = self.bench_sensors
            n = 0
            while True:
                n += 1
                for sensor in sensors:
                    sensor.set_value(n)
                await asyncio.sleep(0)
                while any(c.get_write_buffer_size() > BACKLOG_LIMIT
                          for c in self.get_connections()):
                    await asyncio.sleep(0.0005)

        def request_start_thread_updates(self, req, msg):
            """Start updating every sensor from a separate thread."""
            threading.Thread(target=self._update_from_thread, daemon=True).start()
            return req.make_reply("ok")

        def _update_from_thread(self):
            # A device's acquisition thread: each set is handed to the loop in batches.
            sensors = self.bench_sensors
            n = 0
            while True:
                n += 1
                for sensor in sensors:
                    sensor.set_value(n)
                while any(c.get_write_buffer_size() > BACKLOG_LIMIT
                          for c in self.get_connections()):
                    time.sleep(0.0005)

    # as a katcp-python-style device runs by default: start() serves from a thread of
    # its own, on uvloop where it is installed (aiokatcp's server below runs as its
    # users run it by default, in asyncio.run)
    server = Bench("127.0.0.1", 0, max_write_buffer=64 << 20)
    server.start(timeout=30)
    print(server.bind_address[1], flush=True)
    threading.Event().wait()


def _aiokatcp_server() -> None:
    import aiokatcp

    class Bench(aiokatcp.DeviceServer):
        VERSION = "bench-1.0"
        BUILD_STATE = "bench-1.0"

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.bench_sensors = [aiokatcp.Sensor(int, f"sensor.{i:04d}", "Bench sensor")
                                  for i in range(N_SENSORS)]
            for sensor in self.bench_sensors:
                self.sensors.add(sensor)

        async def request_echo(self, ctx, text: str) -> str:
            """Echo the text back."""
            return text

        async def request_start_updates(self, ctx) -> None:
            """Start updating every sensor as fast as possible."""
            self._updater = asyncio.get_running_loop().create_task(self._update())

        async def _update(self):
            sensors = self.bench_sensors
            n = 0
            while True:
                n += 1
                for sensor in sensors:
                    sensor.value = n
                await asyncio.sleep(0)
                while any(c.get_write_buffer_size() > BACKLOG_LIMIT
                          for c in list(self._connections)):
                    await asyncio.sleep(0.0005)

    async def main():
        server = Bench("127.0.0.1", 0)
        await server.start()
        print(server.server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def _katcp_python_server() -> None:
    import katcp
    from katcp.kattypes import Str as KStr, request as krequest, return_reply as kreturn

    class Bench(katcp.DeviceServer):
        VERSION_INFO = ("bench", 1, 0)
        BUILD_INFO = ("bench", 1, 0, "")

        def setup_sensors(self):
            for i in range(N_SENSORS):
                self.add_sensor(katcp.Sensor.integer(f"sensor.{i:04d}", "Bench sensor"))

        @krequest(KStr())
        @kreturn(KStr())
        def request_echo(self, req, text):
            """Echo the text back."""
            return ("ok", text)

    server = Bench("127.0.0.1", 0)
    # katcp-python's fastest documented configuration: handlers in the ioloop thread.
    server.set_concurrency_options(thread_safe=False, handler_thread=False)
    server.start(timeout=10)
    print(server.bind_address[1], flush=True)
    server.join()


# -- client side (this process) ---------------------------------------------------------------


def _spawn(kind: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", kind],
                            stdout=subprocess.PIPE, env=child_env(), text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line.strip():
        proc.kill()
        raise RuntimeError(f"{kind} server did not start")
    return proc, int(line)


class Conn:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.read_lines(3)  # #version-connect x3

    def read_lines(self, count: int) -> list[bytes]:
        while self.buf.count(b"\n") < count:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n", count)
        return lines

    def request(self, line: bytes) -> bytes:
        self.sock.sendall(line)
        while True:
            (reply,) = self.read_lines(1)
            if reply.startswith(b"!"):
                return reply

    def close(self) -> None:
        self.sock.close()


def one_at_a_time(port: int, seconds: float) -> float:
    conn = Conn(port)
    try:
        req = b"?echo hello\n"
        sock = conn.sock
        for _ in range(200):  # warm up
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
                return n / (now - t0)
    finally:
        conn.close()


def pipelined(port: int, seconds: float, batch: int) -> float:
    conn = Conn(port)
    try:
        block = b"?echo hello\n" * batch
        sock = conn.sock
        n = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            sock.sendall(block)
            got = 0
            while got < batch:
                data = sock.recv(1 << 16)
                if not data:
                    raise ConnectionError("server closed the connection")
                got += data.count(b"\n")
            n += batch
            now = time.perf_counter()
            if now >= end:
                return n / (now - t0)
    finally:
        conn.close()


def fan_out(port: int, seconds: float, start: bytes = b"?start-updates\n") -> float:
    names = b",".join(b"sensor.%04d" % i for i in range(N_SENSORS))
    conns = [Conn(port) for _ in range(N_FANOUT_CLIENTS)]
    try:
        for conn in conns:
            conn.sock.sendall(b"?sensor-sampling " + names + b" auto\n")
            while True:
                (line,) = conn.read_lines(1)
                if line.startswith(b"!sensor-sampling"):
                    if b" ok " not in line:
                        raise RuntimeError(f"sampling refused: {line[:200]!r}")
                    break
            conn.buf = b""
            conn.sock.setblocking(False)
        control = Conn(port)
        control.request(start)
        sel = selectors.DefaultSelector()
        for conn in conns:
            sel.register(conn.sock, selectors.EVENT_READ)
        warm_end = time.perf_counter() + min(1.0, seconds / 2)
        count = 0
        counting = False
        t0 = 0.0
        while True:
            for key, _ in sel.select(0.5):
                try:
                    data = key.fileobj.recv(1 << 18)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                if not data:
                    raise ConnectionError("server dropped a fan-out client")
                if counting:
                    count += data.count(b"\n")
            now = time.perf_counter()
            if not counting and now >= warm_end:
                counting, t0 = True, now
            elif counting and now - t0 >= seconds:
                control.close()
                return count / (now - t0)
    finally:
        for conn in conns:
            conn.close()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", choices=["ctlwire", "aiokatcp", "katcp-python"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=0.75,
                        help="measuring time per request round (default 0.75)")
    parser.add_argument("--rounds", type=int, default=8,
                        help="request rounds per figure, alternating the servers "
                             "(default 8)")
    parser.add_argument("--fanout-seconds", type=float, default=2.0,
                        help="measuring time per fan-out round (default 2)")
    parser.add_argument("--fanout-rounds", type=int, default=3,
                        help="fan-out rounds per figure (default 3)")
    parser.add_argument("--batch", type=int, default=100,
                        help="requests in flight when pipelining (default 100)")
    parser.add_argument("--only", choices=["ctlwire", "aiokatcp"],
                        help="benchmark one server only")
    parser.add_argument("--katcp-python", action="store_true",
                        help="also measure katcp-python 0.9.3's request round trips "
                             "(for reference; not part of the ratio)")
    args = parser.parse_args(argv)
    if args.serve == "ctlwire":
        _ctlwire_server()
        return 0
    if args.serve == "aiokatcp":
        _aiokatcp_server()
        return 0
    if args.serve == "katcp-python":
        _katcp_python_server()
        return 0

    kinds = [args.only] if args.only else ["ctlwire", "aiokatcp"]
    samples: dict[str, dict[str, list[float]]] = {k: {} for k in kinds}

    def record(kind: str, measure: str, value: float) -> None:
        samples[kind].setdefault(measure, []).append(value)
        print(f"  {kind:9s} {measure:22s} {value:12,.0f}", flush=True)

    # Rounds alternate between the servers so a burst of load from elsewhere on the
    # machine hits both; the figure reported is the median of the rounds.
    procs = {kind: _spawn(kind) for kind in kinds}
    try:
        for r in range(args.rounds):
            order = kinds if r % 2 == 0 else kinds[::-1]  # ABBA: cancels slow drifts
            for kind in order:
                record(kind, "one-at-a-time req/s", one_at_a_time(procs[kind][1], args.seconds))
            for kind in order:
                record(kind, "pipelined req/s", pipelined(procs[kind][1], args.seconds,
                                                          args.batch))
    finally:
        for proc, _ in procs.values():
            proc.kill()
            proc.wait(10)
    for _ in range(args.fanout_rounds):
        for kind in kinds:
            # A fresh server each time: the update task runs until the process ends.
            proc, port = _spawn(kind)
            try:
                record(kind, "fan-out informs/s", fan_out(port, args.fanout_seconds))
            finally:
                proc.kill()
                proc.wait(10)

    if args.katcp_python:
        samples["katcp-python"] = {}
        proc, port = _spawn("katcp-python")
        try:
            for _ in range(args.rounds):
                record("katcp-python", "one-at-a-time req/s",
                       one_at_a_time(port, args.seconds))
                record("katcp-python", "pipelined req/s",
                       pipelined(port, args.seconds, args.batch))
        finally:
            proc.kill()
            proc.wait(10)

    if "ctlwire" in kinds:
        # ctlwire only (aiokatcp is not thread-safe): the same fan-out with the sensors
        # set from a separate thread, through the batched hand-off to the loop.
        for _ in range(args.fanout_rounds):
            proc, port = _spawn("ctlwire")
            try:
                record("ctlwire", "fan-out (thread) inf/s",
                       fan_out(port, args.fanout_seconds, b"?start-thread-updates\n"))
            finally:
                proc.kill()
                proc.wait(10)

    print()
    print(f"{'median of the rounds':24s} "
          + " ".join(f"{k:>12s}" for k in kinds) + ("    ratio" if len(kinds) == 2 else ""))
    for measure in samples[kinds[0]]:
        values = [_median(samples[k][measure]) if measure in samples[k] else None
                  for k in kinds]
        line = f"{measure:24s} " + " ".join(
            f"{v:12,.0f}" if v is not None else f"{'-':>12s}" for v in values)
        if len(kinds) == 2 and None not in values:
            line += f" {values[0] / values[1]:7.2f}x"
        kp = samples.get("katcp-python", {}).get(measure)
        if kp:
            line += f"   (katcp-python {_median(kp):,.0f})"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
