"""Sampling strategies on a real asyncio loop, fed by real sensor updates.

Timing checks allow an order of magnitude of slack: they tell "sent at once" from
"sent after the period", never measure speed.
"""
from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings, strategies as st

from ctlwire.katcp import Sensor
from ctlwire.katcp.sampling import (SampleAuto, SampleDifferential, SampleDifferentialRate,
                                    SampleEvent, SampleEventRate, SampleNone, SamplePeriod,
                                    SampleStrategy)


class Sink:
    """Inform callback that records (loop time, reading)."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.got = []

    def __call__(self, sensor, reading):
        self.got.append((self.loop.time(), reading))

    @property
    def values(self):
        return [r.value for _, r in self.got]

    async def wait_for(self, count, timeout=5.0):
        deadline = self.loop.time() + timeout
        while len(self.got) < count:
            if self.loop.time() > deadline:
                raise AssertionError(f"only {len(self.got)} of {count} informs in {timeout} s")
            await asyncio.sleep(0.005)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_get_strategy_by_name():
    async def main():
        s = Sensor.integer("i")
        for name, cls in [("none", SampleNone), ("auto", SampleAuto),
                          ("event", SampleEvent), ("period", SamplePeriod),
                          ("differential", SampleDifferential),
                          ("event-rate", SampleEventRate),
                          ("differential-rate", SampleDifferentialRate)]:
            params = {"period": ["1"], "differential": ["2"], "event-rate": ["1", "2"],
                      "differential-rate": ["1", "1", "2"]}.get(name, [])
            assert type(SampleStrategy.get_strategy(name, print, s, *params)) is cls
    run(main())


def test_unknown_strategy_is_a_value_error():
    with pytest.raises(ValueError, match="Unknown sampling strategy 'sometimes'"):
        SampleStrategy.get_strategy(b"sometimes", print, Sensor.integer("i"))


@pytest.mark.parametrize("name, params", [
    ("none", ["1"]), ("auto", ["1"]), ("event", ["1"]), ("period", []),
    ("period", ["0"]), ("period", ["-1"]), ("period", ["abc"]), ("differential", []),
    ("differential", ["0"]), ("event-rate", ["2", "1"]), ("event-rate", ["1"]),
    ("differential-rate", ["1", "2"]),
])
def test_bad_parameters_are_refused(name, params):
    with pytest.raises(ValueError):
        SampleStrategy.get_strategy(name, print, Sensor.float("f"), *params)


def test_differential_only_for_numeric_sensors():
    with pytest.raises(ValueError, match="only valid for"):
        SampleStrategy.get_strategy("differential", print, Sensor.string("s"), "1")


def test_formatted_sampling_echoes_parameters():
    strategy = SampleStrategy.get_strategy("event-rate", print, Sensor.float("f"),
                                           b"0.5", b"10")
    assert strategy.get_sampling_formatted() == (b"event-rate", [b"0.5", b"10"])


def test_none_sends_nothing():
    async def main():
        sink = Sink()
        s = Sensor.integer("i")
        strategy = SampleNone(sink, s)
        strategy.start()
        s.set_value(1)
        await asyncio.sleep(0.05)
        assert sink.got == []
    run(main())


def test_auto_sends_current_value_then_every_update():
    async def main():
        sink = Sink()
        s = Sensor.integer("i", default=7)
        strategy = SampleAuto(sink, s)
        strategy.start()
        s.set_value(7)
        s.set_value(8)
        assert sink.values == [7, 7, 8]
        strategy.cancel()
        s.set_value(9)
        assert sink.values == [7, 7, 8]
    run(main())


def test_event_sends_only_changes():
    async def main():
        sink = Sink()
        s = Sensor.integer("i", default=1)
        SampleEvent(sink, s).start()
        s.set_value(1, Sensor.UNKNOWN)  # same value and status as the initial reading
        s.set_value(1, Sensor.NOMINAL)  # status change
        s.set_value(2)
        s.set_value(2)
        assert [(r.status, r.value) for _, r in sink.got] == [
            (Sensor.UNKNOWN, 1), (Sensor.NOMINAL, 1), (Sensor.NOMINAL, 2)]
    run(main())


def test_differential_sends_when_change_exceeds_threshold():
    async def main():
        sink = Sink()
        s = Sensor.float("f", default=0.0, initial_status=Sensor.NOMINAL)
        SampleDifferential(sink, s, "1.0").start()
        for v in (0.5, 0.9, 1.5, 2.0, 2.6):
            s.set_value(v)
        s.set_value(2.6, Sensor.WARN)
        assert sink.values == [0.0, 1.5, 2.6, 2.6]
    run(main())


def test_period_sends_at_once_then_on_a_fixed_grid():
    async def main():
        sink = Sink()
        s = Sensor.integer("i", default=3)
        strategy = SamplePeriod(sink, s, "0.05")
        t0 = sink.loop.time()
        strategy.start()
        assert len(sink.got) == 1 and sink.got[0][0] - t0 < 0.05
        await sink.wait_for(6)
        strategy.cancel()
        times = [t for t, _ in sink.got]
        # Five periods of 50 ms: at least 0.25 s, and generously less than 10 periods each.
        assert times[5] - times[0] >= 0.25 - 0.01
        assert times[5] - times[0] < 2.5
        count = len(sink.got)
        await asyncio.sleep(0.15)
        assert len(sink.got) == count
    run(main())


def test_period_sends_current_value_not_each_update():
    async def main():
        sink = Sink()
        s = Sensor.integer("i", default=0)
        strategy = SamplePeriod(sink, s, "0.05")
        strategy.start()
        for v in range(1, 100):
            s.set_value(v)
        await sink.wait_for(2)
        strategy.cancel()
        assert sink.values[:2] == [0, 99]
    run(main())


def test_event_rate_limits_to_one_per_shortest_period():
    async def main():
        sink = Sink()
        s = Sensor.integer("i", default=0)
        strategy = SampleEventRate(sink, s, "0.2", "100")
        strategy.start()
        for v in range(1, 50):
            s.set_value(v)
        assert sink.values == [0]
        await sink.wait_for(2)
        strategy.cancel()
        # The held-back change is sent at the end of the shortest period, with the
        # latest value.
        assert sink.values == [0, 49]
        assert sink.got[1][0] - sink.got[0][0] >= 0.2 - 0.01
    run(main())


def test_event_rate_resends_after_longest_period():
    async def main():
        sink = Sink()
        s = Sensor.integer("i", default=5)
        strategy = SampleEventRate(sink, s, "0", "0.05")
        strategy.start()
        await sink.wait_for(3)
        strategy.cancel()
        assert sink.values[:3] == [5, 5, 5]
        assert sink.got[2][0] - sink.got[0][0] >= 0.1 - 0.01
    run(main())


def test_differential_rate_needs_the_difference_and_respects_rate():
    async def main():
        sink = Sink()
        s = Sensor.integer("i", default=0, initial_status=Sensor.NOMINAL)
        strategy = SampleDifferentialRate(sink, s, "5", "0", "100")
        strategy.start()
        s.set_value(3)
        s.set_value(6)
        s.set_value(8)
        s.set_value(12)
        strategy.cancel()
        assert sink.values == [0, 6, 12]
    run(main())


def test_cancel_stops_timers():
    async def main():
        sink = Sink()
        s = Sensor.integer("i")
        strategy = SamplePeriod(sink, s, "0.01")
        strategy.start()
        strategy.cancel()
        await asyncio.sleep(0.1)
        assert len(sink.got) == 1
    run(main())


def test_failing_callback_is_logged_not_raised(caplog):
    async def main():
        def broken(sensor, reading):
            raise RuntimeError("boom")
        s = Sensor.integer("i")
        SampleAuto(broken, s).start()
        s.set_value(1)
    run(main())
    assert "boom" in caplog.text


# -- property tests against a tiny reference model --------------------------------------------
_readings = st.lists(st.tuples(st.integers(-5, 5), st.sampled_from([Sensor.NOMINAL,
                                                                    Sensor.WARN])),
                     max_size=40)


def _reference(kind, threshold, initial, updates):
    """What event / differential must send, written as plainly as possible."""
    sent = [initial]
    for value, status in updates:
        last_value, last_status = sent[-1]
        if kind == "event":
            changed = (value, status) != (last_value, last_status)
        else:
            changed = status != last_status or abs(value - last_value) > threshold
        if changed:
            sent.append((value, status))
    return sent


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["event", "differential", "differential-rate"]),
       threshold=st.integers(1, 3), updates=_readings)
def test_change_driven_strategies_match_reference(kind, threshold, updates):
    loop = asyncio.new_event_loop()
    try:
        got = []
        sensor = Sensor.integer("i", default=0, initial_status=Sensor.NOMINAL)
        params = {"event": [], "differential": [str(threshold)],
                  "differential-rate": [str(threshold), "0", "1e9"]}[kind]
        strategy = SampleStrategy.get_strategy(
            kind, lambda s, r: got.append((r.value, r.status)), sensor, *params, loop=loop)
        strategy.start(observe=True)
        for value, status in updates:
            sensor.set_value(value, status)
        strategy.cancel()
    finally:
        loop.close()
    ref_kind = "event" if kind == "event" else "differential"
    assert got == _reference(ref_kind, threshold, (0, Sensor.NOMINAL), updates)
