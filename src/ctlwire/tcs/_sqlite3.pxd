# cython: language_level=3
"""The sqlite3 C API functions and constants the TCS engines use (declarations only).

Declared from sqlite's documented, stable interface (https://sqlite.org/c3ref/) so that
building needs no sqlite3 headers; setup.py links the runtime library (libsqlite3.so.0,
the one Python's own sqlite3 module loads). Cimported by the replay (``_replay``), the
recorder (``_record``) and the raw scan (``_rawscan``); there is no module of this name.
"""

cdef extern from *:
    """
    #ifndef CTLWIRE_SQLITE3_DECLARED
    #define CTLWIRE_SQLITE3_DECLARED
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
    const unsigned char *sqlite3_column_text(sqlite3_stmt *stmt, int col);
    int sqlite3_column_bytes(sqlite3_stmt *stmt, int col);
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
    # destructor NULL is SQLITE_STATIC: the text must outlive the statement's next step
    int sqlite3_bind_text(sqlite3_stmt *stmt, int idx, const char *text, int n,
                          void *destructor) nogil
    int sqlite3_exec(sqlite3 *db, const char *sql, void *cb, void *arg,
                     char **errmsg) nogil
    int sqlite3_column_type(sqlite3_stmt *stmt, int col) nogil
    long long sqlite3_column_int64(sqlite3_stmt *stmt, int col) nogil
    const unsigned char *sqlite3_column_text(sqlite3_stmt *stmt, int col) nogil
    int sqlite3_column_bytes(sqlite3_stmt *stmt, int col) nogil
    int sqlite3_get_autocommit(sqlite3 *db) nogil


cdef enum:
    SQLITE_OK = 0
    SQLITE_NULL = 5
    SQLITE_ROW = 100
    SQLITE_DONE = 101
    SQLITE_OPEN_READONLY = 0x00000001
    SQLITE_OPEN_READWRITE = 0x00000002
    SQLITE_OPEN_CREATE = 0x00000004
    SQLITE_OPEN_NOMUTEX = 0x00008000
