"""A member of a group: its four ports, discovery, heartbeat and leader election.

One background thread per :class:`Group` owns the sockets it polls (sub, query, answer)
and runs the election state machine; the pub socket is shared with the caller's
threads under a lock so that :meth:`Group.send` costs one socket send. Everything a user
calls is thread-safe.

Channels:

* group messages: :meth:`Group.send` to every member, :meth:`Group.recv` from any;
* leader channel: :meth:`Group.send_to_leader` (member to leader, arrives at the leader
  with ``channel == "query"``) and :meth:`Group.answer` (leader to one member, arrives
  with ``channel == "answer"``).

Housekeeping on the pub channel (control messages): every member's presence each
heartbeat, the leader's heartbeat announcing its term and answer address, vote requests
and votes, and a goodbye on :meth:`Group.leave`.
"""
from __future__ import annotations

import collections
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

from .codec import (KIND_APP, KIND_CONTROL, NETWORK, Bye, CodecError, Envelope, Heartbeat,
                    MemberRecord, PayloadCodec, Presence, Vote, VoteRequest, decode_control,
                    encode_control)
from .discovery import DirectoryDiscovery, Discovery
from .election import (Effect, Election, LeaderElected, LeaderLost, SendHeartbeat, SendVote,
                       SendVoteRequest, Timings)
from .ports import (GroupAnsPort, GroupPubPort, GroupQryPort, GroupSpec, GroupSubPort,
                    PortError, PortTimeout)
from .security import CurveSecurity

