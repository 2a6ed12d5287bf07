# cython: language_level=3, boundscheck=False, wraparound=False
"""The recorder's engine room: TCS messages ``[topic, JSON object]`` to database rows,
received straight from libzmq and written with the sqlite3 C API.

The common message, a flat JSON object of ASCII strings, numbers, booleans and nulls,
becomes its ``event`` and ``attribute`` rows with no Python object made: the codec
(``ctlwire.tcs._jsonrows``) scans the JSON in place, and the rows go in through
prepared statements (one multi-row insert per event) inside the batch's transaction.
What the codec declines (nested values, non-ASCII text, unusual escapes, repeated
keys, malformed messages) is handed to ``Writer.fallback(frames)``, the Python path,
which returns ``(topic, rows)`` or None (malformed: counted there).

Imports: the sqlite3 declarations in ``_record.pxd``, the codec ``_jsonrows`` (its
``.pxd``); libzmq's functions are bound at run time from their addresses
(``ctlwire._libzmq``), so no libzmq header is needed.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport uintptr_t
from libc.stdlib cimport free, malloc, realloc
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME

from ctlwire.tcs._jsonrows cimport (Attr, MAX_ATTRS, arena_size, dtype_text, is_ascii,
                                    parse_object)


# -- libzmq, bound at run time (ctlwire._libzmq finds the copy pyzmq loaded) ----------
from ctlwire._zmqfns cimport ZmqFns, bind_fns, zmq_msg_t, zmq_pollitem_t

cdef ZmqFns _z          # libzmq, filled by bind()
cdef bint _bound = False

#: libzmq functions :func:`pump` needs (see :func:`bind`).
ZMQ_FUNCTIONS = ("zmq_msg_init", "zmq_msg_close", "zmq_msg_more", "zmq_msg_recv",
                 "zmq_msg_data", "zmq_msg_size", "zmq_errno", "zmq_poll")

DEF ZMQ_DONTWAIT = 1
DEF ZMQ_POLLIN = 1
DEF EAGAIN = 11
DEF EINTR = 4


def bind(dict addresses):
    """Install libzmq's function addresses (name -> int, :data:`ZMQ_FUNCTIONS`)."""
    global _bound
    bind_fns(&_z, addresses, ZMQ_FUNCTIONS)
    _bound = True


def is_bound():
    """Whether :func:`bind` was called (else use pyzmq and ``Writer.add_frames``)."""
    return _bound


class RecordError(Exception):
    """sqlite or libzmq refused: the message names the call and the database."""


# -- the database -----------------------------------------------------------------------
cdef const char *_EVENT_SQL = b"INSERT INTO event (event_id, topic) VALUES (?1, ?2)"
cdef const char *_SESSION_SQL = \
    b"INSERT INTO ctlwire_session (first_event_id, started) VALUES (?1, ?2)"


