# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled framing of group messages: encode, decode, send and drain a burst.

The hot path of the group family. One ZeroMQ frame per group message (format version 2,
described in :mod:`ctlwire.dc.codec`)::

    0  "DC"         magic
    2  version      2
    3  kind         "A" application, "C" control
    4  flags        bit 0: a time field follows the header; bit 1: it is in native order
    5  0 0 0        reserved, zero
    8  term         sender's election term, unsigned 64-bit big-endian
    16 sender       16-byte member id
    32 [time]       send time, 8-byte IEEE double (timed groups only)
    .. payload

:class:`Sender` and :class:`Receiver` work on a pyzmq socket; they call libzmq's
``zmq_msg_*`` functions directly when :mod:`ctlwire._libzmq` found them (see :func:`bind`),
else pyzmq's ``send``/``recv``. No policy lives here: the group decides what a message
means.

Layering: imports the standard library, pyzmq's ``Again`` and ``ctlwire.dc.errors``.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.pythread cimport (PyThread_type_lock, PyThread_allocate_lock, PyThread_free_lock,
                               PyThread_acquire_lock, PyThread_release_lock, WAIT_LOCK,
                               NOWAIT_LOCK)
from cpython.exc cimport PyErr_CheckSignals
from libc.math cimport isfinite
from libc.stdint cimport uint64_t, uintptr_t
from libc.string cimport memcmp, memcpy, memset
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME
from posix.unistd cimport usleep

from collections import deque as _deque
from time import monotonic as _monotonic

from zmq import Again as _Again

from ctlwire.dc.errors import CodecError

cdef extern from "pythread.h":
    ctypedef long long PY_TIMEOUT_T
    int PyThread_acquire_lock_timed(PyThread_type_lock lock, PY_TIMEOUT_T microseconds,
                                    int intr_flag) nogil

DEF HEADER = 32
DEF TIME_LEN = 8
DEF FLAG_TIMED = 1
DEF FLAG_NATIVE = 2
DEF DONTWAIT = 1
DEF SNDMORE = 2
DEF EAGAIN = 11
DEF EINTR = 4

HEADER_LEN = HEADER
VERSION = 2
KIND_APP = 65      # "A"
KIND_CONTROL = 67  # "C"


from ctlwire._zmqfns cimport ZmqFns, bind_fns, zmq_msg_t, zmq_pollitem_t

cdef ZmqFns _z          # libzmq, filled by bind()
# the libzmq functions this module calls
_NEEDED = ("zmq_msg_init", "zmq_msg_close", "zmq_msg_more", "zmq_msg_init_size",
           "zmq_msg_recv", "zmq_msg_send", "zmq_msg_data", "zmq_msg_size", "zmq_errno")
cdef bint _bound = False


def bind(dict addresses):
    """Install libzmq's function addresses (``ctlwire._libzmq.function_addresses()``)."""
    global _bound
    bind_fns(&_z, addresses, _NEEDED)
    _bound = True


def is_bound():
    """True once :func:`bind` installed libzmq's functions."""
    return _bound


# --- the frame layout ---------------------------------------------------------------------

cdef inline void _put_u64(char* p, uint64_t v) noexcept nogil:
    cdef int i
    for i in range(8):
        p[7 - i] = <char>(v & 0xff)
        v >>= 8


