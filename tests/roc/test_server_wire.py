"""RocServer seen from a hand-driven broker socket: the 7/MDP worker side on the wire."""
from __future__ import annotations

import time

import pytest
import zmq

from ctlwire import _json
from ctlwire.roc import rpc


@pytest.fixture
def fake_broker(ep):
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(ep.rocBroker)
    yield sock
    sock.close()


def recv(sock, timeout: float = 5.0) -> list:
    assert sock.poll(int(timeout * 1000)), "nothing received from the server"
    return sock.recv_multipart()


def wait_ready(sock) -> bytes:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        msg = recv(sock)
        if msg[3] == b"\x01":
            assert msg[1:] == [b"", b"MDPW01", b"\x01", b"cam"]
            return msg[0]
    raise AssertionError("no READY")


def test_server_registers_with_ready(fake_broker, serve, camera):
    serve("cam", camera)
    assert wait_ready(fake_broker)


def test_disconnect_makes_the_server_register_again_on_a_new_socket(fake_broker, serve,
                                                                   camera):
    serve("cam", camera)
    first = wait_ready(fake_broker)
    fake_broker.send_multipart([first, b"", b"MDPW01", b"\x05"])
    second = wait_ready(fake_broker)
    assert second != first


def test_slow_method_is_accompanied_by_heartbeats(fake_broker, serve, camera):
    serve("cam", camera)  # heartbeat 0.1 s
    worker = wait_ready(fake_broker)
    body = rpc.encode_request(7, "slow", (1.0,))
    fake_broker.send_multipart([worker, b"", b"MDPW01", b"\x02", b"client", b"", body])
    heartbeats = 0
    while True:
        msg = recv(fake_broker)
        if msg[3] == b"\x04":
            heartbeats += 1
        elif msg[3] == b"\x03":
            break
    assert msg[4:6] == [b"client", b""]
    assert _json.loads(msg[6]) == {"jsonrpc": "2.0", "id": 7, "result": 1.0}
    # 1 s at 0.1 s intervals gives ~10; half of that leaves room for a loaded box
    assert heartbeats >= 5


def test_garbage_from_the_broker_is_counted_and_serving_goes_on(fake_broker, serve, camera,
                                                                wait_for):
    srv = serve("cam", camera)
    worker = wait_ready(fake_broker)
    fake_broker.send_multipart([worker, b"junk"])
    fake_broker.send_multipart([worker, b"", b"MDPW01", b"\x02", b"c"])  # truncated
    wait_for(lambda: srv.malformed == 2, 5, "garbage to be counted")
    fake_broker.send_multipart([worker, b"", b"MDPW01", b"\x02", b"c", b"",
                                rpc.encode_request(1, "add", (2, 3))])
    while True:
        msg = recv(fake_broker)
        if msg[3] == b"\x03":
            break
    assert _json.loads(msg[6])["result"] == 5
