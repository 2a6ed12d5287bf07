"""A member of a group: its four ports, discovery, heartbeat, leader election and votes.

One background thread per :class:`Group` owns the sockets it polls (sub, query, answer)
and runs the election state machine; it receives bursts of messages through the
compiled :class:`~ctlwire.dc._framing.Receiver`, which builds the
:class:`GroupMessage` objects, so the only per-message Python work left is the user's.
The pub socket is shared with the caller's threads through the compiled
:class:`~ctlwire.dc._framing.Sender` (it has its own lock), so :meth:`Group.send` costs
one encode and one socket send. Everything a user calls is thread-safe.

Channels:

* group messages: :meth:`Group.send` to every member, :meth:`Group.recv` from any;
* leader channel: :meth:`Group.send_to_leader` (member to leader, arrives at the leader
  with ``channel == "query"``) and :meth:`Group.answer` (leader to one member, arrives
  with ``channel == "answer"``).

Housekeeping on the pub channel (control messages): every member's presence each
heartbeat, the leader's heartbeat announcing its term and answer address, election vote
requests and votes, group votes (:meth:`Group.request_vote`,
:meth:`Group.request_action_vote`; counting in :mod:`ctlwire.dc.votes`), and a goodbye on
:meth:`Group.leave`. Every message carries the sender's term, the fencing token of
:meth:`Group.fence` and :class:`~ctlwire.dc.fencing.Fenced`.

Layering: imports pyzmq and the rest of ``ctlwire.dc`` below it (codec, election, ports,
discovery, security, votes).
"""
from __future__ import annotations

import enum
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import zmq

from .codec import (KIND_APP, KIND_CONTROL, NATIVE, NETWORK, VOTE_KINDS, Ballot,
                    BallotResult, BallotVote, Bye, CodecError, Heartbeat, MemberRecord,
                    PayloadCodec, Presence, Vote, VoteRequest, _framing, decode_control,
                    encode_control)
from .discovery import DirectoryDiscovery, Discovery
from .election import (Effect, Election, LeaderElected, LeaderLost, SendHeartbeat, SendVote,
                       SendVoteRequest, Timings)
from .ports import (GroupAnsPort, GroupPubPort, GroupQryPort, GroupSpec, GroupSubPort,
                    PortError, PortTimeout)
from .security import CurveSecurity
from .votes import ActionScheduler, GroupVote, Tally, VoteOutcome

__all__ = ["Group", "GroupMessage", "GroupEvent", "EventKind", "NoLeaderError", "GroupClosed",
           "GroupVote", "VoteOutcome"]

#: A received message (compiled; see :class:`ctlwire.dc._framing.GroupMessage`).
GroupMessage = _framing.GroupMessage

log = logging.getLogger(__name__)


class NoLeaderError(PortError):
    """There is no leader to send to (yet, or any more)."""


class GroupClosed(PortError):
    """The group was left; it cannot be used any more."""


class EventKind(str, enum.Enum):
    """What a :class:`GroupEvent` reports."""

    MEMBER_JOINED = "member_joined"
    MEMBER_LEFT = "member_left"
    LEADER_ELECTED = "leader_elected"
    LEADER_LOST = "leader_lost"
    VOTE_REQUESTED = "vote_requested"
    VOTE_RESULT = "vote_result"


@dataclass(frozen=True)
class GroupEvent:
    """A change in the group.

    Attributes
    ----------
    kind : EventKind
    member : bytes
        The member concerned (the leader for leader events).
    term : int
        Election term (leader events), else the current term.
    reason : str
        Why a member left: ``"timeout"`` or ``"bye"``.
    time : float
        ``time.monotonic()`` when the event was seen.
    vote : GroupVote or VoteOutcome or None
        The vote asked for (``vote_requested``) or its result (``vote_result``).
    """

    kind: EventKind
    member: bytes
    term: int = 0
    reason: str = ""
    time: float = 0.0
    vote: GroupVote | VoteOutcome | None = None


class _Peer:
    __slots__ = ("record", "last_heard", "live", "voter")

    def __init__(self, record: MemberRecord) -> None:
        self.record = record
        self.last_heard = 0.0
        self.live = False
        self.voter = False


