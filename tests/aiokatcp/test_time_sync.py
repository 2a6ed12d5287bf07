"""Clock-health sensors from adjtimex(2), checked against aiokatcp's reading of it."""
import sys

import pytest
from aiokatcp import adjtimex as reference

from ctlwire import aiokatcp as ck
from ctlwire.aiokatcp import time_sync

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="adjtimex is Linux's")


@linux
def test_adjtimex_reads_what_aiokatcp_reads():
    state, timex = time_sync.get_adjtimex()
    ref_state, ref_timex = reference.get_adjtimex()
    assert state == ref_state
    for field in ("maxerror", "esterror", "status", "tick", "tai"):
        # maxerror grows by 500 us/s while unsynchronised: allow a second's worth
        assert abs(getattr(timex, field) - getattr(ref_timex, field)) <= 500, field


@linux
def test_updater_sets_the_sensors():
    sensors = {"state": ck.Sensor(ck.ClockState, "clock.state"),
               "maxerror": ck.Sensor(float, "clock.maxerror"),
               "esterror": ck.Sensor(float, "clock.esterror")}
    time_sync.TimeSyncUpdater(sensors).update()
    state, timex = time_sync.get_adjtimex()
    assert sensors["state"].value is ck.ClockState(state)
    assert abs(sensors["maxerror"].value - timex.maxerror * 1e-6) < 1.0
    assert sensors["esterror"].status is ck.Sensor.Status.NOMINAL
    assert sensors["state"].timestamp > 1e9


def test_unknown_keys_are_refused():
    with pytest.raises(KeyError):
        ck.TimeSyncUpdater({"jitter": ck.Sensor(float, "x")})


def test_without_adjtimex_the_sensors_go_inactive(monkeypatch):
    def missing():
        raise NotImplementedError("not Linux")

    monkeypatch.setattr(time_sync, "get_adjtimex", missing)
    s = ck.Sensor(float, "clock.maxerror", default=1.0)
    ck.TimeSyncUpdater({"maxerror": s}).update()
    assert s.status is ck.Sensor.Status.INACTIVE and s.value == 1.0
