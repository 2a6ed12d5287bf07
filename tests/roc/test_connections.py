"""RocServer with several worker connections: registered as that many MDP workers,
yet the object runs one call at a time, and faults stay clean."""
from __future__ import annotations

import threading
import time

import pytest

from ctlwire.roc import Broker, RocClient, RocServer, UnknownObjectError, WorkerLostError

HB = "0.1"


def test_server_registers_every_connection(ep, broker, camera, wait_for):
    srv = RocServer(ep, "cam", camera, heartbeat=0.1, connections=3)
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    c = RocClient(ep, timeout=5.0)
    try:
        wait_for(lambda: broker.stats()["services"].get("cam") == 3, 10,
                 "three workers for 'cam'")
        assert c.service_available("cam")
        assert srv.registrations == 3
    finally:
        c.close()
        srv.stop()
        t.join(5)


def test_connections_must_be_between_1_and_64(ep, camera):
    for bad in (0, 65, 2.0):
        with pytest.raises(ValueError, match="connections"):
            RocServer(ep, "cam", camera, connections=bad)


def test_calls_in_flight_never_overlap_in_the_object(ep, broker, serve, wait_for, recorder):
    rec = recorder
    srv = serve("rec", rec)
    wait_for(lambda: broker.stats()["services"].get("rec") == srv.connections, 10,
             "every connection registered")
    c = RocClient(ep, timeout=10.0)
    try:
        futures = [c.call_async("rec", "work", i) for i in range(60)]
        assert [f.result() for f in futures] == list(range(60))
        assert rec.most == 1
        assert sorted(rec.order) == list(range(60))  # each ran once
    finally:
        c.close()


@pytest.mark.parametrize("pipeline, handed", [(1, 4), (32, 6)], ids=["plain", "pipelined"])
def test_killed_server_fails_every_call_in_flight_and_none_runs_twice(ep, broker, spawn,
                                                                     wait_for, pipeline,
                                                                     handed):
    base = str(ep.brokerBasePort)
    victim = spawn("server", base, "svc", HB, "4", str(pipeline))
    wait_for(lambda: broker.stats()["services"].get("svc") == 4, 10,
             "the server's four connections")
    c = RocClient(ep, timeout=8.0)
    try:
        assert c.call("svc", "echo", 1) == 1  # connected: call_async sends at once
        # plain 7/MDP: 4 calls go to the 4 connections (one runs, three wait in the
        # server's sockets) and 2 wait in the broker; pipelined, all 6 go to the
        # server (one connection takes up to 32)
        futures = [c.call_async("svc", "slow", 30.0) for _ in range(6)]
        victim.wait_line("slow started 1")
        t0 = time.monotonic()
        victim.kill()
        errors = []
        for f in futures:
            with pytest.raises((WorkerLostError, UnknownObjectError)) as info:
                f.result()
            errors.append(info.type)
        assert time.monotonic() - t0 < 8.0
        assert errors.count(WorkerLostError) == handed
        # nothing was resent: a new server gets none of those calls
        fresh = spawn("server", base, "svc", HB, "4")
        wait_for(lambda: broker.stats()["services"].get("svc") == 4, 10,
                 "the fresh server's connections")
        assert c.call("svc", "echo", 5) == 5
        assert not any("slow started" in ln for ln in fresh.lines)
        assert sum("slow started" in ln for ln in victim.lines) == 1
    finally:
        c.close()


def test_broker_restart_registers_every_connection_again(ep, serve, camera, wait_for):
    b1 = Broker(ep, heartbeat=0.1).start()
    srv = serve("cam", camera)
    try:
        wait_for(lambda: b1.stats()["services"].get("cam") == srv.connections, 10,
                 "every connection registered")
    finally:
        b1.stop()
    b2 = Broker(ep, heartbeat=0.1).start()
    c = RocClient(ep, timeout=2.0)
    try:
        wait_for(lambda: b2.stats()["services"].get("cam") == srv.connections, 10,
                 "every connection registered with the new broker")
        futures = [c.call_async("cam", "add", i, 1) for i in range(3 * srv.connections)]
        assert [f.result() for f in futures] == [i + 1 for i in range(3 * srv.connections)]
    finally:
        c.close()
        b2.stop()
