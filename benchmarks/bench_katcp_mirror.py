"""Mirrored KATCP devices: syncing, group waits and replaying a recording.

Three measures (the speed section of the mirrors/resource-clients issue):

* ``sync``: connect to a device of N sensors (ctlwire's DeviceServer, in its own
  process), learn its sensors (and, for ctlwire, its requests), sample all with ``auto``
  and hold the first reading of each. ctlwire's ``InspectingClient(sample="auto")``
  against aiokatcp's ``SensorWatcher``; the limit is a raw socket doing the same
  requests (``?sensor-list``, one bulk ``?sensor-sampling``) and counting lines.
* ``group``: ten devices (processes) set a sensor every 50 ms; a waiter sees all ten
  reach the new value. The figure is the median of (when the wait returned) - (the
  latest of the ten readings' timestamps). ctlwire's ``ClientGroup.wait`` against ten
  aiokatcp clients with sensor watchers and an observer each; the limit is ten raw
  sockets read with a selector.
* ``replay``: ``ReplayDevice`` serving a recording of 20,000 readings per second at
  speedup 1 to a client (another process) sampling every sensor; the figure is the
  engine's p99 lateness against the recorded schedule (until each write returned). No
  other KATCP library replays a device; the limit is the same engine pacing the same
  recording and writing each reading's line to a raw socket that another process reads
  (``replay-rawsend``: no KATCP server, the kernel's send and wake-up of the reader
  kept); ``replay-limit`` (the engine with nothing to do) is there for diagnosis.

Run by ``benchmarks/test_katcp_mirror.py`` (the suite), or by hand::

    python benchmarks/bench_katcp_mirror.py [--sensors 1000] [--rounds 3]

Each measurement runs in a fresh child process (``--child ...``); devices too
(``--serve ...``).

Imports: ctlwire (installed), aiokatcp, the standard library.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

N_SENSORS = 1000
N_DEVICES = 10
TICK = 0.05
REPLAY_RATE = 20_000
REPLAY_SENSORS = 100


# -- devices ---------------------------------------------------------------------------------

def serve(n: int, tick: float) -> None:
    """A ctlwire device with ``n`` integer sensors; with ``tick`` > 0, sensor ``counter``
    is set to floor(time / tick) at every tick (timestamp: when it is set)."""
    from ctlwire.katcp import DeviceServer, Sensor

    class Device(DeviceServer):
        VERSION_INFO = ("bench-mirror", 1, 0)
        BUILD_INFO = ("bench-mirror", 1, 0, "")

        def setup_sensors(self) -> None:
            self.add_sensor(Sensor.integer("counter", "Ticks", "", default=0,
                                           initial_status=Sensor.NOMINAL))
            for i in range(n):
                self.add_sensor(Sensor.integer(f"s{i:04d}", f"Sensor {i}", "count",
                                               [0, 1000], default=i % 1000,
                                               initial_status=Sensor.NOMINAL))

        def request_echo(self, req, msg):
            """Reply with the arguments."""
            return req.make_reply("ok", *msg.arguments)

    server = Device("127.0.0.1", 0)
    server.start(timeout=30)
    print(server.bind_address[1], flush=True)
    counter = server.get_sensor("counter")
    if tick > 0:
        k = int(time.time() / tick) + 1
        while True:
            delay = k * tick - time.time()
            if delay > 0:
                time.sleep(delay)
            now = time.time()
            counter.set_value(k, Sensor.NOMINAL, now)
            k = int(now / tick) + 1
    threading.Event().wait()


def _spawn(args: list[str]) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), *args],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line.strip():
        proc.kill()
        raise RuntimeError(f"{args} did not start")
    return proc, int(line)


def start_devices(count: int, n: int, tick: float) -> list[tuple[subprocess.Popen, int]]:
    return [_spawn(["--serve", str(n), "--tick", str(tick)]) for _ in range(count)]


def stop(procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


# -- sync -----------------------------------------------------------------------------------

def sync_ctlwire(port: int, n: int) -> float:
    from ctlwire.katcp.inspecting_client import InspectingClient

    t0 = time.perf_counter()
    client = InspectingClient("127.0.0.1", port, timeout=60, sample="auto")
    client.start(timeout=120)
    took = time.perf_counter() - t0
    have = sum(1 for s in client.sensor.values() if s.get_reading() is not None)
    client.stop(timeout=10)
    if have != n + 1:
        raise RuntimeError(f"ctlwire: {have} of {n + 1} sensors have a reading")
    return took


def sync_aiokatcp(port: int, n: int) -> float:
    import aiokatcp

    async def run() -> float:
        t0 = time.perf_counter()
        client = await aiokatcp.Client.connect("127.0.0.1", port)
        watcher = aiokatcp.SensorWatcher(client)
        client.add_sensor_watcher(watcher)
        await asyncio.wait_for(watcher.synced.wait(), 120)
        took = time.perf_counter() - t0
        have = sum(1 for s in watcher.sensors.values()
                   if s.status != aiokatcp.Sensor.Status.UNKNOWN)
        client.close()
        await client.wait_closed()
        if have != n + 1:
            raise RuntimeError(f"aiokatcp: {have} of {n + 1} sensors have a reading")
        return took

    return asyncio.run(run())


def _lines(sock: socket.socket, buf: bytearray):
    """Yield lines from a blocking socket, keeping the rest in ``buf``."""
    while True:
        i = buf.find(b"\n")
        while i < 0:
            chunk = sock.recv(1 << 18)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
            i = buf.find(b"\n")
        line = bytes(buf[:i])
        del buf[:i + 1]
        yield line


def sync_raw(port: int, n: int) -> float:
    t0 = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lines = _lines(sock, bytearray())
    for _ in range(3):
        next(lines)  # #version-connect
    sock.sendall(b"?sensor-list[1]\n")
    names = []
    for line in lines:
        if line.startswith(b"#sensor-list"):
            names.append(line.split(b" ", 2)[1])
        elif line.startswith(b"!sensor-list"):
            break
    sock.sendall(b"?sensor-sampling[2] " + b",".join(names) + b" auto\n")
    readings = 0
    for line in lines:
        if line.startswith(b"#sensor-status"):
            readings += 1
        elif line.startswith(b"!sensor-sampling"):
            break
    took = time.perf_counter() - t0
    sock.close()
    if readings != n + 1:
        raise RuntimeError(f"raw: {readings} of {n + 1} readings")
    return took


# -- group wait -----------------------------------------------------------------------------

def group_ctlwire(ports: list[int], ticks: int) -> float:
    from ctlwire.katcp.resource_client import ClientGroup, KATCPClientResource

    resources = [KATCPClientResource(dict(name=f"d{i}", address=("127.0.0.1", p)))
                 for i, p in enumerate(ports)]
    for r in resources:
        r.start()
    group = ClientGroup("bench", resources)
    group.until_synced(60)
    group.set_sampling_strategies("^counter$", "auto")
    group.until_synced(60)
    lat = []
    k = int(time.time() / TICK) + 2
    for _ in range(ticks):
        group.wait("counter", lambda v, k=k: v >= k, timeout=10)
        seen = time.time()
        latest = max(r.sensor.counter.get_reading().timestamp for r in resources)
        lat.append(seen - latest)
        k = int(seen / TICK) + 2
    for r in resources:
        r.stop()
    return statistics.median(lat) * 1e3


def group_aiokatcp(ports: list[int], ticks: int) -> float:
    import aiokatcp

    async def run() -> float:
        clients, watchers = [], []
        for p in ports:
            c = await aiokatcp.Client.connect("127.0.0.1", p)
            w = aiokatcp.SensorWatcher(c)
            c.add_sensor_watcher(w)
            clients.append(c)
            watchers.append(w)
        for w in watchers:
            await asyncio.wait_for(w.synced.wait(), 60)
        changed = asyncio.Event()

        def observer(sensor, reading) -> None:
            changed.set()

        for w in watchers:
            w.sensors["counter"].attach(observer)
        lat = []
        k = int(time.time() / TICK) + 2
        for _ in range(ticks):
            while True:
                readings = [w.sensors["counter"].reading for w in watchers]
                if all(r.value >= k for r in readings):
                    break
                changed.clear()
                await asyncio.wait_for(changed.wait(), 10)
            seen = time.time()
            lat.append(seen - max(r.timestamp for r in readings))
            k = int(seen / TICK) + 2
        for c in clients:
            c.close()
            await c.wait_closed()
        return statistics.median(lat) * 1e3

    return asyncio.run(run())


def group_raw(ports: list[int], ticks: int) -> float:
    socks = []
    sel = selectors.DefaultSelector()
    latest: dict = {}
    for i, p in enumerate(ports):
        s = socket.create_connection(("127.0.0.1", p))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"?sensor-sampling counter auto\n")
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, (i, bytearray()))
        socks.append(s)
        latest[i] = (0, 0.0)
    lat = []
    k = int(time.time() / TICK) + 2
    while len(lat) < ticks:
        for key, _ in sel.select(10):
            i, buf = key.data
            buf += key.fileobj.recv(65536)
            *lines, rest = buf.split(b"\n")
            buf[:] = rest
            for line in lines:
                if line.startswith(b"#sensor-status"):
                    parts = line.split(b" ")
                    latest[i] = (int(parts[5]), float(parts[1]))
        if all(v >= k for v, _ in latest.values()):
            seen = time.time()
            lat.append(seen - max(ts for _, ts in latest.values()))
            k = int(seen / TICK) + 2
    for s in socks:
        s.close()
    return statistics.median(lat) * 1e3


# -- replay ------------------------------------------------------------------------------------

def make_recording(path: str, seconds: float, rate: int = REPLAY_RATE,
                   sensors: int = REPLAY_SENSORS) -> int:
    """A recording of ``rate`` readings per second over ``sensors`` sensors."""
    from ctlwire.tcs.events import EventWriter, create_database

    conn = create_database(path)
    w = EventWriter(conn, batch=20000)
    start = 1.7e9
    for j in range(sensors):
        name = f"s{j:04d}"
        w.add(f"katcp.sensor-list.{name}", {
            "__system": "katcp", "__source": "sensor-list", "__key": name,
            "__data": f"Sensor {j}", "units": "", "type": "integer", "params": "[]",
            "__data_time": start, "__wire_time": start})
    n = int(seconds * rate)
    for i in range(n):
        t = start + 1.0 + i / rate
        name = f"s{i % sensors:04d}"
        w.add(f"katcp.sensor.{name}", {
            "__system": "katcp", "__source": "sensor", "__key": name, "__data": str(i),
            "status": "nominal", "__data_time": t, "__wire_time": t})
    w.close()
    return n


def replay_serve(path: str, realtime: bool = False) -> None:
    """Serve ``path`` paused; print the port; replay on ?replay-start; print the stats."""
    from ctlwire.katcp.recording import ReplayDevice, prompt_thread_switches

    prompt_thread_switches()  # as ctlwire-katcp replay does
    if realtime:  # as ctlwire-katcp replay --realtime does
        from ctlwire.tcs.server import use_realtime_scheduling
        if not use_realtime_scheduling():
            raise SystemExit("SCHED_FIFO not permitted")
    device = ReplayDevice(path, speedup=1.0, paused=True)
    device.start(timeout=30)
    from ctlwire.tcs.server import freeze_gc

    freeze_gc()  # as ctlwire-katcp replay does once its server is up
    print(device.bind_address[1], flush=True)
    device.finished.wait()
    stats = device.stats.as_dict()
    device.stop(timeout=5)
    print(json.dumps(stats), flush=True)


def replay_drain(port: int, sensors: int, count: int) -> None:
    """Sample every sensor, start the replay, read ``count`` readings."""
    sock = socket.create_connection(("127.0.0.1", port))
    lines = _lines(sock, bytearray())
    names = ",".join(f"s{j:04d}" for j in range(sensors)).encode()
    sock.sendall(b"?sensor-sampling[1] " + names + b" auto\n")
    for line in lines:
        if line.startswith(b"!sensor-sampling"):
            break
    sock.sendall(b"?replay-start[2]\n")
    got = 0
    for line in lines:
        if line.startswith(b"#sensor-status"):
            got += 1
            if got >= count:
                break
    sock.close()


def replay_round(path: str, count: int, realtime: bool = False) -> float:
    """p99 lateness (us) of one replay of ``path`` to a draining client."""
    proc, port = _spawn(["--child", "replay-serve", path] + (["rt"] if realtime else []))
    drain = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child",
                              "replay-drain", str(port), str(REPLAY_SENSORS), str(count)])
    try:
        drain.wait(300)
        out = proc.stdout.readline()  # type: ignore[union-attr]
        stats = json.loads(out)
    finally:
        stop([proc, drain])
    return stats["lateness_p99"] * 1e6


def replay_limit(path: str, realtime: bool = False) -> float:
    """p99 lateness (us) of the engine pacing ``path`` with nothing to do per event."""
    from ctlwire.tcs.server import TCSDBReplay, use_realtime_scheduling

    if realtime and not use_realtime_scheduling():
        raise SystemExit("SCHED_FIFO not permitted")
    replay = TCSDBReplay(path, sort_by="__wire_time", speedup=1.0, topics=["katcp.sensor."])
    for _ in replay.frames():
        pass
    p99 = replay.stats.lateness_percentile(99)
    replay.close()
    return p99 * 1e6


def replay_rawsend_serve(path: str, realtime: bool = False) -> None:
    """The limit of a replaying device: the same engine pacing ``path`` and writing each
    reading's ``#sensor-status`` line (formatted ahead, like the device's) to a raw
    socket that another process reads, with no KATCP server. Prints the port, accepts
    one reader, replays, prints the p99 lateness (us)."""
    from ctlwire.tcs.server import TCSDBReplay, freeze_gc, use_realtime_scheduling

    if realtime and not use_realtime_scheduling():
        raise SystemExit("SCHED_FIFO not permitted")
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    replay = TCSDBReplay(path, sort_by="__wire_time", speedup=1.0, topics=["katcp.sensor."])
    freeze_gc()

    def prepare(topic: str, event: dict) -> bytes:
        return b"#sensor-status %.6f 1 %s nominal %s\n" % (
            event["__data_time"], event["__key"].encode(), event["__data"].encode())

    send = conn.sendall
    join = b"".join

    def deliver(items: list) -> None:
        send(items[0] if len(items) == 1 else join(items))

    replay.run_due(prepare, deliver)
    p99 = replay.stats.lateness_percentile(99)
    replay.close()
    conn.close()
    print(json.dumps({"us": p99 * 1e6}), flush=True)


def raw_drain(port: int, count: int) -> None:
    """Read ``count`` lines from ``port`` (the raw-send limit's reader)."""
    sock = socket.create_connection(("127.0.0.1", port))
    got = 0
    while got < count:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        got += chunk.count(b"\n")
    sock.close()


def replay_rawsend_round(path: str, count: int, realtime: bool = False) -> float:
    """p99 lateness (us) of one raw-send replay of ``path`` to a reading process."""
    proc, port = _spawn(["--child", "replay-rawsend", path] + (["rt"] if realtime else []))
    drain = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child",
                              "raw-drain", str(port), str(count)])
    try:
        drain.wait(300)
        out = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
    finally:
        stop([proc, drain])
    return out["us"]


