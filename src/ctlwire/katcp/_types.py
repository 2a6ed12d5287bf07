"""KATCP argument types: one wire argument (``bytes``) to a Python value and back.

Each type checks the value (range, allowed values); :class:`Parameter` names a handler
parameter in error messages. Public through :mod:`ctlwire.katcp.kattypes`.

Layering: imports ``ctlwire.katcp.core`` only.
"""
from __future__ import annotations

import math
import numbers
import re
import struct
from typing import Any, Iterable

from .core import DEFAULT_KATCP_MAJOR, FailReply

__all__ = [
    "KatcpType",
    "Int",
    "Float",
    "Bool",
    "Str",
    "Discrete",
    "DiscreteMulti",
    "Lru",
    "Address",
    "Timestamp",
    "TimestampOrNow",
    "StrictTimestamp",
    "Struct",
    "Regex",
    "Parameter",
]

# From v5 timestamps are seconds; before, integer milliseconds.
SEC_TS_KATCP_MAJOR = 5


def _text(value: Any) -> str:
    """Show a wire value in an error message without a ``b''`` wrapper."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


class KatcpType:
    """Base class of the KATCP argument types.

    Subclasses set :attr:`name` and implement :meth:`encode` and :meth:`decode`
    (and :meth:`check` when values have limits).

    Parameters
    ----------
    default : object, optional
        Value used when the argument is missing.
    optional : bool, optional
        Whether a missing argument is allowed (it then unpacks to ``default``, which
        may be ``None``).
    multiple : bool, optional
        Whether this type takes every remaining argument (last type only).
    """

    __slots__ = ("_default", "_optional", "_multiple")
    name = "unknown"
    # True when check() is the no-op base method, so the hot paths can skip the call.
    _trivial_check = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._trivial_check = cls.check is KatcpType.check

    def __init__(self, default: Any = None, optional: bool = False, multiple: bool = False):
        self._default = default
        self._optional = optional
        self._multiple = multiple

    def get_default(self) -> Any:
        """Return the default value; ``ValueError`` if there is none and not optional."""
        if self._default is None and not self._optional:
            raise ValueError("No value or default given")
        return self._default

    def check(self, value: Any, major: int) -> None:
        """Raise ``ValueError`` if ``value`` is not acceptable (default: accept)."""

    def encode(self, value: Any, major: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, value: bytes, major: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def pack(self, value: Any, nocheck: bool = False, major: int = DEFAULT_KATCP_MAJOR) -> bytes:
        """Return ``value`` as an (unescaped) KATCP argument.

        Parameters
        ----------
        value : object
            Value to pack; ``None`` packs the default.
        nocheck : bool, optional
            Skip :meth:`check`.
        major : int, optional
            KATCP major version to format for.
        """
        if value is None:
            value = self.get_default()
        if value is None:
            raise ValueError("Cannot pack a None value.")
        if not nocheck and not self._trivial_check:
            self.check(value, major)
        return self.encode(value, major)

    def unpack(self, packed_value: bytes | None, major: int = DEFAULT_KATCP_MAJOR) -> Any:
        """Parse an (unescaped) KATCP argument into a checked value.

        ``None`` (a missing argument) gives the default.
        """
        if packed_value is None:
            value = self.get_default()
        else:
            value = self.decode(packed_value, major)
        if value is not None and not self._trivial_check:
            self.check(value, major)
        return value


class Int(KatcpType):
    """Integer argument, optionally limited to ``min`` .. ``max``."""

    __slots__ = ("_min", "_max")
    name = "integer"

    def __init__(self, min: int | None = None, max: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self._min = min
        self._max = max

    def encode(self, value: Any, major: int) -> bytes:
        return b"%d" % (value,)

    def decode(self, value: bytes, major: int) -> int:
        try:
            return int(value)
        except Exception:
            raise ValueError(f"Could not parse value '{_text(value)}' as integer.") from None

    def check(self, value: Any, major: int) -> None:
        """Raise ``ValueError`` when ``value`` is outside ``min`` .. ``max``."""
        if self._min is not None and value < self._min:
            raise ValueError(f"Integer {value} is lower than minimum {self._min}.")
        if self._max is not None and value > self._max:
            raise ValueError(f"Integer {value} is higher than maximum {self._max}.")


class Float(KatcpType):
    """Float argument (``repr`` on the wire), optionally limited to ``min`` .. ``max``."""

    __slots__ = ("_min", "_max")
    name = "float"

    def __init__(self, min: float | None = None, max: float | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self._min = min
        self._max = max

    def encode(self, value: Any, major: int) -> bytes:
        if value.__class__ is float:
            return repr(value).encode()
        # float() first: subclasses such as numpy.float64 have their own repr.
        if isinstance(value, numbers.Real):
            return repr(float(value)).encode()
        raise ValueError(f"Could not encode value {value!r} as float.")

    def decode(self, value: bytes, major: int) -> float:
        try:
            return float(value)
        except Exception:
            raise ValueError(f"Could not parse value '{_text(value)}' as float.") from None

    def check(self, value: Any, major: int) -> None:
        """Raise ``ValueError`` when ``value`` is outside ``min`` .. ``max``."""
        if self._min is not None and value < self._min:
            raise ValueError(f"Float {value:g} is lower than minimum {self._min:g}.")
        if self._max is not None and value > self._max:
            raise ValueError(f"Float {value:g} is higher than maximum {self._max:g}.")


class Bool(KatcpType):
    """Boolean argument: ``1`` or ``0`` on the wire."""

    __slots__ = ()
    name = "boolean"

    def encode(self, value: Any, major: int) -> bytes:
        return b"1" if value else b"0"

    def decode(self, value: bytes, major: int) -> bool:
        if value == b"1":
            return True
        if value == b"0":
            return False
        raise ValueError(f"Boolean value must be '0' or '1' but is '{_text(value)}'.")


class Str(KatcpType):
    """Text argument: ``str`` in Python, UTF-8 on the wire.

    Anything else given to :meth:`pack` is converted with ``str()`` first; ``bytes``
    pass through untouched.
    """

    __slots__ = ()
    name = "string"

    def encode(self, value: Any, major: int) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode("utf-8")
        return str(value).encode("utf-8")

    def decode(self, value: bytes, major: int) -> str:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"Could not decode value as UTF-8: {exc}") from None


class Discrete(Str):
    """One of a fixed set of words.

    Parameters
    ----------
    values : iterable of str
        The allowed values (order kept for ``?sensor-list``).
    case_insensitive : bool, optional
        Whether matching ignores case.
    """

    __slots__ = ("_values", "_valid_values", "_case_insensitive", "_valid_values_lower")
    name = "discrete"

    def __init__(self, values: Iterable[str], case_insensitive: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self._case_insensitive = case_insensitive
        self._values = [_text(v) for v in values]
        self._valid_values = set(self._values)
        self._valid_values_lower = {v.lower() for v in self._values}

    def check(self, value: Any, major: int) -> None:
        """Raise ``ValueError`` unless ``value`` is one of the allowed values."""
        value = _text(value)
        if self._case_insensitive:
            ok = value.lower() in self._valid_values_lower
            flag = " (case-insensitive)"
        else:
            ok = value in self._valid_values
            flag = ""
        if not ok:
            raise ValueError(f"Discrete value '{value}' is not one of {self._values}{flag}.")


class DiscreteMulti(Discrete):
    """Several discrete values joined by ``separator``; ``all_keyword`` means all."""

    __slots__ = ("all_keyword", "separator")
    name = "discretemulti"

    def __init__(self, values: Iterable[str], all_keyword: str = "all", separator: str = ",",
                 **kwargs: Any):
        self.all_keyword = all_keyword
        self.separator = separator
        super().__init__(values, **kwargs)

    def encode(self, value: Any, major: int) -> bytes:
        return super().encode(self.separator.join(sorted(value, key=str.lower)), major)

    def decode(self, value: bytes, major: int) -> list[str]:
        joined = super().decode(value, major)
        if self.all_keyword and joined == self.all_keyword:
            return sorted(self._valid_values, key=str.lower)
        return sorted((v.strip() for v in joined.split(self.separator)), key=str.lower)

    def check(self, value: Any, major: int) -> None:
        """Check each item against the allowed values."""
        for item in value:
            super().check(item, major)


class Lru(KatcpType):
    """Line-replaceable-unit state: ``Lru.LRU_NOMINAL`` (0) or ``Lru.LRU_ERROR`` (1)."""

    __slots__ = ()
    name = "lru"
    LRU_NOMINAL, LRU_ERROR = 0, 1
    LRU_VALUES = {LRU_NOMINAL: b"nominal", LRU_ERROR: b"error"}
    LRU_CONSTANTS = {v: k for k, v in LRU_VALUES.items()}

    def encode(self, value: Any, major: int) -> bytes:
        try:
            return Lru.LRU_VALUES[value]
        except (KeyError, TypeError):
            raise ValueError("Lru value must be LRU_NOMINAL or LRU_ERROR.") from None

    def decode(self, value: bytes, major: int) -> int:
        try:
            return Lru.LRU_CONSTANTS[value]
        except KeyError:
            raise ValueError("Lru value must be 'nominal' or 'error'.") from None

    def check(self, value: Any, major: int) -> None:
        """Raise ``ValueError`` unless ``value`` is an LRU constant."""
        if value not in Lru.LRU_VALUES:
            raise ValueError("Lru value must be LRU_NOMINAL or LRU_ERROR.")


class Address(KatcpType):
    """Network address ``(host, port)``: ``host:port``, ``[v6]:port`` or ``host``.

    ``port`` is ``None`` when absent.
    """

    __slots__ = ()
    name = "address"
    NULL = ("0.0.0.0", None)
    IPV4_RE = re.compile(rb"^(?P<host>[^:\[\]]*)(:(?P<port>\d+))?$")
    IPV6_RE = re.compile(rb"^\[(?P<host>[^\[\]]*)\](:(?P<port>\d+))?$")

    def encode(self, value: Any, major: int) -> bytes:
        try:
            host, port = value
        except (ValueError, TypeError):
            raise ValueError(f"Could not extract host and port from value {value!r}") from None
        bhost = host.encode("ascii") if isinstance(host, str) else bytes(host)
        if b":" in bhost:
            bhost = b"[" + bhost + b"]"
        return bhost if port is None else b"%s:%d" % (bhost, port)

    def decode(self, value: bytes, major: int) -> tuple[str, int | None]:
        match = (self.IPV6_RE if value.startswith(b"[") else self.IPV4_RE).match(value)
        if match is None:
            raise ValueError(f"Could not parse '{_text(value)}' as an address.")
        port = match.group("port")
        return match.group("host").decode("ascii", "replace"), (
            None if port is None else int(port))

    def check(self, value: Any, major: int) -> None:
        """Raise ``ValueError`` unless ``value`` is a ``(host, port)`` pair."""
        try:
            host, port = value
        except (ValueError, TypeError):
            raise ValueError(f"Address must be a (host, port) pair, not {value!r}") from None
        if port is not None and not (isinstance(port, int) and 0 <= port <= 65535):
            raise ValueError(f"Address port must be an integer 0..65535, not {port!r}")


class Timestamp(KatcpType):
    """Time in seconds since the epoch (``%.6f``; v4 and older: integer milliseconds)."""

    __slots__ = ()
    name = "timestamp"

    def encode(self, value: Any, major: int) -> bytes:
        if major >= SEC_TS_KATCP_MAJOR:
            return b"%.6f" % float(value)
        return b"%d" % int(float(value) * 1000)

    def decode(self, value: bytes, major: int) -> float:
        try:
            decoded = float(value)
        except Exception:
            raise ValueError(f"Could not parse value '{_text(value)}' as timestamp.") from None
        if not math.isfinite(decoded):
            raise ValueError(f"Timestamp '{_text(value)}' is not finite.")
        return decoded if major >= SEC_TS_KATCP_MAJOR else decoded / 1000.0


class TimestampOrNow(Timestamp):
    """A :class:`Timestamp` or the word ``now`` (unpacked as :attr:`NOW`)."""

    __slots__ = ()
    name = "timestamp_or_now"
    NOW = object()

    def encode(self, value: Any, major: int) -> bytes:
        if value is self.NOW:
            return b"now"
        return super().encode(value, major)

    def decode(self, value: bytes, major: int) -> Any:
        if value == b"now":
            return self.NOW
        return super().decode(value, major)


class StrictTimestamp(KatcpType):
    """A non-negative timestamp written strictly as ``digits[.digits]``."""

    __slots__ = ()
    name = "strict_timestamp"
    _RE = re.compile(rb"^\d+(\.\d+)?$")

    def encode(self, value: Any, major: int) -> bytes:
        if isinstance(value, numbers.Real):
            return repr(float(value)).encode()
        raise ValueError(f"Could not encode value {value!r} as strict timestamp.")

    def decode(self, value: bytes, major: int) -> float:
        if not self._RE.match(value):
            raise ValueError(f"Could not parse value '{_text(value)}' as strict timestamp.")
        return float(value)

    def check(self, value: Any, major: int) -> None:
        """Raise ``ValueError`` for negative values."""
        if float(value) < 0:
            raise ValueError("Strict timestamps may not be negative.")


class Struct(KatcpType):
    """Binary value packed with :mod:`struct` format ``fmt``."""

    __slots__ = ("_fmt",)
    name = "struct"

    def __init__(self, fmt: str, **kwargs: Any):
        super().__init__(**kwargs)
        self._fmt = fmt

    def encode(self, value: Any, major: int) -> bytes:
        try:
            return struct.pack(self._fmt, *value)
        except struct.error as exc:
            raise ValueError(f"Could not pack {value!r} with format {self._fmt}: {exc}") from None

    def decode(self, value: bytes, major: int) -> tuple:
        try:
            return struct.unpack(self._fmt, value)
        except struct.error as exc:
            raise ValueError(f"Could not unpack value with format {self._fmt}: {exc}") from None


class Regex(Str):
    """Text that must match a regular expression (``re.match``)."""

    __slots__ = ("_compiled", "_pattern")
    name = "regex"

    def __init__(self, regex: str | re.Pattern, **kwargs: Any):
        self._compiled = regex if hasattr(regex, "pattern") else re.compile(regex)
        self._pattern = self._compiled.pattern
        super().__init__(**kwargs)

    def check(self, value: Any, major: int) -> None:
        """Raise ``ValueError`` when ``value`` does not match."""
        if not self._compiled.match(value):
            raise ValueError(f"Value '{value}' does not match regex '{self._pattern}'.")


class Parameter:
    """One handler parameter: its position (from 1), name and type, for error messages."""

    __slots__ = ("position", "name", "_kattype", "major")

    def __init__(self, position: int, name: str, kattype: KatcpType, major: int):
        self.position = position
        self.name = name
        self._kattype = kattype
        self.major = major

    def pack(self, value: Any) -> bytes:
        """Pack ``value`` with this parameter's type."""
        return self._kattype.pack(value, major=self.major)

    def unpack(self, value: bytes | None) -> Any:
        """Unpack ``value``; a bad value raises :class:`FailReply` naming the parameter."""
        try:
            return self._kattype.unpack(value, self.major)
        except ValueError as exc:
            raise FailReply(f"Error in parameter {self.position} ({self.name}): {exc}") from None
