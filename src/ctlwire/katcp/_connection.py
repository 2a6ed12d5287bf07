"""Transport of the KATCP device server: one asyncio ``Protocol`` per client.

Kept apart from the documented server classes so the hot path reads on its own:

- bytes in: asyncio's selector transport reads up to ``max_size`` bytes per ``recv``,
  256 KiB by default; a buffer that big is allocated with mmap by malloc and costs
  more than the whole request, so each connection lowers it to 64 KiB (measured: 37k
  instead of 21k round trips/s for a bare echo); uvloop, the default loop, reads into
  one buffer of its own. The codec's ``StreamParser`` splits lines; each message is
  dispatched at once, in the loop thread, without a task per request. That path,
  ``data_received`` to the handler and back, is compiled
  (``ctlwire.katcp._dispatch``: ``ConnectionCore``, the base of ``ClientConnection``,
  and ``ClientRequestConnection``);
- bytes out: everything a client is owed during one loop iteration is appended to
  its output list and written with a single ``transport.write`` (at the end of
  ``data_received`` for replies, or in one flush callback per iteration for informs);
- a client whose kernel and transport buffers fill past ``max_write_buffer`` is sent
  ``#disconnect`` and closed, so it cannot stall the server or the other clients.

What a connection needs from the server that accepted it is declared here, once:
:class:`ConnectionOwner` (the methods it calls) and the compiled ``DispatchState``
(the data its hot path reads, declared in ``_dispatch.pxd``). The server implements
the first and fills in the second; this module never imports the server.

Layering: imports ``ctlwire.katcp.core`` and the compiled ``ctlwire.katcp._dispatch``.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable, Protocol

from .._ext import load_extension
from .core import Message, StreamParser, encode_message

_compiled = load_extension("ctlwire.katcp._dispatch")
ConnectionCore = _compiled.ConnectionCore
ClientRequestConnection = _compiled.ClientRequestConnection
DispatchState = _compiled.DispatchState
#: The compiled ``DeviceServerBase.handle_request``.
handle_request = _compiled.handle_request

__all__ = ["ClientConnection", "ClientRequestConnection", "ConnectionOwner",
           "DispatchState"]

log = logging.getLogger("ctlwire.katcp.server")

_REPLY = Message.REPLY
_INFORM = Message.INFORM
_get_ident = threading.get_ident
_READ_SIZE = 64 * 1024


class ConnectionOwner(Protocol):
    """What a :class:`ClientConnection` (and its compiled core) needs from its server.

    ``DeviceServerBase`` implements it. The compiled request path also reads the
    owner's ``DispatchState`` (handed to each connection), never its attributes.
    """

    #: Bytes that may wait in the transport for one client before it is too slow.
    _max_write_buffer: int

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the server runs in."""

    def _call_in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in the loop thread (from another thread)."""

    def _queue_flush(self, conn: "ClientConnection") -> None:
        """Call ``conn._flush()`` at the end of this loop iteration."""

    def _connection_made(self, conn: "ClientConnection") -> None:
        """A client connected (its transport is set)."""

    def _connection_lost(self, conn: "ClientConnection", exc: Exception | None) -> None:
        """A client's transport closed."""

    def _too_slow(self, conn: "ClientConnection") -> None:
        """A client's output passed ``_max_write_buffer``."""

    def _disconnect(self, conn: "ClientConnection", reason: str, valid: bool) -> None:
        """Close a client's connection (``#disconnect reason`` first if ``valid``)."""

    def mass_inform(self, msg: Message) -> None:
        """Send an inform to every client."""

    # -- called by the compiled request path (ctlwire.katcp._dispatch) -------------------
    def handle_request(self, connection: "ClientConnection", msg: Message) -> None:
        """Run a request's handler (called only when a subclass overrides it)."""

    def _route(self, connection: "ClientConnection", msg: Message) -> None:
        """A message that is not run at once: an inform, a reply, or a request for the
        handler thread."""

    def _bad_line(self, connection: "ClientConnection", error: Exception) -> None:
        """A line from the client that did not parse."""

    def _send_fail(self, req: Any, reason: str) -> None:
        """Reply ``fail reason`` to a request (or log it if it was answered)."""

    def _exception_text(self, msg: Message, exc_info: Any) -> str:
        """The text of a ``fail`` reply for a handler's exception."""

    def _other_return(self, req: Any, reply: Any) -> None:
        """A handler returned something other than a reply message."""


def _address_text(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer)


