"""Write every log record from the ROC relay to one file (the command ``roclogdump``,
:mod:`ctlwire.cli.roclogdump`, runs it).

One JSON object per line (JSON Lines), keys in reading order (``iso``, ``level``,
``node``, ``logger``, ``message``, ...), so the file reads well with ``less`` and
loads with any JSON tool.  The file is appended to; with ``--max-bytes`` it is
rotated to ``FILE.1`` ... ``FILE.N`` like :class:`logging.handlers.RotatingFileHandler`.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import IO, Any

import zmq

from ctlwire import _json
from ctlwire._curve import apply_client_trusting
from ctlwire._zmq import make_socket
from ctlwire.roc.endpoints import Endpoints, resolve_all
from ctlwire.roc.logging import PREFIX

_ORDER = ("iso", "level", "node", "logger", "message")
log = logging.getLogger("ctlwire.roc.logdump")


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
    security, broker_key : optional
        CURVE key pair of this subscriber and the broker's public key.

    Attributes
    ----------
    written, bad : int
        Records written, and messages dropped because they were not log records.
    lost : int
        Records never received, counted from the gaps in each sender's numbers
        (``stream``, ``seq``: see :mod:`ctlwire.roc.logging`): dropped by a full
        queue on the way, or sent while this subscriber moved to another broker.
        Records after the last one received from a sender cannot be counted.
    repeated : int
        Records received again (a sender publishes to every broker; after a move the
        new broker's relay may deliver some already written): skipped.
    connected : bool
        Whether a connection to the relay was ever made.
    """

    def __init__(self, source: Endpoints | str | None, path: str,
                 ctx: zmq.Context | None = None, max_bytes: int = 0,
                 backups: int = 5, *, security: Any = None,
                 broker_key: bytes | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.written = 0
        self.bad = 0
        self.lost = 0
        self.repeated = 0
        self._next: dict[str, int] = {}  # stream -> the seq expected next
        self._warned = -1e9  # when a gap was last reported
        self.connected = False
        # several brokers: the first, then the next whenever the connection drops
        self.endpoints = resolve_all(source, "generalXPUB")
        self.endpoint = self.endpoints[0]
        self._stop = threading.Event()
        self._file: IO[str] = open(path, "a", encoding="utf-8")
        self._sock = make_socket(ctx, zmq.SUB)
        apply_client_trusting(security, self._sock, broker_key)
        self._sock.setsockopt(zmq.SUBSCRIBE, PREFIX)
        # tells "nothing was there to connect to" from "nobody logged anything"
        self._mon = self._sock.get_monitor_socket(
            zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self._sock.connect(self.endpoint)

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
        stream, seq = record.get("stream"), record.get("seq")
        if type(stream) is str and type(seq) is int:
            expected = self._next.get(stream)
            if expected is not None and seq < expected:
                self.repeated += 1
                return True
            if expected is not None and seq > expected:
                self.lost += seq - expected
                now = time.monotonic()
                if now - self._warned >= 1.0:  # (a flood makes a gap per record)
                    self._warned = now
                    log.warning("%d log records of %s lost before #%d (%d lost in all)",
                                seq - expected, record.get("node"), seq, self.lost)
            self._next[stream] = seq + 1
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

    def run(self, count: int | None = None, duration: float | None = None,
            on_record: Any = None) -> int:
        """Write records until ``count`` were written, ``duration`` passed, or
        :meth:`stop`; returns the number written.  ``on_record()`` is called after
        each record written."""
        end = None if duration is None else time.monotonic() + duration
        try:
            while not self._stop.is_set():
                if count is not None and self.written >= count:
                    break
                wait = 0.1 if end is None else min(0.1, end - time.monotonic())
                if wait <= 0:
                    break
                if self._sock.poll(int(wait * 1000) + 1):
                    if self.write(self._sock.recv_multipart()) and on_record is not None:
                        on_record()
                self._check_connected()
        finally:
            self.close()
        return self.written

    def stop(self) -> None:
        """Make :meth:`run` return (any thread)."""
        self._stop.set()

    def _check_connected(self) -> None:
        while True:
            try:
                event = self._mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            kind = int.from_bytes(event[0][:2], "little")
            where = event[1].decode("utf-8", "replace") if len(event) > 1 else ""
            if kind == zmq.EVENT_CONNECTED and not self.connected:
                self.connected = True
                log.info("connected to the relay at %s", where)
            elif kind == zmq.EVENT_DISCONNECTED and where == self.endpoint and \
                    len(self.endpoints) > 1:
                # records published while we move are not seen (counted as lost from
                # the gaps in their numbers), and some seen before come again
                self._sock.disconnect(self.endpoint)
                i = (self.endpoints.index(self.endpoint) + 1) % len(self.endpoints)
                self.endpoint = self.endpoints[i]
                self._sock.connect(self.endpoint)
                log.warning("relay connection lost: moving to %s", self.endpoint)

    def close(self) -> None:
        """Close the socket and the file (idempotent)."""
        if not self._sock.closed:
            self._check_connected()
            self._sock.disable_monitor()
            self._mon.close(0)
            self._sock.close(0)
        self._file.close()
