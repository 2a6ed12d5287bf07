"""Messages, addresses and the type registry, held to aiokatcp's behaviour."""
from __future__ import annotations

import enum
import ipaddress
from typing import Optional, Union

import aiokatcp as ref
import pytest
from hypothesis import given, settings, strategies as st

from ctlwire import aiokatcp as ck
from ctlwire.aiokatcp import core


names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,12}\Z")
arguments = st.lists(st.binary(max_size=20), max_size=6)
mids = st.none() | st.integers(1, 2 ** 31 - 1)
types = st.sampled_from(["REQUEST", "REPLY", "INFORM"])


@settings(max_examples=300, deadline=None)
@given(kind=types, name=names, args=arguments, mid=mids)
def test_wire_form_matches_aiokatcp_and_parses_back(kind, name, args, mid):
    ours = ck.Message(getattr(ck.Message.Type, kind), name, *args, mid=mid)
    theirs = ref.Message(getattr(ref.Message.Type, kind), name, *args, mid=mid)
    assert bytes(ours) == bytes(theirs)
    back = ck.Message.parse(bytes(ours))
    assert back == ours
    assert back.mid == mid and back.arguments == list(args)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=40))
def test_parse_accepts_and_rejects_what_aiokatcp_does(raw):
    line = raw.replace(b"\n", b"").replace(b"\r", b"") + b"\n"
    try:
        theirs = ref.Message.parse(line)
    except ref.KatcpSyntaxError:
        theirs = None
    try:
        ours = ck.Message.parse(line)
    except ck.KatcpSyntaxError as exc:
        assert exc.raw == line
        ours = None
    if theirs is None:
        assert ours is None
    else:
        assert ours is not None
        assert (ours.mtype.value, ours.name, ours.arguments, ours.mid) == \
            (theirs.mtype.value, theirs.name, theirs.arguments, theirs.mid)


def test_message_constructors_encode_arguments():
    m = ck.Message.request("set", 1, 2.5, True, "a b", b"\x00", ck.Address(
        ipaddress.ip_address("::1"), 80), mid=5)
    assert bytes(m) == b"?set[5] 1 2.5 1 a\\_b \\0 [::1]:80\n"
    r = ck.Message.reply_to_request(m, "ok")
    assert (r.mtype, r.name, r.mid) == (ck.Message.Type.REPLY, "set", 5)
    assert r.reply_ok()
    i = ck.Message.inform_reply(m, "x")
    assert i.mtype is ck.Message.Type.INFORM and i.mid == 5
    assert repr(ck.Message.inform("a", b"x")) == "Message(Message.Type.INFORM, 'a', b'x', mid=None)"


@pytest.mark.parametrize("bad", ["1abc", "a_b", "", "é"])
def test_bad_names_are_rejected(bad):
    with pytest.raises(ValueError):
        ck.Message.request(bad)


@pytest.mark.parametrize("mid", [0, -1, 2 ** 31])
def test_bad_mids_are_rejected(mid):
    with pytest.raises(ValueError):
        ck.Message.request("a", mid=mid)


def test_parse_needs_the_newline_and_names_the_problem():
    with pytest.raises(ck.KatcpSyntaxError, match="newline"):
        ck.Message.parse(b"?watchdog")
    with pytest.raises(ck.KatcpSyntaxError) as info:
        ck.Message.parse(b"?a b\\q\n")
    assert "escape" in str(info.value) and info.value.raw == b"?a b\\q\n"
    assert isinstance(info.value, ValueError)


def test_escape_helpers():
    assert ck.Message.escape_argument(b"") == b"\\@"
    assert ck.Message.escape_argument(b"a b\n") == b"a\\_b\\n"
    assert ck.Message.unescape_argument(b"a\\_b\\@") == b"a b"
    with pytest.raises(ck.KatcpSyntaxError):
        ck.Message.unescape_argument(b"a\\")


class Mode(enum.Enum):
    IDLE = 1
    FAST_SCAN = 2


class Custom(enum.Enum):
    A = 1

    @property
    def katcp_value(self):
        return b"custom-a"


