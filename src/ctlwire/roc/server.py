"""RocServer: share the methods and attributes of a Python object through the broker.

A server is a set of 7/MDP workers whose service name is the object id: it opens
``connections`` connections to the broker, each with its own routing id and its own
READY, so the broker sees that many workers for the object and can hand the server the
next call while the previous reply is still on its way back.  (MDP gives a worker one
request at a time; the spec allows several workers per object id.)  A ctlwire broker
may hand one connection up to ``pipeline`` calls at once (a ctlwire extension announced
in the routing ids, see :mod:`ctlwire.roc._router`; other brokers ignore it), so a
burst travels on one connection in few system calls.  The connections
are made by one ROUTER socket (each named locally by ``ZMQ_CONNECT_ROUTING_ID``):
on the wire each is exactly a DEALER worker's connection, but the server's thread
reads one socket, so libzmq wakes it once for a burst of requests instead of once
per connection.  That thread runs the calls one at a time, in the order it reads
them, so the object never sees two calls at once.  While a method runs, a small
heartbeat thread borrows the sockets, so a slow method does not get the server
declared dead.  When the broker says DISCONNECT on a connection, or has not been heard
from on it for ``liveness`` heartbeat intervals, that connection is replaced by a new
one (a new routing id) that registers again.

With several brokers (a primary and its standby) the server registers with every one
of them, ``connections`` connections each, so a standby that takes over already has its
servers.  Requests carrying a client id are answered from a bounded reply cache when
they are repeated (a client retrying after a failover), so such a call runs once.  A
method that returns a generator streams: each yielded value goes to the caller as a
PARTIAL message (a ctlwire extension of 7/MDP, see docs/roc.md) while the call runs.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
import time
from typing import Any

import zmq

from ctlwire._ext import load_extension
from ctlwire._curve import apply_client_trusting
from ctlwire._zmq import make_socket
from ctlwire.roc import rpc
from ctlwire.roc._fastzmq import multi
from ctlwire.roc.endpoints import Endpoints, resolve_all

_router = load_extension("ctlwire.roc._router")

log = logging.getLogger("ctlwire.roc.server")

_MDPW = _router.MDPW
_READY = _router.READY
_REPLY = _router.REPLY
_HEARTBEAT = _router.HEARTBEAT
_DISCONNECT = _router.DISCONNECT
_PARTIAL = _router.PARTIAL
_B_REQUEST = _router.B_REQUEST
_B_HEARTBEAT = _router.B_HEARTBEAT
_B_DISCONNECT = _router.B_DISCONNECT
_STOP_CHECK = 0.1

#: Worker connections per server unless told otherwise (measured, see docs/roc.md:
#: enough to keep the server busy while replies travel back; more gain nothing).
DEFAULT_CONNECTIONS = 16
#: Calls a ctlwire broker may hand one connection at once unless told otherwise (the
#: pipelining extension, see :mod:`ctlwire.roc._router`; other brokers give one).
DEFAULT_PIPELINE = 32
#: Upper bound of ``connections`` (the receiver covers at most this many sockets, and
#: every socket of a server holds at least one connection in use).
MAX_CONNECTIONS = 64


class _Conn:
    """One worker connection registered with the broker: a connection of one of the
    server's ROUTER sockets, named locally by ``alias``."""

    __slots__ = ("sock", "alias", "j", "last_sent", "heard", "broker")

    def __init__(self, sock: zmq.Socket, alias: bytes, now: float, broker: int) -> None:
        self.sock = sock
        self.alias = alias     # its routing id on our side (ZMQ_CONNECT_ROUTING_ID)
        self.j = 0             # index of ``sock`` in the receiver (RocServer._mux)
        self.broker = broker   # index into RocServer.endpoints
        self.last_sent = now   # for heartbeats: when we last sent on it
        self.heard = now       # for liveness: when the broker last spoke on it


