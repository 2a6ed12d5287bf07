"""The replay device's own writes: readings written by the replay thread, holding the GIL.

``ReplayDevice`` writes a reading of a sensor sampled only with ``auto`` straight to each
client's socket (``ctlwire.katcp._dispatch.send_if_idle``); a client whose earlier output
still waits gets it through the event loop, behind that output. These tests drive both
ways over loopback and check every client's stream line by line.
"""
from __future__ import annotations

import re
import select
import socket
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from ctlwire._ext import load_extension
from ctlwire.katcp.recording import ReplayDevice
from ctlwire.tcs.events import EventWriter, create_database

_dispatch = load_extension("ctlwire.katcp._dispatch")
send_whole = _dispatch.send_whole
send_if_idle = _dispatch.send_if_idle

TIMEOUT = 15.0
STATUS = re.compile(rb"^#sensor-status (\d+\.\d{6}) 1 (s\d) nominal (\d+)$")


def write_recording(path: str, n: int, spacing: float, sensors: int = 2) -> None:
    conn = create_database(path)
    w = EventWriter(conn, batch=5000)
    start = 1.7e9
    for j in range(sensors):
        w.add(f"katcp.sensor-list.s{j}", {
            "__system": "katcp", "__source": "sensor-list", "__key": f"s{j}",
            "__data": f"Sensor {j}", "units": "", "type": "integer", "params": "[]",
            "__data_time": start, "__wire_time": start})
    for i in range(n):
        t = start + 1.0 + i * spacing
        w.add(f"katcp.sensor.s{i % sensors}", {
            "__system": "katcp", "__source": "sensor", "__key": f"s{i % sensors}",
            "__data": str(i), "status": "nominal", "__data_time": t, "__wire_time": t})
    w.close()


class Client:
    """A raw KATCP client socket that reads whole lines."""

    def __init__(self, port: int, rcvbuf: int = 0) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""

    def send(self, line: bytes) -> None:
        self.sock.sendall(line + b"\n")

    def lines(self):
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                yield line
            data = self.sock.recv(65536)
            if not data:
                return
            self.buf += data

    def until(self, prefix: bytes) -> list[bytes]:
        seen = []
        for line in self.lines():
            seen.append(line)
            if line.startswith(prefix):
                return seen
        raise AssertionError(f"connection closed before {prefix!r}: {seen[-5:]!r}")

    def sample(self, names: bytes, strategy: bytes = b"auto") -> None:
        self.send(b"?sensor-sampling[1] " + names + b" " + strategy)
        self.until(b"!sensor-sampling[1]")

    def readings(self, bad: list[bytes], last: dict[bytes, int]) -> dict[bytes, list[int]]:
        """The values of the ``#sensor-status`` lines per sensor (see :func:`values_of`),
        read until each sensor of ``last`` has shown its last value. (Readings that go
        through the event loop may follow a reply sent after the replay ended.)"""
        lines: list[bytes] = []
        waiting = dict(last)
        for line in self.lines():
            lines.append(line)
            m = STATUS.match(line)
            if m is not None and waiting.get(m.group(2)) == int(m.group(3)):
                del waiting[m.group(2)]
                if not waiting:
                    return values_of(lines, bad)
        raise AssertionError(f"connection closed before {waiting!r}: {lines[-5:]!r}")

    def close(self) -> None:
        self.sock.close()


def values_of(lines: list[bytes], bad: list[bytes]) -> dict[bytes, list[int]]:
    """Values of the ``#sensor-status`` lines per sensor; any other ``#sensor-status``
    shape (a cut or merged line) goes to ``bad``."""
    out: dict[bytes, list[int]] = {}
    for line in lines:
        if line.startswith(b"#sensor-status"):
            m = STATUS.match(line)
            if m is None:
                bad.append(line)
            else:
                out.setdefault(m.group(2), []).append(int(m.group(3)))
    return out


# -- the compiled writes ---------------------------------------------------------------------

