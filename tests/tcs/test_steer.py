"""The steered replay's reading and merging against the pure-Python reference."""
from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings, strategies as st

from tcs_testlib import ref_events, timed_event, write_db

from ctlwire.tcs.server import TCSDBReplay
from ctlwire.tcs.steer import SteeredReplay, parse_time

INF = float("inf")
TIMES = ("__data_time", "__wire_time")


def strip(event):
    return {k: v for k, v in event.items() if k not in TIMES}


def test_read_next_gives_the_reference_events(small_db):
    replay = TCSDBReplay(small_db, speedup=INF, convert_number=True)
    got = []
    while (r := replay._replayer.read_next()) is not None:
        got.append((r[1], r[2]))
    want = ref_events(small_db, convert_number=True)
    assert got == want


times = st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=1,
                 max_size=30)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=times, b=times)
def test_two_databases_merge_like_a_sort_of_their_events(tmp_path_factory, a, b):
    tmp = tmp_path_factory.mktemp("merge")
    dbs = []
    for name, ts in (("a", a), ("b", b)):
        ts = sorted(ts)  # a recording is in time order
        dbs.append(write_db(tmp / f"{name}.sqlite",
                            [timed_event(i + 1, f"{name}.x.y", t, k=f"{name}{i}")
                             for i, t in enumerate(ts)]))
    got = []
    with SteeredReplay(dbs, speedup=INF) as r:
        r.run(lambda f: got.append(json.loads(f[1])["k"]))
    # reference: every event, ordered by (time, file given first, position)
    want = [k for _, _, _, k in sorted(
        [(t, 0, i, f"a{i}") for i, t in enumerate(sorted(a))]
        + [(t, 1, i, f"b{i}") for i, t in enumerate(sorted(b))])]
    assert got == want
    assert r.stats.sent == r.stats.delivered == len(a) + len(b)


def test_a_single_database_steered_sends_what_the_plain_replay_sends(small_db):
    plain = [(t, strip(json.loads(p))) for t, p in TCSDBReplay(small_db, speedup=INF)]
    got = []
    with SteeredReplay([small_db], speedup=INF) as r:
        r.run(lambda f: got.append((f[0].decode(), strip(json.loads(f[1])))))
    assert got == plain


def test_max_gap_shortens_idle_time_and_keeps_the_rest(tmp_path):
    events = [timed_event(1, "a.b.c", 100.0), timed_event(2, "a.b.c", 100.5),
              timed_event(3, "a.b.c", 5000.0), timed_event(4, "a.b.c", 5000.25)]
    db = write_db(tmp_path / "g.sqlite", events)
    sent = []
    with SteeredReplay([db], speedup=1.0, max_gap=1.0, convert_number=True) as r:
        r.run(lambda f: sent.append(json.loads(f[1])["__data_time"]))
    gaps = [round(b - a, 6) for a, b in zip(sent, sent[1:])]
    assert gaps == [0.5, 1.0, 0.25]  # replayed clock: the 4899.5 s gap became 1 s


def test_parse_time_reads_relative_iso_and_unix():
    assert parse_time("+90") == ("rel", 90.0)
    assert parse_time("1700000000.5") == ("abs", 1700000000.5)
    assert parse_time("2023-11-14T22:13:20Z") == ("abs", 1700000000.0)
    for bad in ("+-1", "+nan", "soon", "inf"):
        try:
            parse_time(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")
