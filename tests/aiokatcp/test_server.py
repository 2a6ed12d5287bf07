"""DeviceServer: the same device source on aiokatcp and on ctlwire.aiokatcp, over
loopback, must answer the same.

Clients here are aiokatcp's own ``Client`` (the reference) and a raw line socket.
"""
from __future__ import annotations

import asyncio
import logging
import re
import socket

import aiokatcp as ref
import pytest

from ctlwire import aiokatcp as ck

from .conftest import RawClient, TIMEOUT, make_device, port_of, run, start_device


async def _client(server):
    return await asyncio.wait_for(ref.Client.connect("127.0.0.1", port_of(server)), TIMEOUT)


def test_connect_sends_version_informs(lib):
    async def main():
        server = await start_device(lib)
        raw = await RawClient.open(port_of(server))
        lines = [await raw.line() for _ in range(3)]
        assert lines[0] == b"#version-connect katcp-protocol 5.1-MIB\n"
        assert lines[1].startswith(b"#version-connect katcp-library ")
        assert lines[2] == b"#version-connect katcp-device testdev-1.2 testdev-1.2.3\n"
        other = await RawClient.open(port_of(server))
        connected = await raw.line()
        assert re.match(rb"#client-connected 127\.0\.0\.1:\d+\n", connected)
        await other.close()
        await raw.close()
        await server.stop()
    run(main())


REQUESTS = [
    (("echo", "a b", "", "c"), ([b"a b", b"", b"c"], 0)),
    (("add", 2, 0.5), ([b"2.5"], 0)),
    (("add", 2), ([b"3.0"], 0)),
    (("types", 7, 1.5, True, "é", b"\xff", "dark-green", 12.5, "[::1]:8", "now"),
     ([b"7", b"1.5", b"1", "é".encode(), b"\xff", b"dark-green", b"12.5", b"[::1]:8",
       b"now", b"-1"], 0)),
    (("types", 7, 1.5, False, "s", b"", "red", 1, "10.1.2.3", 4.5, 9),
     ([b"7", b"1.5", b"0", b"s", b"", b"red", b"1.0", b"10.1.2.3", b"4.5", b"9"], 0)),
    (("informs", 3), ([b"3"], 3)),
    (("inform-reply",), ([b"done"], 1)),
    (("watchdog",), ([], 0)),
    (("sleep", 0.01), ([b"awake"], 1)),
]


@pytest.mark.parametrize("request_args, expected", REQUESTS)
def test_requests_decode_arguments_and_encode_replies(lib, request_args, expected):
    async def main():
        server = await start_device(lib)
        client = await _client(server)
        reply, informs = await client.request(*request_args)
        assert (reply, len(informs)) == expected
        assert all(m.mid == informs[0].mid for m in informs)
        client.close()
        await client.wait_closed()
        await server.stop()
    run(main())


ERRORS = [
    (("add",), ref.FailReply, r"missing a required argument: 'a'"),
    (("add", "x"), ref.FailReply, r"invalid literal for int\(\)"),
    (("add", 1, 2, 3), ref.FailReply, r"too many arguments for add"),
    (("types", 1, 1, 2, "s", "b", "red", 1, "h", "now"), ref.FailReply, r"boolean must be 0 or 1"),
    (("types", 1, 1, 1, "s", "b", "blue", 1, "1.2.3.4", "now"), ref.FailReply, r"not a valid value"),
    (("fail", "why not"), ref.FailReply, r"^why not$"),
    (("invalid",), ref.InvalidReply, r"^not like that$"),
    (("nosuch",), ref.InvalidReply, r"^unknown request nosuch$"),
    (("crash",), ref.FailReply, r"ZeroDivisionError: bad maths"),
    (("help", "nosuch"), ref.FailReply, r"request nosuch is not known"),
    (("sensor-list", "nosuch"), ref.FailReply, r"Unknown sensor 'nosuch'"),
    (("sensor-list", "/[/"), ref.FailReply, r"unterminated character set"),
    (("sensor-sampling", "counter", "bogus"), ref.FailReply, r"not a valid value"),
    (("sensor-sampling", "counter", "period"), ref.FailReply, r"expected 1 strategy arguments, found 0"),
    (("sensor-sampling", "counter", "period", 0), ref.FailReply, r"period must be positive"),
    (("sensor-sampling", "text", "differential", 1), ref.FailReply, r"only valid for integer and float"),
    (("sensor-sampling", "counter,counter", "auto"), ref.FailReply, r"Duplicate sensor name"),
    (("sensor-sampling", "counter,nosuch", "auto"), ref.FailReply, r"Unknown sensor 'nosuch'"),
    (("log-level", "loud"), ref.FailReply, r"not a valid value"),
]


