"""KATCP device servers: :class:`DeviceServerBase`, :class:`DeviceServer`, :class:`DeviceLogger`.

A device is a subclass of :class:`DeviceServer` with ``request_*`` handlers and a
``setup_sensors`` method, written as for katcp-python::

    from ctlwire.katcp import DeviceServer, Sensor, request, return_reply, Int

    class MyDevice(DeviceServer):
        VERSION_INFO = ("my-device", 1, 0)
        BUILD_INFO = ("my-device", 1, 0, "")

        def setup_sensors(self):
            self.temp = Sensor.float("temp", "Box temperature", "degC", [-40.0, 80.0])
            self.add_sensor(self.temp)

        @request(Int())
        @return_reply(Int())
        def request_double(self, req, x):
            '''Double a number.'''
            return ("ok", 2 * x)

    server = MyDevice("127.0.0.1", 0)
    server.start()              # in its own thread, with its own event loop
    host, port = server.bind_address

or inside an application's own asyncio loop::

    await server.async_start()
    ...
    await server.async_stop()

Handlers run in the server's event loop thread. A handler returns a reply
:class:`Message`, raises :class:`~ctlwire.katcp.core.FailReply` (``fail``) or
:class:`~ctlwire.katcp.core.AsyncReply` (answer later through ``req``, from any
thread), or returns an awaitable (``async def``) whose result is the reply. Any other
exception becomes a ``fail`` reply carrying the traceback.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import logging
import os
import re
import sys
import threading
import time
import traceback
from typing import Any, Callable

from .. import __version__ as _ctlwire_version
from ._server_conn import ClientConnection, ClientRequestConnection, _dispatch, log_line
from .core import (AsyncReply, FailReply, Message, ProtocolFlags,
                   encode_message)
from .kattypes import (Int, Str, has_katcp_protocol_flags, minimum_katcp_version, request,
                       return_reply)
from .sampling import SampleAuto, SampleNone, SampleStrategy
from .sensor import Sensor

__all__ = [
    "DeviceMetaclass",
    "DeviceServerBase",
    "DeviceServer",
    "AsyncDeviceServer",
    "DeviceLogger",
    "DeviceLogHandler",
    "ClientConnection",
    "ClientRequestConnection",
    "construct_name_filter",
    "new_event_loop",
]

log = logging.getLogger("ctlwire.katcp.server")

_REQUEST, _REPLY, _INFORM = Message.REQUEST, Message.REPLY, Message.INFORM
_handle_request = _dispatch.handle_request
_get_ident = threading.get_ident
_STATUS_RAW = Sensor.STATUSES_RAW

#: Default cap on bytes queued for one client before it counts as too slow.
DEFAULT_MAX_WRITE_BUFFER = 16 * 1024 * 1024


def new_event_loop(factory: Callable[[], asyncio.AbstractEventLoop] | None = None
                   ) -> asyncio.AbstractEventLoop:
    """The event loop of a server that runs in its own thread.

    ``factory`` if given; else what ``$CTLWIRE_KATCP_LOOP`` names (``uvloop`` or
    ``asyncio``); else uvloop where it is installed (a dependency of ctlwire on Linux
    and macOS), else asyncio's own loop. uvloop's transports cost about half as much
    CPU per request as asyncio's selector loop (measured: 7.7 instead of 14.8 us of
    user time per ``?watchdog`` round trip), and nothing in the server depends on
    which loop it is: the test suite runs on both.
    """
    if factory is not None:
        return factory()
    choice = os.environ.get("CTLWIRE_KATCP_LOOP", "").strip().lower()
    if choice not in ("", "uvloop", "asyncio"):
        raise ValueError(f"CTLWIRE_KATCP_LOOP={choice!r}: expected 'uvloop' or 'asyncio'")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ImportError("CTLWIRE_KATCP_LOOP=uvloop but uvloop is not installed "
                                  "(pip install uvloop)") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def construct_name_filter(pattern: str | None) -> tuple[bool, Callable[[str], bool]]:
    """Return ``(exact, filter)`` for a sensor name or ``/regex/`` pattern.

    ``None`` matches everything; ``/regex/`` matches names where the regex is found
    (``re.search``); anything else matches that exact name.
    """
    if pattern is None:
        return False, lambda name: True
    if len(pattern) > 1 and pattern.startswith("/") and pattern.endswith("/"):
        try:
            regex = re.compile(pattern[1:-1])
        except re.error as exc:
            raise FailReply(f"Invalid sensor name regex {pattern!r}: {exc}") from None
        return False, lambda name: regex.search(name) is not None
    return True, lambda name: name == pattern


# -- metaclass ---------------------------------------------------------------------------
class DeviceMetaclass(type):
    """Collect ``request_*``, ``inform_*`` and ``reply_*`` methods into handler tables.

    ``request_foo_bar`` serves ``?foo-bar``. Every request handler needs a docstring
    (it is the ``?help`` text). Handlers marked with :func:`minimum_katcp_version` or
    :func:`has_katcp_protocol_flags` are left out when the class's ``PROTOCOL_INFO``
    does not offer them.
    """

    def __init__(cls, name: str, bases: tuple, dct: dict):
        super().__init__(name, bases, dct)
        cls._request_handlers = {}
        cls._inform_handlers = {}
        cls._reply_handlers = {}
        protocol = getattr(cls, "PROTOCOL_INFO", None)
        for attr in dir(cls):
            for prefix, table in (("request_", cls._request_handlers),
                                  ("inform_", cls._inform_handlers),
                                  ("reply_", cls._reply_handlers)):
                if not attr.startswith(prefix):
                    continue
                handler = getattr(cls, attr)
                if not callable(handler):
                    continue
                if prefix == "request_" and not (handler.__doc__ or "").strip():
                    raise TypeError(f"{name}.{attr} needs a docstring: it is the "
                                    "?help text of the request")
                if protocol is not None and not _handler_allowed(handler, protocol):
                    continue
                table[attr[len(prefix):].replace("_", "-")] = handler


def _handler_allowed(handler: Callable, protocol: ProtocolFlags) -> bool:
    minimum = getattr(handler, "_minimum_katcp_version", None)
    if minimum is not None and (protocol.major, protocol.minor) < tuple(minimum):
        return False
    flags = getattr(handler, "_has_katcp_protocol_flags", None)
    if flags:
        for flag in flags:
            if isinstance(flag, str):
                flag = flag.encode("ascii")
            if flag not in protocol.flags:
                return False
    return True


# -- sensor fan-out -----------------------------------------------------------------------
class _SensorHub:
    """The server's single observer of one sensor.

    Fans each update out to the clients sampling the sensor. The ``#sensor-status``
    line is encoded once per reading and shared by every client; ``auto`` samplers
    get it straight from here, other strategies decide for themselves. Updates made in
    other threads are handed to the loop in batches by the server.
    """

    __slots__ = ("server", "sensor", "autos", "others", "_autos", "_others",
                 "_last_reading", "_last_line", "_prefix")

    def __init__(self, server: "DeviceServerBase", sensor: Sensor):
        self.server = server
        self.sensor = sensor
        self.autos: dict[ClientConnection, Callable] = {}
        self.others: dict[ClientConnection, SampleStrategy] = {}
        self._autos: tuple = ()
        self._others: tuple = ()
        self._last_reading: Any = None
        self._last_line = b""
        self._prefix = b" 1 " + encode_message(_INFORM, "x", [sensor.name])[3:-1] + b" "

    def line(self, reading: Any) -> bytes:
        """``#sensor-status`` wire line of ``reading`` (cached for the last reading)."""
        if reading is self._last_reading:
            return self._last_line
        timestamp, status, value = reading
        sensor = self.sensor
        line = b"#sensor-status %.6f%s%s %s\n" % (timestamp, self._prefix,
                                                  _STATUS_RAW[status],
                                                  sensor._wire(sensor, value))
        self._last_reading = reading
        self._last_line = line
        return line

    def update(self, sensor: Sensor, reading: Any) -> None:
        server = self.server
        if _get_ident() == server._loop_tid:
            self.fan_out(reading)
        else:
            server._call_in_loop(self.fan_out, reading)

    def fan_out(self, reading: Any) -> None:
        autos = self._autos
        if autos:
            line = self.line(reading)
            for queue in autos:
                queue(line)
        if self._others:
            sensor = self.sensor
            for strategy in self._others:
                strategy.update(sensor, reading)

    def add(self, conn: ClientConnection, strategy: SampleStrategy) -> None:
        self.remove(conn)
        if type(strategy) is SampleAuto:
            self.autos[conn] = conn._queue_fn
        else:
            self.others[conn] = strategy
        self._refresh()

    def remove(self, conn: ClientConnection) -> None:
        self.autos.pop(conn, None)
        self.others.pop(conn, None)
        self._refresh()

    def _refresh(self) -> None:
        self._autos = tuple(self.autos.values())
        self._others = tuple(s for s in self.others.values() if s.OBSERVE_UPDATES)
        # Observe the sensor only while someone samples it: unobserved sets stay cheap.
        if self.autos or self.others:
            self.sensor.attach(self)
        else:
            self.sensor.detach(self)

    @property
    def empty(self) -> bool:
        return not (self.autos or self.others)


