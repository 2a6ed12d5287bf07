# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled KATCP codec: the ``Message`` type, line parsing, escaping and formatting.

The grammar is in ``docs/katcp-codec.md`` (and ``shared/spec/katcp.md``). Parsing is a
single forward pass over the bytes of a line: type character, name, optional message id,
then arguments separated by runs of spaces or tabs. An argument without a backslash is
sliced straight out of the input; one with escapes is decoded into a scratch buffer.
"""
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE, PyBytes_CheckExact, PyBytes_Check)
from cpython.unicode cimport PyUnicode_DecodeLatin1, PyUnicode_AsUTF8String, PyUnicode_Check
from cpython.list cimport PyList_New, PyList_GET_SIZE, PyList_GET_ITEM, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from libc.string cimport memcpy, memchr, strcspn
from libc.stdint cimport uint8_t, int64_t

from ctlwire.katcp.exceptions import KatcpSyntaxError

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.exc cimport PyErr_SetFromErrno
from libc.stdlib cimport malloc, free
from libc.errno cimport errno, EAGAIN, EINTR

cdef extern from "<errno.h>":
    int EWOULDBLOCK
from cpython.exc cimport PyErr_CheckSignals
from cpython.bytearray cimport PyByteArray_GET_SIZE


cdef extern from "<sys/socket.h>" nogil:
    ssize_t c_recv "recv" (int fd, void *buf, size_t n, int flags)
    ssize_t c_send "send" (int fd, const void *buf, size_t n, int flags)
    int MSG_DONTWAIT
    int MSG_NOSIGNAL

# Bytes one StreamParser.recv_reply() reads at most (as the client's Python reads).
DEF RECV_SIZE = 65536

# --- character classes -----------------------------------------------------------------

# class bits for the byte lookup table
DEF C_SEP = 1        # space or tab: argument separator
DEF C_SPECIAL = 2    # backslash, NUL, LF, CR, ESC: leaves the fast path of an argument
DEF C_NAME = 4       # ALPHA / DIGIT / '-'
DEF C_ALPHA = 8
DEF C_ESCAPE_OUT = 16  # must be escaped when formatting

cdef uint8_t CLASS[256]
cdef char ESCAPE_CHAR[256]     # byte -> escape letter when formatting (0: none)
cdef int UNESCAPE_BYTE[256]    # escape letter -> byte value, -1 unknown, -2 for '@'


cdef void _init_tables():
    cdef int c
    for c in range(256):
        CLASS[c] = 0
        ESCAPE_CHAR[c] = 0
        UNESCAPE_BYTE[c] = -1
    CLASS[ord(' ')] |= C_SEP | C_ESCAPE_OUT
    CLASS[ord('\t')] |= C_SEP | C_ESCAPE_OUT
    for c in (ord('\\'), 0, ord('\n'), ord('\r'), 0x1b):
        CLASS[c] |= C_SPECIAL | C_ESCAPE_OUT
    for c in range(ord('a'), ord('z') + 1):
        CLASS[c] |= C_NAME | C_ALPHA
    for c in range(ord('A'), ord('Z') + 1):
        CLASS[c] |= C_NAME | C_ALPHA
    for c in range(ord('0'), ord('9') + 1):
        CLASS[c] |= C_NAME
    CLASS[ord('-')] |= C_NAME
    ESCAPE_CHAR[ord('\\')] = ord('\\')
    ESCAPE_CHAR[ord(' ')] = ord('_')
    ESCAPE_CHAR[0] = ord('0')
    ESCAPE_CHAR[ord('\n')] = ord('n')
    ESCAPE_CHAR[ord('\r')] = ord('r')
    ESCAPE_CHAR[0x1b] = ord('e')
    ESCAPE_CHAR[ord('\t')] = ord('t')
    UNESCAPE_BYTE[ord('\\')] = ord('\\')
    UNESCAPE_BYTE[ord('_')] = ord(' ')
    UNESCAPE_BYTE[ord('0')] = 0
    UNESCAPE_BYTE[ord('n')] = ord('\n')
    UNESCAPE_BYTE[ord('r')] = ord('\r')
    UNESCAPE_BYTE[ord('e')] = 0x1b
    UNESCAPE_BYTE[ord('t')] = ord('\t')
    UNESCAPE_BYTE[ord('@')] = -2

_init_tables()

DEF MID_MAX = 2147483647

cdef const char *TYPE_CHARS = b"?!#"
cdef tuple TYPE_NAMES_LOWER = ("request", "reply", "inform")

# Names repeat endlessly on a control link ("sensor-status", "sensor-value"...): keep
# the decoded str of recent names so a hot stream reuses one object per name.
cdef dict _name_cache = {}
DEF NAME_CACHE_MAX = 4096


cdef inline object _name_str(const unsigned char *p, Py_ssize_t n):
    cdef bytes key = PyBytes_FromStringAndSize(<const char *>p, n)
    cdef object s = _name_cache.get(key)
    if s is None:
        s = PyUnicode_DecodeLatin1(<const char *>p, n, NULL)
        if len(_name_cache) >= NAME_CACHE_MAX:
            _name_cache.clear()
        _name_cache[key] = s
    return s


cdef inline object _syntax_error(str reason, Py_ssize_t pos, const unsigned char *line,
                                 Py_ssize_t n):
    return KatcpSyntaxError(reason, pos, PyBytes_FromStringAndSize(<const char *>line, n))


cdef str _byte_repr(unsigned char c):
    """A byte as it should appear in an error message: 'x' or '\\xNN'."""
    if 0x21 <= c < 0x7f:
        return "'%s'" % chr(c)
    return "'\\x%02x'" % c


# --- argument encoding -----------------------------------------------------------------

cdef bytes _format_argument(object arg):
    """Turn one message argument into bytes (str as UTF-8, bool as 1/0, float by repr)."""
    if PyBytes_CheckExact(arg):
        return <bytes>arg
    if PyUnicode_Check(arg):
        return PyUnicode_AsUTF8String(arg)
    if arg is True:
        return b"1"
    if arg is False:
        return b"0"
    if isinstance(arg, int):
        return (b"%d" % arg)
    if isinstance(arg, float):
        return repr(arg).encode("ascii")
    if PyBytes_Check(arg):
        return bytes(arg)
    if isinstance(arg, (bytearray, memoryview)):
        return bytes(arg)
    # numbers.Integral / numbers.Real (numpy scalars) and anything with a str()
    import numbers
    if isinstance(arg, numbers.Integral):
        return b"%d" % int(arg)
    if isinstance(arg, numbers.Real):
        return repr(float(arg)).encode("ascii")
    return str(arg).encode("utf-8")


cpdef bytes format_argument(object arg):
    """Return the wire bytes (before escaping) of a Python argument value."""
    return _format_argument(arg)


cdef inline Py_ssize_t _escaped_size(const unsigned char *p, Py_ssize_t n) nogil:
    cdef Py_ssize_t i, extra = 0
    if n == 0:
        return 2  # \@
    for i in range(n):
        if CLASS[p[i]] & C_ESCAPE_OUT:
            extra += 1
    return n + extra


cdef inline Py_ssize_t _write_escaped(char *out, const unsigned char *p, Py_ssize_t n) nogil:
    cdef Py_ssize_t i, j = 0
    cdef unsigned char c
    if n == 0:
        out[0] = b'\\'
        out[1] = b'@'
        return 2
    for i in range(n):
        c = p[i]
        if CLASS[c] & C_ESCAPE_OUT:
            out[j] = b'\\'
            out[j + 1] = ESCAPE_CHAR[c]
            j += 2
        else:
            out[j] = <char>c
            j += 1
    return j


cpdef bytes escape_argument(bytes arg):
    """Escape one argument for the wire (the empty argument becomes ``\\@``)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(arg)
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(arg)
    cdef Py_ssize_t size = _escaped_size(p, n)
    if size == n:
        return arg
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    _write_escaped(PyBytes_AS_STRING(out), p, n)
    return out


