"""What every ctlwire command shares: exit codes, one-line errors, logging, argument checks.

The conventions are written for operators in ``docs/cli.md``; this module is the one place
that carries them out, so a command only describes its own arguments and work::

    def main(argv=None) -> int:
        parser = CommandParser("tcs-info", description=__doc__)
        parser.add_argument("db", type=existing_file)
        return run_command(parser, _run, argv)

May import: the standard library and ``ctlwire`` (for the version) only; the commands import
it, never the library below them.
"""
from __future__ import annotations

import argparse
import errno
import ipaddress
import logging
import math
import os
import sys
import threading
import traceback
from typing import Callable, NoReturn, Optional, Sequence

from .. import __version__

__all__ = [
    "EXIT_OK", "EXIT_NEGATIVE", "EXIT_USAGE", "EXIT_UNREACHABLE", "EXIT_INTERNAL",
    "CommandError", "UsageError", "UnreachableError", "NegativeAnswer",
    "CommandParser", "run_command", "setup_logging", "IdleWarning",
    "port", "host_port", "zmq_url", "zmq_bind_url", "finite_float", "positive_float", "non_negative_float",
    "positive_int", "non_negative_int", "timeout", "existing_file", "output_file",
]

EXIT_OK = 0
#: the negative answer the command exists to report (fail reply, no heartbeat, ...)
EXIT_NEGATIVE = 1
#: bad usage or bad input: arguments, files, URLs, numbers
EXIT_USAGE = 2
#: a peer or service that can't be reached, or a port that can't be bound
EXIT_UNREACHABLE = 3
#: an unexpected internal error (sysexits' EX_SOFTWARE)
EXIT_INTERNAL = 70


class CommandError(Exception):
    """An error a command reports as one line on stderr, with its exit status.

    Parameters
    ----------
    message : str
        What is wrong and with which value; no trailing period, no newline.
    code : int
        The exit status (see the ``EXIT_*`` constants).
    """

    code = EXIT_USAGE

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(CommandError):
    """Bad arguments or bad input (exit 2)."""

    code = EXIT_USAGE


class UnreachableError(CommandError):
    """A peer or service can't be reached, or a port can't be bound (exit 3)."""

    code = EXIT_UNREACHABLE


class NegativeAnswer(CommandError):
    """The negative answer the command exists to report (exit 1)."""

    code = EXIT_NEGATIVE


class CommandParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with the options and error format every command shares.

    Adds ``-v/--verbose`` (repeatable), ``-q/--quiet`` and ``--version``; a usage error is
    one line on stderr (``prog: message (see --help)``) and exit status 2.
    """

    def __init__(self, prog: str, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(prog=prog, **kwargs)
        self.add_argument("-v", "--verbose", action="count", default=0,
                          help="log more (-v: progress, -vv: debug); tracebacks on errors")
        self.add_argument("-q", "--quiet", action="store_true",
                          help="print only errors")
        self.add_argument("--version", action="version", version=f"%(prog)s (ctlwire) {__version__}")

    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage block first; scripts and logs want one line
        message = " ".join(message.split())
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def setup_logging(prog: str, verbose: int = 0, quiet: bool = False) -> None:
    """Send log records to stderr with a timestamp and the command's name.

    Default level WARNING; ``-v`` INFO, ``-vv`` DEBUG; ``-q`` ERROR.
    """
    if quiet:
        level = logging.ERROR
    elif verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = logging.INFO
    else:
        level = logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s {prog} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_ctlwire_cli", False):
            root.removeHandler(old)
    handler._ctlwire_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _os_error_code(exc: BaseException) -> Optional[int]:
    """Exit status for an operating-system error that is the peer's or the port's fault."""
    code = getattr(exc, "errno", None)
    if code in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES, errno.ECONNREFUSED,
                errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT, errno.ECONNRESET):
        return EXIT_UNREACHABLE
    if code in (errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EINVAL):
        return EXIT_USAGE
    return None


def run_command(parser: CommandParser, body: Callable[[argparse.Namespace], int],
                argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv``, set up logging and run ``body``, turning errors into exit statuses.

    ``CommandError`` gives its own status; an address in use or a refused connection gives
    3; anything unexpected gives 70 with one line saying to rerun with ``-v``. Returns the
    exit status (``body``'s return value when it succeeds).
    """
    args = parser.parse_args(argv)
    prog = parser.prog
    verbose = getattr(args, "verbose", 0) or 0
    saved = _logging_state()
    setup_logging(prog, verbose, getattr(args, "quiet", False))
    try:
        status = body(args)
    except CommandError as exc:
        if verbose:
            traceback.print_exc()
        print(f"{prog}: {_one_line(exc)}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        # asked to stop before it finished: the answer never came
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_NEGATIVE
    except OSError as exc:
        code = _os_error_code(exc)
        if verbose:
            traceback.print_exc()
        if code is None:
            print(f"{prog}: internal error: {type(exc).__name__}: {_one_line(exc)} "
                  "(rerun with -v for the traceback)", file=sys.stderr)
            return EXIT_INTERNAL
        print(f"{prog}: {_one_line(exc)}", file=sys.stderr)
        return code
    except Exception as exc:  # noqa: BLE001 - the last line of defence of a command
        code = _os_error_code(exc)  # zmq.ZMQError carries an errno too
        if verbose:
            traceback.print_exc()
        if code is not None:
            print(f"{prog}: {_one_line(exc)}", file=sys.stderr)
            return code
        print(f"{prog}: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(rerun with -v for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        sys.stdout.flush()
        # a command run in-process (tests, embedding) leaves logging as it found it
        _restore_logging(saved)
    return EXIT_OK if status is None else int(status)


def _logging_state() -> tuple:
    manager = logging.Logger.manager
    levels = {name: lg.level for name, lg in manager.loggerDict.items()
              if isinstance(lg, logging.Logger)}
    root = logging.getLogger()
    return root.level, list(root.handlers), levels


def _restore_logging(saved: tuple) -> None:
    level, handlers, levels = saved
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, lg in logging.Logger.manager.loggerDict.items():
        if isinstance(lg, logging.Logger):
            lg.setLevel(levels.get(name, logging.NOTSET))


class IdleWarning:
    """Log a warning once if nothing has happened ``after`` seconds from ``start()``.

    ``done()`` (something happened) or ``cancel()`` stops it; usable as a context manager.

    Parameters
    ----------
    message : str
        The warning, e.g. ``"no subscriber has connected to tcp://...:5556 after 5 s"``.
    after : float
        Seconds to wait.
    logger : logging.Logger, optional
        Where the warning goes (default: the root logger).
    """

    __slots__ = ("message", "after", "logger", "_event", "_thread", "fired")

    def __init__(self, message: str, after: float = 5.0,
                 logger: Optional[logging.Logger] = None) -> None:
        self.message = message
        self.after = after
        self.logger = logger or logging.getLogger()
        self._event = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.fired = False

    def start(self) -> "IdleWarning":
        self._thread = threading.Thread(target=self._wait, daemon=True, name="idle-warning")
        self._thread.start()
        return self

    def _wait(self) -> None:
        if not self._event.wait(self.after):
            self.fired = True
            self.logger.warning(self.message)

    def done(self) -> None:
        self._event.set()

    cancel = done

    def __enter__(self) -> "IdleWarning":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.done()


# --- argument types: each raises argparse.ArgumentTypeError with the bad value ------------

def finite_float(text: str) -> float:
    """A finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


#: a timeout in seconds: finite and > 0
timeout = positive_float


def _int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def positive_int(text: str) -> int:
    """A whole number > 0."""
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """A whole number >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def port(text: str) -> int:
    """A TCP port, 1..65535."""
    value = _int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port must be 1..65535, got {text!r}")
    return value


def _check_host(host: str, whole: str) -> str:
    if not host:
        raise argparse.ArgumentTypeError(f"no host in {whole!r}: expected host:port")
    if any(c.isspace() for c in host) or "/" in host:
        raise argparse.ArgumentTypeError(f"bad host {host!r} in {whole!r}")
    return host


def host_port(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (the rule every command applies to a TCP peer)."""
    if "://" in text:
        raise argparse.ArgumentTypeError(
            f"expected host:port, not a URL: {text!r}")
    host, sep, number = text.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad IPv6 address {host!r} in {text!r}") from None
    elif ":" in host:
        raise argparse.ArgumentTypeError(
            f"bracket an IPv6 address as [addr]:port, got {text!r}")
    _check_host(host, text)
    try:
        return host, port(number)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (in {text!r})") from None


_ZMQ_SCHEMES = ("tcp", "ipc", "inproc")


def _zmq_url(text: str, bind: bool) -> str:
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise argparse.ArgumentTypeError(
            f"URL needs a scheme, e.g. tcp://{text}: got {text!r}")
    if scheme not in _ZMQ_SCHEMES:
        raise argparse.ArgumentTypeError(
            f"unknown scheme {scheme!r} in {text!r} (use tcp://, ipc:// or inproc://)")
    if not rest:
        raise argparse.ArgumentTypeError(f"nothing after {scheme}:// in {text!r}")
    if scheme == "tcp":
        host, sep, number = rest.rpartition(":")
        if not sep:
            raise argparse.ArgumentTypeError(f"no port in {text!r}: expected tcp://host:port")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not (bind and host == "*"):
            _check_host(host, text)
        if bind and number in ("0", "*"):
            return text  # an ephemeral port, reported once bound
        try:
            port(number)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (in {text!r})") from None
    return text


def zmq_url(text: str) -> str:
    """A ZeroMQ endpoint to connect to, with its scheme: ``tcp://host:port`` (port
    1..65535), ``ipc://path`` or ``inproc://name``."""
    return _zmq_url(text, bind=False)


def zmq_bind_url(text: str) -> str:
    """A ZeroMQ endpoint to bind: as :func:`zmq_url`, and ``tcp://*:port`` or port ``0``
    (an ephemeral port, which the command reports once bound) are allowed."""
    return _zmq_url(text, bind=True)


def existing_file(text: str) -> str:
    """A path to a readable regular file."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"is a directory, not a file: {text!r}")
    if not os.access(text, os.R_OK):
        raise argparse.ArgumentTypeError(f"can't read {text!r}: permission denied")
    return text


def output_file(text: str) -> str:
    """A path a file can be written to: its folder exists and it is not a directory."""
    if not text:
        raise argparse.ArgumentTypeError("empty file name")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"is a directory, not a file: {text!r}")
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"no such directory {folder!r} for {text!r}")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"can't write in {folder!r}: permission denied")
    return text

