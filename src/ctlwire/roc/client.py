"""RocClient: proxies that behave like remote objects.

One DEALER socket per client carries every call; calls are matched to replies by the
JSON-RPC ``id``.  No thread of its own: a calling thread that finds nobody reading
the socket becomes the *leader*, sends and reads replies for everyone, and hands the
role on when its own reply is in (leader/follower).  Other threads queue their
request in an outbox and poke the leader through a pipe.  So a single-threaded caller
pays no thread hand-off, and many threads can have calls in flight at once.

The socket has ``ZMQ_IMMEDIATE`` set: a call is never queued for a broker that is not
connected, so it cannot run long after its caller gave up.

Calls that run once (``retry=True``, the default): every request carries the client's
id next to its JSON-RPC id (a sequence number), and servers keep their recent replies
per client, so the client may send a call again when its reply may have been lost.
It does so, within the call's timeout, when the connection to the broker drops (a
broker killed or restarted: seen on the socket's monitor when a wait times out), when
a standby broker says it is not active (then it moves on to the next broker in its
list), and when a call it resent meets a broker that has no server yet.
"""
from __future__ import annotations

import builtins
import itertools
import logging
import os
import threading
import time
from collections import deque
from threading import get_ident
from typing import Any

import zmq

from ctlwire import _json
from ctlwire._curve import apply_client_trusting
from ctlwire._zmq import make_socket
from ctlwire.roc import rpc
from ctlwire.roc._fastzmq import poller, wire
from ctlwire.roc.endpoints import Endpoints, resolve_all

_MDPC = b"MDPC01"
log = logging.getLogger("ctlwire.roc.client")

#: Longest a waiting leader sleeps before it looks at the connection's monitor: how
#: soon a dead broker is noticed (and its calls resent).
_LINK_CHECK = 0.1
#: Longest a leader waits in one blocking receive while only one thread has ever used
#: the client (it then does not watch the wake-up pipe): how late the first call of a
#: second thread can go out.
_SOLO_SLICE = 0.02
#: Pause before a call refused by a broker without a server is sent again.
_RETRY_PAUSE = 0.05
#: How long calls may wait for a connection before a client with several brokers
#: tries the next one.
_CONNECT_PATIENCE = 0.5


class RocError(Exception):
    """Base of every error a ROC call raises locally."""


class RocTimeout(RocError, TimeoutError):
    """No reply within the timeout; the call may or may not have run."""


class BrokerUnavailable(RocTimeout):
    """The broker could not be reached within the timeout; the call was not sent."""


class UnknownObjectError(RocError, LookupError):
    """No server serves the object id (the broker said so)."""


class WorkerLostError(RocError):
    """The server died or left during the call; it may or may not have run."""


class ProtocolError(RocError):
    """The peer sent something that is not a valid ROC reply."""


class RemoteError(RocError):
    """An exception raised by the remote object.

    Attributes
    ----------
    type_name : str
        Name of the remote exception's class (``'ValueError'``).
    remote_message : str
        ``str()`` of the remote exception.
    remote_traceback : str
        The formatted remote traceback (also attached as a note).
    code : int
        The JSON-RPC error code.
    """

    def __init__(self, message: str, type_name: str = "", remote_message: str = "",
                 remote_traceback: str = "", code: int = rpc.REMOTE_EXCEPTION) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        self.code = code


_remote_classes: dict[str, type] = {}


def _remote_class(type_name: str, module: str) -> type:
    """A subclass of RemoteError and the builtin exception of that name, if any, so
    ``except ValueError`` catches a remote ``ValueError``."""
    if module != "builtins":
        return RemoteError
    cls = _remote_classes.get(type_name)
    if cls is None:
        base = getattr(builtins, type_name, None)
        cls = RemoteError
        if isinstance(base, type) and issubclass(base, Exception) and base is not Exception:
            try:
                cls = type(f"Remote{type_name}", (RemoteError, base), {})
            except TypeError:  # incompatible layout: plain RemoteError it is
                cls = RemoteError
        _remote_classes[type_name] = cls
    return cls


