"""``tcs-replay``: replay TCS event databases (or mock events) on a ZeroMQ PUB socket.

    tcs-replay night.sqlite --url tcp://127.0.0.1:5556 --speedup 10 --wait-subscriber 30
    tcs-replay night-*.sqlite --start +3600 --end +7200 --max-gap 5 --katcp-port 7200
    tcs-replay                # no database: one mock lrs2.hardware.status per second

Nothing is lost silently: with --speedup inf every send waits for a slow subscriber
(back-pressure); paced, an event a full subscriber can't take is counted as dropped.
At the end the queued events are given --flush-timeout seconds to leave.  The summary
(stdout) says sent = delivered + dropped.

Several databases replay on one clock, merged in time order.  --start/--end take an
ISO 8601 time or +SECONDS from the first event; --max-gap shortens idle gaps.
--katcp-port serves ?pause ?resume ?set-speedup ?seek ?step and progress sensors.

Subscribers that connect late miss the first events (PUB/SUB): --wait-subscriber
starts when the first subscription arrives.  Progress: a status line on a terminal,
else a log line every few seconds on stderr.

Exit status: 0 done; 1 no subscriber within --wait-subscriber; 2 bad arguments or a
missing, malformed or damaged database (the events before the damage are replayed; corrupt
events are passed over, counted and summed up in one line);
3 the URL or the KATCP port can't be bound; 70 internal error.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import signal
import sys
import threading
import time

from ._common import (CommandParser, NegativeAnswer, UnreachableError, UsageError,
                      existing_file, non_negative_float, output_file, port, positive_float,
                      positive_int, run_command, zmq_bind_url)

PROG = "tcs-replay"
_log = logging.getLogger(PROG)
PROGRESS_EVERY = 5.0
#: queue per subscriber of an unpaced replay (see _run)
UNPACED_HWM = 1000


def speedup(text: str) -> float:
    """A speed factor: finite and > 0, or ``inf``."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if math.isnan(v) or not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 (or inf), got {text!r}")
    return v


def spin(text: str) -> float:
    v = non_negative_float(text)
    if v > 0.1:
        raise argparse.ArgumentTypeError(f"must be at most 0.1 s, got {text!r}")
    return v


def window_time(text: str) -> str:
    from ..tcs.steer import parse_time
    try:
        parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _parser() -> CommandParser:
    p = CommandParser(PROG, description=__doc__)
    p.add_argument("db", nargs="*", type=existing_file,
                   help="TCS databases, merged in time order (omit to send mock events)")
    p.add_argument("--url", default="tcp://127.0.0.1:5556", type=zmq_bind_url,
                   help="URL to bind (default tcp://127.0.0.1:5556)")
    p.add_argument("--speedup", type=speedup, default=1.0,
                   help="replay speed factor (> 0; 'inf' for as fast as possible)")
    p.add_argument("--topics", nargs="*", default=None, help="topic prefixes to send")
    p.add_argument("--sort-by", default="none", choices=["none", "__data_time", "__wire_time"])
    p.add_argument("--convert-number", action="store_true", help="send numbers as numbers")
    p.add_argument("--convert-bool", action="store_true", help="send booleans as booleans")
    p.add_argument("--json-compat", action="store_true",
                   help="encode like the standard library's json.dumps")
    p.add_argument("--loop", action="store_true", help="replay forever")
    p.add_argument("--start", type=window_time, default=None, metavar="TIME",
                   help="first event time: ISO 8601, Unix seconds or +SECONDS from the first")
    p.add_argument("--end", type=window_time, default=None, metavar="TIME",
                   help="last event time (as --start)")
    p.add_argument("--max-gap", type=non_negative_float, default=None, metavar="SECONDS",
                   help="shorten idle gaps longer than this")
    p.add_argument("--katcp-port", type=port, default=None, metavar="N",
                   help="serve a KATCP control port (pause, resume, set-speedup, seek, step)")
    p.add_argument("--katcp-host", default="127.0.0.1", help="host of the control port")
    p.add_argument("--wait-subscriber", nargs="?", type=positive_float, const=math.inf,
                   default=None, metavar="TIMEOUT",
                   help="wait for the first subscriber before sending (at most TIMEOUT "
                        "seconds, then exit 1)")
    p.add_argument("--flush-timeout", type=non_negative_float, default=10.0,
                   help="seconds queued events may take to leave at the end (default 10)")
    p.add_argument("--mock-sleep", type=non_negative_float, default=1.0,
                   help="seconds between mock events (default 1)")
    p.add_argument("--count", type=positive_int, default=None,
                   help="mock mode: stop after N events")
    p.add_argument("--spin", type=spin, default=None, metavar="SECONDS",
                   help="busy-wait this long before each deadline instead of sleeping "
                        "(0: always sleep; at most 0.1; default: adaptive, spins what "
                        "sleeps overshoot, up to 500 us, and only sleeps while the "
                        "machine is busy)")
    p.add_argument("--realtime", action="store_true",
                   help="pace under SCHED_FIFO (Linux, needs CAP_SYS_NICE): precise timing "
                        "on a busy machine")
    p.add_argument("--stats-json", type=output_file, default=None, metavar="FILE",
                   help="write the summary and the lateness histogram as JSON")
    p.add_argument("--plot", type=output_file, default=None, metavar="FILE.png",
                   help="draw the lateness histogram and the event rate (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress line or log")
    return p


