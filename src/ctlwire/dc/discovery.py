"""Discovery: how a member learns where the other members' pub ports are.

A :class:`Discovery` publishes this member's :class:`~ctlwire.dc.codec.MemberRecord` and
reports the records of the other members of the same group. The group calls it from its
own thread: :meth:`Discovery.register` once, :meth:`Discovery.refresh` and
:meth:`Discovery.members` every heartbeat, :meth:`Discovery.unregister` on leaving.
Implementations need not be thread-safe.

Two implementations need no extra server:

* :class:`DirectoryDiscovery`: one small file per member in a shared directory; for
  members on one machine (or sharing a file system). The default.
* :class:`UDPBeaconDiscovery`: every member broadcasts a beacon datagram to a well-known
  UDP port each heartbeat; on one machine use the loopback broadcast address
  ``127.255.255.255``, on a LAN the subnet's broadcast address.

Anything else (a key-value store, a name service) plugs in by subclassing
:class:`Discovery`.
"""
from __future__ import annotations

import abc
import logging
import os
import socket
import tempfile
import time
from pathlib import Path

from .codec import CodecError, MemberRecord, decode_record, encode_record

__all__ = ["Discovery", "DirectoryDiscovery", "UDPBeaconDiscovery", "DEFAULT_BEACON_PORT"]

log = logging.getLogger(__name__)

#: Well-known UDP port of :class:`UDPBeaconDiscovery` beacons.
DEFAULT_BEACON_PORT = 47813
_BEACON_MAGIC = b"CWDC1"


class Discovery(abc.ABC):
    """Base class of discovery services.

    ``ttl`` (seconds) is how long a record stays valid without a refresh; the group sets
    it to its peer timeout before :meth:`register`.
    """

    ttl: float = 3.0

    @abc.abstractmethod
    def register(self, record: MemberRecord) -> None:
        """Start announcing ``record`` (this member)."""

    @abc.abstractmethod
    def refresh(self) -> None:
        """Re-announce this member (called every heartbeat)."""

    @abc.abstractmethod
    def members(self) -> list[MemberRecord]:
        """Fresh records of the other members of this member's group (never blocks)."""

    @abc.abstractmethod
    def unregister(self) -> None:
        """Stop announcing this member and release resources."""

    def fileno(self) -> int | None:
        """A file descriptor that becomes readable when news arrives, if any."""
        return None


