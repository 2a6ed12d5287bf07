"""Where the ROC broker listens: one host and one base port name every endpoint.

Port offsets from the base port (a decision of this project):

======================  ==========  =========================================
attribute               port        role
======================  ==========  =========================================
``rocBroker``           base + 0    7/MDP ROUTER for clients and servers
``generalXSUB``         base + 1    publishers (logs, status) connect here
``generalXPUB``         base + 2    subscribers connect here
``brokerPeer``          base + 3    a primary broker's link to its standby
======================  ==========  =========================================
"""
from __future__ import annotations

import os

from ctlwire._zmq import tcp_endpoint

#: Environment variable naming the broker as ``host`` or ``host:baseport``, or a
#: comma-separated list of them (a primary broker and its standby).
ENV_VAR = "CTLWIRE_ROC_BROKER"
DEFAULT_HOST = "localhost"
DEFAULT_BASE_PORT = 5555
BROKER_OFFSET = 0
XSUB_OFFSET = 1
XPUB_OFFSET = 2
PEER_OFFSET = 3


class Endpoints:
    """Manages a collection of ROC endpoints derived from one address and base port.

    Parameters
    ----------
    brokerAddress : str
        Host name or IP address of the broker (``tcp``), or a path prefix (``ipc``).
    brokerBasePort : int
        Port of the MDP router; the relay uses the two ports above it.
    transport : {'tcp', 'ipc'}
        ZeroMQ transport.

    Examples
    --------
    >>> ep = Endpoints('127.0.0.1', 6000)
    >>> ep.rocBroker, ep.generalXSUB, ep.generalXPUB
    ('tcp://127.0.0.1:6000', 'tcp://127.0.0.1:6001', 'tcp://127.0.0.1:6002')
    """

    __slots__ = ("brokerAddress", "brokerBasePort", "transport")

    def __init__(self, brokerAddress: str, brokerBasePort: int = DEFAULT_BASE_PORT,
                 transport: str = "tcp") -> None:
        if transport not in ("tcp", "ipc"):
            raise ValueError(f"transport must be 'tcp' or 'ipc', not {transport!r}")
        if not brokerAddress:
            raise ValueError("brokerAddress must not be empty")
        port = int(brokerBasePort)
        if transport == "tcp" and not 0 < port <= 65533:
            raise ValueError(f"brokerBasePort {port} leaves no room for base+2 <= 65535")
        self.brokerAddress = brokerAddress
        self.brokerBasePort = port
        self.transport = transport

    def _at(self, offset: int) -> str:
        if self.transport == "ipc":
            return f"ipc://{self.brokerAddress}-{self.brokerBasePort + offset}"
        return tcp_endpoint(self.brokerAddress, self.brokerBasePort + offset)

    @property
    def rocBroker(self) -> str:
        """This is the router for plain ROC commands (7/MDP)."""
        return self._at(BROKER_OFFSET)

    @property
    def generalXSUB(self) -> str:
        """This is for dropping log and information data (publishers connect)."""
        return self._at(XSUB_OFFSET)

    @property
    def generalXPUB(self) -> str:
        """This is for receiving log and information data (subscribers connect)."""
        return self._at(XPUB_OFFSET)

    @property
    def brokerPeer(self) -> str:
        """Where a primary broker listens for its standby (heartbeats and state)."""
        return self._at(PEER_OFFSET)

    def __repr__(self) -> str:
        return (f"Endpoints({self.brokerAddress!r}, {self.brokerBasePort}, "
                f"transport={self.transport!r})")

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Endpoints) and self.brokerAddress == other.brokerAddress
                and self.brokerBasePort == other.brokerBasePort
                and self.transport == other.transport)

    def __hash__(self) -> int:
        return hash((self.brokerAddress, self.brokerBasePort, self.transport))


def parse_broker_spec(spec: str) -> Endpoints:
    """Turn ``host``, ``host:baseport`` or ``[v6addr]:baseport`` into :class:`Endpoints`.

    Raises
    ------
    ValueError
        Naming the bad input when the port is not a number.
    """
    spec = spec.strip()
    if not spec:
        raise ValueError("empty broker address")
    host, port = spec, DEFAULT_BASE_PORT
    if spec.startswith("["):
        close = spec.find("]")
        if close < 0:
            raise ValueError(f"unbalanced '[' in broker address {spec!r}")
        host = spec[1:close]
        rest = spec[close + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected ':port' after ']' in {spec!r}")
            port = _port(rest[1:], spec)
    elif spec.count(":") == 1:
        host, p = spec.split(":")
        port = _port(p, spec)
    return Endpoints(host, port)


def _port(text: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"base port {text!r} in broker address {spec!r} is not a number") \
            from None


def default_endpoints() -> Endpoints:
    """Endpoints from ``$CTLWIRE_ROC_BROKER`` (``host`` or ``host:baseport``; the
    first of a comma-separated list), else ``localhost:5555``."""
    return default_endpoint_list()[0]


def default_endpoint_list() -> list[Endpoints]:
    """Every broker named by ``$CTLWIRE_ROC_BROKER`` (comma-separated), else
    ``[localhost:5555]``.

    Raises
    ------
    ValueError
        Naming the variable and the bad entry.
    """
    spec = os.environ.get(ENV_VAR, "").strip()
    if spec:
        try:
            return parse_broker_list(spec)
        except ValueError as exc:
            raise ValueError(f"${ENV_VAR}: {exc}") from None
    return [Endpoints(DEFAULT_HOST, DEFAULT_BASE_PORT)]


def parse_broker_list(spec: str) -> list[Endpoints]:
    """``"host:port,host:port"`` -> one :class:`Endpoints` per broker."""
    parts = [p for p in (x.strip() for x in spec.split(",")) if p]
    if not parts:
        raise ValueError(f"no broker address in {spec!r}")
    return [parse_broker_spec(p) for p in parts]



def resolve_all(where: "Endpoints | str | list | tuple | None",
                role: str = "rocBroker") -> list[str]:
    """Like :func:`resolve`, for one broker or several (primary first, then standbys).

    ``where`` may also be a list of the accepted forms, or a string with several
    brokers separated by commas; ``None`` reads every broker in
    ``$CTLWIRE_ROC_BROKER``.
    """
    if where is None:
        return [getattr(e, role) for e in default_endpoint_list()]
    if isinstance(where, (list, tuple)):
        if not where:
            raise ValueError("empty list of brokers")
        return [resolve(w, role) for w in where]
    if isinstance(where, str) and "," in where:
        return [resolve(w.strip(), role) for w in where.split(",") if w.strip()]
    return [resolve(where, role)]


def resolve(where: "Endpoints | str | None", role: str = "rocBroker") -> str:
    """Return the ZeroMQ endpoint for ``role`` from any accepted address form.

    Parameters
    ----------
    where : Endpoints, str or None
        :class:`Endpoints`; a full ZeroMQ endpoint (``tcp://h:p``, ``ipc://...``),
        used as given; ``host`` or ``host:baseport``; or ``None`` for
        :func:`default_endpoints`.
    role : str
        ``'rocBroker'``, ``'generalXSUB'`` or ``'generalXPUB'``.
    """
    if where is None:
        return getattr(default_endpoints(), role)
    if isinstance(where, Endpoints):
        return getattr(where, role)
    if isinstance(where, (list, tuple)) and where:
        return resolve(where[0], role)
    if isinstance(where, str):
        if "," in where:
            where = where.split(",", 1)[0]
        if "://" in where:
            return where
        return getattr(parse_broker_spec(where), role)
    raise TypeError(f"expected Endpoints, endpoint string or None, got {type(where).__name__}")
