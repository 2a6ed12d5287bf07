"""The pure election state machine, driven by an injected clock and seeded randomness."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctlwire.dc.election import (Election, LeaderElected, LeaderLost, Role, SendHeartbeat,
                                 SendVote, SendVoteRequest, Timings)

T = Timings.fast()
A, B, C = b"A" * 16, b"B" * 16, b"C" * 16


def member(mid: bytes = A, electorate: int = 3, live: int | None = None, seed: int = 1):
    e = Election(mid, T, now=0.0, rng=random.Random(seed))
    e.set_membership(electorate, electorate if live is None else live)
    return e


# --- timings ---------------------------------------------------------------------------

def test_default_timings_are_the_originals():
    t = Timings()
    assert (t.heartbeat, t.election_min, t.election_max, t.peer_timeout) == (1.0, 1.5, 2.0, 3.0)


@pytest.mark.parametrize("args", [(0.2, 0.15, 0.3, 0.6), (0.05, 0.3, 0.15, 0.6),
                                  (0.05, 0.15, 0.7, 0.6), (0, 0.15, 0.3, 0.6),
                                  (0.05, 0.15, 0.15, 0.6)])
def test_timings_out_of_order_are_rejected(args):
    with pytest.raises(ValueError, match="heartbeat < election_min"):
        Timings(*args)


def test_forget_timeout_below_peer_timeout_is_rejected():
    with pytest.raises(ValueError, match="forget_timeout"):
        Timings(0.05, 0.15, 0.3, 0.6, forget_timeout=0.5)


# --- single member behaviour ------------------------------------------------------------

def test_follower_waits_until_its_election_deadline():
    e = member()
    assert e.tick(e.deadline - 1e-6) == []
    assert e.role is Role.FOLLOWER


def test_election_deadline_lies_in_the_configured_range():
    for seed in range(50):
        e = member(seed=seed)
        assert T.election_min <= e.deadline <= T.election_max


def test_timeout_makes_a_candidate_for_the_next_term():
    e = member()
    assert e.tick(e.deadline) == [SendVoteRequest(1)]
    assert (e.role, e.term, e.voted_for) == (Role.CANDIDATE, 1, A)


def test_lone_member_elects_itself():
    e = member(electorate=1)
    out = e.tick(e.deadline)
    assert out == [SendVoteRequest(1), LeaderElected(1, A), SendHeartbeat(1)]
    assert e.is_leader


def test_majority_of_votes_makes_leader():
    e = member()
    e.tick(e.deadline)
    out = e.on_vote(B, 1, A, True, now=e.deadline)
    assert LeaderElected(1, A) in out and e.is_leader


def test_refused_vote_does_not_count():
    e = member()
    e.tick(e.deadline)
    assert e.on_vote(B, 1, A, False, now=e.deadline) == []
    assert e.role is Role.CANDIDATE


def test_vote_for_another_candidate_does_not_count():
    e = member()
    e.tick(e.deadline)
    e.on_vote(B, 1, C, True, now=e.deadline)
    assert e.role is Role.CANDIDATE


def test_leader_heartbeats_every_period():
    e = member(electorate=1)
    t0 = e.deadline
    e.tick(t0)
    assert e.tick(t0 + T.heartbeat / 2) == []
    assert e.tick(t0 + T.heartbeat) == [SendHeartbeat(1)]


def test_follower_grants_one_vote_per_term():
    e = member()
    assert e.on_vote_request(B, 1, now=0.01) == [SendVote(1, B, True)]
    assert e.on_vote_request(C, 1, now=0.02) == [SendVote(1, C, False)]


def test_repeated_request_from_same_candidate_is_granted_again():
    e = member()
    e.on_vote_request(B, 1, now=0.01)
    assert e.on_vote_request(B, 1, now=0.02) == [SendVote(1, B, True)]


def test_stale_vote_request_is_refused_with_current_term():
    e = member()
    e.on_heartbeat(B, 5, now=0.01)
    assert e.on_vote_request(C, 3, now=0.02) == [SendVote(5, C, False)]


def test_granting_a_vote_postpones_own_candidacy():
    e = member()
    first = e.deadline
    e.on_vote_request(B, 1, now=first - 0.01)
    assert e.tick(first) == []


def test_heartbeat_makes_sender_the_leader():
    e = member()
    assert e.on_heartbeat(B, 1, now=0.01) == [LeaderElected(1, B)]
    assert (e.leader, e.term) == (B, 1)


def test_repeated_heartbeat_reports_nothing_new():
    e = member()
    e.on_heartbeat(B, 1, now=0.01)
    assert e.on_heartbeat(B, 1, now=0.02) == []


def test_heartbeats_keep_the_follower_from_standing():
    e = member()
    now = 0.0
    for _ in range(100):
        now += T.heartbeat
        e.on_heartbeat(B, 1, now)
        assert e.tick(now) == []


def test_silent_leader_is_lost_and_a_new_election_starts():
    e = member()
    e.on_heartbeat(B, 1, now=0.0)
    out = e.tick(0.0 + T.election_max)
    assert out == [LeaderLost(1, B), SendVoteRequest(2)]


def test_stale_heartbeat_is_ignored():
    e = member()
    e.on_heartbeat(B, 3, now=0.0)
    assert e.on_heartbeat(C, 2, now=0.01) == []
    assert e.leader == B


def test_newer_term_makes_leader_step_down():
    e = member(electorate=1)
    e.tick(e.deadline)
    out = e.on_term(4, now=e.deadline)
    assert out == [LeaderLost(1, A)]
    assert (e.role, e.term) == (Role.FOLLOWER, 4)


def test_candidate_hearing_leader_of_same_term_follows_it():
    e = member()
    e.tick(e.deadline)
    assert e.on_heartbeat(B, 1, now=e.deadline) == [LeaderElected(1, B)]
    assert e.role is Role.FOLLOWER


def test_minority_does_not_stand_for_election():
    e = member(electorate=5, live=2)
    assert e.tick(e.deadline) == []
    assert (e.role, e.term) == (Role.FOLLOWER, 0)


def test_leader_cut_off_from_majority_steps_down():
    e = member()
    e.tick(e.deadline)
    e.on_vote(B, 1, A, True, now=e.deadline)
    e.set_membership(3, 1)
    assert e.tick(e.deadline + 0.01) == [LeaderLost(1, A)]
    assert e.role is Role.FOLLOWER


def test_membership_must_be_consistent():
    with pytest.raises(ValueError, match="live"):
        member().set_membership(2, 3)


# --- a simulated group ------------------------------------------------------------------

class Sim:
    """Members exchanging effects through a lossy, partitionable broadcast medium."""

    def __init__(self, n: int, seed: int, loss: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.ids = [bytes([65 + i]) * 16 for i in range(n)]
        self.members = {m: Election(m, T, 0.0, random.Random(seed * 31 + i))
                        for i, m in enumerate(self.ids)}
        self.alive = set(self.ids)
        self.blocked: set[frozenset[bytes]] = set()
        self.loss = loss
        self.now = 0.0
        self.elected: dict[int, set[bytes]] = {}
        for m in self.members.values():
            m.set_membership(n, n)

    def reach(self, a: bytes, b: bytes) -> bool:
        return b in self.alive and frozenset((a, b)) not in self.blocked

    def partition(self, side: set[bytes]) -> None:
        self.blocked = {frozenset((a, b)) for a in side for b in self.ids if b not in side}

    def deliver(self, sender: bytes, effects: list) -> None:
        queue = [(sender, e) for e in effects]
        while queue:
            src, eff = queue.pop(0)
            if isinstance(eff, LeaderElected):
                self.elected.setdefault(eff.term, set()).add(eff.leader)
                continue
            if isinstance(eff, LeaderLost):
                continue
            for dst in self.ids:
                if dst == src or not self.reach(src, dst) or self.rng.random() < self.loss:
                    continue
                m = self.members[dst]
                if isinstance(eff, SendHeartbeat):
                    out = m.on_heartbeat(src, eff.term, self.now)
                elif isinstance(eff, SendVoteRequest):
                    out = m.on_vote_request(src, eff.term, self.now)
                else:
                    out = m.on_vote(src, eff.term, eff.candidate, eff.granted, self.now)
                queue.extend((dst, e) for e in out)

    def run(self, seconds: float, step: float = 0.01) -> None:
        for _ in range(int(seconds / step)):
            self.now += step
            for mid in self.ids:
                if mid in self.alive:
                    m = self.members[mid]
                    live = sum(1 for o in self.ids if o == mid or self.reach(mid, o))
                    m.set_membership(len(self.ids), live)
                    self.deliver(mid, m.tick(self.now))

    def leaders(self) -> set[bytes]:
        return {m for m in self.alive if self.members[m].is_leader}

    def agreed_leader(self) -> bytes | None:
        views = {self.members[m].leader for m in self.alive}
        return views.pop() if len(views) == 1 else None


def test_simulated_group_agrees_on_one_leader():
    sim = Sim(5, seed=3)
    sim.run(2.0)
    assert len(sim.leaders()) == 1 and sim.agreed_leader() in sim.leaders()


def test_simulated_leader_death_gives_a_new_leader():
    sim = Sim(3, seed=4)
    sim.run(2.0)
    old = sim.agreed_leader()
    sim.alive.discard(old)
    sim.run(2.0)
    new = sim.agreed_leader()
    assert new is not None and new != old


def test_simulated_minority_partition_elects_nobody():
    sim = Sim(5, seed=5)
    sim.run(2.0)
    leader = sim.agreed_leader()
    minority = {leader, next(m for m in sim.ids if m != leader)}
    sim.partition(minority)
    sim.run(3.0)
    assert not any(sim.members[m].is_leader for m in minority)
    assert len(sim.leaders()) == 1


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 5), loss=st.sampled_from([0, 0.1, 0.3]),
       cut=st.integers(1, 4))
def test_never_two_leaders_for_one_term(seed, n, loss, cut):
    sim = Sim(n, seed=seed, loss=loss)
    sim.run(1.0)
    sim.partition(set(sim.ids[:min(cut, n - 1)]))
    sim.run(1.0)
    sim.partition(set())
    sim.run(1.0)
    assert all(len(leaders) == 1 for leaders in sim.elected.values())


def test_startup_delay_postpones_first_candidacy():
    e = Election(A, T, now=0.0, rng=random.Random(1), startup_delay=T.peer_timeout)
    assert e.deadline >= T.peer_timeout + T.election_min


def test_departure_of_the_leader_loses_it_at_once():
    e = member()
    e.on_heartbeat(B, 1, now=0.0)
    assert e.on_departure(B, now=0.01) == [LeaderLost(1, B)]
    assert e.leader is None


def test_departure_of_another_member_changes_nothing():
    e = member()
    e.on_heartbeat(B, 1, now=0.0)
    assert e.on_departure(C, now=0.01) == []
