"""Status updates: a hierarchical tree of values, updated by anyone, through the relay.

Wire format (two frames): ``b"ROCS" + sensorId`` and the JSON of the data.  The JSON
continues the hierarchy, so ``("mount.encoder.1", 37.5)`` and
``("mount.encoder", {"1": 37.5})`` say the same thing.  Every update is a *partial*
tree: it changes only the leaves it names.

An optional third frame carries properties of the update as JSON; the only one
defined is ``{"ttl": seconds}``: the broker forgets the path when it is not sent
again within that time.  The broker keeps the latest value of every path
(:class:`StatusStore`, the Clone pattern) and, when a subscription arrives, sends the
current tree under it before any later update, so a late subscriber starts with the
whole current state.  A snapshot of the whole tree travels as ``b"ROCS"`` with an
empty sensor id (the root).

The tree logic (:func:`mask_update`, :func:`merge_tree`, :class:`StatusStore`) is pure
and tested without sockets; :class:`RocStatusUpdater` and :func:`statusUpdateIterator`
carry it.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator, Sequence

import zmq

from ctlwire import _json
from ctlwire._curve import apply_client_trusting
from ctlwire._zmq import make_socket
from ctlwire.roc.endpoints import Endpoints, resolve, resolve_all

PREFIX = b"ROCS"
log = logging.getLogger("ctlwire.roc.status")
_MISSING = object()


def _split(path: str) -> list[str]:
    return path.split(".") if path else []


def _check_path(path: str, what: str) -> None:
    if any(part == "" for part in path.split(".")):
        raise ValueError(f"{what} {path!r} has an empty component (leading, trailing or "
                         "doubled dot)")


def _descend(data: Any, parts: Sequence[str]) -> Any:
    for part in parts:
        if isinstance(data, dict):
            data = data.get(part, _MISSING)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return _MISSING
        if data is _MISSING:
            return _MISSING
    return data


def _nest(parts: Sequence[str], leaf: Any) -> Any:
    for part in reversed(parts):
        leaf = {part: leaf}
    return leaf


def mask_update(sensor_id: str, data: Any, mask: str) -> Any:
    """The part of one update that falls under ``mask``, as a tree rooted at the top.

    Parameters
    ----------
    sensor_id : str
        Dot-separated path the update was sent for.
    data : Any
        Its JSON data (continuing the hierarchy below ``sensor_id``).
    mask : str
        Dot-separated prefix of interest; ``''`` means everything.

    Returns
    -------
    dict or None
        ``None`` when nothing of the update is under ``mask`` (including sibling
        prefixes: mask ``system.foo`` does not match ``system.foobar``).

    Examples
    --------
    >>> mask_update('system', {'foo': {'cpu': 1}, 'bar': 2}, 'system.foo')
    {'system': {'foo': {'cpu': 1}}}
    """
    path = _split(sensor_id)
    m = _split(mask)
    common = min(len(path), len(m))
    if path[:common] != m[:common]:
        return None
    if len(path) >= len(m):  # at or below the mask: all of it
        return _nest(path, data)
    sub = _descend(data, m[len(path):])  # from above: cut out the masked subtree
    if sub is _MISSING:
        return None
    return _nest(m, sub)


def merge_tree(tree: dict, update: Any) -> dict:
    """Merge a partial tree ``update`` into ``tree`` in place (leaves replace leaves)
    and return ``tree``."""
    if not isinstance(update, dict):
        raise TypeError("a partial tree must be a dict at its root")
    for key, value in update.items():
        old = tree.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            merge_tree(old, value)
        else:
            tree[key] = value
    return tree


def _delete(tree: dict, parts: Sequence[str]) -> None:
    # remove the node at ``parts`` and the dicts it leaves empty
    node: Any = tree
    trail = []
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            return
        trail.append((node, part))
        node = node[part]
    if isinstance(node, dict):
        node.pop(parts[-1], None)
        while trail and not node:
            parent, key = trail.pop()
            del parent[key]
            node = parent


class StatusStore:
    """The latest value of every status path, and when the ones with a TTL expire.

    Pure state (no sockets): the broker's relay feeds it each update and asks it for
    the snapshot that a new subscription should see first.
    """

    __slots__ = ("tree", "_expiry", "updates", "expired")

    def __init__(self) -> None:
        self.tree: dict = {}
        self._expiry: dict[tuple, float] = {}  # path -> when it disappears
        self.updates = 0
        self.expired = 0

    def apply(self, sensor_id: str, data: Any, ttl: float | None, now: float) -> None:
        """Merge one update (``data`` below ``sensor_id``) received at ``now``."""
        parts = tuple(_split(sensor_id))
        if not parts:
            if isinstance(data, dict):
                merge_tree(self.tree, data)
        else:
            merge_tree(self.tree, _nest(parts, data))
        self.updates += 1
        if self._expiry:
            # a path sent again without a TTL is permanent from now on
            n = len(parts)
            for p in [p for p in self._expiry if p[:n] == parts]:
                del self._expiry[p]
        if ttl is not None and ttl > 0 and parts:
            self._expiry[parts] = now + ttl

    def expire(self, now: float) -> float | None:
        """Forget the paths whose TTL ran out; returns the next expiry, if any."""
        nxt = None
        for path, t in list(self._expiry.items()):
            if t <= now:
                del self._expiry[path]
                _delete(self.tree, path)
                self.expired += 1
            elif nxt is None or t < nxt:
                nxt = t
        return nxt

    def snapshot(self, prefix: bytes) -> list[list[bytes]]:
        """The messages a new subscription to ``PREFIX + prefix`` gets first: the
        current tree under it, one message per node that matches the prefix."""
        try:
            text = prefix.decode("utf-8")
        except UnicodeDecodeError:
            return []
        if not self.tree:
            return []
        if not text:
            return [[PREFIX, _json.dumps(self.tree)]]
        head, _, partial = text.rpartition(".")
        node = _descend(self.tree, _split(head)) if head else self.tree
        if not isinstance(node, dict):
            return []
        out = []
        for key, value in node.items():
            if key.startswith(partial):
                path = f"{head}.{key}" if head else key
                out.append([PREFIX + path.encode("utf-8"), _json.dumps(value)])
        return out


class RocStatusUpdater:
    """Allows to send ROC status update messages.

    Parameters
    ----------
    destination : Endpoints or str or None
        :class:`Endpoints` (its ``generalXSUB`` is used), a ZeroMQ endpoint, a
        ``host[:baseport]`` string, or ``None`` for ``$CTLWIRE_ROC_BROKER``.
    ctx : zmq.Context, optional
        ZeroMQ context to use.
    connect_timeout : float
        At start-up (this long after construction), :meth:`emit` waits up to this long
        for a broker to say it listens, instead of sending into the void.
    send_timeout : float
        When a broker's queue is full (it reads more slowly than updates come),
        :meth:`emit` waits up to this long for room, then drops the update and counts
        it in :attr:`dropped`.
    hwm : int
        Updates queued per broker before that back-pressure starts.

    Notes
    -----
    Nothing is dropped without a count. The socket knows which brokers subscribe to
    which paths (an XPUB, wire-compatible with a PUB), so every update ends in one of
    three counters: :attr:`sent` (queued for at least one listening broker),
    :attr:`dropped` (a broker's queue stayed full for ``send_timeout``: back-pressure
    first, then a counted drop, with a warning at most once a second) and
    :attr:`unheard` (no broker listened for that path: none connected, or, behind a
    broker that keeps no status tree, no subscriber of it; a warning when that
    starts). Safe to use from several threads.
    """

    def __init__(self, destination: Endpoints | str | list | None = None,
                 ctx: zmq.Context | None = None, *, security: Any = None,
                 broker_key: bytes | None = None, connect_timeout: float = 1.0,
                 send_timeout: float = 1.0, hwm: int = 10_000) -> None:
        for name, value in (("connect_timeout", connect_timeout),
                            ("send_timeout", send_timeout)):
            if not (isinstance(value, (int, float)) and 0 <= value < float("inf")):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, "
                                 f"got {value!r}")
        # to every broker of a primary/standby pair, so each keeps the whole tree
        self.endpoints = resolve_all(destination, "generalXSUB")
        self.endpoint = self.endpoints[0]
        if type(hwm) is not int or hwm < 1:
            raise ValueError(f"hwm must be an int >= 1, got {hwm!r}")
        self._sock = make_socket(ctx, zmq.XPUB, sndhwm=hwm)
        # every (un)subscription of every broker reaches us, and a full queue makes
        # send wait (up to SNDTIMEO) instead of dropping in silence
        self._sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        self._sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        self._sock.setsockopt(zmq.XPUB_NODROP, 1)
        self._sock.setsockopt(zmq.SNDTIMEO, int(send_timeout * 1000))
        apply_client_trusting(security, self._sock, broker_key)
        for e in self.endpoints:
            self._sock.connect(e)
        self._lock = threading.Lock()
        self._subscriptions: dict[bytes, int] = {}  # topic -> brokers subscribed to it
        self._startup_until = time.monotonic() + connect_timeout
        self._was_heard = True
        self._next_warning = 0.0
        #: Updates queued for at least one listening broker.
        self.sent = 0
        #: Updates dropped after a broker's queue stayed full for ``send_timeout``.
        self.dropped = 0
        #: Updates no broker listened for (none connected, or none subscribed to them).
        self.unheard = 0

    def _take_subscriptions(self, wait: float = 0.0) -> None:
        """Apply the brokers' (un)subscriptions that have arrived, waiting up to
        ``wait`` seconds for the first."""
        sock = self._sock
        if wait > 0 and not sock.poll(int(wait * 1000) + 1, zmq.POLLIN):
            return
        subs = self._subscriptions
        while True:
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not msg or msg[0] not in (0, 1):
                continue  # (a message, not a subscription: XPUB gets none here)
            topic = msg[1:]
            n = subs.get(topic, 0) + (1 if msg[0] == 1 else -1)
            if n > 0:
                subs[topic] = n
            else:
                subs.pop(topic, None)

    def _heard(self, topic: bytes) -> bool:
        return any(topic.startswith(t) for t in self._subscriptions)

    def emit(self, sensorId: str, data: Any, ttl: float | None = None) -> None:
        """Send a status update message.

        Parameters
        ----------
        sensorId : str
            Dot-separated prefix of the sensor, e.g. ``'system.foo'``.
        data : dict or list or scalar
            Updated values, nested as the tree continues below ``sensorId``:
            ``emit('system.foo', {'cpu': 0.3})`` is the partial tree
            ``{'system': {'foo': {'cpu': 0.3}}}``.
        ttl : float, optional
            Seconds after which the broker forgets this path (and stops giving it
            to new subscribers) unless it is sent again.
        """
        if not isinstance(sensorId, str) or not sensorId:
            raise ValueError("sensorId must be a non-empty dot-separated string")
        _check_path(sensorId, "sensorId")
        topic = PREFIX + sensorId.encode("utf-8")
        frames = [topic, _json.dumps(data)]
        if ttl is not None:
            if not ttl > 0 or ttl == float("inf"):
                raise ValueError(f"ttl must be a finite number of seconds > 0, got {ttl!r}")
            frames.append(_json.dumps({"ttl": float(ttl)}))
        with self._lock:
            self._take_subscriptions()
            if not self._subscriptions:
                # no broker has said it listens yet: at start-up, give it the time
                while True:
                    left = self._startup_until - time.monotonic()
                    if left <= 0 or self._subscriptions:
                        break
                    self._take_subscriptions(left)
            if not self._heard(topic):
                self.unheard += 1
                if self._was_heard:
                    self._was_heard = False
                    log.warning("status updates to %s are not reaching any broker (none "
                                "listens for %r): counted in RocStatusUpdater.unheard",
                                ", ".join(self.endpoints), sensorId)
                return
            self._was_heard = True
            try:
                self._sock.send_multipart(frames)  # (waits up to SNDTIMEO for room)
            except zmq.Again:
                self.dropped += 1
                now = time.monotonic()
                if now >= self._next_warning:
                    self._next_warning = now + 1.0
                    log.warning("a broker at %s has not read status updates for %.3g s: "
                                "%d dropped so far (RocStatusUpdater.dropped)",
                                ", ".join(self.endpoints),
                                self._sock.getsockopt(zmq.SNDTIMEO) / 1000, self.dropped)
                return
            self.sent += 1

    def close(self) -> None:
        """Close the socket (updates still queued get up to 0.2 s to leave)."""
        self._sock.close(linger=200)

    def __enter__(self) -> "RocStatusUpdater":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def statusUpdateIterator(source: Endpoints | str | None = None,
                         mask: str | Sequence[str] = "",
                         ctx: zmq.Context | None = None,
                         timeout: float | None = None, *, security: Any = None,
                         broker_key: bytes | None = None) -> Iterator[dict]:
    """Iterator over received status updates.

    Parameters
    ----------
    source : Endpoints or str or list or None
        :class:`Endpoints` (its ``generalXPUB``), a ZeroMQ endpoint, ``host[:baseport]``,
        or ``None`` for ``$CTLWIRE_ROC_BROKER`` / localhost:5555.  Several brokers (a
        primary and its standby): it subscribes at the first and moves to the next
        when that connection drops, starting again with that broker's snapshot.
    mask : str or list of str
        Prefix(es) of the subtree of interest, e.g. ``'system'`` or ``'system.foo'``.
    ctx : zmq.Context, optional
        ZeroMQ context to use.
    timeout : float, optional
        After this many seconds without an update, an empty status ``{}`` is yielded.
    security, broker_key : optional
        CURVE key pair of this subscriber and the broker's public key.

    Yields
    ------
    dict
        Partial trees rooted at the top, holding only what lies under the mask(s).
        Updates sent higher up the tree are cut down to the mask.  A ``rocbroker``
        sends the current tree under each mask first (a snapshot), then updates.

    Examples
    --------
    >>> for msg in statusUpdateIterator(ep, 'system', timeout=1.0):   # doctest: +SKIP
    ...     print(msg)
    """
    masks = [mask] if isinstance(mask, str) else list(mask)
    for m in masks:
        if m:
            _check_path(m, "mask")
    sock = make_socket(ctx, zmq.SUB)
    apply_client_trusting(security, sock, broker_key)
    monitor = None
    try:
        if "" in masks or not masks:
            sock.setsockopt(zmq.SUBSCRIBE, PREFIX)
            masks = [""]
        else:
            # ZeroMQ filters by byte prefix: subscribing to the first tree level also
            # brings updates sent above the mask; the exact filtering happens below
            for top in {m.split(".", 1)[0] for m in masks}:
                sock.setsockopt(zmq.SUBSCRIBE, PREFIX + top.encode("utf-8"))
        endpoints = resolve_all(source, "generalXPUB")
        current = endpoints[0]
        # with several brokers: follow the connection and move on when it drops
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED) \
            if len(endpoints) > 1 else None
        sock.connect(current)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        if monitor is not None:
            poller.register(monitor, zmq.POLLIN)
        wait_ms = -1 if timeout is None else max(int(timeout * 1000), 0)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None:
                wait_ms = max(int((deadline - time.monotonic()) * 1000), 0)
            ready = dict(poller.poll(None if wait_ms < 0 else wait_ms))
            if monitor is not None and monitor in ready:
                event = monitor.recv_multipart()
                if event[1].decode("utf-8", "replace") == current:
                    # the next broker's snapshot brings the current tree again
                    sock.disconnect(current)
                    current = endpoints[(endpoints.index(current) + 1) % len(endpoints)]
                    sock.connect(current)
            if sock not in ready:
                if deadline is not None and time.monotonic() >= deadline:
                    deadline = time.monotonic() + timeout  # type: ignore[operator]
                    yield {}
                continue
            frames = sock.recv_multipart()
            tree = _decode(frames, masks)
            if tree is not None:
                if timeout is not None:
                    deadline = time.monotonic() + timeout
                yield tree
    finally:
        if monitor is not None:
            sock.disable_monitor()
            monitor.close(0)
        sock.close(0)


def _decode(frames: list, masks: list[str]) -> dict | None:
    if len(frames) not in (2, 3) or not frames[0].startswith(PREFIX):
        return None  # not a status update: ignore rather than break the iterator
    try:
        sensor_id = frames[0][len(PREFIX):].decode("utf-8")
        data = _json.loads(frames[1])
    except (UnicodeDecodeError, _json.DecodeError):
        return None
    if not sensor_id and not isinstance(data, dict):
        return None  # the root (a whole-tree snapshot) must be a tree
    result: dict | None = None
    for m in masks:
        part = mask_update(sensor_id, data, m)
        if part is not None:
            result = part if result is None else merge_tree(result, part)
    return result
