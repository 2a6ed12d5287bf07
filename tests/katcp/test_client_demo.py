"""The client demo session (``ctlwire-demo katcp`` uses it) against a real server."""
from __future__ import annotations


import pytest

from ctlwire.cli._demo_katcp_client import run_client_session
from ctlwire._testing.katcp_peer import PeerServer

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def peer_port():
    server = PeerServer("ctlwire")
    try:
        yield server.port
    finally:
        server.kill()


def test_session_shows_blocking_callback_and_sensor_parts(peer_port, capsys):
    run_client_session("127.0.0.1", peer_port)
    out = capsys.readouterr().out
    assert "    !watchdog ok" in out
    assert "reply_cb  !version-list ok 3" in out
    assert "update: counter = " in out
    assert "100 concurrent awaited ?watchdog: 100 ok" in out
