"""Shared fixtures of the KATCP client tests: peer servers in child processes."""
from __future__ import annotations

import pytest

from ctlwire._testing.katcp_peer import PeerServer

SERVERS = ("aiokatcp", "ctlwire")  # aiokatcp's DeviceServer and ctlwire's own


@pytest.fixture(params=SERVERS)
def impl(request) -> str:
    """Each peer server implementation in turn (for tests that start their own)."""
    return request.param


@pytest.fixture(scope="module", params=SERVERS)
def peer(request):
    """A peer server of each implementation, shared by the tests of a module."""
    server = PeerServer(request.param)
    try:
        yield server
    finally:
        server.kill()
