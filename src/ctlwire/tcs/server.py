"""ZMQ based server to stream content, TCS-like event generators and a subscriber.

Drop-in for ``tcs_lib.server``: change the import to ``from ctlwire.tcs.server import
ZMQServer, TCSDBReplay, TCSMockEvent``.  Events travel as two UTF-8 frames
``[topic, json(event)]`` on a PUB socket.

May import: the compiled engine ``ctlwire.tcs._replay``, ``ctlwire.tcs.events``,
``ctlwire.tcs.transport`` (whose ``ZMQServer`` and ``TCSSubscriber`` it re-exports),
``ctlwire._json``, ``ctlwire._ext``.  Nothing that only publishes or subscribes should
import this module: it loads the engine.
"""
from __future__ import annotations

import gc
import json as _stdjson
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .. import _json
from .._ext import load_extension
from .events import MOCK_TOPIC, TCSDatabaseError, mock_event, open_database
from .transport import TCSSubscriber, ZMQServer, string_to_bytes

_replay = load_extension("ctlwire.tcs._replay")
_log = logging.getLogger("ctlwire.tcs")

__all__ = [
    "ZMQServer", "TCSDBReplay", "TCSMockEvent", "TCSSubscriber", "TCSDatabaseError",
    "ReplayStats", "Pacer", "string_to_bytes", "use_realtime_scheduling", "freeze_gc",
    "MOCK_TOPIC",
]

#: Counters of a replay pass (sent, filtered, skipped, lateness); see ``TCSDBReplay.stats``.
ReplayStats = _replay.ReplayStats

#: Default spin setting of the replay's pacing: None, adaptive (see ``Pacer``): the
#: wait sleeps, then spins a window that follows how late this thread's sleeps end, and
#: stops spinning for a while when the spinning thread is being preempted (a busy
#: machine). 0 always sleeps; a number of seconds is a fixed window (docs/tcs-ocd.md).
DEFAULT_SPIN = None

#: The pacing's wait (``Pacer(spin).wait_until(deadline, interrupt)``).
Pacer = _replay.Pacer

_SORT_ORDERS = {"none": 0, "__data_time": 1, "__wire_time": 2}


