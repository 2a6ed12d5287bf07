"""A primary broker and its standby: the take-over rule, failover under SIGKILL, broker
restarts, and calls that run exactly once through all of it (real processes, loopback)."""
from __future__ import annotations

import threading
import time

import pytest

from ctlwire.roc import Endpoints, RocClient
from ctlwire.roc.ha import ACTIVE, PASSIVE, PRIMARY, STANDBY, PeerState

HB = "0.1"
#: docs/roc.md: calls resume within about 0.5 s of the primary's death (peer timeout
#: 0.5 s); the assertion allows ten times that for a loaded CI machine.
FAILOVER_LIMIT = 5.0


# -- the rule, without sockets ------------------------------------------------------
def test_standby_takes_over_only_on_a_client_vote_after_the_peer_fell_silent():
    ps = PeerState(STANDBY, timeout=0.5, now=0.0)
    assert not ps.client_vote(0.4)            # just started: waits to hear the primary
    ps.peer_message(ACTIVE, 10.0, now=1.0)
    assert not ps.client_vote(1.3)            # primary heard 0.3 s ago
    assert not ps.active
    assert not ps.peer_silent(1.4)
    assert ps.peer_silent(1.6)                # silent, but no client asked: still passive
    assert not ps.active
    assert ps.client_vote(1.6)                # silent and a client asks: take over
    assert ps.state == ACTIVE and ps.takeovers == 1


def test_a_returning_primary_stays_passive_while_the_standby_is_active():
    primary = PeerState(PRIMARY, timeout=0.5, now=100.0)
    assert not primary.peer_message(ACTIVE, 30.0, now=100.05)
    assert not primary.client_vote(100.2)
    assert primary.state == PASSIVE


def test_primary_takes_the_role_when_both_are_passive():
    primary = PeerState(PRIMARY, timeout=0.5, now=0.0)
    assert primary.peer_message(PASSIVE, 0.0, now=0.1)
    standby = PeerState(STANDBY, timeout=0.5, now=0.0)
    assert not standby.peer_message(PASSIVE, 0.0, now=0.1)  # never without a vote


@pytest.mark.parametrize("role,mine,theirs,stays", [
    (PRIMARY, 5.0, 100.0, False),   # active for less time: yields
    (STANDBY, 100.0, 5.0, True),    # active for longer: keeps it
    (STANDBY, 5.0, 5.0, False),     # a tie: the standby yields
    (PRIMARY, 5.0, 5.0, True),
])
def test_two_actives_resolve_to_one(role, mine, theirs, stays):
    ps = PeerState(role, timeout=0.5, now=0.0)
    assert ps.client_vote(10.0)               # peer silent since start: a vote wins
    assert ps.active_since == 10.0
    assert ps.peer_message(ACTIVE, theirs, now=10.0 + mine) is stays
    assert ps.yields == (0 if stays else 1)


# -- real brokers -------------------------------------------------------------------
class Caller(threading.Thread):
    """Calls ``counter.increment(i)`` in a loop, recording each result and when."""

    def __init__(self, client: RocClient) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.results: list[int] = []
        self.times: list[float] = []
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        try:
            while not self.stop.is_set():
                self.results.append(self.client.call("counter", "increment", i))
                self.times.append(time.monotonic())
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def longest_gap_after(self, t: float) -> float:
        before = [x for x in self.times if x <= t]
        after = [x for x in self.times if x > t]
        if not after:
            return float("inf")
        points = ([before[-1]] if before else [t]) + after
        return max(b - a for a, b in zip(points, points[1:]))

    def finish(self) -> None:
        self.stop.set()
        self.join(30)
        assert not self.is_alive()
        assert self.error is None, f"a call failed: {self.error!r}"


