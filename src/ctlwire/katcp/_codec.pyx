# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled KATCP codec: the ``Message`` type, line parsing, escaping and formatting.

The grammar is in ``docs/katcp-codec.md`` (and ``shared/spec/katcp.md``). Parsing is a
single forward pass over the bytes of a line: type character, name, optional message id,
then arguments separated by runs of spaces or tabs. An argument without a backslash is
sliced straight out of the input; one with escapes is decoded into a scratch buffer.

No I/O: bytes in, messages out. What other compiled modules use (``Message``,
``StreamParser``'s state, ``_parse_line``) is declared in ``_codec.pxd``; the client's
socket round trip that parses straight out of its read buffer is ``_roundtrip.pyx``.

Layering: imports ``ctlwire.katcp.exceptions`` only.
"""
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE, PyBytes_CheckExact, PyBytes_Check)
from cpython.unicode cimport PyUnicode_DecodeLatin1, PyUnicode_AsUTF8String, PyUnicode_Check
from cpython.list cimport PyList_New, PyList_GET_SIZE, PyList_GET_ITEM, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from libc.string cimport memcpy, memchr, strcspn
from libc.stdint cimport uint8_t, int64_t

from cpython.bytearray cimport PyByteArray_AS_STRING

from ctlwire.katcp.exceptions import KatcpSyntaxError

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


cdef inline void _emit(list out, const unsigned char *p, Py_ssize_t n, object message_type):
    # One complete line: its message, or its syntax error, in stream order.
    if n == 0:
        return
    try:
        out.append(_parse_line(p, n, message_type))
    except KatcpSyntaxError as exc:
        out.append(exc)


cdef _too_long(list out, Py_ssize_t n, const unsigned char *head, Py_ssize_t maximum):
    out.append(KatcpSyntaxError(
        "line longer than the limit of %d bytes" % maximum, maximum,
        PyBytes_FromStringAndSize(<const char *>head, min(n, 64))))


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
    # (fields declared in _codec.pxd: _buf, the partial line carried over between
    # feeds; _max; _discarding, skipping the tail of an over-long line; message_type)

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
                    _too_long(out, len(self._buf), <const unsigned char *>PyByteArray_AS_STRING(self._buf),
                              self._max)
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
                    _emit(out, <const unsigned char *>PyBytes_AS_STRING(joined),
                          PyBytes_GET_SIZE(joined), self.message_type)
                    i = j + 1
        # 2. whole lines inside this chunk, parsed in place
        while i < n:
            j = _find_eol(p, i, n)
            if j == n:
                break
            if j - i > self._max:
                _too_long(out, j - i, p + i, self._max)
            else:
                _emit(out, p + i, j - i, self.message_type)
            i = j + 1
        # 3. keep the incomplete tail
        if i < n:
            if n - i > self._max:
                _too_long(out, n - i, p + i, self._max)
                self._discarding = True
            else:
                self._buf = bytearray(PyBytes_FromStringAndSize(<const char *>(p + i), n - i))
        return out


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
