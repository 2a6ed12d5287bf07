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
    ``{"methods": [...], "attributes": [...], "generators": [...], "docs": {...}}``:
    what the object offers; ``generators`` are the methods that stream progress,
    ``docs`` the first paragraph of each name's docstring.

Extensions (ctlwire)
--------------------
``"client": "<id>"`` in a request
    The caller's id; with the request ``id`` (a sequence number per client) it names
    the call, and a server with a :class:`ReplyCache` answers a repeat of it from the
    cache instead of running it again.
``{"jsonrpc": "2.0", "id": N, "progress": value}``
    A progress value of call ``N`` that is still running (a generator method); the
    final response follows as usual.

Names starting with ``_`` are never reachable, so ``__class__`` and friends stay home.
"""
from __future__ import annotations

import inspect
import traceback
from collections import OrderedDict
from types import GeneratorType
from typing import Any, Callable

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
NOT_ACTIVE = -32004

GET = "rpc.get"
SET = "rpc.set"
DESCRIBE = "rpc.describe"

#: Key under which positional arguments travel when keywords are present too.
ARGS_KEY = "*args"

_VERSION = "2.0"


def encode_request(call_id: int, method: str, args: tuple | list = (),
                   kwargs: dict | None = None, client: str | None = None) -> bytes:
    """Encode a call of ``method`` with ``args``/``kwargs`` as a JSON-RPC request;
    ``client`` (the caller's id) makes it a call a server runs once."""
    msg: dict[str, Any] = {"jsonrpc": _VERSION, "id": call_id, "method": method}
    if kwargs:
        if args:
            params: Any = dict(kwargs)
            params[ARGS_KEY] = list(args)
        else:
            params = kwargs
        msg["params"] = params
    elif args:
        msg["params"] = list(args) if type(args) is not list else args
    if client is not None:
        msg["client"] = client
    return _json.dumps(msg)


def progress_body(call_id: Any, value: Any) -> bytes:
    """Encode one progress value of the running call ``call_id``."""
    return _json.dumps({"jsonrpc": _VERSION, "id": call_id, "progress": value})


class ReplyCache:
    """The latest replies per client, so a repeated call is answered, not run again.

    Parameters
    ----------
    per_client : int
        Replies kept per client (its most recent calls).  A client with more calls
        than this in flight could see an old call run twice if it retried it.
    clients : int
        Clients remembered; the one heard from least recently is forgotten first.
    """

    __slots__ = ("per_client", "clients", "_by_client", "hits")

    def __init__(self, per_client: int = 256, clients: int = 1024) -> None:
        if per_client < 1 or clients < 1:
            raise ValueError("per_client and clients must be >= 1")
        self.per_client = per_client
        self.clients = clients
        self._by_client: OrderedDict[str, OrderedDict[Any, bytes]] = OrderedDict()
        #: Repeated calls answered from the cache.
        self.hits = 0

    def get(self, client: str, call_id: Any) -> bytes | None:
        """The cached reply of ``client``'s call ``call_id``, or None."""
        replies = self._by_client.get(client)
        if replies is None:
            return None
        reply = replies.get(call_id)
        if reply is not None:
            self.hits += 1
        return reply

    def put(self, client: str, call_id: Any, reply: bytes) -> None:
        """Remember ``reply`` to ``client``'s call ``call_id``."""
        by_client = self._by_client
        replies = by_client.get(client)
        if replies is None:
            replies = by_client[client] = OrderedDict()
            if len(by_client) > self.clients:
                by_client.popitem(last=False)
        else:
            by_client.move_to_end(client)
        replies[call_id] = reply
        if len(replies) > self.per_client:
            replies.popitem(last=False)

    def __len__(self) -> int:
        return sum(len(r) for r in self._by_client.values())


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


def _doc(value: Any) -> str:
    doc = inspect.getdoc(value) or ""
    return doc.split("\n\n", 1)[0].strip()


def describe(obj: Any) -> dict:
    """List the public methods (and which of them stream progress) and attributes
    of ``obj``, with the first paragraph of each one's docstring."""
    methods = []
    attributes = []
    generators = []
    docs = {}
    cls = type(obj)
    for name in dir(obj):
        if name.startswith("_"):
            continue
        try:
            value = getattr(obj, name)
        except Exception:  # noqa: BLE001 - a failing property is still an attribute
            attributes.append(name)
            continue
        if callable(value):
            methods.append(name)
            if inspect.isgeneratorfunction(value):
                generators.append(name)
            docs[name] = _doc(value)
        else:
            attributes.append(name)
            # an attribute's own docstring is its type's: document properties only
            prop = getattr(cls, name, None)
            docs[name] = _doc(prop) if isinstance(prop, property) else ""
    return {"methods": methods, "attributes": attributes, "generators": generators,
            "docs": docs}


def _public(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise _InvalidParams(f"attribute name must be a non-empty string, got {name!r}")
    if name.startswith("_"):
        raise AttributeError(f"{name!r} is private and not shared")
    return name


class _InvalidParams(Exception):
    pass


def _stream(gen: Any, call_id: Any, progress: Callable[[bytes], None] | None) -> Any:
    # each yielded value goes out as it comes; the generator's return value is the
    # call's result (a failure inside it propagates as the method's exception)
    while True:
        try:
            value = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(progress_body(call_id, value))


def execute(obj: Any, body: bytes, cache: ReplyCache | None = None,
            progress: Callable[[bytes], None] | None = None) -> bytes:
    """Run the JSON-RPC request ``body`` against ``obj`` and return the response body.

    Never raises for bad input or failing methods: every problem becomes a JSON-RPC
    error response that says what went wrong.

    Parameters
    ----------
    cache : ReplyCache, optional
        Replies to requests carrying a ``client`` id are kept here, and a repeated
        request is answered from it without running anything.
    progress : callable, optional
        Called with a progress body (:func:`progress_body`) for each value a
        generator method yields; without it the values are dropped.
    """
    try:
        msg = _json.loads(body)
    except Exception as exc:  # noqa: BLE001
        return error_body(None, PARSE_ERROR, f"request body is not JSON: {exc}")
    if type(msg) is not dict:
        return error_body(None, INVALID_REQUEST, "request must be a JSON object")
    call_id = msg.get("id")
    client = msg.get("client")
    if client is not None and cache is not None and type(client) is str:
        reply = cache.get(client, call_id)
        if reply is None:
            reply = _execute(obj, msg, call_id, progress)
            cache.put(client, call_id, reply)
        return reply
    return _execute(obj, msg, call_id, progress)


def _execute(obj: Any, msg: dict, call_id: Any,
             progress: Callable[[bytes], None] | None) -> bytes:
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
            if type(result) is GeneratorType:  # cheaper than inspect.isgenerator
                result = _stream(result, call_id, progress)
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