# -- children and the command line ------------------------------------------------------------

def run_child(what: str, args: list[str]) -> None:
    if what == "sync":
        impl, port, n = args[0], int(args[1]), int(args[2])
        fn = {"ctlwire": sync_ctlwire, "aiokatcp": sync_aiokatcp, "raw": sync_raw}[impl]
        print(json.dumps({"seconds": fn(port, n)}), flush=True)
    elif what == "group":
        impl, ticks, ports = args[0], int(args[1]), [int(p) for p in args[2:]]
        fn = {"ctlwire": group_ctlwire, "aiokatcp": group_aiokatcp, "raw": group_raw}[impl]
        print(json.dumps({"ms": fn(ports, ticks)}), flush=True)
    elif what == "replay-serve":
        replay_serve(args[0], args[1:] == ["rt"])
    elif what == "replay-drain":
        replay_drain(int(args[0]), int(args[1]), int(args[2]))
    elif what == "replay-rawsend":
        replay_rawsend_serve(args[0], args[1:] == ["rt"])
    elif what == "raw-drain":
        raw_drain(int(args[0]), int(args[1]))
    elif what == "replay-limit":
        print(json.dumps({"us": replay_limit(args[0], args[1:] == ["rt"])}), flush=True)
    else:
        raise SystemExit(f"unknown child {what!r}")


