"""The device server driven by aiokatcp's client (and raw sockets) over loopback."""
from __future__ import annotations

import asyncio
import logging
import queue
import socket
import threading
import time

import aiokatcp
import pytest

from ctlwire.katcp import (DeviceServer, Float, Int, Message, ProtocolFlags, Sensor, Str,
                           request_timeout_hint,
                           request, return_reply)
from ctlwire.katcp.core import AsyncReply, FailReply

TIMEOUT = 10.0


class Device(DeviceServer):
    VERSION_INFO = ("test-device", 2, 3)
    BUILD_INFO = ("test-device", 2, 3, "rc1")

    def setup_sensors(self):
        self.temp = Sensor.float("box.temp", "Box temperature", "degC", [-40.0, 80.0],
                                 default=20.5, initial_status=Sensor.NOMINAL)
        self.count = Sensor.integer("box.count", "Counter", "", [0, 10**9])
        self.mode = Sensor.discrete("box.mode", "Operating mode", "", ["idle", "busy"])
        self.ok = Sensor.boolean("psu.ok", "Power good")
        self.label = Sensor.string("psu.label", "Label text", default="main supply")
        for sensor in (self.temp, self.count, self.mode, self.ok, self.label):
            self.add_sensor(sensor)
        self.parked = queue.Queue()

    @request(Int(), Int())
    @return_reply(Int())
    def request_add(self, req, a, b):
        """Add two integers."""
        return ("ok", a + b)

    @request(Str())
    @return_reply(Str())
    def request_echo(self, req, text):
        """Echo a text back."""
        return ("ok", text)

    def request_refuse(self, req, msg):
        """Always fail politely."""
        raise FailReply("not today")

    def request_crash(self, req, msg):
        """Fail with an unexpected error."""
        raise RuntimeError("kaboom")

    def request_later(self, req, msg):
        """Reply later, from another thread, after an inform."""
        def finish():
            req.inform("working")
            req.reply("ok", "done")
        threading.Timer(0.05, finish).start()
        raise AsyncReply()

    @request(Float())
    @return_reply(Float())
    async def request_double(self, req, x):
        """Double a number after awaiting."""
        await asyncio.sleep(0.01)
        return ("ok", x * 2)

    def request_deferred(self, req, msg):
        """Park the request; the test answers it through the server's methods."""
        self.parked.put((req.client_connection, msg))
        raise AsyncReply()

    def request_bad_return(self, req, msg):
        """Return something that is not a reply."""
        return 42


class NoMidDevice(Device):
    PROTOCOL_INFO = ProtocolFlags(5, 0, [ProtocolFlags.MULTI_CLIENT])


def start(cls=Device, **kwargs):
    server = cls("127.0.0.1", 0, **kwargs)
    server.start(timeout=TIMEOUT)
    return server


@pytest.fixture
def server():
    srv = start()
    try:
        yield srv
    finally:
        srv.stop(timeout=TIMEOUT)
        srv.join(timeout=TIMEOUT)


