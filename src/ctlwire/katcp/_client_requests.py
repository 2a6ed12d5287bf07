"""Request tracking of the threaded clients: ``CallbackClient`` and ``BlockingClient``.

Replies are matched to requests by message id when the server offers ids (so any
number of requests may be outstanding), otherwise by name in order. A request that
times out, or is in flight when the link drops or the client stops, is failed
promptly. ``BlockingClient.blocking_request``'s usual case (the hottest path of the
library) is compiled: ``ctlwire.katcp._roundtrip.RoundTrip`` sends and reads once for
the caller, who holds the reader role; every other case is handled here.

Layering: imports ``_client_device``, ``_client_link`` (its constants) and
``ctlwire.katcp.core`` / ``exceptions``.
"""
from __future__ import annotations

import concurrent.futures
import itertools
import logging
import math
import socket
from _thread import allocate_lock, get_ident
from collections import deque
from typing import Any, Callable, Optional

from ctlwire.katcp._client_device import DeviceClient
from ctlwire.katcp._client_link import (_DONTWAIT, _PARK_INTERVAL, _RCV_SLICE, _RECV_SIZE,
                                        _Message, _monotonic, log)
from ctlwire.katcp.core import (
    KatcpClientError,
    KatcpSyntaxError,
    Message,
    check_timeout,
    encode_message,
)
from ctlwire.katcp.exceptions import KatcpTimeoutError

__all__ = ["CallbackClient", "AsyncClient", "BlockingClient", "request_check"]

_REQUEST, _REPLY, _INFORM = Message.REQUEST, Message.REPLY, Message.INFORM


class _Pending:
    """A request awaiting its reply."""

    __slots__ = ("key", "request", "reply_cb", "inform_cb", "user_data", "deadline",
                 "timeout", "keepalive", "lock", "informs", "reply", "error", "done",
                 "started")

    def __init__(self, key: Any, request: Message, timeout: Optional[float]) -> None:
        self.key = key
        self.request = request
        self.timeout = timeout
        self.started = _monotonic()
        self.deadline = math.inf if timeout is None else self.started + timeout
        self.reply_cb: Optional[Callable] = None
        self.inform_cb: Optional[Callable] = None
        self.user_data: Optional[tuple] = None
        self.keepalive = False
        self.lock: Any = None  # held while a blocking caller waits; released on completion
        self.informs: Optional[list] = None
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
            p = _Pending(mid, msg, timeout)
            if lock is not None:
                p.lock, p.informs, p.keepalive = lock, [], keepalive and timeout is not None
            self._pending[mid] = p
        else:
            # No mid: replies match by name, oldest first. Integer keys never collide
            # with the bytes mids.
            p = _Pending(next(self._key_counter), msg, timeout)
            if lock is not None:
                p.lock, p.informs, p.keepalive = lock, [], keepalive and timeout is not None
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
        else:
            if self._parked:
                self._unpark()

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
        if me == self._dispatching_thread or me == self._io_ident:
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
                return self._roundtrip.recv_reply(sock.fileno(), mid)
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
