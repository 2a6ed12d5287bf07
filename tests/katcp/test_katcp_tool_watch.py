"""``ctlwire-katcp watch`` and ``wait``, run as child processes against real devices."""
from __future__ import annotations

import selectors
import signal
import socket
import subprocess
import sys

import pytest

from ctlwire._testing.proc import child_env
from ctlwire.katcp import BlockingClient, Message
from ctlwire.katcp.testutils import DeviceTestServer

TIMEOUT = 10.0


def tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctlwire.cli.katcpcmd", *args],
                          capture_output=True, env=child_env(), timeout=TIMEOUT * 3)


def start_tool(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ctlwire.cli.katcpcmd", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())


def wait_for_stderr(proc: subprocess.Popen, text: str) -> str:
    """Read the child's stderr until a line containing ``text`` (bounded)."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    try:
        seen = []
        while sel.select(TIMEOUT):
            line = proc.stderr.readline().decode()
            if not line:
                break
            seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"child never said {text!r}; said {seen!r}")
    finally:
        sel.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def device():
    server = DeviceTestServer("127.0.0.1", 0)
    server.start(timeout=TIMEOUT)
    yield server
    server.stop(timeout=TIMEOUT)


def addr(server) -> str:
    host, port = server.bind_address
    return f"{host}:{port}"


def bump(port: int, value: int) -> None:
    with BlockingClient("127.0.0.1", port, timeout=TIMEOUT) as c:
        c.start()
        assert c.wait_protocol(TIMEOUT)
        reply, _ = c.blocking_request(Message.request("bump", value))
        assert reply.reply_ok()


# -- watch ------------------------------------------------------------------------------------

def test_watch_prints_readings_as_they_arrive(peer):
    proc = start_tool("watch", f"127.0.0.1:{peer.port}", "^counter$", "--count", "3")
    try:
        wait_for_stderr(proc, "watching 1 sensor")
        bump(peer.port, 1001)
        bump(peer.port, 1002)
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
    assert proc.returncode == 0
    rows = [line.split() for line in out.decode().splitlines()]
    assert all(len(row) == 4 for row in rows), rows
    assert [(r[1], r[2]) for r in rows] == [("counter", "nominal")] * 3
    assert [r[3] for r in rows][1:] == ["1001", "1002"]
    assert float(rows[1][0]) <= float(rows[2][0])


def test_watch_regex_selects_sensors(device):
    result = tool("watch", addr(device), r"^a\.float", "--count", "2")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.decode().splitlines()]
    assert sorted(r[1] for r in rows) == ["a.float", "a.floatwithzero"]
    assert {r[3] for r in rows} == {"12.0"}


def test_watch_escapes_values_so_lines_keep_four_fields(device):
    from ctlwire.katcp import Sensor
    device.add_sensor(Sensor.string("motd", "Message", ""))
    device.get_sensor("motd").set_value("two words")
    result = tool("watch", addr(device), "motd", "--count", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split()[1:] == ["motd", "nominal", "two\\_words"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_watch_ends_normally_on_a_signal(device, sig):
    proc = start_tool("watch", addr(device))
    try:
        wait_for_stderr(proc, "watching 4 sensor")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
    assert proc.returncode == 0, err
    assert len(out.decode().splitlines()) >= 4  # every sensor's current reading


def test_watch_duration_ends_it(device):
    result = tool("watch", addr(device), "an.int", "--duration", "0.3")
    assert result.returncode == 0
    assert result.stdout.decode().split()[1:] == ["an.int", "nominal", "3"]


def test_watch_reports_a_lost_link_with_exit_3():
    server = DeviceTestServer("127.0.0.1", 0)
    server.start(timeout=TIMEOUT)
    proc = start_tool("watch", addr(server))
    try:
        wait_for_stderr(proc, "watching")
        server.stop(timeout=TIMEOUT)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
        server.stop(timeout=TIMEOUT)
    assert proc.returncode == 3
    assert b"lost the connection" in err


def test_watch_with_no_matching_sensor_is_exit_2(device):
    result = tool("watch", addr(device), "^nothing")
    assert result.returncode == 2
    assert result.stderr.decode().startswith("ctlwire-katcp watch: no sensor of")


def test_watch_bad_regex_is_a_usage_error():
    result = tool("watch", "127.0.0.1:1", "(")
    assert result.returncode == 2
    assert b"bad regex" in result.stderr


def test_watch_unreachable_is_exit_3():
    result = tool("watch", "--connect-timeout", "2", f"127.0.0.1:{free_port()}")
    assert result.returncode == 3
    assert b"refused" in result.stderr


# -- wait -------------------------------------------------------------------------------------

def test_wait_for_the_current_value_exits_0_at_once(device):
    result = tool("wait", addr(device), "a.float", "12", "-t", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split()[1:] == ["a.float", "nominal", "12.0"]


def test_wait_sees_a_later_change(device):
    before = len(device.messages)
    proc = start_tool("wait", addr(device), "a.discrete", "three", "--timeout", str(TIMEOUT))
    try:
        # once the tool has asked for sampling (list, then sampling), change the value
        device.until_messages(before + 2).result(TIMEOUT)
        device.get_sensor("a.discrete").set_value("three")
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
    assert proc.returncode == 0, err
    assert out.decode().split()[1:] == ["a.discrete", "nominal", "three"]


def test_wait_against_peer_servers(peer):
    bump(peer.port, 7)
    result = tool("wait", f"127.0.0.1:{peer.port}", "counter", "7", "-t", "5",
                  "--status", "nominal")
    assert result.returncode == 0, result.stderr


def test_wait_timeout_is_exit_1_with_the_last_value(device):
    result = tool("wait", addr(device), "an.int", "4", "-t", "0.3")
    assert result.returncode == 1
    assert result.stderr.decode().strip() == (
        "ctlwire-katcp wait: an.int did not become 4 within 0.3 s (last: 3)")


def test_wait_status_must_match_too(device):
    result = tool("wait", addr(device), "an.int", "3", "-t", "0.3", "--status", "warn")
    assert result.returncode == 1


def test_wait_unknown_sensor_is_exit_2(device):
    result = tool("wait", addr(device), "nope", "1", "-t", "1")
    assert result.returncode == 2
    assert b"no sensor 'nope'" in result.stderr


def test_wait_value_of_the_wrong_type_is_exit_2(device):
    result = tool("wait", addr(device), "an.int", "many", "-t", "1")
    assert result.returncode == 2
    assert b"not a value of integer sensor an.int" in result.stderr


def test_wait_needs_a_timeout():
    result = tool("wait", "127.0.0.1:1", "x", "1")
    assert result.returncode == 2
    assert b"--timeout" in result.stderr


def test_wait_unreachable_is_exit_3():
    result = tool("wait", "--connect-timeout", "2", f"127.0.0.1:{free_port()}", "x", "1",
                  "-t", "1")
    assert result.returncode == 3


# -- the request form keeps working with aiokatcp's options -----------------------------------

def test_request_timeout_option_bounds_the_reply_wait(peer):
    result = tool("--request-timeout", "0.3", "--connect-timeout", "5",
                  f"127.0.0.1:{peer.port}", "slow", "30")
    assert result.returncode == 3
    assert b"timed out" in result.stderr


def test_verbose_flag_may_come_before_a_subcommand(device):
    result = tool("-v", "wait", addr(device), "an.int", "3", "-t", "5")
    assert result.returncode == 0, result.stderr
