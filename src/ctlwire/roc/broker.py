"""The ROC broker: 7/MDP router for calls, 8/MMI, and the XSUB/XPUB relay.

Run it as ``rocbroker`` or ``python -m ctlwire.roc.broker``::

    rocbroker --address 127.0.0.1 --base-port 5555

It binds ``Endpoints(address, base_port)``: MDP on base+0, XSUB on base+1, XPUB on
base+2.  Routing decisions live in the compiled :class:`ctlwire.roc._router.Router`;
this module only moves frames between the socket and it.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

import zmq

from ctlwire._ext import load_extension
from ctlwire._zmq import make_socket
from ctlwire.roc._fastzmq import wire
from ctlwire.roc.endpoints import DEFAULT_BASE_PORT, Endpoints

_router = load_extension("ctlwire.roc._router")

log = logging.getLogger("ctlwire.roc.broker")

#: Longest a broker sleeps before looking at its stop flag, in seconds.
_STOP_CHECK = 0.1


class Broker:
    """A Majordomo broker routing JSON-RPC calls by object id, plus the pub/sub relay.

    Parameters
    ----------
    endpoints : Endpoints
        Where to bind (``rocBroker``, ``generalXSUB``, ``generalXPUB``).
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

    Notes
    -----
    Use :meth:`run` in the calling thread, or :meth:`start` for a background thread;
    :meth:`stop` (any thread) ends both and closes the sockets.
    """

    def __init__(self, endpoints: Endpoints, ctx: zmq.Context | None = None, *,
                 heartbeat: float = 1.0, liveness: int = 3, queue_timeout: float = 2.0,
                 unknown_grace: float = 0.5, max_queue: int = 1000,
                 relay: bool = True) -> None:
        self.endpoints = endpoints
        self._own_ctx = ctx is None
        self._ctx = zmq.Context() if ctx is None else ctx
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._relay_thread: threading.Thread | None = None
        self._sock = make_socket(self._ctx, zmq.ROUTER, sndhwm=100_000, rcvhwm=100_000)
        self._sockets: list[zmq.Socket] = [self._sock]
        try:
            self._sock.bind(endpoints.rocBroker)
            self._recv, send = wire(self._sock)
            self.router = _router.Router(send, heartbeat=heartbeat,
                                         liveness=liveness, queue_timeout=queue_timeout,
                                         unknown_grace=unknown_grace, max_queue=max_queue)
            if relay:
                self._start_relay()
        except BaseException:
            self._close_sockets()
            raise

    def _start_relay(self) -> None:
        xsub = make_socket(self._ctx, zmq.XSUB)
        xpub = make_socket(self._ctx, zmq.XPUB)
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

    def stats(self) -> dict[str, Any]:
        """Counters of the router (``malformed``, ``requests``, ``replies``, ...)."""
        return self.router.stats()

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
        if self._relay_thread is not None:
            try:
                self._relay_ctl.send(b"TERMINATE")
            except zmq.ZMQError:
                pass
            self._relay_thread.join(2.0)
            self._relay_thread = None
        self._close_sockets()

    def _close_sockets(self) -> None:
        for s in self._sockets:
            s.close(0)
        self._sockets = []
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rocbroker`` / ``python -m ctlwire.roc.broker``."""
    p = argparse.ArgumentParser(
        prog="rocbroker",
        description="ROC broker: 7/MDP router on BASE, XSUB on BASE+1, XPUB on BASE+2.")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; use 0.0.0.0 for all)")
    p.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT,
                   help=f"MDP port; relay uses the next two (default {DEFAULT_BASE_PORT})")
    p.add_argument("--heartbeat", type=float, default=1.0,
                   help="heartbeat interval in seconds (default 1.0)")
    p.add_argument("--liveness", type=int, default=3,
                   help="missed heartbeats before a server is dead (default 3)")
    p.add_argument("--queue-timeout", type=float, default=2.0,
                   help="seconds a call waits for a busy/restarting server (default 2.0)")
    p.add_argument("--unknown-grace", type=float, default=0.5,
                   help="seconds a call for a never-served object waits (default 0.5)")
    p.add_argument("--max-queue", type=int, default=1000,
                   help="calls waiting per object id (default 1000)")
    p.add_argument("--no-relay", action="store_true", help="do not run the XSUB/XPUB relay")
    p.add_argument("-v", "--verbose", action="store_true", help="log broker events")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ep = Endpoints(args.address, args.base_port)
    try:
        broker = Broker(ep, heartbeat=args.heartbeat, liveness=args.liveness,
                        queue_timeout=args.queue_timeout, unknown_grace=args.unknown_grace,
                        max_queue=args.max_queue, relay=not args.no_relay)
    except zmq.ZMQError as exc:
        print(f"rocbroker: cannot bind {ep}: {exc}", file=sys.stderr)
        return 2
    # SIGTERM ends the loop like Ctrl-C does, so sockets close cleanly
    signal.signal(signal.SIGTERM, lambda *_: broker.stop(0))
    print(f"rocbroker: MDP {ep.rocBroker}  XSUB {ep.generalXSUB}  XPUB {ep.generalXPUB}",
          flush=True)
    broker.run()
    print(f"rocbroker: stopped; {broker.stats()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
