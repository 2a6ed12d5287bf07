"""``ctlwire-katcp record`` and ``ctlwire-katcp replay``: a device's night, kept and served again.

    ctlwire-katcp record 127.0.0.1:7147 -o night.sqlite [--sensors REGEX] [--duration S]
    ctlwire-katcp replay night.sqlite --port 7148 [--speedup X] [--loop] [--paused]

May import: the standard library, ``ctlwire.katcp.recording``, ``ctlwire.tcs.record``
(checking the output file), ``ctlwire.cli._common`` and ``ctlwire.cli._katcp_sensors``
(the signal handling the long-running subcommands share).
"""
from __future__ import annotations

import argparse
import logging
import math
import re
import sys
import time

from ._common import (EXIT_OK, CommandParser, UnreachableError, UsageError, existing_file,
                      host_port, non_negative_int, output_file, positive_float, timeout)
from ._katcp_sensors import _Stop, why_unreachable

__all__ = ["record_parser", "run_record", "replay_parser", "run_replay"]

_RECORD_HELP = """\
Record a device: sample its sensors (all, or those matching --sensors) with the auto
strategy and store their descriptions, every reading and every #log message in a TCS event
database. Runs until --duration, Ctrl-C, SIGTERM or SIGHUP (exit 0, everything received
written, a summary on stderr); reconnects and samples again if the device restarts. Exit 3
if the device can't be reached at the start, 2 for a bad output file (an existing
recording needs --append or --overwrite)."""

_REPLAY_HELP = """\
Serve a recording made by 'ctlwire-katcp record' as a KATCP device: the same sensors
(names, types, units, descriptions) whose readings change at the recorded times (shifted
to now; --speedup compresses them), paced by the TCS replay engine. Prints 'READY
host:port' on stdout once serving. At the end it goes on serving the last readings until
Ctrl-C, SIGTERM or SIGHUP (exit 0) unless --exit-at-end or --loop. ?replay-start starts a
--paused replay; ?replay-status reports progress. Exit 3 if the port can't be bound, 2 for
a file that is not a recording."""


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"bad regex {text!r}: {exc}") from None
    return text


def _speedup(text: str) -> float:
    if text.lower() in ("inf", "infinity"):
        return math.inf  # as fast as possible (the option says so)
    return positive_float(text)


# -- record ------------------------------------------------------------------------------------

def record_parser(prog: str) -> CommandParser:
    ap = CommandParser(f"{prog} record", description=_RECORD_HELP)
    ap.set_defaults(prog=f"{prog} record")
    ap.add_argument("address", type=host_port, help="the device, as host:port")
    ap.add_argument("-o", "--output", required=True, type=output_file,
                    help="the database to write")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true", help="add to an existing recording")
    mode.add_argument("--overwrite", action="store_true",
                      help="replace an existing recording")
    ap.add_argument("--sensors", type=_regex, metavar="REGEX",
                    help="record the sensors whose names match (searched; default all)")
    ap.add_argument("--duration", type=positive_float, metavar="S",
                    help="stop after this many seconds")
    ap.add_argument("--connect-timeout", type=timeout, default=5.0, metavar="S",
                    help="seconds to wait for the device at the start (default 5)")
    return ap


def run_record(args: argparse.Namespace) -> int:
    from ..katcp.recording import DeviceRecorder
    from ..tcs.events import TCSDatabaseError
    from ..tcs.record import prepare_output

    prog = args.prog
    mode = "append" if args.append else "overwrite" if args.overwrite else "new"
    try:
        prepare_output(args.output, mode)
    except TCSDatabaseError as exc:
        raise UsageError(str(exc)) from None
    if not args.verbose:
        logging.getLogger("ctlwire.katcp").setLevel(logging.CRITICAL)
    host, port = args.address
    recorder = DeviceRecorder(host, port, args.output, sensors=args.sensors,
                              timeout=args.connect_timeout)
    # the handlers first: a SIGTERM at any moment from here still writes what came
    with _Stop() as signals:
        try:
            if not recorder.start():
                recorder.stop()
                raise UnreachableError(f"could not connect to {host}:{port}: "
                                       f"{why_unreachable(host, port, args.connect_timeout)}")
            if not args.quiet:
                print(f"{prog}: recording {recorder.summary.sensors} sensor(s) of "
                      f"{host}:{port} into {args.output}", file=sys.stderr, flush=True)
            summary = recorder.run(args.duration, signals.event)
        except KeyboardInterrupt:
            summary = recorder.stop()  # the usual way to end a recording
    if not args.quiet:
        print(f"{prog}: {summary}", file=sys.stderr, flush=True)
    return EXIT_OK


