"""The broker's routing state machine, driven with plain lists (no sockets)."""
from __future__ import annotations

import pytest

from ctlwire import _json
from ctlwire._ext import load_extension
from ctlwire.roc import rpc

R = load_extension("ctlwire.roc._router")


class Sink(list):
    def take(self):
        out = list(self)
        self.clear()
        return out


@pytest.fixture
def sink():
    return Sink()


@pytest.fixture
def router(sink):
    return R.Router(sink.append, heartbeat=1.0, liveness=3, queue_timeout=2.0,
                    unknown_grace=0.5, max_queue=2)


def ready(w, service=b"cam"):
    return [w, b"", b"MDPW01", b"\x01", service]


def request(c, body=b'{"id":7}', service=b"cam"):
    return [c, b"", b"MDPC01", service, body]


def reply(w, c, body=b'{"result":1}'):
    return [w, b"", b"MDPW01", b"\x03", c, b"", body]


def test_request_is_routed_to_a_ready_worker(router, sink):
    router.handle(ready(b"W"), 0.0)
    router.handle(request(b"C"), 0.1)
    assert sink.take() == [[b"W", b"", b"MDPW01", b"\x02", b"C", b"", b'{"id":7}']]


def test_reply_goes_back_to_the_client_with_the_object_id(router, sink):
    router.handle(ready(b"W"), 0.0)
    router.handle(request(b"C"), 0.1)
    sink.take()
    router.handle(reply(b"W", b"C"), 0.2)
    assert sink.take() == [[b"C", b"", b"MDPC01", b"cam", b'{"result":1}']]


def test_request_waits_for_a_worker_then_is_dispatched(router, sink):
    router.handle(request(b"C"), 0.0)
    assert sink.take() == []
    router.handle(ready(b"W"), 0.1)
    assert sink.take()[0][:5] == [b"W", b"", b"MDPW01", b"\x02", b"C"]


def test_unknown_object_gets_no_worker_error_after_grace(router, sink):
    router.handle(request(b"C"), 0.0)
    router.tick(0.4)
    assert [m for m in sink.take() if m[0] == b"C"] == []
    router.tick(0.6)
    (msg,) = [m for m in sink.take() if m[0] == b"C"]
    body = _json.loads(msg[4])
    assert body["id"] == 7 and body["error"]["code"] == rpc.NO_WORKER
    assert "unknown object" in body["error"]["message"]


def test_router_deadline_tracks_the_earliest_queued_expiry(router):
    router.tick(0.0)
    router.handle(request(b"C"), 0.0)
    assert router.deadline == pytest.approx(0.5)


def test_queue_is_bounded(router, sink):
    for c in (b"C1", b"C2", b"C3"):
        router.handle(request(c), 0.0)
    (msg,) = sink.take()
    assert msg[0] == b"C3"
    assert _json.loads(msg[4])["error"]["code"] == rpc.QUEUE_FULL
    assert router.refused == 1


def test_several_workers_share_one_object_id(router, sink):
    router.handle(ready(b"W1"), 0.0)
    router.handle(ready(b"W2"), 0.0)
    router.handle(request(b"C1"), 0.1)
    router.handle(request(b"C2"), 0.1)
    assert sorted(m[0] for m in sink.take()) == [b"W1", b"W2"]


def test_busy_worker_gets_one_request_at_a_time(router, sink):
    router.handle(ready(b"W"), 0.0)
    router.handle(request(b"C1"), 0.1)
    router.handle(request(b"C2"), 0.1)
    assert [m[4] for m in sink.take()] == [b"C1"]
    router.handle(reply(b"W", b"C1"), 0.2)
    out = sink.take()
    assert [m[0] for m in out] == [b"C1", b"W"] and out[1][4] == b"C2"


def test_dead_busy_worker_fails_the_call_without_resending(router, sink):
    router.handle(ready(b"W1"), 0.0)
    router.handle(request(b"C"), 0.1)
    router.handle(ready(b"W2"), 0.2)
    sink.take()
    router.tick(3.5)  # W1 silent for more than 3 intervals
    to_client = [m for m in sink.take() if m[0] == b"C"]
    assert len(to_client) == 1
    assert _json.loads(to_client[0][4])["error"]["code"] == rpc.WORKER_LOST
    assert router.stats()["workers"] == 0  # W2 was silent too


def test_heartbeats_go_to_busy_workers_too(router, sink):
    router.handle(ready(b"W"), 0.0)
    router.handle(request(b"C"), 0.0)
    sink.take()
    router.tick(0.5)
    assert [b"W", b"", b"MDPW01", b"\x04"] in sink.take()


