"""Calls through a real broker over loopback: proxies behave like the object."""
from __future__ import annotations

import threading
import time

import pytest

from ctlwire.roc import (RemoteError, RocClient, RocError, RocTimeout,
                         UnknownObjectError)


@pytest.fixture
def client(ep, broker):
    c = RocClient(ep, timeout=5.0)
    yield c
    c.close()


@pytest.fixture
def cam(client, camera, serve):
    serve("cam", camera)
    return client["cam"]


def test_method_call_with_positional_and_keyword_arguments(cam):
    assert cam.echo(1, "two", x=3) == {"args": [1, "two"], "kwargs": {"x": 3}}


def test_method_call_with_keywords_only(cam):
    assert cam.add(a=2, b=5) == 7


def test_call_runs_on_the_shared_object(cam, camera):
    assert cam.openShutter() == "open"
    assert camera.shutter_opened == 1


def test_attribute_read(cam):
    assert cam.fps == 10.0


def test_attribute_write_changes_the_shared_object(cam, camera):
    cam.fps = 25.0
    assert camera.fps == 25.0
    assert cam.fps == 25.0


def test_dir_lists_public_methods_and_attributes(cam):
    names = dir(cam)
    assert {"openShutter", "echo", "fps", "shutter_opened"} <= set(names)
    assert "_secret" not in names


def test_private_attributes_are_not_shared(cam):
    with pytest.raises(AttributeError):
        cam._secret


def test_unknown_attribute_raises_attribute_error(cam):
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        cam.nothing


def test_remote_exception_keeps_type_message_and_traceback(cam):
    with pytest.raises(ValueError) as info:
        cam.fail("lens cap on")
    exc = info.value
    assert isinstance(exc, RemoteError)
    assert exc.type_name == "ValueError"
    assert exc.remote_message == "lens cap on"
    assert "in fail" in exc.remote_traceback


def test_remote_exception_of_a_non_builtin_type(cam):
    with pytest.raises(RemoteError) as info:
        cam.fail_custom()
    assert info.value.type_name == "CameraJam"
    assert "jammed" in str(info.value)


def test_wrong_arguments_raise_type_error(cam):
    with pytest.raises(TypeError):
        cam.add()


def test_unknown_object_fails_fast_with_clear_error(ep, broker):
    c = RocClient(ep, timeout=10.0)
    try:
        t0 = time.monotonic()
        with pytest.raises(UnknownObjectError, match="nobody"):
            c.call("nobody", "anything")
        # the broker's grace is 0.2 s: far below the 10 s timeout
        assert time.monotonic() - t0 < 5.0
    finally:
        c.close()


def test_mmi_service_reports_served_and_unserved_ids(client, cam):
    cam.echo(0)
    assert client.service_available("cam") is True
    assert client.service_available("nobody") is False


def test_many_calls_in_flight_from_one_thread(cam):
    futures = [cam.add.call_async(i, 1) for i in range(200)]
    assert [f.result() for f in futures] == [i + 1 for i in range(200)]


def test_proxy_is_safe_from_several_threads(cam):
    errors: list[str] = []

    def hammer(k: int) -> None:
        for i in range(100):
            got = cam.add(k * 1000, i)
            if got != k * 1000 + i:
                errors.append(f"thread {k}: {got} != {k * 1000 + i}")

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


class Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def who_after(self, seconds: float) -> str:
        time.sleep(seconds)
        return self.name


def test_several_servers_for_one_object_serve_calls_in_parallel(client, serve, broker,
                                                                wait_for):
    a = serve("pair", Named("a"))
    b = serve("pair", Named("b"))
    # each server has several connections: the broker must pick the idle server,
    # not a second connection of the busy one
    n = a.connections + b.connections
    wait_for(lambda: broker.stats()["services"].get("pair") == n, 10,
             "both servers to register every connection")
    proxy = client["pair"]
    futures = [proxy.who_after.call_async(0.5) for _ in range(2)]
    assert sorted(f.result() for f in futures) == ["a", "b"]


def test_slow_method_keeps_its_server_alive(client, serve, broker, camera):
    serve("cam", camera)
    # 1 s is ten heartbeat intervals of the test broker (liveness 3)
    assert client["cam"].slow(1.0) == 1.0
    assert broker.stats()["lost"] == 0
    assert client["cam"].add(1, 1) == 2


def test_call_timeout_is_a_clear_error(ep, broker, serve, camera):
    serve("cam", camera)
    c = RocClient(ep, timeout=0.3)
    try:
        with pytest.raises(RocTimeout, match="no reply within 0.3 s"):
            c["cam"].slow(1.0)
    finally:
        c.close()


