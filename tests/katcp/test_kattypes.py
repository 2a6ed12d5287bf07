"""Argument types and the request/reply decorators, checked without a network."""
from __future__ import annotations


import pytest
from hypothesis import given, strategies as st

from ctlwire.katcp import (Address, Bool, Discrete, DiscreteMulti, Float, Int, Lru, Message,
                           Regex, Str, StrictTimestamp, Struct, Timestamp, TimestampOrNow,
                           request, return_reply, send_reply)
from ctlwire.katcp.core import FailReply
from ctlwire.katcp.kattypes import make_reply, pack_types, unpack_types


# -- single types ---------------------------------------------------------------------------
@given(st.integers(min_value=-2**63, max_value=2**63))
def test_int_round_trips(value):
    assert Int().unpack(Int().pack(value)) == value


@given(st.floats(allow_nan=False))
def test_float_round_trips_exactly(value):
    assert Float().unpack(Float().pack(value)) == value


@given(st.text())
def test_str_round_trips_through_utf8(value):
    assert Str().unpack(Str().pack(value)) == value


@given(st.sampled_from(["127.0.0.1", "example.org", "::1", "fe80::1"]),
       st.one_of(st.none(), st.integers(0, 65535)))
def test_address_round_trips(host, port):
    assert Address().unpack(Address().pack((host, port))) == (host, port)


def test_address_formats_ipv6_in_brackets():
    assert Address().pack(("::1", 7147)) == b"[::1]:7147"


class _ReprFloat(float):
    """A float subclass with its own repr, as numpy.float64 has."""

    def __repr__(self):
        return f"ReprFloat({float(self)})"


def test_float_subclasses_are_written_as_plain_floats():
    assert Float().pack(_ReprFloat(2.5)) == b"2.5"
    assert Float().pack(3) == b"3.0"


def test_int_rejects_text_with_a_clear_message():
    with pytest.raises(ValueError, match="Could not parse value 'x1' as integer"):
        Int().unpack(b"x1")


def test_int_checks_its_range():
    with pytest.raises(ValueError, match="higher than maximum 10"):
        Int(max=10).unpack(b"11")
    with pytest.raises(ValueError, match="lower than minimum 0"):
        Int(min=0).pack(-1)


def test_float_checks_its_range():
    with pytest.raises(ValueError, match="lower than minimum"):
        Float(min=0.5).unpack(b"0.25")


def test_bool_accepts_only_one_and_zero():
    assert Bool().unpack(b"1") is True
    assert Bool().unpack(b"0") is False
    with pytest.raises(ValueError, match="must be '0' or '1'"):
        Bool().unpack(b"true")
    assert Bool().pack(True) == b"1"


def test_discrete_limits_values():
    kind = Discrete(["on", "off"])
    assert kind.unpack(b"on") == "on"
    with pytest.raises(ValueError, match="not one of"):
        kind.unpack(b"ON")


def test_discrete_case_insensitive():
    assert Discrete(["on", "off"], case_insensitive=True).unpack(b"ON") == "ON"


def test_discrete_multi_expands_all_keyword():
    assert DiscreteMulti(["b", "a"]).unpack(b"all") == ["a", "b"]
    assert DiscreteMulti(["b", "a"]).pack(["b", "a"]) == b"a,b"


def test_lru_maps_names_to_constants():
    assert Lru().unpack(b"error") == Lru.LRU_ERROR
    assert Lru().pack(Lru.LRU_NOMINAL) == b"nominal"
    with pytest.raises(ValueError):
        Lru().unpack(b"broken")


def test_timestamp_uses_seconds_in_v5_and_milliseconds_in_v4():
    assert Timestamp().pack(1.5) == b"1.500000"
    assert Timestamp().pack(1.5, major=4) == b"1500"
    assert Timestamp().unpack(b"1500", major=4) == 1.5


def test_timestamp_rejects_non_finite():
    with pytest.raises(ValueError):
        Timestamp().unpack(b"inf")


def test_timestamp_or_now():
    assert TimestampOrNow().unpack(b"now") is TimestampOrNow.NOW
    assert TimestampOrNow().unpack(b"2.0") == 2.0


def test_strict_timestamp_rejects_exponent_form():
    with pytest.raises(ValueError):
        StrictTimestamp().unpack(b"1e3")
    assert StrictTimestamp().unpack(b"12.5") == 12.5


