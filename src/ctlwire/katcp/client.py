"""Threaded KATCP clients: ``DeviceClient``, ``CallbackClient`` and ``BlockingClient``.

The names and semantics follow katcp-python so that users only change their imports.
Underneath there is no event loop: one I/O thread per client waits on the socket with a
selector and feeds the codec's ``StreamParser``; callers write straight to the socket
(without blocking) under a lock; and a thread in ``blocking_request`` reads the socket
itself while no other reader is active, so a sequential request costs no thread hand-off
at all.

Threading model
---------------
* Exactly one thread at a time reads and dispatches messages (it holds the *read lock*):
  normally the client's I/O thread, or a thread waiting in ``blocking_request``.
  Handlers (``reply_*``, ``inform_*``, ``unhandled_*``, callbacks) therefore never run
  concurrently, but they may run in either of those threads.
* Handlers and callbacks must not block; requests sent from inside them are queued and
  written in one batch when the current chunk of input has been dispatched.
"""
from __future__ import annotations

import concurrent.futures
import errno
import itertools
import logging
import math
import random
import select
import selectors
import socket
import struct
import sys
import threading
import time
import traceback
from _thread import allocate_lock, get_ident
from collections import deque
from typing import Any, Callable, Optional

from ctlwire.katcp.core import (
    KatcpClientError,
    KatcpSyntaxError,
    KatcpVersionError,
    Message,
    ProtocolFlags,
    RoundTrip,
    StreamParser,
    check_timeout,
    encode_message,
)
from ctlwire.katcp.exceptions import KatcpTimeoutError

__all__ = [
    "DeviceClient",
    "CallbackClient",
    "AsyncClient",
    "BlockingClient",
    "KatcpTimeoutError",
    "request_check",
]

log = logging.getLogger("ctlwire.katcp.client")

_REQUEST, _REPLY, _INFORM = Message.REQUEST, Message.REPLY, Message.INFORM
_Message = Message
_RECV_SIZE = 64 * 1024
# While a blocking caller reads the socket itself, the I/O thread steps aside and looks
# again this often (it is also the worst extra delay of an unsolicited inform that
# arrives just after a blocking request finished).
_PARK_INTERVAL = 0.002
# Longest the I/O thread sleeps without re-checking request deadlines (a safety net for
# a deadline registered concurrently with a scan).
_MAX_IDLE = 0.25
_monotonic = time.monotonic
# Where the platform has MSG_DONTWAIT (Linux, BSD, macOS) the socket is left in blocking
# mode with a receive timeout (SO_RCVTIMEO) of _RCV_SLICE: a thread waiting for its reply
# then needs one recv() per reply instead of poll() + recv(), and every other read and
# write passes MSG_DONTWAIT. Elsewhere the socket is non-blocking and readers poll().
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_RCV_SLICE = 0.05


def _wait_fds(readers: list, writers: list, timeout: float) -> tuple[list, list]:
    """``select()`` without its 1024-descriptor limit (rare paths only: connect, backoff,
    a write that did not fit)."""
    with selectors.DefaultSelector() as sel:
        for sock in readers:
            sel.register(sock, selectors.EVENT_READ)
        for sock in writers:
            if sock in readers:
                sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            else:
                sel.register(sock, selectors.EVENT_WRITE)
        events = sel.select(max(timeout, 0.0))
    readable = [key.fileobj for key, ev in events if ev & selectors.EVENT_READ]
    writable = [key.fileobj for key, ev in events if ev & selectors.EVENT_WRITE]
    return readable, writable


def _handler_tables(cls: type) -> tuple[dict, dict, dict]:
    """Collect ``request_*``, ``inform_*`` and ``reply_*`` methods of a class.

    ``inform_version_connect`` serves ``#version-connect``: underscores become dashes.
    """
    tables: tuple[dict, dict, dict] = ({}, {}, {})
    for attr in dir(cls):
        for prefix, table in zip(("request_", "inform_", "reply_"), tables):
            if attr.startswith(prefix) and len(attr) > len(prefix):
                func = getattr(cls, attr)
                if callable(func):
                    table[attr[len(prefix):].replace("_", "-")] = func
    return tables


