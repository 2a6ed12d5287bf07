"""Record TCS events from publishers into a database that :class:`TCSDBReplay` replays.

Every event received is written (in batches, flushed at least every
``flush_interval`` seconds and on stop) with one ``attribute`` row per key: numbers as
``'number'``, booleans as ``'boolean'`` (``"true"``/``"false"``), text and null as
``'string'``, nested values as their JSON text with type ``'json'``.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

import zmq

from .events import EventWriter, create_database
from .server import TCSSubscriber

__all__ = ["TCSRecorder"]


class TCSRecorder:
    """Subscribe to TCS publishers and append their events to a database.

    Parameters
    ----------
    urls : str or list of str
        Publishers to subscribe to.
    db_name : str
        Database file; created with the TCS schema if needed, appended to otherwise.
    topics : list of str, optional
        Topic prefixes to record (default all).
    flush_interval : float, optional
        Longest time an accepted event waits in memory before being written.
    context : zmq.Context, optional

    Attributes
    ----------
    recorded : int
        Events written so far.
    subscriber : TCSSubscriber
        The listening side (``subscriber.bad`` counts malformed messages dropped).
    """

    def __init__(self, urls: str | Sequence[str], db_name: str | os.PathLike[str],
                 topics: Sequence[str] | None = None, flush_interval: float = 0.5,
                 context: zmq.Context | None = None) -> None:
        self.db_name = os.fspath(db_name)
        self.subscriber = TCSSubscriber(urls, topics=topics, context=context)
        # run() often lives in a worker thread while close() comes from the creator
        self._writer = EventWriter(create_database(self.db_name, check_same_thread=False),
                                   batch=2000)
        self.flush_interval = flush_interval
        self._stop = threading.Event()
        self._received = 0

    @property
    def recorded(self) -> int:
        """Events written to the database."""
        return self._writer.written

    @property
    def received(self) -> int:
        """Events received (written or queued)."""
        return self._received

    def run(self, duration: float | None = None, count: int | None = None) -> int:
        """Record until :meth:`stop`, ``duration`` seconds, or ``count`` events.

        Returns the number of events recorded by this call.
        """
        start = time.monotonic()
        first = self._received
        last_flush = start
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if duration is not None and now - start >= duration:
                    break
                if count is not None and self._received - first >= count:
                    break
                item = self.subscriber.recv(timeout=0.05)
                if item is not None:
                    self._writer.add(*item)
                    self._received += 1
                if time.monotonic() - last_flush >= self.flush_interval:
                    self._writer.flush()
                    last_flush = time.monotonic()
        finally:
            self._writer.flush()
        return self._received - first

    def stop(self) -> None:
        """Ask :meth:`run` (in another thread) to return after flushing."""
        self._stop.set()

    def close(self) -> None:
        """Flush, close the database and the subscriber."""
        self._writer.close()
        self.subscriber.close()

    def __enter__(self) -> "TCSRecorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