cpdef bytes unescape_argument(bytes arg):
    """Undo KATCP escaping of one argument; raises ``KatcpSyntaxError`` on a bad escape."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(arg)
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(arg)
    cdef Py_ssize_t i = 0
    while i < n:
        if CLASS[p[i]] & (C_SPECIAL | C_SEP):
            break
        i += 1
    if i == n:
        return arg
    return _decode_argument(p, 0, n, p, n)


cdef bytes _decode_argument(const unsigned char *line, Py_ssize_t start, Py_ssize_t end,
                            const unsigned char *whole, Py_ssize_t whole_len):
    """Decode line[start:end] (one argument containing escapes) into a new bytes."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, end - start)
    cdef char *o = PyBytes_AS_STRING(out)
    cdef Py_ssize_t i = start, j = 0
    cdef unsigned char c
    cdef int b
    while i < end:
        c = line[i]
        if c == b'\\':
            if i + 1 >= end:
                raise _syntax_error("lone backslash at end of argument", i, whole, whole_len)
            b = UNESCAPE_BYTE[line[i + 1]]
            if b == -1:
                raise _syntax_error("unknown escape: backslash followed by %s" % _byte_repr(line[i + 1]),
                                    i, whole, whole_len)
            if b >= 0:
                o[j] = <char>b
                j += 1
            i += 2
        elif CLASS[c] & (C_SPECIAL | C_SEP):
            raise _syntax_error(_unescaped_reason(c), i, whole, whole_len)
        else:
            o[j] = <char>c
            j += 1
            i += 1
    if j == end - start:
        return out
    return PyBytes_FromStringAndSize(o, j)