class ClientConnection(ConnectionCore, asyncio.Protocol):
    """One connected client, as handlers and ``on_client_*`` hooks see it.

    Attributes
    ----------
    address : str
        ``host:port`` of the client.
    """

    # (_state, _transport, _parser, _out, _in_read, _flush_queued, _closing and address
    # live in ConnectionCore, the compiled part, with data_received)
    __slots__ = ("_owner", "_disconnect_called", "_slow", "_sock", "strategies",
                 "_queue_fn")

    def __init__(self, owner: ConnectionOwner, state: Any, max_line_length: int):
        ConnectionCore.__init__(self, state, StreamParser(max_line_length))
        self._owner = owner
        self._disconnect_called = False
        self._slow = False
        self._sock: Any = None
        # Sampling strategies of this client: sensor -> strategy.
        self.strategies: dict = {}
        # A stable bound method so sensor hubs can hold it in their fan-out tables.
        self._queue_fn = self._queue

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (a uvloop TCPTransport is not a subclass of asyncio.Transport, but has its API)
        self._transport = transport  # type: ignore[assignment]
        self._sock = transport.get_extra_info("socket")
        self.address = _address_text(transport.get_extra_info("peername"))
        # pause_writing() fires once the transport buffer passes this mark: the client
        # is not reading fast enough.
        transport.set_write_buffer_limits(high=self._owner._max_write_buffer)
        # See the module docstring: smaller reads are much cheaper than 256 KiB ones.
        # (asyncio's selector transports only; uvloop reads into its own 256 KiB
        # buffer, allocated once per loop, and has no such attribute.)
        if hasattr(transport, "max_size"):
            transport.max_size = _READ_SIZE  # type: ignore[attr-defined]
        self._owner._connection_made(self)

    def eof_received(self) -> bool:
        # Answers to what was already read still go out; then the transport closes.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._owner._connection_lost(self, exc)

    def pause_writing(self) -> None:
        if not self._slow:
            self._slow = True
            # Called from inside transport.write(): finish that call first.
            self._owner.loop.call_soon(self._owner._too_slow, self)

    def resume_writing(self) -> None:
        pass

    # -- output ---------------------------------------------------------------------------
    # _queue(data), in ConnectionCore (compiled: it runs once per inform a client is
    # sent): append wire bytes, written at the end of this loop iteration (loop thread).

    def _flush(self) -> None:
        self._flush_queued = False
        self._write_out()

    def _write_out(self) -> None:
        out = self._out
        if not out or self._transport is None:
            return
        self._out = []
        if self._closing:
            return
        self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _send(self, data: bytes) -> None:
        """Queue wire bytes from any thread."""
        if _get_ident() == self._state.loop_tid:
            self._queue(data)
        else:
            self._owner._call_in_loop(self._queue, data)

    # -- the katcp-python ClientConnection API ---------------------------------------------
    def inform(self, msg: Message) -> None:
        """Send an asynchronous inform to this client (thread-safe)."""
        if msg.mtype != _INFORM:
            raise ValueError(f"inform() needs an inform message, not {msg!r}")
        self._send(encode_message(_INFORM, msg.name, msg.arguments, msg.mid))

    def reply_inform(self, inform: Message, orig_req: Message) -> None:
        """Send an inform belonging to ``orig_req`` (its mid is copied; thread-safe)."""
        if inform.mtype != _INFORM or inform.name != orig_req.name:
            raise ValueError(f"reply_inform() needs an inform named {orig_req.name!r}")
        inform.mid = orig_req.mid
        self._send(encode_message(_INFORM, inform.name, inform.arguments, orig_req.mid))

    def reply(self, reply: Message, orig_req: Message) -> None:
        """Send the reply to ``orig_req`` (its mid is copied; thread-safe)."""
        if reply.mtype != _REPLY or reply.name != orig_req.name:
            raise ValueError(f"reply() needs a reply named {orig_req.name!r}")
        reply.mid = orig_req.mid
        self._send(encode_message(_REPLY, reply.name, reply.arguments, orig_req.mid))

    def mass_inform(self, msg: Message) -> None:
        """Send an inform to every client of the server."""
        self._owner.mass_inform(msg)

    def disconnect(self, reason: str) -> None:
        """Send ``#disconnect reason`` and close this connection (thread-safe)."""
        owner = self._owner
        if _get_ident() == self._state.loop_tid:
            owner._disconnect(self, reason, True)
        else:
            owner._call_in_loop(owner._disconnect, self, reason, True)

    @property
    def client_disconnect_called(self) -> bool:
        """Whether ``on_client_disconnect`` ran for this connection."""
        return self._disconnect_called

    def get_write_buffer_size(self) -> int:
        """Bytes waiting in the transport for this client."""
        return 0 if self._transport is None else self._transport.get_write_buffer_size()

    def __repr__(self) -> str:
        return f"<ClientConnection {self.address}>"


def log_line(level: str, message: str, name: str = "ctlwire.katcp.server") -> bytes:
    """Wire bytes of a ``#log`` inform."""
    return encode_message(_INFORM, "log", (level, b"%.6f" % time.time(), name, message))
