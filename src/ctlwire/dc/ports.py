"""Group ports: the four sockets every group member owns.

========================  ======  =====================================================
port                      socket  role
========================  ======  =====================================================
:class:`GroupPubPort`     PUB     binds a free port; messages to every member
:class:`GroupSubPort`     SUB     connects to every member's pub port
:class:`GroupQryPort`     DEALER  connects to the current leader; member to leader
:class:`GroupAnsPort`     ROUTER  binds once this member leads; leader to each member
========================  ======  =====================================================

Life cycle: construct, :meth:`Port.setup` (checks the spec, no socket yet),
:meth:`Port.setupSocket` (creates, secures, binds), then :meth:`ConnPort.update` as
discovery reports peers. The frames on the wire are described in :mod:`ctlwire.dc.codec`.

A port object is not thread-safe (neither is a zmq socket): use it from one thread, or
guard it with a lock.

Layering: imports pyzmq, ``ctlwire._zmq``, ``ctlwire._libzmq`` and ``ctlwire.dc.codec`` /
``security``.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import zmq

from .._libzmq import function_addresses
from .._zmq import bind_random, make_socket, tcp_endpoint
from .codec import (KIND_APP, MEMBER_ID_LEN, NATIVE, NETWORK, CodecError, Envelope,
                    PayloadCodec, _framing, decode_frames, encode_frames, make_codec)
from .security import CurveSecurity

# The compiled framing sends and receives straight through libzmq when it can be found.
_addresses = function_addresses()
if _addresses is not None and not _framing.is_bound():
    _framing.bind(_addresses)

# Plain ints: combining pyzmq's enum flags with "|" costs microseconds per message.
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)


def _recv_frames(sock: zmq.Socket, flags: int = 0) -> list[bytes]:
    """Receive one multipart message; pyzmq's recv_multipart costs ~1.6x more."""
    recv = sock.recv
    frames = [recv(flags)]
    while sock.get(_RCVMORE):
        frames.append(recv())
    return frames


__all__ = [
    "PortInfo", "GroupSpec", "PortError", "PortDirectionError", "PortTimeout",
    "Port", "BindPort", "ConnPort", "GroupSimplexPort", "GroupDuplexPort",
    "GroupPubPort", "GroupSubPort", "GroupQryPort", "GroupAnsPort", "CodecError",
]


class PortInfo(NamedTuple):
    """What :meth:`Port.getInfo` reports about a set-up port."""

    portKind: str
    portScope: str
    portName: str
    msgType: str
    portHost: str | None
    portNum: int | None


class PortError(RuntimeError):
    """A port was used in a way its state or kind does not allow."""


class PortDirectionError(PortError):
    """Sending on a receive-only port, or receiving on a send-only one."""


class PortTimeout(PortError, TimeoutError):
    """Nothing arrived within the receive timeout."""