cdef str _unescaped_reason(unsigned char c):
    if c == 0:
        return "unescaped NUL in argument"
    if c == 0x1b:
        return "unescaped ESC in argument"
    if c == b'\n' or c == b'\r':
        return "end-of-line byte inside the line"
    if c == b' ' or c == b'\t':
        return "unescaped whitespace in argument"
    return "invalid byte %s in argument" % _byte_repr(c)


# --- Message ---------------------------------------------------------------------------

cdef inline bint _valid_name_bytes(const unsigned char *p, Py_ssize_t n) nogil:
    cdef Py_ssize_t i
    if n == 0 or not (CLASS[p[0]] & C_ALPHA):
        return False
    for i in range(1, n):
        if not (CLASS[p[i]] & C_NAME):
            return False
    return True


cdef bytes _check_mid(object mid):
    cdef bytes b
    if mid is None:
        return None
    if PyBytes_CheckExact(mid):
        b = <bytes>mid  # the common case (a parsed mid): no copy, no call
    elif PyBytes_Check(mid):
        b = bytes(mid)
    elif isinstance(mid, int) and not isinstance(mid, bool):
        b = b"%d" % mid
    elif PyUnicode_Check(mid):
        b = (<str>mid).encode("ascii", "replace")
    else:
        raise KatcpSyntaxError("invalid message id %r: expected digits" % (mid,))
    if not _valid_mid(<const unsigned char *>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b)):
        raise KatcpSyntaxError(
            "invalid message id %r: must be an integer from 1 to 2147483647" % (mid,))
    return b


cdef inline bint _valid_mid(const unsigned char *p, Py_ssize_t n) nogil:
    cdef Py_ssize_t i
    cdef int64_t v = 0
    if n == 0 or n > 10 or p[0] < b'1' or p[0] > b'9':
        return False
    for i in range(n):
        if p[i] < b'0' or p[i] > b'9':
            return False
        v = v * 10 + (p[i] - 48)
    return v <= MID_MAX


cdef bytes _encode(int mtype, bytes name_b, bytes mid_b, list args, bint newline):
    """Write a message: type, name, [mid], escaped arguments (all bytes), optional LF.

    The exact size is computed first so the result is allocated once and filled in place.
    """
    cdef Py_ssize_t nargs = PyList_GET_SIZE(args)
    cdef Py_ssize_t i, size, pos
    cdef bytes a, result
    cdef char *out
    size = 1 + PyBytes_GET_SIZE(name_b) + (1 if newline else 0)
    if mid_b is not None:
        size += PyBytes_GET_SIZE(mid_b) + 2
    for i in range(nargs):
        a = <bytes>PyList_GET_ITEM(args, i)
        size += 1 + _escaped_size(<const unsigned char *>PyBytes_AS_STRING(a),
                                  PyBytes_GET_SIZE(a))
    result = PyBytes_FromStringAndSize(NULL, size)
    out = PyBytes_AS_STRING(result)
    out[0] = TYPE_CHARS[mtype]
    pos = 1
    memcpy(out + pos, PyBytes_AS_STRING(name_b), PyBytes_GET_SIZE(name_b))
    pos += PyBytes_GET_SIZE(name_b)
    if mid_b is not None:
        out[pos] = b'['
        memcpy(out + pos + 1, PyBytes_AS_STRING(mid_b), PyBytes_GET_SIZE(mid_b))
        pos += 1 + PyBytes_GET_SIZE(mid_b)
        out[pos] = b']'
        pos += 1
    for i in range(nargs):
        a = <bytes>PyList_GET_ITEM(args, i)
        out[pos] = b' '
        pos += 1
        pos += _write_escaped(out + pos, <const unsigned char *>PyBytes_AS_STRING(a),
                              PyBytes_GET_SIZE(a))
    if newline:
        out[pos] = b'\n'
    return result


