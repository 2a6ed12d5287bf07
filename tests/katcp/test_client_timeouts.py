"""How the clients treat the timeouts they are given (issue 15's library rule).

``None`` waits for ever (or the client's default), ``0`` does not wait and raises
:class:`KatcpTimeoutError` at once without sending anything, and a negative or
non-finite timeout raises ``ValueError``. Whatever the timeout, a request either returns
a real reply or raises: never ``(None, [])``. The loops run a few hundred requests
because the old failure came 2 times in 300.

The server is ctlwire's own ``DeviceServer`` in this process, on 127.0.0.1, counting the
``?count`` requests it receives so a test can tell what was sent.
"""
from __future__ import annotations

import asyncio
import math

import pytest

from ctlwire.katcp.aio import AioClient
from ctlwire.katcp.client import BlockingClient, CallbackClient
from ctlwire.katcp.core import Message
from ctlwire.katcp.exceptions import KatcpTimeoutError
from ctlwire.katcp.server import DeviceServer

TIMEOUT = 10.0  # bound on every wait; generous for a loaded CI box
BAD = [-1, -0.5, -1e-9, math.inf, -math.inf, math.nan, "soon"]


class CountingDevice(DeviceServer):
    VERSION_INFO = ("counting", 1, 0)
    BUILD_INFO = ("counting", 1, 0, "")

    def setup_sensors(self) -> None:
        self.count = 0

    def request_count(self, req, msg):
        """Count this request."""
        self.count += 1
        return req.make_reply("ok", self.count)

    def request_seen(self, req, msg):
        """How many ?count requests came."""
        return req.make_reply("ok", self.count)


@pytest.fixture(scope="module")
def server():
    srv = CountingDevice("127.0.0.1", 0)
    srv.start(timeout=TIMEOUT)
    try:
        yield srv
    finally:
        srv.stop(TIMEOUT)
        srv.join(TIMEOUT)


@pytest.fixture
def client(server):
    c = BlockingClient("127.0.0.1", server.bind_address[1], timeout=TIMEOUT)
    c.start()
    assert c.wait_protocol(TIMEOUT)
    try:
        yield c
    finally:
        c.stop(TIMEOUT)
        c.join(TIMEOUT)


def seen(client) -> int:
    reply, _ = client.blocking_request(Message.request("seen"), timeout=TIMEOUT)
    return int(reply.arguments[1])


# ---------------------------------------------------------------------- BlockingClient
@pytest.mark.parametrize("bad", BAD)
def test_blocking_request_rejects_a_negative_or_non_finite_timeout(client, bad):
    before = seen(client)
    with pytest.raises(ValueError, match="timeout"):
        client.blocking_request(Message.request("count"), timeout=bad)
    assert seen(client) == before  # nothing was sent


def test_blocking_request_with_zero_timeout_always_raises_and_sends_nothing(client):
    before = seen(client)
    for _ in range(300):
        with pytest.raises(KatcpTimeoutError, match="timeout is 0"):
            client.blocking_request(Message.request("count"), timeout=0)
    assert seen(client) == before
    reply, informs = client.blocking_request(Message.request("count"))
    assert reply.reply_ok() and informs == []


def test_zero_timeout_on_a_fresh_client_raises_at_once(server):
    for _ in range(40):
        c = BlockingClient("127.0.0.1", server.bind_address[1], timeout=TIMEOUT)
        c.start()
        try:
            with pytest.raises(KatcpTimeoutError):
                c.blocking_request(Message.request("count"), timeout=0)
        finally:
            c.stop(TIMEOUT)
            c.join(TIMEOUT)


def test_tiny_timeouts_give_a_reply_or_a_timeout_never_nothing(client):
    # Below the client's direct-read slice, so every request goes through the table of
    # pending requests, where the I/O thread may expire it while it is being entered.
    replies = timeouts = 0
    for i in range(300):
        timeout = (1e-7, 1e-4, 1e-3)[i % 3]
        try:
            reply, informs = client.blocking_request(Message.request("count"),
                                                     timeout=timeout)
        except KatcpTimeoutError:
            timeouts += 1
            continue
        assert isinstance(reply, Message) and reply.reply_ok(), reply
        assert informs == []
        replies += 1
    assert replies + timeouts == 300
    reply, _ = client.blocking_request(Message.request("watchdog"))
    assert reply.reply_ok()


def test_a_default_timeout_is_checked_when_the_client_is_made():
    for bad in BAD:
        with pytest.raises(ValueError, match="timeout"):
            BlockingClient("127.0.0.1", 1, timeout=bad)


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf])
def test_callback_request_rejects_a_negative_or_non_finite_timeout(client, bad):
    with pytest.raises(ValueError, match="timeout"):
        client.callback_request(Message.request("count"), reply_cb=print, timeout=bad)


def test_a_callback_client_blocking_request_follows_the_same_rule(server):
    c = CallbackClient("127.0.0.1", server.bind_address[1], timeout=TIMEOUT)
    c.start()
    try:
        assert c.wait_protocol(TIMEOUT)
        with pytest.raises(ValueError):
            c.blocking_request(Message.request("count"), timeout=-1)
        with pytest.raises(KatcpTimeoutError):
            c.blocking_request(Message.request("count"), timeout=0)
        reply, _ = c.blocking_request(Message.request("watchdog"), timeout=TIMEOUT)
        assert reply.reply_ok()
    finally:
        c.stop(TIMEOUT)
        c.join(TIMEOUT)


# ---------------------------------------------------------------------- AioClient
def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT * 3))


async def aio_client(server) -> AioClient:
    return await AioClient.connect("127.0.0.1", server.bind_address[1], timeout=TIMEOUT,
                                   connect_timeout=TIMEOUT, protocol_wait=TIMEOUT)


async def aio_seen(client) -> int:
    reply, _ = await client.request("seen")
    return int(reply.arguments[1])


def test_aio_call_rejects_a_negative_or_non_finite_timeout(server):
    async def main():
        async with await aio_client(server) as client:
            before = await aio_seen(client)
            for bad in BAD:
                with pytest.raises(ValueError, match="timeout"):
                    await client.call(Message.request("count"), timeout=bad)
                with pytest.raises(ValueError, match="timeout"):
                    await client.request("count", timeout=bad)
            assert await aio_seen(client) == before
    run(main())


def test_aio_zero_timeout_always_raises_and_sends_nothing(server):
    async def main():
        async with await aio_client(server) as client:
            before = await aio_seen(client)
            for _ in range(300):
                with pytest.raises(KatcpTimeoutError, match="timeout is 0"):
                    await client.call(Message.request("count"), timeout=0)
            assert await aio_seen(client) == before
            reply, informs = await client.call(Message.request("count"))
            assert reply.reply_ok() and informs == []
    run(main())


def test_aio_tiny_timeouts_give_a_reply_or_a_timeout_never_nothing(server):
    async def main():
        async with await aio_client(server) as client:
            outcomes = 0
            for i in range(300):
                try:
                    reply, informs = await client.call(Message.request("count"),
                                                       timeout=(1e-7, 1e-4, 1e-3)[i % 3])
                except KatcpTimeoutError:
                    outcomes += 1
                    continue
                assert isinstance(reply, Message) and reply.reply_ok(), reply
                outcomes += 1
            assert outcomes == 300
    run(main())


def test_aio_default_timeout_is_checked_when_the_client_is_made():
    for bad in BAD:
        with pytest.raises(ValueError, match="timeout"):
            AioClient("127.0.0.1", 1, timeout=bad)
