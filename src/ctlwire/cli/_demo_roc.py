"""Demo section "roc": a broker, a shared object in another process called through it,
a live status tree and a log record, all on 127.0.0.1."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import zmq

from .._testing.proc import child_env, free_base_port

# the shared object lives in a separate process, started with run_simple_server
_SERVER = r'''
import logging, sys, time
from ctlwire.roc import RocStatusUpdater, run_simple_server

class Mount:
    """A telescope mount that publishes its state as a status tree."""
    def __init__(self):
        self.tracking = False
        self._status = RocStatusUpdater()         # broker from $CTLWIRE_ROC_BROKER
        self._log = logging.getLogger("mount")
    def slew(self, ra, dec):
        self._log.info("slewing to ra=%.3f dec=%.3f", ra, dec)
        for step in (0.5, 1.0):
            self._status.emit("mount.position", {"ra": ra * step, "dec": dec * step})
            time.sleep(0.05)
        self._status.emit("mount.state", "on target")
        return {"ra": ra, "dec": dec}
    def park(self):
        raise RuntimeError("dome is closed, refusing to park")
    def slew_steps(self, ra, dec, n=4):
        """Slew in n steps, yielding each position as it is reached."""
        for i in range(1, n + 1):
            time.sleep(0.02)
            yield {"ra": round(ra * i / n, 3), "dec": round(dec * i / n, 3)}
        return "on target"

print("ready", flush=True)
run_simple_server("mount", Mount(), heartbeat=0.25)
'''



def run() -> None:
    from ctlwire.roc import (Broker, Endpoints, RocClient, UnknownObjectError,
                             merge_tree, statusUpdateIterator)

    ep = Endpoints("127.0.0.1", free_base_port())
    broker = Broker(ep, heartbeat=0.25, unknown_grace=0.3).start()
    print(f"broker: MDP {ep.rocBroker}, XSUB {ep.generalXSUB}, XPUB {ep.generalXPUB}")
    env = child_env(CTLWIRE_ROC_BROKER=f"127.0.0.1:{ep.brokerBasePort}")
    server = subprocess.Popen([sys.executable, "-c", _SERVER], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ctx = zmq.Context.instance()
    logs = ctx.socket(zmq.SUB)
    logs.setsockopt(zmq.LINGER, 0)
    logs.setsockopt(zmq.SUBSCRIBE, b"ROCL")
    logs.connect(ep.generalXPUB)
    tree: dict = {}
    stop = threading.Event()
    subscribed = threading.Event()

    def watch() -> None:
        it = statusUpdateIterator(ep, "mount", timeout=0.1)
        try:
            for update in it:
                subscribed.set()
                if update:
                    merge_tree(tree, update)
                    print(f"  status update {update}")
                if stop.is_set():
                    break
        finally:
            it.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    client = RocClient(ep, timeout=5.0)
    try:
        assert server.stdout is not None
        server.stdout.readline()  # "ready"
        subscribed.wait(5)
        mount = client["mount"]
        deadline = time.monotonic() + 10
        while not client.service_available("mount"):
            if time.monotonic() > deadline:
                raise RuntimeError("the mount server did not register")
            time.sleep(0.05)
        print(f"server pid {server.pid} registered 'mount'; dir(mount) = {dir(mount)}")
        time.sleep(0.2)  # let the relay subscriptions settle before publishing
        print(f"mount.slew(83.63, 22.01) -> {mount.slew(83.63, 22.01)}")
        print(f"mount.tracking = {mount.tracking}; setting it to True")
        mount.tracking = True
        print(f"mount.tracking = {mount.tracking}")
        try:
            mount.park()
        except RuntimeError as exc:
            print(f"mount.park() raised remote {exc.type_name}: {exc.remote_message}")
        steps = mount.slew_steps(83.63, 22.01)
        for step in steps:       # each value arrives while the method still runs
            print(f"  mount.slew_steps progress: {step}")
        print(f"mount.slew_steps(...) returned {steps.result!r}")
        directory = client.objects()  # what `rocbroker --list HOST:PORT` prints
        print(f"client.objects(): {sorted(directory)}, mount methods "
              f"{sorted(directory['mount']['methods'])}")
        late = statusUpdateIterator(ep, "mount", timeout=1.0)
        print(f"a late status subscriber starts with the current tree: {next(late)}")
        late.close()
        t0 = time.monotonic()
        try:
            client["dome"].open()
        except UnknownObjectError as exc:
            print(f"client['dome'].open() -> UnknownObjectError after "
                  f"{time.monotonic() - t0:.2f} s: {exc}")
        end = time.monotonic() + 3
        while "state" not in tree.get("mount", {}) and time.monotonic() < end:
            time.sleep(0.02)
        print(f"live status tree: {tree}")
        if logs.poll(2000):
            import json
            rec = json.loads(logs.recv_multipart()[1])
            print(f"log record from node {rec['node']!r}: {rec['level']} "
                  f"{rec['logger']}: {rec['message']}")
        else:
            print("no log record arrived (pub/sub joined late)")
        print(f"broker stats: {broker.stats()}")
    finally:
        stop.set()
        client.close()
        logs.close()
        server.kill()
        server.wait(5)
        watcher.join(2)
        broker.stop()