@dataclass
class GroupSpec:
    """Configuration shared by a member's four ports.

    Parameters
    ----------
    groupType, instanceName : str
        Together they name the group (``"<type>.<instance>"``).
    messageType : str
        Type of messages on the pub/sub channel (informational, reported by getInfo).
    toLeaderType, fromLeaderType : str
        Message types on the query/answer channel; getInfo reports ``"<to>#<from>"``.
    timed : bool
        Carry the send time in an extra frame and record send and receive times.
    byteOrder : {"network", "native"}
        Byte order of the time frame; every member of a group must use the same.
    host : str
        Address bound ports listen on and peers are told about.
    codec : PayloadCodec or str
        Codec for ``send_pyobj``/``recv_pyobj``: ``"msgpack"`` (default), ``"json"``, or a
        :class:`~ctlwire.dc.codec.PayloadCodec` (``make_codec("pickle", allow_pickle=True)``).
    security : CurveSecurity, optional
        CURVE key pair and allow-list; plain TCP without it.
    hwm : int
        High-water mark: send side on sending sockets, receive side on receiving ones.
    sendTimeout : float
        The pub port never drops in silence (``XPUB_NODROP``): when a subscriber's queue
        holds ``hwm`` messages, a send waits up to this many seconds for room
        (back-pressure on the sender), then fails (:class:`PortTimeout` from the port,
        a counted drop from :meth:`Group.send <ctlwire.dc.group.Group.send>`).
    memberId : bytes
        16-byte id of this member, unique across nodes (uuid4 by default); also the query
        port's routing identity, so the leader can answer a member by its id.
    context : zmq.Context, optional
        Context for the sockets (the process-wide instance by default).
    """

    groupType: str
    instanceName: str
    messageType: str = "group-msg"
    toLeaderType: str = "group-mtl"
    fromLeaderType: str = "group-mfl"
    timed: bool = False
    byteOrder: str = NETWORK
    host: str = "127.0.0.1"
    codec: PayloadCodec | str = "msgpack"
    security: CurveSecurity | None = None
    hwm: int = 10000
    sendTimeout: float = 1.0
    memberId: bytes = field(default_factory=lambda: uuid.uuid4().bytes)
    context: zmq.Context | None = None

    def __post_init__(self) -> None:
        for name in ("groupType", "instanceName"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or any(c in value for c in "./\0 "):
                raise ValueError(f"GroupSpec.{name} must be a non-empty name without "
                                 f"'.', '/', spaces or NUL, got {value!r}")
        if self.byteOrder not in (NETWORK, NATIVE):
            raise ValueError(f"GroupSpec.byteOrder must be {NETWORK!r} or {NATIVE!r}, "
                             f"got {self.byteOrder!r}")
        if not isinstance(self.memberId, bytes) or len(self.memberId) != MEMBER_ID_LEN:
            raise ValueError(f"GroupSpec.memberId must be {MEMBER_ID_LEN} bytes")
        if isinstance(self.codec, str):
            self.codec = make_codec(self.codec)
        if self.hwm < 0:
            raise ValueError("GroupSpec.hwm must be >= 0")
        if not (isinstance(self.sendTimeout, (int, float)) and self.sendTimeout >= 0):
            raise ValueError(f"GroupSpec.sendTimeout must be >= 0 seconds, "
                             f"got {self.sendTimeout!r}")

    @property
    def groupName(self) -> str:
        """``"<group type>.<instance>"``."""
        return f"{self.groupType}.{self.instanceName}"


class Port:
    """Base of every group port.

    Parameters
    ----------
    parentPart : object
        The component (or :class:`~ctlwire.dc.group.Group`) the port belongs to.
    portName : str, optional
        Defaults to ``"<group type>.<instance>_<pub|sub|qry|ans>"``.
    groupSpec : GroupSpec
        Group configuration.
    """

    #: getInfo kind, suffix of the default name, zmq socket type; set by subclasses.
    kind = ""
    suffix = ""
    socketType = -1
    #: Directions this port supports.
    canSend = False
    canRecv = False

    __slots__ = ("parent", "owner", "name", "spec", "socket", "sendTime", "recvTime",
                 "lastSender", "lastTerm", "term", "_setup_done")

    def __init__(self, parentPart: Any, portName: str | None, groupSpec: GroupSpec) -> None:
        if not isinstance(groupSpec, GroupSpec):
            raise TypeError(f"groupSpec must be a GroupSpec, got {type(groupSpec).__name__}")
        self.parent = parentPart
        self.owner: Any = None
        self.spec = groupSpec
        self.name = portName or f"{groupSpec.groupName}_{self.suffix}"
        self.socket: zmq.Socket | None = None
        #: Send and receive times of the last message received (timed groups).
        self.sendTime: float | None = None
        self.recvTime: float | None = None
        #: Member id of the sender of the last message received.
        self.lastSender: bytes | None = None
        #: Election term carried by the last message received (its fencing token).
        self.lastTerm: int | None = None
        #: Election term stamped on every message sent (the group keeps it current).
        self.term = 0
        self._setup_done = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} info={self.getInfo()}>"

    # --- life cycle --------------------------------------------------------------------

    def setup(self) -> None:
        """Prepare the port after construction, before the socket exists (idempotent)."""
        if self.socket is not None:
            raise PortError(f"{self.name}: setup() must run before setupSocket()")
        self._setup_done = True

    def setupSocket(self, owner: Any) -> PortInfo:
        """Create, secure and (for bound ports) bind the socket.

        Parameters
        ----------
        owner : object
            The component the socket belongs to; call from the owner's thread only.

        Returns
        -------
        PortInfo
        """
        if self.socket is not None:
            raise PortError(f"{self.name}: socket already set up (use reset() to rebuild)")
        if not self._setup_done:
            self.setup()
        self.owner = owner
        self.socket = self._make_socket()
        self._after_socket()
        info = self.getInfo()
        assert info is not None
        return info

    def _make_socket(self) -> zmq.Socket:
        sock = make_socket(self.spec.context, self.socketType)
        # Each direction's own high-water mark (the original swapped them).
        if self.canSend:
            sock.setsockopt(zmq.SNDHWM, self.spec.hwm)
        if self.canRecv:
            sock.setsockopt(zmq.RCVHWM, self.spec.hwm)
        return sock

    def _after_socket(self) -> None:
        """Bind or connect after the socket exists; subclasses override."""

    def getSocket(self) -> zmq.Socket | None:
        """Return the zmq socket (None before :meth:`setupSocket`)."""
        return self.socket

    def inSocket(self) -> bool:
        """True if the socket is used for input."""
        return self.canRecv

    def getInfo(self) -> PortInfo | None:
        """Return the port's :class:`PortInfo`, or None before :meth:`setupSocket`."""
        if self.socket is None:
            return None
        return PortInfo(self.kind, "global", self.name, self._msg_type(), self.spec.host,
                        self._port_num())

    def _msg_type(self) -> str:
        return self.spec.messageType

    def _port_num(self) -> int | None:
        return -1

    def update(self, host: str | None, port: int | None, serverKey: bytes | None = None) -> None:
        """Tell a connecting port about a peer (see :class:`ConnPort`)."""
        raise PortError(f"{type(self).__name__} {self.name!r} is a bound port; update() is only "
                        "for connecting ports (sub, qry)")

    def reset(self) -> None:
        """Rebuild the socket after a failure, rebinding or reconnecting as before."""
        self._require_socket()
        self.close()
        self.socket = self._make_socket()
        self._after_reset()

    def _after_reset(self) -> None:
        self._after_socket()

    def close(self) -> None:
        """Close the socket (the port can be set up again with :meth:`setupSocket`)."""
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None

    # --- messaging ---------------------------------------------------------------------

    def _require_socket(self) -> zmq.Socket:
        if self.socket is None:
            raise PortError(f"{self.name}: no socket; call setupSocket(owner) first")
        return self.socket

    def _frames(self, kind: int, payload: bytes) -> list[bytes]:
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError(f"{self.name}: send() takes bytes, got {type(payload).__name__} "
                            "(use send_pyobj for Python objects)")
        stamp = time.time() if self.spec.timed else None
        return encode_frames(kind, self.spec.memberId, payload, stamp, self.spec.byteOrder,
                             self.term)

    def _check_send(self) -> zmq.Socket:
        if not self.canSend:
            raise PortDirectionError(f"{type(self).__name__} {self.name!r} is receive-only; "
                                     "it cannot send")
        return self._require_socket()

    def _check_recv(self) -> zmq.Socket:
        if not self.canRecv:
            raise PortDirectionError(f"{type(self).__name__} {self.name!r} is send-only; "
                                     "it cannot receive")
        return self._require_socket()

    def send(self, msg: bytes) -> None:
        """Send bytes through the port.

        Raises
        ------
        PortDirectionError
            On a receive-only port.
        """
        self._send_multipart(self._check_send(), self._frames(KIND_APP, msg))

    def send_frames(self, kind: int, payload: bytes) -> None:
        """Send a message of ``kind`` (application or control); used by the group."""
        self._send_multipart(self._check_send(), self._frames(kind, payload))

    def _send_multipart(self, sock: zmq.Socket, frames: list[bytes], flags: int = 0) -> None:
        # Frame by frame: pyzmq's send_multipart costs ~3x more for small messages.
        # Once the first frame is queued, zmq takes the rest of the message too.
        send = sock.send
        for frame in frames[:-1]:
            send(frame, flags | _SNDMORE)
        send(frames[-1], flags)

    def send_pyobj(self, msg: Any) -> None:
        """Encode ``msg`` with the group's payload codec and send it."""
        self.send(self.spec.codec.encode(msg))  # type: ignore[union-attr]

    def _recv_raw(self, sock: zmq.Socket, timeout: float | None) -> list[bytes]:
        if timeout is not None and timeout <= 0:
            # Non-blocking fast path: one attempt, no poll (polling first doubles the cost).
            try:
                return _recv_frames(sock, _NOBLOCK)
            except zmq.Again:
                raise PortTimeout(f"{self.name}: nothing to receive") from None
        if timeout is not None and not sock.poll(int(timeout * 1000)):
            raise PortTimeout(f"{self.name}: nothing received within {timeout} s")
        return _recv_frames(sock)

    def _decode(self, frames: list[bytes]) -> Envelope:
        try:
            env = decode_frames(frames, self.spec.timed, self.spec.byteOrder)
        except CodecError as exc:
            raise CodecError(f"{self.name}: dropped malformed message: {exc}") from None
        self.lastSender = env.sender
        self.lastTerm = env.term
        self.sendTime = env.send_time
        self.recvTime = time.time() if self.spec.timed else None
        return env

    def recv_envelope(self, timeout: float | None = None) -> Envelope:
        """Receive one message with its kind, sender and send time.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait; blocks without one.

        Raises
        ------
        PortTimeout
            Nothing arrived in time.
        CodecError
            The message was malformed; it is consumed, the port stays usable.
        """
        sock = self._check_recv()
        return self._decode(self._recv_raw(sock, timeout))

    def drain(self, limit: int = 1000) -> tuple[list[Envelope], int]:
        """Receive every waiting message (up to ``limit``) without blocking.

        Returns
        -------
        envelopes : list of Envelope
            The well-formed messages, in arrival order.
        malformed : int
            How many malformed messages were consumed and dropped.
        """
        sock = self._check_recv()
        timed, order = self.spec.timed, self.spec.byteOrder
        out: list[Envelope] = []
        malformed = 0
        for _ in range(limit):
            try:
                frames = _recv_frames(sock, _NOBLOCK)
            except zmq.Again:
                break
            try:
                out.append(self._check_frames(frames, timed, order))
            except CodecError:
                malformed += 1
        return out, malformed

    def _check_frames(self, frames: list[bytes], timed: bool, order: str) -> Envelope:
        return decode_frames(frames, timed, order)

    def recv(self, timeout: float | None = None) -> bytes:
        """Receive the payload bytes of the next message (see :meth:`recv_envelope`)."""
        return self.recv_envelope(timeout).payload

    def recv_pyobj(self, timeout: float | None = None) -> Any:
        """Receive the next message and decode it with the group's payload codec."""
        return self.spec.codec.decode(self.recv(timeout))  # type: ignore[union-attr]