class _Progress:
    """A status line on a terminal (twice a second), else a log line every 5 s."""

    def __init__(self, line_of, tty: bool, quiet: bool) -> None:
        self.line_of = line_of
        self.tty = tty
        self.quiet = quiet
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="progress")

    def _run(self) -> None:
        every = 0.5 if self.tty else PROGRESS_EVERY
        while not self._stop.wait(every):
            if self.tty:
                sys.stdout.write("\r" + self.line_of() + "   ")
                sys.stdout.flush()
            elif not self.quiet:
                print(f"{PROG}: {self.line_of()}", file=sys.stderr, flush=True)

    def __enter__(self) -> "_Progress":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)
        if self.tty:
            sys.stdout.write("\r" + self.line_of() + "\n")
            sys.stdout.flush()


def _line(st, fraction: float | None) -> str:
    pct = f"{100.0 * fraction:5.1f}% " if fraction is not None else ""
    p99 = st.lateness_percentile(99)
    late = f", p99 late {p99 * 1e6:.0f} µs" if p99 is not None else ""
    return (f"{pct}sent {st.sent} (delivered {st.delivered}, dropped {st.dropped}) "
            f"filtered {st.filtered} skipped {st.skipped}{late}")


def _summary(st, extra: str = "") -> str:
    p99 = st.lateness_percentile(99)
    late = (f"; lateness p50 {st.lateness_percentile(50) * 1e6:.0f} µs p99 {p99 * 1e6:.0f} µs "
            f"max {st.lateness_max * 1e6:.0f} µs" if p99 is not None else "")
    return (f"{PROG}: sent {st.sent} = delivered {st.delivered} + dropped {st.dropped}; "
            f"filtered {st.filtered}, skipped {st.skipped}{extra}{late}")


def _histogram(st) -> list[tuple[float, int]]:
    """(lateness upper edge in µs, events) pairs at 1,2,5 steps, for JSON and plots."""
    edges = []
    e = 1
    while e <= 100_000:
        for m in (1, 2, 5):
            edges.append(e * m)
        e *= 10
    out = []
    below = 0
    total = st.timed
    for edge in edges:
        # percentile inversion: events at or below each edge, from the histogram
        n = _count_at_most(st, edge * 1e-6, total)
        out.append((edge, n - below))
        below = n
    out.append((math.inf, total - below))
    return out


def _count_at_most(st, late: float, total: int) -> int:
    lo, hi = 0, total
    while lo < hi:  # the smallest count whose percentile exceeds ``late``
        mid = (lo + hi + 1) // 2
        if st.lateness_percentile(100.0 * mid / total) <= late + 1e-12:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _write_stats(path: str, st, extra: dict) -> None:
    doc = dict(st.as_dict())
    doc.update(extra)
    doc["lateness_histogram_us"] = [
        {"le": None if math.isinf(e) else e, "events": n} for e, n in _histogram(st)] \
        if st.timed else []
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=2)


