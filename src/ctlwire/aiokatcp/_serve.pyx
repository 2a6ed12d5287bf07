# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled request path of ``ctlwire.aiokatcp``'s device server.

:func:`serve_read` is ``ClientConnection.data_received`` for servers on the inline path
(see ``server.py``): parse the read, build each ``Message``, and for a request look the
handler up, step its coroutine once and encode what it returned straight into the
connection's output, which leaves in one write at the end of the read. It does what the
Python methods ``ClientConnection._serve_read_py`` and ``DeviceServer._dispatch`` do
(they are its reference: ``tests/aiokatcp/test_dispatch.py`` runs both on random
request streams) with two differences that are why it exists: no bytecode dispatch,
and the coroutine is stepped with ``PyIter_Send``, which reports a finished coroutine
without raising and catching ``StopIteration``.

It reaches the server and the connection through Python attributes: exactly those
declared by the protocols ``ServingServer`` and ``ServedConnection`` in ``server.py``
(not a C-level state object as ``ctlwire.katcp._dispatch`` has: these objects are
aiokatcp's public classes, which users subclass).

Layering: imports ``ctlwire.katcp.core`` (the codec), ``ctlwire.aiokatcp.core`` and
``ctlwire.aiokatcp.connection``.
"""
from cpython.ref cimport PyObject, Py_XDECREF
from cpython.unicode cimport PyUnicode_AsUTF8String

from ctlwire.katcp.core import Message as _CMessage, encode_message as _encode_line
from ctlwire.aiokatcp import core as _core
from ctlwire.aiokatcp.connection import FailReply as _FailReply

cdef extern from "Python.h":
    # 0: returned (*presult is the value), 1: yielded (*presult), -1: raised
    int PyIter_Send(object iterator, object arg, PyObject **presult) except -1

cdef object _Message = _core.Message
cdef object _new = object.__new__
cdef tuple _FROM_CODEC = tuple(_core._FROM_CODEC)
cdef object _REQUEST = _core.Message.Type.REQUEST
cdef dict _encoders = _core._encoders
cdef object _encoder_for = _core.encoder_for
cdef object _encode_all = _core.encode_all
cdef bytes _OK = b"ok"


def serve_read(conn, RequestContext, data):
    """Serve one read of ``conn`` (a server ``ClientConnection``)."""
    cdef list items
    server = conn.owner
    conn._dispatching = True
    try:
        items = conn._parser.feed(data)
        for item in items:
            if type(item) is not _CMessage:
                conn._malformed(item)
                continue
            msg = _new(_Message)
            mtype = _FROM_CODEC[item.mtype]
            msg.mtype = mtype
            msg.name = item.name
            msg.arguments = item.arguments
            mid = item.mid
            msg.mid = None if mid is None else int(mid)
            try:
                if mtype is _REQUEST:
                    _dispatch(server, conn, msg, mid, RequestContext)
                else:
                    server.handle_message(conn, msg)
            except Exception:
                conn.logger.exception("Exception in message handler")
    finally:
        conn._dispatching = False
        out = conn._out
        if out:
            # Connection._flush, inline
            conn._flush_pending = False
            conn._out = []
            conn._out_bytes = 0
            if not conn._closed:
                conn._transport.write(out[0] if len(out) == 1 else b"".join(out))


cdef object _call_direct(tuple direct, server, ctx, list raw):
    cdef tuple decoders = <tuple>direct[1]
    cdef Py_ssize_t n = len(decoders), i
    func = direct[0]
    try:
        if n == 0:
            return func(server, ctx)
        if n == 1:
            value = decoders[0](raw[0])
            return func(server, ctx, value)
        values = [server, ctx]
        for i in range(n):
            values.append(decoders[i](raw[i]))
    except ValueError as exc:
        raise _FailReply(str(exc)) from exc
    return func(*values)


cdef _dispatch(server, conn, msg, raw_mid, RequestContext):
    cdef PyObject *res = NULL
    cdef int step
    if server._stop_task is not None:
        return
    ctx = RequestContext(conn, msg)
    if len(server._pending) >= server._max_pending:
        server._buffered_requests.append(ctx)
        return
    handler = server._request_handlers.get(msg.name)
    if handler is None or handler._needs_task:
        server._start_request(ctx)
        return
    direct = handler._direct
    try:
        if direct is not None and len(<list>msg.arguments) == len(<tuple>direct[1]):
            # every parameter given: decode here and call the handler itself
            coro = _call_direct(direct, server, ctx, msg.arguments)
        else:
            coro = handler(server, ctx, msg)
        step = PyIter_Send(coro, None, &res)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        server._request_failed(ctx, exc)
        return
    value = <object>res
    Py_XDECREF(res)
    if step == 1:
        # suspended: it carries on in a task (and counts as pending)
        server._track(ctx, server.loop.create_task(server._finish_later(ctx, coro, value)))
        return
    if ctx._replied:
        if value is not None:
            try:  # raised, so that the #log error carries a traceback
                raise RuntimeError("handler both replied and returned a value")
            except RuntimeError as exc:
                server._request_failed(ctx, exc)
            return
    else:
        if value is None:
            args = [_OK]
        elif type(value) is tuple:
            args = [_OK] + _encode_all(value)
        elif type(value) is bytes:
            args = [_OK, value]
        elif type(value) is str:
            args = [_OK, PyUnicode_AsUTF8String(value)]
        else:
            enc = _encoders.get(type(value))
            if enc is None:
                enc = _encoder_for(type(value))
            args = [_OK, enc(value)]
        ctx._replied = True
        line = _encode_line(1, msg.name, args, raw_mid)
        if conn._closed:
            conn._closed_warning()
        else:
            conn._out.append(line)
            conn._out_bytes += len(line)
    if conn._paused:
        # as aiokatcp, a reply the client is not reading counts as pending
        server._track(ctx, server.loop.create_task(conn.drain()))
