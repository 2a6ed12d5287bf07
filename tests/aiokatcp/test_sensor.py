"""Sensors, sensor sets, samplers (under a simulated-time loop) and aggregates."""
from __future__ import annotations

import asyncio
import enum
import gc

import async_solipsism
import pytest

from ctlwire import aiokatcp as ck
from ctlwire.aiokatcp import core


@pytest.fixture
def loop():
    """A loop with simulated time: sleeps take no wall-clock time."""
    loop = async_solipsism.EventLoop()
    yield loop
    loop.close()


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


def test_sensor_defaults_and_set_value():
    s = ck.Sensor(int, "n", "A number", "V")
    assert (s.value, s.status, s.type_name, s.params) == (0, ck.Sensor.Status.UNKNOWN, "integer", [])
    e = ck.Sensor(Level, "level")
    assert e.value is Level.LOW and e.params == [b"low", b"high"]
    assert ck.Sensor(ck.Address, "a").value == ck.Address.parse(b"0.0.0.0")
    s.set_value(5, timestamp=12.0)
    assert s.reading == ck.Reading(12.0, ck.Sensor.Status.NOMINAL, 5)
    s.value = 6
    assert s.value == 6 and s.status is ck.Sensor.Status.NOMINAL
    with pytest.raises(TypeError):
        s.set_value("six")
    t = ck.Sensor(ck.Timestamp, "t")
    t.value = 3
    assert isinstance(t.value, ck.Timestamp) and t.value == 3.0
    f = ck.Sensor(float, "f", status_func=lambda v: ck.Sensor.Status.ERROR if v > 1 else
                  ck.Sensor.Status.NOMINAL)
    f.value = 2.0
    assert f.status is ck.Sensor.Status.ERROR
    assert ck.Sensor.Status.WARN.valid_value() and not ck.Sensor.Status.FAILURE.valid_value()


def test_observers_classic_and_delta():
    s = ck.Sensor(int, "n")
    classic, delta = [], []

    def on_update(sensor, reading):
        classic.append(reading.value)

    def on_delta(sensor, reading, *, old_reading):
        delta.append((old_reading.value, reading.value))

    s.attach(on_update)
    s.attach(on_delta)
    s.value = 1
    s.value = 2
    s.detach(on_update)
    s.detach(on_delta)
    s.value = 3
    assert classic == [1, 2] and delta == [(0, 1), (1, 2)]


def test_sensor_set_mapping_and_callbacks():
    sensors = ck.SensorSet()
    added, removed = [], []
    sensors.add_add_callback(added.append)
    sensors.add_remove_callback(removed.append)
    a, b, a2 = ck.Sensor(int, "a"), ck.Sensor(int, "b"), ck.Sensor(int, "a")
    sensors.add(a)
    sensors.add(b)
    sensors.add(a)  # already there: nothing happens
    assert added == [a, b] and list(sensors) == ["a", "b"] and len(sensors) == 2
    sensors.add(a2)  # replaces a
    assert removed == [a] and sensors["a"] is a2 and a not in sensors and "a" in sensors
    with pytest.raises(KeyError):
        sensors.remove(a)
    sensors.discard(a)
    assert sensors.pop("b") is b and sensors.pop("b", None) is None
    with pytest.raises(KeyError):
        sensors.pop("b")
    assert sensors.get("zz") is None and sensors.copy() == {"a": a2}
    sensors.clear()
    assert not sensors and removed == [a, b, a2]
    sensors.remove_add_callback(added.append)
    sensors.add(b)
    assert added[-1] is a2


def _sampler(loop, s, strategy, *args):
    sent = []
    sampler = ck.SensorSampler.factory(
        s, lambda sensor, reading: sent.append((round(loop.time(), 3), reading.value)),
        loop, strategy, *args)
    return sampler, sent


def test_period_reports_on_a_fixed_grid(loop):
    async def main():
        s = ck.Sensor(int, "n")
        start = loop.time()
        sampler, sent = _sampler(loop, s, ck.SensorSampler.Strategy.PERIOD, b"0.5")
        await asyncio.sleep(0.3)
        s.value = 1
        s.value = 2
        await asyncio.sleep(1.0)
        sampler.close()
        assert sent == [(start, 0), (start + 0.5, 2), (start + 1.0, 2)]
        assert sampler.parameters() == (ck.SensorSampler.Strategy.PERIOD, 0.5)
    loop.run_until_complete(main())


