"""Threaded KATCP clients against real servers on 127.0.0.1.

Two kinds of server: aiokatcp's ``DeviceServer`` (``ctlwire._testing.katcp_peer``) in a
child process, and a raw-socket fake driven line by line from the test, for katcp v4
behaviour and for exact control over what the client sees.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

from ctlwire.katcp.client import BlockingClient, CallbackClient, DeviceClient, KatcpTimeoutError
from ctlwire.katcp.core import KatcpClientError, KatcpVersionError, Message, ProtocolFlags
from ctlwire._testing.katcp_peer import PeerServer

TIMEOUT = 10.0  # bound on every wait; generous for a loaded CI box


# ---------------------------------------------------------------------- helpers / fixtures






class RawConn:
    """Server side of one accepted connection, read and written by the test."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(TIMEOUT)
        self.buf = b""

    def send(self, *lines: str) -> None:
        self.sock.sendall("".join(line + "\n" for line in lines).encode())

    def readline(self) -> bytes:
        if b"\n" not in self.buf:
            chunks = [self.buf]
            while True:
                data = self.sock.recv(1 << 20)
                if not data:
                    raise EOFError("client closed the connection")
                chunks.append(data)
                if b"\n" in data:
                    break
            self.buf = b"".join(chunks)
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def close(self) -> None:
        self.sock.close()


class RawServer:
    """A listening socket whose connections the test drives by hand."""

    V5 = ("#version-connect katcp-protocol 5.0-IM",
          "#version-connect katcp-library fake-1.0 1",
          "#version-connect katcp-device fake-1.0 1")
    V4 = ("#version fake-device-1.0", "#build-state fake-build-1.0")

    def __init__(self) -> None:
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.lsock.settimeout(TIMEOUT)
        self.port = self.lsock.getsockname()[1]
        self.conns: list[RawConn] = []

    def accept(self, greeting: tuple = V5) -> RawConn:
        sock, _ = self.lsock.accept()
        conn = RawConn(sock)
        self.conns.append(conn)
        if greeting:
            conn.send(*greeting)
        return conn

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.lsock.close()


@pytest.fixture
def raw():
    server = RawServer()
    try:
        yield server
    finally:
        server.close()


class Proxy:
    """A TCP relay between one client and a server that notes what the client sent, so a
    test knows when a request is in flight (the server has been handed it)."""

    def __init__(self, target_port: int) -> None:
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.lsock.settimeout(TIMEOUT)
        self.port = self.lsock.getsockname()[1]
        self.target_port = target_port
        self.sent = b""
        self.cond = threading.Condition()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        try:
            client, _ = self.lsock.accept()
        except OSError:
            return
        server = socket.create_connection(("127.0.0.1", self.target_port), timeout=TIMEOUT)
        for src, dst, note in ((client, server, True), (server, client, False)):
            t = threading.Thread(target=self._pump, args=(src, dst, note), daemon=True)
            t.start()
            self.threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, note: bool) -> None:
        src.settimeout(None)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                if note:
                    with self.cond:
                        self.sent += data
                        self.cond.notify_all()
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def wait_sent(self, fragment: bytes) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: fragment in self.sent, TIMEOUT)

    def close(self) -> None:
        self.lsock.close()
        for t in self.threads:
            t.join(TIMEOUT)


def started(client: DeviceClient) -> DeviceClient:
    client.start()
    assert client.wait_connected(TIMEOUT)
    return client


@pytest.fixture
def clients():
    made: list[DeviceClient] = []

    def make(cls=BlockingClient, *args, **kwargs):
        client = cls(*args, **kwargs)
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            if client.running():
                client.stop()
            client.join(TIMEOUT)


def wait_for(predicate, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


# ---------------------------------------------------------------------- connecting
def test_numeric_addresses_are_taken_as_they_are_and_names_are_resolved():
    from ctlwire.katcp._client_link import _literal_address

    assert _literal_address("127.0.0.1", 7) == [
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 7))]
    assert _literal_address("::1", 7) == [
        (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("::1", 7, 0, 0))]
    assert _literal_address("localhost", 7) == []  # left to getaddrinfo
    assert _literal_address("fe80::1%lo", 7) == []  # (a scope needs the resolver)


