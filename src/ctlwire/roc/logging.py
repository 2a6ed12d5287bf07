"""Distributed logging: Python ``logging`` records published through the ROC relay.

Wire format (two frames, same shape as status updates): ``b"ROCL" + nodeId`` and a
JSON object::

    {"iso": "2026-11-22T02:30:01.123456Z", "time": 1795833001.123456,
     "node": "vnir", "logger": "camera", "level": "INFO", "levelno": 20,
     "message": "shutter open", "file": "/path/cam.py", "line": 42, "func": "open",
     "process": 1234, "thread": "MainThread", "exc": null}

``exc`` holds the formatted traceback when the record carries one. A
:class:`RocLogger` adds ``"stream"`` (8 hex digits, random per handler) and ``"seq"``
(0, 1, 2, ... for every record it emits, sent or dropped), so a receiver counts what
it missed from the gaps (:class:`ctlwire.roc.logdump.LogDump`, ``roclogdump``): a record
dropped at a high-water mark, by a relay, or while a subscriber moves to a standby
broker is told, not silently lost. A handler connected to several brokers sends each
record to each; the repeats a subscriber sees after moving are recognised by the same
numbers.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import socket
import threading
from typing import Any

import zmq

from ctlwire import _json
from ctlwire._zmq import make_socket
from ctlwire.roc.endpoints import Endpoints, resolve_all

PREFIX = b"ROCL"


def record_to_dict(record: logging.LogRecord, node: str) -> dict[str, Any]:
    """The JSON object that travels for ``record``."""
    exc = None
    if record.exc_info:
        exc = logging.Formatter().formatException(record.exc_info)
    elif record.exc_text:
        exc = record.exc_text
    iso = _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "iso": iso, "time": record.created, "node": node, "logger": record.name,
        "level": record.levelname, "levelno": record.levelno,
        "message": record.getMessage(), "file": record.pathname, "line": record.lineno,
        "func": record.funcName, "process": record.process, "thread": record.threadName,
        "exc": exc,
    }


def default_node_id() -> str:
    """``hostname.pid``: unique enough to tell log sources apart."""
    return f"{socket.gethostname()}.{os.getpid()}"


class RocLogger(logging.Handler):
    """Handles python log messages by sending them over a zmq PUB socket.

    Parameters
    ----------
    nodeId : str
        Name of this log source (appears in every record and in the topic).
    destination : Endpoints or str or None
        :class:`Endpoints` (its ``generalXSUB``), a ZeroMQ endpoint,
        ``host[:baseport]`` or ``None`` for ``$CTLWIRE_ROC_BROKER``.
    ctx : zmq.Context, optional
        ZeroMQ context to use.

    Notes
    -----
    Never blocks the logging caller: when the relay is unreachable, or reads more
    slowly than records come, records are queued up to the socket's high-water mark,
    then dropped and counted in :attr:`dropped` (the socket refuses them,
    ``XPUB_NODROP``, instead of a PUB's silent drop). Every record carries this
    handler's ``stream`` id and its ``seq`` number, so a receiver counts whatever it
    missed, here or further on (``roclogdump``'s summary: records lost).
    """

    def __init__(self, nodeId: str, destination: Endpoints | str | list | None = None,
                 ctx: zmq.Context | None = None, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.nodeId = nodeId
        # every broker of a primary/standby pair relays the records it gets
        self.endpoints = resolve_all(destination, "generalXSUB")
        self.endpoint = self.endpoints[0]
        self._topic = PREFIX + nodeId.encode("utf-8")
        self._sock = make_socket(ctx, zmq.PUB, sndhwm=10_000)
        # a full queue refuses the record (counted below) instead of dropping it unseen
        self._sock.setsockopt(zmq.XPUB_NODROP, 1)
        for e in self.endpoints:
            self._sock.connect(e)
        self._closed = False
        self.stream = os.urandom(4).hex()
        self.seq = 0  # the number of the next record
        #: Records not sent: the relay's queue (10,000 records) was full.
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        # logging.Handler.handle() holds self.lock around emit: one sender at a time
        if self._closed:
            return
        try:
            d = record_to_dict(record, self.nodeId)
            d["stream"] = self.stream
            d["seq"] = self.seq
            self.seq += 1  # (a dropped record's number is a gap at the receiver)
            body = _json.dumps(d)
            self._sock.send_multipart([self._topic, body], zmq.NOBLOCK)
        except zmq.Again:
            # queue full: dropped rather than block the caller, counted here; its
            # number (seq) is also a gap that the receiver counts
            self.dropped += 1
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)

    def close(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if not self._closed:
                self._closed = True
                self._sock.close(linger=200)  # give queued records a moment to leave
        super().close()


_installed: dict[str, RocLogger] = {}
_install_lock = threading.Lock()


def initRocLogging(nodeId: str | None = None, destination: Endpoints | str | None = None,
                   level: int = logging.INFO, ctx: zmq.Context | None = None) -> RocLogger:
    """Deliver standard Python log messages through the ROC broker's relay.

    Installs a :class:`RocLogger` on the root logger (once per node id and endpoint;
    calling again returns the installed handler) and lowers the root level to
    ``level`` if it is higher.

    Parameters
    ----------
    nodeId : str, optional
        Log source name; default ``hostname.pid``.
    destination : Endpoints or str or None
        The broker, as for :class:`RocLogger`.
    level : int
        Records below this level are not sent.
    ctx : zmq.Context, optional
        ZeroMQ context to use.
    """
    node = nodeId or default_node_id()
    endpoints = resolve_all(destination, "generalXSUB")
    key = f"{node}@{','.join(endpoints)}"
    with _install_lock:
        handler = _installed.get(key)
        root = logging.getLogger()
        if handler is None or handler._closed or handler not in root.handlers:
            handler = RocLogger(node, endpoints, ctx, level)
            _installed[key] = handler
            root.addHandler(handler)
        if root.level > level or root.level == logging.NOTSET:
            root.setLevel(level)
        return handler
