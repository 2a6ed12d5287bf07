# C-level API of the KATCP codec, for other compiled modules.

cdef class Message:
    cdef public int mtype
    cdef public object name
    cdef public list arguments
    cdef public object mid
    cdef bytes _format(self, bint newline)

cdef class MessageParser:
    cdef object message_type
    cpdef Message parse(self, line)

cpdef bytes format_argument(object arg)
cpdef bytes escape_argument(bytes arg)
cpdef bytes unescape_argument(bytes arg)
