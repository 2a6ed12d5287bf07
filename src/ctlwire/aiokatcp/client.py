"""aiokatcp-compatible client: ``Client``, sensor watchers and ``SyncState``.

:class:`Client` keeps a connection to one server, reconnecting with exponential
back-off (also before its first connection succeeds) unless ``auto_reconnect`` is
false, matches replies to requests by message id, and hands informs to ``inform_*``
methods and callbacks. :class:`SensorWatcher` mirrors a server's sensors into a
:class:`~.sensor.SensorSet`; the bookkeeping behind it (which sensors exist, which are
sampled, whether the mirror is in sync) is the I/O-free
:class:`ctlwire.katcp.mirror.DeviceMirror`, driven here by one asyncio task.

Requests written during one loop iteration leave in one write (the first goes at
once, so a lone request waits for nothing).

Layering: imports the standard library, :mod:`ctlwire.katcp.mirror` and the sibling modules
``core``, ``connection``, ``sensor``.
"""
from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import random
import re
import time
from collections import deque
from typing import (Any, Callable, Deque, Dict, FrozenSet, Generator, Iterable, List,
                    Optional, Sequence, Tuple, Type, Union)

from ..katcp.core import encode_message as _encode_line
from ..katcp.mirror import Action, DeviceMirror, SensorInfo, SyncState
from . import connection, core, sensor
from .connection import FailReply, InvalidReply

__all__ = ["Client", "ProtocolError", "SyncState", "AbstractSensorWatcher",
           "SensorWatcher"]

logger = logging.getLogger(__name__)

_MIN_BACKOFF = 0.5
_MAX_BACKOFF = 60.0
_REQUEST_CODE = 0
_REPLY = core.Message.Type.REPLY
_INFORM = core.Message.Type.INFORM
_REQUEST = core.Message.Type.REQUEST
_MID_MAX = 2 ** 31 - 1
_encode_all = core.encode_all


class ProtocolError(ValueError):
    """The server does not speak a protocol version the client supports."""

    def __init__(self, msg: str, version: str) -> None:
        super().__init__(msg)
        self.version = version


class _State(enum.Enum):
    SLEEPING = 0       # waiting out the back-off before the next attempt
    CONNECTING = 1     # TCP connect in progress
    NEGOTIATING = 2    # connected, waiting for #version-connect katcp-protocol
    CONNECTED = 3
    DISCONNECTING = 4  # closing the transport
    CLOSED = 5


def _reset_error() -> ConnectionError:
    return ConnectionResetError("Connection reset by peer")


class ClientMeta(type):
    """Collects ``inform_*`` handlers (arguments decoded by their annotations)."""

    def __new__(mcs, name: str, bases: tuple, namespace: dict, **kwds: Any) -> type:
        handlers: Dict[str, Callable] = {}
        for base in bases:
            handlers.update(getattr(base, "_inform_handlers", {}))
        handlers.update(namespace.get("_inform_handlers", {}))
        namespace["_inform_handlers"] = handlers
        cls = type.__new__(mcs, name, bases, namespace)
        for key, value in namespace.items():
            if key.startswith("inform_") and inspect.isfunction(value):
                inform_name = key[7:].replace("_", "-")
                handlers[inform_name] = connection.wrap_handler(inform_name, value, 1)
        return cls


class _ClientConnection(connection.Connection):
    """The client's connection: requests written in one iteration share one write."""

    def __init__(self, owner: "Client", limit: int) -> None:
        super().__init__(owner, False, limit)
        self._wrote_this_iteration = False

    def _end_iteration(self) -> None:
        self._wrote_this_iteration = False
        self._flush()

    def send_request(self, data: bytes) -> None:
        if self._closed:
            self._closed_warning()
            return
        if self._wrote_this_iteration or self._out or self._dispatching:
            self._out.append(data)
            self._out_bytes += len(data)
            if not self._flush_pending and not self._dispatching:
                self._flush_pending = True
                self._loop.call_soon(self._end_iteration)  # type: ignore[union-attr]
        else:
            self._transport.write(data)
            self._wrote_this_iteration = True
            self._flush_pending = True
            self._loop.call_soon(self._end_iteration)  # type: ignore[union-attr]


