"""An asyncio KATCP client, for applications built on an event loop.

>>> client = await AioClient.connect("127.0.0.1", 7147)
>>> reply, informs = await client.request("sensor-list")
>>> await client.subscribe("temperature", "event")
>>> async for reading in client.sensor_updates():
...     print(reading.name, reading.status, reading.value)
>>> client.close()
>>> await client.wait_closed()

The connection is an :class:`asyncio.Protocol` feeding the codec's ``StreamParser``
(no stream reader in between); replies are matched to requests by message id when the
server offers ids, otherwise by name in order, so any number of requests may be awaited
concurrently.

Layering: imports ``ctlwire.katcp.core`` and ``exceptions`` only (never the threaded
client).
"""
from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from typing import Any, AsyncIterator, Callable, Optional

from ctlwire.katcp.core import (
    FailReply,
    KatcpClientError,
    KatcpSyntaxError,
    Message,
    ProtocolFlags,
    StreamParser,
    check_timeout,
    encode_message,
)
from ctlwire.katcp.exceptions import KatcpTimeoutError

__all__ = ["AioClient", "SensorReading"]

log = logging.getLogger("ctlwire.katcp.aio")

_REQUEST, _REPLY, _INFORM = Message.REQUEST, Message.REPLY, Message.INFORM
_MAX_MID = 2**31 - 1
_CLOSED = object()  # end-of-stream marker for sensor update queues


class SensorReading:
    """One sensor update, from ``#sensor-status`` or ``#sensor-value``.

    Attributes
    ----------
    timestamp : float
        Seconds since the Unix epoch (katcp v4 milliseconds are converted).
    name : str
    status : str
        ``nominal``, ``warn``, ``error``, ...
    value : bytes
        The value as sent on the wire (decode it with the sensor's type).
    """

    __slots__ = ("timestamp", "name", "status", "value")

    def __init__(self, timestamp: float, name: str, status: str, value: bytes) -> None:
        self.timestamp = timestamp
        self.name = name
        self.status = status
        self.value = value

    def __repr__(self) -> str:
        return (f"SensorReading({self.timestamp!r}, {self.name!r}, {self.status!r}, "
                f"{self.value!r})")

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, SensorReading) and self.timestamp == other.timestamp
                and self.name == other.name and self.status == other.status
                and self.value == other.value)


class _Pending:
    __slots__ = ("request", "future", "informs")

    def __init__(self, request: Message, future: asyncio.Future) -> None:
        self.request = request
        self.future = future
        self.informs: list[Message] = []


class _Protocol(asyncio.Protocol):
    def __init__(self, client: "AioClient") -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client._data_received(data)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.client._connection_lost(exc)


class _SensorStream:
    """Async iterator over sensor updates; ends when the client closes."""

    def __init__(self, client: "AioClient", maxsize: int) -> None:
        self._client = client
        self._queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.dropped = 0  # updates lost because the consumer fell behind

    def _put(self, item: Any) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            if item is _CLOSED:  # make room: the end marker must get through
                self._queue.get_nowait()
                self._queue.put_nowait(item)
            self.dropped += 1

    def __aiter__(self) -> "_SensorStream":
        return self

    async def __anext__(self) -> SensorReading:
        item = await self._queue.get()
        if item is _CLOSED:
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        """Stop receiving updates into this iterator."""
        self._client._streams.discard(self)
        self._put(_CLOSED)


