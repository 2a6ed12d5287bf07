"""KATCP argument types and the ``@request`` / ``@return_reply`` handler decorators.

A type turns one wire argument (``bytes``) into a Python value and back, and checks
the value (range, allowed values). The decorators use the types to unpack a request's
arguments into handler parameters and to pack a handler's returned tuple into a reply,
the way katcp-python device authors write them::

    class MyDevice(DeviceServer):
        @request(Int(min=0), Float(optional=True))
        @return_reply(Int())
        def request_add(self, req, a, b):
            '''Add two numbers.'''
            return ("ok", a + int(b or 0))

Errors are turned into ``fail`` replies that name the parameter:
``Error in parameter 2 (b): Could not parse value 'x' as float.``

The types live in ``_types`` and the decorators in ``_decorators``; this module is
their public face.

Layering: imports ``_types``, ``_decorators`` and ``core`` (it re-exports them).
"""
from __future__ import annotations

from ._decorators import (concurrent_reply, has_katcp_protocol_flags, inform, make_reply,
                          minimum_katcp_version, pack_types, request, request_timeout_hint,
                          return_reply, send_reply, unpack_message, unpack_types)
from ._types import SEC_TS_KATCP_MAJOR  # noqa: F401  (importable from here, as before)
from .core import DEFAULT_KATCP_MAJOR, FailReply, Message  # noqa: F401  (as before)
from . import _decorators, _types
from ._types import (Address, Bool, Discrete, DiscreteMulti, Float, Int, KatcpType, Lru,
                     Parameter, Regex, StrictTimestamp, Str, Struct, Timestamp,
                     TimestampOrNow)

__all__ = [*_types.__all__, *_decorators.__all__]
