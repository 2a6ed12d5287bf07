"""The pure wire formats: frames, time frames, control messages, records, payload codecs."""
from __future__ import annotations

import pickle
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctlwire.dc import codec
from ctlwire.dc.codec import CodecError

ids = st.binary(min_size=16, max_size=16)
finite = st.floats(allow_nan=False, allow_infinity=False)


def reference_frame(kind: int, sender: bytes, payload: bytes, t: float | None,
                    order: str, term: int = 0) -> bytes:
    """Tiny independent reference of the version-2 frame layout."""
    flags = 0 if t is None else (1 | (2 if order == "native" else 0))
    header = b"DC" + bytes([2, kind, flags, 0, 0, 0]) + term.to_bytes(8, "big") + sender
    if t is None:
        return header + payload
    return header + struct.pack(">d" if order == "network" else "=d", t) + payload


def reference_decode(frame: bytes, timed: bool, order: str) -> tuple | None:
    """The reference's reading of a frame: a tuple, or None if malformed."""
    want = 0 if not timed else (1 | (2 if order == "native" else 0))
    if len(frame) < 32 or frame[:3] != b"DC\x02" or frame[3] not in b"AC":
        return None
    if frame[4] != want or frame[5:8] != b"\0\0\0":
        return None
    start, t = 32, None
    if timed:
        if len(frame) < 40:
            return None
        (t,) = struct.unpack(">d" if order == "network" else "=d", frame[32:40])
        if t != t or t in (float("inf"), float("-inf")):
            return None
        start = 40
    return (frame[3], frame[16:32], frame[start:], t, int.from_bytes(frame[8:16], "big"))


terms = st.integers(min_value=0, max_value=2**64 - 1)
orders = st.sampled_from([codec.NETWORK, codec.NATIVE])


@given(kind=st.sampled_from([codec.KIND_APP, codec.KIND_CONTROL]), sender=ids,
       payload=st.binary(), t=st.none() | finite, order=orders, term=terms)
def test_frames_match_reference_and_round_trip(kind, sender, payload, t, order, term):
    frames = codec.encode_frames(kind, sender, payload, t, order, term)
    assert frames == [reference_frame(kind, sender, payload, t, order, term)]
    env = codec.decode_frames(frames, timed=t is not None, order=order)
    assert env == codec.Envelope(kind, sender, payload, t, term)


def test_time_field_is_big_endian_by_default():
    assert codec.pack_time(1.0) == b"\x3f\xf0" + b"\x00" * 6
    frame = codec.encode_frames(codec.KIND_APP, b"\x01" * 16, b"", 1.0)[0]
    assert frame[32:40] == b"\x3f\xf0" + b"\x00" * 6


def test_time_field_native_order_option():
    assert codec.pack_time(1.5, codec.NATIVE) == struct.pack("=d", 1.5)


frame_bytes = st.one_of(
    st.binary(max_size=60),
    # mostly well-formed frames with one byte changed, to reach every check
    st.builds(lambda f, i, b: f[:i % max(1, len(f))] + bytes([b]) + f[i % max(1, len(f)) + 1:],
              st.builds(reference_frame, st.sampled_from([65, 67]), ids, st.binary(max_size=8),
                        st.none() | st.floats(), orders, terms),
              st.integers(0, 60), st.integers(0, 255)))


@given(frame=frame_bytes, timed=st.booleans(), order=orders)
def test_compiled_decode_agrees_with_reference_on_any_bytes(frame, timed, order):
    want = reference_decode(frame, timed, order)
    try:
        got = codec.decode_frames([frame], timed, order)
    except CodecError as exc:
        assert want is None, f"compiled refused a frame the reference accepts: {exc}"
        return
    assert want is not None
    assert tuple(got) == want


def test_wrong_frame_count_is_reported():
    with pytest.raises(CodecError, match="expected 1 frame"):
        codec.decode_frames([b"x", b"y"], timed=True)


def test_bad_magic_is_reported():
    frame = codec.encode_frames(codec.KIND_APP, b"\x01" * 16, b"p")[0]
    with pytest.raises(CodecError, match="magic"):
        codec.decode_frames([b"XX" + frame[2:]], timed=False)