class RocServer:
    """Remote Object Call server.

    Parameters
    ----------
    brokerEndpoint : Endpoints or str or list or None
        The broker: :class:`Endpoints`, a ZeroMQ endpoint (``tcp://host:port``),
        ``host[:baseport]``, or ``None`` for ``$CTLWIRE_ROC_BROKER`` / localhost:5555;
        or several brokers (a list, or a comma-separated string): the server
        registers with all of them.
    objectId : str
        Network name of the shared object.
    objectInstance : object
        The shared Python object.
    ctx : zmq.Context, optional
        ZeroMQ context to use (default: the process-wide instance).
    heartbeat : float
        Heartbeat interval in seconds; must match the broker's.
    liveness : int
        Silent intervals after which the broker is considered gone.
    connections : int
        Worker connections to the broker (1 to 64).  Each is an MDP worker of its
        own; calls still run one at a time, but the broker can pass the next call
        while the previous reply is in transit, which is what makes many calls in
        flight fast.  ``1`` gives the classic one-worker server.  With several
        brokers this many per broker (at most 64 in all).
    pipeline : int
        Calls a ctlwire broker may hand one connection at once (1 to 255; a ctlwire
        extension of 7/MDP announced in the connections' routing ids, which other
        brokers ignore: they give one call per connection).  The calls still run one
        at a time, in order; a burst travels on one connection in few system calls.
        ``1`` gives plain 7/MDP workers.
    reply_cache : ReplyCache or bool
        Where replies to calls with a client id are kept so a repeated call is not
        run again (``True``: a default :class:`~ctlwire.roc.rpc.ReplyCache`,
        ``False``: none, every repeat runs).
    security : CurveSecurity, optional
        This server's CURVE key pair; with ``broker_key`` every connection is
        encrypted and the broker must allow our public key.
    broker_key : bytes, optional
        The broker's z85 public key (primary and standby share one key pair).

    Examples
    --------
    >>> srv = RocServer(Endpoints('127.0.0.1'), 'vnir', camera)   # doctest: +SKIP
    >>> srv.run()                                                 # doctest: +SKIP
    """

    def __init__(self, brokerEndpoint: Endpoints | str | None, objectId: str,
                 objectInstance: Any, ctx: zmq.Context | None = None, *,
                 heartbeat: float = 1.0, liveness: int = 3,
                 connections: int = DEFAULT_CONNECTIONS,
                 reply_cache: rpc.ReplyCache | bool = True,
                 security: Any = None, broker_key: bytes | None = None,
                 pipeline: int = DEFAULT_PIPELINE) -> None:
        if not objectId or objectId.startswith("mmi."):
            raise ValueError(f"invalid object id {objectId!r} (empty or reserved 'mmi.')")
        self.endpoints = resolve_all(brokerEndpoint, "rocBroker")
        if type(connections) is not int or \
                not 1 <= connections * len(self.endpoints) <= MAX_CONNECTIONS:
            raise ValueError(f"connections must be an int from 1 to {MAX_CONNECTIONS} "
                             f"in all brokers, got {connections!r} x "
                             f"{len(self.endpoints)}")
        if type(pipeline) is not int or not 1 <= pipeline <= 255:
            raise ValueError(f"pipeline must be an int from 1 to 255, got {pipeline!r}")
        if (security is None) != (broker_key is None):
            raise ValueError("security and broker_key go together")
        self.endpoint = self.endpoints[0]
        self.pipeline = pipeline
        self._security = security
        self._broker_key = broker_key
        if reply_cache is True:
            reply_cache = rpc.ReplyCache()
        #: The reply cache (None when switched off).
        self.reply_cache: rpc.ReplyCache | None = \
            None if reply_cache is False else reply_cache  # type: ignore[assignment]
        self.objectId = objectId
        self.obj = objectInstance
        self._ctx = ctx if ctx is not None else zmq.Context.instance()
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.connections = connections
        self._service = objectId.encode("utf-8")
        # routing ids: one prefix for all our connections tells the broker they are
        # one server (it then prefers servers with no call running); the counter
        # keeps every new socket's id unique
        # (pipelined: the tag says so and the depth ends each id, see _router)
        self._id_prefix = (_router.PIPELINE_TAG if pipeline > 1 else _router.GROUP_TAG) \
            + os.urandom(8)
        self._id_suffix = bytes([pipeline]) if pipeline > 1 else b""
        self._opened = 0
        self._conns: list[_Conn] = []
        # the ROUTER sockets holding the connections: usually one; a replaced
        # connection goes to a spare socket, and a socket is closed once none of its
        # connections is in use (libzmq cannot drop one connection of a socket)
        self._socks: list[zmq.Socket] = []
        self._spare: zmq.Socket | None = None
        self._by_alias: dict[bytes, int] = {}   # alias -> index into _conns
        # receives from / sends on the sockets by index (see _fastzmq.multi)
        self._mux: Any = None
        # held by the serving loop except while a method runs; the heartbeat thread
        # takes it then, so a socket is only ever used by one thread at a time
        self._sock_lock = threading.Lock()
        self._busy = False
        self._stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        #: Number of calls served, registrations made (one per connection opened),
        #: malformed messages dropped.
        self.calls = 0
        self.registrations = 0
        self.malformed = 0
        #: Progress values not sent because the broker took none for ``liveness``
        #: heartbeat intervals (a dead broker); the call's result still goes out.
        self.progress_dropped = 0
        #: Set each time the server has sent READY (tests and tools wait on it).
        self.registered = threading.Event()

    # -- socket management -------------------------------------------------
    def _new_socket(self) -> zmq.Socket:
        sock = make_socket(self._ctx, zmq.ROUTER)
        # a full queue to the broker is EAGAIN, as on a DEALER, not a silent drop
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        apply_client_trusting(self._security, sock, self._broker_key)
        self._socks.append(sock)
        return sock

    def _open(self, broker: int, sock: zmq.Socket) -> _Conn:
        self._opened += 1
        alias = self._opened.to_bytes(4, "big")
        # both options apply to the next connect only
        sock.setsockopt(zmq.ROUTING_ID, self._id_prefix + alias + self._id_suffix)
        sock.setsockopt(zmq.CONNECT_ROUTING_ID, alias)
        sock.connect(self.endpoints[broker])
        # the connection's queue exists from now on (not ZMQ_IMMEDIATE): READY waits
        # there for the broker like a DEALER's would
        sock.send_multipart([alias, b"", _MDPW, _READY, self._service])
        self.registrations += 1
        self.registered.set()
        return _Conn(sock, alias, time.monotonic(), broker)

    def _connect(self, index: int | None = None) -> None:
        """Open every connection (``index`` None) or replace connection ``index``."""
        if index is None:
            self._close_all()
            sock = self._new_socket()
            self._conns = [self._open(b, sock) for b in range(len(self.endpoints))
                           for _ in range(self.connections)]
            log.debug("registered %r at %s (%d connections each)", self.objectId,
                      ", ".join(self.endpoints), self.connections)
        else:
            old = self._conns[index]
            spare = self._spare
            if spare is None or spare is old.sock:
                spare = self._spare = self._new_socket()
            self._conns[index] = self._open(old.broker, spare)
            if not any(c.sock is old.sock for c in self._conns):
                # only replaced connections left on it: close them all
                self._socks.remove(old.sock)
                old.sock.close(0)
                if self._spare is old.sock:
                    self._spare = None
        self._by_alias = {c.alias: i for i, c in enumerate(self._conns)}
        self._mux = multi(self._socks)
        where = {id(s): j for j, s in enumerate(self._socks)}
        for c in self._conns:
            c.j = where[id(c.sock)]

    def _send(self, i: int, frames: list) -> bool:
        """Send ``frames`` (a DEALER worker's frames) on connection ``i`` without
        blocking; False when it takes no more."""
        c = self._conns[i]
        try:
            return self._mux.send(c.j, [c.alias, *frames])
        except Exception as exc:
            # no such connection (any more): as good as a full queue
            if getattr(exc, "errno", None) == errno.EHOSTUNREACH:
                return False
            raise

    def _close_all(self, say_goodbye: bool = False) -> None:
        if say_goodbye:
            # tell the broker at once instead of letting it time us out
            for i in range(len(self._conns)):
                self._send(i, [b"", _MDPW, _DISCONNECT])
        for sock in self._socks:
            sock.close(0)
        self._socks = []
        self._spare = None
        self._conns = []
        self._by_alias = {}
        self._mux = None

    def _heartbeat_while_busy(self) -> None:
        # wakes a few times per interval; only acts while a method is running
        period = self.heartbeat / 4
        beat = [b"", _MDPW, _HEARTBEAT]
        while not self._stop.wait(period):
            if not self._busy:
                continue
            if not self._sock_lock.acquire(timeout=period):
                continue
            try:
                if self._busy:
                    t = time.monotonic()
                    for i, c in enumerate(self._conns):
                        if t - c.last_sent >= self.heartbeat:
                            self._send(i, beat)
                            c.last_sent = t
            finally:
                self._sock_lock.release()

    # -- serving -----------------------------------------------------------
    def run(self) -> None:
        """Serve in the calling thread until :meth:`stop` or KeyboardInterrupt."""
        self._stop.clear()
        self._hb_thread = threading.Thread(target=self._heartbeat_while_busy,
                                           name=f"roc-hb-{self.objectId}", daemon=True)
        self._hb_thread.start()
        lock = self._sock_lock
        lock.acquire()
        try:
            self._serve(lock)
        except KeyboardInterrupt:
            pass
        finally:
            self._stop.set()
            self._close_all(say_goodbye=True)
            lock.release()
            self._hb_thread.join(2.0)

    def _housekeep(self, t: float, grace: float) -> float:
        """Heartbeats and liveness of every connection; returns when it is next due."""
        interval = self.heartbeat
        life = interval * self.liveness
        beat = [b"", _MDPW, _HEARTBEAT]
        due = t + interval
        for i in range(len(self._conns)):
            c = self._conns[i]
            if t - c.last_sent >= interval:
                # every connection beats each interval, replies or not: a reply
                # does not need to postpone it, and this keeps the hot path lean
                self._send(i, beat)
                c.last_sent = t
            if t - c.heard > life and t > grace:
                log.info("broker %s silent for %.1f s on connection %d: reconnecting",
                         self.endpoints[c.broker], life, i)
                self._connect(i)
                c = self._conns[i]
            due = min(due, c.last_sent + interval, max(c.heard + life, grace))
        return due

    def _serve(self, lock: threading.Lock) -> None:
        classify = _router.classify_worker
        execute = rpc.execute
        obj = self.obj
        cache = self.reply_cache
        current = [0, b""]  # connection and client address of the running call

        def progress(body: bytes) -> None:
            # called in this thread while the method runs (the lock is not ours then)
            msg = [b"", _MDPW, _PARTIAL, current[1], b"", body]
            blocked = 0.0
            while not stop.is_set():
                with lock:
                    if self._send(current[0], msg):
                        self._conns[current[0]].last_sent = now()
                        return
                # the broker is not taking more: wait instead of dropping a value,
                # unless it has been gone for as long as makes it dead
                t = now()
                if not blocked:
                    blocked = t
                elif t - blocked > life:
                    self.progress_dropped += 1
                    return
                time.sleep(0.001)

        life = self.heartbeat * self.liveness
        now = time.monotonic
        stop = self._stop
        self._connect()
        # a call that runs long leaves broker heartbeats unread: silence up to
        # ``life`` after the end of the last call does not count against the broker
        grace = 0.0
        next_due = now()
        while not stop.is_set():
            t = now()
            if t >= next_due:
                next_due = self._housekeep(t, grace)
            got = self._mux.recv(int(min(next_due - t, _STOP_CHECK) * 1000) + 1)
            if got is None:
                continue
            frames = got[1]
            i = self._by_alias.get(frames[0])
            if i is None:
                continue  # a connection replaced since: the broker forgot it too
            c = self._conns[i]
            c.heard = t
            del frames[0]
            kind = classify(frames)
            if kind == _B_REQUEST:
                body = frames[5] if len(frames) == 6 else b"".join(frames[5:])
                self._busy = True
                current[0] = i
                current[1] = frames[3]
                lock.release()
                try:
                    reply = execute(obj, body, cache, progress)
                finally:
                    lock.acquire()
                    self._busy = False
                self.calls += 1
                try:
                    # (a full queue to a dead broker drops it, as a DEALER's would)
                    self._mux.send(c.j, [c.alias, b"", _MDPW, _REPLY, frames[3], b"",
                                         reply])
                except Exception as exc:
                    if getattr(exc, "errno", None) != errno.EHOSTUNREACH:
                        raise
                grace = now() + life
            elif kind == _B_HEARTBEAT:
                pass
            elif kind == _B_DISCONNECT:
                log.info("broker said DISCONNECT on connection %d: registering again", i)
                self._connect(i)
            else:
                self.malformed += 1

    def stop(self) -> None:
        """Ask :meth:`run` to return (from any thread); it does within ~0.1 s (or
        when the method running now returns)."""
        self._stop.set()


