"""The compiled KATCP codec against the grammar and a small pure-Python reference."""
from __future__ import annotations

import pickle

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ctlwire._ext import load_extension
from ctlwire.katcp import (KatcpSyntaxError, Message, MessageParser, ProtocolFlags,
                           StreamParser, encode_message, escape_argument, unescape_argument)

# --- the pure-Python reference (tests only) --------------------------------------------

REF_UNESCAPE = {b"\\": b"\\", b"_": b" ", b"0": b"\0", b"n": b"\n", b"r": b"\r",
                b"e": b"\x1b", b"t": b"\t", b"@": b""}
REF_ESCAPE = {b"\\": b"\\\\", b" ": b"\\_", b"\0": b"\\0", b"\n": b"\\n", b"\r": b"\\r",
              b"\x1b": b"\\e", b"\t": b"\\t"}
ALPHA = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
NAMECH = ALPHA | set(b"0123456789-")


def ref_parse(line: bytes):
    """Return (mtype, name, mid, args) or raise ValueError, following the spec literally."""
    if not line:
        raise ValueError("empty")
    types = {ord("?"): 0, ord("!"): 1, ord("#"): 2}
    if line[0] not in types:
        raise ValueError("type")
    mtype = types[line[0]]
    i = 1
    if i >= len(line) or line[i] not in ALPHA:
        raise ValueError("name")
    while i < len(line) and line[i] in NAMECH:
        i += 1
    name = line[1:i].decode("ascii")
    mid = None
    if i < len(line) and line[i:i + 1] == b"[":
        j = line.find(b"]", i)
        if j < 0:
            raise ValueError("mid")
        digits = line[i + 1:j]
        if (not digits or not digits.isdigit() or digits[:1] == b"0"
                or int(digits) > 2**31 - 1):
            raise ValueError("mid")
        mid = digits
        i = j + 1
    if i < len(line) and line[i:i + 1] not in (b" ", b"\t"):
        raise ValueError("after name")
    args = []
    for raw in line[i:].replace(b"\t", b" ").split(b" "):
        if not raw:
            continue
        out = bytearray()
        k = 0
        while k < len(raw):
            c = raw[k:k + 1]
            if c == b"\\":
                esc = raw[k + 1:k + 2]
                if esc not in REF_UNESCAPE:
                    raise ValueError("escape")
                out += REF_UNESCAPE[esc]
                k += 2
            elif c in (b"\0", b"\x1b", b"\n", b"\r"):
                raise ValueError("raw special")
            else:
                out += c
                k += 1
        args.append(bytes(out))
    return mtype, name, mid, args


def ref_format(mtype, name, mid, args) -> bytes:
    parts = [b"?!#"[mtype:mtype + 1] + name.encode() + (b"[" + mid + b"]" if mid else b"")]
    for a in args:
        parts.append(b"".join(REF_ESCAPE.get(a[k:k + 1], a[k:k + 1]) for k in range(len(a)))
                     or b"\\@")
    return b" ".join(parts)


# --- strategies -------------------------------------------------------------------------

names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,15}\Z")
mids = st.one_of(st.none(), st.integers(min_value=1, max_value=2**31 - 1))
arg_bytes = st.binary(max_size=40)
messages = st.builds(
    lambda t, n, a, m: Message(t, n, a, m),
    st.integers(min_value=0, max_value=2), names, st.lists(arg_bytes, max_size=8), mids)
# raw lines built from the bytes that matter to the grammar
interesting = st.sampled_from(
    list(b"?!#[]\\_0nret@ \t\x00\x1b\x0c\x0baZ9-") + [0x80, 0xff, ord("x")])
raw_lines = st.lists(interesting, max_size=30).map(bytes)

parser = MessageParser()


# --- grammar examples from the spec -----------------------------------------------------

@pytest.mark.parametrize("line", [
    b"", b"   ", b" ?a", b"\t?a", b"a", b"?", b"?1a", b"?-a", b"?_a", b"?a_b", b"?\xc3\xa9",
    b"?a\\_b", b"?a[", b"?a[]", b"?a[a]", b"?a[ 1]", b"?a[-1]", b"?a[0]", b"?a[01]",
    b"?a[2147483648]", b"?a[1]x", b"?a b\x00", b"?a b\x1b", b"?a \\z", b"?a \\N",
    b"?a \\ b", b"?a b\\", b"?a b\nc", b"?a b\rc",
])
def test_spec_invalid_lines_are_rejected(line):
    with pytest.raises(KatcpSyntaxError):
        parser.parse(line)


