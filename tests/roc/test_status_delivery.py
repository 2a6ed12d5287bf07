"""Status updates are never lost without a count: RocStatusUpdater's three counters.

An update is ``sent`` (queued for a broker that listens), ``dropped`` (a broker's queue
stayed full for ``send_timeout``, after back-pressure) or ``unheard`` (no broker listens
for it). Real sockets on 127.0.0.1: an in-process Broker, or a bare XSUB standing in
for a broker that stops reading.
"""
from __future__ import annotations

import logging
import threading
import time

import pytest
import zmq

from ctlwire.roc import Broker, Endpoints, RocStatusUpdater
from ctlwire._testing.proc import free_base_port

TIMEOUT = 10.0


def _wait(pred, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_updates_emitted_right_after_start_up_all_reach_the_broker():
    # a plain PUB loses the first updates: it sends before the broker's subscription
    # has come back over the new connection
    ep = Endpoints("127.0.0.1", free_base_port())
    broker = Broker(ep).start()
    try:
        with RocStatusUpdater(ep) as up:
            for i in range(50):
                up.emit("system.foo", {"n": i})
            assert (up.sent, up.dropped, up.unheard) == (50, 0, 0)
            assert _wait(lambda: broker.status.updates == 50)
            assert broker.status.tree == {"system": {"foo": {"n": 49}}}
    finally:
        broker.stop()


class _StalledBroker:
    """An XSUB that subscribes to status updates and reads them only when told to
    (its socket is still serviced, so the connection stays up)."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.XSUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 10)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.sock.send(b"\x01ROCS")
        self.reading = threading.Event()
        self.stop = threading.Event()
        self.received: list[bytes] = []
        self.last = time.monotonic()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            if self.reading.is_set():
                try:
                    self.received.append(self.sock.recv_multipart(zmq.NOBLOCK)[1])
                    self.last = time.monotonic()
                    continue
                except zmq.Again:
                    pass
            self.sock.poll(5)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(TIMEOUT)
        self.sock.close()
        self.ctx.term()


def test_a_broker_that_stops_reading_gets_back_pressure_then_counted_drops(caplog):
    stalled = _StalledBroker()
    try:
        up = RocStatusUpdater(f"tcp://127.0.0.1:{stalled.port}", hwm=10, send_timeout=0.05)
        payload = "x" * 2000
        emitted = 0
        with caplog.at_level(logging.WARNING, logger="ctlwire.roc.status"):
            while up.dropped < 3 and emitted < 50_000:
                up.emit("cam.frame", {"n": emitted, "pad": payload})
                emitted += 1
        assert up.dropped == 3 and up.unheard == 0
        assert up.sent + up.dropped == emitted
        warnings = [r for r in caplog.records if "dropped so far" in r.getMessage()]
        assert len(warnings) == 1  # (at most one a second)
        # every update counted as sent arrives once the broker reads again, in order
        stalled.reading.set()
        assert _wait(lambda: len(stalled.received) >= up.sent)
        assert _wait(lambda: time.monotonic() - stalled.last > 0.3)
        numbers = [int(body.split(b'"n":')[1].split(b",")[0]) for body in stalled.received]
        assert len(numbers) == up.sent and numbers == sorted(numbers)
        up.close()
    finally:
        stalled.close()


def test_updates_no_broker_listens_for_are_counted_unheard(caplog):
    ep = Endpoints("127.0.0.1", free_base_port())  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="ctlwire.roc.status"):
        with RocStatusUpdater(ep, connect_timeout=0.1) as up:
            for i in range(3):
                up.emit("dome.wind", i)
            assert (up.sent, up.dropped, up.unheard) == (0, 0, 3)
    warnings = [r for r in caplog.records if "not reaching any broker" in r.getMessage()]
    assert len(warnings) == 1 and "dome.wind" in warnings[0].getMessage()


def test_behind_a_plain_relay_only_paths_somebody_subscribed_to_are_sent():
    ep = Endpoints("127.0.0.1", free_base_port())
    broker = Broker(ep, snapshots=False).start()
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVTIMEO, int(TIMEOUT * 1000))
    sub.setsockopt(zmq.SUBSCRIBE, b"ROCSmount")
    sub.connect(ep.generalXPUB)
    try:
        with RocStatusUpdater(ep) as up:
            up.emit("mount.ra", 1.5)  # (waits at start-up for the relay's subscription)
            assert sub.recv_multipart() == [b"ROCSmount.ra", b"1.5"]
            up.emit("dome.wind", 3)
            up.emit("mount.dec", -2)
            assert sub.recv_multipart() == [b"ROCSmount.dec", b"-2"]
            assert (up.sent, up.dropped, up.unheard) == (2, 0, 1)
    finally:
        sub.close()
        broker.stop()


@pytest.mark.parametrize("kwargs", [{"connect_timeout": -1}, {"send_timeout": float("inf")},
                                    {"hwm": 0}, {"hwm": 1.5}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        RocStatusUpdater("tcp://127.0.0.1:9", **kwargs)
