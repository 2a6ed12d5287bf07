"""A KATCP server for client tests, benchmarks and demos, in its own process.

Run as ``python -m ctlwire._testing.katcp_peer [--impl aiokatcp|ctlwire] [--port N]``:
it binds 127.0.0.1, prints ``PORT <n>`` on stdout once it is serving, and runs until
killed. ``aiokatcp`` (the default) serves with aiokatcp's ``DeviceServer`` (a
test/benchmark dependency of ctlwire, not a runtime one); ``ctlwire`` with ctlwire's own.

Requests besides the standard ones:

* ``?echo args...``: replies ``!echo ok args...``.
* ``?informs n``: sends ``n`` informs ``#informs i`` then ``!informs ok n``.
* ``?slow seconds``: replies ``!slow ok`` after that many seconds.
* ``?bump [value]``: sets the integer sensor ``counter`` (default: add one).

Layering: imports ``ctlwire.katcp`` (and aiokatcp) only in the child, lazily, and
``ctlwire._testing.proc``.
"""
# No "from __future__ import annotations": aiokatcp reads the handlers' annotations as types.

import argparse
import asyncio
import sys
from typing import Optional, Tuple


def _make_server_class():  # aiokatcp imported lazily: only the peer process needs it
    import aiokatcp

    class PeerServer(aiokatcp.DeviceServer):
        VERSION = "ctlwire-client-peer-1.0"
        BUILD_STATE = "ctlwire-client-peer-1.0.0"

        def __init__(self, host: str, port: int) -> None:
            super().__init__(host, port)
            self.counter = aiokatcp.Sensor(int, "counter", "A counter set by ?bump",
                                           default=0, initial_status=aiokatcp.Sensor.Status.NOMINAL)
            self.sensors.add(self.counter)

        async def request_echo(self, ctx, *args: bytes) -> Tuple[bytes, ...]:
            """Reply with the arguments."""
            return tuple(args)

        async def request_informs(self, ctx, n: int) -> int:
            """Send n informs, then reply with n."""
            for i in range(n):
                ctx.inform(i)
            return n

        async def request_slow(self, ctx, seconds: float) -> None:
            """Reply after a delay in seconds."""
            await asyncio.sleep(seconds)

        async def request_bump(self, ctx, value: Optional[int] = None) -> int:
            """Set the counter sensor (default: add one) and reply with its value."""
            self.counter.value = self.counter.value + 1 if value is None else value
            return self.counter.value

    return PeerServer


def _make_ctlwire_server_class():
    from ctlwire.katcp.core import Message
    from ctlwire.katcp.server import DeviceServer
    from ctlwire.katcp.sensor import Sensor

    class CtlwirePeerServer(DeviceServer):
        VERSION_INFO = ("ctlwire-client-peer", 1, 0)
        BUILD_INFO = ("ctlwire-client-peer", 1, 0, "")

        def setup_sensors(self):
            self.counter = Sensor.integer("counter", "A counter set by ?bump", "", default=0,
                                          initial_status=Sensor.NOMINAL)
            self.add_sensor(self.counter)

        def request_echo(self, req, msg):
            """Reply with the arguments."""
            return Message.reply("echo", "ok", *msg.arguments)

        def request_informs(self, req, msg):
            """Send n informs, then reply with n."""
            n = int(msg.arguments[0])
            for i in range(n):
                req.inform(i)
            return Message.reply("informs", "ok", n)

        async def request_slow(self, req, msg):
            """Reply after a delay in seconds."""
            await asyncio.sleep(float(msg.arguments[0]))
            return Message.reply("slow", "ok")

        def request_bump(self, req, msg):
            """Set the counter sensor (default: add one) and reply with its value."""
            value = int(msg.arguments[0]) if msg.arguments else self.counter.value() + 1
            self.counter.set_value(value)
            return Message.reply("bump", "ok", value)

    return CtlwirePeerServer


def _run_ctlwire(port: int) -> None:
    import threading

    server = _make_ctlwire_server_class()("127.0.0.1", port)
    server.start(timeout=10.0)
    print(f"PORT {server.bind_address[1]}", flush=True)
    threading.Event().wait()  # serve until killed


async def _main(port: int) -> None:
    server = _make_server_class()("127.0.0.1", port)
    await server.start()
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await server.join()


class PeerServer:
    """Start this module as a peer server in a child process and learn its port.

    Used by the client tests and benchmarks. ``impl`` is ``"aiokatcp"`` or
    ``"ctlwire"``; ``port`` 0 lets the child pick a free port (read back as
    ``self.port``). ``timeout`` bounds the wait for the child's ``PORT n`` line.
    """

    def __init__(self, impl: str = "aiokatcp", port: int = 0, timeout: float = 20.0) -> None:
        import selectors
        import subprocess

        from .proc import child_env

        self.impl = impl
        self._timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ctlwire._testing.katcp_peer", "--impl", impl,
             "--port", str(port)],
            stdout=subprocess.PIPE, env=child_env())
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            ready = sel.select(timeout)
        finally:
            sel.close()
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("PORT "):
            self.kill()
            raise RuntimeError(f"peer server {impl} did not start (said {line!r})")
        self.port = int(line.split()[1])

    def kill(self) -> None:
        """Kill the child and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(self._timeout)
        self.proc.stdout.close()


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--impl", choices=("aiokatcp", "ctlwire"), default="aiokatcp")
    args = parser.parse_args(argv)
    try:
        if args.impl == "ctlwire":
            _run_ctlwire(args.port)
        else:
            asyncio.run(_main(args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
