"""Fixtures for the OCD tests: a heartbeat responder in a child process."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ctlwire.ocd import utils
from ctlwire._testing.proc import child_env




def start_responder(listen_url, timeout=20.0):
    """Start ``ocd-heartbeat --respond`` listening to ``listen_url``; returns
    (process, its publisher endpoint)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctlwire.cli.ocd_heartbeat", "--respond",
         "--bind", "tcp://127.0.0.1:0", "--listen", listen_url, "--duration", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    deadline = time.monotonic() + timeout
    line = ""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while time.monotonic() < deadline and not line.startswith("READY"):
        if sel.select(timeout=max(0.0, deadline - time.monotonic())):
            line = proc.stdout.readline()
            if not line:
                break
    sel.close()
    if not line.startswith("READY"):
        proc.kill()
        raise RuntimeError(f"responder did not start: {proc.stderr.read()}")
    return proc, line.split()[1]


@pytest.fixture
def responder_factory():
    procs = []

    def make(listen_url):
        proc, endpoint = start_responder(listen_url)
        procs.append(proc)
        return endpoint

    yield make
    for p in procs:
        p.kill()
        p.wait(timeout=10)
        p.stdout.close()
        p.stderr.close()


@pytest.fixture(autouse=True)
def _forget_servers():
    yield
    utils.close_zmq_servers()
