"""``tcs-record``: record TCS events from publishers into a replayable database.

    tcs-record tcp://127.0.0.1:5556 -o night.sqlite [--topics tcs.] [--duration 60]
    tcs-record tcp://127.0.0.1:5556 -o night.sqlite --split-every 3600   # night-0001.sqlite ...

Stops after --duration seconds, --count events, or on SIGINT (Ctrl-C), SIGTERM or
SIGHUP: everything received is written, the summary printed, and the exit status is 0.
Events are committed in batches of at most 2000 events or 0.5 s (--batch,
--flush-interval): a crash or SIGKILL loses at most the batch not yet committed (2000
events, or half a second of events, at most).

-o refuses a file that is not a TCS event database (it is left untouched), and an
existing recording unless --append (a new session: a replay does not wait through the
idle time between sessions) or --overwrite.  Replay with ``tcs-replay night.sqlite``
(rotated parts: ``tcs-replay night-*.sqlite``, one night).

Exit status: 0 done; 2 bad arguments or output file; 3 nothing received because
nothing was there to connect to; 70 internal error.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time

from ._common import (EXIT_OK, CommandParser, UnreachableError, UsageError, output_file,
                      positive_float, positive_int, run_command, zmq_url)

PROG = "tcs-record"
_log = logging.getLogger(PROG)

#: seconds between progress lines, and before warning that nothing came
PROGRESS_EVERY = 5.0
IDLE_WARNING = 5.0


def _parser() -> CommandParser:
    from ..tcs.record import DEFAULT_BATCH, DEFAULT_FLUSH_INTERVAL
    p = CommandParser(PROG, description=__doc__)
    p.add_argument("urls", nargs="+", type=zmq_url, metavar="URL",
                   help="publisher URLs to subscribe to (tcp://host:port)")
    p.add_argument("-o", "--output", required=True, type=output_file,
                   help="database file to write")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true",
                      help="add to an existing recording (a new session)")
    mode.add_argument("--overwrite", action="store_true",
                      help="replace an existing recording")
    p.add_argument("--topics", nargs="*", default=None, help="topic prefixes to record")
    p.add_argument("--duration", type=positive_float, default=None,
                   help="stop after this many seconds")
    p.add_argument("--count", type=positive_int, default=None, help="stop after N events")
    p.add_argument("--batch", type=positive_int, default=DEFAULT_BATCH,
                   help=f"events per committed batch at most (default {DEFAULT_BATCH}); "
                        "a SIGKILL loses at most this batch")
    p.add_argument("--flush-interval", type=positive_float, default=DEFAULT_FLUSH_INTERVAL,
                   help="commit at least this often, seconds (default "
                        f"{DEFAULT_FLUSH_INTERVAL:g})")
    p.add_argument("--split-every", type=positive_float, default=None, metavar="SECONDS",
                   help="rotate: start OUTPUT-0002.sqlite ... after this many seconds")
    p.add_argument("--max-size", type=positive_float, default=None, metavar="MB",
                   help="rotate: start a new part once one reaches this size")
    return p


class _Ticker:
    """Progress lines and the no-publisher warning, called from the record loop."""

    def __init__(self, rec, urls: list[str], quiet: bool) -> None:
        self.rec = rec
        self.urls = urls
        self.quiet = quiet
        self.start = time.monotonic()
        self.next_line = self.start + PROGRESS_EVERY
        self.last_count = 0
        self.last_time = self.start
        self.warned = False

    def __call__(self, rec) -> None:
        now = time.monotonic()
        if not self.warned and now - self.start >= IDLE_WARNING and rec.received == 0:
            self.warned = True
            if rec.connected:
                _log.warning("connected to %s but no events after %g s",
                             ", ".join(sorted(rec.connected)), IDLE_WARNING)
            else:
                _log.warning("nothing to connect to at %s after %g s (is a publisher "
                             "running there?)", ", ".join(self.urls), IDLE_WARNING)
        if now >= self.next_line:
            self.next_line = now + PROGRESS_EVERY
            rate = (rec.received - self.last_count) / max(1e-9, now - self.last_time)
            self.last_count, self.last_time = rec.received, now
            if not self.quiet:
                print(f"{PROG}: {rec.received} events received, {rec.recorded} written "
                      f"({rate:.0f}/s), {rec.subscriber.bad} malformed, file "
                      f"{rec.files[-1]}", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    import zmq

    from ..tcs.events import TCSDatabaseError
    from ..tcs.record import TCSRecorder
    mode = "append" if args.append else "overwrite" if args.overwrite else "new"
    max_size = None if args.max_size is None else args.max_size * 1e6
    stopped_by: list[str] = []
    recorders: list = []

    def on_signal(signum, frame):  # noqa: ARG001
        stopped_by.append(signal.Signals(signum).name)
        for r in recorders:
            r.stop()

    main_thread = threading.current_thread() is threading.main_thread()
    old = {}
    if main_thread:  # signals can only be handled there; before anything connects
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.signal(sig, on_signal)
    try:
        rec = TCSRecorder(args.urls, args.output, topics=args.topics, mode=mode,
                          batch=args.batch, flush_interval=args.flush_interval,
                          split_every=args.split_every, max_size=max_size)
    except BaseException as exc:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if isinstance(exc, (TCSDatabaseError, OSError, zmq.ZMQError)):
            raise UsageError(str(exc)) from None
        raise
    recorders.append(rec)
    if stopped_by:  # told to stop while starting
        rec.stop()
    if not args.quiet:
        print(f"{PROG}: recording {', '.join(args.urls)} into {rec.files[0]}", flush=True)
    t0 = time.monotonic()
    try:
        rec.run(duration=args.duration, count=args.count,
                on_tick=_Ticker(rec, args.urls, args.quiet))
    finally:
        rec.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    elapsed = time.monotonic() - t0
    why = f", stopped by {stopped_by[0]}" if stopped_by else ""
    files = rec.files[0] if len(rec.files) == 1 else \
        f"{len(rec.files)} files {rec.files[0]} .. {rec.files[-1]}"
    if not args.quiet:
        print(f"{PROG}: recorded {rec.recorded} events into {files} in {elapsed:.1f} s "
              f"({rec.subscriber.bad} malformed messages dropped{why})", flush=True)
    if rec.received == 0:
        rec.remove_if_empty()  # a run that found nothing leaves no file behind
        if not rec.connected and not stopped_by:
            raise UnreachableError(f"nothing received: nothing to connect to at "
                                   f"{', '.join(args.urls)}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return run_command(_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