def _raise_error(err: Any, what: str) -> None:
    if not isinstance(err, dict):
        raise ProtocolError(f"{what}: malformed error member {err!r}")
    code = err.get("code")
    message = str(err.get("message", ""))
    if code == rpc.NO_WORKER:
        raise UnknownObjectError(f"{what}: {message}")
    if code == rpc.WORKER_LOST:
        raise WorkerLostError(f"{what}: {message}")
    if code == rpc.QUEUE_FULL:
        raise RocError(f"{what}: {message}")
    data = err.get("data")
    if isinstance(data, dict) and "type" in data:
        type_name = str(data.get("type"))
        cls = _remote_class(type_name, str(data.get("module", "")))
        rmsg = str(data.get("message", ""))
        tb = str(data.get("traceback", ""))
        try:
            exc = cls(f"{type_name}: {rmsg}", type_name, rmsg, tb, code)
        except Exception:  # noqa: BLE001 - a builtin with an odd constructor
            exc = RemoteError(f"{type_name}: {rmsg}", type_name, rmsg, tb, code)
        if tb and hasattr(exc, "add_note"):
            exc.add_note(f"--- remote traceback ({what}) ---\n{tb.rstrip()}")
        raise exc
    raise RemoteError(f"{what}: {message} (JSON-RPC error {code})", "", message, "",
                      code if isinstance(code, int) else 0)


class _Slot:
    __slots__ = ("reply", "msg", "deadline", "sent", "cancelled", "oid", "method", "event",
                 "progress", "resent")

    def __init__(self, msg: list, deadline: float, oid: str, method: str) -> None:
        self.reply: Any = None
        self.msg = msg
        self.deadline = deadline
        self.sent = False
        self.cancelled = False
        self.oid = oid          # object id and method name, for error messages only
        self.method = method
        # created only when a thread has to wait for another thread's reading
        self.event: threading.Event | None = None
        # called with each progress value of a streaming call, or None
        self.progress: Any = None
        self.resent = 0         # times sent again after a possible loss


class RocFuture:
    """A call in flight; :meth:`result` waits for it.  Made by
    :meth:`RocClient.call_async`."""

    __slots__ = ("_client", "_id", "_slot")

    def __init__(self, client: "RocClient", call_id: int, slot: _Slot) -> None:
        self._client = client
        self._id = call_id
        self._slot = slot

    def done(self) -> bool:
        """Whether the reply has arrived (does not read the socket)."""
        return self._slot.reply is not None

    def result(self) -> Any:
        """Wait (within the client's timeout from the call) and return the result.

        Raises
        ------
        RemoteError, RocTimeout, BrokerUnavailable, UnknownObjectError, WorkerLostError
        """
        return self._client._finish(self._id, self._slot)


