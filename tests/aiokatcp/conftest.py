"""Shared helpers of the ``ctlwire.aiokatcp`` tests.

Many tests run the same device source on aiokatcp 2.x and on ``ctlwire.aiokatcp``
(the ``lib`` fixture) and hold both to the same observable behaviour.
"""
# (no "from __future__ import annotations": aiokatcp reads handler annotations as objects)

import asyncio
import enum
from typing import Any, Optional

import aiokatcp as _reference
import pytest

from ctlwire import aiokatcp as _ours

TIMEOUT = 10.0
LIBS = {"aiokatcp": _reference, "ctlwire": _ours}


def run(coro: Any) -> Any:
    """Run a coroutine on a fresh default loop, bounded by a generous timeout."""
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT * 2))


@pytest.fixture(params=sorted(LIBS))
def lib(request: Any) -> Any:
    """Each implementation of the API in turn."""
    return LIBS[request.param]


class Colour(enum.Enum):
    RED = 1
    DARK_GREEN = 2


def make_device(mod: Any) -> type:
    """The same device source on implementation ``mod`` (aiokatcp or ours)."""

    class Device(mod.DeviceServer):
        VERSION = "testdev-1.2"
        BUILD_STATE = "testdev-1.2.3"

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.counter = mod.Sensor(int, "counter", "A counter", "count", default=0,
                                      initial_status=mod.Sensor.Status.NOMINAL)
            self.temp = mod.Sensor(float, "temp", "Temperature", "K", default=4.5)
            self.colour = mod.Sensor(Colour, "colour", "A colour", "")
            self.text = mod.Sensor(str, "text", "Some text", "")
            self.flag = mod.Sensor(bool, "flag", "A flag", "")
            for s in (self.counter, self.temp, self.colour, self.text, self.flag):
                self.sensors.add(s)
            self.release = asyncio.Event()

        async def request_echo(self, ctx: Any, *args: str) -> tuple:
            """Return the arguments."""
            return tuple(args)

        async def request_add(self, ctx: Any, a: int, b: float = 1.0) -> float:
            """Add two numbers."""
            return a + b

        async def request_types(self, ctx: Any, i: int, f: float, b: bool, s: str,
                                raw: bytes, c: Colour, t: mod.Timestamp,
                                addr: mod.Address, when: mod.TimestampOrNow,
                                maybe: Optional[int] = None) -> tuple:
            """Decode one argument of each type and send them back."""
            return (i, f, b, s, raw, c, t, addr,
                    "now" if when == mod.Now.NOW else when,
                    -1 if maybe is None else maybe)

        async def request_informs(self, ctx: Any, n: int) -> None:
            """Send n informs then the count."""
            ctx.informs([(i, f"item {i}") for i in range(n)])

        async def request_inform_reply(self, ctx: Any) -> None:
            """Inform then reply by hand."""
            ctx.inform("one", 1)
            ctx.reply("ok", "done")

        async def request_fail(self, ctx: Any, why: str) -> None:
            """Fail on purpose."""
            raise mod.FailReply(why)

        async def request_invalid(self, ctx: Any) -> None:
            """Reply invalid on purpose."""
            raise mod.InvalidReply("not like that")

        async def request_crash(self, ctx: Any) -> None:
            """Raise an unexpected exception."""
            raise ZeroDivisionError("bad maths")

        async def request_wait(self, ctx: Any) -> str:
            """Wait until released."""
            await self.release.wait()
            return "released"

        async def request_sleep(self, ctx: Any, seconds: float) -> str:
            """Sleep, informing first."""
            ctx.inform("sleeping")
            await asyncio.sleep(seconds)
            return "awake"

        async def request_set(self, ctx: Any, value: int) -> None:
            """Set the counter."""
            self.counter.value = value

        async def request_add_sensor(self, ctx: Any, name: str) -> None:
            """Add a sensor and announce the change."""
            self.sensors.add(mod.Sensor(int, name, "added", ""))
            self.mass_inform("interface-changed", "sensor-list")

        async def request_remove_sensor(self, ctx: Any, name: str) -> None:
            """Remove a sensor and announce the change."""
            del self.sensors[name]
            self.mass_inform("interface-changed", "sensor-list")

    return Device


async def start_device(mod: Any, **kwargs: Any) -> Any:
    server = make_device(mod)("127.0.0.1", 0, **kwargs)
    await server.start()
    return server


def port_of(server: Any) -> int:
    return server.sockets[0].getsockname()[1]


class RawClient:
    """A bare line client over a real socket, for exact wire checks."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> "RawClient":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def line(self) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), TIMEOUT)

    async def until(self, prefix: bytes) -> list:
        """Lines up to and including the first that starts with ``prefix``."""
        lines = []
        while True:
            line = await self.line()
            if not line:
                raise ConnectionError(f"closed before {prefix!r}; got {lines!r}")
            lines.append(line)
            if line.startswith(prefix):
                return lines

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass
