"""free_base_port: consecutive free loopback ports for ROC's base-port layout, drawn
below the kernel's ephemeral range (so no port-0 bind or outgoing connection takes one)."""
from __future__ import annotations

import socket

from ctlwire._testing.proc import _ephemeral_low, free_base_port


def test_the_ports_are_free_consecutive_and_below_the_ephemeral_range():
    low = _ephemeral_low()
    for _ in range(20):
        base = free_base_port()
        assert base + 3 < low or low - 4 < 12000  # (an unusual range: anywhere)
        socks = [socket.socket() for _ in range(4)]
        try:
            for off, s in enumerate(socks):  # a broker with a standby binds all four
                s.bind(("127.0.0.1", base + off))
        finally:
            for s in socks:
                s.close()


def test_ports_taken_are_not_returned():
    base = free_base_port()
    held = socket.socket()
    held.bind(("127.0.0.1", base + 3))  # the peer-link port of that base
    try:
        for _ in range(50):
            other = free_base_port()
            assert not other <= base + 3 <= other + 3
    finally:
        held.close()
