"""aiokatcp-compatible core: messages, addresses, timestamps and the type registry.

The same names and behaviour as ``aiokatcp.core`` (2.x), written on ctlwire's compiled
KATCP codec (:mod:`ctlwire.katcp.core`): a :class:`Message` here keeps aiokatcp's shape
(``Message.Type`` enum, ``mid`` as an ``int``, ``bytes(msg)`` ending in a newline) and
hands formatting and parsing to the codec.

Layering: imports the standard library and :mod:`ctlwire.katcp.core` / ``exceptions``.
"""
from __future__ import annotations

import enum
import functools
import ipaddress
import logging
import numbers
import re
import typing
from typing import (Any, Callable, Generic, List, Optional, Tuple, Type, TypeAlias, TypeVar,
                    Union)

from ..katcp import core as _kcore
from ..katcp.exceptions import KatcpSyntaxError as _CtlwireSyntaxError

__all__ = [
    "Address", "Timestamp", "Now", "TimestampOrNow", "LogLevel", "DeviceStatus",
    "TypeInfo", "register_type", "get_type", "get_decoder", "encode", "decode",
    "KatcpSyntaxError", "Message",
]

_T = TypeVar("_T")
_IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
_UNION_TYPES = (type(Union[int, float]), type(int | float))

_encode_line = _kcore.encode_message
_CParser = _kcore.MessageParser


class Address:
    """A KATCP address: an IPv4 or IPv6 host and an optional port.

    Parameters
    ----------
    host : ipaddress.IPv4Address or ipaddress.IPv6Address
        Host address.
    port : int, optional
        Port number.
    """

    __slots__ = ("_host", "_port")
    _V4 = re.compile(r"^(?P<host>[^:\[\]]+)(?::(?P<port>\d+))?$")
    _V6 = re.compile(r"^\[(?P<host>[^\]]+)\](?::(?P<port>\d+))?$")

    def __init__(self, host: _IPAddress, port: Optional[int] = None) -> None:
        if not isinstance(host, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            raise TypeError(f"{host} is not an IPv4Address or IPv6Address")
        self._host = host
        self._port = port

    @property
    def host(self) -> _IPAddress:
        """Host address."""
        return self._host

    @property
    def port(self) -> Optional[int]:
        """Port number (``None`` when not given)."""
        return self._port

    def __str__(self) -> str:
        text = str(self._host) if self._host.version == 4 else f"[{self._host}]"
        return text if self._port is None else f"{text}:{self._port}"

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8")

    def __repr__(self) -> str:
        if self._port is None:
            return f"Address({self._host!r})"
        return f"Address({self._host!r}, {self._port!r})"

    @classmethod
    def parse(cls, raw: bytes) -> "Address":
        """Build an address from an (unescaped) message argument.

        Raises
        ------
        ValueError
            If ``raw`` is not ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``.
        """
        text = raw.decode("utf-8")
        m = cls._V6.match(text)
        if m:
            host: _IPAddress = ipaddress.IPv6Address(m.group("host"))
        else:
            m = cls._V4.match(text)
            if not m:
                raise ValueError(f"could not parse '{text}' as an address")
            host = ipaddress.IPv4Address(m.group("host"))
        port = m.group("port")
        return cls(host) if port is None else cls(host, int(port))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Address):
            return NotImplemented
        return (self._host, self._port) == (other._host, other._port)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((self._host, self._port))


class Timestamp(float):
    """A KATCP timestamp: a float of UNIX seconds, a type of its own for decoding."""


class Now(enum.Enum):
    """The timestamp ``now`` of the protocol."""

    NOW = 0


TimestampOrNow = Union[Timestamp, Now]


class LogLevel(enum.IntEnum):
    """KATCP log levels, valued as the Python levels they match."""

    ALL = logging.NOTSET
    TRACE = 0
    DEBUG = logging.DEBUG
    INFO = logging.INFO
    WARN = logging.WARNING
    ERROR = logging.ERROR
    FATAL = logging.CRITICAL
    OFF = logging.CRITICAL + 10

    @classmethod
    def from_python(cls, level: int) -> "LogLevel":
        """The KATCP level of a Python level (rounded down to the next known one)."""
        try:
            return cls(level)
        except ValueError:
            best = cls.ALL
            for member in cls:
                if best < member <= level and member != cls.OFF:
                    best = member
            return best


class DeviceStatus(enum.Enum):
    """Values of the ``device-status`` discrete sensor."""

    OK = 1
    DEGRADED = 2
    FAIL = 3


