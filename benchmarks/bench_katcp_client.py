"""KATCP client throughput: ctlwire beside aiokatcp and katcp-python, one server, one run.

Run: ``python benchmarks/bench_katcp_client.py [--server ctlwire|aiokatcp] [--rounds 3]``

One server process (ctlwire's ``DeviceServer`` by default, aiokatcp's with ``--server
aiokatcp``) serves every client. Each measurement runs in a fresh child process, so no
client's threads or event loop linger into the next one, and the rounds interleave the
clients so that load from elsewhere on the machine hits them all alike. Two workloads,
both ``?watchdog`` (the cheapest standard request):

* sequential: one request at a time, each waiting for its reply
  (ctlwire ``BlockingClient.blocking_request``, aiokatcp ``await client.request``,
  katcp-python ``BlockingClient.blocking_request``);
* 64 outstanding: 64 requests in flight at all times
  (ctlwire and katcp-python ``CallbackClient.callback_request`` with the reply
  callback sending the next request, aiokatcp 64 tasks awaiting requests).

``ctlwire-aio`` (ctlwire's asyncio ``AioClient``, 1 or 64 tasks awaiting ``call``) is
shown for comparison with aiokatcp, the other asyncio client.

Each figure is the median over the rounds of requests per second over ``--seconds``
after a short warm-up. The ratios compare ctlwire with aiokatcp's client measured in the
same round (median over rounds).
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WARMUP = 0.3
DEPTH = 64

CLIENTS = [
    ("ctlwire", "seq"), ("aiokatcp", "seq"), ("katcp-python", "seq"), ("raw-socket", "seq"),
    ("ctlwire-aio", "seq"),
    ("ctlwire", "64"), ("aiokatcp", "64"), ("katcp-python", "64"), ("ctlwire-aio", "64"),
]


# ---------------------------------------------------------------------- measurements (child)
def _measure_ctlwire(port: int, mode: str, seconds: float) -> float:
    import threading

    from ctlwire.katcp.client import BlockingClient, CallbackClient
    from ctlwire.katcp.core import Message

    if mode == "seq":
        client = BlockingClient("127.0.0.1", port)
        client.start()
        assert client.wait_protocol(10)
        request = client.blocking_request
        end = time.perf_counter() + WARMUP
        while time.perf_counter() < end:
            request(Message.request("watchdog"))
        n = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            for _ in range(100):
                request(Message.request("watchdog"))
            n += 100
            now = time.perf_counter()
            if now >= end:
                break
        client.stop()
        client.join(5)
        return n / (now - t0)

    client = CallbackClient("127.0.0.1", port)
    client.start()
    assert client.wait_protocol(10)
    state = {"count": 0, "stop": False, "inflight": 0}
    done = threading.Event()

    def on_reply(msg):
        state["count"] += 1
        if state["stop"]:
            state["inflight"] -= 1
            if not state["inflight"]:
                done.set()
            return
        client.callback_request(Message.request("watchdog"), reply_cb=on_reply)

    state["inflight"] = DEPTH
    for _ in range(DEPTH):
        client.callback_request(Message.request("watchdog"), reply_cb=on_reply)
    time.sleep(WARMUP)
    c0, t0 = state["count"], time.perf_counter()
    time.sleep(seconds)
    c1, t1 = state["count"], time.perf_counter()
    state["stop"] = True
    done.wait(10)
    client.stop()
    client.join(5)
    return (c1 - c0) / (t1 - t0)


def _asyncio_rate(connect, request, mode: str, seconds: float) -> float:
    """Requests/s of an asyncio client: 1 or DEPTH tasks each awaiting ``request(client)``
    in a loop; ``connect()`` makes the client (it has close() and wait_closed())."""
    import asyncio

    async def main() -> float:
        client = await connect()
        state = {"count": 0, "stop": False}

        async def worker():
            while not state["stop"]:
                await request(client)
                state["count"] += 1

        tasks = [asyncio.ensure_future(worker()) for _ in range(1 if mode == "seq" else DEPTH)]
        await asyncio.sleep(WARMUP)
        c0, t0 = state["count"], time.perf_counter()
        await asyncio.sleep(seconds)
        c1, t1 = state["count"], time.perf_counter()
        state["stop"] = True
        await asyncio.gather(*tasks)
        client.close()
        await client.wait_closed()
        return (c1 - c0) / (t1 - t0)

    return asyncio.run(main())


def _measure_aiokatcp(port: int, mode: str, seconds: float) -> float:
    import aiokatcp

    return _asyncio_rate(lambda: aiokatcp.Client.connect("127.0.0.1", port),
                         lambda client: client.request("watchdog"), mode, seconds)


def _measure_ctlwire_aio(port: int, mode: str, seconds: float) -> float:
    from ctlwire.katcp.aio import AioClient
    from ctlwire.katcp.core import Message

    return _asyncio_rate(lambda: AioClient.connect("127.0.0.1", port),
                         lambda client: client.call(Message.request("watchdog")),
                         mode, seconds)


def _import_katcp_python():
    # katcp 0.9.3 pins tornado 4.5, which still imports these names from collections;
    # they moved to collections.abc (aliases removed in Python 3.10).
    import collections
    import collections.abc

    for name in ("MutableMapping", "Mapping", "MutableSet", "Sequence", "Callable",
                 "Iterable", "Hashable"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
    import logging

    logging.getLogger("katcp").setLevel(logging.ERROR)
    import katcp

    return katcp


def _measure_katcp_python(port: int, mode: str, seconds: float) -> float:
    import threading

    katcp = _import_katcp_python()
    if mode == "seq":
        client = katcp.BlockingClient("127.0.0.1", port)
        client.start()
        assert client.wait_protocol(10)
        end = time.perf_counter() + WARMUP
        while time.perf_counter() < end:
            client.blocking_request(katcp.Message.request("watchdog"))
        n = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while True:
            for _ in range(20):
                client.blocking_request(katcp.Message.request("watchdog"))
            n += 20
            now = time.perf_counter()
            if now >= end:
                break
        client.stop()
        client.join(5)
        return n / (now - t0)

    client = katcp.CallbackClient("127.0.0.1", port)
    client.start()
    assert client.wait_protocol(10)
    state = {"count": 0, "stop": False, "inflight": DEPTH}
    done = threading.Event()

    def on_reply(msg):
        state["count"] += 1
        if state["stop"]:
            state["inflight"] -= 1
            if not state["inflight"]:
                done.set()
            return
        client.callback_request(katcp.Message.request("watchdog"), reply_cb=on_reply)

    for _ in range(DEPTH):
        client.callback_request(katcp.Message.request("watchdog"), reply_cb=on_reply)
    time.sleep(WARMUP)
    c0, t0 = state["count"], time.perf_counter()
    time.sleep(seconds)
    c1, t1 = state["count"], time.perf_counter()
    state["stop"] = True
    done.wait(10)
    client.stop()
    client.join(5)
    return (c1 - c0) / (t1 - t0)


def _measure_raw_socket(port: int, mode: str, seconds: float) -> float:
    # Not a client: a blocking socket sending ?watchdog[n] and reading whatever comes
    # back, with no parsing or matching. The ceiling for any Python client on this
    # server and machine, to show how much of the round trip is the client's.
    import socket

    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(10)
    greeting = b""
    while greeting.count(b"\n") < 3:  # the three #version-connect informs
        greeting += sock.recv(65536)
    mid = 0

    def burst(k: int) -> None:
        nonlocal mid
        for _ in range(k):
            mid += 1
            sock.sendall(b"?watchdog[%d]\n" % mid)
            sock.recv(65536)

    end = time.perf_counter() + WARMUP
    while time.perf_counter() < end:
        burst(100)
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        burst(100)
        n += 100
        now = time.perf_counter()
        if now >= end:
            break
    sock.close()
    return n / (now - t0)


MEASURE = {"ctlwire": _measure_ctlwire, "aiokatcp": _measure_aiokatcp,
           "katcp-python": _measure_katcp_python, "raw-socket": _measure_raw_socket,
           "ctlwire-aio": _measure_ctlwire_aio}


# ---------------------------------------------------------------------- driver (parent)
def _child_env() -> dict:
    # The children import the same ctlwire as this process (never the checkout's src/).
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def _start_server(impl: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "ctlwire._testing.katcp_peer", "--impl", impl],
                            stdout=subprocess.PIPE, env=_child_env())
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    ready = sel.select(30)
    sel.close()
    line = proc.stdout.readline().decode() if ready else ""
    if not line.startswith("PORT "):
        proc.kill()
        proc.wait(10)
        raise RuntimeError(f"{impl} server did not start: {line!r}")
    return proc, int(line.split()[1])


def _run_child(client: str, mode: str, port: int, seconds: float) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", client, mode, str(port),
                          str(seconds)], capture_output=True, env=_child_env(),
                         timeout=60 + seconds * 4)
    if out.returncode != 0:
        raise RuntimeError(f"{client} {mode} failed:\n{out.stderr.decode()[-2000:]}")
    return json.loads(out.stdout.decode().strip().splitlines()[-1])["rate"]


def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", choices=("ctlwire", "aiokatcp"), default="ctlwire")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        client, mode, port, seconds = args.child
        rate = MEASURE[client](int(port), mode, float(seconds))
        print(json.dumps({"rate": rate}))
        return 0

    proc, port = _start_server(args.server)
    results: dict = {key: [] for key in CLIENTS}
    try:
        print(f"server: {args.server} DeviceServer on 127.0.0.1:{port} (own process); "
              f"{args.rounds} rounds x {args.seconds:g} s per client; request ?watchdog")
        for r in range(args.rounds):
            for client, mode in CLIENTS:
                results[(client, mode)].append(_run_child(client, mode, port, args.seconds))
            print(f"  round {r + 1}: " + ", ".join(
                f"{c} {m} {results[(c, m)][-1]:,.0f}" for c, m in CLIENTS), flush=True)
    finally:
        proc.kill()
        proc.wait(10)

    med = {key: statistics.median(v) for key, v in results.items()}
    print()
    print(f"{'client':<14}{'sequential req/s':>18}{f'{DEPTH} outstanding req/s':>24}")
    for name in ("ctlwire", "aiokatcp", "katcp-python", "ctlwire-aio"):
        print(f"{name:<14}{med[(name, 'seq')]:>18,.0f}{med[(name, '64')]:>24,.0f}")
    print(f"{'raw socket':<14}{med[('raw-socket', 'seq')]:>18,.0f}{'-':>24}"
          "   (no parsing: the ceiling for a Python client)")
    print()
    ceiling = statistics.median(
        r / a for r, a in zip(results[("raw-socket", "seq")], results[("aiokatcp", "seq")]))
    reach = statistics.median(
        c / r for c, r in zip(results[("ctlwire", "seq")], results[("raw-socket", "seq")]))
    print(f"sequential: a raw socket reaches {ceiling:.2f}x aiokatcp; ctlwire reaches "
          f"{reach:.0%} of the raw socket")
    for mode, label in (("seq", "sequential"), ("64", f"{DEPTH} outstanding")):
        # Each round measures the clients seconds apart, under the same background load:
        # the median of the per-round ratios is steadier than the ratio of medians.
        paired = [a / b for a, b in zip(results[("ctlwire", mode)], results[("aiokatcp", mode)])]
        ratio = statistics.median(paired)
        ratio_kp = statistics.median(
            a / b for a, b in zip(results[("ctlwire", mode)], results[("katcp-python", mode)]))
        print(f"ctlwire / aiokatcp, {label}: {ratio:.2f}x (median of per-round ratios "
              + ", ".join(f"{r:.2f}" for r in paired)
              + f"; target >= 2.00x: {'met' if ratio >= 2.0 else 'NOT met'}); "
              f"ctlwire / katcp-python: {ratio_kp:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
