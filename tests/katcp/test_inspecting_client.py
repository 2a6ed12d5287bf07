"""InspectingClient against ctlwire's, aiokatcp's and katcp-python's servers over loopback."""
from __future__ import annotations

import importlib.util
import os
import threading

import pytest

from ctlwire.katcp import Sensor
from ctlwire.katcp.inspecting_client import (ClientState, InspectingClient, SensorWaitTimeout)
from ctlwire.katcp.testutils import DeviceTestServer, DeviceTestServerWithTimeoutHints

TIMEOUT = 15.0
PEER_SCRIPT = os.path.join(os.path.dirname(__file__), "_mirror_peer.py")
IMPLS = ["ctlwire", "aiokatcp", "katcp"]


def _load_peer_module():
    spec = importlib.util.spec_from_file_location("_mirror_peer", PEER_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def Peer(impl: str, sensors: int = 0):
    if impl == "katcp":
        pytest.importorskip("katcp")
    return _load_peer_module().Peer(impl, sensors, timeout=TIMEOUT)


@pytest.fixture(params=IMPLS)
def peer(request):
    p = Peer(request.param)
    yield p
    p.kill()


@pytest.fixture
def device():
    server = DeviceTestServer("127.0.0.1", 0)
    server.start(timeout=TIMEOUT)
    yield server
    server.stop(timeout=TIMEOUT)


def inspect(host: str, port: int, **kwargs) -> InspectingClient:
    client = InspectingClient(host, port, timeout=TIMEOUT, **kwargs)
    client.start(timeout=TIMEOUT)
    return client


class Recorder:
    """State callback that keeps every (state, change) and wakes waiters."""

    def __init__(self) -> None:
        self.seen: list = []
        self.cond = threading.Condition()

    def __call__(self, state, change) -> None:
        with self.cond:
            self.seen.append((state, change))
            self.cond.notify_all()

    def wait_for(self, predicate, timeout=TIMEOUT):
        with self.cond:
            assert self.cond.wait_for(lambda: any(predicate(s, c) for s, c in self.seen),
                                      timeout), self.seen


# -- syncing -------------------------------------------------------------------------------

def test_sync_learns_requests_and_sensors_with_states(device):
    rec = Recorder()
    client = InspectingClient(*device.bind_address, timeout=TIMEOUT)
    client.add_state_callback(rec)
    client.start()
    try:
        client.until_synced(TIMEOUT)
        states = [s for s, _ in rec.seen]
        assert states == [ClientState.CONNECTED, ClientState.SYNCING, ClientState.SYNCED]
        change = rec.seen[-1][1]
        assert sorted(change.sensors_added) == sorted(device.sensor_names)
        assert "new-command" in change.requests_added
        assert client.requests["new-command"] == "A new command."
        temp = client.sensor["a.float"]
        assert (temp.type, temp.units, temp.description, temp.params) == (
            "float", "", "A Float.", [-123.4, 123.4])
        assert temp.get_reading() is None  # not sampled yet
        assert temp.read().value == 12.0   # but readable on demand
    finally:
        client.stop(TIMEOUT)
    assert client.state is ClientState.CLOSED


def test_sync_against_each_peer_server(peer):
    client = inspect("127.0.0.1", peer.port)
    try:
        assert {"set", "add-sensor", "remove-sensor", "slow"} <= set(client.requests)
        assert "counter" in client.sensors
        # ?request-timeout-hint where the server offers it (aiokatcp 2.x does not)
        assert client.request_timeout("slow") == (TIMEOUT if peer.impl == "aiokatcp" else 30.0)
        assert client.request_timeout("set") == TIMEOUT
        client.set_sampling_strategy("counter", "event")
        client.until_synced(TIMEOUT)
        client.simple_request("set", "counter", 42)
        assert client.sensor["counter"].wait(42, timeout=TIMEOUT).status == Sensor.NOMINAL
    finally:
        client.stop(TIMEOUT)


def test_sync_of_many_sensors_gives_each_a_first_reading():
    p = Peer("ctlwire", sensors=1000)
    try:
        client = inspect("127.0.0.1", p.port)
        try:
            assert len(client.sensors) == 1001
            names = client.set_sampling_strategies(r"^s\d+$", "auto")
            assert len(names) == 1000
            client.until_synced(TIMEOUT)
            assert all(client.sensor[n].get_value() == 0 for n in names)
        finally:
            client.stop(TIMEOUT)
    finally:
        p.kill()


# -- interface changes and reconnects ----------------------------------------------------------

def test_interface_changed_adds_and_removes_sensors(peer):
    client = inspect("127.0.0.1", peer.port)
    rec = Recorder()
    client.add_state_callback(rec)
    counter = client.sensor["counter"]
    try:
        client.simple_request("add-sensor", "extra")
        client.until_sensor("extra", True, TIMEOUT)
        rec.wait_for(lambda s, c: "extra" in c.sensors_added)
        assert client.sensor["counter"] is counter  # unchanged sensors keep their object
        client.simple_request("remove-sensor", "extra")
        client.until_sensor("extra", False, TIMEOUT)
        rec.wait_for(lambda s, c: "extra" in c.sensors_removed)
    finally:
        client.stop(TIMEOUT)


def test_strategies_come_back_after_a_device_restart(peer):
    client = inspect("127.0.0.1", peer.port)
    rec = Recorder()
    try:
        counter = client.sensor["counter"]
        client.set_sampling_strategy("counter", "event")
        client.until_synced(TIMEOUT)
        client.simple_request("set", "counter", 5)
        counter.wait(5, timeout=TIMEOUT)
        client.add_state_callback(rec)
        peer.restart()  # the new device starts with counter = 0 and no strategies
        rec.wait_for(lambda s, c: s is ClientState.DISCONNECTED)
        client.until_synced(TIMEOUT)
        assert client.sensor["counter"] is counter
        assert counter.wait(0, timeout=TIMEOUT).value == 0
        reply, _ = client.simple_request("sensor-sampling", "counter")
        assert reply.arguments[1:3] == [b"counter", b"event"]
        client.simple_request("set", "counter", 6)
        counter.wait(6, timeout=TIMEOUT)
        states = [s for s, _ in rec.seen]
        assert states[:4] == [ClientState.DISCONNECTED, ClientState.CONNECTED,
                              ClientState.SYNCING, ClientState.SYNCED]
        assert not rec.seen[3][1]  # the same device again: nothing added or removed
    finally:
        client.stop(TIMEOUT)


# -- sampling, readings, listeners -----------------------------------------------------------------

def test_listeners_get_readings_in_order(device):
    client = inspect(*device.bind_address)
    got = []
    done = threading.Event()

    def listener(sensor, reading):
        got.append(reading.value)
        if reading.value == 5:
            done.set()

    try:
        sensor = client.sensor["an.int"]
        sensor.register_listener(listener)
        sensor.set_strategy("auto")
        client.until_synced(TIMEOUT)
        for v in (-1, 0, 4, 5):
            device.get_sensor("an.int").set_value(v)
        assert done.wait(TIMEOUT)
        assert got == [3, -1, 0, 4, 5]
    finally:
        client.stop(TIMEOUT)


def test_strategy_none_stops_sampling_on_the_device(device):
    client = inspect(*device.bind_address)
    try:
        client.set_sampling_strategy("an.int", "period", 0.5)
        client.until_synced(TIMEOUT)
        reply, _ = client.simple_request("sensor-sampling", "an.int")
        assert reply.arguments[1:] == [b"an.int", b"period", b"0.5"]
        assert client.sampling_strategies() == {"an.int": ("period", 0.5)}
        client.set_sampling_strategy("an.int", "none")
        client.until_synced(TIMEOUT)
        reply, _ = client.simple_request("sensor-sampling", "an.int")
        assert reply.arguments[1:] == [b"an.int", b"none"]
        assert client.sampling_strategies() == {}
    finally:
        client.stop(TIMEOUT)


def test_wait_times_out_with_the_last_value_and_cleans_up(device):
    client = inspect(*device.bind_address)
    try:
        with pytest.raises(SensorWaitTimeout, match=r"an.int .* \(last value: 3\)"):
            client.sensor["an.int"].wait(4, timeout=0.3)
        client.until_synced(TIMEOUT)
        reply, _ = client.simple_request("sensor-sampling", "an.int")
        assert reply.arguments[1:] == [b"an.int", b"none"]
    finally:
        client.stop(TIMEOUT)


def test_wait_with_a_predicate_on_the_reading(device):
    client = inspect(*device.bind_address)
    try:
        device.get_sensor("an.int").set_value(2, Sensor.WARN)

        def warn(reading):
            return reading.status == Sensor.WARN

        warn.reading = True
        assert client.sensor["an.int"].wait(warn, timeout=TIMEOUT).value == 2
    finally:
        client.stop(TIMEOUT)


def test_unknown_sensor_strategy_is_a_key_error(device):
    client = inspect(*device.bind_address)
    try:
        with pytest.raises(KeyError, match="no sensor 'nope'"):
            client.set_sampling_strategy("nope", "event")
    finally:
        client.stop(TIMEOUT)


def test_timeout_hints_from_a_ctlwire_device():
    server = DeviceTestServerWithTimeoutHints("127.0.0.1", 0)
    server.start(timeout=TIMEOUT)
    try:
        client = inspect(*server.bind_address)
        try:
            assert client.request_timeout_hints == {"slow-command": 99.0}
            assert client.request_timeout("slow-command") == 99.0
            assert client.request_timeout("slow-command", 1.0) == 1.0
        finally:
            client.stop(TIMEOUT)
    finally:
        server.stop(timeout=TIMEOUT)


def test_unreachable_device_stays_disconnected_and_until_synced_times_out():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = InspectingClient("127.0.0.1", port, timeout=TIMEOUT)
    client.start()
    try:
        with pytest.raises(TimeoutError, match="not synced within 0.3 s"):
            client.until_synced(0.3)
        assert client.state is ClientState.DISCONNECTED
    finally:
        client.stop(TIMEOUT)


def test_sample_option_samples_every_sensor_including_new_ones(peer):
    client = InspectingClient("127.0.0.1", peer.port, timeout=TIMEOUT, sample="event")
    client.start(timeout=TIMEOUT)
    try:
        assert client.sensor["counter"].get_value() == 0  # sampled by the first sync
        client.set_sampling_strategy("counter", "none")   # an explicit none stays none
        client.simple_request("add-sensor", "late")
        client.until_sensor("late", True, TIMEOUT)
        client.until_synced(TIMEOUT)
        assert client.sensor["late"].get_value() == 0
        reply, _ = client.simple_request("sensor-sampling", "late")
        assert reply.arguments[2] == b"event"
        reply, _ = client.simple_request("sensor-sampling", "counter")
        assert reply.arguments[2] == b"none"
    finally:
        client.stop(TIMEOUT)


# -- a first sync's bulk sampling, sent before the sensor list is applied -----------------------

class _ScriptedDevice:
    """A KATCP v5.1 device with bulk sampling (flag B) on a loopback socket, written
    by hand: it logs every request and can refuse the bulk ``?sensor-sampling``."""

    SENSORS = ("a", "b", "c")

    def __init__(self, refuse_bulk: bool) -> None:
        import socket
        self.refuse_bulk = refuse_bulk
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(TIMEOUT)
        send = conn.sendall
        send(b"#version-connect katcp-protocol 5.1-IMB\n"
             b"#version-connect katcp-library scripted-1.0\n"
             b"#version-connect katcp-device scripted-1.0\n")
        buf = b""
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self.requests.append(line)
                    send(self._answer(line))
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, line: bytes) -> bytes:
        name, _, rest = line[1:].partition(b" ")
        name, _, mid = name.partition(b"[")
        mid = b"[" + mid if mid else b""
        if name == b"help":
            return b"#help" + mid + b" x An\\_x.\n!help" + mid + b" ok 1\n"
        if name == b"sensor-list":
            out = b"".join(b"#sensor-list" + mid + b" " + s.encode() + b" The\\_sensor. "
                           b"\\@ integer 0 10\n" for s in self.SENSORS)
            return out + b"!sensor-list" + mid + b" ok %d\n" % len(self.SENSORS)
        if name == b"sensor-sampling":
            names = rest.split(b" ")[0]
            if b"," in names and self.refuse_bulk:
                return b"!sensor-sampling" + mid + b" fail no\\_bulk\\_here\n"
            status = b"".join(b"#sensor-status 1700000000.000000 1 " + n + b" nominal 7\n"
                              for n in names.split(b","))
            return status + b"!sensor-sampling" + mid + b" ok " + names + b" auto\n"
        return b"!" + name + mid + b" invalid unknown\\_request\n"

    def close(self) -> None:
        self.listener.close()
        self.thread.join(TIMEOUT)


