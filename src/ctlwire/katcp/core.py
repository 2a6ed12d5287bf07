"""KATCP core: messages, parsing, protocol flags and the exceptions of the protocol.

The wire codec is compiled (``ctlwire.katcp._codec``); this module re-exports it with
the pure-Python pieces around it. No I/O here or in the codec.

Layering: imports ``exceptions`` and the compiled ``_codec``; everything else of
``ctlwire.katcp`` builds on this module.
"""
from __future__ import annotations

import math
import re
from typing import Iterable

from .._ext import load_extension
from .exceptions import (AsyncReply, FailReply, KatcpClientError, KatcpDeviceError,
                         KatcpError, KatcpSyntaxError, KatcpTypeError, KatcpVersionError)

_codec = load_extension("ctlwire.katcp._codec")

Message = _codec.Message
MessageParser = _codec.MessageParser
StreamParser = _codec.StreamParser
encode_message = _codec.encode_message
encode_messages = _codec.encode_messages
escape_argument = _codec.escape_argument
unescape_argument = _codec.unescape_argument
format_argument = _codec.format_argument

#: Default protocol major version spoken by ctlwire's server and client.
DEFAULT_KATCP_MAJOR = 5
#: First major version with message ids.
MID_KATCP_MAJOR = 5
#: Minimum protocol version for the request-timeout-hint and bulk sampling flags.
VERSION_5_1 = (5, 1)

__all__ = [
    "Message",
    "MessageParser",
    "StreamParser",
    "ProtocolFlags",
    "encode_message",
    "encode_messages",
    "escape_argument",
    "unescape_argument",
    "format_argument",
    "KatcpError",
    "KatcpSyntaxError",
    "KatcpClientError",
    "KatcpVersionError",
    "KatcpDeviceError",
    "KatcpTypeError",
    "FailReply",
    "AsyncReply",
    "DEFAULT_KATCP_MAJOR",
    "MID_KATCP_MAJOR",
]


class ProtocolFlags:
    """The protocol version and feature flags a KATCP peer announces.

    Parameters
    ----------
    major, minor : int
        Protocol version (``5``, ``1`` for ``5.1``).
    flags : iterable of bytes or str
        Single-letter flags: ``M`` many clients, ``I`` message ids, ``B`` bulk sensor
        sampling, ``T`` request timeout hints. Unknown flags are kept.

    Examples
    --------
    >>> str(ProtocolFlags.parse_version(b"5.1-MIB"))
    '5.1-BIM'
    """

    __slots__ = ("major", "minor", "flags")

    MULTI_CLIENT = b"M"
    MESSAGE_IDS = b"I"
    BULK_SET_SENSOR_SAMPLING = b"B"
    REQUEST_TIMEOUT_HINTS = b"T"

    STRATEGIES_V4 = frozenset([b"none", b"auto", b"period", b"event", b"differential"])
    STRATEGIES_V5 = STRATEGIES_V4 | frozenset([b"event-rate", b"differential-rate"])
    STRATEGIES_ALLOWED_BY_MAJOR_VERSION = {4: STRATEGIES_V4, 5: STRATEGIES_V5}

    _VERSION_RE = re.compile(rb"^(\d+)\.(\d+)(?:-(.*))?$")

    def __init__(self, major: int | None, minor: int | None,
                 flags: Iterable[bytes | str | int] = ()):
        self.major = int(major) if major is not None else 0
        self.minor = int(minor) if minor is not None else 0
        fl: set[bytes] = set()
        for f in flags:
            if isinstance(f, int):
                f = bytes([f])
            elif isinstance(f, str):
                f = f.encode("ascii")
            fl.update(f[i:i + 1] for i in range(len(f)))
        self.flags = fl
        if self.message_ids and self.major < MID_KATCP_MAJOR:
            raise ValueError("message ids (flag I) need katcp v5 or newer")
        if self.bulk_set_sensor_sampling and (self.major, self.minor) < VERSION_5_1:
            raise ValueError("bulk sensor sampling (flag B) needs katcp v5.1 or newer")
        if self.request_timeout_hints and (self.major, self.minor) < VERSION_5_1:
            raise ValueError("request timeout hints (flag T) need katcp v5.1 or newer")

    @property
    def multi_client(self) -> bool:
        return self.MULTI_CLIENT in self.flags

    @property
    def message_ids(self) -> bool:
        return self.MESSAGE_IDS in self.flags

    @property
    def bulk_set_sensor_sampling(self) -> bool:
        return self.BULK_SET_SENSOR_SAMPLING in self.flags

    @property
    def request_timeout_hints(self) -> bool:
        return self.REQUEST_TIMEOUT_HINTS in self.flags

    def supports(self, flag: bytes) -> bool:
        """True if ``flag`` (e.g. ``b"I"``) is offered."""
        return flag in self.flags

    def strategy_allowed(self, strategy: bytes) -> bool:
        """True if the sampling ``strategy`` exists in this protocol version."""
        return strategy in self.STRATEGIES_ALLOWED_BY_MAJOR_VERSION.get(self.major, ())

    @classmethod
    def parse_version(cls, version_str: bytes | str) -> "ProtocolFlags":
        """Parse ``b"5.1-BIM"`` (the ``#version-connect katcp-protocol`` argument).

        A string that is not a version gives ``ProtocolFlags(0, 0, ())``, as in
        katcp-python.
        """
        if isinstance(version_str, str):
            version_str = version_str.encode("ascii", "replace")
        m = cls._VERSION_RE.match(version_str)
        if not m:
            return cls(None, None, ())
        return cls(int(m.group(1)), int(m.group(2)), m.group(3) or b"")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProtocolFlags):
            return NotImplemented
        return (self.major, self.minor, self.flags) == (other.major, other.minor, other.flags)

    def __hash__(self) -> int:
        return hash((self.major, self.minor, frozenset(self.flags)))

    def __str__(self) -> str:
        flags = b"".join(sorted(self.flags)).decode("ascii", "replace")
        return f"{self.major}.{self.minor}" + (f"-{flags}" if flags else "")

    def __repr__(self) -> str:
        return f"ProtocolFlags({self.major}, {self.minor}, {sorted(self.flags)!r})"


def check_timeout(timeout: float | None, what: str = "timeout") -> float | None:
    """``timeout`` if it is ``None`` or a finite number >= 0, else ``ValueError``.

    The clients' rule for every timeout they are given: ``None`` waits for ever, ``0``
    does not wait at all (the request fails with :class:`KatcpTimeoutError` at once),
    and a negative or non-finite number is a mistake, reported rather than guessed at.
    """
    if timeout is None:
        return None
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of seconds or None, "
                         f"not {timeout!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be finite and >= 0 seconds, not {timeout!r}")
    return value
