"""The recorder's compiled row conversion (``ctlwire.tcs._jsonrows``) agrees with its
pure-Python reference: ``decode_message`` then ``event_rows``.

The compiled scanner may decline a message (None: the Python path writes it); whatever
it does take must give exactly the reference's rows, and the messages a real
publisher sends (flat objects of ASCII text, numbers, booleans and nulls, from msgspec
or the standard library's json) must not be declined.
"""
from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ctlwire import _json
from ctlwire._ext import load_extension
from ctlwire.tcs.events import decode_message, event_rows

_record = load_extension("ctlwire.tcs._record")
_jsonrows = load_extension("ctlwire.tcs._jsonrows")


def reference(payload: bytes):
    """Rows the Python path writes, or None for a malformed payload."""
    try:
        _, event = decode_message([b"t", payload])
    except ValueError:
        return None
    return event_rows(event)


def check(payload: bytes):
    got = _jsonrows.parse(payload)
    if got is not None:
        assert got == reference(payload), payload
    return got


ascii_text = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=12)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-10**30, 10**30),
    st.floats(allow_nan=False, allow_infinity=False), ascii_text)
flat = st.dictionaries(ascii_text, scalars, max_size=20)
encoders = st.sampled_from([
    _json.dumps,
    lambda d: json.dumps(d).encode(),
    lambda d: json.dumps(d, separators=(",", ":")).encode(),
    lambda d: json.dumps(d, indent=1).encode(),
])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(flat, encoders)
def test_flat_events_take_the_fast_path_with_the_reference_rows(event, encode):
    payload = encode(event)
    assert check(payload) is not None, payload


any_value = st.recursive(
    scalars | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8)


@settings(max_examples=300)
@given(st.dictionaries(st.text(max_size=8), any_value, max_size=8),
       st.sampled_from([_json.dumps, lambda d: json.dumps(d).encode(),
                        lambda d: json.dumps(d, ensure_ascii=False).encode()]))
def test_any_event_is_written_as_the_reference_or_handed_over(event, encode):
    check(encode(event))


number_literal = st.one_of(
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,4})?\Z"),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f"{f:.17g}"),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f"{f:.16e}"),
    st.tuples(st.integers(0, 10**17), st.integers(-330, 330)).map(lambda t: f"{t[0]}e{t[1]}"),
    # times (16-17 digits): shortest as sent, and longer or shorter than shortest
    st.floats(1e9, 2e9).map(repr),
    st.floats(1e9, 2e9).map(lambda f: f"{f:.17g}"),
    st.floats(1e9, 2e9).map(lambda f: f"{f:.16g}"),
    st.tuples(st.integers(10**15, 10**17), st.integers(-25, 3)).map(
        lambda t: f"{t[0]}e{t[1]}"),
    st.sampled_from(["-0", "0", "-0.0", "0.0", "0e5", "1E400", "1e-400", "1e16", "1e15",
                     "0.0001", "0.00001", "123456789012345.6", "9999999999999998.0",
                     "1.7976931348623157e308", "5e-324", "01", "1.", ".5", "-", "1e"]),
)


@settings(max_examples=1000)
@given(number_literal)
def test_numbers_get_the_text_of_the_decoded_value(literal):
    payload = b'{"x": ' + literal.encode() + b"}"
    got = check(payload)
    if reference(payload) is not None and "e" not in literal.lower() and len(literal) < 60:
        assert got is not None, literal  # plain numbers are never handed over


