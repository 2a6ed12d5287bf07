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


def reference_frames(kind: int, sender: bytes, payload: bytes, t: float | None,
                     order: str) -> list[bytes]:
    """Tiny independent reference of the frame layout."""
    header = b"DC" + bytes([1, kind]) + sender
    if t is None:
        return [header, payload]
    return [header, struct.pack(">d" if order == "network" else "=d", t), payload]


@given(kind=st.sampled_from([codec.KIND_APP, codec.KIND_CONTROL]), sender=ids,
       payload=st.binary(), t=st.none() | finite,
       order=st.sampled_from([codec.NETWORK, codec.NATIVE]))
def test_frames_match_reference_and_round_trip(kind, sender, payload, t, order):
    frames = codec.encode_frames(kind, sender, payload, t, order)
    assert frames == reference_frames(kind, sender, payload, t, order)
    env = codec.decode_frames(frames, timed=t is not None, order=order)
    assert env == codec.Envelope(kind, sender, payload, t)


def test_time_frame_is_big_endian_by_default():
    assert codec.pack_time(1.0) == b"\x3f\xf0" + b"\x00" * 6


def test_time_frame_native_order_option():
    assert codec.pack_time(1.5, codec.NATIVE) == struct.pack("=d", 1.5)


@given(st.lists(st.binary(max_size=40), max_size=5), st.booleans())
def test_random_frames_decode_or_raise_codec_error(frames, timed):
    try:
        env = codec.decode_frames(frames, timed)
    except CodecError:
        return
    assert len(env.sender) == 16


def test_wrong_frame_count_is_reported():
    with pytest.raises(CodecError, match="expected 3 frames"):
        codec.decode_frames([b"x", b"y"], timed=True)


def test_bad_magic_is_reported():
    frames = codec.encode_frames(codec.KIND_APP, b"\x01" * 16, b"p")
    frames[0] = b"XX" + frames[0][2:]
    with pytest.raises(CodecError, match="magic"):
        codec.decode_frames(frames, timed=False)


def test_nan_time_is_rejected():
    frames = [codec.encode_frames(codec.KIND_APP, b"\x01" * 16, b"")[0],
              struct.pack("!d", float("nan")), b""]
    with pytest.raises(CodecError, match="finite"):
        codec.decode_frames(frames, timed=True)


@pytest.mark.parametrize("msg", [
    codec.Presence(term=3), codec.Heartbeat(term=2, host="127.0.0.1", port=5555),
    codec.VoteRequest(term=7), codec.Vote(term=7, candidate=b"\x02" * 16, granted=True),
    codec.Bye(),
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
