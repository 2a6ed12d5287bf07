"""The I/O-free mirror of a device (ctlwire.katcp.mirror): plain calls, no sockets."""
from ctlwire.katcp.mirror import (Action, DeviceMirror, SensorInfo, Subscribed, SyncState)


def info(name, description="d", type_name="integer", *params):
    return SensorInfo(name, description, "", type_name, tuple(params))


def synced_mirror(*names, watch=True, **kwargs):
    states = []
    m = DeviceMirror(on_state=states.append, **kwargs)
    m.connected()
    assert m.next_action() == Action("sensor-list")
    change = m.sensor_list([info(n) for n in names])
    assert [i.name for i in change.added] == list(names)
    if watch:
        for n in names:
            m.watch(n, "w")
        action = m.next_action()
        assert action == Action("sample", tuple(sorted(names)), "auto")
        m.sampling_done(action.names, "auto")
    assert m.next_action() is None
    return m, states


def test_connect_learn_subscribe_and_sync():
    m, states = synced_mirror("b", "a")
    assert states == [SyncState.SYNCING, SyncState.SYNCED]
    assert all(s.subscribed is Subscribed.YES for s in m.sensors.values())


def test_sensor_status_updates_readings_and_ignores_unknown_sensors():
    m, _ = synced_mirror("a")
    s = m.sensor_status(10.0, "a", "nominal", b"5")
    assert s.reading.value == b"5" and s.reading.timestamp == 10.0
    assert m.sensor_status(11.0, "zz", "nominal", b"1") is None


def test_unwatching_unsubscribes_and_drops_the_reading():
    m, states = synced_mirror("a", "b")
    m.unwatch("a", "w")
    assert m.state is SyncState.SYNCING
    assert m.next_action() == Action("sample", ("a",), "none")
    m.sampling_done(["a"], "none")
    assert m.next_action() is None and m.state is SyncState.SYNCED
    assert m.sensors["a"].subscribed is Subscribed.NO


def test_interface_change_relearns_and_reports_differences():
    m, states = synced_mirror("a", "b", "c")
    generation = m.list_generation
    m.interface_changed(b"sensor-list")
    assert m.state is SyncState.SYNCING and m.next_action() == Action("sensor-list")
    # a list fetched before the change is applied, but a fresh one is asked for
    change = m.sensor_list([info("a"), info("b"), info("c"), info("e")], generation)
    assert [i.name for i in change.added] == ["e"]
    assert m.next_action() == Action("sensor-list")
    change = m.sensor_list([info("a"), info("b", "new description"), info("d")],
                           m.list_generation)
    assert [i.name for i in change.added] == ["d"]
    assert [(old.description, new.description) for old, new in change.changed] == [
        ("d", "new description")]
    assert [i.name for i in change.removed] == ["c", "e"]
    # b changed: whether it is sampled is unknown, so it is set again
    assert m.sensors["b"].subscribed is Subscribed.UNKNOWN
    assert m.next_action() == Action("sample", ("b",), "auto")
    m.sampling_done(["b"], "auto")
    assert m.next_action() is None


def test_disconnect_and_reconnect_resubscribes_everything():
    m, states = synced_mirror("a", "b")
    m.disconnected()
    assert m.next_action() is None and m.state is SyncState.DISCONNECTED
    m.connected()
    assert m.next_action() == Action("sensor-list")
    m.sensor_list([info("a"), info("b")])
    assert m.next_action() == Action("sample", ("a", "b"), "auto")
    assert states == [SyncState.SYNCING, SyncState.SYNCED, SyncState.DISCONNECTED,
                      SyncState.SYNCING]


def test_requests_are_learnt_from_help_when_tracked():
    m = DeviceMirror(track_requests=True)
    m.connected()
    assert m.next_action() == Action("sensor-list")
    m.sensor_list([])
    assert m.next_action() == Action("help")
    change = m.help([("halt", "Halt."), ("watchdog", "Ping.")])
    assert change.added == ["halt", "watchdog"]
    assert m.next_action() is None
    m.interface_changed(b"request-list")
    assert m.next_action() == Action("help")
    change = m.help([("halt", "Stop now."), ("reboot", "Reboot.")])
    assert change.added == ["reboot"] and change.removed == ["watchdog"]
    assert change.changed == [("halt", "Stop now.")]


def test_failed_sensor_list_is_asked_again_and_close_forgets():
    m = DeviceMirror()
    m.connected()
    m.sensor_list_failed()
    assert m.next_action() == Action("sensor-list")
    m.close()
    assert m.state is SyncState.CLOSED and m.next_action() is None and not m.sensors
    m.connected()
    assert m.state is SyncState.CLOSED
