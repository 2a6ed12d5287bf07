"""Sensors: types, defaults, statuses, checks, formatting, observers."""
from __future__ import annotations

import threading

import pytest
from hypothesis import given, strategies as st

from ctlwire.katcp import Sensor
from ctlwire.katcp.core import KatcpSyntaxError


class Recorder:
    def __init__(self):
        self.updates = []

    def update(self, sensor, reading):
        self.updates.append((sensor, reading))


def test_type_constants_match_katcp_python():
    assert (Sensor.INTEGER, Sensor.FLOAT, Sensor.BOOLEAN, Sensor.LRU, Sensor.DISCRETE,
            Sensor.STRING, Sensor.TIMESTAMP, Sensor.ADDRESS) == tuple(range(8))
    assert (Sensor.UNKNOWN, Sensor.NOMINAL, Sensor.WARN, Sensor.ERROR, Sensor.FAILURE,
            Sensor.UNREACHABLE, Sensor.INACTIVE) == tuple(range(7))


@pytest.mark.parametrize("make, default, stype", [
    (lambda: Sensor.integer("i"), 0, "integer"),
    (lambda: Sensor.float("f"), 0.0, "float"),
    (lambda: Sensor.boolean("b"), False, "boolean"),
    (lambda: Sensor.lru("l"), Sensor.LRU_NOMINAL, "lru"),
    (lambda: Sensor.discrete("d", params=["x", "y"]), "x", "discrete"),
    (lambda: Sensor.string("s"), "", "string"),
    (lambda: Sensor.timestamp("t"), 0.0, "timestamp"),
    (lambda: Sensor.address("a"), ("0.0.0.0", None), "address"),
])
def test_type_constructors_give_type_and_default(make, default, stype):
    sensor = make()
    assert sensor.stype == stype
    assert sensor.value() == default
    assert sensor.status() == Sensor.UNKNOWN


def test_python_type_shortcuts():
    assert Sensor(int, "x").stype == "integer"
    assert Sensor(float, "x").stype == "float"
    assert Sensor(str, "x").stype == "string"
    assert Sensor(bool, "x").stype == "boolean"


def test_range_excluding_zero_defaults_to_minimum():
    assert Sensor.integer("i", params=[5, 10]).value() == 5


def test_explicit_default_and_initial_status():
    sensor = Sensor.float("f", default=2.5, initial_status=Sensor.NOMINAL)
    assert sensor.read()[1:] == (Sensor.NOMINAL, 2.5)


def test_default_description_mentions_type_and_units():
    assert Sensor.float("temp", unit="degC").description == \
        "Float sensor 'temp' in unit degC"


def test_discrete_needs_values():
    with pytest.raises(ValueError, match="at least one"):
        Sensor.discrete("d")


def test_timestamp_refuses_units():
    with pytest.raises(ValueError, match="units"):
        Sensor.timestamp("t", unit="s")


def test_unknown_type_is_refused():
    with pytest.raises(ValueError, match="unknown sensor type"):
        Sensor(42, "x")


def test_formatted_params():
    assert Sensor.float("f", params=[0.0, 5.0]).formatted_params == [b"0.0", b"5.0"]
    assert Sensor.discrete("d", params=["on", "off"]).formatted_params == [b"on", b"off"]


def test_set_value_sets_reading_with_current_time():
    sensor = Sensor.integer("i")
    sensor.set_value(3, Sensor.WARN, timestamp=12.5)
    assert sensor.read() == (12.5, Sensor.WARN, 3)
    assert sensor.read().value == 3


@pytest.mark.parametrize("make, bad", [
    (lambda: Sensor.integer("i"), "3"),
    (lambda: Sensor.integer("i"), 2.5),
    (lambda: Sensor.float("f"), "x"),
    (lambda: Sensor.boolean("b"), 2),
    (lambda: Sensor.discrete("d", params=["on", "off"]), "maybe"),
    (lambda: Sensor.string("s"), 5),
    (lambda: Sensor.lru("l"), 7),
    (lambda: Sensor.address("a"), "nohost"),
])
def test_set_value_refuses_wrong_values_naming_the_sensor(make, bad):
    sensor = make()
    before = sensor.read()
    with pytest.raises(ValueError, match=repr(sensor.name)):
        sensor.set_value(bad)
    assert sensor.read() is before