def _plot(path: str, st, rate_log: list[tuple[float, int]]) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'ctlwire[plot]'") from None
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 7))
    hist = _histogram(st) if st.timed else []
    a1.bar(range(len(hist)), [n for _, n in hist])
    a1.set_xticks(range(len(hist)))
    a1.set_xticklabels(["inf" if math.isinf(e) else f"{e:g}" for e, _ in hist], rotation=90,
                       fontsize=7)
    a1.set_xlabel("lateness at most (µs)")
    a1.set_ylabel("events")
    a1.set_title("lateness")
    if rate_log:
        t0 = rate_log[0][0]
        a2.plot([t - t0 for t, _ in rate_log], [n for _, n in rate_log])
    a2.set_xlabel("telescope time since the first event (s)")
    a2.set_ylabel("events per second")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _check_plot_available(args) -> None:
    if args.plot is None:
        return
    import importlib.util
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib, which is not installed: "
                         "pip install 'ctlwire[plot]'")


def _run(args: argparse.Namespace) -> int:
    _check_plot_available(args)
    rlog = logging.getLogger("ctlwire.tcs.replay")
    level = rlog.level
    if not args.verbose:
        # each corrupt event is summed up in one line at the end; -v logs every one
        rlog.setLevel(logging.ERROR)
    try:
        return _replay_command(args)
    finally:
        rlog.setLevel(level)


def _replay_command(args: argparse.Namespace) -> int:
    import zmq

    from ..tcs.events import TCSDatabaseError
    from ..tcs.transport import DEFAULT_HWM, ZMQServer
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    steer = None
    replay = None
    try:
        from ..tcs.server import (TCSDBReplay, TCSMockEvent, freeze_gc,
                                  use_realtime_scheduling)
        from ..tcs.steer import ReplayDatabaseError, SteeredReplay, has_sessions
        if args.db:
            simple = (len(args.db) == 1 and args.start is None and args.end is None
                      and args.max_gap is None and args.katcp_port is None
                      and not has_sessions(args.db[0]))
            opts = dict(sort_by=args.sort_by, speedup=args.speedup, topics=args.topics,
                        convert_number=args.convert_number, convert_bool=args.convert_bool,
                        json_compat=args.json_compat)
            if args.spin is not None:
                opts["spin"] = args.spin
            if simple:
                replay = TCSDBReplay(args.db[0], **opts)
            else:
                steer = SteeredReplay(args.db, start=args.start, end=args.end,
                                      max_gap=args.max_gap, **opts)
    except (TCSDatabaseError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    ctx = zmq.Context()
    control = None
    try:
        try:
            # unpaced, back-pressure needs no deep queue, and a short one empties
            # well within --flush-timeout at the end
            server = ZMQServer(args.url, context=ctx,
                               hwm=UNPACED_HWM if math.isinf(args.speedup) else DEFAULT_HWM)
        except zmq.ZMQError as exc:
            raise UnreachableError(str(exc)) from None
        say(f"{PROG}: publishing on {server.endpoint}")
        if args.katcp_port is not None:
            from ..tcs.control import ReplayControl
            control = ReplayControl(steer, args.katcp_host, args.katcp_port)
            # the server logs its own start failure too; the one line below says it
            klog = logging.getLogger("ctlwire.katcp")
            level = klog.level
            if not args.verbose:
                klog.setLevel(logging.CRITICAL)
            try:
                control.start(timeout=10)
            except (OSError, RuntimeError) as exc:
                control = None
                why = str(exc).split(": ", 1)[-1]
                raise UnreachableError(f"can't bind the KATCP port "
                                       f"{args.katcp_host}:{args.katcp_port}: {why}") from None
            finally:
                klog.setLevel(level)
            host, kport = control.bind_address
            say(f"{PROG}: KATCP control port on {host}:{kport}")
        # SIGTERM and SIGHUP end a replay as Ctrl-C does: flush, summary, exit 0
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.default_int_handler)
        if args.realtime and not use_realtime_scheduling():
            _log.warning("SCHED_FIFO not permitted here; pacing with normal scheduling")
        freeze_gc()  # everything is set up: keep full collections off it mid-replay
        try:
            return _serve(args, server, replay, steer, TCSMockEvent, ReplayDatabaseError, say)
        finally:
            t0 = time.monotonic()
            server.close(linger=args.flush_timeout)
            ctx.term()  # waits (at most --flush-timeout) for queued events to leave
            if time.monotonic() - t0 >= args.flush_timeout > 0:
                _log.warning("queued events did not all leave within --flush-timeout %g s",
                             args.flush_timeout)
    finally:
        if control is not None:
            control.stop()
        if replay is not None:
            replay.close()
        if steer is not None:
            steer.close()


