"""Threaded KATCP clients: ``DeviceClient``, ``CallbackClient`` and ``BlockingClient``.

The names and semantics follow katcp-python so that users only change their imports.
Underneath there is no event loop: one I/O thread per client waits on the socket with a
selector and feeds the codec's ``StreamParser``; callers write straight to the socket
(without blocking) under a lock; and a thread in ``blocking_request`` reads the socket
itself while no other reader is active, so a sequential request costs no thread hand-off
at all.

This module is the public face of the threaded clients; the parts live in modules by
role:

* ``_client_link``: :class:`~ctlwire.katcp._client_link.ClientLink`, the socket, I/O
  thread, reconnection and write queue;
* ``_client_device``: :class:`DeviceClient`, the handler API and protocol detection;
* ``_client_requests``: :class:`CallbackClient`, :class:`BlockingClient` (request
  tracking, callbacks, blocking requests) and :func:`request_check`.

Threading model
---------------
* Exactly one thread at a time reads and dispatches messages (it holds the *read lock*):
  normally the client's I/O thread, or a thread waiting in ``blocking_request``.
  Handlers (``reply_*``, ``inform_*``, ``unhandled_*``, callbacks) therefore never run
  concurrently, but they may run in either of those threads.
* Handlers and callbacks must not block; requests sent from inside them are queued and
  written in one batch when the current chunk of input has been dispatched.

Layering: imports those modules and ``exceptions`` only (it re-exports them).
"""
from __future__ import annotations

from ctlwire.katcp._client_device import DeviceClient
from ctlwire.katcp._client_requests import (AsyncClient, BlockingClient, CallbackClient,
                                            request_check)
from ctlwire.katcp.exceptions import KatcpTimeoutError

__all__ = [
    "DeviceClient",
    "CallbackClient",
    "AsyncClient",
    "BlockingClient",
    "KatcpTimeoutError",
    "request_check",
]
