"""``DeviceServerBase``: the transport, dispatch and life cycle of a KATCP device server.

A device is a subclass of :class:`~ctlwire.katcp.server.DeviceServer` (which adds
sensors and the standard requests); this base accepts clients (one
:class:`~ctlwire.katcp._connection.ClientConnection` each), runs request handlers
(compiled: ``ctlwire.katcp._dispatch``) and starts and stops the server in its own
thread or in an application's event loop. It implements the ``ConnectionOwner``
protocol its connections are written against, and fills in their ``DispatchState``.

Handlers run in the server's event loop thread. A handler returns a reply
:class:`Message`, raises :class:`~ctlwire.katcp.core.FailReply` (``fail``) or
:class:`~ctlwire.katcp.core.AsyncReply` (answer later through ``req``, from any
thread), or returns an awaitable (``async def``) whose result is the reply. Any other
exception becomes a ``fail`` reply carrying the traceback.

Layering: imports ``_connection``, ``_handlers``, ``_loop`` and ``core``.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import sys
import threading
import time
import traceback
from typing import Any, Callable

from ._connection import (ClientConnection, ClientRequestConnection, DispatchState,
                          log_line)
from ._connection import handle_request as _compiled_handle_request
from ._handlers import DeviceMetaclass
from ._loop import CrossThreadCalls, new_event_loop
from .core import AsyncReply, FailReply, Message, ProtocolFlags, encode_message

__all__ = ["DeviceServerBase", "DEFAULT_MAX_WRITE_BUFFER"]

log = logging.getLogger("ctlwire.katcp.server")

_REQUEST, _REPLY, _INFORM = Message.REQUEST, Message.REPLY, Message.INFORM
_get_ident = threading.get_ident

#: Default cap on bytes queued for one client before it counts as too slow.
DEFAULT_MAX_WRITE_BUFFER = 16 * 1024 * 1024


class DeviceServerBase(metaclass=DeviceMetaclass):
    """Base class of device servers: transport, dispatch, life cycle.

    Subclasses add ``request_*`` methods (``(self, req, msg)`` returning a reply
    message) and may add ``inform_*`` / ``reply_*`` methods. Most devices subclass
    :class:`DeviceServer`, which adds the standard requests and sensors.

    Parameters
    ----------
    host : str
        Address to listen on (``""`` for all, ``"127.0.0.1"`` for loopback).
    port : int
        Port to listen on (0 picks a free one; see :attr:`bind_address`).
    tb_limit : int, optional
        Stack frames kept in the traceback of an unexpected handler error.
    logger : logging.Logger, optional
        Python logger of the server.
    max_write_buffer : int, optional
        Bytes that may wait for one client before it is disconnected as too slow.
    max_line_length : int, optional
        Longest request line accepted; longer lines get a ``#log error``.
    slow_client_grace : float, optional
        Seconds a too-slow client gets to read its ``#disconnect`` before the
        connection is aborted.
    max_cross_thread : int, optional
        Sensor updates and messages from other threads that may wait for the event
        loop; past this, the producing thread waits for the loop to catch up.
    """

    PROTOCOL_INFO = ProtocolFlags(5, 1, [ProtocolFlags.MULTI_CLIENT,
                                         ProtocolFlags.MESSAGE_IDS,
                                         ProtocolFlags.BULK_SET_SENSOR_SAMPLING])

    #: Makes the event loop when the server runs its own thread (:meth:`start`);
    #: ``None`` picks one with :func:`new_event_loop` (uvloop where installed).
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None

    _request_handlers: dict[str, Callable]
    _inform_handlers: dict[str, Callable]
    _reply_handlers: dict[str, Callable]

    def __init__(self, host: str, port: int, tb_limit: int = 20,
                 logger: logging.Logger = log, *,
                 max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER,
                 max_line_length: int = 2 * 1024 * 1024,
                 slow_client_grace: float = 1.0, max_cross_thread: int = 100_000):
        self._host = host
        self._port = port
        self._tb_limit = tb_limit
        self._logger = logger
        self._max_write_buffer = max_write_buffer
        self._max_line_length = max_line_length
        self._slow_client_grace = slow_client_grace
        self._conns: dict[ClientConnection, None] = {}
        # Connections with output to write at the end of this loop iteration.
        self._flush_list: list[ClientConnection] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_tid: int | None = None
        self._aserver: asyncio.base_events.Server | None = None
        self._bind_address: tuple[str, int] | None = None
        self._thread: threading.Thread | None = None
        self._own_loop = False
        self._daemon: bool | None = None
        self._running = threading.Event()
        self._xcalls = CrossThreadCalls(max_cross_thread, self._running, logger)
        #: Run ``fn(*args)`` in the loop thread (from any thread; batched, bounded).
        self._call_in_loop: Callable[..., None] = self._xcalls.call
        self._stopped = threading.Event()
        self._stopped.set()
        self._stopping = False
        self._tasks: set[asyncio.Task] = set()
        self._handler_executor: concurrent.futures.ThreadPoolExecutor | None = None
        # Connections call the compiled request path directly unless a subclass
        # overrides handle_request (then they call the override).
        self._fast_dispatch = type(self).handle_request is DeviceServerBase.handle_request
        # All the compiled request path reads of this server (see _dispatch.pxd).
        self._dispatch_state = DispatchState(self, self._request_handlers, logger,
                                             self._fast_dispatch)
        self._external_loop: asyncio.AbstractEventLoop | None = None
        self._start_error: BaseException | None = None
        self._stop_future: asyncio.Future | None = None

    # -- properties -------------------------------------------------------------------------
    @property
    def bind_address(self) -> tuple[str, int]:
        """``(host, port)`` actually listened on (valid once running)."""
        if self._bind_address is None:
            return (self._host, self._port)
        return self._bind_address

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the server runs in."""
        if self._loop is None:
            raise RuntimeError("the server is not running")
        return self._loop

    ioloop = loop

    def set_ioloop(self, ioloop: Any = None) -> None:
        """Serve in an existing event loop instead of a new thread (call before start).

        Parameters
        ----------
        ioloop : asyncio.AbstractEventLoop or tornado IOLoop, optional
            The loop (a tornado ``IOLoop`` is accepted for its ``asyncio_loop``).
            ``None`` restores the default: :meth:`start` runs a loop in a new thread.
            :meth:`start` may then be called from that loop's thread (it schedules the
            start) or from another thread while the loop runs (it waits for it).
        """
        self._external_loop = getattr(ioloop, "asyncio_loop", ioloop)

    def setDaemon(self, daemonic: bool) -> None:
        """Whether the server thread started by :meth:`start` is a daemon thread."""
        self._daemon = daemonic

    def set_concurrency_options(self, thread_safe: bool = True,
                                handler_thread: bool = False) -> None:
        """Choose where request handlers run (call before starting).

        Parameters
        ----------
        thread_safe : bool
            Accepted for katcp-python compatibility; the public methods are always
            thread-safe.
        handler_thread : bool
            Run handlers one at a time in a dedicated thread instead of the event loop,
            so a blocking handler does not hold up sampling (slower per request).
        """
        if handler_thread and self._handler_executor is None:
            self._handler_executor = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="katcp-handler")
        elif not handler_thread and self._handler_executor is not None:
            self._handler_executor.shutdown(wait=False)
            self._handler_executor = None
        self._dispatch_state.threaded = self._handler_executor is not None

    # -- life cycle -------------------------------------------------------------------------
    def start(self, timeout: float | None = None, daemon: bool | None = None,
              excepthook: Callable | None = None) -> None:
        """Start the server in a new thread with its own event loop.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait until the server listens (default: do not wait).
        daemon : bool, optional
            Whether the thread is a daemon thread.
        excepthook : callable, optional
            Called as ``excepthook(type, value, traceback)`` if the thread dies.
        """
        if self._thread is not None and self._thread.is_alive() or self._running.is_set():
            raise RuntimeError("Device server already started.")
        external = self._external_loop
        if external is not None:
            self._start_error = None
            try:
                running_loop = asyncio.get_running_loop()
            except RuntimeError:
                running_loop = None
            if running_loop is external:
                self._spawn_in(external, self.async_start())
                return
            fut = asyncio.run_coroutine_threadsafe(self.async_start(), external)
            if timeout is not None:
                fut.result(timeout)
            return
        self._stopped.clear()
        self._start_error = None
        thread = threading.Thread(target=self._thread_main, args=(excepthook,),
                                  name=f"katcp-server-{self._port}",
                                  daemon=daemon if daemon is not None else
                                  bool(self._daemon))
        self._thread = thread
        thread.start()
        if timeout is not None:
            if not self.wait_running(timeout):
                if self._start_error is not None:
                    raise RuntimeError(f"Device server failed to start: "
                                       f"{self._start_error}") from self._start_error
                raise RuntimeError(f"Device server did not start within {timeout} s")

    def _thread_main(self, excepthook: Callable | None) -> None:
        loop = new_event_loop(self.loop_factory)
        self._own_loop = True
        try:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._async_start())
            except BaseException as exc:
                self._start_error = exc
                self._logger.error("Device server failed to start: %s", exc)
                self._stopped.set()
                if excepthook is not None:
                    excepthook(*sys.exc_info())
                return
            loop.run_forever()
        except BaseException:
            if excepthook is not None:
                excepthook(*sys.exc_info())
            else:
                raise
        finally:
            try:
                # Let cancelled handler tasks and aborted transports finish cleanly.
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(asyncio.sleep(0))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._set_loop(None)
                self._running.clear()
                self._stopped.set()

    async def async_start(self) -> None:
        """Start serving inside the running asyncio loop (the application's own)."""
        if self._running.is_set():
            raise RuntimeError("Device server already started.")
        self._stopped.clear()
        self._own_loop = False
        try:
            await self._async_start()
        except BaseException:
            self._stopped.set()
            raise

    async def _async_start(self) -> None:
        loop = asyncio.get_running_loop()
        self._set_loop(loop)
        self._stopping = False
        self._stop_future = loop.create_future()
        max_line = self._max_line_length
        state = self._dispatch_state
        self._aserver = await loop.create_server(
            lambda: ClientConnection(self, state, max_line), self._host or None, self._port,
            reuse_address=True)
        sock = self._aserver.sockets[0]
        addr = sock.getsockname()
        self._bind_address = (addr[0], addr[1])
        self._running.set()

    def stop(self, timeout: float | None = 1.0) -> None:
        """Stop the server (from any thread): ``#disconnect`` every client, close.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the shutdown (``None``: wait; from inside the loop
            the shutdown is only scheduled).
        """
        loop = self._loop
        if loop is None or not self._running.is_set():
            return
        if _get_ident() == self._loop_tid:
            task = loop.create_task(self._shutdown())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        try:
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        except RuntimeError:  # loop already closed
            return
        try:
            fut.result(timeout)
        except concurrent.futures.CancelledError:
            pass  # another stop (e.g. ?halt) finished first and closed the loop
        except concurrent.futures.TimeoutError:
            raise RuntimeError(f"Device server did not stop within {timeout} s") from None

    async def async_stop(self) -> None:
        """Stop a server started with :meth:`async_start` (call in its loop)."""
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        loop = asyncio.get_running_loop()
        if self._aserver is not None:
            self._aserver.close()
        for conn in list(self._conns):
            self._disconnect(conn, "Device server shutting down.", True)
        self._flush_connections()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        # Give clients a moment to receive their #disconnect; never wait forever.
        deadline = loop.time() + 1.0
        while self._conns and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self._conns):
            if conn._transport is not None:
                conn._transport.abort()
        if self._aserver is not None:
            await self._aserver.wait_closed()
            self._aserver = None
        self._running.clear()
        if self._handler_executor is not None:
            self._handler_executor.shutdown(wait=False)
            self._handler_executor = None
            self._dispatch_state.threaded = False
        if self._own_loop:
            loop.stop()
        else:
            self._set_loop(None)
            self._stopped.set()
        if self._stop_future is not None and not self._stop_future.done():
            self._stop_future.set_result(None)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the server thread to finish (after :meth:`stop` or ``?halt``)."""
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self._stopped.wait(timeout)

    async def async_join(self) -> None:
        """Wait (in the loop) until a server started with :meth:`async_start` stops."""
        if self._stop_future is not None and not self._stopped.is_set():
            await asyncio.shield(self._stop_future)

    def running(self) -> bool:
        """Whether the server is serving."""
        return self._running.is_set()

    def wait_running(self, timeout: float | None = None) -> bool:
        """Wait until the server is serving; return whether it is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._running.wait(0.05):
                return True
            if self._start_error is not None or (deadline is not None
                                                 and time.monotonic() >= deadline):
                return self._running.is_set()

    # -- loop plumbing ----------------------------------------------------------------------
    def _set_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Record the loop the server runs in (``None``: stopped), everywhere it is read."""
        self._loop = loop
        tid = None if loop is None else _get_ident()
        self._loop_tid = tid
        self._dispatch_state.loop_tid = tid or 0
        self._xcalls.loop = loop

    def _queue_flush(self, conn: ClientConnection) -> None:
        """Write ``conn``'s queued output at the end of this loop iteration."""
        self._flush_list.append(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush_connections)

    def _flush_connections(self) -> None:
        self._flush_scheduled = False
        conns = self._flush_list
        self._flush_list = []
        for conn in conns:
            conn._flush()

    # -- connections ------------------------------------------------------------------------
    def _connection_made(self, conn: ClientConnection) -> None:
        if self._stopping:
            assert conn._transport is not None
            conn._transport.close()
            conn._closing = True
            return
        others = list(self._conns)
        self._conns[conn] = None
        if others:
            line = encode_message(_INFORM, "client-connected", [conn.address])
            for other in others:
                other._queue(line)
        try:
            result = self.on_client_connect(conn)
            if inspect.isawaitable(result):
                self._spawn(result)
        except Exception:
            self._logger.exception("on_client_connect failed for %s", conn.address)
        if conn._out:
            conn._flush()

    def _connection_lost(self, conn: ClientConnection, exc: Exception | None) -> None:
        if conn in self._conns:
            del self._conns[conn]
            if not conn._disconnect_called:
                conn._disconnect_called = True
                try:
                    self.on_client_disconnect(conn, "Connection lost"
                                              + (f": {exc}" if exc else "."), False)
                except Exception:
                    self._logger.exception("on_client_disconnect failed for %s",
                                           conn.address)
        self._forget_client(conn)

    def _forget_client(self, conn: ClientConnection) -> None:
        """Drop everything the server keeps for ``conn`` (subclasses extend)."""

    def _disconnect(self, conn: ClientConnection, reason: str, valid: bool) -> None:
        if conn._closing:
            return
        if not conn._disconnect_called:
            conn._disconnect_called = True
            try:
                self.on_client_disconnect(conn, reason, valid)
            except Exception:
                self._logger.exception("on_client_disconnect failed for %s", conn.address)
        if conn._out:
            conn._flush()
        conn._closing = True
        self._conns.pop(conn, None)
        self._forget_client(conn)
        transport = conn._transport
        if transport is not None:
            transport.close()

    def _too_slow(self, conn: ClientConnection) -> None:
        """Disconnect a client whose output backlog passed ``max_write_buffer``."""
        if conn._closing:
            return
        self._logger.warning("Disconnecting client %s: it is not reading fast enough "
                             "(%d bytes waiting)", conn.address,
                             conn.get_write_buffer_size())
        conn._out = []
        self._disconnect(conn, "Client too slow: output buffer full.", True)
        transport = conn._transport
        if transport is not None:
            # close() waits for the backlog to drain; a stalled reader gets a grace
            # period to see its #disconnect, then the connection is aborted.
            assert self._loop is not None
            self._loop.call_later(self._slow_client_grace, transport.abort)

    def _bad_line(self, conn: ClientConnection, error: Exception) -> None:
        self._logger.warning("Malformed line from %s: %s", conn.address, error)
        conn._queue(log_line("error", f"Malformed message: {error}", "root"))

    def _spawn_in(self, loop: asyncio.AbstractEventLoop, awaitable: Any) -> None:
        task = loop.create_task(_as_coroutine(awaitable))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn(self, awaitable: Any) -> asyncio.Task:
        assert self._loop is not None
        task = self._loop.create_task(_as_coroutine(awaitable))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- dispatch ---------------------------------------------------------------------------
    def _route(self, conn: ClientConnection, msg: Message) -> None:
        """A message the compiled path does not run at once: a request for the handler
        thread, or an inform or reply (``handle_message``)."""
        if msg.mtype == _REQUEST:
            if self._handler_executor is not None:
                self._handler_executor.submit(self._handle_request_threaded, conn, msg)
            else:
                self.handle_request(conn, msg)
        else:
            self.handle_message(conn, msg)

    def _handle_request_threaded(self, conn: ClientConnection, msg: Message) -> None:
        try:
            self.handle_request(conn, msg)
        except Exception:
            self._logger.exception("Error handling %r", msg)

    def on_message(self, client_conn: ClientConnection, msg: Message) -> None:
        """Entry point for every message from a client (katcp-python name)."""
        self.handle_message(client_conn, msg)

    def handle_message(self, client_conn: ClientConnection, msg: Message) -> None:
        """Dispatch a message of any type from a client."""
        if msg.mtype == _REQUEST:
            self.handle_request(client_conn, msg)
        elif msg.mtype == _INFORM:
            self.handle_inform(client_conn, msg)
        elif msg.mtype == _REPLY:
            self.handle_reply(client_conn, msg)

    def handle_request(self, connection: ClientConnection, msg: Message) -> None:
        """Run the handler of request ``msg`` and send its reply.

        The handler gets ``(self, req, msg)``; a reply message it returns is sent, as
        is the result of a coroutine it returns; :class:`AsyncReply` means it replies
        later through ``req``; :class:`FailReply` and other exceptions become a
        ``fail`` reply. Compiled (``ctlwire.katcp._dispatch``); a subclass that
        overrides this method is called for every request instead.
        """
        _compiled_handle_request(connection, msg)

    def _other_return(self, req: ClientRequestConnection, reply: Any) -> None:
        # What a handler returned that is not a reply message: a coroutine, or a mistake.
        if reply is not None and inspect.isawaitable(reply):
            if _get_ident() == self._loop_tid:
                self._spawn(self._await_reply(req, reply))
            else:
                asyncio.run_coroutine_threadsafe(self._await_reply(req, reply), self.loop)
        elif not req._replied:
            self._send_fail(req, f"Request handler for {req.msg.name!r} returned "
                                 f"{reply!r} instead of a reply message.")

    async def _await_reply(self, req: ClientRequestConnection, awaitable: Any) -> None:
        try:
            reply = await awaitable
        except AsyncReply:
            return
        except FailReply as exc:
            self._send_fail(req, str(exc))
            return
        except asyncio.CancelledError:
            if not req._replied:
                self._send_fail(req, "Request cancelled: the server is stopping.")
            raise
        except Exception:
            self._send_fail(req, self._exception_text(req.msg, sys.exc_info()))
            return
        if req._replied:
            return
        if isinstance(reply, Message):
            req.reply_with_message(reply)
        else:
            self._send_fail(req, f"Request handler for {req.msg.name!r} returned "
                                 f"{reply!r} instead of a reply message.")

    def _send_fail(self, req: ClientRequestConnection, reason: str) -> None:
        self._logger.error("Request %s FAIL: %s", req.msg.name, reason)
        if req._replied:
            # Too late for the reply: tell the client out of band.
            req.client_connection._send(log_line("error", reason, "root"))
            return
        req.reply(b"fail", reason)

    def _exception_text(self, msg: Message, exc_info: Any) -> str:
        etype, value, tb = exc_info
        return "".join(traceback.format_exception(etype, value, tb,
                                                  limit=self._tb_limit)).rstrip()

    def create_exception_reply_and_log(self, req_msg: Message, exc_info: Any) -> Message:
        """Build the ``fail`` reply carrying a handler's traceback."""
        reason = self._exception_text(req_msg, exc_info)
        self._logger.error("Request %s FAIL: %s", req_msg.name, reason)
        return Message.reply(req_msg.name, "fail", reason)

    def handle_inform(self, connection: ClientConnection, msg: Message) -> None:
        """Dispatch an inform from a client to ``inform_<name>`` (else ignore it)."""
        handler = self._inform_handlers.get(msg.name)
        if handler is None:
            self._logger.debug("Ignoring inform %s from %s", msg.name, connection.address)
            return
        try:
            handler(self, connection, msg)
        except Exception:
            self._logger.exception("Inform handler %s failed", msg.name)

    def handle_reply(self, connection: ClientConnection, msg: Message) -> None:
        """Dispatch a reply from a client to ``reply_<name>`` (else ignore it)."""
        handler = self._reply_handlers.get(msg.name)
        if handler is None:
            self._logger.debug("Ignoring reply %s from %s", msg.name, connection.address)
            return
        try:
            handler(self, connection, msg)
        except Exception:
            self._logger.exception("Reply handler %s failed", msg.name)

    # -- sending ----------------------------------------------------------------------------
    def inform(self, connection: ClientConnection, msg: Message) -> None:
        """Send an asynchronous inform to one client (thread-safe)."""
        connection.inform(msg)

    def reply(self, connection: ClientConnection, reply: Message, orig_req: Message) -> None:
        """Send a (late) reply to ``orig_req`` (thread-safe)."""
        connection.reply(reply, orig_req)

    def reply_inform(self, connection: ClientConnection, inform: Message,
                     orig_req: Message) -> None:
        """Send an inform that belongs to ``orig_req`` (thread-safe)."""
        connection.reply_inform(inform, orig_req)

    def mass_inform(self, msg: Message) -> None:
        """Send an inform to every connected client (thread-safe)."""
        if msg.mtype != _INFORM:
            raise ValueError(f"mass_inform() needs an inform message, not {msg!r}")
        data = encode_message(_INFORM, msg.name, msg.arguments, msg.mid)
        if _get_ident() == self._loop_tid:
            self._mass_send(data)
        elif self._loop is not None:
            self._call_in_loop(self._mass_send, data)

    def _mass_send(self, data: bytes) -> None:
        for conn in self._conns:
            conn._queue(data)

    def _conn_for_sock(self, sock: Any) -> ClientConnection:
        for conn in list(self._conns):
            if conn._sock is sock or (conn._sock is not None and sock is not None
                                      and conn._sock.fileno() == sock.fileno()):
                return conn
        raise ValueError(f"No client connection for socket {sock!r}")

    def tcp_inform(self, sock: Any, msg: Message) -> None:
        """Send an asynchronous inform to the client on socket ``sock``."""
        self._conn_for_sock(sock).inform(msg)

    def tcp_reply(self, sock: Any, reply: Message, orig_req: Message) -> None:
        """Send a late reply to the client on socket ``sock``."""
        self._conn_for_sock(sock).reply(reply, orig_req)

    def tcp_reply_inform(self, sock: Any, inform: Message, orig_req: Message) -> None:
        """Send a request's inform to the client on socket ``sock``."""
        self._conn_for_sock(sock).reply_inform(inform, orig_req)

    def get_sockets(self) -> list:
        """Return the sockets of the connected clients."""
        return [conn._sock for conn in list(self._conns) if conn._sock is not None]

    def get_connections(self) -> list[ClientConnection]:
        """Return the connected clients."""
        return list(self._conns)

    # -- hooks ------------------------------------------------------------------------------
    def on_client_connect(self, conn: ClientConnection) -> None:
        """Called when a client connects (override to greet it)."""

    def on_client_disconnect(self, conn: ClientConnection, msg: str,
                             connection_valid: bool) -> None:
        """Called before a client connection is closed; ``msg`` is the reason."""

    def create_log_inform(self, level_name: str, msg: str, name: str,
                          timestamp: float | None = None) -> Message:
        """Build a ``#log`` inform."""
        if timestamp is None:
            timestamp = time.time()
        return Message.inform("log", level_name, b"%.6f" % timestamp, name, msg)


async def _as_coroutine(awaitable: Any) -> Any:
    return await awaitable
