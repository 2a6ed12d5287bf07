# C-level API of the device server's compiled request path (ctlwire.katcp._dispatch).
#
# What a connection needs from its owner (the server) is handed to it as one
# DispatchState: the compiled code reads these fields, never the server's attributes by
# name. The methods it calls on ``owner`` are declared by the ConnectionOwner protocol in
# ctlwire/katcp/_connection.py. May cimport: ctlwire.katcp._codec.

cdef class DispatchState:
    # The server; request handlers get it as ``self``.
    cdef public object owner
    # Request name -> handler function (the server class's table).
    cdef public dict handlers
    cdef public object logger
    # Ident of the thread running the server's event loop; 0 while it is not running.
    cdef public unsigned long loop_tid
    # Handlers run in a worker thread (set_concurrency_options(handler_thread=True)).
    cdef public bint threaded
    # The owner's handle_request is the compiled one (no subclass overrides it).
    cdef public bint fast


cdef class ConnectionCore:
    cdef public DispatchState _state
    cdef public object _transport
    cdef public object _parser
    # Wire bytes owed to the client, written in one transport.write.
    cdef public list _out
    # Inside data_received: _out is written when it returns.
    cdef public bint _in_read
    # In the owner's flush list: _out is written at the end of this loop iteration.
    cdef public bint _flush_queued
    cdef public bint _closing
    # host:port of the client.
    cdef public object address
    cdef object __weakref__