cdef class Message:
    """A KATCP message: a request, a reply or an inform.

    Parameters
    ----------
    mtype : int
        ``Message.REQUEST``, ``Message.REPLY`` or ``Message.INFORM``.
    name : str
        Message name: an ASCII letter followed by letters, digits and dashes.
    arguments : iterable, optional
        Arguments; ``bytes`` are kept, ``str`` is UTF-8 encoded, ``bool`` becomes
        ``1``/``0``, ``int`` decimal, ``float`` its ``repr``.
    mid : int, str or bytes, optional
        Message id, 1 to 2**31-1. Replies and informs to a request carry its id.

    Notes
    -----
    ``bytes(msg)`` and ``str(msg)`` give the wire form without the final newline, as in
    katcp-python; :meth:`to_wire` includes it.
    """

    REQUEST = 0
    REPLY = 1
    INFORM = 2
    OK = b"ok"
    FAIL = b"fail"
    INVALID = b"invalid"
    TYPE_NAMES = {0: "REQUEST", 1: "REPLY", 2: "INFORM"}
    TYPE_SYMBOLS = {0: b"?", 1: b"!", 2: b"#"}
    TYPE_SYMBOL_LOOKUP = {b"?": 0, b"!": 1, b"#": 2}

    def __init__(self, int mtype, name, arguments=None, mid=None):
        cdef bytes bname
        if mtype < 0 or mtype > 2:
            raise KatcpSyntaxError("invalid message type %r" % (mtype,))
        if not PyUnicode_Check(name):
            if PyBytes_Check(name):
                name = (<bytes>name).decode("ascii", "replace")
            else:
                raise KatcpSyntaxError("message name must be str, not %s" % type(name).__name__)
        bname = (<str>name).encode("utf-8")
        if not _valid_name_bytes(<const unsigned char *>PyBytes_AS_STRING(bname),
                                 PyBytes_GET_SIZE(bname)):
            raise KatcpSyntaxError(
                "invalid message name %r: must be an ASCII letter followed by letters, "
                "digits and dashes" % (name,))
        self.mtype = mtype
        self.name = name
        self.mid = _check_mid(mid)
        if arguments is None:
            self.arguments = []
        else:
            self.arguments = [_format_argument(a) for a in arguments]

    # -- constructors that katcp-python users know --

    @classmethod
    def request(cls, name, *args, mid=None):
        """Build a request ``?name args...``."""
        return cls(0, name, args, mid)

    @classmethod
    def reply(cls, name, *args, mid=None):
        """Build a reply ``!name args...``."""
        return cls(1, name, args, mid)

    @classmethod
    def inform(cls, name, *args, mid=None):
        """Build an inform ``#name args...``."""
        return cls(2, name, args, mid)

    @classmethod
    def reply_to_request(cls, req_msg, *args):
        """Build the reply to ``req_msg`` (same name and message id)."""
        return cls(1, req_msg.name, args, req_msg.mid)

    @classmethod
    def reply_inform(cls, req_msg, *args):
        """Build an inform that belongs to the reply to ``req_msg``."""
        return cls(2, req_msg.name, args, req_msg.mid)

    def reply_ok(self):
        """True if this is a reply whose first argument is ``ok``."""
        return (self.mtype == 1 and len(self.arguments) > 0
                and self.arguments[0] == b"ok")

    def copy(self):
        """Shallow copy: a new message with a new argument list."""
        cdef Message m = type(self).__new__(type(self))
        m.mtype = self.mtype
        m.name = self.name
        m.mid = self.mid
        m.arguments = list(self.arguments)
        return m

    # -- formatting --

    cdef bytes _format(self, bint newline):
        cdef list args = self.arguments
        cdef Py_ssize_t i
        # arguments may have been replaced by non-bytes after construction
        for i in range(PyList_GET_SIZE(args)):
            if not PyBytes_CheckExact(<object>PyList_GET_ITEM(args, i)):
                args = [_format_argument(x) for x in args]
                break
        if self.mtype < 0 or self.mtype > 2:
            raise KatcpSyntaxError("invalid message type %r" % (self.mtype,))
        name_b = (<str>self.name).encode("ascii") if PyUnicode_Check(self.name) else bytes(self.name)
        return _encode(self.mtype, name_b, self.mid, args, newline)

    def __bytes__(self):
        return self._format(False)

    def __str__(self):
        return self._format(False).decode("utf-8")

    def to_wire(self):
        """The message as sent on the wire: formatted bytes ending in ``\\n``."""
        return self._format(True)

    def __repr__(self):
        cdef list shown = []
        for a in self.arguments:
            e = escape_argument(_format_argument(a))
            if len(e) > 1000:
                e = e[:1000] + b"..."
            shown.append(e.decode("utf-8", "backslashreplace"))
        mid = "" if self.mid is None else "[%s]" % self.mid.decode("ascii")
        args = "" if not shown else " (" + ", ".join(shown) + ")"
        kind = TYPE_NAMES_LOWER[self.mtype] if 0 <= self.mtype <= 2 else str(self.mtype)
        return "<Message %s %s%s%s>" % (kind, self.name, mid, args)

    def __eq__(self, other):
        if not isinstance(other, Message):
            return NotImplemented
        cdef Message o = <Message>other
        return (self.mtype == o.mtype and self.name == o.name and self.mid == o.mid
                and self.arguments == o.arguments)

    def __ne__(self, other):
        r = self.__eq__(other)
        if r is NotImplemented:
            return r
        return not r

    __hash__ = None

    def __reduce__(self):
        return (type(self), (self.mtype, self.name, self.arguments, self.mid))