cdef class Writer:
    """Events into one TCS database, in transactions the caller commits.

    ``Writer(path, schema, next_id=None)`` opens (creating) ``path``, runs ``schema``
    (SQL: tables, pragmas) and numbers events from ``next_id`` (default: after the
    largest ``event_id``).  ``add_frames``/``add_rows`` add an event to the open
    transaction (begun as needed), ``commit()`` ends it, ``close(index_sql)`` commits,
    builds the deferred index and closes.  ``begin_session()`` makes the next event
    the first of a ``ctlwire_session`` row, written in the same transaction.

    Attributes: ``written`` (committed), ``pending`` (in the open transaction),
    ``added`` (both), ``declined`` (messages the fast path handed to ``fallback``).
    """

    def __cinit__(self):
        self._db = NULL
        self._event = NULL
        self._session = NULL
        for k in range(MULTI_ROWS + 1):
            self._attrs[k] = NULL
        self._arena = NULL
        self._arena_cap = 0

    def __init__(self, path, str schema, next_id=None, fallback=None):
        cdef bytes bpath = str(path).encode("utf-8")
        cdef sqlite3_stmt *st
        self.path = str(path)
        self.fallback = fallback
        if sqlite3_open_v2(bpath, &self._db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                           | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK:
            self._fail("cannot open")
        sqlite3_busy_timeout(self._db, 10000)
        self._exec(schema.encode("utf-8"))
        if next_id is None:
            st = self._prepare(b"SELECT max(event_id) FROM event")
            try:
                if sqlite3_step(st) != SQLITE_ROW:
                    self._fail("cannot read the last event id")
                self.next_id = sqlite3_column_int64(st, 0) + 1  # NULL (empty) reads 0
            finally:
                sqlite3_finalize(st)
        else:
            self.next_id = next_id
        self._event = self._prepare(_EVENT_SQL)
        self._session = self._prepare(_SESSION_SQL)
        self._arena_cap = 65536
        self._arena = <char *>malloc(self._arena_cap)
        if self._arena == NULL:
            raise MemoryError()

    def __dealloc__(self):
        self._release()

    cdef void _release(self) noexcept:
        cdef int k
        for k in range(MULTI_ROWS + 1):
            if self._attrs[k] != NULL:
                sqlite3_finalize(self._attrs[k])
                self._attrs[k] = NULL
        if self._event != NULL:
            sqlite3_finalize(self._event)
            self._event = NULL
        if self._session != NULL:
            sqlite3_finalize(self._session)
            self._session = NULL
        if self._db != NULL:
            sqlite3_close_v2(self._db)
            self._db = NULL
        if self._arena != NULL:
            free(self._arena)
            self._arena = NULL

    cdef int _fail(self, str what) except -1:
        msg = sqlite3_errmsg(self._db).decode("utf-8", "replace") if self._db != NULL \
            else "out of memory"
        raise RecordError(f"TCS recording {self.path!r}: {what}: {msg}")

    cdef int _exec(self, const char *sql) except -1:
        cdef int rc
        with nogil:
            rc = sqlite3_exec(self._db, sql, NULL, NULL, NULL)
        if rc != SQLITE_OK:
            self._fail(f"{sql.decode('utf-8', 'replace')[:60]!r} failed")
        return 0

    cdef sqlite3_stmt *_prepare(self, const char *sql) except NULL:
        cdef sqlite3_stmt *st = NULL
        if sqlite3_prepare_v2(self._db, sql, -1, &st, NULL) != SQLITE_OK or st == NULL:
            self._fail("cannot prepare a statement")
        return st

    cdef sqlite3_stmt *_attr_stmt(self, int k) except NULL:
        # "(?1,?2,?3,?4),(?1,?5,?6,?7),...": k rows of one event, in insertion order
        if self._attrs[k] == NULL:
            rows = ",".join(f"(?1,?{3 * r + 2},?{3 * r + 3},?{3 * r + 4})"
                            for r in range(k))
            sql = ("INSERT INTO attribute (event_id, name, value, data_type) VALUES "
                   + rows).encode()
            self._attrs[k] = self._prepare(sql)
        return self._attrs[k]

    cdef int _step(self, sqlite3_stmt *st) except -1:
        cdef int rc = sqlite3_step(st)
        sqlite3_reset(st)
        if rc != SQLITE_DONE and rc != SQLITE_ROW:
            self._fail("cannot write")
        return rc

    cdef int _begin(self) except -1:
        cdef timespec ts
        if not self._in_txn:
            self._exec(b"BEGIN")
            self._in_txn = True
        if self._session_due:
            clock_gettime(CLOCK_REALTIME, &ts)
            sqlite3_bind_int64(self._session, 1, self.next_id)
            sqlite3_bind_double(self._session, 2, ts.tv_sec + ts.tv_nsec * 1e-9)
            self._step(self._session)
            self._session_due = False
        return 0

    cdef int _insert(self, const char *topic, Py_ssize_t topic_len, Attr *attrs,
                     int n) except -1:
        cdef sqlite3_stmt *st
        cdef int done = 0, k, r, col, dn
        cdef const char *dt
        self._begin()
        sqlite3_bind_int64(self._event, 1, self.next_id)
        sqlite3_bind_text(self._event, 2, topic, <int>topic_len, NULL)
        self._step(self._event)
        while done < n:
            k = n - done
            if k > MULTI_ROWS:
                k = MULTI_ROWS
            st = self._attr_stmt(k)
            sqlite3_bind_int64(st, 1, self.next_id)
            for r in range(k):
                col = 3 * r + 2
                sqlite3_bind_text(st, col, attrs[done + r].name, attrs[done + r].name_len,
                                  NULL)
                if attrs[done + r].value == NULL:
                    sqlite3_bind_null(st, col + 1)
                else:
                    sqlite3_bind_text(st, col + 1, attrs[done + r].value,
                                      attrs[done + r].value_len, NULL)
                dt = dtype_text(attrs[done + r].dtype, &dn)
                sqlite3_bind_text(st, col + 2, dt, dn, NULL)
            self._step(st)
            done += k
        self.next_id += 1
        self.pending += 1
        self.added += 1
        return 0

    cdef int _add_c(self, const char *topic, Py_ssize_t tn, const char *payload,
                    Py_ssize_t pn) except -1:
        """1 when the event was written; 0 when the fast path declines."""
        cdef int count
        cdef Py_ssize_t need = arena_size(pn)
        cdef char *grown
        if not is_ascii(topic, tn):
            return 0
        if need > self._arena_cap:
            grown = <char *>realloc(self._arena, need)
            if grown == NULL:
                raise MemoryError()
            self._arena = grown
            self._arena_cap = need
        count = parse_object(payload, pn, self._arena, self._parsed)
        if count < 0:
            return 0
        self._insert(topic, tn, self._parsed, count)
        return 1

    cdef int _add_py(self, list frames) except -1:
        """The Python path: ``fallback(frames)`` -> ``(topic, rows)`` or None."""
        self.declined += 1
        got = self.fallback(frames) if self.fallback is not None else None
        if got is None:
            return 0
        return self._add_rows(got[0], got[1])

    cdef int _add_rows(self, str topic, list rows) except -1:
        cdef Attr attrs[MULTI_ROWS]
        cdef Py_ssize_t tn, ln
        cdef const char *t = PyUnicode_AsUTF8AndSize(topic, &tn)
        cdef int count = 0
        cdef list dtypes = []
        # the UTF-8 of each str stays alive with it (rows holds them)
        self._begin()
        sqlite3_bind_int64(self._event, 1, self.next_id)
        sqlite3_bind_text(self._event, 2, t, <int>tn, NULL)
        self._step(self._event)
        for name, value, dtype in rows:
            attrs[count].name = PyUnicode_AsUTF8AndSize(name, &ln)
            attrs[count].name_len = <int>ln
            if value is None:
                attrs[count].value = NULL
                attrs[count].value_len = 0
            else:
                attrs[count].value = PyUnicode_AsUTF8AndSize(value, &ln)
                attrs[count].value_len = <int>ln
            dtypes.append(dtype)
            count += 1
            if count == MULTI_ROWS:
                self._rows_py(attrs, count, dtypes)
                count = 0
                dtypes = []
        if count:
            self._rows_py(attrs, count, dtypes)
        self.next_id += 1
        self.pending += 1
        self.added += 1
        return 1

    cdef int _rows_py(self, Attr *attrs, int k, list dtypes) except -1:
        cdef sqlite3_stmt *st = self._attr_stmt(k)
        cdef int r, col
        cdef Py_ssize_t ln
        cdef const char *d
        sqlite3_bind_int64(st, 1, self.next_id)
        for r in range(k):
            col = 3 * r + 2
            sqlite3_bind_text(st, col, attrs[r].name, attrs[r].name_len, NULL)
            if attrs[r].value == NULL:
                sqlite3_bind_null(st, col + 1)
            else:
                sqlite3_bind_text(st, col + 1, attrs[r].value, attrs[r].value_len, NULL)
            d = PyUnicode_AsUTF8AndSize(dtypes[r], &ln)
            sqlite3_bind_text(st, col + 2, d, <int>ln, NULL)
        self._step(st)
        return 0

    def add_frames(self, list frames):
        """Add one received message (a list of bytes frames); True when it became an
        event, False when it was malformed (counted by ``fallback``)."""
        cdef bytes topic, payload
        if len(frames) == 2 and type(frames[0]) is bytes and type(frames[1]) is bytes:
            topic = frames[0]
            payload = frames[1]
            if self._add_c(PyBytes_AS_STRING(topic), PyBytes_GET_SIZE(topic),
                           PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload)):
                return True
        return bool(self._add_py(frames))

    def add_rows(self, str topic, list rows):
        """Add an event from its rows ``[(name, value or None, data_type), ...]``;
        returns its event id."""
        self._add_rows(topic, rows)
        return self.next_id - 1

    def begin_session(self):
        """Make the next event added the first of a new ``ctlwire_session`` row."""
        self._session_due = True

    def commit(self):
        """Commit the open transaction (if any): ``pending`` events become ``written``."""
        if self._in_txn:
            self._exec(b"COMMIT")
            self._in_txn = False
        self.written += self.pending
        self.pending = 0

    def execute(self, str sql):
        """Run SQL statements outside the batch (committing the open batch first)."""
        self.commit()
        self._exec(sql.encode("utf-8"))

    def close(self, index_sql=None):
        """Commit, build the deferred index (``index_sql``) and close the database."""
        if self._db == NULL:
            return
        try:
            self.commit()
            if index_sql:
                self._exec(index_sql.encode("utf-8"))
        finally:
            self._release()

    @property
    def closed(self):
        return self._db == NULL


