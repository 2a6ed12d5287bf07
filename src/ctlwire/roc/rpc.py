"""JSON-RPC 2.0 bodies of ROC calls: encoding, decoding and execution on an object.

No sockets here: bytes in, bytes out.  The broker carries these bodies unchanged in
the body frame of 7/MDP messages; only when it must answer on a worker's behalf (no
worker, worker lost, queue full) does it build an error body with :func:`error_body`.

Methods
-------
``<name>``
    Call the public method ``name`` of the shared object.  ``params`` is a list
    (positional arguments), an object (keyword arguments), or an object holding the
    positional arguments under the key ``"*args"`` next to the keyword arguments.
``rpc.get``  ``params: [name]``
    Read a public attribute.
``rpc.set``  ``params: [name, value]``
    Write a public attribute.
``rpc.describe``  no params
    ``{"methods": [...], "attributes": [...]}``: what the object offers.

Names starting with ``_`` are never reachable, so ``__class__`` and friends stay home.
"""
from __future__ import annotations

import traceback
from typing import Any

from ctlwire import _json

#: JSON-RPC error codes used by ROC (the -32000..-32099 range is ours).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
REMOTE_EXCEPTION = -32000
NO_WORKER = -32001
WORKER_LOST = -32002
QUEUE_FULL = -32003

GET = "rpc.get"
SET = "rpc.set"
DESCRIBE = "rpc.describe"

#: Key under which positional arguments travel when keywords are present too.
ARGS_KEY = "*args"

_VERSION = "2.0"


def encode_request(call_id: int, method: str, args: tuple | list = (),
                   kwargs: dict | None = None) -> bytes:
    """Encode a call of ``method`` with ``args``/``kwargs`` as a JSON-RPC request."""
    if kwargs:
        if args:
            params: Any = dict(kwargs)
            params[ARGS_KEY] = list(args)
        else:
            params = kwargs
        return _json.dumps({"jsonrpc": _VERSION, "id": call_id, "method": method,
                            "params": params})
    if args:
        return _json.dumps({"jsonrpc": _VERSION, "id": call_id, "method": method,
                            "params": list(args) if type(args) is not list else args})
    return _json.dumps({"jsonrpc": _VERSION, "id": call_id, "method": method})


def error_body(call_id: Any, code: int, message: str, data: Any = None) -> bytes:
    """Encode a JSON-RPC error response."""
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return _json.dumps({"jsonrpc": _VERSION, "id": call_id, "error": err})


def request_id(body: bytes) -> Any:
    """Return the ``id`` of a request body, or ``None`` when it cannot be read.

    Used by the broker on error paths only, never per routed message.
    """
    try:
        msg = _json.loads(body)
    except Exception:  # noqa: BLE001 - any undecodable body simply has no id
        return None
    if isinstance(msg, dict):
        cid = msg.get("id")
        if cid is None or isinstance(cid, (int, str)):
            return cid
    return None


def exception_data(exc: BaseException) -> dict:
    """The ``data`` member describing a remote exception."""
    cls = type(exc)
    return {
        "type": cls.__name__,
        "module": cls.__module__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(cls, exc, exc.__traceback__)),
    }


def describe(obj: Any) -> dict:
    """List the public methods and attributes of ``obj``."""
    methods = []
    attributes = []
    for name in dir(obj):
        if name.startswith("_"):
            continue
        try:
            value = getattr(obj, name)
        except Exception:  # noqa: BLE001 - a failing property is still an attribute
            attributes.append(name)
            continue
        (methods if callable(value) else attributes).append(name)
    return {"methods": methods, "attributes": attributes}


def _public(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise _InvalidParams(f"attribute name must be a non-empty string, got {name!r}")
    if name.startswith("_"):
        raise AttributeError(f"{name!r} is private and not shared")
    return name


class _InvalidParams(Exception):
    pass


def execute(obj: Any, body: bytes) -> bytes:
    """Run the JSON-RPC request ``body`` against ``obj`` and return the response body.

    Never raises for bad input or failing methods: every problem becomes a JSON-RPC
    error response that says what went wrong.
    """
    try:
        msg = _json.loads(body)
    except Exception as exc:  # noqa: BLE001
        return error_body(None, PARSE_ERROR, f"request body is not JSON: {exc}")
    if type(msg) is not dict:
        return error_body(None, INVALID_REQUEST, "request must be a JSON object")
    call_id = msg.get("id")
    method = msg.get("method")
    if type(method) is not str:
        return error_body(call_id, INVALID_REQUEST, "request 'method' must be a string")
    params = msg.get("params")
    try:
        if method == GET:
            if type(params) is not list or len(params) != 1:
                raise _InvalidParams("rpc.get takes params [name]")
            result = getattr(obj, _public(params[0]))
        elif method == SET:
            if type(params) is not list or len(params) != 2:
                raise _InvalidParams("rpc.set takes params [name, value]")
            setattr(obj, _public(params[0]), params[1])
            result = None
        elif method == DESCRIBE:
            result = describe(obj)
        else:
            if method.startswith("_") or method.startswith("rpc."):
                return error_body(call_id, METHOD_NOT_FOUND,
                                  f"method {method!r} not found",
                                  {"type": "AttributeError", "module": "builtins",
                                   "message": f"method {method!r} not found",
                                   "traceback": ""})
            try:
                func = getattr(obj, method)
            except AttributeError as exc:
                return error_body(call_id, METHOD_NOT_FOUND, f"method {method!r} not found",
                                  exception_data(exc))
            if not callable(func):
                raise _InvalidParams(f"{method!r} is an attribute, not a method; use rpc.get")
            if params is None:
                result = func()
            elif type(params) is list:
                result = func(*params)
            elif type(params) is dict:
                if ARGS_KEY in params:
                    kw = dict(params)
                    args = kw.pop(ARGS_KEY)
                    if type(args) is not list:
                        raise _InvalidParams(f"{ARGS_KEY!r} must be a list")
                    result = func(*args, **kw)
                else:
                    result = func(**params)
            else:
                raise _InvalidParams("params must be a list or an object")
    except _InvalidParams as exc:
        return error_body(call_id, INVALID_PARAMS, str(exc))
    except Exception as exc:  # noqa: BLE001 - the method's failure goes back to the caller
        return error_body(call_id, REMOTE_EXCEPTION, f"{type(exc).__name__}: {exc}",
                          exception_data(exc))
    try:
        return _json.dumps({"jsonrpc": _VERSION, "id": call_id, "result": result})
    except Exception as exc:  # noqa: BLE001
        return error_body(call_id, INTERNAL_ERROR,
                          f"result of {method!r} is not JSON-serialisable: {exc}",
                          exception_data(exc))
