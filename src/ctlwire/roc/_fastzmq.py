"""Find the libzmq that pyzmq loaded and bind :mod:`ctlwire.roc._rawzmq` to it.

``raw_socket(sock)`` returns an object with ``recv_multipart(block)`` and
``send_multipart(frames)`` working on the pyzmq socket ``sock``; when the fast path
cannot be set up (not Linux, libzmq not found, extension missing) it returns ``None``
and callers keep using pyzmq.  ``CTLWIRE_ROC_NO_RAWZMQ=1`` forces the pyzmq path.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from typing import Any

import zmq

from .._libzmq import function_addresses

log = logging.getLogger("ctlwire.roc")

_NAMES = ("zmq_msg_init", "zmq_msg_close", "zmq_msg_more", "zmq_msg_init_size",
          "zmq_msg_recv", "zmq_msg_send", "zmq_msg_data", "zmq_msg_size", "zmq_errno",
          "zmq_poll")
_state: dict[str, Any] = {}


def _setup() -> Any:
    if "mod" in _state:
        return _state["mod"]
    mod = None
    if os.environ.get("CTLWIRE_ROC_NO_RAWZMQ") != "1":
        try:
            from ctlwire._ext import load_extension
            raw = load_extension("ctlwire.roc._rawzmq")
            # the addresses in the libzmq pyzmq loaded (shared with the group framing)
            addresses = function_addresses(_NAMES)
            if addresses is None:
                raise OSError("libzmq's functions are not reachable (see ctlwire._libzmq)")
            raw.bind(addresses)
            mod = raw
        except (OSError, ImportError, AttributeError) as exc:
            log.debug("raw libzmq path unavailable, using pyzmq: %s", exc)
    _state["mod"] = mod
    return mod


def raw_socket(sock: zmq.Socket) -> Any:
    """A :class:`ctlwire.roc._rawzmq.RawSocket` for ``sock``, or ``None``."""
    mod = _setup()
    return None if mod is None else mod.RawSocket(sock)


def wire(sock: zmq.Socket) -> tuple[Any, Any]:
    """``(recv, send)`` for ``sock``: the raw libzmq path when available, else pyzmq.

    ``recv(block=True)`` returns a list of bytes or ``None`` (timeout / nothing
    queued); ``send(frames)`` never blocks and returns ``False`` when the message
    could not be queued (no connected peer with ``ZMQ_IMMEDIATE``, or full queue).
    """
    raw = raw_socket(sock)
    if raw is not None:
        return raw.recv_multipart, raw.send_multipart

    def recv(block: bool = True) -> list | None:
        try:
            return sock.recv_multipart(0 if block else zmq.NOBLOCK)
        except zmq.Again:
            return None

    def send(frames: list) -> bool:
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    return recv, send


def poller(sock: zmq.Socket, fd: int) -> Any:
    """``poll(want_out, timeout_ms) -> mask`` over ``sock`` and the file descriptor
    ``fd``: bit 1 socket readable, 2 ``fd`` readable, 4 socket writable."""
    raw = raw_socket(sock)
    if raw is not None:
        return lambda want_out, timeout_ms: raw.poll_with_fd(fd, want_out, timeout_ms)
    p = zmq.Poller()
    p.register(sock, zmq.POLLIN)
    p.register(fd, zmq.POLLIN)
    state = {"out": False}

    def poll(want_out: bool, timeout_ms: int) -> int:
        if want_out != state["out"]:
            state["out"] = want_out
            p.modify(sock, zmq.POLLIN | zmq.POLLOUT if want_out else zmq.POLLIN)
        mask = 0
        for item, ev in p.poll(timeout_ms):
            if item is sock:
                mask |= (1 if ev & zmq.POLLIN else 0) | (4 if ev & zmq.POLLOUT else 0)
            else:
                mask |= 2
        return mask

    return poll


class _PyMulti:
    """pyzmq stand-in for :class:`ctlwire.roc._rawzmq.RawMulti`."""

    __slots__ = ("_socks", "_poller", "_index", "_ready")

    def __init__(self, socks: list[zmq.Socket]) -> None:
        self._socks = list(socks)
        self._poller = zmq.Poller()
        self._index = {}
        for i, s in enumerate(self._socks):
            self._poller.register(s, zmq.POLLIN)
            self._index[s] = i
        self._ready: deque[int] = deque()

    def mark(self, i: int) -> None:
        pass  # zmq.Poller asks every socket each time: nothing to remember

    def mark_all(self) -> None:
        pass

    def send(self, i: int, frames: list) -> bool:
        try:
            self._socks[i].send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def recv(self, timeout_ms: int) -> tuple[int, list] | None:
        for waited in (False, True):
            while self._ready:
                i = self._ready.popleft()
                try:
                    return i, self._socks[i].recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    continue
            if waited:
                return None
            self._ready.extend(self._index[s] for s, ev in self._poller.poll(timeout_ms)
                               if ev & zmq.POLLIN)
        return None


class _Single:
    """:func:`multi` for one socket: a blocking receive with a timeout.

    libzmq then waits on the socket's own mailbox and reads the message straight
    after the wake-up, where :class:`~ctlwire.roc._rawzmq.RawMulti` (which must watch
    several sockets through their edge-triggered ``ZMQ_FD``) needs a failed
    non-blocking receive, a poll and a second receive: about three system calls
    more for every wake-up.
    """

    __slots__ = ("_sock", "_recv", "_send", "_timeout")

    def __init__(self, sock: zmq.Socket) -> None:
        self._sock = sock
        self._recv, self._send = wire(sock)
        self._timeout = -2

    def mark(self, i: int) -> None:
        pass  # libzmq's own receive looks at the socket's commands: nothing to remember

    def mark_all(self) -> None:
        pass

    def send(self, i: int, frames: list) -> bool:
        return self._send(frames)

    def recv(self, timeout_ms: int) -> tuple[int, list] | None:
        if timeout_ms != self._timeout:
            # (0 would not wait at all and -1 forever: neither is what is asked)
            self._sock.setsockopt(zmq.RCVTIMEO, max(timeout_ms, 1))
            self._timeout = timeout_ms
        frames = self._recv(True)
        return None if frames is None else (0, frames)


def multi(socks: list[zmq.Socket]) -> Any:
    """A receiver over ``socks`` (1 to 64): ``recv(timeout_ms) -> (index, frames) |
    None``, ``send(index, frames) -> bool``, ``mark(index)`` / ``mark_all()``."""
    if len(socks) == 1:
        return _Single(socks[0])
    mod = _setup()
    return _PyMulti(socks) if mod is None else mod.RawMulti(socks)
