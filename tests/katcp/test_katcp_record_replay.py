"""``ctlwire-katcp record`` / ``replay`` and ctlwire.katcp.recording, over loopback."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import selectors
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time

import pytest

from ctlwire._testing.proc import child_env
from ctlwire.katcp.recording import ReplayDevice, read_descriptions
from ctlwire.katcp.testutils import BlockingTestClient, DeviceTestServer
from ctlwire.tcs.events import EventWriter, create_database

TIMEOUT = 15.0
PEER_SCRIPT = os.path.join(os.path.dirname(__file__), "_mirror_peer.py")


def tool(*args: str, timeout: float = TIMEOUT * 3) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctlwire.cli.katcpcmd", *args],
                          capture_output=True, env=child_env(), timeout=timeout)


def start_tool(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ctlwire.cli.katcpcmd", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())


def read_line(stream, text: str) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        seen = []
        while sel.select(TIMEOUT):
            line = stream.readline().decode()
            if not line:
                break
            seen.append(line)
            if text in line:
                return line
    raise AssertionError(f"never saw {text!r}: {seen!r}")


def readings(path: str, name: str) -> list[tuple[str, str, float, float]]:
    """(value, status, timestamp, received) of a sensor in a recording, in order."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT e.event_id, a.name, a.value FROM event e JOIN attribute a "
            "USING (event_id) WHERE e.topic = ? ORDER BY e.event_id",
            (f"katcp.sensor.{name}",)).fetchall()
    finally:
        conn.close()
    events: dict = {}
    for eid, key, value in rows:
        events.setdefault(eid, {})[key] = value
    return [(e["__data"], e["status"], float(e["__data_time"]), float(e["__wire_time"]))
            for e in events.values()]


def write_recording(path: str, values: list[int], spacing: float, start: float = 1.7e9,
                    name: str = "level") -> list[float]:
    """A recording in the documented format: one integer sensor read ``spacing`` apart."""
    conn = create_database(path)
    w = EventWriter(conn)
    w.add(f"katcp.sensor-list.{name}", {
        "__system": "katcp", "__source": "sensor-list", "__key": name,
        "__data": "A level", "units": "m", "type": "integer", "params": json.dumps(["0", "1000"]),
        "__data_time": start, "__wire_time": start})
    times = []
    for i, v in enumerate(values):
        t = start + 1.0 + i * spacing
        times.append(t)
        w.add(f"katcp.sensor.{name}", {
            "__system": "katcp", "__source": "sensor", "__key": name, "__data": str(v),
            "status": "nominal", "__data_time": t - 0.001, "__wire_time": t})
    w.add("katcp.log.warn", {"__system": "katcp", "__source": "log", "__key": "warn",
                             "__data": "the end", "logger": "dev",
                             "__data_time": times[-1], "__wire_time": times[-1]})
    w.close()
    return times


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


# -- record --------------------------------------------------------------------------------

