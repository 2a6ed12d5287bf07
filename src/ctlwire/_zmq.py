"""ZeroMQ plumbing shared by every protocol family: contexts, sockets, endpoints."""
from __future__ import annotations

import zmq


def get_context(ctx: zmq.Context | None = None) -> zmq.Context:
    """Return ``ctx`` or the process-wide ``zmq.Context.instance()``."""
    return ctx if ctx is not None else zmq.Context.instance()


def make_socket(ctx: zmq.Context | None, kind: int, *, linger: int = 0,
                sndhwm: int | None = None, rcvhwm: int | None = None) -> zmq.Socket:
    """Create a socket with ctlwire's defaults.

    ``linger`` defaults to 0 so that closing never blocks a process on unsent data
    to a peer that has gone away.
    """
    sock = get_context(ctx).socket(kind)
    sock.setsockopt(zmq.LINGER, linger)
    if sndhwm is not None:
        sock.setsockopt(zmq.SNDHWM, sndhwm)
    if rcvhwm is not None:
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
    return sock


def bind_random(sock: zmq.Socket, host: str = "127.0.0.1") -> int:
    """Bind ``sock`` to a free TCP port on ``host`` and return the port number."""
    if ":" in host and not host.startswith("["):
        sock.setsockopt(zmq.IPV6, 1)
        host = f"[{host}]"
    sock.bind(f"tcp://{host}:0")
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    return int(endpoint.rsplit(":", 1)[1])


def tcp_endpoint(host: str, port: int) -> str:
    """Format a ``tcp://`` endpoint, bracketing IPv6 literals."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}:{port}"
