"""ROC call throughput: ctlwire vs majortomo vs a bare ``zmq.proxy`` relay.

Run: ``python benchmarks/bench_roc.py [--seconds S] [--rounds N] [--window W] [--mdp-ceiling]``
after ``pip install .[bench]`` (or an editable install).  Three more measures, each alone:
``--features BASELINE_SRC`` (the cost of once-only calls and of a standby broker,
against an earlier ctlwire's built ``src/`` folder, in the same run), ``--failover
KILLS`` (SIGKILL the active broker of a pair KILLS times; how long calls stop) and
``--streaming`` (progress values per second from one generator method).

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
try:
    from ctlwire._testing.proc import free_base_port
except ImportError:  # an earlier ctlwire (the --features baseline child)
    from ctlwire._proc import free_base_port  # type: ignore[no-redef]

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

    def count(self, n):
        """Stream 0..n-1 (the progress benchmark)."""
        yield from range(n)
        return n



# -- child processes ---------------------------------------------------------------
def child(argv: list[str]) -> None:
    kind, base = argv[0], int(argv[1])
    if kind == "roc-broker":
        from ctlwire.cli.rocbroker import main
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
    elif kind == "fb-broker":
        # argv: fb-broker VARIANT BASE [standby-for PRIMARY]
        variant = argv[2]
        args = ["--address", "127.0.0.1", "--base-port", str(base), "--no-relay"]
        if len(argv) > 3:
            args += ["--standby-for", f"127.0.0.1:{argv[4]}"]
        elif variant == "off":
            args += ["--no-peer"]  # the features off: a broker alone, as before
        if variant == "baseline":
            from ctlwire.roc.broker import main as broker_main  # the code before
        else:
            from ctlwire.cli.rocbroker import main as broker_main
        broker_main(args)
    elif kind == "fb-server":
        # argv: fb-server VARIANT BASE [BASE2]
        from ctlwire.roc import Endpoints, RocServer
        variant = argv[2]
        eps = [Endpoints("127.0.0.1", int(b)) for b in [base, *argv[3:]]]
        if variant == "baseline":
            RocServer(eps[0], "echo", Echo()).run()
        elif variant == "off":
            RocServer(eps[0], "echo", Echo(), reply_cache=False).run()
        else:
            RocServer(eps, "echo", Echo()).run()
    elif kind == "fb-client":
        feature_client(argv[2], [int(b) for b in [base, *argv[3:]]])
    else:
        raise SystemExit(f"unknown child {kind}")


def feature_client(variant: str, bases: list[int]) -> None:
    """Child: a RocClient of one variant measuring on command (stdin) and printing
    calls per second (stdout): ``sync S`` or ``window S W``."""
    from ctlwire.roc import Endpoints, RocClient
    eps = [Endpoints("127.0.0.1", b) for b in bases]
    if variant == "baseline":
        client = RocClient(eps[0], timeout=10.0)
    elif variant == "off":
        client = RocClient(eps[0], timeout=10.0, retry=False)
    else:
        client = RocClient(eps, timeout=10.0)
    echo = client["echo"].echo
    deadline = time.monotonic() + 30
    while True:
        try:
            echo(0)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        seconds = float(cmd[1])
        if cmd[0] == "sync":
            fn = lambda n: [echo(i) for i in range(n)]  # noqa: E731
        else:
            w = int(cmd[2])

            def fn(n: int, w: int = w) -> None:
                q: deque = deque()
                keep_in_flight(n, w, lambda i: q.append(echo.call_async(i)),
                               lambda: q.popleft().result())
        rate, us = timed(fn, seconds, [])
        print(f"{rate:.1f} {us[0]:.2f}", flush=True)


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (Linux /proc), 0.0 where unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def spawn(kind: str, base: int, *extra: str, pythonpath: str | None = None,
          stdio: bool = False) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = pythonpath or os.pathsep.join(p for p in sys.path if p)
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", kind,
                             str(base), *extra], env=env,
                            stdout=subprocess.PIPE if stdio else subprocess.DEVNULL,
                            stdin=subprocess.PIPE if stdio else None, text=stdio)


def features(baseline_src: str, seconds: float, rounds: int, w: int) -> None:
    """The new features' cost: the code before them (``baseline_src``), the new code
    with them off (client ``retry=False``, server ``reply_cache=False``), on (the
    defaults), and on with a standby broker running, interleaved in one run."""
    procs: list[subprocess.Popen] = []
    clients: dict[str, subprocess.Popen] = {}
    pids: dict[str, list[int]] = {}
    try:
        for variant in ("baseline", "off", "on", "standby"):
            pp = os.path.join(baseline_src) if variant == "baseline" else None
            b = free_base_port()
            if variant == "standby":
                s_base = free_base_port()
                procs += [spawn("fb-broker", b, variant),
                          spawn("fb-broker", s_base, variant, "standby-for", str(b)),
                          spawn("fb-server", b, variant, str(s_base))]
                bases = [str(s_base)]
            else:
                procs += [spawn("fb-broker", b, variant, pythonpath=pp),
                          spawn("fb-server", b, variant, pythonpath=pp)]
                bases = []
            pids[variant] = [p.pid for p in procs[-3 if variant == "standby" else -2:]]
            c = spawn("fb-client", b, variant, *bases, pythonpath=pp, stdio=True)
            procs.append(c)
            clients[variant] = c
        for c in clients.values():
            assert c.stdout is not None and c.stdout.readline().strip() == "ready"
        res: dict[str, dict[str, list[float]]] = {
            v: {"one at a time": [], "in flight": []} for v in clients}
        cpu: dict[str, dict[str, list[float]]] = {
            v: {"one at a time": [], "in flight": []} for v in clients}
        for r in range(rounds):
            for mode, cmd in (("one at a time", f"sync {seconds}\n"),
                              ("in flight", f"window {seconds} {w}\n")):
                for v, c in clients.items():
                    c0 = sum(cpu_seconds(p) for p in pids[v])
                    c.stdin.write(cmd)  # type: ignore[union-attr]
                    c.stdin.flush()  # type: ignore[union-attr]
                    rate, client_us = map(float, c.stdout.readline().split())  # type: ignore
                    # broker(s) and server CPU over the whole command (warm-up included),
                    # per call at the measured rate: an estimate, but load-independent
                    calls = rate * seconds + 200
                    others = (sum(cpu_seconds(p) for p in pids[v]) - c0) / calls * 1e6
                    res[v][mode].append(rate)
                    cpu[v][mode].append(client_us + others)
            print(f"features round {r + 1}: " + "  ".join(
                f"{v} {res[v]['one at a time'][-1]:,.0f}/{res[v]['in flight'][-1]:,.0f}"
                for v in clients), flush=True)
        print(f"\nnew features, calls per second (median of {rounds} interleaved rounds; "
              f"in flight: window {w}):")
        base = {m: statistics.median(res["baseline"][m]) for m in res["baseline"]}
        cbase = {m: statistics.median(cpu["baseline"][m]) for m in cpu["baseline"]}
        print(f"  {'':<9}{'one at a time':>16}{'in flight':>18}"
              f"{'CPU us/call (1 / in flight)':>34}")
        for v in clients:
            parts = []
            for m in ("one at a time", "in flight"):
                med = statistics.median(res[v][m])
                parts.append(f"{med:>9,.0f} ({med / base[m]:.2f})")
            c1, c2 = (statistics.median(cpu[v][m]) for m in ("one at a time", "in flight"))
            print(f"  {v:<9}" + "   ".join(parts) +
                  f"      {c1:,.0f} / {c2:,.0f} ({cbase['one at a time'] / c1:.2f} / "
                  f"{cbase['in flight'] / c2:.2f})")
        print("  (ratios to baseline, CPU as baseline/variant so higher is better; "
              "targets: off >= 0.95, standby >= 0.85)")
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(10)


def failover(kills: int) -> None:
    """Kill the active broker of a primary/standby pair ``kills`` times (SIGKILL) while
    a client calls in a loop; print how long calls stopped each time."""
    import threading

    from ctlwire.roc import Endpoints, RocClient
    p_base, s_base = free_base_port(), free_base_port()
    brokers = {"primary": spawn("fb-broker", p_base, "on"),
               "standby": spawn("fb-broker", s_base, "on", "standby-for", str(p_base))}
    server = spawn("fb-server", p_base, "on", str(s_base))
    eps = [Endpoints("127.0.0.1", p_base), Endpoints("127.0.0.1", s_base)]
    client = RocClient(eps, timeout=10.0)
    done: list[float] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        i = 0
        try:
            while not stop.is_set():
                client.call("echo", "echo", i)
                done.append(time.monotonic())
                i += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def state(base: int) -> str:
        c = RocClient(Endpoints("127.0.0.1", base), timeout=2.0, retry=False)
        try:
            return c.broker_state()
        except Exception:  # noqa: BLE001
            return "down"
        finally:
            c.close()

    t = threading.Thread(target=loop, daemon=True)
    gaps = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.call("echo", "echo", 0)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
        t.start()
        for k in range(kills):
            time.sleep(0.5)
            while True:  # ask both: exactly one must say active (a slow answer retries)
                states = {"primary": state(p_base), "standby": state(s_base)}
                actives = [name for name, st in states.items() if st == "active"]
                if len(actives) == 1:
                    break
                if len(actives) > 1:
                    raise RuntimeError(f"two active brokers: {states}")
            active = actives[0]
            brokers[active].kill()
            killed = time.monotonic()
            brokers[active].wait()
            # calls answered just after the kill may have been answered before it (the
            # reply already on its way): the stall is the longest gap between
            # answers in the 3 s after the kill
            while not errors and (time.monotonic() - killed < 3.0 or
                                  not [x for x in done if x > killed + 0.05]):
                if time.monotonic() - killed > 15:
                    raise RuntimeError("calls did not resume")
                time.sleep(0.01)
            window = [killed] + [x for x in done if killed < x < killed + 3.0]
            gaps.append(max(b - a for a, b in zip(window, window[1:])))
            print(f"kill {k + 1} ({active}): calls resumed after {gaps[-1]:.3f} s",
                  flush=True)
            # the killed broker comes back as the passive one
            brokers[active] = spawn("fb-broker", p_base, "on") \
                if active == "primary" else \
                spawn("fb-broker", s_base, "on", "standby-for", str(p_base))
            back = p_base if active == "primary" else s_base
            while state(back) != "passive":
                time.sleep(0.05)
        stop.set()
        t.join(15)
        if errors:
            raise errors[0]
        print(f"\nfailover over {kills} kills: median {statistics.median(gaps):.3f} s, "
              f"max {max(gaps):.3f} s (target: within 1 s); "
              f"{client.failovers} switches, {client.resends} resends")
    finally:
        stop.set()
        client.close()
        for p in [*brokers.values(), server]:
            p.kill()
            p.wait(10)


def streaming(seconds: float, rounds: int) -> None:
    """Progress values per second from one generator method to its caller."""
    from ctlwire.roc import Endpoints, RocClient
    b = free_base_port()
    procs = [spawn("fb-broker", b, "on"), spawn("fb-server", b, "on")]
    client = RocClient(Endpoints("127.0.0.1", b), timeout=10.0)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.call("echo", "echo", 0)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
        count = client["echo"].count
        rates = []
        for _ in range(rounds):
            n = 20_000
            t0 = time.perf_counter()
            got = sum(1 for _ in count(n))
            rates.append(got / (time.perf_counter() - t0))
        print(f"\nstreaming: {statistics.median(rates):,.0f} progress values/s from one "
              f"generator method (median of {rounds} x 20,000; target >= 20,000)")
    finally:
        client.close()
        for p in procs:
            p.kill()
            p.wait(10)


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
        # the proxy's bound method itself, like the other paths' bound send: no
        # benchmark-only frame per call
        call = self.proxy.echo.call_async if type(self).call_async is RocPath.call_async \
            else self.call_async
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
    ap.add_argument("--features", metavar="BASELINE_SRC",
                    help="only measure the new features against the code in "
                         "BASELINE_SRC (a src/ folder of the earlier ctlwire, built)")
    ap.add_argument("--failover", type=int, metavar="KILLS",
                    help="only measure failover over KILLS broker kills")
    ap.add_argument("--streaming", action="store_true",
                    help="only measure progress values per second")
    args = ap.parse_args()
    if args.features:
        features(args.features, args.seconds, args.rounds, args.window)
        return 0
    if args.failover:
        failover(args.failover)
        return 0
    if args.streaming:
        streaming(args.seconds, args.rounds)
        return 0
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