class RocClient:
    """Remote Object Call client.

    Parameters
    ----------
    broker_addr : Endpoints or str or list or None
        Network endpoint of the broker: :class:`Endpoints`, ``tcp://host:port``,
        ``host[:baseport]``, or ``None`` for ``$CTLWIRE_ROC_BROKER`` / localhost:5555.
        Several brokers (a list, or commas): the primary first, then its standbys;
        the client uses one at a time and moves on when it dies or says it is
        passive.
    ctx : zmq.Context, optional
        ZeroMQ context to use.
    timeout : float
        Timeout in seconds for each call (for a streaming call: between progress
        values).
    retry : bool
        Send the client id with each call and send a call again, within its
        timeout, when its reply may have been lost (see the module docstring).
        ``False`` gives the old behaviour: a call is sent once, whatever happens.
    security : CurveSecurity, optional
        This client's CURVE key pair; with ``broker_key`` the connection is
        encrypted and the broker must allow our public key.
    broker_key : bytes, optional
        The broker's z85 public key.

    Examples
    --------
    >>> c = RocClient(Endpoints('127.0.0.1'))    # doctest: +SKIP
    >>> vnir = c['vnir']                         # doctest: +SKIP
    >>> vnir.openShutter()                       # doctest: +SKIP
    >>> vnir.fps                                 # doctest: +SKIP
    10.0
    """

    def __init__(self, broker_addr: Endpoints | str | list | None = None,
                 ctx: zmq.Context | None = None, timeout: float = 2.0, *,
                 retry: bool = True, security: Any = None,
                 broker_key: bytes | None = None) -> None:
        self.endpoints = resolve_all(broker_addr, "rocBroker")
        self.endpoint = self.endpoints[0]
        timeout = float(timeout)
        # docs/cli.md: negative or non-finite is an error; 0 means "don't wait"
        if not 0 <= timeout < float("inf"):
            raise ValueError(f"timeout must be a finite number of seconds >= 0, "
                             f"got {timeout!r}")
        self.timeout = timeout
        if (security is None) != (broker_key is None):
            raise ValueError("security and broker_key go together")
        ctx = ctx if ctx is not None else zmq.Context.instance()
        self._sock = make_socket(ctx, zmq.DEALER, sndhwm=100_000, rcvhwm=100_000)
        # never queue calls for a broker that is not there (see module docstring)
        self._sock.setsockopt(zmq.IMMEDIATE, 1)
        apply_client_trusting(security, self._sock, broker_key)
        #: This client's id, sent with every call when ``retry`` is on.
        self.client_id = os.urandom(8).hex() if retry else None
        self.retry = retry
        self._monitor = self._sock.get_monitor_socket(
            zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED) if retry else None
        self._unsent_since = 0.0
        self._later: list[tuple[float, _Slot]] = []   # (when, slot) to send again
        #: Calls sent again after a possible loss; broker switches made.
        self.resends = 0
        self.failovers = 0
        self._sock.connect(self.endpoint)
        self._recv, self._send_raw = wire(self._sock)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poll = poller(self._sock, self._wake_r)
        # While one thread alone has used the client, its leader waits in a blocking
        # receive (libzmq's own wait: about half the system calls of a poll over the
        # socket and the wake-up pipe); a second thread ends that for good.
        self._thread: int | None = None
        self._solo = True
        self._rcvtimeo = -2
        # guards _leader, _outbox and _followers; the socket belongs to the leader
        self._lock = threading.Lock()
        self._leader = False
        self._followers: set[_Slot] = set()
        self._pending: dict[Any, _Slot] = {}
        self._outbox: deque[_Slot] = deque()   # waiting for the leader to send
        self._unsent: deque[_Slot] = deque()   # the leader's, blocked by IMMEDIATE
        self._ids = itertools.count(1)
        self._closed = False
        self._closing = False  # set first by close(): leaders stop after their slice
        self._proxies: dict[str, RocProxy] = {}
        self._mmi_lock = threading.Lock()
        #: Replies that matched no pending call (late after a timeout), dropped.
        self.stray_replies = 0

    # -- public API --------------------------------------------------------
    def __getitem__(self, objectId: str) -> "RocProxy":
        """A proxy for the object ``objectId`` (cached per id)."""
        proxy = self._proxies.get(objectId)
        if proxy is None:
            proxy = self._proxies[objectId] = RocProxy(self, objectId)
        return proxy

    def call(self, objectId: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` of ``objectId`` and return its result."""
        return self._call(objectId, method, args, kwargs)

    def call_async(self, objectId: str, method: str, *args: Any,
                   on_progress: Any = None, **kwargs: Any) -> RocFuture:
        """Send a call without waiting for its reply; :meth:`RocFuture.result`
        collects it (the timeout runs from now).

        ``on_progress`` (a reserved keyword) is called with each value a streaming
        (generator) method yields, in order, by the thread that reads this client's
        socket (the one waiting in ``result()`` or in another call).

        The call is on its way when this returns, whether or not ``result()`` is ever
        called. Only while no broker is connected (the client just made, or the broker
        down) does this wait, up to the timeout, for one to send the call to; if none
        comes, the call is dropped unsent and ``result()`` raises
        :class:`BrokerUnavailable`.
        """
        return self._call_async(objectId, method, args, kwargs, on_progress)

    def _call_async(self, objectId: str, method: str, args: tuple, kwargs: dict,
                    on_progress: Any) -> RocFuture:
        if self._solo and get_ident() != self._thread:
            self._note_thread()
        call_id, slot = self._make(objectId, method, args, kwargs)
        slot.progress = on_progress
        with self._lock:
            if self._register(call_id, slot):
                return RocFuture(self, call_id, slot)
            # Nobody reads the socket and nobody can start to while we hold the lock:
            # send from here, without taking the lead (a lock round trip less per call).
            if not self._unsent and self._send_raw(slot.msg):
                slot.sent = True
                return RocFuture(self, call_id, slot)
            self._leader = True
        self._send(slot)
        # We lead and no broker is connected yet (ZMQ_IMMEDIATE kept the call
        # back). Nobody may be about to read this client's socket, so keep
        # leading until it is sent: a call handed out as "sent" must not wait
        # for a result() that may never come.
        try:
            while self._unsent and not self._closing:
                remaining = slot.deadline - time.monotonic()
                if remaining <= 0:
                    # result() reports it (BrokerUnavailable); it must not go out later
                    slot.cancelled = True
                    break
                self._pump(min(remaining, 0.25))
        finally:
            self._release()
        return RocFuture(self, call_id, slot)

    def service_available(self, objectId: str) -> bool:
        """Ask the broker (8/MMI ``mmi.service``) whether a server serves ``objectId``."""
        return self._mmi("mmi.service", objectId) == b"200"

    def broker_state(self) -> str:
        """``'active'`` or ``'passive'`` (a standby): the broker in use now
        (``mmi.state``, a ctlwire extension of 8/MMI)."""
        return self._mmi("mmi.state", "").decode("ascii", "replace")

    def objects(self) -> dict[str, dict]:
        """Every object the broker serves now, with what its server declared.

        Returns
        -------
        dict
            ``{object id: {"methods": {name: doc}, "attributes": {name: doc},
            "generators": [names]}}``, from ``mmi.directory`` (a ctlwire extension
            of 8/MMI listing the object ids with a live server) and each object's
            ``rpc.describe``.  An object whose server does not answer within the
            timeout is listed with an ``"error"``.
        """
        names = _json.loads(self._mmi("mmi.directory", ""))
        futures = {n: self.call_async(n, rpc.DESCRIBE) for n in names}
        out: dict[str, dict] = {}
        for name, fut in futures.items():
            try:
                d = fut.result()
            except RocError as exc:
                out[name] = {"error": str(exc)}
                continue
            docs = d.get("docs", {})
            out[name] = {"methods": {m: docs.get(m, "") for m in d.get("methods", ())},
                         "attributes": {a: docs.get(a, "")
                                        for a in d.get("attributes", ())},
                         "generators": list(d.get("generators", ()))}
        return out

    def close(self) -> None:
        """Close the socket; calls still waiting fail with :class:`RocError`."""
        deadline = time.monotonic() + 2.0
        with self._lock:
            self._closing = True
            for slot in self._followers:  # waiting threads give up instead of leading
                if slot.event is not None:
                    slot.event.set()
        while True:
            with self._lock:
                if self._closed:
                    return
                if not self._leader or time.monotonic() > deadline:
                    # take the socket away from any future leader
                    self._closed = True
                    self._leader = True
                    break
            time.sleep(0.005)  # a leader finishes its poll slice (<= 0.25 s)
        if self._monitor is not None:
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(0)
        self._sock.close(0)
        os.close(self._wake_r)
        os.close(self._wake_w)
        for slot in list(self._followers):
            if slot.event is not None:
                slot.event.set()

    def __enter__(self) -> "RocClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- machinery -------------------------------------------------------
    def _make(self, objectId: str, method: str, args: tuple, kwargs: dict) -> tuple:
        call_id = next(self._ids)
        body = rpc.encode_request(call_id, method, args, kwargs, self.client_id)
        slot = _Slot([b"", _MDPC, objectId.encode("utf-8"), body],
                     time.monotonic() + self.timeout, objectId, method)
        return call_id, slot

    def _call(self, objectId: str, method: str, args: tuple, kwargs: dict) -> Any:
        if self._solo and get_ident() != self._thread:
            self._note_thread()
        call_id, slot = self._make(objectId, method, args, kwargs)
        if self._enqueue(call_id, slot):
            # uncontended: we already lead, read until our reply is in
            try:
                while slot.reply is None and not self._closing:
                    remaining = slot.deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._pump(min(remaining, _LINK_CHECK), slot)
            finally:
                self._release()
        return self._finish(call_id, slot)

    def _enqueue(self, call_id: Any, slot: _Slot) -> bool:
        """Register and send (or hand to the leader); True if we are now leader."""
        with self._lock:
            if self._register(call_id, slot):
                return False
            self._leader = True
        self._send(slot)
        return True

    def _register(self, call_id: Any, slot: _Slot) -> bool:
        """(with the lock held) Await the reply of ``slot``; True when another thread
        leads, which then sends it, False when the caller must see to sending it."""
        if self._closing:
            raise RocError("client is closed")
        self._pending[call_id] = slot
        if self._leader:
            self._hand_to_leader(slot)
            return True
        return False

    def _hand_to_leader(self, slot: _Slot) -> None:
        # with the lock held
        self._outbox.append(slot)
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:  # pipe full: the leader is already woken
            pass

    def _release(self) -> None:
        """Give up leadership; wake waiting threads so one of them takes over."""
        while True:
            with self._lock:
                if not self._outbox:
                    self._leader = False
                    followers = self._followers
                    if followers:
                        for slot in followers:
                            slot.event.set()  # type: ignore[union-attr]
                    return
                out = list(self._outbox)
                self._outbox.clear()
            # calls queued while we led must not wait for the next leader to go out
            for slot in out:
                if not slot.cancelled:
                    self._send(slot)

    def _send(self, slot: _Slot) -> None:
        # leader only
        if self._unsent:
            self._unsent.append(slot)
        elif self._send_raw(slot.msg):
            slot.sent = True
        else:  # no broker connected (ZMQ_IMMEDIATE): keep it until there is
            self._unsent_since = time.monotonic()
            self._unsent.append(slot)

    def _flush_unsent(self) -> None:
        unsent = self._unsent
        while unsent:
            slot = unsent[0]
            if slot.cancelled:
                unsent.popleft()
                continue
            if not self._send_raw(slot.msg):
                return
            slot.sent = True
            unsent.popleft()

    def _pump(self, timeout: float, mine: _Slot | None = None,
              drain_first: bool = False) -> None:
        """Leader only: wait up to ``timeout`` s once; send what other threads queued
        and deliver every reply that is available.  With ``drain_first``, replies
        already queued are read before waiting, and if ``mine`` is among them there
        is no wait at all (with many calls in flight this saves a poll per call)."""
        if self._unsent:
            self._flush_unsent()
        if self._later:
            self._send_later()
        if drain_first:
            if self._outbox:
                self._send_outbox()
            if self._drain(mine):
                return
        if self._solo and not self._unsent:
            # no other thread can hand us work: libzmq's blocking receive
            ms = int(min(timeout, _SOLO_SLICE) * 1000) + 1
            if ms != self._rcvtimeo:
                self._sock.setsockopt(zmq.RCVTIMEO, ms)
                self._rcvtimeo = ms
            frames = self._recv(True)
            if self._outbox:  # a second thread came meanwhile
                self._send_outbox()
            if frames is not None:
                self._drain(mine, frames)
            elif self._monitor is not None:
                self._check_link()
            return
        # while calls are blocked (no broker yet), wait for writability too
        mask = self._poll(bool(self._unsent), int(timeout * 1000))
        if mask == 0 and self._monitor is not None:
            self._check_link()
        if mask & 4:
            self._flush_unsent()
        if mask & 2:
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass
            self._send_outbox()
        if mask & 1:
            self._drain(mine)

    def _send_outbox(self) -> None:
        # leader only
        with self._lock:
            out = list(self._outbox)
            self._outbox.clear()
        for slot in out:
            if not slot.cancelled:
                self._send(slot)

    def _drain(self, mine: _Slot | None, first: list | None = None) -> bool:
        """Leader only: deliver ``first`` (a message already read) and the replies
        queued on the socket, without waiting; stop after ``mine``.  Returns whether
        ``mine`` got its reply."""
        pending = self._pending
        recv = self._recv
        loads = _json.loads
        while True:
            if first is not None:
                frames, first = first, None
            else:
                frames = recv(False)
                if frames is None:
                    break
            if len(frames) < 4 or frames[0] != b"" or frames[1] != _MDPC:
                self.stray_replies += 1
                continue
            if frames[2].startswith(b"mmi."):
                call_id: Any = _MMI_KEY
                reply: Any = frames[3]
            else:
                try:
                    reply = loads(frames[3])
                    call_id = reply["id"]
                except Exception:  # noqa: BLE001 - not ours to understand: drop
                    self.stray_replies += 1
                    continue
            if type(reply) is dict and "result" not in reply and \
                    self._not_final(reply, call_id):
                continue
            # dict.pop is atomic: a timing-out owner and we cannot both get the slot
            slot = pending.pop(call_id, None) \
                if type(call_id) is int or call_id is _MMI_KEY else None
            if slot is None:
                self.stray_replies += 1
                continue
            slot.reply = reply
            ev = slot.event
            if ev is not None:
                ev.set()
            if slot is mine:
                # ours is in: skip the extra empty receive (a syscall); anything
                # else queued is read by the next leader's poll at once
                return True
        return False

    def _not_final(self, reply: dict, call_id: Any) -> bool:
        """Leader only: handle a progress value, or an error that means "send the
        call again"; True when ``reply`` is one of those (not the call's answer)."""
        slot = self._pending.get(call_id) if type(call_id) is int else None
        if slot is None:
            return False
        if "progress" in reply:
            slot.deadline = time.monotonic() + self.timeout
            if slot.progress is not None:
                try:
                    slot.progress(reply["progress"])
                except Exception:  # noqa: BLE001 - the caller's callback: keep reading
                    log.exception("progress callback of %s failed", _what(slot))
            ev = slot.event
            if ev is not None:
                ev.set()
            return True
        if self.client_id is None:
            return False
        err = reply.get("error")
        code = err.get("code") if type(err) is dict else None
        if code == rpc.NOT_ACTIVE:
            # a standby that is not (yet) active: the call did not run there
            if len(self.endpoints) > 1:
                self._switch(f"broker {self.endpoint} is a passive standby")
            self._resend_later(slot, _RETRY_PAUSE)
            return True
        if code == rpc.NO_WORKER and slot.resent:
            # a restarted or new broker whose servers are still registering
            self._resend_later(slot, _RETRY_PAUSE)
            return True
        return False

    def _resend_later(self, slot: _Slot, pause: float) -> None:
        if time.monotonic() + pause < slot.deadline:
            slot.resent += 1
            self._later.append((time.monotonic() + pause, slot))

    def _send_later(self) -> None:
        now = time.monotonic()
        due = [s for t, s in self._later if t <= now]
        if due:
            self._later = [(t, s) for t, s in self._later if t > now]
            for slot in due:
                if not slot.cancelled and slot.reply is None:
                    self.resends += 1
                    self._send(slot)

    def _check_link(self) -> None:
        """Leader only, after a wait with nothing to read: if the connection to the
        broker dropped, or calls have waited too long for one, resend what may have
        been lost (to the next broker, if there are several)."""
        lost = False
        while True:
            try:
                ev = self._monitor.recv_multipart(zmq.NOBLOCK)  # type: ignore[union-attr]
            except zmq.Again:
                break
            kind = int.from_bytes(ev[0][:2], "little")
            where = ev[1].decode("utf-8", "replace") if len(ev) > 1 else ""
            if kind == zmq.EVENT_DISCONNECTED and where == self.endpoint:
                lost = True
        if lost:
            if len(self.endpoints) > 1:
                self._switch(f"connection to broker {self.endpoint} lost")
            else:
                log.info("connection to broker %s lost: calls in flight are sent again",
                         self.endpoint)
            self._resend_pending()
        elif self._unsent and len(self.endpoints) > 1 and \
                time.monotonic() - self._unsent_since > _CONNECT_PATIENCE:
            self._switch(f"broker {self.endpoint} not reachable")
            self._unsent_since = time.monotonic()

    def _switch(self, why: str) -> None:
        """Leader only: use the next broker of the list."""
        old = self.endpoint
        i = (self.endpoints.index(old) + 1) % len(self.endpoints)
        self.endpoint = self.endpoints[i]
        self.failovers += 1
        log.info("%s: switching to %s", why, self.endpoint)
        try:
            self._sock.disconnect(old)
        except zmq.ZMQError:
            pass
        self._sock.connect(self.endpoint)

    def _resend_pending(self) -> None:
        # every call sent and not answered may have been lost with the connection
        with self._lock:
            slots = [s for s in self._pending.values()
                     if s.sent and not s.cancelled and s.reply is None and s.oid != "mmi"]
        for slot in slots:
            slot.resent += 1
            self.resends += 1
            self._send(slot)

    def _note_thread(self) -> None:
        if self._thread is None:
            self._thread = get_ident()
        else:
            self._solo = False  # for good: the leader watches the wake-up pipe again
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass

    def _finish(self, call_id: Any, slot: _Slot, until: Any = None) -> Any:
        if self._solo and get_ident() != self._thread:
            self._note_thread()
        while slot.reply is None:
            if until is not None and until():
                return None
            remaining = slot.deadline - time.monotonic()
            with self._lock:
                if slot.reply is not None:
                    break
                if remaining <= 0 or self._closing:
                    if self._pending.pop(call_id, None) is None:
                        continue  # the reply is being delivered right now
                    slot.cancelled = True
                    self._followers.discard(slot)
                    if self._closing:
                        raise RocError(f"{_what(slot)}: client closed during the call")
                    if not slot.sent:
                        raise BrokerUnavailable(
                            f"{_what(slot)}: broker at {self.endpoint} not reachable within "
                            f"{self.timeout:g} s; the call was not sent")
                    raise RocTimeout(
                        f"{_what(slot)}: no reply within {self.timeout:g} s from "
                        f"{self.endpoint}; the call may or may not have run")
                lead = not self._leader
                if lead:
                    self._leader = True
                    self._followers.discard(slot)
                else:
                    ev = slot.event
                    if ev is None:
                        ev = slot.event = threading.Event()
                    ev.clear()
                    self._followers.add(slot)
            if lead:
                try:
                    self._pump(min(remaining, _LINK_CHECK), slot, True)
                finally:
                    self._release()
            elif slot.reply is None:
                ev.wait(min(remaining, 0.25))
        self._followers.discard(slot)
        return self._result(slot)

    def _result(self, slot: _Slot) -> Any:
        reply = slot.reply
        if type(reply) is bytes:  # MMI
            return reply
        if type(reply) is not dict:
            raise ProtocolError(f"{_what(slot)}: reply is not a JSON object")
        if "result" in reply:
            return reply["result"]
        _raise_error(reply.get("error"), _what(slot))
        raise ProtocolError(f"{_what(slot)}: reply has neither result nor error")

    def _mmi(self, service: str, arg: str) -> bytes:
        # MMI replies carry no JSON id, so one MMI query at a time per client,
        # matched by a key no JSON reply can produce
        slot = _Slot([b"", _MDPC, service.encode("ascii"), arg.encode("utf-8")],
                     time.monotonic() + self.timeout, "mmi", f"{service}({arg!r})")
        with self._mmi_lock:
            if self._enqueue(_MMI_KEY, slot):
                self._release()
            return self._finish(_MMI_KEY, slot)


_MMI_KEY = ("mmi",)


def _what(slot: _Slot) -> str:
    if slot.oid == "mmi":
        return slot.method
    return f"{slot.oid}.{slot.method}"


class ProgressIterator:
    """The values a streaming (generator) method yields, as they come.

    Iterating ends with the method's return value (``StopIteration.value``, also
    kept as :attr:`result`) or raises the remote exception.  The timeout applies
    between values.
    """

    __slots__ = ("_client", "_id", "_slot", "_values", "result", "_done", "_error")

    def __init__(self, client: RocClient, call_id: int, slot: _Slot,
                 values: deque) -> None:
        self._client = client
        self._id = call_id
        self._slot = slot
        self._values = values
        self._done = False
        self._error: BaseException | None = None
        #: The method's return value, once iteration has ended.
        self.result: Any = None

    def __iter__(self) -> "ProgressIterator":
        return self

    def __next__(self) -> Any:
        values = self._values
        if values:
            return values.popleft()
        if self._done:
            raise StopIteration(self.result)
        if self._error is None and self._slot.reply is None:
            try:
                self._client._finish(self._id, self._slot, until=lambda: bool(values))
            except Exception as exc:  # the end came with values still to hand out
                if not values:
                    self._done = True
                    raise
                self._error = exc
            if values:
                return values.popleft()
        self._done = True
        if self._error is not None:
            raise self._error
        self.result = self._client._result(self._slot)
        raise StopIteration(self.result)


class _RemoteMethod:
    __slots__ = ("_client", "_oid", "_name", "_streams")

    def __init__(self, client: RocClient, oid: str, name: str,
                 streams: bool = False) -> None:
        self._client = client
        self._oid = oid
        self._name = name
        self._streams = streams

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._streams:
            values: deque = deque()
            fut = self._client.call_async(self._oid, self._name, *args,
                                          on_progress=values.append, **kwargs)
            return ProgressIterator(self._client, fut._id, fut._slot, values)
        return self._client._call(self._oid, self._name, args, kwargs)

    def call_async(self, *args: Any, on_progress: Any = None, **kwargs: Any) -> RocFuture:
        """Send the call and return a :class:`RocFuture` at once (``on_progress=``
        takes a callback for the values of a streaming method)."""
        return self._client._call_async(self._oid, self._name, args, kwargs, on_progress)

    def __repr__(self) -> str:
        return f"<remote method {self._oid}.{self._name}>"


class RocProxy:
    """Stands in for a remote object: methods, attributes, ``dir()``.

    What is a method and what an attribute is learnt from ``rpc.describe`` on first
    use and refreshed once when an unknown name is asked for.
    """

    def __init__(self, client: RocClient, objectId: str) -> None:
        object.__setattr__(self, "_client", client)
        object.__setattr__(self, "_oid", objectId)
        object.__setattr__(self, "_methods", None)
        object.__setattr__(self, "_attributes", None)
        object.__setattr__(self, "_generators", frozenset())
        object.__setattr__(self, "_bound", {})

    def _describe(self) -> None:
        d = self._client.call(self._oid, rpc.DESCRIBE)
        object.__setattr__(self, "_methods", frozenset(d.get("methods", ())))
        object.__setattr__(self, "_attributes", frozenset(d.get("attributes", ())))
        object.__setattr__(self, "_generators", frozenset(d.get("generators", ())))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        bound = self._bound.get(name)
        if bound is not None:
            return bound
        if self._methods is None or (name not in self._methods
                                     and name not in self._attributes):
            self._describe()
        if name in self._methods:  # type: ignore[operator]
            bound = self._bound[name] = _RemoteMethod(self._client, self._oid, name,
                                                      name in self._generators)
            # cached on the instance: the next lookup does not reach __getattr__
            object.__setattr__(self, name, bound)
            return bound
        if name in self._attributes:  # type: ignore[operator]
            return self._client.call(self._oid, rpc.GET, name)
        raise AttributeError(f"remote object {self._oid!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            raise AttributeError(f"cannot set private attribute {name!r} on a remote object")
        self._client.call(self._oid, rpc.SET, name, value)
        if self._attributes is not None and name not in self._attributes:
            object.__setattr__(self, "_methods", None)  # describe again on next use

    def __dir__(self) -> list[str]:
        self._describe()
        return sorted(self._methods | self._attributes)  # type: ignore[operator]

    def __repr__(self) -> str:
        return f"<RocProxy {self._oid!r} via {self._client.endpoint}>"
