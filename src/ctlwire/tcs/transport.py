"""ZeroMQ transport of TCS events: the publishing server and the subscriber.

Events travel as two UTF-8 frames ``[topic, json(event)]`` (codec:
:func:`ctlwire.tcs.events.decode_message`).  This module loads no compiled extension:
it imports only pyzmq, ``ctlwire._json``, ``ctlwire._zmq`` and ``ctlwire.tcs.events``,
so ``ctlwire.ocd`` (and anything else that only publishes or subscribes) works without
the replay engine.  ``ctlwire.tcs.server`` re-exports both classes.

Nothing accepted is silently lost: the server's socket never drops on its own
(``XPUB_NODROP``); a send either waits for room (``on_full="block"``, back-pressure)
or is refused and counted in :attr:`ZMQServer.dropped` (``on_full="drop"``).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import zmq

from .. import _json
from .._zmq import get_context, make_socket
from .events import decode_message

__all__ = ["ZMQServer", "TCSSubscriber", "string_to_bytes", "DEFAULT_HWM", "DEFAULT_LINGER"]

_log = logging.getLogger("ctlwire.tcs")

#: Messages a subscriber's queue may hold, at each end, before the server waits
#: (``block``) or refuses (``drop``).  Large enough to ride out a recorder's batch
#: commit at 20,000 events/s; about 300 bytes per queued event.
DEFAULT_HWM = 100_000

#: Seconds :meth:`ZMQServer.close` lets queued events leave (see there).
DEFAULT_LINGER = 10.0


def string_to_bytes(value: str | bytes | bytearray | memoryview) -> bytes:
    """Return ``value`` as bytes, encoding text as UTF-8."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"event frames must be str or bytes, got {type(value).__name__}")


def _ipv6(url: str) -> bool:
    return url.startswith("tcp://[") or url.startswith("tcp://::")