def test_send_whole_writes_all_nothing_or_reports_a_cut_and_errors():
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        assert send_whole(a.fileno(), b"#x 1\n") == 5
        assert b.recv(16) == b"#x 1\n"
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        # more than the socket holds: written up to full, then 50 ms for the rest
        big = b"y" * (8 << 20)
        t0 = time.monotonic()
        n = send_whole(a.fileno(), big, 0.05)
        assert 0 < n < len(big)
        assert time.monotonic() - t0 >= 0.04
        # full from the first byte: nothing written, at once
        assert send_whole(a.fileno(), b"#z\n", 5.0) == 0
        b.close()
        with pytest.raises(OSError):
            send_whole(a.fileno(), b"#z\n")
    finally:
        a.close()


def _tcp_pair(sndbuf: int = 4096, rcvbuf: int = 4096):
    lsock = socket.create_server(("127.0.0.1", 0))
    try:
        b = socket.socket()
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        b.connect(lsock.getsockname())
        a, _ = lsock.accept()
    finally:
        lsock.close()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    a.setblocking(False)
    b.settimeout(TIMEOUT)
    return a, b


def _lines(lengths: list[int]) -> bytes:
    return b"".join(b"#l%d " % i + b"x" * k + b"\n" for i, k in enumerate(lengths))


def test_send_whole_of_lines_stops_at_a_line_end_when_the_socket_fills():
    a, b = _tcp_pair()
    try:
        data = _lines([60 + i % 50 for i in range(5000)])
        n = send_whole(a.fileno(), data, 0.05, True)
        assert 0 < n < len(data) and data[n - 1:n] == b"\n"
        got = b""
        b.settimeout(0.2)
        try:
            while True:
                chunk = b.recv(65536)
                assert chunk
                got += chunk
        except socket.timeout:
            pass
        assert got == data[:n]  # what it said, a whole number of lines
        # a line that does not fit at all: nothing written (the socket is full now
        # unless the reads above made room; then the rest goes out in lines again)
        rest = data[n:]
        m = send_whole(a.fileno(), rest, 0.05, True)
        assert m == 0 or rest[m - 1:m] == b"\n"
    finally:
        a.close()
        b.close()


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=400))
def test_send_whole_of_lines_against_a_reader_delivers_every_line_in_order(lengths):
    """Property: written again and again from where it stopped, with a reader on the
    other end, every call ends at a line end (or writes all) and the reader gets the
    data exactly (the reference: the bytes themselves)."""
    a, b = _tcp_pair(8192, 8192)
    data = _lines(lengths)
    got = bytearray()

    def read():
        while len(got) < len(data):
            chunk = b.recv(65536)
            if not chunk:
                return
            got.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        done, calls = 0, 0
        while done < len(data) and calls < 100000:
            n = send_whole(a.fileno(), data[done:], 1.0, True)
            calls += 1
            if n:
                assert done + n == len(data) or data[done + n - 1] == 10
                done += n
            else:
                select.select([], [a], [], TIMEOUT)
        assert done == len(data)
        reader.join(TIMEOUT)
        assert bytes(got) == data
    finally:
        a.close()
        b.close()
        reader.join(TIMEOUT)


class _Transport:
    """Only what send_if_idle asks a transport: closing, and bytes it holds back."""

    def __init__(self) -> None:
        self.held = 0
        self.closing = False

    def get_write_buffer_size(self) -> int:
        return self.held

    def is_closing(self) -> bool:
        return self.closing


def test_send_if_idle_writes_only_when_no_output_waits():
    state = _dispatch.DispatchState(object(), {}, None, True)
    conn = _dispatch.ConnectionCore(state, None)
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        conn._transport = transport = _Transport()
        assert send_if_idle(conn, a.fileno(), b"#a\n") == 3
        conn._out = [b"#queued\n"]
        assert send_if_idle(conn, a.fileno(), b"#b\n") == 0
        conn._out = []
        conn._flush_queued = True
        assert send_if_idle(conn, a.fileno(), b"#c\n") == 0
        conn._flush_queued = False
        transport.held = 10
        assert send_if_idle(conn, a.fileno(), b"#d\n") == 0
        transport.held = 0
        conn._closing = True
        assert send_if_idle(conn, a.fileno(), b"#e\n") == 0
        conn._closing = False
        transport.closing = True  # (its socket may be closed, its number reused)
        assert send_if_idle(conn, a.fileno(), b"#g\n") == 0
        transport.closing = False
        assert send_if_idle(conn, a.fileno(), b"#f\n") == 3
        b.settimeout(TIMEOUT)
        assert b.recv(64) == b"#a\n#f\n"
    finally:
        a.close()
        b.close()