# -- the server ----------------------------------------------------------------------------
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
        self._dirty: list[ClientConnection] = []
        self._flush_scheduled = False
        self._xq: collections.deque = collections.deque()
        self._x_scheduled = False
        self._xlock = threading.Lock()
        self._xq_room = threading.Event()
        self._xq_room.set()
        self._max_cross_thread = max_cross_thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_tid: int | None = None
        self._aserver: asyncio.base_events.Server | None = None
        self._bind_address: tuple[str, int] | None = None
        self._thread: threading.Thread | None = None
        self._own_loop = False
        self._daemon: bool | None = None
        self._running = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._stopping = False
        self._tasks: set[asyncio.Task] = set()
        self._handler_executor: concurrent.futures.ThreadPoolExecutor | None = None
        # Connections call the compiled request path directly unless a subclass
        # overrides handle_request (then they call the override).
        self._fast_dispatch = type(self).handle_request is DeviceServerBase.handle_request
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
                self._loop = None
                self._loop_tid = None
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
        self._loop = loop
        self._loop_tid = _get_ident()
        self._stopping = False
        self._stop_future = loop.create_future()
        max_line = self._max_line_length
        self._aserver = await loop.create_server(
            lambda: ClientConnection(self, max_line), self._host or None, self._port,
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
        self._flush_dirty()
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
        if self._own_loop:
            loop.stop()
        else:
            self._loop = None
            self._loop_tid = None
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
    def _call_in_loop(self, fn: Callable, *args: Any) -> None:
        """Run ``fn(*args)`` in the loop thread; calls are batched per loop wake-up.

        A producer thread that gets more than ``max_cross_thread`` calls ahead of the
        loop waits for it to catch up: bounded memory, and nothing dropped.
        """
        queue = self._xq
        queue.append((fn, args))
        if len(queue) > self._max_cross_thread and self._running.is_set():
            self._xq_room.clear()
            while len(queue) > self._max_cross_thread and self._running.is_set() \
                    and self._loop is not None:
                self._xq_room.wait(0.05)
        if not self._x_scheduled:
            with self._xlock:
                if self._x_scheduled:
                    return
                self._x_scheduled = True
            loop = self._loop
            try:
                if loop is None:
                    raise RuntimeError("not running")
                loop.call_soon_threadsafe(self._drain_cross_thread)
            except RuntimeError:  # loop gone: the server is stopped, drop the work
                self._x_scheduled = False
                self._xq.clear()

    def _drain_cross_thread(self) -> None:
        # Clear the flag before draining: a producer that appends after this point
        # schedules a new drain, so nothing is left behind.
        self._x_scheduled = False
        queue = self._xq
        for _ in range(len(queue)):
            fn, args = queue.popleft()
            try:
                fn(*args)
            except Exception:
                self._logger.exception("Error in cross-thread call %r", fn)
        if not self._xq_room.is_set():
            self._xq_room.set()

    def _mark_dirty(self, conn: ClientConnection) -> None:
        self._dirty.append(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush_dirty)

    def _flush_dirty(self) -> None:
        self._flush_scheduled = False
        dirty = self._dirty
        self._dirty = []
        for conn in dirty:
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
    def _dispatch(self, conn: ClientConnection, msg: Message) -> None:
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
        _handle_request(self, connection, msg)

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


class DeviceServer(DeviceServerBase):
    """A device server with sensors and the standard KATCP requests.

    Subclasses set ``VERSION_INFO = (name, major, minor)`` and
    ``BUILD_INFO = (name, major, minor, suffix)``, implement :meth:`setup_sensors`,
    and add ``request_*`` handlers. ``extra_versions`` maps extra
    ``?version-list`` entries to ``(version, build_state_or_None)``.
    """

    VERSION_INFO = ("device_stub", 0, 1)
    BUILD_INFO = ("name", 0, 1, "")
    SUPPORTED_PROTOCOL_MAJOR_VERSIONS = (5,)

    def __init__(self, *args: Any, **kwargs: Any):
        if self.PROTOCOL_INFO.major not in self.SUPPORTED_PROTOCOL_MAJOR_VERSIONS:
            raise ValueError(f"Device server only supports katcp protocol versions "
                             f"{self.SUPPORTED_PROTOCOL_MAJOR_VERSIONS}, not "
                             f"{self.PROTOCOL_INFO.major}")
        super().__init__(*args, **kwargs)
        self.log = DeviceLogger(self, python_logger=self._logger)
        self.extra_versions: dict[str, tuple[str, str | None]] = {}
        self._restart_queue: Any = None
        self._sensors: dict[str, Sensor] = {}
        self._hubs: dict[Sensor, _SensorHub] = {}
        self.setup_sensors()

    # -- identity ---------------------------------------------------------------------------
    def version(self) -> str:
        """Return ``name-major.minor`` from ``VERSION_INFO``."""
        return "%s-%s.%s" % tuple(self.VERSION_INFO[:3])

    def build_state(self) -> str:
        """Return ``name-major.minor<suffix>`` from ``BUILD_INFO``."""
        info = tuple(self.BUILD_INFO) + ("",) * (4 - len(self.BUILD_INFO))
        return "%s-%s.%s%s" % info[:4]

    def _library_version(self) -> tuple[str, str]:
        return f"ctlwire-{_ctlwire_version}", _ctlwire_version

    def on_client_connect(self, client_conn: ClientConnection) -> None:
        """Greet a new client with the three ``#version-connect`` informs."""
        library, build = self._library_version()
        for args in (("katcp-protocol", str(self.PROTOCOL_INFO)),
                     ("katcp-library", library, build),
                     ("katcp-device", self.version(), self.build_state())):
            client_conn._queue(encode_message(_INFORM, "version-connect", args))

    def on_client_disconnect(self, client_conn: ClientConnection, msg: str,
                             connection_valid: bool) -> None:
        """Stop the client's sampling and, if it can still hear, send ``#disconnect``."""
        self.clear_strategies(client_conn, remove_client=True)
        if connection_valid:
            client_conn._send(encode_message(_INFORM, "disconnect", [msg]))

    # -- sensors ----------------------------------------------------------------------------
    def setup_sensors(self) -> None:
        """Add the device's sensors (override; ``pass`` if there are none)."""
        raise NotImplementedError("Device server subclasses must implement setup_sensors.")

    def add_sensor(self, sensor: Sensor) -> None:
        """Add (or replace) a sensor."""
        old = self._sensors.get(sensor.name)
        if old is not None and old is not sensor:
            self.remove_sensor(old)
        self._sensors[sensor.name] = sensor

    def remove_sensor(self, sensor: Sensor | str) -> None:
        """Remove a sensor (by object or name) and stop everyone's sampling of it."""
        name = sensor if isinstance(sensor, str) else sensor.name
        removed = self._sensors.pop(name)
        if self._loop is not None and _get_ident() != self._loop_tid:
            self._call_in_loop(self._drop_sensor_strategies, removed)
        else:
            self._drop_sensor_strategies(removed)

    def _drop_sensor_strategies(self, sensor: Sensor) -> None:
        hub = self._hubs.pop(sensor, None)
        for conn in list(self._conns):
            strategy = conn.strategies.pop(sensor, None)
            if strategy is not None:
                strategy.cancel()
        if hub is not None:
            hub.autos.clear()
            hub.others.clear()
            hub._refresh()

    def get_sensor(self, sensor_name: str) -> Sensor:
        """Return the sensor called ``sensor_name``; ``ValueError`` if unknown."""
        try:
            return self._sensors[sensor_name]
        except KeyError:
            raise ValueError(f"Unknown sensor '{sensor_name}'.") from None

    def get_sensors(self) -> list[Sensor]:
        """Return all sensors."""
        return list(self._sensors.values())

    def has_sensor(self, sensor_name: str) -> bool:
        """Whether a sensor called ``sensor_name`` exists."""
        return sensor_name in self._sensors

    def set_restart_queue(self, restart_queue: Any) -> None:
        """Set the queue that ``?restart`` puts this server in."""
        self._restart_queue = restart_queue

    def clear_strategies(self, client_conn: ClientConnection,
                         remove_client: bool = False) -> None:
        """Set every sampling strategy of ``client_conn`` to none."""
        if self._loop is not None and _get_ident() != self._loop_tid:
            self._call_in_loop(self.clear_strategies, client_conn, remove_client)
            return
        strategies = client_conn.strategies
        client_conn.strategies = {}
        for sensor, strategy in strategies.items():
            strategy.cancel()
            hub = self._hubs.get(sensor)
            if hub is not None:
                hub.remove(client_conn)
                if hub.empty:
                    del self._hubs[sensor]

    def _forget_client(self, conn: ClientConnection) -> None:
        if conn.strategies:
            self.clear_strategies(conn)

    def _set_strategy(self, conn: ClientConnection, sensor: Sensor,
                      strategy: SampleStrategy) -> None:
        old = conn.strategies.pop(sensor, None)
        if old is not None:
            old.cancel()
        hub = self._hubs.get(sensor)
        if isinstance(strategy, SampleNone):
            if hub is not None:
                hub.remove(conn)
                if hub.empty:
                    del self._hubs[sensor]
            return
        if hub is None:
            hub = self._hub(sensor)
        conn.strategies[sensor] = strategy
        strategy.start(observe=False)
        hub.add(conn, strategy)

    def _hub(self, sensor: Sensor) -> _SensorHub:
        hub = self._hubs.get(sensor)
        if hub is None:
            hub = self._hubs[sensor] = _SensorHub(self, sensor)
        return hub

    def _make_strategy(self, conn: ClientConnection, sensor: Sensor, strategy: bytes,
                       params: list[bytes]) -> SampleStrategy:
        line = self._hub(sensor).line
        queue = conn._queue_fn

        def inform_callback(sensor: Sensor, reading: Any) -> None:
            queue(line(reading))

        return SampleStrategy.get_strategy(strategy, inform_callback, sensor, *params,
                                           loop=self._loop)

    # -- standard requests ------------------------------------------------------------------
    def request_halt(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Halt the device server.

        Returns
        -------
        success : {'ok', 'fail'}
            Whether scheduling the halt succeeded.

        Examples
        --------
        ::

            ?halt
            !halt ok
        """
        req.reply("ok")
        # Thread-safe: with handler_thread=True this runs outside the loop.
        self.loop.call_soon_threadsafe(self.stop)
        raise AsyncReply()

    def request_help(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Return help on the available requests.

        Return a description of the available requests using a sequence of #help
        informs.

        Parameters
        ----------
        request : str, optional
            The name of the request to return help for (the default is to return help
            for all requests).

        Returns
        -------
        success : {'ok', 'fail'}
        informs : int
            Number of #help informs sent.

        Examples
        --------
        ::

            ?help
            #help halt ...description...
            #help help ...description...
            ...
            !help ok 5

            ?help halt
            #help halt ...description...
            !help ok 1
        """
        handlers = self._request_handlers
        if not msg.arguments:
            for name in sorted(handlers):
                req.inform(name, _help_text(handlers[name]))
            return req.make_reply("ok", len(handlers))
        name = msg.arguments[0].decode("utf-8", "replace")
        if name in handlers:
            req.inform(name, _help_text(handlers[name]))
            return req.make_reply("ok", 1)
        return req.make_reply("fail", "Unknown request method.")

    @request(Str(optional=True))
    @return_reply(Int())
    @has_katcp_protocol_flags([ProtocolFlags.REQUEST_TIMEOUT_HINTS])
    def request_request_timeout_hint(self, req: ClientRequestConnection,
                                     request: str | None) -> tuple:
        """Return timeout hints for requests.

        KATCP requests should generally take less than 5 s to complete, but some
        requests are unavoidably slow. This request lists the suggested client timeout
        of such requests as #request-timeout-hint informs.

        Parameters
        ----------
        request : str, optional
            The name of the request to return a hint for (default: every request that
            has a hint).

        Returns
        -------
        success : {'ok', 'fail'}
        informs : int
            Number of #request-timeout-hint informs sent.
        """
        hints: dict[str, float] = {}
        if request:
            if request not in self._request_handlers:
                raise FailReply("Unknown request method.")
            hint = getattr(self._request_handlers[request], "request_timeout_hint", None)
            hints[request] = hint or 0.0
        else:
            for name, handler in self._request_handlers.items():
                hint = getattr(handler, "request_timeout_hint", None)
                if hint:
                    hints[name] = hint
        for name, hint in sorted(hints.items()):
            req.inform(name, float(hint))
        return ("ok", len(hints))

    def request_log_level(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Query or set the current logging level.

        Parameters
        ----------
        level : {'all', 'trace', 'debug', 'info', 'warn', 'error', 'fatal', 'off'}, optional
            Name of the logging level to set the device server to (the default is to
            leave the log level unchanged).

        Returns
        -------
        success : {'ok', 'fail'}
        level : {'all', 'trace', 'debug', 'info', 'warn', 'error', 'fatal', 'off'}
            The log level after processing the request.

        Examples
        --------
        ::

            ?log-level
            !log-level ok warn

            ?log-level info
            !log-level ok info
        """
        if msg.arguments:
            try:
                self.log.set_log_level_by_name(msg.arguments[0])
            except ValueError as exc:
                raise FailReply(str(exc)) from None
        return req.make_reply("ok", self.log.level_name())

    def request_restart(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Restart the device server.

        Returns
        -------
        success : {'ok', 'fail'}
            Whether scheduling the restart succeeded.

        Examples
        --------
        ::

            ?restart
            !restart ok
        """
        if self._restart_queue is None:
            raise FailReply("No restart queue registered -- cannot restart.")
        self._restart_queue.put_nowait(self)
        return req.make_reply("ok")

    def request_client_list(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Request the list of connected clients.

        The list of clients is sent as a sequence of #client-list informs.

        Informs
        -------
        addr : str
            The address of the client as host:port.

        Returns
        -------
        success : {'ok', 'fail'}
        informs : int
            Number of #client-list informs sent.

        Examples
        --------
        ::

            ?client-list
            #client-list 127.0.0.1:53600
            !client-list ok 1
        """
        conns = list(self._conns)
        for conn in conns:
            req.inform(conn.address)
        return req.make_reply("ok", len(conns))

    @minimum_katcp_version(5, 0)
    def request_version_list(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Request the list of versions of roles and subcomponents.

        Informs
        -------
        name : str
            Name of the role or component.
        version : str
            A string identifying the version of the component.
        build_state_or_serial_number : str
            A string identifying the specific instance of a component.

        Returns
        -------
        success : {'ok', 'fail'}
        informs : int
            Number of #version-list informs sent.

        Examples
        --------
        ::

            ?version-list
            #version-list katcp-protocol 5.1-BIM
            #version-list katcp-library ctlwire-0.1.0 0.1.0
            #version-list katcp-device foodevice-1.0 foodevice-1.0.0rc1
            !version-list ok 3
        """
        library, build = self._library_version()
        versions: list[tuple[str, tuple[str, str | None]]] = [
            ("katcp-protocol", (str(self.PROTOCOL_INFO), None)),
            ("katcp-library", (library, build)),
            ("katcp-device", (self.version(), self.build_state())),
        ]
        versions += sorted(self.extra_versions.items())
        for name, (version, build_state) in versions:
            if build_state is None:
                req.inform(name, version)
            else:
                req.inform(name, version, build_state)
        return req.make_reply("ok", len(versions))

    def _matching_sensors(self, msg: Message) -> list[tuple[str, Sensor]]:
        pattern = msg.arguments[0].decode("utf-8", "replace") if msg.arguments else None
        exact, name_filter = construct_name_filter(pattern)
        sensors = [(name, sensor) for name, sensor in sorted(self._sensors.items())
                   if name_filter(name)]
        if exact and not sensors:
            raise FailReply("Unknown sensor name.")
        return sensors

    def request_sensor_list(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Request the list of sensors.

        The list of sensors is sent as a sequence of #sensor-list informs.

        Parameters
        ----------
        name : str, optional
            Name of the sensor to list (the default is to list all sensors). If name
            starts and ends with '/' it is treated as a regular expression and all
            sensors whose names contain the regular expression are returned.

        Informs
        -------
        name : str
            The name of the sensor being described.
        description : Str
            Description of the named sensor.
        units : str
            Units for the value of the named sensor.
        type : str
            Type of the named sensor.
        params : list of str, optional
            Additional sensor parameters (type dependent). For integer and float
            sensors the additional parameters are the minimum and maximum sensor value.
            For discrete sensors the additional parameters are the allowed values.
            For all other types no additional parameters are sent.

        Returns
        -------
        success : {'ok', 'fail'}
        informs : int
            Number of #sensor-list informs sent.

        Examples
        --------
        ::

            ?sensor-list
            #sensor-list psu.voltage PSU\\_voltage. V float 0.0 5.0
            #sensor-list cpu.status CPU\\_status. \\@ discrete on off error
            ...
            !sensor-list ok 5

            ?sensor-list /voltage/
            #sensor-list psu.voltage PSU\\_voltage. V float 0.0 5.0
            #sensor-list cpu.voltage CPU\\_voltage. V float 0.0 3.0
            !sensor-list ok 2
        """
        sensors = self._matching_sensors(msg)
        for name, sensor in sensors:
            req.inform(name, sensor.description, sensor.units, sensor.stype,
                       *sensor.formatted_params)
        return req.make_reply("ok", len(sensors))

    def request_sensor_value(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Request the value of a sensor or sensors.

        A list of sensor values as a sequence of #sensor-value informs.

        Parameters
        ----------
        name : str, optional
            Name of the sensor to poll (the default is to send values for all sensors).
            If name starts and ends with '/' it is treated as a regular expression and
            all sensors whose names contain the regular expression are returned.

        Informs
        -------
        timestamp : float
            Timestamp of the sensor reading in seconds since the Unix epoch.
        count : {1}
            Number of sensors described in this #sensor-value inform. Will always be
            one.
        name : str
            Name of the sensor whose value is being reported.
        status : str
            Sensor status.
        value : object
            Value of the named sensor. Type depends on the type of the sensor.

        Returns
        -------
        success : {'ok', 'fail'}
        informs : int
            Number of #sensor-value informs sent.

        Examples
        --------
        ::

            ?sensor-value
            #sensor-value 1244631611.415231 1 psu.voltage nominal 4.5
            #sensor-value 1244631611.415200 1 cpu.status nominal off
            ...
            !sensor-value ok 5
        """
        sensors = self._matching_sensors(msg)
        send = req.client_connection._send
        mid = msg.mid
        for name, sensor in sensors:
            timestamp, status, value = sensor.read()
            send(encode_message(_INFORM, "sensor-value", (
                b"%.6f" % timestamp, b"1", name, _STATUS_RAW[status],
                sensor._formatter(value, True)), mid))
        return req.make_reply("ok", len(sensors))

    def request_sensor_sampling(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Configure or query the way a sensor is sampled.

        Sampled values are reported asynchronously using the #sensor-status message.
        With the B protocol flag, several comma-separated sensor names may be given
        to set the same strategy on all of them at once.

        Parameters
        ----------
        names : str
            Name of the sensor whose sampling strategy to query or configure, or a
            comma-separated list of names when setting a strategy.
        strategy : {'none', 'auto', 'event', 'differential', 'period', 'event-rate', 'differential-rate'}, optional
            Type of strategy to use to report the sensor value. The differential
            strategy types may only be used with integer, float or timestamp sensors.
        params : list of str, optional
            Additional strategy parameters (dependent on the strategy being used).

        Returns
        -------
        success : {'ok', 'fail'}
        names : str
            Name(s) of the sensor(s).
        strategy : str
            Name of the new or current sampling strategy.
        params : list of str
            Additional strategy parameters.

        Examples
        --------
        ::

            ?sensor-sampling cpu.power.on
            !sensor-sampling ok cpu.power.on none

            ?sensor-sampling cpu.power.on period 0.5
            #sensor-status 1244631611.415231 1 cpu.power.on nominal 1
            !sensor-sampling ok cpu.power.on period 0.5
        """
        if not msg.arguments:
            raise FailReply("No sensor name given.")
        names_arg = msg.arguments[0].decode("utf-8", "replace")
        names = names_arg.split(",") if self.PROTOCOL_INFO.bulk_set_sensor_sampling \
            else [names_arg]
        unknown = [n for n in names if n not in self._sensors]
        if unknown:
            if len(names) == 1:
                raise FailReply(f"Unknown sensor name: {unknown[0]}.")
            raise FailReply(f"Unknown sensor names: {', '.join(unknown)}.")
        conn = req.client_connection
        if len(msg.arguments) == 1:
            if len(names) > 1:
                raise FailReply("Cannot query the strategies of several sensors at once.")
            strategy = conn.strategies.get(self._sensors[names[0]])
            if strategy is None:
                return req.make_reply("ok", names_arg, "none")
            name, params = strategy.get_sampling_formatted()
            return req.make_reply("ok", names_arg, name, *params)
        strategy_name = msg.arguments[1]
        params = list(msg.arguments[2:])
        if strategy_name not in SampleStrategy.SAMPLING_LOOKUP_REV:
            raise FailReply(f"Unknown strategy name: "
                            f"{strategy_name.decode('utf-8', 'replace')}.")
        if not self.PROTOCOL_INFO.strategy_allowed(strategy_name):
            raise FailReply(f"Strategy {strategy_name.decode()} not allowed for version "
                            f"{self.PROTOCOL_INFO.major} of katcp")
        # Build every strategy first so a bad parameter changes nothing.
        new: list[tuple[Sensor, SampleStrategy]] = []
        for name in names:
            sensor = self._sensors[name]
            try:
                new.append((sensor, self._make_strategy(conn, sensor, strategy_name,
                                                        params)))
            except ValueError as exc:
                raise FailReply(f"Invalid strategy for sensor {name}: {exc}") from None
        if _get_ident() != self._loop_tid:  # handler thread: apply in the loop
            done = threading.Event()

            def apply() -> None:
                for sensor, strategy in new:
                    self._set_strategy(conn, sensor, strategy)
                done.set()
            self._call_in_loop(apply)
            done.wait(10.0)
        else:
            for sensor, strategy in new:
                self._set_strategy(conn, sensor, strategy)
        name, fparams = new[-1][1].get_sampling_formatted()
        return req.make_reply("ok", names_arg, name, *fparams)

    def request_sensor_sampling_clear(self, req: ClientRequestConnection,
                                      msg: Message) -> Message:
        """Set all sampling strategies for this client to none.

        Returns
        -------
        success : {'ok', 'fail'}

        Examples
        --------
        ::

            ?sensor-sampling-clear
            !sensor-sampling-clear ok
        """
        self.clear_strategies(req.client_connection)
        return req.make_reply("ok")

    def request_watchdog(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Check that the server is still alive.

        Returns
        -------
        success : {'ok'}

        Examples
        --------
        ::

            ?watchdog
            !watchdog ok
        """
        return req.make_reply("ok")


#: katcp-python name of a device server whose handlers run in the loop: the default here.
AsyncDeviceServer = DeviceServer


def _help_text(handler: Callable) -> str:
    return inspect.cleandoc(handler.__doc__ or "")


# -- logging ---------------------------------------------------------------------------------
class DeviceLogger:
    """Logging for a device: ``#log`` informs to every client, mirrored to Python logging.

    Parameters
    ----------
    device_server : DeviceServerBase
        The server whose clients receive the ``#log`` informs.
    root_logger : str, optional
        Logger name put in the informs when none is given.
    python_logger : logging.Logger, optional
        Python logger that also receives every message.
    """

    ALL, TRACE, DEBUG, INFO, WARN, ERROR, FATAL, OFF = range(8)
    LEVELS = ["all", "trace", "debug", "info", "warn", "error", "fatal", "off"]
    PYTHON_LEVEL = {
        ALL: 0,
        TRACE: 0,
        DEBUG: logging.DEBUG,
        INFO: logging.INFO,
        WARN: logging.WARNING,
        ERROR: logging.ERROR,
        FATAL: logging.FATAL,
        OFF: logging.FATAL + 10,
    }

    def __init__(self, device_server: DeviceServerBase, root_logger: str = "root",
                 python_logger: logging.Logger | None = None):
        self._device_server = device_server
        self._python_logger = python_logger
        self._log_level = self.WARN
        self._root_logger_name = root_logger

    def level_name(self, level: int | None = None) -> str:
        """Name of ``level`` (default: the current level)."""
        return self.LEVELS[self._log_level if level is None else level]

    def level_from_name(self, level_name: str | bytes) -> int:
        """Level constant for ``level_name``; ``ValueError`` if unknown."""
        name = level_name.decode("utf-8", "replace") if isinstance(level_name, bytes) \
            else level_name
        try:
            return self.LEVELS.index(name)
        except ValueError:
            raise ValueError(f"Unknown logging level name '{name}'") from None

    def set_log_level(self, level: int) -> None:
        """Set the level below which messages are not sent to clients."""
        if level not in range(len(self.LEVELS)):
            raise ValueError(f"Unknown logging level {level!r}")
        self._log_level = level

    def set_log_level_by_name(self, level_name: str | bytes) -> None:
        """Set the level by name (``"info"``, ...)."""
        self.set_log_level(self.level_from_name(level_name))

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log ``msg % args`` at ``level``: to Python logging and, if at or above the
        current level, as ``#log`` to every client.

        Keyword arguments ``name`` (logger name) and ``timestamp`` are honoured.
        """
        timestamp = kwargs.get("timestamp")
        if self._python_logger is not None and not _bridge_state.active:
            # Mark the mirror call so a DeviceLogHandler on that logger skips it.
            _bridge_state.active = True
            try:
                self._python_logger.log(self.PYTHON_LEVEL[level], msg, *args)
            finally:
                _bridge_state.active = False
        if level >= self._log_level and level < self.OFF:
            name = kwargs.get("name") or self._root_logger_name
            try:
                text = msg % args if args else msg
            except TypeError:
                text = f"{msg} {args}".strip()
            self._device_server.mass_inform(self._device_server.create_log_inform(
                self.level_name(level), str(text), name, timestamp=timestamp))

    def trace(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log a trace message."""
        self.log(self.TRACE, msg, *args, **kwargs)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log a debug message."""
        self.log(self.DEBUG, msg, *args, **kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log an info message."""
        self.log(self.INFO, msg, *args, **kwargs)

    def warn(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log a warning message."""
        self.log(self.WARN, msg, *args, **kwargs)

    warning = warn

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log an error message."""
        self.log(self.ERROR, msg, *args, **kwargs)

    def fatal(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log a fatal error message."""
        self.log(self.FATAL, msg, *args, **kwargs)

    @classmethod
    def log_to_python(cls, logger: logging.Logger, msg: Message) -> None:
        """Log a received ``#log`` inform to a Python logger."""
        level, timestamp, name, message = (a.decode("utf-8", "replace")
                                           for a in msg.arguments[:4])
        python_level = cls.PYTHON_LEVEL.get(cls.LEVELS.index(level)
                                            if level in cls.LEVELS else cls.WARN,
                                            logging.WARNING)
        logger.log(python_level, "%s %s: %s", timestamp, name, message)

    def python_handler(self) -> "DeviceLogHandler":
        """Return a :class:`logging.Handler` sending Python log records as ``#log``."""
        return DeviceLogHandler(self)


class _BridgeState(threading.local):
    active = False


_bridge_state = _BridgeState()


class DeviceLogHandler(logging.Handler):
    """Bridge from Python logging to ``#log`` informs (respecting ``?log-level``).

    Examples
    --------
    >>> logging.getLogger("mydevice").addHandler(server.log.python_handler())
    """

    _FROM_PYTHON = [(logging.FATAL, DeviceLogger.FATAL), (logging.ERROR, DeviceLogger.ERROR),
                    (logging.WARNING, DeviceLogger.WARN), (logging.INFO, DeviceLogger.INFO),
                    (logging.DEBUG, DeviceLogger.DEBUG)]

    def __init__(self, device_logger: DeviceLogger):
        super().__init__()
        self._device_logger = device_logger

    def emit(self, record: logging.LogRecord) -> None:
        if _bridge_state.active:  # a message the device logger itself mirrored
            return
        level = DeviceLogger.TRACE
        for python_level, katcp_level in self._FROM_PYTHON:
            if record.levelno >= python_level:
                level = katcp_level
                break
        _bridge_state.active = True
        try:
            self._device_logger.log(level, record.getMessage(), name=record.name,
                                    timestamp=record.created)
        except Exception:
            self.handleError(record)
        finally:
            _bridge_state.active = False
