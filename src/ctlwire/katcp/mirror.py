"""The state of a mirrored KATCP device, without I/O: what a client knows of a server.

A :class:`DeviceMirror` learns a device's sensors from ``?sensor-list`` informs and
(optionally) its requests from ``?help`` informs, applies ``#sensor-status`` and
``#interface-changed``, keeps which sensors someone is interested in and which the
device has been asked to sample, and says what the client should do next
(:meth:`DeviceMirror.next_action`) to get back in sync. The caller does the requests,
on any transport and in any concurrency model (asyncio, threads), and reports the
results back; nothing here blocks, sleeps or touches a socket.

It serves ``ctlwire.aiokatcp``'s ``SensorWatcher`` and is meant for the
katcp-python-style inspecting clients too.

Lifecycle::

    DISCONNECTED --connected()--> SYNCING --next_action() is None--> SYNCED
         ^                           ^  |                              |
         +------disconnected()-------+--+----interface_changed()-------+
    close() --> CLOSED (from any state)

The batch methods (``sensor_list_informs``, ``sensor_status_informs``, ``watch_many``)
run their per-sensor loops compiled (``_mirror_ops.pyx``); the one-at-a-time methods
they stand for (``sensor_list``, ``sensor_status``, ``watch``) are the pure-Python
reference they are tested against.

Layering: the API-pieces layer (3) of ``ctlwire.katcp``, pure state like ``sensor``;
imports the standard library and its compiled loops (``_mirror_ops``) only.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from functools import partial
from typing import (Callable, Dict, Hashable, Iterable, List, NamedTuple, Optional,
                    Sequence, Set, Tuple)

from ctlwire._ext import load_extension

# the per-sensor loops of the batch methods (a sync's thousand informs), compiled
_ops = load_extension("ctlwire.katcp._mirror_ops")

__all__ = ["SyncState", "SensorInfo", "SensorReading", "MirroredSensor", "ListChange",
           "Action", "DeviceMirror", "Subscribed"]


class SyncState(enum.Enum):
    """How far the mirror is in step with the device."""

    DISCONNECTED = 1
    SYNCING = 2
    SYNCED = 3
    CLOSED = 4


class Subscribed(enum.Enum):
    """Whether the device is known to sample a sensor for this client."""

    NO = 0
    YES = 1
    UNKNOWN = 2


# Named tuples, not frozen dataclasses: a sync makes one of each per sensor, and a
# named tuple is made several times faster.
class SensorInfo(NamedTuple):
    """The static description of a sensor, as ``#sensor-list`` gives it."""

    name: str
    description: str
    units: str
    type_name: str
    params: Tuple[bytes, ...] = ()


class SensorReading(NamedTuple):
    """A reading as received: ``status`` is the status word (``nominal``...), ``value``
    the raw (unescaped) value bytes."""

    timestamp: float
    status: str
    value: bytes


#: One sensor of the device as the mirror knows it: ``info`` (:class:`SensorInfo`),
#: ``reading`` (the latest :class:`SensorReading`, or ``None``), ``subscribed``
#: (:class:`Subscribed`: whether the device is known to sample it for this client) and
#: ``watchers`` (who wants its updates, a dict used as an ordered set). Made as
#: ``MirroredSensor(info, reading=None, subscribed=Subscribed.NO, watchers=None)``; an
#: extension type (``_mirror_ops``) so that a sync's compiled loops make and update
#: one per sensor without attribute lookups.
MirroredSensor = _ops.MirroredSensor
_ops.set_default_subscribed(Subscribed.NO)


# status words as they come on the wire -> as the mirror keeps them
_STATUS_WORDS = {w.encode(): w for w in ("unknown", "nominal", "warn", "error", "failure",
                                           "unreachable", "inactive")}


@dataclass
class ListChange:
    """What a new list (of sensors or requests) changed: names added, whose
    description changed (old, new), and removed."""

    added: List = field(default_factory=list)
    changed: List[Tuple] = field(default_factory=list)
    removed: List = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


