"""``roclogdump``: append every ROC log record from a broker's relay to a file.

    roclogdump --address 127.0.0.1 --base-port 5555 --output roc.log

Exit 0 when it stopped as asked (Ctrl-C, SIGTERM, SIGHUP, ``--count``, ``--duration``),
3 when it ends without ever having reached the relay.  Commands layer: may import
``ctlwire.cli._common`` and the documented ``ctlwire.roc`` API; see docs/cli.md.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from ctlwire.cli._common import (CommandParser, IdleWarning, UnreachableError, UsageError,
                                 non_negative_int, output_file, positive_float,
                                 positive_int, run_command)
from ctlwire.cli.rocbroker import base_port

PROG = "roclogdump"
log = logging.getLogger("ctlwire.roc.logdump")


def _parser() -> CommandParser:
    # defaults from $CTLWIRE_ROC_BROKER are read when running, not here, so a bad
    # value cannot break --help
    p = CommandParser(PROG, description="Write every ROC log record to a file "
                                        "(JSON Lines, appended).")
    p.add_argument("--address", default=None,
                   help="broker host (default from $CTLWIRE_ROC_BROKER, else localhost)")
    p.add_argument("--base-port", type=base_port, default=None,
                   help="broker base port (default from $CTLWIRE_ROC_BROKER, else 5555); "
                        "records come from base+2")
    p.add_argument("--output", "-o", required=True, type=output_file,
                   help="file to append records to")
    p.add_argument("--max-bytes", type=non_negative_int, default=0,
                   help="rotate the file at this size (default 0: never)")
    p.add_argument("--backups", type=non_negative_int, default=5,
                   help="rotated files kept (default 5)")
    p.add_argument("--count", type=positive_int, default=None, help="exit after N records")
    p.add_argument("--duration", type=positive_float, default=None,
                   help="exit after S seconds")
    p.add_argument("--curve-secret", metavar="FILE",
                   help="this subscriber's key pair (a zmq.auth .key_secret file)")
    p.add_argument("--broker-key", metavar="FILE", help="the broker's public key file")
    return p


def _run(args: argparse.Namespace) -> int:
    from ctlwire.roc.endpoints import Endpoints, default_endpoint_list
    from ctlwire.roc.logdump import LogDump
    sources: list[Endpoints] = []
    if args.address is None or args.base_port is None:
        try:
            defaults = default_endpoint_list()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if args.address is None and args.base_port is None:
            sources = defaults  # every broker of $CTLWIRE_ROC_BROKER, in order
        address = args.address or defaults[0].brokerAddress
        port = args.base_port or defaults[0].brokerBasePort
    else:
        address, port = args.address, args.base_port
    try:
        ep = Endpoints(address, port)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not sources:
        sources = [ep]
    security = broker_key = None
    if args.curve_secret or args.broker_key:
        if not (args.curve_secret and args.broker_key):
            raise UsageError("--curve-secret and --broker-key go together")
        import zmq.auth

        from ctlwire._curve import CurveSecurity
        try:
            security = CurveSecurity.from_files(args.curve_secret, domain="ctlwire.roc")
            broker_key, _ = zmq.auth.load_certificate(args.broker_key)
        except (OSError, ValueError) as exc:
            raise UsageError(str(exc)) from None
    try:
        dump = LogDump(sources, args.output, max_bytes=args.max_bytes, backups=args.backups,
                       security=security, broker_key=broker_key)
    except OSError as exc:
        raise UsageError(f"cannot open {args.output!r}: {os.strerror(exc.errno or 0)}") \
            from None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: dump.stop())
    print(f"{PROG}: {ep.generalXPUB} -> {args.output}", flush=True)
    log.info("subscribed to log records at %s, appending to %s", ep.generalXPUB,
             args.output)
    idle = IdleWarning(f"no log record from {ep.generalXPUB} after 5 s (is a broker "
                       "running there?)", 5.0, log).start()
    try:
        n = dump.run(args.count, args.duration, on_record=idle.done)
    except KeyboardInterrupt:
        n = dump.written
    finally:
        idle.cancel()
    print(f"{PROG}: {n} records written, {dump.lost} lost on the way (gaps in the senders' "
          f"numbers), {dump.repeated} repeats skipped, {dump.bad} malformed messages "
          "dropped", flush=True)
    if n == 0 and not dump.connected:
        raise UnreachableError(f"nothing to connect to at {ep.generalXPUB}: "
                               "no broker relay answered")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``roclogdump``."""
    return run_command(_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
