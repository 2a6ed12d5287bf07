# cython: language_level=3, boundscheck=False, wraparound=False
"""Multipart send/receive straight into libzmq, for the broker's and workers' hot loops.

pyzmq spends several microseconds per frame in Python-level bookkeeping; MDP messages
have five to seven frames.  This module calls libzmq's ``zmq_msg_*`` functions on the
socket pyzmq created (``Socket.underlying``), holding the GIL except while blocked.

No libzmq header or link step is needed: the function addresses are handed in at run
time (see :mod:`ctlwire.roc._fastzmq`, which finds the libzmq that pyzmq loaded).
``zmq_msg_t`` is an opaque 64-byte, 8-aligned block in every libzmq 4.x.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy
from libc.stdint cimport uintptr_t

from zmq import FD as _ZMQ_FD



from ctlwire._zmqfns cimport ZmqFns, bind_fns, zmq_msg_t, zmq_pollitem_t

cdef ZmqFns _z          # libzmq, filled by bind()
# the libzmq functions this module calls
_NEEDED = ("zmq_msg_init", "zmq_msg_close", "zmq_msg_more", "zmq_msg_init_size",
           "zmq_msg_recv", "zmq_msg_send", "zmq_msg_data", "zmq_msg_size", "zmq_errno",
           "zmq_poll")
cdef bint _bound = False

DEF ZMQ_DONTWAIT = 1
DEF ZMQ_SNDMORE = 2
DEF EINTR = 4


def bind(dict addresses):
    """Install the libzmq function addresses (name -> int) found by the loader."""
    global _bound
    bind_fns(&_z, addresses, _NEEDED)
    _bound = True


def is_bound():
    return _bound


class RawError(Exception):
    """A libzmq call failed; ``errno`` holds libzmq's error number."""

    def __init__(self, int err, str what):
        super().__init__(f"{what} failed (libzmq errno {err})")
        self.errno = err


cdef object _send_frames(void* h, list frames):
    # send as one message without blocking; False when not queued (EAGAIN)
    cdef zmq_msg_t m
    cdef Py_ssize_t i, n = len(frames)
    cdef bytes f
    cdef Py_ssize_t size
    cdef int rc, err
    cdef int flags
    for i in range(n):
        # check every frame first: a half-sent multipart message would wedge the socket
        if type(frames[i]) is not bytes:
            raise TypeError(f"frame {i} is {type(frames[i]).__name__}, not bytes")
    for i in range(n):
        f = <bytes>frames[i]
        size = PyBytes_GET_SIZE(f)
        if _z.msg_init_size(&m, <size_t>size) != 0:
            raise RawError(_z.zmq_errno(), "zmq_msg_init_size")
        if size:
            memcpy(_z.msg_data(&m), PyBytes_AS_STRING(f), <size_t>size)
        flags = ZMQ_DONTWAIT | (ZMQ_SNDMORE if i + 1 < n else 0)
        rc = _z.msg_send(&m, h, flags)
        if rc < 0:
            err = _z.zmq_errno()
            _z.msg_close(&m)
            if err == 11 and i == 0:
                return False
            raise RawError(err, "zmq_msg_send")
    return True


cdef list _recv_frames(void* h, zmq_msg_t* m):
    # all frames of a message whose first frame is in ``m`` (the rest are already
    # queued, so they are read without waiting); closes ``m``
    cdef int rc, err
    cdef list frames = [PyBytes_FromStringAndSize(<char*>_z.msg_data(m), _z.msg_size(m))]
    while _z.msg_more(m):
        rc = _z.msg_recv(m, h, 0)
        if rc < 0:
            err = _z.zmq_errno()
            _z.msg_close(m)
            raise RawError(err, "zmq_msg_recv")
        frames.append(PyBytes_FromStringAndSize(<char*>_z.msg_data(m), _z.msg_size(m)))
    _z.msg_close(m)
    return frames


