"""A device written for katcp-python, with only its import lines changed.

The device below follows katcp-python's own example server; the original imports were

    from katcp import DeviceServer, Sensor, ProtocolFlags, AsyncReply
    from katcp.kattypes import (Str, Float, Timestamp, Discrete, request, return_reply)
"""
from __future__ import annotations

import asyncio
import threading
import time

import aiokatcp
import pytest

from ctlwire.katcp import AsyncReply, DeviceServer, ProtocolFlags, Sensor
from ctlwire.katcp import Discrete, Float, Str, Timestamp, request, return_reply

TIMEOUT = 10.0


class MyServer(DeviceServer):

    VERSION_INFO = ("example-api", 1, 0)
    BUILD_INFO = ("example-implementation", 0, 1, "")

    # Optionally set the KATCP protocol version and features. Defaults to
    # the latest implemented version of KATCP, with all supported optional
    # features
    PROTOCOL_INFO = ProtocolFlags(5, 0, set([
        ProtocolFlags.MULTI_CLIENT,
        ProtocolFlags.MESSAGE_IDS,
    ]))

    FRUIT = [
        "apple", "banana",
        "pear", "kiwi",
    ]

    def setup_sensors(self):
        """Setup some server sensors."""
        self._add_result = Sensor.float("add.result",
                                        "Last ?add result.", "", [-10000, 10000])
        self._time_result = Sensor.timestamp("time.result",
                                             "Last ?time result.", "")
        self._eval_result = Sensor.string("eval.result",
                                          "Last ?eval result.", "")
        self._fruit_result = Sensor.discrete("fruit.result",
                                             "Last ?pick-fruit result.", "", self.FRUIT)
        self._device_armed = Sensor.boolean(
            "device-armed",
            description="Is the CAM server armed?",
            initial_status=Sensor.NOMINAL,
            default=True)
        self._bandwidth = Sensor.float("bandwidth", default=7e7)
        self._sensor = Sensor(Sensor.INTEGER, "int_sensor", "int", "", [-10, 10])

        self.add_sensor(self._add_result)
        self.add_sensor(self._time_result)
        self.add_sensor(self._eval_result)
        self.add_sensor(self._fruit_result)
        self.add_sensor(self._device_armed)
        self.add_sensor(self._bandwidth)
        self.add_sensor(self._sensor)

    @request(Float(), Float())
    @return_reply(Str())
    def request_add(self, req, x, y):
        """Add two numbers"""
        r = x + y
        self._add_result.set_value(r)
        return ("ok", r)

    @request()
    @return_reply(Timestamp())
    def request_time(self, req):
        """Return the current time in seconds since the Unix Epoch."""
        r = time.time()
        self._time_result.set_value(r)
        return ("ok", r)

    @request(Str())
    @return_reply(Str())
    def request_eval(self, req, expression):
        """Evaluate a Python expression."""
        r = str(len(expression))  # no eval() of network data in a test
        self._eval_result.set_value(r)
        return ("ok", r)

    @request(Str())
    @return_reply(Discrete(FRUIT))
    def request_pick_fruit(self, req, fruit):
        """Pick a random fruit."""
        r = fruit if fruit in self.FRUIT else None
        if r is None:
            return ("fail", "No fruit.")
        delay = 0.05
        req.inform("Picking will take %d seconds" % delay)

        def pick_handler():
            self._fruit_result.set_value(r)
            req.reply("ok", r)

        handle_timer = threading.Timer(delay, pick_handler)
        handle_timer.start()

        raise AsyncReply

    @request(Str())
    @return_reply()
    def request_set_sensor_inactive(self, req, sensor_name):
        """Set sensor status to inactive"""
        sensor = self.get_sensor(sensor_name)
        ts, status, value = sensor.read()
        sensor.set_value(value, sensor.INACTIVE, ts)
        return ('ok',)

    def request_raw_reverse(self, req, msg):
        """
        A raw request handler to demonstrate the calling convention if
        @request decoraters are not used. Reverses the message arguments.
        """
        # msg is a katcp.Message.request object
        reversed_args = msg.arguments[::-1]
        # req.make_reply() makes a katcp.Message.reply using the correct request
        # name and message ID
        return req.make_reply('ok', *reversed_args)


@pytest.fixture
def server():
    server = MyServer("127.0.0.1", 0)
    server.set_concurrency_options(thread_safe=False, handler_thread=False)
    server.start(timeout=TIMEOUT)
    try:
        yield server
    finally:
        server.stop(timeout=TIMEOUT)
        server.join(timeout=TIMEOUT)


def run_with_client(server, body):
    async def main():
        host, port = server.bind_address
        client = await asyncio.wait_for(
            aiokatcp.Client.connect(host, port, auto_reconnect=False), TIMEOUT)
        try:
            return await body(client)
        finally:
            client.close()
            await client.wait_closed()
    return asyncio.run(asyncio.wait_for(main(), 60))


def test_katcp_python_device_announces_its_versions(server):
    async def body(client):
        return client.protocol_flags, await client.request("version-list")
    flags, (reply, informs) = run_with_client(server, body)
    assert flags == frozenset("IM")
    assert [m.arguments for m in informs][2] == [b"katcp-device", b"example-api-1.0",
                                                 b"example-implementation-0.1"]


def test_katcp_python_device_handlers(server):
    async def body(client):
        added = (await client.request("add", 1.5, 2))[0]
        reversed_ = (await client.request("raw-reverse", "a", "b", "c"))[0]
        fruit = await client.request("pick-fruit", "kiwi")
        with pytest.raises(aiokatcp.FailReply, match="No fruit"):
            await client.request("pick-fruit", "stone")
        await client.request("set-sensor-inactive", "bandwidth")
        _, values = await client.request("sensor-value", "bandwidth")
        return added, reversed_, fruit, values[0].arguments
    added, reversed_, (fruit, informs), bandwidth = run_with_client(server, body)
    assert added == [b"3.5"]
    assert reversed_ == [b"c", b"b", b"a"]
    assert fruit == [b"kiwi"] and informs[0].arguments == [b"Picking will take 0 seconds"]
    assert bandwidth[2:] == [b"bandwidth", b"inactive", b"70000000.0"]
    assert server._add_result.value() == 3.5
    assert server._fruit_result.value() == "kiwi"


def test_katcp_python_sensor_list(server):
    async def body(client):
        return await client.request("sensor-list", "/result/")
    reply, informs = run_with_client(server, body)
    assert reply == [b"4"]
    # float ranges given as ints are formatted as floats, as katcp-python does
    assert [b"add.result", b"Last ?add result.", b"", b"float", b"-10000.0", b"10000.0"] in \
        [m.arguments for m in informs]


def test_set_ioloop_serves_in_an_existing_loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = MyServer("127.0.0.1", 0)
    server.set_ioloop(loop)
    try:
        server.start(timeout=TIMEOUT)
        assert server.loop is loop and server.running()

        async def body(client):
            return (await client.request("add", 2, 2))[0]
        assert run_with_client(server, body) == [b"4.0"]
    finally:
        server.stop(timeout=TIMEOUT)
        server.join(timeout=TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(TIMEOUT)
        loop.close()
    assert not server.running()