def test_heartbeat_from_unknown_worker_is_answered_with_disconnect(router, sink):
    router.handle([b"X", b"", b"MDPW01", b"\x04"], 0.0)
    assert sink.take() == [[b"X", b"", b"MDPW01", b"\x05"]]


def test_second_ready_is_answered_with_disconnect(router, sink):
    router.handle(ready(b"W"), 0.0)
    router.handle(ready(b"W"), 0.1)
    assert sink.take() == [[b"W", b"", b"MDPW01", b"\x05"]]
    assert router.stats()["workers"] == 0


def test_worker_may_not_register_mmi_names(router, sink):
    router.handle(ready(b"W", b"mmi.service"), 0.0)
    assert sink.take() == [[b"W", b"", b"MDPW01", b"\x05"]]


@pytest.mark.parametrize("service,body,expected", [
    (b"mmi.service", b"cam", b"200"),
    (b"mmi.service", b"other", b"404"),
    (b"mmi.echo", b"x", b"501"),
])
def test_mmi(router, sink, service, body, expected):
    router.handle(ready(b"W"), 0.0)
    router.handle(request(b"C", body, service), 0.1)
    assert sink.take() == [[b"C", b"", b"MDPC01", service, expected]]


def test_malformed_messages_are_dropped_and_counted(router, sink):
    router.handle([b"X"], 0.0)
    router.handle([b"X", b"", b"MDPX01", b"a"], 0.0)
    router.handle([b"X", b"", b"MDPW01", b"\x09"], 0.0)
    assert sink.take() == []
    assert router.malformed == 3


def test_worker_disconnect_removes_it(router, sink):
    router.handle(ready(b"W"), 0.0)
    router.handle([b"W", b"", b"MDPW01", b"\x05"], 0.1)
    router.handle(request(b"C"), 0.2)
    assert sink.take() == []  # queued: no worker any more
    assert router.stats()["workers"] == 0


def test_never_served_names_do_not_accumulate(router, sink):
    for i in range(2):
        router.handle(request(b"C", service=b"ghost%d" % i), 0.0)
    router.tick(1.0)
    assert router.stats()["queued"] == 0
    assert len(sink.take()) >= 2


def test_reply_from_an_idle_worker_is_not_forwarded(router, sink):
    router.handle(ready(b"W"), 0.0)
    router.handle(request(b"C"), 0.1)
    router.handle(reply(b"W", b"C"), 0.2)
    sink.take()
    router.handle(reply(b"W", b"C"), 0.3)  # a second answer to the same call
    assert sink.take() == [[b"W", b"", b"MDPW01", b"\x05"]]


def test_reply_for_another_client_is_not_forwarded(router, sink):
    router.handle(ready(b"W"), 0.0)
    router.handle(request(b"C"), 0.1)
    sink.take()
    router.handle(reply(b"W", b"X"), 0.2)
    out = sink.take()
    assert [m[0] for m in out if m[2] == b"MDPC01"] == [b"C"]  # C told: server lost
    assert _json.loads(out[0][4])["error"]["code"] == rpc.WORKER_LOST


# -- servers with several connections (routing ids sharing the group prefix) ----------
def conn(server: bytes, n: int) -> bytes:
    return R.GROUP_TAG + server * 8 + n.to_bytes(4, "big")


def dispatched_to(sink) -> list:
    return [m[0] for m in sink.take() if m[3] == b"\x02"]


def server_of(identity: bytes) -> bytes:
    return identity[len(R.GROUP_TAG):len(R.GROUP_TAG) + 1]


def test_a_call_goes_to_a_server_with_no_call_running(router, sink):
    for w in (conn(b"A", 1), conn(b"A", 2), conn(b"B", 1)):
        router.handle(ready(w), 0.0)
    router.handle(request(b"C1"), 0.1)
    router.handle(request(b"C2"), 0.1)
    assert [server_of(w) for w in dispatched_to(sink)] == [b"A", b"B"]


def test_a_busy_server_takes_calls_on_its_other_connections(router, sink):
    for w in (conn(b"A", 1), conn(b"A", 2), conn(b"B", 1)):
        router.handle(ready(w), 0.0)
    for c in (b"C1", b"C2", b"C3"):
        router.handle(request(c), 0.1)
    first, second, third = dispatched_to(sink)
    assert {first, third} == {conn(b"A", 1), conn(b"A", 2)}
    assert second == conn(b"B", 1)