def test_connects_by_host_name_too(peer, clients):
    client = started(clients(BlockingClient, "localhost", peer.port))
    reply, _ = client.blocking_request(Message.request("watchdog"), timeout=TIMEOUT)
    assert reply.reply_ok()


# ---------------------------------------------------------------------- protocol detection
def test_v5_protocol_flags_come_from_version_connect(peer, clients):
    client = started(clients(BlockingClient, "127.0.0.1", peer.port))
    assert client.wait_protocol(TIMEOUT)
    assert client.protocol_flags.major == 5
    assert client.protocol_flags.message_ids
    assert client.versions["katcp-device"][0] == "ctlwire-client-peer-1.0"


def test_v4_server_detected_from_version_inform(raw, clients):
    client = clients(BlockingClient, "127.0.0.1", raw.port)
    client.start()
    raw.accept(RawServer.V4)
    assert client.wait_protocol(TIMEOUT)
    assert client.protocol_flags.major == 4
    assert not client.protocol_flags.message_ids


def test_preset_protocol_flags_disable_detection(raw, clients):
    client = clients(BlockingClient, "127.0.0.1", raw.port)
    client.preset_protocol_flags(ProtocolFlags(5, 0, b"IM"))
    client.start()
    conn = raw.accept(RawServer.V4)
    assert client.wait_connected(TIMEOUT)
    client.request(Message.request("ping"))
    assert conn.readline() == b"?ping[1]"
    assert client.protocol_flags.major == 5


# ---------------------------------------------------------------------- requests and mids
def test_blocking_request_returns_reply_and_its_informs(peer, clients):
    client = started(clients(BlockingClient, "127.0.0.1", peer.port))
    reply, informs = client.blocking_request(Message.request("informs", 3), timeout=TIMEOUT)
    assert reply.reply_ok() and reply.arguments == [b"ok", b"3"]
    assert [m.arguments for m in informs] == [[b"0"], [b"1"], [b"2"]]
    assert all(m.mid == reply.mid for m in informs)


def test_request_uses_mid_when_server_offers_ids(raw, clients):
    client = clients(BlockingClient, "127.0.0.1", raw.port)
    client.start()
    conn = raw.accept()
    assert client.wait_protocol(TIMEOUT)
    assert client.request(Message.request("a")) == b"1"
    assert client.request(Message.request("b", "x y")) == b"2"
    assert conn.readline() == b"?a[1]"
    assert conn.readline() == b"?b[2] x\\_y"


def test_use_mid_false_sends_no_mid(raw, clients):
    client = clients(BlockingClient, "127.0.0.1", raw.port)
    client.start()
    conn = raw.accept()
    assert client.wait_protocol(TIMEOUT)
    assert client.request(Message.request("a"), use_mid=False) is None
    assert conn.readline() == b"?a"


def test_forced_mid_on_v4_server_raises_version_error(raw, clients):
    client = clients(BlockingClient, "127.0.0.1", raw.port)
    client.start()
    raw.accept(RawServer.V4)
    assert client.wait_protocol(TIMEOUT)
    with pytest.raises(KatcpVersionError):
        client.request(Message.request("a"), use_mid=True)
    with pytest.raises(KatcpVersionError):
        client.blocking_request(Message.request("a", mid=7), timeout=TIMEOUT)


def test_v4_replies_and_informs_match_requests_by_name(raw, clients):
    client = clients(CallbackClient, "127.0.0.1", raw.port)
    client.start()
    conn = raw.accept(RawServer.V4)
    assert client.wait_protocol(TIMEOUT)
    got: list[tuple] = []
    done = threading.Event()

    def on_reply(msg, tag):
        got.append((tag, str(msg)))
        if len(got) == 3:
            done.set()

    def on_inform(msg, tag):
        got.append((tag, str(msg)))

    client.callback_request(Message.request("a"), reply_cb=on_reply, inform_cb=on_inform,
                            user_data=("A",))
    client.callback_request(Message.request("b"), reply_cb=on_reply, user_data=("B",))
    assert [conn.readline(), conn.readline()] == [b"?a", b"?b"]
    conn.send("!b ok 2", "#a part", "!a ok 1")
    assert done.wait(TIMEOUT)
    assert got == [("B", "!b ok 2"), ("A", "#a part"), ("A", "!a ok 1")]