def test_late_reply_after_timeout_is_dropped(ep, broker, serve, camera, wait_for):
    serve("cam", camera)
    c = RocClient(ep, timeout=0.3)
    try:
        with pytest.raises(RocTimeout):
            c.call("cam", "slow", 0.6)
        c.timeout = 5.0
        wait_for(lambda: c.call("cam", "add", 1, 2) == 3 and c.stray_replies == 1,
                 5.0, "the late reply to be dropped")
    finally:
        c.close()


def test_client_finds_the_broker_through_the_environment(ep, broker, serve, camera,
                                                         monkeypatch):
    serve("cam", camera)
    monkeypatch.setenv("CTLWIRE_ROC_BROKER", f"127.0.0.1:{ep.brokerBasePort}")
    c = RocClient(timeout=5.0)
    try:
        assert c["cam"].add(20, 22) == 42
    finally:
        c.close()


def test_client_accepts_host_port_string(ep, broker, serve, camera):
    serve("cam", camera)
    c = RocClient(f"127.0.0.1:{ep.brokerBasePort}", timeout=5.0)
    try:
        assert c.call("cam", "add", 1, 1) == 2
    finally:
        c.close()


def test_close_while_another_thread_waits_fails_that_call_promptly(ep, broker, serve,
                                                                   camera):
    serve("cam", camera)
    c = RocClient(ep, timeout=30.0)
    c.call("cam", "add", 0, 0)
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            c.call("cam", "slow", 3.0)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    t = threading.Thread(target=caller)
    t.start()
    deadline = time.monotonic() + 5
    while not c._pending and time.monotonic() < deadline:  # the call is in flight
        time.sleep(0.01)
    t0 = time.monotonic()
    c.close()
    t.join(10)
    assert not t.is_alive()
    assert time.monotonic() - t0 < 2.5  # a poll slice is 0.25 s; the call takes 3 s
    assert len(errors) == 1 and isinstance(errors[0], RocError)


def test_call_async_goes_out_without_result_on_a_fresh_client(ep, broker, serve, camera,
                                                               wait_for):
    # The very first thing a new client does is a fire-and-forget call: it must reach
    # the object even though nobody ever collects its result.
    serve("cam", camera)
    wait_for(lambda: broker.stats()["services"].get("cam"), 10, "cam registered")
    c = RocClient(ep, timeout=5.0)
    try:
        c.call_async("cam", "openShutter")  # (a proxy would first ask what cam offers)
        c.call_async("cam", "openShutter")
        wait_for(lambda: camera.shutter_opened == 2, 10, "both calls run")
    finally:
        c.close()


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_negative_or_non_finite_timeout_is_refused(ep, bad):
    with pytest.raises(ValueError, match="timeout"):
        RocClient(ep, timeout=bad)


def test_a_zero_timeout_does_not_wait(broker, serve, ep, camera, wait_for):
    serve("cam", camera)
    with RocClient(ep, timeout=5.0) as c:
        wait_for(lambda: c.service_available("cam"), 10, "the server")
    with RocClient(ep, timeout=0) as c:
        t0 = time.monotonic()
        with pytest.raises(RocTimeout):
            c.call("cam", "add", 1, 2)
        assert time.monotonic() - t0 < 5.0  # at once; slack for a loaded machine


class Gate:
    """A method that returns only when the test opens the gate (False after 10 s)."""

    def __init__(self) -> None:
        self.opened = threading.Event()

    def wait(self) -> bool:
        return self.opened.wait(10)


def test_a_second_threads_call_goes_out_while_the_first_thread_waits(ep, broker, serve,
                                                                     camera, wait_for):
    # the first thread alone has used the client so far, so while it waits for a reply
    # it sits in a blocking receive that does not watch for other threads' calls; the
    # second thread's call must get through all the same (it opens the gate)
    gate = Gate()
    serve("gate", gate)
    serve("cam", camera)
    c = RocClient(ep, timeout=20.0)
    got: list = []

    def second() -> None:
        wait_for(lambda: c._leader, 10, "the first thread to wait for its reply")
        got.append(c.call("cam", "add", 2, 3))
        gate.opened.set()

    try:
        assert c.call("cam", "add", 1, 2) == 3
        fut = c.call_async("gate", "wait")
        t = threading.Thread(target=second)
        t.start()
        assert fut.result() is True, "the second thread's call waited for the first's"
        t.join(15)
        assert got == [5]
    finally:
        gate.opened.set()
        c.close()
