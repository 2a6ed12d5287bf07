# cython: language_level=3, boundscheck=False, wraparound=False
"""The physical limit of TCS replay, for the benchmark suite: read an event database's
rows with the sqlite3 C API and hand each event on with no conversion at all.

``scan(path, send)`` makes the same two sequential scans as the replay's fast plan
(events by id, attributes in rowid order, merged on event id) and calls
``send([topic, payload])`` once per event, where ``payload`` is the attributes' raw
name and value bytes joined by NUL bytes: no numbers or booleans converted, no JSON, no
timing. Any replay that returns Python objects does at least this much, so
``benchmarks/test_tcs.py`` shows ``TCSDBReplay`` as a fraction of it. Not part of the
documented API.

Imports: the sqlite3 declarations (``_sqlite3.pxd``, no module).
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy

from ctlwire.tcs._sqlite3 cimport (
    sqlite3, sqlite3_stmt, sqlite3_open_v2, sqlite3_close_v2, sqlite3_errmsg,
    sqlite3_prepare_v2, sqlite3_step, sqlite3_finalize, sqlite3_column_int64,
    sqlite3_column_text, sqlite3_column_bytes, sqlite3_exec,
    SQLITE_OK, SQLITE_ROW, SQLITE_OPEN_READONLY, SQLITE_OPEN_NOMUTEX,
)

cdef const char *_EVENTS = b"SELECT event_id, topic FROM event ORDER BY event_id"
cdef const char *_ATTRS = b"SELECT event_id, name, value FROM attribute ORDER BY rowid"


cdef int _append(char **buf, Py_ssize_t *cap, Py_ssize_t *n, const char *s,
                 Py_ssize_t k) except -1:
    cdef char *grown
    if n[0] + k + 1 > cap[0]:
        while n[0] + k + 1 > cap[0]:
            cap[0] *= 2
        grown = <char *>realloc(buf[0], cap[0])
        if grown == NULL:
            raise MemoryError()
        buf[0] = grown
    if k:
        memcpy(buf[0] + n[0], s, k)
    n[0] += k
    buf[0][n[0]] = 0
    n[0] += 1
    return 0


def scan(path, send):
    """Call ``send([topic, payload])`` for every event of the database at ``path``, in
    event id order; return the number of events. See the module docstring."""
    cdef sqlite3 *db = NULL
    cdef sqlite3_stmt *ev = NULL
    cdef sqlite3_stmt *at = NULL
    cdef bytes bpath = str(path).encode()
    cdef long long eid, aid = -1
    cdef int rc_a = SQLITE_ROW
    cdef Py_ssize_t cap = 4096, n, count = 0
    cdef char *buf = <char *>malloc(cap)
    if buf == NULL:
        raise MemoryError()
    try:
        if sqlite3_open_v2(bpath, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                           NULL) != SQLITE_OK:
            raise OSError(f"cannot open {path!r}")
        sqlite3_exec(db, b"PRAGMA mmap_size = 1073741824", NULL, NULL, NULL)
        if (sqlite3_prepare_v2(db, _EVENTS, -1, &ev, NULL) != SQLITE_OK or
                sqlite3_prepare_v2(db, _ATTRS, -1, &at, NULL) != SQLITE_OK):
            raise OSError(sqlite3_errmsg(db).decode("utf-8", "replace"))
        rc_a = sqlite3_step(at)
        if rc_a == SQLITE_ROW:
            aid = sqlite3_column_int64(at, 0)
        while sqlite3_step(ev) == SQLITE_ROW:
            eid = sqlite3_column_int64(ev, 0)
            n = 0
            while rc_a == SQLITE_ROW and aid <= eid:
                if aid == eid:
                    _append(&buf, &cap, &n, <const char *>sqlite3_column_text(at, 1),
                            sqlite3_column_bytes(at, 1))
                    _append(&buf, &cap, &n, <const char *>sqlite3_column_text(at, 2),
                            sqlite3_column_bytes(at, 2))
                rc_a = sqlite3_step(at)
                if rc_a == SQLITE_ROW:
                    aid = sqlite3_column_int64(at, 0)
            send([PyBytes_FromStringAndSize(<const char *>sqlite3_column_text(ev, 1),
                                            sqlite3_column_bytes(ev, 1)),
                  PyBytes_FromStringAndSize(buf, n)])
            count += 1
        return count
    finally:
        free(buf)
        if ev != NULL:
            sqlite3_finalize(ev)
        if at != NULL:
            sqlite3_finalize(at)
        if db != NULL:
            sqlite3_close_v2(db)