def test_set_value_refuses_unknown_status():
    with pytest.raises(ValueError, match="status"):
        Sensor.integer("i").set_value(1, status=99)


def test_read_formatted_per_type():
    cases = [
        (Sensor.integer("i", default=-3), b"-3"),
        (Sensor.float("f", default=0.1), b"0.1"),
        (Sensor.boolean("b", default=True), b"1"),
        (Sensor.lru("l", default=Sensor.LRU_ERROR), b"error"),
        (Sensor.discrete("d", params=["on", "off"], default="off"), b"off"),
        (Sensor.string("s", default="a b"), b"a b"),
        (Sensor.timestamp("t", default=1.25), b"1.250000"),
        (Sensor.address("a", default=("::1", 80)), b"[::1]:80"),
    ]
    for sensor, value in cases:
        sensor.set(10.0, Sensor.NOMINAL, sensor.value())
        assert sensor.read_formatted() == (b"10.000000", b"nominal", value), sensor.name


def test_set_formatted_parses_wire_values():
    sensor = Sensor.float("f")
    sensor.set_formatted(b"5.000000", b"warn", b"2.5")
    assert sensor.read() == (5.0, Sensor.WARN, 2.5)


def test_set_formatted_refuses_unknown_status():
    with pytest.raises(ValueError, match="status"):
        Sensor.float("f").set_formatted(b"5.0", b"weird", b"2.5")


def test_parse_value_needs_bytes():
    assert Sensor.integer("i").parse_value(b"12") == 12
    with pytest.raises(ValueError):
        Sensor.integer("i").parse_value("12")


def test_parse_type_and_params():
    assert Sensor.parse_type("float") == Sensor.FLOAT
    assert Sensor.parse_type(b"discrete") == Sensor.DISCRETE
    with pytest.raises(KatcpSyntaxError):
        Sensor.parse_type("complex")
    assert Sensor.parse_params(Sensor.FLOAT, [b"0.5", b"1.5"]) == [0.5, 1.5]
    assert Sensor.parse_params(Sensor.DISCRETE, [b"on", b"off"]) == ["on", "off"]


def test_observers_get_every_set_until_detached():
    sensor = Sensor.integer("i")
    rec = Recorder()
    sensor.attach(rec)
    sensor.set_value(1)
    sensor.set_value(2)
    sensor.detach(rec)
    sensor.set_value(3)
    assert [r.value for _, r in rec.updates] == [1, 2]
    assert rec.updates[0][0] is sensor


def test_notify_without_argument_sends_current_reading():
    sensor = Sensor.integer("i", default=9)
    rec = Recorder()
    sensor.attach(rec)
    sensor.notify()
    assert rec.updates[0][1] is sensor.read()


def test_reading_is_consistent_across_threads():
    sensor = Sensor.integer("i")
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set() and n < 200000:
            n += 1
            sensor.set(float(n), Sensor.NOMINAL, n)

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(20000):
            ts, _, value = sensor.read()
            assert ts == float(value)
    finally:
        stop.set()
        t.join(10)


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"])))
def test_string_wire_value_escapes_round_trip(text):
    from ctlwire.katcp.core import unescape_argument
    sensor = Sensor.string("s")
    wire = sensor._wire_value(text)
    assert b" " not in wire and b"\n" not in wire
    assert unescape_argument(wire).decode("utf-8") == text


def test_float_subclass_values_are_formatted_as_plain_floats():
    class ReprFloat(float):
        def __repr__(self):
            return "ReprFloat"
    sensor = Sensor.float("f")
    sensor.set_value(ReprFloat(1.5), timestamp=1.0)
    assert sensor.read_formatted()[2] == b"1.5"
    assert sensor._wire_value(ReprFloat(1.5)) == b"1.5"
