"""The ``katcpcmd`` command-line tool, run as a child process against real servers."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from ctlwire.cli.katcpcmd import main, parse_address
from ctlwire._testing.proc import child_env
from ctlwire._testing.katcp_peer import PeerServer

TIMEOUT = 10.0




@pytest.fixture(scope="module", params=["aiokatcp", "ctlwire"])
def peer_port(request):
    server = PeerServer(request.param)
    try:
        yield server.port
    finally:
        server.kill()


def katcpcmd(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctlwire.cli.katcpcmd", *args],
                          input=stdin.encode(), capture_output=True, env=child_env(),
                          timeout=TIMEOUT * 3)


def test_ok_reply_prints_informs_then_reply_and_exits_0(peer_port):
    result = katcpcmd(f"127.0.0.1:{peer_port}", "informs", "2")
    assert result.returncode == 0
    assert result.stdout.decode().splitlines() == ["#informs 0", "#informs 1", "!informs ok 2"]


def test_arguments_are_escaped_on_the_wire(peer_port):
    result = katcpcmd(f"127.0.0.1:{peer_port}", "?echo", "a b", "")
    assert result.returncode == 0
    assert result.stdout.decode().splitlines() == ["!echo ok a\\_b \\@"]


def test_failed_request_exits_1(peer_port):
    result = katcpcmd(f"127.0.0.1:{peer_port}", "no-such-request")
    assert result.returncode == 1
    assert result.stdout.decode().startswith("!no-such-request invalid")


def test_unreachable_server_exits_3():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = katcpcmd("-t", "2", f"127.0.0.1:{port}", "watchdog")
    assert result.returncode == 3
    assert b"could not connect" in result.stderr


def test_reply_timeout_exits_3(peer_port):
    result = katcpcmd("-t", "0.3", f"127.0.0.1:{peer_port}", "slow", "30")
    assert result.returncode == 3
    assert b"timed out" in result.stderr


def test_interactive_mode_runs_each_line(peer_port):
    result = katcpcmd("-i", f"127.0.0.1:{peer_port}", stdin="watchdog\n?echo x\\_y\nquit\n")
    assert result.returncode == 0
    assert result.stdout.decode().splitlines() == ["!watchdog ok", "!echo ok x\\_y"]


def test_missing_request_is_a_usage_error():
    assert main(["127.0.0.1:1"]) == 2


@pytest.mark.parametrize("text,expected", [
    ("localhost:7147", ("localhost", 7147)),
    ("[::1]:7147", ("::1", 7147)),
    ("7147", ("127.0.0.1", 7147)),
])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


def test_interactive_mode_prints_unsolicited_informs(peer_port):
    result = katcpcmd("-i", f"127.0.0.1:{peer_port}",
                      stdin="sensor-sampling counter event\nbump 55\nwatchdog\n")
    assert result.returncode == 0
    lines = result.stdout.decode().splitlines()
    assert "!sensor-sampling ok counter event" in lines
    assert any(line.startswith("#sensor-status") and line.endswith("counter nominal 55")
               for line in lines)
