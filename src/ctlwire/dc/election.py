"""RAFT-style leader election as a pure state machine (no sockets, no clock of its own).

Inputs are method calls that carry the current time (``now``, seconds on any monotonic
clock): :meth:`Election.tick`, :meth:`Election.on_heartbeat`,
:meth:`Election.on_vote_request`, :meth:`Election.on_vote`, :meth:`Election.on_term` and
:meth:`Election.set_membership`. Each returns a list of effects (small frozen records)
that the caller carries out: broadcast a heartbeat, a vote request or a vote, and report
a leader elected or lost. Tests drive it with a fake clock and a seeded random generator.

Rules (RAFT without a log):

* Every member starts as follower in term 0 with a random election deadline in
  ``[election_min, election_max]``; a leader heartbeat of the current or a newer term
  resets it.
* When the deadline passes, a follower stands as candidate for the next term, votes for
  itself and asks for votes; a majority of the *electorate* makes it leader. It does not
  stand while fewer than a majority are alive, so a partitioned minority neither elects a
  leader nor inflates its term.
* Each member votes at most once per term; a newer term seen in any message turns the
  member into a follower of that term.
* A leader heartbeats every ``heartbeat`` seconds and steps down when fewer than a
  majority of the electorate are alive (so a leader cut off from the majority stops
  acting as leader).

The *electorate* and the *live* count come from the caller (the group's membership): the
electorate includes members that went silent recently, which is what keeps a minority
from electing its own leader during a partition.
"""
from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Union

__all__ = [
    "Role", "Timings", "Election", "SendHeartbeat", "SendVoteRequest", "SendVote",
    "LeaderElected", "LeaderLost", "Effect",
]


class Role(enum.Enum):
    """Election role of a member."""

    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True)
class Timings:
    """Heartbeat and timeout settings, in seconds.

    Must satisfy ``0 < heartbeat < election_min < election_max < peer_timeout
    <= forget_timeout``.

    Parameters
    ----------
    heartbeat : float
        Period of the leader's heartbeat and of every member's presence message.
    election_min, election_max : float
        Range of the random election timeout.
    peer_timeout : float
        A member silent this long has left (member-left event).
    forget_timeout : float, optional
        A silent member stays in the electorate this long (default ``10 * peer_timeout``).
    """

    heartbeat: float = 1.0
    election_min: float = 1.5
    election_max: float = 2.0
    peer_timeout: float = 3.0
    forget_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.forget_timeout is None:
            object.__setattr__(self, "forget_timeout", 10 * self.peer_timeout)
        hb, lo, hi, peer = self.heartbeat, self.election_min, self.election_max, self.peer_timeout
        if not 0 < hb < lo < hi < peer:
            raise ValueError("timings must satisfy 0 < heartbeat < election_min < election_max "
                             f"< peer_timeout; got heartbeat={hb}, election_min={lo}, "
                             f"election_max={hi}, peer_timeout={peer}")
        assert self.forget_timeout is not None
        if self.forget_timeout < peer:
            raise ValueError(f"forget_timeout ({self.forget_timeout}) must be >= peer_timeout "
                             f"({peer})")

    @classmethod
    def fast(cls) -> Timings:
        """Fast timings for tests and demos on one machine (50 ms heartbeat)."""
        return cls(0.05, 0.15, 0.3, 0.6)


@dataclass(frozen=True)
class SendHeartbeat:
    """Leader: broadcast a heartbeat for ``term`` now."""

    term: int


@dataclass(frozen=True)
class SendVoteRequest:
    """Candidate: broadcast a vote request for ``term``."""

    term: int


@dataclass(frozen=True)
class SendVote:
    """Broadcast a vote (granted or refused) for ``candidate`` in ``term``."""

    term: int
    candidate: bytes
    granted: bool


@dataclass(frozen=True)
class LeaderElected:
    """``leader`` leads ``term`` (``leader`` may be this member)."""

    term: int
    leader: bytes


@dataclass(frozen=True)
class LeaderLost:
    """The leader of ``term`` is no longer known to lead."""

    term: int
    leader: bytes


Effect = Union[SendHeartbeat, SendVoteRequest, SendVote, LeaderElected, LeaderLost]


