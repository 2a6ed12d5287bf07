"""Demo section "tcs": replay a generated event database to a subscriber, record it
back, and check a heartbeat across two processes."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from .._testing.proc import child_env




def run() -> None:
    from ..ocd.heart_beat import HeartBeatQuery
    from ..tcs.events import generate_database
    from ..tcs.record import TCSRecorder
    from ..tcs.server import TCSDBReplay, TCSSubscriber, ZMQServer

    with tempfile.TemporaryDirectory(prefix="ctlwire_demo_tcs_") as tmp:
        db = generate_database(os.path.join(tmp, "night.sqlite"), 200, rate=100.0)
        print(f"generated {db}: 200 events, 100 per second of telescope time (2 s)")

        server = ZMQServer("tcp://127.0.0.1:0")
        sub = TCSSubscriber(server.endpoint, topics=["tcs.", "lrs2."])
        rec = None
        try:
            # each listener's subscription is seen before the first event: nothing lost
            if not server.wait_for_subscriber(timeout=10, topic="tcs."):
                raise RuntimeError("subscriber did not join")
            rec = TCSRecorder(server.endpoint, os.path.join(tmp, "recorded.sqlite"))
            if not server.wait_for_subscriber(timeout=10, topic="zzz"):  # only "" matches
                raise RuntimeError("recorder did not join")
            replay = TCSDBReplay(db, speedup=10.0, convert_number=True, convert_bool=True)
            print(f"replaying at speedup 10 on {server.endpoint} ...")
            t0 = time.monotonic()
            sender = threading.Thread(target=server.start, args=(replay,))
            sender.start()
            recorder = threading.Thread(target=rec.run, kwargs={"count": 200, "duration": 15})
            recorder.start()
            got = []
            while len(got) < 100:  # half the topics match the subscriber's prefixes
                item = sub.recv(timeout=5.0)
                if item is None:
                    break
                got.append(item)
            sender.join(15)
            recorder.join(20)
            elapsed = time.monotonic() - t0
            st = replay.stats
            topic, event = got[0]
            print(f"subscriber got {len(got)} events (prefixes tcs., lrs2.) in {elapsed:.2f} s; "
                  f"first: {topic} __data={event['__data']} enabled={event['enabled']}")
            print(f"replay stats: sent {st.sent}, filtered {st.filtered}, skipped {st.skipped}, "
                  f"lateness p50 {st.lateness_percentile(50) * 1e6:.0f} µs "
                  f"p99 {st.lateness_percentile(99) * 1e6:.0f} µs")
            print(f"recorder wrote {rec.recorded} events")
        finally:
            if rec is not None:
                rec.close()
            sub.close()
            server.close()
        again = TCSDBReplay(os.path.join(tmp, "recorded.sqlite"), speedup=float("inf"))
        print(f"the recording replays: {sum(1 for m in again if m is not None)} events")
        again.close()

    print("heartbeat: starting a responder process (ocd-heartbeat --respond)")
    query_server = ZMQServer("tcp://127.0.0.1:0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctlwire.cli.ocd_heartbeat", "--respond", "--bind",
         "tcp://127.0.0.1:0", "--listen", query_server.endpoint, "--duration", "30"],
        stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError("heartbeat responder did not start")
        query = HeartBeatQuery(query_server, line.split()[1], timeout=5.0)
        try:
            t0 = time.perf_counter()
            answer = query.communicate()
            first = time.perf_counter() - t0
            if answer is None:
                raise RuntimeError("no heartbeat")
            print(f"first query answered in {first * 1e3:.1f} ms after {query.sends} "
                  "enquiry(ies): resent until both subscriptions have joined")
            t0 = time.perf_counter()
            for _ in range(100):
                if query.communicate() is None:
                    raise RuntimeError("heartbeat lost")
            print(f"100 more heartbeats: {(time.perf_counter() - t0) * 1e4:.0f} µs each on average")
        finally:
            query.close()
        proc.kill()
        proc.wait(5)
        silent = HeartBeatQuery(query_server, line.split()[1], timeout=0.3)
        try:
            print(f"after killing the responder: answer = {silent.communicate()!r} "
                  "(ocd-heartbeat would exit 1)")
        finally:
            silent.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        proc.stdout.close()
        query_server.close()