@dataclass(frozen=True)
class Action:
    """A request the client should make next.

    ``kind`` is ``"sensor-list"``, ``"help"`` or ``"sample"``; for ``"sample"``,
    ``names`` (sorted) and ``strategy`` (``"auto"`` or ``"none"``) say what to set.
    """

    kind: str
    names: Tuple[str, ...] = ()
    strategy: str = ""


class DeviceMirror:
    """What a client knows of a device's sensors (and requests), kept in sync.

    Parameters
    ----------
    track_requests : bool
        Also learn the requests from ``?help`` (an inspecting client does; a sensor
        watcher does not need to).
    on_state : callable, optional
        Called with the new :class:`SyncState` on every change of state.

    Notes
    -----
    The driver loop is::

        mirror.connected()
        while (action := mirror.next_action()) is not None:
            ...do the request...; then mirror.sensor_list(...) / mirror.help(...) /
            mirror.sampling_done(names, strategy, ok)

    and, as messages arrive, :meth:`sensor_status`, :meth:`interface_changed`,
    :meth:`disconnected`. When :meth:`next_action` returns ``None`` the state is
    ``SYNCED``.
    """

    def __init__(self, *, track_requests: bool = False,
                 on_state: Optional[Callable[[SyncState], None]] = None) -> None:
        self.track_requests = track_requests
        self.on_state = on_state
        self.state = SyncState.DISCONNECTED
        self.sensors: Dict[str, MirroredSensor] = {}
        self.requests: Dict[str, str] = {}
        self._need_sensor_list = False
        self._need_help = False
        # sensors whose wanted and actual sampling differ
        self._need_sampling: Set[str] = set()
        # a sensor-list reply in flight when the interface changed is already stale
        self._list_generation = 0

    # -- state ------------------------------------------------------------------------------
    def _set_state(self, state: SyncState) -> None:
        if state is not self.state:
            self.state = state
            if self.on_state is not None:
                self.on_state(state)

    def _want_sync(self) -> None:
        if self.state is SyncState.SYNCED:
            self._set_state(SyncState.SYNCING)

    def connected(self) -> None:
        """A (new) connection is up: everything is to be learnt again."""
        if self.state is SyncState.CLOSED:
            return
        for s in self.sensors.values():
            s.subscribed = Subscribed.NO
            s.reading = None
            self._check_sampling(s)
        self._need_sensor_list = True
        self._need_help = self.track_requests
        self._list_generation += 1
        self._set_state(SyncState.SYNCING)

    def disconnected(self) -> None:
        """The connection is gone."""
        if self.state is not SyncState.CLOSED:
            self._set_state(SyncState.DISCONNECTED)

    def close(self) -> None:
        """Stop mirroring; the mirror forgets every sensor."""
        self._set_state(SyncState.CLOSED)
        self.sensors.clear()
        self.requests.clear()
        self._need_sampling.clear()

    # -- what to do next ------------------------------------------------------------------------
    def next_action(self) -> Optional[Action]:
        """The next request that brings the mirror in sync, or ``None`` when it is.

        While disconnected or closed there is nothing to do (``None``).
        """
        if self.state in (SyncState.DISCONNECTED, SyncState.CLOSED):
            return None
        if self._need_sensor_list:
            return Action("sensor-list")
        if self._need_help:
            return Action("help")
        add: List[str] = []
        remove: List[str] = []
        if self._need_sampling:
            sensors = self.sensors
            yes, no = Subscribed.YES, Subscribed.NO
            for n in self._need_sampling:
                s = sensors[n]
                if s.watchers:
                    if s.subscribed is not yes:
                        add.append(n)
                elif s.subscribed is not no:
                    remove.append(n)
        if add:
            return Action("sample", tuple(sorted(add)), "auto")
        if remove:
            return Action("sample", tuple(sorted(remove)), "none")
        self._set_state(SyncState.SYNCED)
        return None

    @property
    def list_generation(self) -> int:
        """Changes when the interface does: pass the value read before a
        ``?sensor-list`` to :meth:`sensor_list`, so that a list that was in flight when
        the interface changed is followed by a fresh one."""
        return self._list_generation

    # -- results of requests --------------------------------------------------------------------
    def sensor_list(self, entries: Iterable[SensorInfo],
                    generation: Optional[int] = None) -> ListChange:
        """Apply a complete ``?sensor-list`` (one :class:`SensorInfo` per inform).

        Returns what changed: :class:`SensorInfo` added, ``(old, new)`` changed, and
        removed. A sensor whose description changed keeps its watchers; whether the
        device still samples it is then unknown, so it is set again.
        """
        change = ListChange()
        if self.state is SyncState.CLOSED:
            return change
        # A list asked for before the last #interface-changed is applied (it is newer
        # than what the mirror holds) but another is asked for.
        if generation is None or generation == self._list_generation:
            self._need_sensor_list = False
        sensors = self.sensors
        seen: Set[str] = set()
        for info in entries:
            seen.add(info.name)
            old = sensors.get(info.name)
            if old is None:
                sensors[info.name] = MirroredSensor(info)
                change.added.append(info)
            elif old.info != info:
                self._info_changed(change.changed, old, info)
        if len(seen) < len(sensors):
            self._remove_unseen(seen, change)
        return change

    def sensor_list_informs(self, informs: Iterable[Sequence[bytes]],
                            generation: Optional[int] = None
                            ) -> Tuple[ListChange, List[Sequence[bytes]]]:
        """:meth:`sensor_list` from the ``#sensor-list`` informs' arguments (``name
        description units type params...``, as bytes; text that is not UTF-8 is decoded
        with replacement characters).

        Returns what changed, and the informs too short to describe a sensor (which are
        left out).
        """
        bad: List[Sequence[bytes]] = []
        change = ListChange()
        if self.state is SyncState.CLOSED:
            return change, bad
        if generation is None or generation == self._list_generation:
            self._need_sensor_list = False
        sensors = self.sensors
        seen: Set[str] = set()
        _ops.merge_sensor_list_informs(informs, sensors, bad, change.added, seen,
                                       SensorInfo, Subscribed.NO,
                                       partial(self._info_changed, change.changed))
        if len(seen) < len(sensors):
            self._remove_unseen(seen, change)
        return change, bad

    def _info_changed(self, changed: list, old: MirroredSensor, info: SensorInfo) -> None:
        changed.append((old.info, info))
        old.info = info
        old.reading = None
        old.subscribed = Subscribed.UNKNOWN
        self._check_sampling(old)

    def _remove_unseen(self, seen: Set[str], change: ListChange) -> None:
        sensors = self.sensors
        for name in [n for n in sensors if n not in seen]:
            s = sensors.pop(name)
            self._need_sampling.discard(name)
            change.removed.append(s.info)

    def sensor_list_failed(self) -> None:
        """The ``?sensor-list`` failed: it is asked for again."""
        self._need_sensor_list = True

    def help(self, entries: Iterable[Tuple[str, str]]) -> ListChange:
        """Apply a complete ``?help`` (``(name, description)`` per inform)."""
        change = ListChange()
        self._need_help = False
        seen: Set[str] = set()
        for name, description in entries:
            seen.add(name)
            old = self.requests.get(name)
            if old is None:
                change.added.append(name)
            elif old != description:
                change.changed.append((name, description))
            self.requests[name] = description
        for name in [n for n in self.requests if n not in seen]:
            del self.requests[name]
            change.removed.append(name)
        return change

    def sampling_done(self, names: Sequence[str], strategy: str, ok: bool = True) -> None:
        """The device was asked to sample ``names`` with ``strategy``.

        Whether or not it succeeded, the sensors count as (un)subscribed: a failure
        usually means the sensor vanished, which the next ``?sensor-list`` settles,
        and asking again at once would only fail again.
        """
        state = Subscribed.NO if strategy == "none" else Subscribed.YES
        sensors = self.sensors
        need = self._need_sampling
        for name in names:
            s = sensors.get(name)
            if s is not None:
                s.subscribed = state
                if state is Subscribed.YES and s.watchers:
                    need.discard(name)  # (_check_sampling's usual case, inline)
                else:
                    self._check_sampling(s)

    # -- asynchronous informs ---------------------------------------------------------------------
    def interface_changed(self, *args: bytes) -> None:
        """``#interface-changed [what...]``: relearn the sensors (and requests)."""
        self._list_generation += 1
        kinds = {a.split(b" ")[0] for a in args}
        if not kinds or b"sensor-list" in kinds or not (kinds & {b"request-list"}):
            self._need_sensor_list = True
        if self.track_requests and (not kinds or b"request-list" in kinds):
            self._need_help = True
        if self.state is SyncState.SYNCED:
            self._set_state(SyncState.SYNCING)

    def sensor_status(self, timestamp: float, name: str, status: str,
                      value: bytes) -> Optional[MirroredSensor]:
        """Apply one sensor's part of ``#sensor-status``; returns the sensor, or
        ``None`` for a sensor the mirror does not know."""
        s = self.sensors.get(name)
        if s is None:
            return None
        s.reading = SensorReading(timestamp, status, value)
        if s.subscribed is not Subscribed.YES:
            # the device is evidently sampling it
            s.subscribed = Subscribed.YES
            self._check_sampling(s)
        return s

    def sensor_status_informs(self, informs: Iterable[Sequence[bytes]],
                              updated: Optional[List[Tuple[MirroredSensor,
                                                           SensorReading]]] = None
                              ) -> List[Sequence[bytes]]:
        """Apply many ``#sensor-status`` informs at once, given their arguments
        (``timestamp count name status value ...``, as bytes).

        The same as :meth:`sensor_status` for every reading in them, for the bursts a
        sync brings (one reading per sensor). With ``updated``, ``(sensor, reading)`` of
        every reading of a sensor the mirror knows is appended to it, in order. Returns
        the informs that could not be read.
        """
        bad: List[Sequence[bytes]] = []
        _ops.apply_status_informs(informs, self.sensors, self._need_sampling, updated, bad,
                                  SensorReading, _STATUS_WORDS, Subscribed.YES,
                                  self._check_sampling)
        return bad

    # -- interest ----------------------------------------------------------------------------------
    def watch_many(self, names: Iterable[str], watcher: Hashable) -> None:
        """:meth:`watch` for many sensors at once."""
        if _ops.watch_many(self.sensors, names, watcher, self._need_sampling,
                           Subscribed.YES):
            self._want_sync()

    def watch(self, name: str, watcher: Hashable) -> None:
        """Say ``watcher`` wants updates of sensor ``name`` (it is then sampled)."""
        s = self.sensors[name]
        if watcher not in s.watchers:
            s.watchers[watcher] = None
            self._check_sampling(s)

    def unwatch(self, name: str, watcher: Hashable) -> None:
        """Withdraw ``watcher``'s interest (sampling stops when nobody is left)."""
        s = self.sensors.get(name)
        if s is not None and watcher in s.watchers:
            del s.watchers[watcher]
            self._check_sampling(s)

    def _check_sampling(self, s: MirroredSensor) -> None:
        if s.subscribed is Subscribed.YES:
            need = not s.watchers
        elif s.subscribed is Subscribed.NO:
            need = bool(s.watchers)
            s.reading = None
        else:
            need = True
            s.reading = None
        name = s.info.name
        if need:
            self._need_sampling.add(name)
            self._want_sync()
        else:
            self._need_sampling.discard(name)
