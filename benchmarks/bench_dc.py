"""Benchmark group coordination: group message rate and leader failover time.

Run: ``python benchmarks/bench_dc.py`` (about a minute; ``--quick`` for a short run).

1. Group messages per second from one member to four others (five processes on
   loopback). Ours: ``Group.send`` of a small msgpack dict, received with ``Group.recv``
   and decoded. Peer: what the original does underneath, a bare pyzmq PUB socket with
   ``send_pyobj`` (pickle) to four SUB sockets with ``recv_pyobj``, without any
   group framing. Rate = messages a receiver got / time from its first to its last.
   Median of three alternating rounds.
2. Leader failover: three member processes agree on a leader, the leader is killed with
   SIGKILL, and we time until every survivor reports the same new leader (timestamps
   from the members' own event callbacks). Default (RIAPS) timings and fast timings; the
   bound the issue asks for is election timeout max + one heartbeat.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from ctlwire._testing.proc import JsonLinesChild

PAYLOAD = {"seq": 0, "value": 1.25, "name": "sensor-1"}




def emit(**obj: object) -> None:
    obj.setdefault("t", time.time())
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# --- child roles ---------------------------------------------------------------------------

def role_group_receiver(root: str, idle: float) -> None:
    from ctlwire.dc.discovery import DirectoryDiscovery
    from ctlwire.dc.election import Timings
    from ctlwire.dc.group import Group
    from ctlwire.dc.ports import PortTimeout
    with Group("Bench", "rate", timings=Timings.fast(), discovery=DirectoryDiscovery(root),
               hwm=0) as g:
        emit(ev="ready")
        count, first, last, cpu0 = 0, 0.0, 0.0, 0.0
        while True:
            try:
                msg = g.recv(timeout=idle if count else 30)
            except PortTimeout:
                break
            msg.obj()
            if msg.data == b"\xa3end":
                break
            now = time.perf_counter()
            if not count:
                first, cpu0 = now, time.process_time()
            count, last = count + 1, now
        emit(ev="result", count=count, seconds=last - first, cpu=time.process_time() - cpu0)


def role_zmq_receiver(endpoint: str, idle: float, codec: str = "pickle") -> None:
    import zmq
    if codec == "msgpack":
        return role_zmq_msgpack_receiver(endpoint, idle)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    emit(ev="ready")
    count, first, last, cpu0 = 0, 0.0, 0.0, 0.0
    while True:
        try:  # poll only when the queue is empty, as a fast receiver does
            obj = sub.recv_pyobj(zmq.NOBLOCK)  # the original's pickle; trusted, local
        except zmq.Again:
            if sub.poll(int((idle if count else 30) * 1000)):
                continue
            break
        if obj == "end":
            break
        now = time.perf_counter()
        if not count:
            first, cpu0 = now, time.process_time()
        count, last = count + 1, now
    emit(ev="result", count=count, seconds=last - first, cpu=time.process_time() - cpu0)
    sub.close(0)
    ctx.term()


def role_zmq_msgpack_receiver(endpoint: str, idle: float) -> None:
    import msgspec
    import zmq
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    decode = msgspec.msgpack.Decoder().decode
    emit(ev="ready")
    count, first, last, cpu0 = 0, 0.0, 0.0, 0.0
    while True:
        try:  # poll only when the queue is empty, as a fast receiver does
            data = sub.recv(zmq.NOBLOCK)
        except zmq.Again:
            if sub.poll(int((idle if count else 30) * 1000)):
                continue
            break
        obj = decode(data)
        if obj == "end":
            break
        now = time.perf_counter()
        if not count:
            first, cpu0 = now, time.process_time()
        count, last = count + 1, now
    emit(ev="result", count=count, seconds=last - first, cpu=time.process_time() - cpu0)
    sub.close(0)
    ctx.term()


def role_member(root: str, timings: str) -> None:
    from ctlwire.dc.discovery import DirectoryDiscovery
    from ctlwire.dc.election import Timings
    from ctlwire.dc.group import Group
    t = Timings(*(float(x) for x in timings.split(",")))

    def on_event(ev):  # type: ignore[no-untyped-def]
        emit(ev=ev.kind.value, member=ev.member.hex(), term=ev.term)

    with Group("Bench", "failover", timings=t, discovery=DirectoryDiscovery(root),
               on_event=on_event) as g:
        emit(ev="ready", id=g.memberId.hex())
        sys.stdin.read()  # until the parent closes stdin or kills us


DISC_TIMINGS = "1,1.5,2,3"  # RIAPS defaults: 50 members x 49 presences/s, little load


def role_redis_members(url: str, count: str) -> None:
    """``count`` group members found through Redis, reporting when they learn of others."""
    import zmq

    from ctlwire.dc.discovery import RedisDiscovery
    from ctlwire.dc.election import Timings
    from ctlwire.dc.group import EventKind, Group

    class Timed(RedisDiscovery):
        # members() runs on the group's thread when discovery wakes it: the moment the
        # group learns of a member (it connects to it right after).
        def __init__(self, owner: list) -> None:
            super().__init__(url)
            self.owner, self.seen = owner, set()

        def members(self):  # type: ignore[no-untyped-def]
            recs = super().members()
            now = time.time()
            for r in recs:
                if r.member not in self.seen:
                    self.seen.add(r.member)
                    emit(ev="seen", member=r.member.hex(), by=self.owner[0], t=now)
            return recs

    def on_event(ev):  # type: ignore[no-untyped-def]
        if ev.kind is EventKind.MEMBER_JOINED:
            emit(ev="joined", member=ev.member.hex())

    ctx = zmq.Context()
    t = Timings(*(float(x) for x in DISC_TIMINGS.split(",")))
    groups = []
    for i in range(int(count)):
        owner: list = []
        g = Group("Bench", "disc", timings=t, discovery=Timed(owner), context=ctx,
                  on_event=on_event)
        owner.append(g.memberId.hex())
        groups.append(g.join())
    emit(ev="ready", ids=[g.memberId.hex() for g in groups])
    sys.stdin.read()
    for g in groups:
        g.leave()
    ctx.term()


def role_voter(root: str) -> None:
    """A member that accepts every vote and reports how late it acted."""
    from ctlwire.dc.discovery import DirectoryDiscovery
    from ctlwire.dc.election import Timings
    from ctlwire.dc.group import Group

    def act(action, when):  # type: ignore[no-untyped-def]
        late = time.time() - when
        emit(ev="acted", action=action, late=late)

    with Group("Bench", "vote", timings=Timings(0.1, 0.5, 1.0, 2.0),
               discovery=DirectoryDiscovery(root), on_vote=lambda v: True,
               on_action=act) as g:
        emit(ev="ready", id=g.memberId.hex())
        sys.stdin.read()


# --- parent side ---------------------------------------------------------------------------

class Child(JsonLinesChild):
    """This script in a child process in one of the roles above."""

    def __init__(self, *args: str) -> None:
        super().__init__([__file__, *args], what=f"bench child {args[0]}")

    def wait(self, ev: str, timeout: float) -> dict:  # type: ignore[override]
        return super().wait(lambda obj: obj["ev"] == ev, timeout)

    def leader_id(self) -> str | None:
        current = self.leader()
        return None if current is None else current[0]


def summarise(results: list[dict], n: int) -> tuple[float, float, float]:
    """Mean rate per receiver, loss fraction, and receiver CPU microseconds per message."""
    rates = [r["count"] / r["seconds"] for r in results if r["seconds"] > 0]
    lost = sum(n - r["count"] for r in results)
    cpu = statistics.mean(1e6 * r["cpu"] / r["count"] for r in results if r["count"])
    return statistics.mean(rates), lost / (4 * n), cpu


def rate_ours(n: int) -> tuple[float, float, float]:
    from ctlwire.dc.discovery import DirectoryDiscovery
    from ctlwire.dc.election import Timings
    from ctlwire.dc.group import Group
    with tempfile.TemporaryDirectory() as root:
        kids = [Child("group-receiver", root) for _ in range(4)]
        try:
            for k in kids:
                k.wait("ready", 30)
            with Group("Bench", "rate", timings=Timings.fast(),
                       discovery=DirectoryDiscovery(root), hwm=0) as g:
                deadline = time.monotonic() + 30
                while g.size < 5 and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(1.0)  # let every subscription settle (PUB drops before that)
                msg = dict(PAYLOAD)
                for i in range(n):
                    msg["seq"] = i
                    g.send(msg)
                g.send_bytes(b"\xa3end")
                results = [k.wait("result", 120) for k in kids]
        finally:
            for k in kids:
                k.kill()
    return summarise(results, n)


def rate_zmq(n: int, codec: str = "pickle") -> tuple[float, float, float]:
    import msgspec
    import zmq
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    kids = [Child("zmq-receiver", f"tcp://127.0.0.1:{port}", codec) for _ in range(4)]
    try:
        for k in kids:
            k.wait("ready", 30)
        time.sleep(1.0)
        msg = dict(PAYLOAD)
        if codec == "msgpack":
            encode = msgspec.msgpack.Encoder().encode
            for i in range(n):
                msg["seq"] = i
                pub.send(encode(msg))
            pub.send(encode("end"))
        else:
            for i in range(n):
                msg["seq"] = i
                pub.send_pyobj(msg)
            pub.send_pyobj("end")
        results = [k.wait("result", 120) for k in kids]
    finally:
        for k in kids:
            k.kill()
        pub.close(0)
        ctx.term()
    return summarise(results, n)


def failover(timings: str, trials: int) -> list[float]:
    times = []
    for _ in range(trials):
        with tempfile.TemporaryDirectory() as root:
            kids = [Child("member", root, timings) for _ in range(3)]
            try:
                ids = [k.wait("ready", 30)["id"] for k in kids]
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    views = {k.leader_id() for k in kids}
                    if len(views) == 1 and views <= set(ids):
                        break
                    time.sleep(0.01)
                old = views.pop()
                victim = kids[ids.index(old)]
                rest = [k for k in kids if k is not victim]
                killed = time.time()
                victim.kill()
                while time.monotonic() < deadline:
                    views = {k.leader_id() for k in rest}
                    if len(views) == 1 and None not in views and old not in views:
                        break
                    time.sleep(0.005)
                new = views.pop()
                with_times = [max(e["t"] for e in k.lines if e["ev"] == "leader_elected"
                                  and e["member"] == new) for k in rest]
                times.append(max(with_times) - killed)
            finally:
                for k in kids:
                    k.kill()
    return times


def redis_discovery(members: int, trials: int) -> dict | None:
    """Time until ``members`` others know a newly joined member (Redis discovery)."""
    import shutil
    import socket
    import subprocess

    from ctlwire.dc.discovery import RedisDiscovery
    from ctlwire.dc.election import Timings
    from ctlwire.dc.group import Group

    binary = shutil.which("redis-server")
    if binary is None:
        print("  (skipped: redis-server is not on PATH)")
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save",
                               "", "--appendonly", "no", "--notify-keyspace-events", "Kgx"],
                              stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    kids: list[Child] = []
    try:
        import redis
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        per = 10
        kids = [Child("redis-members", url, str(per)) for _ in range(members // per)]
        for k in kids:
            k.wait("ready", 120)
        # Let the 50 settle (all connected to each other) before timing newcomers.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and min(
                len(k.events("joined")) for k in kids) < per * (members - 1):
            time.sleep(0.1)
        t = Timings(*(float(x) for x in DISC_TIMINGS.split(",")))
        known, joined, all_known = [], [], []
        for _ in range(trials):
            marks = [k.mark() for k in kids]
            g = Group("Bench", "disc", timings=t, discovery=RedisDiscovery(url))
            me = g.memberId.hex()
            t0 = time.time()
            g.join()
            seen: list[dict] = []
            for k, m in zip(kids, marks):
                for _ in range(per):
                    e = JsonLinesChild.wait(k, lambda e: e["ev"] == "seen" and e["member"] == me
                                            and e not in seen, 30, since=m)
                    seen.append(e)
            times = [e["t"] - t0 for e in seen]
            known += times
            all_known.append(max(times))
            t_join = []
            for k, m in zip(kids, marks):
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    evs = [e for e in k.lines[m:] if e["ev"] == "joined" and e["member"] == me]
                    if len(evs) >= per:
                        t_join += [e["t"] - t0 for e in evs]
                        break
                    time.sleep(0.01)
            joined += t_join
            g.leave()
            time.sleep(0.3)
        return {"known": known, "all_known": all_known, "joined": joined}
    finally:
        for k in kids:
            k.kill()
        server.terminate()
        server.wait(10)


def action_closeness(trials: int) -> list[float]:
    """How late (s) each member acts after ``when`` in passed action votes."""
    from ctlwire.dc.discovery import DirectoryDiscovery
    from ctlwire.dc.election import Timings
    from ctlwire.dc.group import Group
    lates: list[float] = []
    with tempfile.TemporaryDirectory() as root:
        kids = [Child("voter", root) for _ in range(4)]
        try:
            for k in kids:
                k.wait("ready", 30)

            def act(action, when):  # type: ignore[no-untyped-def]
                lates.append(time.time() - when)

            with Group("Bench", "vote", timings=Timings(0.1, 0.5, 1.0, 2.0),
                       discovery=DirectoryDiscovery(root), on_action=act) as g:
                deadline = time.monotonic() + 30
                while g.size < 5 and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(1.0)  # let every member's subscriptions settle, as above
                for i in range(trials):
                    marks = [k.mark() for k in kids]
                    out = g.request_action_vote({"step": i}, time.time() + 0.4, timeout=0.2)
                    if not out.passed:
                        continue
                    for k, m in zip(kids, marks):
                        try:
                            lates.append(JsonLinesChild.wait(
                                k, lambda e: e["ev"] == "acted", 5, since=m)["late"])
                        except TimeoutError:
                            pass  # it missed the ballot (lost), so it never agreed
        finally:
            for k in kids:
                k.kill()
    return lates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", nargs="?", default="bench")
    ap.add_argument("args", nargs="*")
    ap.add_argument("--quick", action="store_true", help="smaller run")
    ap.add_argument("--rate-only", action="store_true", help="only the message rate")
    ap.add_argument("--rounds", type=int, default=0, help="rounds of the rate measure")
    ap.add_argument("--only", choices=["discovery", "actions"],
                    help="only the Redis discovery or the action vote measure")
    ns = ap.parse_args()
    if ns.role == "group-receiver":
        return role_group_receiver(ns.args[0], idle=3.0)
    if ns.role == "zmq-receiver":
        return role_zmq_receiver(ns.args[0], idle=3.0, codec=ns.args[1])
    if ns.role == "member":
        return role_member(ns.args[0], ns.args[1])
    if ns.role == "redis-members":
        return role_redis_members(ns.args[0], ns.args[1])
    if ns.role == "voter":
        return role_voter(ns.args[0])
    if ns.only in ("discovery", "actions"):
        return extras(ns)
    n = 20_000 if ns.quick else 50_000
    rounds = ns.rounds or (1 if ns.quick else 5)
    print(f"group messages, 1 sender -> 4 receivers, {n} messages of a 3-field dict, "
          f"median of {rounds} alternating rounds")
    ours_runs, mp_runs, pk_runs = [], [], []
    for _ in range(rounds):  # alternate, so background load hits all alike
        ours_runs.append(rate_ours(n))
        mp_runs.append(rate_zmq(n, "msgpack"))
        pk_runs.append(rate_zmq(n, "pickle"))
    def med(runs: list[tuple[float, float, float]], i: int) -> float:
        return statistics.median(r[i] for r in runs)

    def loss(runs: list[tuple[float, float, float]]) -> str:
        return f"{max(r[1] for r in runs):.1%}"
    ours, mp, pk = med(ours_runs, 0), med(mp_runs, 0), med(pk_runs, 0)
    c_ours, c_mp, c_pk = med(ours_runs, 2), med(mp_runs, 2), med(pk_runs, 2)
    print(f"  {'':36s} {'msg/s per receiver':>18s} {'receiver CPU us/msg':>20s}")
    for name, rate, cpu, runs in (("ctlwire Group (msgpack, framed)", ours, c_ours, ours_runs),
                                  ("bare pyzmq PUB/SUB + msgspec msgpack", mp, c_mp, mp_runs),
                                  ("bare pyzmq PUB/SUB + pickle", pk, c_pk, pk_runs)):
        print(f"  {name:36s} {rate:18,.0f} {cpu:20.2f}   (loss {loss(runs)})")
    print(f"  ratio ours / bare msgpack: rate {ours / mp:.2f}, by CPU per message "
          f"{c_mp / c_ours:.2f}  (target >= 0.8)")
    print(f"  ratio ours / bare pickle : rate {ours / pk:.2f}, by CPU per message "
          f"{c_pk / c_ours:.2f}")
    print(f"  deliveries/s (x4 receivers): {4 * ours:,.0f} vs {4 * mp:,.0f} (msgpack) and "
          f"{4 * pk:,.0f} (pickle)")
    print("  rounds, msg/s (ours / msgpack / pickle): "
          + "; ".join(f"{a[0]:,.0f} / {b[0]:,.0f} / {c[0]:,.0f}" for a, b, c
                      in zip(ours_runs, mp_runs, pk_runs)))
    if ns.rate_only:
        return
    for name, timings, trials, bound in (
            ("fast (hb 50 ms, election 150-300 ms, peer 600 ms)", "0.05,0.15,0.3,0.6",
             3 if ns.quick else 8, 0.35),
            ("default (hb 1 s, election 1.5-2 s, peer 3 s)", "1,1.5,2,3",
             1 if ns.quick else 3, 3.0)):
        times = failover(timings, trials)
        print(f"leader failover, 3 members, {name}: {len(times)} trials")
        print(f"  median {statistics.median(times) * 1000:7.0f} ms, max "
              f"{max(times) * 1000:7.0f} ms; bound election max + heartbeat = "
              f"{bound * 1000:.0f} ms; median/bound = {statistics.median(times) / bound:.2f}")
    extras(ns)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def extras(ns: argparse.Namespace) -> None:
    """The Redis discovery and the action vote measures."""
    if ns.only in (None, "discovery"):
        trials = 4 if ns.quick else 10
        print(f"discovery through Redis: a new member joins a group of 50 (5 processes x 10 "
              f"members, one redis-server on loopback), {trials} trials")
        res = redis_discovery(50, trials)
        if res is not None:
            k, a, j = res["known"], res["all_known"], res["joined"]
            print(f"  known to each of the 50 (discovery reported it, sub port connected): "
                  f"median {statistics.median(k) * 1000:.1f} ms, p90 {pct(k, 0.9) * 1000:.1f} ms,"
                  f" max {max(k) * 1000:.1f} ms  (target: median <= 100 ms)")
            print(f"  known to all 50, per trial: median {statistics.median(a) * 1000:.1f} ms, "
                  f"max {max(a) * 1000:.1f} ms")
            if j:
                print(f"  member_joined event (first presence heard, heartbeat "
                      f"{float(DISC_TIMINGS.split(',')[0]) * 1000:.0f} ms): median "
                      f"{statistics.median(j) * 1000:.1f} ms, max {max(j) * 1000:.1f} ms")
    if ns.only in (None, "actions"):
        trials = 5 if ns.quick else 20
        lates = action_closeness(trials)
        print(f"action votes: 5 members (5 processes), {trials} passed votes, members act at "
              f"`when` (wall clock, one machine)")
        print(f"  lateness after when over {len(lates)} actions: median "
              f"{statistics.median(lates) * 1e6:.0f} us, p90 {pct(lates, 0.9) * 1e6:.0f} us, "
              f"max {max(lates) * 1e6:.0f} us, min {min(lates) * 1e6:.0f} us")


if __name__ == "__main__":
    main()
