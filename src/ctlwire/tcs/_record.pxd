# cython: language_level=3
"""C-level API of the recorder's engine (``ctlwire.tcs._record``).

The sqlite3 C API functions that writing needs, declared from sqlite's documented,
stable interface (https://sqlite.org/c3ref/) so that building needs no sqlite3 headers
(setup.py links the runtime library, as for the replay), and the writer.  The user-facing API is :mod:`ctlwire.tcs.record`.
"""
cimport cython

from ctlwire.tcs._jsonrows cimport Attr, MAX_ATTRS

cdef extern from *:
    """
    #ifndef CTLWIRE_SQLITE3_WRITE_DECLARED
    #define CTLWIRE_SQLITE3_WRITE_DECLARED
    typedef struct sqlite3 sqlite3;
    typedef struct sqlite3_stmt sqlite3_stmt;
    int sqlite3_open_v2(const char *filename, sqlite3 **db, int flags, const char *vfs);
    int sqlite3_close_v2(sqlite3 *db);
    const char *sqlite3_errmsg(sqlite3 *db);
    int sqlite3_busy_timeout(sqlite3 *db, int ms);
    int sqlite3_prepare_v2(sqlite3 *db, const char *sql, int nbyte, sqlite3_stmt **stmt,
                           const char **tail);
    int sqlite3_step(sqlite3_stmt *stmt);
    int sqlite3_reset(sqlite3_stmt *stmt);
    int sqlite3_finalize(sqlite3_stmt *stmt);
    int sqlite3_bind_int64(sqlite3_stmt *stmt, int idx, long long value);
    int sqlite3_bind_double(sqlite3_stmt *stmt, int idx, double value);
    int sqlite3_bind_null(sqlite3_stmt *stmt, int idx);
    int sqlite3_bind_text(sqlite3_stmt *stmt, int idx, const char *text, int n,
                          void (*destructor)(void *));
    int sqlite3_exec(sqlite3 *db, const char *sql,
                     int (*callback)(void *, int, char **, char **), void *arg,
                     char **errmsg);
    int sqlite3_column_type(sqlite3_stmt *stmt, int col);
    long long sqlite3_column_int64(sqlite3_stmt *stmt, int col);
    int sqlite3_get_autocommit(sqlite3 *db);
    #endif
    """
    ctypedef struct sqlite3
    ctypedef struct sqlite3_stmt
    int sqlite3_open_v2(const char *filename, sqlite3 **db, int flags,
                        const char *vfs) nogil
    int sqlite3_close_v2(sqlite3 *db) nogil
    const char *sqlite3_errmsg(sqlite3 *db) nogil
    int sqlite3_busy_timeout(sqlite3 *db, int ms) nogil
    int sqlite3_prepare_v2(sqlite3 *db, const char *sql, int nbyte, sqlite3_stmt **stmt,
                           const char **tail) nogil
    int sqlite3_step(sqlite3_stmt *stmt) nogil
    int sqlite3_reset(sqlite3_stmt *stmt) nogil
    int sqlite3_finalize(sqlite3_stmt *stmt) nogil
    int sqlite3_bind_int64(sqlite3_stmt *stmt, int idx, long long value) nogil
    int sqlite3_bind_double(sqlite3_stmt *stmt, int idx, double value) nogil
    int sqlite3_bind_null(sqlite3_stmt *stmt, int idx) nogil
    # destructor NULL is SQLITE_STATIC: the text outlives the statement's next step
    int sqlite3_bind_text(sqlite3_stmt *stmt, int idx, const char *text, int n,
                          void *destructor) nogil
    int sqlite3_exec(sqlite3 *db, const char *sql, void *cb, void *arg,
                     char **errmsg) nogil
    int sqlite3_column_type(sqlite3_stmt *stmt, int col) nogil
    long long sqlite3_column_int64(sqlite3_stmt *stmt, int col) nogil
    int sqlite3_get_autocommit(sqlite3 *db) nogil


cdef enum:
    SQLITE_OK = 0
    SQLITE_ROW = 100
    SQLITE_DONE = 101
    SQLITE_NULL = 5
    SQLITE_OPEN_READWRITE = 0x00000002
    SQLITE_OPEN_CREATE = 0x00000004
    SQLITE_OPEN_NOMUTEX = 0x00008000
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
