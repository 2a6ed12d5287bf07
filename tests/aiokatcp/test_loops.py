"""ctlwire.aiokatcp runs on whatever loop the caller runs: asyncio's, uvloop, and a
simulated-time loop (async_solipsism, whose sockets are in memory)."""
import asyncio

import async_solipsism
import pytest
import uvloop

from ctlwire import aiokatcp as ck

from .conftest import make_device

LOOPS = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
    "solipsism": async_solipsism.EventLoop,
}


@pytest.fixture(params=sorted(LOOPS))
def loop(request):
    loop = LOOPS[request.param]()
    yield loop
    loop.close()


def test_server_client_and_watcher_on_each_loop(loop):
    async def main():
        server = make_device(ck)("127.0.0.1", 0)
        await server.start()
        port = server.sockets[0].getsockname()[1]
        client = await ck.Client.connect("127.0.0.1", port)
        assert await client.request("add", 40, 2) == ([b"42.0"], [])
        reply, informs = await client.request("sleep", 0.05)
        assert reply == [b"awake"] and informs[0].arguments == [b"sleeping"]
        with pytest.raises(ck.FailReply):
            await client.request("add", "x")
        watcher = ck.SensorWatcher(client)
        client.add_sensor_watcher(watcher)
        await watcher.synced.wait()
        got = []
        client.add_inform_callback("sensor-status",
                                   lambda ts, n, name, st, v: got.append(loop.time()))
        await client.request("sensor-sampling", "temp", "period", 0.1)
        await asyncio.sleep(0.35)
        assert 2 <= len(got) <= 5  # about 4; never a burst (the grid restarts after a lag)
        server.counter.value = 5
        while watcher.sensors["counter"].value != 5:
            await asyncio.sleep(0.01)
        client.close()
        await client.wait_closed()
        await server.stop()

    loop.run_until_complete(asyncio.wait_for(main(), 20))
