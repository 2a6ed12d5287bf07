"""pytest fixtures for testing KATCP devices: a device on a free loopback port, a client.

Installed with ctlwire (entry point ``pytest11``: ``ctlwire_katcp``), so a project's tests
use them without a conftest::

    import pytest
    from ctlwire.katcp.testutils import DeviceTestServer

    @pytest.fixture
    def katcp_device_class():
        return MyDevice                      # default: DeviceTestServer

    def test_double(katcp_client):
        katcp_client.assert_request_succeeds("double", 21, args_equal=["42"])

Fixtures (all function-scoped):

``katcp_device_class``
    The device class ``katcp_device`` starts; override it in a test module or conftest.
``katcp_device``
    An instance of ``katcp_device_class`` listening on 127.0.0.1 (a free port), running
    in its own thread; stopped after the test.
``katcp_client``
    A connected :class:`~ctlwire.katcp.testutils.BlockingTestClient` of ``katcp_device``
    (protocol learnt, so requests use message ids); failures raise ``AssertionError``.
``katcp_device_factory``
    ``katcp_device_factory(cls, *args, host="127.0.0.1", **kwargs)`` starts more devices.
``katcp_client_factory``
    ``katcp_client_factory(device_or_address, **kwargs)`` connects more clients.

Timeouts: 10 s to start or connect (``CTLWIRE_KATCP_TEST_TIMEOUT`` changes it), and the
client's default request timeout is the same.

It lives outside ``ctlwire.katcp`` because pytest loads it in every run of every project
installed beside ctlwire: importing it must cost nothing and must not load the compiled
KATCP codec (a broken build would break unrelated test suites).

May import: the standard library, pytest, and (inside fixtures only)
``ctlwire.katcp.testutils``.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import pytest

__all__ = ["katcp_device_class", "katcp_device", "katcp_client", "katcp_device_factory",
           "katcp_client_factory"]


def _timeout() -> float:
    return float(os.environ.get("CTLWIRE_KATCP_TEST_TIMEOUT", "10"))


@pytest.fixture
def katcp_device_class() -> type:
    """The device class that ``katcp_device`` starts (override to test your own)."""
    from ctlwire.katcp.testutils import DeviceTestServer

    return DeviceTestServer


@pytest.fixture
def katcp_device_factory() -> Iterator[Callable[..., Any]]:
    """Start devices on free loopback ports; each is stopped after the test."""
    started: list = []

    def start(cls: type, *args: Any, host: str = "127.0.0.1", **kwargs: Any) -> Any:
        server = cls(host, 0, *args, **kwargs)
        server.start(timeout=_timeout())
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop(timeout=_timeout())


@pytest.fixture
def katcp_client_factory() -> Iterator[Callable[..., Any]]:
    """Connect :class:`BlockingTestClient` s to devices; each is stopped after the test."""
    from ctlwire.katcp.testutils import BlockingTestClient

    started: list = []

    def connect(device_or_address: Any, test: Any = None, **kwargs: Any) -> Any:
        if isinstance(device_or_address, tuple):
            host, port = device_or_address
        else:
            host, port = device_or_address.bind_address
        kwargs.setdefault("timeout", _timeout())
        client = BlockingTestClient(test, host, port, **kwargs)
        client.start()
        started.append(client)
        if not client.wait_protocol(_timeout()):
            raise RuntimeError(f"no KATCP device answered at {host}:{port} within "
                               f"{_timeout()} s")
        return client

    yield connect
    for client in reversed(started):
        client.stop()
        client.join(_timeout())


@pytest.fixture
def katcp_device(katcp_device_class: type, katcp_device_factory: Callable[..., Any]) -> Any:
    """A running instance of ``katcp_device_class`` on 127.0.0.1 and a free port."""
    return katcp_device_factory(katcp_device_class)


@pytest.fixture
def katcp_client(katcp_device: Any, katcp_client_factory: Callable[..., Any]) -> Any:
    """A :class:`BlockingTestClient` connected to ``katcp_device``."""
    return katcp_client_factory(katcp_device)