# --- parsing ---------------------------------------------------------------------------

cdef const char *STOP_SET = b" \t\\\n\r\x1b"


cdef Message _parse_line(const unsigned char *p, Py_ssize_t n, object msg_type):
    """Parse one line (no EOL byte). Raises KatcpSyntaxError.

    Contract: ``p[n]`` must be readable and be NUL, LF or CR (bytes objects end in NUL;
    lines inside a stream chunk end at their EOL byte), so scans may stop there.
    """
    cdef Py_ssize_t i, start, name_end, arg_start
    cdef unsigned char c
    cdef int mtype
    cdef bint has_escape
    cdef Message m
    cdef list args
    cdef object arg

    if n == 0:
        raise _syntax_error("empty line", 0, p, n)
    c = p[0]
    if c == b'?':
        mtype = 0
    elif c == b'!':
        mtype = 1
    elif c == b'#':
        mtype = 2
    elif CLASS[c] & C_SEP:
        i = 0
        while i < n and (CLASS[p[i]] & C_SEP):
            i += 1
        if i == n:
            raise _syntax_error("blank line", 0, p, n)
        raise _syntax_error("leading whitespace", 0, p, n)
    else:
        raise _syntax_error("unknown message type %s (expected '?', '!' or '#')"
                            % _byte_repr(c), 0, p, n)
    # name
    if n == 1:
        raise _syntax_error("missing message name", 1, p, n)
    if not (CLASS[p[1]] & C_ALPHA):
        raise _syntax_error("message name must start with an ASCII letter, not %s"
                            % _byte_repr(p[1]), 1, p, n)
    i = 2
    while i < n and (CLASS[p[i]] & C_NAME):
        i += 1
    name_end = i
    if msg_type is Message:
        m = Message.__new__(Message)
    else:
        m = msg_type.__new__(msg_type)
    m.mtype = mtype
    m.name = _name_str(p + 1, name_end - 1)
    m.mid = None
    if i < n:
        c = p[i]
        if c == b'[':
            start = i + 1
            i = start
            while i < n and p[i] >= b'0' and p[i] <= b'9':
                i += 1
            if i >= n or p[i] != b']':
                if i < n:
                    raise _syntax_error("invalid character %s in message id"
                                        % _byte_repr(p[i]), i, p, n)
                raise _syntax_error("unterminated message id", i, p, n)
            if not _valid_mid(p + start, i - start):
                raise _syntax_error(
                    "invalid message id (must be 1 to 2147483647 without leading zeros)",
                    start, p, n)
            m.mid = PyBytes_FromStringAndSize(<const char *>(p + start), i - start)
            i += 1
            if i < n and not (CLASS[p[i]] & C_SEP):
                raise _syntax_error("unexpected %s after message id" % _byte_repr(p[i]),
                                    i, p, n)
        elif not (CLASS[c] & C_SEP):
            raise _syntax_error("invalid character %s in message name" % _byte_repr(c),
                                i, p, n)
    # arguments
    args = []
    while True:
        while i < n and (CLASS[p[i]] & C_SEP):
            i += 1
        if i >= n:
            break
        arg_start = i
        has_escape = False
        # strcspn is vectorised in libc; it stops at any separator, special byte or the
        # NUL that ends every buffer handed to this function (see _parse_line's contract)
        i += strcspn(<const char *>(p + i), STOP_SET)
        if i > n:
            i = n
        while i < n:
            c = p[i]
            if CLASS[c] & (C_SEP | C_SPECIAL):
                if CLASS[c] & C_SEP:
                    break
                if c == b'\\':
                    has_escape = True
                    i += 2  # the escape letter is checked by the decoder
                    continue
                raise _syntax_error(_unescaped_reason(c), i, p, n)
            i += 1
        if i > n:
            i = n  # lone trailing backslash: the decoder reports it
        if has_escape:
            arg = _decode_argument(p, arg_start, i, p, n)
        else:
            arg = PyBytes_FromStringAndSize(<const char *>(p + arg_start), i - arg_start)
        args.append(arg)
    m.arguments = args
    return m


