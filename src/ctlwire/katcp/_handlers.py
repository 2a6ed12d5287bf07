"""Handler tables of a device server class: ``request_*`` methods collected by name.

Layering: imports ``ctlwire.katcp.core`` only.
"""
from __future__ import annotations

from typing import Callable

from .core import ProtocolFlags

__all__ = ["DeviceMetaclass"]


class DeviceMetaclass(type):
    """Collect ``request_*``, ``inform_*`` and ``reply_*`` methods into handler tables.

    ``request_foo_bar`` serves ``?foo-bar``. Every request handler needs a docstring
    (it is the ``?help`` text). Handlers marked with :func:`minimum_katcp_version` or
    :func:`has_katcp_protocol_flags` are left out when the class's ``PROTOCOL_INFO``
    does not offer them.
    """

    def __init__(cls, name: str, bases: tuple, dct: dict):
        super().__init__(name, bases, dct)
        cls._request_handlers = {}
        cls._inform_handlers = {}
        cls._reply_handlers = {}
        protocol = getattr(cls, "PROTOCOL_INFO", None)
        for attr in dir(cls):
            for prefix, table in (("request_", cls._request_handlers),
                                  ("inform_", cls._inform_handlers),
                                  ("reply_", cls._reply_handlers)):
                if not attr.startswith(prefix):
                    continue
                handler = getattr(cls, attr)
                if not callable(handler):
                    continue
                if prefix == "request_" and not (handler.__doc__ or "").strip():
                    raise TypeError(f"{name}.{attr} needs a docstring: it is the "
                                    "?help text of the request")
                if protocol is not None and not _handler_allowed(handler, protocol):
                    continue
                table[attr[len(prefix):].replace("_", "-")] = handler


def _handler_allowed(handler: Callable, protocol: ProtocolFlags) -> bool:
    minimum = getattr(handler, "_minimum_katcp_version", None)
    if minimum is not None and (protocol.major, protocol.minor) < tuple(minimum):
        return False
    flags = getattr(handler, "_has_katcp_protocol_flags", None)
    if flags:
        for flag in flags:
            if isinstance(flag, str):
                flag = flag.encode("ascii")
            if flag not in protocol.flags:
                return False
    return True