def _serve(args, server, replay, steer, TCSMockEvent, ReplayDatabaseError, say) -> int:
    if args.wait_subscriber is not None:
        timeout = None if math.isinf(args.wait_subscriber) else args.wait_subscriber
        _log.info("waiting for a subscriber")
        # with --topics, only a subscriber that would receive some of them counts
        wanted = args.topics if (args.topics and args.db) else None
        if not server.wait_for_subscriber(timeout=timeout, topic=wanted):
            raise NegativeAnswer(f"no subscriber within {timeout:g} s on {server.endpoint}")
    if replay is None and steer is None:
        mock = TCSMockEvent(args.mock_sleep)
        try:
            n = server.start(mock if args.count is None else itertools.islice(mock, args.count))
        except KeyboardInterrupt:
            n = server.delivered + server.dropped
        say(f"{PROG}: sent {n} mock events = delivered {server.delivered} + dropped "
            f"{server.dropped}")
        return 0
    tty = sys.stdout.isatty()
    show = not args.no_progress
    stats_of = (lambda: steer.stats) if steer is not None else (lambda: replay.stats)
    total = steer.total if steer is not None else _count(replay)

    def line() -> str:
        st = stats_of()
        if steer is not None:
            steer.sync_counts()
            frac = steer.fraction_done
        else:
            frac = (st.sent + st.filtered + st.skipped) / total if total else None
        return _line(st, frac)

    damaged = None
    passes = 0
    progress = _Progress(line, tty, args.quiet) if show else None
    if progress is not None:
        progress.__enter__()
    try:
        while True:
            try:
                if steer is not None:
                    if server.on_full != ("block" if math.isinf(args.speedup) else "drop"):
                        server.on_full = "block" if math.isinf(args.speedup) else "drop"
                    steer.run(server.send_frames, loop=args.loop)
                else:
                    server.start(replay)
            except ReplayDatabaseError as exc:
                damaged = exc
            passes += 1
            if steer is not None or not args.loop or damaged is not None:
                break
            st = replay.stats
            say(_summary(st, f" (pass {passes})"))
            replay._reset_iter()
    except KeyboardInterrupt:
        _log.info("interrupted: flushing and stopping")
    finally:
        if progress is not None:
            progress.__exit__(None, None, None)
    st = stats_of()
    extra = ""
    if steer is not None:
        steer.sync_counts()
        extra = f", outside the window {steer.outside}" if steer.outside else ""
    say(_summary(st, extra))
    if args.stats_json is not None:
        _write_stats(args.stats_json, st, {
            "databases": args.db, "speedup": args.speedup,
            "outside_window": steer.outside if steer is not None else 0,
            "damaged": None if damaged is None else str(damaged)})
    if args.plot is not None:
        _plot(args.plot, st, steer.rate_log if steer is not None else [])
    if damaged is not None:
        if steer is not None and steer.last_sent is not None:
            where = f"after event {steer.last_sent[1]} of {steer.last_sent[0]}"
        elif replay is not None:
            where = f"after event {replay._replayer.last_event_id}"
        else:
            where = "before the first event"
        raise UsageError(f"{damaged} ({where}; {st.sent} events before it were replayed)")
    if st.skipped:
        errors = steer.errors if steer is not None else \
            [(args.db[0], eid, why) for eid, why in replay.errors]
        path, eid, why = errors[0] if errors else (args.db[0], "?", "?")
        raise UsageError(f"{st.skipped} corrupt event(s) skipped, the others were replayed; "
                         f"first: {path} event {eid}: {why} (-v lists each)")
    return 0


def _count(replay) -> int | None:
    try:
        return replay._conn.execute("SELECT count(*) FROM event").fetchone()[0]
    except Exception:  # noqa: BLE001 - a damaged count is reported by the replay itself
        return None


def main(argv: list[str] | None = None) -> int:
    return run_command(_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
