# cython: language_level=3
"""C-level API of the recorder's codec (``ctlwire.tcs._jsonrows``): a flat JSON object
to ``attribute`` rows in place.  Used by the writer, ``ctlwire.tcs._record``."""

cdef enum:
    MAX_ATTRS = 64      # more keys than this: declined (the Python path)


cdef enum DataType:
    DT_STRING = 0
    DT_NUMBER = 1
    DT_BOOLEAN = 2


cdef struct Attr:
    const char *name
    int name_len
    const char *value    # NULL: SQL NULL (a JSON null)
    int value_len
    int dtype            # a DataType


cdef int parse_object(const char *p, Py_ssize_t n, char *arena, Attr *attrs) except -2


cdef inline Py_ssize_t arena_size(Py_ssize_t n) noexcept nogil:
    """Bytes of scratch ``parse_object`` needs for a payload of ``n`` bytes: unescaped
    text is never longer than its JSON, a number's text at most 32 bytes longer."""
    return n + 32 * MAX_ATTRS + 64


cdef inline const char *dtype_text(int dtype, int *length) noexcept nogil:
    """The ``data_type`` column of a :c:type:`DataType` (``length`` may be NULL)."""
    if dtype == DT_NUMBER:
        if length != NULL:
            length[0] = 6
        return b"number"
    if dtype == DT_BOOLEAN:
        if length != NULL:
            length[0] = 7
        return b"boolean"
    if length != NULL:
        length[0] = 6
    return b"string"


cdef inline bint is_ascii(const char *s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if <unsigned char>s[i] >= 128:
            return False
    return True