def test_a_server_is_preferred_again_once_its_call_is_answered(router, sink):
    for w in (conn(b"A", 1), conn(b"A", 2), conn(b"B", 1)):
        router.handle(ready(w), 0.0)
    router.handle(request(b"C1"), 0.1)  # A busy
    router.handle(request(b"C2"), 0.1)  # B busy
    assert [server_of(w) for w in dispatched_to(sink)] == [b"A", b"B"]
    router.handle(reply(conn(b"B", 1), b"C2"), 0.2)  # B free again, A still busy
    sink.take()
    router.handle(request(b"C3"), 0.3)
    assert dispatched_to(sink) == [conn(b"B", 1)]


def test_workers_without_the_group_prefix_are_servers_of_their_own(router, sink):
    router.handle(ready(b"W1"), 0.0)
    router.handle(ready(b"W2"), 0.0)
    router.handle(request(b"C1"), 0.1)
    router.handle(request(b"C2"), 0.1)
    assert dispatched_to(sink) == [b"W1", b"W2"]


def test_calls_one_at_a_time_reuse_the_connection_just_freed(router, sink):
    for n in range(1, 5):
        router.handle(ready(conn(b"A", n)), 0.0)
    used = []
    for k in range(3):
        router.handle(request(b"C"), 0.1 + k)
        (w,) = dispatched_to(sink)
        used.append(w)
        router.handle(reply(w, b"C"), 0.2 + k)
        sink.take()
    assert used[0] == used[1] == used[2]  # a warm connection, not a round of cold ones


# -- pipelined connections (routing ids with PIPELINE_TAG and a depth) ---------------
def pconn(server: bytes, n: int, depth: int) -> bytes:
    return R.PIPELINE_TAG + server * 8 + n.to_bytes(4, "big") + bytes([depth])


def test_a_pipelined_connection_takes_calls_up_to_its_depth_then_the_next(router, sink):
    a1, a2 = pconn(b"A", 1, 3), pconn(b"A", 2, 3)
    router.handle(ready(a1), 0.0)
    router.handle(ready(a2), 0.0)
    for k in range(5):
        router.handle(request(b"C%d" % k), 0.1)
    used = dispatched_to(sink)
    # one connection carries the burst (few system calls), the next only when it is full
    assert sorted(used.count(w) for w in (a1, a2)) == [2, 3]
    assert used[:3] == [used[0]] * 3


def test_a_pipelined_connections_replies_match_its_calls_in_order(router, sink):
    a1 = pconn(b"A", 1, 4)
    router.handle(ready(a1), 0.0)
    for c in (b"C1", b"C2", b"C1"):
        router.handle(request(c, b'{"id":%s}' % c[1:]), 0.1)
    assert dispatched_to(sink) == [a1] * 3
    for c in (b"C1", b"C2", b"C1"):
        router.handle(reply(a1, c), 0.2)
    assert [m[0] for m in sink.take()] == [b"C1", b"C2", b"C1"]
    # an answer out of order (C2's while C1's call is the oldest) is a protocol error
    router.handle(request(b"C1"), 0.3)
    router.handle(request(b"C2"), 0.3)
    sink.take()
    router.handle(reply(a1, b"C2"), 0.4)
    out = sink.take()
    assert [m[3] for m in out if m[0] == a1] == [b"\x05"]        # DISCONNECT
    lost = [m for m in out if m[0] in (b"C1", b"C2")]
    assert sorted(m[0] for m in lost) == [b"C1", b"C2"]          # both told, once
    assert all(_json.loads(m[4])["error"]["code"] == rpc.WORKER_LOST for m in lost)


def test_a_lost_pipelined_connection_fails_each_of_its_calls_once(router, sink):
    a1 = pconn(b"A", 1, 8)
    router.handle(ready(a1), 0.0)
    for k in range(3):
        router.handle(request(b"C%d" % k, b'{"id":%d}' % k), 0.1)
    sink.take()
    router.tick(10.0)  # silent past its liveness
    errors = [_json.loads(m[4]) for m in sink.take() if m[2] == b"MDPC01"]
    assert sorted(e["id"] for e in errors) == [0, 1, 2]
    assert {e["error"]["code"] for e in errors} == {rpc.WORKER_LOST}
    assert router.stats()["lost"] == 3


def test_an_idle_server_is_preferred_to_a_pipelined_one_with_room(router, sink):
    router.handle(ready(pconn(b"A", 1, 8)), 0.0)
    router.handle(ready(conn(b"B", 1)), 0.0)
    router.handle(request(b"C1"), 0.1)
    router.handle(request(b"C2"), 0.1)
    router.handle(request(b"C3"), 0.1)
    used = [server_of(w) for w in dispatched_to(sink)]
    assert sorted(used[:2]) == [b"A", b"B"] and used[2] == b"A"