def test_struct_and_regex():
    assert Struct(">HH").unpack(Struct(">HH").pack((1, 2))) == (1, 2)
    with pytest.raises(ValueError, match="does not match"):
        Regex("^[a-z]+$").unpack(b"A1")


def test_missing_required_value_has_no_default():
    with pytest.raises(ValueError, match="No value or default"):
        Int().unpack(None)
    assert Int(default=3).unpack(None) == 3
    assert Int(optional=True).unpack(None) is None


# -- packing lists --------------------------------------------------------------------------
def test_unpack_types_names_the_bad_parameter():
    with pytest.raises(FailReply, match=r"Error in parameter 2 \(scale\): Could not parse"):
        unpack_types((Int(), Float()), [b"1", b"x"], ["count", "scale"], 5)


def test_unpack_types_rejects_too_many():
    with pytest.raises(FailReply, match="Too many parameters"):
        unpack_types((Int(),), [b"1", b"2"], ["a"], 5)


def test_unpack_types_reports_a_missing_parameter():
    with pytest.raises(FailReply, match=r"parameter 2 \(b\): No value"):
        unpack_types((Int(), Int()), [b"1"], ["a", "b"], 5)


def test_unpack_types_multiple_takes_the_rest():
    assert unpack_types((Str(), Int(multiple=True)), [b"x", b"1", b"2", b"3"],
                        ["name", "n"], 5) == ["x", 1, 2, 3]


def test_only_last_type_may_be_multiple():
    with pytest.raises(TypeError):
        request(Int(multiple=True), Int())


def test_pack_types_with_multiple():
    assert pack_types((Str(), Int(multiple=True)), ["a", 1, 2], 5) == [b"a", b"1", b"2"]


def test_make_reply_ok_and_fail():
    assert make_reply("x", (Int(),), ("ok", 3), 5) == Message.reply("x", "ok", "3")
    assert make_reply("x", (Int(),), ("fail", "why"), 5) == Message.reply("x", "fail", "why")
    with pytest.raises(ValueError):
        make_reply("x", (), ("maybe",), 5)


# -- decorators -----------------------------------------------------------------------------
class _Req:
    def __init__(self, msg):
        self.msg = msg
        self.sent = []

    def reply_with_message(self, msg):
        self.sent.append(msg)


class _Device:
    @request(Int(), Float(optional=True))
    @return_reply(Int(), Float())
    def request_scale(self, req, n, factor):
        """Scale n."""
        return ("ok", n * 2, (factor or 1.0) / 2)

    @request(Str(), include_msg=True)
    @return_reply(Str())
    def request_echo(self, req, msg, text):
        """Echo."""
        return ("ok", f"{msg.name}:{text}")

    @request(Int())
    @return_reply()
    def request_async(self, req, n):
        """Async."""
        async def later():
            return ("ok",)
        return later()

    @send_reply(Int())
    def finish(self, req):
        return (req, "ok", 42)


def test_request_and_return_reply_pack_the_result():
    reply = _Device().request_scale(None, Message.request("scale", 3, 1.0))
    assert reply == Message.reply("scale", "ok", "6", "0.5")


def test_request_include_msg_passes_the_message():
    reply = _Device().request_echo(None, Message.request("echo", "hi"))
    assert reply.arguments == [b"ok", b"echo:hi"]


def test_request_decorator_error_names_handler_parameter():
    with pytest.raises(FailReply, match=r"parameter 2 \(factor\)"):
        _Device().request_scale(None, Message.request("scale", 3, "abc"))


def test_return_reply_on_coroutine_returns_an_awaitable_reply():
    import asyncio
    result = _Device().request_async(None, Message.request("async", 1))
    assert asyncio.run(result) == Message.reply("async", "ok")


def test_send_reply_sends_through_the_request():
    req = _Req(Message.request("thing", mid=5))
    _Device().finish(req)
    assert req.sent == [Message.reply("thing", "ok", "42")]


def test_return_reply_only_on_request_handlers():
    with pytest.raises(ValueError):
        @return_reply()
        def not_a_request(self, req):
            """Nope."""


def test_decorated_handler_keeps_docstring():
    assert _Device.request_scale.__doc__ == "Scale n."
