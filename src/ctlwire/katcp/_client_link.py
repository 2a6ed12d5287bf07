"""The link of a threaded KATCP client: socket, I/O thread, reconnection, write queue.

:class:`ClientLink` is the transport under ``DeviceClient`` (``_client_device``) and
its subclasses: it connects (and reconnects with a bounded randomised backoff), runs
the I/O thread that waits on the socket with a selector and hands what it reads to
:meth:`ClientLink._dispatch_chunk`, and writes without ever blocking, queueing what the
kernel cannot take at once for the I/O thread. It knows nothing of requests or
handlers: the layers above fill in the hooks (``_dispatch_chunk``, ``_reset_session``,
``_fail_in_flight``, ``_check_timeouts``, ``notify_connected``).

Threading model
---------------
* Exactly one thread at a time reads and dispatches messages (it holds the *read lock*):
  normally the client's I/O thread, or a thread waiting in ``blocking_request``.
* Writes go straight to the socket under the *write lock*; those made while a chunk of
  input is being dispatched (from handlers and callbacks) are batched into one write.

Layering: imports ``ctlwire.katcp.core`` and the compiled ``ctlwire.katcp._roundtrip``
(the socket half of ``blocking_request``).
"""
from __future__ import annotations

import errno
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
from _thread import allocate_lock, get_ident
from typing import Any, Callable, Optional

from ctlwire._ext import load_extension
from ctlwire.katcp.core import KatcpClientError, Message, StreamParser

RoundTrip = load_extension("ctlwire.katcp._roundtrip").RoundTrip

__all__ = ["ClientLink"]

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


def _literal_address(host: str, port: int) -> list:
    """``getaddrinfo``'s answer for a numeric IPv4 or IPv6 address, without asking it
    (the resolver costs a few ms the first time: it loads the IDNA codec); ``[]`` for
    a name."""
    for family, addr in ((socket.AF_INET, (host, port)),
                         (socket.AF_INET6, (host, port, 0, 0))):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError, TypeError):
            continue
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", addr)]
    return []


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


class ClientLink:
    """One client's connection to a KATCP server, run by its own I/O thread.

    Parameters
    ----------
    host : str
        Server host name or address (empty: 127.0.0.1).
    port : int
        Server TCP port.
    logger : logging.Logger
        Where to log.
    auto_reconnect : bool
        Reconnect after a failed connect or a lost link.
    connect_timeout : float
        Seconds allowed for one TCP connect attempt.
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

    def __init__(self, host: str, port: int, logger: logging.Logger,
                 auto_reconnect: bool, connect_timeout: float) -> None:
        if not host:
            host = "127.0.0.1"
        self._bindaddr = (host, int(port))
        self._logger = logger
        self._auto_reconnect = auto_reconnect
        self.connect_timeout = connect_timeout
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
        # Ident of the thread dispatching a chunk of input, 0 if none: its writes are
        # batched in _outbuf.
        self._dispatching_thread = 0
        self._direct_reads = 0  # times a blocking caller took the reader role
        # The I/O thread has stepped aside for blocking callers (see _serve), and a
        # request whose reply it must read asks it back at once (_unpark).
        self._parked = False
        self._unpark_asked = False
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
        self._stopped = threading.Event()
        self._stopped.set()
        self._excepthook: Optional[Callable] = None
        self.last_connect_time: Optional[float] = None

    # ------------------------------------------------------------------ hooks (layers above)
    def _dispatch_chunk(self, data: Any) -> None:
        """Parse and dispatch bytes read from the server (caller holds the read lock)."""
        raise NotImplementedError

    def _reset_session(self) -> None:
        """Forget what was learnt from the previous connection (a new one is up)."""

    def _fail_in_flight(self, reason: str) -> None:
        """Fail every request awaiting a reply (overridden by clients that track them)."""

    def _check_timeouts(self, now: float) -> float:
        """Expire overdue requests; return the next deadline (inf if none)."""
        return math.inf

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

    # ------------------------------------------------------------------ address
    @property
    def bind_address(self) -> tuple[str, int]:
        """The ``(host, port)`` of the server."""
        return self._bindaddr

    @property
    def bind_address_string(self) -> str:
        """The server address as ``host:port``."""
        return f"{self._bindaddr[0]}:{self._bindaddr[1]}"

    # ------------------------------------------------------------------ writing
    def _send_bytes(self, data: bytes, timeout: Optional[float]) -> None:
        if self._dispatching_thread == get_ident():
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

    # ------------------------------------------------------------------ connection life-cycle
    def _connect(self) -> bool:
        """Try each address of the server once; True when connected."""
        host, port = self._bindaddr
        try:
            infos = _literal_address(host, port) or socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM)
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
        self._reset_session()
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

    def _unpark(self) -> None:
        """A request whose reply the I/O thread reads (a callback or future request)
        was sent: if it has stepped aside for blocking callers, it takes the reader role
        back now rather than after a quiet interval."""
        if self._parked and get_ident() != self._io_ident:
            self._unpark_asked = True
            self._wake()

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
                    if self._unpark_asked or (seen == parked_seen
                                              and not self._read_lock.locked()):
                        # no blocking caller read for a whole interval, or a reply
                        # only this thread will read is on its way
                        reading = True
                        self._parked = self._unpark_asked = False
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
                        self._parked = True
                        parked_seen = self._reads_seen()
        finally:
            self._parked = self._unpark_asked = False
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

    def disconnect(self) -> None:
        """Drop the current connection (it is re-established if ``auto_reconnect``)."""
        self._abort_link()

    def __enter__(self) -> "ClientLink":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._running_flag:
            self.stop()
        self.join(5.0)