cdef class MessageParser:
    """Parse single KATCP lines into :class:`Message` objects.

    Parameters
    ----------
    message_type : type, optional
        Class to build (a subclass of :class:`Message`); default ``Message``.
    """

    def __init__(self, message_type=Message):
        self.message_type = message_type

    cpdef Message parse(self, line):
        """Parse ``line`` (bytes without its end-of-line byte) into a Message.

        Raises
        ------
        KatcpSyntaxError
            Saying what is wrong and at which byte position.
        """
        cdef bytes b
        if PyBytes_CheckExact(line):
            b = <bytes>line
        elif PyUnicode_Check(line):
            b = (<str>line).encode("utf-8")
        else:
            b = bytes(line)
        return _parse_line(<const unsigned char *>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b),
                           self.message_type)


cdef class StreamParser:
    """Incremental parser for a byte stream of KATCP lines.

    Feed it socket reads of any size; it returns the complete messages found so far.
    A line ends at LF or CR; empty lines are skipped. A bad line, or one longer than
    ``max_line_length`` bytes, is returned as a :class:`KatcpSyntaxError` *instance* in
    its place in the output (not raised), and parsing resumes at the next line.

    Parameters
    ----------
    max_line_length : int
        Longest accepted line in bytes (default 2 MiB, as katcp-python).
    message_type : type, optional
        Class to build (a subclass of :class:`Message`).
    """
    cdef bytearray _buf       # the partial line carried over between feeds
    cdef Py_ssize_t _max
    cdef bint _discarding     # skipping the tail of an over-long line
    cdef object message_type
    cdef char *_rbuf          # recv_reply's read buffer (RECV_SIZE + 1), made on first use

    def __dealloc__(self):
        free(self._rbuf)

    def __init__(self, Py_ssize_t max_line_length=2 * 1024 * 1024, message_type=Message):
        if max_line_length < 1:
            raise ValueError("max_line_length must be positive")
        self._buf = bytearray()
        self._max = max_line_length
        self._discarding = False
        self.message_type = message_type

    @property
    def max_line_length(self):
        return self._max

    @property
    def buffered(self):
        """Bytes of an incomplete line held back until its end arrives."""
        return len(self._buf)

    def reset(self):
        """Drop any partial line."""
        self._buf = bytearray()
        self._discarding = False

    cdef inline void _emit(self, list out, const unsigned char *p, Py_ssize_t n):
        if n == 0:
            return
        try:
            out.append(_parse_line(p, n, self.message_type))
        except KatcpSyntaxError as exc:
            out.append(exc)

    cdef _too_long(self, list out, Py_ssize_t n, const unsigned char *head):
        out.append(KatcpSyntaxError(
            "line longer than the limit of %d bytes" % self._max, self._max,
            PyBytes_FromStringAndSize(<const char *>head, min(n, 64))))

    def feed(self, data):
        """Add ``data`` (bytes-like) and return the list of complete results.

        Returns
        -------
        list
            :class:`Message` objects and :class:`KatcpSyntaxError` instances, in stream
            order.
        """
        cdef const unsigned char *p
        cdef Py_ssize_t n, i, j, start, take
        cdef list out = []
        cdef bytes joined
        if not PyBytes_CheckExact(data):
            data = bytes(data)  # the parser relies on the NUL that ends a bytes object
        p = <const unsigned char *>PyBytes_AS_STRING(data)
        n = PyBytes_GET_SIZE(data)
        i = 0
        # 1. finish the line carried over from the previous feed
        if self._discarding or len(self._buf) > 0:
            j = _find_eol(p, 0, n)
            if self._discarding:
                if j == n:
                    return out
                self._discarding = False
                i = j + 1
            else:
                take = j
                if len(self._buf) + take > self._max:
                    self._too_long(out, len(self._buf), <const unsigned char *>PyByteArray_AS_STRING(self._buf))
                    self._buf = bytearray()
                    if j == n:
                        self._discarding = True
                        return out
                    i = j + 1
                elif j == n:
                    self._buf += data
                    return out
                else:
                    self._buf += (<bytes>data)[0:j]
                    joined = bytes(self._buf)
                    self._buf = bytearray()
                    self._emit(out, <const unsigned char *>PyBytes_AS_STRING(joined),
                               PyBytes_GET_SIZE(joined))
                    i = j + 1
        # 2. whole lines inside this chunk, parsed in place
        while i < n:
            j = _find_eol(p, i, n)
            if j == n:
                break
            if j - i > self._max:
                self._too_long(out, j - i, p + i)
            else:
                self._emit(out, p + i, j - i)
            i = j + 1
        # 3. keep the incomplete tail
        if i < n:
            if n - i > self._max:
                self._too_long(out, n - i, p + i)
                self._discarding = True
            else:
                self._buf = bytearray(PyBytes_FromStringAndSize(<const char *>(p + i), n - i))
        return out


    def recv_reply(self, int fd, bytes mid):
        """Read once from socket ``fd`` and parse what came: the client's fast path.

        One ``recv`` of up to 64 KiB, with the GIL released while it waits (on a
        blocking socket it waits as long as the socket's receive timeout says). When
        what came is exactly one complete line, nothing is carried over from an earlier
        read, and the line is the reply with message id ``mid``, that :class:`Message`
        is returned with no list or bytes object made for it (a ``BlockingClient``
        round trip, measured: about 1 us less than ``sock.recv`` plus :meth:`feed`).
        Anything else is parsed as :meth:`feed` does and its list returned.

        Parameters
        ----------
        fd : int
            File descriptor of a connected stream socket.
        mid : bytes
            Message id of the awaited reply.

        Returns
        -------
        Message, list or None
            The awaited reply; else the list :meth:`feed` would return; ``None`` when
            the peer has closed the connection.

        Raises
        ------
        OSError
            From ``recv``: ``BlockingIOError`` when the receive timeout passed with
            nothing read, ``InterruptedError`` on a signal, others for a broken link.
        """
        return self._recv_reply(fd, mid, False)

    cdef object _recv_reply(self, int fd, bytes mid, bint quiet):
        # recv_reply(); with ``quiet``, a receive timeout or a signal gives [] instead of
        # raising (a signal handler's own exception still propagates)
        cdef char *buf = self._rbuf
        cdef ssize_t n
        cdef int err
        cdef Message m
        if buf == NULL:
            buf = self._rbuf = <char *>malloc(RECV_SIZE + 1)
            if buf == NULL:
                raise MemoryError()
        with nogil:
            n = c_recv(fd, buf, RECV_SIZE, 0)
        if n < 0:
            err = errno
            if quiet and (err == EAGAIN or err == EWOULDBLOCK or err == EINTR):
                if err == EINTR:
                    PyErr_CheckSignals()
                return []
            PyErr_SetFromErrno(OSError)
        if n == 0:
            return None
        buf[n] = 0  # the NUL _parse_line's contract asks for after the last line
        if (buf[n - 1] == b'\n' and buf[0] == b'!' and n - 1 <= self._max
                and not self._discarding and len(self._buf) == 0
                and memchr(buf, b'\n', n) == buf + n - 1
                and memchr(buf, b'\r', n) == NULL):
            try:
                m = _parse_line(<const unsigned char *>buf, n - 1, self.message_type)
            except KatcpSyntaxError as exc:
                return [exc]
            if m.mid is not None and m.mid == mid:
                return m
            return [m]
        return self.feed(PyBytes_FromStringAndSize(buf, n))


