"""aiokatcp-compatible device server: ``DeviceServer``, ``RequestContext``.

A device written for aiokatcp 2.x runs unchanged: ``async def request_x(self, ctx, a:
int, *rest: str)`` handlers (annotations decode the arguments, the return value is the
reply), ``VERSION``/``BUILD_STATE``, ``await server.start()`` on the caller's loop,
``stop``/``halt``/``join``, service tasks, ``max_pending``/``max_backlog``, sensors and
the standard requests.

What differs inside (not on the wire): a request is not given a task of its own unless
it needs one. Its coroutine is run at once, in the read that brought it; most handlers
finish there, and their replies leave with the rest of that read's output in one
write. A handler that suspends (awaits something not ready) continues in a task, which
counts towards ``max_pending`` as aiokatcp's tasks do. On Python 3.12+ the first step
runs in an eagerly started task (so ``asyncio.current_task()``, ``asyncio.timeout()``
and ``wait_for`` see a task); on 3.11 it runs outside any task unless the handler's
code names ``timeout``/``timeout_at``/``current_task``/``TaskGroup`` (then it is given
a task straight away), or the class sets ``EAGER_REQUESTS = False``.

A ``#sensor-status`` line is formatted once per reading, however many clients sample
the sensor, and a client's informs of one loop iteration leave in one write.

Layering: imports the standard library, :mod:`ctlwire.katcp.core`, ``ctlwire._ext``, the
sibling modules ``core``, ``connection``, ``sensor`` and the compiled ``_serve`` (which
sees a server and its connections only through :class:`ServingServer` and
:class:`ServedConnection`, declared here).
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
import socket
import sys
import time
import traceback
import types
from collections import deque
from typing import (Any, Awaitable, Callable, Deque, Dict, Iterable, List, Optional,
                    Protocol, Set, Tuple)

from .. import __version__ as _ctlwire_version
from .._ext import load_extension
from ..katcp.core import encode_message as _encode_line
from . import connection, core, sensor
from .connection import FailReply, InvalidReply

__all__ = ["DeviceServer", "RequestContext", "ClientConnection", "DeviceServerMeta"]

logger = logging.getLogger(__name__)

_REQUEST = core.Message.Type.REQUEST
_REPLY_CODE = 1
_INFORM_CODE = 2
_BULK_SENSOR_BATCH = 50
_encode = core.encode
_get_type = core.get_type
_EAGER_TASKS = sys.version_info >= (3, 12)
# Names whose use in a handler means it wants a task from its first step (3.11 only).
_TASK_NAMES = frozenset(("timeout", "timeout_at", "current_task", "TaskGroup", "Timeout"))

#: ``#version-connect katcp-library`` of this server.
LIBRARY_VERSION = f"ctlwire.aiokatcp-{_ctlwire_version}"


_encode_args = core.encode_all
_encoders = core._encoders
_encoder_for = core.encoder_for
_CMessage = core._kcore.Message
_new = object.__new__
_Message = core.Message
_FROM_CODEC = core._FROM_CODEC
# the compiled request path (its Python reference is ClientConnection._serve_read_py)
_serve_read = load_extension("ctlwire.aiokatcp._serve").serve_read


class ServedConnection(Protocol):
    """What the compiled read path (``_serve.pyx``) reads and calls on a connection.

    ``ClientConnection`` provides it; a change to these names is a change to
    ``_serve.pyx`` (and to its Python reference, ``ClientConnection._serve_read_py``).
    """

    owner: Any
    logger: Any
    _parser: Any
    _transport: Any
    _out: List[bytes]
    _out_bytes: int
    _dispatching: bool
    _flush_pending: bool
    _closed: bool
    _paused: bool

    def _malformed(self, error: Exception) -> None: ...

    def _closed_warning(self) -> None: ...

    def drain(self) -> Awaitable[None]: ...


class ServingServer(Protocol):
    """What the compiled read path reads and calls on the server (``DeviceServer``)."""

    loop: asyncio.AbstractEventLoop
    _stop_task: Optional[asyncio.Task]
    _pending: Set[asyncio.Task]
    _max_pending: int
    _buffered_requests: Deque["RequestContext"]
    _request_handlers: Dict[str, Callable]

    def handle_message(self, conn: Any, msg: core.Message) -> None: ...

    def _start_request(self, ctx: "RequestContext") -> None: ...

    def _request_failed(self, ctx: "RequestContext", exc: BaseException) -> None: ...

    def _track(self, ctx: "RequestContext", task: asyncio.Task) -> None: ...

    def _finish_later(self, ctx: "RequestContext", coro: Any, first: Any) -> Awaitable[None]: ...


class ClientConnection(connection.Connection):
    """The server's side of one client connection."""

    owner: "DeviceServer"  # type: ignore[assignment]

    def __init__(self, owner: "DeviceServer", limit: int) -> None:
        super().__init__(owner, True, limit)  # type: ignore[arg-type]
        self._samplers: Dict[sensor.Sensor, sensor.SensorSampler] = {}
        #: Held by ``?sensor-sampling`` while it changes this client's samplers.
        self.samplers_lock = asyncio.Lock()
        self.sensor_update = self._sensor_update  # stable bound method (observer)
        if owner._fast_requests and _serve_read is not None:
            # the transport calls the compiled path straight (no Python frame between);
            # set before the transport exists, since uvloop looks it up once
            self.data_received = functools.partial(  # type: ignore[method-assign]
                _serve_read, self, RequestContext)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        for sampler in self._samplers.values():
            sampler.close()
        self._samplers = {}
        self.__dict__.pop("data_received", None)  # (it refers back to self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.owner._fast_requests:
            super().data_received(data)
        elif _serve_read is not None:
            _serve_read(self, RequestContext, data)
        else:
            self._serve_read_py(data)

    def _serve_read_py(self, data: bytes) -> None:
        """The inline path in Python: the reference of the compiled ``_serve``."""
        server = self.owner
        self._dispatching = True
        dispatch = server._dispatch
        try:
            for item in self._parser.feed(data):
                if item.__class__ is not _CMessage:
                    self._malformed(item)
                    continue
                msg = _new(_Message)
                msg.mtype = mtype = _FROM_CODEC[item.mtype]
                msg.name = item.name
                msg.arguments = item.arguments
                mid = item.mid
                msg.mid = None if mid is None else int(mid)
                try:
                    if mtype is _REQUEST:
                        dispatch(self, msg, mid)
                    else:
                        server.handle_message(self, msg)
                except Exception:
                    self.logger.exception("Exception in message handler")
        finally:
            self._dispatching = False
            if self._out:
                self._flush()

    def set_sampler(self, s: sensor.Sensor, sampler: Optional[sensor.SensorSampler]) -> None:
        """Set (``None``: clear) the sampler of sensor ``s`` for this client."""
        old = self._samplers.pop(s, None)
        if old is not None:
            old.close()
        if sampler is not None:
            self._samplers[s] = sampler

    def get_sampler(self, s: sensor.Sensor) -> Optional[sensor.SensorSampler]:
        """The sampler of sensor ``s`` for this client, if any."""
        return self._samplers.get(s)

    def _sensor_update(self, s: sensor.Sensor, reading: sensor.Reading) -> None:
        """Send ``#sensor-status`` for ``reading`` (the samplers' observer)."""
        self.owner._write_async_raw(self, _sensor_status_line(s, reading))