class AioClient:
    """asyncio KATCP client for one server connection.

    Create it with :meth:`connect`. Requests are awaited; informs not belonging to a
    request go to callbacks registered with :meth:`add_inform_callback`; sensor updates
    go to :meth:`add_sensor_callback` callbacks and :meth:`sensor_updates` iterators.

    Parameters
    ----------
    host : str
    port : int
    timeout : float or None, optional
        Default request timeout in seconds (None: wait forever).
    auto_reconnect : bool, optional
        After a lost link, reconnect with a bounded randomised backoff
        (``reconnect_delay_min`` .. ``reconnect_delay_max`` s) and renew the sensor
        subscriptions made with :meth:`subscribe`. Requests awaited when the link drops
        still fail, and requests made while it is down raise ``KatcpClientError``.
    """

    #: Shortest and longest wait before a reconnection attempt (doubling, randomised).
    reconnect_delay_min = 0.05
    reconnect_delay_max = 2.0

    def __init__(self, host: str, port: int, *, timeout: Optional[float] = 5.0,
                 auto_reconnect: bool = False) -> None:
        self.host = host
        self.port = int(port)
        self.timeout = check_timeout(timeout)
        self.protocol_flags: Optional[ProtocolFlags] = None
        self.versions: dict[str, tuple] = {}
        self._parser = StreamParser()
        self._transport: Optional[asyncio.Transport] = None
        self._pending: dict[bytes, _Pending] = {}
        self._by_name: dict[str, deque] = {}
        self._next_mid = 0
        self._inform_callbacks: dict[str, list[Callable]] = {}
        self._sensor_callbacks: list[Callable] = []
        self._streams: set[_SensorStream] = set()
        self._protocol_event = asyncio.Event()
        self._closed = asyncio.Event()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._wbuf: list[bytes] = []
        self._flush_scheduled = False
        self.auto_reconnect = auto_reconnect
        self._connect_timeout = 5.0
        self._protocol_wait = 1.0
        self._connected = asyncio.Event()
        self._reconnect_task: Optional[asyncio.Task] = None
        self._subscriptions: dict[str, tuple] = {}  # renewed after a reconnection

    # ------------------------------------------------------------------ connection
    @classmethod
    async def connect(cls, host: str, port: int, *, timeout: Optional[float] = 5.0,
                      connect_timeout: float = 5.0, protocol_wait: float = 1.0,
                      auto_reconnect: bool = False) -> "AioClient":
        """Connect to a server and learn its protocol flags.

        Parameters
        ----------
        host, port
            The server.
        timeout : float or None
            Default request timeout in seconds.
        connect_timeout : float
            Seconds allowed for the TCP connection.
        protocol_wait : float
            Seconds to wait for ``#version-connect`` (or v4 ``#version``); a server
            that sends neither is used without message ids.
        auto_reconnect : bool
            Reconnect after a lost link (see the class documentation). The first
            connection must succeed.

        Raises
        ------
        KatcpClientError
            The connection could not be made.
        """
        client = cls(host, port, timeout=timeout, auto_reconnect=auto_reconnect)
        client._loop = asyncio.get_running_loop()
        client._connect_timeout = connect_timeout
        client._protocol_wait = protocol_wait
        await client._open()
        return client

    async def _open(self) -> None:
        host, port = self.host, self.port
        self._parser.reset()
        self.protocol_flags = None
        self._protocol_event.clear()
        try:
            transport, _ = await asyncio.wait_for(
                self._loop.create_connection(lambda: _Protocol(self), host, port),
                self._connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise KatcpClientError(f"Could not connect to {host}:{port}: {exc or 'timeout'}") \
                from exc
        self._transport = transport
        self._connected.set()
        try:
            await asyncio.wait_for(self._protocol_event.wait(), self._protocol_wait)
        except asyncio.TimeoutError:
            log.debug("No protocol information from %s:%s; not using message ids", host, port)

    async def _reconnect(self) -> None:
        failures = 0
        while not self._closing:
            failures += 1
            delay = min(self.reconnect_delay_max,
                        self.reconnect_delay_min * 2 ** (failures - 1))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            if self._closing:
                return
            try:
                await self._open()
            except KatcpClientError as exc:
                log.debug("Reconnecting to %s:%s: %s", self.host, self.port, exc)
                continue
            log.info("Reconnected to %s:%s", self.host, self.port)
            for sensor, (strategy, params) in list(self._subscriptions.items()):
                try:
                    await self.request("sensor-sampling", sensor, strategy, *params)
                except Exception as exc:  # report, keep the others
                    log.warning("Could not renew sampling of %s: %s", sensor, exc)
            return

    async def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """Wait until the connection is up; returns whether it is."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    @property
    def is_connected(self) -> bool:
        """Whether the connection is up."""
        return self._transport is not None and not self._closed.is_set()

    async def wait_protocol(self, timeout: Optional[float] = None) -> bool:
        """Wait until the server's protocol flags are known; returns whether they are."""
        try:
            await asyncio.wait_for(self._protocol_event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Close the connection; requests still awaited fail with KatcpClientError."""
        self._closing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        if self._transport is not None:
            self._transport.close()
        elif not self._closed.is_set():  # link already down (reconnecting): finish now
            self._finish_closed()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed."""
        await self._closed.wait()

    async def __aenter__(self) -> "AioClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
        await self.wait_closed()

    def _connection_lost(self, exc: Optional[Exception]) -> None:
        if self._closing:
            reason = "client closed"
        else:
            reason = "connection closed by server" if exc is None else f"connection lost: {exc}"
        self._transport = None
        self._connected.clear()
        self._fail_all(reason)
        if self.auto_reconnect and not self._closing:
            self._reconnect_task = self._loop.create_task(self._reconnect())
            return
        self._finish_closed()

    def _finish_closed(self) -> None:
        for stream in list(self._streams):
            stream._put(_CLOSED)
        self._streams.clear()
        self._closed.set()

    def _fail_all(self, reason: str) -> None:
        pending = list(self._pending.values())
        for queue in self._by_name.values():
            pending.extend(queue)
        self._pending.clear()
        self._by_name.clear()
        for p in pending:
            if not p.future.done():
                p.future.set_exception(KatcpClientError(
                    f"Request ?{p.request.name} to {self.host}:{self.port} failed: {reason}"))

    # ------------------------------------------------------------------ incoming
    def _data_received(self, data: bytes) -> None:
        for msg in self._parser.feed(data):
            if isinstance(msg, KatcpSyntaxError):
                log.warning("Bad line from %s:%s: %s", self.host, self.port, msg)
                continue
            try:
                self._on_message(msg)
            except Exception:
                log.exception("Error handling %r", msg)

    def _on_message(self, msg: Message) -> None:
        mtype = msg.mtype
        mid = msg.mid
        if mtype == _REPLY:
            if mid is not None:
                p = self._pending.pop(mid, None)
            else:
                queue = self._by_name.get(msg.name)
                p = queue.popleft() if queue else None
            if p is None:
                log.debug("Unexpected reply %s", msg)
            elif not p.future.done():
                p.future.set_result((msg, p.informs))
            return
        if mtype != _INFORM:
            log.debug("Ignoring request %s from server", msg)
            return
        if mid is not None:
            p = self._pending.get(mid)
        else:
            queue = self._by_name.get(msg.name)
            p = queue[0] if queue else None
        if p is not None:
            p.informs.append(msg)
            return
        name = msg.name
        if name == "sensor-status":
            self._sensor_status(msg)
        elif name == "version-connect":
            self._version_connect(msg)
        elif name in ("version", "build-state"):
            if self.protocol_flags is None:
                self.protocol_flags = ProtocolFlags(4, 0, b"")
            self._protocol_event.set()
        for cb in self._inform_callbacks.get(name, ()):
            try:
                cb(msg)
            except Exception:
                log.exception("Inform callback for %s failed", name)

    def _version_connect(self, msg: Message) -> None:
        if len(msg.arguments) < 2:
            return
        key = msg.arguments[0].decode("utf-8", "replace")
        self.versions[key] = tuple(a.decode("utf-8", "replace") for a in msg.arguments[1:])
        if key == "katcp-protocol":
            try:
                self.protocol_flags = ProtocolFlags.parse_version(msg.arguments[1])
            except Exception:
                log.warning("Bad protocol version %r", msg.arguments[1])
            self._protocol_event.set()

    def _timestamp(self, raw: bytes) -> float:
        value = float(raw)
        flags = self.protocol_flags
        return value / 1000.0 if flags is not None and flags.major < 5 else value

    def _sensor_status(self, msg: Message) -> None:
        args = msg.arguments
        try:
            ts = self._timestamp(args[0])
            count = int(args[1])
            readings = [SensorReading(ts, args[2 + 3 * i].decode("utf-8", "replace"),
                                      args[3 + 3 * i].decode("ascii", "replace"),
                                      args[4 + 3 * i]) for i in range(count)]
        except (IndexError, ValueError):
            log.warning("Malformed sensor update %s", msg)
            return
        for reading in readings:
            for cb in self._sensor_callbacks:
                try:
                    cb(reading)
                except Exception:
                    log.exception("Sensor callback failed")
            for stream in self._streams:
                stream._put(reading)

    # ------------------------------------------------------------------ callbacks
    def add_inform_callback(self, name: str, callback: Callable[[Message], Any]) -> None:
        """Call ``callback(msg)`` for every ``#name`` inform not tied to a request."""
        self._inform_callbacks.setdefault(name, []).append(callback)

    def remove_inform_callback(self, name: str, callback: Callable[[Message], Any]) -> None:
        """Undo :meth:`add_inform_callback`."""
        self._inform_callbacks.get(name, []).remove(callback)

    def add_sensor_callback(self, callback: Callable[[SensorReading], Any]) -> None:
        """Call ``callback(reading)`` for every sensor update received."""
        self._sensor_callbacks.append(callback)

    def remove_sensor_callback(self, callback: Callable[[SensorReading], Any]) -> None:
        """Undo :meth:`add_sensor_callback`."""
        self._sensor_callbacks.remove(callback)

    def sensor_updates(self, maxsize: int = 10000) -> AsyncIterator[SensorReading]:
        """An async iterator over sensor updates, ending when the connection closes.

        Updates arriving while ``maxsize`` are queued unread are dropped (and counted in
        the iterator's ``dropped``) rather than growing memory without bound.
        """
        stream = _SensorStream(self, maxsize)
        if self._closed.is_set():
            stream._put(_CLOSED)
        else:
            self._streams.add(stream)
        return stream

    # ------------------------------------------------------------------ requests
    def _send(self, msg: Message) -> asyncio.Future:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise KatcpClientError(f"Not connected to {self.host}:{self.port}")
        flags = self.protocol_flags
        future = self._loop.create_future()
        p = _Pending(msg, future)
        if msg.mid is None and flags is not None and flags.message_ids:
            self._next_mid = self._next_mid % _MAX_MID + 1
            msg.mid = b"%d" % self._next_mid
        if msg.mid is not None:
            if msg.mid in self._pending:
                raise KatcpClientError(f"A request with mid {msg.mid!r} is already outstanding")
            self._pending[msg.mid] = p
        else:
            self._by_name.setdefault(msg.name, deque()).append(p)
        data = encode_message(_REQUEST, msg.name, msg.arguments, msg.mid)
        if len(self._pending) > 1 or self._wbuf:
            # Several requests in flight: they are usually sent by tasks woken by one
            # chunk of replies, so gather them into one write at the end of this loop
            # iteration instead of one syscall each.
            self._wbuf.append(data)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
        else:
            transport.write(data)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = b"".join(self._wbuf)
        self._wbuf.clear()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _forget(self, msg: Message, future: asyncio.Future) -> None:
        if msg.mid is not None:
            p = self._pending.get(msg.mid)
            if p is not None and p.future is future:
                del self._pending[msg.mid]
        else:
            queue = self._by_name.get(msg.name)
            if queue:
                for p in queue:
                    if p.future is future:
                        queue.remove(p)
                        break

    async def call(self, msg: Message, timeout: Optional[float] = None
                   ) -> tuple[Message, list[Message]]:
        """Send a request message and await its reply and informs (reply not checked).

        Parameters
        ----------
        msg : Message
            A request; a mid is assigned if the server offers ids and it has none.
        timeout : float, optional
            Seconds to wait (default: the client's timeout); 0 does not wait
            (:class:`KatcpTimeoutError` at once, nothing sent); negative or non-finite
            values raise ``ValueError``.

        Returns
        -------
        reply : Message
        informs : list of Message

        Raises
        ------
        ValueError
            ``timeout`` is negative or not finite.
        KatcpTimeoutError
            No reply in time.
        KatcpClientError
            Not connected, or the connection dropped before the reply.
        """
        if msg.mtype != _REQUEST:
            raise ValueError(f"Expected a request message, got {msg!r}")
        if timeout is None:
            timeout = self.timeout
        else:
            timeout = check_timeout(timeout)
        if timeout == 0:
            # "Don't wait": nothing could be read back, so nothing is sent either.
            raise KatcpTimeoutError(f"Request ?{msg.name} to {self.host}:{self.port} "
                                    "timed out: timeout is 0 s (not waiting)")
        future = self._send(msg)
        if timeout is None:
            return await future
        # A timer on the future itself: cheaper than asyncio.wait_for's extra future.
        handle = self._loop.call_later(timeout, self._expire, msg, future, timeout)
        try:
            return await future
        finally:
            handle.cancel()

    def _expire(self, msg: Message, future: asyncio.Future, timeout: float) -> None:
        if not future.done():
            self._forget(msg, future)
            future.set_exception(KatcpTimeoutError(
                f"Request ?{msg.name} to {self.host}:{self.port} timed out after "
                f"{timeout:g} s"))

    async def request(self, name: str, *args: Any, timeout: Optional[float] = None
                      ) -> tuple[Message, list[Message]]:
        """Send ``?name args...`` and await an ``ok`` reply and its informs.

        Raises
        ------
        FailReply
            The reply was ``fail`` or ``invalid`` (the message carries the reason).
        KatcpTimeoutError, KatcpClientError
            As for :meth:`call`.
        """
        reply, informs = await self.call(Message.request(name, *args), timeout)
        if not reply.reply_ok():
            reason = b" ".join(reply.arguments[1:]).decode("utf-8", "replace")
            status = reply.arguments[0].decode("ascii", "replace") if reply.arguments else "?"
            raise FailReply(f"?{name} {status}: {reason}")
        return reply, informs

    async def subscribe(self, sensor: str, strategy: str = "auto", *params: Any,
                        timeout: Optional[float] = None) -> Message:
        """Set a sampling strategy (``?sensor-sampling``); updates then arrive as readings.

        Returns the ``ok`` reply; raises :class:`FailReply` if the server refuses. With
        ``auto_reconnect`` the strategy is set again after each reconnection.
        """
        reply, _ = await self.request("sensor-sampling", sensor, strategy, *params,
                                      timeout=timeout)
        if strategy == "none":
            self._subscriptions.pop(sensor, None)
        else:
            self._subscriptions[sensor] = (strategy, params)
        return reply

    async def sensor_value(self, name: str, timeout: Optional[float] = None
                           ) -> list[SensorReading]:
        """Read sensor values now (``?sensor-value``; ``name`` may be ``/regex/``)."""
        _, informs = await self.request("sensor-value", name, timeout=timeout)
        out = []
        for inform in informs:
            args = inform.arguments
            if len(args) >= 5:
                out.append(SensorReading(self._timestamp(args[0]),
                                         args[2].decode("utf-8", "replace"),
                                         args[3].decode("ascii", "replace"), args[4]))
        return out