class DeviceClient:
    """Device client proxy: a connection to one KATCP server, run by its own thread.

    Subclasses implement ``reply_*``, ``inform_*`` and ``request_*`` methods to act when
    messages arrive (``reply_sensor_value`` handles ``!sensor-value``), and may override
    ``unhandled_inform``, ``unhandled_reply`` and ``unhandled_request`` as fallbacks for
    messages without a handler. Requests are sent with :meth:`send_request` or
    :meth:`request`.

    Parameters
    ----------
    host : str
        Server host name or address.
    port : int
        Server TCP port.
    tb_limit : int, optional
        Traceback frames to log when a handler raises.
    logger : logging.Logger, optional
        Where to log.
    auto_reconnect : bool, optional
        Reconnect after a failed connect or a lost link, with a bounded randomised
        exponential backoff (``reconnect_delay_min`` .. ``reconnect_delay_max`` s).
    connect_timeout : float, optional
        Seconds allowed for one TCP connect attempt.

    Examples
    --------
    >>> class MyClient(DeviceClient):
    ...     def reply_myreq(self, msg):
    ...         print(msg)
    >>> c = MyClient('localhost', 10000)
    >>> c.start()
    >>> c.send_request(Message.request('myreq'))
    >>> c.stop()
    >>> c.join()
    """

    #: Shortest and longest wait before a reconnection attempt, in seconds. The actual
    #: wait doubles with each consecutive failure and is randomised to 50-100 % of that,
    #: so many clients of one restarted server do not reconnect in lock-step.
    reconnect_delay_min = 0.05
    reconnect_delay_max = 2.0
    #: Writes never block: what the kernel cannot take at once is queued and written by
    #: the I/O thread as the server reads. Past this many queued bytes (a server that has
    #: stopped reading), sending raises KatcpClientError.
    max_queued_output = 16 * 1024 * 1024

    _request_handlers: dict = {}
    _inform_handlers: dict = {}
    _reply_handlers: dict = {}
    _fast_replies = False
    _pending: dict = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._request_handlers, cls._inform_handlers, cls._reply_handlers = _handler_tables(cls)

    def __init__(self, host: str, port: int, tb_limit: int = 20,
                 logger: logging.Logger = log, auto_reconnect: bool = True,
                 *, connect_timeout: float = 5.0) -> None:
        if not host:
            host = "127.0.0.1"
        self._bindaddr = (host, int(port))
        self._tb_limit = tb_limit
        self._logger = logger
        self._auto_reconnect = auto_reconnect
        self.connect_timeout = connect_timeout
        self._static_protocol_flags: Optional[ProtocolFlags] = None
        self._protocol_flags: Optional[ProtocolFlags] = None
        self._server_supports_ids = False
        self._read_lock = allocate_lock()
        self._write_lock = allocate_lock()
        self._parser = StreamParser()
        self._wq = bytearray()  # output the kernel could not take yet (write lock)
        # The compiled core of blocking_request; it also numbers the requests.
        self._roundtrip = RoundTrip(self._parser, self._write_lock, self._wq)
        self._next_mid = self._roundtrip.next_mid
        self._rbuf = bytearray(_RECV_SIZE)  # the I/O thread's reads (under the read lock)
        self._rview = memoryview(self._rbuf)
        self._blocking_reads = False
        self._sock: Optional[socket.socket] = None
        self._poll: Any = None
        self._outbuf: list[bytes] = []
        self._dispatcher = 0  # ident of the thread currently dispatching, 0 if none
        self._direct_reads = 0  # times a blocking caller took the reader role
        self._io_ident = 0
        self._thread: Optional[threading.Thread] = None
        self._running_flag = False
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None
        # Earliest time the I/O thread will scan request deadlines; a new request due
        # sooner lowers it and wakes the thread.
        self._next_check = math.inf
        self._connected = threading.Event()
        self._disconnected = threading.Event()
        self._disconnected.set()
        self._received_protocol_info = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._excepthook: Optional[Callable] = None
        self.versions: dict[str, tuple] = {}
        self.last_connect_time: Optional[float] = None

    # ------------------------------------------------------------------ properties
    @property
    def bind_address(self) -> tuple[str, int]:
        """The ``(host, port)`` of the server."""
        return self._bindaddr

    @property
    def bind_address_string(self) -> str:
        """The server address as ``host:port``."""
        return f"{self._bindaddr[0]}:{self._bindaddr[1]}"

    @property
    def protocol_flags(self) -> Optional[ProtocolFlags]:
        """The server's :class:`ProtocolFlags`, or None until they are known."""
        return self._protocol_flags

    @protocol_flags.setter
    def protocol_flags(self, flags: ProtocolFlags) -> None:
        self._protocol_flags = flags
        self._server_supports_ids = bool(flags is not None and flags.message_ids)
        if flags is not None:
            self._received_protocol_info.set()

    # ------------------------------------------------------------------ protocol detection
    def preset_protocol_flags(self, protocol_flags: ProtocolFlags) -> None:
        """Preset server protocol flags.

        Sets the assumed server protocol flags and disables automatic server version
        detection.

        Parameters
        ----------
        protocol_flags : ProtocolFlags
        """
        self._static_protocol_flags = protocol_flags
        self.protocol_flags = protocol_flags

    def inform_version_connect(self, msg: Message) -> None:
        """Process a ``#version-connect`` message (katcp v5)."""
        if len(msg.arguments) < 2:
            return
        name = msg.arguments[0].decode("utf-8", "replace")
        self.versions[name] = tuple(a.decode("utf-8", "replace") for a in msg.arguments[1:])
        if msg.arguments[0] == b"katcp-protocol":
            try:
                flags = ProtocolFlags.parse_version(msg.arguments[1])
            except Exception:
                self._logger.warning("Bad protocol version from %s: %r",
                                     self.bind_address_string, msg.arguments[1])
                return
            self._set_protocol_from_inform(flags, msg)

    def inform_version(self, msg: Message) -> None:
        """Handle katcp v4 and below version inform."""
        if msg.arguments:
            self.versions["katcp-library"] = (msg.arguments[0].decode("utf-8", "replace"),)
        self._set_protocol_from_inform(ProtocolFlags(4, 0, b""), msg)

    def inform_build_state(self, msg: Message) -> None:
        """Handle katcp v4 and below build-state inform."""
        if msg.arguments:
            self.versions["katcp-device"] = (msg.arguments[0].decode("utf-8", "replace"),)
        self._set_protocol_from_inform(ProtocolFlags(4, 0, b""), msg)

    def _set_protocol_from_inform(self, flags: ProtocolFlags, inform: Message) -> None:
        if self._static_protocol_flags is not None:
            if str(flags) != str(self._static_protocol_flags):
                self._logger.warning(
                    "Ignoring %s from %s: protocol flags are preset to %s",
                    inform, self.bind_address_string, self._static_protocol_flags)
            return
        current = self._protocol_flags
        if current is not None and str(current) != str(flags):
            self._logger.warning("Server %s changed its protocol from %s to %s",
                                 self.bind_address_string, current, flags)
        self.protocol_flags = flags

    # ------------------------------------------------------------------ sending
    def _assign_mid(self, msg: Message, use_mid: Optional[bool]) -> None:
        supports = self._server_supports_ids
        if use_mid is None:
            use_mid = supports
        if msg.mid is None:
            if use_mid:
                if not supports:
                    raise KatcpVersionError(
                        f"Message ids requested but server {self.bind_address_string} "
                        f"does not offer them (protocol {self._protocol_flags})")
                msg.mid = self._next_mid()
        elif not supports:
            raise KatcpVersionError(
                f"Message has mid {msg.mid!r} but server {self.bind_address_string} "
                f"does not offer message ids (protocol {self._protocol_flags})")

    def request(self, msg: Message, use_mid: Optional[bool] = None,
                timeout: Optional[float] = None) -> Optional[bytes]:
        """Send a request message, automatically assigning a message id if requested.

        Parameters
        ----------
        msg : Message
            The request. If ``msg.mid`` is None and ids are used, one is assigned.
        use_mid : bool or None, default None
            None: use ids if the server offers them. True: force one (raises
            :class:`KatcpVersionError` if the server does not offer ids).
        timeout : float or None, default None
            Kept for katcp-python compatibility: writes never block (what the kernel
            cannot take at once is queued, see :attr:`max_queued_output`).

        Returns
        -------
        mid : bytes or None
            The message id used, or None.
        """
        self._assign_mid(msg, use_mid)
        self.send_request(msg, timeout)
        return msg.mid

    def send_request(self, msg: Message, timeout: Optional[float] = None) -> None:
        """Send a request message.

        Parameters
        ----------
        msg : Message
        timeout : float or None, default None
            Kept for katcp-python compatibility: writes never block.

        Raises
        ------
        KatcpVersionError
            The message carries a mid and the server does not offer message ids.
        KatcpClientError
            Not connected, or the write failed.
        """
        if msg.mtype != _REQUEST:
            raise ValueError(f"send_request needs a request message, got {msg!r}")
        if msg.mid is not None and not self._server_supports_ids:
            raise KatcpVersionError(
                f"Message ids not supported by server {self.bind_address_string}")
        self.send_message(msg, timeout)

    def send_message(self, msg: Message, timeout: Optional[float] = None) -> None:
        """Send any kind of message.

        Parameters
        ----------
        msg : Message
        timeout : float or None, default None
            Kept for katcp-python compatibility: writes never block (what the kernel
            cannot take at once is queued, see :attr:`max_queued_output`).

        Raises
        ------
        KatcpClientError
            Not connected, the write failed, or the output queue is full.
        """
        self._send_bytes(encode_message(msg.mtype, msg.name, msg.arguments, msg.mid), timeout)

    def _send_bytes(self, data: bytes, timeout: Optional[float]) -> None:
        if self._dispatcher == get_ident():
            # Sent from a handler or callback: batch with the other writes caused by this
            # chunk of input (one syscall for many replies-then-requests).
            if self._sock is None:
                raise KatcpClientError(f"Not connected to device {self.bind_address_string}")
            self._outbuf.append(data)
            return
        with self._write_lock:
            sock = self._sock
            if sock is None:
                raise KatcpClientError(f"Not connected to device {self.bind_address_string}")
            self._write_all(sock, data, timeout)

    def _flush_outbuf(self) -> None:
        data = b"".join(self._outbuf)
        self._outbuf.clear()
        with self._write_lock:
            sock = self._sock
            if sock is None:
                return  # the link went down; the requests were failed with it
            try:
                self._write_all(sock, data, None)
            except KatcpClientError as exc:
                self._logger.warning("%s", exc)

    def _write_all(self, sock: socket.socket, data: bytes, timeout: Optional[float]) -> None:
        # Caller holds the write lock. The common case is one send() that takes it all.
        if self._wq:
            self._queue_out(data)  # behind what is already waiting, in order
            return
        try:
            sent = sock.send(data, _DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._abort_link()
            raise KatcpClientError(
                f"Could not send to {self.bind_address_string}: {exc}") from exc
        if sent != len(data):
            self._write_rest(sock, data, sent, timeout)

    def _queue_out(self, data: bytes) -> None:
        # Caller holds the write lock and found output already queued.
        if len(self._wq) > self.max_queued_output:
            raise KatcpClientError(
                f"Output queue to {self.bind_address_string} is full ({len(self._wq)} bytes "
                f"unsent): the server is not reading")
        self._wq += data

    def _write_rest(self, sock: socket.socket, data: bytes, sent: int,
                    timeout: Optional[float]) -> None:
        # Caller holds the write lock; the kernel's send buffer is full. Queue the rest of
        # the message (never half of it is dropped) for the I/O thread, which writes it as
        # the server reads while it goes on reading itself: a writer that waited here
        # instead could stall the reading of replies the server is blocked writing.
        self._wq += memoryview(data)[sent:]
        self._wake()

    def _drain_out(self, sock: socket.socket) -> None:
        """I/O thread: write queued output the socket has room for."""
        with self._write_lock:
            if self._sock is not sock or not self._wq:
                return
            try:
                sent = sock.send(self._wq, _DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:
                self._logger.warning("Could not send to %s: %s", self.bind_address_string, exc)
                self._abort_link()
                return
            del self._wq[:sent]

    def _abort_link(self) -> None:
        # Wake whoever reads the socket; the reader tears the link down and fails the
        # requests in flight.
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._wake()

    def _wake(self) -> None:
        w = self._wake_w
        if w is not None:
            try:
                w.send(b"x")
            except OSError:
                pass  # buffer full (already woken) or closed (stopping)

    # ------------------------------------------------------------------ dispatch
    def handle_message(self, msg: Message) -> Any:
        """Handle a message from the server.

        Parameters
        ----------
        msg : Message
            The message to dispatch to the handler methods.
        """
        mtype = msg.mtype
        if mtype == _REPLY:
            return self.handle_reply(msg)
        if mtype == _INFORM:
            return self.handle_inform(msg)
        if mtype == _REQUEST:
            return self.handle_request(msg)
        self._logger.error("Unexpected message type from server: %r", msg)
        return None

    def _log_handler_error(self, what: str, msg: Message) -> None:
        reason = "".join(traceback.format_exception(*sys.exc_info(), limit=self._tb_limit))
        self._logger.error("%s %s FAIL: %s", what, msg.name, reason)

    def _dispatch(self, handlers: dict, fallback: Callable[[Message], Any], what: str,
                  msg: Message) -> Any:
        # a handler's exception is logged, never allowed to kill the I/O thread
        method = handlers.get(msg.name)
        try:
            if method is None:
                return fallback(msg)
            return method(self, msg)
        except Exception:
            self._log_handler_error(what, msg)
        return None

    def handle_inform(self, msg: Message) -> Any:
        """Dispatch an inform message to the appropriate method.

        Parameters
        ----------
        msg : Message
            The inform message to dispatch.
        """
        return self._dispatch(self._inform_handlers, self.unhandled_inform, "Inform", msg)

    def handle_reply(self, msg: Message) -> Any:
        """Dispatch a reply message to the appropriate method.

        Parameters
        ----------
        msg : Message
            The reply message to dispatch.
        """
        return self._dispatch(self._reply_handlers, self.unhandled_reply, "Reply", msg)

    def handle_request(self, msg: Message) -> Any:
        """Dispatch a request message to the appropriate method.

        A handler that returns a reply :class:`Message` has it sent back with the
        request's mid.

        Parameters
        ----------
        msg : Message
            The request message to dispatch.
        """
        method = self._request_handlers.get(msg.name)
        try:
            if method is None:
                return self.unhandled_request(msg)
            reply = method(self, msg)
            if isinstance(reply, Message):
                reply.mid = msg.mid
                self.send_message(reply)
                return None
            return reply
        except Exception:
            self._log_handler_error("Request", msg)
        return None

    def unhandled_inform(self, msg: Message) -> None:
        """Fallback method for inform messages without a registered handler.

        Parameters
        ----------
        msg : Message
        """

    def unhandled_reply(self, msg: Message) -> None:
        """Fallback method for reply messages without a registered handler.

        Parameters
        ----------
        msg : Message
        """

    def unhandled_request(self, msg: Message) -> None:
        """Fallback method for requests without a registered handler.

        Parameters
        ----------
        msg : Message
        """

    def notify_connected(self, connected: bool) -> None:
        """Event handler that is called whenever the connection status changes.

        Override in derived class for desired behaviour. This function should never
        block: the client does not process data from the server until it returns.

        Parameters
        ----------
        connected : bool
            True when the client has just connected, False when it has just
            disconnected.
        """

    def _dispatch_chunk(self, data: Any) -> None:
        # Caller holds the read lock.
        self._dispatch_items(self._parser.feed(data))

    def _dispatch_items(self, items: list) -> None:
        # Caller holds the read lock.
        self._dispatcher = get_ident()
        handle = self.handle_message
        # Replies to tracked requests skip the handler chain when no subclass overrides it.
        pending = self._pending if self._fast_replies else None
        try:
            for item in items:
                if isinstance(item, KatcpSyntaxError):
                    self._logger.warning("Bad line from %s: %s", self.bind_address_string, item)
                    continue
                if pending is not None and item.mtype == _REPLY and item.mid is not None:
                    p = pending.pop(item.mid, None)
                    if p is not None:
                        lock = p.lock
                        if lock is None:
                            self._finish(p, item, None)
                        else:  # a blocking caller: hand over the reply and wake it
                            p.reply = item
                            p.done = True
                            lock.release()
                        continue
                try:
                    handle(item)
                except Exception:
                    self._log_handler_error("Message", item)
        finally:
            self._dispatcher = 0
            if self._outbuf:
                self._flush_outbuf()

    # ------------------------------------------------------------------ request tracking hooks
    def _fail_in_flight(self, reason: str) -> None:
        """Fail every request awaiting a reply (overridden by clients that track them)."""

    def _check_timeouts(self, now: float) -> float:
        """Expire overdue requests; return the next deadline (inf if none)."""
        return math.inf

    # ------------------------------------------------------------------ connection life-cycle
    def _connect(self) -> bool:
        """Try each address of the server once; True when connected."""
        host, port = self._bindaddr
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            self._logger.warning("Cannot resolve %s: %s", self.bind_address_string, exc)
            return False
        for family, stype, proto, _, addr in infos:
            sock = socket.socket(family, stype, proto)
            sock.setblocking(False)
            try:
                err = sock.connect_ex(addr)
                if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                    raise OSError(err, "connect failed")
                if err:
                    _, writable, _ = self._select_connect(sock, self._wake_r)
                    if not writable:
                        raise OSError("connect timed out")
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, "connect failed")
            except OSError as exc:
                sock.close()
                self._logger.debug("Connect to %s failed: %s", addr, exc)
                continue
            if family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._on_connected(sock)
            return True
        return False

    def _select_connect(self, sock: socket.socket, wake: socket.socket) -> tuple:
        # Wait for the connect to finish or for stop(), whichever comes first.
        deadline = _monotonic() + self.connect_timeout
        while self._running_flag:
            remaining = deadline - _monotonic()
            if remaining <= 0:
                break
            r, w = _wait_fds([wake], [sock], remaining)
            if w:
                return r, w, []
            if r:
                self._drain_wake()
        return [], [], []

    def _on_connected(self, sock: socket.socket) -> None:
        self._parser.reset()
        if self._static_protocol_flags is None:
            self._protocol_flags = None
            self._server_supports_ids = False
            self._received_protocol_info.clear()
        self.versions = {}
        poll = select.poll()
        poll.register(sock, select.POLLIN)
        if _DONTWAIT:
            try:
                sec = int(_RCV_SLICE)
                usec = int((_RCV_SLICE - sec) * 1e6)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                struct.pack("ll", sec, usec))
                sock.setblocking(True)
                self._blocking_reads = True
            except OSError:
                self._blocking_reads = False
        with self._write_lock:
            self._poll = poll
            self._sock = sock
            self._roundtrip.fd = sock.fileno()
        self.last_connect_time = time.time()
        self._disconnected.clear()
        self._connected.set()
        self._logger.debug("Connected to %s", self.bind_address_string)
        try:
            self.notify_connected(True)
        except Exception:
            self._logger.exception("notify_connected(True) raised")

    def _link_lost(self, reason: str) -> None:
        """Tear the link down; the caller holds the read lock."""
        sock = self._sock
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        with self._write_lock:
            self._sock = None
            self._roundtrip.fd = -1
            self._poll = None
            self._wq.clear()
            sock.close()
        self._outbuf.clear()
        self._parser.reset()
        self._connected.clear()
        self._disconnected.set()
        self._logger.debug("Disconnected from %s: %s", self.bind_address_string, reason)
        self._fail_in_flight(reason)
        try:
            self.notify_connected(False)
        except Exception:
            self._logger.exception("notify_connected(False) raised")
        self._wake()  # the I/O thread reconnects (or exits)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _read_some(self, sock: socket.socket) -> bool:
        """Read what the socket has and dispatch it; False when the link is gone."""
        try:
            # Into a buffer kept for the client's life: recv() would allocate (and
            # release) a fresh 64 KiB object for every few bytes that arrive.
            n = sock.recv_into(self._rbuf, 0, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as exc:
            self._link_lost(f"read error: {exc}")
            return False
        if not n:
            self._link_lost("connection closed by server")
            return False
        self._dispatch_chunk(self._rview[:n])
        return True

    def _reads_seen(self) -> int:
        """Times a blocking caller took the reader role (the I/O thread parks while
        this count moves)."""
        return self._direct_reads + self._roundtrip.reads

    def _serve(self, sel: selectors.BaseSelector, sock: socket.socket) -> None:
        """I/O thread: serve one connection until it drops or the client stops."""
        wake = self._wake_r
        reading = True  # False while blocking callers read the socket themselves
        mask = 0  # events the socket is registered for
        parked_seen = 0
        self._next_check = -math.inf
        try:
            while self._running_flag and self._sock is sock:
                want = ((selectors.EVENT_READ if reading else 0)
                        | (selectors.EVENT_WRITE if self._wq else 0))
                if want != mask:
                    try:
                        if not mask:
                            sel.register(sock, want)
                        elif not want:
                            sel.unregister(sock)
                        else:
                            sel.modify(sock, want)
                    except (KeyError, ValueError, OSError):
                        break  # closed under us: the link is gone
                    mask = want
                now = _monotonic()
                if now >= self._next_check:
                    # Cleared first so a request registered during the scan lowers it.
                    self._next_check = math.inf
                    nxt = min(self._check_timeouts(now), now + _MAX_IDLE)
                    if nxt < self._next_check:
                        self._next_check = nxt
                timeout = self._next_check - now
                if not reading and timeout > _PARK_INTERVAL:
                    timeout = _PARK_INTERVAL
                events = sel.select(max(timeout, 0.0))
                sock_ready = False
                for key, ev in events:
                    if key.fileobj is wake:
                        self._drain_wake()
                    else:
                        if ev & selectors.EVENT_WRITE:
                            self._drain_out(sock)
                        if ev & selectors.EVENT_READ:
                            sock_ready = True
                if not reading:
                    seen, parked_seen = parked_seen, self._reads_seen()
                    if seen == parked_seen and not self._read_lock.locked():
                        reading = True  # no blocking caller read for a whole interval
                    continue
                if sock_ready:
                    if self._read_lock.acquire(False):
                        try:
                            if self._sock is sock:
                                self._read_some(sock)
                        finally:
                            self._read_lock.release()
                    else:
                        # A thread in blocking_request is reading the socket itself: step
                        # aside rather than wake on every byte it is about to consume.
                        reading = False
                        parked_seen = self._reads_seen()
        finally:
            if mask:
                try:
                    sel.unregister(sock)
                except (KeyError, ValueError, OSError):
                    pass

    def run(self) -> None:
        """Process reply and inform messages from the server (the client thread's body).

        Connects, reads and dispatches until :meth:`stop`; reconnects after a lost link
        when ``auto_reconnect`` is set.
        """
        if self._wake_r is None:
            self._init_run()
        self._io_ident = get_ident()
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ)
        failures = 0
        connected_at = 0.0
        try:
            while self._running_flag:
                sock = self._sock
                if sock is None:
                    if self._connect():
                        connected_at = _monotonic()
                        continue
                    if not self._auto_reconnect:
                        self._logger.error("Failed to connect to %s", self.bind_address_string)
                        break
                    failures += 1
                    self._backoff(failures)
                    continue
                self._serve(sel, sock)
                if self._sock is sock and self._running_flag:
                    continue
                if not self._running_flag:
                    break
                if not self._auto_reconnect:
                    break
                # A connection that lasted a while resets the backoff; a server that
                # accepts and drops at once keeps backing off.
                if _monotonic() - connected_at > self.reconnect_delay_max:
                    failures = 0
                failures += 1
                self._backoff(failures)
        except Exception:
            if self._excepthook is not None:
                self._excepthook(*sys.exc_info())
            else:
                self._logger.exception("Client thread for %s failed", self.bind_address_string)
        finally:
            self._running_flag = False
            with self._read_lock:
                self._link_lost("client stopped")
            self._fail_in_flight("Client stopped before reply was received")
            sel.close()
            self._close_wake()
            self._stopped.set()

    def _backoff(self, failures: int) -> None:
        delay = min(self.reconnect_delay_max, self.reconnect_delay_min * 2 ** (failures - 1))
        delay *= random.uniform(0.5, 1.0)
        deadline = _monotonic() + delay
        while self._running_flag:
            remaining = deadline - _monotonic()
            if remaining <= 0:
                return
            r, _ = _wait_fds([self._wake_r], [], remaining)
            if r:
                self._drain_wake()

    def _init_run(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._running_flag = True
        self._stopped.clear()

    def _close_wake(self) -> None:
        r, w = self._wake_r, self._wake_w
        self._wake_w = None
        for s in (r, w):
            if s is not None:
                s.close()
        self._wake_r = None

    def start(self, timeout: Optional[float] = None, daemon: bool = True,
              excepthook: Optional[Callable] = None) -> None:
        """Start the client in a new thread.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the thread to start running.
        daemon : bool, default True
            Make the client thread a daemon thread.
        excepthook : callable, optional
            Called as ``excepthook(type, value, traceback)`` if the thread fails.
        """
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("Device client already started.")
        self._excepthook = excepthook
        self._init_run()
        self._thread = threading.Thread(target=self.run, daemon=daemon,
                                        name=f"katcp-client-{self.bind_address_string}")
        self._thread.start()

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop a running client (from another thread).

        Requests still awaiting a reply fail with :class:`KatcpClientError`.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the client thread to finish.
        """
        if self._thread is None and not self._running_flag:
            raise RuntimeError("Call start() before stop()")
        self._running_flag = False
        self._abort_link()
        thread = self._thread
        if thread is not None and thread.ident != get_ident() and timeout is not None:
            thread.join(timeout)

    def join(self, timeout: Optional[float] = None) -> None:
        """Rejoin the client thread.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the thread to finish.
        """
        thread = self._thread
        if thread is not None and thread.ident != get_ident():
            thread.join(timeout)

    def running(self) -> bool:
        """Whether the client is running.

        Returns
        -------
        running : bool
        """
        return self._running_flag

    def is_connected(self) -> bool:
        """Check if the socket is currently connected.

        Returns
        -------
        connected : bool
        """
        return self._connected.is_set()

    def wait_running(self, timeout: Optional[float] = None) -> bool:
        """Wait until the client is running; returns whether it is."""
        return self._running_flag

    def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """Wait until the client is connected.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait.

        Returns
        -------
        connected : bool
        """
        return self._connected.wait(timeout)

    def wait_disconnected(self, timeout: Optional[float] = None) -> bool:
        """Wait until the client is disconnected; returns whether it is."""
        return self._disconnected.wait(timeout)

    def wait_protocol(self, timeout: Optional[float] = None) -> bool:
        """Wait until katcp protocol information has been received from the server.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait.

        Returns
        -------
        received : bool
            If True, the server's protocol information is in :attr:`protocol_flags`.
        """
        return self._received_protocol_info.wait(timeout)

    def disconnect(self) -> None:
        """Drop the current connection (it is re-established if ``auto_reconnect``)."""
        self._abort_link()

    def __enter__(self) -> "DeviceClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._running_flag:
            self.stop()
        self.join(5.0)


DeviceClient._request_handlers, DeviceClient._inform_handlers, DeviceClient._reply_handlers = \
    _handler_tables(DeviceClient)


class _Pending:
    """A request awaiting its reply."""

    __slots__ = ("key", "request", "reply_cb", "inform_cb", "user_data", "deadline",
                 "timeout", "keepalive", "lock", "informs", "reply", "error", "done",
                 "started")

    def __init__(self, key: Any, request: Message, timeout: Optional[float],
                 lock: Any = None, keepalive: bool = False) -> None:
        self.key = key
        self.request = request
        self.timeout = timeout
        self.started = _monotonic()
        self.deadline = math.inf if timeout is None else self.started + timeout
        self.reply_cb: Optional[Callable] = None
        self.inform_cb: Optional[Callable] = None
        self.user_data: Optional[tuple] = None
        self.keepalive = keepalive and timeout is not None
        self.lock: Any = lock  # held while a blocking caller waits; released on completion
        self.informs: Optional[list] = None if lock is None else []
        self.reply: Optional[Message] = None
        self.error: Optional[BaseException] = None
        self.done = False


class CallbackClient(DeviceClient):
    """Callback-based and blocking requests on top of :class:`DeviceClient`.

    Replies are matched to requests by message id when the server offers ids (so any
    number of requests may be outstanding), otherwise by name in order. A request that
    times out, or is in flight when the link drops or the client stops, is failed
    promptly: callbacks get a ``!name fail <reason>`` reply, blocking callers get a
    :class:`KatcpClientError` (:class:`KatcpTimeoutError` for a timeout).

    Parameters
    ----------
    host : str
    port : int
    tb_limit : int, optional
    timeout : float, optional
        Default request timeout in seconds (None: wait forever).
    logger : logging.Logger, optional
    auto_reconnect : bool, optional
    connect_timeout : float, optional

    Examples
    --------
    >>> c = CallbackClient('localhost', 10000)
    >>> c.start()
    >>> c.callback_request(Message.request('myreq'), reply_cb=print, inform_cb=print)
    >>> c.stop()
    >>> c.join()
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Replies and informs of tracked requests may bypass the handler chain only when
        # no subclass hooks into it.
        cls._fast_replies = (cls.handle_message is DeviceClient.handle_message
                             and cls.handle_reply is CallbackClient.handle_reply
                             and cls.handle_inform is CallbackClient.handle_inform
                             and cls._finish is CallbackClient._finish)

    def __init__(self, host: str, port: int, tb_limit: int = 20, timeout: Optional[float] = 5.0,
                 logger: logging.Logger = log, auto_reconnect: bool = True,
                 *, connect_timeout: float = 5.0) -> None:
        super().__init__(host, port, tb_limit=tb_limit, logger=logger,
                         auto_reconnect=auto_reconnect, connect_timeout=connect_timeout)
        self._request_timeout = check_timeout(timeout)
        self._pending: dict[Any, _Pending] = {}
        self._by_name: dict[str, deque] = {}
        self._key_counter = itertools.count(1)

    # ------------------------------------------------------------------ bookkeeping
    def _register(self, msg: Message, use_mid: Optional[bool], timeout: Optional[float],
                  lock: Any = None, keepalive: bool = False) -> _Pending:
        # ``lock``: a blocking caller's. It is set before the request enters the table,
        # where the I/O thread may expire it at once: a request expired without its lock
        # would be finished as a callback request and its caller would get no error.
        if msg.mtype != _REQUEST:
            raise ValueError(f"Expected a request message, got {msg!r}")
        if use_mid is None and msg.mid is None and self._server_supports_ids:
            # the common case, inline: a fresh mid from an atomic counter
            msg.mid = self._next_mid()
        else:
            self._assign_mid(msg, use_mid)
        mid = msg.mid
        if mid is not None:
            if mid in self._pending:
                raise KatcpClientError(f"A request with mid {mid!r} is already outstanding")
            p = _Pending(mid, msg, timeout, lock, keepalive)
            self._pending[mid] = p
        else:
            # No mid: replies match by name, oldest first. Integer keys never collide
            # with the bytes mids.
            p = _Pending(next(self._key_counter), msg, timeout, lock, keepalive)
            self._pending[p.key] = p
            queue = self._by_name.get(msg.name)
            if queue is None:
                queue = self._by_name[msg.name] = deque()
            queue.append(p)
        if p.deadline < self._next_check:
            self._next_check = p.deadline
            if get_ident() != self._io_ident:
                self._wake()  # the I/O thread would sleep past this deadline
        return p

    def _forget(self, p: _Pending) -> bool:
        """Remove a pending request; True if this call removed it (and owns finishing it)."""
        if self._pending.pop(p.key, None) is not p:
            return False
        if p.request.mid is None:
            queue = self._by_name.get(p.request.name)
            if queue is not None:
                try:
                    queue.remove(p)
                except ValueError:
                    pass
        return True

    def _pop_by_name(self, name: str) -> Optional[_Pending]:
        queue = self._by_name.get(name)
        while queue:
            p = queue.popleft()
            if self._pending.pop(p.key, None) is p:
                return p
        return None

    def _peek_by_name(self, name: str) -> Optional[_Pending]:
        queue = self._by_name.get(name)
        while queue:
            p = queue[0]
            if self._pending.get(p.key) is p:
                return p
            queue.popleft()
        return None

    def _finish(self, p: _Pending, reply: Optional[Message], error: Optional[BaseException],
                reason: str = "") -> None:
        """Complete a request already removed from the table."""
        if p.lock is not None:
            p.reply = reply
            p.error = error
            p.done = True
            p.lock.release()
            return
        p.done = True
        if reply is None:
            reply = Message.reply(p.request.name, "fail", reason, mid=p.request.mid)
        cb = p.reply_cb
        try:
            if cb is None:
                DeviceClient.handle_reply(self, reply)
            elif p.user_data is None:
                cb(reply)
            else:
                cb(reply, *p.user_data)
        except Exception:
            self._log_handler_error("Callback reply", reply)

    def _fail_in_flight(self, reason: str) -> None:
        pending = list(self._pending.values())
        for p in pending:
            if self._forget(p):
                err = KatcpClientError(
                    f"Request ?{p.request.name} to {self.bind_address_string} failed: {reason}")
                self._finish(p, None, err, reason)

    def _check_timeouts(self, now: float) -> float:
        nxt = math.inf
        for p in list(self._pending.values()):
            deadline = p.deadline
            if deadline <= now:
                if self._forget(p):
                    self._expire(p, now)
            elif deadline < nxt:
                nxt = deadline
        return nxt

    def _expire(self, p: _Pending, now: float) -> None:
        reason = f"Request {p.request.name} timed out after {now - p.started:.3f} seconds."
        self._finish(p, None, KatcpTimeoutError(
            f"Request ?{p.request.name} to {self.bind_address_string} timed out after "
            f"{now - p.started:.3f} s"), reason)

    # ------------------------------------------------------------------ dispatch
    def handle_reply(self, msg: Message) -> Any:
        """Handle a reply message related to a current request.

        Reply messages not related to a current request go up to the base class method
        (``reply_*`` handlers, then ``unhandled_reply``).

        Parameters
        ----------
        msg : Message
        """
        mid = msg.mid
        if mid is not None:
            p = self._pending.pop(mid, None)
        else:
            p = self._pop_by_name(msg.name) if self._by_name else None
        if p is None:
            return DeviceClient.handle_reply(self, msg)
        self._finish(p, msg, None)
        return None

    def handle_inform(self, msg: Message) -> Any:
        """Handle inform messages related to any current requests.

        Inform messages not related to a current request go up to the base class method
        (``inform_*`` handlers, then ``unhandled_inform``).

        Parameters
        ----------
        msg : Message
        """
        mid = msg.mid
        if mid is not None:
            p = self._pending.get(mid)
        else:
            p = self._peek_by_name(msg.name) if self._by_name else None
        if p is None:
            return DeviceClient.handle_inform(self, msg)
        if p.lock is not None:
            p.informs.append(msg)
            if p.keepalive:
                p.deadline = _monotonic() + p.timeout
            return None
        cb = p.inform_cb
        try:
            if cb is None:
                return DeviceClient.handle_inform(self, msg)
            if p.user_data is None:
                cb(msg)
            else:
                cb(msg, *p.user_data)
        except Exception:
            self._log_handler_error("Callback inform", msg)
        return None

    # ------------------------------------------------------------------ requests
    def callback_request(self, msg: Message, reply_cb: Optional[Callable] = None,
                         inform_cb: Optional[Callable] = None, user_data: Optional[tuple] = None,
                         timeout: Optional[float] = None, use_mid: Optional[bool] = None) -> None:
        """Send a request message; its reply and informs go to callbacks.

        Parameters
        ----------
        msg : Message
            The request message to send.
        reply_cb : callable, optional
            Called as ``reply_cb(msg)`` or ``reply_cb(msg, *user_data)``. On timeout,
            lost link or stop it gets a ``!name fail <reason>`` reply.
        inform_cb : callable, optional
            Called as ``inform_cb(msg)`` or ``inform_cb(msg, *user_data)``.
        user_data : tuple, optional
            Extra arguments for both callbacks.
        timeout : float, optional
            Seconds to wait for the reply (default: the client's timeout).
        use_mid : bool, optional
            Whether to use message ids (default: if the server offers them).

        Raises
        ------
        KatcpVersionError
            A mid is forced and the server does not offer message ids.
        """
        timeout = self._request_timeout if timeout is None else check_timeout(timeout)
        p = self._register(msg, use_mid, timeout)
        p.reply_cb = reply_cb
        p.inform_cb = inform_cb
        p.user_data = user_data
        try:
            self._send_bytes(encode_message(_REQUEST, msg.name, msg.arguments, msg.mid), timeout)
        except KatcpClientError as exc:
            if self._forget(p):
                self._finish(p, None, exc, str(exc))

    def future_request(self, msg: Message, timeout: Optional[float] = None,
                       use_mid: Optional[bool] = None) -> "concurrent.futures.Future":
        """Send a request message; returns a future of ``(reply, informs)``.

        The future is a :class:`concurrent.futures.Future` (katcp-python returns a
        tornado one). A timeout, lost link or stop resolves it with a ``!name fail``
        reply, as for :meth:`callback_request`.
        """
        future: concurrent.futures.Future = concurrent.futures.Future()
        informs: list[Message] = []

        def on_reply(reply: Message) -> None:
            future.set_result((reply, informs))

        try:
            self.callback_request(msg, reply_cb=on_reply, inform_cb=informs.append,
                                  timeout=timeout, use_mid=use_mid)
        except Exception as exc:
            future.set_exception(exc)
        return future

    def blocking_request(self, msg: Message, timeout: Optional[float] = None,
                         use_mid: Optional[bool] = None, keepalive: bool = False
                         ) -> tuple[Message, list[Message]]:
        """Send a request message and wait for its reply.

        Parameters
        ----------
        msg : Message
            The request message to send.
        timeout : float, optional
            Seconds to wait for the reply (default: the client's timeout); 0 does not
            wait (:class:`KatcpTimeoutError` at once); negative or non-finite values
            raise ``ValueError``.
        use_mid : bool, optional
            Whether to use message ids (default: if the server offers them).
        keepalive : bool, optional
            If True, every inform of this request restarts the timeout.

        Returns
        -------
        reply : Message
            The reply message received.
        informs : list of Message
            The inform messages of this request, in order.

        Raises
        ------
        KatcpTimeoutError
            No reply within the timeout.
        KatcpClientError
            Not connected, or the link dropped or the client stopped before the reply.
        KatcpVersionError
            A mid is forced and the server does not offer message ids.
        """
        return BlockingClient.blocking_request(self, msg, timeout, keepalive, use_mid)

    def _blocking_registered(self, msg: Message, timeout: Optional[float],
                             use_mid: Optional[bool], keepalive: bool
                             ) -> tuple[Message, list[Message]]:
        # The general path of blocking_request: the request is entered in the table of
        # pending requests, and whichever thread reads its reply completes it.
        me = get_ident()
        if me == self._dispatcher or me == self._io_ident:
            raise RuntimeError("blocking_request() cannot be called from a handler or "
                               "callback of the same client: it would wait for itself")
        lock = allocate_lock()
        lock.acquire()
        p = self._register(msg, use_mid, timeout, lock, keepalive)
        data = encode_message(_REQUEST, msg.name, msg.arguments, msg.mid)
        # Fast path: take the reader role before sending, so the reply is read by this
        # thread with no hand-off (large requests skip it: while we hold the reader role
        # nobody drains the socket, and a long write could stall on a full window).
        read_lock = self._read_lock
        reading = len(data) < 65536 and read_lock.acquire(False)
        try:
            try:
                with self._write_lock:
                    sock = self._sock
                    if sock is None:
                        raise KatcpClientError(
                            f"Not connected to device {self.bind_address_string}")
                    self._write_all(sock, data, timeout)
            except KatcpClientError:
                self._forget(p)
                raise
            if reading:
                self._direct_reads += 1
                self._read_until_done(p)
        finally:
            if reading:
                read_lock.release()
        if not p.done:
            self._wait(p)
        if p.error is not None:
            raise p.error
        return p.reply, p.informs

    def _wait(self, p: _Pending) -> None:
        read_lock = self._read_lock
        lock = p.lock
        while not p.done:
            remaining = p.deadline - _monotonic()
            if remaining <= 0:
                if self._forget(p):
                    self._expire(p, _monotonic())
                    return
                # Completed concurrently by another thread: its release is imminent.
                lock.acquire(True, 1.0)
                continue
            if read_lock.acquire(False):
                try:
                    self._direct_reads += 1
                    self._read_until_done(p)
                finally:
                    read_lock.release()
            else:
                # Another thread reads; it completes us by releasing our lock. Look
                # again now and then in case it leaves before our reply comes.
                lock.acquire(True, min(remaining, _PARK_INTERVAL))

    def _read_until_done(self, p: _Pending) -> None:
        # Caller holds the read lock: this thread reads and dispatches the stream itself.
        key = p.key if p.key.__class__ is bytes else b""  # b"": matches no reply
        while not p.done:
            sock = self._sock
            if sock is None or self._poll is None:
                # No link: lost before we got here (the loss already failed p) or being
                # re-established; wait for the deadline or the loss to complete us.
                return
            remaining = p.deadline - _monotonic()
            if remaining <= 0:
                return
            try:
                items = self._read_items(sock, remaining, key)
            except OSError as exc:
                self._link_lost(f"read error: {exc}")
                return
            if items is None:
                self._link_lost("connection closed by server")
                return
            if items.__class__ is _Message:
                # The usual case: the read was exactly our reply; hand it over here.
                if self._fast_replies and self._pending.pop(p.key, None) is p:
                    p.reply = items
                    p.done = True
                    p.lock.release()
                    return
                items = [items]
            self._dispatch_items(items)

    def _read_items(self, sock: socket.socket, remaining: float, mid: bytes) -> Any:
        """One read by the thread holding the read lock, waiting at most about
        ``remaining`` s: the reply with message id ``mid`` itself if the read was
        exactly that (compiled path), else the parsed items (``[]`` if nothing came),
        or ``None`` at end of stream. Raises OSError for a broken link."""
        try:
            if self._blocking_reads and remaining > _RCV_SLICE:
                # waits up to _RCV_SLICE (SO_RCVTIMEO): BlockingIOError after that
                return self._parser.recv_reply(sock.fileno(), mid)
            # near the deadline, poll() waits exactly what is left
            if not self._poll.poll(min(remaining, 3600.0) * 1000.0 + 1):
                return []
            chunk = sock.recv(_RECV_SIZE, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return []
        return self._parser.feed(chunk) if chunk else None

    def _direct_rest(self, msg: Message, got: Any, started: float,
                     timeout: Optional[float], keepalive: bool
                     ) -> tuple[Message, list[Message]]:
        """The rest of a direct request after RoundTrip.request() (reader role held):
        finish sending, then read until the reply, keeping its informs and
        dispatching anything else as usual."""
        mid = msg.mid
        deadline = math.inf if timeout is None else started + timeout
        if got.__class__ is tuple:
            # Not all of it went out in one non-blocking send.
            sent, data = got
            with self._write_lock:
                sock = self._sock
                if sock is None:
                    raise KatcpClientError(
                        f"Not connected to device {self.bind_address_string}")
                if sent > 0:
                    self._write_rest(sock, data, sent, timeout)
                else:
                    self._write_all(sock, data, timeout)
            items: Any = []
        else:
            items = got
        informs: list[Message] = []
        while True:
            if items is False or items is None:
                reason = ("client stopped" if not self._running_flag
                          else "connection closed by server")
                self._link_lost(reason)
                raise KatcpClientError(
                    f"Request ?{msg.name} to {self.bind_address_string} failed: {reason}")
            reply = None
            others = None
            for item in items:
                if (reply is None and not isinstance(item, KatcpSyntaxError)
                        and item.mid == mid):
                    if item.mtype == _REPLY:
                        reply = item
                        continue
                    if item.mtype == _INFORM:
                        informs.append(item)
                        if keepalive and timeout is not None:
                            deadline = _monotonic() + timeout
                        continue
                if others is None:
                    others = [item]
                else:
                    others.append(item)
            if others is not None:
                self._dispatch_items(others)
            if reply is not None:
                return reply, informs
            remaining = deadline - _monotonic()
            if remaining <= 0:
                # (raised outside the try: KatcpTimeoutError is an OSError)
                raise KatcpTimeoutError(
                    f"Request ?{msg.name} to {self.bind_address_string} "
                    f"timed out after {_monotonic() - started:.3f} s")
            sock = self._sock
            try:
                if sock is None:
                    raise OSError("not connected")
                items = self._read_items(sock, remaining, mid)
            except (OSError, AttributeError) as exc:  # AttributeError: no poll
                self._link_lost(f"read error: {exc}")
                raise KatcpClientError(
                    f"Request ?{msg.name} to {self.bind_address_string} "
                    f"failed: {exc}") from exc
            if items.__class__ is _Message:
                return items, informs


CallbackClient._fast_replies = True

#: katcp-python's name for the callback client's base class.
AsyncClient = CallbackClient


class BlockingClient(CallbackClient):
    """Blocking requests on top of :class:`DeviceClient`.

    This client will use message ids if the server supports them.

    Parameters
    ----------
    host : str
    port : int
    tb_limit : int, optional
    timeout : float, optional
        Default request timeout in seconds.
    logger : logging.Logger, optional
    auto_reconnect : bool, optional
    connect_timeout : float, optional

    Examples
    --------
    >>> c = BlockingClient('localhost', 10000)
    >>> c.start()
    >>> reply, informs = c.blocking_request(Message.request('myreq'))
    >>> c.stop()
    >>> c.join()
    """

    def blocking_request(self, msg: Message, timeout: Optional[float] = None,
                         keepalive: bool = False, use_mid: Optional[bool] = None
                         ) -> tuple[Message, list[Message]]:
        """Send a request message and wait for its reply.

        The parameter order is the documented one of ``BlockingClient`` (``keepalive``
        before ``use_mid``); see :meth:`CallbackClient.blocking_request`.

        Parameters
        ----------
        msg : Message
        timeout : float, optional
            Seconds to wait for the reply (default: the client's timeout).
        keepalive : bool, optional
            If True, every inform of this request restarts the timeout.
        use_mid : bool, optional
            Whether to use message ids (default: if the server offers them).

        Returns
        -------
        reply : Message
        informs : list of Message

        Raises
        ------
        ValueError
            ``timeout`` is negative or not finite.
        KatcpTimeoutError
            No reply within the timeout; at once, without sending, for ``timeout=0``.
        """
        if timeout is None:
            timeout = self._request_timeout
        else:
            timeout = check_timeout(timeout)
        if timeout == 0:
            # "Don't wait": nothing could be read back, so nothing is sent either.
            raise KatcpTimeoutError(f"Request ?{msg.name} to {self.bind_address_string} "
                                    "timed out: timeout is 0 s (not waiting)")
        read_lock = self._read_lock
        if (use_mid is None and msg.mid is None and self._server_supports_ids
                and self._fast_replies and self._blocking_reads
                and (timeout is None or timeout > _RCV_SLICE)
                and msg.__class__ is _Message and msg.mtype == _REQUEST
                and read_lock.acquire(False)):
            # The common case (it is the hottest path of the library): with a fresh mid
            # and the reader role held from before the send until the reply, nobody
            # else can see the reply, so the request is not even entered in the table
            # of pending requests. The compiled RoundTrip gives the mid, sends, and
            # reads once; usually what it read is exactly the reply.
            try:
                started = _monotonic()
                got = self._roundtrip.request(msg)
                if got.__class__ is _Message:
                    return got, []  # type: ignore[return-value]
                if got is not None:
                    return self._direct_rest(msg, got, started, timeout, keepalive)
            finally:
                read_lock.release()
        return self._blocking_registered(msg, timeout, use_mid, keepalive)


def request_check(client: CallbackClient, exception: type, *msg_parms: Any,
                  **kwargs: Any) -> tuple[Message, list[Message]]:
    """Make a blocking request and raise ``exception`` if the reply is not ok.

    Parameters
    ----------
    client : CallbackClient
    exception : type
        Exception class to raise on a non-ok reply.
    *msg_parms
        Request name and arguments, as for ``Message.request``.
    **kwargs
        ``timeout`` is passed to ``blocking_request``; ``mid`` to ``Message.request``.

    Returns
    -------
    reply, informs
    """
    req = Message.request(*msg_parms, mid=kwargs.get("mid"))
    reply, informs = client.blocking_request(req, timeout=kwargs.get("timeout"))
    if not reply.reply_ok():
        raise exception(f'Unexpected failure reply "{reply}"\n with device at '
                        f'{client.bind_address_string}, request \n"{req}"')
    return reply, informs
