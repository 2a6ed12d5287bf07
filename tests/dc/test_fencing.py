"""Fencing tokens: a deposed leader's commands are refused once its successor exists.

Five members on five loopback "hosts". The toy actuator lives on one follower and obeys
group messages through :class:`~ctlwire.dc.fencing.Fenced` tied to that member's group.
The leader is then cut off with ``peer_filter``: it hears nobody, and only the actuator's
member still hears it (as over a separate control network). The majority elects a
successor in a newer term, and the old leader, which has not noticed yet (it notices only
after its peer timeout), keeps sending in its old term.
"""
from __future__ import annotations

import threading

import pytest

from ctlwire.dc.discovery import DirectoryDiscovery
from ctlwire.dc.election import Timings
from ctlwire.dc.fencing import Fenced, FencedError
from ctlwire.dc.group import Group
from ctlwire.dc.ports import PortTimeout

# Peer timeout well above the election timeout: the cut-off leader keeps believing it
# leads for a while after the majority has elected its successor.
TIMINGS = Timings(0.1, 0.4, 0.8, 5.0, 30.0)


class ToyActuator:
    """A stand-in for hardware: remembers where it was told to move."""

    def __init__(self) -> None:
        self.position = 0.0
        self.moves: list[tuple[float, int]] = []

    def move(self, position: float, term: int) -> None:
        self.position = position
        self.moves.append((position, term))


def test_fenced_refuses_older_terms_and_counts():
    act = ToyActuator()
    fenced = Fenced(act.move)
    fenced(2, 1.0, 2)
    fenced(2, 2.0, 2)
    fenced(3, 3.0, 3)
    with pytest.raises(FencedError, match="term 2; term 3 has already been seen"):
        fenced(2, 9.9, 2)
    assert act.position == 3.0 and (fenced.admitted, fenced.refused) == (3, 1)
    assert fenced.check(3) and not fenced.check(2)
    fenced.observe(5)
    assert not fenced.check(4) and fenced.floor == 5


def test_partitioned_leader_is_refused_by_a_fenced_actuator(tmp_path, wait):
    deaf: set[tuple[bytes, bytes]] = set()  # (receiver, sender) pairs that are cut

    def make(i: int) -> Group:
        box: list[Group] = []
        g = Group("Fence", "f", timings=TIMINGS, host=f"127.0.0.{i}",
                  discovery=DirectoryDiscovery(tmp_path),
                  peer_filter=lambda m: (box[0].memberId, m) not in deaf)
        box.append(g)
        return g

    members = [make(i) for i in range(2, 7)]
    for g in members:
        g.join()
    try:
        wait(lambda: all(g.size == 5 for g in members) and
             len({g.leader_id for g in members}) == 1 and members[0].leader_id is not None,
             timeout=30, interval=0.05)
        old = next(g for g in members if g.is_leader)
        followers = [g for g in members if g is not old]
        host, others = followers[0], followers[1:]  # the actuator's member, the rest
        actuator = ToyActuator()
        fenced = Fenced(actuator.move, group=host, name="toy actuator")
        outcomes: list[tuple[float, int, str]] = []
        stop = threading.Event()

        def drive() -> None:  # the actuator's driver: obeys group messages, fenced
            while not stop.is_set():
                try:
                    msg = host.recv(timeout=0.1)
                except PortTimeout:
                    continue
                pos = msg.obj()["move"]
                try:
                    fenced(msg.term, pos, msg.term)
                    outcomes.append((pos, msg.term, "done"))
                except FencedError:
                    outcomes.append((pos, msg.term, "refused"))

        driver = threading.Thread(target=drive)
        driver.start()
        try:
            old_term = old.term
            old.send({"move": 1.0})
            wait(lambda: (1.0, old_term, "done") in outcomes, timeout=10)

            # Partition: the old leader hears nobody, and only the actuator's member
            # still hears it.
            for g in followers:
                deaf.add((old.memberId, g.memberId))
            for g in others:
                deaf.add((g.memberId, old.memberId))
            new = wait(lambda: next((g for g in followers if g.is_leader
                                     and g.term > old_term), None), timeout=30,
                       interval=0.02)
            wait(lambda: host.term >= new.term, timeout=10)
            still_thinks_it_leads = old.is_leader
            old.send({"move": 66.6})  # the deposed leader's command, stamped old_term
            new.send({"move": 2.0})
            wait(lambda: any(o[0] == 66.6 for o in outcomes)
                 and any(o[0] == 2.0 for o in outcomes), timeout=10)
        finally:
            stop.set()
            driver.join(5)
        assert (66.6, old_term, "refused") in outcomes
        assert (2.0, new.term, "done") in outcomes
        assert actuator.position == 2.0
        assert 66.6 not in [p for p, _ in actuator.moves]
        assert not host.fence(old_term) and host.fence(new.term)
        # It sent while still believing it led (it notices only after its 5 s peer
        # timeout), so nothing but the fence stopped its command.
        assert still_thinks_it_leads and old.term == old_term
    finally:
        for g in members:
            g.leave()
