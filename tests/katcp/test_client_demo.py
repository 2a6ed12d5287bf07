"""The client demo session (``ctlwire-demo katcp`` uses it) against a real server."""
from __future__ import annotations

import os
import selectors
import subprocess
import sys

import pytest

from ctlwire.cli._demo_katcp_client import run_client_session

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def peer_port():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.Popen([sys.executable, "-m", "ctlwire.katcp._client_peer", "--impl",
                             "ctlwire"], stdout=subprocess.PIPE, env=env)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(TIMEOUT * 2), "peer server did not start"
        sel.close()
        line = proc.stdout.readline().decode()
        assert line.startswith("PORT "), line
        yield int(line.split()[1])
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close()


def test_session_shows_blocking_callback_and_sensor_parts(peer_port, capsys):
    run_client_session("127.0.0.1", peer_port)
    out = capsys.readouterr().out
    assert "    !watchdog ok" in out
    assert "reply_cb  !version-list ok 3" in out
    assert "update: counter = " in out
    assert "100 concurrent awaited ?watchdog: 100 ok" in out
