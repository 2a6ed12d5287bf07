"""A server connection needs from its owner only what is declared.

``ClientConnection`` and its compiled core are driven here by a small owner that is not
a ``DeviceServerBase``: it implements the ``ConnectionOwner`` protocol and fills in a
``DispatchState``, nothing else. If the connection or the compiled dispatch read any
other attribute of their server, these tests would fail with an ``AttributeError``.
Real loopback sockets, asyncio's own loop.
"""
from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from ctlwire.katcp._connection import (ClientConnection, ConnectionOwner, DispatchState,
                                       handle_request)
from ctlwire.katcp.core import KatcpSyntaxError, Message

TIMEOUT = 10.0


def ping(owner, req, msg):
    """Reply ok with the arguments."""
    return req.make_reply("ok", *msg.arguments)


def boom(owner, req, msg):
    """Fail with an exception."""
    raise RuntimeError("boom")


def odd(owner, req, msg):
    """Return something that is not a reply."""
    return 42


class MiniOwner:
    """Only the ConnectionOwner protocol (and a record of what it was asked)."""

    _max_write_buffer = 1 << 20

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.conns: list[ClientConnection] = []
        self.routed: list[Message] = []
        self.bad: list[Exception] = []
        self.overridden = 0
        self.lost = asyncio.Event()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def _call_in_loop(self, fn, *args) -> None:
        self._loop.call_soon_threadsafe(fn, *args)

    def _queue_flush(self, conn) -> None:
        self._loop.call_soon(conn._flush)

    def _connection_made(self, conn) -> None:
        self.conns.append(conn)

    def _connection_lost(self, conn, exc) -> None:
        self.lost.set()

    def _too_slow(self, conn) -> None:
        self._disconnect(conn, "too slow", True)

    def _disconnect(self, conn, reason, valid) -> None:
        conn._flush()
        conn._closing = True
        conn._transport.close()

    def mass_inform(self, msg) -> None:
        for conn in self.conns:
            conn.inform(msg)

    def handle_request(self, connection, msg) -> None:
        self.overridden += 1
        handle_request(connection, msg)

    def _route(self, connection, msg) -> None:
        self.routed.append(msg)
        if msg.mtype == Message.REQUEST:  # "the handler thread": here, in the loop
            handle_request(connection, msg)

    def _bad_line(self, connection, error) -> None:
        self.bad.append(error)

    def _send_fail(self, req, reason) -> None:
        req.reply(b"fail", reason)

    def _exception_text(self, msg, exc_info) -> str:
        return f"{exc_info[0].__name__}: {exc_info[1]}"

    def _other_return(self, req, reply) -> None:
        req.reply(b"fail", f"returned {reply!r}")


async def exchange(fast: bool, threaded: bool, lines: bytes, replies: int):
    loop = asyncio.get_running_loop()
    owner = MiniOwner(loop)
    typed: ConnectionOwner = owner  # what the connection is written against
    state = DispatchState(typed, {"ping": ping, "boom": boom, "odd": odd},
                          logging.getLogger("test"), fast)
    state.loop_tid = threading.get_ident()
    state.threaded = threaded
    server = await loop.create_server(lambda: ClientConnection(owner, state, 4096),
                                      "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(lines)
        got = [await asyncio.wait_for(reader.readline(), TIMEOUT) for _ in range(replies)]
        owner.mass_inform(Message.inform("note", "all"))
        got.append(await asyncio.wait_for(reader.readline(), TIMEOUT))
        writer.close()
        await asyncio.wait_for(owner.lost.wait(), TIMEOUT)
    finally:
        server.close()
        await server.wait_closed()
    return owner, got


@pytest.mark.parametrize("fast,threaded", [(True, False), (False, False), (True, True)])
def test_a_connection_runs_on_the_declared_interface_alone(fast, threaded):
    lines = b"?ping[1] a b\n?boom[2]\n#hello x\n!bad\\z\n?odd[3]\n?nope[4]\n"
    owner, got = asyncio.run(exchange(fast, threaded, lines, 4))
    assert got == [b"!ping[1] ok a b\n", b"!boom[2] fail RuntimeError:\\_boom\n",
                   b"!odd[3] fail returned\\_42\n", b"!nope[4] invalid Unknown\\_request.\n",
                   b"#note all\n"]
    assert [m.name for m in owner.routed if m.mtype == Message.INFORM] == ["hello"]
    assert len(owner.bad) == 1 and isinstance(owner.bad[0], KatcpSyntaxError)
    # handle_request is called only when the compiled one is not used directly
    assert owner.overridden == (0 if fast or threaded else 4)
    assert len([m for m in owner.routed if m.mtype == Message.REQUEST]) == \
        (4 if threaded else 0)
