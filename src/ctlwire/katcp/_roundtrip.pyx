# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled socket round trip of the threaded KATCP client (``BlockingClient``).

The codec (``_codec.pyx``) does no I/O; this module does the client's, in C, where it
is the hottest path of the library: :class:`RoundTrip` gives a request its message id,
sends it with one non-blocking ``send`` and reads once, and :func:`recv_reply` parses
what one ``recv`` brought straight out of the read buffer, returning the awaited reply
itself when that is all it was. It reaches the parser through ``_codec.pxd``
(``StreamParser``'s state and ``_parse_line``), so the split costs nothing.

Layering: cimports ``ctlwire.katcp._codec``; imports nothing else of ctlwire.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from libc.errno cimport errno, EAGAIN, EINTR
from libc.stdlib cimport malloc, free
from libc.string cimport memchr

from ctlwire.katcp._codec cimport Message, StreamParser, _parse_line
from ctlwire.katcp.exceptions import KatcpSyntaxError

cdef extern from "<errno.h>":
    int EWOULDBLOCK

cdef extern from "<sys/socket.h>" nogil:
    ssize_t c_recv "recv" (int fd, void *buf, size_t n, int flags)
    ssize_t c_send "send" (int fd, const void *buf, size_t n, int flags)
    int MSG_DONTWAIT
    int MSG_NOSIGNAL

# Bytes one recv_reply() reads at most (as the client's Python reads).
DEF RECV_SIZE = 65536


def recv_reply(StreamParser parser, int fd, bytes mid):
    """Read once from socket ``fd`` and parse what came: the client's fast path.

    One ``recv`` of up to 64 KiB, with the GIL released while it waits (on a
    blocking socket it waits as long as the socket's receive timeout says). When
    what came is exactly one complete line, nothing is carried over from an earlier
    read, and the line is the reply with message id ``mid``, that :class:`Message`
    is returned with no list or bytes object made for it (a ``BlockingClient``
    round trip, measured: about 1 us less than ``sock.recv`` plus
    :meth:`StreamParser.feed`). Anything else is parsed as :meth:`StreamParser.feed`
    does and its list returned.

    Parameters
    ----------
    parser : StreamParser
        The stream's parser: what it carries over from earlier reads is honoured.
    fd : int
        File descriptor of a connected stream socket.
    mid : bytes
        Message id of the awaited reply.

    Returns
    -------
    Message, list or None
        The awaited reply; else the list :meth:`StreamParser.feed` would return;
        ``None`` when the peer has closed the connection.

    Raises
    ------
    OSError
        From ``recv``: ``BlockingIOError`` when the receive timeout passed with
        nothing read, ``InterruptedError`` on a signal, others for a broken link.
    """
    cdef char *buf = <char *>malloc(RECV_SIZE + 1)
    if buf == NULL:
        raise MemoryError()
    try:
        return _recv_reply(parser, buf, fd, mid, False)
    finally:
        free(buf)


cdef object _recv_reply(StreamParser parser, char *buf, int fd, bytes mid, bint quiet):
    # recv_reply() into ``buf`` (RECV_SIZE + 1 bytes); with ``quiet``, a receive timeout
    # or a signal gives [] instead of raising (a signal handler's own exception still
    # propagates)
    cdef ssize_t n
    cdef int err
    cdef Message m
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
    if (buf[n - 1] == b'\n' and buf[0] == b'!' and n - 1 <= parser._max
            and not parser._discarding and len(parser._buf) == 0
            and memchr(buf, b'\n', n) == buf + n - 1
            and memchr(buf, b'\r', n) == NULL):
        try:
            m = _parse_line(<const unsigned char *>buf, n - 1, parser.message_type)
        except KatcpSyntaxError as exc:
            return [exc]
        if m.mid is not None and m.mid == mid:
            return m
        return [m]
    return parser.feed(PyBytes_FromStringAndSize(buf, n))


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

    One per client. It owns the client's message-id counter and read buffer, and sends
    and reads on the client's socket for a thread that holds the client's reader role;
    the client keeps :attr:`fd` in step with its socket (under the write lock) and
    handles every case that is not the usual one in Python (``_client_requests.py``).

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
    cdef char *_rbuf          # the read buffer (RECV_SIZE + 1 bytes)
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
        self._rbuf = <char *>malloc(RECV_SIZE + 1)
        if self._rbuf == NULL:
            raise MemoryError()
        self.parser = parser
        self.write_lock = write_lock
        self.wq = wq
        self.fd = -1
        self._counter = first_mid - 1
        self.reads = 0

    def __dealloc__(self):
        free(self._rbuf)

    def recv_reply(self, int fd, bytes mid):
        """:func:`recv_reply` with this client's parser, into its read buffer."""
        return _recv_reply(self.parser, self._rbuf, fd, mid, False)

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
        got = _recv_reply(self.parser, self._rbuf, fd, mid, True)
        if got is None:
            return False
        return got


def send_nowait(int fd, bytes data):
    """``send(fd, data, MSG_DONTWAIT | MSG_NOSIGNAL)``: bytes sent, or -1 on any error.

    What :class:`RoundTrip` does for a request that fits in the socket buffer; on -1 or
    a partial send the caller goes on with its general (and error-reporting) write path.
    """
    return _send_nowait(fd, data)