# -- the replay device ---------------------------------------------------------------------------

def _start(path: str, **kwargs) -> ReplayDevice:
    device = ReplayDevice(path, paused=True, **kwargs)
    device.start(timeout=TIMEOUT)
    return device


def _recorded_device(tmp_path, n: int, spacing: float, **kwargs) -> ReplayDevice:
    """A paused replay device of a recording of ``n`` readings (write_recording)."""
    path = str(tmp_path / "night.sqlite")
    write_recording(path, n, spacing=spacing)
    return _start(path, **kwargs)


def _replay_to_two_auto_clients(tmp_path, n: int, spacing: float) -> ReplayDevice:
    """Replay ``n`` readings of s0, s1 alternating to two clients sampling both with
    ``auto``; check that each got every reading in order; return the device (stopped)
    for its counters."""
    device = _recorded_device(tmp_path, n, spacing)
    clients = [Client(device.bind_address[1]) for _ in range(2)]
    try:
        for c in clients:
            c.sample(b"s0,s1")
        clients[0].send(b"?replay-start[2]")
        assert device.finished.wait(TIMEOUT)
        for c in clients:
            bad: list[bytes] = []
            got = c.readings(bad, {b"s0": n - 2, b"s1": n - 1})
            assert bad == []
            assert got[b"s0"] == list(range(0, n, 2))
            assert got[b"s1"] == list(range(1, n, 2))
        # every reading went to both clients, one way or the other, mostly the direct one
        assert device.direct_writes + device.loop_writes == 2 * n
        assert device.direct_writes > n
        assert device.cut_links == 0
        assert device.get_sensor("s1").read().value == n - 1
    finally:
        for c in clients:
            c.close()
        device.stop(timeout=TIMEOUT)
    return device


def test_auto_samplers_get_every_reading_written_by_the_replay_thread(tmp_path):
    _replay_to_two_auto_clients(tmp_path, 400, spacing=0.0005)


def test_readings_due_together_go_to_a_client_in_one_write(tmp_path):
    """Readings recorded at one time are due together: each auto client gets them in a
    few writes of whole lines, in order (with an ``event`` sampler between them: see
    test_other_strategies_and_auto_together_go_the_usual_way)."""
    # all at one time: batches of 64
    device = _replay_to_two_auto_clients(tmp_path, 600, spacing=0.0)
    # gathered: at most a write per client and batch of 64 (plus the 4 KiB splits)
    assert device.direct_calls * 10 < device.direct_writes


def test_lines_a_full_socket_did_not_take_follow_through_the_loop_in_order(tmp_path):
    """A gathered write that the socket takes only part of (whole lines: see
    ``send_whole(lines=True)``; simulated here) leaves the rest to the loop, and the
    client still gets every reading once, in order."""
    n = 600
    device = _recorded_device(tmp_path, n, 0.0)
    c = Client(device.bind_address[1])
    try:
        c.sample(b"s0,s1")
        real = device._send
        partial = []

        def send(conn, fd, data, timeout, lines=False):
            if lines and len(partial) < 3:  # the socket takes three lines, then is full
                head = b"".join(line + b"\n" for line in data.split(b"\n")[:3])
                partial.append(len(head))
                assert real(conn, fd, head, timeout, lines) == len(head)
                return len(head)
            return real(conn, fd, data, timeout, lines)

        device._send = send
        c.send(b"?replay-start[2]")
        assert device.finished.wait(TIMEOUT)
        bad: list[bytes] = []
        got = c.readings(bad, {b"s0": n - 2, b"s1": n - 1})
        assert bad == []
        assert got[b"s0"] == list(range(0, n, 2)) and got[b"s1"] == list(range(1, n, 2))
        assert partial and device.cut_links == 0
        assert device.direct_writes + device.loop_writes == n and device.loop_writes > 0
    finally:
        c.close()
        device.stop(timeout=TIMEOUT)