@settings(max_examples=500)
@given(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_garbage_is_never_written_as_rows_the_reference_would_not_make(payload):
    check(payload)


@pytest.mark.parametrize("payload, why", [
    (b'{"a": 1, "a": 2}', "a repeated key keeps the last value, in the first's place"),
    (b'{"a": [1, 2]}', "nested values are JSON text"),
    (b'{"a": "caf\xc3\xa9"}', "non-ASCII text"),
    (b'{"a": "\\ud83d\\ude00"}', "a surrogate pair"),
    (b'{"a": 1} x', "trailing garbage is malformed"),
    (b'[1]', "not an object"),
])
def test_what_the_fast_path_hands_over(payload, why):
    assert _jsonrows.parse(payload) is None, why


def test_the_writer_writes_rows_in_order_and_commits_in_batches(tmp_path):
    from ctlwire.tcs.record import _SETUP

    path = str(tmp_path / "w.sqlite")
    handed = []

    def fallback(frames):
        handed.append(frames)
        try:
            topic, event = decode_message(frames)
        except ValueError:
            return None
        return topic, event_rows(event)

    w = _record.Writer(path, _SETUP, None, fallback)
    w.begin_session()
    assert w.add_frames([b"a.b.c", b'{"x": 1.50, "y": "s", "z": null, "t": true}'])
    assert w.add_frames([b"a.b.c", b'{"n": {"k": [1]}}'])
    assert not w.add_frames([b"a.b.c", b"not json"])
    assert not w.add_frames([b"only one frame"])
    assert (w.added, w.pending, w.written, w.declined) == (2, 2, 0, 3)
    assert len(handed) == 3
    w.commit()
    assert (w.pending, w.written) == (0, 2)
    w.close("CREATE INDEX IF NOT EXISTS attribute_name ON attribute(name, event_id)")
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT event_id, name, value, data_type FROM attribute "
                        "ORDER BY rowid").fetchall()
    assert rows == [(1, "x", "1.5", "number"), (1, "y", "s", "string"),
                    (1, "z", None, "string"), (1, "t", "true", "boolean"),
                    (2, "n", '{"k":[1]}', "json")]
    assert conn.execute("SELECT first_event_id FROM ctlwire_session").fetchall() == [(1,)]
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'attribute_name'"
                        ).fetchone() == ("attribute_name",)
    conn.close()
    # a second writer on the same file numbers on from the last event
    w2 = _record.Writer(path, _SETUP, None, fallback)
    assert w2.next_id == 3
    w2.close()


@pytest.mark.parametrize("raw", [True, False], ids=["libzmq", "pyzmq"])
def test_the_recorder_writes_every_kind_of_message_as_the_reference(tmp_path, raw):
    import zmq

    from ctlwire.tcs.record import TCSRecorder
    from ctlwire.tcs.server import ZMQServer

    events = [{"x": 1, "t": 1.7e9, "s": "ok", "b": False, "n": None},
              {"nested": {"a": [1, 2.5]}, "name": "café"},
              {"k": 1, "k ": 2, "esc": "a\"b\\c\n\u00e9"}]
    bad = [[b"t.o.p", b"{not json"], [b"t.o.p", b"{}", b"third frame"], [b"alone"],
           [b"\xff\xfe", b"{}"]]
    ctx = zmq.Context()
    server = ZMQServer("tcp://127.0.0.1:0", context=ctx, on_full="block")
    out = tmp_path / "kinds.sqlite"
    rec = TCSRecorder(server.endpoint, out, mode="new", context=ctx)
    try:
        rec._raw = rec._raw and raw
        assert server.wait_for_subscriber(timeout=30)
        for event, frames in zip(events, bad):
            server.send_frames(frames)
            server.send_frames([b"a.b.c", json.dumps(event).encode()])
        server.send_frames(bad[-1])
        server.send_frames([b"a.b.c", _json.dumps(events[0])])
        assert rec.run(count=4, duration=30) == 4
    finally:
        rec.close()
        server.close()
        ctx.term()
    assert rec.subscriber.bad == len(bad)
    assert rec.recorded == 4
    conn = sqlite3.connect(out)
    for eid, event in enumerate(events + events[:1], start=1):
        rows = conn.execute("SELECT name, value, data_type FROM attribute WHERE "
                            "event_id = ? ORDER BY rowid", (eid,)).fetchall()
        assert rows == event_rows(event)
    conn.close()


@pytest.mark.parametrize("keys", [1, 16, 17, 40, 64, 65])
def test_events_of_many_keys_keep_every_row_in_order(tmp_path, keys):
    from ctlwire.tcs.record import _SETUP

    flat = {f"k{i}": i * 0.5 for i in range(keys)}
    nested = dict(flat, zz=[1])
    path = str(tmp_path / "many.sqlite")
    w = _record.Writer(path, _SETUP, None,
                       lambda frames: ("t", event_rows(decode_message(frames)[1])))
    for event in (flat, nested):
        assert w.add_frames([b"t", _json.dumps(event)])
    w.close()
    conn = sqlite3.connect(path)
    for eid, event in ((1, flat), (2, nested)):
        rows = conn.execute("SELECT name, value, data_type FROM attribute WHERE "
                            "event_id = ? ORDER BY rowid", (eid,)).fetchall()
        assert rows == event_rows(event)
    conn.close()
