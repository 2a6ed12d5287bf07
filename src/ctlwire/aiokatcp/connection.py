"""aiokatcp-compatible connection: one KATCP stream as an asyncio ``Protocol``.

:class:`Connection` reads with ctlwire's compiled ``StreamParser`` and writes what the
codec formats. Everything a connection needs from whoever owns it (a server or a
client) is declared by :class:`ConnectionOwner`; nothing else is reached for.

Output is batched: what is written while a read is being dispatched (the replies to a
read's requests) and what :meth:`Connection.write_async` queues (sensor informs) goes
out in one ``transport.write`` per loop iteration, in the order it was written.

Also here: :func:`wrap_handler`, which turns ``async def request_x(self, ctx, a: int,
*rest: str)`` into a function of the message whose annotations decode the arguments.

Layering: imports the standard library, :mod:`ctlwire.katcp.core` and :mod:`.core`.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import ipaddress
import logging
import time
from collections import deque
from typing import Any, Callable, Deque, Iterable, List, Optional, Protocol

from ..katcp.core import Message as _CMessage, StreamParser
from . import core

__all__ = ["Connection", "ConnectionOwner", "FailReply", "InvalidReply", "wrap_handler",
           "DEFAULT_LIMIT"]

logger = logging.getLogger(__name__)

#: Longest accepted line, as aiokatcp.
DEFAULT_LIMIT = 16 * 1024 ** 2
# Reads of 64 KiB for asyncio's selector transports (256 KiB buffers are mmap'ed by
# malloc on every read and cost more than the requests they carry).
_READ_SIZE = 64 * 1024
_from_codec = core.from_codec
_INFORM = 2


class FailReply(Exception):
    """Raise in a request handler to reply ``fail`` with the exception's text."""


class InvalidReply(Exception):
    """Raise in a request handler to reply ``invalid`` with the exception's text."""


class ConnectionOwner(Protocol):
    """What a :class:`Connection` calls on its owner."""

    def handle_message(self, conn: "Connection", msg: core.Message) -> None: ...

    def _connection_made(self, conn: "Connection") -> None: ...

    def _connection_lost(self, conn: "Connection", exc: Optional[Exception]) -> None: ...

    def _eof_received(self, conn: "Connection") -> bool: ...


class ConnectionLoggerAdapter(logging.LoggerAdapter):
    """Follow each log message with the peer's address in brackets (as aiokatcp)."""

    def process(self, msg: Any, kwargs: Any) -> Any:
        return f"{msg} [{self.extra['address']}]", kwargs  # type: ignore[index]