class ZMQServer:
    """Create a ZeroMQ server that publishes content on the given url.

    The socket is an XPUB socket: it publishes exactly like PUB, and it also lets
    :meth:`wait_for_subscriber` see subscriptions arrive, so a replay can start when
    the first subscriber is listening rather than after a guessed sleep.  A socket is
    not thread-safe: use one server per thread.

    Parameters
    ----------
    url : str
        URL to bind to, e.g. ``tcp://127.0.0.1:5556`` (``tcp://127.0.0.1:0`` picks a
        free port; read :attr:`endpoint`).
    context : zmq.Context, optional
        Context for the socket; defaults to ``zmq.Context.instance()``.  It is not
        closed by :meth:`close`.
    on_full : {'drop', 'block'}, optional
        Keyword only.  What a send does when a subscriber's queue is full: ``'drop'``
        (default) refuses the event at once and counts it in :attr:`dropped`, so a
        stuck subscriber never stalls a control process; ``'block'`` waits for room
        (back-pressure: a subscriber that keeps reading gets every event).
    hwm : int, optional
        Keyword only.  Queue length per subscriber (:data:`DEFAULT_HWM`).

    Attributes
    ----------
    delivered : int
        Events accepted by the socket (queued for every matching subscriber).
    dropped : int
        Events refused because a subscriber's queue was full (``on_full='drop'``).
    subscriptions : list of bytes
        Subscriptions seen so far by :meth:`wait_for_subscriber`.
    """

    def __init__(self, url: str, context: zmq.Context | None = None, *,
                 on_full: str = "drop", hwm: int = DEFAULT_HWM) -> None:
        if on_full not in ("drop", "block"):
            raise ValueError(f"on_full must be 'drop' or 'block', got {on_full!r}")
        self.url = url
        self.context = get_context(context)
        self._socket = make_socket(self.context, zmq.XPUB, sndhwm=hwm)
        # never drop inside libzmq: a full queue makes the send wait or fail, and
        # a failed send is counted here
        self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        if _ipv6(url):
            self._socket.setsockopt(zmq.IPV6, 1)
        try:
            self._socket.bind(url)
        except zmq.ZMQError as exc:
            self._socket.close()
            raise zmq.ZMQError(exc.errno, f"cannot bind TCS server to {url!r}: {exc}") from None
        self.subscriptions: list[bytes] = []
        self.on_full = on_full
        self.delivered = 0
        self.dropped = 0
        self._closed = False

    @property
    def socket(self) -> zmq.Socket:
        """The underlying XPUB socket."""
        return self._socket

    @property
    def endpoint(self) -> str:
        """The endpoint actually bound (resolves a ``:0`` port)."""
        return self._socket.getsockopt(zmq.LAST_ENDPOINT).decode()

    @property
    def on_full(self) -> str:
        """``'drop'`` or ``'block'``: what a send does when a subscriber is full."""
        return self._on_full

    @on_full.setter
    def on_full(self, value: str) -> None:
        if value not in ("drop", "block"):
            raise ValueError(f"on_full must be 'drop' or 'block', got {value!r}")
        self._on_full = value
        self._flags = zmq.NOBLOCK if value == "drop" else 0

    def send_frames(self, frames: list[bytes]) -> bool:
        """Send one message of bytes frames; False (and counted) when it was dropped.

        The hot path of :meth:`send_event`; also what a replay hands its events to.
        """
        try:
            self._socket.send_multipart(frames, self._flags)
        except zmq.Again:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                _log.warning("TCS server %s: a subscriber is not keeping up; %d event(s) "
                             "dropped so far", self.url, self.dropped)
            return False
        self.delivered += 1
        return True

    def send_event(self, event: Sequence[str | bytes]) -> bool:
        """Send the event via the socket.

        Parameters
        ----------
        event : list of str or bytes
            Frames sent with ``zmq.Socket.send_multipart``; text is encoded as UTF-8.

        Returns
        -------
        bool
            True when the socket took the event, False when it was dropped (counted
            in :attr:`dropped`; only with ``on_full='drop'``).
        """
        return self.send_frames([string_to_bytes(f) for f in event])

    def send_tcs_event(self, tcs_topic: str, tcs_event: dict[str, Any] | str | bytes) -> bool:
        """Version of :meth:`send_event` specialised to send TCS-like events.

        Sets ``__wire_time`` in ``tcs_event`` to ``time.time()``.

        Parameters
        ----------
        tcs_topic : str
            Topic of the event.
        tcs_event : dict or str
            Event to send; a JSON string is decoded into a dictionary first.

        Returns
        -------
        bool
            As :meth:`send_event`.
        """
        if isinstance(tcs_event, (str, bytes, bytearray)):
            try:
                tcs_event = _json.loads(tcs_event)
            except _json.DecodeError as exc:
                raise ValueError(f"tcs_event for topic {tcs_topic!r} is not valid JSON: "
                                 f"{exc}") from None
        if not isinstance(tcs_event, dict):
            raise TypeError(f"tcs_event must be a dict or a JSON object, got "
                            f"{type(tcs_event).__name__}")
        tcs_event["__wire_time"] = time.time()
        return self.send_frames([string_to_bytes(tcs_topic), _json.dumps(tcs_event)])

    def start(self, events: Iterable[Sequence[str | bytes] | None]) -> int:
        """Start serving events via the socket.

        Parameters
        ----------
        events : iterable of list of str or bytes
            Each item is sent with :meth:`send_event`; ``None`` items are skipped.
            Returns when the iterable ends.  An object with a ``_run_on(server)``
            method (a :class:`~ctlwire.tcs.server.TCSDBReplay`) runs its own compiled
            send loop instead.

        Returns
        -------
        int
            Number of events handed to the socket (delivered or dropped).
        """
        run_on = getattr(events, "_run_on", None)
        if run_on is not None:
            return run_on(self)
        n = 0
        send = self.send_event
        for event in events:
            if event is not None:
                send(event)
                n += 1
        return n

    def wait_for_subscriber(self, timeout: float | None = None,
                            topic: str | Sequence[str] | None = None) -> bool:
        """Block until a subscriber has subscribed (to something ``topic`` covers).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most (None: forever; must be >= 0).
        topic : str or list of str, optional
            Topic prefix(es) about to be sent: only a subscription that would receive
            some of them counts (one is a prefix of the other).  None: any.

        Returns
        -------
        bool
            True once such a subscription has reached the socket (events sent from
            now on reach that subscriber), False when ``timeout`` passed first.

        Raises
        ------
        ValueError
            ``timeout`` negative or NaN.
        """
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
        if isinstance(topic, str):
            topic = [topic]
        wants = None if topic is None else [t.encode("utf-8") for t in topic]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._drain_subscriptions()
            for sub in self.subscriptions:
                if wants is None or any(w.startswith(sub) or sub.startswith(w) for w in wants):
                    return True
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if wait is not None and wait == 0.0:
                return False
            ms = 100 if wait is None else max(1, int(min(wait, 0.1) * 1000))
            self._socket.poll(ms, zmq.POLLIN)

    def has_subscriber(self) -> bool:
        """Whether any subscription is known now (reads pending notices first)."""
        self._drain_subscriptions()
        return bool(self.subscriptions)

    def _drain_subscriptions(self) -> None:
        while True:
            try:
                msg = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                if msg[1:] not in self.subscriptions:
                    self.subscriptions.append(msg[1:])
            elif msg[:1] == b"\x00" and msg[1:] in self.subscriptions:
                self.subscriptions.remove(msg[1:])

    def close(self, linger: float | None = DEFAULT_LINGER) -> None:
        """Close the socket (the context is left alone).

        Events still queued keep leaving for at most ``linger`` seconds (None: until
        they have left; 0: discard them).  The context's I/O thread sends them, so a
        process about to exit must terminate the context to wait for them: use a
        context of its own, ``with zmq.Context() as ctx: ZMQServer(url, ctx) ...``
        (leaving the block waits at most ``linger``).  ``tcs-replay`` does so.
        """
        if self._closed:
            return
        self._closed = True
        if linger is not None and not linger >= 0:
            raise ValueError(f"linger must be >= 0 seconds or None, got {linger!r}")
        ms = -1 if linger is None else int(linger * 1000)
        self._socket.close(linger=ms)

    def __enter__(self) -> "ZMQServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TCSSubscriber:
    """Subscribe to one or more TCS servers and yield ``(topic, event)``.

    Parameters
    ----------
    urls : str or list of str
        Server URLs to connect to.
    topics : str or list of str, optional
        Topic prefixes to subscribe to; None or ``[]`` subscribes to everything.
    context : zmq.Context, optional
        Defaults to ``zmq.Context.instance()``.
    timeout : float, optional
        For iteration: stop after this many seconds without a message (None waits
        forever).
    hwm : int, optional
        Keyword only.  Messages queued on this side before the publisher is made to
        wait (:data:`DEFAULT_HWM`).

    Attributes
    ----------
    bad : int
        Messages dropped because they were not ``[topic, json object]`` (each also
        logged).
    received : int
        Well-formed events returned by :meth:`recv`.
    """

    def __init__(self, urls: str | Sequence[str], topics: str | Sequence[str] | None = None,
                 context: zmq.Context | None = None, timeout: float | None = None, *,
                 hwm: int = DEFAULT_HWM) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.topics = [topics] if isinstance(topics, str) else list(topics or [])
        self.timeout = timeout
        self.bad = 0
        self.received = 0
        self._socket = make_socket(context, zmq.SUB, rcvhwm=hwm)
        for t in self.topics or [""]:
            self._socket.setsockopt(zmq.SUBSCRIBE, t.encode("utf-8"))
        try:
            for url in self.urls:
                if _ipv6(url):
                    self._socket.setsockopt(zmq.IPV6, 1)
                self._socket.connect(url)
        except zmq.ZMQError as exc:
            self._socket.close()
            raise zmq.ZMQError(exc.errno, f"cannot connect to {url!r}: {exc}") from None
        # one Poller for the life of the object: Socket.poll() builds one per call
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)

    @property
    def socket(self) -> zmq.Socket:
        """The underlying SUB socket."""
        return self._socket

    def recv_frames(self, timeout: float | None = None) -> list[bytes] | None:
        """Next raw message (list of frames), or None after ``timeout`` seconds."""
        if timeout is None:
            ms = None
        else:
            ms = max(0, int(timeout * 1000 + 0.999))
        if not self._poller.poll(ms):
            return None
        return self._socket.recv_multipart(zmq.NOBLOCK)

    def recv_nowait(self) -> tuple[str, dict[str, Any]] | None:
        """Next well-formed ``(topic, event)`` already queued, else None (no waiting)."""
        sock = self._socket
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return None
            decoded = self.decode(frames)
            if decoded is not None:
                return decoded

    def recv(self, timeout: float | None = None) -> tuple[str, dict[str, Any]] | None:
        """Next ``(topic, event)``, or None when ``timeout`` seconds pass first.

        Malformed messages are logged, counted in :attr:`bad` and skipped.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            frames = self.recv_frames(left)
            if frames is None:
                return None
            decoded = self.decode(frames)
            if decoded is not None:
                return decoded
            if left == 0.0:
                return None

    def decode(self, frames: list[bytes]) -> tuple[str, dict[str, Any]] | None:
        """``(topic, event)`` of a message, or None (counted in :attr:`bad`, logged)."""
        try:
            got = decode_message(frames)
        except ValueError as exc:
            self.bad += 1
            _log.warning("dropping malformed TCS message %r: %s", frames[:2], exc)
            return None
        self.received += 1
        return got

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        while True:
            item = self.recv(self.timeout)
            if item is None:
                return
            yield item

    def close(self) -> None:
        """Close the socket."""
        self._socket.close(linger=0)

    def __enter__(self) -> "TCSSubscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
