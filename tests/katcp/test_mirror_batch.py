"""The batch methods of DeviceMirror against the one-at-a-time ones they stand for.

``sensor_list_informs``, ``sensor_status_informs`` and ``watch_many`` exist for speed (a
sync brings one inform per sensor in a burst) and run compiled loops (``_mirror_ops``);
on any input they must leave the mirror exactly as ``sensor_list``, ``sensor_status``
and ``watch`` do, which are the pure-Python reference.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import pytest

from ctlwire.katcp import _mirror_ops
from ctlwire.katcp.mirror import (DeviceMirror, MirroredSensor, SensorInfo, SensorReading,
                                  Subscribed)

NAMES = [b"a", b"b.c", b"d", b"caf\xc3\xa9", b"\xff"]  # (the last is not UTF-8)
names = st.sampled_from(NAMES)
words = st.sampled_from([b"nominal", b"warn", b"error", b"unknown", b"odd", b"\xfe"])
values = st.binary(max_size=6)
timestamps = st.sampled_from([b"1700000000.5", b"12", b"-1e3", b"inf", b"x", b""])

list_informs = st.lists(
    st.lists(st.one_of(names, st.binary(max_size=5)), min_size=0, max_size=7),
    max_size=8)


@st.composite
def status_informs(draw):
    count = draw(st.integers(0, 3))
    args = [draw(timestamps), b"%d" % count]
    for _ in range(count):
        args += [draw(names), draw(words), draw(values)]
    if draw(st.booleans()):
        args = args[:draw(st.integers(0, len(args)))]  # cut short anywhere
    return args


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def state(mirror: DeviceMirror) -> tuple:
    return (mirror.state, sorted(mirror._need_sampling), mirror.next_action(),
            {name: (s.info, s.reading, s.subscribed, dict(s.watchers))
             for name, s in mirror.sensors.items()})


def synced_pair(known) -> tuple[DeviceMirror, DeviceMirror]:
    pair = []
    for _ in range(2):
        m = DeviceMirror()
        m.connected()
        m.sensor_list([SensorInfo(_text(n), "", "", "integer") for n in known])
        pair.append(m)
    return pair[0], pair[1]


@settings(max_examples=300, deadline=None)
@given(st.lists(names, unique=True), list_informs)
def test_sensor_list_informs_is_sensor_list_of_the_decoded_informs(known, informs):
    batch, reference = synced_pair(known)
    change, bad = batch.sensor_list_informs(informs, batch.list_generation)
    good = [a for a in informs if len(a) >= 4]
    expected = reference.sensor_list(
        [SensorInfo(*(_text(x) for x in a[:4]), tuple(a[4:])) for a in good],
        reference.list_generation)
    assert change == expected
    assert bad == [a for a in informs if len(a) < 4]
    assert state(batch) == state(reference)
    # the compiled loop makes real named tuples and sensors, not look-alikes
    for s in batch.sensors.values():
        assert type(s) is MirroredSensor and type(s.info) is SensorInfo
        assert s.info._asdict()["name"] == s.info.name


@settings(max_examples=300, deadline=None)
@given(st.lists(names, unique=True), st.lists(names), st.lists(status_informs(), max_size=6))
def test_sensor_status_informs_is_sensor_status_of_each_reading(known, watched, informs):
    batch, reference = synced_pair(known)
    for m in (batch, reference):
        for name in watched:
            if _text(name) in m.sensors:
                m.watch(_text(name), "w")
    updated: list = []
    bad = batch.sensor_status_informs(informs, updated)
    expected_bad, expected_updated = [], []
    for args in informs:
        try:
            timestamp = float(args[0])
        except (ValueError, IndexError):
            expected_bad.append(args)
            continue
        for i in range(2, len(args) - 2, 3):
            s = reference.sensor_status(timestamp, _text(args[i]),
                                        args[i + 1].decode("ascii", "replace"), args[i + 2])
            if s is not None:
                expected_updated.append((s.info.name, s.reading))
    assert bad == expected_bad
    assert [(s.info.name, r) for s, r in updated] == expected_updated
    assert all(type(r) is SensorReading and r._fields == SensorReading._fields
               for _, r in updated)
    assert state(batch) == state(reference)


@settings(max_examples=300, deadline=None)
@given(st.lists(names, unique=True),
       st.lists(st.tuples(names, st.sampled_from(list(Subscribed)))),
       st.lists(names), st.sampled_from(["w", "x"]))
def test_watch_many_is_watch_of_each(known, subscribed, watched, watcher):
    batch, reference = synced_pair(known)
    for m in (batch, reference):
        if m.sensors:
            m.watch(next(iter(m.sensors)), "x")  # a sensor someone already watches
        for name, sub in subscribed:
            if _text(name) in m.sensors:
                m.sensors[_text(name)].subscribed = sub
        m.next_action()  # SYNCED where nothing is left to do
    present = [_text(n) for n in watched if _text(n) in batch.sensors]
    batch.watch_many(present, watcher)
    for name in present:
        reference.watch(name, watcher)
    assert state(batch) == state(reference)


def test_mirrored_sensor_behaves_as_the_record_it_replaced():
    info = SensorInfo("a", "d", "u", "integer")
    s = MirroredSensor(info)
    assert (s.info, s.reading, s.subscribed, s.watchers) == (info, None, Subscribed.NO, {})
    reading = SensorReading(1.5, "nominal", b"3")
    t = MirroredSensor(info, reading, Subscribed.YES, {"w": None})
    assert t == MirroredSensor(info, reading, Subscribed.YES, {"w": None})
    assert t != s and s == MirroredSensor(info)
    assert repr(t) == (f"MirroredSensor(info={info!r}, reading={reading!r}, "
                       f"subscribed={Subscribed.YES!r}, watchers={{'w': None}})")
    with pytest.raises(TypeError):
        hash(s)
    with pytest.raises(TypeError):
        t.watchers = ["not a dict"]


def test_the_compiled_loops_refuse_types_that_are_not_the_named_tuples():
    with pytest.raises(TypeError, match="not a named tuple of 5 fields"):
        _mirror_ops.merge_sensor_list_informs([], {}, [], [], set(), tuple, Subscribed.NO,
                                              print)
    with pytest.raises(TypeError, match="not a named tuple of 3 fields"):
        _mirror_ops.apply_status_informs([], {}, set(), None, [], SensorInfo, {},
                                         Subscribed.YES, print)
    mirror = DeviceMirror()
    mirror.sensors["x"] = "not a sensor"
    with pytest.raises(TypeError):
        mirror.sensor_status_informs([[b"1", b"1", b"x", b"nominal", b"1"]])


def test_the_compiled_loops_hold_exactly_the_references_they_keep():
    # the named tuples are filled by hand: a reference too many leaks every value, one
    # too few frees a value still in use
    import gc
    import sys
    value, params = b"value-%d" % id(object()), b"param-%d" % id(object())
    informs = [[b"s%d" % i, b"d", b"u", b"integer", params] for i in range(100)]
    readings = [[b"1.5", b"1", b"s%d" % i, b"nominal", value] for i in range(100)]
    before = sys.getrefcount(value), sys.getrefcount(params)
    mirror = DeviceMirror()
    mirror.connected()
    mirror.sensor_list_informs(informs)
    for _ in range(3):
        assert mirror.sensor_status_informs(readings, []) == []
    assert all(s.reading.value is value and s.info.params == (params,)
               for s in mirror.sensors.values())
    del mirror
    gc.collect()
    assert (sys.getrefcount(value), sys.getrefcount(params)) == before
