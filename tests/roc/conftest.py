"""Shared fixtures of the ROC tests: free ports, child processes, an in-process broker."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from ctlwire.roc import Broker, Endpoints, RocServer
from ctlwire._testing.proc import child_env as _child_env, free_base_port

CHILD = str(Path(__file__).with_name("roc_child.py"))
#: Heartbeat used by tests: short, so faults are detected fast.
HB = 0.1



def child_env() -> dict:
    """Environment for child processes: the same ctlwire, and no broker address
    inherited from the caller's environment."""
    return _child_env(CTLWIRE_ROC_BROKER=None)


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``pred`` until true or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class Child:
    """A child process running ``roc_child.py``; killed on teardown."""

    def __init__(self, *args: str, env: dict | None = None, module: str = "") -> None:
        self.args = [sys.executable, *(["-m", module] if module else [CHILD]), *args]
        self.proc = subprocess.Popen(self.args, env={**child_env(), **(env or {})}, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, text: str, timeout: float = 30.0) -> None:
        wait_for(lambda: any(text in ln for ln in self.lines) or self.proc.poll() is not None,
                 timeout, f"{text!r} from {self.args[2:]}")
        if not any(text in ln for ln in self.lines):
            raise AssertionError(f"child {self.args[2:]} exited: {self.lines}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> Callable[..., None]:
    return wait_for


@pytest.fixture
def camera() -> "Camera":
    return Camera()


@pytest.fixture
def free_port() -> Callable[[], int]:
    return free_base_port


@pytest.fixture
def spawn() -> Iterator[Callable[..., Child]]:
    """Start ``roc_child.py`` processes; every one is killed at teardown."""
    children: list[Child] = []

    def start(*args: str, **kw) -> Child:
        c = Child(*args, **kw)
        children.append(c)
        return c

    try:
        yield start
    finally:
        for c in children:
            c.kill()


@pytest.fixture
def ep() -> Endpoints:
    return Endpoints("127.0.0.1", free_base_port())


@pytest.fixture
def broker(ep: Endpoints) -> Iterator[Broker]:
    """An in-process broker with short heartbeats on free loopback ports."""
    b = Broker(ep, heartbeat=HB, unknown_grace=0.2, queue_timeout=2.0).start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def serve(ep: Endpoints) -> Iterator[Callable[..., RocServer]]:
    """Serve objects in background threads; stopped at teardown."""
    started: list[tuple[RocServer, threading.Thread]] = []

    def start(object_id: str, obj: object, heartbeat: float = HB, *,
              endpoint: object = None, **kw: object) -> RocServer:
        # kw: the other RocServer options (connections, pipeline, ctx, ...)
        srv = RocServer(ep if endpoint is None else endpoint, object_id, obj,
                        heartbeat=heartbeat, **kw)
        t = threading.Thread(target=srv.run, daemon=True)
        t.start()
        started.append((srv, t))
        return srv

    try:
        yield start
    finally:
        for srv, t in started:
            srv.stop()
        for srv, t in started:
            t.join(5)


class Camera:
    """The shared object of the tests."""

    def __init__(self) -> None:
        self.fps = 10.0
        self.shutter_opened = 0
        self._secret = "hidden"

    def openShutter(self) -> str:
        self.shutter_opened += 1
        return "open"

    def echo(self, *args, **kwargs):
        return {"args": list(args), "kwargs": kwargs}

    def add(self, a, b=0):
        return a + b

    def fail(self, message: str):
        raise ValueError(message)

    def fail_custom(self):
        class CameraJam(Exception):
            pass
        raise CameraJam("jammed")

    def slow(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


class Recorder:
    """Counts how many calls run at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0
        self.most = 0
        self.order: list[int] = []

    def work(self, n: int) -> int:
        with self._lock:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(0.002)  # long enough for a second call to overlap if it could
        with self._lock:
            self.active -= 1
            self.order.append(n)
        return n


@pytest.fixture
def recorder() -> Recorder:
    """A shared object whose ``work(n)`` notes how many calls run at once."""
    return Recorder()