def test_record_keeps_descriptions_readings_and_logs(device, tmp_path):
    out = str(tmp_path / "night.sqlite")
    proc = start_tool("record", addr(device), "-o", out)
    try:
        read_line(proc.stderr, "recording")
        client = BlockingTestClient(None, *device.bind_address, timeout=TIMEOUT)
        client.start()
        assert client.wait_protocol(TIMEOUT)
        # once the recorder samples an.int, it is sent its current value: wait for that
        before = len(device.messages)
        deadline = time.monotonic() + TIMEOUT
        while not any(m.name == "sensor-sampling" for m in device.messages[before - 10:]):
            device.until_messages(len(device.messages) + 1).result(TIMEOUT)
            assert time.monotonic() < deadline
        for v in (1, 2, -3):
            device.get_sensor("an.int").set_value(v)
        device.log.warn("valve stuck")
        client.stop()
        # the recorder writes at most 0.5 s later; then stop it as an operator would
        expected = ["3", "1", "2", "-3"]
        deadline = time.monotonic() + TIMEOUT
        while (not os.path.exists(out) or [r[0] for r in readings(out, "an.int")] != expected):
            assert time.monotonic() < deadline, readings(out, "an.int")
            time.sleep(0.1)  # the file is written by another process: nothing to await
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
    assert proc.returncode == 0, err
    summary = err.decode().splitlines()[-1]
    m = re.search(r"(\d+) reading\(s\) of (\d+) sensor\(s\), (\d+) log message\(s\), "
                  r"(\d+) description\(s\): (\d+) event\(s\) written", summary)
    assert m, summary
    n_read, n_sensors, n_logs, n_desc, n_written = map(int, m.groups())
    assert (n_sensors, n_logs, n_desc) == (4, 1, 4)
    assert n_read + n_logs + n_desc == n_written  # the figures add up
    assert [(v, s) for v, s, _, _ in readings(out, "an.int")] == [
        ("3", "nominal"), ("1", "nominal"), ("2", "nominal"), ("-3", "nominal")]
    descs = {d["name"]: d for d in read_descriptions(out)}
    assert descs["a.float"] == {"name": "a.float", "description": "A Float.", "units": "",
                                "type": "float", "params": ["-123.4", "123.4"]}
    assert descs["a.discrete"]["params"] == ["one", "two", "three"]


def test_record_sensors_regex_and_duration(device, tmp_path):
    out = str(tmp_path / "part.sqlite")
    result = tool("record", addr(device), "-o", out, "--sensors", r"^a\.float",
                  "--duration", "0.5")
    assert result.returncode == 0, result.stderr
    assert sorted(d["name"] for d in read_descriptions(out)) == ["a.float", "a.floatwithzero"]
    assert readings(out, "an.int") == []
    assert [r[0] for r in readings(out, "a.float")] == ["12.0"]


def test_record_refuses_an_existing_recording(device, tmp_path):
    out = str(tmp_path / "night.sqlite")
    assert tool("record", addr(device), "-o", out, "--duration", "0.2").returncode == 0
    result = tool("record", addr(device), "-o", out, "--duration", "0.2")
    assert result.returncode == 2
    assert b"--append" in result.stderr
    assert tool("record", addr(device), "-o", out, "--duration", "0.2",
                "--append").returncode == 0
    assert len(readings(out, "an.int")) == 2


def test_record_unreachable_is_exit_3(tmp_path):
    result = tool("record", f"127.0.0.1:{free_port()}", "-o", str(tmp_path / "x.sqlite"),
                  "--connect-timeout", "1")
    assert result.returncode == 3
    assert b"refused" in result.stderr


@pytest.mark.parametrize("impl", ["aiokatcp", "katcp"])
def test_record_a_device_of_another_library(impl, tmp_path):
    if impl == "katcp":
        pytest.importorskip("katcp")
    spec = importlib.util.spec_from_file_location("_mirror_peer", PEER_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    peer = module.Peer(impl, 2, timeout=TIMEOUT)
    out = str(tmp_path / "peer.sqlite")
    try:
        proc = start_tool("record", f"127.0.0.1:{peer.port}", "-o", out, "--sensors", "^s")
        try:
            read_line(proc.stderr, "recording")
            client = BlockingTestClient(None, "127.0.0.1", peer.port, timeout=TIMEOUT)
            client.start()
            assert client.wait_protocol(TIMEOUT)
            try:
                for v in (5, 6, 7):
                    client.assert_request_succeeds("set", "s0001", v)
            finally:
                client.stop()
            deadline = time.monotonic() + TIMEOUT
            while [r[0] for r in readings(out, "s0001")][-1:] != ["7"]:
                assert time.monotonic() < deadline, readings(out, "s0001")
                time.sleep(0.1)  # written by another process
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=TIMEOUT)
        finally:
            proc.kill()
            proc.wait(TIMEOUT)
        assert proc.returncode == 0
        assert [r[0] for r in readings(out, "s0001")][-3:] == ["5", "6", "7"]
        assert sorted(d["name"] for d in read_descriptions(out)) == ["s0000", "s0001"]
    finally:
        peer.kill()


