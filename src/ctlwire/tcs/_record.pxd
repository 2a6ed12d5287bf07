# cython: language_level=3
"""C-level API of the recorder's engine (``ctlwire.tcs._record``).

The writer, on the sqlite3 C API declared in ``_sqlite3.pxd`` (no headers needed).
The user-facing API is :mod:`ctlwire.tcs.record`.
"""
cimport cython

from ctlwire.tcs._jsonrows cimport Attr, MAX_ATTRS
from ctlwire.tcs._sqlite3 cimport (
    sqlite3, sqlite3_stmt, sqlite3_open_v2, sqlite3_close_v2, sqlite3_errmsg,
    sqlite3_busy_timeout, sqlite3_prepare_v2, sqlite3_step, sqlite3_reset,
    sqlite3_finalize, sqlite3_bind_int64, sqlite3_bind_double, sqlite3_bind_null,
    sqlite3_bind_text, sqlite3_exec, sqlite3_column_type, sqlite3_column_int64,
    sqlite3_get_autocommit, SQLITE_OK, SQLITE_ROW, SQLITE_DONE, SQLITE_NULL,
    SQLITE_OPEN_READWRITE, SQLITE_OPEN_CREATE, SQLITE_OPEN_NOMUTEX,
)


cdef enum:
    MULTI_ROWS = 16     # attribute rows per INSERT statement at most


@cython.final
cdef class Writer:
    cdef sqlite3 *_db
    cdef sqlite3_stmt *_event
    cdef sqlite3_stmt *_session
    cdef sqlite3_stmt *_attrs[MULTI_ROWS + 1]
    cdef bint _in_txn
    cdef bint _session_due
    cdef char *_arena
    cdef Py_ssize_t _arena_cap
    cdef Attr _parsed[MAX_ATTRS]
    cdef readonly str path
    cdef readonly long long next_id
    cdef readonly long long written
    cdef readonly long long pending
    cdef readonly long long added
    cdef readonly long long declined
    cdef public object fallback

    cdef int _exec(self, const char *sql) except -1
    cdef int _fail(self, str what) except -1
    cdef sqlite3_stmt *_prepare(self, const char *sql) except NULL
    cdef sqlite3_stmt *_attr_stmt(self, int k) except NULL
    cdef int _begin(self) except -1
    cdef int _step(self, sqlite3_stmt *st) except -1
    cdef int _insert(self, const char *topic, Py_ssize_t topic_len, Attr *attrs,
                     int n) except -1
    cdef int _add_c(self, const char *topic, Py_ssize_t tn, const char *payload,
                    Py_ssize_t pn) except -1
    cdef int _add_py(self, list frames) except -1
    cdef int _add_rows(self, str topic, list rows) except -1
    cdef int _rows_py(self, Attr *attrs, int k, list dtypes) except -1
    cdef void _release(self) noexcept
