"""Fault tests: members in separate processes over loopback, with fast timings.

Timings: heartbeat 50 ms, election timeout 150-300 ms, peer timeout 600 ms. Time bounds
are asserted with ten times the nominal value, for a loaded two-core machine.
"""
from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.slow

HEARTBEAT, ELECTION_MAX, PEER_TIMEOUT = 0.05, 0.3, 0.6
SLACK = 10


def test_three_members_agree_on_one_leader(cluster, agree):
    members = cluster(3)
    leader, term = agree(members)
    assert leader in {m.id for m in members} and term >= 1


def test_five_members_agree_on_one_leader(cluster, agree):
    members = cluster(5)
    leader, _ = agree(members)
    assert sum(1 for m in members for e in m.events("leader_elected")
               if e["member"] == leader) >= 5


def test_killed_leader_is_replaced_within_election_timeout_plus_heartbeat(cluster, agree):
    members = cluster(3)
    old, old_term = agree(members)
    survivors = [m for m in members if m.id != old]
    killed_at = time.time()
    next(m for m in members if m.id == old).kill()
    new, new_term = agree(survivors, timeout=SLACK * (ELECTION_MAX + HEARTBEAT) + 5)
    elected_at = max(m.wait(lambda e: e["ev"] == "leader_elected" and e["member"] == new,
                            timeout=5)["t"] for m in survivors)
    assert new != old and new_term > old_term
    assert elected_at - killed_at < SLACK * (ELECTION_MAX + HEARTBEAT)


def test_query_port_follows_the_new_leader(cluster, agree):
    members = cluster(3)
    old, _ = agree(members)
    next(m for m in members if m.id == old).kill()
    survivors = [m for m in members if m.id != old]
    new, _ = agree(survivors, timeout=30)
    asker = next(m for m in survivors if m.id != new)
    mark = asker.mark()
    deadline = time.monotonic() + 10
    answer = None
    while answer is None and time.monotonic() < deadline:
        asker.command(cmd="ask", obj="who leads?")
        try:
            answer = asker.wait(lambda e: e["ev"] == "msg" and e["channel"] == "answer",
                                timeout=0.5, since=mark)
        except AssertionError:
            continue
    assert answer is not None and answer["obj"] == {"answer": "who leads?", "by": new}


def known_to(others, victim):
    """Wait until every one of ``others`` has heard ``victim`` (a precondition)."""
    for m in others:
        m.wait(lambda e: e["ev"] == "member_joined" and e["member"] == victim.id, timeout=20)


def test_killed_member_is_noticed_within_peer_timeout(cluster, agree):
    members = cluster(3)
    leader, _ = agree(members)
    victim = next(m for m in members if m.id != leader)
    others = [m for m in members if m is not victim]
    known_to(others, victim)
    killed_at = time.time()
    victim.kill()
    for m in others:
        ev = m.wait(lambda e: e["ev"] == "member_left" and e["member"] == victim.id,
                    timeout=SLACK * PEER_TIMEOUT)
        assert ev["reason"] == "timeout"
        assert ev["t"] - killed_at < SLACK * PEER_TIMEOUT


def test_killing_a_follower_keeps_the_leader(cluster, agree):
    # Wider election timeouts: with 50 ms heartbeats a follower starved of CPU for
    # 300 ms on a loaded box would rightly stand for election and unseat the leader.
    members = cluster(3, "--timings", "0.05,0.6,1.2,2.0,30")
    leader, term = agree(members)
    victim = next(m for m in members if m.id != leader)
    others = [m for m in members if m is not victim]
    known_to(others, victim)
    victim.kill()
    for m in others:
        m.wait(lambda e: e["ev"] == "member_left" and e["member"] == victim.id, timeout=10)
    assert agree(others) == (leader, term)


def test_partitioned_minority_elects_no_second_leader(cluster, agree):
    members = cluster(5)
    leader, term = agree(members, timeout=30)
    minority = [next(m for m in members if m.id == leader)]
    minority.append(next(m for m in members if m.id != leader))
    majority = [m for m in members if m not in minority]
    marks = {m.id: m.mark() for m in members}
    for m in minority:
        m.command(cmd="block", ids=[o.id for o in majority])
    for m in majority:
        m.command(cmd="block", ids=[o.id for o in minority])
    # The majority elects a new leader among itself...
    new, new_term = agree(majority, timeout=30)
    assert new != leader and new_term > term
    # ...while the minority, watched for several peer timeouts, elects nobody.
    for m in minority:
        m.wait(lambda e: e["ev"] == "leader_lost", timeout=10, since=marks[m.id])
    window_end = time.monotonic() + 4 * PEER_TIMEOUT
    while time.monotonic() < window_end:
        for m in minority:
            assert not [e for e in m.lines[marks[m.id]:] if e["ev"] == "leader_elected"]
        time.sleep(0.05)
    # Healed, the group agrees again, and no term ever had two leaders.
    for m in members:
        m.command(cmd="block", ids=[])
    agree(members, timeout=30)
    by_term: dict[int, set[str]] = {}
    for m in members:
        for e in m.events("leader_elected"):
            by_term.setdefault(e["term"], set()).add(e["member"])
    assert all(len(leaders) == 1 for leaders in by_term.values()), by_term


