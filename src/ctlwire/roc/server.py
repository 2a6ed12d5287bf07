"""RocServer: share the methods and attributes of a Python object through the broker.

A server is a 7/MDP worker whose service name is the object id.  Calls run in the
server's own thread, one at a time (MDP gives a worker one request at a time; start
several servers with the same id for parallel calls).  While a method runs, a small
heartbeat thread borrows the socket, so a slow method does not get the server
declared dead.  When the broker says DISCONNECT, or has not been heard from for
``liveness`` heartbeat intervals, the server opens a new socket and registers again.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import zmq

from ctlwire._ext import load_extension
from ctlwire._zmq import make_socket
from ctlwire.roc import rpc
from ctlwire.roc._fastzmq import wire
from ctlwire.roc.endpoints import Endpoints, resolve

_router = load_extension("ctlwire.roc._router")

log = logging.getLogger("ctlwire.roc.server")

_MDPW = _router.MDPW
_READY = _router.READY
_REPLY = _router.REPLY
_HEARTBEAT = _router.HEARTBEAT
_DISCONNECT = _router.DISCONNECT
_B_REQUEST = _router.B_REQUEST
_B_HEARTBEAT = _router.B_HEARTBEAT
_B_DISCONNECT = _router.B_DISCONNECT
_STOP_CHECK = 0.1


class RocServer:
    """Remote Object Call server.

    Parameters
    ----------
    brokerEndpoint : Endpoints or str or None
        The broker: :class:`Endpoints`, a ZeroMQ endpoint (``tcp://host:port``),
        ``host[:baseport]``, or ``None`` for ``$CTLWIRE_ROC_BROKER`` / localhost:5555.
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

    Examples
    --------
    >>> srv = RocServer(Endpoints('127.0.0.1'), 'vnir', camera)   # doctest: +SKIP
    >>> srv.run()                                                 # doctest: +SKIP
    """

    def __init__(self, brokerEndpoint: Endpoints | str | None, objectId: str,
                 objectInstance: Any, ctx: zmq.Context | None = None, *,
                 heartbeat: float = 1.0, liveness: int = 3) -> None:
        if not objectId or objectId.startswith("mmi."):
            raise ValueError(f"invalid object id {objectId!r} (empty or reserved 'mmi.')")
        self.endpoint = resolve(brokerEndpoint, "rocBroker")
        self.objectId = objectId
        self.obj = objectInstance
        self._ctx = ctx if ctx is not None else zmq.Context.instance()
        self.heartbeat = heartbeat
        self.liveness = liveness
        self._service = objectId.encode("utf-8")
        self._sock: zmq.Socket | None = None
        # held by the serving loop except while a method runs; the heartbeat thread
        # takes it then, so the socket is only ever used by one thread at a time
        self._sock_lock = threading.Lock()
        self._busy = False
        self._last_sent = 0.0
        self._stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        #: Number of calls served, registrations made, malformed messages dropped.
        self.calls = 0
        self.registrations = 0
        self.malformed = 0
        #: Set each time the server has sent READY (tests and tools wait on it).
        self.registered = threading.Event()

    # -- socket management -------------------------------------------------
    def _connect(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
        sock = make_socket(self._ctx, zmq.DEALER)
        sock.connect(self.endpoint)
        self._recv, self._send_raw = wire(sock)
        self._rcvtimeo = -2
        sock.send_multipart([b"", _MDPW, _READY, self._service])
        self._sock = sock
        self._last_sent = time.monotonic()
        self.registrations += 1
        self.registered.set()
        log.debug("registered %r at %s", self.objectId, self.endpoint)

    def _send(self, frames: list) -> None:
        # never blocks: with the broker gone, a reply or heartbeat is dropped
        self._send_raw(frames)
        self._last_sent = time.monotonic()

    def _heartbeat_while_busy(self) -> None:
        # wakes a few times per interval; only acts while a method is running
        period = self.heartbeat / 4
        while not self._stop.wait(period):
            if not self._busy:
                continue
            if not self._sock_lock.acquire(timeout=period):
                continue
            try:
                if self._busy and time.monotonic() - self._last_sent >= self.heartbeat:
                    self._send([b"", _MDPW, _HEARTBEAT])
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
            try:
                if self._sock is not None:
                    # tell the broker at once instead of letting it time us out
                    self._sock.send_multipart([b"", _MDPW, _DISCONNECT], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            if self._sock is not None:
                self._sock.close(0)
                self._sock = None
            lock.release()
            self._hb_thread.join(2.0)

    def _serve(self, lock: threading.Lock) -> None:
        classify = _router.classify_worker
        execute = rpc.execute
        obj = self.obj
        interval = self.heartbeat
        life = interval * self.liveness
        now = time.monotonic
        stop = self._stop
        heartbeat = [b"", _MDPW, _HEARTBEAT]
        self._connect()
        broker_expiry = now() + life
        while not stop.is_set():
            t = now()
            if t - self._last_sent >= interval:
                self._send(heartbeat)
            if t > broker_expiry:
                log.info("broker %s silent for %.1f s: reconnecting", self.endpoint, life)
                self._connect()
                broker_expiry = t + life
                continue
            wait = int(min(interval - (t - self._last_sent), _STOP_CHECK) * 1000) + 1
            if wait != self._rcvtimeo:
                self._rcvtimeo = wait = max(wait, 1)
                self._sock.setsockopt(zmq.RCVTIMEO, wait)  # type: ignore[union-attr]
            frames = self._recv()
            if frames is None:
                continue
            kind = classify(frames)
            if kind == _B_REQUEST:
                body = frames[5] if len(frames) == 6 else b"".join(frames[5:])
                self._busy = True
                lock.release()
                try:
                    reply = execute(obj, body)
                finally:
                    lock.acquire()
                    self._busy = False
                self.calls += 1
                self._send_raw([b"", _MDPW, _REPLY, frames[3], b"", reply])
                # any reply counts as a heartbeat; broker heartbeats queued while we
                # were busy are still unread, so the broker counts as alive
                self._last_sent = t = now()
                broker_expiry = t + life
            elif kind == _B_HEARTBEAT:
                broker_expiry = now() + life
            elif kind == _B_DISCONNECT:
                log.info("broker said DISCONNECT: registering again")
                self._connect()
                broker_expiry = now() + life
            else:
                self.malformed += 1

    def stop(self) -> None:
        """Ask :meth:`run` to return (from any thread); it does within ~0.1 s."""
        self._stop.set()


def run_simple_server(objectId: str, obj: Any, brokerEndpoint: Endpoints | str | None = None,
                      *, ctx: zmq.Context | None = None, logging_: bool = True,
                      heartbeat: float = 1.0) -> None:
    """Serve ``obj`` as ``objectId`` until interrupted, with distributed logging on.

    Parameters
    ----------
    objectId : str
        Network name of the shared object.
    obj : object
        The object to share.
    brokerEndpoint : Endpoints or str or None
        The broker; ``None`` reads ``$CTLWIRE_ROC_BROKER`` (``host`` or
        ``host:baseport``), else uses ``localhost:5555``.  A full ZeroMQ endpoint
        (``tcp://...``) names the MDP socket only, so logging stays off then.
    logging_ : bool
        Install :class:`~ctlwire.roc.logging.RocLogger` on the root logger.
    heartbeat : float
        Heartbeat interval in seconds (must match the broker's).
    """
    from ctlwire.roc.endpoints import default_endpoints, parse_broker_spec
    from ctlwire.roc.logging import initRocLogging

    if brokerEndpoint is None:
        ep: Endpoints | str = default_endpoints()
    elif isinstance(brokerEndpoint, str) and "://" not in brokerEndpoint:
        ep = parse_broker_spec(brokerEndpoint)
    else:
        ep = brokerEndpoint
    handler = initRocLogging(objectId, ep, ctx=ctx) if logging_ and \
        isinstance(ep, Endpoints) else None
    server = RocServer(ep, objectId, obj, ctx, heartbeat=heartbeat)
    log.info("serving %r at %s", objectId, server.endpoint)
    try:
        server.run()
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
