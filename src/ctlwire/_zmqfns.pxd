# cython: language_level=3
"""libzmq's message API as function pointers, bound at run time (declarations only).

The compiled receive/send paths of ROC (``roc/_rawzmq``), the groups (``dc/_framing``)
and the TCS recorder (``tcs/_record``) call the libzmq that pyzmq loaded, through the
addresses ``ctlwire._libzmq.function_addresses`` finds; each module keeps its own
``ZmqFns`` and fills it with :func:`bind_fns`. A ``.pxd`` of types and one inline
function: cimporting it loads no other module's engine.
"""
from libc.stdint cimport uintptr_t

ctypedef struct zmq_msg_t:
    long long _d[8]     # opaque 64-byte, 8-aligned block in every libzmq 4.x

ctypedef struct zmq_pollitem_t:
    void* socket
    int fd              # POSIX layout; the loader only binds on Linux
    short events
    short revents

ctypedef int (*f_msg)(zmq_msg_t*) noexcept nogil
ctypedef int (*f_msg_init_size)(zmq_msg_t*, size_t) noexcept nogil
ctypedef int (*f_msg_io)(zmq_msg_t*, void*, int) noexcept nogil
ctypedef void* (*f_msg_data)(zmq_msg_t*) noexcept nogil
ctypedef size_t (*f_msg_size)(zmq_msg_t*) noexcept nogil
ctypedef int (*f_errno)() noexcept nogil
ctypedef int (*f_poll)(zmq_pollitem_t*, int, long) noexcept nogil

ctypedef struct ZmqFns:
    f_msg msg_init
    f_msg msg_close
    f_msg msg_more
    f_msg_init_size msg_init_size
    f_msg_io msg_recv
    f_msg_io msg_send
    f_msg_data msg_data
    f_msg_size msg_size
    f_errno zmq_errno
    f_poll poll


cdef inline uintptr_t _address(dict addresses, str name) except? 0:
    return <uintptr_t>addresses.get(name, 0)


cdef inline void bind_fns(ZmqFns* f, dict addresses, tuple needed) except *:
    """Fill ``f`` from ``addresses`` (libzmq name -> int). Every name of ``needed`` (the
    functions the caller calls) must be there (KeyError); the others may stay NULL."""
    for name in needed:
        if not addresses.get(name):
            raise KeyError(name)
    f.msg_init = <f_msg>_address(addresses, "zmq_msg_init")
    f.msg_close = <f_msg>_address(addresses, "zmq_msg_close")
    f.msg_more = <f_msg>_address(addresses, "zmq_msg_more")
    f.msg_init_size = <f_msg_init_size>_address(addresses, "zmq_msg_init_size")
    f.msg_recv = <f_msg_io>_address(addresses, "zmq_msg_recv")
    f.msg_send = <f_msg_io>_address(addresses, "zmq_msg_send")
    f.msg_data = <f_msg_data>_address(addresses, "zmq_msg_data")
    f.msg_size = <f_msg_size>_address(addresses, "zmq_msg_size")
    f.zmq_errno = <f_errno>_address(addresses, "zmq_errno")
    f.poll = <f_poll>_address(addresses, "zmq_poll")
