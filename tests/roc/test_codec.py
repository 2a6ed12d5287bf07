"""The compiled MDP frame classifiers against a tiny pure-Python reference."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ctlwire._ext import load_extension

R = load_extension("ctlwire.roc._router")


def ref_classify(frames: list) -> int:
    """Reference: what a message arriving at the broker's ROUTER is (spec table)."""
    n = len(frames)
    if n < 3:
        return R.BAD_SHORT
    if frames[0] == b"" or frames[1] != b"":
        return R.BAD_DELIMITER
    if frames[2] == b"MDPC01":
        if n < 5:
            return R.BAD_LENGTH
        return R.C_REQUEST if frames[3] else R.BAD_SERVICE
    if frames[2] != b"MDPW01":
        return R.BAD_PROTOCOL
    if n < 4:
        return R.BAD_LENGTH
    cmd = frames[3]
    if cmd == b"\x01":
        if n != 5:
            return R.BAD_LENGTH
        return R.W_READY if frames[4] else R.BAD_SERVICE
    if cmd in (b"\x02", b"\x03", b"\x06"):  # 0x06: PARTIAL, the progress extension
        if n < 7:
            return R.BAD_LENGTH
        if not frames[4] or frames[5] != b"":
            return R.BAD_ENVELOPE
        return {b"\x03": R.W_REPLY, b"\x06": R.W_PARTIAL}.get(cmd, R.W_UNEXPECTED)
    if cmd == b"\x04":
        return R.W_HEARTBEAT if n == 4 else R.BAD_LENGTH
    if cmd == b"\x05":
        return R.W_DISCONNECT if n == 4 else R.BAD_LENGTH
    return R.BAD_COMMAND


def ref_classify_worker(frames: list) -> int:
    """Reference: what a message arriving at a worker's DEALER is."""
    n = len(frames)
    if n < 3:
        return R.BAD_SHORT
    if frames[0] != b"":
        return R.BAD_DELIMITER
    if frames[1] != b"MDPW01":
        return R.BAD_PROTOCOL
    cmd = frames[2]
    if cmd in (b"\x02", b"\x03"):
        if n < 6:
            return R.BAD_LENGTH
        if not frames[3] or frames[4] != b"":
            return R.BAD_ENVELOPE
        return R.B_REQUEST if cmd == b"\x02" else R.B_UNEXPECTED
    if cmd == b"\x04":
        return R.B_HEARTBEAT if n == 3 else R.BAD_LENGTH
    if cmd == b"\x05":
        return R.B_DISCONNECT if n == 3 else R.BAD_LENGTH
    if cmd == b"\x01":
        if n != 4:
            return R.BAD_LENGTH
        return R.B_UNEXPECTED if frames[3] else R.BAD_SERVICE
    return R.BAD_COMMAND


# frames drawn mostly from protocol vocabulary, so that random messages are often
# almost valid and exercise every branch
_vocab = st.sampled_from([b"", b"MDPC01", b"MDPW01", b"MDPW02", b"\x01", b"\x02", b"\x03",
                          b"\x04", b"\x05", b"\x06", b"\x01\x02", b"echo", b"client-1"])
_frame = st.one_of(_vocab, st.binary(max_size=8))
_frames = st.lists(_frame, max_size=9)

_VALID_BROKER_SIDE = [
    [b"id", b"", b"MDPC01", b"echo", b"{}"],
    [b"id", b"", b"MDPC01", b"echo", b"a", b"b"],
    [b"id", b"", b"MDPW01", b"\x01", b"echo"],
    [b"id", b"", b"MDPW01", b"\x03", b"client", b"", b"{}"],
    [b"id", b"", b"MDPW01", b"\x04"],
    [b"id", b"", b"MDPW01", b"\x05"],
    [b"id", b"", b"MDPW01", b"\x06", b"client", b"", b"{}"],
]
_VALID_WORKER_SIDE = [
    [b"", b"MDPW01", b"\x02", b"client", b"", b"{}"],
    [b"", b"MDPW01", b"\x04"],
    [b"", b"MDPW01", b"\x05"],
]


@settings(max_examples=1500)
@given(_frames)
def test_classify_matches_reference_on_random_frames(frames):
    assert R.classify(frames) == ref_classify(frames)


@settings(max_examples=1500)
@given(_frames)
def test_classify_worker_matches_reference_on_random_frames(frames):
    assert R.classify_worker(frames) == ref_classify_worker(frames)


@given(st.sampled_from(_VALID_BROKER_SIDE), st.data())
def test_truncated_and_extended_broker_messages_match_reference(msg, data):
    cut = data.draw(st.integers(0, len(msg)))
    extra = data.draw(st.lists(_frame, max_size=2))
    frames = msg[:cut] + extra
    assert R.classify(frames) == ref_classify(frames)


@given(st.sampled_from(_VALID_WORKER_SIDE), st.data())
def test_truncated_and_extended_worker_messages_match_reference(msg, data):
    cut = data.draw(st.integers(0, len(msg)))
    extra = data.draw(st.lists(_frame, max_size=2))
    frames = msg[:cut] + extra
    assert R.classify_worker(frames) == ref_classify_worker(frames)


def test_valid_messages_are_classified_as_their_command():
    kinds = [R.classify(m) for m in _VALID_BROKER_SIDE]
    assert kinds == [R.C_REQUEST, R.C_REQUEST, R.W_READY, R.W_REPLY, R.W_HEARTBEAT,
                     R.W_DISCONNECT, R.W_PARTIAL]
    assert [R.classify_worker(m) for m in _VALID_WORKER_SIDE] == [
        R.B_REQUEST, R.B_HEARTBEAT, R.B_DISCONNECT]


def test_every_truncation_of_a_valid_message_is_malformed():
    for msg in _VALID_BROKER_SIDE:
        for cut in range(len(msg)):
            if msg[2] == b"MDPC01" and cut >= 5:
                continue
            assert R.classify(msg[:cut]) < 0, msg[:cut]


def test_worker_sending_request_is_unexpected_not_malformed():
    assert R.classify([b"id", b"", b"MDPW01", b"\x02", b"c", b"", b"x"]) == R.W_UNEXPECTED