@pytest.mark.parametrize("line, expected", [
    (b"?a [1]", (0, "a", None, [b"[1]"])),
    (b"!a[2147483647] ok", (1, "a", b"2147483647", [b"ok"])),
    (b"#a \\@", (2, "a", None, [b""])),
    (b"#a a\\@b", (2, "a", None, [b"ab"])),
    (b"?x-1 \x0c \x0b", (0, "x-1", None, [b"\x0c", b"\x0b"])),
    (b"?a \xc3\xa9\xff", (0, "a", None, [b"\xc3\xa9\xff"])),
    (b"?a  b\t\tc ", (0, "a", None, [b"b", b"c"])),
    (b"?a \\\\\\_\\0\\n\\r\\e\\t", (0, "a", None, [b"\\ \0\n\r\x1b\t"])),
])
def test_spec_valid_lines(line, expected):
    m = parser.parse(line)
    assert (m.mtype, m.name, m.mid, m.arguments) == expected


def test_syntax_error_names_reason_and_position():
    with pytest.raises(KatcpSyntaxError) as info:
        parser.parse(b"?req arg \\z")
    assert info.value.position == 9
    assert "escape" in info.value.reason
    assert "position 9" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_parse_accepts_str_lines():
    assert parser.parse("?halt").name == "halt"


# --- Message API ------------------------------------------------------------------------

def test_message_helpers_and_argument_conversion():
    req = Message.request("set", 1, 2.5, True, False, "é x", b"\x00", mid=7)
    assert req.mtype == Message.REQUEST and req.mid == b"7"
    assert req.arguments == [b"1", b"2.5", b"1", b"0", "é x".encode(), b"\x00"]
    rep = Message.reply_to_request(req, "ok")
    assert (rep.mtype, rep.name, rep.mid, rep.arguments) == (Message.REPLY, "set", b"7", [b"ok"])
    assert rep.reply_ok()
    assert not Message.reply("set", "fail").reply_ok()
    inf = Message.reply_inform(req, "x")
    assert (inf.mtype, inf.mid) == (Message.INFORM, b"7")
    assert Message.inform("log").mtype == Message.INFORM


def test_message_bytes_str_and_wire_form():
    m = Message.inform("sensor-status", "a b", b"", mid=3)
    assert bytes(m) == b"#sensor-status[3] a\\_b \\@"
    assert str(m) == "#sensor-status[3] a\\_b \\@"
    assert m.to_wire() == bytes(m) + b"\n"


def test_message_equality_copy_repr_pickle():
    m = Message.request("a", "x", mid=1)
    c = m.copy()
    assert c == m and c is not m and c.arguments is not m.arguments
    c.arguments.append(b"y")
    assert c != m
    assert m != Message.request("a", "x", mid=2)
    assert "request a[1] (x)" in repr(m)
    assert pickle.loads(pickle.dumps(m)) == m


@pytest.mark.parametrize("name", ["", "1a", "a_b", "é", "a b"])
def test_message_rejects_invalid_names(name):
    with pytest.raises(KatcpSyntaxError):
        Message.request(name)


@pytest.mark.parametrize("mid", [0, -1, 2**31, "01", "x", b""])
def test_message_rejects_invalid_mids(mid):
    with pytest.raises(KatcpSyntaxError):
        Message.request("a", mid=mid)


def test_arguments_replaced_after_construction_are_still_formatted():
    m = Message.request("a")
    m.arguments = ["x y", 3]
    assert bytes(m) == b"?a x\\_y 3"


# --- property tests against the reference ----------------------------------------------

@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(raw_lines)
def test_compiled_parser_agrees_with_reference(line):
    try:
        expected = ref_parse(line)
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(KatcpSyntaxError):
            parser.parse(line)
    else:
        m = parser.parse(line)
        assert (m.mtype, m.name, m.mid, m.arguments) == expected


@settings(max_examples=300)
@given(messages)
def test_format_matches_reference_and_parses_back(msg):
    wire = bytes(msg)
    assert wire == ref_format(msg.mtype, msg.name, msg.mid, msg.arguments)
    assert parser.parse(wire) == msg
    assert encode_message(msg.mtype, msg.name, msg.arguments, msg.mid) == wire + b"\n"


@given(st.binary(max_size=64))
def test_escape_unescape_round_trip(data):
    esc = escape_argument(data)
    assert b" " not in esc and b"\n" not in esc and b"\0" not in esc
    assert unescape_argument(esc) == data


