"""Helpers for starting child Python processes and finding free ports on loopback.

Used by the demo, the tests and the benchmarks, which run servers and peers in
separate processes.

Layering: imports nothing from ctlwire.
"""
from __future__ import annotations

import os
import socket
import sys


def child_env(**overrides: str | None) -> dict[str, str]:
    """Environment for a child ``sys.executable`` that imports the same ctlwire.

    The parent's ``sys.path`` becomes the child's ``PYTHONPATH``, so a source tree and
    an installed package both work. Keyword arguments set variables; ``None`` removes one.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _ephemeral_low() -> int:
    """The first port of the range the kernel hands out for port 0 and outgoing
    connections (Linux; 32768, Linux's default, elsewhere)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_base_port(count: int = 4, host: str = "127.0.0.1", attempts: int = 200) -> int:
    """A TCP port ``base`` such that ``base`` .. ``base + count - 1`` are free right now.

    ROC derives its ports from one base port: broker, XSUB and XPUB, and base + 3 for
    the link between a primary and its standby, so four consecutive ones by default.
    The bases are drawn below the kernel's ephemeral range, so a port the kernel gives
    to another socket meanwhile (a bind to port 0, an outgoing connection) cannot take
    one; another process choosing ports the same way still can, before they are bound.
    """
    low, top = 10000, min(_ephemeral_low(), 65536) - count
    if top - low < 2000:  # an unusual range: anywhere above the privileged ports
        low, top = 1024, 65536 - count
    for _ in range(attempts):
        base = low + int.from_bytes(os.urandom(2), "big") % (top - low)
        socks = []
        try:
            for off in range(count):
                s = socket.socket()
                socks.append(s)
                s.bind((host, base + off))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports on {host}")


class JsonLinesChild:
    """A child ``sys.executable`` that reports JSON objects on stdout, one per line.

    A daemon thread collects the objects into :attr:`lines`; :meth:`wait` finds one,
    :meth:`send` writes a JSON line to the child's stdin. Used by the group demo,
    benchmark and tests, whose member processes report their events this way.

    Parameters
    ----------
    argv : list of str
        Arguments after ``sys.executable`` (a script path, or ``-m module``...).
    what : str
        Names the child in error messages.
    """

    def __init__(self, argv: list[str], what: str = "child") -> None:
        import subprocess
        import threading

        self.what = what
        self.proc = subprocess.Popen([sys.executable, *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1,
                                     env=child_env())
        self.lines: list[dict] = []
        self.cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        import json

        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:  # not one of ours (a stray print): skip it
                continue
            with self.cond:
                self.lines.append(obj)
                self.cond.notify_all()

    def wait(self, pred, timeout: float, since: int = 0) -> dict:
        """The first object from index ``since`` on for which ``pred`` is true, waiting
        up to ``timeout`` s; ``TimeoutError`` if none comes (or the child is gone)."""
        import time

        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for obj in self.lines[since:]:
                    if pred(obj):
                        return obj
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None
                                 and not self._reader.is_alive()):
                    raise TimeoutError(f"{self.what}: no matching output within "
                                       f"{timeout} s")
                self.cond.wait(min(left, 0.1))

    def mark(self) -> int:
        """How many objects have come so far (a ``since`` for :meth:`wait`)."""
        with self.cond:
            return len(self.lines)

    def events(self, kind: str) -> list[dict]:
        """The objects whose ``ev`` is ``kind``."""
        with self.cond:
            return [e for e in self.lines if e.get("ev") == kind]

    def leader(self) -> tuple[str, int] | None:
        """(leader id, term) as a group member last reported it: from its
        ``leader_elected`` / ``leader_lost`` events."""
        current = None
        with self.cond:
            for e in self.lines:
                if e.get("ev") == "leader_elected":
                    current = (e["member"], e["term"])
                elif e.get("ev") == "leader_lost" and current and current[0] == e["member"]:
                    current = None
        return current

    def send(self, obj: object) -> None:
        """Write ``obj`` as one JSON line to the child's stdin."""
        import json

        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """Kill the child and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
