# cython: language_level=3
"""C-level API of the TCS replay engine (``ctlwire.tcs._replay``).

Other Cython code can ``cimport`` the engine, e.g. to drive :class:`Replayer` from
a C-level send loop.  The user-facing API is :mod:`ctlwire.tcs.server`.
"""
cimport cython

# the sqlite3 C API, declared without its headers (see _sqlite3.pxd)
from ctlwire.tcs._sqlite3 cimport (
    sqlite3, sqlite3_stmt, sqlite3_open_v2, sqlite3_close_v2, sqlite3_errmsg,
    sqlite3_prepare_v2, sqlite3_step, sqlite3_reset, sqlite3_finalize,
    sqlite3_bind_int64, sqlite3_exec, sqlite3_column_type, sqlite3_column_int64,
    sqlite3_column_text, sqlite3_column_bytes, SQLITE_OK, SQLITE_ROW, SQLITE_DONE,
    SQLITE_NULL, SQLITE_OPEN_READONLY, SQLITE_OPEN_NOMUTEX,
)


cdef enum:
    NBINS = 100000  # lateness histogram: 1 µs bins up to 100 ms, then an overflow bin


@cython.final
cdef class ReplayStats:
    cdef public long long sent
    cdef public long long delivered
    cdef public long long dropped
    cdef public long long filtered
    cdef public long long skipped
    cdef public long long timed
    cdef public double lateness_sum
    cdef public double lateness_max
    cdef long long[NBINS + 1] _bins

    cpdef reset(self)
    cdef void _record(self, double late) noexcept


@cython.final
cdef class Pacer:
    cdef bint adaptive
    cdef double fixed
    cdef double window_
    cdef double resume_at, cooldown, policy_at
    cdef bint realtime
    cdef double spun, lost
    cdef public long long sleeps, spins, suspended
    cdef public double spin_time, spin_lost

    cdef int _wait(self, double deadline, object interrupt) except -1
    cdef void _learn(self, double late) noexcept


@cython.final
cdef class Replayer:
    cdef sqlite3 *_db
    cdef sqlite3_stmt *_stmt     # join plan: every row; merge plan: events
    cdef sqlite3_stmt *_attrs    # merge plan: attribute rows in rowid order
    cdef sqlite3_stmt *_one
    cdef bytes _path
    cdef object _order
    cdef int _sort_by
    cdef public double speedup
    cdef list _prefixes
    cdef bint _conv_num, _conv_bool
    cdef object _encode
    cdef public Pacer pacer
    cdef bint _merge
    cdef bint _has_row, _a_has_row, _done
    cdef bint _started, _have_first
    cdef public double start_mono
    cdef public object start_iter_time
    cdef public object start_wire_time
    cdef double _t_first
    cdef list _name_cache_b
    cdef list _name_cache_s
    cdef dict _topic_bytes
    cdef public ReplayStats stats
    cdef public list errors
    cdef public long long last_event_id
    cdef public long long max_errors

    cdef void _release(self) noexcept
    cdef _fail(self, str what)
    cdef sqlite3_stmt *_prepare(self, const char *sql) except NULL
    cdef bint _attrs_in_event_order(self) except -1
    cdef int _step(self, sqlite3_stmt *stmt) except -1
    cdef bint _accepted(self, const char *topic, Py_ssize_t n) except -1
    cdef object _name(self, Py_ssize_t idx, const char *s, Py_ssize_t n)
    cdef object _value(self, const char *s, Py_ssize_t n, const char *dtype)
    cdef str _add_attr(self, sqlite3_stmt *st, int col, dict event, Py_ssize_t idx,
                       double *times, int *have)
    cdef tuple _header(self, sqlite3_stmt *st)
    cdef tuple _read_event(self, sqlite3_stmt *st, bint single)
    cdef tuple _advance(self)
    cdef int _prepare_one(self, prepare, list ahead, double* cost, bint* fresh) except -2
    cdef object _next(self, bint as_bytes)
