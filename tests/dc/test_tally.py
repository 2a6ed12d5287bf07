"""The counting rules of group votes (``votes.Tally``), against their definition.

Hypothesis plays random answers in random order; whenever the tally decides early, no
way of answering the rest may change the outcome, and at the deadline the outcome is the
definition itself: majority = more than half of the electorate accepted, consensus =
all of it did (silence counts as abstention).
"""
from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from ctlwire.dc.codec import Ballot
from ctlwire.dc.votes import Tally


def definition(kind: str, n: int, accepted: int) -> bool:
    return 2 * accepted > n if kind == "majority" else accepted == n


def make(kind: str, n: int) -> Tally:
    members = {bytes([i]) * 16 for i in range(n)}
    return Tally(Ballot(b"\x09" * 16, "t", b"", kind, 1.0), members, None, deadline=10.0)


@given(kind=st.sampled_from(["majority", "consensus"]), n=st.integers(1, 7),
       answers=st.lists(st.sampled_from([True, False, None]), min_size=7, max_size=7))
def test_early_decisions_are_final_and_the_deadline_applies_the_definition(kind, n, answers):
    tally = make(kind, n)
    members = sorted(tally.electorate)
    decided = None
    for member, answer in zip(members, answers):
        if answer is not None:
            assert tally.add(member, answer)
            assert not tally.add(member, not answer)  # the first answer counts
        result = tally.decide(now=0.0)
        if result is not None and decided is None:
            decided = result
            # every way the members not yet counted could still answer gives the same
            counted = dict(tally.votes)
            rest = [m for m in members if m not in counted]
            for fill in itertools.product([True, False, None], repeat=len(rest)):
                acc = sum(counted.values()) + sum(1 for f in fill if f is True)
                assert definition(kind, n, acc) == result.passed
    final = tally.decide(now=10.0)
    accepted = sum(1 for v in tally.votes.values() if v)
    assert final is not None
    assert final.passed == definition(kind, n, accepted)
    assert final.accepted + final.refused + final.abstained == n
    if decided is not None:
        assert decided.passed == final.passed


def test_strangers_do_not_count():
    tally = make("majority", 3)
    assert not tally.add(b"\x77" * 16, True)
    assert tally.decide(now=0.0) is None
