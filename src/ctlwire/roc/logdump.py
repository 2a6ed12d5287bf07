"""``roclogdump``: write every log record from the ROC relay to one file.

One JSON object per line (JSON Lines), keys in reading order (``iso``, ``level``,
``node``, ``logger``, ``message``, ...), so the file reads well with ``less`` and
loads with any JSON tool.  The file is appended to; with ``--max-bytes`` it is
rotated to ``FILE.1`` ... ``FILE.N`` like :class:`logging.handlers.RotatingFileHandler`.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import IO

import zmq

from ctlwire import _json
from ctlwire._zmq import make_socket
from ctlwire.roc.endpoints import DEFAULT_BASE_PORT, Endpoints, default_endpoints, resolve
from ctlwire.roc.logging import PREFIX

_ORDER = ("iso", "level", "node", "logger", "message")


class LogDump:
    """Subscribe to log records on the relay and append them to ``path``.

    Parameters
    ----------
    source : Endpoints or str or None
        The broker (its ``generalXPUB`` is used).
    path : str
        Output file; created or appended to.
    ctx : zmq.Context, optional
        ZeroMQ context to use.
    max_bytes : int
        Rotate when the file would grow past this size (0: never).
    backups : int
        Rotated files kept.
    """

    def __init__(self, source: Endpoints | str | None, path: str,
                 ctx: zmq.Context | None = None, max_bytes: int = 0,
                 backups: int = 5) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.written = 0
        self.bad = 0
        self._stop = threading.Event()
        self._sock = make_socket(ctx, zmq.SUB)
        self._sock.setsockopt(zmq.SUBSCRIBE, PREFIX)
        self._sock.connect(resolve(source, "generalXPUB"))
        self._file: IO[str] = open(path, "a", encoding="utf-8")

    def _rotate(self) -> None:
        self._file.close()
        for i in range(self.backups - 1, 0, -1):
            if os.path.exists(f"{self.path}.{i}"):
                os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
        if self.backups > 0:
            os.replace(self.path, f"{self.path}.1")
        else:
            os.remove(self.path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, frames: list) -> bool:
        """Write one received message; returns whether it was a valid log record."""
        try:
            record = _json.loads(frames[1]) if len(frames) == 2 else None
        except _json.DecodeError:
            record = None
        if not isinstance(record, dict):
            self.bad += 1
            return False
        ordered = {k: record[k] for k in _ORDER if k in record}
        ordered.update((k, v) for k, v in record.items() if k not in ordered)
        line = _json.dumps(ordered).decode("utf-8") + "\n"
        if self.max_bytes and self._file.tell() + len(line) > self.max_bytes \
                and self._file.tell() > 0:
            self._rotate()
        self._file.write(line)
        self._file.flush()
        self.written += 1
        return True

    def run(self, count: int | None = None, duration: float | None = None) -> int:
        """Write records until ``count`` were written, ``duration`` passed, or
        :meth:`stop`; returns the number written."""
        end = None if duration is None else time.monotonic() + duration
        try:
            while not self._stop.is_set():
                if count is not None and self.written >= count:
                    break
                wait = 0.1 if end is None else min(0.1, end - time.monotonic())
                if wait <= 0:
                    break
                if self._sock.poll(int(wait * 1000) + 1):
                    self.write(self._sock.recv_multipart())
        finally:
            self.close()
        return self.written

    def stop(self) -> None:
        """Make :meth:`run` return (any thread)."""
        self._stop.set()

    def close(self) -> None:
        self._sock.close(0)
        self._file.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``roclogdump`` / ``python -m ctlwire.roc.logdump``."""
    default = default_endpoints()
    p = argparse.ArgumentParser(prog="roclogdump",
                                description="Write every ROC log record to a file "
                                            "(JSON Lines, appended).")
    p.add_argument("--address", default=default.brokerAddress,
                   help=f"broker host (default {default.brokerAddress}, "
                        "from $CTLWIRE_ROC_BROKER if set)")
    p.add_argument("--base-port", type=int, default=default.brokerBasePort,
                   help=f"broker base port (default {DEFAULT_BASE_PORT}); "
                        "records come from base+2")
    p.add_argument("--output", "-o", required=True, help="file to append records to")
    p.add_argument("--max-bytes", type=int, default=0,
                   help="rotate the file at this size (default: never)")
    p.add_argument("--backups", type=int, default=5, help="rotated files kept (default 5)")
    p.add_argument("--count", type=int, default=None, help="exit after N records")
    p.add_argument("--duration", type=float, default=None, help="exit after S seconds")
    args = p.parse_args(argv)
    ep = Endpoints(args.address, args.base_port)
    try:
        dump = LogDump(ep, args.output, max_bytes=args.max_bytes, backups=args.backups)
    except OSError as exc:
        print(f"roclogdump: cannot open {args.output}: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: dump.stop())
    print(f"roclogdump: {ep.generalXPUB} -> {args.output}", flush=True)
    try:
        n = dump.run(args.count, args.duration)
    except KeyboardInterrupt:
        n = dump.written
    print(f"roclogdump: {n} records written", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
