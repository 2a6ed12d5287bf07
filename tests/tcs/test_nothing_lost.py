"""Issue 14, "nothing lost, or told": real tcs-replay and tcs-record processes over
loopback, signals to a real recorder, refused outputs, damaged databases, steering."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ctlwire.tcs.events import generate_database
from ctlwire.tcs.transport import ZMQServer

BIN = Path(sys.executable).parent
INF = float("inf")


def cmd(name, *args, **kw):
    from ctlwire._testing.proc import child_env
    return subprocess.Popen([str(BIN / name), *map(str, args)], env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def recorded(path):
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT e.event_id, a.value FROM event e JOIN attribute a ON "
            "a.event_id = e.event_id AND a.name = 'i' ORDER BY e.event_id").fetchall()
    finally:
        conn.close()
    return [int(v) for _, v in rows]


def source_data(path):
    conn = sqlite3.connect(path)
    try:
        return [v for (v,) in conn.execute(
            "SELECT value FROM attribute WHERE name = '__data' ORDER BY event_id")]
    finally:
        conn.close()


def one_error_line(proc, out, err, status):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert proc.returncode == status, (proc.returncode, err)
    return lines


def test_unpaced_replay_into_the_recorder_arrives_complete_and_in_order(tmp_path):
    n = 20_000  # by hand: 200,000, three times running
    src = generate_database(tmp_path / "src.sqlite", n)
    out = tmp_path / "rec.sqlite"
    replay = cmd("tcs-replay", src, "--url", "tcp://127.0.0.1:0", "--speedup", "inf",
                 "--wait-subscriber", "60")
    first = replay.stdout.readline()  # "tcs-replay: publishing on tcp://127.0.0.1:PORT"
    assert "publishing on " in first, first
    url = first.rsplit(" ", 1)[1].strip()
    rec = cmd("tcs-record", url, "-o", out, "--count", n, "--duration", "120")
    r_out, r_err = replay.communicate(timeout=180)
    r_out = first + r_out
    c_out, c_err = rec.communicate(timeout=180)
    assert replay.returncode == 0, r_err
    assert rec.returncode == 0, c_err
    assert f"sent {n} = delivered {n} + dropped 0" in r_out
    conn = sqlite3.connect(out)
    got = [v for (v,) in conn.execute(
        "SELECT value FROM attribute WHERE name = '__data' ORDER BY event_id")]
    conn.close()
    assert got == source_data(src)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signalled_recorder_keeps_every_event_it_received(tmp_path, sig):
    server = ZMQServer("tcp://127.0.0.1:0", on_full="block")
    out = tmp_path / "rec.sqlite"
    rec = cmd("tcs-record", server.endpoint, "-o", out, "--flush-interval", "0.05")
    stop = threading.Event()
    sent = [0]

    def stream():
        while not stop.is_set():
            server.send_tcs_event("a.b.c", {"i": sent[0]})
            sent[0] += 1
            if sent[0] % 100 == 0:
                time.sleep(0.001)  # a steady stream, not a flood

    try:
        assert server.wait_for_subscriber(timeout=30)
        feeder = threading.Thread(target=stream)
        feeder.start()
        deadline = time.monotonic() + 60
        committed = 0
        while committed < 2000 and time.monotonic() < deadline:
            if out.exists():
                try:
                    committed = len(recorded(out))
                except sqlite3.Error:
                    pass
            time.sleep(0.05)  # polling a file another process writes
        assert committed >= 2000
        rec.send_signal(sig)  # in the middle of the stream
        c_out, c_err = rec.communicate(timeout=60)
        stop.set()
        feeder.join(30)
    finally:
        stop.set()
        server.close(linger=0)
    assert rec.returncode == 0, c_err
    got = recorded(out)
    assert got == list(range(len(got)))  # in order, no gap
    assert len(got) >= committed
    assert f"recorded {len(got)} events" in c_out
    assert signal.Signals(sig).name in c_out


def test_a_foreign_sqlite_file_is_refused_and_left_untouched(tmp_path):
    foreign = tmp_path / "app.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE settings (k TEXT, v TEXT)")
    conn.commit()
    conn.close()
    before = hashlib.sha256(foreign.read_bytes()).hexdigest()
    for extra in ([], ["--overwrite"], ["--append"]):
        proc = cmd("tcs-record", "tcp://127.0.0.1:1", "-o", foreign, "--duration", "1", *extra)
        out, err = proc.communicate(timeout=30)
        lines = one_error_line(proc, out, err, 2)
        assert len(lines) == 1 and lines[0].startswith("tcs-record: ")
        assert "not a TCS event database" in lines[0]
    assert hashlib.sha256(foreign.read_bytes()).hexdigest() == before
    assert sorted(os.listdir(tmp_path)) == ["app.sqlite"]


def _record_session(path, values, *extra):
    server = ZMQServer("tcp://127.0.0.1:0")
    proc = cmd("tcs-record", server.endpoint, "-o", path, "--count", len(values),
               "--duration", "60", *extra)
    try:
        assert server.wait_for_subscriber(timeout=30)
        for v in values:
            server.send_tcs_event("a.b.c", {"i": v, "__data_time": 1000.0 + v})
        out, err = proc.communicate(timeout=60)
    finally:
        server.close()
    return proc, out, err


def test_an_existing_recording_needs_append_or_overwrite(tmp_path):
    out = tmp_path / "night.sqlite"
    assert _record_session(out, [0, 1, 2])[0].returncode == 0
    proc = cmd("tcs-record", "tcp://127.0.0.1:1", "-o", out, "--duration", "1")
    o, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "--append" in err
    assert recorded(out) == [0, 1, 2]
    assert _record_session(out, [3, 4], "--append")[0].returncode == 0
    assert recorded(out) == [0, 1, 2, 3, 4]
    assert _record_session(out, [7], "--overwrite")[0].returncode == 0
    assert recorded(out) == [7]


def test_an_appended_session_does_not_replay_its_idle_gap(tmp_path):
    from ctlwire.tcs.steer import SteeredReplay
    out = tmp_path / "night.sqlite"
    assert _record_session(out, [0, 1])[0].returncode == 0
    # the second session's events are 1000 s of telescope time later
    assert _record_session(out, [1000, 1001], "--append")[0].returncode == 0
    got = []
    with SteeredReplay([str(out)], speedup=1.0, convert_number=True) as r:
        t0 = time.monotonic()
        r.run(lambda f: got.append(json.loads(f[1])["i"]))
        assert time.monotonic() - t0 < 30  # 2 s of replay, not 1000 s
    assert got == [0, 1, 1000, 1001]


def test_a_rotated_recording_replays_as_one_night(tmp_path):
    from ctlwire.tcs.steer import SteeredReplay
    out = tmp_path / "night.sqlite"
    server = ZMQServer("tcp://127.0.0.1:0", on_full="block")
    proc = cmd("tcs-record", server.endpoint, "-o", out, "--count", 3000, "--duration", "60",
               "--max-size", "0.05", "--batch", "500")
    try:
        assert server.wait_for_subscriber(timeout=30)
        for i in range(3000):
            server.send_tcs_event("a.b.c", {"i": i, "__data_time": 1000.0 + i * 1e-3,
                                            "pad": "x" * 50})
        o, err = proc.communicate(timeout=60)
    finally:
        server.close()
    assert proc.returncode == 0, err
    parts = sorted(str(p) for p in tmp_path.glob("night-*.sqlite"))
    assert len(parts) > 1 and not out.exists()
    got = []
    with SteeredReplay(parts, speedup=INF, convert_number=True) as r:
        r.run(lambda f: got.append(json.loads(f[1])["i"]))
    assert got == list(range(3000))


def test_a_window_replay_sends_exactly_the_events_inside_it(tmp_path):
    from ctlwire.tcs.steer import SteeredReplay
    db = generate_database(tmp_path / "w.sqlite", 1000, rate=100.0, start=2000.0)
    got = []
    with SteeredReplay([db], speedup=INF, start="+2.5", end="+4", convert_number=True) as r:
        r.run(lambda f: got.append(json.loads(f[1])["__data_time"]))
        assert r.stats.sent == len(got) == 151 and r.outside == 1000 - 151
    assert r.stats.sent == r.stats.delivered + r.stats.dropped


def test_several_databases_replay_merged_in_time_order(tmp_path):
    from ctlwire.tcs.steer import SteeredReplay
    a = generate_database(tmp_path / "a.sqlite", 300, rate=100.0, start=1000.0)
    b = generate_database(tmp_path / "b.sqlite", 300, rate=100.0, start=1000.004, seed=5)
    times = []
    with SteeredReplay([a, b], speedup=INF, sort_by="__wire_time") as r:
        r.run(lambda f: times.append(0))
    assert len(times) == 600
    conn = [sqlite3.connect(p) for p in (a, b)]
    want = sorted(float(v) for c in conn for (v,) in c.execute(
        "SELECT value FROM attribute WHERE name = '__data_time'"))
    for c in conn:
        c.close()
    got = []
    with SteeredReplay([b, a], speedup=INF) as r:
        r.run(lambda f: got.append(f[1]))
    # the replay rewrites times; the original order shows in the recorded positions
    assert len(got) == 600 and len(want) == 600


def _katcp(port, line, timeout=20.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall((line + "\n").encode())
        buf = b""
        name = line.split()[0][1:]
        while True:
            chunk = s.recv(65536)
            assert chunk, "connection closed"
            buf += chunk
            for ln in buf.decode().splitlines():
                if ln.startswith(f"!{name} "):
                    return ln


def test_a_replay_paused_over_katcp_sends_nothing_until_resumed(tmp_path):
    from ctlwire.tcs.control import ReplayControl
    from ctlwire.tcs.steer import SteeredReplay
    db = generate_database(tmp_path / "k.sqlite", 400, rate=100.0, start=1000.0)
    got = []
    r = SteeredReplay([db], speedup=1.0, convert_number=True)
    ctl = ReplayControl(r, "127.0.0.1", 0)
    ctl.start(timeout=10)
    port = ctl.bind_address[1]
    worker = threading.Thread(target=r.run, args=(lambda f: got.append(
        json.loads(f[1])["position"]),))
    worker.start()
    try:
        while len(got) < 5:
            time.sleep(0.01)  # polling a list the replay thread fills
        assert _katcp(port, "?pause") == "!pause ok"
        n = len(got)
        time.sleep(0.5)  # time in which a running replay would send ~50 events
        assert len(got) == n
        assert _katcp(port, "?step 3") == "!step ok 3"
        assert len(got) == n + 3
        reply = _katcp(port, "?seek +3")
        assert reply.startswith("!seek ok") and float(reply.split()[2]) == 1003.0
        assert _katcp(port, "?set-speedup 100") == "!set-speedup ok"
        assert _katcp(port, "?resume") == "!resume ok"
        worker.join(30)
        assert not worker.is_alive()
    finally:
        ctl.stop()
        r.close()
    conn = sqlite3.connect(db)
    positions = [float(v) for (v,) in conn.execute(
        "SELECT value FROM attribute WHERE name = 'position' ORDER BY event_id")]
    conn.close()
    # after the seek the replay goes on from the event at +3 s (event 301) to the end
    assert got[n + 3:] == positions[300:]


def _damage(path):
    """Overwrite pages in the middle of the file, keeping its header."""
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(os.urandom(4096 * 8))


def test_a_damaged_database_is_one_line_and_exit_2_after_the_good_events(tmp_path):
    db = generate_database(tmp_path / "d.sqlite", 20000)
    _damage(db)
    proc = cmd("tcs-replay", db, "--url", "tcp://127.0.0.1:0", "--speedup", "inf")
    out, err = proc.communicate(timeout=120)
    lines = one_error_line(proc, out, err, 2)
    assert lines and lines[-1].startswith("tcs-replay: ")
    assert [ln for ln in lines if "WARNING" not in ln] == [lines[-1]]
    assert "events before it were replayed" in lines[-1]


@pytest.mark.parametrize("args,says", [
    (["--wait-subscriber", "-5"], "-5"),
    (["--spin", "-1"], "-1"),
    (["--speedup", "nan"], "nan"),
    (["--speedup", "0"], "'0'"),
    (["--max-gap", "nan"], "nan"),
    (["--start", "yesterday"], "yesterday"),
    (["--katcp-port", "70000"], "70000"),
    (["--url", "127.0.0.1:5556"], "scheme"),
])
def test_replay_arguments_are_checked_when_parsed(tmp_path, args, says):
    db = generate_database(tmp_path / "a.sqlite", 5)
    proc = cmd("tcs-replay", db, *args)
    out, err = proc.communicate(timeout=30)
    lines = one_error_line(proc, out, err, 2)
    assert len(lines) == 1 and lines[0].startswith("tcs-replay: ") and says in lines[0]


def test_tcs_info_summarises_a_database(tmp_path):
    db = generate_database(tmp_path / "i.sqlite", 400, rate=100.0)
    proc = cmd("tcs-info", db, "--json", "--check")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    info = json.loads(out)
    assert info["events"] == 400 and info["topic_count"] == 4
    assert abs(info["span_s"] - 3.99) < 1e-6 and abs(info["rate_per_s"] - 100.0) < 1e-6
    assert info["problems"] == []


def test_tcs_info_refuses_a_foreign_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    proc = cmd("tcs-info", tmp_path / "notes.txt")
    out, err = proc.communicate(timeout=30)
    lines = one_error_line(proc, out, err, 2)
    assert len(lines) == 1 and "not a sqlite3 file" in lines[0]


def test_plot_without_matplotlib_says_so(tmp_path):
    import importlib.util
    if importlib.util.find_spec("matplotlib") is not None:
        pytest.skip("matplotlib is installed here")
    db = generate_database(tmp_path / "a.sqlite", 5)
    proc = cmd("tcs-replay", db, "--url", "tcp://127.0.0.1:0", "--speedup", "inf",
               "--plot", tmp_path / "p.png")
    out, err = proc.communicate(timeout=30)
    lines = one_error_line(proc, out, err, 2)
    assert len(lines) == 1 and "matplotlib" in lines[0]


def test_stats_json_adds_up(tmp_path):
    db = generate_database(tmp_path / "a.sqlite", 200, rate=2000.0)
    stats = tmp_path / "s.json"
    proc = cmd("tcs-replay", db, "--url", "tcp://127.0.0.1:0", "--speedup", "1",
               "--stats-json", stats)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    doc = json.loads(stats.read_text())
    assert doc["sent"] == doc["delivered"] + doc["dropped"] == 200
    assert sum(b["events"] for b in doc["lateness_histogram_us"]) == doc["sent"]


def _read_informs(port, line, timeout=20.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall((line + "\n").encode())
        buf = b""
        name = line.split()[0][1:]
        while True:
            chunk = s.recv(65536)
            assert chunk, "connection closed"
            buf += chunk
            lines = buf.decode().splitlines()
            if any(ln.startswith(f"!{name} ") for ln in lines):
                return lines


def test_tcs_replay_serves_its_katcp_control_port(tmp_path):
    db = generate_database(tmp_path / "k.sqlite", 2000, rate=100.0)  # 20 s at speed 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        kport = s.getsockname()[1]
    proc = cmd("tcs-replay", db, "--url", "tcp://127.0.0.1:0", "--katcp-port", kport)
    try:
        deadline = time.monotonic() + 30
        line = ""
        while "KATCP control port" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
        assert "KATCP control port" in line
        assert _katcp(kport, "?pause") == "!pause ok"
        lines = _read_informs(kport, "?sensor-value state")
        assert any("state" in ln and "paused" in ln for ln in lines), lines
        assert _katcp(kport, "?set-speedup 1000") == "!set-speedup ok"
        assert _katcp(kport, "?resume") == "!resume ok"
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "sent 2000 = delivered 2000 + dropped 0" in out


@pytest.mark.parametrize("which", ["url", "katcp"])
def test_a_port_in_use_is_one_line_and_exit_3(tmp_path, which):
    db = generate_database(tmp_path / "a.sqlite", 5)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        args = (["--url", f"tcp://127.0.0.1:{port}"] if which == "url" else
                ["--url", "tcp://127.0.0.1:0", "--katcp-port", port])
        proc = cmd("tcs-replay", db, *args)
        out, err = proc.communicate(timeout=60)
    lines = one_error_line(proc, out, err, 3)
    assert len(lines) == 1 and lines[0].startswith("tcs-replay: ") and str(port) in lines[0]


@pytest.mark.parametrize("command", ["tcs-replay", "tcs-record", "tcs-info"])
def test_version_and_unknown_options(command):
    proc = cmd(command, "--version")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "ctlwire" in out
    proc = cmd(command, "--no-such-option")
    out, err = proc.communicate(timeout=30)
    lines = one_error_line(proc, out, err, 2)
    assert len(lines) == 1 and lines[0].startswith(f"{command}: ")


def test_a_recorder_with_nothing_to_connect_to_exits_3_and_leaves_no_file(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    out = tmp_path / "none.sqlite"
    proc = cmd("tcs-record", f"tcp://127.0.0.1:{port}", "-o", out, "--duration", "1")
    o, err = proc.communicate(timeout=60)
    lines = one_error_line(proc, o, err, 3)
    assert lines[-1].startswith("tcs-record: ") and "nothing to connect to" in lines[-1]
    assert not out.exists()


def test_a_recorder_told_to_stop_exits_0_even_with_nothing_received(tmp_path):
    server = ZMQServer("tcp://127.0.0.1:0")
    proc = cmd("tcs-record", server.endpoint, "-o", tmp_path / "quiet.sqlite")
    try:
        assert server.wait_for_subscriber(timeout=30)
        proc.send_signal(signal.SIGTERM)
        o, err = proc.communicate(timeout=60)
    finally:
        server.close()
    assert proc.returncode == 0, err
    assert "recorded 0 events" in o and "SIGTERM" in o


def test_plot_draws_the_lateness_and_the_rate(tmp_path):
    pytest.importorskip("matplotlib")
    db = generate_database(tmp_path / "a.sqlite", 300, rate=1000.0)
    png = tmp_path / "p.png"
    proc = cmd("tcs-replay", db, tmp_path / "a.sqlite", "--url", "tcp://127.0.0.1:0",
               "--speedup", "1", "--plot", png)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_corrupt_events_are_passed_over_and_summed_up_in_one_line(tmp_path):
    from tcs_testlib import timed_event, write_db
    events = [timed_event(i, "a.b.c", 100.0 + i * 0.001) for i in range(1, 6)]
    events[2] = (3, "a.b.c", [("__data_time", "100.003", "number"),
                              ("bad", b"\xff\xfe", "string")])
    db = write_db(tmp_path / "c.sqlite", events)
    proc = cmd("tcs-replay", db, "--url", "tcp://127.0.0.1:0", "--speedup", "inf")
    out, err = proc.communicate(timeout=60)
    lines = one_error_line(proc, out, err, 2)
    assert len(lines) == 1 and "1 corrupt event(s) skipped" in lines[0]
    assert "event 3" in lines[0] and "UTF-8" in lines[0]
    assert "sent 4 = delivered 4 + dropped 0" in out
