"""Record TCS events from publishers into a database that :class:`TCSDBReplay` replays.

Every event received is written, in batches committed at least every
``flush_interval`` seconds or ``batch`` events (whichever comes first) and on stop, with
one ``attribute`` row per key: numbers as ``'number'``, booleans as ``'boolean'``
(``"true"``/``"false"``), text and null as ``'string'``, nested values as their JSON
text with type ``'json'``.  A writer thread commits the batches while the next one is
received; a crash (SIGKILL) loses at most what is not yet committed (the batch being
built and at most two handed over).  The ``attribute_name`` index of a new file is
built once when it is closed.

Each recording session is noted in the table ``ctlwire_session`` (first event id and
start time), so a replay of a file appended to over several sessions does not wait
through the idle time between them.  Rotation (``split_every``/``max_size``) writes
``night-0001.sqlite``, ``night-0002.sqlite``, ... that replay together as one night.

May import: ``ctlwire.tcs.events`` (database), ``ctlwire.tcs.transport`` (sockets),
pyzmq and the standard library; no compiled extension.
"""
from __future__ import annotations

import logging
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence

import zmq

from .events import (EventWriter, TCSDatabaseError, check_schema, create_database)
from .transport import TCSSubscriber

__all__ = ["TCSRecorder", "RecordingExistsError", "prepare_output", "part_path",
           "DEFAULT_BATCH", "DEFAULT_FLUSH_INTERVAL"]

_log = logging.getLogger("ctlwire.tcs.record")

#: Events per committed batch at most.
DEFAULT_BATCH = 2000
#: Messages the recorder's socket queues before the publisher waits or counts a drop.
RCVHWM = 20_000
#: Longest time (seconds) a received event waits in memory before being committed.
DEFAULT_FLUSH_INTERVAL = 0.5

SESSION_SCHEMA = """
CREATE TABLE IF NOT EXISTS ctlwire_session (
    session        INTEGER PRIMARY KEY,
    first_event_id INTEGER NOT NULL,
    started        REAL NOT NULL);
"""


class RecordingExistsError(TCSDatabaseError):
    """The output already holds a TCS recording and neither append nor overwrite was asked."""


def part_path(path: str, n: int) -> str:
    """``night.sqlite`` -> ``night-0001.sqlite`` for part ``n`` of a rotated recording."""
    root, ext = os.path.splitext(path)
    return f"{root}-{n:04d}{ext or '.sqlite'}"


def _existing_parts(path: str) -> list[tuple[int, str]]:
    root, ext = os.path.splitext(os.path.abspath(path))
    folder, base = os.path.split(root)
    pat = re.compile(re.escape(base) + r"-(\d{4,})" + re.escape(ext or ".sqlite") + "$")
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted((int(m.group(1)), os.path.join(folder, n))
                  for n in names if (m := pat.match(n)))


def _kind_of(path: str) -> str:
    """'new' (missing or empty), 'tcs' (a TCS event database); raises for anything else."""
    if not os.path.exists(path):
        return "new"
    if os.path.isdir(path):
        raise TCSDatabaseError(f"output {path!r} is a directory, not a file")
    if os.path.getsize(path) == 0:
        return "new"
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head != b"SQLite format 3\x00":
        raise TCSDatabaseError(f"output {path!r} exists and is not a sqlite database; "
                               "refusing to write into it")
    from urllib.parse import quote
    # read-only: a file that is not ours is never touched, not even its journal
    uri = "file:" + quote(os.path.abspath(path), safe="/") + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise TCSDatabaseError(f"cannot open output {path!r}: {exc}") from None
    try:
        check_schema(conn, f"output {path!r}")
    except TCSDatabaseError as exc:
        raise TCSDatabaseError(f"{exc}; refusing to write into it") from None
    finally:
        conn.close()
    return "tcs"


