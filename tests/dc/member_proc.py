"""A group member in its own process, driven by the fault tests through stdin/stdout.

stdout: one JSON object per line (``ready``, every group event, received messages,
errors). stdin: one JSON command per line: ``block`` (drop messages from member ids),
``ask`` (send to the leader), ``send`` (to all), ``quit``. A leader answers every query
with ``{"answer": <query>, "by": <its id>}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from ctlwire.dc.discovery import DirectoryDiscovery, UDPBeaconDiscovery
from ctlwire.dc.election import Timings
from ctlwire.dc.group import Group, GroupEvent
from ctlwire.dc.ports import PortError, PortTimeout

_out = threading.Lock()


def emit(**obj: object) -> None:
    obj.setdefault("t", time.time())
    with _out:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", help="directory discovery root")
    ap.add_argument("--udp-port", type=int, help="use UDP beacon discovery on this port")
    ap.add_argument("--timings", default="0.05,0.15,0.3,0.6,30")
    ap.add_argument("--group", default="Test.g1")
    args = ap.parse_args()
    hb, lo, hi, peer, forget = (float(x) for x in args.timings.split(","))
    disc = (UDPBeaconDiscovery(args.udp_port) if args.udp_port
            else DirectoryDiscovery(args.dir))
    blocked: set[bytes] = set()
    gtype, inst = args.group.split(".")

    def on_event(ev: GroupEvent) -> None:
        emit(ev=ev.kind.value, member=ev.member.hex(), term=ev.term, reason=ev.reason)

    group = Group(gtype, inst, timings=Timings(hb, lo, hi, peer, forget), discovery=disc,
                  peer_filter=lambda m: m not in blocked, on_event=on_event)
    group.join()
    emit(ev="ready", id=group.memberId.hex())
    stop = threading.Event()

    def commands() -> None:
        nonlocal blocked
        for line in sys.stdin:
            cmd = json.loads(line)
            try:
                if cmd["cmd"] == "block":
                    blocked = {bytes.fromhex(h) for h in cmd["ids"]}
                elif cmd["cmd"] == "ask":
                    group.send_to_leader(cmd["obj"])
                elif cmd["cmd"] == "send":
                    group.send(cmd["obj"])
                elif cmd["cmd"] == "quit":
                    break
            except PortError as exc:
                emit(ev="error", cmd=cmd["cmd"], error=str(exc))
        stop.set()

    threading.Thread(target=commands, daemon=True).start()
    try:
        while not stop.is_set():
            try:
                msg = group.recv(timeout=0.1)
            except PortTimeout:
                continue
            emit(ev="msg", channel=msg.channel, sender=msg.sender.hex(), obj=msg.obj())
            if msg.channel == "query":
                try:
                    group.answer(msg.sender, {"answer": msg.obj(), "by": group.memberId.hex()})
                except PortError as exc:
                    emit(ev="error", cmd="answer", error=str(exc))
    finally:
        group.leave()


if __name__ == "__main__":
    main()