def test_out_of_order_replies_are_matched_by_mid(raw, clients):
    client = clients(CallbackClient, "127.0.0.1", raw.port)
    client.start()
    conn = raw.accept()
    assert client.wait_protocol(TIMEOUT)
    replies: dict = {}
    done = threading.Event()

    def on_reply(msg, i):
        replies[i] = msg
        if len(replies) == 20:
            done.set()

    for i in range(20):
        client.callback_request(Message.request("x", i), reply_cb=on_reply, user_data=(i,))
    lines = [conn.readline() for _ in range(20)]
    for line in reversed(lines):  # answer newest first, echoing the argument
        head, arg = line.split()
        conn.send(f"!x{head[2:].decode()} ok {arg.decode()}")
    assert done.wait(TIMEOUT)
    assert all(replies[i].arguments == [b"ok", str(i).encode()] for i in range(20))


def test_many_outstanding_requests_each_get_their_own_reply(peer, clients):
    client = started(clients(CallbackClient, "127.0.0.1", peer.port))
    assert client.wait_protocol(TIMEOUT)
    n = 500
    replies: dict = {}
    done = threading.Event()

    def on_reply(msg, i):
        replies[i] = msg
        if len(replies) == n:
            done.set()

    for i in range(n):
        client.callback_request(Message.request("echo", f"value {i}"), reply_cb=on_reply,
                                user_data=(i,), timeout=TIMEOUT)
    assert done.wait(TIMEOUT * 2)
    assert all(replies[i].arguments == [b"ok", f"value {i}".encode()] for i in range(n))


def test_a_request_whose_reply_the_io_thread_reads_calls_it_back_from_stepping_aside(
        peer, clients, monkeypatch):
    """While a blocking caller reads the socket itself, the I/O thread steps aside and
    looks again only after a quiet interval; a callback or future request sent then
    must bring it back at once, or its reply would wait that interval unread. The
    intervals are stretched to a minute here, so only the call-back can deliver it."""
    from ctlwire.katcp import _client_link
    monkeypatch.setattr(_client_link, "_PARK_INTERVAL", 60.0)
    monkeypatch.setattr(_client_link, "_MAX_IDLE", 60.0)
    client = started(clients(CallbackClient, "127.0.0.1", peer.port))
    assert client.wait_protocol(TIMEOUT)
    # the test plays the blocking caller: it holds the reader role while a reply comes
    with client._read_lock:
        first = client.future_request(Message.request("watchdog"), timeout=TIMEOUT * 3)
        assert wait_for(lambda: client._parked)  # the I/O thread saw it and stepped aside
    second = client.future_request(Message.request("echo", "back"), timeout=TIMEOUT * 3)
    reply, _ = second.result(TIMEOUT)
    assert reply.arguments == [b"ok", b"back"]
    assert first.result(TIMEOUT)[0].reply_ok()
    assert not client._parked


def test_concurrent_blocking_requests_from_many_threads(peer, clients):
    client = started(clients(BlockingClient, "127.0.0.1", peer.port))
    assert client.wait_protocol(TIMEOUT)
    errors: list = []

    def worker(k):
        try:
            for i in range(40):
                reply, _ = client.blocking_request(Message.request("echo", k, i), timeout=TIMEOUT)
                if reply.arguments != [b"ok", str(k).encode(), str(i).encode()]:
                    errors.append(reply)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 3)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


# ---------------------------------------------------------------------- timeouts and failures
def test_blocking_request_timeout_is_a_clear_error(peer, clients):
    client = started(clients(BlockingClient, "127.0.0.1", peer.port))
    t0 = time.monotonic()
    with pytest.raises(KatcpTimeoutError, match="slow.*timed out"):
        client.blocking_request(Message.request("slow", 30), timeout=0.2)
    assert time.monotonic() - t0 < 5.0


