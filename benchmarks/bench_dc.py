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
import os
import statistics
import sys
import tempfile
import time
from ctlwire._testing.proc import JsonLinesChild

HERE = os.path.dirname(os.path.abspath(__file__))

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
        count, first, last = 0, 0.0, 0.0
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
                first = now
            count, last = count + 1, now
        emit(ev="result", count=count, seconds=last - first)


def role_zmq_receiver(endpoint: str, idle: float) -> None:
    import zmq
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    emit(ev="ready")
    count, first, last = 0, 0.0, 0.0
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
            first = now
        count, last = count + 1, now
    emit(ev="result", count=count, seconds=last - first)
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


def rate_ours(n: int) -> tuple[float, float]:
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
    rates = [r["count"] / r["seconds"] for r in results if r["seconds"] > 0]
    lost = sum(n - r["count"] for r in results)
    return statistics.mean(rates), lost / (4 * n)


def rate_zmq(n: int) -> tuple[float, float]:
    import zmq
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    kids = [Child("zmq-receiver", f"tcp://127.0.0.1:{port}") for _ in range(4)]
    try:
        for k in kids:
            k.wait("ready", 30)
        time.sleep(1.0)
        msg = dict(PAYLOAD)
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
    rates = [r["count"] / r["seconds"] for r in results if r["seconds"] > 0]
    lost = sum(n - r["count"] for r in results)
    return statistics.mean(rates), lost / (4 * n)


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", nargs="?", default="bench")
    ap.add_argument("args", nargs="*")
    ap.add_argument("--quick", action="store_true", help="smaller run")
    ns = ap.parse_args()
    if ns.role == "group-receiver":
        return role_group_receiver(ns.args[0], idle=3.0)
    if ns.role == "zmq-receiver":
        return role_zmq_receiver(ns.args[0], idle=3.0)
    if ns.role == "member":
        return role_member(ns.args[0], ns.args[1])
    n = 20_000 if ns.quick else 50_000
    rounds = 1 if ns.quick else 3
    print(f"group messages, 1 sender -> 4 receivers, {n} messages of a 3-field dict, "
          f"median of {rounds} alternating rounds")
    ours_runs, peer_runs = [], []
    for _ in range(rounds):  # alternate, so background load hits both alike
        ours_runs.append(rate_ours(n))
        peer_runs.append(rate_zmq(n))
    ours = statistics.median(r for r, _ in ours_runs)
    peer = statistics.median(r for r, _ in peer_runs)
    ours_loss = max(loss for _, loss in ours_runs)
    peer_loss = max(loss for _, loss in peer_runs)
    print(f"  ctlwire Group (msgpack, framed)  : {ours:10,.0f} msg/s per receiver "
          f"(loss {ours_loss:.1%})")
    print(f"  bare pyzmq PUB/SUB + pickle      : {peer:10,.0f} msg/s per receiver "
          f"(loss {peer_loss:.1%})")
    print(f"  ratio ours/peer                  : {ours / peer:.2f}")
    print(f"  deliveries/s (x4 receivers)      : {4 * ours:10,.0f} vs {4 * peer:,.0f}")
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


if __name__ == "__main__":
    main()
