"""Discovery: how a member learns where the other members' pub ports are.

A :class:`Discovery` publishes this member's :class:`~ctlwire.dc.codec.MemberRecord` and
reports the records of the other members of the same group. The group calls it from its
own thread: :meth:`Discovery.register` once, :meth:`Discovery.refresh` and
:meth:`Discovery.members` every heartbeat, :meth:`Discovery.unregister` on leaving.
Implementations need not be thread-safe.

:class:`RedisDiscovery` uses a Redis server (the store RIAPS used, and one observatories
already run) for members spread over racks and subnets. Two implementations need no
extra server:

* :class:`DirectoryDiscovery`: one small file per member in a shared directory; for
  members on one machine (or sharing a file system). The default.
* :class:`UDPBeaconDiscovery`: every member broadcasts a beacon datagram to a well-known
  UDP port each heartbeat; on one machine use the loopback broadcast address
  ``127.255.255.255``, on a LAN the subnet's broadcast address.

Anything else (another key-value store, a name service) plugs in by subclassing
:class:`Discovery`.

Layering: imports the standard library, msgspec, ``ctlwire.dc.codec``, and the ``redis``
client (only when a :class:`RedisDiscovery` is made).
"""
from __future__ import annotations

import abc
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from .codec import CodecError, MemberRecord, decode_record, encode_record

__all__ = ["Discovery", "DirectoryDiscovery", "UDPBeaconDiscovery", "RedisDiscovery",
           "DEFAULT_BEACON_PORT"]

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


