"""The compiled request path of the server (``ctlwire.katcp._dispatch``) against a
small pure-Python model of what a KATCP v5 server answers, over a real socket.

Random request streams (known, unknown, failing and malformed lines, with and without
message ids), cut into random chunks: the server must answer every line, in order, as
the model says.
"""
from __future__ import annotations

import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctlwire.katcp import DeviceServer, Message
from ctlwire.katcp.core import FailReply, escape_argument

TIMEOUT = 10.0


class Model(DeviceServer):
    VERSION_INFO = ("dispatch-model", 1, 0)
    BUILD_INFO = ("dispatch-model", 1, 0, "")

    def setup_sensors(self):
        pass

    def request_echo(self, req, msg):
        """Echo the arguments."""
        return req.make_reply("ok", *msg.arguments)

    def request_refuse(self, req, msg):
        """Fail with the first argument as the reason."""
        raise FailReply(msg.arguments[0].decode() if msg.arguments else "no")

    def request_chatty(self, req, msg):
        """Two informs, then the reply through req."""
        req.inform("one")
        req.inform("two")
        req.reply("ok", len(msg.arguments))


def model_answer(name: str, mid: bytes | None, args: list[bytes]) -> list[bytes]:
    """The lines a server owes for one well-formed request."""
    tag = name.encode() + (b"[" + mid + b"]" if mid else b"")
    esc = [escape_argument(a) for a in args]
    if name == "echo":
        return [b" ".join([b"!" + tag, b"ok"] + esc)]
    if name == "refuse":
        reason = args[0] if args else b"no"
        return [b"!" + tag + b" fail " + escape_argument(reason)]
    if name == "chatty":
        return [b"#" + tag + b" one", b"#" + tag + b" two",
                b"!" + tag + b" ok " + str(len(args)).encode()]
    return [b"!" + tag + b" invalid Unknown\\_request."]


requests = st.tuples(
    st.sampled_from(["echo", "refuse", "chatty", "nope", "watch-x"]),
    st.one_of(st.none(), st.integers(1, 2**31 - 1).map(lambda i: b"%d" % i)),
    st.lists(st.binary(min_size=1, max_size=12).filter(lambda b: b.isascii()), max_size=3),
)
bad_lines = st.sampled_from([b"?bad\\z", b"!?", b"?x[0]", b"hello"])


@pytest.fixture(scope="module")
def server():
    srv = Model("127.0.0.1", 0)
    srv.start(timeout=TIMEOUT)
    yield srv
    srv.stop(timeout=TIMEOUT)
    srv.join(timeout=TIMEOUT)


def read_lines(sock: socket.socket, buf: bytes, want_last: bytes) -> tuple[list[bytes], bytes]:
    lines: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            lines.append(line)
            if line == want_last:
                return lines, buf
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    raise AssertionError(f"no {want_last!r} after {lines!r}")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(requests, bad_lines), min_size=1, max_size=12), st.data())
def test_every_line_is_answered_in_order_as_the_model_says(server, items, data):
    wire = b""
    expected: list[bytes] = []
    for it in items:
        if isinstance(it, bytes):
            wire += it + b"\n"
            expected.append(b"#log error")  # prefix: the rest names the error
            continue
        name, mid, args = it
        wire += bytes(Message.request(name, *args, mid=mid)) + b"\n"
        expected += model_answer(name, mid, args)
    # a last watchdog marks the end of the answers
    wire += b"?watchdog[2147483647]\n"
    expected.append(b"!watchdog[2147483647] ok")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    sock = socket.create_connection(server.bind_address, timeout=TIMEOUT)
    try:
        buf = b""
        while buf.count(b"\n") < 3:  # the three #version-connect informs
            buf += sock.recv(65536)
        buf = buf.split(b"\n", 3)[3]
        for a, b in zip([0] + cuts, cuts + [len(wire)]):
            if b > a:
                sock.sendall(wire[a:b])
        got, _ = read_lines(sock, buf, b"!watchdog[2147483647] ok")
    finally:
        sock.close()
    assert len(got) == len(expected), (got, expected)
    for line, want in zip(got, expected):
        if want == b"#log error":
            assert line.startswith(b"#log error ") and b"Malformed" in line
        else:
            assert line == want