def test_requests_answered_meanwhile_never_split_a_reading(tmp_path):
    """Replies written by the event loop and readings written by the replay thread
    share one socket: every line the client gets is whole, and all arrive."""
    n = 3000
    device = _recorded_device(tmp_path, n, 0.0002)
    c = Client(device.bind_address[1])
    try:
        c.sample(b"s0,s1")
        c.send(b"?replay-start[2]")
        requests = 300
        sender = threading.Thread(target=lambda: [c.send(b"?sensor-value[%d] s0" % (100 + i))
                                                  for i in range(requests)])
        sender.start()
        lines = []
        replies = set()
        last = {b"s0": n - 2, b"s1": n - 1}  # the last value of each sensor
        for line in c.lines():  # until every reply and both last values came
            lines.append(line)
            if line.startswith(b"!sensor-value["):
                mid = int(line[len(b"!sensor-value["):line.index(b"]")])
                assert line.split(b" ")[1] == b"ok", line
                replies.add(mid)
            else:
                m = STATUS.match(line)
                if m is not None and last.get(m.group(2)) == int(m.group(3)):
                    del last[m.group(2)]
            if len(replies) == requests and not last:
                break
        sender.join(TIMEOUT)
        assert device.finished.wait(TIMEOUT)
        bad: list[bytes] = []
        got = values_of(lines, bad)
        assert bad == []
        assert got[b"s0"] == list(range(0, n, 2)) and got[b"s1"] == list(range(1, n, 2))
        assert replies == set(range(100, 100 + requests))
        for line in lines:  # nothing else but whole informs and replies
            assert line[:1] in (b"#", b"!") and b"#" not in line[1:].split(b" ")[0], line
    finally:
        c.close()
        device.stop(timeout=TIMEOUT)


@pytest.mark.parametrize("spacing", [0.001, 0.0], ids=["apart", "due-together"])
def test_other_strategies_and_auto_together_go_the_usual_way(tmp_path, spacing):
    """s0 also has an ``event`` sampler: its readings go through the sensor, s1's are
    written by the replay thread; recorded at one time, s1's gathered writes go out
    between s0's, and every stream keeps the recorded order."""
    n = 200 if spacing else 600
    device = _recorded_device(tmp_path, n, spacing)
    auto, event = Client(device.bind_address[1]), Client(device.bind_address[1])
    try:
        auto.sample(b"s0,s1")
        event.sample(b"s0", b"event")
        auto.send(b"?replay-start[2]")
        assert device.finished.wait(TIMEOUT)
        bad: list[bytes] = []
        got_auto = auto.readings(bad, {b"s0": n - 2, b"s1": n - 1})
        got_event = event.readings(bad, {b"s0": n - 2})
        assert bad == []
        assert got_auto[b"s0"] == list(range(0, n, 2))
        assert got_auto[b"s1"] == list(range(1, n, 2))
        assert got_event[b"s0"] == list(range(0, n, 2)) and b"s1" not in got_event
        # s0 has an event sampler: it went through the sensor; s1 only auto: written
        assert device.direct_writes + device.loop_writes == n // 2
    finally:
        auto.close()
        event.close()
        device.stop(timeout=TIMEOUT)


def test_a_client_that_stops_reading_gets_the_rest_through_the_loop_in_order(tmp_path):
    n = 6000
    device = _recorded_device(tmp_path, n, 0.001, speedup=100.0, max_write_buffer=64 << 20)
    c = Client(device.bind_address[1], rcvbuf=4096)
    try:
        c.sample(b"s0,s1")
        # the device's side of this client holds little: the socket fills at once
        (conn,) = list(device._conns)
        conn._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        c.send(b"?replay-start[2]")
        assert device.finished.wait(TIMEOUT)  # the client read nothing meanwhile
        assert device.loop_writes > 0 and device.cut_links == 0
        bad: list[bytes] = []
        got = c.readings(bad, {b"s0": n - 2, b"s1": n - 1})
        assert bad == []
        assert got[b"s0"] == list(range(0, n, 2)) and got[b"s1"] == list(range(1, n, 2))
        assert device.direct_writes + device.loop_writes == n
    finally:
        c.close()
        device.stop(timeout=TIMEOUT)


