# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled hot path of the device server: a client's bytes in, handlers run, replies out.

``ConnectionCore`` is the base of :class:`ctlwire.katcp.server.ClientConnection` (the
asyncio protocol of one client): its ``data_received`` splits the stream into messages
and runs request handlers at once, in the loop thread; the replies of one read go out in
one ``transport.write``. ``handle_request`` is ``DeviceServerBase.handle_request``.
``ClientRequestConnection`` is what a handler gets as ``req``.

Kept to what runs per request; everything else of the server stays in Python
(``server.py``, ``_server_conn.py``). Measured against the same code in Python: about
2 us less server CPU per ``?watchdog`` round trip (``benchmarks/bench_katcp_server.py``).
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


cdef class ConnectionCore:
    """State of one client connection that the hot path uses (see ClientConnection).

    Parameters
    ----------
    server : DeviceServerBase
        The server of this connection.
    parser : StreamParser
        Splits the client's byte stream into messages.
    """
    cdef public object _server
    cdef public object _transport
    cdef public object _parser
    cdef public list _out         # wire bytes owed to the client, written once per read
    cdef public bint _dirty       # _out is written at the end of this loop iteration
    cdef public bint _closing
    # Whether the server's handle_request is ours (a subclass may override it).
    cdef public bint _fast_dispatch
    cdef object __weakref__

    def __init__(self, server, parser):
        self._server = server
        self._transport = None
        self._parser = parser
        self._out = []
        self._dirty = False
        self._closing = False
        self._fast_dispatch = bool(getattr(server, "_fast_dispatch", False))

    def data_received(self, data):
        """asyncio: bytes from the client. Each message is handled at once."""
        cdef object server = self._server
        cdef bint was_dirty = self._dirty
        cdef list items
        cdef list out
        cdef Message m
        # Marked dirty for the whole batch: replies queued now are written once at the
        # end, without scheduling a flush callback for the next loop iteration.
        self._dirty = True
        items = self._parser.feed(data)
        for item in items:
            if isinstance(item, Message):
                m = <Message>item
                try:
                    if m.mtype == REQUEST and server._handler_executor is None:
                        if self._fast_dispatch:
                            _handle(server, self, m)
                        else:
                            server.handle_request(self, m)
                    else:
                        server._dispatch(self, m)
                except Exception:  # a broken handler hook must not kill the connection
                    log.exception("Error handling %r from %s", m, self.address)
            else:
                server._bad_line(self, item)
            if self._closing:
                break
        out = self._out
        if out:
            transport = self._transport
            if transport is not None:
                self._out = []
                if not self._closing:
                    transport.write(out[0] if len(out) == 1 else b"".join(out))
        if not was_dirty:
            self._dirty = False


def handle_request(server, ConnectionCore connection, Message msg):
    """Run the handler of request ``msg`` and send its reply (DeviceServerBase's)."""
    _handle(server, connection, msg)


cdef _handle(server, ConnectionCore connection, Message msg):
    cdef ClientRequestConnection req
    name = msg.name
    handler = server._request_handlers.get(name)
    if handler is None:
        server._logger.debug("%s INVALID: Unknown request.", name)
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
            if (connection._dirty and not connection._closing
                    and get_ident() == server._loop_tid):
                # Inside data_received: the batch is written when it returns.
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
