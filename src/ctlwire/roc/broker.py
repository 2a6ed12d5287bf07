"""The ROC broker: 7/MDP router for calls, 8/MMI, and the XSUB/XPUB relay.

The command ``rocbroker`` (:mod:`ctlwire.cli.rocbroker`) runs it::

    rocbroker --address 127.0.0.1 --base-port 5555

It binds ``Endpoints(address, base_port)``: MDP on base+0, XSUB on base+1, XPUB on
base+2.  Routing decisions live in the compiled :class:`ctlwire.roc._router.Router`;
this module only moves frames between the socket and it.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import zmq

from ctlwire import _json
from ctlwire._ext import load_extension
from ctlwire._zmq import make_socket
from ctlwire.roc import status as _status
from ctlwire.roc._fastzmq import wire
from ctlwire.roc.endpoints import Endpoints, parse_broker_spec
from ctlwire.roc.ha import PRIMARY, STANDBY, PeerState
from ctlwire.roc.status import StatusStore

_router = load_extension("ctlwire.roc._router")

log = logging.getLogger("ctlwire.roc.broker")

#: Longest a broker sleeps before looking at its stop flag, in seconds.
_STOP_CHECK = 0.1


class Broker:
    """A Majordomo broker routing JSON-RPC calls by object id, plus the pub/sub relay.

    Parameters
    ----------
    endpoints : Endpoints
        Where to bind (``rocBroker``, ``generalXSUB``, ``generalXPUB``, and
        ``brokerPeer`` for a primary that has a standby).
    ctx : zmq.Context, optional
        Context to use; a private one is created (and terminated on close) otherwise.
    heartbeat : float
        Heartbeat interval in seconds, both directions.
    liveness : int
        Missed heartbeat intervals after which a server is dead.
    queue_timeout : float
        Seconds a call waits for a free server of an object that has been served.
    unknown_grace : float
        Seconds a call for an object id nobody has served waits before the client
        gets a "no server" error (covers a server that is just starting).
    max_queue : int
        Calls waiting per object id; more are refused at once.
    relay : bool
        Whether to run the XSUB/XPUB relay.
    snapshots : bool
        Keep the latest status tree and send it to each new subscription first
        (the relay then runs in Python instead of ``zmq.proxy``).
    standby_for : Endpoints or str, optional
        Run as the standby of this primary broker (``host:baseport``).
    has_standby : bool
        This (primary) broker has a standby: start passive until the pair agrees.
    peer_interval, peer_timeout : float
        Heartbeats between primary and standby, and the silence after which the
        peer counts as gone (see :mod:`ctlwire.roc.ha` for the rule).
    security : CurveSecurity, optional
        The broker's CURVE key pair and the allowed client keys: every socket then
        encrypts, and a peer without an allowed key gets nothing.
    peer_optional : bool
        With ``has_standby``: if the standby port cannot be bound, log a warning and
        run alone instead of failing (what ``rocbroker`` does by default).

    Notes
    -----
    Use :meth:`run` in the calling thread, or :meth:`start` for a background thread;
    :meth:`stop` (any thread) ends both and closes the sockets.
    """

    def __init__(self, endpoints: Endpoints, ctx: zmq.Context | None = None, *,
                 heartbeat: float = 1.0, liveness: int = 3, queue_timeout: float = 2.0,
                 unknown_grace: float = 0.5, max_queue: int = 1000,
                 relay: bool = True, snapshots: bool = True,
                 standby_for: Endpoints | str | None = None, has_standby: bool = False,
                 peer_interval: float = 0.1, peer_timeout: float = 0.5,
                 security: Any = None, peer_optional: bool = False) -> None:
        self.endpoints = endpoints
        self._own_ctx = ctx is None
        self._ctx = zmq.Context() if ctx is None else ctx
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._security = security
        self._peer_optional = peer_optional
        self.status: StatusStore | None = None
        self.peer: PeerState | None = None
        self._sock = self._socket(zmq.ROUTER, sndhwm=100_000, rcvhwm=100_000)
        self._sockets: list[zmq.Socket] = [self._sock]
        try:
            self._sock.bind(endpoints.rocBroker)
            self._recv, send = wire(self._sock)
            self.router = _router.Router(send, heartbeat=heartbeat,
                                         liveness=liveness, queue_timeout=queue_timeout,
                                         unknown_grace=unknown_grace, max_queue=max_queue)
            if standby_for is not None or has_standby:
                self._start_peer(standby_for, peer_interval, peer_timeout)
            if relay:
                if snapshots:
                    self._start_snapshot_relay()
                else:
                    self._start_relay()
        except BaseException:
            self._stop.set()
            self._close_sockets()
            raise

    def _socket(self, kind: int, **kw: Any) -> zmq.Socket:
        sock = make_socket(self._ctx, kind, **kw)
        if self._security is not None:
            self._security.apply_server(sock)
        return sock

    # -- primary / standby -------------------------------------------------
    def _start_peer(self, standby_for: Endpoints | str | None, interval: float,
                    timeout: float) -> None:
        if not interval > 0 or not timeout > interval:
            raise ValueError(f"peer timeout ({timeout}) must exceed the peer interval "
                             f"({interval}), both > 0")
        now = time.monotonic()
        if standby_for is None:
            link = self._socket(zmq.ROUTER)
            try:
                link.bind(self.endpoints.brokerPeer)
            except zmq.ZMQError as exc:
                link.close(0)
                if not self._peer_optional:
                    raise
                # the command's default: a broker that cannot listen for a standby
                # still serves, alone, and says why
                log.warning("cannot listen for a standby on %s (%s): running alone",
                            self.endpoints.brokerPeer, exc)
                return
            self.peer = PeerState(PRIMARY, timeout, now)
        else:
            if isinstance(standby_for, str):
                standby_for = parse_broker_spec(standby_for)
            self.peer = PeerState(STANDBY, timeout, now)
            link = make_socket(self._ctx, zmq.DEALER)
            # no stale states queued for a primary that is down
            link.setsockopt(zmq.IMMEDIATE, 1)
            if self._security is not None:
                # primary and standby share one key pair
                self._security.apply_client(link, self._security.public_key)
            link.connect(standby_for.brokerPeer)
        self._sockets.append(link)
        self.router.passive = True
        self.router.ha = self.peer
        # held calls wait long enough for a dead peer to be noticed
        self.router.hold = 2 * timeout
        t = threading.Thread(target=self._peer_loop, args=(link, interval),
                             name="roc-peer", daemon=True)
        self._threads.append(t)
        t.start()

    def _peer_loop(self, link: zmq.Socket, interval: float) -> None:
        ps = self.peer
        assert ps is not None
        router = self.router
        standby = ps.role == STANDBY
        next_send = 0.0
        last = ps.state
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if standby and now >= next_send:
                    # the standby speaks every interval; the primary answers each time
                    try:
                        link.send_multipart([b"", self._peer_msg(now)], zmq.NOBLOCK)
                    except zmq.Again:
                        pass  # primary not connected: nothing to tell it
                    next_send = now + interval
                if link.poll(int(interval * 1000 / 2) + 1):
                    frames = link.recv_multipart()
                    now = time.monotonic()
                    try:
                        msg = _json.loads(frames[-1])
                        state, active_for = str(msg["state"]), float(msg["active_for"])
                    except Exception:  # noqa: BLE001 - a bad peer message is dropped
                        log.warning("malformed message on the peer link: %r", frames[-1:])
                        continue
                    ps.peer_message(state, active_for, now)
                    if not standby:
                        try:
                            link.send_multipart([frames[0], b"", self._peer_msg(now)],
                                                zmq.NOBLOCK)
                        except zmq.Again:
                            pass
                # the router thread reads this flag; a vote there may also clear it
                router.passive = not ps.active
                if ps.state != last:
                    # a primary starting up is news for -v; any other change, a warning
                    quiet = ps.role == PRIMARY and ps.takeovers == 1 and ps.active
                    last = ps.state
                    log.log(logging.INFO if quiet else logging.WARNING,
                            "broker %s (%s) is now %s", self.endpoints.rocBroker,
                            ps.role, last)
        except zmq.ZMQError:
            pass  # closing

    def _peer_msg(self, now: float) -> bytes:
        ps = self.peer
        assert ps is not None
        return _json.dumps({"state": ps.state, "role": ps.role,
                            "active_for": ps.active_for(now)})

    # -- relay ---------------------------------------------------------------
    def _start_relay(self) -> None:
        xsub = self._socket(zmq.XSUB)
        xpub = self._socket(zmq.XPUB)
        self._sockets += [xsub, xpub]
        xsub.bind(self.endpoints.generalXSUB)
        xpub.bind(self.endpoints.generalXPUB)
        # the relay runs in C (zmq.proxy_steerable); a PAIR lets stop() end it
        addr = f"inproc://roc-relay-ctl-{id(self)}"
        ctl = make_socket(self._ctx, zmq.PAIR)
        ctl.bind(addr)
        self._relay_ctl = make_socket(self._ctx, zmq.PAIR)
        self._relay_ctl.connect(addr)
        self._sockets += [ctl, self._relay_ctl]

        def relay() -> None:
            try:
                zmq.proxy_steerable(xsub, xpub, None, ctl)
            except zmq.ZMQError:  # context terminated: we are shutting down
                pass

        self._relay_thread = threading.Thread(target=relay, name="roc-relay", daemon=True)
        self._relay_thread.start()

    def _start_snapshot_relay(self) -> None:
        xsub = self._socket(zmq.XSUB, rcvhwm=100_000)
        xpub = self._socket(zmq.XPUB, sndhwm=100_000)
        # every subscription reaches us, not only the first for a prefix: each new
        # subscriber gets its snapshot
        xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self._sockets += [xsub, xpub]
        xsub.bind(self.endpoints.generalXSUB)
        xpub.bind(self.endpoints.generalXPUB)
        self.status = StatusStore()
        t = threading.Thread(target=self._snapshot_relay, args=(xsub, xpub),
                             name="roc-relay", daemon=True)
        self._threads.append(t)
        t.start()

    def _snapshot_relay(self, xsub: zmq.Socket, xpub: zmq.Socket) -> None:
        store = self.status
        assert store is not None
        poller = zmq.Poller()
        poller.register(xsub, zmq.POLLIN)
        poller.register(xpub, zmq.POLLIN)
        prefix = _status.PREFIX
        # the store needs every status update, subscribers or not; their own status
        # subscriptions are not passed upstream (an unsubscribe would cancel ours)
        xsub.send(b"\x01" + prefix)
        next_expiry: float | None = None
        self.relay_malformed = 0
        try:
            while not self._stop.is_set():
                wait = _STOP_CHECK
                if next_expiry is not None:
                    wait = max(0.0, min(wait, next_expiry - time.monotonic()))
                events = dict(poller.poll(int(wait * 1000) + 1))
                now = time.monotonic()
                if next_expiry is not None and now >= next_expiry:
                    next_expiry = store.expire(now)
                if xsub in events:
                    for _ in range(1000):  # a batch, then look at subscriptions
                        try:
                            frames = xsub.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        if frames[0].startswith(prefix) and len(frames) in (2, 3):
                            ttl = self._apply_status(store, frames, now)
                            if ttl is not None:
                                t = now + ttl
                                next_expiry = t if next_expiry is None else \
                                    min(next_expiry, t)
                        xpub.send_multipart(frames)
                if xpub in events:
                    while True:
                        try:
                            frames = xpub.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        sub = frames[0]
                        if not sub[1:].startswith(prefix):
                            xsub.send_multipart(frames)
                        elif sub[:1] == b"\x01":
                            # the snapshot goes out before any later update
                            for msg in store.snapshot(sub[1 + len(prefix):]):
                                xpub.send_multipart(msg)
        except zmq.ZMQError:
            pass  # closing

    def _apply_status(self, store: StatusStore, frames: list, now: float) -> float | None:
        try:
            sensor_id = frames[0][len(_status.PREFIX):].decode("utf-8")
            data = _json.loads(frames[1])
            ttl = None
            if len(frames) == 3:
                props = _json.loads(frames[2])
                ttl = float(props["ttl"]) if isinstance(props, dict) and \
                    props.get("ttl") is not None else None
            if not sensor_id:
                raise ValueError("empty sensor id")
            store.apply(sensor_id, data, ttl, now)
            return ttl
        except Exception:  # noqa: BLE001 - forwarded as it is, but not kept
            self.relay_malformed += 1
            return None

    def stats(self) -> dict[str, Any]:
        """Counters of the router (``malformed``, ``requests``, ``replies``, ...)."""
        st = self.router.stats()
        if self.peer is not None:
            st["role"] = self.peer.role
            st["takeovers"] = self.peer.takeovers
            st["yields"] = self.peer.yields
        if self.status is not None:
            st["status_updates"] = self.status.updates
            st["status_expired"] = self.status.expired
            st["status_malformed"] = getattr(self, "relay_malformed", 0)
        return st

    def run(self) -> None:
        """Route messages in the calling thread until :meth:`stop` or Ctrl-C."""
        sock = self._sock

        def set_timeout(ms: int) -> None:
            sock.setsockopt(zmq.RCVTIMEO, ms)

        try:
            if not self._stop.is_set():
                self.router.serve(self._recv, set_timeout, _STOP_CHECK)
        except KeyboardInterrupt:
            pass
        finally:
            self._close()

    def start(self) -> "Broker":
        """Run in a daemon thread; returns ``self``."""
        if self._thread is not None:
            # two threads on one socket would corrupt libzmq's state (it aborts)
            raise RuntimeError("this broker was already started")
        self._thread = threading.Thread(target=self.run, name="roc-broker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop routing (from any thread) and wait up to ``timeout`` for it."""
        self._stop.set()
        self.router.stopping = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _close(self) -> None:
        self._stop.set()
        if getattr(self, "_relay_thread", None) is not None:
            try:
                self._relay_ctl.send(b"TERMINATE")
            except zmq.ZMQError:
                pass
            self._relay_thread.join(2.0)
            self._relay_thread = None
        for t in self._threads:
            t.join(2.0)
        self._threads = []
        self._close_sockets()

    def _close_sockets(self) -> None:
        for s in self._sockets:
            s.close(0)
        self._sockets = []
        if self._security is not None:
            self._security.stop(self._ctx)
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