def test_udp_beacon_discovery_across_processes(cluster, agree, free_udp_port):
    members = cluster(3, "--udp-port", str(free_udp_port))
    leader, _ = agree(members)
    assert leader in {m.id for m in members}


def test_garbage_on_every_port_is_dropped_harmlessly(cluster, agree, tmp_path):
    import os
    import socket
    import uuid

    import zmq

    from ctlwire.dc.codec import (KIND_APP, KIND_CONTROL, Heartbeat, MemberRecord,
                                  decode_control, decode_frames, decode_record,
                                  encode_frames, encode_record)

    members = cluster(3, "--timings", "0.05,0.6,1.2,2.0,30")  # leadership must not move
    leader, term = agree(members)
    gdir = tmp_path / "disc" / "Test.g1"
    records = [decode_record(p.read_bytes()) for p in gdir.glob("*.rec")]
    assert len(records) == 3
    ctx = zmq.Context()
    try:
        # The leader's answer address, read from its heartbeats on its pub port.
        spy = ctx.socket(zmq.SUB)
        spy.setsockopt(zmq.SUBSCRIBE, b"")
        lrec = next(r for r in records if r.member.hex() == leader)
        spy.connect(f"tcp://127.0.0.1:{lrec.port}")
        ans_port = None
        deadline = time.monotonic() + 10
        while ans_port is None and time.monotonic() < deadline:
            if spy.poll(100):
                env = decode_frames(spy.recv_multipart(), timed=False)
                if env.kind == KIND_CONTROL:
                    msg = decode_control(env.payload)
                    if isinstance(msg, Heartbeat):
                        ans_port = msg.port
        assert ans_port is not None
        # 1. Raw bytes (not even ZMTP) into every bound port.
        for port in [r.port for r in records] + [ans_port]:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(os.urandom(512))
        # 2. A fake member announced through discovery, whose pub sprays every sub port.
        fake_id = uuid.uuid4().bytes
        fake = ctx.socket(zmq.PUB)
        fport = fake.bind_to_random_port("tcp://127.0.0.1")
        (gdir / f"{fake_id.hex()}.rec").write_bytes(
            encode_record(MemberRecord("Test.g1", fake_id, "127.0.0.1", fport)))
        junk = [[b"junk"], [b"DC\x01A", b"short header"], [os.urandom(20), b"x"],
                encode_frames(KIND_CONTROL, fake_id, b"\xc1\xc1 not msgpack"),
                encode_frames(KIND_CONTROL, fake_id, b"\x81\xa4type\xa5bogus"),
                [b"a", b"b", b"c", b"d", b"e"]]
        # 3. A raw DEALER spraying the leader's answer port.
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(f"tcp://127.0.0.1:{ans_port}")
        spray_until = time.monotonic() + 3 * PEER_TIMEOUT
        while time.monotonic() < spray_until:
            os.utime(gdir / f"{fake_id.hex()}.rec")
            for frames in junk:
                fake.send_multipart(frames)
                dealer.send_multipart(frames)
            dealer.send_multipart(encode_frames(KIND_APP, fake_id, b"forged identity"))
            time.sleep(0.02)
        # Every member is alive, the leadership did not move, and the leader still answers.
        assert all(m.proc.poll() is None for m in members)
        assert agree(members) == (leader, term)
        asker = next(m for m in members if m.id != leader)
        mark = asker.mark()
        asker.command(cmd="ask", obj="still there?")
        answer = asker.wait(lambda e: e["ev"] == "msg" and e["channel"] == "answer",
                            timeout=10, since=mark)
        assert answer["obj"] == {"answer": "still there?", "by": leader}
        assert not [e for m in members for e in m.events("msg") if e["channel"] == "group"]
        fake.close()
        dealer.close()
        spy.close()
    finally:
        ctx.destroy(linger=0)