def _remove_db(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


def prepare_output(path: str, mode: str = "new", rotate: bool = False) -> int:
    """Check the output of a recording before anything is connected.

    Parameters
    ----------
    path : str
        The database (or, with ``rotate``, the name its parts derive from).
    mode : {'new', 'append', 'overwrite'}
        ``new`` refuses an existing recording; ``append`` adds to it (a new session);
        ``overwrite`` replaces it.  A file that is not a TCS event database is always
        refused and left untouched.
    rotate : bool
        Whether parts ``path-NNNN.sqlite`` are written.

    Returns
    -------
    int
        With ``rotate``: the number of the first part to write; else 0.

    Raises
    ------
    TCSDatabaseError
        Naming the file and what it is.
    RecordingExistsError
        An existing recording without ``append``/``overwrite``.
    """
    if mode not in ("new", "append", "overwrite"):
        raise ValueError(f"mode must be 'new', 'append' or 'overwrite', got {mode!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise TCSDatabaseError(f"cannot write {path!r}: no such directory {folder!r}")
    if not rotate:
        kind = _kind_of(path)
        if kind == "tcs":
            if mode == "new":
                raise RecordingExistsError(
                    f"output {path!r} already holds a TCS recording; give --append to add "
                    "to it or --overwrite to replace it")
            if mode == "overwrite":
                _remove_db(path)
        return 0
    parts = _existing_parts(path)
    for _, p in parts:
        _kind_of(p)  # every existing part must be ours
    if not parts:
        return 1
    if mode == "new":
        raise RecordingExistsError(
            f"parts of a rotated recording exist ({os.path.basename(parts[0][1])} ...); "
            "give --append to continue it or --overwrite to replace it")
    if mode == "overwrite":
        for _, p in parts:
            _remove_db(p)
        return 1
    return parts[-1][0] + 1


def _open_writer(path: str, batch: int) -> EventWriter:
    conn = create_database(path, check_same_thread=False, defer_index=True)
    # WAL: a commit is one append, and a killed recorder leaves every committed batch
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SESSION_SCHEMA)
    return EventWriter(conn, batch=0, index_at_close=True)


class _Sink:
    """The writing side, in its own thread: sqlite releases the GIL while it inserts,
    so receiving and decoding go on meanwhile.  Owns the current part's connection."""

    def __init__(self, rec: "TCSRecorder") -> None:
        self.rec = rec
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.writer = rec._open_next()
        self.new_session = True
        self.done_written = 0
        self.thread = threading.Thread(target=self._loop, name="tcs-record-writer",
                                       daemon=True)
        self.thread.start()

    @property
    def written(self) -> int:
        return self.done_written + self.writer.written

    def put(self, batch) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(batch, timeout=0.5)
                return
            except queue.Full:
                continue

    def _loop(self) -> None:
        while True:
            batch = self.queue.get()
            if batch is None:
                self.queue.task_done()
                return
            try:
                self._write(batch)
            except BaseException as exc:  # reported by put() and close()
                self.error = exc
                self.rec._stop.set()
                self.queue.task_done()
                return
            self.queue.task_done()

    def sync(self) -> None:
        """Wait until every batch handed over is committed."""
        if self.thread.is_alive():
            self.queue.join()
        if self.error is not None:
            raise self.error

    def _write(self, batch) -> None:
        events = batch[0]
        if not events:
            return
        w = self.writer
        if self.new_session:
            # the session starts with its first event (so does each part)
            self.new_session = False
            with w.conn:
                w.conn.execute("INSERT INTO ctlwire_session (first_event_id, started) "
                               "VALUES (?, ?)", (events[0][0], time.time()))
        w.write(batch)
        if self.rec.rotate and self.rec._part_due(w):
            w.close()
            self.done_written += w.written
            self.writer = self.rec._open_next()
            self.new_session = True

    def close(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        try:
            self.writer.close()
        finally:
            if self.error is not None:
                raise self.error


class _RowBuilder(EventWriter):
    """Rows of received events, ids in arrival order; written by the sink."""

    def __init__(self, next_id: int) -> None:
        self.conn = None
        self.batch = 0
        self.index_at_close = False
        self._events = []
        self._attrs = []
        self._next_id = next_id
        self.written = 0


class TCSRecorder:
    """Subscribe to TCS publishers and append their events to a database.

    Parameters
    ----------
    urls : str or list of str
        Publishers to subscribe to.
    db_name : str
        Database file; created with the TCS schema if needed.  Checked with
        :func:`prepare_output` (``mode``).
    topics : list of str, optional
        Topic prefixes to record (default all).
    flush_interval : float, optional
        Longest time a received event waits in memory before being committed.
    context : zmq.Context, optional
    mode : {'append', 'new', 'overwrite'}, optional
        Keyword only.  What to do with an existing recording (the library default
        appends, as before; ``tcs-record`` asks for ``new``).
    batch : int, optional
        Keyword only.  Events per committed batch at most.
    split_every : float, optional
        Keyword only.  Start a new part after this many seconds.
    max_size : float, optional
        Keyword only.  Start a new part once a part reaches this many bytes.

    Attributes
    ----------
    recorded : int
        Events committed so far (all parts).
    received : int
        Events received (committed or about to be).
    subscriber : TCSSubscriber
        The listening side (``subscriber.bad`` counts malformed messages dropped).
    files : list of str
        Database files written, in order.
    connected : set of str
        Publisher endpoints a connection was made to at some point.
    """

    def __init__(self, urls: str | Sequence[str], db_name: str | os.PathLike[str],
                 topics: Sequence[str] | None = None,
                 flush_interval: float = DEFAULT_FLUSH_INTERVAL,
                 context: zmq.Context | None = None, *, mode: str = "append",
                 batch: int = DEFAULT_BATCH, split_every: float | None = None,
                 max_size: float | None = None) -> None:
        if not flush_interval > 0:
            raise ValueError(f"flush_interval must be > 0, got {flush_interval!r}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch!r}")
        for name, v in (("split_every", split_every), ("max_size", max_size)):
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be > 0, got {v!r}")
        self.db_name = os.fspath(db_name)
        self.rotate = split_every is not None or max_size is not None
        self._part = prepare_output(self.db_name, mode, self.rotate)
        self.split_every = split_every
        self.max_size = max_size
        self.batch = batch
        self.flush_interval = flush_interval
        self.files: list[str] = []
        self.created: list[str] = []
        self._stop = threading.Event()
        self._sink = _Sink(self)
        # event ids are handed out here, in arrival order, across parts
        self._rows = _RowBuilder(self._sink.writer._next_id)
        try:
            # a queue of its own that a stop can still write out in a few seconds;
            # beyond it the publisher waits (or counts a drop)
            self.subscriber = TCSSubscriber(urls, topics=topics, context=context,
                                            hwm=RCVHWM)
        except BaseException:
            self._sink.close()
            raise
        self._monitor = self.subscriber.socket.get_monitor_socket(
            zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.connected: set[str] = set()
        self._received = 0
        self._closed = False

    def _open_next(self) -> EventWriter:
        if self.rotate:
            path = part_path(self.db_name, self._part)
            self._part += 1
        else:
            path = self.db_name
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            self.created.append(path)
        writer = _open_writer(path, self.batch)
        self.files.append(path)
        self._part_started = time.monotonic()
        return writer

    def _part_due(self, w: EventWriter) -> bool:
        if not w.written:
            return False
        if (self.split_every is not None
                and time.monotonic() - self._part_started >= self.split_every):
            return True
        if self.max_size is not None:
            path = self.files[-1]
            size = sum(os.path.getsize(path + s) for s in ("", "-wal")
                       if os.path.exists(path + s))
            return size >= self.max_size
        return False

    @property
    def recorded(self) -> int:
        """Events committed to the database(s)."""
        return self._sink.written

    @property
    def received(self) -> int:
        """Events received (committed or queued for the next batch)."""
        return self._received

    def _read_monitor(self) -> None:
        from zmq.utils.monitor import recv_monitor_message
        while True:
            try:
                msg = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            endpoint = msg.get("endpoint", b"")
            if isinstance(endpoint, bytes):
                endpoint = endpoint.decode("utf-8", "replace")
            if msg["event"] == zmq.EVENT_CONNECTED:
                self.connected.add(endpoint)

    def _flush(self) -> None:
        if self._rows.pending:
            self._sink.put(self._rows.take())

    def run(self, duration: float | None = None, count: int | None = None,
            on_tick: Callable[["TCSRecorder"], None] | None = None) -> int:
        """Record until :meth:`stop`, ``duration`` seconds, or ``count`` events.

        Events already queued when asked to stop are still written (read without
        waiting, for at most 10 s), then everything is committed.

        Parameters
        ----------
        duration : float, optional
            Seconds to record.
        count : int, optional
            Events to record.
        on_tick : callable, optional
            Called with the recorder about every 0.1 s (progress lines, warnings).

        Returns
        -------
        int
            The number of events recorded by this call.
        """
        start = time.monotonic()
        end = None if duration is None else start + duration
        first = self._received
        want = None if count is None else first + count
        last_flush = start
        sock = self.subscriber.socket
        decode = self.subscriber.decode
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        stop = self._stop
        rows = self._rows
        add = rows.add
        batch = self.batch
        try:
            while not stop.is_set():
                # a burst: read what is queued without waiting
                n = 0
                while n < 4096:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    got = decode(frames)
                    if got is not None:
                        add(got[0], got[1])
                        self._received += 1
                        if want is not None and self._received >= want:
                            break
                    n += 1
                if rows.pending >= batch:
                    self._flush()
                now = time.monotonic()
                if now - last_flush >= self.flush_interval:
                    self._flush()
                    last_flush = now
                if want is not None and self._received >= want:
                    break
                if end is not None and now >= end:
                    break
                self._read_monitor()
                if on_tick is not None:
                    on_tick(self)
                if n == 0:
                    wait = 0.1 if end is None else max(0.0, min(0.1, end - now))
                    poller.poll(int(wait * 1000) + 1)
            if stop.is_set():
                self._drain(want)
        finally:
            self._flush()
            self._sink.sync()
        return self._received - first

    def _drain(self, want: int | None) -> None:
        sock = self.subscriber.socket
        decode = self.subscriber.decode
        limit = time.monotonic() + 10.0  # the queue holds at most RCVHWM events
        while time.monotonic() < limit and (want is None or self._received < want):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            got = decode(frames)
            if got is not None:
                self._rows.add(got[0], got[1])
                self._received += 1
                if self._rows.pending >= self.batch:
                    self._flush()

    def remove_if_empty(self) -> list[str]:
        """After :meth:`close`: delete the files this recorder created and wrote no
        event into (so a run that found nothing leaves nothing); returns them."""
        gone = []
        for path in self.created:
            try:
                conn = sqlite3.connect(path)
                try:
                    empty = conn.execute("SELECT count(*) FROM event").fetchone()[0] == 0
                finally:
                    conn.close()
            except sqlite3.Error:
                continue
            if empty:
                _remove_db(path)
                gone.append(path)
        return gone

    def stop(self) -> None:
        """Ask :meth:`run` to return after writing what it has (thread- and signal-safe)."""
        self._stop.set()

    def close(self) -> None:
        """Commit, close the database and the subscriber."""
        if self._closed:
            return
        self._closed = True
        try:
            self._flush()
            self._sink.close()
        finally:
            try:
                self.subscriber.socket.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(linger=0)
            self.subscriber.close()

    def __enter__(self) -> "TCSRecorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
