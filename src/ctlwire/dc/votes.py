"""Group votes: what members see, how votes are counted, and acting at an agreed time.

The group (:mod:`ctlwire.dc.group`) carries ballots, answers and results as control
messages (:class:`~ctlwire.dc.codec.Ballot`, ``BallotVote``, ``BallotResult``); this
module holds the parts with no sockets in them: the user-facing records, the counting
rules (:class:`Tally`, pure) and the :class:`ActionScheduler` thread that runs agreed
actions at their wall-clock time.

Layering: imports the standard library and ``ctlwire.dc.codec``.
"""
from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .codec import Ballot, BallotResult

__all__ = ["GroupVote", "VoteOutcome", "Tally", "ActionScheduler"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupVote:
    """A vote some member asked the group for, as each member's vote callback sees it.

    Attributes
    ----------
    ballot : str
        Id of the vote (hex); :meth:`Group.send_vote` takes it.
    topic : str
        What the vote is about (for action votes: ``"action"``).
    value : Any
        The proposed value (for action votes: the action), decoded with the group's codec.
    kind : str
        ``"majority"`` or ``"consensus"``.
    requester : bytes
        Member id of the member that asked.
    timeout : float
        Seconds the requester waits for votes.
    when : float or None
        Action votes: the wall-clock time (``time.time()`` scale) to act at.
    """

    ballot: str
    topic: str
    value: Any
    kind: str
    requester: bytes
    timeout: float
    when: float | None = None

    @property
    def is_action(self) -> bool:
        """True for an action vote (:meth:`Group.request_action_vote`)."""
        return self.when is not None


@dataclass(frozen=True)
class VoteOutcome:
    """The result of a group vote, returned to the requester and sent to every member.

    ``electorate`` members were asked (the requester, who accepts its own proposal,
    included); ``accepted + refused + abstained == electorate``. A majority vote passes
    when more than half of the electorate accepts; a consensus vote when all of it does
    (an abstention, including not answering in time, counts against both).
    """

    ballot: str
    topic: str
    value: Any
    kind: str
    passed: bool
    accepted: int
    refused: int
    abstained: int
    requester: bytes
    when: float | None = None

    @property
    def electorate(self) -> int:
        """Members the vote was put to."""
        return self.accepted + self.refused + self.abstained

    def __bool__(self) -> bool:
        return self.passed


class Tally:
    """The requester's count of one vote (pure: time is passed in).

    Parameters
    ----------
    ballot : Ballot
        What was asked.
    electorate : set of bytes
        Member ids asked (the live members, the requester included).
    value : Any
        The proposed value, as the requester gave it.
    deadline : float
        Monotonic time at which silence becomes abstention.
    """

    __slots__ = ("ballot", "electorate", "votes", "deadline", "done", "outcome", "value",
                 "resend_at", "resends")

    def __init__(self, ballot: Ballot, electorate: set[bytes], value: Any,
                 deadline: float) -> None:
        self.ballot = ballot
        self.electorate = electorate
        self.votes: dict[bytes, bool] = {}
        self.deadline = deadline
        #: Set once :attr:`outcome` is known (the requester's thread waits on it).
        self.done = threading.Event()
        self.outcome: VoteOutcome | None = None
        self.value = value
        #: When the requester repeats the ballot next, and how often it did (the group
        #: repeats it until decided, since any one message can be lost).
        self.resend_at = deadline
        self.resends = 0

    def add(self, voter: bytes, accept: bool) -> bool:
        """Count ``voter``'s answer; False if it was not asked or already answered."""
        if voter not in self.electorate or voter in self.votes:
            return False
        self.votes[voter] = accept
        return True

    def decide(self, now: float) -> BallotResult | None:
        """The result once it is certain (or the deadline passed), else None.

        A result is certain as soon as the missing answers can no longer change it: a
        majority vote passes with more than half accepting and fails once that is out
        of reach; a consensus vote fails at the first refusal.
        """
        n = len(self.electorate)
        accepted = sum(1 for v in self.votes.values() if v)
        refused = len(self.votes) - accepted
        undecided = n - accepted - refused
        if self.ballot.kind == "majority":
            passed = 2 * accepted > n
            failed = 2 * (accepted + undecided) <= n
        else:
            passed = accepted == n
            failed = refused > 0
        if not (passed or failed or now >= self.deadline):
            return None
        return BallotResult(self.ballot.ballot, passed, accepted, refused, undecided)


class ActionScheduler:
    """Runs agreed actions at their wall-clock time, on one thread of its own.

    The thread sleeps until 2 ms before ``when``, then spins on ``time.time()`` until
    ``when``: a wake-up from sleep can take a millisecond or more, a spin does not. How
    close members act is measured by ``benchmarks/bench_dc.py`` (on a loaded machine
    the operating system's scheduler, not this thread, sets the worst case).

    Parameters
    ----------
    callbacks : list of callable
        ``fn(action, when)``, called in order for each action (the list is shared with
        the owner, which may add to it).
    name : str
        Thread name and log prefix.
    """

    SPIN = 0.002

    def __init__(self, callbacks: list[Callable[[Any, float], None]], name: str) -> None:
        self.callbacks = callbacks
        self.name = name
        self._heap: list[tuple[float, int, Any]] = []
        self._cv = threading.Condition()
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def schedule(self, when: float, action: Any) -> None:
        """Run the callbacks with ``action`` at wall-clock time ``when``."""
        with self._cv:
            if self._closed:
                return
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, action))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name,
                                                daemon=True)
                self._thread.start()
            self._cv.notify()

    def pending(self) -> int:
        """Actions not run yet."""
        with self._cv:
            return len(self._heap)

    def close(self) -> None:
        """Drop the actions not run yet and stop the thread."""
        with self._cv:
            self._closed = True
            self._heap.clear()
            self._cv.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._heap:
                    if self._closed:
                        return
                    self._cv.wait(0.5)
                when = self._heap[0][0]
                left = when - time.time()
                if left > self.SPIN:
                    self._cv.wait(left - self.SPIN)
                    continue
                _, _, action = heapq.heappop(self._heap)
            while time.time() < when:
                pass  # the last ~2 ms: this is what makes the members act together
            for fn in list(self.callbacks):
                try:
                    fn(action, when)
                except Exception:  # one bad callback must not stop the others
                    log.exception("%s: action callback failed", self.name)