# One reading reaches every sampling client in turn: its line is formatted once.
_last_reading: List[Any] = [None, b""]


def _sensor_status_line(s: sensor.Sensor, reading: sensor.Reading) -> bytes:
    cache = _last_reading
    if cache[0] is reading:
        return cache[1]
    value = reading.value
    line = _encode_line(_INFORM_CODE, "sensor-status", (
        repr(float(reading.timestamp)).encode("ascii"), b"1", s.name,
        _STATUS_BYTES[reading.status],
        value if value.__class__ is bytes else _encoder_for(value.__class__)(value)))
    cache[0] = reading
    cache[1] = line
    return line


_STATUS_BYTES = {st: st.name.lower().encode("ascii") for st in sensor.Sensor.Status}


class RequestContext:
    """What a request handler gets as ``ctx``: the connection, the request and the
    ways to answer it.

    Parameters
    ----------
    conn : ClientConnection
        The client's connection.
    req : Message
        The request.
    """

    __slots__ = ("conn", "req", "_replied", "_logger")

    def __init__(self, conn: ClientConnection, req: core.Message) -> None:
        self.conn = conn
        self.req = req
        self._replied = False
        self._logger: Optional[logging.LoggerAdapter] = None

    @property
    def logger(self) -> logging.LoggerAdapter:
        """A logger that names the client and the request."""
        if self._logger is None:
            self._logger = connection.ConnectionLoggerAdapter(
                logger, dict(address=self.conn.address, req=self.req))
        return self._logger

    @property
    def replied(self) -> bool:
        """Whether the reply has been sent."""
        return self._replied

    def reply(self, *args: Any) -> None:
        """Send the reply (``ok``/``fail``/``invalid`` first).

        Raises
        ------
        RuntimeError
            If the request has already been replied to.
        """
        if self._replied:
            raise RuntimeError(f"request ?{self.req.name} has already been replied to")
        req = self.req
        self.conn.write_raw(_encode_line(_REPLY_CODE, req.name, _encode_args(args), req.mid))
        self._replied = True

    def inform(self, *args: Any) -> None:
        """Send an inform belonging to the request.

        Raises
        ------
        RuntimeError
            If the request has already been replied to.
        """
        if self._replied:
            raise RuntimeError(f"request ?{self.req.name} has already been replied to")
        req = self.req
        self.conn.write_raw(_encode_line(_INFORM_CODE, req.name, _encode_args(args), req.mid))

    def informs(self, informs: Iterable[Iterable], *, send_reply: bool = True) -> None:
        """Send one inform per item of ``informs``, then ``ok <count>`` (unless
        ``send_reply`` is false), in one write.

        Raises
        ------
        RuntimeError
            If the request has already been replied to.
        """
        if self._replied:
            raise RuntimeError(f"request ?{self.req.name} has already been replied to")
        name, mid = self.req.name, self.req.mid
        lines = [_encode_line(_INFORM_CODE, name, _encode_args(args), mid) for args in informs]
        if send_reply:
            lines.append(_encode_line(_REPLY_CODE, name, (b"ok", b"%d" % len(lines)), mid))
        self.conn.write_raw(b"".join(lines))
        if send_reply:
            self._replied = True

    async def drain(self) -> None:
        """Wait until the client's outgoing queue is below its high-water mark."""
        await self.conn.drain()


