"""Helpers for the TCS tests: small databases built row by row, and a pure-Python
reference of the replay used to check the compiled engine."""
from __future__ import annotations

import math
import sqlite3
from ctlwire._testing.proc import child_env  # noqa: F401  (re-exported to conftest)


SCHEMA = """
CREATE TABLE event (event_id INTEGER PRIMARY KEY, topic TEXT NOT NULL);
CREATE TABLE attribute (
    event_id  INTEGER NOT NULL REFERENCES event(event_id),
    name      TEXT NOT NULL,
    value     TEXT,
    data_type TEXT NOT NULL,
    PRIMARY KEY (event_id, name));
CREATE INDEX attribute_name ON attribute(name, event_id);
"""


def write_db(path, events, schema=SCHEMA):
    """``events``: list of (event_id, topic, [(name, value, data_type), ...])."""
    conn = sqlite3.connect(path)
    conn.executescript(schema)
    with conn:
        for eid, topic, attrs in events:
            conn.execute("INSERT INTO event VALUES (?, ?)", (eid, topic))
            conn.executemany("INSERT INTO attribute VALUES (?, ?, ?, ?)",
                             [(eid, n, v, t) for n, v, t in attrs])
    conn.close()
    return str(path)


def timed_event(eid, topic, t, **extra):
    """An event row with __data_time t and __wire_time t + 0.5."""
    attrs = [("__data_time", repr(t), "number"), ("__wire_time", repr(t + 0.5), "number")]
    attrs += [(k, v, "string") for k, v in extra.items()]
    return (eid, topic, attrs)


# -- pure-Python reference --------------------------------------------------------

def ref_number(value):
    if value is None:
        return None
    try:
        return int(value)
    except (ValueError, TypeError):
        pass
    try:
        f = float(value)
    except (ValueError, TypeError):
        return value
    return f if math.isfinite(f) else value


def ref_bool(value):
    if value == "true":
        return True
    if value == "false":
        return False
    return value


def ref_events(path, convert_number=False, convert_bool=False):
    """Events of the database in event_id order, attributes in insertion order."""
    conn = sqlite3.connect(path)
    out = []
    for eid, topic in conn.execute("SELECT event_id, topic FROM event ORDER BY event_id"):
        event = {}
        for name, value, dtype in conn.execute(
                "SELECT name, value, data_type FROM attribute WHERE event_id = ? "
                "ORDER BY rowid", (eid,)):
            if dtype == "number" and convert_number:
                value = ref_number(value)
            elif dtype == "boolean" and convert_bool:
                value = ref_bool(value)
            event[name] = value
        out.append((topic, event))
    conn.close()
    return out


