"""Wire formats of group coordination: frames, timestamps, control messages, payloads.

Pure functions and small types only; no sockets here (the ports and the group wrap them).
The frame layout is implemented once, in the compiled :mod:`ctlwire.dc._framing`; this
module is its documented Python face.

One group message is one ZeroMQ frame (format version 2)::

    "DC" | version 2 | kind | flags | 0 0 0 | term (u64, big-endian) | sender (16 bytes)
    [ time (8-byte IEEE double) ]  payload

``kind`` is ``A`` (application) or ``C`` (control); ``flags`` bit 0 says a time field
follows the 32-byte header (timed groups), bit 1 that it is in native byte order (the
original's choice; network order is the default). ``term`` is the sender's election term:
a leader's messages carry the term it leads in, which is the fencing token a receiver
checks (:meth:`ctlwire.dc.group.Group.fence`). A ROUTER socket prepends the routing
identity, which the answer port strips before decoding.

Control messages (heartbeats, votes, presence, goodbye, group votes) travel as
msgpack-encoded tagged structs in the payload of a ``C`` frame, so a member can tell them
apart from application data without looking inside the application's payload.

Layering: imports msgspec, ``ctlwire._ext``, ``ctlwire.dc.errors`` and the compiled
``ctlwire.dc._framing``; no I/O.
"""
from __future__ import annotations

import math
import pickle
import struct
from typing import Any, Literal, NamedTuple, Union

import msgspec

from .._ext import load_extension
from .errors import CodecError

_framing = load_extension("ctlwire.dc._framing")

__all__ = [
    "CodecError", "KIND_APP", "KIND_CONTROL", "NETWORK", "NATIVE", "MEMBER_ID_LEN",
    "HEADER_LEN", "Envelope", "encode_frames", "decode_frames", "pack_time", "unpack_time",
    "Presence", "Heartbeat", "VoteRequest", "Vote", "Bye", "Ballot", "BallotVote",
    "BallotResult", "ControlMessage", "encode_control", "decode_control", "MemberRecord",
    "encode_record", "decode_record", "PayloadCodec", "make_codec",
]

MAGIC = b"DC"
VERSION = 2
KIND_APP = ord("A")
KIND_CONTROL = ord("C")
MEMBER_ID_LEN = 16
HEADER_LEN = 32
MAX_TERM = 2**64 - 1

#: Byte order of the time field: network (big-endian, the default) or native.
NETWORK: Literal["network"] = "network"
NATIVE: Literal["native"] = "native"

_TIME_FMT = {NETWORK: struct.Struct("!d"), NATIVE: struct.Struct("=d")}


class Envelope(NamedTuple):
    """A decoded group message.

    Attributes
    ----------
    kind : int
        :data:`KIND_APP` or :data:`KIND_CONTROL`.
    sender : bytes
        16-byte member id of the sender.
    payload : bytes
        The message body.
    send_time : float or None
        Sender's clock at send time (timed groups only).
    term : int
        The sender's election term when it sent the message.
    """

    kind: int
    sender: bytes
    payload: bytes
    send_time: float | None
    term: int = 0


def _time_struct(order: str) -> struct.Struct:
    try:
        return _TIME_FMT[order]
    except KeyError:
        raise ValueError(f"byte order must be {NETWORK!r} or {NATIVE!r}, not {order!r}") from None


def pack_time(t: float, order: str = NETWORK) -> bytes:
    """Pack a time as an 8-byte IEEE double in ``order`` (``"network"`` or ``"native"``)."""
    return _time_struct(order).pack(t)


def unpack_time(data: bytes, order: str = NETWORK) -> float:
    """Unpack an 8-byte time field; raises :class:`CodecError` if it is not a finite double."""
    if len(data) != 8:
        raise CodecError(f"time field: expected 8 bytes, got {len(data)}")
    (t,) = _time_struct(order).unpack(data)
    if not math.isfinite(t):
        raise CodecError(f"time field: not a finite number ({t!r})")
    return t


