"""The demo device that ``ctlwire-demo katcp`` shows to a client."""
from __future__ import annotations

import asyncio

import aiokatcp

from ctlwire.cli._demo_katcp_server import start_demo_server


def test_demo_server_serves_requests_and_live_sensors():
    server, host, port = start_demo_server()
    try:
        assert host == "127.0.0.1" and server.running()

        async def main():
            client = await asyncio.wait_for(
                aiokatcp.Client.connect(host, port, auto_reconnect=False), 10)
            try:
                added = (await client.request("add", 1, 2.5))[0]
                counted = await client.request("count-slowly", 3)
                first = await client.sensor_value("frames.count", int)
                deadline = asyncio.get_running_loop().time() + 10
                while await client.sensor_value("frames.count", int) <= first:
                    assert asyncio.get_running_loop().time() < deadline, "sensor not live"
                    await asyncio.sleep(0.05)
                return added, counted
            finally:
                client.close()
                await client.wait_closed()

        added, (reply, informs) = asyncio.run(asyncio.wait_for(main(), 30))
        assert added == [b"3.5"]
        assert reply == [b"3"] and [m.arguments for m in informs] == [[b"1"], [b"2"], [b"3"]]
    finally:
        server.stop(timeout=10)
        server.join(timeout=10)
    assert not server.running()