class Group:
    """Join the group ``<groupType>.<instanceName>`` as one member.

    Parameters
    ----------
    groupType, instanceName : str
        Name of the group.
    timings : Timings, optional
        Heartbeat, election and peer timeouts (validated); RIAPS defaults otherwise.
    discovery : Discovery, optional
        How members find each other; default :class:`DirectoryDiscovery`.
    host : str
        Address to bind (loopback by default); ``"0.0.0.0"`` or ``"*"`` binds every
        interface and then needs ``advertise``.
    advertise : str, optional
        Address the other members can reach this one at, announced through discovery
        and in the leader's heartbeats; default the discovery's ``advertise``, else
        ``host``.
    timed : bool
        Carry send times; messages report send and receive times.
    byteOrder : {"network", "native"}
        Byte order of the time frame.
    codec : str or PayloadCodec
        Payload codec of :meth:`send` and :meth:`GroupMessage.obj`; msgpack by default.
    security : CurveSecurity, optional
        CURVE key pair and allow-list for every port.
    memberId : bytes, optional
        16-byte member id; a fresh uuid4 by default.
    peer_filter : callable, optional
        ``peer_filter(member_id) -> bool``; messages from members it rejects are dropped
        (to model a network partition, or to exclude members).
    on_event : callable, optional
        Called with every :class:`GroupEvent`, from the group's thread; keep it short.
    on_vote : callable, optional
        ``on_vote(vote: GroupVote) -> bool | None``, from the group's thread: True
        accepts, False refuses, None leaves the answer to a later :meth:`send_vote`
        (no answer by the vote's timeout is an abstention, the default).
    on_action : callable, optional
        ``on_action(action, when)``, called at wall-clock time ``when`` on this member
        if an action vote it accepted passed (from the group's action thread).
    context : zmq.Context, optional
        zmq context (a private one by default, terminated on :meth:`leave`).
    rng : random.Random, optional
        Randomness of election timeouts.
    messageType : str
        Message type reported by the pub/sub ports' getInfo.
    hwm : int
        High-water mark of every port (messages queued per peer).
    sendTimeout : float
        Nothing is dropped in silence: when a member's queue holds ``hwm`` messages,
        :meth:`send` waits up to this many seconds for room (back-pressure), then drops
        the message, counts it in :attr:`send_dropped` and returns False (a warning is
        logged at the next heartbeat). Control messages (heartbeats, votes) never wait;
        the ones dropped are counted in :attr:`control_dropped`.

    Examples
    --------
    >>> with Group("Sensors", "g1", timings=Timings.fast()) as g:  # doctest: +SKIP
    ...     g.wait_for_leader(5)
    ...     g.send({"reading": 1.5})
    """

    def __init__(self, groupType: str, instanceName: str, *, timings: Timings | None = None,
                 discovery: Discovery | None = None, host: str = "127.0.0.1",
                 advertise: str | None = None,
                 timed: bool = False, byteOrder: str = NETWORK,
                 codec: str | PayloadCodec = "msgpack", security: CurveSecurity | None = None,
                 memberId: bytes | None = None,
                 peer_filter: Callable[[bytes], bool] | None = None,
                 on_event: Callable[[GroupEvent], None] | None = None,
                 on_vote: Callable[[GroupVote], bool | None] | None = None,
                 on_action: Callable[[Any, float], None] | None = None,
                 context: zmq.Context | None = None, rng: random.Random | None = None,
                 messageType: str = "group-msg", hwm: int = 10000,
                 sendTimeout: float = 1.0) -> None:
        self.timings = timings or Timings()
        self._own_context = context is None
        self._ctx = context or zmq.Context()
        self.spec = GroupSpec(groupType, instanceName, messageType=messageType, timed=timed,
                              byteOrder=byteOrder, host=host, codec=codec, security=security,
                              memberId=memberId or uuid.uuid4().bytes, context=self._ctx,
                              hwm=hwm, sendTimeout=sendTimeout)
        self.memberId: bytes = self.spec.memberId
        self.codec: PayloadCodec = self.spec.codec  # type: ignore[assignment]
        self.discovery = discovery or DirectoryDiscovery()
        self.advertise: str = advertise or getattr(self.discovery, "advertise", None) or host
        if self.advertise in ("0.0.0.0", "*", "::", "[::]", ""):
            raise ValueError(f"Group: host {host!r} binds every interface; pass advertise= "
                             "with an address the other members can reach")
        self.peer_filter = peer_filter
        self.on_vote = on_vote
        self._action_callbacks: list[Callable[[Any, float], None]] = (
            [on_action] if on_action else [])
        self._callbacks: list[Callable[[GroupEvent], None]] = [on_event] if on_event else []
        self._rng = rng or random.Random()

        self.pub = GroupPubPort(self, None, self.spec)
        self.sub = GroupSubPort(self, None, self.spec)
        self.qry = GroupQryPort(self, None, self.spec)
        self.ans = GroupAnsPort(self, None, self.spec)

        self._wake_lock = threading.Lock()
        self._commands: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        # Received messages travel in batches (one per receive burst) so that a busy
        # group wakes the reader once per burst, not once per message.
        self._inbox = _framing.Inbox(PortTimeout, f"group {self.spec.groupName}")
        # Users call the compiled inbox directly: no Python frame per message (unless a
        # subclass overrides recv).
        if type(self).recv is Group.recv:
            self.recv = self._inbox.get  # type: ignore[method-assign]
        self._events: queue.SimpleQueue[GroupEvent] = queue.SimpleQueue()
        self._peers: dict[bytes, _Peer] = {}
        self._leader_addr: dict[bytes, tuple[str, int]] = {}
        self._election: Election | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        self._wake_tx: zmq.Socket | None = None
        self._wake_rx: zmq.Socket | None = None
        self._size = 1
        self._last_discover = 0.0
        # The leader as last applied (socket set up, event emitted), for the properties.
        self._leader: bytes | None = None
        #: Counters of dropped input, by reason (malformed, unknown sender, filtered).
        self.dropped: dict[str, int] = {"malformed": 0, "unknown": 0, "filtered": 0}
        self._sender: Any = None
        self._warned_dropped = (0, 0)
        self._receivers: dict[Any, tuple[Any, str]] = {}
        self._tallies: dict[bytes, Tally] = {}
        self._ballots: dict[bytes, tuple[Ballot, bytes, float, bool | None]] = {}
        self._actions = ActionScheduler(self._action_callbacks,
                                        f"dc-actions-{self.spec.groupName}")
        self._done_tallies: dict[str, Tally] = {}
        self._tick_due = True
        self._presence_at: list[float] = []
        self._decided: dict[bytes, None] = {}

    # --- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> Group:
        return self.join()

    def __exit__(self, *exc: object) -> None:
        self.leave()

    def __repr__(self) -> str:
        return (f"<Group {self.spec.groupName} member={self.memberId.hex()[:8]} "
                f"leader={self.leader_id.hex()[:8] if self.leader_id else None} "
                f"size={self.size}>")

    def join(self) -> Group:
        """Set up the ports, register with discovery and start the group's thread."""
        if self._thread is not None or self._closed:
            raise PortError("a Group joins once; make a new one to join again")
        ready = threading.Event()
        failure: list[BaseException] = []
        wake = f"inproc://ctlwire-dc-wake-{uuid.uuid4().hex}"
        self._wake_rx = self._ctx.socket(zmq.PULL)
        self._wake_rx.bind(wake)
        self._wake_tx = self._ctx.socket(zmq.PUSH)
        self._wake_tx.connect(wake)
        for port in (self.pub, self.sub, self.qry, self.ans):
            port.setup()
            port.setupSocket(self)
        native = self.spec.byteOrder == NATIVE
        timed = self.spec.timed
        self._sender = _framing.Sender(self.pub.getSocket(), self.memberId, timed, native,
                                       self.codec, GroupClosed, f"group {self.spec.groupName}",
                                       send_timeout=self.spec.sendTimeout)
        # Users call the compiled sender directly: no Python frame per message (unless a
        # subclass overrides send).
        if type(self).send is Group.send:
            self.send = self._sender.send_obj  # type: ignore[method-assign]
        for port, channel in ((self.sub, "group"), (self.qry, "answer"), (self.ans, "query")):
            sock = port.getSocket()
            self._receivers[sock] = (_framing.Receiver(
                sock, timed, native, channel, self.codec, router=port is self.ans), channel)
        self.discovery.ttl = self.timings.peer_timeout
        info = self.pub.getInfo()
        assert info is not None and info.portNum is not None
        security = self.spec.security
        self.discovery.register(MemberRecord(
            self.spec.groupName, self.memberId, self.advertise, info.portNum,
            security.public_key if security else b""))

        def main() -> None:
            try:
                self._run(ready)
            except BaseException as exc:  # report start-up failures to join()
                failure.append(exc)
                ready.set()
                log.exception("group %s: thread died", self.spec.groupName)

        self._thread = threading.Thread(target=main, name=f"dc-{self.spec.groupName}",
                                        daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def leave(self, timeout: float = 5.0) -> None:
        """Say goodbye, unregister and stop; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._wake_lock:
            for sock in (self._wake_tx, self._wake_rx):
                if sock is not None:
                    sock.close(linger=0)
            self._wake_tx = self._wake_rx = None
        if self.spec.security is not None:
            self.spec.security.stop(self._ctx)
        if self._own_context:
            if self._thread is not None and self._thread.is_alive():
                self._ctx.destroy(linger=0)  # a stuck thread must not hang leave()
            else:
                self._ctx.term()

    close = leave

    # --- state -----------------------------------------------------------------------------

    @property
    def leader_id(self) -> bytes | None:
        """Member id of the current leader, or None."""
        return self._leader

    @property
    def is_leader(self) -> bool:
        """True while this member is the leader (its answer port is bound by then)."""
        return self._leader == self.memberId

    @property
    def term(self) -> int:
        """Current election term."""
        e = self._election
        return e.term if e is not None else 0

    @property
    def size(self) -> int:
        """Number of live members, this one included."""
        return self._size

    @property
    def send_dropped(self) -> int:
        """Messages :meth:`send` dropped (returning False) after a member's queue stayed
        full for ``sendTimeout`` seconds."""
        return self._sender.dropped if self._sender is not None else 0

    @property
    def control_dropped(self) -> int:
        """Control messages (heartbeats, votes) not sent because a queue was full."""
        return self._sender.dropped_control if self._sender is not None else 0

    @property
    def members(self) -> set[bytes]:
        """Ids of the live members, this one included."""
        return {self.memberId} | {m for m, p in list(self._peers.items()) if p.live}

    # --- messaging -------------------------------------------------------------------------

    def send(self, obj: Any) -> bool:
        """Send ``obj`` (encoded with the group's codec) to every other member.

        Stamped with this member's current term. Once joined, this is the compiled
        sender's method itself.

        Returns
        -------
        bool
            True once queued for every member; False if a member's queue stayed full
            for ``sendTimeout`` seconds: then no member gets it, and it is counted in
            :attr:`send_dropped`.
        """
        if self._sender is None:
            raise GroupClosed(f"group {self.spec.groupName} is not joined")
        return self._sender.send_obj(obj)

    def send_bytes(self, data: bytes) -> bool:
        """Send raw bytes to every other member (returns as :meth:`send`)."""
        if self._sender is None:
            raise GroupClosed(f"group {self.spec.groupName} is not joined")
        return self._sender.send(KIND_APP, bytes(data))

    def recv(self, timeout: float | None = None) -> GroupMessage:
        """Next message from the group, the leader channel or a member.

        This is the compiled inbox's method itself (set in the constructor).

        Raises
        ------
        PortTimeout
            Nothing arrived within ``timeout`` seconds.
        """
        return self._inbox.get(timeout)

    def send_to_leader(self, obj: Any, timeout: float = 5.0) -> None:
        """Send ``obj`` to the current leader (it arrives with ``channel == "query"``).

        Raises
        ------
        NoLeaderError
            No leader is known.
        """
        self._call("qry", self.codec.encode(obj), timeout=timeout)

    def answer(self, member: bytes, obj: Any, timeout: float = 5.0) -> None:
        """Leader only: send ``obj`` to ``member`` (arrives with ``channel == "answer"``).

        Raises
        ------
        PortError
            This member is not the leader, or ``member`` is not connected to it.
        """
        self._call("ans", self.codec.encode(obj), member, timeout=timeout)

    def _call(self, op: str, *args: Any, timeout: float) -> None:
        if self._closed or self._thread is None:
            raise GroupClosed(f"group {self.spec.groupName} is not joined")
        done = threading.Event()
        result: list[BaseException | None] = []
        self._commands.put((op, args, done, result))
        if threading.current_thread() is self._thread:
            self._run_commands()  # called from an event callback: run it right here
        else:
            self._wake()
        if not done.wait(timeout):
            raise PortTimeout(f"group {self.spec.groupName}: {op} not done within {timeout} s")
        if result and result[0] is not None:
            raise result[0]

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_tx is not None:
                try:
                    self._wake_tx.send(b"", zmq.NOBLOCK)
                except zmq.Again:
                    pass  # wake-ups already queued; one is enough


    # --- votes -------------------------------------------------------------------------------

    def start_vote(self, topic: str, value: Any, kind: str = "majority",
                   timeout: float = 1.0, when: float | None = None) -> str:
        """Put ``value`` to the group's vote without waiting; returns the vote's id.

        The outcome arrives as a ``vote_result`` event (and :meth:`vote_outcome`).
        """
        if kind not in VOTE_KINDS:
            raise ValueError(f"vote kind must be 'majority' or 'consensus', not {kind!r}")
        if not timeout > 0 or timeout != timeout or timeout == float("inf"):
            raise ValueError(f"vote timeout must be a positive number of seconds, not {timeout!r}")
        if when is not None and not isinstance(when, (int, float)):
            raise TypeError(f"when must be a time.time() value, not {type(when).__name__}")
        ballot = Ballot(uuid.uuid4().bytes, str(topic), self.codec.encode(value), kind,
                        float(timeout), None if when is None else float(when))
        self._call("ballot", ballot, value, timeout=5.0)
        return ballot.ballot.hex()

    def vote_outcome(self, ballot: str, timeout: float | None = None) -> VoteOutcome:
        """Wait for the outcome of a vote this member asked for (by id).

        Raises
        ------
        PortTimeout
            No outcome within ``timeout`` seconds.
        KeyError
            This member asked for no vote with that id.
        """
        tally = self._tallies.get(bytes.fromhex(ballot)) or self._done_tallies.get(ballot)
        if tally is None:
            raise KeyError(f"group {self.spec.groupName}: no vote {ballot} asked by this member")
        if not tally.done.wait(timeout) or tally.outcome is None:
            raise PortTimeout(f"group {self.spec.groupName}: vote {ballot} undecided after "
                              f"{timeout} s")
        return tally.outcome

    def request_vote(self, topic: str, value: Any, kind: str = "majority",
                     timeout: float = 1.0) -> VoteOutcome:
        """Ask every live member to vote on ``value``; block until the outcome.

        Members answer through their vote callback (``on_vote``) or :meth:`send_vote`;
        no answer by ``timeout`` seconds is an abstention. This member accepts its own
        proposal. Every member, this one included, gets the outcome as a
        ``vote_result`` event.

        Parameters
        ----------
        topic : str
            What the vote is about.
        value : Any
            The proposed value (encoded with the group's codec).
        kind : {"majority", "consensus"}
            More than half of the members must accept, or all of them.
        timeout : float
            Seconds to wait for votes.
        """
        ballot = self.start_vote(topic, value, kind, timeout)
        return self.vote_outcome(ballot, timeout + 5.0)

    def request_action_vote(self, action: Any, when: float, kind: str = "majority",
                            timeout: float | None = None) -> VoteOutcome:
        """Vote on doing ``action`` at wall-clock time ``when`` (``time.time()`` scale).

        If the vote passes, every member that accepted (this one included) runs its
        action callbacks (``on_action(action, when)``, :meth:`add_action_callback`) at
        ``when``. ``timeout`` defaults to half the time left before ``when``, capped at
        1 s, so that the outcome reaches every member before it must act.
        """
        left = when - time.time()
        if left <= 0:
            raise ValueError(f"when is {-left:.3f} s in the past")
        if timeout is None:
            timeout = min(1.0, left / 2)
        elif timeout >= left:
            raise ValueError(f"vote timeout {timeout} s ends after when ({left:.3f} s away)")
        ballot = self.start_vote("action", action, kind, timeout, when)
        return self.vote_outcome(ballot, timeout + 5.0)

    def send_vote(self, ballot: str, accept: bool) -> None:
        """Answer the vote ``ballot`` (its id) later than from the vote callback."""
        self._call("vote", bytes.fromhex(ballot), bool(accept), timeout=5.0)

    def add_action_callback(self, fn: Callable[[Any, float], None]) -> None:
        """Call ``fn(action, when)`` at ``when`` for every passed action vote accepted here."""
        self._action_callbacks.append(fn)

    # RIAPS spellings: ids are returned at once, outcomes arrive as vote_result events.
    def requestVote(self, topic: str, value: Any, timeout: float | None = None,
                    kind: str = "majority") -> str:
        """RIAPS spelling of :meth:`start_vote`: returns the vote's id at once."""
        return self.start_vote(topic, value, kind, 1.0 if timeout is None else timeout)

    def requestActionVote(self, topic: Any, when: float, timeout: float | None = None,
                          kind: str = "majority") -> str:
        """RIAPS spelling of :meth:`request_action_vote`, returning the vote's id at once."""
        left = when - time.time()
        if left <= 0:
            raise ValueError(f"when is {-left:.3f} s in the past")
        return self.start_vote("action", topic, kind,
                               min(1.0, left / 2) if timeout is None else timeout, when)

    def sendVote(self, rfvId: str, vote: bool) -> None:
        """RIAPS spelling of :meth:`send_vote`."""
        self.send_vote(rfvId, vote)

    def _open_ballot(self, ballot: Ballot, value: Any) -> None:
        # Runs on the group's thread: the electorate is who is live right now.
        electorate = {self.memberId} | {m for m, p in self._peers.items() if p.live}
        tally = Tally(ballot, electorate, value, time.monotonic() + ballot.timeout)
        tally.add(self.memberId, True)  # the requester accepts its own proposal
        self._tallies[ballot.ballot] = tally
        self._ballots[ballot.ballot] = (ballot, self.memberId, time.monotonic(), True)
        self._pub_control(ballot)
        tally.resend_at = time.monotonic() + self.BALLOT_REPEAT[0]
        self._count_votes(time.monotonic())

    def _on_ballot(self, requester: bytes, ballot: Ballot) -> None:
        entry = self._ballots.get(ballot.ballot)
        if entry is not None or ballot.ballot in self._decided:
            # The requester repeats a ballot until it is decided (any message can be
            # lost, e.g. before a new subscription is up): repeat our answer, once asked.
            if entry is not None and entry[1] == requester and entry[3] is not None:
                self._pub_control(BallotVote(ballot.ballot, entry[3]))
            return
        try:
            value = self.codec.decode(ballot.value)
        except CodecError as exc:
            self.dropped["malformed"] += 1
            log.debug("group %s: ballot: %s", self.spec.groupName, exc)
            return
        now = time.monotonic()
        for key, (_, _, seen, _) in list(self._ballots.items()):
            if now - seen > 60 + self.timings.forget_timeout:  # bounded memory
                del self._ballots[key]
        self._ballots[ballot.ballot] = (ballot, requester, now, None)
        vote = GroupVote(ballot.ballot.hex(), ballot.topic, value, ballot.kind, requester,
                         ballot.timeout, ballot.when)
        self._emit(EventKind.VOTE_REQUESTED, requester, self.term, vote=vote)
        if self.on_vote is None:
            return  # abstain, unless send_vote() answers later
        try:
            answer = self.on_vote(vote)
        except Exception:  # a user callback must not kill the group's thread
            log.exception("group %s: vote callback failed; abstaining", self.spec.groupName)
            return
        if answer is not None:
            self._cast(ballot.ballot, bool(answer))

    def _cast(self, ballot_id: bytes, accept: bool) -> None:
        entry = self._ballots.get(ballot_id)
        if entry is None and ballot_id in self._decided:
            return  # decided without this answer: nothing left to count
        if entry is None:
            raise KeyError(f"group {self.spec.groupName}: no open vote {ballot_id.hex()}")
        ballot, requester, seen, mine = entry
        if mine is not None:
            raise PortError(f"group {self.spec.groupName}: already voted on {ballot_id.hex()}")
        self._ballots[ballot_id] = (ballot, requester, seen, accept)
        if requester == self.memberId:
            self._on_ballot_vote(self.memberId, BallotVote(ballot_id, accept))
        else:
            self._pub_control(BallotVote(ballot_id, accept))

    def _on_ballot_vote(self, voter: bytes, vote: BallotVote) -> None:
        tally = self._tallies.get(vote.ballot)
        # Not ours, not asked, or a repeat (the first answer counts): ignored.
        if tally is not None and tally.add(voter, vote.accept):
            self._count_votes(time.monotonic())

    #: Delays between repeats of an undecided ballot (the last one repeats).
    BALLOT_REPEAT = (0.01, 0.03, 0.1, 0.25)

    def _count_votes(self, now: float) -> None:
        for key, tally in list(self._tallies.items()):
            result = tally.decide(now)
            if result is None:
                if now >= tally.resend_at:
                    self._pub_control(tally.ballot)
                    tally.resends += 1
                    delays = self.BALLOT_REPEAT
                    tally.resend_at = now + delays[min(tally.resends, len(delays) - 1)]
                continue
            del self._tallies[key]
            try:
                self._pub_control(result)
            finally:
                self._done_tallies[key.hex()] = tally
                while len(self._done_tallies) > 256:  # outcomes kept for vote_outcome()
                    del self._done_tallies[next(iter(self._done_tallies))]
                self._on_ballot_result(self.memberId, result, tally)

    def _on_ballot_result(self, requester: bytes, result: BallotResult,
                          tally: Tally | None = None) -> None:
        entry = self._ballots.get(result.ballot)
        if entry is None or entry[1] != requester:
            return  # a vote this member never saw, or a result from someone else
        del self._ballots[result.ballot]
        self._decided[result.ballot] = None
        while len(self._decided) > 256:  # bounded: late answers to recent votes only
            del self._decided[next(iter(self._decided))]
        ballot, _, _, mine = entry
        if tally is not None:
            value = tally.value
        else:
            try:
                value = self.codec.decode(ballot.value)
            except CodecError:
                return
        outcome = VoteOutcome(ballot.ballot.hex(), ballot.topic, value, ballot.kind,
                              result.passed, result.accepted, result.refused,
                              result.abstained, requester, ballot.when)
        if tally is not None:
            tally.outcome = outcome
            tally.done.set()
        if result.passed and mine and ballot.when is not None:
            if ballot.when < time.time():
                log.warning("group %s: action vote %s passed after its time; not acting",
                            self.spec.groupName, outcome.ballot)
            else:
                self._actions.schedule(ballot.when, value)
        self._emit(EventKind.VOTE_RESULT, requester, self.term, vote=outcome)

    # --- fencing -----------------------------------------------------------------------------

    def fence(self, term: int) -> bool:
        """True if a command stamped with ``term`` may still be obeyed here.

        A leader's messages carry the term it leads in (:attr:`GroupMessage.term`). A
        term older than the newest this member knows comes from a leader that has been
        replaced, perhaps without noticing (a partition): refuse its commands.
        """
        return term >= self.term

    # --- events ----------------------------------------------------------------------------

    def add_callback(self, fn: Callable[[GroupEvent], None]) -> None:
        """Call ``fn(event)`` for every later event (from the group's thread)."""
        self._callbacks.append(fn)

    def next_event(self, timeout: float | None = None) -> GroupEvent:
        """The next event; raises :class:`PortTimeout` after ``timeout`` seconds."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            raise PortTimeout(f"group {self.spec.groupName}: no event within {timeout} s") \
                from None

    def events(self, timeout: float) -> Iterator[GroupEvent]:
        """Iterate over events until none arrives for ``timeout`` seconds."""
        while True:
            try:
                yield self.next_event(timeout)
            except PortTimeout:
                return

    def wait_for_leader(self, timeout: float) -> bytes:
        """Block until a leader is known and return its id (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader_id
            if leader is not None:
                return leader
            time.sleep(min(0.01, self.timings.heartbeat / 4))
        raise PortTimeout(f"group {self.spec.groupName}: no leader within {timeout} s")

    def _emit(self, kind: EventKind, member: bytes, term: int, reason: str = "",
              vote: GroupVote | VoteOutcome | None = None) -> None:
        ev = GroupEvent(kind, member, term, reason, time.monotonic(), vote)
        self._events.put(ev)
        for fn in list(self._callbacks):
            try:
                fn(ev)
            except Exception:  # a user callback must not kill the group's thread
                log.exception("group %s: event callback failed", self.spec.groupName)

    # --- the group's thread ------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        now = time.monotonic()
        election = Election(self.memberId, self.timings, now, self._rng,
                            startup_delay=self.timings.peer_timeout)
        self._election = election
        poller = zmq.Poller()
        assert self._wake_rx is not None
        # The answer socket exists from the start but binds only on leadership.
        for sock in (self.sub.getSocket(), self.qry.getSocket(), self.ans.getSocket(),
                     self._wake_rx):
            poller.register(sock, zmq.POLLIN)
        disc_fd = self.discovery.fileno()
        if disc_fd is not None:
            poller.register(disc_fd, zmq.POLLIN)
        next_house = now
        # Early presences right after joining: peers that discover us connect within
        # milliseconds, and should not wait a whole heartbeat to hear from us.
        self._presence_at = [now + d for d in (0.02, 0.05, 0.1) if d < self.timings.heartbeat]
        ready.set()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                wake_at = min(next_house, election.next_wakeup())
                if self._tallies:
                    wake_at = min(wake_at, min(min(t.deadline, t.resend_at)
                                               for t in self._tallies.values()))
                if self._presence_at:
                    wake_at = min(wake_at, self._presence_at[0])
                try:
                    for sock, _ in poller.poll(max(0.0, (wake_at - now) * 1000)):
                        if isinstance(sock, int):  # a discovery beacon arrived
                            self._discover(time.monotonic())
                        elif sock is self._wake_rx:
                            self._drain_wake()
                        else:
                            self._drain(sock)
                    now = time.monotonic()
                    if now >= next_house:
                        next_house = now + self.timings.heartbeat
                        self._housekeeping(now)
                    if self._presence_at and now >= self._presence_at[0]:
                        while self._presence_at and now >= self._presence_at[0]:
                            self._presence_at.pop(0)
                        self._pub_control(Presence(election.term))
                    # Ticking only when due (or after the membership changed) keeps a
                    # busy group's wake-ups cheap: most of them only drain messages.
                    if self._tick_due or now >= election.next_wakeup():
                        self._tick_due = False
                        self._apply(election.tick(now))
                    if self._tallies:
                        self._count_votes(now)
                except (zmq.ZMQError, OSError, PortError) as exc:
                    # A transient failure must not end membership; the next round retries.
                    log.warning("group %s: %s: %s", self.spec.groupName,
                                type(exc).__name__, exc)
                    self._stop.wait(min(0.1, self.timings.heartbeat))
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        try:
            self._sender.send(KIND_CONTROL, encode_control(Bye()))
        except (zmq.ZMQError, OSError, GroupClosed):
            pass
        # Compiled senders and receivers hold raw socket handles: retire them first.
        self._sender.close()
        for rx, _ in self._receivers.values():
            rx.close()
        for port in (self.pub, self.sub, self.qry, self.ans):
            port.close()
        self._actions.close()
        for tally in self._tallies.values():
            tally.done.set()
        try:
            self.discovery.unregister()
        except OSError as exc:
            log.warning("group %s: discovery unregister failed: %s", self.spec.groupName, exc)
        e = self._election
        if e is not None and self._leader is not None:
            leader, self._leader = self._leader, None
            self._emit(EventKind.LEADER_LOST, leader, e.term, "left")

    def _drain_wake(self) -> None:
        assert self._wake_rx is not None
        while True:
            try:
                self._wake_rx.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
        self._run_commands()

    def _run_commands(self) -> None:
        while True:
            try:
                op, args, done, result = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                if op == "qry":
                    if self.qry.leaderEndpoint is None:
                        raise NoLeaderError(f"group {self.spec.groupName}: no leader known")
                    self.qry.send(args[0])
                elif op == "ans":
                    if not self.is_leader:
                        raise PortError(f"group {self.spec.groupName}: only the leader "
                                        "answers members")
                    self.ans.send(args[0], identity=args[1])
                elif op == "ballot":
                    self._open_ballot(*args)
                elif op == "vote":
                    self._cast(*args)
                result.append(None)
            except Exception as exc:  # handed to the caller, who raises it
                result.append(exc)
            done.set()

    def _drain(self, sock: zmq.Socket) -> None:
        rx, channel = self._receivers[sock]
        batch: list[GroupMessage] = []
        heard: dict[bytes, None] = {}
        slow: list[tuple[int, bytes, bytes, float | None, int]] = []
        try:
            # A bounded burst, then timers run; the compiled receiver builds the
            # messages, so the only per-message Python work left is the user's.
            _, malformed, filtered = rx.drain(1000, self._peers, self.peer_filter, batch,
                                              heard, slow)
            if malformed:
                self.dropped["malformed"] += malformed
            if filtered:
                self.dropped["filtered"] += filtered
            if heard:
                now = time.monotonic()
                peers = self._peers
                for sender in heard:
                    self._heard(peers[sender], sender, now)
            for item in slow:
                self._slow(channel, item, batch)
        finally:
            if batch:
                self._inbox.put(batch)

    def _slow(self, channel: str, item: tuple[int, bytes, bytes, float | None, int],
              batch: list[GroupMessage]) -> None:
        """A control message, or a message from a member not known yet."""
        kind, sender, payload, send_time, term = item
        if sender != self.memberId:
            peer = self._peers.get(sender)
            if peer is None and channel == "group":
                # Maybe announced since our last look: look again (rate-limited so
                # forged ids cannot make us scan discovery for every message).
                now = time.monotonic()
                if now - self._last_discover > 0.01:
                    self._discover(now)
                    peer = self._peers.get(sender)
            if peer is not None:
                self._heard(peer, sender, time.monotonic())
            elif channel == "group":
                self.dropped["unknown"] += 1  # not announced by discovery
                return
        if kind == KIND_APP:
            batch.append(GroupMessage(sender, payload, channel, send_time,
                                      time.time() if self.spec.timed else None, self.codec,
                                      term))
        elif channel == "group":
            self._control(sender, payload)
        else:
            self.dropped["malformed"] += 1  # control messages only travel pub/sub

    def _control(self, sender: bytes, payload: bytes) -> None:
        try:
            msg = decode_control(payload)
        except CodecError as exc:
            self.dropped["malformed"] += 1
            log.debug("group %s: %s", self.spec.groupName, exc)
            return
        election = self._election
        assert election is not None
        now = time.monotonic()
        if isinstance(msg, Presence):
            self._apply(election.on_term(msg.term, now))
        elif isinstance(msg, Heartbeat):
            self._leader_addr[sender] = (msg.host, msg.port)
            self._apply(election.on_heartbeat(sender, msg.term, now))
            if election.leader == sender:
                self._follow(sender)
        elif isinstance(msg, VoteRequest):
            self._apply(election.on_vote_request(sender, msg.term, now))
        elif isinstance(msg, Vote):
            self._apply(election.on_vote(sender, msg.term, msg.candidate, msg.granted, now))
        elif isinstance(msg, Bye):
            peer = self._peers.get(sender)
            if peer is not None:
                self._depart(sender, peer, "bye", forget=True)
            self._apply(election.on_departure(sender, now))
        elif isinstance(msg, Ballot):
            self._on_ballot(sender, msg)
        elif isinstance(msg, BallotVote):
            self._on_ballot_vote(sender, msg)
        elif isinstance(msg, BallotResult):
            self._on_ballot_result(sender, msg)

    # --- membership ------------------------------------------------------------------------

    def _heard(self, peer: _Peer, member: bytes, now: float) -> None:
        peer.last_heard = now
        peer.voter = True
        if not peer.live:
            peer.live = True
            self._update_membership()
            # It can hear us now (it sent from a connection it made to us, or we to it):
            # answer soon, so that it counts us without waiting for our heartbeat.
            self._presence_soon(now, 0.005)
            self._emit(EventKind.MEMBER_JOINED, member, self.term)

    def _presence_soon(self, now: float, delay: float) -> None:
        """Send a presence at ``now + delay`` unless one is due about then anyway."""
        at = now + delay
        if not any(abs(t - at) < 0.02 for t in self._presence_at):
            self._presence_at.append(at)
            self._presence_at.sort()

    def _depart(self, member: bytes, peer: _Peer, reason: str, forget: bool) -> None:
        if peer.live:
            peer.live = False
            self._emit(EventKind.MEMBER_LEFT, member, self.term, reason)
        if forget:
            peer.voter = False
            if reason == "bye":
                # Said goodbye: stop listening; discovery reconnects it if it comes back.
                self.sub.remove(peer.record.host, peer.record.port)
                del self._peers[member]
        self._update_membership()

    def _update_membership(self) -> None:
        live = 1 + sum(1 for p in self._peers.values() if p.live)
        voters = 1 + sum(1 for p in self._peers.values() if p.voter)
        self._size = live
        self._tick_due = True
        if self._election is not None:
            self._election.set_membership(max(voters, live), live)

    def _housekeeping(self, now: float) -> None:
        election = self._election
        assert election is not None
        dropped = (self._sender.dropped, self._sender.dropped_control)
        if dropped != self._warned_dropped:
            log.warning("group %s: %d messages and %d control messages not sent since the "
                        "last heartbeat: a member's queue stayed full (hwm %d, sendTimeout "
                        "%g s); totals in send_dropped, control_dropped",
                        self.spec.groupName, dropped[0] - self._warned_dropped[0],
                        dropped[1] - self._warned_dropped[1], self.spec.hwm,
                        self.spec.sendTimeout)
            self._warned_dropped = dropped
        listed = self._discover(now)
        timings = self.timings
        assert timings.forget_timeout is not None
        for member, peer in list(self._peers.items()):
            silent = now - peer.last_heard
            if peer.live and silent > timings.peer_timeout:
                self._depart(member, peer, "timeout", forget=False)
            if peer.voter and silent > timings.forget_timeout:
                self._depart(member, peer, "timeout", forget=True)
            if not (peer.live or peer.voter) and listed is not None and member not in listed:
                # Gone from discovery and from the electorate: stop reconnecting to it.
                self.sub.remove(peer.record.host, peer.record.port)
                del self._peers[member]
        self._pub_control(Presence(election.term))
        self.discovery.refresh()

    def _discover(self, now: float) -> set[bytes] | None:
        """Connect the sub port to every member discovery newly reports.

        Returns the ids discovery reported, or None if it failed.
        """
        self._last_discover = now
        try:
            records = self.discovery.members()
        except OSError as exc:
            log.warning("group %s: discovery failed: %s", self.spec.groupName, exc)
            return None
        security = self.spec.security
        for rec in records:
            if rec.member == self.memberId:
                continue
            peer = self._peers.get(rec.member)
            if peer is not None and (peer.record.host, peer.record.port) == (rec.host, rec.port):
                continue
            if security is not None and not security.is_allowed(rec.public_key):
                self.dropped["filtered"] += 1
                continue
            try:
                if peer is not None:  # same member, new address (its pub port was rebuilt)
                    self.sub.remove(peer.record.host, peer.record.port)
                self.sub.update(rec.host, rec.port, rec.public_key or None)
            except (PortError, PermissionError, zmq.ZMQError) as exc:
                log.warning("group %s: cannot connect to %s: %s", self.spec.groupName,
                            rec.member.hex(), exc)
                continue
            if peer is None:
                self._peers[rec.member] = _Peer(rec)
                # Say we are here soon (once the new connection is up), rather than at
                # the next heartbeat, so that the newcomer counts us without delay.
                self._presence_soon(now, 0.01)
                self._presence_soon(now, 0.05)
            else:
                peer.record = rec
        return {rec.member for rec in records}

    # --- election effects ------------------------------------------------------------------

    def _pub_control(self, msg: Any) -> None:
        self._sender.send(KIND_CONTROL, encode_control(msg))

    def _ensure_ans(self) -> int:
        # The answer port listens only once this member leads.
        return self.ans.bind()

    def _follow(self, leader: bytes) -> None:
        """Point the query port at ``leader``'s answer port."""
        if leader == self.memberId:
            addr: tuple[str, int] | None = (self.advertise, self._ensure_ans())
            key = self.spec.security.public_key if self.spec.security else None
        else:
            addr = self._leader_addr.get(leader)
            peer = self._peers.get(leader)
            key = peer.record.public_key or None if peer is not None else None
        if addr is None:
            return
        try:
            self.qry.update(addr[0], addr[1], key)
        except (PortError, PermissionError, zmq.ZMQError) as exc:
            log.warning("group %s: cannot reach leader %s: %s", self.spec.groupName,
                        leader.hex(), exc)

    def _apply(self, effects: list[Effect]) -> None:
        election = self._election
        assert election is not None
        term = election.term
        if term != self._sender.term:
            # Every message from now on carries the new term (the leader's fencing token).
            self._sender.term = term
            self.pub.term = self.qry.term = self.ans.term = term
        for eff in effects:
            if isinstance(eff, SendHeartbeat):
                num = self._ensure_ans()
                self._pub_control(Heartbeat(eff.term, self.advertise, num))
            elif isinstance(eff, SendVoteRequest):
                self._pub_control(VoteRequest(eff.term))
            elif isinstance(eff, SendVote):
                self._pub_control(Vote(eff.term, eff.candidate, eff.granted))
            elif isinstance(eff, LeaderElected):
                # Connect (or bind) first and publish the new state before the event, so
                # that whoever sees the leader, by property or callback, can use it.
                self._follow(eff.leader)
                self._leader = eff.leader
                self._emit(EventKind.LEADER_ELECTED, eff.leader, eff.term)
            elif isinstance(eff, LeaderLost):
                self.qry.update(None, None)
                if self._leader == eff.leader:
                    self._leader = None
                self._emit(EventKind.LEADER_LOST, eff.leader, eff.term)