class Connection(asyncio.Protocol):
    """One KATCP connection (aiokatcp's ``Connection``).

    Parameters
    ----------
    owner : ConnectionOwner
        Receives the messages and the connection events.
    is_server : bool
        True on the server side (a malformed line is then answered with ``#log error``).
    limit : int
        Longest accepted line in bytes.
    """

    address: core.Address
    logger: logging.LoggerAdapter

    def __init__(self, owner: ConnectionOwner, is_server: bool, limit: int) -> None:
        self.owner = owner
        self.is_server = is_server
        self._transport: Any = None
        self._parser = StreamParser(limit)
        self._closed_event = asyncio.Event()
        self._closed = False  # the same as _closed_event.is_set(), read on every write
        self._exc: Optional[Exception] = None
        self._paused = False
        self._drain_waiters: Deque[asyncio.Future] = deque()
        self._warned_on_closed = False
        # batched output (see the module docstring)
        self._out: List[bytes] = []
        self._out_bytes = 0
        self._dispatching = False
        self._flush_pending = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        try:
            self.address = core.Address(ipaddress.ip_address(peer[0]), peer[1])
        except (TypeError, ValueError, IndexError):
            self.address = core.Address(ipaddress.IPv4Address("0.0.0.0"))
        self.logger = ConnectionLoggerAdapter(logger, dict(address=self.address))
        if hasattr(transport, "max_size"):
            transport.max_size = _READ_SIZE  # type: ignore[attr-defined]
        self.owner._connection_made(self)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._exc = exc
        self._out = []
        self._out_bytes = 0
        self._closed = True
        self._closed_event.set()
        for waiter in self._drain_waiters:
            if not waiter.done():
                if exc is not None:
                    waiter.set_exception(exc)
                else:
                    waiter.set_result(None)
        self.owner._connection_lost(self, exc)

    def eof_received(self) -> bool:
        if self._parser.buffered:
            self.logger.warning("EOF received on connection with partial message")
        return self.owner._eof_received(self)

    def pause_writing(self) -> None:
        self._paused = True
        self.logger.debug("paused writing")

    def resume_writing(self) -> None:
        self._paused = False
        self.logger.debug("resumed writing")
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        self._dispatching = True
        try:
            for item in self._parser.feed(data):
                if item.__class__ is _CMessage:
                    try:
                        owner.handle_message(self, _from_codec(item))
                    except Exception:
                        self.logger.exception("Exception in message handler")
                else:
                    self._malformed(item)
        finally:
            self._dispatching = False
            if self._out:
                self._flush()

    def _malformed(self, error: Exception) -> None:
        self.logger.warning("Malformed message received", exc_info=error)
        if self.is_server:
            self.write_message(core.Message.inform("log", "error", time.time(), __name__,
                                                   str(error)))

    # -- output -----------------------------------------------------------------------------
    def is_closing(self) -> bool:
        """True once the transport is closing or closed."""
        return self._transport is not None and self._transport.is_closing()

    def _closed_warning(self) -> None:
        if not self._warned_on_closed:
            if self._exc is not None:
                self.logger.warning("Connection closed before message could be sent: %s",
                                    self._exc)
            else:
                self.logger.warning("Connection closed before message could be sent")
            self._warned_on_closed = True

    def _flush(self) -> None:
        self._flush_pending = False
        out = self._out
        if not out:
            return
        self._out = []
        self._out_bytes = 0
        if self._closed:
            return
        self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def write_raw(self, data: bytes) -> None:
        """Send formatted wire bytes, in order with everything else written."""
        if self._closed:
            self._closed_warning()
            return
        if self._dispatching or self._out:
            self._out.append(data)
            self._out_bytes += len(data)
            if not self._dispatching and not self._flush_pending:
                self._flush_pending = True
                self._loop.call_soon(self._flush)  # type: ignore[union-attr]
        else:
            self._transport.write(data)

    def write_async(self, data: bytes) -> None:
        """Queue wire bytes to go out with the rest of this loop iteration's output."""
        if self._closed:
            return
        self._out.append(data)
        self._out_bytes += len(data)
        if not self._dispatching and not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]

    def write_messages(self, msgs: Iterable[core.Message]) -> None:
        """Write messages to the connection (errors are logged and swallowed)."""
        self.write_raw(b"".join([core.to_wire(m) for m in msgs]))

    def write_message(self, msg: core.Message) -> None:
        """Write one message to the connection (errors are logged and swallowed)."""
        self.write_raw(core.to_wire(msg))

    async def drain(self) -> None:
        """Wait until the transport's outgoing buffer is below its high-water mark."""
        if self._closed or not self._paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        try:
            await waiter
        finally:
            self._drain_waiters.remove(waiter)

    def pause_reading(self) -> None:
        """Stop reading from the peer (back-pressure)."""
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        """Resume reading from the peer."""
        self._transport.resume_reading()

    def close(self) -> None:
        """Start closing; see :meth:`wait_closed`. Queued output is written first."""
        if self._out and not self._closed:
            self._flush()
        self._transport.close()

    def abort(self) -> None:
        """Close at once, dropping buffered output."""
        self._out = []
        self._out_bytes = 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        """Bytes waiting to be sent (transport buffer and this iteration's batch)."""
        return self._transport.get_write_buffer_size() + self._out_bytes

    async def wait_closed(self) -> None:
        """Wait until the connection is closed (by either end)."""
        await self._closed_event.wait()


# -- request handlers with annotated parameters --------------------------------------------

def _decoder_of(parameter: inspect.Parameter) -> Callable[[bytes], Any]:
    if parameter.annotation is inspect.Parameter.empty:
        return core.get_decoder(bytes)
    return core.get_decoder(parameter.annotation)


