"""``tcs-record``: record TCS events from publishers into a replayable database.

    tcs-record tcp://127.0.0.1:5556 -o night.sqlite [--topics tcs.] [--duration 60]

Stops after ``--duration`` seconds, ``--count`` events, or Ctrl-C; what was received
is written before exiting.  Replay the file with ``tcs-replay night.sqlite``.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tcs-record", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("urls", nargs="+", help="publisher URLs to subscribe to")
    p.add_argument("-o", "--output", required=True, help="database file to write")
    p.add_argument("--topics", nargs="*", default=None, help="topic prefixes to record")
    p.add_argument("--duration", type=float, default=None, help="stop after seconds")
    p.add_argument("--count", type=int, default=None, help="stop after N events")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    from ..tcs.events import TCSDatabaseError
    from ..tcs.record import TCSRecorder
    try:
        rec = TCSRecorder(args.urls, args.output, topics=args.topics)
    except TCSDatabaseError as exc:
        print(f"tcs-record: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"recording {', '.join(args.urls)} into {args.output}", file=sys.stderr)
    try:
        rec.run(duration=args.duration, count=args.count)
    except KeyboardInterrupt:
        pass
    finally:
        rec.close()
    if not args.quiet:
        print(f"recorded {rec.recorded} events ({rec.subscriber.bad} malformed dropped)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