@pytest.mark.parametrize("request_args, error, pattern", ERRORS)
def test_errors_reply_fail_or_invalid_with_the_reason(lib, request_args, error, pattern):
    async def main():
        server = await start_device(lib)
        client = await _client(server)
        with pytest.raises(error) as info:
            await client.request(*request_args)
        assert re.search(pattern, str(info.value)), str(info.value)
        # the connection keeps serving
        assert await client.request("add", 1, 1) == ([b"2.0"], [])
        client.close()
        await client.wait_closed()
        await server.stop()
    run(main())


def test_malformed_line_gets_log_error_and_the_connection_stays(lib):
    async def main():
        server = await start_device(lib)
        raw = await RawClient.open(port_of(server))
        await raw.until(b"#version-connect katcp-device")
        raw.send(b"?bad\\q arg\n?watchdog[4]\n")
        lines = await raw.until(b"!watchdog")
        assert lines[0].startswith(b"#log error ")
        assert lines[-1] == b"!watchdog[4] ok\n"
        await raw.close()
        await server.stop()
    run(main())


def test_help_lists_every_request_sorted(lib):
    async def main():
        server = await start_device(lib)
        client = await _client(server)
        reply, informs = await client.request("help")
        names = [m.arguments[0] for m in informs]
        assert names == sorted(names)
        assert reply == [b"%d" % len(informs)]
        standard = {b"help", b"halt", b"watchdog", b"version-list", b"sensor-list",
                    b"sensor-value", b"sensor-sampling", b"client-list", b"log-level"}
        assert standard | {b"echo", b"add", b"types"} <= set(names)
        add = [m for m in informs if m.arguments[0] == b"add"][0]
        assert add.arguments[1] == b"Add two numbers."
        _, one = await client.request("help", "add")
        assert one[0].arguments == [b"add", b"Add two numbers."]
        client.close()
        await client.wait_closed()
        await server.stop()
    run(main())


def test_sensor_list_and_value_with_names_and_regexes(lib):
    async def main():
        server = await start_device(lib)
        server.temp.set_value(3.5, timestamp=1234.5)
        client = await _client(server)
        reply, informs = await client.request("sensor-list")
        assert [m.arguments[0] for m in informs] == [b"colour", b"counter", b"flag", b"temp",
                                                     b"text"]
        colour = informs[0].arguments
        assert colour == [b"colour", b"A colour", b"", b"discrete", b"red", b"dark-green"]
        assert informs[3].arguments == [b"temp", b"Temperature", b"K", b"float"]
        reply, informs = await client.request("sensor-list", "/^t/")
        assert reply == [b"2"]
        reply, informs = await client.request("sensor-value", "temp")
        assert informs[0].arguments == [b"1234.5", b"1", b"temp", b"nominal", b"3.5"]
        reply, informs = await client.request("sensor-value")
        assert reply == [b"5"] and len(informs) == 5
        unknown = [m for m in informs if m.arguments[2] == b"colour"][0]
        assert unknown.arguments[3:] == [b"unknown", b"red"]
        client.close()
        await client.wait_closed()
        await server.stop()
    run(main())


