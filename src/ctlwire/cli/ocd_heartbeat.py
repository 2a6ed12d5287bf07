"""``ocd-heartbeat``: ask an OCD process for its heartbeat; exit 0 if it answers, 1 if not.

Exit status (docs/cli.md): 0 a heartbeat came; 1 none came within ``--timeout``; 2 bad
arguments or configuration; 3 a URL can't be bound; 70 an internal error.

Query (default): publish an enquiry on ``--bind`` (the process listens there) and wait
for the reply on ``--listen`` (where the process publishes)::

    ocd-heartbeat --bind tcp://127.0.0.1:5557 --listen tcp://127.0.0.1:5556

or take both from an OCD configuration's ``[urls]`` section::

    ocd-heartbeat --config ocd.cfg --server-name heartbeat --listener-name ocd

``--respond`` runs the other side (a heartbeat handler) until interrupted, for tests
and demos: it publishes replies on ``--bind`` and listens to ``--listen``.
"""
from __future__ import annotations

import argparse
import configparser
import signal
import sys
import time

from ._common import (CommandParser, UsageError, existing_file, non_negative_int,
                      positive_float, run_command, timeout, zmq_bind_url, zmq_url)

PROG = "ocd-heartbeat"


def _parser() -> CommandParser:
    p = CommandParser(PROG, description=__doc__)
    p.add_argument("--bind", type=zmq_bind_url, help="URL this process binds its publisher to")
    p.add_argument("--listen", action="append", default=[], type=zmq_url,
                   help="URL of the peer's publisher (repeatable)")
    p.add_argument("--timeout", type=timeout, default=5.0,
                   help="seconds to wait for the answer (default 5)")
    p.add_argument("--config", type=existing_file,
                   help="OCD configuration file with a [urls] section")
    p.add_argument("--server-name", help="name (in [urls]) of the server to bind")
    p.add_argument("--listener-name", help="name (in [urls]) of the publishers to listen to")
    p.add_argument("--index", type=non_negative_int, default=0,
                   help="which URL of --server-name this process binds (default 0)")
    p.add_argument("--respond", action="store_true",
                   help="answer heartbeats instead of asking (runs until interrupted)")
    p.add_argument("--duration", type=positive_float, default=None,
                   help="with --respond: stop after this many seconds")
    return p


def _bind_error(url: str, exc: Exception) -> Exception:
    from ._common import UnreachableError
    return UnreachableError(f"can't bind {url}: {exc}")


def _respond(args: argparse.Namespace) -> int:
    import zmq
    from ..ocd.heart_beat import HeartBeatHandler
    from ..ocd.utils import EventDispatcher
    try:
        handler = HeartBeatHandler.from_address(args.bind)
    except zmq.ZMQError as exc:
        raise _bind_error(args.bind, exc) from None
    dispatcher = EventDispatcher(args.listen, [handler])
    # SIGTERM and SIGHUP stop a responder as Ctrl-C does: it was asked to stop (exit 0)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    # the endpoint line lets a parent process use a :0 port
    print(f"READY {handler.server.endpoint}", flush=True)
    try:
        dispatcher.run(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        dispatcher.stop()
        handler.server.close()
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.respond:
        if not args.bind or not args.listen:
            raise UsageError("--respond needs --bind and --listen")
        return _respond(args)
    import zmq
    from ..ocd.heart_beat import HeartBeatQuery
    from ..ocd import utils
    if args.config:
        if not (args.server_name and args.listener_name):
            raise UsageError("--config needs --server-name and --listener-name")
        try:
            utils.init_zmq_servers(args.config, index=args.index, names=[args.server_name])
            query = HeartBeatQuery.from_names(args.server_name, args.listener_name,
                                              timeout=args.timeout)
        except zmq.ZMQError as exc:
            utils.close_zmq_servers()
            raise _bind_error(f"server {args.server_name!r} of {args.config}", exc) from None
        except (ValueError, KeyError, IndexError, configparser.Error) as exc:
            utils.close_zmq_servers()
            raise UsageError(f"bad configuration {args.config}: {exc}") from None
        target = ", ".join(utils.get_zmq_urls(args.listener_name))
    else:
        if not args.bind or not args.listen:
            raise UsageError("give --bind and --listen, or --config with names")
        try:
            query = HeartBeatQuery.from_addresses(args.bind, args.listen, timeout=args.timeout)
        except zmq.ZMQError as exc:
            raise _bind_error(args.bind, exc) from None
        target = ", ".join(args.listen)
    t0 = time.perf_counter()
    try:
        answer = query.communicate()
    finally:
        query.close()
        utils.close_zmq_servers()
    elapsed = time.perf_counter() - t0
    if answer is None:
        if not args.quiet:
            print(f"no heartbeat from {target} within {args.timeout:g} s "
                  f"({query.sends} enquiries sent)")
        return 1
    if not args.quiet:
        print(f"heartbeat from {target}: answered in {elapsed * 1e3:.2f} ms "
              f"({query.sends} enquir{'y' if query.sends == 1 else 'ies'} sent)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``ocd-heartbeat``; returns the exit status (see docs/cli.md)."""
    return run_command(_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
