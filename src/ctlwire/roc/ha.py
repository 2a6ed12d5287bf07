"""Which of two brokers is active: the peer-state machine of a primary and its standby.

Pure logic, no sockets (imports only the standard library): the broker's peer-link
thread feeds it what it hears from the other broker, and the router asks it whether a
client's call may make this broker active.  Modelled on ZeroMQ's Binary Star pattern.

The rule (no split brain)
-------------------------
* A broker starts **passive** when it has a peer (a standby, or a primary told that it
  has one).  A passive broker holds client calls; it never routes them.
* A passive broker becomes **active** only when

  1. its peer has been silent for ``timeout`` seconds (counted from its own start
     too, so a broker that was just started waits to hear from its peer), **and**
  2. a client has sent it a call (the *client's vote*: clients use the primary
     while they can reach it and go to the standby only when they cannot);

  or, for the primary only, when the standby says it is passive (both passive: the
  primary takes the role without waiting for a vote).
* Two brokers that see each other active (after a cut between them healed) resolve
  it at once: the one that has been active for the shorter time becomes passive
  (the standby, on a tie); its clients are told "not active" and move over.

So when the two brokers cannot see each other but every client can see both, the
clients keep using the active one and the other never gets a vote: it stays passive.
An old primary that comes back while its standby is active hears the standby and
stays passive.  What this cannot prevent: clients split so that some reach only one
broker and others only the other while the brokers cannot see each other; both then
serve for as long as that lasts (calls still run once per server, see docs/roc.md).
"""
from __future__ import annotations

import threading

ACTIVE = "active"
PASSIVE = "passive"
PRIMARY = "primary"
STANDBY = "standby"


class PeerState:
    """The state of one broker of a primary/standby pair.

    Parameters
    ----------
    role : {'primary', 'standby'}
        This broker's role.
    timeout : float
        Seconds of silence after which the peer counts as gone.
    now : float
        The current (monotonic) time: the peer counts as heard at start.
    """

    __slots__ = ("role", "timeout", "active", "peer_heard", "peer_state",
                 "active_since", "_lock", "takeovers", "yields")

    def __init__(self, role: str, timeout: float, now: float) -> None:
        if role not in (PRIMARY, STANDBY):
            raise ValueError(f"role must be {PRIMARY!r} or {STANDBY!r}, got {role!r}")
        if not timeout > 0:
            raise ValueError(f"peer timeout must be > 0, got {timeout!r}")
        self.role = role
        self.timeout = timeout
        self.active = False
        self.peer_heard = now
        self.peer_state: str | None = None
        self.active_since = 0.0
        # the router thread votes while the peer-link thread reports
        self._lock = threading.Lock()
        #: Times this broker became active, and times it gave way to its peer.
        self.takeovers = 0
        self.yields = 0

    @property
    def state(self) -> str:
        """``'active'`` or ``'passive'``."""
        return ACTIVE if self.active else PASSIVE

    def active_for(self, now: float) -> float:
        """Seconds this broker has been active (0 when passive)."""
        return now - self.active_since if self.active else 0.0

    def _activate(self, now: float) -> None:
        self.active = True
        self.active_since = now
        self.takeovers += 1

    def client_vote(self, now: float) -> bool:
        """A client sent a call at ``now``; returns whether this broker is (now) active."""
        with self._lock:
            if not self.active and now - self.peer_heard >= self.timeout:
                self._activate(now)
            return self.active

    def peer_message(self, state: str, active_for: float, now: float) -> bool:
        """The peer said it is ``state`` (active for ``active_for`` s); returns
        whether this broker is active afterwards."""
        with self._lock:
            self.peer_heard = now
            self.peer_state = state
            if state == ACTIVE and self.active:
                mine = now - self.active_since
                if mine < active_for or (mine == active_for and self.role == STANDBY):
                    self.active = False
                    self.yields += 1
            elif state == PASSIVE and not self.active and self.role == PRIMARY:
                self._activate(now)
            return self.active

    def peer_silent(self, now: float) -> bool:
        """Whether the peer has been silent for the timeout."""
        return now - self.peer_heard >= self.timeout