cdef inline ssize_t _send_nowait(int fd, bytes data):
    # Never blocks, so the GIL is kept: releasing and taking it back costs more.
    return c_send(fd, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                  MSG_DONTWAIT | MSG_NOSIGNAL)


DEF MAX_MID = 2147483647
# Requests at least this long are not sent by RoundTrip: a long write while holding the
# reader role could stall on a full window with nobody draining the socket.
DEF DIRECT_MAX = 65536


cdef class RoundTrip:
    """The compiled core of ``BlockingClient.blocking_request`` (its usual case).

    One per client. It owns the client's message-id counter and sends and reads on the
    client's socket for a thread that holds the client's reader role; the client keeps
    :attr:`fd` in step with its socket (under the write lock) and handles every case
    that is not the usual one in Python (see ``client.py``).

    Parameters
    ----------
    parser : StreamParser
        The client's stream parser.
    write_lock : lock
        The client's write lock (held around each send).
    wq : bytearray
        The client's queue of unsent output: a request goes out directly only when it
        is empty, so output never reorders.
    first_mid : int, optional
        The first message id handed out (1).
    """
    cdef StreamParser parser
    cdef object write_lock
    cdef bytearray wq
    cdef unsigned long long _counter
    #: File descriptor of the client's socket, -1 while not connected.
    cdef public int fd
    #: Times a request went out and its caller read the socket itself.
    cdef public unsigned long long reads

    def __init__(self, StreamParser parser, write_lock, bytearray wq, *,
                 unsigned long long first_mid=1):
        if first_mid < 1 or first_mid > MAX_MID:
            raise ValueError("first_mid must be 1 .. 2**31-1")
        self.parser = parser
        self.write_lock = write_lock
        self.wq = wq
        self.fd = -1
        self._counter = first_mid - 1
        self.reads = 0

    cpdef bytes next_mid(self):
        """The next message id: 1 .. 2**31-1, then around again (atomic under the GIL)."""
        cdef long v = <long>(self._counter % MAX_MID) + 1
        self._counter += 1
        return b"%d" % v

    def request(self, Message msg):
        """Give ``msg`` the next mid, send it and read the socket once.

        The caller holds the client's reader role and has checked that ``msg`` is a
        request without a mid to a server that offers mids.

        Returns
        -------
        Message
            The reply (the usual case: the read held exactly that).
        list
            What the read held otherwise, as :meth:`StreamParser.feed` gives it
            (empty when the socket's receive timeout passed first); the request is out.
        tuple
            ``(sent, data)`` when the request could not go out in one non-blocking
            send (``sent`` bytes went, -1 for none); nothing was read.
        None
            The request is too big for this path; nothing was sent.
        False
            The server closed the connection (after the request went out).
        """
        cdef bytes mid = self.next_mid()
        cdef bytes data
        cdef ssize_t n = -1
        cdef int fd
        msg.mid = mid
        data = msg._format(True)
        if PyBytes_GET_SIZE(data) >= DIRECT_MAX:
            return None
        self.write_lock.acquire()
        try:
            fd = self.fd
            if fd >= 0 and PyByteArray_GET_SIZE(self.wq) == 0:
                n = _send_nowait(fd, data)
        finally:
            self.write_lock.release()
        if n != PyBytes_GET_SIZE(data):
            return (n, data)
        self.reads += 1
        got = self.parser._recv_reply(fd, mid, True)
        if got is None:
            return False
        return got