class TypeInfo(Generic[_T]):
    """One entry of the type registry (see :func:`register_type`)."""

    __slots__ = ("type_", "name", "encode", "get_decoder", "default")

    def __init__(self, type_: Type[_T], name: str, encode: Callable[[_T], bytes],
                 get_decoder: Callable[[Type[_T]], Callable[[bytes], _T]],
                 default: Callable[[Type[_T]], _T]) -> None:
        self.type_ = type_
        self.name = name
        self.encode = encode
        self.get_decoder = get_decoder
        self.default = default

    def decode(self, cls: Type[_T], value: bytes) -> _T:
        """Decode ``value`` to ``cls`` (kept from aiokatcp 1.x)."""
        return self.get_decoder(cls)(value)


_registry: List[TypeInfo] = []


def _default_generic(cls: type) -> Any:
    return cls()


def register_type(type_: Type[_T], name: str, encode: Callable[[_T], bytes],
                  get_decoder: Callable[[Type[_T]], Callable[[bytes], _T]],
                  default: Optional[Callable[[Type[_T]], _T]] = None) -> None:
    """Register a Python type for message arguments and sensors.

    The entry also serves subclasses of ``type_`` that have no entry of their own
    (``enum.Enum`` is registered once for every enum).

    Parameters
    ----------
    type_ : type
        The Python class.
    name : str
        KATCP type name (``integer``, ``float``, ``discrete``...), used by sensors.
    encode : callable
        Value to bytes.
    get_decoder : callable
        Given the actual (possibly derived) class, return a function bytes -> value.
    default : callable, optional
        Given the actual class, return a default value (sensors); ``cls()`` if omitted.

    Raises
    ------
    ValueError
        If ``type_`` is already registered.
    """
    if any(info.type_ == type_ for info in _registry):
        raise ValueError(f"{type_} is already registered")
    _registry.append(TypeInfo(type_, name, encode, get_decoder, default or _default_generic))
    get_type.cache_clear()
    get_decoder_cached.cache_clear()
    _encoders.clear()


@functools.lru_cache(maxsize=None)
def get_type(type_: Type[_T]) -> TypeInfo[_T]:
    """The registry entry of ``type_``: the latest registered superclass.

    Raises
    ------
    TypeError
        If no registered type is a superclass of ``type_``.
    """
    for info in reversed(_registry):
        if issubclass(type_, info.type_):
            return info
    raise TypeError(f"{type_} is not registered")


def _union_members(cls: Any) -> Optional[Tuple[Any, ...]]:
    if isinstance(cls, _UNION_TYPES):
        return typing.get_args(cls)
    return None


@functools.lru_cache(maxsize=None)
def get_decoder_cached(cls: Any) -> Callable[[bytes], Any]:
    members = _union_members(cls)
    if members is not None:
        # Optional[T] (a None member) decodes as T: None means "not given" to handlers.
        members = tuple(m for m in members if m is not type(None))
        if len(members) == 1:
            return get_decoder_cached(members[0])
        decoders = tuple(get_decoder_cached(m) for m in members)

        def decode_union(value: bytes) -> Any:
            found = []
            for dec in decoders:
                try:
                    found.append(dec(value))
                except ValueError:
                    pass
            if len(found) == 1:
                return found[0]
            if not found:
                raise ValueError(f"None of the types in {cls} could decode {value!r}")
            raise ValueError(f"{value!r} is ambiguous for {cls}")

        return decode_union
    return get_type(cls).get_decoder(cls)


def get_decoder(cls: Type[_T]) -> Callable[[bytes], _T]:
    """A function that decodes message arguments to ``cls`` (see :func:`decode`)."""
    return get_decoder_cached(cls)  # type: ignore[arg-type]


# class -> encode function: a plain dict in front of get_type for the per-argument path
_encoders: dict = {}


def encoder_for(cls: type) -> Callable[[Any], bytes]:
    """The encode function of values of class ``cls`` (cached)."""
    enc = _encoders.get(cls)
    if enc is None:
        enc = _encoders[cls] = get_type(cls).encode
    return enc


def encode_all(values: Any) -> List[bytes]:
    """Encode each value (bytes pass through as they are)."""
    out = []
    for v in values:
        cls = v.__class__
        if cls is bytes:
            out.append(v)
        else:
            enc = _encoders.get(cls)
            if enc is None:
                enc = encoder_for(cls)
            out.append(enc(v))
    return out


def encode(value: Any) -> bytes:
    """Encode a value to the bytes of a message argument.

    Raises
    ------
    TypeError
        If the type of ``value`` is not registered.
    """
    return encoder_for(type(value))(value)