def run_simple_server(objectId: str, obj: Any, brokerEndpoint: Endpoints | str | None = None,
                      *, ctx: zmq.Context | None = None, logging_: bool = True,
                      heartbeat: float = 1.0,
                      connections: int = DEFAULT_CONNECTIONS) -> None:
    """Serve ``obj`` as ``objectId`` until interrupted, with distributed logging on.

    Parameters
    ----------
    objectId : str
        Network name of the shared object.
    obj : object
        The object to share.
    brokerEndpoint : Endpoints or str or list or None
        The broker(s); ``None`` reads ``$CTLWIRE_ROC_BROKER`` (``host``,
        ``host:baseport``, or several separated by commas: a primary and its
        standby), else uses ``localhost:5555``.  A full ZeroMQ endpoint
        (``tcp://...``) names the MDP socket only, so logging stays off then.
    logging_ : bool
        Install :class:`~ctlwire.roc.logging.RocLogger` on the root logger.
    heartbeat : float
        Heartbeat interval in seconds (must match the broker's).
    connections : int
        Worker connections to the broker (see :class:`RocServer`).
    """
    from ctlwire.roc.endpoints import default_endpoint_list, parse_broker_list
    from ctlwire.roc.logging import initRocLogging

    if brokerEndpoint is None:
        ep: Any = default_endpoint_list()
    elif isinstance(brokerEndpoint, str) and "://" not in brokerEndpoint:
        ep = parse_broker_list(brokerEndpoint)
    else:
        ep = brokerEndpoint
    eps = ep if isinstance(ep, list) else [ep]
    handler = initRocLogging(objectId, ep, ctx=ctx) if logging_ and \
        all(isinstance(e, Endpoints) for e in eps) else None
    server = RocServer(ep, objectId, obj, ctx, heartbeat=heartbeat, connections=connections)
    log.info("serving %r at %s", objectId, server.endpoint)
    try:
        server.run()
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
