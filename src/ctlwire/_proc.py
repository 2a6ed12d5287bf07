"""Helpers for starting child Python processes and finding free ports on loopback.

Used by the demo, the tests and the benchmarks, which run servers and peers in
separate processes.
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


def free_base_port(count: int = 3, host: str = "127.0.0.1", attempts: int = 200) -> int:
    """A TCP port ``base`` such that ``base`` .. ``base + count - 1`` are free right now.

    ROC derives its broker, XSUB and XPUB ports from one base port, so it needs three
    consecutive ones. Another process may still take them before they are bound.
    """
    for _ in range(attempts):
        base = 20000 + int.from_bytes(os.urandom(2), "big") % 40000
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