def decode(cls: Any, value: bytes) -> Any:
    """Decode the (unescaped) argument ``value`` to ``cls``.

    ``cls`` may be a union: exactly one member must decode the value.

    Raises
    ------
    ValueError
        If ``value`` is not valid for ``cls``.
    TypeError
        If ``cls`` (or a union member) is not registered.
    """
    return get_decoder_cached(cls)(value)


class KatcpSyntaxError(_CtlwireSyntaxError):
    """A line that breaks the KATCP grammar (a ``ValueError``).

    Parameters
    ----------
    message : str
        What is wrong.
    raw : bytes, optional
        The offending input.
    """

    def __init__(self, message: str, raw: Optional[bytes] = None) -> None:
        super().__init__(message)
        self.raw = raw

    def __reduce__(self):
        return (type(self), (self.reason, self.raw))


class _MessageType(enum.Enum):
    REQUEST = 1
    REPLY = 2
    INFORM = 3


_MessageType.__name__ = "MessageType"
_MessageType.__qualname__ = "MessageType"

# codec type numbers (0, 1, 2) <-> Message.Type
_FROM_CODEC = (_MessageType.REQUEST, _MessageType.REPLY, _MessageType.INFORM)
_TO_CODEC = {_MessageType.REQUEST: 0, _MessageType.REPLY: 1, _MessageType.INFORM: 2}
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*\Z", re.ASCII)
_MID_MAX = 2 ** 31 - 1


class Message:
    """A KATCP message (aiokatcp's shape).

    Parameters
    ----------
    mtype : Message.Type
        ``REQUEST``, ``REPLY`` or ``INFORM``.
    name : str
        Message name.
    *arguments
        Arguments, each encoded with :func:`encode` (``bytes`` kept as they are).
    mid : int, optional
        Message id, 1 to 2**31-1.

    Notes
    -----
    ``bytes(msg)`` is the wire form *with* its final newline (as in aiokatcp).
    """

    __slots__ = ("mtype", "name", "arguments", "mid")

    Type: TypeAlias = _MessageType
    OK = b"ok"
    FAIL = b"fail"
    INVALID = b"invalid"

    def __init__(self, mtype: _MessageType, name: str, *arguments: Any,
                 mid: Optional[int] = None) -> None:
        self.mtype = mtype
        if not _NAME_RE.match(name):
            raise ValueError(f"name {name} is invalid")
        self.name = name
        self.arguments = encode_all(arguments)
        if mid is not None and not 1 <= mid <= _MID_MAX:
            raise ValueError(f"message ID {mid} is outside of range 1 to 2**31-1")
        self.mid = mid

    @classmethod
    def request(cls, name: str, *arguments: Any, mid: Optional[int] = None) -> "Message":
        """Build a request ``?name``."""
        return cls(_MessageType.REQUEST, name, *arguments, mid=mid)

    @classmethod
    def reply(cls, name: str, *arguments: Any, mid: Optional[int] = None) -> "Message":
        """Build a reply ``!name``."""
        return cls(_MessageType.REPLY, name, *arguments, mid=mid)

    @classmethod
    def inform(cls, name: str, *arguments: Any, mid: Optional[int] = None) -> "Message":
        """Build an inform ``#name``."""
        return cls(_MessageType.INFORM, name, *arguments, mid=mid)

    @classmethod
    def reply_to_request(cls, msg: "Message", *arguments: Any) -> "Message":
        """The reply to request ``msg`` (same name and id)."""
        return cls(_MessageType.REPLY, msg.name, *arguments, mid=msg.mid)

    @classmethod
    def inform_reply(cls, msg: "Message", *arguments: Any) -> "Message":
        """An inform that belongs to request ``msg`` (same name and id)."""
        return cls(_MessageType.INFORM, msg.name, *arguments, mid=msg.mid)

    @classmethod
    def escape_argument(cls, arg: bytes) -> bytes:
        """Escape one argument for the wire (empty becomes ``\\@``)."""
        return _kcore.escape_argument(arg)

    @classmethod
    def unescape_argument(cls, arg: bytes) -> bytes:
        """Undo the escaping of one argument.

        Raises
        ------
        KatcpSyntaxError
            On an unknown escape or a lone trailing backslash.
        """
        try:
            return _kcore.unescape_argument(arg)
        except _CtlwireSyntaxError as exc:
            raise KatcpSyntaxError(str(exc), arg) from None

    @classmethod
    def parse(cls, raw: bytes) -> "Message":
        """Parse one line of wire bytes, *including* its final newline.

        Raises
        ------
        KatcpSyntaxError
            Saying what is wrong, with ``raw`` attached.
        """
        if raw[-1:] not in (b"\n", b"\r"):
            raise KatcpSyntaxError("message does not end with newline", raw)
        try:
            parsed = _PARSER.parse(raw[:-1])
        except _CtlwireSyntaxError as exc:
            raise KatcpSyntaxError(exc.reason if exc.position is None
                                   else f"{exc.reason} at position {exc.position}",
                                   raw) from None
        return from_codec(parsed, cls)

    def __bytes__(self) -> bytes:
        return _encode_line(_TO_CODEC[self.mtype], self.name, self.arguments, self.mid)

    def __repr__(self) -> str:
        args = "".join(f", {a!r}" for a in self.arguments)
        return f"Message(Message.Type.{self.mtype.name}, {self.name!r}{args}, mid={self.mid!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.mtype is other.mtype and self.name == other.name
                and self.mid == other.mid and self.arguments == other.arguments)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]  # mutable

    def reply_ok(self) -> bool:
        """True for a reply whose first argument is ``ok``."""
        return (self.mtype is _MessageType.REPLY and bool(self.arguments)
                and self.arguments[0] == b"ok")


