"""TCSDBReplay: database checks, order, filtering, pacing, corrupt rows."""
from __future__ import annotations

import json
import logging
import sqlite3
import time

import pytest

from ctlwire.tcs.server import TCSDatabaseError, TCSDBReplay

from tcs_testlib import SCHEMA, ref_events, timed_event, write_db

INF = float("inf")


def drain(replay):
    return [m for m in replay if m is not None]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(TCSDatabaseError, match="does not exist"):
        TCSDBReplay(str(tmp_path / "nope.sqlite"))


def test_non_sqlite_file_is_rejected(tmp_path):
    path = tmp_path / "text.sqlite"
    path.write_text("hello, not a database\n")
    with pytest.raises(TCSDatabaseError, match="not a sqlite3 file"):
        TCSDBReplay(str(path))


def test_missing_table_is_named(tmp_path):
    path = tmp_path / "db.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE event (event_id INTEGER PRIMARY KEY, topic TEXT)")
    conn.close()
    with pytest.raises(TCSDatabaseError, match="table 'attribute' is missing"):
        TCSDBReplay(str(path))


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "db.sqlite"
    write_db(path, [], schema=SCHEMA.replace("data_type TEXT NOT NULL,", "kind TEXT,"))
    with pytest.raises(TCSDatabaseError, match="no column 'data_type'"):
        TCSDBReplay(str(path))


def test_damaged_file_is_a_clear_error(tmp_path):
    from ctlwire.tcs.events import generate_database
    path = generate_database(tmp_path / "db.sqlite", 500)
    size = path and (tmp_path / "db.sqlite").stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(TCSDatabaseError, match="malformed"):
        list(TCSDBReplay(path, speedup=INF))


def test_unknown_sort_order_is_a_value_error(small_db):
    with pytest.raises(ValueError, match="sort_by"):
        TCSDBReplay(small_db, sort_by="topic")


@pytest.mark.parametrize("speedup", [0, -1, float("nan")])
def test_speedup_must_be_positive(small_db, speedup):
    with pytest.raises(ValueError, match="speedup"):
        TCSDBReplay(small_db, speedup=speedup)


def test_yields_topic_and_json_in_event_id_order(small_db):
    msgs = drain(TCSDBReplay(small_db, speedup=INF))
    assert [m[0] for m in msgs] == [t for t, _ in ref_events(small_db)]
    assert all(isinstance(json.loads(m[1]), dict) for m in msgs)


def test_corrupt_row_is_reported_and_skipped(tmp_path, caplog):
    path = write_db(tmp_path / "db.sqlite", [timed_event(i, "a.b.c", float(i)) for i in (1, 2, 3)])
    conn = sqlite3.connect(path)
    with conn:  # invalid UTF-8 stored as text in event 2
        conn.execute("UPDATE attribute SET value = CAST(x'fffe41' AS TEXT) "
                     "WHERE event_id = 2 AND name = '__data_time'")
    conn.close()
    replay = TCSDBReplay(path, speedup=INF)
    with caplog.at_level(logging.WARNING, logger="ctlwire.tcs.replay"):
        msgs = drain(replay)
    assert len(msgs) == 2
    assert replay.stats.skipped == 1
    assert replay.errors[0][0] == 2 and "UTF-8" in replay.errors[0][1]
    assert "corrupt event 2" in caplog.text


def test_corrupt_sort_key_is_skipped_in_a_sorted_replay(tmp_path):
    path = write_db(tmp_path / "db.sqlite", [timed_event(i, "a.b.c", float(10 - i))
                                             for i in (1, 2, 3)])
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE attribute SET value = CAST(x'ff31' AS TEXT) "
                     "WHERE event_id = 2 AND name = '__data_time'")
    conn.close()
    replay = TCSDBReplay(path, sort_by="__data_time", speedup=INF, convert_number=True)
    got = [json.loads(m[1])["__wire_time"] for m in replay]
    assert len(got) == 2 and replay.stats.skipped == 1 and replay.errors[0][0] == 2


