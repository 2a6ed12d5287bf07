"""``ctlwire-katcp watch`` and ``ctlwire-katcp wait``: a device's sensors from a shell.

``watch HOST:PORT [SENSOR-REGEX]`` samples the matching sensors and prints each reading as
it arrives, one line each::

    1764662462.123456 psu.voltage nominal 4.98

(timestamp, name, status, value; the value escaped as on the wire, so a line always has
four fields) until Ctrl-C, SIGTERM or SIGHUP (exit 0), ``--duration`` or ``--count``.

``wait HOST:PORT SENSOR VALUE --timeout S`` exits 0 as soon as the sensor reads VALUE
(compared as the sensor's type: ``20.5`` equals ``20.50`` for a float sensor), printing
the reading; 1 if it does not within S seconds; 3 if the device can't be reached or the
link drops; 2 for an unknown sensor or a VALUE the sensor's type can't hold.

May import: the standard library, ``ctlwire.katcp`` (client, core, sensor) and
``ctlwire.cli._common``.
"""
from __future__ import annotations

import argparse
import logging
import re
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Optional

from ctlwire.katcp.client import BlockingClient
from ctlwire.katcp.core import KatcpClientError, Message, escape_argument
from ctlwire.katcp.sensor import Sensor

from ._common import (EXIT_OK, CommandParser, NegativeAnswer, UnreachableError, UsageError,
                      host_port, non_negative_float, positive_float, positive_int, timeout)

__all__ = ["watch_parser", "run_watch", "wait_parser", "run_wait", "why_unreachable"]

_WATCH_HELP = """\
Sample the sensors whose names match SENSOR-REGEX (all by default) and print each reading
as it arrives: timestamp, name, status and value (escaped as on the wire, so every line has
four fields). Runs until Ctrl-C, SIGTERM or SIGHUP (exit 0), --duration or --count; exit 3
if the device can't be reached or the link drops, 2 if no sensor matches."""

_WAIT_HELP = """\
Wait until SENSOR reads VALUE (compared as the sensor's type: 20.5 equals 20.50 for a float
sensor; true/false for booleans) and print that reading. Exit 0 when reached, 1 if not
within --timeout seconds, 2 for an unknown sensor or a VALUE its type can't hold, 3 if the
device can't be reached or the link drops. (aiokatcp's katcpcmd has other exit codes;
these follow ctlwire's conventions, docs/cli.md.)"""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class _SensorClient(BlockingClient):
    """Hands each ``#sensor-status`` reading to ``on_reading`` and notices a lost link."""

    def __init__(self, host: str, port: int, on_reading: Callable[[bytes, bytes, bytes, bytes],
                                                                   None],
                 **kwargs: Any) -> None:
        super().__init__(host, port, auto_reconnect=False, **kwargs)
        self.on_reading = on_reading
        self.lost = threading.Event()
        self._was_connected = False

    def inform_sensor_status(self, msg: Message) -> None:
        args = msg.arguments
        # ts n (name status value)*n: one reading, or several with bulk sampling
        for i in range(2, len(args) - 2, 3):
            self.on_reading(args[0], args[i], args[i + 1], args[i + 2])

    def notify_connected(self, connected: bool) -> None:
        if connected:
            self._was_connected = True
        elif self._was_connected:
            self.lost.set()


def why_unreachable(host: str, port: int, wait: float) -> str:
    """The reason a connection fails, in the operating system's words."""
    try:
        with socket.create_connection((host, port), timeout=min(wait, 1.0)):
            return f"no connection within {wait:g} s"
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def _regex(text: str) -> "re.Pattern[str]":
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"bad regex {text!r}: {exc}") from None


def _add_connect_options(ap: CommandParser) -> None:
    ap.add_argument("--connect-timeout", type=timeout, default=5.0, metavar="S",
                    help="seconds to wait for the connection (default 5)")
    ap.add_argument("--request-timeout", type=timeout, default=5.0, metavar="S",
                    help="seconds to wait for each reply while setting up (default 5)")


