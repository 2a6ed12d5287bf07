"""Child process of the ROC fault tests: ``broker`` or ``server`` (run by path)."""
from __future__ import annotations

import sys
import time


class Shared:
    """What the child server shares: counts calls so tests can see double runs."""

    def __init__(self) -> None:
        self.runs = 0

    def echo(self, x):
        return x

    def slow(self, seconds: float) -> float:
        self.runs += 1
        print(f"slow started {self.runs}", flush=True)
        time.sleep(seconds)
        return seconds

    def log(self, message: str) -> None:
        import logging
        logging.getLogger("child").info(message)

    def pid(self) -> int:
        import os
        return os.getpid()


class Counter:
    """Counts calls: a call that ran twice shows as a gap in the caller's numbers."""

    def __init__(self) -> None:
        self.value = 0
        self.seen: list = []

    def increment(self, tag) -> int:
        """Add one and remember who asked."""
        self.value += 1
        self.seen.append(tag)
        return self.value

    def history(self) -> list:
        return self.seen

    def steps(self, n: int, pause: float = 0.0):
        """Yield 0..n-1, then return n."""
        for i in range(n):
            if pause:
                time.sleep(pause)
            yield i
        return n


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "broker":
        from ctlwire.cli.rocbroker import main as broker_main
        base, hb = argv[1], argv[2]
        sys.exit(broker_main(["--address", "127.0.0.1", "--base-port", base,
                              "--heartbeat", hb, "--unknown-grace", "0.2"]))
    if mode == "standby":
        # a standby broker: base port, heartbeat, primary's base port
        from ctlwire.cli.rocbroker import main as broker_main
        base, hb, primary = argv[1], argv[2], argv[3]
        sys.exit(broker_main(["--address", "127.0.0.1", "--base-port", base,
                              "--heartbeat", hb, "--unknown-grace", "0.2",
                              "--standby-for", f"127.0.0.1:{primary}", *argv[4:]]))
    if mode == "primary":
        from ctlwire.cli.rocbroker import main as broker_main
        base, hb = argv[1], argv[2]
        sys.exit(broker_main(["--address", "127.0.0.1", "--base-port", base,
                              "--heartbeat", hb, "--unknown-grace", "0.2",
                              *argv[3:]]))
    if mode == "counter":
        # a Counter served by every broker given (base ports)
        from ctlwire.roc import Endpoints, RocServer
        hb = float(argv[1])
        eps = [Endpoints("127.0.0.1", int(b)) for b in argv[2:]]
        srv = RocServer(eps, "counter", Counter(), heartbeat=hb, connections=4)
        print("serving", flush=True)
        srv.run()
        return
    if mode == "server":
        from ctlwire.roc import Endpoints, RocServer
        base, oid, hb = int(argv[1]), argv[2], float(argv[3])
        kw = {"connections": int(argv[4])} if len(argv) > 4 else {}
        if len(argv) > 5:
            kw["pipeline"] = int(argv[5])
        srv = RocServer(Endpoints("127.0.0.1", base), oid, Shared(), heartbeat=hb, **kw)
        print("serving", flush=True)
        srv.run()
        return
    if mode == "simple":
        # broker from $CTLWIRE_ROC_BROKER, logging switched on by run_simple_server
        from ctlwire.roc import run_simple_server
        print("serving", flush=True)
        run_simple_server(argv[1], Shared(), heartbeat=float(argv[2]))
        return
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