cdef class RawSocket:
    """Multipart I/O on a pyzmq socket's underlying libzmq socket.

    Keeps a reference to the pyzmq socket, which stays the owner (close it there).
    Use from one thread at a time, like any ZeroMQ socket.
    """
    cdef void* _h
    cdef object _owner

    def __cinit__(self, sock):
        if not _bound:
            raise RuntimeError("libzmq functions not bound; use ctlwire.roc._fastzmq")
        self._owner = sock
        self._h = <void*><uintptr_t>sock.underlying

    cpdef list recv_multipart(self, bint block=True):
        """All frames of the next message as bytes, or ``None`` if none arrived
        (receive timeout, ``block=False`` with nothing queued, or a signal)."""
        cdef zmq_msg_t m
        cdef int rc
        cdef int err
        cdef void* h = self._h
        cdef int flags = 0 if block else ZMQ_DONTWAIT
        _z.msg_init(&m)
        if block:
            with nogil:
                rc = _z.msg_recv(&m, h, flags)
        else:
            rc = _z.msg_recv(&m, h, flags)
        if rc < 0:
            err = _z.zmq_errno()
            _z.msg_close(&m)
            if err == 11 or err == EINTR:  # EAGAIN: timeout / nothing queued
                return None
            raise RawError(err, "zmq_msg_recv")
        # (the rest of a multipart message is already here: no need to drop the GIL)
        return _recv_frames(h, &m)

    cpdef send_multipart(self, list frames):
        """Send ``frames`` (bytes) as one message without blocking.

        A full queue (EAGAIN) drops the message like a ROUTER does for unknown or
        slow peers; other errors raise :class:`RawError`.
        """
        return _send_frames(self._h, frames)

    cpdef int poll_with_fd(self, int fd, bint want_out, long timeout_ms):
        """Wait up to ``timeout_ms`` for this socket (readable, or writable when
        ``want_out``) or the file descriptor ``fd`` (readable).

        Returns a bit mask: 1 socket readable, 2 ``fd`` readable, 4 socket writable;
        0 on timeout or signal.
        """
        cdef zmq_pollitem_t items[2]
        cdef int rc, err, result = 0
        items[0].socket = self._h
        items[0].fd = 0
        items[0].events = 1 | (2 if want_out else 0)  # ZMQ_POLLIN | ZMQ_POLLOUT
        items[0].revents = 0
        items[1].socket = NULL
        items[1].fd = fd
        items[1].events = 1
        items[1].revents = 0
        with nogil:
            rc = _z.poll(items, 2, timeout_ms)
        if rc < 0:
            err = _z.zmq_errno()
            if err == EINTR:
                return 0
            raise RawError(err, "zmq_poll")
        if items[0].revents & 1:
            result |= 1
        if items[1].revents & 1:
            result |= 2
        if items[0].revents & 2:
            result |= 4
        return result


cdef extern from "poll.h" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int c_poll "poll"(pollfd* fds, unsigned long nfds, int timeout)


cdef class RawMulti:
    """Receive from whichever of several pyzmq sockets has a message, cheaply.

    ``zmq_poll`` asks every socket for its state (a system call each) on every call.
    This keeps a bit mask of sockets that may hold messages and reads those without
    waiting; a socket that reports "nothing" (EAGAIN) leaves the mask and is watched
    through its ``ZMQ_FD`` instead, which libzmq signals when a new message makes an
    empty socket readable (edge-triggered, hence the mask).  Sending on a socket can
    consume that signal, so :meth:`send` and :meth:`mark` put a socket back in the
    mask.  Use from one thread at a time; keeps references to the sockets.
    """
    cdef void* h[64]
    cdef pollfd fds[64]
    cdef int n
    cdef int next_i
    cdef unsigned long long ready
    cdef list _owners

    def __cinit__(self, list socks):
        cdef int i
        if not _bound:
            raise RuntimeError("libzmq functions not bound; use ctlwire.roc._fastzmq")
        if not 0 < len(socks) <= 64:
            raise ValueError(f"1 to 64 sockets per RawMulti, got {len(socks)}")
        self._owners = list(socks)
        self.n = len(socks)
        for i in range(self.n):
            self.h[i] = <void*><uintptr_t>socks[i].underlying
            self.fds[i].fd = socks[i].getsockopt(_ZMQ_FD)
            self.fds[i].events = 1  # POLLIN
            self.fds[i].revents = 0
        self.next_i = 0
        self.ready = (~<unsigned long long>0) >> (64 - self.n)

    cpdef void mark(self, int i):
        """Look at socket ``i`` on the next :meth:`recv` (it may hold messages)."""
        self.ready |= (<unsigned long long>1) << i

    cpdef void mark_all(self):
        """Look at every socket on the next :meth:`recv`."""
        self.ready = (~<unsigned long long>0) >> (64 - self.n)

    cpdef send(self, int i, list frames):
        """Send ``frames`` on socket ``i`` without blocking; False if not queued."""
        self.ready |= (<unsigned long long>1) << i
        return _send_frames(self.h[i], frames)

    cpdef tuple recv(self, long timeout_ms):
        """``(index, frames)`` of the next message on any socket, or ``None`` when
        none arrived within ``timeout_ms`` (or a signal came)."""
        cdef zmq_msg_t m
        cdef int i, k, rc, err
        cdef unsigned long long bit
        cdef bint waited = False
        while True:
            # round-robin over the sockets that may hold messages
            for k in range(self.n):
                if not self.ready:
                    break
                i = self.next_i
                self.next_i = i + 1 if i + 1 < self.n else 0
                bit = (<unsigned long long>1) << i
                if not (self.ready & bit):
                    continue
                _z.msg_init(&m)
                rc = _z.msg_recv(&m, self.h[i], ZMQ_DONTWAIT)
                if rc < 0:
                    err = _z.zmq_errno()
                    _z.msg_close(&m)
                    if err != 11 and err != EINTR:
                        raise RawError(err, "zmq_msg_recv")
                    self.ready &= ~bit
                    continue
                return (i, _recv_frames(self.h[i], &m))
            if waited:
                return None
            for i in range(self.n):
                self.fds[i].revents = 0
            with nogil:
                rc = c_poll(self.fds, self.n, timeout_ms)
            if rc <= 0:
                return None  # timeout, or a signal: the caller looks at its flags
            for i in range(self.n):
                if self.fds[i].revents:
                    self.ready |= (<unsigned long long>1) << i
            waited = True