def send_nowait(int fd, bytes data):
    """``send(fd, data, MSG_DONTWAIT | MSG_NOSIGNAL)``: bytes sent, or -1 on any error.

    What :class:`RoundTrip` does for a request that fits in the socket buffer; on -1 or
    a partial send the caller goes on with its general (and error-reporting) write path.
    """
    return _send_nowait(fd, data)


cdef inline Py_ssize_t _find_eol(const unsigned char *p, Py_ssize_t i, Py_ssize_t n) nogil:
    """Index of the first LF or CR at or after i, or n."""
    cdef const unsigned char *lf
    cdef Py_ssize_t limit = n
    # memchr for LF is vectorised; CR is rare, so only look for it before the LF found
    lf = <const unsigned char *>memchr(p + i, b'\n', n - i)
    if lf != NULL:
        limit = lf - p
    cdef const unsigned char *cr = <const unsigned char *>memchr(p + i, b'\r', limit - i)
    if cr != NULL:
        return cr - p
    return limit


# --- fast encoding without Message objects ---------------------------------------------

def encode_message(int mtype, name, args=(), mid=None):
    """Format a message straight to wire bytes (with the final ``\\n``).

    Parameters
    ----------
    mtype : int
        0 request, 1 reply, 2 inform.
    name : str or bytes
        Message name (checked).
    args : sequence
        Arguments, converted as in :class:`Message`.
    mid : int, str, bytes or None
        Message id.
    """
    cdef bytes name_b
    cdef bytes mid_b = _check_mid(mid)
    cdef list fargs = [_format_argument(x) for x in args]
    if mtype < 0 or mtype > 2:
        raise KatcpSyntaxError("invalid message type %r" % (mtype,))
    name_b = name if PyBytes_CheckExact(name) else (<str>name).encode("utf-8")
    if not _valid_name_bytes(<const unsigned char *>PyBytes_AS_STRING(name_b),
                             PyBytes_GET_SIZE(name_b)):
        raise KatcpSyntaxError("invalid message name %r" % (name,))
    return _encode(mtype, name_b, mid_b, fargs, True)


def encode_messages(messages):
    """Join the wire forms of several messages into one buffer (one write)."""
    return b"".join([(<Message>m)._format(True) for m in messages])