def use_realtime_scheduling(priority: int = 1) -> bool:
    """Put the calling thread under ``SCHED_FIFO`` at ``priority``, if allowed.

    Opt-in for paced replays on a busy machine: a real-time thread is woken at its
    deadline instead of waiting behind other runnable processes.  The replay sleeps
    between events, so it does not monopolise a core.  Threads started afterwards by
    this thread inherit the policy.  Returns False (and changes nothing) where the
    policy is unavailable or not permitted (needs CAP_SYS_NICE or an rtprio limit).
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError):
        return False
    return True


def freeze_gc() -> None:
    """Keep the garbage collector's full passes short in a process about to pace.

    A full collection walks every object the collector tracks, holding the GIL: in a
    process serving KATCP that was 8-23 ms, i.e. 200-500 events late at 20,000 per
    second, once per replay.  ``gc.freeze()`` puts what is alive now (the server, the
    modules) out of its reach, so later passes only walk what the replay made.
    Process-wide, so the library never calls it: ``tcs-replay`` and ``ctlwire-katcp
    replay`` do, once their servers are up.
    """
    gc.collect()
    gc.freeze()


def _encoder(json_compat: bool):
    return _stdjson.dumps if json_compat else _json.dumps


class TCSDBReplay:
    """Open a TCS sqlite3 database and return one event at a time, paced.

    Iterating yields ``[topic, json(event)]`` (two str) when an event's deadline has
    come, or ``None`` for an event whose topic is not accepted (no waiting for those).

    Parameters
    ----------
    db_name : str
        File containing the database.
    sort_by : {'none', '__data_time', '__wire_time'}, optional
        Replay order: event_id order, or by that attribute's numeric value (events
        without it last, ties by event_id).
    speedup : float, optional
        > 1 fast-forwards, < 1 slows down; ``float('inf')`` replays without waiting.
    topics : list of str, optional
        Accepted topic prefixes; None or ``[]`` accepts all.
    convert_number, convert_bool : bool, optional
        Convert values whose ``data_type`` is ``'number'`` to int or float and
        ``'boolean'`` ``"true"``/``"false"`` to True/False.  Fail-safe: a value that
        does not convert is left as text.
    json_compat : bool, optional
        Keyword only.  Encode with the standard library's ``json.dumps`` (byte-for-byte
        stdlib output) instead of the compact fast encoder.
    spin : float or None, optional
        Keyword only.  How each wait ends: None (default) adaptive, it sleeps and then
        spins a window that follows how late this thread's sleeps end (0 to 500 µs),
        and only sleeps for a while when the machine is busy enough to preempt the
        spinning; 0 always sleeps (1 µs timer slack on Linux); a number of seconds
        spins that fixed window before each deadline.

    Attributes
    ----------
    event_ids : iterator
        Event ids in replay order, filled by :meth:`_reset_iter`.
    start_wire_time, start_iter_time : float
        Wire time of the first event and wall time when the first event was returned;
        None until then.  :meth:`_reset_iter` unsets them.
    stats : ReplayStats
        Events sent, filtered and skipped, and the lateness against deadlines.
    errors : list of (event_id, reason)
        Corrupt events that were skipped (also logged as warnings).

    Raises
    ------
    TCSDatabaseError
        The file is missing, not sqlite, or lacks a table/column (named).
    ValueError
        Unknown ``sort_by`` or ``speedup`` not > 0.
    """

    def __init__(self, db_name: str, sort_by: str = "none", speedup: float = 1.0,
                 topics: Sequence[str] | str | None = None, convert_number: bool = False,
                 convert_bool: bool = False, *, json_compat: bool = False,
                 spin: float | None = DEFAULT_SPIN) -> None:
        if sort_by not in _SORT_ORDERS:
            raise ValueError(f"unknown sort_by {sort_by!r}: use one of "
                             f"{', '.join(repr(k) for k in _SORT_ORDERS)}")
        speedup = float(speedup)
        if not speedup > 0:  # also rejects NaN
            raise ValueError(f"speedup must be > 0, got {speedup!r}")
        if spin is not None and not float(spin) >= 0:  # also rejects NaN
            raise ValueError(f"spin must be >= 0 seconds or None, got {spin!r}")
        if isinstance(topics, str):
            topics = [topics]
        self._spin = None if spin is None else float(spin)
        self.db_name = str(db_name)
        self.sort_by = sort_by
        self.speedup = speedup
        self.topics = list(topics) if topics else []
        self.convert_number = bool(convert_number)
        self.convert_bool = bool(convert_bool)
        self.json_compat = json_compat
        self._conn = open_database(self.db_name)
        self._encode = _encoder(json_compat)
        self._replayer = None
        self.event_ids: Iterator[int] = iter(())
        self._reset_iter()

    # -- documented iteration -------------------------------------------------
    def _reset_iter(self) -> None:
        """Reset the status and allow restarting the iterations.

        Re-runs the event_id query (into :attr:`event_ids`), restarts the event query
        and unsets :attr:`start_wire_time` and :attr:`start_iter_time`.

        Raises
        ------
        ValueError
            If the ordering is not known.
        """
        if self.sort_by not in _SORT_ORDERS:
            raise ValueError(f"unknown sort_by {self.sort_by!r}")
        if self.sort_by == "none":
            # lazy: a night's database may hold millions of events
            ids = (r[0] for r in self._conn.execute(
                "SELECT event_id FROM event ORDER BY event_id"))
            order = None
        else:
            # bytes, not str: a value that is not valid UTF-8 must not stop the sort
            # (that event is reported and skipped by the replay itself)
            self._conn.text_factory = bytes
            try:
                rows = self._conn.execute(
                    "SELECT e.event_id, a.value FROM event e LEFT JOIN attribute a "
                    "ON a.event_id = e.event_id AND a.name = ?", (self.sort_by,)).fetchall()
            finally:
                self._conn.text_factory = str
            keyed = []
            for eid, value in rows:
                t = _replay.time_value(value)
                keyed.append((t is None, 0.0 if t is None else t, eid))
            keyed.sort()
            ids = [k[2] for k in keyed]
            # a recording is usually written in time order already: then event_id order
            # is the same order, and the engine reads it with two sequential scans
            # instead of a join through a temp table (2.2 instead of 5.8 µs per event)
            order = None if all(a < b for a, b in zip(ids, ids[1:])) else ids
        self.event_ids = iter(ids)
        if self._replayer is not None:
            self._replayer.close()
        self._replayer = _replay.Replayer(
            self.db_name, order, _SORT_ORDERS[self.sort_by], self.speedup, self.topics,
            self.convert_number, self.convert_bool, self._encode, self._spin)

    def __iter__(self) -> "TCSDBReplay":
        """Return the instance for use as iterator."""
        return self

    def __next__(self) -> list[str] | None:
        """Wait for the next event's deadline and return ``[topic, json(event)]``.

        Returns None if the event's topic is not accepted.
        """
        return self._replayer.next_message()

    next = __next__

    @property
    def start_wire_time(self) -> float | None:
        """Original ``__wire_time`` of the first event returned (None before it)."""
        return self._replayer.start_wire_time

    @start_wire_time.setter
    def start_wire_time(self, value: float | None) -> None:
        self._replayer.start_wire_time = value

    @property
    def start_iter_time(self) -> float | None:
        """Wall-clock time when the first event was returned (None before it)."""
        return self._replayer.start_iter_time

    @start_iter_time.setter
    def start_iter_time(self, value: float | None) -> None:
        self._replayer.start_iter_time = value

    @property
    def stats(self) -> "ReplayStats":
        """Counters of the current pass: sent, filtered, skipped, lateness."""
        return self._replayer.stats

    @property
    def errors(self) -> list[tuple[int, str]]:
        """Corrupt events skipped in this pass, as ``(event_id, reason)``."""
        return self._replayer.errors

    def _run_on(self, server: ZMQServer) -> int:
        """Send the rest of this pass on ``server`` with the compiled loop.

        Unpaced (``speedup=inf``) the sends wait for room (back-pressure: a
        subscriber that keeps reading gets every event); paced, an event refused by a
        full subscriber is counted in ``stats.dropped`` and the schedule goes on.
        """
        if math.isinf(self.speedup):
            before = self.stats.delivered
            try:
                return self._replayer.run(server.socket.send_multipart)
            finally:
                server.delivered += self.stats.delivered - before
        old = server.on_full
        server.on_full = "drop"
        try:
            return self._replayer.run(server.send_frames)
        finally:
            server.on_full = old

    def run_due(self, prepare: Callable[[str, dict[str, Any]], Any],
                deliver: Callable[[list[Any]], Any], limit: int = -1,
                interrupt: Any = None) -> int:
        """Pace the rest of this pass, handing events over in batches of those due.

        ``prepare(topic, event)`` turns each accepted event (times rewritten) into what
        is handed over, ahead of its deadline (None: nothing to hand over);
        ``deliver(items)`` gets every prepared item whose deadline has come, in order.
        Lateness (:attr:`stats`) runs from an event's deadline to when ``deliver``
        returned.  ``interrupt`` (e.g. a ``threading.Event``) ends the pass early when
        set (checked at least every 50 ms while waiting).  Returns the number of items
        delivered.
        """
        return self._replayer.run_due(prepare, deliver, limit, interrupt)

    def frames(self) -> Iterator[list[bytes]]:
        """Iterate accepted events as ``[topic, json]`` bytes frames (None skipped)."""
        nxt = self._replayer.next_frames
        while True:
            try:
                msg = nxt()
            except StopIteration:
                return
            if msg is not None:
                yield msg

    # -- documented helpers ---------------------------------------------------
    def _create_event(self, event_id: int | str) -> dict[str, Any]:
        """Create the dictionary representing the event with id ``event_id``.

        Conversions apply; times are not rewritten.

        Raises
        ------
        KeyError
            No such event.
        ValueError
            The event's rows are corrupt (the reason is named).
        """
        try:
            eid = int(event_id)
        except (TypeError, ValueError):
            raise KeyError(f"event_id must be an integer, got {event_id!r}") from None
        return self._replayer.read_one(eid)[1]

    def _convert_to_type(self, value: Any, type_: str) -> Any:
        """Try to convert ``value`` to the given type, if that conversion is enabled.

        Parameters
        ----------
        value : str
            Value to convert.
        type_ : str
            ``'number'``, ``'boolean'`` or ``'string'``; any other type is a string.

        Returns
        -------
        int, float, bool or str
        """
        if type_ == "number" and self.convert_number:
            return self._convert_to_number(value)
        if type_ == "boolean" and self.convert_bool:
            return self._convert_to_boolean(value)
        return value

    @staticmethod
    def _convert_to_number(value: Any) -> Any:
        """Convert to int or float, in that order; unchanged if neither works."""
        return _replay.convert_number(value)

    @staticmethod
    def _convert_to_boolean(value: Any) -> Any:
        """Convert ``"true"``/``"false"`` to True/False; unchanged otherwise."""
        return _replay.convert_bool(value)

    def _update_time(self, event_dict: dict[str, Any]) -> dict[str, Any]:
        """Rewrite ``__data_time`` and ``__wire_time`` as offsets from start_iter_time.

        Uses the replay's first event time and speedup (the iteration does the same
        in compiled code); before the first event, the event itself is the first.
        """
        start = self.start_iter_time
        t_first = self._replayer.t_first
        times = {k: _replay.time_value(event_dict.get(k)) for k in ("__data_time", "__wire_time")}
        if start is None:
            start = time.time()
        if t_first is None:
            key = self.sort_by if self.sort_by != "none" else (
                "__data_time" if times["__data_time"] is not None else "__wire_time")
            t_first = times.get(key)
        if t_first is None:
            return event_dict
        for k, t in times.items():
            if t is not None:
                off = 0.0 if math.isinf(self.speedup) else (t - t_first) / self.speedup
                event_dict[k] = start + off
        return event_dict

    def close(self) -> None:
        """Close the database handles."""
        if self._replayer is not None:
            self._replayer.close()
        self._conn.close()

    def __enter__(self) -> "TCSDBReplay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TCSMockEvent:
    """Iterator that always returns a mock ``lrs2.hardware.status`` event.

    Parameters
    ----------
    sleep : float, optional
        Seconds between events (absolute deadlines, so the rate does not drift);
        the first event is returned at once.
    """

    def __init__(self, sleep: float = 1) -> None:
        if sleep < 0:
            raise ValueError(f"sleep must be >= 0, got {sleep!r}")
        self.sleep = float(sleep)
        self._next_at: float | None = None

    def __iter__(self) -> "TCSMockEvent":
        """Return the instance for use as iterator."""
        return self

    def __next__(self) -> list[str]:
        """Return ``[topic, json(event)]`` after the pause; never stops."""
        now = time.monotonic()
        if self._next_at is None:
            self._next_at = now
        elif self._next_at > now:
            time.sleep(self._next_at - now)
        self._next_at += self.sleep
        topic, event = mock_event()
        return [topic, _json.dumps(event).decode("utf-8")]

    next = __next__
