"""The device server under abuse: bad lines, huge lines, slow and vanishing clients.

Raw sockets on loopback, so the tests see exactly what goes over the wire.
"""
from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from ctlwire.katcp import DeviceServer, Sensor
from ctlwire.katcp.core import AsyncReply

TIMEOUT = 10.0


class Device(DeviceServer):
    VERSION_INFO = ("robust", 1, 0)
    BUILD_INFO = ("robust", 1, 0, "")

    def setup_sensors(self):
        self.blob = Sensor.string("blob", "Large text value")
        self.add_sensor(self.blob)
        for i in range(2000):
            self.add_sensor(Sensor.integer(f"many.{i:04d}", f"Sensor number {i}"))
        self.late_replies = []

    def request_later(self, req, msg):
        """Reply from another thread after 50 ms."""
        def finish():
            req.inform("still here?")
            req.reply("ok")
            self.late_replies.append(req)
        threading.Timer(0.05, finish).start()
        raise AsyncReply()


def start(**kwargs):
    server = Device("127.0.0.1", 0, **kwargs)
    server.start(timeout=TIMEOUT)
    return server


@pytest.fixture
def server():
    srv = start(max_line_length=4096)
    try:
        yield srv
    finally:
        srv.stop(timeout=TIMEOUT)
        srv.join(timeout=TIMEOUT)


