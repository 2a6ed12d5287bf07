"""``rocbroker``: the ROC broker (7/MDP router, 8/MMI, log/status relay), a standby of
another broker, or (``--list``) a look at what a broker serves.

    rocbroker --address 127.0.0.1 --base-port 5555            # a primary
    rocbroker --address 127.0.0.2 --base-port 5555 --standby-for 127.0.0.1:5555
    rocbroker --list 127.0.0.1:5555

Commands layer: may import ``ctlwire.cli._common`` and the documented ``ctlwire.roc``
API (and ``ctlwire._curve`` for keys); the conventions are in docs/cli.md.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from ctlwire.cli._common import (CommandParser, UnreachableError, UsageError,
                                 host_port, positive_float, positive_int, run_command)

PROG = "rocbroker"
#: How often, with -v, the broker's counters are logged when they changed.
_STATS_EVERY = 5.0
#: Seconds after which a broker no server has joined says so.
_IDLE_AFTER = 5.0


def base_port(text: str) -> int:
    """A base port with room for base+3 (MDP, XSUB, XPUB, peer link)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 < value <= 65532:
        raise argparse.ArgumentTypeError(
            f"base port must be 1..65532 (the broker also binds base+1..base+3), "
            f"got {text!r}")
    return value


def broker_address(text: str) -> str:
    """``host:baseport`` of a broker."""
    host, port = host_port(text)
    if port > 65532:
        raise argparse.ArgumentTypeError(f"base port must be 1..65532, got {text!r}")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parser() -> CommandParser:
    p = CommandParser(
        PROG, description="ROC broker: 7/MDP router on BASE, XSUB on BASE+1, XPUB on "
                          "BASE+2, link to a standby on BASE+3.")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; use 0.0.0.0 for all)")
    p.add_argument("--base-port", type=base_port, default=5555,
                   help="MDP port; the relay uses the next two (default 5555)")
    p.add_argument("--heartbeat", type=positive_float, default=1.0,
                   help="heartbeat interval in seconds (default 1.0)")
    p.add_argument("--liveness", type=positive_int, default=3,
                   help="missed heartbeats before a server is dead (default 3)")
    p.add_argument("--queue-timeout", type=positive_float, default=2.0,
                   help="seconds a call waits for a busy/restarting server (default 2.0)")
    p.add_argument("--unknown-grace", type=positive_float, default=0.5,
                   help="seconds a call for a never-served object waits (default 0.5)")
    p.add_argument("--max-queue", type=positive_int, default=1000,
                   help="calls waiting per object id (default 1000)")
    p.add_argument("--no-relay", action="store_true", help="do not run the XSUB/XPUB relay")
    p.add_argument("--no-snapshots", action="store_true",
                   help="relay status without keeping the tree for late subscribers")
    ha = p.add_argument_group("primary and standby")
    ha.add_argument("--standby-for", metavar="HOST:PORT", type=broker_address,
                    help="run as the standby of the primary broker at HOST:PORT")
    ha.add_argument("--no-peer", action="store_true",
                    help="run alone: no standby can join, active at once (by default a "
                         "broker listens for a standby on BASE+3 and holds calls for up "
                         "to --peer-timeout at start, until it knows it is the active one)")
    ha.add_argument("--peer-interval", type=positive_float, default=0.1,
                    help="heartbeats between primary and standby, seconds (default 0.1)")
    ha.add_argument("--peer-timeout", type=positive_float, default=0.5,
                    help="silence after which the peer is gone, seconds (default 0.5)")
    keys = p.add_argument_group("keys (CURVE)")
    keys.add_argument("--curve-secret", metavar="FILE",
                      help="this broker's key pair (a zmq.auth .key_secret file)")
    keys.add_argument("--allow-keys", metavar="DIR",
                      help="directory of the public keys (*.key) allowed to connect")
    keys.add_argument("--broker-key", metavar="FILE",
                      help="with --list: the broker's public key file")
    p.add_argument("--list", metavar="HOST:PORT", type=broker_address,
                   help="print the objects the broker at HOST:PORT serves, and exit")
    p.add_argument("--timeout", type=positive_float, default=2.0,
                   help="with --list: seconds to wait for answers (default 2.0)")
    return p


def _security(args: argparse.Namespace, role: str) -> Any:
    if not args.curve_secret:
        if args.allow_keys or args.broker_key:
            raise UsageError("--allow-keys and --broker-key need --curve-secret")
        return None
    from ctlwire._curve import CurveSecurity
    if role == "broker" and not args.allow_keys:
        raise UsageError("--curve-secret needs --allow-keys DIR (the keys that may connect)")
    try:
        return CurveSecurity.from_files(args.curve_secret, args.allow_keys,
                                        domain="ctlwire.roc")
    except (ValueError, RuntimeError) as exc:
        raise UsageError(str(exc)) from None