# -- replay -----------------------------------------------------------------------------------

def test_replay_read_back_by_aiokatcp_in_order_with_the_original_spacing(tmp_path):
    aiokatcp = pytest.importorskip("aiokatcp")
    path = str(tmp_path / "night.sqlite")
    values = list(range(40))
    times = write_recording(path, values, spacing=0.02)
    proc = start_tool("replay", path, "--paused", "--exit-at-end")
    try:
        port = int(read_line(proc.stdout, "READY").split(":")[-1])
        got: list = []

        async def read_back() -> None:
            client = await aiokatcp.Client.connect("127.0.0.1", port)
            try:
                reply, informs = await client.request("sensor-list")
                assert [(i.arguments[0], i.arguments[2], i.arguments[3]) for i in informs] == [
                    (b"level", b"m", b"integer")]
                done = asyncio.get_running_loop().create_future()

                def on_status(timestamp: bytes, n: bytes, name: bytes, status: bytes,
                              value: bytes) -> None:
                    if status == b"nominal":  # (the first, unknown, reading is the default)
                        got.append((int(value), time.monotonic(), float(timestamp)))
                        if len(got) == len(values) and not done.done():
                            done.set_result(None)

                # aiokatcp reads the annotations as types (this module postpones them)
                on_status.__annotations__ = dict.fromkeys(
                    ("timestamp", "n", "name", "status", "value"), bytes)
                client.add_inform_callback("sensor-status", on_status)
                await client.request("sensor-sampling", "level", "auto")
                await client.request("replay-start")
                await asyncio.wait_for(done, TIMEOUT)
            finally:
                client.close()
                await client.wait_closed()

        asyncio.run(read_back())
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
    assert proc.returncode == 0, err
    assert [v for v, _, _ in got] == values
    # spacing: each arrival against the recorded schedule, aligned on the median offset
    # (the engine paces on absolute deadlines, so errors do not accumulate). The issue's
    # 2 ms is measured by benchmarks/test_katcp_mirror.py; a test on a loaded CI machine
    # asserts it with an order of magnitude of slack
    offsets = [a - t for (_, a, _), t in zip(got, times)]
    middle = statistics.median(offsets)
    errors = [abs(o - middle) for o in offsets]
    assert statistics.median(errors) < 0.02, errors
    assert max(errors) < 0.5, errors
    # timestamps keep their spacing too (shifted to now)
    stamps = [ts for _, _, ts in got]
    assert abs((stamps[-1] - stamps[0]) - (times[-1] - times[0])) < 1e-3
    assert abs(stamps[0] - time.time()) < 60


def test_replay_serves_the_recorded_sensors_to_katcp_python(tmp_path):
    katcp = pytest.importorskip("katcp")
    path = str(tmp_path / "night.sqlite")
    write_recording(path, [1, 2, 3], spacing=0.01)
    with ReplayDevice(path, speedup=float("inf")) as device:
        device.start(timeout=TIMEOUT)
        assert device.finished.wait(TIMEOUT)
        client = katcp.BlockingClient("127.0.0.1", device.bind_address[1])
        client.start()
        try:
            client.wait_protocol(TIMEOUT)
            reply, informs = client.blocking_request(katcp.Message.request("sensor-value",
                                                                           "level"),
                                                     timeout=TIMEOUT)
            assert reply.reply_ok()
            assert informs[0].arguments[3:] == [b"nominal", b"3"]
            reply, informs = client.blocking_request(katcp.Message.request("sensor-list"),
                                                     timeout=TIMEOUT)
            assert informs[0].arguments == [b"level", b"A level", b"m", b"integer", b"0",
                                            b"1000"]
        finally:
            client.stop()
            client.join(TIMEOUT)