def test_queued_calls_fill_a_pipelined_connection_when_it_registers(router, sink):
    a1 = pconn(b"A", 1, 3)
    for k in range(2):                       # (the fixture's queue holds two)
        router.handle(request(b"C%d" % k), 0.0)
    router.handle(ready(a1), 0.1)
    assert dispatched_to(sink) == [a1, a1]
    router.handle(request(b"C2"), 0.2)       # room for one more
    router.handle(request(b"C3"), 0.2)       # full: it waits in the queue
    assert dispatched_to(sink) == [a1]
    router.handle(reply(a1, b"C0"), 0.3)     # an answer makes room: C3 goes out
    assert [m[0] for m in sink.take()] == [b"C0", a1]


def test_a_depth_byte_without_the_pipeline_tag_means_one_call(router, sink):
    w = conn(b"A", 1) + b"\x05"
    router.handle(ready(w), 0.0)
    router.handle(request(b"C1"), 0.1)
    router.handle(request(b"C2"), 0.1)
    assert dispatched_to(sink) == [w]


# -- extensions: progress, passive standby, directory -------------------------------
def partial(w, c, body=b'{"id":7,"progress":1}'):
    return [w, b"", b"MDPW01", b"\x06", c, b"", body]


def test_partial_is_passed_on_and_the_worker_stays_busy(router, sink):
    router.handle(ready(b"W"), 0.0)
    router.handle(request(b"C"), 0.1)
    sink.take()
    router.handle(partial(b"W", b"C"), 0.2)
    assert sink.take() == [[b"C", b"", b"MDPC01", b"cam", b'{"id":7,"progress":1}']]
    router.handle(request(b"D", b'{"id":8}'), 0.3)
    assert sink.take() == []            # still busy: the next call waits
    router.handle(reply(b"W", b"C"), 0.4)
    out = sink.take()
    assert out[0] == [b"C", b"", b"MDPC01", b"cam", b'{"result":1}']
    assert out[1][3] == b"\x02" and out[1][4] == b"D"
    assert router.stats()["partials"] == 1


def test_partial_from_a_worker_without_that_call_is_a_protocol_error(router, sink):
    router.handle(ready(b"W"), 0.0)
    router.handle(partial(b"W", b"C"), 0.1)
    assert sink.take() == [[b"W", b"", b"MDPW01", b"\x05"]]
    assert router.stats()["workers"] == 0


class Vote:
    """A stand-in for ha.PeerState: says yes once the peer is 'silent'."""

    def __init__(self):
        self.silent = False
        self.asked = 0

    def client_vote(self, now):
        self.asked += 1
        return self.silent


def test_a_passive_router_holds_calls_until_the_vote_makes_it_active(router, sink):
    vote = Vote()
    router.passive, router.ha, router.hold = True, vote, 1.0
    router.handle(ready(b"W"), 0.0)
    router.handle(request(b"C"), 0.1)
    assert sink.take() == [] and router.stats()["held"] == 1
    vote.silent = True
    router.tick(0.2)
    assert not router.passive
    assert [m[3] for m in sink.take() if m[0] == b"W"][0] == b"\x02"


def test_a_passive_router_answers_not_active_when_the_hold_ends(router, sink):
    router.passive, router.ha, router.hold = True, Vote(), 1.0
    router.handle(request(b"C"), 0.0)
    router.tick(1.5)
    out = [m for m in sink.take() if m[0] == b"C"]
    assert _json.loads(out[0][4])["error"]["code"] == rpc.NOT_ACTIVE
    assert _json.loads(out[0][4])["id"] == 7
    assert router.stats()["not_active"] == 1


def test_mmi_directory_and_state(router, sink):
    router.handle(ready(b"W1", b"cam"), 0.0)
    router.handle(ready(b"W2", b"dome"), 0.0)
    router.handle(request(b"C", b"", b"mmi.directory"), 0.1)
    router.handle(request(b"C", b"", b"mmi.state"), 0.1)
    out = sink.take()
    assert _json.loads(out[0][4]) == ["cam", "dome"]
    assert out[1][4] == b"active"
    router.passive = True
    router.handle(request(b"C", b"", b"mmi.state"), 0.2)
    assert sink.take()[0][4] == b"passive"   # MMI is answered while passive too
