"""The handler decorators: ``@request``, ``@return_reply`` and their kin.

They use the KATCP argument types (``_types``) to unpack a request's arguments into
handler parameters and to pack a handler's returned tuple into a reply. Public through
:mod:`ctlwire.katcp.kattypes`.

Layering: imports ``_types`` and ``ctlwire.katcp.core``.
"""
from __future__ import annotations

import functools
import inspect
import itertools
from typing import Any, Callable, Iterable, Sequence

from ._types import KatcpType, Parameter, Str
from .core import DEFAULT_KATCP_MAJOR, FailReply, Message

__all__ = [
    "request",
    "inform",
    "unpack_message",
    "return_reply",
    "send_reply",
    "make_reply",
    "concurrent_reply",
    "minimum_katcp_version",
    "has_katcp_protocol_flags",
    "request_timeout_hint",
    "unpack_types",
    "pack_types",
]


def _check_multiple_last(types: Sequence[KatcpType]) -> None:
    for type_ in types[:-1]:
        if type_._multiple:
            raise TypeError("Only the last parameter type can accept multiple arguments.")


def unpack_types(types: Sequence[KatcpType], args: Sequence[bytes], argnames: Sequence[str],
                 major: int) -> list:
    """Unpack wire arguments ``args`` with ``types``.

    Raises
    ------
    FailReply
        Too many arguments, a bad value or a missing required one.
    """
    multiple = bool(types) and types[-1]._multiple
    if len(args) > len(types) and not multiple:
        raise FailReply("Too many parameters given.")
    params = [Parameter(i + 1, argnames[i] if i < len(argnames) else "", t, major)
              for i, t in enumerate(types)]
    if multiple and len(args) > len(types):
        last = params[-1]
        params.extend(Parameter(i + 1, last.name, last._kattype, major)
                      for i in range(len(types), len(args)))
    return [p.unpack(a) for p, a in itertools.zip_longest(params, args)]


def pack_types(types: Sequence[KatcpType], args: Sequence[Any], major: int) -> list[bytes]:
    """Pack Python values ``args`` into wire arguments with ``types``."""
    multiple = bool(types) and types[-1]._multiple
    if len(args) > len(types) and not multiple:
        raise ValueError("Too many arguments to pack.")
    if len(args) < len(types):
        packed = [t.pack(a, major=major) for t, a in itertools.zip_longest(types, args)]
    else:
        packed = [t.pack(a, major=major) for t, a in zip(types, args)]
    if multiple and len(args) > len(types):
        last = types[-1]
        packed.extend(last.pack(a, major=major) for a in args[len(types):])
    return packed


def _make_unpacker(types: Sequence[KatcpType], argnames: Sequence[str],
                   major: int) -> Callable[[Sequence[bytes]], list]:
    """Return ``unpack(args)`` equivalent to :func:`unpack_types` with the
    parameters built once (the per-request path only zips and decodes)."""
    unpackers = [t.unpack for t in types]
    n = len(unpackers)

    def unpack(args: Sequence[bytes]) -> list:
        if len(args) == n:
            try:
                return [u(a, major) for u, a in zip(unpackers, args)]
            except ValueError:
                pass  # the general path below names the parameter in the FailReply
        return unpack_types(types, args, argnames, major)

    return unpack


def _argnames(handler: Callable) -> list[str]:
    # inspect.signature follows __wrapped__, so names survive @return_reply underneath.
    return list(inspect.signature(handler).parameters)


def request(*types: KatcpType, include_msg: bool = False, major: int = DEFAULT_KATCP_MAJOR,
            has_req: bool = True) -> Callable:
    """Decorate a request handler so its arguments arrive unpacked and checked.

    The handler is called as ``handler(self, req, *values)`` (or
    ``handler(self, req, msg, *values)`` with ``include_msg=True``).

    Parameters
    ----------
    *types : KatcpType
        One type per argument, in order; only the last may have ``multiple=True``.
    include_msg : bool, optional
        Also pass the request message.
    major : int, optional
        KATCP major version used to interpret the values.
    has_req : bool, optional
        Whether the handler takes ``req`` (``False`` for inform handlers).

    Examples
    --------
    >>> class MyDevice(DeviceServer):
    ...     @request(Int(), Float())
    ...     @return_reply(Float())
    ...     def request_scale(self, req, n, factor):
    ...         '''Multiply n by factor.'''
    ...         return ("ok", n * factor)
    """
    _check_multiple_last(types)

    def decorator(handler: Callable) -> Callable:
        skip = 1 + int(has_req) + int(include_msg)
        argnames = _argnames(handler)[skip:]
        unpack = _make_unpacker(types, argnames, major)

        if has_req:
            if include_msg:
                def raw_handler(self, req, msg):
                    return handler(self, req, msg, *unpack(msg.arguments))
            else:
                def raw_handler(self, req, msg):
                    return handler(self, req, *unpack(msg.arguments))
        else:
            if include_msg:
                def raw_handler(self, msg):
                    return handler(self, msg, *unpack(msg.arguments))
            else:
                def raw_handler(self, msg):
                    return handler(self, *unpack(msg.arguments))
        functools.update_wrapper(raw_handler, handler)
        # Keep the wire signature for introspection, not the unpacked one.
        del raw_handler.__wrapped__
        raw_handler._request_decorated = True  # type: ignore[attr-defined]
        return raw_handler

    return decorator