def test_callback_request_timeout_gives_fail_reply(peer, clients):
    client = started(clients(CallbackClient, "127.0.0.1", peer.port))
    got: list = []
    done = threading.Event()
    client.callback_request(Message.request("slow", 30), timeout=0.2,
                            reply_cb=lambda msg: (got.append(msg), done.set()))
    assert done.wait(TIMEOUT)
    assert got[0].name == "slow" and got[0].arguments[0] == b"fail"
    assert b"timed out" in got[0].arguments[1]


def test_keepalive_informs_extend_the_timeout(raw, clients):
    client = clients(BlockingClient, "127.0.0.1", raw.port)
    client.start()
    conn = raw.accept()
    assert client.wait_protocol(TIMEOUT)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(client.blocking_request(
        Message.request("long"), 1.0, True)))  # documented order: timeout, keepalive
    worker.start()
    assert conn.readline() == b"?long[1]"
    for i in range(20):  # 20 x 0.1 s = 2 s, well past the 1 s timeout
        time.sleep(0.1)  # the time passing between informs is what is being tested
        conn.send(f"#long[1] {i}")
    conn.send("!long[1] ok")
    worker.join(TIMEOUT)
    reply, informs = result[0]
    assert reply.reply_ok() and len(informs) == 20


def test_link_drop_fails_in_flight_blocking_request_promptly(clients, impl):
    server = PeerServer(impl)
    try:
        proxy = Proxy(server.port)
        client = started(clients(BlockingClient, "127.0.0.1", proxy.port, auto_reconnect=False))
        outcome: list = []

        def call():
            t0 = time.monotonic()
            try:
                client.blocking_request(Message.request("slow", 60), timeout=60)
            except KatcpClientError as exc:
                outcome.append((exc, time.monotonic() - t0))

        worker = threading.Thread(target=call)
        worker.start()
        assert proxy.wait_sent(b"?slow")  # the request is in flight
        server.kill()
        worker.join(TIMEOUT)
        assert outcome and not isinstance(outcome[0][0], KatcpTimeoutError)
        assert outcome[0][1] < TIMEOUT
        proxy.close()
    finally:
        server.kill()


def test_link_drop_fails_callback_requests_with_fail_reply(raw, clients):
    client = clients(CallbackClient, "127.0.0.1", raw.port, auto_reconnect=False)
    client.start()
    conn = raw.accept()
    assert client.wait_protocol(TIMEOUT)
    got: list = []
    done = threading.Event()

    def on_reply(msg):
        got.append(msg)
        if len(got) == 3:
            done.set()

    for _ in range(3):
        client.callback_request(Message.request("x"), reply_cb=on_reply, timeout=60)
    for _ in range(3):
        conn.readline()
    conn.close()
    assert done.wait(TIMEOUT)
    assert all(m.arguments[0] == b"fail" for m in got)


def test_stop_fails_in_flight_request(peer, clients):
    proxy = Proxy(peer.port)
    client = started(clients(BlockingClient, "127.0.0.1", proxy.port))
    errors: list = []

    def call():
        try:
            client.blocking_request(Message.request("slow", 60), timeout=60)
        except KatcpClientError as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    assert proxy.wait_sent(b"?slow")
    client.stop()
    worker.join(TIMEOUT)
    assert not worker.is_alive() and len(errors) == 1
    client.join(TIMEOUT)
    assert not client.running()
    proxy.close()


def test_request_without_connection_raises_client_error(clients):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = clients(BlockingClient, "127.0.0.1", port, auto_reconnect=False)
    client.start()
    assert not client.wait_connected(0.2)
    with pytest.raises(KatcpClientError):
        client.blocking_request(Message.request("watchdog"), timeout=1)


def test_reconnects_after_server_restart(clients, impl):
    server = PeerServer(impl)
    try:
        client = started(clients(BlockingClient, "127.0.0.1", server.port))
        assert client.blocking_request(Message.request("watchdog"))[0].reply_ok()
        server.kill()
        assert client.wait_disconnected(TIMEOUT)
        server = PeerServer(impl, server.port)
        assert client.wait_connected(TIMEOUT)
        assert client.wait_protocol(TIMEOUT)
        assert client.blocking_request(Message.request("watchdog"))[0].reply_ok()
    finally:
        server.kill()