class Client(metaclass=ClientMeta):
    """A KATCP client of one server (aiokatcp's ``Client``).

    It connects on construction and, with ``auto_reconnect``, reconnects after any
    loss or failed attempt, waiting 0.5 s doubling to 60 s (randomised by up to half)
    between attempts. :meth:`connect` builds one and waits for the connection.

    Parameters
    ----------
    host : str
        Server host.
    port : int
        Server port.
    auto_reconnect : bool
        Reconnect after a failed attempt or a lost connection.
    limit : int
        Longest accepted line from the server.
    loop : asyncio.AbstractEventLoop, optional
        Loop to run on (the running one by default).

    Attributes
    ----------
    last_exc : Exception or None
        Why the last connection attempt failed or the connection was lost; ``None``
        while connected.
    protocol_flags : frozenset of str
        Flags of the server's ``katcp-protocol`` version.
    """

    _inform_handlers: Dict[str, Callable] = {}

    def __init__(self, host: str, port: int, *, auto_reconnect: bool = True,
                 limit: int = connection.DEFAULT_LIMIT,
                 loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = asyncio.get_event_loop()
        self.host = host
        self.port = port
        self.loop = loop
        self.logger: Union[logging.Logger, logging.LoggerAdapter] = logger
        self._limit = limit
        self._connection: Optional[_ClientConnection] = None
        # mid (None without message ids) -> [name, reply future, informs]
        self._pending: Dict[Optional[int], list] = {}
        self._next_mid = 1
        self._connected_waiters: Deque[asyncio.Future] = deque()
        self._disconnected_event = asyncio.Event()
        self._closed_event = asyncio.Event()
        self._backoff = _MIN_BACKOFF
        self._connected_callbacks: List[Callable[[], None]] = []
        self._disconnected_callbacks: List[Callable[[], None]] = []
        self._failed_connect_callbacks: List[Callable[[Exception], None]] = []
        self._inform_callbacks: Dict[str, List[Callable]] = {}
        self._sensor_monitor: Optional[_SensorMonitor] = None
        self._mid_support = False
        self.protocol_flags: FrozenSet[str] = frozenset()
        self._request_lock = asyncio.Lock()
        self.auto_reconnect = auto_reconnect
        self._reconnect = auto_reconnect
        self.last_exc: Optional[Exception] = None
        self._sleep_handle: Optional[asyncio.TimerHandle] = None
        self._connect_task: Optional[asyncio.Task] = None
        # request() may do request_raw's work itself unless a subclass changed it
        self._fast_request_raw = type(self).request_raw is Client.request_raw
        self._state = _State.SLEEPING
        self._set_state(_State.CONNECTING)

    def __del__(self) -> None:
        if getattr(self, "_state", _State.CLOSED) is not _State.CLOSED:
            import warnings
            warnings.warn(f"unclosed Client {self!r}", ResourceWarning)

    @property
    def is_connected(self) -> bool:
        """True while connected and past the version handshake."""
        return self._state is _State.CONNECTED

    # -- the connection state machine ---------------------------------------------------------
    def _set_connection(self, conn: Optional[_ClientConnection]) -> None:
        if conn is self._connection:
            return
        self._connection = conn
        self.logger = logger if conn is None else connection.ConnectionLoggerAdapter(
            logger, dict(address=conn.address))

    def _connection_made(self, conn: connection.Connection) -> None:
        if self._state is not _State.CONNECTING:
            conn.close()  # not wanted any more (closed meanwhile)
            return
        self._set_connection(conn)  # type: ignore[arg-type]
        self._set_state(_State.NEGOTIATING)

    def _connection_lost(self, conn: connection.Connection, exc: Optional[Exception]) -> None:
        if conn is not self._connection:
            return
        if exc is not None:
            self.logger.warning("connection lost", exc_info=exc)
        else:
            exc = _reset_error()
        if self._state is not _State.DISCONNECTING:
            self.last_exc = exc
        self._set_state(_State.SLEEPING if self._reconnect else _State.CLOSED)

    def _eof_received(self, conn: connection.Connection) -> bool:
        if self._state in (_State.NEGOTIATING, _State.CONNECTED):
            self.last_exc = _reset_error()
            self._set_state(_State.DISCONNECTING)
        return False

    def _connect_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, OSError):
            self.last_exc = exc
            self._set_state(_State.SLEEPING if self._reconnect else _State.CLOSED)
        elif exc is not None:
            self.logger.error("unexpected error while connecting", exc_info=exc)
            self.last_exc = exc  # type: ignore[assignment]
            self._set_state(_State.SLEEPING if self._reconnect else _State.CLOSED)

    def _set_state(self, state: _State) -> None:
        old = self._state
        self.logger.debug("Transitioning %s -> %s", old, state)
        self._state = state
        if state is _State.CONNECTED:
            self.last_exc = None
            self._backoff = _MIN_BACKOFF
        if state is _State.CLOSED:
            self._closed_event.set()
        else:
            self._closed_event.clear()
        if state in (_State.SLEEPING, _State.CONNECTING, _State.CLOSED):
            self._set_connection(None)
            self._disconnected_event.set()
        else:
            self._disconnected_event.clear()
        if state is not _State.CONNECTING and self._connect_task is not None:
            if state is not _State.NEGOTIATING:
                self._connect_task.cancel()
            self._connect_task = None
        if state is not _State.SLEEPING and self._sleep_handle is not None:
            self._sleep_handle.cancel()
            self._sleep_handle = None
        # actions of the new state
        if state is _State.SLEEPING:
            self._backoff = min(self._backoff * 2.0, _MAX_BACKOFF)
            wait = self._backoff * (0.5 + 0.5 * random.random())
            self._sleep_handle = self.loop.call_later(wait, self._set_state, _State.CONNECTING)
        elif state is _State.CONNECTING:
            self._connect_task = self.loop.create_task(self.loop.create_connection(
                lambda: _ClientConnection(self, self._limit), self.host, self.port))
            self._connect_task.add_done_callback(self._connect_done)
        elif state is _State.DISCONNECTING:
            assert self._connection is not None
            self._connection.close()
        # callbacks and waiters, now that the state is consistent
        if state is _State.CONNECTED:
            for waiter in self._connected_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._run_callbacks(self._connected_callbacks)
        elif state is _State.CLOSED:
            error = self.last_exc or ConnectionAbortedError("Client closed")
            for waiter in self._connected_waiters:
                if not waiter.done():
                    waiter.set_exception(error)
        if old is _State.CONNECTED:
            error = self.last_exc or _reset_error()
            for pending in self._pending.values():
                if not pending[1].done():
                    pending[1].set_exception(error)
            self._pending.clear()
            self._run_callbacks(self._disconnected_callbacks)
        if (old in (_State.CONNECTING, _State.NEGOTIATING)
                and state not in (_State.NEGOTIATING, _State.CONNECTED)
                and self.last_exc is not None):
            if self._reconnect:
                self.logger.warning("Failed to connect to %s:%s: %s", self.host, self.port,
                                    self.last_exc)
            self._run_callbacks(self._failed_connect_callbacks, self.last_exc)

    # -- incoming -----------------------------------------------------------------------------
    def handle_message(self, conn: connection.Connection, msg: core.Message) -> None:
        """Called by the connection for every message from the server."""
        mtype = msg.mtype
        if mtype is _REQUEST:
            self.logger.info("Received unexpected request %s from server", msg.name)
            return
        mid = msg.mid
        if mid is not None or (not self._mid_support and None in self._pending
                               and self._pending[None][0] == msg.name):
            pending = self._pending.get(mid)
            if pending is None:
                self.logger.debug("Received %r with unknown message ID %s", msg.name, mid)
            elif mtype is _REPLY:
                if not pending[1].done():
                    pending[1].set_result(msg)
            else:
                pending[2].append(msg)
        elif mtype is _INFORM:
            self.handle_inform(msg)
        else:
            self.logger.info("Received unexpected %s (%s) from server without message ID",
                             mtype.name, msg.name)

    def handle_inform(self, msg: core.Message) -> None:
        """Pass an asynchronous inform to its ``inform_*`` handler and callbacks."""
        handler = self._inform_handlers.get(msg.name)
        try:
            if handler is None:
                self.unhandled_inform(msg)
            else:
                handler(self, msg)
        except FailReply as exc:
            self.logger.warning("error in inform %s: %s", msg.name, exc)
        except Exception:
            self.logger.exception("unhandled exception in inform %s", msg.name)
        callbacks = self._inform_callbacks.get(msg.name)
        if callbacks:
            self._run_callbacks(callbacks, msg)

    def unhandled_inform(self, msg: core.Message) -> None:
        """Called for an inform without a handler (logs at debug level)."""
        if msg.name not in self._inform_callbacks:
            self.logger.debug("unknown inform %s", msg.name)

    def inform_version_connect(self, api: str, version: str,
                               build_state: Optional[str] = None) -> None:
        if api != "katcp-protocol" or self._state is not _State.NEGOTIATING:
            return
        m = re.match(r"^(\d+)\.(\d+)(?:-(.+))?$", version)
        error = None
        if not m:
            error = f"Unparsable katcp-protocol {version!r}"
        elif int(m.group(1)) != 5:
            error = f"Unknown protocol version {m.group(1)}.{m.group(2)}"
        if error is not None:
            self.last_exc = ProtocolError(error, version)
            self._set_state(_State.DISCONNECTING)
            return
        flags = frozenset(m.group(3) or "")  # type: ignore[union-attr]
        self._mid_support = "I" in flags
        self.protocol_flags = flags
        self._set_state(_State.CONNECTED)

    def inform_disconnect(self, reason: str) -> None:
        self.logger.info("Server disconnected: %s", reason)
        if self._state in (_State.CONNECTED, _State.NEGOTIATING):
            self.last_exc = _reset_error()
            self._set_state(_State.DISCONNECTING)

    # -- callbacks ------------------------------------------------------------------------------
    def add_connected_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` each time a connection is established."""
        self._connected_callbacks.append(callback)

    def remove_connected_callback(self, callback: Callable[[], None]) -> None:
        self._connected_callbacks.remove(callback)

    def add_disconnected_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` each time an established connection is lost."""
        self._disconnected_callbacks.append(callback)

    def remove_disconnected_callback(self, callback: Callable[[], None]) -> None:
        self._disconnected_callbacks.remove(callback)

    def add_failed_connect_callback(self, callback: Callable[[Exception], None]) -> None:
        """Call ``callback(exc)`` each time a connection attempt fails."""
        self._failed_connect_callbacks.append(callback)

    def remove_failed_connect_callback(self, callback: Callable[[Exception], None]) -> None:
        self._failed_connect_callbacks.remove(callback)

    def add_inform_callback(self, name: str, callback: Callable[..., None]) -> None:
        """Call ``callback(*args)`` for every asynchronous inform ``name``; the
        arguments are decoded by the callback's annotations (``bytes`` if none)."""
        self._inform_callbacks.setdefault(name, []).append(
            connection.wrap_handler(name, callback, 0))

    def remove_inform_callback(self, name: str, callback: Callable[..., None]) -> None:
        """Remove a callback added by :meth:`add_inform_callback`."""
        callbacks = self._inform_callbacks.get(name, [])
        for i, wrapped in enumerate(callbacks):
            if wrapped._aiokatcp_orig_handler == callback:  # type: ignore[attr-defined]
                del callbacks[i]
                if not callbacks:
                    del self._inform_callbacks[name]
                break

    def _run_callbacks(self, callbacks: Iterable[Callable[..., None]], *args: Any) -> None:
        for callback in list(callbacks):
            try:
                callback(*args)
            except Exception:
                self.logger.exception("Exception raised from callback")

    # -- life cycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Start closing (see :meth:`wait_closed`); no reconnection after this."""
        self._reconnect = False
        if self._sensor_monitor is not None:
            self._sensor_monitor.close()
            self._sensor_monitor = None
        exc = ConnectionAbortedError("Software caused connection abort")
        if self._state in (_State.SLEEPING, _State.CONNECTING):
            self.last_exc = exc
            self._set_state(_State.CLOSED)
        elif self._state in (_State.NEGOTIATING, _State.CONNECTED):
            self.last_exc = exc
            self._set_state(_State.DISCONNECTING)

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` has finished."""
        await self._closed_event.wait()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()
        await self.wait_closed()

    async def wait_connected(self) -> None:
        """Wait until connected.

        Raises
        ------
        Exception
            :attr:`last_exc` if the client is closed (by :meth:`close`, or because
            the one attempt failed without ``auto_reconnect``).
        """
        if self._state is _State.CLOSED:
            raise self.last_exc or ConnectionAbortedError("Client closed")
        if self._state is not _State.CONNECTED:
            waiter = self.loop.create_future()
            self._connected_waiters.append(waiter)
            try:
                await waiter
            finally:
                self._connected_waiters.remove(waiter)

    async def wait_disconnected(self) -> None:
        """Wait until there is no connection."""
        await self._disconnected_event.wait()

    @classmethod
    async def connect(cls, host: str, port: int, *, auto_reconnect: bool = True,
                      limit: int = connection.DEFAULT_LIMIT,
                      loop: Optional[asyncio.AbstractEventLoop] = None) -> "Client":
        """Make a client and wait until it is connected (closing it on failure)."""
        client = cls(host, port, auto_reconnect=auto_reconnect, limit=limit, loop=loop)
        try:
            await client.wait_connected()
        except BaseException:
            client.close()
            raise
        return client

    # -- requests -------------------------------------------------------------------------------
    async def request_raw(self, name: str, *args: Any) -> Tuple[core.Message, List[core.Message]]:
        """Send a request and wait for its reply, undecoded.

        Returns
        -------
        reply : Message
        informs : list of Message
            The informs that belong to the request.

        Raises
        ------
        BrokenPipeError
            If not connected.
        ConnectionError
            If the connection is lost before the reply.
        """
        if self._state is not _State.CONNECTED:
            raise BrokenPipeError("Not connected")
        if self._mid_support:
            mid = self._next_mid
            self._next_mid = 1 if mid >= _MID_MAX else mid + 1
            return await self._roundtrip(mid, name, args)
        async with self._request_lock:
            return await self._roundtrip(None, name, args)

    async def _roundtrip(self, mid: Optional[int], name: str, args: tuple
                         ) -> Tuple[core.Message, List[core.Message]]:
        data = _encode_line(_REQUEST_CODE, name, _encode_all(args), mid)
        reply = self.loop.create_future()
        informs: List[core.Message] = []
        self._pending[mid] = [name, reply, informs]
        try:
            self._connection.send_request(data)  # type: ignore[union-attr]
            return await reply, informs
        finally:
            self._pending.pop(mid, None)

    async def request(self, name: str, *args: Any) -> Tuple[List[bytes], List[core.Message]]:
        """Send a request and return the reply's arguments after ``ok``, and the informs.

        Raises
        ------
        FailReply
            If the reply is ``fail``.
        InvalidReply
            If it is anything else but ``ok``.
        BrokenPipeError, ConnectionError
            As :meth:`request_raw`.
        """
        if self._mid_support and self._fast_request_raw and self._state is _State.CONNECTED:
            # request_raw and _roundtrip inline: one coroutine per request, not three
            mid = self._next_mid
            self._next_mid = 1 if mid >= _MID_MAX else mid + 1
            data = _encode_line(_REQUEST_CODE, name, _encode_all(args), mid)
            future = self.loop.create_future()
            informs: List[core.Message] = []
            pending = self._pending
            pending[mid] = [name, future, informs]
            try:
                self._connection.send_request(data)  # type: ignore[union-attr]
                reply = await future
            finally:
                pending.pop(mid, None)
        else:
            reply, informs = await self.request_raw(name, *args)
        arguments = reply.arguments
        kind = arguments[0] if arguments else b"invalid"
        if kind == b"ok":
            return arguments[1:], informs
        text = arguments[1].decode("utf-8", errors="replace") if len(arguments) > 1 else ""
        if kind == b"fail":
            raise FailReply(text)
        raise InvalidReply(text)

    async def sensor_reading(self, sensor_name: str, sensor_type: Optional[type] = None
                             ) -> sensor.Reading:
        """One sensor's reading from ``?sensor-value`` (its type from ``?sensor-list``
        when ``sensor_type`` is not given; discrete and string values stay bytes).

        Raises
        ------
        FailReply, InvalidReply
            If a request fails.
        """
        if sensor_type is None:
            listed, values = await asyncio.gather(self.request("sensor-list", sensor_name),
                                                  self.request("sensor-value", sensor_name))
            type_name = core.decode(str, listed[1][0].arguments[3])
            sensor_type = (bytes if type_name == "discrete"
                           else SensorWatcher.SENSOR_TYPES[type_name])
        else:
            values = await self.request("sensor-value", sensor_name)
        informs = values[1]
        if len(informs) != 1:
            raise FailReply(f"Server returned {len(informs)} sensors, but only 1 expected")
        args = informs[0].arguments
        return sensor.Reading(float(core.decode(core.Timestamp, args[0])),
                              core.decode(sensor.Sensor.Status, args[3]),
                              core.decode(sensor_type, args[4]))

    async def sensor_value(self, sensor_name: str, sensor_type: Optional[type] = None) -> Any:
        """The value of :meth:`sensor_reading`.

        Raises
        ------
        ValueError
            If the status says the value is not valid.
        """
        reading = await self.sensor_reading(sensor_name, sensor_type)
        if not reading.status.valid_value():
            raise ValueError(f"Reading for {sensor_name} has status {reading.status}")
        return reading.value

    def add_sensor_watcher(self, watcher: "AbstractSensorWatcher") -> None:
        """Start feeding ``watcher`` with the server's sensors."""
        if self._sensor_monitor is None:
            self._sensor_monitor = _SensorMonitor(self)
        self._sensor_monitor.add_watcher(watcher)

    def remove_sensor_watcher(self, watcher: "AbstractSensorWatcher") -> None:
        """Stop feeding ``watcher``."""
        if self._sensor_monitor is not None:
            self._sensor_monitor.remove_watcher(watcher)


class AbstractSensorWatcher:
    """Receives a client's view of the server's sensors; override what you need.

    Watchers are kept by identity: do not override ``__eq__`` or ``__hash__``.
    """

    def filter(self, name: str, description: str, units: str, type_name: str,
               *args: bytes) -> bool:
        """Whether this watcher wants sensor ``name`` (all sensors by default)."""
        return True

    def sensor_added(self, name: str, description: str, units: str, type_name: str,
                     *args: bytes) -> None:
        """A sensor appeared (or changed its description)."""

    def sensor_removed(self, name: str) -> None:
        """A sensor disappeared (or changed so that :meth:`filter` rejects it)."""

    def sensor_updated(self, name: str, value: bytes, status: sensor.Sensor.Status,
                       timestamp: float) -> None:
        """A sensor's reading changed on the server."""

    def batch_start(self) -> None:
        """Start of a batch of added/removed/updated calls."""

    def batch_stop(self) -> None:
        """End of a batch."""

    def state_updated(self, state: SyncState) -> None:
        """The synchronisation state changed (it starts as ``DISCONNECTED``)."""


class DiscreteMixin:
    """Mixin of the enums made for discrete sensors: the wire value is the value."""

    @property
    def katcp_value(self) -> Any:
        return self.value  # type: ignore[attr-defined]


class SensorWatcher(AbstractSensorWatcher):
    """Mirrors a server's sensors into :attr:`sensors` (a :class:`SensorSet`).

    Parameters
    ----------
    client : Client
        Used for its logger.
    enum_types : sequence of enum types
        Used for discrete sensors with exactly these values in this order; other
        discrete sensors get an enum made on the fly.

    Attributes
    ----------
    sensors : SensorSet
        The mirrored sensors; while disconnected their status is ``UNREACHABLE``.
    synced : asyncio.Event
        Set while the state is ``SYNCED``.
    """

    SENSOR_TYPES: Dict[str, type] = {
        "integer": int,
        "float": float,
        "boolean": bool,
        "timestamp": core.Timestamp,
        "discrete": enum.Enum,
        "address": core.Address,
        "string": bytes,
    }

    def __init__(self, client: Client, enum_types: Sequence[Type[enum.Enum]] = ()) -> None:
        self.synced = asyncio.Event()
        self.logger = client.logger
        self.sensors = sensor.SensorSet()
        self._enum_cache: Dict[Tuple[bytes, ...], type] = {}
        for enum_type in enum_types:
            key = tuple(core.encode(v) for v in enum_type.__members__.values())
            self._enum_cache[key] = enum_type

    def rewrite_name(self, name: str) -> Union[str, Sequence[str]]:
        """The local name(s) of remote sensor ``name`` (the same name by default)."""
        return name

    def _local_names(self, name: str) -> Sequence[str]:
        names = self.rewrite_name(name)
        return [names] if isinstance(names, str) else names

    def set_sensor_value(self, s: sensor.Sensor, value: Any, status: sensor.Sensor.Status,
                         timestamp: float) -> None:
        """Store an update in a mirrored sensor (override to transform it)."""
        s.set_value(value, status, timestamp)

    def make_type(self, type_name: str, parameters: Sequence[bytes]) -> type:
        """The Python type of a remote sensor type."""
        if type_name != "discrete":
            return self.SENSOR_TYPES[type_name]
        values = tuple(parameters)
        cached = self._enum_cache.get(values)
        if cached is not None:
            return cached
        made: type = enum.Enum(  # type: ignore[misc]
            "discrete", [(f"ENUM{i}", v) for i, v in enumerate(values)], type=DiscreteMixin)
        self._enum_cache[values] = made
        return made

    def sensor_added(self, name: str, description: str, units: str, type_name: str,
                     *args: bytes) -> None:
        if type_name not in self.SENSOR_TYPES:
            self.logger.warning("Type %s is not recognised, skipping sensor %s",
                                type_name, name)
            return
        stype = self.make_type(type_name, args)
        for local in self._local_names(name):
            self.sensors.add(sensor.Sensor(stype, local, description, units))

    def sensor_removed(self, name: str) -> None:
        for local in self._local_names(name):
            self.sensors.pop(local, None)

    def sensor_updated(self, name: str, value: bytes, status: sensor.Sensor.Status,
                       timestamp: float) -> None:
        for local in self._local_names(name):
            s = self.sensors.get(local)
            if s is None:
                self.logger.warning("Received update for unknown sensor %s", name)
                continue
            try:
                decoded = core.decode(s.stype, value)
            except ValueError as exc:
                self.logger.warning("Sensor %s: value %r does not match type %s: %s",
                                    name, value, s.type_name, exc)
                continue
            self.set_sensor_value(s, decoded, status, timestamp)

    def state_updated(self, state: SyncState) -> None:
        if state is SyncState.DISCONNECTED:
            now = time.time()
            for s in self.sensors.values():
                s.set_value(s.value, status=sensor.Sensor.Status.UNREACHABLE, timestamp=now)
        if state is SyncState.SYNCED:
            self.synced.set()
        else:
            self.synced.clear()


_STATUS_BY_NAME = {st.name.lower(): st for st in sensor.Sensor.Status}


class _SensorMonitor:
    """Drives a :class:`DeviceMirror` for one client and fans it out to watchers."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.logger = client.logger
        self._watchers: Dict[AbstractSensorWatcher, None] = {}
        self._in_batch = False
        self.mirror = DeviceMirror(on_state=self._state_changed)
        self._wake = asyncio.Event()
        client.add_connected_callback(self._connected)
        client.add_disconnected_callback(self._disconnected)
        client.add_inform_callback("interface-changed", self._interface_changed)
        client.add_inform_callback("sensor-status", self._sensor_status)
        self._task = client.loop.create_task(self._run())
        if client.is_connected:
            self._connected()

    # -- watchers -----------------------------------------------------------------------------
    def add_watcher(self, watcher: AbstractSensorWatcher) -> None:
        if watcher in self._watchers:
            return
        self._watchers[watcher] = None
        if self.mirror.state is not SyncState.DISCONNECTED:
            watcher.state_updated(self.mirror.state)
        with self._batch(watcher):
            for s in list(self.mirror.sensors.values()):
                info = s.info
                if watcher.filter(info.name, info.description, info.units, info.type_name,
                                  *info.params):
                    watcher.sensor_added(info.name, info.description, info.units,
                                         info.type_name, *info.params)
                    self.mirror.watch(info.name, watcher)
                    if s.reading is not None:
                        watcher.sensor_updated(info.name, s.reading.value,
                                               _STATUS_BY_NAME[s.reading.status],
                                               s.reading.timestamp)
        self._wake.set()

    def remove_watcher(self, watcher: AbstractSensorWatcher) -> None:
        if self._watchers.pop(watcher, 0) is None:
            for name in list(self.mirror.sensors):
                self.mirror.unwatch(name, watcher)
            self._wake.set()

    def __bool__(self) -> bool:
        return bool(self._watchers)

    @contextlib.contextmanager
    def _batch(self, watcher: Optional[AbstractSensorWatcher] = None
               ) -> Generator[None, None, None]:
        watchers = list(self._watchers) if watcher is None else [watcher]
        self._in_batch = True
        try:
            for w in watchers:
                w.batch_start()
            yield
        finally:
            for w in watchers:
                w.batch_stop()
            self._in_batch = False

    def _state_changed(self, state: SyncState) -> None:
        for watcher in list(self._watchers):
            watcher.state_updated(state)

    # -- client events --------------------------------------------------------------------------
    def _connected(self) -> None:
        self.mirror.connected()
        self._wake.set()

    def _disconnected(self) -> None:
        self.mirror.disconnected()

    def _interface_changed(self, *args: bytes) -> None:
        self.mirror.interface_changed(*args)
        self._wake.set()

    def _sensor_status(self, timestamp: core.Timestamp, n: int, *args: bytes) -> None:
        if len(args) != 3 * n:
            raise FailReply("Incorrect number of arguments")
        with self._batch():
            for i in range(n):
                name = "<unknown>"
                try:
                    name = args[3 * i].decode("utf-8")
                    status = core.decode(sensor.Sensor.Status, args[3 * i + 1])
                    value = args[3 * i + 2]
                    s = self.mirror.sensor_status(float(timestamp), name,
                                                  status.name.lower(), value)
                    if s is None:
                        self.logger.warning("Received update for sensor %s we haven't seen",
                                            name)
                        continue
                    for watcher in list(s.watchers):
                        watcher.sensor_updated(name, value, status, timestamp)  # type: ignore
                except Exception:
                    self.logger.warning("Failed to process #sensor-status for %s", name,
                                        exc_info=True)
        self._wake.set()

    # -- the driver -----------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while (action := self.mirror.next_action()) is not None:
                    await self._do(action)
            except (OSError, ConnectionError) as exc:
                self.logger.warning("Connection error in update task: %s", exc)
            except Exception:
                self.logger.exception("Exception in update task")

    async def _do(self, action: Action) -> None:
        if action.kind == "sensor-list":
            generation = self.mirror.list_generation
            try:
                _, informs = await self.client.request("sensor-list")
            except BaseException:
                self.mirror.sensor_list_failed()
                raise
            self._apply_sensor_list(informs, generation)
        elif action.kind == "sample":
            await self._set_sampling(list(action.names), action.strategy)
        else:  # help: not asked for by a SensorWatcher (track_requests is off)
            _, informs = await self.client.request("help")
            self.mirror.help((i.arguments[0].decode(), i.arguments[1].decode("utf-8", "replace"))
                             for i in informs if len(i.arguments) >= 2)

    def _apply_sensor_list(self, informs: List[core.Message], generation: int) -> None:
        entries = []
        for inform in informs:
            try:
                name, description, units, type_name = (
                    inform.arguments[i].decode("utf-8") for i in range(4))
            except (IndexError, ValueError):
                self.logger.warning("Invalid sensor description, ignoring")
                continue
            entries.append(SensorInfo(name, description, units, type_name,
                                      tuple(inform.arguments[4:])))
        old_watchers = {n: dict(s.watchers) for n, s in self.mirror.sensors.items()}
        change = self.mirror.sensor_list(entries, generation)
        touched = {info.name for info in change.added}
        touched.update(new.name for _, new in change.changed)
        # watchers hear of every list applied, in the device's order: new and changed
        # sensors, then the ones that went away
        with self._batch():
            for info in entries:
                if info.name not in touched:
                    continue
                before = old_watchers.get(info.name, {})
                for watcher in list(self._watchers):
                    if watcher.filter(info.name, info.description, info.units,
                                      info.type_name, *info.params):
                        watcher.sensor_added(info.name, info.description, info.units,
                                             info.type_name, *info.params)
                        self.mirror.watch(info.name, watcher)
                    elif watcher in before:
                        watcher.sensor_removed(info.name)
                        self.mirror.unwatch(info.name, watcher)
            for info in change.removed:
                for gone in old_watchers.get(info.name, {}):
                    gone.sensor_removed(info.name)  # type: ignore[attr-defined]

    async def _set_sampling(self, names: List[str], strategy: str) -> None:
        if "B" in self.client.protocol_flags and len(names) > 1:
            try:
                await self.client.request("sensor-sampling", ",".join(names), strategy)
            except (FailReply, InvalidReply) as exc:
                self.logger.debug("Bulk sampling failed (%s), setting one at a time", exc)
            else:
                self.mirror.sampling_done(names, strategy, True)
                return
        results = await asyncio.gather(
            *(self.client.request("sensor-sampling", n, strategy) for n in names),
            return_exceptions=True)
        for name, result in zip(names, results):
            if isinstance(result, (FailReply, InvalidReply)):
                self.logger.warning("Failed to set strategy on %s to %s: %s", name,
                                    strategy, result)
            elif isinstance(result, BaseException):
                raise result
            self.mirror.sampling_done([name], strategy, not isinstance(result, Exception))

    def close(self) -> None:
        self._task.cancel()
        self.client.remove_connected_callback(self._connected)
        self.client.remove_disconnected_callback(self._disconnected)
        self.client.remove_inform_callback("interface-changed", self._interface_changed)
        self.client.remove_inform_callback("sensor-status", self._sensor_status)
        self.mirror.close()
