"""The compiled conversions agree with the pure-Python reference (conftest)."""
from __future__ import annotations

import json

from hypothesis import given, settings, HealthCheck, strategies as st

from ctlwire._ext import load_extension

from tcs_testlib import ref_bool, ref_number, ref_events, write_db

_replay = load_extension("ctlwire.tcs._replay")
from ctlwire.tcs.server import TCSDBReplay  # noqa: E402


def same(a, b):
    """Equal values of the same type (1 != 1.0 != True here; NaN never appears)."""
    return type(a) is type(b) and (a == b or (isinstance(a, float) and repr(a) == repr(b)))


number_text = st.one_of(
    st.text(max_size=30),
    st.integers().map(str),
    st.integers(min_value=-10**40, max_value=10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats().map(lambda f: f"{f:e}"),
    # decimals around the exact fast path's limits (2**53 digits, 10**22)
    st.tuples(st.integers(0, 10**20), st.integers(0, 10**12), st.integers(-40, 40),
              st.sampled_from(["", "-", "+"])).map(lambda t: f"{t[3]}{t[0]}.{t[1]}e{t[2]}"),
    st.tuples(st.integers(2**53 - 5, 2**53 + 5), st.integers(-23, 23)).map(
        lambda t: f"{t[0]}e{t[1]}"),
    st.from_regex(r"\A[ +-]?[0-9_]{0,25}(\.[0-9]*)?([eE][+-]?[0-9]{1,4})?\s?\Z"),
    st.sampled_from(["", "-", "+", ".", "1.", ".5", "1e5", "1E+05", "0x10", "1_000",
                     " 12 ", "nan", "inf", "-Infinity", "1e999", "٣", "1e-400", "-0",
                     "-0.0", "9" * 19, "9" * 5000, "true"]),
)


@given(number_text)
def test_convert_number_matches_reference(text):
    assert same(_replay.convert_number(text), ref_number(text))


@given(st.one_of(st.text(max_size=8), st.sampled_from(["true", "false", "True", "FALSE"])))
def test_convert_bool_matches_reference(text):
    assert same(_replay.convert_bool(text), ref_bool(text))


def test_non_finite_numbers_stay_text():
    for text in ("nan", "inf", "-inf", "1e999"):
        assert _replay.convert_number(text) == text


def test_convert_number_leaves_none_alone():
    assert _replay.convert_number(None) is None


attr_value = st.one_of(st.none(), number_text, st.sampled_from(["true", "false", "x"]))
attr_name = st.one_of(st.text(min_size=1, max_size=6),
                      st.sampled_from(["__data_time", "__wire_time"]))
attr = st.tuples(attr_name, attr_value,
                 st.sampled_from(["number", "boolean", "string", "json"]))
event = st.tuples(st.sampled_from(["a.b.c", "tcs.x.y", "lrs2.hw.status"]),
                  st.lists(attr, max_size=8, unique_by=lambda a: a[0]))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(event, max_size=6), conv_num=st.booleans(), conv_bool=st.booleans())
def test_replayed_events_match_reference(tmp_path_factory, events, conv_num, conv_bool):
    path = tmp_path_factory.mktemp("h") / "db.sqlite"
    rows = [(i + 1, topic, attrs) for i, (topic, attrs) in enumerate(events)]
    write_db(path, rows)
    replay = TCSDBReplay(str(path), speedup=float("inf"), convert_number=conv_num,
                         convert_bool=conv_bool)
    got = [(topic, json.loads(payload)) for topic, payload in replay]
    want = ref_events(str(path), conv_num, conv_bool)
    start = replay.start_iter_time
    replay.close()
    assert len(got) == len(want)
    for (gt, ge), (wt, we) in zip(got, want):
        assert gt == wt
        assert list(ge) == list(we)  # insertion order kept
        for k in we:
            if k in ("__data_time", "__wire_time") and _replay.time_value(we[k]) is not None:
                # a readable time is rewritten: with speedup inf, to the start time
                assert ge[k] == start
                continue
            assert same(ge[k], we[k]), (k, ge[k], we[k])


def test_json_compat_mode_matches_stdlib_bytes(tmp_path):
    path = write_db(tmp_path / "db.sqlite", [(1, "a.b.c", [("x", "1.5", "number"),
                                                          ("s", "é", "string")])])
    replay = TCSDBReplay(path, speedup=float("inf"), convert_number=True, json_compat=True)
    topic, payload = next(replay)
    replay.close()
    assert payload == json.dumps({"x": 1.5, "s": "é"})
