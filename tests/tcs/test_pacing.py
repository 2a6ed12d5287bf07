"""Pacing: the engine's waits (Pacer), batches of due events (run_due), freeze_gc."""
from __future__ import annotations

import gc
import math
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from ctlwire.tcs import _replay
from ctlwire.tcs.server import Pacer, TCSDBReplay, freeze_gc

from tcs_testlib import timed_event, write_db

INF = float("inf")


# -- Pacer --------------------------------------------------------------------------------

@pytest.mark.parametrize("spin", [None, 0.0, 200e-6], ids=["adaptive", "sleep", "fixed"])
def test_a_wait_never_ends_before_its_deadline(spin):
    pacer = Pacer(spin)
    for k in range(50):
        deadline = _replay.monotonic() + (k % 5) * 100e-6
        assert pacer.wait_until(deadline) is True
        assert _replay.monotonic() >= deadline


def test_a_deadline_in_the_past_returns_at_once():
    pacer = Pacer(None)
    assert pacer.wait_until(_replay.monotonic() - 1.0) is True
    assert pacer.sleeps == pacer.spins == 0


@pytest.mark.parametrize("bad", [-1e-6, float("nan")])
def test_a_negative_or_nan_spin_is_refused(bad):
    with pytest.raises(ValueError, match="spin must be >= 0"):
        Pacer(bad)


def test_the_spin_settings_read_back():
    assert Pacer().spin is None and Pacer().window == _replay.ADAPTIVE_START
    assert Pacer(0).spin == 0.0 and Pacer(0).window == 0.0
    assert Pacer(1e-4).spin == 1e-4 and Pacer(1e-4).window == 1e-4


def test_a_sleep_only_pacer_never_spins_and_a_fixed_one_spins_before_each_deadline():
    sleeper, spinner = Pacer(0.0), Pacer(0.05)
    for pacer in (sleeper, spinner):
        for _ in range(3):
            pacer.wait_until(_replay.monotonic() + 0.002)
    assert sleeper.spins == 0 and sleeper.sleeps == 3
    # the whole 2 ms lies inside a 50 ms window: no sleep at all
    assert spinner.spins == 3 and spinner.sleeps == 0


def test_an_interrupt_set_before_the_wait_returns_false_at_once():
    stop = threading.Event()
    stop.set()
    assert Pacer(None).wait_until(_replay.monotonic() + 60, stop) is False


def test_an_interrupt_set_during_a_long_wait_ends_it():
    stop = threading.Event()
    started = threading.Event()
    got = []

    def wait():
        started.set()
        got.append(Pacer(None).wait_until(_replay.monotonic() + 60, stop))

    t = threading.Thread(target=wait)
    t.start()
    started.wait(5)
    stop.set()
    t.join(5)
    assert got == [False]


def test_an_adaptive_pacer_in_a_real_time_thread_only_sleeps():
    from ctlwire.tcs.server import use_realtime_scheduling
    got = []

    def run():
        if not use_realtime_scheduling():
            got.append(None)
            return
        pacer = Pacer(None)
        for _ in range(20):
            pacer.wait_until(_replay.monotonic() + 100e-6)
        got.append(pacer)

    t = threading.Thread(target=run)  # the policy dies with the thread
    t.start()
    t.join(10)
    if got == [None]:
        pytest.skip("SCHED_FIFO not permitted here")
    # a spinning real-time thread would starve its core
    assert got[0].spins == 0 and got[0].sleeps == 20 and got[0].window == 0.0


def _reference_window(window: float, late: float) -> float:
    """The adaptive window's tracker in plain Python: a 99th-percentile estimate."""
    step, top = _replay.ADAPTIVE_STEP, _replay.ADAPTIVE_MAX
    if late > window:
        return min(top, window + 99 * step)
    return max(0.0, window - step)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=0.01, allow_nan=False), max_size=300))
def test_the_adaptive_window_follows_the_reference_tracker(lates):
    pacer = Pacer(None)
    expect = _replay.ADAPTIVE_START
    for late in lates:
        pacer.learn(late)
        expect = _reference_window(expect, late)
        assert math.isclose(pacer.window, expect, rel_tol=1e-9, abs_tol=1e-12)
        assert 0.0 <= pacer.window <= _replay.ADAPTIVE_MAX


def test_the_adaptive_window_shrinks_when_sleeps_end_on_time_and_grows_when_late():
    on_time, late = Pacer(None), Pacer(None)
    for _ in range(1000):
        on_time.learn(0.0)
        late.learn(1e-3)
    assert on_time.window < _replay.ADAPTIVE_START < late.window == _replay.ADAPTIVE_MAX


def test_the_replay_uses_an_adaptive_pacer_by_default(tmp_path):
    path = write_db(tmp_path / "db.sqlite", [timed_event(1, "a.b", 1.0)])
    with TCSDBReplay(path) as replay:
        assert replay._replayer.spin is None
    with TCSDBReplay(path, spin=0) as replay:
        assert replay._replayer.spin == 0.0
    with pytest.raises(ValueError, match="spin must be >= 0"):
        TCSDBReplay(path, spin=-1)


# -- run_due -------------------------------------------------------------------------------

def _events(times, topic="a.b"):
    # the original time rides along as text: the replay rewrites __data_time
    return [timed_event(i + 1, topic, t, orig=repr(t)) for i, t in enumerate(times)]


def _t(topic, event):
    return float(event["orig"])


def test_every_event_is_delivered_once_in_order(tmp_path):
    path = write_db(tmp_path / "db.sqlite", _events([0.001 * i for i in range(40)]))
    got = []
    with TCSDBReplay(path, speedup=1.0) as replay:
        n = replay.run_due(_t, got.extend)
        assert n == 40 and replay.stats.sent == replay.stats.delivered == 40
        assert replay.stats.timed == 40
    assert got == sorted(got) and len(set(got)) == 40


