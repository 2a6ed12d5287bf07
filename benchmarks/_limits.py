"""The physical limits of the benchmark suite: programs that do the least any
implementation of a measure must do, so nothing can beat them on this machine.

Each runs in a child process (``python _limits.py ROLE ARGS...``) or is called in this
one; the benchmark modules compare ctlwire and its peers with them in the same run.

* ``echo-server``: a raw uvloop (or asyncio) TCP server. Per connection it greets with
  three ``#version-connect`` lines, then answers every received line with a canned
  ``!echo ok hello`` (counting newlines, parsing nothing); a connection that starts
  with anything else is a sensor fan-out client: ``?sensor-sampling`` gets a canned
  ``ok``, ``?start-updates`` starts writing one prebuilt block of 1,000
  ``#sensor-status`` lines to every sampling client as fast as the sockets take it
  (pausing while one has more than 1 MiB queued, like the servers measured).
* ``raw-client-window``: a raw socket keeping ``depth`` ``?watchdog`` requests in
  flight, counting reply lines, parsing nothing (the limit of pipelined clients).
* ``zmq-echo``: a bare pyzmq SUB -> PUB echo, frames passed back unchanged under the
  reply topic (no JSON; the limit of the heartbeat round trip).
* ``zmq-bytes-receiver``: a bare pyzmq SUB counting messages without decoding them
  (the limit of group messages).

Imports: the standard library, pyzmq, uvloop when present. Never ctlwire: a limit must
not depend on the code it bounds.
"""
from __future__ import annotations

import asyncio
import json
import socket
import sys
import time

N_SENSORS = 1000
BACKLOG_LIMIT = 1 << 20
GREETING = (b"#version-connect katcp-protocol 5.1-MI\n"
            b"#version-connect katcp-library raw-limit-1.0\n"
            b"#version-connect katcp-device raw-limit-1.0\n")
ECHO_REPLY = b"!echo ok hello\n"
INFORMS = b"".join(b"#sensor-status 1700000000.000000 1 sensor.%04d nominal 1\n" % i
                   for i in range(N_SENSORS))


# -- raw KATCP-shaped server ----------------------------------------------------------
class _RawProtocol(asyncio.Protocol):
    """Canned answers per newline; see the module docstring."""

    def __init__(self, fanout: set) -> None:
        self.fanout = fanout
        self.mode = b""
        self.transport: asyncio.Transport | None = None
        self.tail = b""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(GREETING)

    def data_received(self, data: bytes) -> None:
        if self.mode == b"echo" or (not self.mode and data.startswith(b"?echo")):
            self.mode = b"echo"
            self.transport.write(ECHO_REPLY * data.count(b"\n"))  # type: ignore[union-attr]
            return
        self.mode = b"lines"
        *lines, self.tail = (self.tail + data).split(b"\n")
        for line in lines:
            if line.startswith(b"?sensor-sampling"):
                self.fanout.add(self.transport)
                self.transport.write(b"!sensor-sampling ok auto\n")  # type: ignore[union-attr]
            elif line.startswith(b"?start-updates"):
                asyncio.get_running_loop().create_task(self._updates())
                self.transport.write(b"!start-updates ok\n")  # type: ignore[union-attr]
            elif line.startswith(b"?"):
                self.transport.write(b"!" + line[1:].split(b" ", 1)[0]  # type: ignore[union-attr]
                                     + b" ok\n")

    def connection_lost(self, exc) -> None:  # type: ignore[override]
        self.fanout.discard(self.transport)

    async def _updates(self) -> None:
        while True:
            for transport in list(self.fanout):
                transport.write(INFORMS)
            await asyncio.sleep(0)
            while any(t.get_write_buffer_size() > BACKLOG_LIMIT for t in list(self.fanout)):
                await asyncio.sleep(0.0005)


def echo_server() -> None:
    """Serve on 127.0.0.1 (a free port, printed on stdout) until killed."""
    try:
        import uvloop
        new_loop = uvloop.new_event_loop
    except ImportError:  # no uvloop on this platform: asyncio's own loop
        new_loop = asyncio.new_event_loop

    async def main() -> None:
        fanout: set = set()
        server = await asyncio.get_running_loop().create_server(
            lambda: _RawProtocol(fanout), "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    loop = new_loop()
    loop.run_until_complete(main())


# -- raw pipelined client -------------------------------------------------------------
def raw_client_window(port: int, depth: int, seconds: float, warmup: float = 0.3) -> float:
    """Requests/s of a raw socket keeping ``depth`` ``?watchdog`` requests in flight."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    greeting = b""
    while greeting.count(b"\n") < 3:
        greeting += sock.recv(65536)
    req = b"?watchdog\n"
    sock.sendall(req * depth)
    count = 0
    t0 = time.perf_counter()
    start, c0 = t0 + warmup, None
    while True:
        data = sock.recv(1 << 16)
        if not data:
            raise ConnectionError("the server closed the connection")
        n = data.count(b"\n")
        count += n
        sock.sendall(req * n)  # one new request per reply: the window stays full
        now = time.perf_counter()
        if c0 is None and now >= start:
            c0, t0 = count, now
        elif c0 is not None and now - t0 >= seconds:
            sock.close()
            return (count - c0) / (now - t0)


# -- bare pyzmq -----------------------------------------------------------------------
def zmq_echo(listen: str) -> None:
    """SUB to ``listen`` for ``ocd.heartbeat.enquiry``; PUB every payload back unchanged
    as ``ocd.heartbeat.reply``. Prints ``READY <endpoint>``; ends after 10 s idle."""
    import zmq

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"ocd.heartbeat.enquiry")
    sub.connect(listen)
    print(f"READY tcp://127.0.0.1:{port}", flush=True)
    reply = b"ocd.heartbeat.reply"
    while sub.poll(10000):
        frames = sub.recv_multipart()
        pub.send_multipart([reply, frames[-1]])


def zmq_bytes_receiver(endpoint: str, idle: float = 3.0) -> None:
    """Count messages from a PUB until ``b"end"`` or ``idle`` s of silence; report
    ``{"ev": "result", "count", "seconds"}`` (first to last message) as a JSON line."""
    import zmq

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    print(json.dumps({"ev": "ready"}), flush=True)
    count, first, last = 0, 0.0, 0.0
    while True:
        try:
            data = sub.recv(zmq.NOBLOCK)
        except zmq.Again:
            if sub.poll(int((idle if count else 30) * 1000)):
                continue
            break
        if data == b"end":
            break
        now = time.perf_counter()
        if not count:
            first = now
        count, last = count + 1, now
    print(json.dumps({"ev": "result", "count": count, "seconds": last - first}), flush=True)
    sub.close(0)
    ctx.term()


def main(argv: list[str]) -> int:
    role, args = argv[0], argv[1:]
    if role == "echo-server":
        echo_server()
    elif role == "raw-client-window":
        rate = raw_client_window(int(args[0]), int(args[1]), float(args[2]))
        print(json.dumps({"rate": rate}), flush=True)
    elif role == "zmq-echo":
        zmq_echo(args[0])
    elif role == "zmq-bytes-receiver":
        zmq_bytes_receiver(args[0])
    else:
        print(f"_limits.py: unknown role {role!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