def test_timed_message_in_untimed_group_is_reported():
    frame = codec.encode_frames(codec.KIND_APP, b"\x01" * 16, b"p", 1.0)[0]
    with pytest.raises(CodecError, match="timed, network order message in a group that is untimed"):
        codec.decode_frames([frame], timed=False)


def test_nan_time_is_rejected():
    frame = reference_frame(codec.KIND_APP, b"\x01" * 16, b"", float("nan"), "network")
    with pytest.raises(CodecError, match="finite"):
        codec.decode_frames([frame], timed=True)


def test_term_out_of_range_is_refused():
    with pytest.raises(ValueError, match="term"):
        codec.encode_frames(codec.KIND_APP, b"\x01" * 16, b"", term=2**64)


@pytest.mark.parametrize("msg", [
    codec.Presence(term=3), codec.Heartbeat(term=2, host="127.0.0.1", port=5555),
    codec.VoteRequest(term=7), codec.Vote(term=7, candidate=b"\x02" * 16, granted=True),
    codec.Bye(),
    codec.Ballot(ballot=b"\x03" * 16, topic="t", value=b"\x01", kind="majority", timeout=1.0),
    codec.Ballot(ballot=b"\x03" * 16, topic="action", value=b"\xa1a", kind="consensus",
                 timeout=0.5, when=1.7e9),
    codec.BallotVote(ballot=b"\x03" * 16, accept=False),
    codec.BallotResult(ballot=b"\x03" * 16, passed=True, accepted=3, refused=1, abstained=1),
])
def test_control_messages_round_trip(msg):
    assert codec.decode_control(codec.encode_control(msg)) == msg


@given(st.binary(max_size=64))
def test_control_garbage_raises_codec_error_only(data):
    try:
        codec.decode_control(data)
    except CodecError:
        pass


def test_heartbeat_with_bad_port_is_rejected():
    data = codec.encode_control(codec.Heartbeat(term=1, host="h", port=0))
    with pytest.raises(CodecError, match="port"):
        codec.decode_control(data)


def test_record_round_trip():
    rec = codec.MemberRecord("a.b", b"\x03" * 16, "127.0.0.1", 4000, b"k" * 40)
    assert codec.decode_record(codec.encode_record(rec)) == rec


def test_record_with_short_member_id_is_rejected():
    data = codec.encode_record(codec.MemberRecord("a.b", b"\x03", "127.0.0.1", 4000))
    with pytest.raises(CodecError, match="member id"):
        codec.decode_record(data)


@given(st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
                    | st.text() | finite,
                    lambda c: st.lists(c) | st.dictionaries(st.text(), c), max_leaves=20))
def test_msgpack_payload_round_trip(obj):
    c = codec.make_codec()
    assert c.decode(c.encode(obj)) == obj


def test_default_codec_is_msgpack():
    assert codec.make_codec().name == "msgpack"


def test_pickle_codec_must_be_asked_for():
    with pytest.raises(ValueError, match="allow_pickle"):
        codec.make_codec("pickle")


def test_pickle_codec_when_allowed_round_trips_sets():
    c = codec.make_codec("pickle", allow_pickle=True)
    assert c.decode(c.encode({1, 2})) == {1, 2}


def test_msgpack_codec_does_not_unpickle():
    with pytest.raises(CodecError):
        codec.make_codec().decode(pickle.dumps(object()))


def test_unencodable_object_raises_type_error():
    with pytest.raises(TypeError, match="msgpack codec cannot encode"):
        codec.make_codec().encode(object())


def test_unknown_codec_name():
    with pytest.raises(ValueError, match="unknown payload codec"):
        codec.make_codec("yaml")


def test_heartbeat_port_packed_as_double_is_rejected():
    import msgspec
    data = msgspec.msgpack.encode({"type": "heartbeat", "term": 1, "host": "h", "port": 5555.0})
    with pytest.raises(CodecError):
        codec.decode_control(data)