def test_reconnect_backoff_is_randomised_and_bounded(raw, clients):
    client = clients(DeviceClient, "127.0.0.1", raw.port)
    client.reconnect_delay_min = 0.02
    client.reconnect_delay_max = 0.1
    client.start()
    stamps = []
    for _ in range(6):  # accept and drop at once: the client keeps backing off
        raw.accept(greeting=()).close()
        stamps.append(time.monotonic())
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert all(gap >= 0.005 for gap in gaps)  # it waits between attempts
    assert max(gaps) < 2.0  # and the wait stays bounded


def test_blocking_request_from_a_callback_is_refused(peer, clients):
    client = started(clients(CallbackClient, "127.0.0.1", peer.port))
    errors: list = []
    done = threading.Event()

    def on_reply(msg):
        try:
            client.blocking_request(Message.request("watchdog"))
        except RuntimeError as exc:
            errors.append(exc)
        done.set()

    client.callback_request(Message.request("watchdog"), reply_cb=on_reply)
    assert done.wait(TIMEOUT)
    assert len(errors) == 1


# ---------------------------------------------------------------------- handler dispatch
class Recorder(DeviceClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list = []
        self.event = threading.Event()
        self.changes: list = []

    def note(self, kind, msg):
        self.seen.append((kind, str(msg)))
        self.event.set()

    def reply_echo(self, msg):
        self.note("reply_echo", msg)

    def inform_hello(self, msg):
        self.note("inform_hello", msg)

    def request_ping(self, msg):
        return Message.reply("ping", "ok", "pong")

    def unhandled_inform(self, msg):
        self.note("unhandled_inform", msg)

    def unhandled_reply(self, msg):
        self.note("unhandled_reply", msg)

    def notify_connected(self, connected):
        self.changes.append(connected)


def test_reply_goes_to_its_reply_handler(raw, clients):
    client = clients(Recorder, "127.0.0.1", raw.port)
    client.start()
    conn = raw.accept(greeting=())
    assert client.wait_connected(TIMEOUT)
    client.send_request(Message.request("echo", "x"))
    assert conn.readline() == b"?echo x"
    conn.send("!echo ok x")
    assert wait_for(lambda: ("reply_echo", "!echo ok x") in client.seen)


def test_unknown_reply_goes_to_unhandled_reply(raw, clients):
    client = clients(Recorder, "127.0.0.1", raw.port)
    client.start()
    conn = raw.accept(greeting=())
    conn.send("!other ok")
    assert wait_for(lambda: ("unhandled_reply", "!other ok") in client.seen)


def test_inform_goes_to_its_handler_and_unknown_to_fallback(raw, clients):
    client = clients(Recorder, "127.0.0.1", raw.port)
    client.start()
    conn = raw.accept(greeting=())
    conn.send("#hello world", "#mystery 1")
    assert wait_for(lambda: len(client.seen) == 2)
    assert client.seen == [("inform_hello", "#hello world"), ("unhandled_inform", "#mystery 1")]


def test_server_request_is_answered_by_request_handler(raw, clients):
    client = clients(Recorder, "127.0.0.1", raw.port)
    client.start()
    conn = raw.accept(greeting=())
    conn.send("?ping[5]")
    assert conn.readline() == b"!ping[5] ok pong"


def test_bad_line_from_server_is_skipped(raw, clients):
    client = clients(Recorder, "127.0.0.1", raw.port)
    client.start()
    conn = raw.accept(greeting=())
    conn.send("%garbage", "#hello again")
    assert wait_for(lambda: client.seen)
    assert client.seen == [("inform_hello", "#hello again")]


def test_notify_connected_reports_both_transitions(raw, clients):
    client = clients(Recorder, "127.0.0.1", raw.port, auto_reconnect=False)
    client.start()
    conn = raw.accept(greeting=())
    assert client.wait_connected(TIMEOUT)
    conn.close()
    assert wait_for(lambda: client.changes == [True, False])


def test_unhandled_reply_in_callback_client_when_no_request_matches(raw, clients):
    class C(CallbackClient):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.stray: list = []

        def unhandled_reply(self, msg):
            self.stray.append(str(msg))

    client = clients(C, "127.0.0.1", raw.port)
    client.start()
    conn = raw.accept()
    conn.send("!nobody[99] ok")
    assert wait_for(lambda: client.stray == ["!nobody[99] ok"])


def test_send_message_sends_any_message(raw, clients):
    client = clients(DeviceClient, "127.0.0.1", raw.port)
    client.start()
    conn = raw.accept(greeting=())
    assert client.wait_connected(TIMEOUT)
    client.send_message(Message.inform("note", "a b"))
    assert conn.readline() == b"#note a\\_b"


def test_client_can_be_restarted_after_stop(peer, clients):
    client = clients(BlockingClient, "127.0.0.1", peer.port)
    for _ in range(2):
        started(client)
        assert client.blocking_request(Message.request("watchdog"))[0].reply_ok()
        client.stop()
        client.join(TIMEOUT)
        assert not client.running()


# ---------------------------------------------------------------------- more edge cases
class BlockingRecorder(BlockingClient):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hellos: list = []

    def inform_hello(self, msg):
        self.hellos.append(str(msg))


def test_unsolicited_inform_after_blocking_request_is_dispatched(raw, clients):
    # The blocking caller read the socket itself; the I/O thread must take over again.
    client = clients(BlockingRecorder, "127.0.0.1", raw.port)
    client.start()
    conn = raw.accept()
    assert client.wait_protocol(TIMEOUT)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(
        client.blocking_request(Message.request("a"), timeout=TIMEOUT)))
    worker.start()
    assert conn.readline() == b"?a[1]"
    conn.send("!a[1] ok")
    worker.join(TIMEOUT)
    assert result and result[0][0].reply_ok()
    conn.send("#hello later")
    assert wait_for(lambda: client.hellos == ["#hello later"])