def _wait_calls(caller: Caller, n: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    start = len(caller.results)
    while len(caller.results) < start + n:
        assert caller.error is None, caller.error
        assert time.monotonic() < deadline, "calls did not go on"
        time.sleep(0.01)


def _exactly_once(client: RocClient, caller: Caller) -> None:
    # the counter's results are 1..N with no gap or repeat, and the server saw each
    # caller number once: every call ran exactly once
    n = len(caller.results)
    assert caller.results == list(range(1, n + 1))
    assert client.call("counter", "history") == list(range(n))


@pytest.fixture
def pair(free_port, spawn):
    """A primary (a plain ``rocbroker``), its standby and a counter server on both."""
    p, s = free_port(), free_port()
    primary = spawn("primary", str(p), HB)
    primary.wait_line("rocbroker: MDP")
    standby = spawn("standby", str(s), HB, str(p))
    standby.wait_line("rocbroker: MDP")
    server = spawn("counter", HB, str(p), str(s))
    server.wait_line("serving")
    return p, s, primary, standby


def test_calls_survive_the_primary_being_killed_and_run_exactly_once(pair):
    p, s, primary, _ = pair
    client = RocClient([Endpoints("127.0.0.1", p), Endpoints("127.0.0.1", s)], timeout=10.0)
    caller = Caller(client)
    try:
        caller.start()
        _wait_calls(caller, 50)
        killed = time.monotonic()
        primary.kill()  # SIGKILL
        _wait_calls(caller, 50)
        caller.finish()
        assert caller.longest_gap_after(killed) < FAILOVER_LIMIT
        assert client.failovers >= 1
        assert client.endpoint == Endpoints("127.0.0.1", s).rocBroker
        _exactly_once(client, caller)
    finally:
        caller.stop.set()
        client.close()


def test_the_old_primary_coming_back_does_not_make_two_active_brokers(pair, spawn):
    p, s, primary, _ = pair
    eps = [Endpoints("127.0.0.1", p), Endpoints("127.0.0.1", s)]
    client = RocClient(eps, timeout=10.0)
    caller = Caller(client)
    watch_p = RocClient(eps[0], timeout=0.5, retry=False)
    watch_s = RocClient(eps[1], timeout=0.5, retry=False)
    try:
        caller.start()
        _wait_calls(caller, 20)
        primary.kill()
        _wait_calls(caller, 20)
        assert watch_s.broker_state() == "active"
        back = spawn("primary", str(p), HB)
        back.wait_line("rocbroker: MDP")
        # for a while after the restart, never both active
        states = []
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            try:
                sp = watch_p.broker_state()
            except Exception:  # noqa: BLE001 - not yet listening
                sp = "down"
            states.append((sp, watch_s.broker_state()))
        assert ("active", "active") not in states
        assert states[-1] == ("passive", "active")
        _wait_calls(caller, 20)
        caller.finish()
        _exactly_once(client, caller)
    finally:
        caller.stop.set()
        for c in (client, watch_p, watch_s):
            c.close()


def test_calls_survive_a_broker_restart_in_place(free_port, spawn):
    base = str(free_port())
    broker = spawn("broker", base, HB)
    broker.wait_line("rocbroker: MDP")
    spawn("counter", HB, base).wait_line("serving")
    client = RocClient(Endpoints("127.0.0.1", int(base)), timeout=10.0)
    caller = Caller(client)
    try:
        caller.start()
        _wait_calls(caller, 50)
        broker.kill()
        restarted = spawn("broker", base, HB)
        restarted.wait_line("rocbroker: MDP")
        back = time.monotonic()
        _wait_calls(caller, 50)
        caller.finish()
        # servers re-register within about a heartbeat; calls resume with them
        assert caller.longest_gap_after(back) < FAILOVER_LIMIT
        _exactly_once(client, caller)
    finally:
        caller.stop.set()
        client.close()


def test_a_standby_asked_while_the_primary_lives_says_so_and_the_client_moves(pair):
    p, s, _, _ = pair
    # the standby first: it holds the call, hears the primary, answers "not active";
    # the client moves on to the primary and the call runs once there
    client = RocClient([Endpoints("127.0.0.1", s), Endpoints("127.0.0.1", p)], timeout=10.0)
    try:
        assert client.call("counter", "increment", "x") == 1
        assert client.endpoint == Endpoints("127.0.0.1", p).rocBroker
        assert client.call("counter", "history") == ["x"]
    finally:
        client.close()


def test_a_lone_primary_serves_its_first_calls_after_the_peer_timeout(free_port, spawn):
    base = free_port()
    spawn("primary", str(base), HB).wait_line("rocbroker: MDP")
    spawn("counter", HB, str(base)).wait_line("serving")
    c = RocClient(Endpoints("127.0.0.1", base), timeout=10.0)
    try:
        assert c.call("counter", "increment", 0) == 1   # held, then served
        assert c.broker_state() == "active"
    finally:
        c.close()


def test_no_peer_runs_alone_and_active_at_once(free_port, spawn):
    base = free_port()
    spawn("primary", str(base), HB, "--no-peer").wait_line("rocbroker: MDP")
    c = RocClient(Endpoints("127.0.0.1", base), timeout=10.0)
    try:
        assert c.broker_state() == "active"
    finally:
        c.close()