def _needs_task(handler: Callable) -> bool:
    orig = getattr(handler, "_aiokatcp_orig_handler", handler)
    code = getattr(orig, "__code__", None)
    if code is None:
        return True
    names = set(code.co_names)
    for const in code.co_consts:  # nested functions and comprehensions
        if isinstance(const, types.CodeType):
            names.update(const.co_names)
    return bool(names & _TASK_NAMES)


class DeviceServerMeta(type):
    """Collects the ``request_*`` handlers of a class (a docstring is required)."""

    @classmethod
    def _wrap_request(mcs, name: str, value: Callable) -> Callable:
        return connection.wrap_handler(name, value, 2)

    def __new__(mcs, name: str, bases: tuple, namespace: dict, **kwds: Any) -> type:
        handlers: Dict[str, Callable] = {}
        for base in bases:
            handlers.update(getattr(base, "_request_handlers", {}))
        handlers.update(namespace.get("_request_handlers", {}))
        namespace["_request_handlers"] = handlers
        cls = type.__new__(mcs, name, bases, namespace)
        for key, value in namespace.items():
            if key.startswith("request_") and inspect.isfunction(value):
                if value.__doc__ is None:
                    raise TypeError(f"{key} must have a docstring")
                wrapped = mcs._wrap_request(key[8:].replace("_", "-"), value)
                wrapped._needs_task = (_needs_task(wrapped)  # type: ignore[attr-defined]
                                       or not wrapped._is_coroutine_handler)  # type: ignore
                handlers[key[8:].replace("_", "-")] = wrapped
        return cls


@types.coroutine
def _resume(coro: Any, first: Any) -> Any:
    """Carry on a coroutine whose first step ran outside a task.

    ``first`` is what it yielded (the future it waits for); the task running this
    waits on it and then resumes ``coro`` exactly as if it had run it from the start.
    """
    try:
        sent = yield first
    except BaseException as exc:
        try:
            first = coro.throw(exc)
        except StopIteration as stop:
            return stop.value
    else:
        try:
            first = coro.send(sent)
        except StopIteration as stop:
            return stop.value
    while True:
        try:
            sent = yield first
        except BaseException as exc:
            try:
                first = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                first = coro.send(sent)
            except StopIteration as stop:
                return stop.value