cdef inline uint64_t _get_u64(const char* p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v = (v << 8) | <unsigned char>p[i]
    return v


cdef inline void _put_time(char* p, double t, bint native) noexcept nogil:
    cdef uint64_t bits
    if native:
        memcpy(p, &t, 8)
    else:
        memcpy(&bits, &t, 8)
        _put_u64(p, bits)


cdef inline double _get_time(const char* p, bint native) noexcept nogil:
    cdef uint64_t bits
    cdef double t
    if native:
        memcpy(&t, p, 8)
    else:
        bits = _get_u64(p)
        memcpy(&t, &bits, 8)
    return t


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline int _flags(bint timed, bint native) noexcept nogil:
    if not timed:
        return 0
    return FLAG_TIMED | (FLAG_NATIVE if native else 0)


cdef inline int _check(const char* p, Py_ssize_t n, int want_flags) noexcept nogil:
    """0 if the frame is well formed for a receiver expecting ``want_flags``, else an
    error number that :func:`_explain` turns into words."""
    if n < HEADER:
        return 1
    if p[0] != b'D' or p[1] != b'C':
        return 2
    if <unsigned char>p[2] != 2:
        return 3
    if p[3] != b'A' and p[3] != b'C':
        return 4
    if <unsigned char>p[4] != want_flags:
        return 5
    if p[5] != 0 or p[6] != 0 or p[7] != 0:
        return 6
    if want_flags & FLAG_TIMED:
        if n < HEADER + TIME_LEN:
            return 7
        if not isfinite(_get_time(p + HEADER, want_flags & FLAG_NATIVE)):
            return 8
    return 0


cdef str _words(int f):
    if not f & FLAG_TIMED:
        return "untimed"
    return "timed, native order" if f & FLAG_NATIVE else "timed, network order"


cdef str _explain(int err, const char* p, Py_ssize_t n, int want_flags):
    if err == 1:
        return f"frame of {n} bytes is shorter than the {HEADER}-byte header"
    if err == 2:
        return f"bad magic {PyBytes_FromStringAndSize(p, 2)!r} (expected b'DC')"
    if err == 3:
        return f"unsupported version {<unsigned char>p[2]} (expected 2)"
    if err == 4:
        return f"unknown kind byte {<unsigned char>p[3]}"
    if err == 5:
        got = <unsigned char>p[4]
        if got & ~(FLAG_TIMED | FLAG_NATIVE):
            return f"unknown flag bits {got:#04x}"
        return f"{_words(got)} message in a group that is {_words(want_flags)}"
    if err == 6:
        return "reserved header bytes are not zero"
    if err == 7:
        return f"frame of {n} bytes has no room for the 8-byte time field"
    if err == 8:
        return f"time field is not a finite number ({_get_time(p + HEADER, want_flags & FLAG_NATIVE)!r})"
    return f"error {err}"


def encode(int kind, uint64_t term, bytes sender, payload, send_time=None,
           bint native=False):
    """One group message frame.

    Parameters
    ----------
    kind : int
        ``KIND_APP`` or ``KIND_CONTROL``.
    term : int
        The sender's election term (0 to 2**64 - 1).
    sender : bytes
        16-byte member id.
    payload : bytes-like
    send_time : float, optional
        Adds the time field (timed groups).
    native : bool
        Time field in native byte order instead of network order.
    """
    if kind != KIND_APP and kind != KIND_CONTROL:
        raise ValueError(f"unknown message kind {kind!r}")
    if len(sender) != 16:
        raise ValueError(f"member id must be 16 bytes, got {len(sender)}")
    cdef const unsigned char[:] body = payload
    cdef Py_ssize_t extra = TIME_LEN if send_time is not None else 0
    cdef Py_ssize_t size = HEADER + extra + body.shape[0]
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef char* p = PyBytes_AS_STRING(out)
    _write_header(p, kind, _flags(send_time is not None, native), term,
                  PyBytes_AS_STRING(sender))
    if extra:
        _put_time(p + HEADER, <double>send_time, native)
    if body.shape[0]:
        memcpy(p + HEADER + extra, &body[0], body.shape[0])
    return out


cdef inline void _write_header(char* p, int kind, int flags, uint64_t term,
                               const char* sender) noexcept nogil:
    p[0] = b'D'
    p[1] = b'C'
    p[2] = 2
    p[3] = <char>kind
    p[4] = <char>flags
    p[5] = 0
    p[6] = 0
    p[7] = 0
    _put_u64(p + 8, term)
    memcpy(p + 16, sender, 16)


def decode(frame, bint timed, bint native=False):
    """Decode one frame into ``(kind, sender, payload, send_time, term)``.

    Raises
    ------
    CodecError
        The frame is malformed, or its time field does not match ``timed``/``native``.
    """
    cdef const unsigned char[:] view = frame
    cdef Py_ssize_t n = view.shape[0]
    cdef const char* p = ""
    if n:
        p = <const char*>&view[0]
    cdef int want = _flags(timed, native)
    cdef int err = _check(p, n, want)
    if err:
        raise CodecError(_explain(err, p, n, want))
    cdef Py_ssize_t start = HEADER + (TIME_LEN if timed else 0)
    send_time = _get_time(p + HEADER, native) if timed else None
    return (<unsigned char>p[3], PyBytes_FromStringAndSize(p + 16, 16),
            PyBytes_FromStringAndSize(p + start, n - start), send_time, _get_u64(p + 8))


# --- a received message -------------------------------------------------------------------

@cython.freelist(512)
@cython.no_gc  # holds only bytes, str, numbers and the codec: it can never be in a cycle
cdef class GroupMessage:
    """A message received by a group member.

    Attributes
    ----------
    sender : bytes
        Member id of the sender.
    data : bytes
        Raw payload; :meth:`obj` decodes it with the group's codec.
    channel : str
        ``"group"`` (to all), ``"query"`` (a member to this leader) or ``"answer"``
        (the leader to this member).
    send_time, recv_time : float or None
        Wall-clock send and receive times (timed groups).
    term : int
        The sender's election term when it sent the message (its fencing token when the
        sender is the leader).
    codec : PayloadCodec
    """
    cdef readonly bytes sender
    cdef readonly bytes data
    cdef readonly str channel
    cdef readonly object send_time
    cdef readonly object recv_time
    cdef readonly object term
    cdef readonly object codec
    cdef object _dec

    def __init__(self, bytes sender, bytes data, str channel, send_time, recv_time,
                 codec, term=0):
        self.sender = sender
        self.data = data
        self.channel = channel
        self.send_time = send_time
        self.recv_time = recv_time
        self.codec = codec
        self.term = term
        self._dec = getattr(codec, "raw_decode", None) or codec.decode

    cpdef object obj(self):
        """Decode the payload; raises :class:`~ctlwire.dc.errors.CodecError` if malformed."""
        try:
            return self._dec(self.data)
        except Exception:
            # The codec's own decode turns the failure into a one-line CodecError.
            return self.codec.decode(self.data)

    def __repr__(self):
        return (f"GroupMessage(sender={self.sender.hex()}, channel={self.channel!r}, "
                f"term={self.term}, data={self.data[:40]!r})")


# --- sending ------------------------------------------------------------------------------

cdef class Sender:
    """Sends group messages on one socket (the pub port, or the query port).

    Thread-safe: an internal lock serialises senders (the group's thread and users).

    Parameters
    ----------
    sock : zmq.Socket
        The socket (stays owned by its port).
    member_id : bytes
        16-byte id stamped into every header.
    timed, native : bool
        Add the send time; its byte order.
    codec : PayloadCodec
        Encodes :meth:`send_obj`'s objects.
    closed_error : type
        Exception raised by sending after :meth:`close`.
    what : str
        Name used in error messages.
    raw : bool
        Use libzmq directly if :func:`bind` was called (pyzmq otherwise).
    send_timeout : float
        How long an application message waits for room when the socket refuses it (a
        pub socket with ``XPUB_NODROP`` whose slowest subscriber's queue is full): the
        send is retried, with the lock free between tries, until it goes or this time
        has passed; then it is dropped and counted in :attr:`dropped`. Control messages
        never wait: they are dropped at once and counted in :attr:`dropped_control`.
    """
    cdef void* _h
    cdef object _sock
    cdef char _sender[16]
    cdef public double send_timeout
    #: Application messages not sent: the socket stayed full for ``send_timeout``.
    cdef readonly unsigned long long dropped
    #: Control messages not sent: the socket was full.
    cdef readonly unsigned long long dropped_control
    cdef bint _timed, _native
    cdef int _fl
    cdef object _enc, _codec, _closed_error
    cdef str _what
    cdef PyThread_type_lock _lock
    cdef public uint64_t term
    cdef readonly bint raw

    def __cinit__(self):
        self._lock = PyThread_allocate_lock()
        if self._lock == NULL:
            raise MemoryError("Sender lock")

    def __dealloc__(self):
        if self._lock != NULL:
            PyThread_free_lock(self._lock)

    def __init__(self, sock, bytes member_id, bint timed, bint native, codec,
                 closed_error=RuntimeError, str what="group", bint raw=True,
                 double send_timeout=0.0):
        if len(member_id) != 16:
            raise ValueError("member id must be 16 bytes")
        memcpy(self._sender, PyBytes_AS_STRING(member_id), 16)
        self._sock = sock
        self.raw = _bound and raw
        self._h = <void*><uintptr_t>sock.underlying if self.raw else NULL
        self._timed = timed
        self._native = native
        self._fl = _flags(timed, native)
        self._codec = codec
        self._enc = getattr(codec, "raw_encode", None) or codec.encode
        self._closed_error = closed_error
        self._what = what
        self.term = 0
        if not send_timeout >= 0.0:
            raise ValueError(f"send_timeout must be >= 0 seconds, got {send_timeout!r}")
        self.send_timeout = send_timeout
        self.dropped = 0
        self.dropped_control = 0

    def close(self):
        """Refuse every later send (the socket is about to close)."""
        self._acquire()
        self._sock = None
        self._h = NULL
        PyThread_release_lock(self._lock)

    cdef inline void _acquire(self):
        # Wait without the GIL, so a holder that needs the GIL can finish.
        if not PyThread_acquire_lock(self._lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self._lock, WAIT_LOCK)

    cpdef bint send(self, int kind, bytes payload) except -1:
        """Send one message of ``kind``; False if it was dropped (and counted).

        An application message that finds the socket full waits up to
        ``send_timeout`` for room (back-pressure) before it is dropped.
        """
        cdef int r = self._try(kind, payload)
        cdef double deadline
        cdef unsigned int pause = 20
        if r:
            return True
        if kind == KIND_APP and self.send_timeout > 0.0:
            deadline = _monotonic() + self.send_timeout
            while True:
                with nogil:
                    usleep(pause)
                if pause < 1000:
                    pause *= 2
                PyErr_CheckSignals()        # Ctrl-C ends the wait
                if self._try(kind, payload):
                    return True
                if _monotonic() >= deadline:
                    break
        if kind == KIND_APP:
            self.dropped += 1
        else:
            self.dropped_control += 1
        return False

    cdef int _try(self, int kind, bytes payload) except -1:
        # 1: sent; 0: the socket had no room (EAGAIN)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
        cdef Py_ssize_t extra = TIME_LEN if self._timed else 0
        cdef zmq_msg_t m
        cdef char* p
        cdef int rc, err
        cdef bytes frame
        if kind != KIND_APP and kind != KIND_CONTROL:
            raise ValueError(f"unknown message kind {kind!r}")
        self._acquire()
        try:
            if self._sock is None:
                raise self._closed_error(f"{self._what} was left; it cannot send")
            if self._h != NULL:
                if _z.msg_init_size(&m, HEADER + extra + n) != 0:
                    raise MemoryError("zmq_msg_init_size")
                p = <char*>_z.msg_data(&m)
                _write_header(p, kind, self._fl, self.term, self._sender)
                if extra:
                    _put_time(p + HEADER, _now(), self._native)
                memcpy(p + HEADER + extra, PyBytes_AS_STRING(payload), n)
                # Never block here (with the GIL and the lock held): send() waits, and
                # a DEALER without a peer must fail fast rather than hang the caller.
                rc = _z.msg_send(&m, self._h, DONTWAIT)
                if rc < 0:
                    err = _z.zmq_errno()
                    _z.msg_close(&m)
                    if err == EAGAIN:
                        return 0
                    raise OSError(err, f"{self._what}: zmq_msg_send failed (errno {err})")
                return 1
            frame = PyBytes_FromStringAndSize(NULL, HEADER + extra + n)
            p = PyBytes_AS_STRING(frame)
            _write_header(p, kind, self._fl, self.term, self._sender)
            if extra:
                _put_time(p + HEADER, _now(), self._native)
            memcpy(p + HEADER + extra, PyBytes_AS_STRING(payload), n)
            try:
                self._sock.send(frame, DONTWAIT)
            except _Again:
                return 0
            return 1
        finally:
            PyThread_release_lock(self._lock)

    cpdef bint send_obj(self, obj) except -1:
        """Encode ``obj`` with the codec and send it as an application message."""
        cdef object data
        try:
            data = self._enc(obj)
        except Exception:
            data = self._codec.encode(obj)  # raises the codec's one-line TypeError
        if type(data) is not bytes:
            data = bytes(data)
        return self.send(KIND_APP, <bytes>data)


# --- receiving ----------------------------------------------------------------------------

cdef class Receiver:
    """Drains bursts of group messages from one socket.

    Parameters
    ----------
    sock : zmq.Socket
        SUB, DEALER (query port) or ROUTER (answer port; ``router=True``).
    timed, native : bool
        What the group's frames carry.
    channel : str
        ``"group"``, ``"answer"`` or ``"query"``, stamped on each message.
    codec : PayloadCodec
        Stored in each message for :meth:`GroupMessage.obj`.
    router : bool
        Frames arrive after a routing identity, which must equal the header's sender.
    raw : bool
        Use libzmq directly if :func:`bind` was called (pyzmq otherwise).
    """
    cdef void* _h
    cdef object _sock
    cdef bint _timed, _native, _router, _group
    cdef int _want
    cdef str _channel
    cdef object _codec, _dec
    cdef bytes _last
    cdef object _known_sender
    cdef readonly bint raw

    def __init__(self, sock, bint timed, bint native, str channel, codec, bint router=False,
                 bint raw=True):
        self._sock = sock
        self.raw = _bound and raw
        self._h = <void*><uintptr_t>sock.underlying if self.raw else NULL
        self._timed = timed
        self._native = native
        self._want = _flags(timed, native)
        self._channel = channel
        self._group = channel == "group"
        self._codec = codec
        self._dec = getattr(codec, "raw_decode", None) or codec.decode
        self._router = router
        self._last = b"\0" * 16

    cdef inline bytes _sender_of(self, const char* p):
        # Bursts mostly come from one sender: reuse its id object instead of a new one.
        if memcmp(PyBytes_AS_STRING(self._last), p + 16, 16) != 0:
            self._last = PyBytes_FromStringAndSize(p + 16, 16)
        return self._last

    cdef int _one(self, const char* p, Py_ssize_t n, const char* ident, Py_ssize_t ni,
                  dict peers, object keep, dict verdicts, list batch, dict heard,
                  list slow) except -1:
        """Handle one frame: 0 kept, 1 malformed, 2 filtered."""
        cdef int err = _check(p, n, self._want)
        cdef bytes sender
        cdef bint known
        cdef object send_time = None, recv_time = None
        cdef Py_ssize_t start = HEADER
        cdef GroupMessage msg
        if err:
            return 1
        if self._router and (ni != 16 or memcmp(ident, p + 16, 16) != 0):
            return 1  # the query port's routing identity is its member id: forged
        sender = self._sender_of(p)
        if keep is not None:
            verdict = verdicts.get(sender)
            if verdict is None:
                verdict = bool(keep(sender))
                verdicts[sender] = verdict
            if not verdict:
                return 2
        if sender is self._known_sender:
            known = True  # looked up and marked heard earlier in this drain
        else:
            known = sender in peers
            if known:
                heard[sender] = None
                self._known_sender = sender
        if self._timed:
            send_time = _get_time(p + HEADER, self._native)
            recv_time = _now()
            start += TIME_LEN
        if p[3] == b'A' and (known or not self._group):
            msg = GroupMessage.__new__(GroupMessage)
            msg.sender = sender
            msg.data = PyBytes_FromStringAndSize(p + start, n - start)
            msg.channel = self._channel
            msg.send_time = send_time
            msg.recv_time = recv_time
            msg.term = _get_u64(p + 8)
            msg.codec = self._codec
            msg._dec = self._dec
            batch.append(msg)
        else:
            slow.append((<unsigned char>p[3], sender,
                         PyBytes_FromStringAndSize(p + start, n - start), send_time,
                         _get_u64(p + 8)))
        return 0

    def drain(self, int limit, dict peers, object keep, list batch, dict heard, list slow):
        """Receive up to ``limit`` waiting messages without blocking.

        Application messages from members in ``peers`` (or on the leader channel) are
        appended to ``batch`` as :class:`GroupMessage`; their senders become keys of
        ``heard``. Control messages and messages from unknown senders are appended to
        ``slow`` as ``(kind, sender, payload, send_time, term)``. Messages from senders
        for which ``keep(sender)`` is false are dropped.

        Returns
        -------
        (received, malformed, filtered) : tuple of int
        """
        cdef int i, rc, err, got = 0, malformed = 0, filtered = 0, r
        cdef zmq_msg_t m, m2
        cdef dict verdicts = {}
        cdef void* h = self._h
        self._known_sender = None  # membership may have changed since the last drain
        if self._sock is None:
            return (0, 0, 0)
        if h == NULL:
            return self._drain_pyzmq(limit, peers, keep, batch, heard, slow)
        for i in range(limit):
            _z.msg_init(&m)
            rc = _z.msg_recv(&m, h, DONTWAIT)
            if rc < 0:
                err = _z.zmq_errno()
                _z.msg_close(&m)
                if err == EAGAIN or err == EINTR:
                    break
                raise OSError(err, f"{self._channel} receive failed (libzmq errno {err})")
            got += 1
            if self._router:
                if not _z.msg_more(&m):
                    _z.msg_close(&m)
                    malformed += 1
                    continue
                _z.msg_init(&m2)
                if _z.msg_recv(&m2, h, 0) < 0:  # the rest of a message is already here
                    _z.msg_close(&m2)
                    _z.msg_close(&m)
                    malformed += 1
                    continue
                if _z.msg_more(&m2):
                    self._skip_rest(&m2)
                    r = 1
                else:
                    r = self._one(<char*>_z.msg_data(&m2), _z.msg_size(&m2),
                                  <char*>_z.msg_data(&m), _z.msg_size(&m), peers, keep,
                                  verdicts, batch, heard, slow)
                _z.msg_close(&m2)
                _z.msg_close(&m)
            else:
                if _z.msg_more(&m):
                    self._skip_rest(&m)
                    r = 1
                else:
                    r = self._one(<char*>_z.msg_data(&m), _z.msg_size(&m), NULL, 0, peers,
                                  keep, verdicts, batch, heard, slow)
                _z.msg_close(&m)
            if r == 1:
                malformed += 1
            elif r == 2:
                filtered += 1
        return (got, malformed, filtered)

    cdef void _skip_rest(self, zmq_msg_t* m) noexcept:
        # A multipart message is not ours: consume its remaining frames.
        while _z.msg_more(m):
            if _z.msg_recv(m, self._h, 0) < 0:
                return

    def _drain_pyzmq(self, int limit, dict peers, object keep, list batch, dict heard,
                     list slow):
        cdef int i, got = 0, malformed = 0, filtered = 0, r
        cdef dict verdicts = {}
        cdef bytes f, ident
        self._known_sender = None
        sock = self._sock
        for i in range(limit):
            try:
                parts = [sock.recv(DONTWAIT)]
            except _Again:
                break
            while sock.get(13):  # RCVMORE: the rest of the message is already here
                parts.append(sock.recv())
            got += 1
            if len(parts) != (2 if self._router else 1):
                malformed += 1
                continue
            f = parts[len(parts) - 1]  # (wraparound is off in this module)
            ident = parts[0] if self._router else b""
            r = self._one(PyBytes_AS_STRING(f), PyBytes_GET_SIZE(f), PyBytes_AS_STRING(ident),
                          PyBytes_GET_SIZE(ident), peers, keep, verdicts, batch, heard, slow)
            if r == 1:
                malformed += 1
            elif r == 2:
                filtered += 1
        return (got, malformed, filtered)

    def close(self):
        """Stop receiving (the socket is about to close)."""
        self._sock = None
        self._h = NULL


# --- handing messages to the reader ---------------------------------------------------------

cdef class Inbox:
    """Received messages waiting for the user: batches in, one message out.

    The group's thread :meth:`put` s whole bursts; :meth:`get` hands out one message
    without any Python frame, blocking (without the GIL) only when the inbox is empty.

    Parameters
    ----------
    timeout_error : type
        Raised by :meth:`get` when nothing arrives in time.
    what : str
        Name used in error messages.
    """
    cdef object _items
    cdef PyThread_type_lock _signal
    cdef bint _signaled
    cdef object _timeout_error
    cdef str _what

    def __cinit__(self):
        self._signal = PyThread_allocate_lock()
        if self._signal == NULL:
            raise MemoryError("Inbox lock")
        # Held means "nothing new": put() releases it, a waiting get() takes it back.
        PyThread_acquire_lock(self._signal, WAIT_LOCK)

    def __dealloc__(self):
        if self._signal != NULL:
            if self._signaled:
                PyThread_acquire_lock(self._signal, NOWAIT_LOCK)
            PyThread_release_lock(self._signal)
            PyThread_free_lock(self._signal)

    def __init__(self, timeout_error=TimeoutError, str what="inbox"):
        self._items = _deque()
        self._signaled = False
        self._timeout_error = timeout_error
        self._what = what

    def __len__(self):
        return len(self._items)

    cpdef put(self, list batch):
        """Append a burst of messages and wake a waiting reader."""
        self._items.extend(batch)
        if not self._signaled:
            # The flag changes only with the GIL held, so the lock is released exactly
            # while the flag is set.
            self._signaled = True
            PyThread_release_lock(self._signal)

    cpdef object get(self, timeout=None):
        """The next message; raises ``timeout_error`` after ``timeout`` seconds."""
        cdef double deadline = 0.0, left
        cdef PY_TIMEOUT_T micros
        cdef int rc
        items = self._items
        if items:
            return items.popleft()
        if timeout is not None:
            deadline = _monotonic() + <double>timeout
        while True:
            if items:
                return items.popleft()
            if timeout is None:
                micros = -1
            else:
                left = deadline - _monotonic()
                if left <= 0:
                    raise self._timeout_error(f"{self._what}: no message within {timeout} s")
                micros = <PY_TIMEOUT_T>(left * 1e6)
            with nogil:
                rc = PyThread_acquire_lock_timed(self._signal, micros, 1)
            if rc == 1:
                self._signaled = False
            elif rc == 2:
                PyErr_CheckSignals()  # raises KeyboardInterrupt and the like