def test_version_list_client_list_log_level(lib):
    async def main():
        server = await start_device(lib)
        client = await _client(server)
        reply, informs = await client.request("version-list")
        assert reply == [b"3"]
        assert informs[0].arguments == [b"katcp-protocol", b"5.1-MIB"]
        assert informs[2].arguments == [b"katcp-device", b"testdev-1.2", b"testdev-1.2.3"]
        reply, informs = await client.request("client-list")
        assert reply == [b"1"] and re.match(rb"127\.0\.0\.1:\d+$", informs[0].arguments[0])
        assert await client.request("log-level") == ([b"warn"], [])
        assert await client.request("log-level", "debug") == ([b"debug"], [])
        assert await client.request("log-level") == ([b"debug"], [])
        client.close()
        await client.wait_closed()
        await server.stop()
    run(main())


def test_log_handler_sends_log_informs_above_the_level(lib):
    async def main():
        server = await start_device(lib)
        handler = lib.DeviceServer.LogHandler(server)
        log = logging.getLogger("testdevice.hardware")
        log.addHandler(handler)
        log.propagate = False
        try:
            client = await _client(server)
            got = asyncio.Queue()
            client.add_inform_callback("log", lambda *args: got.put_nowait(args))
            log.info("quiet")          # below warn: not sent
            log.error("fan %d stopped", 3)
            args = await asyncio.wait_for(got.get(), TIMEOUT)
            assert args[0] == b"error" and args[2] == b"testdevice.hardware"
            assert args[3].endswith(b"fan 3 stopped")
            assert got.empty()
            client.close()
            await client.wait_closed()
        finally:
            log.removeHandler(handler)
        await server.stop()
    run(main())


def test_mass_inform_reaches_every_client(lib):
    async def main():
        server = await start_device(lib)
        clients = [await _client(server) for _ in range(3)]
        queues = []
        for c in clients:
            q = asyncio.Queue()
            c.add_inform_callback("interface-changed", lambda *a, q=q: q.put_nowait(a))
            queues.append(q)
        server.mass_inform("interface-changed", "sensor-list")
        for q in queues:
            assert await asyncio.wait_for(q.get(), TIMEOUT) == (b"sensor-list",)
        for c in clients:
            c.close()
            await c.wait_closed()
        await server.stop()
    run(main())


def test_requests_run_concurrently_and_stop_cancels_them(lib):
    async def main():
        server = await start_device(lib)
        client = await _client(server)
        waiting = asyncio.ensure_future(client.request("wait"))
        # a later request is answered while the first one waits
        assert await client.request("add", 1, 1) == ([b"2.0"], [])
        assert not waiting.done()
        await server.stop()
        with pytest.raises((ref.FailReply, ConnectionError)) as info:
            await asyncio.wait_for(waiting, TIMEOUT)
        if isinstance(info.value, ref.FailReply):
            assert str(info.value) == "request cancelled"
        client.close()
        await client.wait_closed()
    run(main())


def test_stop_without_cancel_lets_requests_finish(lib):
    async def main():
        server = await start_device(lib)
        client = await _client(server)
        waiting = asyncio.ensure_future(client.request("wait"))
        await client.request("watchdog")
        stopping = asyncio.ensure_future(server.stop(cancel=False))
        await asyncio.sleep(0.05)
        assert not stopping.done()
        server.release.set()
        assert await asyncio.wait_for(waiting, TIMEOUT) == ([b"released"], [])
        await asyncio.wait_for(stopping, TIMEOUT)
        client.close()
        await client.wait_closed()
    run(main())


def test_halt_request_stops_the_server_and_says_goodbye(lib):
    async def main():
        server = await start_device(lib)
        raw = await RawClient.open(port_of(server))
        await raw.until(b"#version-connect katcp-device")
        raw.send(b"?halt[1]\n")
        lines = await raw.until(b"#disconnect")
        assert b"!halt[1] ok\n" in lines
        assert lines[-1] == b"#disconnect server\\_shutting\\_down\n"
        await asyncio.wait_for(server.join(), TIMEOUT)
        assert server.server is None and server.sockets == ()
        await raw.close()
    run(main())


def test_start_twice_is_an_error_and_restart_works(lib):
    async def main():
        server = await start_device(lib)
        with pytest.raises(RuntimeError):
            await server.start()
        await server.stop()
        await server.start()
        client = await _client(server)
        await client.request("watchdog")
        client.close()
        await client.wait_closed()
        await server.stop()
    run(main())