def test_callbacks_complete_while_another_thread_makes_blocking_requests(peer, clients):
    client = started(clients(CallbackClient, "127.0.0.1", peer.port))
    assert client.wait_protocol(TIMEOUT)
    got: list = []
    done = threading.Event()

    def on_reply(msg):
        got.append(msg)
        if len(got) == 50:
            done.set()

    stop = threading.Event()

    def blocker():
        while not stop.is_set():
            client.blocking_request(Message.request("watchdog"), timeout=TIMEOUT)

    worker = threading.Thread(target=blocker)
    worker.start()
    try:
        for i in range(50):
            client.callback_request(Message.request("echo", i), reply_cb=on_reply,
                                    timeout=TIMEOUT)
        assert done.wait(TIMEOUT)
    finally:
        stop.set()
        worker.join(TIMEOUT)
    assert sorted(int(m.arguments[1]) for m in got) == list(range(50))


def test_link_drop_fails_every_waiting_blocking_caller(raw, clients):
    client = clients(BlockingClient, "127.0.0.1", raw.port, auto_reconnect=False)
    client.start()
    conn = raw.accept()
    assert client.wait_protocol(TIMEOUT)
    errors: list = []

    def call(name):
        try:
            client.blocking_request(Message.request(name), timeout=60)
        except KatcpClientError as exc:
            errors.append(exc)

    workers = [threading.Thread(target=call, args=(n,)) for n in ("a", "b", "c")]
    for w in workers:
        w.start()
    for _ in workers:
        conn.readline()
    conn.close()
    for w in workers:
        w.join(TIMEOUT)
    assert len(errors) == 3 and not any(isinstance(e, KatcpTimeoutError) for e in errors)


def test_callback_request_without_connection_gets_fail_reply(clients):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = clients(CallbackClient, "127.0.0.1", port, auto_reconnect=False)
    client.start()
    got: list = []
    client.callback_request(Message.request("watchdog"), reply_cb=got.append)
    assert len(got) == 1 and got[0].arguments[0] == b"fail"


def test_preset_flags_count_as_protocol_information(clients):
    client = clients(BlockingClient, "127.0.0.1", 1)
    client.preset_protocol_flags(ProtocolFlags(5, 0, b"IM"))
    assert client.wait_protocol(0)
    assert client.protocol_flags.message_ids


