"""Exact wire behaviour of the device server on a simulated clock, for both libraries.

The loop is async_solipsism's (time only moves when everything waits) and ``time.time``
follows it, so every ``#sensor-status`` line, timestamp included, is predictable.
"""
import asyncio
import logging
import re
import time

import async_solipsism
import pytest

from .conftest import make_device

EPOCH = 1_000_000_000.0


@pytest.fixture
def sim(monkeypatch):
    loop = async_solipsism.EventLoop()
    monkeypatch.setattr(time, "time", lambda: loop.time() + EPOCH)
    yield loop
    loop.close()


def run_sim(loop, lib, scenario, device=None):
    """Run ``scenario(server, reader, writer)`` against a device on the simulated loop."""
    async def main():
        server = (device or make_device(lib))("127.0.0.1", 7147)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", 7147)
        for _ in range(3):
            await reader.readline()  # #version-connect
        try:
            await scenario(server, reader, writer)
        finally:
            writer.close()
            await server.stop()
    loop.run_until_complete(asyncio.wait_for(main(), 1000))


async def expect(reader, *lines):
    for want in lines:
        got = await reader.readline()
        if isinstance(want, bytes):
            assert got == want
        else:
            assert want.search(got), got


def test_auto_reports_every_update_with_its_timestamp(sim, lib):
    async def scenario(server, reader, writer):
        writer.write(b"?sensor-sampling temp auto\n")
        await expect(reader, b"#sensor-status %r 1 temp unknown 4.5\n" % (EPOCH,),
                     b"!sensor-sampling ok temp auto\n")
        await asyncio.sleep(1)
        server.temp.value = 1.25
        await asyncio.sleep(1)
        server.temp.value = 1.25  # the same value: still reported
        await expect(reader, b"#sensor-status %r 1 temp nominal 1.25\n" % (EPOCH + 1,),
                     b"#sensor-status %r 1 temp nominal 1.25\n" % (EPOCH + 2,))
    run_sim(sim, lib, scenario)


def test_period_keeps_its_grid(sim, lib):
    async def scenario(server, reader, writer):
        writer.write(b"?sensor-sampling temp period 2.5\n")
        await expect(reader, re.compile(rb"^#sensor-status"), b"!sensor-sampling ok temp period 2.5\n")
        await asyncio.sleep(3)
        server.temp.value = 1.25
        await asyncio.sleep(5)
        writer.write(b"?watchdog\n")
        await expect(reader, b"#sensor-status %r 1 temp unknown 4.5\n" % (EPOCH,),
                     b"#sensor-status %r 1 temp nominal 1.25\n" % (EPOCH + 3,),
                     b"#sensor-status %r 1 temp nominal 1.25\n" % (EPOCH + 3,),
                     b"!watchdog ok\n")
    run_sim(sim, lib, scenario)


def test_event_rate_holds_back_and_repeats(sim, lib):
    async def scenario(server, reader, writer):
        writer.write(b"?sensor-sampling temp event-rate 1.0 10.0\n")
        await expect(reader, re.compile(rb"^#sensor-status"),
                     b"!sensor-sampling ok temp event-rate 1.0 10.0\n")
        await asyncio.sleep(1)
        server.temp.value = 1.25   # a period has passed: at once
        await asyncio.sleep(0.25)
        server.temp.value = 1.0    # too soon: held back...
        await asyncio.sleep(0.25)
        server.temp.value = 0.5    # ...and replaced by the latest
        await asyncio.sleep(10.25)
        writer.write(b"?watchdog\n")
        await asyncio.sleep(0.5)   # the longest period passes: repeated
        await expect(reader, b"#sensor-status %r 1 temp nominal 1.25\n" % (EPOCH + 1,),
                     b"#sensor-status %r 1 temp nominal 0.5\n" % (EPOCH + 1.5,),
                     b"!watchdog ok\n",
                     b"#sensor-status %r 1 temp nominal 0.5\n" % (EPOCH + 1.5,))
    run_sim(sim, lib, scenario)


def test_differential_rate(sim, lib):
    async def scenario(server, reader, writer):
        writer.write(b"?sensor-sampling temp differential-rate 1.5 1.0 10.0\n")
        await expect(reader, re.compile(rb"^#sensor-status"),
                     b"!sensor-sampling ok temp differential-rate 1.5 1.0 10.0\n")
        await asyncio.sleep(1)
        server.temp.value = 1.25   # a status change: reported
        await asyncio.sleep(0.25)
        server.temp.value = 5.0
        await asyncio.sleep(0.25)
        server.temp.value = 0.5    # the latest goes out when the second ends
        await asyncio.sleep(4)
        server.temp.value = 1.5    # within the difference: not reported
        await asyncio.sleep(6.25)
        writer.write(b"?watchdog\n")
        await asyncio.sleep(0.5)
        await expect(reader, b"#sensor-status %r 1 temp nominal 1.25\n" % (EPOCH + 1,),
                     b"#sensor-status %r 1 temp nominal 0.5\n" % (EPOCH + 1.5,),
                     b"!watchdog ok\n",
                     b"#sensor-status %r 1 temp nominal 1.5\n" % (EPOCH + 5.5,))
    run_sim(sim, lib, scenario)