def _connect(args: argparse.Namespace, on_reading: Callable) -> _SensorClient:
    if not args.verbose:
        logging.getLogger("ctlwire.katcp").setLevel(logging.CRITICAL)
    host, port = args.address
    client = _SensorClient(host, port, on_reading, timeout=args.request_timeout,
                           connect_timeout=args.connect_timeout)
    client.start()
    if not client.wait_connected(args.connect_timeout):
        client.stop()
        raise UnreachableError(f"could not connect to {host}:{port}: "
                               f"{why_unreachable(host, port, args.connect_timeout)}")
    client.wait_protocol(min(args.connect_timeout, 1.0))
    return client


def _request(client: _SensorClient, *args: Any) -> tuple[Message, list]:
    try:
        return client.blocking_request(Message.request(*args))
    except KatcpClientError as exc:
        host, port = client.bind_address
        raise UnreachableError(f"{host}:{port}: {exc}") from None


def _fail_text(reply: Message) -> str:
    return " ".join(a.decode("utf-8", "replace") for a in reply.arguments[1:]) or "no reason"


def _line(ts: bytes, name: bytes, status: bytes, value: bytes) -> str:
    # the value stays escaped, so every line splits into exactly four fields
    return b" ".join((ts, name, status, escape_argument(value) or b"\\@")).decode(
        "utf-8", "backslashreplace")