class Election:
    """Election state of one member.

    Parameters
    ----------
    member_id : bytes
        This member's id.
    timings : Timings
        Heartbeat and timeouts.
    now : float
        Current time, to place the first election deadline.
    rng : random.Random, optional
        Source of the random election timeouts (seed it for reproducible tests).
    startup_delay : float
        Extra wait before the first candidacy, so that a starting member first learns
        who else is alive (the group uses its peer timeout); otherwise two members
        starting together could each elect themselves, alone, for the same term.
    """

    __slots__ = ("member_id", "timings", "rng", "role", "term", "leader", "voted_for",
                 "votes", "deadline", "next_heartbeat", "electorate", "live")

    def __init__(self, member_id: bytes, timings: Timings, now: float,
                 rng: random.Random | None = None, startup_delay: float = 0.0) -> None:
        self.member_id = member_id
        self.timings = timings
        self.rng = rng or random.Random()
        self.role = Role.FOLLOWER
        self.term = 0
        self.leader: bytes | None = None
        self.voted_for: bytes | None = None
        self.votes: set[bytes] = set()
        self.deadline = self._new_deadline(now + startup_delay)
        self.next_heartbeat = now
        #: Electorate size and live count, both counting this member.
        self.electorate = 1
        self.live = 1

    # --- helpers -------------------------------------------------------------------------

    def _new_deadline(self, now: float) -> float:
        return now + self.rng.uniform(self.timings.election_min, self.timings.election_max)

    @property
    def majority(self) -> int:
        """Votes (or live members) needed: more than half of the electorate."""
        return max(self.electorate, 1) // 2 + 1

    @property
    def is_leader(self) -> bool:
        """True while this member leads."""
        return self.role is Role.LEADER

    def next_wakeup(self) -> float:
        """The time by which :meth:`tick` must be called next."""
        return self.next_heartbeat if self.role is Role.LEADER else self.deadline

    def _lose_leader(self, out: list[Effect]) -> None:
        if self.leader is not None:
            out.append(LeaderLost(self.term, self.leader))
            self.leader = None

    def _adopt_term(self, term: int, now: float, out: list[Effect]) -> None:
        """A newer term was seen: follow it, forgetting leader and vote of the old term."""
        if term <= self.term:
            return
        self._lose_leader(out)
        if self.role is not Role.FOLLOWER:
            self.role = Role.FOLLOWER
            self.deadline = self._new_deadline(now)
        self.term = term
        self.voted_for = None
        self.votes = set()

    def _become_leader(self, now: float, out: list[Effect]) -> None:
        self.role = Role.LEADER
        self.leader = self.member_id
        self.votes = set()
        out.append(LeaderElected(self.term, self.member_id))
        out.append(SendHeartbeat(self.term))
        self.next_heartbeat = now + self.timings.heartbeat

    # --- inputs --------------------------------------------------------------------------

    def set_membership(self, electorate: int, live: int) -> None:
        """Update the electorate size and the number of live members (both with self)."""
        if not 1 <= live <= electorate:
            raise ValueError(f"need 1 <= live ({live}) <= electorate ({electorate})")
        self.electorate = electorate
        self.live = live

    def tick(self, now: float) -> list[Effect]:
        """Advance time: heartbeats, election timeouts, quorum checks."""
        out: list[Effect] = []
        if self.role is Role.LEADER:
            if self.live < self.majority:
                # Cut off from the majority: stop acting as leader.
                self.role = Role.FOLLOWER
                self._lose_leader(out)
                self.deadline = self._new_deadline(now)
            elif now >= self.next_heartbeat:
                out.append(SendHeartbeat(self.term))
                self.next_heartbeat = now + self.timings.heartbeat
            return out
        if now < self.deadline:
            return out
        self._lose_leader(out)
        self.deadline = self._new_deadline(now)
        if self.live < self.majority:
            # Cannot win without a live majority; standing would only inflate the term.
            self.role = Role.FOLLOWER
            return out
        self.role = Role.CANDIDATE
        self.term += 1
        self.voted_for = self.member_id
        self.votes = {self.member_id}
        out.append(SendVoteRequest(self.term))
        if len(self.votes) >= self.majority:
            self._become_leader(now, out)
        return out

    def on_term(self, term: int, now: float) -> list[Effect]:
        """Any message carrying ``term`` (e.g. presence) was received."""
        out: list[Effect] = []
        self._adopt_term(term, now, out)
        return out

    def on_departure(self, member: bytes, now: float) -> list[Effect]:
        """``member`` left the group on purpose; if it led, the leader is lost now."""
        out: list[Effect] = []
        if member == self.leader and self.role is Role.FOLLOWER:
            self._lose_leader(out)
            self.deadline = self._new_deadline(now)
        return out

    def on_heartbeat(self, sender: bytes, term: int, now: float) -> list[Effect]:
        """A leader heartbeat for ``term`` arrived from ``sender``."""
        out: list[Effect] = []
        if term < self.term or sender == self.member_id:
            return out  # a stale leader; our presence messages will tell it the new term
        self._adopt_term(term, now, out)
        if self.role is Role.LEADER:
            # Two leaders in one term cannot come from this machine's votes; ignore it.
            return out
        self.role = Role.FOLLOWER
        self.votes = set()
        self.deadline = self._new_deadline(now)
        if self.leader != sender:
            self._lose_leader(out)
            self.leader = sender
            out.append(LeaderElected(term, sender))
        return out

    def on_vote_request(self, sender: bytes, term: int, now: float) -> list[Effect]:
        """``sender`` stands as candidate for ``term`` and asks for this member's vote."""
        out: list[Effect] = []
        if sender == self.member_id:
            return out
        if term < self.term:
            out.append(SendVote(self.term, sender, False))
            return out
        self._adopt_term(term, now, out)
        granted = self.voted_for in (None, sender) and self.role is Role.FOLLOWER
        if granted:
            self.voted_for = sender
            self.deadline = self._new_deadline(now)
        out.append(SendVote(self.term, sender, granted))
        return out

    def on_vote(self, sender: bytes, term: int, candidate: bytes, granted: bool,
                now: float) -> list[Effect]:
        """A vote by ``sender`` for ``candidate`` in ``term`` was seen."""
        out: list[Effect] = []
        self._adopt_term(term, now, out)
        if (granted and candidate == self.member_id and term == self.term
                and self.role is Role.CANDIDATE):
            self.votes.add(sender)
            if len(self.votes) >= self.majority:
                self._become_leader(now, out)
        return out