def test_event_rate_holds_back_changes_and_repeats_when_quiet(loop):
    async def main():
        s = ck.Sensor(int, "n")
        t0 = loop.time()
        sampler, sent = _sampler(loop, s, ck.SensorSampler.Strategy.EVENT_RATE, b"1", b"5")
        await asyncio.sleep(0.1)
        s.value = 1      # too soon: held back to t0 + 1
        s.value = 2      # the latest value is the one sent
        await asyncio.sleep(2)
        s.value = 3      # long enough since the last: sent at once
        await asyncio.sleep(6)   # nothing changes: repeated after `longest`
        sampler.close()
        assert sent == [(t0, 0), (t0 + 1, 2), (t0 + 2.1, 3), (t0 + 7.1, 3)]
    loop.run_until_complete(main())


def test_differential_and_differential_rate(loop):
    async def main():
        s = ck.Sensor(float, "x", initial_status=ck.Sensor.Status.NOMINAL)
        t0 = loop.time()
        sampler, sent = _sampler(loop, s, ck.SensorSampler.Strategy.DIFFERENTIAL, b"1.5")
        for v in (1.0, 1.6, 3.0, 3.1):
            s.value = v
        s.set_value(3.1, status=ck.Sensor.Status.WARN)  # a status change is reported
        sampler.close()
        assert [v for _, v in sent] == [0.0, 1.6, 3.1]
        sampler, sent = _sampler(loop, s, ck.SensorSampler.Strategy.DIFFERENTIAL_RATE,
                                 b"1", b"0.5", b"10")
        s.value = 10.0
        await asyncio.sleep(1)
        assert sent == [(t0, 3.1), (t0 + 0.5, 10.0)]
        assert sampler.parameters() == (ck.SensorSampler.Strategy.DIFFERENTIAL_RATE,
                                        1.0, 0.5, 10.0)
        sampler.close()
    loop.run_until_complete(main())


def test_auto_strategy_follows_the_sensor(loop):
    async def main():
        s = ck.Sensor(int, "n", auto_strategy=ck.SensorSampler.Strategy.PERIOD,
                      auto_strategy_parameters=[ck.Timestamp(2)])
        t0 = loop.time()
        sampler, sent = _sampler(loop, s, ck.SensorSampler.Strategy.AUTO)
        s.value = 1
        await asyncio.sleep(4.5)
        sampler.close()
        assert sent == [(t0, 0), (t0 + 2, 1), (t0 + 4, 1)]
        assert sampler.parameters() == (ck.SensorSampler.Strategy.AUTO,)
        assert ck.SensorSampler.factory(s, None, loop, ck.SensorSampler.Strategy.NONE) is None
    loop.run_until_complete(main())


def test_sampler_observer_set_later_sends_the_current_reading(loop):
    s = ck.Sensor(int, "n", default=4)
    sampler = ck.SensorSampler.factory(s, None, loop, ck.SensorSampler.Strategy.EVENT)
    s.value = 5
    sent = []
    sampler.observer = lambda sensor, reading: sent.append(reading.value)
    s.value = 6
    sampler.close()
    s.value = 7
    assert sent == [5, 6]


def test_factory_checks_arguments(loop):
    s = ck.Sensor(str, "s")
    with pytest.raises(TypeError):
        ck.SensorSampler.factory(s, None, loop, ck.SensorSampler.Strategy.DIFFERENTIAL, b"1")
    n = ck.Sensor(int, "n")
    with pytest.raises(ValueError):
        ck.SensorSampler.factory(n, None, loop, ck.SensorSampler.Strategy.DIFFERENTIAL, b"1.5")
    with pytest.raises(ValueError, match="expected 2"):
        ck.SensorSampler.factory(n, None, loop, ck.SensorSampler.Strategy.EVENT_RATE, b"1")


class Total(ck.SimpleAggregateSensor[int]):
    def __init__(self, target):
        self.total = 0
        super().__init__(target, int, "total", "Sum of the others")

    def filter_aggregate(self, sensor):
        return sensor is not self and sensor.stype is int

    def aggregate_add(self, sensor, reading):
        self.total += reading.value
        return True

    def aggregate_remove(self, sensor, reading):
        self.total -= reading.value
        return True

    def aggregate_compute(self):
        return ck.Sensor.Status.NOMINAL, self.total