def _list(args: argparse.Namespace) -> int:
    from ctlwire.roc import RocClient, RocError
    security = _security(args, "client")
    broker_key = None
    if security is not None:
        if not args.broker_key:
            raise UsageError("--list with --curve-secret needs --broker-key FILE")
        import zmq.auth
        try:
            broker_key, _ = zmq.auth.load_certificate(args.broker_key)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read broker key {args.broker_key!r}: {exc}") from None
    client = RocClient(args.list, timeout=args.timeout, retry=False, security=security,
                       broker_key=broker_key)
    try:
        objects = client.objects()
    except RocError as exc:
        raise UnreachableError(f"no answer from the broker at {args.list}: {exc}") from None
    finally:
        client.close()
    for name, info in sorted(objects.items()):
        print(name)
        if "error" in info:
            print(f"    (no description: {info['error']})")
            continue
        for m, doc in sorted(info["methods"].items()):
            kind = "generator" if m in info["generators"] else "method"
            print(f"    {m}()  [{kind}]" + (f"  {doc}" if doc else ""))
        for a, doc in sorted(info["attributes"].items()):
            print(f"    {a}  [attribute]" + (f"  {doc}" if doc else ""))
    if not objects:
        print("(no objects)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import logging

    import zmq

    from ctlwire.roc import Broker, Endpoints
    log = logging.getLogger("ctlwire.roc.broker")
    if args.standby_for and args.no_peer:
        raise UsageError("--standby-for and --no-peer exclude each other")
    if args.peer_timeout <= args.peer_interval:
        raise UsageError(f"--peer-timeout ({args.peer_timeout:g}) must exceed "
                         f"--peer-interval ({args.peer_interval:g})")
    try:
        ep = Endpoints(args.address, args.base_port)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    security = _security(args, "broker")
    try:
        broker = Broker(ep, heartbeat=args.heartbeat, liveness=args.liveness,
                        queue_timeout=args.queue_timeout, unknown_grace=args.unknown_grace,
                        max_queue=args.max_queue, relay=not args.no_relay,
                        snapshots=not args.no_snapshots, standby_for=args.standby_for,
                        has_standby=not (args.no_peer or args.standby_for),
                        peer_interval=args.peer_interval,
                        peer_timeout=args.peer_timeout, security=security,
                        peer_optional=True)
    except zmq.ZMQError as exc:
        raise UnreachableError(f"cannot bind {args.address} ports {args.base_port}.."
                               f"{args.base_port + 3}: {exc}") from None
    stopping = threading.Event()

    def stop(*_: object) -> None:
        stopping.set()
        broker.stop(0)

    # SIGTERM and SIGHUP end the loop like Ctrl-C does, so sockets close cleanly
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    role = "standby of " + args.standby_for if args.standby_for else \
        ("alone" if broker.peer is None else
         f"primary; a standby may join at {ep.brokerPeer}")
    print(f"{PROG}: MDP {ep.rocBroker}  XSUB {ep.generalXSUB}  XPUB {ep.generalXPUB}"
          f"  ({role}{', CURVE' if security else ''})", flush=True)
    log.info("bound MDP %s, XSUB %s, XPUB %s%s", ep.rocBroker, ep.generalXSUB,
             ep.generalXPUB, "" if broker.peer is None or args.standby_for else
             f", peer link {ep.brokerPeer}")

    def report() -> None:
        # -v: what the broker is doing, when it changes (the router itself never logs)
        last: Any = None
        while not stopping.wait(_STATS_EVERY):
            try:
                st = broker.stats()
            except RuntimeError:  # the router changed a dict while we read it
                continue
            now = (st.get("state"), st["services"], st["requests"], st["malformed"])
            if now != last:
                last = now
                log.info("%s; objects %s; %d requests, %d replies, %d malformed, %d lost",
                         st.get("state"), st["services"] or "none", st["requests"],
                         st["replies"], st["malformed"], st["lost"])

    def no_server() -> None:
        # docs/cli.md: say so when nothing has happened after a few seconds
        if stopping.wait(_IDLE_AFTER):
            return
        try:
            workers = broker.stats()["workers"]
        except RuntimeError:  # the router changed a dict while we read it
            return
        if not workers:
            log.warning("no server has registered after %g s (servers connect to %s)",
                        _IDLE_AFTER, ep.rocBroker)

    threading.Thread(target=no_server, daemon=True, name="roc-broker-idle").start()
    if log.isEnabledFor(logging.INFO):
        threading.Thread(target=report, daemon=True, name="roc-broker-report").start()
    broker.run()
    stopping.set()
    print(f"{PROG}: stopped; {broker.stats()}", flush=True)
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args)
    return _serve(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rocbroker``."""
    return run_command(_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