class Recorder(aiokatcp.Client):
    """aiokatcp client that records every asynchronous inform."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.informs = []

    def handle_inform(self, msg):
        self.informs.append(msg)
        super().handle_inform(msg)

    def named(self, name):
        return [m for m in self.informs if m.name == name]

    async def wait_informs(self, name, count, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while len(self.named(name)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"got {len(self.named(name))} of {count} #{name}")
            await asyncio.sleep(0.005)
        return self.named(name)


async def connect(server, cls=Recorder):
    host, port = server.bind_address
    return await asyncio.wait_for(cls.connect(host, port, auto_reconnect=False), TIMEOUT)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def with_client(server, body):
    async def main():
        client = await connect(server)
        try:
            return await body(client)
        finally:
            client.close()
            await client.wait_closed()
    return run(main())


def status_values(informs):
    return [(m.arguments[2].decode(), m.arguments[3].decode(), m.arguments[4].decode())
            for m in informs]


def read_lines(sock, count, timeout=TIMEOUT):
    """Read ``count`` lines from a raw socket, bounded by ``timeout``."""
    buf = b""
    deadline = time.monotonic() + timeout
    while buf.count(b"\n") < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out with {buf!r}")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf.split(b"\n")[:count]


# -- connecting ---------------------------------------------------------------------------
def test_connect_sends_three_version_connect_informs(server):
    with socket.create_connection(server.bind_address, timeout=TIMEOUT) as sock:
        lines = read_lines(sock, 3)
    assert lines == [
        b"#version-connect katcp-protocol 5.1-BIM",
        b"#version-connect katcp-library ctlwire-0.1.0 0.1.0",
        b"#version-connect katcp-device test-device-2.3 test-device-2.3rc1",
    ]


def test_aiokatcp_client_learns_protocol_flags(server):
    async def body(client):
        return client.protocol_flags
    assert with_client(server, body) == frozenset("BIM")


def test_other_clients_hear_client_connected(server):
    async def body(client):
        other = await connect(server)
        try:
            informs = await client.wait_informs("client-connected", 1)
        finally:
            other.close()
        return informs[0].arguments[0].decode()
    assert with_client(server, body).startswith("127.0.0.1:")


# -- requests -----------------------------------------------------------------------------
def test_request_with_message_id(server):
    async def body(client):
        reply, _ = await client.request("add", 2, 3)
        return reply
    assert with_client(server, body) == [b"5"]


def test_request_without_message_ids():
    srv = start(NoMidDevice)
    try:
        async def body(client):
            assert "I" not in client.protocol_flags
            return (await client.request("add", 4, 5))[0]
        assert with_client(srv, body) == [b"9"]
    finally:
        srv.stop(timeout=TIMEOUT)


def test_raw_request_echoes_mid_and_escapes(server):
    with socket.create_connection(server.bind_address, timeout=TIMEOUT) as sock:
        read_lines(sock, 3)
        sock.sendall(b"?echo[42] a\\_b\\tc\n?echo x\n")
        assert read_lines(sock, 2) == [b"!echo[42] ok a\\_b\\tc", b"!echo ok x"]


def test_pipelined_requests_are_answered_in_order(server):
    with socket.create_connection(server.bind_address, timeout=TIMEOUT) as sock:
        read_lines(sock, 3)
        sock.sendall(b"".join(b"?add[%d] %d 1\n" % (i + 1, i) for i in range(500)))
        lines = read_lines(sock, 500)
    assert lines == [b"!add[%d] ok %d" % (i + 1, i + 1) for i in range(500)]


def test_fail_reply_carries_the_reason(server):
    async def body(client):
        with pytest.raises(aiokatcp.FailReply, match="not today"):
            await client.request("refuse")
    with_client(server, body)


def test_bad_argument_names_the_parameter(server):
    async def body(client):
        with pytest.raises(aiokatcp.FailReply, match=r"parameter 2 \(b\)"):
            await client.request("add", 1, "two")
    with_client(server, body)


def test_too_many_arguments_fail(server):
    async def body(client):
        with pytest.raises(aiokatcp.FailReply, match="Too many parameters"):
            await client.request("add", 1, 2, 3)
    with_client(server, body)


def test_unexpected_exception_becomes_fail_with_traceback(server):
    async def body(client):
        with pytest.raises(aiokatcp.FailReply) as info:
            await client.request("crash")
        return str(info.value)
    text = with_client(server, body)
    assert "RuntimeError: kaboom" in text and "Traceback" in text


def test_non_reply_return_value_fails(server):
    async def body(client):
        with pytest.raises(aiokatcp.FailReply, match="instead of a reply"):
            await client.request("bad-return")
    with_client(server, body)


def test_unknown_request_is_invalid(server):
    async def body(client):
        reply, _ = await client.request_raw("no-such-request")
        return reply.arguments
    assert with_client(server, body) == [b"invalid", b"Unknown request."]


def test_async_reply_from_another_thread_with_inform(server):
    async def body(client):
        return await client.request("later")
    reply, informs = with_client(server, body)
    assert reply == [b"done"]
    assert [m.arguments for m in informs] == [[b"working"]]


def test_async_def_handler_is_awaited(server):
    async def body(client):
        return (await client.request("double", 1.25))[0]
    assert with_client(server, body) == [b"2.5"]


def test_concurrent_requests_of_one_client_keep_their_ids(server):
    async def body(client):
        results = await asyncio.gather(*(client.request("add", i, i) for i in range(50)))
        return [r[0][0] for r in results]
    assert with_client(server, body) == [b"%d" % (2 * i) for i in range(50)]


# -- standard requests --------------------------------------------------------------------
def test_help_lists_every_request_sorted(server):
    async def body(client):
        return await client.request("help")
    reply, informs = with_client(server, body)
    names = [m.arguments[0].decode() for m in informs]
    assert names == sorted(names)
    assert {"add", "halt", "help", "log-level", "restart", "client-list", "version-list",
            "sensor-list", "sensor-value", "sensor-sampling", "sensor-sampling-clear",
            "watchdog"} <= set(names)
    assert "request-timeout-hint" not in names  # the T flag is not offered
    assert reply == [str(len(names)).encode()]


def test_help_for_one_request_uses_its_docstring(server):
    async def body(client):
        return await client.request("help", "add")
    reply, informs = with_client(server, body)
    assert reply == [b"1"]
    assert informs[0].arguments == [b"add", b"Add two integers."]


def test_help_for_unknown_request_fails(server):
    async def body(client):
        with pytest.raises(aiokatcp.FailReply, match="Unknown request"):
            await client.request("help", "nothing")
    with_client(server, body)


def test_watchdog(server):
    async def body(client):
        return await client.request("watchdog")
    assert with_client(server, body) == ([], [])


def test_version_list(server):
    server.extra_versions["fpga"] = ("fw-7", None)
    async def body(client):
        return await client.request("version-list")
    reply, informs = with_client(server, body)
    assert reply == [b"4"]
    assert [m.arguments for m in informs] == [
        [b"katcp-protocol", b"5.1-BIM"],
        [b"katcp-library", b"ctlwire-0.1.0", b"0.1.0"],
        [b"katcp-device", b"test-device-2.3", b"test-device-2.3rc1"],
        [b"fpga", b"fw-7"],
    ]


def test_client_list_shows_every_client(server):
    async def body(client):
        other = await connect(server)
        try:
            return await client.request("client-list")
        finally:
            other.close()
    reply, informs = with_client(server, body)
    assert reply == [b"2"]
    assert all(m.arguments[0].startswith(b"127.0.0.1:") for m in informs)


def test_log_level_query_set_and_refuse(server):
    async def body(client):
        assert (await client.request("log-level"))[0] == [b"warn"]
        assert (await client.request("log-level", "info"))[0] == [b"info"]
        with pytest.raises(aiokatcp.FailReply, match="Unknown logging level"):
            await client.request("log-level", "loud")
        return (await client.request("log-level"))[0]
    assert with_client(server, body) == [b"info"]


def test_restart_puts_server_in_queue(server):
    restarts = queue.Queue()
    async def body(client):
        with pytest.raises(aiokatcp.FailReply, match="No restart queue"):
            await client.request("restart")
        server.set_restart_queue(restarts)
        return await client.request("restart")
    assert with_client(server, body) == ([], [])
    assert restarts.get(timeout=TIMEOUT) is server


def test_halt_replies_then_disconnects_and_stops():
    srv = start()
    try:
        with socket.create_connection(srv.bind_address, timeout=TIMEOUT) as sock:
            read_lines(sock, 3)
            sock.sendall(b"?halt[7]\n")
            lines = read_lines(sock, 3)
        assert lines[0] == b"!halt[7] ok"
        assert lines[1].startswith(b"#disconnect ")
        srv.join(timeout=TIMEOUT)
        assert not srv.running()
    finally:
        srv.stop(timeout=TIMEOUT)


# -- sensors ------------------------------------------------------------------------------
def test_sensor_list_all(server):
    async def body(client):
        return await client.request("sensor-list")
    reply, informs = with_client(server, body)
    assert reply == [b"5"]
    assert informs[0].arguments == [b"box.count", b"Counter", b"", b"integer", b"0",
                                    b"1000000000"]
    assert [m.arguments[0] for m in informs] == sorted(m.arguments[0] for m in informs)
    assert [b"box.mode", b"Operating mode", b"", b"discrete", b"idle", b"busy"] in \
        [m.arguments for m in informs]


def test_sensor_list_exact_name_and_regex(server):
    async def body(client):
        one = await client.request("sensor-list", "psu.ok")
        some = await client.request("sensor-list", "/^box\\./")
        return one, some
    (reply1, informs1), (reply2, informs2) = with_client(server, body)
    assert reply1 == [b"1"] and informs1[0].arguments == [b"psu.ok", b"Power good", b"",
                                                          b"boolean"]
    assert reply2 == [b"3"]
    assert [m.arguments[0] for m in informs2] == [b"box.count", b"box.mode", b"box.temp"]


def test_sensor_list_unknown_name_fails(server):
    async def body(client):
        with pytest.raises(aiokatcp.FailReply, match="Unknown sensor"):
            await client.request("sensor-list", "box")
    with_client(server, body)


def test_sensor_value_reports_readings(server):
    server.temp.set_value(21.25, Sensor.WARN, timestamp=1234.5)
    async def body(client):
        return await client.request("sensor-value", "/temp|label/")
    reply, informs = with_client(server, body)
    assert reply == [b"2"]
    assert [m.arguments for m in informs] == [
        [b"1234.500000", b"1", b"box.temp", b"warn", b"21.25"],
        [informs[1].arguments[0], b"1", b"psu.label", b"unknown", b"main supply"],
    ]


def test_sensor_value_through_aiokatcp_helper(server):
    server.count.set_value(17)
    async def body(client):
        return await client.sensor_value("box.count", int)
    assert with_client(server, body) == 17


# -- sampling -----------------------------------------------------------------------------
def sample(server, strategy_args, actions, expect, settle=0.0):
    """Set a strategy, run ``actions(server)`` in a thread, wait for ``expect`` informs."""
    async def body(client):
        reply, _ = await client.request("sensor-sampling", *strategy_args)
        await asyncio.get_running_loop().run_in_executor(None, actions, server)
        informs = await client.wait_informs("sensor-status", expect)
        if settle:
            await asyncio.sleep(settle)
        return reply, client.named("sensor-status")
    return with_client(server, body)


def test_sampling_query_defaults_to_none(server):
    async def body(client):
        return (await client.request("sensor-sampling", "box.temp"))[0]
    assert with_client(server, body) == [b"box.temp", b"none"]


def test_sampling_auto_sends_current_value_then_every_update(server):
    def actions(srv):
        for v in (1, 2, 2, 3):
            srv.count.set_value(v)
    reply, informs = sample(server, ("box.count", "auto"), actions, 5, settle=0.05)
    assert reply == [b"box.count", b"auto"]
    assert [v for _, _, v in status_values(informs)] == ["0", "1", "2", "2", "3"]


def test_sampling_event_sends_changes_only(server):
    def actions(srv):
        for v in ("idle", "busy", "busy", "idle"):
            srv.mode.set_value(v)
    _, informs = sample(server, ("box.mode", "event"), actions, 4, settle=0.05)
    # initial (unknown status), nominal idle, busy, idle
    assert status_values(informs) == [("box.mode", "unknown", "idle"),
                                      ("box.mode", "nominal", "idle"),
                                      ("box.mode", "nominal", "busy"),
                                      ("box.mode", "nominal", "idle")]


def test_sampling_differential_uses_threshold(server):
    def actions(srv):
        for v in (20.6, 20.9, 21.6, 21.7, 23.0):
            srv.temp.set_value(v)
    reply, informs = sample(server, ("box.temp", "differential", "1.0"), actions, 3,
                            settle=0.05)
    assert reply == [b"box.temp", b"differential", b"1.0"]
    assert [v for _, _, v in status_values(informs)] == ["20.5", "21.6", "23.0"]


def test_sampling_period_sends_at_once_then_periodically(server):
    async def body(client):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        reply, _ = await client.request("sensor-sampling", "box.temp", "period", "0.1")
        first = await client.wait_informs("sensor-status", 1)
        t_first = loop.time()
        informs = await client.wait_informs("sensor-status", 4)
        t_fourth = loop.time()
        await client.request("sensor-sampling", "box.temp", "none")
        return reply, t_first - t0, t_fourth - t_first
    reply, first_delay, three_periods = with_client(server, body)
    assert reply == [b"box.temp", b"period", b"0.1"]
    assert first_delay < 1.0  # at once, not after a period (generous slack)
    assert 0.25 <= three_periods < 3.0


def test_sampling_event_rate_holds_back_fast_changes(server):
    def actions(srv):
        for v in range(1, 200):
            srv.count.set_value(v)
    reply, informs = sample(server, ("box.count", "event-rate", "0.5", "60"), actions, 2,
                            settle=0.1)
    assert reply == [b"box.count", b"event-rate", b"0.5", b"60"]
    # initial value, then the latest value once the shortest period has passed
    assert [v for _, _, v in status_values(informs)] == ["0", "199"]


def test_sampling_differential_rate(server):
    def actions(srv):
        for v in (3, 6, 8, 12):
            srv.count.set_value(v)
    _, informs = sample(server, ("box.count", "differential-rate", "4", "0", "60"),
                        actions, 3, settle=0.05)
    # 3 changes the status (unknown -> nominal); 6 and 12 are within 4 of the last sent
    assert [v for _, _, v in status_values(informs)] == ["0", "3", "8"]


def test_sampling_bulk_sets_several_sensors(server):
    async def body(client):
        reply, _ = await client.request("sensor-sampling", "box.count,psu.ok", "event")
        informs = await client.wait_informs("sensor-status", 2)
        query = await client.request("sensor-sampling", "psu.ok")
        return reply, sorted(m.arguments[2] for m in informs), query[0]
    reply, names, query = with_client(server, body)
    assert reply == [b"box.count,psu.ok", b"event"]
    assert names == [b"box.count", b"psu.ok"]
    assert query == [b"psu.ok", b"event"]


def test_sampling_bulk_with_unknown_sensor_changes_nothing(server):
    async def body(client):
        with pytest.raises(aiokatcp.FailReply, match="Unknown sensor names: nope"):
            await client.request("sensor-sampling", "box.count,nope", "auto")
        return (await client.request("sensor-sampling", "box.count"))[0]
    assert with_client(server, body) == [b"box.count", b"none"]


def _set(server, sensor, value):
    return asyncio.get_running_loop().run_in_executor(None, sensor.set_value, value)


def test_sampling_bulk_auto_sends_current_readings_then_every_update(server):
    async def body(client):
        reply, _ = await client.request("sensor-sampling", "box.count,box.temp", "auto")
        first = status_values(await client.wait_informs("sensor-status", 2))
        await _set(server, server.count, 7)
        await _set(server, server.count, 7)  # auto: sent again, unchanged or not
        later = status_values(await client.wait_informs("sensor-status", 4))[2:]
        query = await client.request("sensor-sampling", "box.temp")
        return reply, first, later, query[0]
    reply, first, later, query = with_client(server, body)
    assert reply == [b"box.count,box.temp", b"auto"]
    assert sorted(first) == [("box.count", "unknown", "0"), ("box.temp", "nominal", "20.5")]
    assert later == [("box.count", "nominal", "7")] * 2
    assert query == [b"box.temp", b"auto"]


def test_sampling_bulk_auto_replaces_a_strategy_without_sending_twice(server):
    async def body(client):
        await client.request("sensor-sampling", "box.count", "event")
        await client.wait_informs("sensor-status", 1)
        await client.request("sensor-sampling", "box.count,psu.ok", "auto")
        await client.wait_informs("sensor-status", 3)
        await _set(server, server.count, 5)
        await _set(server, server.temp, 21.0)  # not sampled: nothing
        await _set(server, server.ok, True)
        informs = status_values(await client.wait_informs("sensor-status", 5))
        return informs[3:], (await client.request("sensor-sampling", "box.count"))[0]
    updates, query = with_client(server, body)
    assert updates == [("box.count", "nominal", "5"), ("psu.ok", "nominal", "1")]
    assert query == [b"box.count", b"auto"]


def test_sampling_bulk_auto_then_none_stops_that_sensor_only(server):
    async def body(client):
        await client.request("sensor-sampling", "box.count,box.temp", "auto")
        await client.wait_informs("sensor-status", 2)
        await client.request("sensor-sampling", "box.count", "none")
        await _set(server, server.count, 9)
        await _set(server, server.temp, 30.0)
        informs = status_values(await client.wait_informs("sensor-status", 3))
        return informs[2:]
    assert with_client(server, body) == [("box.temp", "nominal", "30.0")]


def test_sampling_bulk_auto_logs_a_reading_it_cannot_send_and_sends_the_others(server,
                                                                                caplog):
    def broken(sensor, value):
        raise RuntimeError("cannot format")

    server.label._wire = broken  # (a function slot of this sensor only)

    async def body(client):
        reply, _ = await client.request("sensor-sampling", "box.count,psu.label", "auto")
        informs = status_values(await client.wait_informs("sensor-status", 1))
        return reply, informs
    with caplog.at_level(logging.ERROR):
        reply, informs = with_client(server, body)
    assert reply == [b"box.count,psu.label", b"auto"]
    assert informs == [("box.count", "unknown", "0")]
    assert "psu.label" in caplog.text and "cannot format" in caplog.text


def test_sampling_bulk_auto_serves_each_new_client_alike(server):
    # the server keeps a sensor's fan-out when its last client leaves; the next client
    # gets the same first readings and updates
    async def body(client):
        await client.request("sensor-sampling", "box.count,psu.label", "auto")
        first = status_values(await client.wait_informs("sensor-status", 2))
        await _set(server, server.count, server.count.value() + 1)
        update = status_values(await client.wait_informs("sensor-status", 3))[2]
        return sorted(first), update
    (first1, update1), (first2, update2) = with_client(server, body), with_client(server, body)
    assert [name for name, _, _ in first1] == ["box.count", "psu.label"]
    assert first2[1] == first1[1] == ("psu.label", "unknown", "main supply")
    assert first2[0] == update1 == ("box.count", "nominal", "1")
    assert update2 == ("box.count", "nominal", "2")


@pytest.mark.parametrize("args, match", [
    (("nope", "auto"), "Unknown sensor name: nope"),
    (("box.count", "sometimes"), "Unknown strategy name: sometimes"),
    (("box.count", "period", "-1"), "positive"),
    (("psu.label", "differential", "1"), "only valid for"),
    ((), "No sensor name"),
])
def test_sampling_errors(server, args, match):
    async def body(client):
        with pytest.raises(aiokatcp.FailReply, match=match):
            await client.request("sensor-sampling", *args)
    with_client(server, body)


def test_sampling_clear_stops_all_informs(server):
    async def body(client):
        await client.request("sensor-sampling", "box.count", "auto")
        await client.request("sensor-sampling", "box.temp", "period", "0.05")
        await client.wait_informs("sensor-status", 2)
        await client.request("sensor-sampling-clear")
        count = len(client.named("sensor-status"))
        server.count.set_value(99)
        await asyncio.sleep(0.2)
        query = await client.request("sensor-sampling", "box.temp")
        return count, len(client.named("sensor-status")), query[0]
    before, after, query = with_client(server, body)
    assert before == after
    assert query == [b"box.temp", b"none"]


def test_sampling_is_per_client(server):
    async def body(client):
        other = await connect(server)
        try:
            await other.request("sensor-sampling", "box.count", "auto")
            await client.request("sensor-sampling", "box.count", "event")
            server.count.set_value(5)
            server.count.set_value(5)
            await other.wait_informs("sensor-status", 3)
            await client.wait_informs("sensor-status", 2)
            await asyncio.sleep(0.05)
            return len(other.named("sensor-status")), len(client.named("sensor-status"))
        finally:
            other.close()
    assert with_client(server, body) == (3, 2)


def test_updates_from_another_thread_arrive_in_order(server):
    def actions(srv):
        for v in range(1, 2001):
            srv.count.set_value(v)
    _, informs = sample(server, ("box.count", "auto"), actions, 2001)
    assert [int(v) for _, _, v in status_values(informs)] == list(range(0, 2001))


def test_remove_sensor_stops_its_sampling(server):
    async def body(client):
        await client.request("sensor-sampling", "box.count", "auto")
        await client.wait_informs("sensor-status", 1)
        sensor = server.count
        server.remove_sensor("box.count")
        sensor.set_value(3)
        await asyncio.sleep(0.1)
        with pytest.raises(aiokatcp.FailReply):
            await client.request("sensor-value", "box.count")
        return len(client.named("sensor-status")), server.has_sensor("box.count")
    assert with_client(server, body) == (1, False)


def test_add_sensor_while_running(server):
    server.add_sensor(Sensor.integer("late.one", "Added later", default=4,
                                     initial_status=Sensor.NOMINAL))
    async def body(client):
        return await client.sensor_value("late.one", int)
    assert with_client(server, body) == 4
    assert server.get_sensor("late.one").value() == 4
    assert len(server.get_sensors()) == 6
    with pytest.raises(ValueError, match="Unknown sensor"):
        server.get_sensor("nope")


# -- informs, logging ---------------------------------------------------------------------
def test_mass_inform_reaches_every_client(server):
    async def body(client):
        other = await connect(server)
        try:
            server.mass_inform(Message.inform("note", "hello world"))
            a = await client.wait_informs("note", 1)
            b = await other.wait_informs("note", 1)
            return a[0].arguments, b[0].arguments
        finally:
            other.close()
    assert with_client(server, body) == ([b"hello world"], [b"hello world"])


def test_device_logger_sends_log_informs_above_level(server):
    async def body(client):
        server.log.info("not sent at warn level")
        server.log.error("disk %s full", "A")
        informs = await client.wait_informs("log", 1)
        await asyncio.sleep(0.05)
        return [m.arguments for m in client.named("log")]
    logs = with_client(server, body)
    assert len(logs) == 1
    level, timestamp, name, text = logs[0]
    assert (level, name, text) == (b"error", b"root", b"disk A full")
    assert abs(float(timestamp) - time.time()) < 60


def test_python_logging_bridge(server):
    logger = logging.getLogger("test.device.bridge")
    handler = server.log.python_handler()
    logger.addHandler(handler)
    try:
        async def body(client):
            logger.warning("fan %d stopped", 3)
            informs = await client.wait_informs("log", 1)
            return informs[0].arguments
        level, _, name, text = with_client(server, body)
    finally:
        logger.removeHandler(handler)
    assert (level, name, text) == (b"warn", b"test.device.bridge", b"fan 3 stopped")


def test_tcp_inform_through_get_sockets(server):
    async def body(client):
        sockets = server.get_sockets()
        assert len(sockets) == 1
        server.tcp_inform(sockets[0], Message.inform("direct", "1"))
        return (await client.wait_informs("direct", 1))[0].arguments
    assert with_client(server, body) == [b"1"]


def test_on_client_disconnect_runs_when_client_leaves():
    seen = queue.Queue()

    class Watching(Device):
        def on_client_disconnect(self, conn, msg, connection_valid):
            seen.put((msg, connection_valid))
            super().on_client_disconnect(conn, msg, connection_valid)

    srv = start(Watching)
    try:
        with socket.create_connection(srv.bind_address, timeout=TIMEOUT) as sock:
            read_lines(sock, 3)
        msg, valid = seen.get(timeout=TIMEOUT)
        assert valid is False and "Connection lost" in msg
    finally:
        srv.stop(timeout=TIMEOUT)


def test_stop_sends_disconnect_to_clients():
    srv = start()
    with socket.create_connection(srv.bind_address, timeout=TIMEOUT) as sock:
        read_lines(sock, 3)
        srv.stop(timeout=TIMEOUT)
        lines = read_lines(sock, 1)
    srv.join(timeout=TIMEOUT)
    assert lines == [b"#disconnect Device\\_server\\_shutting\\_down."]
    assert not srv.running()


# -- running in the application's loop ----------------------------------------------------
def test_server_runs_inside_the_applications_event_loop():
    async def main():
        srv = Device("127.0.0.1", 0)
        await srv.async_start()
        try:
            assert srv.running() and srv.loop is asyncio.get_running_loop()
            client = await connect(srv)
            try:
                reply, _ = await client.request("add", 20, 22)
                await client.request("sensor-sampling", "box.count", "auto")
                srv.count.set_value(8)  # set in the loop thread: no hand-off needed
                informs = await client.wait_informs("sensor-status", 2)
            finally:
                client.close()
                await client.wait_closed()
        finally:
            await srv.async_stop()
        assert not srv.running()
        return reply, status_values(informs)[-1]
    reply, last = run(main())
    assert reply == [b"42"] and last == ("box.count", "nominal", "8")


def test_start_twice_is_refused(server):
    with pytest.raises(RuntimeError, match="already started"):
        server.start()


def test_request_handler_needs_docstring():
    with pytest.raises(TypeError, match="docstring"):
        class Bad(DeviceServer):
            def request_undocumented(self, req, msg):
                return req.make_reply("ok")


class HintedDevice(Device):
    PROTOCOL_INFO = ProtocolFlags(5, 1, [ProtocolFlags.MULTI_CLIENT, ProtocolFlags.MESSAGE_IDS,
                                         ProtocolFlags.REQUEST_TIMEOUT_HINTS])

    @request_timeout_hint(12.5)
    def request_long_job(self, req, msg):
        """A request that takes a while."""
        return req.make_reply("ok")


def test_request_timeout_hints_with_t_flag():
    srv = start(HintedDevice)
    try:
        async def body(client):
            assert "T" in client.protocol_flags
            every = await client.request("request-timeout-hint")
            one = await client.request("request-timeout-hint", "watchdog")
            return every, one
        (reply, informs), (reply1, informs1) = with_client(srv, body)
        assert reply == [b"1"] and informs[0].arguments == [b"long-job", b"12.5"]
        assert reply1 == [b"1"] and informs1[0].arguments == [b"watchdog", b"0.0"]
    finally:
        srv.stop(timeout=TIMEOUT)


def test_handler_thread_runs_handlers_off_the_loop():
    seen = queue.Queue()

    class Threaded(Device):
        def request_where(self, req, msg):
            """Report whether the handler runs in the loop thread."""
            seen.put(threading.get_ident() == self._loop_tid)
            return req.make_reply("ok")

    srv = Threaded("127.0.0.1", 0)
    srv.set_concurrency_options(thread_safe=True, handler_thread=True)
    srv.start(timeout=TIMEOUT)
    try:
        async def body(client):
            await client.request("where")
            await client.request("sensor-sampling", "box.count", "auto")
            srv.count.set_value(4)
            informs = await client.wait_informs("sensor-status", 2)
            return (await client.request("add", 1, 1))[0], status_values(informs)[-1]
        added, last = with_client(srv, body)
        assert seen.get(timeout=TIMEOUT) is False
        assert added == [b"2"] and last == ("box.count", "nominal", "4")
    finally:
        srv.stop(timeout=TIMEOUT)


def test_async_device_server_alias_is_importable():
    from ctlwire.katcp import AsyncDeviceServer
    assert issubclass(AsyncDeviceServer, DeviceServer)


def test_thread_updates_beyond_the_hand_off_limit_wait_and_all_arrive():
    srv = start(max_cross_thread=50)
    try:
        def actions(s):
            for v in range(1, 3001):
                s.count.set_value(v)
        _, informs = sample(srv, ("box.count", "auto"), actions, 3001)
        assert [int(v) for _, _, v in status_values(informs)] == list(range(0, 3001))
    finally:
        srv.stop(timeout=TIMEOUT)


def test_start_on_a_busy_port_raises_a_clear_error(server):
    other = Device("127.0.0.1", server.bind_address[1])
    with pytest.raises(RuntimeError, match="failed to start"):
        other.start(timeout=TIMEOUT)
    assert not other.running()


@pytest.mark.parametrize("via", ["connection", "socket"])
def test_late_reply_through_server_methods(server, via):
    async def body(client):
        pending = asyncio.ensure_future(client.request("deferred"))
        conn, msg = await asyncio.get_running_loop().run_in_executor(
            None, server.parked.get, True, TIMEOUT)
        if via == "connection":
            server.reply_inform(conn, Message.inform("deferred", "step"), msg)
            server.reply(conn, Message.reply("deferred", "ok", "done"), msg)
        else:
            (sock,) = server.get_sockets()
            server.tcp_reply_inform(sock, Message.inform("deferred", "step"), msg)
            server.tcp_reply(sock, Message.reply("deferred", "ok", "done"), msg)
        return await asyncio.wait_for(pending, TIMEOUT)
    reply, informs = with_client(server, body)
    assert reply == [b"done"] and [m.arguments for m in informs] == [[b"step"]]


def test_bad_sensor_regex_fails_clearly(server):
    async def body(client):
        with pytest.raises(aiokatcp.FailReply, match="Invalid sensor name regex"):
            await client.request("sensor-value", "/box[/")
    with_client(server, body)


def test_log_level_off_silences_the_device_logger(server):
    async def body(client):
        await client.request("log-level", "off")
        server.log.fatal("not sent when off")
        server.mass_inform(Message.inform("marker"))
        await client.wait_informs("marker", 1)
        return client.named("log")
    assert with_client(server, body) == []


def test_device_logger_levels_and_names(server):
    from ctlwire.katcp import DeviceLogger
    log = server.log
    assert log.level_name() == "warn"
    assert log.level_from_name("debug") == DeviceLogger.DEBUG
    assert log.level_from_name(b"fatal") == DeviceLogger.FATAL
    with pytest.raises(ValueError, match="Unknown logging level name 'loud'"):
        log.level_from_name("loud")
    log.set_log_level(DeviceLogger.TRACE)
    assert log.level_name() == "trace"


def test_log_to_python_logs_a_received_log_inform(caplog):
    from ctlwire.katcp import DeviceLogger
    logger = logging.getLogger("test.katcp.received")
    with caplog.at_level(logging.DEBUG, logger="test.katcp.received"):
        DeviceLogger.log_to_python(
            logger, Message.inform("log", "error", "1234.500000", "dev.fan", "stalled"))
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "1234.500000 dev.fan: stalled"


def test_halt_and_stop_together_both_return():
    srv = start()
    with socket.create_connection(srv.bind_address, timeout=TIMEOUT) as sock:
        read_lines(sock, 3)
        sock.sendall(b"?halt\n")
        srv.stop(timeout=TIMEOUT)
    srv.join(timeout=TIMEOUT)
    assert not srv.running()


def test_async_join_returns_after_halt():
    async def main():
        srv = Device("127.0.0.1", 0)
        await srv.async_start()
        reader, writer = await asyncio.open_connection(*srv.bind_address)
        writer.write(b"?halt\n")
        await asyncio.wait_for(srv.async_join(), TIMEOUT)
        writer.close()
        return srv.running()
    assert run(main()) is False
