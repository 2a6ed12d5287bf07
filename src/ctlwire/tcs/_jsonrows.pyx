# cython: language_level=3, boundscheck=False, wraparound=False
"""The recorder's codec: a TCS event's JSON object to its ``attribute`` rows, in place.

A flat object of ASCII strings (simple escapes and ``\\uXXXX`` outside the surrogates
included), numbers, booleans and nulls becomes ``Attr`` rows ``(name, value,
data_type)`` pointing into the payload or a caller's arena, with no Python object
made; numbers get the text ``str(int)``/``repr(float)`` of the decoded value would give.
Anything else (nested values, non-ASCII bytes, other escapes, repeated keys,
malformed JSON) is declined (-1): the caller's Python path decides, with
:func:`ctlwire.tcs.events.event_rows`, the reference this codec is tested against
(``tests/tcs/test_record_engine.py``).  No I/O.

``parse(payload)`` gives the rows as Python tuples, for those tests.

Imports: the C library and two of CPython's float functions (``repr``'s own code for
the numbers whose shortest digits are not known here).
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy
from libc.math cimport isinf

cdef extern from "Python.h":
    char *PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int *ptype) except NULL
    void PyMem_Free(void *p)
    double PyOS_string_to_double(const char *s, char **endptr, void *overflow) except? -1.0
    int Py_DTSF_ADD_DOT_0


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


cdef int parse_object(const char *p, Py_ssize_t n, char *arena, Attr *attrs) except -2:
    """Scan a flat JSON object into ``attrs``; the number of attributes, or -1 to
    decline.  ``arena`` holds at least ``arena_size(n)`` bytes; the rows point into
    ``p`` and ``arena``."""
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


def parse(payload):
    """Rows ``[(name, value, data_type), ...]`` of a JSON payload (bytes) as the fast
    path writes them, or None where it hands the message to the Python path.  For tests."""
    cdef bytes b = bytes(payload)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
    cdef Attr attrs[MAX_ATTRS]
    cdef char *arena = <char *>malloc(arena_size(n))
    cdef int count, k
    if arena == NULL:
        raise MemoryError()
    try:
        count = parse_object(PyBytes_AS_STRING(b), n, arena, attrs)
        if count < 0:
            return None
        return [(attrs[k].name[:attrs[k].name_len].decode("utf-8"),
                 None if attrs[k].value == NULL
                 else attrs[k].value[:attrs[k].value_len].decode("utf-8"),
                 dtype_text(attrs[k].dtype, NULL).decode())
                for k in range(count)]
    finally:
        free(arena)