class Line:
    """Raw line-oriented client with bounded waits."""

    def __init__(self, address, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(address)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def lines(self, count, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while self.buf.count(b"\n") < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {count} lines: {self.buf[-300:]!r}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise AssertionError(f"connection closed: {self.buf[-300:]!r}")
            self.buf += chunk
        *got, self.buf = self.buf.split(b"\n", count)
        return got

    def until(self, prefix, timeout=TIMEOUT):
        """Read lines until one starts with ``prefix``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            (line,) = self.lines(1, max(0.01, deadline - time.monotonic()))
            if line.startswith(prefix):
                return line

    def read_to_eof(self, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        data = self.buf
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                return data, "reset"
            if not chunk:
                return data, "eof"
            data += chunk
        raise AssertionError("connection not closed in time")

    def close(self, reset=False):
        if reset:  # vanish: RST instead of an orderly close
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def greeted(server, **kwargs):
    client = Line(server.bind_address, **kwargs)
    client.lines(3)
    return client


def alive(server):
    client = greeted(server)
    try:
        client.send(b"?watchdog[9]\n")
        return client.lines(1) == [b"!watchdog[9] ok"]
    finally:
        client.close()


def wait_for(predicate, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_malformed_line_gets_log_error_and_connection_stays(server):
    client = greeted(server)
    try:
        client.send(b"?bad\\zname\n?watchdog\n")
        log_line, reply = client.lines(2)
        assert log_line.startswith(b"#log error ")
        assert b"Malformed" in log_line
        assert reply == b"!watchdog ok"
    finally:
        client.close()


@pytest.mark.parametrize("line", [b"hello", b"?", b"?[1]", b"?x[0]", b"?x[1]y", b" ?x",
                                  b"?x a\\", b"?x \x00", b"!"])
def test_each_kind_of_malformed_line_is_reported(server, line):
    client = greeted(server)
    try:
        client.send(line + b"\n?watchdog\n")
        assert client.lines(2)[0].startswith(b"#log error ")
        assert client.lines(0) == []
    finally:
        client.close()


def test_blank_lines_are_skipped(server):
    client = greeted(server)
    try:
        client.send(b"\n\r\n\n?watchdog\n")
        assert client.lines(1) == [b"!watchdog ok"]
    finally:
        client.close()


def test_over_long_line_is_reported_and_stream_resynchronises(server):
    client = greeted(server)
    try:
        client.send(b"?echo " + b"x" * 100_000 + b"\n?watchdog[3]\n")
        log_line, reply = client.lines(2)
        assert log_line.startswith(b"#log error ")
        assert reply == b"!watchdog[3] ok"
    finally:
        client.close()


def test_informs_and_replies_from_a_client_are_ignored(server):
    client = greeted(server)
    try:
        client.send(b"#note something\n!weird ok\n?watchdog\n")
        assert client.lines(1) == [b"!watchdog ok"]
    finally:
        client.close()


def test_line_split_across_many_packets(server):
    client = greeted(server)
    try:
        for byte in b"?watchdog[12]\n":
            client.send(bytes([byte]))
        assert client.lines(1) == [b"!watchdog[12] ok"]
    finally:
        client.close()


def test_slow_client_is_disconnected_and_others_keep_service():
    srv = start(max_write_buffer=256 * 1024, slow_client_grace=30.0)
    stop = threading.Event()
    try:
        slow = greeted(srv, rcvbuf=4096)
        slow.send(b"?sensor-sampling blob auto\n")
        fast = greeted(srv)

        def pump():
            n = 0
            while not stop.is_set() and n < 200_000:
                n += 1
                srv.blob.set_value("payload %d " % n + "y" * 1000)
                if n % 50 == 0:
                    time.sleep(0.001)  # let the loop breathe, as a real device would

        updater = threading.Thread(target=pump)
        updater.start()
        try:
            # The slow client never reads: the server must drop it...
            assert wait_for(lambda: len(srv.get_connections()) == 1, 30.0)
            # ...while the other client is still answered.
            for i in range(5):
                fast.send(b"?watchdog[%d]\n" % (i + 1))
                assert fast.until(b"!watchdog") == b"!watchdog[%d] ok" % (i + 1)
        finally:
            stop.set()
            updater.join(TIMEOUT)
        # Reading now, the slow client finds #disconnect at the end of its backlog.
        data, how = slow.read_to_eof(30.0)
        assert how == "eof"
        assert data.rstrip(b"\n").rsplit(b"\n", 1)[-1].startswith(b"#disconnect ")
        assert alive(srv)
        fast.close()
        slow.close()
    finally:
        stop.set()
        srv.stop(timeout=TIMEOUT)


def test_client_vanishing_mid_reply_does_not_hurt_the_server(server):
    for _ in range(5):
        client = greeted(server)
        client.send(b"?sensor-list\n?sensor-value\n")
        client.close(reset=True)
    assert wait_for(lambda: len(server.get_connections()) == 0)
    assert alive(server)


def test_client_vanishing_while_sampled(server):
    client = greeted(server)
    client.send(b"?sensor-sampling blob auto\n")
    client.until(b"!sensor-sampling")
    client.close(reset=True)
    for n in range(2000):
        server.blob.set_value("v%d" % n)
    assert wait_for(lambda: len(server.get_connections()) == 0)
    assert alive(server)


def test_two_hundred_concurrent_clients(server):
    clients = []
    try:
        for _ in range(200):
            clients.append(Line(server.bind_address))
        for i, client in enumerate(clients):
            client.send(b"?watchdog[%d]\n" % (i + 1))
        for i, client in enumerate(clients):
            assert client.until(b"!watchdog") == b"!watchdog[%d] ok" % (i + 1)
        clients[0].send(b"?client-list\n")
        assert clients[0].until(b"!client-list") == b"!client-list ok 200"
    finally:
        for client in clients:
            client.close()
    assert wait_for(lambda: len(server.get_connections()) == 0)
    assert alive(server)


def test_bulk_sampling_of_many_sensors_sends_every_initial_value(server):
    client = greeted(server)
    try:
        names = b",".join(b"many.%04d" % i for i in range(300))
        client.send(b"?sensor-sampling " + names + b" event\n")
        lines = client.lines(301)
        assert sum(1 for line in lines if line.startswith(b"#sensor-status")) == 300
        assert lines[-1].startswith(b"!sensor-sampling ok many.0000,")
    finally:
        client.close()


def test_late_reply_to_a_client_that_left_is_dropped_quietly(server):
    client = greeted(server)
    client.send(b"?later[5]\n")
    client.close(reset=True)
    assert wait_for(lambda: len(server.late_replies) == 1)
    assert alive(server)