# --- stream parsing ---------------------------------------------------------------------

def feed_all(sp: StreamParser, chunks):
    out = []
    for c in chunks:
        out.extend(sp.feed(c))
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(messages, min_size=1, max_size=6), st.sampled_from([b"\n", b"\r", b"\r\n"]))
def test_stream_split_at_every_byte_gives_same_messages(msgs, eol):
    wire = b"".join(bytes(m) + eol for m in msgs)
    for k in range(len(wire) + 1):
        got = feed_all(StreamParser(), [wire[:k], wire[k:]])
        assert got == msgs


@settings(max_examples=200)
@given(st.lists(messages, min_size=1, max_size=10), st.data())
def test_stream_random_chunking(msgs, data):
    wire = b"\n".join(bytes(m) for m in msgs) + b"\n\n"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    chunks = [wire[a:b] for a, b in zip([0] + cuts, cuts + [len(wire)])]
    assert feed_all(StreamParser(), chunks) == msgs
    # bytearray and memoryview input are accepted as well
    assert feed_all(StreamParser(), [bytearray(c) for c in chunks]) == msgs
    assert feed_all(StreamParser(), [memoryview(c) for c in chunks]) == msgs


def test_stream_reports_bad_line_in_place_and_continues():
    out = StreamParser().feed(b"?ok\n?bad\\z\n#fine 1\n")
    assert [type(x) for x in out] == [Message, KatcpSyntaxError, Message]
    assert out[2].arguments == [b"1"]


def test_stream_skips_empty_lines():
    assert [m.name for m in StreamParser().feed(b"\n\r\n?a\r\n\r\n?b\n")] == ["a", "b"]


@pytest.mark.parametrize("split", [1, 5, 12, 19, 30, 40])
def test_over_long_line_rejected_once_then_resynchronises(split):
    wire = b"?a 1\n?toolong " + b"x" * 20 + b"\n?b 2\n"
    sp = StreamParser(max_line_length=16)
    out = feed_all(sp, [wire[:split], wire[split:]])
    kinds = [type(x).__name__ for x in out]
    assert kinds == ["Message", "KatcpSyntaxError", "Message"], out
    assert "longer than the limit" in str(out[1])
    assert out[2].name == "b" and sp.buffered == 0


def test_over_long_line_fed_byte_by_byte():
    wire = b"?" + b"y" * 50 + b"\n?ok\n"
    out = feed_all(StreamParser(max_line_length=10), [wire[i:i + 1] for i in range(len(wire))])
    assert [type(x).__name__ for x in out] == ["KatcpSyntaxError", "Message"]


def test_line_at_exactly_the_limit_is_accepted():
    line = b"?a " + b"z" * 13
    assert len(line) == 16
    out = StreamParser(max_line_length=16).feed(line + b"\n")
    assert out == [parser.parse(line)]


def test_stream_holds_partial_line_until_eol():
    sp = StreamParser()
    assert sp.feed(b"?hel") == []
    assert sp.buffered == 4
    assert sp.feed(b"p") == []
    assert [m.name for m in sp.feed(b"\n")] == ["help"]


# --- protocol flags ---------------------------------------------------------------------

def test_protocol_flags_parse_and_print():
    f = ProtocolFlags.parse_version(b"5.1-MIB")
    assert (f.major, f.minor) == (5, 1)
    assert str(f) == "5.1-BIM"
    assert f.multi_client and f.message_ids and f.bulk_set_sensor_sampling
    assert not f.request_timeout_hints
    assert str(ProtocolFlags.parse_version("5.0-IM")) == "5.0-IM"
    assert str(ProtocolFlags(5, 1, [b"X", b"I"])) == "5.1-IX"  # unknown flag kept
    assert ProtocolFlags.parse_version(b"5.0-IM") == ProtocolFlags(5, 0, "MI")
    assert str(ProtocolFlags.parse_version(b"4.0")) == "4.0"


def test_protocol_flags_reject_impossible_combinations():
    with pytest.raises(ValueError):
        ProtocolFlags(4, 0, "I")
    with pytest.raises(ValueError):
        ProtocolFlags(5, 0, "B")


# --- missing extension ------------------------------------------------------------------

def test_missing_extension_error_says_which_and_how_to_build():
    with pytest.raises(ImportError) as info:
        load_extension("ctlwire.katcp._no_such_codec")
    text = str(info.value)
    assert "ctlwire.katcp._no_such_codec" in text
    assert "pip install" in text and "build_ext --inplace" in text
