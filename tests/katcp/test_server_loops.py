"""The device server on both event loops it may run on: uvloop (the default where
installed) and asyncio's own selector loop.

The rest of the suite runs on the default loop; ``CTLWIRE_KATCP_LOOP=asyncio`` runs it
all on asyncio's loop (the CI workflow does both). These tests pin the essentials on
each loop in every run.
"""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from ctlwire.katcp import DeviceServer, Sensor
from ctlwire.katcp.core import AsyncReply
from ctlwire.katcp.server import new_event_loop

uvloop = pytest.importorskip("uvloop")

TIMEOUT = 10.0
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


class LoopDevice(DeviceServer):
    VERSION_INFO = ("loop-device", 1, 0)
    BUILD_INFO = ("loop-device", 1, 0, "")

    def setup_sensors(self):
        self.level = Sensor.integer("level", "A level", "", [0, 10**6])
        self.add_sensor(self.level)

    async def request_slow_echo(self, req, msg):
        """Echo the arguments after awaiting."""
        await asyncio.sleep(0.01)
        return req.make_reply("ok", *msg.arguments)

    def request_later(self, req, msg):
        """Inform and reply from another thread."""
        def finish():
            req.inform("working")
            req.reply("ok", "done")
        threading.Thread(target=finish).start()
        raise AsyncReply()

    def request_loop_name(self, req, msg):
        """Name the class of the loop the server runs on."""
        return req.make_reply("ok", type(asyncio.get_running_loop()).__module__)


class Line:
    """A raw katcp connection: send lines, read lines until one matches."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""

    def send(self, line: bytes) -> None:
        self.sock.sendall(line + b"\n")

    def until(self, prefix: bytes) -> list[bytes]:
        """Lines up to and including the first one starting with ``prefix``."""
        seen: list[bytes] = []
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                seen.append(line)
                if line.startswith(prefix):
                    return seen
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        raise AssertionError(f"no line starting with {prefix!r}; got {seen!r}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=sorted(LOOPS))
def server(request):
    cls = type(f"LoopDevice_{request.param}", (LoopDevice,),
               {"loop_factory": staticmethod(LOOPS[request.param])})
    srv = cls("127.0.0.1", 0)
    srv.start(timeout=TIMEOUT)
    srv.loop_name = request.param
    try:
        yield srv
    finally:
        srv.stop(timeout=TIMEOUT)
        srv.join(timeout=TIMEOUT)


def test_server_runs_on_the_chosen_loop(server):
    conn = Line(server.bind_address[1])
    try:
        conn.send(b"?loop-name[3]")
        reply = conn.until(b"!loop-name[3]")[-1]
    finally:
        conn.close()
    assert reply.split()[1] == b"ok"
    assert reply.split()[2].startswith(server.loop_name.encode())


def test_requests_async_handlers_and_thread_replies(server):
    conn = Line(server.bind_address[1])
    try:
        conn.send(b"?watchdog[1]")
        conn.send(b"?slow-echo[2] a\\_b c")
        conn.send(b"?later[3]")
        conn.send(b"?no-such[4]")
        lines = conn.until(b"!no-such[4]")
        lines += [] if any(x.startswith(b"!slow-echo[2]") for x in lines) \
            else conn.until(b"!slow-echo[2]")
        lines += [] if any(x.startswith(b"!later[3]") for x in lines) \
            else conn.until(b"!later[3]")
    finally:
        conn.close()
    assert b"!watchdog[1] ok" in lines
    assert b"!slow-echo[2] ok a\\_b c" in lines
    assert lines.index(b"#later[3] working") < lines.index(b"!later[3] ok done")
    assert b"!no-such[4] invalid Unknown\\_request." in lines


def test_sensor_updates_from_another_thread_reach_the_client(server):
    conn = Line(server.bind_address[1])
    try:
        conn.send(b"?sensor-sampling[1] level event")
        conn.until(b"!sensor-sampling[1] ok")
        values = [str(v).encode() for v in range(1, 51)]
        feeder = threading.Thread(target=lambda: [server.level.set_value(int(v))
                                                  for v in values])
        feeder.start()
        feeder.join(TIMEOUT)
        got: list[bytes] = []
        while not got or got[-1] != values[-1]:
            line = conn.until(b"#sensor-status")[-1]
            got.append(line.split()[-1])
    finally:
        conn.close()
    # the value when sampling was set (0) may come after the reply; then every change,
    # in order
    if got[0] == b"0":
        got.pop(0)
    assert got == values


def test_a_client_that_vanishes_does_not_stop_the_others(server):
    port = server.bind_address[1]
    gone = Line(port)
    gone.send(b"?watchdog[1]")
    gone.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    gone.close()  # reset mid-conversation
    stay = Line(port)
    try:
        for i in range(1, 101):
            stay.send(b"?watchdog[%d]" % i)
        assert stay.until(b"!watchdog[100]")[-1] == b"!watchdog[100] ok"
    finally:
        stay.close()


def test_loop_choice_from_the_environment(monkeypatch):
    monkeypatch.setenv("CTLWIRE_KATCP_LOOP", "asyncio")
    loop = new_event_loop()
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
    finally:
        loop.close()
    monkeypatch.setenv("CTLWIRE_KATCP_LOOP", "uvloop")
    loop = new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    monkeypatch.setenv("CTLWIRE_KATCP_LOOP", "trio")
    with pytest.raises(ValueError, match="CTLWIRE_KATCP_LOOP='trio'"):
        new_event_loop()


def test_default_loop_is_uvloop_where_installed(monkeypatch):
    monkeypatch.delenv("CTLWIRE_KATCP_LOOP", raising=False)
    loop = new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_an_overridden_handle_request_sees_every_request():
    # The compiled path is only a shortcut for the base class's handle_request: a
    # subclass that overrides it is called instead, on either loop.
    seen = []

    class Counting(LoopDevice):
        def handle_request(self, connection, msg):
            seen.append(msg.name)
            if msg.name == "secret":
                connection._send(b"!secret[%s] ok intercepted\n" % msg.mid)
                return
            super().handle_request(connection, msg)

    srv = Counting("127.0.0.1", 0)
    assert not srv._fast_dispatch
    srv.start(timeout=TIMEOUT)
    conn = Line(srv.bind_address[1])
    try:
        conn.send(b"?watchdog[1]")
        conn.send(b"?secret[2]")
        conn.send(b"?no-such[3]")
        lines = conn.until(b"!no-such[3]")
    finally:
        conn.close()
        srv.stop(timeout=TIMEOUT)
        srv.join(timeout=TIMEOUT)
    assert seen == ["watchdog", "secret", "no-such"]
    assert b"!watchdog[1] ok" in lines and b"!secret[2] ok intercepted" in lines
    assert LoopDevice("127.0.0.1", 0)._fast_dispatch
