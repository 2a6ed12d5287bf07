"""ROC call throughput: ctlwire vs majortomo vs a bare ``zmq.proxy`` relay.

Run: ``python benchmarks/bench_roc.py [--seconds S] [--rounds N] [--window W] [--mdp-ceiling]``
(with ``PYTHONPATH=src`` from a source checkout).

Every path runs the same echo object in a separate worker process behind a separate
broker/relay process, on loopback, with the client in this process:

* **ctlwire**: ``RocClient`` proxy -> ``rocbroker`` (7/MDP 0.1) -> ``RocServer``.
* **majortomo**: its MDP 0.2 ``Broker`` and ``Worker``; the client is majortomo's
  ``Client`` one at a time, and a DEALER speaking its MDP 0.2 client frames for many in
  flight (majortomo's ``Client`` allows one outstanding request).
* **bare relay**: DEALER client -> ``zmq.proxy(ROUTER, DEALER)`` -> DEALER worker,
  the ceiling for any brokered path.

All three carry the same JSON-RPC body and run it with the same
``ctlwire.roc.rpc.execute`` on the same ``Echo`` object, so the difference is the
routing.  "one at a time" waits for each reply; "in flight" keeps ``--window`` calls
outstanding.  ``--mdp-ceiling`` adds a table of what 7/MDP's framing alone costs in
flight: MDP client frames (and ``RocClient``) sent through the bare relay itself, with
no broker and no MDP worker, beside the relay's single-frame bodies.  Short measurements are interleaved (ctlwire, majortomo, bare, ctlwire,
...) and the median per path is reported, which evens out load from other processes.
CPU time per call (client + broker + worker processes, from /proc) is printed too: it
does not depend on what else the machine is doing.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import types
from collections import deque

import zmq
from ctlwire._testing.proc import free_base_port

HERE = os.path.dirname(os.path.abspath(__file__))


# -- majortomo needs six, figcan and yaml only for its CLI/config; give it stand-ins --
def _shim_majortomo_deps() -> None:
    if "six" not in sys.modules:
        try:
            import six  # noqa: F401
        except ImportError:
            six_mod = types.ModuleType("six")

            def ensure_binary(s, encoding="utf-8", errors="strict"):
                return s if isinstance(s, bytes) else s.encode(encoding, errors)
            six_mod.ensure_binary = ensure_binary  # type: ignore[attr-defined]
            sys.modules["six"] = six_mod
    for name, attrs in (("figcan", ("Extensible", "Configuration")), ("yaml", ("safe_load",))):
        try:
            __import__(name)
        except ImportError:
            mod = types.ModuleType(name)
            for a in attrs:
                setattr(mod, a, dict if a != "safe_load" else (lambda s: {}))
            sys.modules[name] = mod


class Echo:
    """The shared object of every path."""

    def echo(self, x):
        return x



# -- child processes ---------------------------------------------------------------
def child(argv: list[str]) -> None:
    kind, base = argv[0], int(argv[1])
    if kind == "roc-broker":
        from ctlwire.roc.broker import main
        main(["--address", "127.0.0.1", "--base-port", str(base), "--no-relay"])
    elif kind == "roc-server":
        from ctlwire.roc import Endpoints, RocServer
        conns = os.environ.get("ROC_BENCH_CONNECTIONS")
        kw = {"connections": int(conns)} if conns else {}
        RocServer(Endpoints("127.0.0.1", base), "echo", Echo(), **kw).run()
    elif kind == "mt-broker":
        _shim_majortomo_deps()
        from majortomo.broker import Broker
        Broker(bind=f"tcp://127.0.0.1:{base}").run()
    elif kind == "mt-worker":
        _shim_majortomo_deps()
        from majortomo import Worker
        from ctlwire.roc.rpc import execute
        obj = Echo()
        w = Worker(f"tcp://127.0.0.1:{base}", b"echo")
        w.connect()
        while True:
            client, frames = w.wait_for_request()
            w.send_reply_final(client, [execute(obj, frames[0])])
    elif kind == "bare-proxy":
        ctx = zmq.Context()
        front = ctx.socket(zmq.ROUTER)
        back = ctx.socket(zmq.DEALER)
        front.bind(f"tcp://127.0.0.1:{base}")
        back.bind(f"tcp://127.0.0.1:{base + 1}")
        zmq.proxy(front, back)
    elif kind == "bare-worker":
        from ctlwire.roc.rpc import execute
        obj = Echo()
        ctx = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.connect(f"tcp://127.0.0.1:{base + 1}")
        while True:
            frames = s.recv_multipart()
            frames[-1] = execute(obj, frames[-1])
            s.send_multipart(frames)
    else:
        raise SystemExit(f"unknown child {kind}")


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (Linux /proc), 0.0 where unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def spawn(kind: str, base: int) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", kind,
                             str(base)], env=env, stdout=subprocess.DEVNULL)


# -- clients -----------------------------------------------------------------------
def timed(fn, seconds: float, pids: list[int]) -> tuple[float, list[float]]:
    """Calls per second of ``fn(n)`` (which makes n calls) over about ``seconds``, and
    CPU microseconds per call of this process and of each of ``pids``."""
    n = 200
    fn(n)  # warm-up
    c0 = [time.process_time()] + [cpu_seconds(p) for p in pids]
    t0 = time.perf_counter()
    done = 0
    while time.perf_counter() - t0 < seconds:
        fn(n)
        done += n
    elapsed = time.perf_counter() - t0
    c1 = [time.process_time()] + [cpu_seconds(p) for p in pids]
    return done / elapsed, [(b - a) / done * 1e6 for a, b in zip(c0, c1)]


def keep_in_flight(n: int, w: int, send, receive) -> None:
    """Make ``n`` calls with up to ``w`` outstanding: ``send(i)`` issues call ``i``,
    ``receive()`` waits for the oldest reply."""
    out = 0
    for i in range(n):
        send(i)
        out += 1
        if out >= w:
            receive()
            out -= 1
    while out:
        receive()
        out -= 1


class RocPath:
    name = "ctlwire"

    def __init__(self, base: int) -> None:
        from ctlwire.roc import Endpoints, RocClient
        self.client = RocClient(Endpoints("127.0.0.1", base), timeout=10.0)
        self.proxy = self.client["echo"]
        deadline = time.monotonic() + 15
        while True:
            try:
                self.proxy.echo(0)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise

    def sync(self, n: int) -> None:
        echo = self.proxy.echo
        for i in range(n):
            echo(i)

    def call_async(self, i: int):
        return self.proxy.echo.call_async(i)

    def window(self, n: int, w: int) -> None:
        call = self.call_async
        q: deque = deque()
        keep_in_flight(n, w, lambda i: q.append(call(i)), lambda: q.popleft().result())

    def close(self) -> None:
        self.client.close()


class MajortomoPath:
    name = "majortomo"

    def __init__(self, base: int) -> None:
        _shim_majortomo_deps()
        from majortomo import Client
        from ctlwire.roc.rpc import encode_request
        self.encode = encode_request
        self.url = f"tcp://127.0.0.1:{base}"
        self.client = Client(self.url)
        self.client.connect()
        self.dealer = zmq.Context.instance().socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(self.url)
        deadline = time.monotonic() + 15
        while True:  # the worker registers asynchronously
            self.client.send(b"echo", encode_request(0, "echo", (0,)))
            if self.client.recv_all_as_list(timeout=1.0):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("majortomo path did not answer")
            self.client.close()
            self.client = Client(self.url)
            self.client.connect()

    def sync(self, n: int) -> None:
        c, enc = self.client, self.encode
        for i in range(n):
            c.send(b"echo", enc(i, "echo", (i,)))
            c.recv_all_as_list(timeout=10.0)

    def window(self, n: int, w: int) -> None:
        d, enc = self.dealer, self.encode
        keep_in_flight(n, w, lambda i: d.send_multipart(
            [b"", b"MDPC02", b"\x02", b"echo", enc(i, "echo", (i,))]), d.recv_multipart)

    def close(self) -> None:
        self.client.close()
        self.dealer.close()


class BarePath:
    name = "bare relay"

    def __init__(self, base: int) -> None:
        from ctlwire.roc.rpc import encode_request
        self.encode = encode_request
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 15000)
        self.sock.connect(f"tcp://127.0.0.1:{base}")
        self.sock.send(encode_request(0, "echo", (0,)))
        self.sock.recv()

    def sync(self, n: int) -> None:
        s, enc = self.sock, self.encode
        for i in range(n):
            s.send(enc(i, "echo", (i,)))
            s.recv()

    def window(self, n: int, w: int) -> None:
        s, enc = self.sock, self.encode
        keep_in_flight(n, w, lambda i: s.send(enc(i, "echo", (i,))), s.recv)

    def close(self) -> None:
        self.sock.close()


class MdpFramesViaRelay(BarePath):
    """The ceiling of any 7/MDP client: a DEALER sending MDP client frames
    (``""``, ``MDPC01``, service, body) through the *bare relay* (no broker, no MDP
    worker: the bare worker echoes the frames with the body run), reading the replies
    without decoding them. Only with ``--mdp-ceiling``."""

    name = "MDP frames via bare relay"

    def __init__(self, base: int) -> None:
        super().__init__(base)
        from ctlwire.roc._fastzmq import wire
        # ctlwire's own frame I/O (raw libzmq where available): the cheapest there is
        self.recv, self.send = wire(self.sock)

    def window(self, n: int, w: int) -> None:
        recv, send = self.recv, self.send
        frames = [b"", b"MDPC01", b"echo", self.encode(0, "echo", (0,))]

        def send_one(i: int) -> None:
            if not send(frames):
                raise RuntimeError("the relay refused a message")

        keep_in_flight(n, w, send_one, lambda: recv(True))


class RocClientViaRelay(RocPath):
    """``RocClient`` itself pointed at the bare relay (no broker, no ``RocServer``).
    Only with ``--mdp-ceiling``."""

    name = "RocClient via bare relay"

    def __init__(self, base: int) -> None:
        from ctlwire.roc import RocClient
        self.client = RocClient(f"tcp://127.0.0.1:{base}", timeout=10.0)
        assert self.client.call("echo", "echo", 0) == 0

    def call_async(self, i: int):
        return self.client.call_async("echo", "echo", i)


def mdp_ceiling(base: int, pids: list[int], seconds: float, rounds: int, w: int) -> None:
    """In flight through the same bare relay: single-frame bodies (the bare path),
    MDP-framed bodies, and RocClient: what 7/MDP framing costs before any broker."""
    paths = [BarePath(base), MdpFramesViaRelay(base), RocClientViaRelay(base)]
    rates: dict[str, list[float]] = {p.name: [] for p in paths}
    try:
        for _ in range(rounds):
            for p in paths:
                rates[p.name].append(timed(lambda n, p=p: p.window(n, w), seconds, pids)[0])
    finally:
        for p in paths:
            p.close()
    bare = statistics.median(rates[paths[0].name])
    print(f"\nMDP ceiling, {w} in flight through the bare relay alone (median of {rounds}):")
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"  {name:<28}{med:>10,.0f} calls/s  {med / bare:.2f} of the bare relay")

def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="per measurement (0.5)")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds (9)")
    ap.add_argument("--window", type=int, default=32, help="calls in flight (32)")
    ap.add_argument("--mdp-ceiling", action="store_true",
                    help="also measure MDP framing and RocClient through the bare relay")
    ap.add_argument("--servers", type=int, default=1,
                    help="worker processes per path (1); MDP gives each one call at a time")
    ap.add_argument("--connections", type=int, default=0,
                    help="RocServer worker connections (default: RocServer's default)")
    args = ap.parse_args()
    if args.connections:
        os.environ["ROC_BENCH_CONNECTIONS"] = str(args.connections)

    procs: list[subprocess.Popen] = []
    paths = []
    try:
        b_roc, b_mt, b_bare = free_base_port(), free_base_port(), free_base_port()
        pids: dict[str, list[int]] = {}
        for name, broker, worker, base in (("ctlwire", "roc-broker", "roc-server", b_roc),
                                           ("majortomo", "mt-broker", "mt-worker", b_mt),
                                           ("bare relay", "bare-proxy", "bare-worker",
                                            b_bare)):
            group = [spawn(broker, base)] + [spawn(worker, base)
                                             for _ in range(args.servers)]
            procs += group
            pids[name] = [p.pid for p in group]
        paths = [RocPath(b_roc), MajortomoPath(b_mt), BarePath(b_bare)]
        results: dict[str, dict[str, list[float]]] = {
            p.name: {"one at a time": [], "in flight": []} for p in paths}
        cpu: dict[str, dict[str, list[list[float]]]] = {
            p.name: {"one at a time": [], "in flight": []} for p in paths}
        for r in range(args.rounds):
            for mode in ("one at a time", "in flight"):
                for p in paths:
                    fn = p.sync if mode == "one at a time" else \
                        (lambda n, p=p: p.window(n, args.window))
                    rate, us = timed(fn, args.seconds, pids[p.name])
                    results[p.name][mode].append(rate)
                    cpu[p.name][mode].append(us)
            print(f"round {r + 1}: " + "  ".join(
                f"{p.name} {results[p.name]['one at a time'][-1]:,.0f}/"
                f"{results[p.name]['in flight'][-1]:,.0f}" for p in paths), flush=True)
        print(f"\ncalls per second, median of {args.rounds} interleaved rounds of "
              f"{args.seconds:g} s (in flight: window {args.window}; {args.servers} "
              f"worker process(es) per path); CPUs: {os.cpu_count()}")
        print(f"{'path':<12}{'one at a time':>16}{'in flight':>14}"
              f"{'CPU us/call (1 / in flight)':>32}")
        med = {name: {m: statistics.median(v) for m, v in modes.items()}
               for name, modes in results.items()}
        split = {}
        for name in med:
            c1 = statistics.median(sum(u) for u in cpu[name]["one at a time"])
            c2 = statistics.median(sum(u) for u in cpu[name]["in flight"])
            print(f"{name:<12}{med[name]['one at a time']:>16,.0f}"
                  f"{med[name]['in flight']:>14,.0f}{c1:>22,.0f} / {c2:,.0f}")
            split[name] = [
                "/".join(f"{statistics.median(u[k] for u in cpu[name][m]):.0f}"
                         for m in ("one at a time", "in flight"))
                for k in range(len(cpu[name]["in flight"][0]))]
        print("CPU us/call by process (one at a time/in flight): client, broker, worker(s)")
        for name, parts in split.items():
            print(f"  {name:<12}" + "   ".join(parts))
        ours = med["ctlwire"]
        for mode in ("one at a time", "in flight"):
            vs_bare = ours[mode] / med["bare relay"][mode]
            vs_mt = ours[mode] / med["majortomo"][mode]
            print(f"{mode:<14} ctlwire/bare = {vs_bare:.2f} (target >= 0.80)   "
                  f"ctlwire/majortomo = {vs_mt:.2f} (target >= 1.6)")
        if args.mdp_ceiling:
            mdp_ceiling(b_bare, pids["bare relay"], args.seconds, args.rounds, args.window)
    finally:
        for p in paths:
            try:
                p.close()
            except Exception:  # noqa: BLE001
                pass
        for pr in procs:
            pr.kill()
        for pr in procs:
            pr.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
