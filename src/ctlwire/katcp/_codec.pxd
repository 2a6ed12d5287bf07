# C-level API of the KATCP codec, for other compiled modules (ctlwire.katcp._dispatch,
# ctlwire.katcp._roundtrip). The codec does no I/O. May cimport: nothing of ctlwire.

cdef class Message:
    cdef public int mtype
    cdef public object name
    cdef public list arguments
    cdef public object mid
    cdef bytes _format(self, bint newline)

cdef class MessageParser:
    cdef object message_type
    cpdef Message parse(self, line)

cdef class StreamParser:
    # The partial line carried over between feeds.
    cdef bytearray _buf
    # Longest accepted line.
    cdef Py_ssize_t _max
    # Skipping the tail of an over-long line.
    cdef bint _discarding
    cdef object message_type

# Parse one line of n bytes at p (no end-of-line byte; p[n] must be readable and NUL
# or an end-of-line byte). Raises KatcpSyntaxError.
cdef Message _parse_line(const unsigned char *p, Py_ssize_t n, object msg_type)

cpdef bytes format_argument(object arg)
cpdef bytes escape_argument(bytes arg)
cpdef bytes unescape_argument(bytes arg)