@pytest.mark.parametrize("refuse_bulk", [False, True], ids=["bulk", "refused-bulk"])
def test_first_sync_samples_in_one_bulk_request_or_falls_back(refuse_bulk):
    device = _ScriptedDevice(refuse_bulk)
    client = InspectingClient("127.0.0.1", device.port, timeout=TIMEOUT, sample="auto")
    try:
        client.start(timeout=TIMEOUT)
        assert [client.sensor[n].get_value() for n in device.SENSORS] == [7, 7, 7]
        sampling = [r for r in device.requests if r.startswith(b"?sensor-sampling")]
        bulk = [r for r in sampling if b"a,b,c" in r]
        if refuse_bulk:
            # the bulk request sent ahead was refused: asked again in bulk (as any sync
            # does), then one sensor at a time
            assert len(bulk) == 2 and len(sampling) == 5
        else:
            assert sampling == bulk and len(bulk) == 1
            # ?help goes after the bulk sampling (the device answers in order, and the
            # readings are what the sync waits for longest)
            names = [r.split(b" ")[0].split(b"[")[0] for r in device.requests]
            assert (names.index(b"?sensor-list") < names.index(b"?sensor-sampling")
                    < names.index(b"?help"))
    finally:
        client.stop(TIMEOUT)
        device.close()


def test_a_sync_that_samples_nothing_asks_for_help_with_the_sensor_list():
    device = _ScriptedDevice(refuse_bulk=False)
    client = InspectingClient("127.0.0.1", device.port, timeout=TIMEOUT)
    try:
        client.start(timeout=TIMEOUT)
        assert sorted(client.sensor) == list(device.SENSORS)
        assert "x" in client.requests
        names = [r.split(b" ")[0].split(b"[")[0] for r in device.requests]
        assert names.index(b"?help") < names.index(b"?sensor-list")
        assert b"?sensor-sampling" not in names
    finally:
        client.stop(TIMEOUT)
        device.close()
