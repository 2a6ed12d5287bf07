"""RocClient: proxies that behave like remote objects.

One DEALER socket per client carries every call; calls are matched to replies by the
JSON-RPC ``id``.  No thread of its own: a calling thread that finds nobody reading
the socket becomes the *leader*, sends and reads replies for everyone, and hands the
role on when its own reply is in (leader/follower).  Other threads queue their
request in an outbox and poke the leader through a pipe.  So a single-threaded caller
pays no thread hand-off, and many threads can have calls in flight at once.

The socket has ``ZMQ_IMMEDIATE`` set: a call is never queued for a broker that is not
connected, so it cannot run long after its caller gave up.  Calls are never resent.
"""
from __future__ import annotations

import builtins
import itertools
import os
import threading
import time
from collections import deque
from typing import Any

import zmq

from ctlwire import _json
from ctlwire._zmq import make_socket
from ctlwire.roc import rpc
from ctlwire.roc._fastzmq import poller, wire
from ctlwire.roc.endpoints import Endpoints, resolve

_MDPC = b"MDPC01"


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
    __slots__ = ("reply", "msg", "deadline", "sent", "cancelled", "oid", "method", "event")

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
    broker_addr : Endpoints or str or None
        Network endpoint of the broker: :class:`Endpoints`, ``tcp://host:port``,
        ``host[:baseport]``, or ``None`` for ``$CTLWIRE_ROC_BROKER`` / localhost:5555.
    ctx : zmq.Context, optional
        ZeroMQ context to use.
    timeout : float
        Timeout in seconds for each call.

    Examples
    --------
    >>> c = RocClient(Endpoints('127.0.0.1'))    # doctest: +SKIP
    >>> vnir = c['vnir']                         # doctest: +SKIP
    >>> vnir.openShutter()                       # doctest: +SKIP
    >>> vnir.fps                                 # doctest: +SKIP
    10.0
    """

    def __init__(self, broker_addr: Endpoints | str | None = None,
                 ctx: zmq.Context | None = None, timeout: float = 2.0) -> None:
        self.endpoint = resolve(broker_addr, "rocBroker")
        self.timeout = float(timeout)
        ctx = ctx if ctx is not None else zmq.Context.instance()
        self._sock = make_socket(ctx, zmq.DEALER, sndhwm=100_000, rcvhwm=100_000)
        # never queue calls for a broker that is not there (see module docstring)
        self._sock.setsockopt(zmq.IMMEDIATE, 1)
        self._sock.connect(self.endpoint)
        self._recv, self._send_raw = wire(self._sock)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poll = poller(self._sock, self._wake_r)
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

    def call_async(self, objectId: str, method: str, *args: Any, **kwargs: Any) -> RocFuture:
        """Send a call without waiting for its reply; :meth:`RocFuture.result`
        collects it (the timeout runs from now).

        The call is on its way when this returns, whether or not ``result()`` is ever
        called. Only while no broker is connected (the client just made, or the broker
        down) does this wait, up to the timeout, for one to send the call to; if none
        comes, the call is dropped unsent and ``result()`` raises
        :class:`BrokerUnavailable`.
        """
        call_id, slot = self._make(objectId, method, args, kwargs)
        if self._enqueue(call_id, slot):
            # We lead: the call went out, unless no broker is connected yet
            # (ZMQ_IMMEDIATE kept it back). Nobody may be about to read this client's
            # socket, so keep leading until it is sent: a call handed out as "sent"
            # must not wait for a result() that may never come.
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
        return self._mmi(objectId) == b"200"

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
        body = rpc.encode_request(call_id, method, args, kwargs)
        slot = _Slot([b"", _MDPC, objectId.encode("utf-8"), body],
                     time.monotonic() + self.timeout, objectId, method)
        return call_id, slot

    def _call(self, objectId: str, method: str, args: tuple, kwargs: dict) -> Any:
        call_id, slot = self._make(objectId, method, args, kwargs)
        if self._enqueue(call_id, slot):
            # uncontended: we already lead, read until our reply is in
            try:
                while slot.reply is None and not self._closing:
                    remaining = slot.deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._pump(min(remaining, 0.25), slot)
            finally:
                self._release()
        return self._finish(call_id, slot)

    def _enqueue(self, call_id: Any, slot: _Slot) -> bool:
        """Register and send (or hand to the leader); True if we are now leader."""
        with self._lock:
            if self._closing:
                raise RocError("client is closed")
            self._pending[call_id] = slot
            if self._leader:
                self._hand_to_leader(slot)
                return False
            self._leader = True
        self._send(slot)
        return True

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
        if drain_first:
            if self._outbox:
                self._send_outbox()
            if self._drain(mine):
                return
        # while calls are blocked (no broker yet), wait for writability too
        mask = self._poll(bool(self._unsent), int(timeout * 1000))
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

    def _drain(self, mine: _Slot | None) -> bool:
        """Leader only: deliver the replies queued on the socket, without waiting;
        stop after ``mine``.  Returns whether ``mine`` got its reply."""
        pending = self._pending
        recv = self._recv
        loads = _json.loads
        while True:
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

    def _finish(self, call_id: Any, slot: _Slot) -> Any:
        while slot.reply is None:
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
                        f"{self.endpoint}; the call may or may not have run "
                        "(it is never resent)")
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
                    self._pump(min(remaining, 0.25), slot, True)
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

    def _mmi(self, objectId: str) -> bytes:
        # MMI replies carry no JSON id, so one MMI query at a time per client,
        # matched by a key no JSON reply can produce
        slot = _Slot([b"", _MDPC, b"mmi.service", objectId.encode("utf-8")],
                     time.monotonic() + self.timeout, "mmi.service", repr(objectId))
        with self._mmi_lock:
            if self._enqueue(_MMI_KEY, slot):
                self._release()
            return self._finish(_MMI_KEY, slot)


_MMI_KEY = ("mmi",)


def _what(slot: _Slot) -> str:
    if slot.oid == "mmi.service":
        return f"mmi.service({slot.method})"
    return f"{slot.oid}.{slot.method}"


class _RemoteMethod:
    __slots__ = ("_client", "_oid", "_name")

    def __init__(self, client: RocClient, oid: str, name: str) -> None:
        self._client = client
        self._oid = oid
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._client._call(self._oid, self._name, args, kwargs)

    def call_async(self, *args: Any, **kwargs: Any) -> RocFuture:
        """Send the call and return a :class:`RocFuture` at once."""
        return self._client.call_async(self._oid, self._name, *args, **kwargs)

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
        object.__setattr__(self, "_bound", {})

    def _describe(self) -> None:
        d = self._client.call(self._oid, rpc.DESCRIBE)
        object.__setattr__(self, "_methods", frozenset(d.get("methods", ())))
        object.__setattr__(self, "_attributes", frozenset(d.get("attributes", ())))

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
            bound = self._bound[name] = _RemoteMethod(self._client, self._oid, name)
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
