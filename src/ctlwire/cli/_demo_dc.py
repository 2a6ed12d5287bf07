"""Demo section "dc": three member processes form a group, elect a leader, lose it, re-elect.

Each member is a child process running :func:`member` with fast timings (heartbeat 50 ms,
election timeout 150-300 ms, peer timeout 600 ms) and directory discovery in a temporary
directory. It reports group events and answers on stdout as JSON lines and takes
commands on stdin; the parent prints a transcript.
"""
from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from typing import Any
from .._testing.proc import JsonLinesChild

TIMINGS = (0.05, 0.15, 0.3, 0.6)


def member(root: str) -> None:
    """Body of one member process (also usable by hand: ``python -m ctlwire.cli._demo_dc DIR``)."""
    from ctlwire.dc.discovery import DirectoryDiscovery
    from ctlwire.dc.election import Timings
    from ctlwire.dc.group import Group, GroupEvent
    from ctlwire.dc.ports import PortError, PortTimeout

    lock = threading.Lock()

    def out(**obj: Any) -> None:
        obj["t"] = time.time()
        with lock:
            print(json.dumps(obj), flush=True)

    def on_event(ev: GroupEvent) -> None:
        out(ev=ev.kind.value, member=ev.member.hex(), term=ev.term)

    with Group("Demo", "telescopes", timings=Timings(*TIMINGS),
               discovery=DirectoryDiscovery(root), on_event=on_event) as group:
        out(ev="ready", id=group.memberId.hex())

        def commands() -> None:
            for line in sys.stdin:
                try:
                    group.send_to_leader(json.loads(line))
                except PortError as exc:
                    out(ev="error", error=str(exc))

        threading.Thread(target=commands, daemon=True).start()
        while True:  # runs until the parent kills this process
            try:
                msg = group.recv(timeout=0.5)
            except PortTimeout:
                continue
            if msg.channel == "query":
                group.answer(msg.sender, {"re": msg.obj(), "leader": group.memberId.hex(),
                                          "term": group.term, "size": group.size})
            elif msg.channel == "answer":
                out(ev="answer", obj=msg.obj())


class _Member(JsonLinesChild):
    def __init__(self, root: str) -> None:
        super().__init__(["-m", "ctlwire.cli._demo_dc", root], what="demo member")
        self.id = self.wait(lambda e: e["ev"] == "ready", 15)["id"]

    def ask(self, obj: Any, timeout: float = 5.0) -> dict[str, Any]:
        """Send to the leader, retrying until an answer arrives (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            mark = self.mark()
            self.send(obj)
            try:
                return self.wait(lambda e: e["ev"] == "answer", 0.5, since=mark)["obj"]
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise


def _agree(members: list[_Member], timeout: float) -> tuple[str, int]:
    ids = {m.id for m in members}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        views = {m.leader() for m in members}
        if len(views) == 1:
            view = views.pop()
            if view is not None and view[0] in ids:
                return view
        time.sleep(0.01)
    raise TimeoutError("members did not agree on a leader")


def run() -> None:
    """Run the demo (under ~10 s): elect, query the leader, kill it, re-elect, query."""
    hb, lo, hi, peer = TIMINGS
    print(f"timings: heartbeat {hb * 1000:.0f} ms, election timeout {lo * 1000:.0f}-"
          f"{hi * 1000:.0f} ms, peer timeout {peer * 1000:.0f} ms")
    with tempfile.TemporaryDirectory(prefix="ctlwire-demo-dc-") as root:
        members: list[_Member] = []
        try:
            t0 = time.monotonic()
            for _ in range(3):
                members.append(_Member(root))
            print("started 3 member processes:", ", ".join(m.id[:8] for m in members))
            leader, term = _agree(members, 15)
            print(f"all agree after {time.monotonic() - t0:.2f} s: leader {leader[:8]} "
                  f"(term {term})")
            follower = next(m for m in members if m.id != leader)
            ans = follower.ask({"question": "status?"})
            print(f"{follower.id[:8]} asked the leader, answer from {ans['leader'][:8]} "
                  f"(term {ans['term']}, group size {ans['size']})")
            victim = next(m for m in members if m.id == leader)
            survivors = [m for m in members if m is not victim]
            killed = time.time()
            victim.kill()
            print(f"killed leader {leader[:8]} (SIGKILL)")
            new, new_term = _agree(survivors, 15)
            elected = max(m.wait(lambda e: e["ev"] == "leader_elected" and e["member"] == new,
                                 5)["t"] for m in survivors)
            print(f"new leader {new[:8]} (term {new_term}) agreed "
                  f"{(elected - killed) * 1000:.0f} ms after the kill "
                  f"(bound: election max + heartbeat = {(hi + hb) * 1000:.0f} ms)")
            asker = next(m for m in survivors if m.id != new)
            ans = asker.ask({"question": "who leads now?"})
            print(f"{asker.id[:8]}'s query port followed: answer from {ans['leader'][:8]} "
                  f"(term {ans['term']})")
            left = asker.wait(lambda e: e["ev"] == "member_left" and e["member"] == leader, 10)
            print(f"{asker.id[:8]} noticed {leader[:8]} left "
                  f"{(left['t'] - killed) * 1000:.0f} ms after the kill "
                  f"(peer timeout {peer * 1000:.0f} ms)")
        finally:
            for m in members:
                m.kill()


if __name__ == "__main__":
    member(sys.argv[1])
