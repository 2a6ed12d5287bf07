"""Record TCS events from publishers into a database that :class:`TCSDBReplay` replays.

Every event received is written, in batches committed at least every
``flush_interval`` seconds or ``batch`` events (whichever comes first) and on stop, with
one ``attribute`` row per key: numbers as ``'number'``, booleans as ``'boolean'``
(``"true"``/``"false"``), text and null as ``'string'``, nested values as their JSON
text with type ``'json'``.  A crash (SIGKILL) loses at most the batch not yet committed.
The ``attribute_name`` index of a new file is built once when it is closed.

The receiving and writing are compiled (``ctlwire.tcs._record``): messages are read
from libzmq and turned into rows and sqlite inserts with no Python object per event;
what the compiled scanner does not take (nested values, non-ASCII text, malformed
messages) goes through :func:`ctlwire.tcs.events.event_rows`, its reference.

Each recording session is noted in the table ``ctlwire_session`` (first event id and
start time), so a replay of a file appended to over several sessions does not wait
through the idle time between them.  Rotation (``split_every``/``max_size``) writes
``night-0001.sqlite``, ``night-0002.sqlite``, ... that replay together as one night.

May import: ``ctlwire.tcs.events`` (database), ``ctlwire.tcs.transport`` (sockets),
the recorder's compiled engine ``ctlwire.tcs._record``, ``ctlwire._libzmq``, pyzmq and
the standard library.
"""
from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence

import zmq

from .._ext import load_extension
from .._libzmq import function_addresses
from .events import INDEX, SCHEMA, TCSDatabaseError, check_schema, event_rows
from .transport import TCSSubscriber

_engine = load_extension("ctlwire.tcs._record")

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


#: What a new part runs before writing: WAL (a commit is one append, and a killed
#: recorder leaves every committed batch), the schema without its deferred index.
_SETUP = ("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
          + SCHEMA.replace(INDEX + ";", "") + SESSION_SCHEMA)


def _raw_zmq() -> bool:
    """Bind the compiled receiver to the libzmq pyzmq loaded; False: use pyzmq."""
    if _engine.is_bound():
        return True
    addresses = function_addresses(_engine.ZMQ_FUNCTIONS)
    if addresses is None:
        return False
    _engine.bind(addresses)
    return True


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
        self._done_written = 0  # events committed in parts already closed
        # a queue of its own that a stop can still write out in a few seconds;
        # beyond it the publisher waits (or counts a drop)
        self._writer = self._open_next(None)
        try:
            self.subscriber = TCSSubscriber(urls, topics=topics, context=context,
                                            hwm=RCVHWM)
        except BaseException:
            self._writer.close(INDEX)
            raise
        self._raw = _raw_zmq()
        self._monitor = self.subscriber.socket.get_monitor_socket(
            zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.connected: set[str] = set()
        self._closed = False

    def _rows_of(self, frames: list[bytes]) -> tuple[str, list] | None:
        # the Python path of a message the compiled scanner did not take
        got = self.subscriber.decode(frames)  # counts and logs a malformed one
        if got is None:
            return None
        return got[0], event_rows(got[1])

    def _open_next(self, next_id: int | None):
        """The writer of the next part (or of the only file); event ids go on from
        ``next_id`` (None: after the file's largest)."""
        if self.rotate:
            path = part_path(self.db_name, self._part)
            self._part += 1
        else:
            path = self.db_name
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            self.created.append(path)
        try:
            writer = _engine.Writer(path, _SETUP, next_id, self._rows_of)
        except _engine.RecordError as exc:
            raise TCSDatabaseError(str(exc)) from None
        writer.begin_session()  # the session starts with its first event (each part too)
        self.files.append(path)
        self._part_started = time.monotonic()
        return writer

    def _part_due(self) -> bool:
        if not self._writer.written:
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
        return self._done_written + self._writer.written

    @property
    def received(self) -> int:
        """Events received (committed or in the batch being written)."""
        return self._done_written + self._writer.added

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

    def _commit(self) -> None:
        """Commit the batch; start the next part when one is due."""
        w = self._writer
        w.commit()
        if self.rotate and self._part_due():
            w.close(INDEX)
            self._done_written += w.written
            self._writer = self._open_next(w.next_id)

    def _take(self, most: int, wait_ms: int) -> int:
        """Receive and write up to ``most`` queued messages, waiting at most
        ``wait_ms`` for a first one; returns the messages taken."""
        if self._raw:
            return _engine.pump(self._writer, self.subscriber.socket, most, wait_ms)
        sock = self.subscriber.socket
        add = self._writer.add_frames
        n = 0
        while n < most:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                if n or wait_ms <= 0 or not sock.poll(wait_ms, zmq.POLLIN):
                    break
                wait_ms = 0
                continue
            add(frames)
            n += 1
        return n

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
        first = self.received
        want = None if count is None else first + count
        last_flush = last_tick = start
        stop = self._stop
        batch = self.batch
        try:
            while not stop.is_set():
                most = batch - self._writer.pending
                if want is not None:
                    most = min(most, want - self.received)
                now = time.monotonic()
                wait = 0.1 if end is None else max(0.0, min(0.1, end - now))
                if self._writer.pending:  # wake up in time to commit them
                    wait = min(wait, max(0.0, last_flush + self.flush_interval - now))
                n = self._take(max(1, most), int(wait * 1000) + 1)
                if self._writer.pending >= batch:
                    self._commit()
                    last_flush = time.monotonic()
                now = time.monotonic()
                if now - last_flush >= self.flush_interval:
                    self._commit()
                    last_flush = now
                if want is not None and self.received >= want:
                    break
                if end is not None and now >= end:
                    break
                if n == 0 or now - last_tick >= 0.1:
                    last_tick = now
                    self._read_monitor()
                    if on_tick is not None:
                        on_tick(self)
            if stop.is_set():
                self._drain(want)
        finally:
            self._commit()
        return self.received - first

    def _drain(self, want: int | None) -> None:
        limit = time.monotonic() + 10.0  # the queue holds at most RCVHWM events
        while time.monotonic() < limit and (want is None or self.received < want):
            most = self.batch - self._writer.pending
            if want is not None:
                most = min(most, want - self.received)
            if self._take(max(1, most), 0) == 0:
                return
            if self._writer.pending >= self.batch:
                self._commit()

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
        """Commit, build the index, close the database and the subscriber."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.close(INDEX)
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
