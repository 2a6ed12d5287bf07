"""Shared helpers for the group coordination tests."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from ctlwire.dc.discovery import DirectoryDiscovery
from ctlwire.dc.election import Timings
from ctlwire.dc.group import Group
from ctlwire.dc.ports import GroupSpec, Port
from ctlwire._testing.proc import JsonLinesChild


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


class Member(JsonLinesChild):
    """A group member running ``member_proc.py`` in a child process."""

    SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "member_proc.py")

    def __init__(self, *args: str) -> None:
        super().__init__([self.SCRIPT, *args], what="member")
        self.id = self.wait(lambda e: e["ev"] == "ready", timeout=30)["id"]

    def command(self, **cmd: Any) -> None:
        self.send(cmd)

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
        views = {m.leader() for m in members}
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


class RedisServer:
    """A private ``redis-server`` on a free loopback port (no persistence)."""

    def __init__(self, workdir: str) -> None:
        import shutil
        import socket
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not on PATH (Debian/Ubuntu: apt-get install "
                        "redis-server); the Redis discovery tests need a real server")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.workdir = workdir
        self.proc: Any = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        import subprocess
        # Keyspace notifications (K) for generic (g) and expiry (x) events: departures
        # of members that die without saying goodbye arrive as they happen.
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.workdir, "--notify-keyspace-events", "Kgx",
             "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} on "
                                   f"port {self.port}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} not ready in {timeout} s")
            time.sleep(0.02)

    def ping(self) -> bool:
        import socket
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def redis_server(tmp_path: Any) -> Iterator[RedisServer]:
    """A real redis-server of our own; skipped only when redis-server is not installed."""
    server = RedisServer(str(tmp_path))
    yield server
    server.stop()


# Fast, with some room: in one process several group threads share the GIL, and a
# member starved of it for a whole election timeout would rightly start an election.
FAST_TIMINGS = Timings(0.05, 0.25, 0.5, 1.0)


@pytest.fixture
def make_group(tmp_path: Any) -> Iterator[Callable[..., Group]]:
    """Join groups (fast timings, discovery in ``tmp_path``); they leave at teardown."""
    made: list[Group] = []

    def factory(**kw: Any) -> Group:
        kw.setdefault("timings", FAST_TIMINGS)
        kw.setdefault("discovery", DirectoryDiscovery(tmp_path))
        g = Group("Test", "g1", **kw).join()
        made.append(g)
        return g

    yield factory
    for g in made:
        g.leave()
