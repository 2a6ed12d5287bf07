"""Discovery implementations on loopback and in a temporary directory."""
from __future__ import annotations

import os
import socket
import time


from ctlwire.dc.codec import MemberRecord, encode_record
from ctlwire.dc.discovery import DirectoryDiscovery, UDPBeaconDiscovery


def rec(n: int, group: str = "T.g") -> MemberRecord:
    return MemberRecord(group, bytes([n]) * 16, "127.0.0.1", 5000 + n)


def test_directory_members_see_each_other(tmp_path):
    a, b = DirectoryDiscovery(tmp_path), DirectoryDiscovery(tmp_path)
    a.register(rec(1))
    b.register(rec(2))
    assert a.members() == [rec(2)] and b.members() == [rec(1)]


def test_directory_ignores_other_groups(tmp_path):
    a, b = DirectoryDiscovery(tmp_path), DirectoryDiscovery(tmp_path)
    a.register(rec(1))
    b.register(rec(2, group="T.other"))
    assert a.members() == []


def test_directory_record_goes_stale_without_refresh(tmp_path):
    a, b = DirectoryDiscovery(tmp_path), DirectoryDiscovery(tmp_path)
    a.ttl = 5.0
    a.register(rec(1))
    b.register(rec(2))
    path = tmp_path / "T.g" / (rec(2).member.hex() + ".rec")
    old = time.time() - 6
    os.utime(path, (old, old))
    assert a.members() == []


def test_directory_refresh_keeps_record_fresh(tmp_path):
    a, b = DirectoryDiscovery(tmp_path), DirectoryDiscovery(tmp_path)
    a.ttl = 5.0
    a.register(rec(1))
    b.register(rec(2))
    path = tmp_path / "T.g" / (rec(2).member.hex() + ".rec")
    old = time.time() - 6
    os.utime(path, (old, old))
    b.refresh()
    assert a.members() == [rec(2)]


def test_directory_unregister_removes_record(tmp_path):
    a, b = DirectoryDiscovery(tmp_path), DirectoryDiscovery(tmp_path)
    a.register(rec(1))
    b.register(rec(2))
    b.unregister()
    assert a.members() == []


def test_directory_ignores_garbage_files(tmp_path):
    a = DirectoryDiscovery(tmp_path)
    a.register(rec(1))
    (tmp_path / "T.g" / "junk.rec").write_bytes(b"\xc1\x00garbage")
    (tmp_path / "T.g" / "short.rec").write_bytes(encode_record(
        MemberRecord("T.g", b"\x01", "127.0.0.1", 1)))
    (tmp_path / "T.g" / "notes.txt").write_text("hello")
    assert a.members() == []


def test_udp_beacons_reach_every_member(free_udp_port):
    a, b, c = (UDPBeaconDiscovery(free_udp_port) for _ in range(3))
    try:
        for d, n in zip((a, b, c), (1, 2, 3)):
            d.register(rec(n))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(a.members()) < 2:
            time.sleep(0.01)
        assert sorted(r.member for r in a.members()) == [rec(2).member, rec(3).member]
    finally:
        for d in (a, b, c):
            d.unregister()


def test_udp_ignores_garbage_datagrams(free_udp_port):
    a, b = UDPBeaconDiscovery(free_udp_port), UDPBeaconDiscovery(free_udp_port)
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    junk.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    try:
        a.register(rec(1))
        for data in (b"", b"hello", b"CWDC1", b"CWDC1\xff\xfe", b"CWDC1" + b"\x00" * 50):
            junk.sendto(data, ("127.255.255.255", free_udp_port))
        b.register(rec(2))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not a.members():
            time.sleep(0.01)
        assert a.members() == [rec(2)]
    finally:
        junk.close()
        a.unregister()
        b.unregister()


def test_udp_record_goes_stale(free_udp_port):
    a, b = UDPBeaconDiscovery(free_udp_port), UDPBeaconDiscovery(free_udp_port)
    a.ttl = 0.2
    try:
        a.register(rec(1))
        b.register(rec(2))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not a.members():
            time.sleep(0.01)
        assert a.members() == [rec(2)]
        b.unregister()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and a.members():
            time.sleep(0.02)
        assert a.members() == []
    finally:
        a.unregister()
        b.unregister()


def test_udp_fileno_is_readable_socket(free_udp_port):
    a = UDPBeaconDiscovery(free_udp_port)
    try:
        assert isinstance(a.fileno(), int)
    finally:
        a.unregister()
    assert a.fileno() is None