def test_topic_filter_yields_none_for_other_topics(small_db):
    replay = TCSDBReplay(small_db, speedup=INF, topics=["tcs.sys1"])
    out = list(replay)
    assert all(m is None or m[0].startswith("tcs.sys1") for m in out)
    assert sum(m is None for m in out) == replay.stats.filtered == 13
    assert replay.stats.sent == 7


def test_sort_by_data_time_puts_events_without_it_last(tmp_path):
    rows = [timed_event(1, "a.b.late", 30.0), (2, "a.b.none", [("x", "1", "number")]),
            timed_event(3, "a.b.early", 10.0), timed_event(4, "a.b.mid", 20.0)]
    path = write_db(tmp_path / "db.sqlite", rows)
    topics = [m[0] for m in TCSDBReplay(path, sort_by="__data_time", speedup=INF)]
    assert topics == ["a.b.early", "a.b.mid", "a.b.late", "a.b.none"]


def test_event_ids_follow_the_sort_order(tmp_path):
    rows = [timed_event(1, "a.b.c", 3.0), timed_event(2, "a.b.c", 1.0), timed_event(3, "a.b.c", 2.0)]
    replay = TCSDBReplay(write_db(tmp_path / "db.sqlite", rows), sort_by="__wire_time")
    assert list(replay.event_ids) == [2, 3, 1]


def test_event_ids_are_in_event_id_order_without_sorting(small_db):
    assert list(TCSDBReplay(small_db).event_ids) == list(range(1, 21))


def test_interleaved_attribute_rows_keep_insertion_order(tmp_path):
    path = tmp_path / "db.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    with conn:  # rows of events 1 and 2 interleaved: the merge plan cannot be used
        conn.executemany("INSERT INTO event VALUES (?, ?)", [(1, "a.b.c"), (2, "d.e.f")])
        conn.executemany("INSERT INTO attribute VALUES (?, ?, ?, ?)", [
            (2, "z", "1", "string"), (1, "y", "2", "string"), (2, "a", "3", "string"),
            (1, "b", "4", "string")])
    conn.close()
    replay = TCSDBReplay(str(path), speedup=INF)
    assert replay._replayer.plan == "join"
    got = [json.loads(m[1]) for m in replay]
    assert [list(e) for e in got] == [["y", "b"], ["z", "a"]]


def test_create_event_returns_one_event_with_conversions(small_db):
    replay = TCSDBReplay(small_db, convert_number=True)
    event = replay._create_event("3")
    assert event["__data_time"] == pytest.approx(1000.03) and event["note"] == "n3"


def test_create_event_unknown_id_is_key_error(small_db):
    with pytest.raises(KeyError):
        TCSDBReplay(small_db)._create_event(999)


def test_convert_to_type_only_when_enabled(small_db):
    off = TCSDBReplay(small_db)
    on = TCSDBReplay(small_db, convert_number=True, convert_bool=True)
    assert off._convert_to_type("12", "number") == "12"
    assert on._convert_to_type("12", "number") == 12
    assert on._convert_to_type("true", "boolean") is True
    assert on._convert_to_type("12", "string") == "12"


def test_times_are_rewritten_from_the_first_event(small_db):
    replay = TCSDBReplay(small_db, speedup=100.0)
    first = json.loads(next(replay)[1])
    second = json.loads(next(replay)[1])
    assert first["__data_time"] == replay.start_iter_time
    # 10 ms apart at speedup 100, and __wire_time keeps its 0.5 s offset / 100
    assert second["__data_time"] - first["__data_time"] == pytest.approx(0.0001, abs=1e-6)
    assert second["__wire_time"] - second["__data_time"] == pytest.approx(0.005, abs=1e-6)


def test_reset_iter_restarts_and_unsets_start_times(small_db):
    replay = TCSDBReplay(small_db, speedup=INF)
    first = drain(replay)
    assert replay.start_iter_time is not None
    replay._reset_iter()
    assert replay.start_iter_time is None and replay.start_wire_time is None
    assert [m[0] for m in drain(replay)] == [m[0] for m in first]


