"""``tcs-replay``: replay a TCS event database (or mock events) on a ZeroMQ PUB socket.

    tcs-replay night.sqlite --url tcp://127.0.0.1:5556 --speedup 10 --wait-subscriber
    tcs-replay                # no database: one mock lrs2.hardware.status per second

Subscribers that connect late miss the first events (PUB/SUB); ``--wait-subscriber``
starts when the first subscription reaches the socket instead of after a guessed
sleep.  A progress line is shown when stdout is a terminal.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import threading


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tcs-replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("db", nargs="?", help="TCS database (omit to send mock events)")
    p.add_argument("--url", default="tcp://127.0.0.1:5556",
                   help="URL to bind (default tcp://127.0.0.1:5556)")
    p.add_argument("--speedup", type=float, default=1.0,
                   help="replay speed factor (> 0; 'inf' for as fast as possible)")
    p.add_argument("--topics", nargs="*", default=None, help="topic prefixes to send")
    p.add_argument("--sort-by", default="none", choices=["none", "__data_time", "__wire_time"])
    p.add_argument("--convert-number", action="store_true", help="send numbers as numbers")
    p.add_argument("--convert-bool", action="store_true", help="send booleans as booleans")
    p.add_argument("--json-compat", action="store_true",
                   help="encode like the standard library's json.dumps")
    p.add_argument("--loop", action="store_true", help="replay forever")
    p.add_argument("--wait-subscriber", nargs="?", type=float, const=-1.0, default=None,
                   metavar="TIMEOUT",
                   help="wait for the first subscriber before sending (optionally at most "
                        "TIMEOUT seconds, then exit 1)")
    p.add_argument("--mock-sleep", type=float, default=1.0,
                   help="seconds between mock events (default 1)")
    p.add_argument("--count", type=int, default=None, help="mock mode: stop after N events")
    p.add_argument("--spin", type=float, default=None, metavar="SECONDS",
                   help="busy-wait this long before each deadline instead of sleeping "
                        "(default 0: always sleep)")
    p.add_argument("--realtime", action="store_true",
                   help="pace under SCHED_FIFO (Linux, needs CAP_SYS_NICE): precise timing "
                        "on a busy machine")
    p.add_argument("--no-progress", action="store_true", help="never show the progress line")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary")
    return p


class _Progress:
    """Redraws one status line twice a second from another thread."""

    def __init__(self, stats_of, total: int | None, stream) -> None:
        self.stats_of = stats_of
        self.total = total
        self.stream = stream
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _line(self) -> str:
        st = self.stats_of()
        done = st.sent + st.filtered + st.skipped
        pct = f" {100.0 * done / self.total:5.1f}%" if self.total else ""
        p99 = st.lateness_percentile(99)
        late = f", p99 late {p99 * 1e6:.0f} µs" if p99 is not None else ""
        return f"\r{pct} sent {st.sent} filtered {st.filtered} skipped {st.skipped}{late}   "

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.stream.write(self._line())
            self.stream.flush()

    def __enter__(self) -> "_Progress":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.stream.write(self._line() + "\n")
        self.stream.flush()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ..tcs.server import (TCSDatabaseError, TCSDBReplay, TCSMockEvent, ZMQServer,
                              use_realtime_scheduling)
    replay = None
    if args.db is not None:
        try:
            replay = TCSDBReplay(args.db, sort_by=args.sort_by, speedup=args.speedup,
                                 topics=args.topics, convert_number=args.convert_number,
                                 convert_bool=args.convert_bool, json_compat=args.json_compat,
                                 **({} if args.spin is None else {"spin": args.spin}))
        except (TCSDatabaseError, ValueError) as exc:
            print(f"tcs-replay: {exc}", file=sys.stderr)
            return 2
    try:
        server = ZMQServer(args.url)
    except Exception as exc:
        print(f"tcs-replay: {exc}", file=sys.stderr)
        return 2
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    say(f"tcs-replay: publishing on {server.endpoint}")
    if args.realtime and not use_realtime_scheduling():
        say("tcs-replay: SCHED_FIFO not permitted here; pacing with normal scheduling")
    try:
        if args.wait_subscriber is not None:
            timeout = None if args.wait_subscriber < 0 else args.wait_subscriber
            say("tcs-replay: waiting for a subscriber")
            # with --topics, only a subscriber that would receive some of them counts
            wanted = args.topics if (args.topics and replay is not None) else None
            if not server.wait_for_subscriber(timeout=timeout, topic=wanted):
                say(f"tcs-replay: no subscriber within {timeout:g} s")
                return 1
        if replay is None:
            mock = TCSMockEvent(args.mock_sleep)
            n = server.start(mock if args.count is None else itertools.islice(mock, args.count))
            say(f"tcs-replay: sent {n} mock events")
            return 0
        total = replay._conn.execute("SELECT count(*) FROM event").fetchone()[0]
        show = sys.stdout.isatty() and not args.no_progress
        passes = 0
        sent = 0
        while True:
            if show:
                with _Progress(lambda: replay.stats, total, sys.stdout):
                    sent += server.start(replay)
            else:
                sent += server.start(replay)
            passes += 1
            st = replay.stats
            p99 = st.lateness_percentile(99)
            say(f"tcs-replay: pass {passes}: sent {st.sent}, filtered {st.filtered}, "
                f"skipped {st.skipped}"
                + (f", lateness p50 {st.lateness_percentile(50) * 1e6:.0f} µs "
                   f"p99 {p99 * 1e6:.0f} µs max {st.lateness_max * 1e6:.0f} µs"
                   if p99 is not None else ""))
            if not args.loop:
                break
            replay._reset_iter()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        server.close()
        if replay is not None:
            replay.close()


if __name__ == "__main__":
    sys.exit(main())
