"""CURVE keys: a broker that allows some keys serves them and gives others nothing."""
from __future__ import annotations

import threading
import time

import pytest
import zmq
import zmq.auth

from ctlwire._curve import CurveSecurity
from ctlwire.roc import (Broker, BrokerUnavailable, RocClient, RocServer,
                         RocStatusUpdater, statusUpdateIterator)

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")


@pytest.fixture
def keys(tmp_path):
    """Key pairs for the broker, a server, a good client and a stranger; the allowed
    public keys (server and good client) in their own directory."""
    secrets = tmp_path / "secret"
    allowed = tmp_path / "allowed"
    secrets.mkdir()
    allowed.mkdir()
    for name in ("broker", "server", "client", "stranger"):
        public, _ = zmq.auth.create_certificates(str(secrets), name)
        if name in ("server", "client"):
            (allowed / f"{name}.key").write_bytes(open(public, "rb").read())
    return secrets, allowed


def _sec(secrets, name) -> CurveSecurity:
    return CurveSecurity.from_files(str(secrets / f"{name}.key_secret"))


@pytest.fixture
def secure(ep, keys):
    secrets, allowed = keys
    sec = CurveSecurity.from_files(str(secrets / "broker.key_secret"), str(allowed),
                                   domain="ctlwire.roc")
    # heartbeats of 0.5 s: libzmq's I/O thread waits for the ZAP handler (a Python
    # thread here, sharing the GIL with the broker, the server and the test), so on a
    # loaded machine a handshake can hold every connection's traffic for a few 100 ms;
    # with 0.1 s the server took that for a silent broker and reconnected mid-call
    broker = Broker(ep, heartbeat=0.5, unknown_grace=0.2, security=sec).start()
    bkey = sec.public_key

    class Cam:
        def ping(self):
            return "pong"

    srv = RocServer(ep, "cam", Cam(), heartbeat=0.5, security=_sec(secrets, "server"),
                    broker_key=bkey)
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    try:
        yield secrets, bkey
    finally:
        srv.stop()
        t.join(5)
        broker.stop()


def test_an_allowed_key_works(ep, secure, wait_for):
    secrets, bkey = secure
    c = RocClient(ep, timeout=5.0, security=_sec(secrets, "client"), broker_key=bkey)
    try:
        wait_for(lambda: c.service_available("cam"), 10, "the server to register")
        assert c["cam"].ping() == "pong"
    finally:
        c.close()


def test_a_key_not_allowed_gets_nothing(ep, secure, wait_for):
    secrets, bkey = secure
    good = RocClient(ep, timeout=5.0, security=_sec(secrets, "client"), broker_key=bkey)
    bad = RocClient(ep, timeout=1.0, security=_sec(secrets, "stranger"), broker_key=bkey)
    plain = RocClient(ep, timeout=1.0)
    try:
        wait_for(lambda: good.service_available("cam"), 10, "the server to register")
        for c in (bad, plain):
            with pytest.raises(BrokerUnavailable):
                c.call("cam", "ping")
        assert good.call("cam", "ping") == "pong"  # and the good one still works
    finally:
        for c in (good, bad, plain):
            c.close()


def test_status_needs_an_allowed_key_too(ep, secure):
    secrets, bkey = secure
    good = statusUpdateIterator(ep, "t", timeout=0.05, security=_sec(secrets, "client"),
                                broker_key=bkey)
    bad = statusUpdateIterator(ep, "t", timeout=0.05, security=_sec(secrets, "stranger"),
                               broker_key=bkey)
    try:
        with RocStatusUpdater(ep, security=_sec(secrets, "server"), broker_key=bkey) as up:
            deadline = time.monotonic() + 10
            got = {}
            while not got:
                assert time.monotonic() < deadline, "the allowed subscriber got nothing"
                up.emit("t.x", 1)
                got = next(good)
            assert got == {"t": {"x": 1}}
            assert [next(bad) for _ in range(5)] == [{}] * 5
    finally:
        good.close()
        bad.close()


def test_key_files_that_are_missing_or_public_only_are_named(tmp_path, keys):
    secrets, _ = keys
    with pytest.raises(ValueError, match="missing.key_secret"):
        CurveSecurity.from_files(str(tmp_path / "missing.key_secret"))
    with pytest.raises(ValueError, match="no secret key"):
        CurveSecurity.from_files(str(secrets / "client.key"))
    with pytest.raises(ValueError, match="not a directory"):
        CurveSecurity.from_files(str(secrets / "client.key_secret"), str(tmp_path / "x"))


def test_primary_and_standby_talk_over_a_secured_link(keys, free_port, wait_for):
    from ctlwire.roc import Endpoints
    secrets, allowed = keys
    sec = CurveSecurity.from_files(str(secrets / "broker.key_secret"), str(allowed),
                                   domain="ctlwire.roc")
    p_ep, s_ep = Endpoints("127.0.0.1", free_port()), Endpoints("127.0.0.1", free_port())
    primary = Broker(p_ep, has_standby=True, relay=False, security=sec).start()
    standby = Broker(s_ep, standby_for=p_ep, relay=False, security=sec).start()
    try:
        # the primary becomes active only on hearing the standby say "passive"
        wait_for(lambda: primary.peer.active and standby.peer.peer_state == "active", 10,
                 "the pair to agree over CURVE")
        assert not standby.peer.active
    finally:
        standby.stop()
        primary.stop()