class BindPort(Port):
    """A port that binds a free TCP port on the spec's host."""

    __slots__ = ("portNum",)

    def __init__(self, parentPart: Any, portName: str | None, groupSpec: GroupSpec) -> None:
        super().__init__(parentPart, portName, groupSpec)
        self.portNum: int | None = None

    def _make_socket(self) -> zmq.Socket:
        sock = super()._make_socket()
        if self.spec.security is not None:
            self.spec.security.apply_server(sock)
        return sock

    def bind(self) -> int:
        """Bind to a free port on the spec's host (once) and return its number."""
        sock = self._require_socket()
        if self.portNum is None:
            self.portNum = bind_random(sock, self.spec.host)
        return self.portNum

    def _after_socket(self) -> None:
        self.bind()

    def _after_reset(self) -> None:
        if self.portNum is None:
            return
        sock = self._require_socket()
        # Peers keep reconnecting to the old number, so take it again; zmq releases the
        # old listener asynchronously, hence a short bounded retry.
        deadline = time.monotonic() + 1.0
        while True:
            try:
                sock.bind(tcp_endpoint(self.spec.host, self.portNum))
                return
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        self.portNum = bind_random(sock, self.spec.host)

    def _port_num(self) -> int | None:
        return self.portNum


class ConnPort(Port):
    """A port that connects to peers that discovery reports through :meth:`update`."""

    __slots__ = ("peers",)

    def __init__(self, parentPart: Any, portName: str | None, groupSpec: GroupSpec) -> None:
        super().__init__(parentPart, portName, groupSpec)
        #: Connected peers, endpoint -> CURVE server key (or None).
        self.peers: dict[str, bytes | None] = {}

    def _connect(self, endpoint: str, key: bytes | None) -> None:
        sock = self._require_socket()
        if self.spec.security is not None:
            if key is None:
                raise PortError(f"{self.name}: CURVE is on, so update() needs the peer's "
                                "serverKey")
            self.spec.security.apply_client(sock, key)
        sock.connect(endpoint)
        self.peers[endpoint] = key

    def _disconnect(self, endpoint: str) -> None:
        sock = self._require_socket()
        self.peers.pop(endpoint, None)
        try:
            sock.disconnect(endpoint)
        except zmq.ZMQError:
            pass  # never completed the connection; nothing to undo

    def _after_reset(self) -> None:
        peers, self.peers = dict(self.peers), {}
        for endpoint, key in peers.items():
            self._connect(endpoint, key)


