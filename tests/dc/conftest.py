"""Shared helpers for the group coordination tests."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from ctlwire.dc.ports import GroupSpec, Port
from ctlwire._proc import child_env


def wait_for(pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)




@pytest.fixture
def zctx() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def make_port(zctx: zmq.Context) -> Iterator[Callable[..., Port]]:
    """Build, set up and later close a port: ``make_port(GroupPubPort, spec=..., **spec_kw)``."""
    made: list[Port] = []

    def factory(cls: type[Port], spec: GroupSpec | None = None, **kw: Any) -> Port:
        if spec is None:
            kw.setdefault("groupType", "gt")
            kw.setdefault("instanceName", "i1")
            spec = GroupSpec(context=zctx, **kw)
        port = cls(None, None, spec)
        port.setup()
        port.setupSocket(owner=None)
        made.append(port)
        return port

    yield factory
    for port in made:
        port.close()


def publish_until(pub: Port, sub: Port, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send ``payload`` repeatedly until ``sub`` receives something (pub/sub slow joiner)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pub.send(payload)
        sock = sub.getSocket()
        assert sock is not None
        if sock.poll(20):
            return sub.recv(timeout=1)
    raise AssertionError("subscriber never received")


@pytest.fixture
def wait() -> Callable[..., Any]:
    """The :func:`wait_for` helper (importlib import mode keeps conftest out of sys.path)."""
    return wait_for


@pytest.fixture
def publish() -> Callable[..., bytes]:
    """The :func:`publish_until` helper."""
    return publish_until


class Member:
    """A group member running ``member_proc.py`` in a child process."""

    SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "member_proc.py")

    def __init__(self, *args: str) -> None:
        import json
        import subprocess
        import threading
        self._json = json
        self.proc = subprocess.Popen([sys.executable, self.SCRIPT, *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=child_env(), text=True, bufsize=1)
        self.lines: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.id = self.wait(lambda e: e["ev"] == "ready", timeout=30)["id"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = self._json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.lines.append(obj)
                self._cond.notify_all()

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float,
             since: int = 0) -> dict[str, Any]:
        """First output line (from index ``since``) matching ``pred``, waiting up to timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for obj in self.lines[since:]:
                    if pred(obj):
                        return obj
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"member {getattr(self, 'id', '?')}: no matching "
                                         f"output within {timeout} s")
                self._cond.wait(min(left, 0.1))

    def events(self, kind: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.lines if e["ev"] == kind]

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    @property
    def leader(self) -> tuple[str, int] | None:
        """(leader id, term) as this member last saw it, from its events."""
        current = None
        with self._cond:
            for e in self.lines:
                if e["ev"] == "leader_elected":
                    current = (e["member"], e["term"])
                elif e["ev"] == "leader_lost" and current and current[0] == e["member"]:
                    current = None
        return current

    def command(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(self._json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.command(cmd="quit")
                self.proc.wait(5)
            except Exception:
                pass
        self.kill()


@pytest.fixture
def cluster(tmp_path: Any) -> Iterator[Callable[..., list[Member]]]:
    """Start ``n`` member processes sharing a discovery directory; all killed at teardown."""
    started: list[Member] = []

    def start(n: int, *extra: str) -> list[Member]:
        for _ in range(n):
            started.append(Member("--dir", str(tmp_path / "disc"), *extra))
        return started[-n:]

    yield start
    for m in started:
        m.stop()


def agreed_leader(members: list[Member], timeout: float = 20.0) -> tuple[str, int]:
    """Wait until every member names the same leader (one of them) and return it."""
    ids = {m.id for m in members}

    def check() -> tuple[str, int] | None:
        views = {m.leader for m in members}
        if len(views) == 1:
            view = views.pop()
            if view is not None and view[0] in ids:
                return view
        return None

    return wait_for(check, timeout)


@pytest.fixture
def agree() -> Callable[..., tuple[str, int]]:
    return agreed_leader


@pytest.fixture
def free_udp_port() -> int:
    """A UDP port free on loopback right now (for beacon discovery tests)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