__all__ = ["Group", "GroupMessage", "GroupEvent", "EventKind", "NoLeaderError", "GroupClosed"]

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
    """

    kind: EventKind
    member: bytes
    term: int = 0
    reason: str = ""
    time: float = 0.0


class GroupMessage:
    """A message received by a group member.

    Attributes
    ----------
    sender : bytes
        Member id of the sender.
    data : bytes
        Raw payload; :meth:`obj` decodes it with the group's codec.
    channel : str
        ``"group"`` (to all), ``"query"`` (a member to this leader) or ``"answer"``
        (the leader to this member).
    send_time, recv_time : float or None
        Wall-clock send and receive times (timed groups).
    """

    __slots__ = ("sender", "data", "channel", "send_time", "recv_time", "codec")

    def __init__(self, sender: bytes, data: bytes, channel: str, send_time: float | None,
                 recv_time: float | None, codec: PayloadCodec) -> None:
        self.sender = sender
        self.data = data
        self.channel = channel
        self.send_time = send_time
        self.recv_time = recv_time
        self.codec = codec

    def obj(self) -> Any:
        """Decode the payload; raises :class:`~ctlwire.dc.codec.CodecError` if malformed."""
        return self.codec.decode(self.data)

    def __repr__(self) -> str:
        return (f"GroupMessage(sender={self.sender.hex()}, channel={self.channel!r}, "
                f"data={self.data[:40]!r})")


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
        Address to bind and announce (loopback by default).
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
    context : zmq.Context, optional
        zmq context (a private one by default, terminated on :meth:`leave`).
    rng : random.Random, optional
        Randomness of election timeouts.
    messageType : str
        Message type reported by the pub/sub ports' getInfo.
    hwm : int
        High-water mark of every port (messages queued per peer before PUB drops).

    Examples
    --------
    >>> with Group("Sensors", "g1", timings=Timings.fast()) as g:  # doctest: +SKIP
    ...     g.wait_for_leader(5)
    ...     g.send({"reading": 1.5})
    """

    def __init__(self, groupType: str, instanceName: str, *, timings: Timings | None = None,
                 discovery: Discovery | None = None, host: str = "127.0.0.1",
                 timed: bool = False, byteOrder: str = NETWORK,
                 codec: str | PayloadCodec = "msgpack", security: CurveSecurity | None = None,
                 memberId: bytes | None = None,
                 peer_filter: Callable[[bytes], bool] | None = None,
                 on_event: Callable[[GroupEvent], None] | None = None,
                 context: zmq.Context | None = None, rng: random.Random | None = None,
                 messageType: str = "group-msg", hwm: int = 10000) -> None:
        self.timings = timings or Timings()
        self._own_context = context is None
        self._ctx = context or zmq.Context()
        self.spec = GroupSpec(groupType, instanceName, messageType=messageType, timed=timed,
                              byteOrder=byteOrder, host=host, codec=codec, security=security,
                              memberId=memberId or uuid.uuid4().bytes, context=self._ctx,
                              hwm=hwm)
        self.memberId: bytes = self.spec.memberId
        self.codec: PayloadCodec = self.spec.codec  # type: ignore[assignment]
        self.discovery = discovery or DirectoryDiscovery()
        self.peer_filter = peer_filter
        self._callbacks: list[Callable[[GroupEvent], None]] = [on_event] if on_event else []
        self._rng = rng or random.Random()

        self.pub = GroupPubPort(self, None, self.spec)
        self.sub = GroupSubPort(self, None, self.spec)
        self.qry = GroupQryPort(self, None, self.spec)
        self.ans = GroupAnsPort(self, None, self.spec)

        self._pub_lock = threading.Lock()
        self._wake_lock = threading.Lock()
        self._commands: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        # Received messages travel in batches (one per receive burst) so that a busy
        # group wakes the reader once per burst, not once per message.
        self._inbox: queue.SimpleQueue[list[GroupMessage]] = queue.SimpleQueue()
        self._ready: collections.deque[GroupMessage] = collections.deque()
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
        self.discovery.ttl = self.timings.peer_timeout
        info = self.pub.getInfo()
        assert info is not None and info.portNum is not None
        security = self.spec.security
        self.discovery.register(MemberRecord(
            self.spec.groupName, self.memberId, self.spec.host, info.portNum,
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
    def members(self) -> set[bytes]:
        """Ids of the live members, this one included."""
        return {self.memberId} | {m for m, p in list(self._peers.items()) if p.live}

    # --- messaging -------------------------------------------------------------------------

    def send(self, obj: Any) -> None:
        """Send ``obj`` (encoded with the group's codec) to every other member."""
        self.send_bytes(self.codec.encode(obj))

    def send_bytes(self, data: bytes) -> None:
        """Send raw bytes to every other member."""
        with self._pub_lock:
            if self._closed or self.pub.getSocket() is None:
                raise GroupClosed(f"group {self.spec.groupName} was left")
            self.pub.send(data)

    def recv(self, timeout: float | None = None) -> GroupMessage:
        """Next message from the group, the leader channel or a member.

        Raises
        ------
        PortTimeout
            Nothing arrived within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return self._ready.popleft()
            except IndexError:
                pass
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                batch = self._inbox.get(timeout=left)
            except queue.Empty:
                raise PortTimeout(f"group {self.spec.groupName}: no message within "
                                  f"{timeout} s") from None
            self._ready.extend(batch)

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

    def _emit(self, kind: EventKind, member: bytes, term: int, reason: str = "") -> None:
        ev = GroupEvent(kind, member, term, reason, time.monotonic())
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
        ready.set()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                wake_at = min(next_house, election.next_wakeup())
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
                    self._apply(election.tick(now))
                except (zmq.ZMQError, OSError, PortError) as exc:
                    # A transient failure must not end membership; the next round retries.
                    log.warning("group %s: %s: %s", self.spec.groupName,
                                type(exc).__name__, exc)
                    self._stop.wait(min(0.1, self.timings.heartbeat))
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        with self._pub_lock:
            try:
                self.pub.send_frames(KIND_CONTROL, encode_control(Bye()))
            except zmq.ZMQError:
                pass
            for port in (self.pub, self.sub, self.qry, self.ans):
                port.close()
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
                result.append(None)
            except Exception as exc:  # handed to the caller, who raises it
                result.append(exc)
            done.set()

    def _drain(self, sock: zmq.Socket) -> None:
        if sock is self.sub.getSocket():
            port, channel = self.sub, "group"
        elif sock is self.qry.getSocket():
            port, channel = self.qry, "answer"
        else:
            port, channel = self.ans, "query"
        batch: list[GroupMessage] = []
        try:
            self._drain_into(port, channel, batch)
        finally:
            if batch:
                self._inbox.put(batch)

    def _drain_into(self, port: Any, channel: str, batch: list[GroupMessage]) -> None:
        envelopes, malformed = port.drain(1000)  # bounded burst, then let timers run
        self.dropped["malformed"] += malformed
        timed = self.spec.timed
        peers, keep = self._peers, self.peer_filter
        for env in envelopes:
            sender = env.sender
            if keep is not None and not keep(sender):
                self.dropped["filtered"] += 1
                continue
            if sender != self.memberId:
                peer = peers.get(sender)
                if peer is None and channel == "group":
                    # Maybe announced since our last look: look again (rate-limited so
                    # forged ids cannot make us scan discovery for every message).
                    now = time.monotonic()
                    if now - self._last_discover > 0.01:
                        self._discover(now)
                        peer = peers.get(sender)
                if peer is not None:
                    self._heard(peer, sender, time.monotonic())
                elif channel == "group":
                    self.dropped["unknown"] += 1  # not announced by discovery
                    continue
                # A query or answer from a member we have not discovered yet is still
                # delivered (its routing identity vouches for it), but it does not make
                # the sender a member.
            if env.kind == KIND_APP:
                batch.append(GroupMessage(sender, env.payload, channel, env.send_time,
                                          time.time() if timed else None, self.codec))
            elif channel == "group":
                self._control(sender, env)
            else:
                self.dropped["malformed"] += 1  # control messages only travel pub/sub

    def _control(self, sender: bytes, env: Envelope) -> None:
        try:
            msg = decode_control(env.payload)
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

    # --- membership ------------------------------------------------------------------------

    def _heard(self, peer: _Peer, member: bytes, now: float) -> None:
        peer.last_heard = now
        peer.voter = True
        if not peer.live:
            peer.live = True
            self._update_membership()
            self._emit(EventKind.MEMBER_JOINED, member, self.term)

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
        if self._election is not None:
            self._election.set_membership(max(voters, live), live)

    def _housekeeping(self, now: float) -> None:
        election = self._election
        assert election is not None
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
            else:
                peer.record = rec
        return {rec.member for rec in records}

    # --- election effects ------------------------------------------------------------------

    def _pub_control(self, msg: Any) -> None:
        with self._pub_lock:
            self.pub.send_frames(KIND_CONTROL, encode_control(msg))

    def _ensure_ans(self) -> int:
        # The answer port listens only once this member leads.
        return self.ans.bind()

    def _follow(self, leader: bytes) -> None:
        """Point the query port at ``leader``'s answer port."""
        if leader == self.memberId:
            addr: tuple[str, int] | None = (self.spec.host, self._ensure_ans())
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
        for eff in effects:
            if isinstance(eff, SendHeartbeat):
                num = self._ensure_ans()
                self._pub_control(Heartbeat(eff.term, self.spec.host, num))
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
