"""Transport of the KATCP device server: one asyncio ``Protocol`` per client.

Kept apart from :mod:`ctlwire.katcp.server` (the documented classes) so the hot path
reads on its own:

- bytes in: asyncio's selector transport reads up to ``max_size`` bytes per ``recv``,
  256 KiB by default; a buffer that big is allocated with mmap by malloc and costs
  more than the whole request, so each connection lowers it to 64 KiB (measured: 37k
  instead of 21k round trips/s for a bare echo). The codec's ``StreamParser`` splits
  lines; each message is dispatched at once, in the loop thread, without a task per
  request;
- bytes out: everything a client is owed during one loop iteration is appended to
  its output list and written with a single ``transport.write`` (at the end of
  ``data_received`` for replies, or in one flush callback per iteration for informs);
- a client whose kernel and transport buffers fill past ``max_write_buffer`` is sent
  ``#disconnect`` and closed, so it cannot stall the server or the other clients.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from .core import Message, StreamParser, encode_message

if TYPE_CHECKING:  # pragma: no cover
    from .server import DeviceServerBase

__all__: list[str] = []

log = logging.getLogger("ctlwire.katcp.server")

_Message = Message
_REQUEST = Message.REQUEST
_REPLY = Message.REPLY
_INFORM = Message.INFORM
_get_ident = threading.get_ident
_READ_SIZE = 64 * 1024


def _address_text(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peer)


class ClientConnection(asyncio.Protocol):
    """One connected client, as handlers and ``on_client_*`` hooks see it.

    Attributes
    ----------
    address : str
        ``host:port`` of the client.
    """

    __slots__ = ("_server", "_transport", "_parser", "_out", "_dirty", "_closing",
                 "_disconnect_called", "_slow", "address", "_sock", "strategies",
                 "_queue_fn", "__weakref__")

    def __init__(self, server: "DeviceServerBase", max_line_length: int):
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._parser = StreamParser(max_line_length)
        self._out: list[bytes] = []
        self._dirty = False
        self._closing = False
        self._disconnect_called = False
        self._slow = False
        self.address = "?"
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
        transport.set_write_buffer_limits(high=self._server._max_write_buffer)
        # See the module docstring: smaller reads are much cheaper than 256 KiB ones.
        # (asyncio's selector transports only; uvloop reads into its own 256 KiB
        # buffer, allocated once per loop, and has no such attribute.)
        if hasattr(transport, "max_size"):
            transport.max_size = _READ_SIZE  # type: ignore[attr-defined]
        self._server._connection_made(self)

    def data_received(self, data: Any) -> None:
        server = self._server
        # Marked dirty for the whole batch: replies queued now are written once at the
        # end, without scheduling a flush callback for the next loop iteration.
        was_dirty = self._dirty
        self._dirty = True
        for item in self._parser.feed(data):
            if item.__class__ is _Message or not isinstance(item, Exception):
                try:
                    if item.mtype == _REQUEST and server._handler_executor is None:
                        server.handle_request(self, item)
                    else:
                        server._dispatch(self, item)
                except Exception:  # a broken handler hook must not kill the connection
                    log.exception("Error handling %r from %s", item, self.address)
            else:
                server._bad_line(self, item)
            if self._closing:
                break
        out = self._out
        if out:
            # _write_out() inline (this is the per-request path).
            transport = self._transport
            if transport is not None:
                self._out = []
                if not self._closing:
                    transport.write(out[0] if len(out) == 1 else b"".join(out))
        if not was_dirty:
            self._dirty = False

    def eof_received(self) -> bool:
        # Answers to what was already read still go out; then the transport closes.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._server._connection_lost(self, exc)

    def pause_writing(self) -> None:
        if not self._slow:
            self._slow = True
            # Called from inside transport.write(): finish that call first.
            self._server.loop.call_soon(self._server._too_slow, self)

    def resume_writing(self) -> None:
        pass

    # -- output ---------------------------------------------------------------------------
    def _queue(self, data: bytes) -> None:
        """Append wire bytes; written at the end of this loop iteration (loop thread)."""
        if self._closing:
            return
        self._out.append(data)
        if not self._dirty:
            self._dirty = True
            self._server._mark_dirty(self)

    def _flush(self) -> None:
        self._dirty = False
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
        server = self._server
        if _get_ident() == server._loop_tid:
            self._queue(data)
        else:
            server._call_in_loop(self._queue, data)

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
        self._server.mass_inform(msg)

    def disconnect(self, reason: str) -> None:
        """Send ``#disconnect reason`` and close this connection (thread-safe)."""
        server = self._server
        if _get_ident() == server._loop_tid:
            server._disconnect(self, reason, True)
        else:
            server._call_in_loop(server._disconnect, self, reason, True)

    @property
    def client_disconnect_called(self) -> bool:
        """Whether ``on_client_disconnect`` ran for this connection."""
        return self._disconnect_called

    def get_write_buffer_size(self) -> int:
        """Bytes waiting in the transport for this client."""
        return 0 if self._transport is None else self._transport.get_write_buffer_size()

    def __repr__(self) -> str:
        return f"<ClientConnection {self.address}>"


class ClientRequestConnection:
    """A request in progress: what a handler gets as ``req``.

    Attributes
    ----------
    client_connection : ClientConnection
        The client that sent the request.
    msg : Message
        The request.
    """

    __slots__ = ("client_connection", "msg", "_replied")

    def __init__(self, client_connection: ClientConnection, req_msg: Message):
        self.client_connection = client_connection
        self.msg = req_msg
        self._replied = False

    @property
    def replied(self) -> bool:
        """Whether the reply has been sent."""
        return self._replied

    def inform(self, *args: Any) -> None:
        """Send ``#<name>[mid] args...`` as part of the answer (thread-safe)."""
        if self._replied:
            raise RuntimeError(f"Cannot send inform for request {self.msg!r} after "
                               "sending reply.")
        msg = self.msg
        self.client_connection._send(encode_message(_INFORM, msg.name, args, msg.mid))

    def reply(self, *args: Any) -> None:
        """Send ``!<name>[mid] args...`` (once; thread-safe)."""
        if self._replied:
            raise RuntimeError(f"Reply to request {self.msg!r} already sent.")
        self._replied = True
        msg = self.msg
        self.client_connection._send(encode_message(_REPLY, msg.name, args, msg.mid))

    def reply_with_message(self, rep_msg: Message) -> None:
        """Send a prepared reply message (its mid is set from the request)."""
        if self._replied:
            raise RuntimeError(f"Reply to request {self.msg!r} already sent.")
        if rep_msg.mtype != _REPLY:
            raise ValueError(f"reply_with_message() needs a reply, not {rep_msg!r}")
        self._replied = True
        msg = self.msg
        rep_msg.mid = msg.mid
        self.client_connection._send(
            encode_message(_REPLY, rep_msg.name, rep_msg.arguments, msg.mid))

    def make_reply(self, *args: Any) -> Message:
        """Build (not send) the reply message with ``args``."""
        msg = self.msg
        # What Message.reply_to_request does, without the classmethod's re-packing.
        return _Message(_REPLY, msg.name, args, msg.mid)

    def mass_inform(self, msg: Message) -> None:
        """Send an inform to every client."""
        self.client_connection.mass_inform(msg)


def log_line(level: str, message: str, name: str = "ctlwire.katcp.server") -> bytes:
    """Wire bytes of a ``#log`` inform."""
    return encode_message(_INFORM, "log", (level, b"%.6f" % time.time(), name, message))
