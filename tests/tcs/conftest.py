"""Fixtures for the TCS tests; helpers live in tcs_testlib (importable from here)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# --import-mode=importlib does not put test folders on sys.path; the helpers do need it
sys.path.insert(0, str(Path(__file__).parent))

from tcs_testlib import timed_event, write_db  # noqa: E402


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "events.sqlite"


@pytest.fixture
def small_db(tmp_path):
    events = [timed_event(i, f"tcs.sys{i % 3}.key", 1000.0 + i * 0.01, note=f"n{i}")
              for i in range(1, 21)]
    return write_db(tmp_path / "small.sqlite", events)


@pytest.fixture
def spawn():
    """Start ``python -m <module> args...`` children; all killed at teardown."""
    import subprocess
    from tcs_testlib import child_env
    procs = []

    def start(module, *args, **kw):
        proc = subprocess.Popen([sys.executable, "-m", module, *map(str, args)],
                                env=child_env(), **kw)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


@pytest.fixture
def spawn_replay(spawn):
    """Start ``tcs-replay ARGS --url tcp://127.0.0.1:0`` and return (process, endpoint),
    the endpoint read from its "publishing on" line (stdout): no port is guessed."""
    import selectors
    import subprocess
    import time

    def start(*args, timeout=30.0):
        proc = spawn("ctlwire.cli.tcs_replay", *args, "--url", "tcp://127.0.0.1:0",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                line = proc.stdout.readline()
                if not line:
                    break
                if "publishing on " in line:
                    return proc, line.rsplit(" ", 1)[1].strip()
        finally:
            sel.close()
        raise RuntimeError("tcs-replay did not report its endpoint")

    return start
