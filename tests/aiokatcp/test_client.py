"""ctlwire.aiokatcp's Client and SensorWatcher against aiokatcp's server and ours."""
import asyncio
import socket

import pytest

from ctlwire import aiokatcp as ck

from .conftest import TIMEOUT, make_device, port_of, run, start_device


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def until(predicate, timeout=TIMEOUT):
    """Wait (by polling the loop, bounded) for a condition set by callbacks."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def test_request_request_raw_and_errors(lib):
    async def main():
        server = await start_device(lib)
        async with await ck.Client.connect("127.0.0.1", port_of(server)) as client:
            assert client.is_connected and client.protocol_flags == frozenset("MIB")
            assert await client.request("add", 2, 3.5) == ([b"5.5"], [])
            reply, informs = await client.request_raw("informs", 2)
            assert reply == ck.Message.reply("informs", "ok", 2, mid=reply.mid)
            assert [m.arguments for m in informs] == [[b"0", b"item 0"], [b"1", b"item 1"]]
            with pytest.raises(ck.FailReply, match="^why$"):
                await client.request("fail", "why")
            with pytest.raises(ck.InvalidReply, match="unknown request"):
                await client.request("nosuch")
            reply, _ = await client.request_raw("nosuch")
            assert reply.arguments[0] == b"invalid"
            # many requests in flight are matched by message id
            results = await asyncio.gather(*(client.request("add", i, 0) for i in range(50)))
            assert [r[0] for r in results] == [[b"%d.0" % i] for i in range(50)]
        with pytest.raises(BrokenPipeError):
            await client.request("watchdog")
        await server.stop()
    run(main())


def test_inform_handlers_and_callbacks_decode_by_annotation(lib):
    seen = []

    class MyClient(ck.Client):
        def inform_interface_changed(self, *what: str) -> None:
            seen.append(("handler", what))

    async def main():
        server = await start_device(lib)
        client = await MyClient.connect("127.0.0.1", port_of(server))

        def callback(name: str, count: int) -> None:
            seen.append(("callback", name, count))

        client.add_inform_callback("interface-changed", lambda *a: seen.append(("raw", a)))
        client.add_inform_callback("thing", callback)
        server.mass_inform("interface-changed", "sensor-list")
        server.mass_inform("thing", "x", 3)
        await client.request("watchdog")
        client.remove_inform_callback("thing", callback)
        server.mass_inform("thing", "y", 4)
        await client.request("watchdog")
        assert seen == [("handler", ("sensor-list",)), ("raw", (b"sensor-list",)),
                        ("callback", "x", 3)]
        client.close()
        await client.wait_closed()
        await server.stop()
    run(main())


def test_auto_reconnect_retries_before_the_first_connection(lib):
    async def main():
        port = free_port()
        failures = []
        connected = asyncio.Event()
        client = ck.Client("127.0.0.1", port)
        client.add_failed_connect_callback(failures.append)
        client.add_connected_callback(connected.set)
        await until(lambda: failures)
        assert isinstance(failures[0], ConnectionRefusedError)
        assert isinstance(client.last_exc, ConnectionRefusedError) and not client.is_connected
        server = make_device(lib)("127.0.0.1", port)
        await server.start()
        await asyncio.wait_for(client.wait_connected(), TIMEOUT)
        assert connected.is_set() and client.last_exc is None
        assert await client.request("add", 1, 1) == ([b"2.0"], [])
        client.close()
        await client.wait_closed()
        await server.stop()
    run(main())


def test_lost_connection_fails_pending_requests_and_reconnects(lib):
    async def main():
        server = await start_device(lib)
        port = port_of(server)
        client = await ck.Client.connect("127.0.0.1", port)
        lost = asyncio.Event()
        client.add_disconnected_callback(lost.set)
        waiting = asyncio.ensure_future(client.request("wait"))
        await client.request("watchdog")
        await server.stop()
        with pytest.raises((ConnectionError, ck.FailReply)):
            await asyncio.wait_for(waiting, TIMEOUT)
        await asyncio.wait_for(lost.wait(), TIMEOUT)
        assert not client.is_connected
        await asyncio.wait_for(client.wait_disconnected(), TIMEOUT)
        server2 = make_device(lib)("127.0.0.1", port)
        await server2.start()
        await asyncio.wait_for(client.wait_connected(), TIMEOUT)
        assert await client.request("watchdog") == ([], [])
        client.close()
        await client.wait_closed()
        await server2.stop()
    run(main())


def test_without_auto_reconnect_a_failed_connect_raises():
    async def main():
        port = free_port()
        with pytest.raises(ConnectionRefusedError):
            await ck.Client.connect("127.0.0.1", port, auto_reconnect=False)
        client = ck.Client("127.0.0.1", port, auto_reconnect=False)
        with pytest.raises(ConnectionRefusedError):
            await client.wait_connected()
        await asyncio.wait_for(client.wait_closed(), TIMEOUT)
        assert isinstance(client.last_exc, ConnectionRefusedError)
    run(main())


async def _fake_server(version_line: bytes, script=None):
    """A raw server that announces ``version_line`` and answers by ``script``."""
    async def serve(reader, writer):
        writer.write(b"#version-connect katcp-protocol " + version_line + b"\n")
        while True:
            line = await reader.readline()
            if not line:
                break
            if script:
                writer.write(script(line))
        writer.close()
    return await asyncio.start_server(serve, "127.0.0.1", 0)


def test_server_without_message_ids_gets_one_request_at_a_time():
    def script(line):
        name = line.split()[0][1:]
        return b"#" + name + b" info\n!" + name + b" ok " + line.split()[1] + b"\n"

    async def main():
        server = await _fake_server(b"5.0-M", script)
        port = server.sockets[0].getsockname()[1]
        client = await ck.Client.connect("127.0.0.1", port)
        assert client.protocol_flags == frozenset("M")
        results = await asyncio.gather(*(client.request("echo", i) for i in range(5)))
        assert [r[0] for r in results] == [[b"%d" % i] for i in range(5)]
        assert all(len(r[1]) == 1 for r in results)
        client.close()
        await client.wait_closed()
        server.close()
    run(main())


def test_wrong_protocol_version_is_a_protocol_error():
    async def main():
        server = await _fake_server(b"4.0-M")
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ck.ProtocolError) as info:
            await ck.Client.connect("127.0.0.1", port, auto_reconnect=False)
        assert info.value.version == "4.0-M"
        server.close()
    run(main())


def test_sensor_reading_and_value(lib):
    async def main():
        server = await start_device(lib)
        server.temp.set_value(2.5, timestamp=100.0)
        async with await ck.Client.connect("127.0.0.1", port_of(server)) as client:
            reading = await client.sensor_reading("temp")
            assert reading == ck.Reading(100.0, ck.Sensor.Status.NOMINAL, 2.5)
            assert await client.sensor_value("counter", int) == 0
            colour = await client.sensor_reading("colour")
            assert (colour.status, colour.value) == (ck.Sensor.Status.UNKNOWN, b"red")
            with pytest.raises(ValueError, match="status"):
                await client.sensor_value("colour")
            with pytest.raises(ck.FailReply):
                await client.sensor_value("nosuch")
        await server.stop()
    run(main())


class Recorder(ck.AbstractSensorWatcher):
    def __init__(self):
        self.events = []

    def filter(self, name, description, units, type_name, *args):
        return name != "text"

    def sensor_added(self, name, *rest):
        self.events.append(("added", name))

    def sensor_removed(self, name):
        self.events.append(("removed", name))

    def sensor_updated(self, name, value, status, timestamp):
        self.events.append(("updated", name, value))

    def state_updated(self, state):
        self.events.append(("state", state))


def test_sensor_watcher_mirrors_follows_changes_and_reconnects(lib):
    async def main():
        server = await start_device(lib)
        port = port_of(server)
        client = await ck.Client.connect("127.0.0.1", port)
        watcher = ck.SensorWatcher(client)
        recorder = Recorder()
        client.add_sensor_watcher(watcher)
        client.add_sensor_watcher(recorder)
        await asyncio.wait_for(watcher.synced.wait(), TIMEOUT)
        assert sorted(watcher.sensors) == ["colour", "counter", "flag", "temp", "text"]
        assert ("added", "text") not in recorder.events
        mirrored = watcher.sensors["colour"]
        assert [m.katcp_value for m in mirrored.stype] == [b"red", b"dark-green"]
        server.counter.set_value(42)
        await until(lambda: watcher.sensors["counter"].value == 42)
        assert watcher.sensors["counter"].status is ck.Sensor.Status.NOMINAL
        assert ("updated", "counter", b"42") in recorder.events
        # interface changes
        await client.request("add-sensor", "extra")
        await until(lambda: "extra" in watcher.sensors and watcher.synced.is_set())
        await client.request("remove-sensor", "temp")
        await until(lambda: "temp" not in watcher.sensors)
        assert ("removed", "temp") in recorder.events
        # the server goes away: the mirror says so, then catches up again
        await server.stop()
        await until(lambda: watcher.sensors["counter"].status
                    is ck.Sensor.Status.UNREACHABLE)
        assert not watcher.synced.is_set()
        server2 = make_device(lib)("127.0.0.1", port)
        await server2.start()
        server2.counter.set_value(7)
        await asyncio.wait_for(watcher.synced.wait(), TIMEOUT)
        await until(lambda: watcher.sensors["counter"].value == 7)
        assert "extra" not in watcher.sensors and "temp" in watcher.sensors
        states = [e[1] for e in recorder.events if e[0] == "state"]
        assert states[:2] == [ck.SyncState.SYNCING, ck.SyncState.SYNCED]
        assert ck.SyncState.DISCONNECTED in states and states[-1] is ck.SyncState.SYNCED
        client.close()
        await client.wait_closed()
        assert recorder.events[-1] == ("state", ck.SyncState.CLOSED)
        await server2.stop()
    run(main())


def test_sensor_watcher_rewrites_names_and_uses_given_enums(lib):
    from .conftest import Colour

    class Prefixed(ck.SensorWatcher):
        def rewrite_name(self, name):
            return [f"a.{name}", f"b.{name}"]

    async def main():
        server = await start_device(lib)
        client = await ck.Client.connect("127.0.0.1", port_of(server))
        watcher = Prefixed(client, enum_types=[Colour])
        client.add_sensor_watcher(watcher)
        await asyncio.wait_for(watcher.synced.wait(), TIMEOUT)
        assert "a.counter" in watcher.sensors and "b.counter" in watcher.sensors
        assert watcher.sensors["a.colour"].stype is Colour
        server.colour.value = Colour.DARK_GREEN
        await until(lambda: watcher.sensors["b.colour"].value is Colour.DARK_GREEN)
        client.close()
        await client.wait_closed()
        await server.stop()
    run(main())


def test_connection_with_an_owner_of_our_own():
    """``Connection`` on its own: an owner that records what the connection reports."""
    class Owner:
        def __init__(self):
            self.messages = []
            self.made = asyncio.Event()
            self.lost = asyncio.Event()
            self.conn = None

        def handle_message(self, conn, msg):
            self.messages.append(msg)

        def _connection_made(self, conn):
            self.conn = conn
            self.made.set()

        def _connection_lost(self, conn, exc):
            self.lost.set()

        def _eof_received(self, conn):
            return False

    async def main():
        owner = Owner()
        server = await asyncio.get_running_loop().create_server(
            lambda: ck.Connection(owner, True, 1024), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.wait_for(owner.made.wait(), TIMEOUT)
        assert owner.conn.address.port == writer.get_extra_info("sockname")[1]
        writer.write(b"?one[1] a\\_b\n#two x\n?" + b"x" * 2000 + b"\n!three ok\n")
        owner.conn.write_messages([ck.Message.reply("one", "ok", mid=1),
                                   ck.Message.inform("hello")])
        assert await reader.readline() == b"!one[1] ok\n"
        assert await reader.readline() == b"#hello\n"
        # the over-long line is answered with #log error (server side) and skipped
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        assert line.startswith(b"#log error ")
        await until(lambda: len(owner.messages) == 3)
        assert [m.name for m in owner.messages] == ["one", "two", "three"]
        assert owner.messages[0].arguments == [b"a b"] and owner.messages[0].mid == 1
        await owner.conn.drain()
        writer.close()
        await asyncio.wait_for(owner.lost.wait(), TIMEOUT)
        await owner.conn.wait_closed()
        owner.conn.write_message(ck.Message.inform("late"))  # logged, dropped
        server.close()
    run(main())
