"""The client against a scripted server on a simulated loop: the same lines on the wire,
the same results and the same log messages from both libraries."""
import asyncio
import logging
import re

import async_solipsism
import pytest


class Channel:
    def __init__(self, client, reader, writer):
        self.client, self.reader, self.writer = client, reader, writer

    async def handshake(self):
        self.writer.write(b"#version-connect katcp-protocol 5.1-IMB\n")
        await self.client.wait_connected()
        await self.client.wait_connected()  # and again, already connected


def run_channel(lib, scenario, client_cls=None, **client_kwargs):
    loop = async_solipsism.EventLoop()
    conns: asyncio.Queue = asyncio.Queue()

    async def main():
        server = await asyncio.start_server(lambda r, w: conns.put_nowait((r, w)),
                                            "127.0.0.1", 7147)
        client = (client_cls or lib.Client)("127.0.0.1", 7147, **client_kwargs)
        reader, writer = await conns.get()
        channel = Channel(client, reader, writer)
        try:
            await scenario(channel)
        finally:
            client.close()
            writer.close()
            await client.wait_closed()
            server.close()

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 100))
    finally:
        loop.close()


def test_requests_and_replies(lib):
    async def scenario(ch):
        await ch.handshake()
        task = asyncio.ensure_future(ch.client.request("echo"))
        assert await ch.reader.readline() == b"?echo[1]\n"
        ch.writer.write(b"!echo[1] ok\n")
        assert await task == ([], [])
        task = asyncio.ensure_future(ch.client.request("echo", b"123", b"h\xaf\xce\0"))
        assert await ch.reader.readline() == b"?echo[2] 123 h\xaf\xce\\0\n"
        ch.writer.write(b"#echo[2] inform\n!echo[2] ok 123 h\xaf\xce\\0\n")
        assert await task == ([b"123", b"h\xaf\xce\0"],
                              [lib.Message.inform("echo", b"inform", mid=2)])
        for reply, error, text in [(b"fail Error\\_message", lib.FailReply, "Error message"),
                                   (b"fail", lib.FailReply, ""),
                                   (b"fail \xaf", lib.FailReply, "\ufffd"),
                                   (b"invalid Unknown\\_request", lib.InvalidReply,
                                    "Unknown request"),
                                   (b"", lib.InvalidReply, "")]:
            task = asyncio.ensure_future(ch.client.request("x"))
            line = await ch.reader.readline()
            mid = re.match(rb"\?x\[(\d+)\]\n", line).group(1)
            ch.writer.write(b"!x[" + mid + b"]" + (b" " + reply if reply else b"") + b"\n")
            with pytest.raises(error) as info:
                await task
            assert str(info.value) == text
    run_channel(lib, scenario)


def test_informs_handlers_callbacks_and_unhandled(lib, caplog):
    class MyClient(lib.Client):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.foos = asyncio.Queue()
            self.unhandled = asyncio.Queue()

        def inform_foo(self, text: str, number: int) -> None:
            self.foos.put_nowait((text, number))

        def inform_exception(self) -> None:
            raise RuntimeError("I crashed")

        def unhandled_inform(self, msg):
            self.unhandled.put_nowait(msg)

    async def scenario(ch):
        await ch.handshake()
        values = asyncio.Queue()

        def callback(text: str, number: int) -> None:
            values.put_nowait((text, number))

        ch.client.add_inform_callback("bar", callback)
        with caplog.at_level(logging.INFO):
            ch.writer.write(b"#exception\n#foo bad notinteger\n#foo \xc3\xa9 123\n"
                            b"#bar hello 42\n#other arg\n")
            assert await ch.client.foos.get() == ("é", 123)
            assert await values.get() == ("hello", 42)
            # an inform without an inform_ method is unhandled even if it has callbacks
            assert await ch.client.unhandled.get() == lib.Message.inform("bar", b"hello", b"42")
            assert await ch.client.unhandled.get() == lib.Message.inform("other", b"arg")
        messages = [r.getMessage() for r in caplog.records if "aiokatcp" in r.name]
        assert re.match(r"unhandled exception in inform exception", messages[0])
        assert re.match(r"error in inform foo", messages[1])
        ch.client.remove_inform_callback("bar", callback)
        assert ch.client._inform_callbacks == {}
    run_channel(lib, scenario, client_cls=MyClient)


def test_odd_messages_from_the_server_are_logged(lib, caplog):
    async def scenario(ch):
        await ch.handshake()
        with caplog.at_level(logging.DEBUG):
            task = asyncio.ensure_future(ch.client.request("echo"))
            await ch.reader.readline()
            ch.writer.write(b"!surprise[3]\n?surprise\n!surprise ok\n!echo[1] ok\n")
            await task
        text = caplog.text
        assert re.search("Received .* with unknown message ID", text)
        assert re.search("Received unexpected request", text)
        assert re.search("Received unexpected REPLY .* without message ID", text)
    run_channel(lib, scenario)


def test_connect_waits_for_the_version(lib):
    loop = async_solipsism.EventLoop()
    conns: asyncio.Queue = asyncio.Queue()

    async def main():
        server = await asyncio.start_server(lambda r, w: conns.put_nowait((r, w)),
                                            "127.0.0.1", 7147)
        connecting = asyncio.ensure_future(lib.Client.connect("127.0.0.1", 7147))
        reader, writer = await conns.get()
        await asyncio.sleep(1)
        assert not connecting.done()
        writer.write(b"#version-connect katcp-protocol 5.1-IMB\n")
        client = await connecting
        assert client.is_connected
        async with client:
            pass
        await client.wait_closed()
        writer.close()
        server.close()

    loop.run_until_complete(asyncio.wait_for(main(), 100))
    loop.close()


@pytest.mark.parametrize("version, pattern", [(b"notvalid", "Unparsable katcp-protocol"),
                                              (b"4.0-I", r"Unknown protocol version 4\.0")])
def test_bad_protocol_closes_the_connection(lib, caplog, version, pattern):
    async def scenario(ch):
        with caplog.at_level(logging.INFO):
            ch.writer.write(b"#version-connect katcp-protocol " + version + b"\n")
            assert await ch.reader.read() == b""
        assert re.search(pattern, caplog.text)
    run_channel(lib, scenario)


def test_lost_connection_and_disconnect_inform(lib):
    async def scenario(ch):
        with pytest.raises(BrokenPipeError):
            await ch.client.request("help")  # no #version-connect yet
        await ch.handshake()
        ch.writer.write(b"#disconnect Server\\_exiting\n")
        await ch.client.wait_disconnected()
        with pytest.raises(BrokenPipeError):
            await ch.client.request("help")
    run_channel(lib, scenario)


def test_connection_reset_fails_the_request(lib):
    async def scenario(ch):
        await ch.handshake()
        ch.writer.close()
        with pytest.raises(ConnectionResetError):
            await ch.client.request("help")
    run_channel(lib, scenario)


def test_bad_address_is_logged_and_retried(lib, caplog):
    loop = async_solipsism.EventLoop()

    async def main():
        client = lib.Client("invalid.invalid", 1)
        try:
            with caplog.at_level(logging.WARNING):
                waiting = asyncio.ensure_future(client.wait_connected())
                await asyncio.sleep(1)
            assert re.search("Failed to connect to invalid.invalid:1: ", caplog.text)
            assert not waiting.done()  # still retrying
            waiting.cancel()
        finally:
            client.close()
            await client.wait_closed()

    loop.run_until_complete(asyncio.wait_for(main(), 100))
    loop.close()
