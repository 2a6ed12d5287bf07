# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled hot path of the device server: a client's bytes in, handlers run, replies out.

``ConnectionCore`` is the base of :class:`ctlwire.katcp._connection.ClientConnection`
(the asyncio protocol of one client): its ``data_received`` splits the stream into
messages and runs request handlers at once, in the loop thread; the replies of one read
go out in one ``transport.write``. ``handle_request`` is
``DeviceServerBase.handle_request``. ``ClientRequestConnection`` is what a handler gets
as ``req``.

Everything this code needs from the server comes in a :class:`DispatchState` (declared
in ``_dispatch.pxd``) that the server fills in and keeps up to date; the few server
methods it calls (``handle_request``, ``_route``, ``_bad_line``, ``_send_fail``,
``_exception_text``, ``_other_return``) are those of the ``ConnectionOwner`` protocol
in ``_connection.py``.

Kept to what runs per request; everything else of the server stays in Python. Measured
against the same code in Python: about 2 us less server CPU per ``?watchdog`` round
trip (``benchmarks/bench_katcp_server.py``).

Layering: cimports ``ctlwire.katcp._codec``; imports ``ctlwire.katcp.exceptions``.
"""
import logging
import sys
from _thread import get_ident

from ctlwire.katcp._codec cimport Message
from ctlwire.katcp._codec import encode_message
from ctlwire.katcp.exceptions import AsyncReply, FailReply

cdef int REQUEST = 0
cdef int REPLY = 1
cdef int INFORM = 2

cdef object log = logging.getLogger("ctlwire.katcp.server")


cdef class DispatchState:
    """What the compiled request path needs from the server, as declared C fields.

    The server makes one, fills it in when it starts and keeps it up to date (loop
    thread, handler thread), and hands it to every connection it accepts.

    Parameters
    ----------
    owner : ConnectionOwner
        The server; request handlers get it as ``self``.
    handlers : dict
        Request name -> handler function.
    logger : logging.Logger
        The server's logger.
    fast : bool
        Whether the owner's ``handle_request`` is the compiled one.
    """

    def __init__(self, owner, dict handlers, logger, bint fast):
        self.owner = owner
        self.handlers = handlers
        self.logger = logger
        self.loop_tid = 0
        self.threaded = False
        self.fast = fast


cdef class ConnectionCore:
    """State of one client connection that the hot path uses (see ClientConnection).

    Parameters
    ----------
    state : DispatchState
        What the connection needs from the server that accepted it.
    parser : StreamParser
        Splits the client's byte stream into messages.
    """

    def __init__(self, DispatchState state, parser):
        self._state = state
        self._transport = None
        self._parser = parser
        self._out = []
        self._in_read = False
        self._flush_queued = False
        self._closing = False
        self.address = "?"

    def _queue(self, bytes data):
        """Append wire bytes; written at the end of this loop iteration (loop thread)."""
        if self._closing:
            return
        self._out.append(data)
        if not (self._in_read or self._flush_queued):
            self._flush_queued = True
            self._state.owner._queue_flush(self)

    def data_received(self, data):
        """asyncio: bytes from the client. Each message is handled at once."""
        cdef DispatchState state = self._state
        cdef object owner = state.owner
        cdef list items
        cdef list out
        cdef Message m
        # Replies queued while this batch is handled are written once at the end,
        # without scheduling a flush callback for the next loop iteration.
        self._in_read = True
        try:
            items = self._parser.feed(data)
            for item in items:
                if isinstance(item, Message):
                    m = <Message>item
                    try:
                        if m.mtype == REQUEST and not state.threaded:
                            if state.fast:
                                _handle(state, self, m)
                            else:
                                owner.handle_request(self, m)
                        else:
                            owner._route(self, m)
                    except Exception:  # a broken handler hook must not kill the connection
                        log.exception("Error handling %r from %s", m, self.address)
                else:
                    owner._bad_line(self, item)
                if self._closing:
                    break
            out = self._out
            if out:
                transport = self._transport
                if transport is not None:
                    self._out = []
                    if not self._closing:
                        transport.write(out[0] if len(out) == 1 else b"".join(out))
        finally:
            self._in_read = False


def handle_request(ConnectionCore connection, Message msg):
    """Run the handler of request ``msg`` and send its reply (DeviceServerBase's)."""
    _handle(connection._state, connection, msg)


cdef _handle(DispatchState state, ConnectionCore connection, Message msg):
    cdef ClientRequestConnection req
    cdef object server = state.owner
    name = msg.name
    handler = state.handlers.get(name)
    if handler is None:
        state.logger.debug("%s INVALID: Unknown request.", name)
        connection._send(encode_message(REPLY, name, (b"invalid", b"Unknown request."),
                                        msg.mid))
        return
    req = ClientRequestConnection.__new__(ClientRequestConnection)
    req.client_connection = connection
    req.msg = msg
    req._replied = False
    try:
        reply = handler(server, req, msg)
    except AsyncReply:
        return
    except FailReply as exc:
        server._send_fail(req, str(exc))
        return
    except Exception:
        server._send_fail(req, server._exception_text(msg, sys.exc_info()))
        return
    if isinstance(reply, Message):
        if not req._replied:
            req._replied = True
            data = encode_message(REPLY, (<Message>reply).name,
                                  (<Message>reply).arguments, msg.mid)
            if ((connection._in_read or connection._flush_queued)
                    and not connection._closing and get_ident() == state.loop_tid):
                # A write of _out is already due (end of data_received or of this loop
                # iteration): join it.
                connection._out.append(data)
            else:
                connection._send(data)
    else:
        server._other_return(req, reply)


cdef class ClientRequestConnection:
    """A request in progress: what a handler gets as ``req``.

    Parameters
    ----------
    client_connection : ClientConnection
        The client that sent the request.
    req_msg : Message
        The request.
    """
    cdef public object client_connection
    cdef public Message msg
    cdef public bint _replied

    def __init__(self, client_connection, Message req_msg):
        self.client_connection = client_connection
        self.msg = req_msg
        self._replied = False

    @property
    def replied(self):
        """Whether the reply has been sent."""
        return self._replied

    def inform(self, *args):
        """Send ``#<name>[mid] args...`` as part of the answer (thread-safe)."""
        if self._replied:
            raise RuntimeError(f"Cannot send inform for request {self.msg!r} after "
                               "sending reply.")
        self.client_connection._send(encode_message(INFORM, self.msg.name, args,
                                                    self.msg.mid))

    def reply(self, *args):
        """Send ``!<name>[mid] args...`` (once; thread-safe)."""
        if self._replied:
            raise RuntimeError(f"Reply to request {self.msg!r} already sent.")
        self._replied = True
        self.client_connection._send(encode_message(REPLY, self.msg.name, args,
                                                    self.msg.mid))

    def reply_with_message(self, Message rep_msg):
        """Send a prepared reply message (its mid is set from the request)."""
        if self._replied:
            raise RuntimeError(f"Reply to request {self.msg!r} already sent.")
        if rep_msg.mtype != REPLY:
            raise ValueError(f"reply_with_message() needs a reply, not {rep_msg!r}")
        self._replied = True
        rep_msg.mid = self.msg.mid
        self.client_connection._send(
            encode_message(REPLY, rep_msg.name, rep_msg.arguments, self.msg.mid))

    def make_reply(self, *args):
        """Build (not send) the reply message with ``args``."""
        # What Message.reply_to_request does, without the classmethod's re-packing.
        return Message(REPLY, self.msg.name, args, self.msg.mid)

    def mass_inform(self, msg):
        """Send an inform to every client."""
        self.client_connection.mass_inform(msg)


# -- writing from another thread while holding the GIL --------------------------------------

cdef extern from *:
    """
    #include <errno.h>
    #include <poll.h>
    #include <string.h>
    #include <sys/ioctl.h>
    #ifdef __linux__
    #include <linux/sockios.h>
    #endif
    #include <sys/socket.h>
    #include <time.h>
    #ifndef MSG_NOSIGNAL
    #define MSG_NOSIGNAL 0  /* (macOS: Python ignores SIGPIPE) */
    #endif
    /* Write len bytes of buf to the socket fd, keeping the caller's GIL.  Returns the
       bytes written: 0 when the socket could take nothing at once (nothing written),
       len when all, or fewer when a partial write could not be finished within
       timeout_ms (the socket stayed full); -errno on an error.  With lines, buf is
       whole lines, each ending in a newline: a write cut short only finishes the line it cut
       (waiting as above), and the bytes written end a line unless that wait failed. */
    static Py_ssize_t ctlwire_send_whole(int fd, const char *buf, Py_ssize_t len,
                                         int timeout_ms, int lines) {
        Py_ssize_t done = 0, goal = len;  /* goal: where the write may stop */
        struct timespec t0, t1;
        int waited = 0;
    #ifdef SIOCOUTQ
        if (lines) {
            /* the lines the socket has room for (half its buffer, as the kernel
               counts its own overhead), so that a write rarely stops in a line */
            int queued = 0, sndbuf = 0;
            socklen_t sl = sizeof(sndbuf);
            if (ioctl(fd, SIOCOUTQ, &queued) == 0
                    && getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &sl) == 0) {
                Py_ssize_t room = (Py_ssize_t)sndbuf / 2 - queued;
                if (room < len) {
                    goal = 0;
                    for (Py_ssize_t i = room - 1; i >= 0; i--)
                        if (buf[i] == '\\n') { goal = i + 1; break; }
                    if (goal == 0) return 0;  /* not a whole line fits: nothing */
                }
            }
        }
    #endif
        while (done < goal) {
            ssize_t n = send(fd, buf + done, (size_t)(goal - done),
                             MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) { done += n; continue; }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
            if (done == 0) return 0;  /* full before the first byte: nothing written */
            if (lines) {
                /* the socket is full: only the line it cut must be finished now */
                if (buf[done - 1] == '\\n') return done;
                const char *nl = memchr(buf + done, '\\n', (size_t)(goal - done));
                goal = nl != NULL ? (Py_ssize_t)(nl - buf) + 1 : goal;
                lines = 0;  /* (from here on, as a whole write up to goal) */
            }
            /* part of a line is out: the rest must follow before anything else */
            if (!waited) { clock_gettime(CLOCK_MONOTONIC, &t0); waited = 1; }
            clock_gettime(CLOCK_MONOTONIC, &t1);
            long spent = (long)((t1.tv_sec - t0.tv_sec) * 1000
                                + (t1.tv_nsec - t0.tv_nsec) / 1000000);
            if (spent >= timeout_ms) return done;
            struct pollfd p;
            p.fd = fd; p.events = POLLOUT; p.revents = 0;
            if (poll(&p, 1, (int)(timeout_ms - spent)) < 0 && errno != EINTR)
                return -errno;
        }
        return done;
    }
    """
    Py_ssize_t ctlwire_send_whole(int fd, const char *buf, Py_ssize_t len,
                                  int timeout_ms, int lines)


def send_whole(int fd, bytes data, double timeout=0.1, bint lines=False):
    """Write ``data`` to the non-blocking socket ``fd`` from any thread, *keeping the
    GIL* throughout, so no other Python code of this process (an event loop's writes
    included) can put bytes on that socket in between.

    Returns the number of bytes written: 0 when the socket could take nothing at once
    (nothing was written), ``len(data)`` when all, fewer when a write that had begun
    could not be finished within ``timeout`` seconds (the stream is then cut in the
    middle of ``data``: close it). Raises ``OSError`` for a socket error.

    With ``lines`` (``data`` is whole lines, each ending in a newline), a socket that
    fills part way only holds the write up to the end of the line it cut: the count
    returned then ends a line (``data[n - 1]`` is a newline) and the rest of ``data``
    can follow another way; it ends in the middle of a line only when that line could
    not be finished within ``timeout``.

    For ``ReplayDevice``: its replay thread writes readings at their deadlines
    without waking the event loop (see ``ctlwire.katcp.recording``).
    """
    cdef Py_ssize_t n
    cdef int ms = <int>(timeout * 1000) if timeout > 0 else 0
    n = ctlwire_send_whole(fd, data, len(data), ms, lines)
    if n < 0:
        import os
        raise OSError(-n, os.strerror(-n))
    return n


def send_if_idle(ConnectionCore conn, int fd, bytes data, double timeout=0.1,
                 bint lines=False):
    """:func:`send_whole` to a client of the server, if nothing of its output waits.

    ``fd`` is the client's socket. When the connection or its transport is closing,
    holds queued output (``_out``, a flush due) or its transport holds unsent bytes,
    nothing is written and 0 is returned: ``data`` must then follow that output through the
    loop. The checks and the write run without Python code in between (uvloop's
    transport answers in compiled code), so the loop thread cannot start a write of
    its own after the checks.
    """
    cdef object transport = conn._transport
    if conn._closing or transport is None or conn._out or conn._flush_queued:
        return 0
    # a transport that is closing may have closed ``fd`` already, and the number may
    # belong to a new connection by now: never write then
    if transport.is_closing() or transport.get_write_buffer_size():
        return 0
    return send_whole(fd, data, timeout, lines)
