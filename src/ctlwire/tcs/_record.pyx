# cython: language_level=3, boundscheck=False, wraparound=False
"""The recorder's engine room: TCS messages ``[topic, JSON object]`` to database rows,
received straight from libzmq and written with the sqlite3 C API.

The common message, a flat JSON object of ASCII strings, numbers, booleans and nulls,
becomes its ``event`` and ``attribute`` rows with no Python object made: the JSON is
scanned in place, numbers get the text ``str``/``repr`` of the decoded value would give
(the reference, :func:`ctlwire.tcs.events.event_rows`), and the rows go in through
prepared statements (one multi-row insert per event) inside the batch's transaction.
Anything else (nested values, non-ASCII text, escapes beyond the simple ones,
duplicate keys, malformed messages) is handed to ``Writer.fallback(frames)``, the
Python path, which returns ``(topic, rows)`` or None (malformed: counted there).

``parse(payload)`` exposes the scanner for the property tests (compiled vs reference).

Imports: the sqlite3 declarations in ``_record.pxd``; libzmq's functions are bound at
run time from their addresses (``ctlwire._libzmq``), so no libzmq header is needed.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport uintptr_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy
from libc.math cimport isinf
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME

cdef extern from "Python.h":
    char *PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int *ptype) except NULL
    void PyMem_Free(void *p)
    double PyOS_string_to_double(const char *s, char **endptr, void *overflow) except? -1.0
    int Py_DTSF_ADD_DOT_0


# -- libzmq, bound at run time (ctlwire._libzmq finds the copy pyzmq loaded) ----------
ctypedef struct zmq_msg_t:
    long long _d[8]   # opaque 64-byte, 8-aligned block in every libzmq 4.x

ctypedef struct zmq_pollitem_t:
    void *socket
    int fd
    short events
    short revents

ctypedef int (*f_msg)(zmq_msg_t *) noexcept nogil
ctypedef int (*f_msg_io)(zmq_msg_t *, void *, int) noexcept nogil
ctypedef void *(*f_msg_data)(zmq_msg_t *) noexcept nogil
ctypedef size_t (*f_msg_size)(zmq_msg_t *) noexcept nogil
ctypedef int (*f_errno)() noexcept nogil
ctypedef int (*f_poll)(zmq_pollitem_t *, int, long) noexcept nogil

cdef f_msg _msg_init = NULL
cdef f_msg _msg_close = NULL
cdef f_msg _msg_more = NULL
cdef f_msg_io _msg_recv = NULL
cdef f_msg_data _msg_data = NULL
cdef f_msg_size _msg_size = NULL
cdef f_errno _errno = NULL
cdef f_poll _poll = NULL
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
    global _msg_init, _msg_close, _msg_more, _msg_recv, _msg_data, _msg_size, _errno
    global _poll, _bound
    _msg_init = <f_msg><uintptr_t>addresses["zmq_msg_init"]
    _msg_close = <f_msg><uintptr_t>addresses["zmq_msg_close"]
    _msg_more = <f_msg><uintptr_t>addresses["zmq_msg_more"]
    _msg_recv = <f_msg_io><uintptr_t>addresses["zmq_msg_recv"]
    _msg_data = <f_msg_data><uintptr_t>addresses["zmq_msg_data"]
    _msg_size = <f_msg_size><uintptr_t>addresses["zmq_msg_size"]
    _errno = <f_errno><uintptr_t>addresses["zmq_errno"]
    _poll = <f_poll><uintptr_t>addresses["zmq_poll"]
    _bound = True


def is_bound():
    """Whether :func:`bind` was called (else use pyzmq and ``Writer.add_frames``)."""
    return _bound


class RecordError(Exception):
    """sqlite or libzmq refused: the message names the call and the database."""


# -- the JSON scanner -------------------------------------------------------------------
cdef const char *_DT_TEXT[3]
_DT_TEXT[0] = b"string"
_DT_TEXT[1] = b"number"
_DT_TEXT[2] = b"boolean"
cdef int _DT_LEN[3]
_DT_LEN[:] = [6, 6, 7]

cdef enum:
    DECLINE = 1   # not for the fast path: the Python path decides (maybe malformed)


cdef inline Py_ssize_t _ws(const char *p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    while i < n and (p[i] == 32 or p[i] == 10 or p[i] == 13 or p[i] == 9):
        i += 1
    return i


cdef inline int _hex(char c) noexcept nogil:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


cdef Py_ssize_t _string(const char *p, Py_ssize_t i, Py_ssize_t n, char **arena,
                        const char **out, int *out_len) noexcept nogil:
    """String starting after its opening quote at ``i``: its text in ``out`` (in place,
    or unescaped into the arena); returns the index after the closing quote, or -1 to
    decline (non-ASCII, control character, unusual escape, unterminated)."""
    cdef Py_ssize_t j = i
    cdef unsigned char c
    cdef char *w
    cdef int k, h, cp
    while j < n:
        c = <unsigned char>p[j]
        if c == 34:  # '"'
            out[0] = p + i
            out_len[0] = <int>(j - i)
            return j + 1
        if c == 92 or c < 32 or c >= 128:
            break
        j += 1
    if j >= n or <unsigned char>p[j] != 92:
        return -1
    # escapes: copy into the arena
    w = arena[0]
    out[0] = w
    memcpy(w, p + i, j - i)
    w += j - i
    while j < n:
        c = <unsigned char>p[j]
        if c == 34:
            out_len[0] = <int>(w - out[0])
            arena[0] = w
            return j + 1
        if c < 32 or c >= 128:
            return -1
        if c != 92:
            w[0] = <char>c
            w += 1
            j += 1
            continue
        if j + 1 >= n:
            return -1
        c = <unsigned char>p[j + 1]
        j += 2
        if c == 34 or c == 92 or c == 47:
            w[0] = <char>c
        elif c == 110:
            w[0] = 10
        elif c == 116:
            w[0] = 9
        elif c == 114:
            w[0] = 13
        elif c == 98:
            w[0] = 8
        elif c == 102:
            w[0] = 12
        elif c == 117:  # \uXXXX: ASCII and the BMP outside surrogates
            if j + 4 > n:
                return -1
            cp = 0
            for k in range(4):
                h = _hex(p[j + k])
                if h < 0:
                    return -1
                cp = cp * 16 + h
            j += 4
            if cp < 0x80:
                w[0] = <char>cp
            elif cp < 0x800:
                w[0] = <char>(0xC0 | (cp >> 6))
                w[1] = <char>(0x80 | (cp & 0x3F))
                w += 1
            elif 0xD800 <= cp <= 0xDFFF:
                return -1
            else:
                w[0] = <char>(0xE0 | (cp >> 12))
                w[1] = <char>(0x80 | ((cp >> 6) & 0x3F))
                w[2] = <char>(0x80 | (cp & 0x3F))
                w += 2
        else:
            return -1
        w += 1
    return -1


cdef Py_ssize_t _number(const char *p, Py_ssize_t i, Py_ssize_t n, char **arena,
                        const char **out, int *out_len) except -2:
    """A JSON number at ``i`` as the text ``str(int)`` or ``repr(float)`` of its decoded
    value; returns the index after it, or -1 to decline."""
    cdef Py_ssize_t start = i, int_start, j
    cdef bint neg = False, is_float = False
    cdef char digits[20]
    cdef int nd = 0, lead = 1, decpt = 0, e = 0, esign = 1, edigits = 0, k
    cdef char *w
    cdef char *s
    cdef double x
    if i < n and p[i] == 45:  # '-'
        neg = True
        i += 1
    if i >= n or not (48 <= p[i] <= 57):
        return -1
    int_start = i
    if p[i] == 48:
        i += 1
        if i < n and 48 <= p[i] <= 57:
            return -1  # leading zero: not JSON
    else:
        while i < n and 48 <= p[i] <= 57:
            i += 1
    # significant digits and the decimal point's place (value = 0.DIGITS x 10^decpt)
    for j in range(int_start, i):
        if lead and p[j] == 48:
            continue
        lead = 0
        if nd < 18:
            digits[nd] = p[j]
        nd += 1
        decpt += 1
    if i < n and p[i] == 46:  # '.'
        is_float = True
        i += 1
        if i >= n or not (48 <= p[i] <= 57):
            return -1
        while i < n and 48 <= p[i] <= 57:
            if lead and p[i] == 48:
                decpt -= 1
            else:
                lead = 0
                if nd < 18:
                    digits[nd] = p[i]
                nd += 1
            i += 1
    if i < n and (p[i] == 101 or p[i] == 69):  # e E
        is_float = True
        i += 1
        if i < n and (p[i] == 43 or p[i] == 45):
            if p[i] == 45:
                esign = -1
            i += 1
        if i >= n or not (48 <= p[i] <= 57):
            return -1
        while i < n and 48 <= p[i] <= 57:
            edigits += 1
            if edigits > 5:
                return -1
            e = e * 10 + (p[i] - 48)
            i += 1
    if not is_float:
        # an int: str() of it is its text, but for "-0"
        if i - start == 2 and neg and p[int_start] == 48:
            out[0] = p + int_start
            out_len[0] = 1
        else:
            out[0] = p + start
            out_len[0] = <int>(i - start)
        return i
    w = arena[0]
    out[0] = w
    if nd == 0:  # zero
        if neg:
            memcpy(w, b"-0.0", 4)
            out_len[0] = 4
        else:
            memcpy(w, b"0.0", 3)
            out_len[0] = 3
        arena[0] = w + out_len[0]
        return i
    while nd > 0 and nd <= 18 and digits[nd - 1] == 48:
        nd -= 1  # trailing zeros are not significant
    decpt += esign * e
    if nd <= 15 and -290 < decpt < 300:
        # at most 15 significant digits: they are repr's digits (DBL_DIG), no rounding
        w += _format_repr(w, neg, digits, nd, decpt)
    else:
        # 16 and more: the decoded value's repr, as Python makes it
        memcpy(w, p + start, i - start)
        w[i - start] = 0
        x = PyOS_string_to_double(w, NULL, NULL)  # locale-independent, as Python's
        if isinf(x):
            return -1  # out of range: the Python path reports it
        if nd <= 17 and _shortest_nearest(x, digits, nd, decpt - nd):
            # what publishers send (a shortest repr): the digits as they came
            w += _format_repr(w, neg, digits, nd, decpt)
        else:
            s = PyOS_double_to_string(x, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
            k = 0
            while s[k]:
                w[k] = s[k]
                k += 1
            PyMem_Free(s)
            w += k
    out_len[0] = <int>(w - out[0])
    arena[0] = w
    return i


cdef extern from *:
    """
    typedef unsigned __int128 ctlwire_u128;
    """
    # Cython only needs to know it is an unsigned integer; C does the 128-bit arithmetic
    ctypedef unsigned long long u128 "ctlwire_u128"

ctypedef unsigned long long u64

cdef u64 _POW10[20]
_POW10[0] = 1
for _k in range(1, 20):
    _POW10[_k] = _POW10[_k - 1] * 10


cdef bint _shortest_nearest(double x, const char *digits, int nd, int k) noexcept nogil:
    """True when ``repr(x)`` has exactly these ``nd`` digits, ``x`` being the double
    nearest ``DIGITS x 10**k``: they are the nearest ``nd``-digit decimal to ``x``, and no
    decimal of fewer digits rounds to ``x``.  Exact integer arithmetic (128 bits) for
    ``|x| < 2**53`` and ``-19 <= k <= 0``; False (ask ``repr``) anywhere else, at a tie,
    or on a rounding interval's edge."""
    cdef u64 bits, m, D = 0
    cdef int be, e, i
    cdef u128 X, Dv, H, T, U, diff, lo, hi, c
    memcpy(&bits, &x, 8)
    be = <int>((bits >> 52) & 0x7FF)
    m = bits & ((<u64>1 << 52) - 1)
    if be == 0 or be == 0x7FF or m == 0:
        return False  # zero, subnormal, inf, or a power of two (lopsided interval)
    m |= <u64>1 << 52
    e = be - 1075  # |x| = m * 2**e
    if e > 0 or e < -64 or k > 0 or k < -19:
        return False
    for i in range(nd):
        D = D * 10 + <u64>(digits[i] - 48)
    # everything times 2**(1-e) * 10**-k, so that all are integers
    X = <u128>m * 2 * _POW10[-k]       # x
    Dv = <u128>D << (1 - e)            # the decimal
    H = _POW10[-k]                     # half an ulp of x
    T = <u128>1 << (-e)                # half a unit of the decimal's last digit
    U = T * 20                         # a unit of the digit before it
    diff = X - Dv if X >= Dv else Dv - X
    if diff >= T:
        return False  # not the nearest nd-digit decimal (or a tie)
    lo = X - H
    hi = X + H
    c = (hi // U) * U  # the largest shorter decimal at or below x's upper edge
    return c < lo


cdef int _format_repr(char *w, bint neg, const char *digits, int nd,
                      int decpt) noexcept nogil:
    """``repr(float)`` from its shortest digits: the layout of CPython's
    ``format_float_short`` ('r' mode, '.0' added), fixed for -4 < decpt <= 16."""
    cdef int k = 0, i, ex
    if neg:
        w[k] = 45
        k += 1
    if -4 < decpt <= 16:
        if decpt <= 0:
            w[k] = 48
            w[k + 1] = 46
            k += 2
            for i in range(-decpt):
                w[k] = 48
                k += 1
            memcpy(w + k, digits, nd)
            k += nd
        elif decpt >= nd:
            memcpy(w + k, digits, nd)
            k += nd
            for i in range(decpt - nd):
                w[k] = 48
                k += 1
            w[k] = 46
            w[k + 1] = 48
            k += 2
        else:
            memcpy(w + k, digits, decpt)
            k += decpt
            w[k] = 46
            k += 1
            memcpy(w + k, digits + decpt, nd - decpt)
            k += nd - decpt
        return k
    w[k] = digits[0]
    k += 1
    if nd > 1:
        w[k] = 46
        k += 1
        memcpy(w + k, digits + 1, nd - 1)
        k += nd - 1
    ex = decpt - 1
    w[k] = 101
    w[k + 1] = 43 if ex >= 0 else 45
    k += 2
    if ex < 0:
        ex = -ex
    if ex >= 100:
        w[k] = <char>(48 + ex // 100)
        k += 1
    w[k] = <char>(48 + (ex // 10) % 10)
    w[k + 1] = <char>(48 + ex % 10)
    return k + 2


cdef int _parse(const char *p, Py_ssize_t n, char *arena, Attr *attrs) except -2:
    """Scan a flat JSON object into ``attrs``; the number of attributes, or -1 to
    decline.  ``arena`` holds at least ``n + 32 * MAX_ATTRS`` bytes."""
    cdef Py_ssize_t i = _ws(p, 0, n)
    cdef int count = 0, k
    cdef Attr *a
    cdef char c
    if i >= n or p[i] != 123:  # '{'
        return -1
    i = _ws(p, i + 1, n)
    if i < n and p[i] == 125:  # '}'
        i = _ws(p, i + 1, n)
        return 0 if i == n else -1
    while True:
        if count == MAX_ATTRS or i >= n or p[i] != 34:
            return -1
        a = &attrs[count]
        i = _string(p, i + 1, n, &arena, &a.name, &a.name_len)
        if i < 0:
            return -1
        for k in range(count):  # a repeated key: the Python path keeps the last value
            if attrs[k].name_len == a.name_len and \
                    memcmp(attrs[k].name, a.name, a.name_len) == 0:
                return -1
        i = _ws(p, i, n)
        if i >= n or p[i] != 58:  # ':'
            return -1
        i = _ws(p, i + 1, n)
        if i >= n:
            return -1
        c = p[i]
        if c == 34:
            a.dtype = DT_STRING
            i = _string(p, i + 1, n, &arena, &a.value, &a.value_len)
        elif c == 116:  # true
            if i + 4 > n or memcmp(p + i, b"true", 4) != 0:
                return -1
            a.dtype = DT_BOOLEAN
            a.value = b"true"
            a.value_len = 4
            i += 4
        elif c == 102:  # false
            if i + 5 > n or memcmp(p + i, b"false", 5) != 0:
                return -1
            a.dtype = DT_BOOLEAN
            a.value = b"false"
            a.value_len = 5
            i += 5
        elif c == 110:  # null
            if i + 4 > n or memcmp(p + i, b"null", 4) != 0:
                return -1
            a.dtype = DT_STRING
            a.value = NULL
            a.value_len = 0
            i += 4
        elif c == 45 or 48 <= c <= 57:
            a.dtype = DT_NUMBER
            i = _number(p, i, n, &arena, &a.value, &a.value_len)
        else:
            return -1  # an object, a list, or not JSON
        if i < 0:
            return -1
        count += 1
        i = _ws(p, i, n)
        if i >= n:
            return -1
        if p[i] == 44:  # ','
            i = _ws(p, i + 1, n)
            continue
        if p[i] == 125:
            i = _ws(p, i + 1, n)
            return count if i == n else -1
        return -1


cdef inline bint _ascii(const char *s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if <unsigned char>s[i] >= 128:
            return False
    return True


def parse(payload):
    """Rows ``[(name, value, data_type), ...]`` of a JSON payload (bytes) as the fast
    path writes them, or None where it hands the message to the Python path.  For tests."""
    cdef bytes b = bytes(payload)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
    cdef Attr attrs[MAX_ATTRS]
    cdef char *arena = <char *>malloc(n + 32 * MAX_ATTRS + 64)
    cdef int count, k
    if arena == NULL:
        raise MemoryError()
    try:
        count = _parse(PyBytes_AS_STRING(b), n, arena, attrs)
        if count < 0:
            return None
        return [(attrs[k].name[:attrs[k].name_len].decode("utf-8"),
                 None if attrs[k].value == NULL
                 else attrs[k].value[:attrs[k].value_len].decode("utf-8"),
                 _DT_TEXT[attrs[k].dtype].decode())
                for k in range(count)]
    finally:
        free(arena)


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
        cdef int done = 0, k, r, col
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
                sqlite3_bind_text(st, col + 2, _DT_TEXT[attrs[done + r].dtype],
                                  _DT_LEN[attrs[done + r].dtype], NULL)
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
        cdef Py_ssize_t need = pn + 32 * MAX_ATTRS + 64
        cdef char *grown
        if not _ascii(topic, tn):
            return 0
        if need > self._arena_cap:
            grown = <char *>realloc(self._arena, need)
            if grown == NULL:
                raise MemoryError()
            self._arena = grown
            self._arena_cap = need
        count = _parse(payload, pn, self._arena, self._parsed)
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
        _msg_init(&m1)
        rc = _msg_recv(&m1, h, ZMQ_DONTWAIT)
        if rc < 0:
            err = _errno()
            _msg_close(&m1)
            if err == EAGAIN:
                if n > 0 or timeout_ms <= 0:
                    break
                with nogil:
                    prc = _poll(&item, 1, timeout_ms)
                timeout_ms = 0  # wait once
                if prc <= 0:
                    break
                continue
            if err == EINTR:
                break  # a signal: let Python run its handler
            raise RecordError(f"zmq_msg_recv failed (libzmq errno {err})")
        n += 1
        if not _msg_more(&m1):
            frames = [PyBytes_FromStringAndSize(<char *>_msg_data(&m1), _msg_size(&m1))]
            _msg_close(&m1)
            w._add_py(frames)
            continue
        _msg_init(&m2)
        if _msg_recv(&m2, h, 0) < 0:  # the rest of a message arrives with its first frame
            err = _errno()
            _msg_close(&m2)
            _msg_close(&m1)
            raise RecordError(f"zmq_msg_recv failed (libzmq errno {err})")
        if not _msg_more(&m2):
            try:
                ok = w._add_c(<char *>_msg_data(&m1), _msg_size(&m1),
                              <char *>_msg_data(&m2), _msg_size(&m2))
                if not ok:
                    frames = [PyBytes_FromStringAndSize(<char *>_msg_data(&m1), _msg_size(&m1)),
                              PyBytes_FromStringAndSize(<char *>_msg_data(&m2), _msg_size(&m2))]
            finally:
                _msg_close(&m2)
                _msg_close(&m1)
            if not ok:
                w._add_py(frames)
        else:
            frames = [PyBytes_FromStringAndSize(<char *>_msg_data(&m1), _msg_size(&m1)),
                      PyBytes_FromStringAndSize(<char *>_msg_data(&m2), _msg_size(&m2))]
            _msg_close(&m1)
            while _msg_more(&m2):
                _msg_close(&m2)
                _msg_init(&m2)
                if _msg_recv(&m2, h, 0) < 0:
                    err = _errno()
                    _msg_close(&m2)
                    raise RecordError(f"zmq_msg_recv failed (libzmq errno {err})")
                frames.append(PyBytes_FromStringAndSize(<char *>_msg_data(&m2),
                                                        _msg_size(&m2)))
            _msg_close(&m2)
            w._add_py(frames)
        if n % 256 == 0:
            with nogil:  # let other threads of the process run now and then
                pass
    return n