def test_events_are_not_sent_before_their_deadline(tmp_path):
    rows = [timed_event(i + 1, "a.b.c", 100.0 + 0.03 * i) for i in range(6)]
    replay = TCSDBReplay(write_db(tmp_path / "db.sqlite", rows), speedup=1.0)
    t0 = None
    for i, _ in enumerate(replay):
        now = time.monotonic()
        t0 = now if t0 is None else t0
        assert now - t0 >= 0.03 * i - 1e-3
    assert replay.stats.timed == 6
    assert replay.stats.lateness_max < 0.5


def test_due_events_go_out_in_a_burst_without_drift(tmp_path):
    rows = [timed_event(i + 1, "a.b.c", 0.05 * i) for i in range(10)]
    replay = TCSDBReplay(write_db(tmp_path / "db.sqlite", rows), speedup=1.0)
    next(replay)
    t_pause = time.monotonic()
    while time.monotonic() - t_pause < 1.0:  # a consumer busy for 1 s: every event is due
        pass
    t0 = time.monotonic()
    rest = drain(replay)
    assert len(rest) == 9
    # drifting pacing would need another 0.45 s; all nine are overdue and go at once
    assert time.monotonic() - t0 < 0.3


def test_slower_speedup_stretches_gaps(tmp_path):
    rows = [timed_event(1, "a.b.c", 0.0), timed_event(2, "a.b.c", 0.01)]
    replay = TCSDBReplay(write_db(tmp_path / "db.sqlite", rows), speedup=0.1)
    next(replay)
    t0 = time.monotonic()
    next(replay)
    assert time.monotonic() - t0 >= 0.09


def test_update_time_uses_the_replay_clock(small_db):
    replay = TCSDBReplay(small_db, speedup=2.0)
    next(replay)
    event = replay._update_time({"__data_time": 1000.2, "__wire_time": "1000.7", "x": 1})
    assert event["__data_time"] == pytest.approx(replay.start_iter_time + 0.1)
    assert event["__wire_time"] == pytest.approx(replay.start_iter_time + 0.35)
    assert event["x"] == 1


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=15, deadline=None)
@given(gaps=st.lists(st.floats(min_value=0.0, max_value=0.004), min_size=1, max_size=8),
       speedup=st.sampled_from([0.5, 1.0, 3.0]), t0=st.floats(min_value=0, max_value=2e9))
def test_pacing_matches_reference_deadlines(tmp_path_factory, gaps, speedup, t0):
    # reference: deadline_i = start + (t_i - t_0) / speedup, times rewritten alike
    times = [t0]
    for g in gaps:
        times.append(times[-1] + g)
    path = write_db(tmp_path_factory.mktemp("p") / "db.sqlite",
                    [timed_event(i + 1, "a.b.c", t) for i, t in enumerate(times)])
    replay = TCSDBReplay(path, speedup=speedup)
    handed = []
    events = []
    for _, payload in replay:
        handed.append(time.monotonic())
        events.append(json.loads(payload))
    start = replay._replayer.start_mono
    for t, at, event in zip(times, handed, events):
        offset = (t - times[0]) / speedup
        assert at >= start + offset - 1e-6  # never early
        assert event["__data_time"] == pytest.approx(replay.start_iter_time + offset, abs=1e-6)
        assert event["__wire_time"] - event["__data_time"] == pytest.approx(0.5 / speedup,
                                                                            abs=1e-6)
    assert replay.stats.timed == len(times)


def test_unreadable_time_neither_paces_nor_fails(tmp_path):
    huge = " " + "9" * 400 + " "  # an int for Python, beyond any double
    rows = [timed_event(1, "a.b.c", 5.0), (2, "a.b.c", [("__data_time", huge, "number")])]
    replay = TCSDBReplay(write_db(tmp_path / "db.sqlite", rows), speedup=1.0,
                         convert_number=True)
    msgs = drain(replay)
    assert len(msgs) == 2 and replay.stats.timed == 1
    assert json.loads(msgs[1][1])["__data_time"] == int(huge)