class RedisDiscovery(Discovery):
    """Discovery through a Redis server, for members on many hosts and subnets.

    Each member stores its record under ``<prefix>:<group>:<member hex>`` with a time to
    live of ``ttl`` (the group's peer timeout) and refreshes it three times per ``ttl``;
    a member that dies silently disappears when its key expires. Joins and departures
    arrive as they happen: a joining member publishes its record on the channel
    ``<prefix>:<group>``, a leaving one its id, and key expiries arrive as keyspace
    notifications when the server sends them (``notify-keyspace-events`` with ``K``,
    ``g`` and ``x``); a full re-read every ``ttl`` catches anything missed.

    All Redis traffic runs on a background thread, so :meth:`members` never blocks. If
    Redis becomes unreachable, the member keeps the records it knows, logs one warning,
    and retries; when Redis is back it registers again and re-reads the group.

    Parameters
    ----------
    url : str
        Redis URL, e.g. ``"redis://redis.example:6379/0"``.
    advertise : str, optional
        Address the other members reach this one at (announced instead of the group's
        bind address; needed when binding every interface).
    prefix : str
        Key and channel prefix shared by the members.
    timeout : float
        Socket timeout of Redis calls, seconds.

    Notes
    -----
    Needs the ``redis`` client: ``pip install 'ctlwire[redis]'``.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, advertise: str | None = None,
                 prefix: str = "ctlwire:dc", timeout: float = 1.0) -> None:
        try:
            import redis
        except ImportError as exc:
            raise ImportError("RedisDiscovery needs the redis client: "
                              "pip install 'ctlwire[redis]' (or pip install redis)") from exc
        self._redis = redis
        self.url = url
        self.advertise = advertise
        self.prefix = prefix
        self._client = redis.Redis.from_url(url, socket_timeout=timeout,
                                            socket_connect_timeout=timeout)
        self._db = int(self._client.connection_pool.connection_kwargs.get("db", 0) or 0)
        self._lock = threading.Lock()
        self._known: dict[bytes, MemberRecord] = {}
        self._record: MemberRecord | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._channel = ""
        self._closed = False
        self._rx, self._tx = os.pipe()
        os.set_blocking(self._rx, False)
        os.set_blocking(self._tx, False)
        #: True while Redis answers; False during an outage (members() keeps what it knew).
        self.reachable = False
        #: Counts of what the background thread did (for tests and monitoring).
        self.stats = {"joins": 0, "departures": 0, "resyncs": 0, "outages": 0,
                      "malformed": 0}

    # --- the Discovery interface ---------------------------------------------------------

    def fileno(self) -> int | None:
        return self._rx

    def register(self, record: MemberRecord) -> None:
        if self.advertise is not None:
            record = msgspec.structs.replace(record, host=self.advertise)
        self._record = record
        self._channel = f"{self.prefix}:{record.group}"
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"dc-redis-{record.group}")
        self._thread.start()

    def refresh(self) -> None:
        pass  # the background thread refreshes the key three times per ttl

    def members(self) -> list[MemberRecord]:
        try:
            while os.read(self._rx, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        with self._lock:
            return list(self._known.values())

    def unregister(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        record, self._record = self._record, None
        if record is not None and self.reachable:
            try:
                pipe = self._client.pipeline()
                pipe.delete(self._key(record.member))
                pipe.publish(self._channel, b"L" + record.member)
                pipe.execute()
            except self._redis.RedisError as exc:
                log.warning("discovery: could not unregister from Redis at %s: %s",
                            self.url, exc)
        self._client.close()
        for fd in (self._rx, self._tx):
            try:
                os.close(fd)
            except OSError:
                pass

    # --- the background thread -------------------------------------------------------------

    def _key(self, member: bytes) -> str:
        return f"{self._channel}:{member.hex()}"

    def _wake(self) -> None:
        try:
            os.write(self._tx, b"!")
        except (BlockingIOError, OSError):
            pass  # already readable: one wake-up is enough

    def _loop(self) -> None:
        pubsub = None
        next_refresh = next_resync = 0.0
        retry = 0.05
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self._connect()
                    retry = 0.05
                    next_refresh = time.monotonic() + self.ttl / 3
                    next_resync = time.monotonic() + self.ttl
                now = time.monotonic()
                if now >= next_refresh:
                    self._store()
                    next_refresh = now + self.ttl / 3
                if now >= next_resync:
                    self._resync()
                    next_resync = now + self.ttl
                wait = max(0.0, min(next_refresh, next_resync) - time.monotonic())
                msg = pubsub.get_message(ignore_subscribe_messages=True,
                                         timeout=min(wait, 0.25))
                while msg is not None:
                    self._handle(msg)
                    msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
            except (self._redis.RedisError, OSError) as exc:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except (self._redis.RedisError, OSError):
                        pass
                    pubsub = None
                if self.reachable or self.stats["outages"] == 0:
                    self.stats["outages"] += 1
                    with self._lock:
                        n = len(self._known)
                    log.warning("discovery: Redis at %s unreachable (%s); keeping the %d "
                                "members known and retrying", self.url, exc, n)
                self.reachable = False
                self._stop.wait(retry)
                retry = min(retry * 2, max(0.05, self.ttl / 3))
        if pubsub is not None:
            try:
                pubsub.close()
            except (self._redis.RedisError, OSError):
                pass

    def _connect(self) -> Any:
        assert self._record is not None
        pubsub = self._client.pubsub()
        pubsub.subscribe(self._channel)
        pubsub.psubscribe(f"__keyspace@{self._db}__:{self._channel}:*")
        # Subscribe before storing and reading, so that nothing between is missed.
        self._store()
        self._client.publish(self._channel, b"J" + encode_record(self._record))
        self._resync()
        if not self.reachable and self.stats["outages"]:
            log.warning("discovery: Redis at %s reachable again", self.url)
        self.reachable = True
        return pubsub

    def _store(self) -> None:
        record = self._record
        if record is not None:
            self._client.set(self._key(record.member), encode_record(record),
                             px=max(1, int(self.ttl * 1000)))

    def _resync(self) -> None:
        """Re-read every record of the group (joins or departures we may have missed)."""
        assert self._record is not None
        keys = list(self._client.scan_iter(match=f"{self._channel}:*", count=500))
        values = self._client.mget(keys) if keys else []
        found: dict[bytes, MemberRecord] = {}
        for key, value in zip(keys, values):
            rec = self._decode(value)
            if rec is not None and rec.member != self._record.member:
                found[rec.member] = rec
        self.stats["resyncs"] += 1
        with self._lock:
            changed = found != self._known
            self._known = found
        if changed:
            self._wake()

    def _decode(self, value: bytes | None) -> MemberRecord | None:
        if value is None:
            return None
        try:
            rec = decode_record(value)
        except CodecError as exc:
            self.stats["malformed"] += 1
            log.debug("discovery: ignoring malformed Redis record: %s", exc)
            return None
        assert self._record is not None
        return rec if rec.group == self._record.group else None

    def _handle(self, msg: dict[str, Any]) -> None:
        assert self._record is not None
        data = msg.get("data")
        if not isinstance(data, bytes):
            return
        if msg.get("type") == "pmessage":
            # Keyspace notification: the channel names the key, the data the event.
            if data not in (b"expired", b"del"):
                return
            try:
                member = bytes.fromhex(msg["channel"].rsplit(b":", 1)[1].decode())
            except (ValueError, IndexError, UnicodeDecodeError):
                return
            self._forget(member)
        elif data[:1] == b"J":
            rec = self._decode(data[1:])
            if rec is None or rec.member == self._record.member:
                return
            with self._lock:
                new = self._known.get(rec.member) != rec
                self._known[rec.member] = rec
            if new:
                self.stats["joins"] += 1
                self._wake()
        elif data[:1] == b"L" and len(data) == 17:
            self._forget(data[1:])

    def _forget(self, member: bytes) -> None:
        assert self._record is not None
        if member == self._record.member:
            # Our own key vanished (expired while we were slow, or deleted): store it now.
            self._store()
            return
        with self._lock:
            gone = self._known.pop(member, None) is not None
        if gone:
            self.stats["departures"] += 1
            self._wake()