def test_simple_aggregate_follows_its_set():
    sensors = ck.SensorSet()
    a = ck.Sensor(int, "a", default=2, initial_status=ck.Sensor.Status.NOMINAL)
    b = ck.Sensor(int, "b", default=5)  # UNKNOWN: not counted at construction
    sensors.add(a)
    sensors.add(b)
    sensors.add(ck.Sensor(str, "ignored"))
    total = Total(sensors)
    sensors.add(total)
    assert total.value == 2
    a.set_value(10, timestamp=total.timestamp + 100)
    assert total.value == 10 and total.timestamp == a.timestamp
    sensors.add(ck.Sensor(int, "c", default=1))
    assert total.value == 11
    del sensors["a"]
    assert total.value == 1
    a.value = 1000  # no longer in the set
    assert total.value == 1


class Worst(ck.AggregateSensor[ck.DeviceStatus]):
    def update_aggregate(self, updated_sensor, reading, old_reading):
        statuses = [s.status for s in self.target.values() if self.filter_aggregate(s)]
        worst = max(statuses, default=ck.Sensor.Status.NOMINAL)
        value = (ck.DeviceStatus.OK if worst <= ck.Sensor.Status.NOMINAL else
                 ck.DeviceStatus.DEGRADED if worst == ck.Sensor.Status.WARN else
                 ck.DeviceStatus.FAIL)
        return ck.Reading(0.0 if reading is None else reading.timestamp,
                          ck.Sensor.Status.NOMINAL, value)


def test_aggregate_sensor_and_device_status():
    sensors = ck.SensorSet()
    x = ck.Sensor(int, "x", initial_status=ck.Sensor.Status.NOMINAL)
    sensors.add(x)
    worst = Worst(sensors, ck.DeviceStatus, "device-status", "Worst status")
    sensors.add(worst)
    assert worst.value is ck.DeviceStatus.OK and worst.params == [b"ok", b"degraded", b"fail"]
    x.set_value(1, ck.Sensor.Status.WARN)
    assert worst.value is ck.DeviceStatus.DEGRADED
    x.set_value(1, ck.Sensor.Status.ERROR)
    assert worst.value is ck.DeviceStatus.FAIL


def test_aggregate_does_not_keep_itself_alive():
    sensors = ck.SensorSet()
    x = ck.Sensor(int, "x")
    sensors.add(x)
    total = Total(sensors)
    del total
    gc.collect()
    x.value = 3  # the dead aggregate is not called
    sensors.add(ck.Sensor(int, "y"))
    assert not sensors._add_callbacks


def test_server_samples_on_a_simulated_clock(loop):
    """A whole server and client on the simulated-time loop (in-memory sockets)."""
    from .conftest import make_device

    async def main():
        server = make_device(ck)("127.0.0.1", 7147)
        await server.start()
        client = await ck.Client.connect("127.0.0.1", 7147)
        got = []
        client.add_inform_callback(
            "sensor-status", lambda ts, n, name, st, value: got.append((loop.time(), value)))
        t0 = loop.time()
        await client.request("sensor-sampling", "counter", "period", 10)
        await asyncio.sleep(35)
        assert [round(t - t0) for t, _ in got] == [0, 10, 20, 30]
        reply, _ = await client.request("sleep", 3600)  # an hour, at once
        assert reply == [b"awake"]
        client.close()
        await client.wait_closed()
        await server.stop()
    loop.run_until_complete(asyncio.wait_for(main(), 10000))


def test_observer_with_a_positional_old_reading_gets_it():
    s = ck.Sensor(int, "n")
    seen = []

    def change_aware(sensor, reading, old_reading):
        seen.append((old_reading.value, reading.value))

    s.attach(change_aware)
    s.value = 3
    assert seen == [(0, 3)]


def test_unclosed_sampler_warns(loop):
    s = ck.Sensor(int, "n")
    sampler = ck.SensorSampler.factory(s, lambda sensor, reading: None, loop,
                                       ck.SensorSampler.Strategy.EVENT)
    with pytest.warns(ResourceWarning, match="unclosed SensorSampler"):
        del s, sampler
        for _ in range(3):
            gc.collect()


def test_aggregate_and_removed_sensors_can_be_collected():
    import weakref
    sensors = ck.SensorSet()
    kept = ck.Sensor(int, "kept")
    sensors.add(kept)
    total = Total(sensors)
    dead = weakref.ref(total)
    del total
    for _ in range(3):
        gc.collect()
    assert dead() is None
    kept.value = 1  # no error from the collected aggregate's observer
    live = Total(sensors)
    gone = ck.Sensor(int, "gone")
    sensors.add(gone)
    sensors.remove(gone)
    dead_sensor = weakref.ref(gone)
    del gone
    for _ in range(3):
        gc.collect()
    assert dead_sensor() is None and live.value == 1