@pytest.mark.parametrize("value", [
    0, -12, 3.25, float("inf"), True, False, b"\xff raw", "text é", Mode.FAST_SCAN,
    Custom.A, ck.Timestamp(1234.5), ck.Address(ipaddress.ip_address("10.0.0.1")),
    ck.Address(ipaddress.ip_address("10.0.0.1"), 7147),
    ck.Address(ipaddress.ip_address("fe80::1"), 1), ck.Now.NOW, ck.DeviceStatus.DEGRADED,
])
def test_encode_matches_aiokatcp_and_decodes_back(value):
    theirs_value = value
    if isinstance(value, ck.Timestamp):
        theirs_value = ref.Timestamp(value)
    elif isinstance(value, ck.Address):
        theirs_value = ref.Address(value.host, value.port)
    elif value is ck.Now.NOW:
        theirs_value = ref.Now.NOW
    elif isinstance(value, ck.DeviceStatus):
        theirs_value = ref.DeviceStatus.DEGRADED
    assert ck.encode(value) == ref.encode(theirs_value)
    assert ck.decode(type(value), ck.encode(value)) == value


def test_decode_errors_and_unions():
    with pytest.raises(ValueError):
        ck.decode(int, b"1.5")
    with pytest.raises(ValueError):
        ck.decode(bool, b"yes")
    with pytest.raises(ValueError, match="not a valid value for Mode"):
        ck.decode(Mode, b"slow")
    assert ck.decode(ck.TimestampOrNow, b"now") is ck.Now.NOW
    assert ck.decode(ck.TimestampOrNow, b"12.5") == 12.5
    assert ck.decode(Optional[int], b"3") == 3
    with pytest.raises(ValueError, match="ambiguous"):
        ck.decode(Union[int, float], b"3")
    with pytest.raises(ValueError, match="None of the types"):
        ck.decode(Union[int, Mode], b"x")
    with pytest.raises(TypeError):
        ck.decode(dict, b"x")
    with pytest.raises(TypeError):
        ck.encode(object())
    with pytest.raises(ValueError):
        ck.Address.parse(b"a:b:c")


def test_register_type_and_get_type():
    class Celsius:
        def __init__(self, degrees=0.0):
            self.degrees = degrees

    ck.register_type(Celsius, "float", lambda c: repr(c.degrees).encode(),
                     lambda cls: lambda raw: cls(float(raw)))
    assert ck.encode(Celsius(2.5)) == b"2.5"
    assert ck.decode(Celsius, b"3.5").degrees == 3.5
    info = ck.get_type(Celsius)
    assert isinstance(info, ck.TypeInfo) and info.name == "float"
    assert info.default(Celsius).degrees == 0.0
    with pytest.raises(ValueError, match="already registered"):
        ck.register_type(Celsius, "float", repr, lambda cls: cls)
    assert ck.get_type(bool).name == "boolean"
    assert ck.get_type(Mode).name == "discrete"
    assert ck.get_type(ck.Sensor.Status).name == "discrete"
    with pytest.raises(TypeError):
        ck.get_type(dict)


def test_log_levels_follow_python():
    assert core.LogLevel.from_python(20) is core.LogLevel.INFO
    assert core.LogLevel.from_python(25) is core.LogLevel.INFO
    assert ck.encode(core.LogLevel.WARN) == b"warn"


def test_every_public_name_of_aiokatcp_is_here():
    missing = [name for name in dir(ref) if not name.startswith("_")
               and name not in {"adjtimex", "tools", "client", "connection", "core",
                                "sensor", "server", "time_sync"}
               and not hasattr(ck, name)]
    assert missing == []
    for module in ("core", "connection", "sensor", "server", "client", "time_sync"):
        theirs = getattr(ref, module)
        ours = getattr(ck, module)
        public = [n for n, v in vars(theirs).items() if not n.startswith("_")
                  and getattr(v, "__module__", None) == theirs.__name__]
        assert [n for n in public if not hasattr(ours, n)] == [], module