class GroupSimplexPort(Port):
    """Marker base of the one-way group ports (pub, sub)."""

    __slots__ = ()


class GroupDuplexPort(Port):
    """Marker base of the two-way group ports (query, answer)."""

    __slots__ = ()

    def _msg_type(self) -> str:
        return f"{self.spec.toLeaderType}#{self.spec.fromLeaderType}"


class GroupPubPort(BindPort, GroupSimplexPort):
    """Group publisher: messages to every member of the group (PUB, binds).

    A PUB socket drops a message in silence for a subscriber whose queue is full; this
    one refuses it instead (``XPUB_NODROP``, which libzmq applies to PUB as well), so a
    send waits up to ``spec.sendTimeout`` for room and then raises :class:`PortTimeout`:
    every message it accepts reaches every subscriber connected at the time.
    """

    kind, suffix, socketType = "gpub", "pub", zmq.PUB
    canSend, canRecv = True, False
    __slots__ = ()

    def _make_socket(self) -> zmq.Socket:
        sock = super()._make_socket()
        sock.setsockopt(zmq.XPUB_NODROP, 1)
        sock.setsockopt(zmq.SNDTIMEO, int(self.spec.sendTimeout * 1000))
        return sock

    def _send_multipart(self, sock: zmq.Socket, frames: list[bytes], flags: int = 0) -> None:
        try:
            super()._send_multipart(sock, frames, flags)
        except zmq.Again:
            raise PortTimeout(f"{self.name}: a subscriber's queue stayed full for "
                              f"{self.spec.sendTimeout:g} s (hwm {self.spec.hwm}); "
                              "message not sent") from None