def test_replay_of_a_real_recording_and_loop(device, tmp_path):
    out = str(tmp_path / "night.sqlite")
    assert tool("record", addr(device), "-o", out, "--duration", "0.3").returncode == 0
    with ReplayDevice(out, speedup=float("inf"), loop=True) as replay:
        replay.start(timeout=TIMEOUT)
        client = BlockingTestClient(None, *replay.bind_address, timeout=TIMEOUT)
        client.start()
        try:
            assert client.wait_protocol(TIMEOUT)
            client.test_sensor_list([
                ("an.int", "An Integer.", "count", "integer", "-5", "5"),
                ("a.discrete", "A Discrete.", "", "discrete", "one", "two", "three"),
                ("a.float", "A Float.", "", "float", "-123.4", "123.4"),
                ("a.floatwithzero", "A Float with zero.", "", "float", "-123.0", "123.0")])
            deadline = time.monotonic() + TIMEOUT
            while replay.passes < 3:  # looping: pass after pass
                assert time.monotonic() < deadline
                status = client.assert_request_succeeds("replay-status")
                assert status[0] == "running"
            client.assert_sensor_equals("a.discrete", "one", status="nominal")
        finally:
            client.stop()
            client.join(TIMEOUT)


def test_replay_speedup_compresses_the_spacing(tmp_path):
    path = str(tmp_path / "night.sqlite")
    write_recording(path, list(range(11)), spacing=0.1)  # 1 s of readings
    started = time.monotonic()
    result = tool("replay", path, "--speedup", "10", "--exit-at-end")
    assert result.returncode == 0, result.stderr
    took = time.monotonic() - started
    assert took < 10  # at speedup 1 it would be 1 s of pacing; at 10, 0.1 s plus start-up
    assert re.search(rb"11 reading\(s\), 1 log message\(s\) in 1 pass", result.stderr)


def test_replay_of_a_file_that_is_not_a_recording_is_exit_2(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    result = tool("replay", str(bad))
    assert result.returncode == 2
    assert result.stderr.decode().startswith("ctlwire-katcp replay: ")
    empty = str(tmp_path / "empty.sqlite")
    create_database(empty).close()
    result = tool("replay", empty)
    assert result.returncode == 2
    assert b"no KATCP sensor descriptions" in result.stderr


def test_replay_on_a_busy_port_is_exit_3(tmp_path):
    path = str(tmp_path / "night.sqlite")
    write_recording(path, [1], spacing=0.01)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        result = tool("replay", path, "--port", str(s.getsockname()[1]))
    assert result.returncode == 3, result.stderr


def test_replay_stopped_during_a_long_gap_stops_at_once(tmp_path):
    path = str(tmp_path / "night.sqlite")
    write_recording(path, [1, 2], spacing=600.0)  # the second reading is 10 minutes away
    device = ReplayDevice(path, paused=True)
    first = threading.Event()

    class Watch:
        def update(self, sensor, reading):
            first.set()

    device.start(timeout=TIMEOUT)
    try:
        device.get_sensor("level").attach(Watch())
        device.start_replay()
        assert first.wait(TIMEOUT)  # the first reading is set; the replay waits
    finally:
        device.stop(timeout=TIMEOUT)
    # the wait for the next reading noticed the stop: the replay thread has ended
    assert device.finished.wait(TIMEOUT)
    assert device.readings == 1 and device.passes == 0


def test_replay_sets_every_reading_in_order_with_its_recorded_timestamp(tmp_path):
    path = str(tmp_path / "night.sqlite")
    times = write_recording(path, list(range(50)), spacing=0.002)
    device = ReplayDevice(path, paused=True)
    seen = []

    class Watch:
        def update(self, sensor, reading):
            seen.append(reading)

    device.start(timeout=TIMEOUT)
    try:
        device.get_sensor("level").attach(Watch())
        device.start_replay()
        assert device.finished.wait(TIMEOUT)
    finally:
        device.stop(timeout=TIMEOUT)
    assert [r.value for r in seen] == list(range(50))
    stamps = [r.timestamp for r in seen]
    # each reading keeps its recorded spacing (the timestamps are shifted, not re-spaced)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert all(abs(g - 0.002) < 1e-6 for g in gaps)
    assert device.stats.timed == 51 and device.logs == 1