class DirectoryDiscovery(Discovery):
    """Discovery through a shared directory: ``<root>/<group>/<member hex>.rec``.

    Each member writes its record once (atomically) and touches the file every heartbeat;
    a file not touched for ``ttl`` seconds is stale and ignored, and removed after
    ``10 * ttl`` by whichever member notices.

    Parameters
    ----------
    root : str or Path, optional
        Shared directory (created if missing); default ``$XDG_RUNTIME_DIR/ctlwire-dc`` or
        ``<tmp>/ctlwire-dc-<uid>``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        if root is None:
            base = os.environ.get("XDG_RUNTIME_DIR")
            root = (Path(base) / "ctlwire-dc" if base else
                    Path(tempfile.gettempdir()) / f"ctlwire-dc-{os.getuid()}")
        self.root = Path(root)
        self._record: MemberRecord | None = None
        self._path: Path | None = None
        self._cache: dict[str, MemberRecord | None] = {}

    def _group_dir(self, group: str) -> Path:
        return self.root / group

    def register(self, record: MemberRecord) -> None:
        gdir = self._group_dir(record.group)
        gdir.mkdir(parents=True, exist_ok=True)
        path = gdir / f"{record.member.hex()}.rec"
        tmp = gdir / f".{record.member.hex()}.tmp"
        tmp.write_bytes(encode_record(record))
        os.replace(tmp, path)  # readers never see a half-written record
        self._record, self._path = record, path

    def refresh(self) -> None:
        if self._path is None or self._record is None:
            return
        try:
            os.utime(self._path)
        except FileNotFoundError:  # removed by someone who thought us dead: write again
            self.register(self._record)

    def members(self) -> list[MemberRecord]:
        if self._record is None:
            return []
        gdir = self._group_dir(self._record.group)
        now = time.time()
        found = []
        try:
            entries = list(os.scandir(gdir))
        except FileNotFoundError:
            return []
        for entry in entries:
            if not entry.name.endswith(".rec") or entry.path == str(self._path):
                continue
            try:
                age = now - entry.stat().st_mtime
            except FileNotFoundError:
                continue
            if age > 10 * self.ttl:
                self._cache.pop(entry.name, None)
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass
                continue
            if age > self.ttl:
                continue
            rec = self._read(entry.name, entry.path)
            if rec is not None and rec.group == self._record.group:
                found.append(rec)
        return found

    def _read(self, name: str, path: str) -> MemberRecord | None:
        if name in self._cache:
            return self._cache[name]
        try:
            rec: MemberRecord | None = decode_record(Path(path).read_bytes())
        except FileNotFoundError:
            return None
        except CodecError as exc:
            log.warning("discovery: ignoring malformed record file %s: %s", path, exc)
            rec = None
        self._cache[name] = rec  # records never change in place, so read each once
        return rec

    def unregister(self) -> None:
        if self._path is not None:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
        self._record = self._path = None


class UDPBeaconDiscovery(Discovery):
    """Discovery by UDP broadcast beacons on a well-known port.

    Every member binds the beacon port with ``SO_REUSEADDR``/``SO_REUSEPORT`` (so many
    members share it on one host) and broadcasts its record every heartbeat. Broadcast
    datagrams reach every socket bound to the port, unlike unicast ones.

    Parameters
    ----------
    port : int
        The well-known UDP port shared by the group's members.
    address : str
        Broadcast address: ``127.255.255.255`` (loopback, one machine) or a LAN's
        broadcast address, e.g. ``192.168.1.255``.
    bind_address : str, optional
        Address to bind; default ``address`` for loopback, all interfaces otherwise.
    """

    def __init__(self, port: int = DEFAULT_BEACON_PORT, address: str = "127.255.255.255",
                 bind_address: str | None = None) -> None:
        self.port = port
        self.address = address
        if bind_address is None:
            bind_address = address if address.startswith("127.") else ""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind((bind_address, port))
        sock.setblocking(False)
        self._sock: socket.socket | None = sock
        self._record: MemberRecord | None = None
        self._beacon = b""
        self._seen: dict[bytes, tuple[MemberRecord, float]] = {}

    def fileno(self) -> int | None:
        return self._sock.fileno() if self._sock is not None else None

    def register(self, record: MemberRecord) -> None:
        self._record = record
        self._beacon = _BEACON_MAGIC + encode_record(record)
        self.refresh()

    def refresh(self) -> None:
        if self._sock is None or not self._beacon:
            return
        try:
            self._sock.sendto(self._beacon, (self.address, self.port))
        except OSError as exc:  # a full buffer or a missing route must not kill the group
            log.warning("discovery: beacon not sent: %s", exc)

    def _drain(self) -> None:
        assert self._sock is not None
        now = time.monotonic()
        for _ in range(1000):  # bounded: beacons are tiny and infrequent
            try:
                data = self._sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            if not data.startswith(_BEACON_MAGIC):
                continue
            try:
                rec = decode_record(data[len(_BEACON_MAGIC):])
            except CodecError as exc:
                log.debug("discovery: ignoring malformed beacon: %s", exc)
                continue
            self._seen[rec.member] = (rec, now)

    def members(self) -> list[MemberRecord]:
        if self._sock is None or self._record is None:
            return []
        self._drain()
        now = time.monotonic()
        for member, (_, seen) in list(self._seen.items()):
            if now - seen > 10 * self.ttl:
                del self._seen[member]
        return [rec for rec, seen in self._seen.values()
                if now - seen <= self.ttl and rec.group == self._record.group
                and rec.member != self._record.member]

    def unregister(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._record = None
