"""The asyncio client against aiokatcp's DeviceServer (child process) and a raw fake."""
from __future__ import annotations

import asyncio
import socket

import pytest

from ctlwire.katcp.aio import AioClient, SensorReading
from ctlwire.katcp.client import KatcpTimeoutError
from ctlwire.katcp.core import FailReply, KatcpClientError, Message
from ctlwire._testing.katcp_peer import PeerServer

TIMEOUT = 10.0








def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT * 2))


async def connected(port: int) -> AioClient:
    return await AioClient.connect("127.0.0.1", port, connect_timeout=TIMEOUT,
                                   protocol_wait=TIMEOUT)


def test_connect_learns_protocol_flags(peer):
    async def main():
        async with await connected(peer.port) as client:
            assert client.protocol_flags.major == 5
            assert client.protocol_flags.message_ids
            assert client.versions["katcp-device"][0] == "ctlwire-client-peer-1.0"
    run(main())


def test_request_returns_reply_and_informs(peer):
    async def main():
        async with await connected(peer.port) as client:
            reply, informs = await client.request("informs", 2)
            assert reply.arguments == [b"ok", b"2"]
            assert [m.arguments for m in informs] == [[b"0"], [b"1"]]
    run(main())


def test_fail_reply_raises_fail_reply(peer):
    async def main():
        async with await connected(peer.port) as client:
            with pytest.raises(FailReply, match="no-such-request"):
                await client.request("no-such-request")
    run(main())


def test_call_returns_unchecked_reply(peer):
    async def main():
        async with await connected(peer.port) as client:
            reply, _ = await client.call(Message.request("no-such-request"))
            assert reply.arguments[0] == b"invalid"
    run(main())


def test_concurrent_requests_get_their_own_replies(peer):
    async def main():
        async with await connected(peer.port) as client:
            results = await asyncio.gather(*(client.request("echo", i) for i in range(200)))
            assert [r.arguments for r, _ in results] == [[b"ok", b"%d" % i] for i in range(200)]
    run(main())


def test_timeout_raises_timeout_error(peer):
    async def main():
        async with await connected(peer.port) as client:
            with pytest.raises(KatcpTimeoutError):
                await client.request("slow", 30, timeout=0.2)
            # the connection stays usable
            reply, _ = await client.request("watchdog")
            assert reply.reply_ok()
    run(main())


def test_link_drop_fails_awaited_request(impl):
    server = PeerServer(impl)
    try:
        async def main():
            client = await connected(server.port)
            task = asyncio.ensure_future(client.request("slow", 60, timeout=60))
            await asyncio.sleep(0)  # let the request go out
            await asyncio.get_running_loop().run_in_executor(None, server.kill)
            with pytest.raises(KatcpClientError):
                await asyncio.wait_for(task, TIMEOUT)
            assert not client.is_connected
        run(main())
    finally:
        server.kill()


def test_sensor_updates_arrive_through_iterator(peer):
    async def main():
        async with await connected(peer.port) as client:
            updates = client.sensor_updates()
            await client.subscribe("counter", "event")
            first = await asyncio.wait_for(updates.__anext__(), TIMEOUT)  # current value
            assert first.name == "counter" and first.status == "nominal"
            await client.request("bump", 41)
            reading = await asyncio.wait_for(updates.__anext__(), TIMEOUT)
            assert (reading.name, reading.value) == ("counter", b"41")
            updates.close()
    run(main())


def test_sensor_callback_gets_updates(peer):
    async def main():
        async with await connected(peer.port) as client:
            got: list[SensorReading] = []
            seen = asyncio.Event()

            def on_reading(reading):
                got.append(reading)
                if reading.value == b"7":
                    seen.set()

            client.add_sensor_callback(on_reading)
            await client.subscribe("counter", "event")
            await client.request("bump", 7)
            await asyncio.wait_for(seen.wait(), TIMEOUT)
            assert got[-1].name == "counter"
    run(main())


def test_sensor_value_reads_current_value(peer):
    async def main():
        async with await connected(peer.port) as client:
            await client.request("bump", 3)
            (reading,) = await client.sensor_value("counter")
            assert (reading.name, reading.value) == ("counter", b"3")
    run(main())


def test_iterator_ends_when_client_closes(peer):
    async def main():
        client = await connected(peer.port)
        updates = client.sensor_updates()
        client.close()
        await client.wait_closed()
        assert [r async for r in updates] == []
    run(main())


def test_v4_server_requests_match_by_name():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.setblocking(False)

    async def fake_server():
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(lsock)
        await loop.sock_sendall(conn, b"#version fake-1.0\n#build-state fake-1.0.1\n")
        data = b""
        while data.count(b"\n") < 1:
            data += await loop.sock_recv(conn, 4096)
        assert data == b"?ping\n"  # v4: no mid
        await loop.sock_sendall(conn, b"#ping a\n!ping ok\n")
        return conn

    async def main():
        server = asyncio.ensure_future(fake_server())
        client = await AioClient.connect("127.0.0.1", lsock.getsockname()[1],
                                         protocol_wait=TIMEOUT)
        assert client.protocol_flags.major == 4
        reply, informs = await client.request("ping")
        assert reply.reply_ok() and [str(m) for m in informs] == ["#ping a"]
        (await server).close()
        client.close()
        await client.wait_closed()

    try:
        run(main())
    finally:
        lsock.close()


def test_connect_to_closed_port_raises_client_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main():
        with pytest.raises(KatcpClientError):
            await AioClient.connect("127.0.0.1", port, connect_timeout=TIMEOUT)
    run(main())


def test_auto_reconnect_renews_sensor_subscriptions(impl):
    server = PeerServer(impl)
    try:
        async def main():
            nonlocal server
            client = await AioClient.connect("127.0.0.1", server.port, protocol_wait=TIMEOUT,
                                             auto_reconnect=True)
            updates = client.sensor_updates()
            await client.subscribe("counter", "event")
            await asyncio.wait_for(updates.__anext__(), TIMEOUT)  # current value
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, server.kill)
            deadline = loop.time() + TIMEOUT
            while client.is_connected and loop.time() < deadline:  # bounded poll
                await asyncio.sleep(0.01)
            assert not client.is_connected
            server = await loop.run_in_executor(None, PeerServer, impl, server.port)
            assert await client.wait_connected(TIMEOUT)
            assert await client.wait_protocol(TIMEOUT)
            await client.request("bump", 9)
            for _ in range(5):  # the renewed subscription's first value, then 9
                reading = await asyncio.wait_for(updates.__anext__(), TIMEOUT)
                if reading.value == b"9":
                    break
            assert reading.value == b"9"
            client.close()
            await client.wait_closed()
        run(main())
    finally:
        server.kill()


def test_without_auto_reconnect_a_lost_link_ends_the_client():
    server = PeerServer()
    try:
        async def main():
            client = await connected(server.port)
            updates = client.sensor_updates()
            await asyncio.get_running_loop().run_in_executor(None, server.kill)
            await asyncio.wait_for(client.wait_closed(), TIMEOUT)
            assert [r async for r in updates] == []
            with pytest.raises(KatcpClientError):
                await client.request("watchdog")
        run(main())
    finally:
        server.kill()