class GroupSubPort(ConnPort, GroupSimplexPort):
    """Group subscriber: messages from every member (SUB to all topics, connects to each)."""

    kind, suffix, socketType = "gsub", "sub", zmq.SUB
    canSend, canRecv = False, True
    __slots__ = ()

    def _make_socket(self) -> zmq.Socket:
        sock = super()._make_socket()
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        return sock

    def update(self, host: str | None, port: int | None, serverKey: bytes | None = None) -> None:
        """Connect to a newly reported publisher; a repeat is ignored.

        Parameters
        ----------
        host, port
            Address of the publisher's pub port.
        serverKey : bytes, optional
            The publisher's CURVE public key (required with security).
        """
        if host is None or port is None:
            raise PortError(f"{self.name}: update() needs a host and a port")
        endpoint = tcp_endpoint(host, port)
        if endpoint not in self.peers:
            self._connect(endpoint, serverKey)

    def remove(self, host: str, port: int) -> None:
        """Disconnect from a publisher that has left."""
        self._disconnect(tcp_endpoint(host, port))


class GroupQryPort(ConnPort, GroupDuplexPort):
    """Group query port: a member talks to the current leader (DEALER, connects)."""

    kind, suffix, socketType = "gqry", "qry", zmq.DEALER
    canSend, canRecv = True, True
    __slots__ = ()

    def _make_socket(self) -> zmq.Socket:
        sock = super()._make_socket()
        # The member id is the routing identity, unique across nodes (uuid4).
        sock.setsockopt(zmq.ROUTING_ID, self.spec.memberId)
        return sock

    def _send_multipart(self, sock: zmq.Socket, frames: list[bytes], flags: int = 0) -> None:
        # A DEALER without any leader would block forever; fail fast instead.
        try:
            super()._send_multipart(sock, frames, flags | _NOBLOCK)
        except zmq.Again:
            raise PortError(f"{self.name}: not connected to a leader (or its queue is full)") \
                from None

    def update(self, host: str | None, port: int | None, serverKey: bytes | None = None) -> None:
        """Follow a new leader: drop the old one, connect to ``host:port``.

        ``update(None, None)`` only disconnects.
        """
        self._require_socket()
        new = None if host is None or port is None else tcp_endpoint(host, port)
        for endpoint in list(self.peers):
            if endpoint != new:
                self._disconnect(endpoint)
        if new is not None and new not in self.peers:
            self._connect(new, serverKey)

    @property
    def leaderEndpoint(self) -> str | None:
        """Endpoint of the leader this port is connected to."""
        return next(iter(self.peers), None)


