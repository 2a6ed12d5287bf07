"""tcs-replay and tcs-record, and the record -> replay round trip."""
from __future__ import annotations

import json
import os
import pty
import subprocess
import threading
import time

import pytest

from ctlwire.cli.tcs_record import main as record_main
from ctlwire.cli.tcs_replay import main as replay_main
from ctlwire.tcs.events import generate_database
from ctlwire.tcs.record import TCSRecorder
from ctlwire.tcs.server import TCSDBReplay, TCSSubscriber, ZMQServer

INF = float("inf")
TIMES = ("__data_time", "__wire_time")


@pytest.fixture
def gen_db(tmp_path):
    return generate_database(tmp_path / "gen.sqlite", 40, rate=1000.0)


def strip_times(event):
    return {k: v for k, v in event.items() if k not in TIMES}


def test_recording_replays_to_the_same_events(tmp_path, gen_db):
    server = ZMQServer("tcp://127.0.0.1:0")
    out = tmp_path / "rec.sqlite"
    rec = TCSRecorder(server.endpoint, out)
    try:
        assert server.wait_for_subscriber(timeout=5.0)
        source = TCSDBReplay(gen_db, speedup=INF, convert_number=True, convert_bool=True)
        sender = threading.Thread(target=server.start, args=(source,))
        sender.start()
        assert rec.run(count=40, duration=20.0) == 40
        sender.join(10)
    finally:
        rec.close()
        server.close()
    again = TCSDBReplay(str(out), speedup=INF, convert_number=True, convert_bool=True)
    original = TCSDBReplay(gen_db, speedup=INF, convert_number=True, convert_bool=True)
    got = [(t, strip_times(json.loads(p))) for t, p in again]
    want = [(t, strip_times(json.loads(p))) for t, p in original]
    assert got == want


def test_recorder_keeps_value_types(tmp_path):
    server = ZMQServer("tcp://127.0.0.1:0")
    out = tmp_path / "rec.sqlite"
    rec = TCSRecorder(server.endpoint, out)
    try:
        assert server.wait_for_subscriber(timeout=5.0)
        server.send_tcs_event("a.b.c", {"i": 3, "f": 2.5, "b": False, "s": "12", "n": None,
                                        "l": [1, 2]})
        assert rec.run(count=1, duration=10.0) == 1
    finally:
        rec.close()
        server.close()
    event = TCSDBReplay(str(out), convert_number=True, convert_bool=True)._create_event(1)
    assert strip_times(event) == {"i": 3, "f": 2.5, "b": False, "s": "12", "n": None,
                                  "l": "[1,2]"}


def test_replay_cli_waits_for_the_subscriber_and_sends_everything(spawn_replay, gen_db):
    proc, url = spawn_replay(gen_db, "--speedup", "inf", "--wait-subscriber", "30")
    with TCSSubscriber(url, timeout=10.0) as sub:
        got = [sub.recv(timeout=10.0) for _ in range(40)]
    assert None not in got
    assert proc.wait(timeout=20) == 0
    out = proc.stdout.read()
    assert "sent 40 = delivered 40 + dropped 0" in out
    assert "\r" not in out  # no status line when stdout is not a terminal


def test_replay_cli_exits_1_when_nobody_subscribes(gen_db):
    assert replay_main([gen_db, "--url", "tcp://127.0.0.1:0", "--wait-subscriber", "0.2",
                        "-q"]) == 1


def test_replay_cli_names_a_missing_database(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        replay_main([str(tmp_path / "missing.sqlite"), "-q"])
    assert exc.value.code == 2
    assert "missing.sqlite" in capsys.readouterr().err


def test_replay_cli_sends_mock_events_without_a_database(spawn_replay):
    proc, url = spawn_replay("--mock-sleep", "0.01", "--count", "3", "--wait-subscriber", "30")
    with TCSSubscriber(url) as sub:
        got = [sub.recv(timeout=10.0) for _ in range(3)]
    assert [t for t, _ in got] == ["lrs2.hardware.status"] * 3
    assert proc.wait(timeout=20) == 0


def test_replay_cli_loops_forever(spawn_replay, gen_db):
    _, url = spawn_replay(gen_db, "--speedup", "inf", "--loop", "--wait-subscriber", "30")
    with TCSSubscriber(url) as sub:
        got = [sub.recv(timeout=10.0) for _ in range(100)]  # more than one pass of 40
    assert None not in got


def test_replay_cli_shows_progress_on_a_terminal(spawn, tmp_path):
    db = generate_database(tmp_path / "slow.sqlite", 30, rate=20.0)  # 1.5 s of events
    master, slave = pty.openpty()
    try:
        proc = spawn("ctlwire.cli.tcs_replay", db, "--url", "tcp://127.0.0.1:0", "-q",
                     stdout=slave, stderr=subprocess.DEVNULL)
        os.close(slave)
        slave = None
        assert proc.wait(timeout=30) == 0
        text = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO once the child side is closed and drained
                break
            if not chunk:
                break
            text += chunk
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    assert b"sent 30" in text


def test_record_cli_writes_a_database(tmp_path, capsys):
    server = ZMQServer("tcp://127.0.0.1:0")
    out = tmp_path / "cli.sqlite"

    def feed():
        if server.wait_for_subscriber(timeout=10.0):
            for i in range(5):
                server.send_tcs_event("a.b.c", {"i": i})

    t = threading.Thread(target=feed)
    t.start()
    try:
        assert record_main([server.endpoint, "-o", str(out), "--count", "5",
                            "--duration", "20"]) == 0
    finally:
        t.join(10)
        server.close()
    assert "recorded 5 events" in capsys.readouterr().out
    assert [json.loads(p)["i"] for _, p in TCSDBReplay(str(out), speedup=INF,
                                                       convert_number=True)] == list(range(5))


def test_recorder_runs_in_a_worker_thread(tmp_path):
    server = ZMQServer("tcp://127.0.0.1:0")
    rec = TCSRecorder(server.endpoint, tmp_path / "rec.sqlite", flush_interval=0.05)
    worker = threading.Thread(target=rec.run, kwargs={"duration": 20.0})
    worker.start()
    try:
        assert server.wait_for_subscriber(timeout=5.0)
        server.send_tcs_event("a.b.c", {"i": 1})
        deadline = time.monotonic() + 10
        while rec.recorded < 1 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a counter another thread updates
        assert rec.recorded == 1
    finally:
        rec.stop()
        worker.join(10)
        rec.close()
        server.close()


def test_demo_section_runs(capsys):
    from ctlwire.cli._demo_tcs import run
    run()
    out = capsys.readouterr().out
    assert "recorder wrote 200 events" in out and "answer = None" in out


def test_replay_cli_realtime_option_replays_either_way(gen_db):
    # SCHED_FIFO may or may not be permitted; the replay must run in both cases
    import threading as _t
    result = []
    worker = _t.Thread(target=lambda: result.append(
        replay_main([gen_db, "--url", "tcp://127.0.0.1:0", "--speedup", "inf", "--realtime",
                     "-q"])))
    worker.start()  # own thread: a granted real-time policy dies with it
    worker.join(30)
    assert result == [0]