def inform(*types: KatcpType, include_msg: bool = False,
           major: int = DEFAULT_KATCP_MAJOR) -> Callable:
    """Decorate an inform handler ``handler(self, *values)`` (see :func:`request`)."""
    return request(*types, include_msg=include_msg, major=major, has_req=False)


def unpack_message(*types: KatcpType, include_msg: bool = False,
                   major: int = DEFAULT_KATCP_MAJOR) -> Callable:
    """Decorate a function ``f(self, *values)`` that takes a message (see :func:`request`)."""
    return request(*types, include_msg=include_msg, major=major, has_req=False)


def make_reply(msgname: str, types: Sequence[KatcpType], arguments: Sequence[Any],
               major: int) -> Message:
    """Build a reply ``Message`` from ``("ok", values...)`` or ``("fail", why)``."""
    status = arguments[0]
    if isinstance(status, bytes):
        status = status.decode("ascii", "replace")
    if status == "ok":
        if len(arguments) == len(types) + 1 and not (types and types[-1]._multiple):
            # The common case, without pack_types' generality.
            return Message.reply(msgname, b"ok", *[t.pack(a, major=major) for t, a in
                                                  zip(types, arguments[1:])])
        return Message.reply(msgname, *pack_types((_STR,) + tuple(types), arguments, major))
    if status == "fail":
        return Message.reply(msgname, *pack_types((_STR, _STR), arguments, major))
    raise ValueError("First returned value must be 'ok' or 'fail'.")


_STR = Str()
_REPLY = Message.REPLY


async def _await_reply(msgname: str, types: Sequence[KatcpType], awaitable: Any,
                       major: int) -> Message:
    return make_reply(msgname, types, await awaitable, major)


def return_reply(*types: KatcpType, major: int = DEFAULT_KATCP_MAJOR) -> Callable:
    """Decorate a request handler so that its returned tuple becomes the reply.

    The handler returns ``("ok", value, ...)`` (values packed with ``types``) or
    ``("fail", "why")``. A handler returning an awaitable (``async def``) is awaited
    and its result packed the same way.

    Examples
    --------
    >>> class MyDevice(DeviceServer):
    ...     @request(Int())
    ...     @return_reply(Int(), Float())
    ...     def request_myreq(self, req, my_int):
    ...         '''Return my_int + 1 and its double.'''
    ...         return ("ok", my_int + 1, my_int * 2.0)
    """
    _check_multiple_last(types)

    def decorator(handler: Callable) -> Callable:
        if not handler.__name__.startswith("request_"):
            raise ValueError("This decorator can only be used on a katcp request handler "
                             "(method name should start with 'request_').")
        msgname = handler.__name__[len("request_"):].replace("_", "-")
        packers = [t.pack for t in types]
        n_fixed = -1 if types and types[-1]._multiple else len(types) + 1

        @functools.wraps(handler)
        def raw_handler(self, *args):
            result = handler(self, *args)
            if result.__class__ is tuple:
                if len(result) == n_fixed and result[0] == "ok":
                    # Common case first: ("ok", value, ...) with one value per type.
                    return Message(_REPLY, msgname, [b"ok"] + [
                        p(a, False, major) for p, a in zip(packers, result[1:])])
                return make_reply(msgname, types, result, major)
            if inspect.isawaitable(result):
                return _await_reply(msgname, types, result, major)
            return make_reply(msgname, types, result, major)

        return raw_handler

    return decorator


def send_reply(*types: KatcpType, major: int = DEFAULT_KATCP_MAJOR) -> Callable:
    """Decorate a callback returning ``(req, "ok", values...)`` so it sends the reply.

    Useful to finish a request that raised :class:`AsyncReply`.

    Examples
    --------
    >>> class MyDevice(DeviceServer):
    ...     @send_reply(Int(), Float())
    ...     def my_callback(self, req):
    ...         return (req, "ok", 5, 2.0)
    """

    def decorator(handler: Callable) -> Callable:
        @functools.wraps(handler)
        def raw_handler(self, *args):
            reply_args = handler(self, *args)
            req = reply_args[0]
            req.reply_with_message(make_reply(req.msg.name, types, reply_args[1:], major))

        return raw_handler

    return decorator


def concurrent_reply(handler: Callable) -> Callable:
    """Mark an async handler as concurrent (ctlwire always serves awaitables concurrently)."""
    handler._concurrent_reply = True  # type: ignore[attr-defined]
    return handler


def minimum_katcp_version(major: int, minor: int = 0) -> Callable:
    """Only expose the handler when the server's protocol is at least ``major.minor``."""
    def decorator(handler: Callable) -> Callable:
        handler._minimum_katcp_version = (major, minor)  # type: ignore[attr-defined]
        return handler

    return decorator


def has_katcp_protocol_flags(protocol_flags: Iterable[bytes | str]) -> Callable:
    """Only expose the handler when the server offers all of ``protocol_flags``."""
    def decorator(handler: Callable) -> Callable:
        handler._has_katcp_protocol_flags = list(protocol_flags)  # type: ignore[attr-defined]
        return handler

    return decorator


def request_timeout_hint(timeout_hint: float | None) -> Callable:
    """Advertise a client timeout for a slow request through ``?request-timeout-hint``."""
    hint = None if timeout_hint is None else float(timeout_hint)

    def decorator(handler: Callable) -> Callable:
        handler.request_timeout_hint = hint  # type: ignore[attr-defined]
        return handler

    return decorator