# -- replay -----------------------------------------------------------------------------------

def replay_parser(prog: str) -> CommandParser:
    ap = CommandParser(f"{prog} replay", description=_REPLAY_HELP)
    ap.set_defaults(prog=f"{prog} replay")
    ap.add_argument("recording", type=existing_file, help="a database from 'record'")
    ap.add_argument("-p", "--port", type=non_negative_int, default=0,
                    help="port to serve on (default 0: a free one, printed)")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1; '' for all)")
    ap.add_argument("--speedup", type=_speedup, default=1.0,
                    help="> 1 plays faster, < 1 slower, inf as fast as possible (default 1)")
    ap.add_argument("--loop", action="store_true", help="start again at the end, for ever")
    ap.add_argument("--paused", action="store_true",
                    help="wait for ?replay-start before the first reading")
    ap.add_argument("--exit-at-end", action="store_true",
                    help="stop serving when the recording ends")
    ap.add_argument("--realtime", action="store_true",
                    help="run the device's threads under SCHED_FIFO (Linux, needs "
                         "CAP_SYS_NICE): precise pacing on a busy machine")
    return ap


def run_replay(args: argparse.Namespace) -> int:
    from ..katcp.recording import ReplayDevice, prompt_thread_switches
    from ..tcs.events import TCSDatabaseError

    prompt_thread_switches()  # this process is the replay's own
    if args.realtime:
        from ..tcs.server import use_realtime_scheduling

        # before the device starts: its loop and replay threads inherit the policy
        if not use_realtime_scheduling():
            logging.getLogger("ctlwire.cli").warning(
                "SCHED_FIFO not permitted here; pacing with normal scheduling")

    if args.port > 65535:
        raise UsageError(f"port must be 0..65535, got {args.port}")
    try:
        device = ReplayDevice(args.recording, args.host, args.port, speedup=args.speedup,
                              loop=args.loop, paused=args.paused)
    except (TCSDatabaseError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    try:
        device.start(timeout=10.0)
    except RuntimeError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError):
            raise UnreachableError(f"can't serve on {args.host}:{args.port}: "
                                   f"{cause.strerror or cause}") from None
        raise
    host, port = device.bind_address
    from ..tcs.server import freeze_gc

    freeze_gc()  # the server is up: keep full collections off its objects mid-replay
    started = time.monotonic()
    try:
        with _Stop() as signals:
            try:
                # (inside the try: a Ctrl-C right after READY is a normal end)
                print(f"READY {host}:{port}", flush=True)
                if not args.quiet:
                    print(f"{args.prog}: serving {len(device.descriptions)} sensor(s) of "
                          f"{args.recording} on {host}:{port}", file=sys.stderr, flush=True)
                while not signals.event.is_set():
                    if device.finished.wait(0.2):
                        if args.exit_at_end or device.replay_error is not None:
                            break
                        if not args.quiet and device.passes:
                            print(f"{args.prog}: replay finished; serving the last readings"
                                  " (Ctrl-C to stop)", file=sys.stderr, flush=True)
                        while not signals.event.wait(0.5):
                            pass
                        break
            except KeyboardInterrupt:
                pass  # the usual way to stop serving
    finally:
        device.stop(timeout=5.0)
        stats = device.stats.as_dict() if device.stats is not None else {}
    if device.replay_error is not None:
        raise RuntimeError(f"replay failed: {device.replay_error}")
    if not args.quiet:
        p99 = stats.get("lateness_p99")
        late = f", lateness p99 {p99 * 1e6:.0f} us" if p99 is not None else ""
        print(f"{args.prog}: {device.readings} reading(s), {device.logs} log message(s) in "
              f"{device.passes} pass(es) over {time.monotonic() - started:.1f} s{late}",
              file=sys.stderr, flush=True)
    return EXIT_OK