def test_version_and_build_state_are_required(lib):
    class NoVersion(lib.DeviceServer):
        BUILD_STATE = "x"

    with pytest.raises(TypeError):
        NoVersion("127.0.0.1", 0)
    with pytest.raises(TypeError, match="docstring"):
        class NoDoc(lib.DeviceServer):
            VERSION = "a"
            BUILD_STATE = "b"

            async def request_x(self, ctx):
                pass


def test_crashing_service_task_halts_the_server_and_join_reraises(lib):
    async def main():
        server = await start_device(lib)

        async def crash():
            await asyncio.sleep(0.01)
            raise RuntimeError("service died")

        async def forever():
            await asyncio.Event().wait()

        survivor = asyncio.ensure_future(forever())
        server.add_service_task(survivor)
        server.add_service_task(asyncio.ensure_future(crash()))
        with pytest.raises(RuntimeError, match="service died"):
            await asyncio.wait_for(server.join(), TIMEOUT)
        assert survivor.cancelled()
        assert server.server is None
    run(main())


def test_service_tasks_are_cancelled_on_stop(lib):
    async def main():
        server = await start_device(lib)
        done = asyncio.ensure_future(asyncio.sleep(0))
        server.add_service_task(done)
        await done
        assert done not in server.service_tasks  # a finished task is forgotten
        task = asyncio.ensure_future(asyncio.Event().wait())
        server.add_service_task(task)
        assert task in server.service_tasks
        await server.stop()
        assert task.cancelled()
    run(main())


def test_max_pending_stops_reading_until_a_request_finishes(lib):
    async def main():
        server = await start_device(lib, max_pending=2)
        raw = await RawClient.open(port_of(server))
        await raw.until(b"#version-connect katcp-device")
        raw.send(b"?wait[1]\n?wait[2]\n?add[3] 1 1\n")
        await asyncio.sleep(0.2)
        # two requests in progress: the third waits unread
        assert raw.reader._buffer == b""  # type: ignore[attr-defined]
        server.release.set()
        lines = await raw.until(b"!add[3]")
        assert lines[-1] == b"!add[3] ok 2.0\n"
        assert b"!wait[1] ok released\n" in lines and b"!wait[2] ok released\n" in lines
        await raw.close()
        await server.stop()
    run(main())


def test_max_backlog_drops_a_client_that_does_not_read(lib):
    async def main():
        server = await start_device(lib, max_backlog=64 * 1024)
        slow = socket.create_connection(("127.0.0.1", port_of(server)))
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client = await _client(server)
        try:
            slow.sendall(b"?sensor-sampling text auto\n")
            await asyncio.sleep(0.1)
            for i in range(10000):  # up to 40 MB: far past any kernel buffer
                server.text.value = f"{i:04096d}"
                if i % 20 == 0:
                    await asyncio.sleep(0)
                    if len(server._connections) == 1:
                        break
            assert len(server._connections) == 1
            # the other client is served as before
            assert await client.request("add", 2, 2) == ([b"4.0"], [])
        finally:
            slow.close()
            client.close()
            await client.wait_closed()
            await server.stop()
    run(main())


STRATEGIES = [
    ("auto", [], [1, 1, 2, 3, 7]),
    ("event", [], [1, 2, 3, 7]),
    ("differential", [5], [1, 7]),
    ("none", [], []),
]


@pytest.mark.parametrize("strategy, params, expected", STRATEGIES)
def test_sampling_strategies_send_sensor_status(lib, strategy, params, expected):
    async def main():
        server = await start_device(lib)
        client = await _client(server)
        got = []
        client.add_inform_callback(
            "sensor-status", lambda ts, n, name, status, value: got.append(int(value)))
        server.counter.set_value(1)
        reply, _ = await client.request("sensor-sampling", "counter", strategy, *params)
        assert reply[:2] == [b"counter", strategy.encode()]
        for v in (1, 2, 3, 7):
            server.counter.set_value(v)
        await client.request("watchdog")
        assert got == expected
        assert (await client.request("sensor-sampling", "counter"))[0][1] == strategy.encode()
        client.close()
        await client.wait_closed()
        await server.stop()
    run(main())


