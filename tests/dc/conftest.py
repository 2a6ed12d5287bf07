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


def child_env() -> dict[str, str]:
    """Environment for child processes: the parent's import path, whatever it is."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


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
