"""``ocd-heartbeat``: ask an OCD process for its heartbeat; exit 0 if it answers, 1 if not.

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
import sys
import time


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocd-heartbeat", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bind", help="URL this process binds its publisher to")
    p.add_argument("--listen", action="append", default=[],
                   help="URL of the peer's publisher (repeatable)")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="seconds to wait for the answer (default 5)")
    p.add_argument("--config", help="OCD configuration file with a [urls] section")
    p.add_argument("--server-name", help="name (in [urls]) of the server to bind")
    p.add_argument("--listener-name", help="name (in [urls]) of the publishers to listen to")
    p.add_argument("--index", type=int, default=0,
                   help="which URL of --server-name this process binds (default 0)")
    p.add_argument("--respond", action="store_true",
                   help="answer heartbeats instead of asking (runs until interrupted)")
    p.add_argument("--duration", type=float, default=None,
                   help="with --respond: stop after this many seconds")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing, just exit")
    return p


def _respond(args: argparse.Namespace) -> int:
    from ..ocd.heart_beat import HeartBeatHandler
    from ..ocd.utils import EventDispatcher
    handler = HeartBeatHandler.from_address(args.bind)
    dispatcher = EventDispatcher(args.listen, [handler])
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


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.respond:
        if not args.bind or not args.listen:
            parser.error("--respond needs --bind and --listen")
        return _respond(args)
    from ..ocd.heart_beat import HeartBeatQuery
    from ..ocd import utils
    if args.config:
        if not (args.server_name and args.listener_name):
            parser.error("--config needs --server-name and --listener-name")
        try:
            utils.init_zmq_servers(args.config, index=args.index, names=[args.server_name])
            query = HeartBeatQuery.from_names(args.server_name, args.listener_name,
                                              timeout=args.timeout)
        except (ValueError, KeyError) as exc:
            print(f"ocd-heartbeat: {exc}", file=sys.stderr)
            return 2
        target = ", ".join(utils.get_zmq_urls(args.listener_name))
    else:
        if not args.bind or not args.listen:
            parser.error("give --bind and --listen, or --config with names")
        query = HeartBeatQuery.from_addresses(args.bind, args.listen, timeout=args.timeout)
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


if __name__ == "__main__":
    sys.exit(main())