def pump(Writer w, sock, long long max_messages, int timeout_ms):
    """Receive up to ``max_messages`` messages from the pyzmq socket ``sock`` into ``w``.

    Reads what is queued without waiting; when nothing is, waits at most
    ``timeout_ms`` once (the GIL released) for a first message.  Returns the number of
    messages taken (events and malformed ones; ``w.added`` counts events).  Needs
    :func:`bind`.
    """
    cdef void *h = <void *><uintptr_t>sock.underlying
    cdef zmq_msg_t m1, m2
    cdef zmq_pollitem_t item
    cdef long long n = 0
    cdef int rc, err, prc, ok
    cdef list frames
    if not _bound:
        raise RuntimeError("libzmq functions not bound (see ctlwire.tcs.record)")
    item.socket = h
    item.fd = 0
    item.events = ZMQ_POLLIN
    item.revents = 0
    while n < max_messages:
        _z.msg_init(&m1)
        rc = _z.msg_recv(&m1, h, ZMQ_DONTWAIT)
        if rc < 0:
            err = _z.zmq_errno()
            _z.msg_close(&m1)
            if err == EAGAIN:
                if n > 0 or timeout_ms <= 0:
                    break
                with nogil:
                    prc = _z.poll(&item, 1, timeout_ms)
                timeout_ms = 0  # wait once
                if prc <= 0:
                    break
                continue
            if err == EINTR:
                break  # a signal: let Python run its handler
            raise RecordError(f"zmq_msg_recv failed (libzmq errno {err})")
        n += 1
        if not _z.msg_more(&m1):
            frames = [PyBytes_FromStringAndSize(<char *>_z.msg_data(&m1), _z.msg_size(&m1))]
            _z.msg_close(&m1)
            w._add_py(frames)
            continue
        _z.msg_init(&m2)
        if _z.msg_recv(&m2, h, 0) < 0:  # the rest of a message arrives with its first frame
            err = _z.zmq_errno()
            _z.msg_close(&m2)
            _z.msg_close(&m1)
            raise RecordError(f"zmq_msg_recv failed (libzmq errno {err})")
        if not _z.msg_more(&m2):
            try:
                ok = w._add_c(<char *>_z.msg_data(&m1), _z.msg_size(&m1),
                              <char *>_z.msg_data(&m2), _z.msg_size(&m2))
                if not ok:
                    frames = [PyBytes_FromStringAndSize(<char *>_z.msg_data(&m1), _z.msg_size(&m1)),
                              PyBytes_FromStringAndSize(<char *>_z.msg_data(&m2), _z.msg_size(&m2))]
            finally:
                _z.msg_close(&m2)
                _z.msg_close(&m1)
            if not ok:
                w._add_py(frames)
        else:
            frames = [PyBytes_FromStringAndSize(<char *>_z.msg_data(&m1), _z.msg_size(&m1)),
                      PyBytes_FromStringAndSize(<char *>_z.msg_data(&m2), _z.msg_size(&m2))]
            _z.msg_close(&m1)
            while _z.msg_more(&m2):
                _z.msg_close(&m2)
                _z.msg_init(&m2)
                if _z.msg_recv(&m2, h, 0) < 0:
                    err = _z.zmq_errno()
                    _z.msg_close(&m2)
                    raise RecordError(f"zmq_msg_recv failed (libzmq errno {err})")
                frames.append(PyBytes_FromStringAndSize(<char *>_z.msg_data(&m2),
                                                        _z.msg_size(&m2)))
            _z.msg_close(&m2)
            w._add_py(frames)
        if n % 256 == 0:
            with nogil:  # let other threads of the process run now and then
                pass
    return n
