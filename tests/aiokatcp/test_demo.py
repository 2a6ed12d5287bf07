"""The aiokatcp-style device of ``ctlwire-demo katcp``."""
import asyncio

from ctlwire.cli import _demo_katcp_aiokatcp as demo

from .conftest import run


def test_demo_session_prints_the_exchange(capsys):
    run(demo.session())
    out = capsys.readouterr().out
    assert "mirrored sensors: ['ant.azimuth', 'ant.mode']" in out
    assert "?slew 5.4 -> !slew ok 5.4 after 3 informs [1.8, 3.6, 5.4]" in out
    assert "mirror: ant.azimuth = 5.4 (NOMINAL), ant.mode = idle" in out
    assert "?slew 400 -> fail: azimuth 400.0 outside 0..360" in out


def test_demo_device_serves_aiokatcp_clients():
    import aiokatcp

    async def main():
        server = demo.Antenna("127.0.0.1", 0)
        await server.start()
        client = await aiokatcp.Client.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        reply, informs = await client.request("slew", 1.0, 100)
        assert reply == [b"1.0"] and len(informs) == 1
        assert await client.sensor_value("ant.mode", str) == "idle"
        client.close()
        await client.wait_closed()
        await server.stop()
    run(main())
