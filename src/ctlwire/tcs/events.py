"""TCS events and the event database: schema, checks, writing, mock events, and the
two-frame message codec.

No sockets here; imports only the standard library and ``ctlwire._json`` (no compiled
extension), so every layer above may use it.  A TCS event is a topic
``system.source.key`` plus a JSON object carrying ``__system``, ``__source``,
``__key``, ``__data``, ``__data_time`` and ``__wire_time``; the database keeps one
``event`` row per event and one ``attribute`` row per key of its object.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .. import _json

__all__ = [
    "SCHEMA", "TCSDatabaseError", "open_database", "check_schema", "create_database",
    "EventWriter", "data_type_of", "mock_event", "MOCK_TOPIC", "make_event",
    "generate_database", "decode_message", "INDEX", "event_rows",
]

#: The database schema (see ``docs/tcs-ocd.md``).
SCHEMA = """
CREATE TABLE IF NOT EXISTS event (event_id INTEGER PRIMARY KEY, topic TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attribute (
    event_id  INTEGER NOT NULL REFERENCES event(event_id),
    name      TEXT NOT NULL,
    value     TEXT,
    data_type TEXT NOT NULL,
    PRIMARY KEY (event_id, name));
CREATE INDEX IF NOT EXISTS attribute_name ON attribute(name, event_id);
"""

#: The secondary index of the schema, on its own: a recorder builds it once at the end
#: (one sorted build) rather than row by row, which triples the cost of an insert.
INDEX = "CREATE INDEX IF NOT EXISTS attribute_name ON attribute(name, event_id)"

#: Tables and the columns each must have.
REQUIRED = {
    "event": ("event_id", "topic"),
    "attribute": ("event_id", "name", "value", "data_type"),
}

#: Topic of :func:`mock_event`.
MOCK_TOPIC = "lrs2.hardware.status"


class TCSDatabaseError(ValueError):
    """A TCS database is missing, not sqlite, or not of the expected shape."""


def check_schema(conn: sqlite3.Connection, where: str = "database") -> None:
    """Raise :class:`TCSDatabaseError` naming the first missing table or column."""
    try:
        tables = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    except sqlite3.DatabaseError as exc:
        raise TCSDatabaseError(f"{where} is not a readable sqlite database: {exc}") from None
    for table, columns in REQUIRED.items():
        if table not in tables:
            raise TCSDatabaseError(
                f"{where} is not a TCS event database: table {table!r} is missing "
                f"(found tables: {', '.join(sorted(tables)) or 'none'})")
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        for col in columns:
            if col not in have:
                raise TCSDatabaseError(
                    f"{where} is not a TCS event database: table {table!r} has no "
                    f"column {col!r} (columns: {', '.join(sorted(have))})")


def open_database(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open an existing TCS database read-only, checking that it has the right shape.

    Raises
    ------
    TCSDatabaseError
        When the file is missing, is not a sqlite database, or lacks a table/column.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise TCSDatabaseError(f"TCS database {path!r} does not exist")
    if os.path.isdir(path):
        raise TCSDatabaseError(f"TCS database {path!r} is a directory, not a file")
    with open(path, "rb") as fh:
        head = fh.read(16)
    # an empty file would be silently treated as an empty database by sqlite
    if head != b"SQLite format 3\x00":
        raise TCSDatabaseError(f"TCS database {path!r} is not a sqlite3 file "
                               f"(header {head[:16]!r})")
    uri = "file:" + _quote_uri(os.path.abspath(path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise TCSDatabaseError(f"cannot open TCS database {path!r}: {exc}") from None
    try:
        check_schema(conn, f"TCS database {path!r}")
    except BaseException:
        conn.close()
        raise
    return conn


def _quote_uri(path: str) -> str:
    from urllib.parse import quote
    return quote(path, safe="/")


def create_database(path: str | os.PathLike[str], *,
                    check_same_thread: bool = True,
                    defer_index: bool = False) -> sqlite3.Connection:
    """Create (or open) a database at ``path`` with the TCS schema and return it.

    ``check_same_thread=False`` lets another thread use the connection (one at a time).
    ``defer_index=True`` leaves out the ``attribute_name`` index of a new database
    (build it with :data:`INDEX` when done writing; an existing one is kept).
    """
    conn = sqlite3.connect(os.fspath(path), check_same_thread=check_same_thread)
    if defer_index:
        conn.executescript(SCHEMA.replace(INDEX + ";", ""))
    else:
        conn.executescript(SCHEMA)
    check_schema(conn, f"TCS database {os.fspath(path)!r}")
    return conn


def data_type_of(value: Any) -> str:
    """The ``data_type`` column for a JSON value: number, boolean, string or json."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if value is None or isinstance(value, str):
        return "string"
    return "json"


def _to_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    # nested objects/lists are stored as their JSON text
    return json.dumps(value, separators=(",", ":"))


def event_rows(event: Mapping[str, Any]) -> list[tuple[str, str | None, str]]:
    """The ``attribute`` rows ``(name, value, data_type)`` of an event, in its order.

    Numbers as ``str``/``repr`` of the value (``'number'``), booleans as
    ``"true"``/``"false"`` (``'boolean'``), text and null as ``'string'``, anything else
    as its compact JSON text (``'json'``).  The reference of the recorder's compiled
    conversion (``ctlwire.tcs._record``).
    """
    rows = []
    append = rows.append
    for name, value in event.items():
        # the common JSON types inline: a call per attribute is a good share of what
        # the Python path spends per event
        tv = type(value)
        if type(name) is not str:
            name = str(name)
        if tv is str:
            append((name, value, "string"))
        elif tv is float:
            append((name, repr(value), "number"))
        elif tv is int:
            append((name, str(value), "number"))
        elif tv is bool:
            append((name, "true" if value else "false", "boolean"))
        else:
            append((name, _to_text(value), data_type_of(value)))
    return rows


class EventWriter:
    """Append events to a TCS database, in batches inside transactions.

    Parameters
    ----------
    conn : sqlite3.Connection
        A database with the TCS schema (see :func:`create_database`).
    batch : int
        Events per transaction.
    """

    __slots__ = ("conn", "batch", "_events", "_attrs", "_next_id", "written", "index_at_close")

    def __init__(self, conn: sqlite3.Connection, batch: int = 1000, *,
                 index_at_close: bool = False) -> None:
        self.conn = conn
        self.batch = batch
        self.index_at_close = index_at_close
        self._events: list[tuple[int, str]] = []
        self._attrs: list[tuple[int, str, str | None, str]] = []
        row = conn.execute("SELECT max(event_id) FROM event").fetchone()
        self._next_id = (row[0] or 0) + 1
        self.written = 0

    def add(self, topic: str, event: Mapping[str, Any]) -> int:
        """Queue one event; returns its event_id."""
        eid = self._next_id
        self._next_id += 1
        self._events.append((eid, topic))
        self._attrs.extend([(eid, name, value, dtype)
                            for name, value, dtype in event_rows(event)])
        if self.batch and len(self._events) >= self.batch:
            self.flush()
        return eid

    def flush(self) -> None:
        """Write the queued events in one transaction."""
        if self._events:
            self.write(self.take())

    def take(self) -> tuple[list, list]:
        """Hand over the queued rows ``(events, attributes)`` (for :meth:`write`,
        possibly in another thread) and start a new batch."""
        batch = (self._events, self._attrs)
        self._events = []
        self._attrs = []
        return batch

    def write(self, batch: tuple[list, list]) -> None:
        """Write rows taken with :meth:`take` in one transaction."""
        events, attrs = batch
        if not events:
            return
        with self.conn:
            self.conn.executemany("INSERT INTO event VALUES (?, ?)", events)
            self.conn.executemany("INSERT INTO attribute VALUES (?, ?, ?, ?)", attrs)
        self.written += len(events)

    @property
    def pending(self) -> int:
        """Events queued for the next batch."""
        return len(self._events)

    def close(self) -> None:
        """Flush (and build a deferred index) and close the connection."""
        try:
            self.flush()
            if self.index_at_close:
                with self.conn:
                    self.conn.execute(INDEX)
        finally:
            self.conn.close()


def decode_message(frames: list[bytes]) -> tuple[str, dict[str, Any]]:
    """Read a TCS message ``[topic, json object]`` (two frames) as ``(topic, event)``.

    Raises
    ------
    ValueError
        Saying what is wrong: frame count, topic not UTF-8, payload not a JSON object.
    """
    if len(frames) != 2:
        raise ValueError(f"expected 2 frames [topic, json], got {len(frames)}")
    try:
        topic = bytes(frames[0]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"topic is not valid UTF-8 ({exc.reason} at byte {exc.start})") \
            from None
    try:
        event = _json.loads(frames[1])
    except _json.DecodeError as exc:
        raise ValueError(f"payload is not valid JSON: {exc}") from None
    if not isinstance(event, dict):
        raise ValueError(f"payload is a JSON {type(event).__name__}, not an object")
    return topic, event


def make_event(system: str, source: str, key: str, data: Any = None, *,
               data_time: float | None = None, wire_time: float | None = None,
               **extra: Any) -> tuple[str, dict[str, Any]]:
    """Build ``(topic, event)`` with the standard TCS keys."""
    now = time.time()
    event: dict[str, Any] = {
        "__system": system, "__source": source, "__key": key, "__data": data,
        "__data_time": now if data_time is None else data_time,
        "__wire_time": now if wire_time is None else wire_time,
    }
    event.update(extra)
    return f"{system}.{source}.{key}", event


def mock_event(now: float | None = None) -> tuple[str, dict[str, Any]]:
    """The mock ``lrs2.hardware.status`` event sent by :class:`TCSMockEvent`."""
    return make_event("lrs2", "hardware", "status", "ok", data_time=now, wire_time=now,
                      temperature=-10.5, shutter_open=False)


def generate_database(path: str | os.PathLike[str], n_events: int, *,
                      rate: float = 1000.0, start: float = 1.7e9, seed: int = 1,
                      topics: Iterable[str] | None = None) -> str:
    """Write a synthetic TCS database of ``n_events`` events, about 8 attributes each.

    Events are ``rate`` per second apart in ``__data_time`` (``__wire_time`` a
    millisecond later).  Used by the demo, the tests and the benchmark.
    """
    import random
    rnd = random.Random(seed)
    topic_list = list(topics or ["tcs.tracker.position", "tcs.weather.wind",
                                 "lrs2.hardware.status", "pfip.shutter.state"])
    conn = create_database(path, defer_index=True)
    writer = EventWriter(conn, batch=5000, index_at_close=True)
    step = 1.0 / rate
    for i in range(n_events):
        t = start + i * step
        topic = topic_list[i % len(topic_list)]
        system, source, key = (topic.split(".") + ["", "", ""])[:3]
        writer.add(topic, {
            "__system": system, "__source": source, "__key": key,
            "__data_time": t, "__wire_time": round(t + 0.001, 6),
            "__data": rnd.randint(-1000, 100000),
            "enabled": rnd.random() < 0.5,
            "position": round(rnd.uniform(-90.0, 90.0), 6),
        })
    writer.close()
    return os.fspath(path)