def test_bulk_sampling_that_fails_changes_nothing(sim, lib):
    async def scenario(server, reader, writer):
        writer.write(b"?sensor-sampling temp,text differential 1\n")
        await expect(reader, re.compile(rb"^!sensor-sampling fail differential"))
        writer.write(b"?sensor-sampling temp\n")
        await expect(reader, b"!sensor-sampling ok temp none\n")
        writer.write(b"?sensor-sampling temp,counter event\n")
        await expect(reader, b"#sensor-status %r 1 temp unknown 4.5\n" % (EPOCH,),
                     b"#sensor-status %r 1 counter nominal 0\n" % (EPOCH,),
                     b"!sensor-sampling ok temp,counter event\n")
    run_sim(sim, lib, scenario)


def test_halt_while_a_request_waits(sim, lib):
    async def scenario(server, reader, writer):
        writer.write(b"?wait[1]\n?halt[2]\n")
        await expect(reader, b"!halt[2] ok\n", b"!wait[1] fail request\\_cancelled\n",
                     b"#disconnect server\\_shutting\\_down\n", b"")
        await server.join()
    run_sim(sim, lib, scenario)


def test_requests_while_stopping_are_ignored(sim, lib):
    async def scenario(server, reader, writer):
        writer.write(b"?wait\n")
        await asyncio.sleep(1)
        stopping = asyncio.ensure_future(server.stop(cancel=False))
        for _ in range(3):  # stop() -> halt() -> the stopping task has begun
            await asyncio.sleep(0)
        writer.write(b"?watchdog\n")
        await asyncio.sleep(1)
        server.release.set()
        await expect(reader, b"!wait ok released\n", b"#disconnect server\\_shutting\\_down\n",
                     b"")
        await stopping
    run_sim(sim, lib, scenario)


def test_carriage_return_ends_a_line(sim, lib):
    async def scenario(server, reader, writer):
        writer.write(b"?watchdog[2]\r")
        await expect(reader, b"!watchdog[2] ok\n")
    run_sim(sim, lib, scenario)


def test_misuse_after_reply_is_logged_as_an_error(sim, lib):
    class Misused(make_device(lib)):
        async def request_twice(self, ctx):
            """Reply twice."""
            ctx.reply("ok", "first")
            ctx.reply("ok", "second")

        async def request_late_inform(self, ctx):
            """Inform after the reply."""
            ctx.reply("ok", "first")
            ctx.inform("late")

    async def scenario(server, reader, writer):
        for name in (b"twice", b"late-inform"):
            writer.write(b"?" + name + b"\n")
            await expect(reader, b"!" + name + b" ok first\n",
                         re.compile(rb"^#log error [0-9.]+ \S*aiokatcp\.server Traceback"))
    run_sim(sim, lib, scenario, Misused)


def test_slow_client_is_dropped_by_a_big_mass_inform(sim, lib):
    async def scenario(server, reader, writer):
        server.max_backlog = 32768
        assert len(server._connections) == 1
        server.mass_inform("big", b"x" * 200000)
        assert len(server._connections) == 0
    run_sim(sim, lib, scenario)


def test_log_messages_match_aiokatcp(sim, lib, caplog):
    """Log records say the same as aiokatcp's (only the logger names differ)."""
    async def scenario(server, reader, writer):
        writer.write(b"?bad\\q\n?watchdog\n")
        await expect(reader, re.compile(rb"^#log error"), b"!watchdog ok\n")
        server.max_backlog = 32768
        server.mass_inform("big", b"x" * 200000)

    with caplog.at_level(logging.WARNING):
        run_sim(sim, lib, scenario)
    messages = [re.sub(r" \[.*\]$", " [ADDR]", r.getMessage()) for r in caplog.records
                if "aiokatcp" in r.name]
    assert messages == ["Malformed message received [ADDR]",
                        "Disconnecting client because it is too slow [ADDR]"]


def test_help_summary_is_the_first_docstring_line(sim, lib):
    class Documented(make_device(lib)):
        async def request_late_doc(self, ctx):
            """
            Text on the second line.
            """

    async def scenario(server, reader, writer):
        writer.write(b"?help[1] late-doc\n?help[2] add\n")
        await expect(reader, re.compile(rb"^#help\[1\] late-doc \\n(\\_)+Text"),
                     b"!help[1] ok 1\n", b"#help[2] add Add\\_two\\_numbers.\n",
                     b"!help[2] ok 1\n")
        writer.write(b"?help[3]\n")
        lines = []
        while not lines or not lines[-1].startswith(b"!"):
            lines.append(await reader.readline())
        assert b"#help[3] late-doc \\@\n" in lines
    run_sim(sim, lib, scenario, Documented)
