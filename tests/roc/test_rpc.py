"""JSON-RPC 2.0 bodies executed against an object (no sockets)."""
from __future__ import annotations

from ctlwire import _json
from ctlwire.roc import rpc


class Thing:
    level = 3

    def add(self, a, b=0):
        return a + b

    def blob(self):
        return object()


def run(body: bytes) -> dict:
    return _json.loads(rpc.execute(Thing(), body))


def test_positional_keyword_and_mixed_params():
    assert run(rpc.encode_request(1, "add", (1, 2)))["result"] == 3
    assert run(rpc.encode_request(2, "add", (), {"a": 1, "b": 5}))["result"] == 6
    assert run(rpc.encode_request(3, "add", (1,), {"b": 9}))["result"] == 10


def test_reply_carries_the_request_id():
    assert run(rpc.encode_request(42, "add", (1,)))["id"] == 42


def test_get_set_describe():
    t = Thing()
    assert _json.loads(rpc.execute(t, rpc.encode_request(1, rpc.GET, ("level",))))[
        "result"] == 3
    rpc.execute(t, rpc.encode_request(2, rpc.SET, ("level", 7)))
    assert t.level == 7
    d = _json.loads(rpc.execute(t, rpc.encode_request(3, rpc.DESCRIBE)))["result"]
    assert d == {"methods": ["add", "blob"], "attributes": ["level"], "generators": [],
                 "docs": {"add": "", "blob": "", "level": ""}}


def test_parse_error_says_so():
    err = run(b"{nope")["error"]
    assert err["code"] == rpc.PARSE_ERROR and "not JSON" in err["message"]


def test_unknown_method_is_method_not_found():
    assert run(rpc.encode_request(1, "nope"))["error"]["code"] == rpc.METHOD_NOT_FOUND


def test_private_names_are_unreachable():
    assert run(rpc.encode_request(1, "__init__"))["error"]["code"] == rpc.METHOD_NOT_FOUND
    err = run(rpc.encode_request(1, rpc.GET, ("__class__",)))["error"]
    assert err["data"]["type"] == "AttributeError"


def test_unserialisable_result_is_an_error_not_a_crash():
    err = run(rpc.encode_request(1, "blob"))["error"]
    assert err["code"] == rpc.INTERNAL_ERROR and "not JSON" in err["message"]


def test_request_id_reads_ids_and_tolerates_garbage():
    assert rpc.request_id(rpc.encode_request(9, "x")) == 9
    assert rpc.request_id(b"\xff garbage") is None