_PARSER = _CParser()
_new = object.__new__


def from_codec(parsed: Any, cls: type = Message) -> Message:
    """Convert a message from ctlwire's codec to this module's :class:`Message`."""
    msg: Any = _new(cls)
    msg.mtype = _FROM_CODEC[parsed.mtype]
    msg.name = parsed.name
    msg.arguments = parsed.arguments
    mid = parsed.mid
    msg.mid = None if mid is None else int(mid)
    return msg


def to_wire(msg: Message) -> bytes:
    """Wire bytes of ``msg`` (the same as ``bytes(msg)``)."""
    return _encode_line(_TO_CODEC[msg.mtype], msg.name, msg.arguments, msg.mid)


# -- the standard registrations -------------------------------------------------------

def _identity(x: Any) -> Any:
    return x


def _decoder_float(cls: type) -> Callable[[bytes], Any]:
    if cls is float:
        return float
    return lambda raw: cls(float(raw))


def _decoder_int(cls: type) -> Callable[[bytes], Any]:
    if cls is int:
        return int
    return lambda raw: cls(int(raw))


def _decoder_bool(cls: type) -> Callable[[bytes], Any]:
    def decode_bool(raw: bytes) -> Any:
        if raw == b"1":
            return cls(True)
        if raw == b"0":
            return cls(False)
        raise ValueError(f"boolean must be 0 or 1, not {raw!r}")
    return decode_bool


def _decoder_str(cls: type) -> Callable[[bytes], Any]:
    if cls is str:
        return bytes.decode
    return lambda raw: cls(raw, encoding="utf-8")


def _decoder_bytes(cls: type) -> Callable[[bytes], Any]:
    return _identity if cls is bytes else cls


def _encode_enum(value: enum.Enum) -> bytes:
    katcp_value = getattr(value, "katcp_value", None)
    if katcp_value is not None:
        return katcp_value
    return value.name.encode("ascii").lower().replace(b"_", b"-")


def _decoder_enum(cls: Any) -> Callable[[bytes], Any]:
    table = {_encode_enum(member): member for member in cls}

    def decode_enum(raw: bytes) -> Any:
        try:
            return table[raw]
        except KeyError:
            raise ValueError(f"{raw!r} is not a valid value for {cls.__name__}") from None
    return decode_enum


def _default_enum(cls: Any) -> Any:
    return next(iter(cls))


def _encode_float(value: Any) -> bytes:
    return repr(float(value)).encode("ascii")


def _encode_int(value: Any) -> bytes:
    return b"%d" % int(value)


register_type(numbers.Real, "float", _encode_float, _decoder_float)  # type: ignore[type-abstract]
register_type(numbers.Integral, "integer", _encode_int, _decoder_int)  # type: ignore[type-abstract]
register_type(bool, "boolean", lambda v: b"1" if v else b"0", _decoder_bool)
register_type(bytes, "string", _identity, _decoder_bytes)
register_type(str, "string", lambda v: v.encode("utf-8"), _decoder_str)
register_type(Address, "address", bytes, lambda cls: cls.parse,
              lambda cls: cls(ipaddress.IPv4Address("0.0.0.0")))
register_type(Timestamp, "timestamp", lambda v: repr(v).encode("ascii"), lambda cls: cls)
register_type(enum.Enum, "discrete", _encode_enum, _decoder_enum, _default_enum)