class _Stop:
    """SIGINT, SIGTERM and SIGHUP end a long-running command normally (exit 0).

    SIGINT gets a handler of its own too (as in ``tcs-record``) rather than Python's
    KeyboardInterrupt: a command started as a shell's background job inherits SIGINT
    ignored, and ``kill -INT`` must still stop it with its summary.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old: dict = {}

    def __enter__(self) -> "_Stop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
                if sig is not None:
                    self._old[sig] = signal.signal(sig, lambda *_: self.event.set())
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# -- watch -----------------------------------------------------------------------------------

def watch_parser(prog: str) -> CommandParser:
    ap = CommandParser(f"{prog} watch", description=_WATCH_HELP)
    ap.set_defaults(prog=f"{prog} watch")
    ap.add_argument("address", type=host_port, help="the device, as host:port")
    ap.add_argument("pattern", nargs="?", type=_regex, default=None, metavar="SENSOR-REGEX",
                    help="sensors whose names match this regex (searched; default: all)")
    ap.add_argument("-s", "--strategy", default="auto",
                    help="sampling strategy and parameters, e.g. 'event' or 'period 0.5' "
                         "(default auto: every update)")
    ap.add_argument("--duration", type=positive_float, metavar="S",
                    help="stop after this many seconds")
    ap.add_argument("--count", type=positive_int, metavar="N",
                    help="stop after this many readings")
    _add_connect_options(ap)
    return ap


def run_watch(args: argparse.Namespace) -> int:
    out = sys.stdout
    lock = threading.Lock()
    seen = [0]
    enough = threading.Event()

    def on_reading(ts: bytes, name: bytes, status: bytes, value: bytes) -> None:
        with lock:
            if enough.is_set():
                return
            out.write(_line(ts, name, status, value) + "\n")
            out.flush()
            seen[0] += 1
            if args.count is not None and seen[0] >= args.count:
                enough.set()

    strategy = args.strategy.split()
    if not strategy:
        raise UsageError("empty --strategy (see --help)")
    client = _connect(args, on_reading)
    host, port = args.address
    try:
        reply, informs = _request(client, "sensor-list")
        if not reply.reply_ok():
            raise NegativeAnswer(f"?sensor-list failed: {_fail_text(reply)}")
        names = [m.arguments[0].decode("utf-8", "replace") for m in informs]
        if args.pattern is not None:
            names = [n for n in names if args.pattern.search(n)]
        if not names:
            raise UsageError(f"no sensor of {host}:{port} matches "
                             f"{args.pattern.pattern if args.pattern else '(any)'}")
        with _Stop() as stop:
            for name in names:
                reply, _ = _request(client, "sensor-sampling", name, *strategy)
                if not reply.reply_ok():
                    raise UsageError(f"can't sample {name} with {args.strategy!r}: "
                                     f"{_fail_text(reply)}")
            deadline = None if args.duration is None else time.monotonic() + args.duration
            try:
                # (inside the try: a Ctrl-C right after this line is a normal end)
                if not args.quiet:
                    print(f"{args.prog}: watching {len(names)} sensor(s) of {host}:{port}",
                          file=sys.stderr, flush=True)
                while not (stop.event.is_set() or enough.is_set()):
                    if client.lost.is_set():
                        raise UnreachableError(f"lost the connection to {host}:{port} after "
                                               f"{seen[0]} reading(s)")
                    wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
                    if wait <= 0:
                        break
                    # short waits keep Ctrl-C prompt in the main thread
                    enough.wait(wait)
            except KeyboardInterrupt:
                pass  # the usual way to end a watch
        with lock:
            enough.set()
            logging.getLogger("ctlwire.cli").info("%d reading(s) of %d sensor(s)", seen[0],
                                                  len(names))
        return EXIT_OK
    finally:
        client.stop()
        client.join(args.connect_timeout)


# -- wait ------------------------------------------------------------------------------------

def wait_parser(prog: str) -> CommandParser:
    ap = CommandParser(f"{prog} wait", description=_WAIT_HELP)
    ap.set_defaults(prog=f"{prog} wait")
    ap.add_argument("address", type=host_port, help="the device, as host:port")
    ap.add_argument("sensor", help="the sensor's exact name")
    ap.add_argument("value", help="the value to wait for")
    ap.add_argument("-t", "--timeout", type=non_negative_float, required=True, metavar="S",
                    help="give up (exit 1) after this many seconds")
    ap.add_argument("--status", choices=sorted(s.decode() for s in
                                               Sensor.STATUSES_RAW.values()),
                    help="also require this status")
    _add_connect_options(ap)
    return ap


def _sensor_from_list(client: _SensorClient, name: str) -> Sensor:
    reply, informs = _request(client, "sensor-list", name)
    if not reply.reply_ok() or not informs:
        host, port = client.bind_address
        raise UsageError(f"no sensor {name!r} on {host}:{port}"
                         + (f": {_fail_text(reply)}" if not reply.reply_ok() else ""))
    args = informs[0].arguments
    stype = Sensor.parse_type(args[3])
    params = Sensor.parse_params(stype, args[4:])
    return Sensor(stype, name, args[1].decode("utf-8", "replace"),
                  args[2].decode("utf-8", "replace"), params)


def _target(sensor: Sensor, text: str) -> Any:
    raw = text
    if sensor.stype == "boolean":
        low = text.lower()
        raw = "1" if low in _TRUE else "0" if low in _FALSE else text
    try:
        return sensor.parse_value(raw.encode())
    except ValueError as exc:
        raise UsageError(f"{text!r} is not a value of {sensor.stype} sensor "
                         f"{sensor.name}: {exc}") from None


def run_wait(args: argparse.Namespace) -> int:
    state = threading.Condition()
    latest: list = [None]  # (ts, name, status, value) of the last reading

    def on_reading(ts: bytes, name: bytes, status: bytes, value: bytes) -> None:
        with state:
            latest[0] = (ts, name, status, value)
            state.notify_all()

    client = _connect(args, on_reading)
    host, port = args.address
    try:
        sensor = _sensor_from_list(client, args.sensor)
        target = _target(sensor, args.value)
        wanted_status = args.status.encode() if args.status else None

        def reached() -> Optional[tuple]:
            reading = latest[0]
            if reading is None or reading[1].decode("utf-8", "replace") != sensor.name:
                return None
            if wanted_status is not None and reading[2] != wanted_status:
                return None
            try:
                return reading if sensor.parse_value(reading[3]) == target else None
            except ValueError:
                return None

        deadline = time.monotonic() + args.timeout
        # event sampling sends the current reading at once, then every change
        reply, _ = _request(client, "sensor-sampling", sensor.name, "event")
        if not reply.reply_ok():
            raise UsageError(f"can't sample {sensor.name}: {_fail_text(reply)}")
        with state:
            while True:
                got = reached()
                if got is not None:
                    if not args.quiet:
                        print(_line(*got), flush=True)
                    return EXIT_OK
                if client.lost.is_set():
                    raise UnreachableError(f"lost the connection to {host}:{port}")
                left = deadline - time.monotonic()
                if left <= 0:
                    last = latest[0]
                    seen = last[3].decode("utf-8", "replace") if last else "no reading"
                    raise NegativeAnswer(f"{sensor.name} did not become {args.value} within "
                                         f"{args.timeout:g} s (last: {seen})")
                state.wait(min(left, 0.2))
    finally:
        client.stop()
        client.join(args.connect_timeout)