def encode_frames(kind: int, sender: bytes, payload: bytes,
                  send_time: float | None = None, order: str = NETWORK,
                  term: int = 0) -> list[bytes]:
    """Build the frames of one group message (one frame in format version 2).

    Parameters
    ----------
    kind : int
        :data:`KIND_APP` or :data:`KIND_CONTROL`.
    sender : bytes
        The sender's 16-byte member id.
    payload : bytes
        Message body.
    send_time : float, optional
        Adds the time field (timed groups).
    order : str
        Byte order of the time field.
    term : int
        The sender's election term.
    """
    _time_struct(order)
    if not 0 <= term <= MAX_TERM:
        raise ValueError(f"term {term} out of range")
    return [_framing.encode(kind, term, bytes(sender), payload, send_time, order == NATIVE)]


def decode_frames(frames: list[bytes], timed: bool, order: str = NETWORK) -> Envelope:
    """Decode the frames of one group message (routing identity already removed).

    Raises
    ------
    CodecError
        Not exactly one frame, bad magic/version/kind/flags, short header, or a time
        field that is missing, not finite or does not match ``timed``/``order``.
    """
    if len(frames) != 1:
        raise CodecError(f"expected 1 frame per group message, got {len(frames)}")
    _time_struct(order)
    return Envelope(*_framing.decode(frames[0], timed, order == NATIVE))


# --- control messages -----------------------------------------------------------------

class Presence(msgspec.Struct, tag="presence", frozen=True):
    """Periodic "I am here" of every member; ``term`` is the sender's current term."""

    term: int


class Heartbeat(msgspec.Struct, tag="heartbeat", frozen=True):
    """The leader's announcement: its term and where its answer port listens."""

    term: int
    host: str
    port: int


class VoteRequest(msgspec.Struct, tag="vote_req", frozen=True):
    """A candidate asks for votes in ``term``."""

    term: int


class Vote(msgspec.Struct, tag="vote", frozen=True):
    """A member's answer to a vote request (``candidate`` is a 16-byte member id)."""

    term: int
    candidate: bytes
    granted: bool


class Bye(msgspec.Struct, tag="bye", frozen=True):
    """A member leaves the group on purpose."""


class Ballot(msgspec.Struct, tag="ballot", frozen=True):
    """A member asks the group to vote (a group vote, not a leader election).

    ``ballot`` is a 16-byte id chosen by the requester, ``value`` the proposed value
    encoded with the group's payload codec, ``kind`` ``"majority"`` or ``"consensus"``,
    ``timeout`` how long (seconds) the requester waits for votes, and ``when`` the
    wall-clock time (seconds since the epoch) to act at, for action votes.
    """

    ballot: bytes
    topic: str
    value: bytes
    kind: str
    timeout: float
    when: Union[float, None] = None


class BallotVote(msgspec.Struct, tag="ballot_vote", frozen=True):
    """A member's answer to a :class:`Ballot` (an abstention sends nothing)."""

    ballot: bytes
    accept: bool


class BallotResult(msgspec.Struct, tag="ballot_result", frozen=True):
    """The requester's count of a :class:`Ballot`, sent to every member."""

    ballot: bytes
    passed: bool
    accepted: int
    refused: int
    abstained: int


ControlMessage = Union[Presence, Heartbeat, VoteRequest, Vote, Bye, Ballot, BallotVote,
                       BallotResult]
VOTE_KINDS = ("majority", "consensus")

_control_encoder = msgspec.msgpack.Encoder()
_control_decoder = msgspec.msgpack.Decoder(ControlMessage)


def encode_control(msg: ControlMessage) -> bytes:
    """Encode a control message as msgpack."""
    return _control_encoder.encode(msg)


def decode_control(data: bytes) -> ControlMessage:
    """Decode a control message; raises :class:`CodecError` for anything else."""
    try:
        msg = _control_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise CodecError(f"control message: {exc}") from None
    if isinstance(msg, Vote) and len(msg.candidate) != MEMBER_ID_LEN:
        raise CodecError(f"control message: vote candidate id has {len(msg.candidate)} bytes")
    if isinstance(msg, (Heartbeat,)) and not 0 < msg.port < 65536:
        raise CodecError(f"control message: heartbeat port {msg.port} out of range")
    if isinstance(msg, (Ballot, BallotVote, BallotResult)) and len(msg.ballot) != 16:
        raise CodecError(f"control message: ballot id has {len(msg.ballot)} bytes")
    if isinstance(msg, Ballot):
        if msg.kind not in VOTE_KINDS:
            raise CodecError(f"control message: unknown vote kind {msg.kind!r}")
        if not (math.isfinite(msg.timeout) and msg.timeout >= 0) or (
                msg.when is not None and not math.isfinite(msg.when)):
            raise CodecError("control message: ballot timeout or time is not finite")
    if isinstance(msg, BallotResult) and min(msg.accepted, msg.refused, msg.abstained) < 0:
        raise CodecError("control message: negative vote count")
    if getattr(msg, "term", 0) < 0:
        raise CodecError("control message: negative term")
    return msg


