"""Resource clients against ctlwire's, aiokatcp's and katcp-python's servers over loopback."""
from __future__ import annotations

import importlib.util
import os
import threading

import pytest

from ctlwire.katcp import KatcpClientError, Sensor
from ctlwire.katcp.inspecting_client import ClientState
from ctlwire.katcp.resource_client import (ClientGroup, KATCPClientResource,
                                           KATCPClientResourceContainer, SensorWaitTimeout,
                                           escape_name)
from ctlwire.katcp.testutils import DeviceTestServerWithTimeoutHints

TIMEOUT = 15.0
PEER_SCRIPT = os.path.join(os.path.dirname(__file__), "_mirror_peer.py")
IMPLS = ["ctlwire", "aiokatcp", "katcp"]


def Peer(impl: str, sensors: int = 0):
    if impl == "katcp":
        pytest.importorskip("katcp")
    spec = importlib.util.spec_from_file_location("_mirror_peer", PEER_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Peer(impl, sensors, timeout=TIMEOUT)


@pytest.fixture(params=IMPLS)
def peer(request):
    p = Peer(request.param)
    yield p
    p.kill()


@pytest.fixture
def device():
    server = DeviceTestServerWithTimeoutHints("127.0.0.1", 0)
    server.start(timeout=TIMEOUT)
    yield server
    server.stop(timeout=TIMEOUT)


def resource(address, controlled=True, **spec) -> KATCPClientResource:
    r = KATCPClientResource(dict(name="dev", address=address, controlled=controlled,
                                 timeout=spec.pop("timeout", TIMEOUT), **spec))
    r.start(TIMEOUT)
    return r


def test_escape_name():
    assert escape_name("psu.voltage-max") == "psu_voltage_max"


# -- requests ------------------------------------------------------------------------------

def test_req_has_every_request_with_its_help(device):
    with resource(device.bind_address) as dev:
        assert {"new_command", "slow_command", "sensor_value", "help"} <= set(dir(dev.req))
        assert dev.req.new_command.__doc__ == "A new command."
        reply = dev.req.new_command()
        assert reply.succeeded and reply.reply.arguments == [b"ok", b"param1", b"param2"]
        reply = dev.req.sensor_value("an.int")
        assert reply.succeeded and reply.informs[0].arguments[-1] == b"3"
        assert not dev.req.raise_fail().succeeded
        with pytest.raises(AttributeError, match="no request 'nope'"):
            dev.req.nope


def test_uncontrolled_resource_offers_no_requests(device):
    with resource(device.bind_address, controlled=False) as dev:
        assert dir(dev.req) == []
        with pytest.raises(AttributeError):
            dev.req.new_command
        assert dev.sensor.an_int.read().value == 3  # sensors still work


def test_request_timeout_follows_the_device_hint(device):
    # the resource's own timeout is 0.2 s; the device hints 99 s for slow-command
    with resource(device.bind_address, timeout=0.2) as dev:
        assert dev.req.slow_command(0.5).succeeded
        with pytest.raises(KatcpClientError, match="timed out"):
            dev.req.slow_command(5, timeout=0.1)
        dev.req.cancel_slow_command()


def test_requests_against_each_peer_server(peer):
    with resource(("127.0.0.1", peer.port)) as dev:
        assert dev.req.set("counter", 12).succeeded
        assert dev.sensor.counter.read().value == 12
        assert not dev.req.set("nope", 1).succeeded


def test_bad_resource_spec_is_a_value_error():
    with pytest.raises(ValueError, match="'name' and 'address'"):
        KATCPClientResource(dict(name="x"))


# -- sensors ---------------------------------------------------------------------------------

def test_sensor_attributes_readings_and_listeners(device):
    with resource(device.bind_address) as dev:
        sensor = dev.sensor.an_int
        assert dev.sensor["an.int"] is sensor
        assert (sensor.name, sensor.type, sensor.units) == ("an.int", "integer", "count")
        seen = []
        got_two = threading.Event()

        def listener(s, reading):
            seen.append(reading.value)
            if reading.value == 2:
                got_two.set()

        dev.set_sensor_listener("an_int", listener)
        sensor.set_strategy("event")
        dev.until_synced(TIMEOUT)
        assert sensor.get_value() == 3 and sensor.get_status() == Sensor.NOMINAL
        device.get_sensor("an.int").set_value(2)
        assert got_two.wait(TIMEOUT)
        assert seen == [3, 2]
        assert sensor.get_reading().value == 2
        with pytest.raises(AttributeError, match="no sensor"):
            dev.sensor.no_such


def test_wait_value_and_predicate(device):
    with resource(device.bind_address) as dev:
        timer = threading.Timer(0.05, device.get_sensor("a.float").set_value, (50.0,))
        timer.start()
        assert dev.wait("a.float", lambda v: v > 40, timeout=TIMEOUT).value == 50.0
        timer.join()
        with pytest.raises(SensorWaitTimeout, match="last value: 50.0"):
            dev.sensor.a_float.wait(60.0, timeout=0.2)


def test_strategies_persist_across_device_restarts(peer):
    with resource(("127.0.0.1", peer.port)) as dev:
        assert dev.set_sampling_strategies("^counter$", "event") == ["counter"]
        dev.until_synced(TIMEOUT)
        counter = dev.sensor.counter
        dev.req.set("counter", 3)
        counter.wait(3, timeout=TIMEOUT)
        lost = threading.Event()
        dev.client.add_state_callback(
            lambda state, _: state is ClientState.DISCONNECTED and lost.set())
        peer.restart()
        assert lost.wait(TIMEOUT)
        dev.until_synced(TIMEOUT)
        dev.req.set("counter", 4)   # no strategy set again by the test
        assert counter.wait(4, timeout=TIMEOUT).value == 4
        assert counter.get_strategy() == ("event",)


# -- groups and containers --------------------------------------------------------------------

@pytest.fixture
def three_devices():
    peers = [Peer(impl) for impl in IMPLS]
    spec = dict(name="site",
                clients={p.impl: dict(address=("127.0.0.1", p.port), controlled=True)
                         for p in peers},
                groups={"all": [p.impl for p in peers], "two": IMPLS[:2]})
    container = KATCPClientResourceContainer(spec)
    container.start()
    try:
        container.until_synced(TIMEOUT)
        yield container, peers
    finally:
        container.stop(TIMEOUT)
        for p in peers:
            p.kill()


def test_group_request_goes_to_every_device(three_devices):
    container, _ = three_devices
    replies = container.req.set("counter", 7)
    assert sorted(replies) == sorted(IMPLS)
    assert all(r.succeeded for r in replies.values())
    assert container.sensor.aiokatcp_counter.read().value == 7
    two = container.groups.two
    assert isinstance(two, ClientGroup) and len(two) == 2
    assert sorted(two.req.set("counter", 8)) == sorted(IMPLS[:2])


def test_group_request_reports_a_dead_device_as_a_fail_reply(three_devices):
    container, peers = three_devices
    peers[0].kill()
    container.children[peers[0].impl].until_state(ClientState.DISCONNECTED, TIMEOUT)
    replies = container.req.set("counter", 1)
    assert not replies[peers[0].impl].succeeded
    assert replies[peers[1].impl].succeeded and replies[peers[2].impl].succeeded


def test_quorum_wait_over_three_devices(three_devices):
    container, _ = three_devices
    group = container.groups.all
    group.req.set("counter", 0)
    started = threading.Event()

    def set_two():
        started.wait(TIMEOUT)
        for impl in IMPLS[:2]:
            container.children[impl].req.set("counter", 9)

    t = threading.Thread(target=set_two)
    t.start()
    started.set()
    assert group.wait("counter", 9, timeout=TIMEOUT, quorum=2) is True
    t.join(TIMEOUT)
    assert group.wait("counter", lambda v: v == 9, timeout=TIMEOUT, quorum=0.5) is True
    with pytest.raises(SensorWaitTimeout, match="satisfied on 2 of 3 clients, 3 needed"):
        group.wait("counter", 9, timeout=0.3)
    # the waits leave no sampling behind
    container.until_synced(TIMEOUT)
    for child in container.children.values():
        reply = child.req.sensor_sampling("counter")
        assert reply.reply.arguments[2] == b"none"


def test_quorum_out_of_range_is_a_value_error(three_devices):
    container, _ = three_devices
    with pytest.raises(ValueError):
        container.groups.all.wait("counter", 1, quorum=4)
    with pytest.raises(ValueError):
        container.groups.all.wait("counter", 1, quorum=1.5)


def test_container_group_of_unknown_client_is_a_value_error():
    with pytest.raises(ValueError, match="unknown clients"):
        KATCPClientResourceContainer(dict(name="x", clients={}, groups={"g": ["nope"]}))