def child(what: str, *args: str, timeout: float = 600) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", what,
                          *map(str, args)], capture_output=True, timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"child {what} {args} failed:\n{out.stderr.decode()[-3000:]}")
    return json.loads(out.stdout.decode().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", type=int, metavar="N", help=argparse.SUPPRESS)
    ap.add_argument("--tick", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--sensors", type=int, default=N_SENSORS)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ticks", type=int, default=40)
    ap.add_argument("--replay-seconds", type=float, default=2.0)
    args = ap.parse_args()
    if args.serve is not None:
        serve(args.serve, args.tick)
        return 0
    if args.child:
        run_child(args.child[0], args.child[1:])
        return 0
    procs = start_devices(1, args.sensors, 0.0)
    try:
        port = procs[0][1]
        for r in range(args.rounds):
            figs = {impl: child("sync", impl, port, args.sensors)["seconds"] * 1e3
                    for impl in ("ctlwire", "aiokatcp", "raw")}
            print(f"sync {args.sensors} sensors, round {r}: " +
                  ", ".join(f"{k} {v:.1f} ms" for k, v in figs.items()) +
                  f"; aiokatcp/ctlwire {figs['aiokatcp'] / figs['ctlwire']:.2f}x", flush=True)
    finally:
        stop([p for p, _ in procs])
    procs = start_devices(N_DEVICES, 0, TICK)
    try:
        ports = [p for _, p in procs]
        for r in range(args.rounds):
            figs = {impl: child("group", impl, args.ticks, *ports)["ms"]
                    for impl in ("ctlwire", "aiokatcp", "raw")}
            print(f"group wait over {N_DEVICES} devices, round {r}: " +
                  ", ".join(f"{k} {v:.2f} ms" for k, v in figs.items()), flush=True)
    finally:
        stop([p for p, _ in procs])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "night.sqlite")
        count = make_recording(path, args.replay_seconds)
        for r in range(args.rounds):
            for rt in (False, True):
                ours = replay_round(path, count, rt)
                raw = replay_rawsend_round(path, count, rt)
                alone = child("replay-limit", path, *(["rt"] if rt else []))["us"]
                print(f"replay {REPLAY_RATE} readings/s{' SCHED_FIFO' if rt else ''}, "
                      f"round {r}: p99 lateness ctlwire {ours:.0f} us, raw send "
                      f"{raw:.0f} us, engine alone {alone:.0f} us", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
