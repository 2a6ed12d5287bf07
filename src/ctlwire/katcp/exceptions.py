"""Exceptions of the KATCP layer, shared by the codec, the server and the clients.

Layering: the bottom of ``ctlwire.katcp``; imports nothing from ctlwire.
"""
from __future__ import annotations

__all__ = [
    "KatcpError",
    "KatcpSyntaxError",
    "KatcpClientError",
    "KatcpTimeoutError",
    "KatcpVersionError",
    "KatcpDeviceError",
    "KatcpTypeError",
    "FailReply",
    "AsyncReply",
]


class KatcpError(Exception):
    """Base class of every KATCP error raised by ctlwire."""


class KatcpSyntaxError(KatcpError, ValueError):
    """A KATCP line or message that breaks the grammar.

    Attributes
    ----------
    reason : str
        What is wrong, e.g. ``"unknown escape '\\z'"``.
    position : int or None
        Byte offset in the line where the problem was found.
    line : bytes or None
        The offending line (possibly truncated to its first 200 bytes).
    """

    def __init__(self, reason: str, position: int | None = None, line: bytes | None = None):
        self.reason = reason
        self.position = position
        self.line = line
        text = reason if position is None else f"{reason} at position {position}"
        if line is not None:
            shown = line if len(line) <= 200 else line[:200] + b"..."
            text = f"{text} in {shown!r}"
        super().__init__(text)

    def __reduce__(self):
        return (type(self), (self.reason, self.position, self.line))


class KatcpClientError(KatcpError):
    """A client-side failure: not connected, connection lost, timed out."""


class KatcpTimeoutError(KatcpClientError, TimeoutError):
    """A request got no reply within its timeout.

    Subclass of both :class:`KatcpClientError` (the katcp-python convention: client
    failures raise it) and the built-in :class:`TimeoutError`.
    """


class KatcpVersionError(KatcpError):
    """The peer's protocol version does not support what was asked (e.g. message ids)."""


class KatcpDeviceError(KatcpError):
    """A device-side failure reported to the caller."""


class KatcpTypeError(KatcpError, ValueError):
    """A value that does not fit a KATCP type (argument or sensor value)."""


class FailReply(KatcpError):
    """Raise in a request handler to reply ``fail`` with the exception's text."""


class AsyncReply(KatcpError):
    """Raise in a request handler to reply later through the request object."""