def wrap_handler(name: str, handler: Callable, fixed: int) -> Callable:
    """Wrap a handler with typed parameters into a function of ``(*fixed, msg)``.

    The message's arguments are decoded by the annotations of the parameters after the
    first ``fixed`` ones (unannotated: ``bytes``; ``*rest`` takes any number); a value
    that does not decode, too many or too few arguments raise :class:`FailReply`.

    Parameters
    ----------
    name : str
        Message name (for error messages).
    handler : callable
        The handler (a coroutine function or a plain function).
    fixed : int
        Leading parameters that are not message arguments (``self, ctx``: 2).
    """
    sig = inspect.signature(handler, eval_str=True)
    positional = []
    var_positional = None
    for p in sig.parameters.values():
        if p.name == "_msg":
            raise ValueError("Parameter cannot be named _msg")
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            var_positional = p
        elif p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                        inspect.Parameter.POSITIONAL_OR_KEYWORD):
            positional.append(p)
    if len(positional) < fixed:
        raise TypeError(f"Handler must accept at least {fixed} positional argument(s)")
    params = positional[fixed:]
    decoders = tuple(_decoder_of(p) for p in params)
    n_decoders = len(decoders)
    rest_decoder = _decoder_of(var_positional) if var_positional is not None else None
    required = [p.name for p in params if p.default is inspect.Parameter.empty]
    n_required = len(required)
    # keyword-only parameters without defaults can never be given from the wire
    kw_missing = [p.name for p in sig.parameters.values()
                  if p.kind is inspect.Parameter.KEYWORD_ONLY
                  and p.default is inspect.Parameter.empty]

    def decode_args(fixed_args: tuple, msg: core.Message) -> list:
        raw = msg.arguments
        n = len(raw)
        args = list(fixed_args)
        try:
            if n <= n_decoders:
                for i in range(n):
                    args.append(decoders[i](raw[i]))
            else:
                if rest_decoder is None:
                    raise FailReply(f"too many arguments for {name}")
                for i in range(n_decoders):
                    args.append(decoders[i](raw[i]))
                for i in range(n_decoders, n):
                    args.append(rest_decoder(raw[i]))
        except ValueError as exc:
            raise FailReply(str(exc)) from exc
        if n < n_required:
            raise FailReply(f"missing a required argument: {required[n]!r}")
        if kw_missing:
            raise FailReply(f"missing a required argument: {kw_missing[0]!r}")
        return args

    if fixed == 2 and n_decoders == 1 and not kw_missing:
        # the server's case with one parameter, spelt out: it is the per-request path
        decode0 = decoders[0]

        def wrapper(self: Any, ctx: Any, _msg: core.Message) -> Any:
            raw = _msg.arguments
            if len(raw) == 1:
                try:
                    value = decode0(raw[0])
                except ValueError as exc:
                    raise FailReply(str(exc)) from exc
                return handler(self, ctx, value)
            return handler(*decode_args((self, ctx), _msg))
    elif fixed == 2 and not kw_missing:
        def wrapper(self: Any, ctx: Any, _msg: core.Message) -> Any:
            raw = _msg.arguments
            if not raw and not n_required:
                return handler(self, ctx)
            return handler(*decode_args((self, ctx), _msg))
    else:
        def wrapper(*args: Any) -> Any:  # type: ignore[misc]
            return handler(*decode_args(args[:-1], args[-1]))

    functools.update_wrapper(wrapper, handler,
                             assigned=("__module__", "__name__", "__qualname__", "__doc__"))
    wrapper.__signature__ = sig.replace(parameters=positional[:fixed] + [  # type: ignore
        inspect.Parameter("_msg", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          annotation=core.Message)])
    wrapper._aiokatcp_orig_handler = handler  # type: ignore[attr-defined]
    # What the server's compiled path needs to decode a request that gives every
    # parameter itself, without calling the wrapper: (handler, decoders).
    wrapper._direct = ((handler, decoders)  # type: ignore[attr-defined]
                       if fixed == 2 and var_positional is None and not kw_missing
                       and inspect.iscoroutinefunction(handler) else None)
    wrapper._is_coroutine_handler = inspect.iscoroutinefunction(handler)  # type: ignore
    return wrapper