def test_no_item_is_delivered_before_its_deadline(tmp_path):
    times = [0.0, 0.004, 0.004, 0.01, 0.011, 0.03]
    path = write_db(tmp_path / "db.sqlite", _events(times))
    seen = []
    with TCSDBReplay(path, speedup=1.0) as replay:
        rep = replay._replayer

        def deliver(items):
            now = _replay.monotonic()
            seen.extend((rep.start_mono + t, now) for t in items)

        replay.run_due(_t, deliver)
    assert len(seen) == len(times)
    for deadline, at in seen:
        assert at >= deadline


def test_events_due_together_after_a_gap_go_in_one_batch(tmp_path):
    path = write_db(tmp_path / "db.sqlite", _events([0.0, 0.02, 0.02, 0.02]))
    batches = []
    with TCSDBReplay(path, speedup=1.0) as replay:
        replay.run_due(_t, batches.append)
    assert batches == [[0.0], [0.02, 0.02, 0.02]]


def test_behind_schedule_the_events_already_due_go_in_one_batch(tmp_path):
    # one event a millisecond; the first hand-over takes 30 ms: the ~30 events due
    # meanwhile are prepared and handed over together, not one wait-and-deliver each
    path = write_db(tmp_path / "db.sqlite", _events([0.001 * i for i in range(100)]))
    batches = []
    with TCSDBReplay(path, speedup=1.0) as replay:
        rep = replay._replayer

        def deliver(items):
            now = _replay.monotonic()
            assert all(rep.start_mono + t <= now for t in items)  # none early
            batches.append(items)
            if len(batches) == 1:
                time.sleep(0.03)

        assert replay.run_due(_t, deliver) == 100
    assert [t for b in batches for t in b] == [0.001 * i for i in range(100)]
    assert batches[0] == [0.0]
    assert len(batches[1]) >= 20, [len(b) for b in batches[:5]]


def test_unpaced_events_go_in_batches_of_up_to_64(tmp_path):
    path = write_db(tmp_path / "db.sqlite", _events([float(i) for i in range(150)]))
    batches = []
    with TCSDBReplay(path, speedup=INF) as replay:
        assert replay.run_due(_t, batches.append) == 150
        assert replay.stats.timed == 0  # unpaced: nothing to be late for
    assert [len(b) for b in batches] == [64, 64, 22]
    assert [t for b in batches for t in b] == [float(i) for i in range(150)]


def test_an_event_prepared_as_none_is_neither_delivered_nor_counted(tmp_path):
    path = write_db(tmp_path / "db.sqlite", _events([0.0, 0.001, 0.002, 0.003]))
    got = []
    with TCSDBReplay(path, speedup=1.0) as replay:
        n = replay.run_due(lambda topic, event: None if _t(topic, event) == 0.001 else _t(topic, event),
                           got.extend)
        assert n == 3 and replay.stats.sent == 3
    assert got == [0.0, 0.002, 0.003]


def test_a_limit_stops_after_that_many(tmp_path):
    path = write_db(tmp_path / "db.sqlite", _events([0.0001 * i for i in range(20)]))
    got = []
    with TCSDBReplay(path, speedup=1.0) as replay:
        assert replay.run_due(_t, got.extend, limit=5) == 5
    assert len(got) == 5


def test_an_interrupt_ends_the_pass_during_a_long_wait(tmp_path):
    path = write_db(tmp_path / "db.sqlite", _events([0.0, 600.0]))
    stop = threading.Event()
    got = []

    def deliver(items):
        got.extend(items)
        stop.set()  # the next event is ten minutes away

    with TCSDBReplay(path, speedup=1.0) as replay:
        assert replay.run_due(_t, deliver,
                              interrupt=stop) == 1
    assert got == [0.0]


def test_the_first_event_is_not_late_for_being_prepared(tmp_path):
    path = write_db(tmp_path / "db.sqlite", _events([0.0, 0.001]))
    burn = []

    def prepare(topic, event):
        if not burn:  # a slow first preparation: the clock starts after it
            t_end = _replay.monotonic() + 0.05
            while _replay.monotonic() < t_end:
                burn.append(1)
        return _t(topic, event)

    with TCSDBReplay(path, speedup=1.0) as replay:
        replay.run_due(prepare, lambda items: None)
        assert replay.stats.lateness_max < 0.05


# -- freeze_gc ------------------------------------------------------------------------------

def test_freeze_gc_puts_what_is_alive_out_of_the_collectors_reach():
    try:
        freeze_gc()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


# -- sorted replays of recordings written in time order ------------------------------------

def test_a_sorted_replay_of_a_database_already_in_time_order_reads_sequentially(tmp_path):
    in_order = write_db(tmp_path / "a.sqlite", _events([0.0, 1.0, 1.0, 2.0]))
    shuffled = write_db(tmp_path / "b.sqlite", _events([0.0, 2.0, 1.0, 3.0]))
    with TCSDBReplay(in_order, sort_by="__data_time", speedup=INF) as replay:
        assert replay._replayer.plan == "merge"
        assert [_t(None, e) for e in _events_of(replay)] == [0.0, 1.0, 1.0, 2.0]
    with TCSDBReplay(shuffled, sort_by="__data_time", speedup=INF) as replay:
        assert replay._replayer.plan == "join"
        assert [_t(None, e) for e in _events_of(replay)] == [0.0, 1.0, 2.0, 3.0]


def _events_of(replay):
    import json
    return [json.loads(m[1]) for m in replay if m is not None]