class DeviceServer(metaclass=DeviceServerMeta):
    """A KATCP device server (aiokatcp's ``DeviceServer``).

    Subclasses set ``VERSION`` and ``BUILD_STATE`` and define ``async def
    request_<name>(self, ctx, ...)`` handlers.

    Parameters
    ----------
    host : str
        Address to listen on (empty for every interface).
    port : int
        Port (0 picks a free one: see :attr:`sockets`).
    limit : int
        Longest accepted request line.
    max_pending : int
        Requests in progress (suspended handlers) at which the server stops reading
        from its clients until one finishes.
    max_backlog : int, optional
        Bytes of unsent output to a client past which it is disconnected when an
        asynchronous inform is due (twice ``limit`` by default).
    loop : asyncio.AbstractEventLoop, optional
        The loop to serve on (the running one by default).
    """

    _request_handlers: Dict[str, Callable] = {}
    VERSION: str = None  # type: ignore[assignment]
    BUILD_STATE: str = None  # type: ignore[assignment]
    #: Run a request's first step at once (see the module docstring).
    EAGER_REQUESTS = True

    class LogHandler(logging.Handler):
        """A logging handler that sends records as ``#log`` informs to every client.

        Records of ctlwire's own KATCP modules are left out (they could feed back on
        themselves), and so are records below the server's ``?log-level``.

        Typical use: ``logging.getLogger().addHandler(DeviceServer.LogHandler(server))``.
        """

        def __init__(self, server: "DeviceServer") -> None:
            super().__init__()
            self._server = server
            self.addFilter(self._wanted)
            self.setFormatter(logging.Formatter("%(filename)s:%(lineno)d: %(message)s"))

        def _wanted(self, record: logging.LogRecord) -> bool:
            level = self._server._log_level
            return (not record.name.startswith(("ctlwire.aiokatcp.", "aiokatcp."))
                    and level != core.LogLevel.OFF and record.levelno >= level)

        def emit(self, record: logging.LogRecord) -> None:
            try:
                self._server.mass_inform("log", core.LogLevel.from_python(record.levelno),
                                         record.created, record.name, self.format(record))
            except Exception:
                self.handleError(record)

    def __init__(self, host: str, port: int, *, limit: int = connection.DEFAULT_LIMIT,
                 max_pending: int = 100, max_backlog: Optional[int] = None,
                 loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        if not self.VERSION:
            raise TypeError(f"{self.__class__.__name__} does not define VERSION")
        if not self.BUILD_STATE:
            raise TypeError(f"{self.__class__.__name__} does not define BUILD_STATE")
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = asyncio.get_event_loop()
        self.loop = loop
        self._host = host
        self._port = port
        self._limit = limit
        self._max_pending = max_pending
        self.max_backlog = 2 * limit if max_backlog is None else max_backlog
        self._connections: Set[ClientConnection] = set()
        self._pending: Set[asyncio.Task] = set()
        self._buffered_requests: Deque[RequestContext] = deque()
        self._reading_paused = False
        self._log_level = core.LogLevel.WARN
        self._server: Optional[asyncio.AbstractServer] = None
        self._server_lock = asyncio.Lock()
        self._stopped = asyncio.Event()
        self._stop_task: Optional[asyncio.Task] = None
        self._service_tasks: List[asyncio.Task] = []
        # the inline request path serves subclasses that keep handle_message as it is
        self._fast_requests = (self.EAGER_REQUESTS and not _EAGER_TASKS and
                               type(self).handle_message is DeviceServer.handle_message)
        self.sensors = sensor.SensorSet()
        self.sensors.add_remove_callback(
            functools.partial(self._remove_sensor_callback, self._connections))

    @staticmethod
    def _remove_sensor_callback(connections: Set[ClientConnection], s: sensor.Sensor) -> None:
        for conn in connections:
            conn.set_sampler(s, None)

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start listening, on the server's loop.

        Raises
        ------
        RuntimeError
            If the server is already running.
        """
        async with self._server_lock:
            if self._server is not None:
                raise RuntimeError("Server is already running")
            self._stopped.clear()
            self._server = await self.loop.create_server(
                lambda: ClientConnection(self, self._limit), self._host, self._port)
            self._stop_task = None

    async def on_stop(self) -> None:
        """Override to run code at shutdown: after the listener closed and requests
        finished or were cancelled, before the service tasks are cancelled."""

    async def _stop_impl(self, cancel: bool = True) -> None:
        try:
            async with self._server_lock:
                self._stop_task = asyncio.current_task()
                if self._server is None:
                    return
                self._server.close()
                # connections accepted just before the close may still be being set
                # up; give them a few iterations so they are shut down properly
                for _ in range(10):
                    await asyncio.sleep(0)
                self._server = None
                self._buffered_requests.clear()
                if self._pending:
                    if cancel:
                        for task in self._pending:
                            task.cancel()
                    await asyncio.wait(list(self._pending))
                bye = _encode_line(_INFORM_CODE, "disconnect", (b"server shutting down",))
                for conn in list(self._connections):
                    conn.write_raw(bye)
                    conn.close()
                    await conn.wait_closed()
                await self.on_stop()
                tasks, self._service_tasks = self._service_tasks, []
                for task in tasks:
                    task.cancel()
                error: Optional[BaseException] = None
                for task in tasks:
                    try:
                        await task
                    except asyncio.CancelledError:
                        pass
                    except BaseException as exc:
                        error = error or exc
                if error is not None:
                    raise error
        finally:
            self._stopped.set()

    async def stop(self, cancel: bool = True) -> None:
        """Shut the server down and wait for it (see :meth:`halt`, :meth:`join`)."""
        self.halt(cancel=cancel)
        await self.join()

    def halt(self, cancel: bool = True) -> asyncio.Task:
        """Begin shutting down; returns the task doing it.

        Parameters
        ----------
        cancel : bool
            Cancel requests still in progress (else wait for them).
        """
        return self.loop.create_task(self._stop_impl(cancel))

    async def join(self) -> None:
        """Wait until the server has stopped; re-raises what a service task or
        :meth:`on_stop` raised."""
        await self._stopped.wait()
        if self._stop_task is not None:
            await self._stop_task

    @property
    def server(self) -> Optional[asyncio.AbstractServer]:
        """The listening ``asyncio`` server (``None`` when not running)."""
        return self._server

    @property
    def sockets(self) -> Tuple[socket.socket, ...]:
        """Listening sockets (empty before :meth:`start`)."""
        if self._server is None:
            return ()
        return tuple(self._server.sockets)  # type: ignore[attr-defined]

    @property
    def service_tasks(self) -> Tuple[asyncio.Task, ...]:
        return tuple(self._service_tasks)

    def add_service_task(self, task: asyncio.Task) -> None:
        """Run ``task`` (an ``asyncio.Task``) as part of the server.

        It is cancelled when the server stops. If it raises (other than being
        cancelled) the server halts and :meth:`join`/:meth:`stop` re-raise it.
        """
        self._service_tasks.append(task)
        task.add_done_callback(self._service_task_done)

    def _service_task_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            logger.warning("Halting the server because %s raised %s",
                           f"task {task.get_name()!r}", exc, exc_info=exc)
            self.halt()
            return
        try:
            self._service_tasks.remove(task)
        except ValueError:
            pass

    # -- connections --------------------------------------------------------------------------
    def send_version_info(self, ctx: RequestContext, *, send_reply: bool = True) -> None:
        """Send the three version informs (on connect and for ``?version-list``)."""
        ctx.informs([("katcp-protocol", "5.1-MIB"),
                     ("katcp-library", LIBRARY_VERSION, f"ctlwire-{_ctlwire_version}"),
                     ("katcp-device", self.VERSION, self.BUILD_STATE)],
                    send_reply=send_reply)

    def _write_async_raw(self, conn: ClientConnection, data: bytes) -> None:
        conn.write_async(data)
        max_backlog = self.max_backlog
        if conn._out_bytes > max_backlog:
            # more than the backlog waits for the end of the iteration: write it now,
            # so the kernel takes what it can (aiokatcp writes every inform at once)
            conn._flush()
        # The backlog is what the transport could not hand to the kernel, as in
        # aiokatcp. While ?sensor-sampling sets many sensors its initial values pile
        # up on purpose, so it is not judged then.
        if (conn._transport.get_write_buffer_size() > max_backlog
                and not conn.samplers_lock.locked()):
            conn.logger.warning("Disconnecting client because it is too slow")
            conn.abort()
            self._connections.discard(conn)

    def _write_async_message(self, conn: ClientConnection, msg: core.Message) -> None:
        self._write_async_raw(conn, core.to_wire(msg))

    def _connection_made(self, conn: ClientConnection) -> None:
        if self._reading_paused:
            conn.pause_reading()
        others = list(self._connections)
        self._connections.add(conn)
        self.send_version_info(RequestContext(conn, core.Message.request("version-connect")),
                               send_reply=False)
        hello = _encode_line(_INFORM_CODE, "client-connected", (bytes(conn.address),))
        for other in others:
            self._write_async_raw(other, hello)

    def _connection_lost(self, conn: ClientConnection, exc: Optional[Exception]) -> None:
        self._connections.discard(conn)

    def _eof_received(self, conn: ClientConnection) -> bool:
        return False  # close: a half-closed client is not kept

    def _pause_reading(self) -> None:
        self._reading_paused = True
        for conn in self._connections:
            conn.pause_reading()

    def _resume_reading(self) -> None:
        self._reading_paused = False
        for conn in self._connections:
            if not conn.is_closing():
                conn.resume_reading()

    # -- requests -----------------------------------------------------------------------------
    def handle_message(self, conn: ClientConnection, msg: core.Message) -> None:
        """Called by the connection for each message received."""
        if self._stop_task is not None:
            return
        if msg.mtype is _REQUEST:
            ctx = RequestContext(conn, msg)
            if len(self._pending) >= self._max_pending:
                self._buffered_requests.append(ctx)
                return
            self._start_request(ctx)

    def _dispatch(self, conn: ClientConnection, msg: core.Message, raw_mid: Any) -> None:
        """A request, from the inline path of ``ClientConnection.data_received``."""
        if self._stop_task is not None:
            return
        ctx = RequestContext(conn, msg)
        if len(self._pending) >= self._max_pending:
            self._buffered_requests.append(ctx)
            return
        handler = self._request_handlers.get(msg.name)
        if handler is None or handler._needs_task:  # type: ignore[attr-defined]
            self._start_request(ctx)
            return
        try:
            coro = handler(self, ctx, msg)
            first = coro.send(None)
        except StopIteration as stop:
            ret = stop.value
            if ctx._replied:
                if ret is not None:
                    try:  # raised, so that the #log error carries a traceback
                        raise RuntimeError("handler both replied and returned a value")
                    except RuntimeError as exc:
                        self._request_failed(ctx, exc)
                    return
            else:
                if ret is None:
                    args = [b"ok"]
                elif ret.__class__ is tuple:
                    args = [b"ok"] + _encode_args(ret)
                else:
                    cls = ret.__class__
                    if cls is bytes:
                        args = [b"ok", ret]
                    else:
                        enc = _encoders.get(cls) or _encoder_for(cls)
                        args = [b"ok", enc(ret)]
                ctx._replied = True
                line = _encode_line(_REPLY_CODE, msg.name, args, raw_mid)
                if conn._closed:
                    conn._closed_warning()
                else:
                    conn._out.append(line)
                    conn._out_bytes += len(line)
            if conn._paused:
                # as aiokatcp, a reply the client is not reading counts as pending
                self._track(ctx, self.loop.create_task(conn.drain()))
            return
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            self._request_failed(ctx, exc)
            return
        self._track(ctx, self.loop.create_task(self._finish_later(ctx, coro, first)))

    async def _finish_later(self, ctx: RequestContext, coro: Any, first: Any) -> None:
        ret = await _resume(coro, first)
        self._reply_with(ctx, ret)
        if ctx.conn._paused:
            await ctx.conn.drain()

    def _reply_with(self, ctx: RequestContext, ret: Any) -> None:
        if ctx._replied:
            if ret is not None:
                raise RuntimeError("handler both replied and returned a value")
        elif ret is None:
            ctx.reply(b"ok")
        elif ret.__class__ is tuple:
            ctx.reply(b"ok", *ret)
        else:
            ctx.reply(b"ok", ret)

    def _start_request(self, ctx: RequestContext) -> None:
        handler = self._request_handlers.get(ctx.req.name)
        coro = self._handle_request(ctx, handler)
        if not self.EAGER_REQUESTS or (handler is not None and _EAGER_TASKS is False
                                       and getattr(handler, "_needs_task", False)):
            self._track(ctx, self.loop.create_task(coro))
            return
        if _EAGER_TASKS:
            task = asyncio.Task(coro, loop=self.loop, eager_start=True)  # type: ignore
            if task.done():
                self._request_done(ctx, task)
            else:
                self._track(ctx, task)
            return
        try:
            first = coro.send(None)
        except StopIteration:
            return
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            self._request_failed(ctx, exc)
            return
        self._track(ctx, self.loop.create_task(_resume(coro, first)))

    def _track(self, ctx: RequestContext, task: asyncio.Task) -> None:
        self._pending.add(task)
        task.add_done_callback(functools.partial(self._task_done, ctx))
        if len(self._pending) >= self._max_pending and not self._reading_paused:
            self._pause_reading()

    def _task_done(self, ctx: RequestContext, task: asyncio.Task) -> None:
        if task in self._pending:
            self._pending.discard(task)
            while self._buffered_requests and len(self._pending) < self._max_pending:
                self._start_request(self._buffered_requests.popleft())
            if (self._reading_paused and len(self._pending) < self._max_pending
                    and not self._buffered_requests):
                self._resume_reading()
        self._request_done(ctx, task)

    def _request_done(self, ctx: RequestContext, task: asyncio.Task) -> None:
        if task.cancelled():
            if not ctx.replied:
                ctx.logger.info("request %r cancelled", ctx.req.name)
                ctx.reply(core.Message.FAIL, "request cancelled")
            return
        exc = task.exception()
        if exc is not None:
            self._request_failed(ctx, exc)

    def _request_failed(self, ctx: RequestContext, exc: BaseException) -> None:
        code = core.Message.FAIL
        if isinstance(exc, FailReply):
            text = str(exc)
        elif isinstance(exc, InvalidReply):
            text = str(exc)
            code = core.Message.INVALID
        elif isinstance(exc, asyncio.CancelledError):
            if ctx.replied:
                return
            text = "request cancelled"
        else:
            ctx.logger.error("uncaught exception while handling %r", ctx.req.name,
                             exc_info=exc)
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if not ctx.replied:
            ctx.reply(code, text)
        else:
            # replied already, so the error can only go out of band
            ctx.conn.write_raw(_encode_line(_INFORM_CODE, "log", (
                b"error", repr(time.time()).encode(), __name__, text)))

    async def unhandled_request(self, ctx: RequestContext, req: core.Message) -> None:
        """Called for a request without a handler (override for dynamic requests)."""
        raise InvalidReply(f"unknown request {req.name}")

    async def _handle_request(self, ctx: RequestContext, handler: Optional[Callable]) -> None:
        if handler is None:
            ret = await self.unhandled_request(ctx, ctx.req)  # type: ignore[func-returns-value]
        else:
            ret = await handler(self, ctx, ctx.req)
        self._reply_with(ctx, ret)
        if ctx.conn._paused:
            await ctx.conn.drain()

    def mass_inform(self, name: str, *args: Any) -> None:
        """Send an inform to every client."""
        data = _encode_line(_INFORM_CODE, name, _encode_args(args))
        for conn in list(self._connections):
            self._write_async_raw(conn, data)

    def set_log_level(self, level: core.LogLevel) -> None:
        """Set the level below which :class:`LogHandler` drops records (``?log-level``)."""
        self._log_level = core.LogLevel(level)

    # -- standard requests -------------------------------------------------------------------
    async def request_help(self, ctx: RequestContext, name: Optional[str] = None) -> None:
        """Return help on the available requests.

        With no argument, one ``#help`` inform per request (its name and the first line
        of its description); with a request name, that request's whole description.

        Examples
        --------
        ::

            ?help
            #help halt Halt\\_the\\_device\\_server.
            ...
            !help ok 9
            ?help halt
            !help ok 1
        """
        if name is None:
            # the first line of the docstring, as aiokatcp (empty if it starts with one)
            items = [(key, (handler.__doc__ or "").splitlines()[0]
                      if handler.__doc__ else "")
                     for key, handler in sorted(self._request_handlers.items())]
        else:
            handler = self._request_handlers.get(name)
            if handler is None:
                raise FailReply(f"request {name} is not known")
            items = [(name, handler.__doc__ or "")]
        ctx.informs(items)

    async def request_halt(self, ctx: RequestContext) -> None:
        """Halt the device server.

        Examples
        --------
        ::

            ?halt
            !halt ok
        """
        self.halt()

    async def request_watchdog(self, ctx: RequestContext) -> None:
        """Check that the server is alive.

        Examples
        --------
        ::

            ?watchdog
            !watchdog ok
        """

    async def request_version_list(self, ctx: RequestContext) -> None:
        """List the versions of the protocol, the library and the device.

        Informs: ``name version build-state-or-serial``; the reply counts them.
        """
        self.send_version_info(ctx)

    def _get_sensors(self, name: Optional[str]) -> List[sensor.Sensor]:
        if name is None:
            found: Iterable[sensor.Sensor] = self.sensors.values()
        elif len(name) > 1 and name[0] == "/" and name[-1] == "/":
            try:
                pattern = re.compile(name[1:-1])
            except re.error as exc:
                raise FailReply(str(exc)) from exc
            found = [s for s in self.sensors.values() if pattern.search(s.name)]
        elif name in self.sensors:
            found = [self.sensors[name]]
        else:
            raise FailReply(f"Unknown sensor {name!r}")
        return sorted(found, key=lambda s: s.name)

    async def request_sensor_list(self, ctx: RequestContext, name: Optional[str] = None) -> int:
        """List sensors: name, description, units, type and type parameters.

        ``name`` is an exact sensor name or a ``/regex/`` searched in the names; all
        sensors when omitted.

        Examples
        --------
        ::

            ?sensor-list /voltage/
            !sensor-list ok 2
        """
        found = self._get_sensors(name)
        for s in found:
            ctx.inform(s.name, s.description, s.units, s.type_name, *s.params)
        return len(found)

    async def request_sensor_value(self, ctx: RequestContext, name: Optional[str] = None) -> None:
        """Report sensor values as ``#sensor-value timestamp 1 name status value``.

        ``name`` is an exact sensor name or a ``/regex/``; all sensors when omitted.
        """
        found = self._get_sensors(name)
        ctx.informs((s.timestamp, 1, s.name, s.status, s.value) for s in found)

    async def request_sensor_sampling(self, ctx: RequestContext, name: str,
                                      strategy: Optional[sensor.SensorSampler.Strategy] = None,
                                      *args: bytes) -> tuple:
        """Query or set how a sensor is sampled (reports come as ``#sensor-status``).

        Parameters
        ----------
        name
            Sensor name; when setting, a comma-separated list of names.
        strategy
            none, auto, period, event, differential, event-rate or differential-rate;
            omitted to query.
        *args
            The strategy's parameters: period seconds; differential amount;
            event-rate shortest and longest seconds; differential-rate all three.

        Examples
        --------
        ::

            ?sensor-sampling cpu.power.on
            !sensor-sampling ok cpu.power.on none
            ?sensor-sampling cpu.power.on period 0.5
            !sensor-sampling ok cpu.power.on period 0.5
        """
        conn = ctx.conn
        async with conn.samplers_lock:
            names = [name] if strategy is None else name.split(",")
            if len(set(names)) != len(names):
                raise FailReply("Duplicate sensor name")
            chosen = []
            for sensor_name in names:
                s = self.sensors.get(sensor_name)
                if s is None:
                    raise FailReply(f"Unknown sensor {sensor_name!r}")
                chosen.append(s)
            if strategy is None:
                sampler = conn.get_sampler(chosen[0])
            else:
                removed: Set[sensor.Sensor] = set()
                note_removed = removed.add
                self.sensors.add_remove_callback(note_removed)
                made: List[Optional[sensor.SensorSampler]] = []
                try:
                    # every sampler is made (and its parameters checked) before any
                    # reading is sent, so a bad request changes nothing
                    for i, s in enumerate(chosen):
                        try:
                            made.append(sensor.SensorSampler.factory(s, None, self.loop,
                                                                     strategy, *args))
                        except (TypeError, ValueError) as exc:
                            raise FailReply(str(exc)) from exc
                        if i % _BULK_SENSOR_BATCH == _BULK_SENSOR_BATCH - 1:
                            await asyncio.sleep(0)
                    for i, s in enumerate(chosen):
                        sampler = made[i]
                        made[i] = None
                        if sampler is not None:
                            sampler.observer = conn.sensor_update
                        if s in removed:
                            if sampler is not None:
                                sampler.close()
                        else:
                            conn.set_sampler(s, sampler)
                        if i % _BULK_SENSOR_BATCH == _BULK_SENSOR_BATCH - 1:
                            await asyncio.sleep(0)
                            await conn.drain()
                finally:
                    for left in made:
                        if left is not None:
                            left.close()
                    self.sensors.remove_remove_callback(note_removed)
            params = (sampler.parameters() if sampler is not None
                      else (sensor.SensorSampler.Strategy.NONE,))
            return (name,) + tuple(params)

    async def request_client_list(self, ctx: RequestContext) -> None:
        """List the connected clients (``#client-list host:port``)."""
        ctx.informs((conn.address,) for conn in self._connections)

    async def request_log_level(self, ctx: RequestContext,
                                level: Optional[core.LogLevel] = None) -> core.LogLevel:
        """Query or set the log level of ``#log`` informs.

        Levels: all, trace, debug, info, warn, error, fatal, off.

        Examples
        --------
        ::

            ?log-level
            !log-level ok warn
            ?log-level info
            !log-level ok info
        """
        if level is not None:
            self._log_level = level
        return self._log_level
