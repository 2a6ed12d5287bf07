"""What a client's sensor watcher asks and is told, against a scripted server: the
same requests on the wire and the same watcher calls from both libraries."""
import asyncio

import async_solipsism
import pytest


class Recorder:
    """Builds a watcher class of ``lib`` that records every call."""

    @staticmethod
    def make(lib):
        class Recording(lib.AbstractSensorWatcher):
            def __init__(self):
                self.calls = []

            def batch_start(self):
                self.calls.append(("batch_start",))

            def batch_stop(self):
                self.calls.append(("batch_stop",))

            def sensor_added(self, name, description, units, type_name, *args):
                self.calls.append(("added", name, description, units, type_name) + args)

            def sensor_removed(self, name):
                self.calls.append(("removed", name))

            def sensor_updated(self, name, value, status, timestamp):
                self.calls.append(("updated", name, value, status.name, timestamp))

            def state_updated(self, state):
                self.calls.append(("state", state.name))

            def take(self):
                calls, self.calls = self.calls, []
                return calls

        return Recording()


def test_watcher_conversation(lib):
    loop = async_solipsism.EventLoop()
    conns: asyncio.Queue = asyncio.Queue()

    async def main():
        server = await asyncio.start_server(lambda r, w: conns.put_nowait((r, w)),
                                            "127.0.0.1", 7147)
        client = lib.Client("127.0.0.1", 7147)
        watcher = Recorder.make(lib)
        client.add_sensor_watcher(watcher)
        reader, writer = await conns.get()
        writer.write(b"#version-connect katcp-protocol 5.1-MIB\n")
        assert await reader.readline() == b"?sensor-list[1]\n"
        # added before the client knew any sensor: an empty batch, then syncing
        assert watcher.take() == [("batch_start",), ("batch_stop",), ("state", "SYNCING")]
        writer.write(b"#sensor-list[1] device-status Device\\_status \\@ discrete ok degraded fail\n"
                     b"!sensor-list[1] ok 1\n")
        assert await reader.readline() == b"?sensor-sampling[2] device-status auto\n"
        assert watcher.take() == [
            ("batch_start",),
            ("added", "device-status", "Device status", "", "discrete", b"ok", b"degraded",
             b"fail"),
            ("batch_stop",)]
        writer.write(b"#sensor-status 123456789.0 1 device-status nominal ok\n"
                     b"!sensor-sampling[2] ok device-status auto\n")
        await asyncio.sleep(1)
        assert watcher.take() == [
            ("batch_start",), ("updated", "device-status", b"ok", "NOMINAL", 123456789.0),
            ("batch_stop",), ("state", "SYNCED")]
        # the interface changes: a new list, a new subscription
        writer.write(b"#interface-changed sensor-list\n")
        assert await reader.readline() == b"?sensor-list[3]\n"
        assert watcher.take() == [("state", "SYNCING")]
        writer.write(b"#sensor-list[3] temp Temperature F float\n!sensor-list[3] ok 1\n")
        assert await reader.readline() == b"?sensor-sampling[4] temp auto\n"
        assert watcher.take() == [("batch_start",), ("added", "temp", "Temperature", "F", "float"),
                                  ("removed", "device-status"), ("batch_stop",)]
        writer.write(b"#sensor-status 123456790.0 1 temp warn 451.0\n"
                     b"!sensor-sampling[4] ok temp auto\n")
        await asyncio.sleep(1)
        assert watcher.take() == [("batch_start",),
                                  ("updated", "temp", b"451.0", "WARN", 123456790.0),
                                  ("batch_stop",), ("state", "SYNCED")]
        # the last watcher leaves: the subscription is dropped
        client.remove_sensor_watcher(watcher)
        assert await reader.readline() == b"?sensor-sampling[5] temp none\n"
        writer.write(b"!sensor-sampling[5] ok temp none\n")
        await asyncio.sleep(1)
        client.close()
        await client.wait_closed()
        writer.close()
        server.close()

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 100))
    finally:
        loop.close()


def test_watcher_after_a_reconnect(lib):
    loop = async_solipsism.EventLoop()
    conns: asyncio.Queue = asyncio.Queue()

    async def serve_list(reader, writer, first_mid):
        writer.write(b"#version-connect katcp-protocol 5.1-MIB\n")
        assert await reader.readline() == b"?sensor-list[%d]\n" % first_mid
        writer.write(b"#sensor-list[%d] x X \\@ integer\n!sensor-list[%d] ok 1\n"
                     % (first_mid, first_mid))
        assert await reader.readline() == b"?sensor-sampling[%d] x auto\n" % (first_mid + 1)
        writer.write(b"#sensor-status 5.0 1 x nominal 7\n!sensor-sampling[%d] ok x auto\n"
                     % (first_mid + 1))
        await asyncio.sleep(1)

    async def main():
        server = await asyncio.start_server(lambda r, w: conns.put_nowait((r, w)),
                                            "127.0.0.1", 7147)
        client = lib.Client("127.0.0.1", 7147)
        watcher = Recorder.make(lib)
        client.add_sensor_watcher(watcher)
        reader, writer = await conns.get()
        await serve_list(reader, writer, 1)
        watcher.take()
        writer.write(b"#disconnect Testing\n")
        writer.close()
        reader, writer = await conns.get()
        await serve_list(reader, writer, 3)
        assert watcher.take() == [
            ("state", "DISCONNECTED"), ("state", "SYNCING"),
            ("batch_start",), ("batch_stop",),          # the same list: nothing new
            ("batch_start",), ("updated", "x", b"7", "NOMINAL", 5.0), ("batch_stop",),
            ("state", "SYNCED")]
        client.close()
        await client.wait_closed()
        assert watcher.take() == [("state", "CLOSED")]
        writer.close()
        server.close()

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 100))
    finally:
        loop.close()