def test_request_check_raises_on_fail_reply(peer, clients):
    from ctlwire.katcp.client import request_check

    client = started(clients(BlockingClient, "127.0.0.1", peer.port))
    reply, _ = request_check(client, RuntimeError, "echo", "x")
    assert reply.arguments == [b"ok", b"x"]
    with pytest.raises(RuntimeError, match="no-such-request"):
        request_check(client, RuntimeError, "no-such-request")


def test_send_request_refuses_other_message_types(raw, clients):
    client = clients(BlockingClient, "127.0.0.1", raw.port)
    with pytest.raises(ValueError):
        client.send_request(Message.inform("x"))


def test_output_to_a_server_that_does_not_read_is_queued_bounded_and_delivered(raw, clients):
    client = clients(Recorder, "127.0.0.1", raw.port)
    client.max_queued_output = 1024 * 1024
    client.start()
    conn = raw.accept(greeting=())  # reads nothing until told to
    assert client.wait_connected(TIMEOUT)
    big = Message.inform("blob", b"x" * (16 * 1024 * 1024))
    t0 = time.monotonic()
    client.send_message(big)  # more than the kernel takes: the rest is queued
    assert time.monotonic() - t0 < TIMEOUT
    with pytest.raises(KatcpClientError, match="queue"):
        client.send_message(Message.inform("more"))  # the queue is over its bound
    conn.send("#hello still-reading")  # the client keeps reading meanwhile
    assert wait_for(lambda: ("inform_hello", "#hello still-reading") in client.seen)
    assert conn.readline() == bytes(big)  # and the queued rest arrives intact



def test_overridden_handle_reply_sees_blocking_replies(peer, clients):
    class Logging(BlockingClient):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.logged: list = []

        def handle_reply(self, msg):
            self.logged.append(msg.name)
            return super().handle_reply(msg)

    client = started(clients(Logging, "127.0.0.1", peer.port))
    assert client.wait_protocol(TIMEOUT)
    reply, _ = client.blocking_request(Message.request("echo", "z"))
    assert reply.arguments == [b"ok", b"z"] and client.logged == ["echo"]


def test_random_interleavings_of_informs_and_replies_reach_their_requests(raw, clients):
    import random

    client = clients(CallbackClient, "127.0.0.1", raw.port)
    client.start()
    conn = raw.accept()
    assert client.wait_protocol(TIMEOUT)
    rng = random.Random(4)
    for round_ in range(25):
        k = rng.randint(1, 12)
        seen: dict = {i: [] for i in range(k)}
        done = threading.Event()
        replies = [0]

        def on_inform(msg, i):
            seen[i].append(("inform", msg.arguments[0]))

        def on_reply(msg, i):
            seen[i].append(("reply", msg.arguments[1]))
            replies[0] += 1
            if replies[0] == k:
                done.set()

        for i in range(k):
            client.callback_request(Message.request("job", i), reply_cb=on_reply,
                                    inform_cb=on_inform, user_data=(i,), timeout=TIMEOUT)
        mids = [conn.readline().split()[0][5:-1].decode() for _ in range(k)]
        # Each request gets 0-3 informs then its reply; requests are interleaved at random.
        script = {i: [f"#job[{mids[i]}] {n}" for n in range(rng.randint(0, 3))]
                  + [f"!job[{mids[i]}] ok {i}"] for i in range(k)}
        lines = []
        while script:
            i = rng.choice(sorted(script))
            lines.append(script[i].pop(0))
            if not script[i]:
                del script[i]
        conn.send(*lines)
        assert done.wait(TIMEOUT), f"round {round_}"
        for i in range(k):
            kinds = seen[i]
            assert kinds[-1] == ("reply", str(i).encode())
            assert [v for kind, v in kinds[:-1]] == [str(n).encode() for n in range(len(kinds) - 1)]


def test_future_request_resolves_to_reply_and_informs(peer, clients):
    client = started(clients(CallbackClient, "127.0.0.1", peer.port))
    assert client.wait_protocol(TIMEOUT)
    futures = [client.future_request(Message.request("informs", n)) for n in (1, 2)]
    (r1, i1), (r2, i2) = (f.result(TIMEOUT) for f in futures)
    assert (r1.arguments, len(i1)) == ([b"ok", b"1"], 1)
    assert (r2.arguments, len(i2)) == ([b"ok", b"2"], 2)