class GroupAnsPort(BindPort, GroupDuplexPort):
    """Group answer port: the leader hears members and answers each (ROUTER).

    The socket is created by :meth:`setupSocket` but binds only when :meth:`bind` is
    called (when its member becomes leader); until then getInfo reports port None.
    """

    kind, suffix, socketType = "gans", "ans", zmq.ROUTER
    canSend, canRecv = True, True
    __slots__ = ("lastIdentity",)

    def __init__(self, parentPart: Any, portName: str | None, groupSpec: GroupSpec) -> None:
        super().__init__(parentPart, portName, groupSpec)
        #: Routing identity (member id) of the member the last message came from.
        self.lastIdentity: bytes | None = None

    def _make_socket(self) -> zmq.Socket:
        sock = super()._make_socket()
        # Unknown identities raise instead of dropping silently; a reconnecting member
        # with the same id takes over its old routing slot.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        return sock

    def _after_socket(self) -> None:
        pass  # binds on leadership, see bind()

    def recv_envelope(self, timeout: float | None = None) -> Envelope:
        sock = self._check_recv()
        frames = self._recv_raw(sock, timeout)
        try:
            env = self._check_frames(frames, self.spec.timed, self.spec.byteOrder)
        except CodecError as exc:
            raise CodecError(f"{self.name}: dropped malformed message: {exc}") from None
        self.lastIdentity = frames[0]
        self.lastSender = env.sender
        self.lastTerm = env.term
        self.sendTime = env.send_time
        self.recvTime = time.time() if self.spec.timed else None
        return env

    recv_envelope.__doc__ = Port.recv_envelope.__doc__

    def _check_frames(self, frames: list[bytes], timed: bool, order: str) -> Envelope:
        if len(frames) < 2:
            raise CodecError("no routing identity before the message")
        env = decode_frames(frames[1:], timed, order)
        if env.sender != frames[0]:
            # The query port's routing identity is its member id; anything else is forged.
            raise CodecError("sender id does not match the routing identity")
        return env

    def send(self, msg: bytes, identity: bytes | None = None) -> None:
        """Send bytes to a member, by default the one the last message came from.

        Raises
        ------
        PortError
            No member to answer, or that member is not connected.
        """
        self._send_to(identity, KIND_APP, msg)

    def send_pyobj(self, msg: Any, identity: bytes | None = None) -> None:
        """Encode ``msg`` and send it to a member (default: the last sender)."""
        self.send(self.spec.codec.encode(msg), identity)  # type: ignore[union-attr]

    def send_frames(self, kind: int, payload: bytes, identity: bytes | None = None) -> None:
        self._send_to(identity, kind, payload)

    def _send_to(self, identity: bytes | None, kind: int, payload: bytes) -> None:
        sock = self._check_send()
        target = identity if identity is not None else self.lastIdentity
        if target is None:
            raise PortError(f"{self.name}: no member to answer yet (nothing received and no "
                            "identity given)")
        try:
            self._send_multipart(sock, [target, *self._frames(kind, payload)])
        except zmq.error.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                raise PortError(f"{self.name}: member {target.hex()} is not connected") from None
            raise
