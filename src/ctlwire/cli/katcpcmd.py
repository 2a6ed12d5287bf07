"""``ctlwire-katcp``: send KATCP requests from the command line.

One request::

    ctlwire-katcp 127.0.0.1:7147 sensor-value /temp/
    ctlwire-katcp localhost:7147 ?help

prints the request's informs and its reply, one per line in wire form.

Exit status (docs/cli.md): 0 the reply is ``ok``; 1 it is ``fail`` or ``invalid``; 2 bad
arguments; 3 the server can't be reached or does not reply in time; 70 an internal error.
(aiokatcp's ``katcpcmd`` uses other codes; these follow ctlwire's conventions on purpose.)

Interactive (``-i``): each line of standard input is a request written as on the wire
(``?sensor-value temp`` or just ``sensor-value temp``; escapes such as ``\\_`` work);
replies, informs and unsolicited informs from the server are printed as they arrive.

Sensors, recordings (``ctlwire-katcp watch --help``, ``wait --help``, ...)::

    ctlwire-katcp watch 127.0.0.1:7147 '^psu[.]'       # print readings as they arrive
    ctlwire-katcp wait 127.0.0.1:7147 mode ready -t 30  # exit 0 reached, 1 timeout
    ctlwire-katcp record 127.0.0.1:7147 -o night.sqlite # sensors and #log, until Ctrl-C
    ctlwire-katcp replay night.sqlite --port 7148       # serve the night again

aiokatcp's ``katcpcmd`` options ``--connect-timeout`` and ``--request-timeout`` are
accepted (each overrides ``-t`` for its part).
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import threading
from typing import Optional, TextIO

from ctlwire.katcp.client import BlockingClient, KatcpTimeoutError
from ctlwire.katcp.core import KatcpClientError, KatcpSyntaxError, Message, MessageParser

from ._common import (EXIT_NEGATIVE, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, CommandParser,
                      UnreachableError, UsageError, host_port, run_command, timeout)

from ._katcp_record import record_parser, replay_parser, run_record, run_replay
from ._katcp_sensors import run_wait, run_watch, wait_parser, watch_parser
from ._katcp_sensors import why_unreachable as _why_unreachable

EXIT_FAIL = EXIT_NEGATIVE
#: the command's name (``katcpcmd`` is aiokatcp's: two packages installing it would clash)
PROG = "ctlwire-katcp"


class _PrintingClient(BlockingClient):
    """Prints messages no request claims (interactive mode shows server activity)."""

    def __init__(self, *args, out: TextIO, show_unsolicited: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._out = out
        self._show = show_unsolicited
        self._print_lock = threading.Lock()

    def emit(self, text: str) -> None:
        with self._print_lock:
            self._out.write(text + "\n")
            self._out.flush()

    def unhandled_inform(self, msg: Message) -> None:
        if self._show:
            self.emit(_shown(msg))

    def unhandled_reply(self, msg: Message) -> None:
        if self._show:
            self.emit(_shown(msg))


def parse_address(text: str) -> tuple[str, int]:
    """Split ``host:port``, ``[v6]:port`` or a bare ``port`` (meaning 127.0.0.1)."""
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    return host_port(text)


def _shown(msg: Message) -> str:
    # Message ids are bookkeeping between client and server: leave them out.
    if msg.mid is not None:
        msg = msg.copy()
        msg.mid = None
    return str(msg)


def _print_result(client: _PrintingClient, reply: Message, informs: list) -> int:
    for inform in informs:
        client.emit(_shown(inform))
    client.emit(_shown(reply))
    return EXIT_OK if reply.reply_ok() else EXIT_FAIL


def _one_request(client: _PrintingClient, name: str, args: list, timeout: float) -> int:
    name = name.lstrip("?")
    try:
        msg = Message.request(name, *args)
    except (ValueError, KatcpSyntaxError) as exc:
        raise UsageError(f"bad request {name!r}: {exc}") from None
    try:
        reply, informs = client.blocking_request(msg, timeout=timeout)
    except (KatcpTimeoutError, KatcpClientError) as exc:
        raise UnreachableError(str(exc)) from None
    return _print_result(client, reply, informs)


def _interactive(client: _PrintingClient, timeout: float, stdin: TextIO) -> int:
    parser = MessageParser()
    prompt = stdin.isatty()
    status = EXIT_OK
    while True:
        if prompt:
            sys.stderr.write("katcp> ")
            sys.stderr.flush()
        line = stdin.readline()
        if not line:
            return status
        line = line.strip()
        if not line or line.startswith("//"):
            continue
        if line in ("quit", "exit"):
            return status
        if line[0] not in "?!#":
            line = "?" + line
        try:
            msg = parser.parse(line.encode())
        except KatcpSyntaxError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            continue
        if msg.mtype != Message.REQUEST:
            print(f"{PROG}: only requests (?name ...) can be sent", file=sys.stderr)
            continue
        try:
            reply, informs = client.blocking_request(msg, timeout=timeout)
        except KatcpClientError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            status = EXIT_UNREACHABLE
            continue
        status = _print_result(client, reply, informs)


def _parser() -> CommandParser:
    ap = CommandParser(PROG, description=__doc__)
    ap.add_argument("address", type=parse_address, help="server as host:port")
    ap.add_argument("request", nargs="?", help="request name (with or without '?')")
    ap.add_argument("arguments", nargs="*", help="request arguments")
    ap.add_argument("-i", "--interactive", action="store_true",
                    help="read requests from standard input, one per line")
    ap.add_argument("-t", "--timeout", type=timeout, default=5.0,
                    help="seconds to wait for the connection and for each reply (default 5)")
    ap.add_argument("--connect-timeout", type=timeout, metavar="S",
                    help="seconds to wait for the connection (default: -t)")
    ap.add_argument("--request-timeout", type=timeout, metavar="S",
                    help="seconds to wait for each reply (default: -t)")
    ap.add_argument("-u", "--unsolicited", action="store_true",
                    help="also print informs not tied to a request (always on with -i)")
    return ap


def _run(args: argparse.Namespace) -> int:
    if not args.interactive and not args.request:
        raise UsageError("give a request, or -i for interactive mode (see --help)")
    library_log = logging.getLogger("ctlwire.katcp")
    level = library_log.level
    if not args.verbose:
        # the tool reports a failed connection itself, as one line
        library_log.setLevel(logging.CRITICAL)
    try:
        return _talk(args)
    finally:
        library_log.setLevel(level)


def _talk(args: argparse.Namespace) -> int:
    host, port = args.address
    connect_timeout = args.connect_timeout or args.timeout
    request_timeout = args.request_timeout or args.timeout
    client = _PrintingClient(host, port, timeout=request_timeout, auto_reconnect=False,
                             connect_timeout=connect_timeout, out=sys.stdout,
                             show_unsolicited=args.interactive or args.unsolicited)
    client.start()
    try:
        if not client.wait_connected(connect_timeout):
            raise UnreachableError(f"could not connect to {host}:{port}: "
                                   f"{_why_unreachable(host, port, connect_timeout)}")
        # Learn whether the server offers message ids before the first request.
        client.wait_protocol(min(connect_timeout, 1.0))
        if args.interactive:
            try:
                return _interactive(client, request_timeout, sys.stdin)
            except KeyboardInterrupt:
                return EXIT_OK  # the end of an interactive session
        return _one_request(client, args.request, args.arguments, request_timeout)
    finally:
        client.stop()
        client.join(connect_timeout)


#: subcommands: name -> (parser maker, body); any other first argument is an address
SUBCOMMANDS = {
    "watch": (watch_parser, run_watch),
    "wait": (wait_parser, run_wait),
    "record": (record_parser, run_record),
    "replay": (replay_parser, run_replay),
}
# options of the whole command that may come before a subcommand's name
_LEADING_FLAG = re.compile(r"-v+|--verbose|-q|--quiet")


def _subcommand_index(argv: list) -> Optional[int]:
    for i, arg in enumerate(argv):
        if arg in SUBCOMMANDS:
            return i
        if not _LEADING_FLAG.fullmatch(arg):
            return None
    return None


def main(argv: Optional[list] = None) -> int:
    """Run ``ctlwire-katcp``; returns the exit status (see docs/cli.md)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    i = _subcommand_index(argv)
    if i is not None:
        make_parser, body = SUBCOMMANDS[argv[i]]
        return run_command(make_parser(PROG), body, argv[:i] + argv[i + 1:])
    return run_command(_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