# --- discovery records ----------------------------------------------------------------

class MemberRecord(msgspec.Struct, frozen=True):
    """Where one member's pub port listens, as discovery publishes it.

    Attributes
    ----------
    group : str
        ``"<group type>.<instance>"``.
    member : bytes
        16-byte member id.
    host, port
        Address of the member's pub port.
    public_key : bytes
        The member's CURVE public key (z85), empty without security.
    """

    group: str
    member: bytes
    host: str
    port: int
    public_key: bytes = b""


_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(MemberRecord)


def encode_record(rec: MemberRecord) -> bytes:
    """Encode a discovery record as msgpack."""
    return _record_encoder.encode(rec)


def decode_record(data: bytes) -> MemberRecord:
    """Decode and check a discovery record; raises :class:`CodecError`."""
    try:
        rec = _record_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise CodecError(f"discovery record: {exc}") from None
    if len(rec.member) != MEMBER_ID_LEN:
        raise CodecError(f"discovery record: member id has {len(rec.member)} bytes")
    if not 0 < rec.port < 65536:
        raise CodecError(f"discovery record: port {rec.port} out of range")
    return rec


# --- payload codecs for send_pyobj / recv_pyobj -----------------------------------------

class PayloadCodec:
    """Turns Python objects into payload bytes and back.

    Use :func:`make_codec` to get one. ``name`` is ``"msgpack"`` (default), ``"json"`` or
    ``"pickle"``; pickle runs arbitrary code on decode, so it must be asked for.
    """

    __slots__ = ("name", "_enc", "_dec")

    def __init__(self, name: str, enc: Any, dec: Any) -> None:
        self.name = name
        self._enc = enc
        self._dec = dec

    def encode(self, obj: Any) -> bytes:
        """Encode ``obj``; raises :class:`TypeError` if the codec cannot represent it."""
        try:
            return self._enc(obj)
        except (msgspec.EncodeError, TypeError, OverflowError) as exc:
            raise TypeError(f"{self.name} codec cannot encode {type(obj).__name__}: {exc}") \
                from None

    @property
    def raw_encode(self) -> Any:
        """The bare encoding function (raises the underlying library's errors)."""
        return self._enc

    @property
    def raw_decode(self) -> Any:
        """The bare decoding function (raises the underlying library's errors)."""
        return self._dec

    def decode(self, data: bytes) -> Any:
        """Decode ``data``; raises :class:`CodecError` if it is malformed."""
        try:
            return self._dec(data)
        except (msgspec.DecodeError, pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise CodecError(f"{self.name} payload: {exc}") from None

    def __repr__(self) -> str:
        return f"PayloadCodec({self.name!r})"


def make_codec(name: str = "msgpack", *, allow_pickle: bool = False) -> PayloadCodec:
    """Return the payload codec called ``name``.

    Parameters
    ----------
    name : {"msgpack", "json", "pickle"}
        Codec name. ``msgpack`` and ``json`` (msgspec) decode data only.
    allow_pickle : bool
        Must be True for ``"pickle"``: unpickling network data runs arbitrary code, so
        only use it among trusted peers.
    """
    if name == "msgpack":
        return PayloadCodec(name, msgspec.msgpack.Encoder().encode,
                            msgspec.msgpack.Decoder().decode)
    if name == "json":
        return PayloadCodec(name, msgspec.json.Encoder().encode, msgspec.json.Decoder().decode)
    if name == "pickle":
        if not allow_pickle:
            raise ValueError("the pickle codec runs arbitrary code on received data; "
                             "pass allow_pickle=True to use it among trusted peers")
        return PayloadCodec(name, lambda o: pickle.dumps(o, protocol=pickle.HIGHEST_PROTOCOL),
                            pickle.loads)
    raise ValueError(f"unknown payload codec {name!r} (msgpack, json or pickle)")