def test_bulk_sampling_and_clear_per_client(lib):
    async def main():
        server = await start_device(lib)
        client = await _client(server)
        other = await _client(server)
        got = []
        client.add_inform_callback("sensor-status", lambda *a: got.append(a[2]))
        reply, _ = await client.request("sensor-sampling", "counter,temp", "event-rate", 0, 10)
        assert reply == [b"counter,temp", b"event-rate", b"0.0", b"10.0"]
        await client.request("watchdog")
        assert sorted(got) == [b"counter", b"temp"]
        assert (await other.request("sensor-sampling", "temp"))[0] == [b"temp", b"none"]
        # removing a sensor drops its sampling
        del server.sensors["temp"]
        server.temp.set_value(1.0)
        await client.request("sensor-sampling", "counter", "none")
        server.counter.set_value(99)
        await client.request("watchdog")
        assert sorted(got) == [b"counter", b"temp"]
        for c in (client, other):
            c.close()
            await c.wait_closed()
        await server.stop()
    run(main())


def test_unhandled_request_can_be_overridden(lib):
    class Dynamic(make_device(lib)):
        async def unhandled_request(self, ctx, req):
            ctx.reply("ok", "dynamic", req.name)

    async def main():
        server = Dynamic("127.0.0.1", 0)
        await server.start()
        client = await _client(server)
        assert await client.request("anything") == ([b"dynamic", b"anything"], [])
        client.close()
        await client.wait_closed()
        await server.stop()
    run(main())


def test_handler_that_replies_and_returns_is_an_error(lib):
    class Confused(make_device(lib)):
        async def request_both(self, ctx):
            """Reply and return."""
            ctx.reply("ok")
            return 1

    async def main():
        server = Confused("127.0.0.1", 0)
        await server.start()
        raw = await RawClient.open(port_of(server))
        await raw.until(b"#version-connect katcp-device")
        raw.send(b"?both[1]\n")
        lines = await raw.until(b"#log")
        assert lines[0] == b"!both[1] ok\n"
        assert b"both\\_replied\\_and\\_returned" in lines[1]
        await raw.close()
        await server.stop()
    run(main())


def test_a_handler_using_asyncio_timeout_runs_in_a_task():
    class Timed(make_device(ck)):
        async def request_timed(self, ctx):
            """Use asyncio.timeout."""
            async with asyncio.timeout(5):
                assert asyncio.current_task() is not None
                return "fine"

    async def main():
        server = Timed("127.0.0.1", 0)
        await server.start()
        client = await _client(server)
        assert await client.request("timed") == ([b"fine"], [])
        client.close()
        await client.wait_closed()
        await server.stop()
    run(main())


def test_a_client_that_does_not_read_stops_being_read(lib):
    """Replies a client does not read count as pending; at max_pending the server stops
    reading (nothing piles up without bound) until they drain or the client goes."""
    async def main():
        server = await start_device(lib, max_pending=4)
        sock = socket.create_connection(("127.0.0.1", port_of(server)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            big = b"x" * 65536
            payload = b"".join(b"?echo[%d] %s\n" % (i, big) for i in range(1, 201))
            loop = asyncio.get_running_loop()
            sent = 0
            conn = None
            for _ in range(400):  # bounded: until the server has stopped reading
                try:
                    sent += sock.send(payload[sent:])
                except BlockingIOError:
                    pass
                await asyncio.sleep(0.01)
                conn = next(iter(server._connections))
                if len(server._pending) >= 4 and not conn._transport.is_reading():
                    break
            assert len(server._pending) <= 4
            assert not conn._transport.is_reading()
            assert sent < len(payload)  # the rest could not even be sent
            # max_pending is server-wide (as in aiokatcp): others may wait too, at the
            # latest until the stuck client goes away
            client = await _client(server)
            waiting = asyncio.ensure_future(client.request("add", 1, 2))
            await asyncio.sleep(0.2)
            sock.close()
            assert await asyncio.wait_for(waiting, TIMEOUT) == ([b"3.0"], [])
            client.close()
            await client.wait_closed()
        finally:
            sock.close()
            await server.stop()
    run(main())
