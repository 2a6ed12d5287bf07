"""Addresses of libzmq's C functions, in the copy pyzmq itself loaded.

Compiled fast paths call ``zmq_msg_*`` directly on sockets pyzmq created
(``Socket.underlying``), skipping pyzmq's per-call Python bookkeeping. No libzmq header or
link step is needed: the addresses are looked up here at run time.
``CTLWIRE_NO_RAWZMQ=1`` turns the fast paths off.

Layering: shared plumbing; imports the standard library and pyzmq, no family.
"""
from __future__ import annotations

import ctypes
import logging
import os

import zmq

__all__ = ["MSG_FUNCTIONS", "function_addresses"]

log = logging.getLogger(__name__)

#: The message-level functions the fast paths use.
MSG_FUNCTIONS = ("zmq_msg_init", "zmq_msg_init_size", "zmq_msg_close", "zmq_msg_more",
                 "zmq_msg_recv", "zmq_msg_send", "zmq_msg_data", "zmq_msg_size",
                 "zmq_errno")

_cache: dict[tuple[str, ...], dict[str, int] | None] = {}


def _libzmq_path() -> str | None:
    # The copy mapped into this process is the one pyzmq's sockets belong to.
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                path = line.rsplit(None, 1)[-1]
                if "libzmq" in os.path.basename(path) and os.path.exists(path):
                    return path
    except OSError:
        return None
    return None


def function_addresses(names: tuple[str, ...] = MSG_FUNCTIONS) -> dict[str, int] | None:
    """Map each libzmq function in ``names`` to its address, or None if unavailable.

    None when ``CTLWIRE_NO_RAWZMQ=1``, when the loaded libzmq cannot be found (only
    ``/proc/self/maps`` is searched, so Linux only) or is not 4.x; callers then use pyzmq.
    """
    if names in _cache:
        return _cache[names]
    found: dict[str, int] | None = None
    if os.environ.get("CTLWIRE_NO_RAWZMQ") != "1":
        try:
            if zmq.zmq_version_info()[0] != 4:
                raise OSError(f"libzmq {zmq.zmq_version()} is not 4.x")
            path = _libzmq_path()
            if path is None:
                raise OSError("libzmq not found among the loaded libraries")
            lib = ctypes.CDLL(path)
            found = {}
            for name in names:
                addr = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
                if not addr:
                    raise OSError(f"{name} has no address")
                found[name] = addr
        except (OSError, AttributeError) as exc:
            log.debug("raw libzmq calls unavailable, using pyzmq: %s", exc)
            found = None
    _cache[names] = found
    return found