def test_long_readings_go_through_the_loop(tmp_path):
    path = str(tmp_path / "night.sqlite")
    conn = create_database(path)
    w = EventWriter(conn)
    start = 1.7e9
    w.add("katcp.sensor-list.blob", {
        "__system": "katcp", "__source": "sensor-list", "__key": "blob", "__data": "A blob",
        "units": "", "type": "string", "params": "[]",
        "__data_time": start, "__wire_time": start})
    values = ["x" * 10, "y" * 20000, "z" * 10]
    for i, v in enumerate(values):
        t = start + 1 + i * 0.01
        w.add("katcp.sensor.blob", {"__system": "katcp", "__source": "sensor", "__key": "blob",
                                    "__data": v, "status": "nominal",
                                    "__data_time": t, "__wire_time": t})
    w.close()
    device = _start(path)
    c = Client(device.bind_address[1])
    try:
        c.sample(b"blob")
        c.send(b"?replay-start[2]")
        assert device.finished.wait(TIMEOUT)
        # (the long one goes through the loop: read until the last value came)
        got: list[bytes] = []
        while not got or got[-1] != values[-1].encode():
            line = c.until(b"#sensor-status")[-1]
            got.append(line.rsplit(b" ", 1)[1])
        assert got[-3:] == [v.encode() for v in values]
        # the long one through the loop; the short ones straight, unless the reply to
        # ?replay-start was still waiting when the first came
        assert device.direct_writes + device.loop_writes == 3
        assert device.direct_writes >= 1 and device.loop_writes >= 1
    finally:
        c.close()
        device.stop(timeout=TIMEOUT)


def test_a_write_cut_mid_line_closes_only_that_client(tmp_path):
    """The compiled write reports a line it could not finish (the client's socket full
    for 0.1 s; simulated here by the write's answer): that client is closed, at once,
    and gets nothing more; the other client gets every reading."""
    n = 200
    device = _recorded_device(tmp_path, n, 0.0005)
    victim, other = Client(device.bind_address[1]), Client(device.bind_address[1])
    try:
        victim.sample(b"s0,s1")
        other.sample(b"s0,s1")
        (victim_conn,) = [k for k in device._conns
                          if k.address.endswith(":%d" % victim.sock.getsockname()[1])]
        real = device._send
        writes = []
        lines_before = []

        def send(conn, fd, data, timeout, lines=False):
            if conn is not victim_conn:
                return real(conn, fd, data, timeout, lines)
            writes.append(data)
            before = sum(w.count(b"\n") for w in writes[:-1])
            if before + data.count(b"\n") < 10:
                return real(conn, fd, data, timeout, lines)
            # the 10th reading is cut 5 bytes in (those 5 bytes are not sent here)
            head = b"".join(line + b"\n" for line in data.split(b"\n")[:9 - before])
            lines_before.append(before)
            assert not head or real(conn, fd, head, timeout, lines) == len(head)
            return len(head) + 5

        device._send = send
        other.send(b"?replay-start[2]")
        assert device.finished.wait(TIMEOUT)
        assert device.cut_links == 1 and len(lines_before) == 1  # nothing after the cut
        seen = []
        try:
            for line in victim.lines():  # until the device closes it
                seen.append(line)
        except ConnectionError:
            pass
        bad: list[bytes] = []
        # the nine readings written before the cut, whole, then the end
        assert values_of(seen, bad) == {b"s0": [0, 2, 4, 6, 8], b"s1": [1, 3, 5, 7]}
        readings = other.readings(bad, {b"s0": n - 2, b"s1": n - 1})
        assert bad == []
        assert readings[b"s0"] == list(range(0, n, 2))
        assert readings[b"s1"] == list(range(1, n, 2))
    finally:
        victim.close()
        other.close()
        device.stop(timeout=TIMEOUT)
