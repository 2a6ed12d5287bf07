"""A replay you can steer: several databases on one clock, a time window, gap
shortening, and pause/resume/speed/seek/step from another thread.

:class:`SteeredReplay` reads each database with the compiled engine
(``Replayer.read_next``: rows to event dicts, no pacing), merges them in time order,
and paces with the engine's wait (``wait_until``: absolute monotonic deadlines, 1 µs
timer slack).  All the work for an event is done before its wait, so at the deadline
it is only handed to the socket; the control thread only sets flags the pacing
thread reads between events (and every 50 ms of a long wait).

Times: an event's time is the sort key when sorting, else ``__data_time``, else
``__wire_time``; an event without one keeps its place right after the previous event
of its database.  Times are replayed relative to an anchor that pause, resume,
set-speedup and seek move, and ``__data_time``/``__wire_time`` are rewritten to the
wall-clock time each event is due (the same rule as :class:`TCSDBReplay`).

May import: ``ctlwire.tcs.server`` (engine, encoders), ``ctlwire.tcs.events``, the
standard library.  No sockets: the caller hands in a ``send(frames) -> bool``.
"""
from __future__ import annotations

import heapq
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .server import DEFAULT_SPIN, TCSDBReplay, _encoder, _replay

__all__ = ["SteeredReplay", "parse_time", "ReplayDatabaseError"]

INF = float("inf")
ReplayDatabaseError = _replay.ReplayDatabaseError


def parse_time(text: str) -> tuple[str, float]:
    """Read ``--start``/``--end``/``?seek``: ``+SECONDS`` from the first event, an ISO 8601
    time, or Unix seconds.  Returns ``('rel', s)`` or ``('abs', unix_seconds)``.

    Raises
    ------
    ValueError
        Saying what was expected.
    """
    text = text.strip()
    if text.startswith("+"):
        try:
            v = float(text[1:])
        except ValueError:
            raise ValueError(f"not +SECONDS: {text!r}") from None
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"+SECONDS must be finite and >= 0, got {text!r}")
        return ("rel", v)
    try:
        v = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(v):
            raise ValueError(f"time must be finite, got {text!r}")
        return ("abs", v)
    from datetime import datetime, timezone
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time, +SECONDS or Unix seconds: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)  # telescope logs are in UTC
    return ("abs", dt.timestamp())


def _session_starts(path: str) -> set[int]:
    """First event ids of the 2nd, 3rd ... recording sessions of a database."""
    from urllib.parse import quote
    import os
    uri = "file:" + quote(os.path.abspath(path), safe="/") + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            rows = conn.execute("SELECT first_event_id FROM ctlwire_session "
                                "ORDER BY session").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return set()
    return {r[0] for r in rows[1:]}


def has_sessions(path: str) -> bool:
    """Whether the database was recorded over several sessions (appended to)."""
    return bool(_session_starts(path))


class _Stream:
    """One database: the engine plus the time of its head event."""

    __slots__ = ("replay", "rep", "key", "last_t", "sessions", "count", "path")

    def __init__(self, path: str, sort_by: str, topics, convert_number, convert_bool,
                 json_compat) -> None:
        self.path = path
        self.replay = TCSDBReplay(path, sort_by=sort_by, speedup=INF, topics=topics,
                                  convert_number=convert_number,
                                  convert_bool=convert_bool, json_compat=json_compat)
        self.rep = self.replay._replayer
        self.key = {"none": 0, "__data_time": 1, "__wire_time": 2}[sort_by]
        self.last_t = -INF
        self.sessions = _session_starts(path)
        try:
            self.count = self.replay._conn.execute("SELECT count(*) FROM event").fetchone()[0]
        except sqlite3.DatabaseError:
            # damaged: the replay still sends what comes before the damage, then says so
            self.count = 0

    def next(self):
        """(t, record) of the next accepted event, or None at the end."""
        r = self.rep.read_next()
        if r is None:
            return None
        have = r[5]
        if self.key == 1:
            t = r[3] if have & 1 else None
        elif self.key == 2:
            t = r[4] if have & 2 else None
        elif have & 1:
            t = r[3]
        elif have & 2:
            t = r[4]
        else:
            t = None
        if t is None:
            t = self.last_t  # keeps its place after the previous event
        else:
            self.last_t = t
        return t, r

    def restart(self) -> None:
        self.rep.reset()
        self.last_t = -INF


class SteeredReplay:
    """Replay one or more TCS databases as one night, steerable while it runs.

    Parameters
    ----------
    paths : list of str
        Databases, merged in time order (ties: the order given).
    sort_by, topics, convert_number, convert_bool, json_compat, spin
        As :class:`~ctlwire.tcs.server.TCSDBReplay`.
    speedup : float
        > 0; ``inf`` for as fast as possible.
    start, end : str, optional
        Window: ``+SECONDS`` from the first event, an ISO 8601 time or Unix seconds;
        events outside ``[start, end]`` are not sent.
    max_gap : float, optional
        Idle gaps longer than this (telescope seconds) are shortened to it.  Gaps at
        the start of an appended recording session are removed in any case.

    Attributes
    ----------
    stats : ReplayStats
        sent (= delivered + dropped), filtered, skipped, lateness.
    state : str
        ``'waiting'``, ``'running'``, ``'paused'`` or ``'done'``.
    telescope_time : float or None
        Original time of the last event sent.
    consumed : int
        Events read so far in this pass (sent, filtered, skipped or outside the window).
    total : int
        Events in all the databases.
    outside : int
        Events not sent because they lie outside the window.
    """

    def __init__(self, paths: Sequence[str], *, sort_by: str = "none", speedup: float = 1.0,
                 topics: Sequence[str] | None = None, convert_number: bool = False,
                 convert_bool: bool = False, json_compat: bool = False,
                 spin: float | None = DEFAULT_SPIN,
                 start: str | None = None, end: str | None = None,
                 max_gap: float | None = None) -> None:
        speedup = float(speedup)
        if not speedup > 0:
            raise ValueError(f"speedup must be > 0, got {speedup!r}")
        if max_gap is not None and not (max_gap >= 0 and math.isfinite(max_gap)):
            raise ValueError(f"max_gap must be finite and >= 0, got {max_gap!r}")
        if not paths:
            raise ValueError("no database given")
        self.paths = [str(p) for p in paths]
        self.streams: list[_Stream] = []
        try:
            for p in self.paths:
                self.streams.append(_Stream(p, sort_by, topics, convert_number,
                                            convert_bool, json_compat))
        except BaseException:
            self.close()
            raise
        self.speedup = speedup
        self.pacer = _replay.Pacer(spin)
        self.max_gap = max_gap
        self._start_spec = parse_time(start) if start is not None else None
        self._end_spec = parse_time(end) if end is not None else None
        self._encode = _encoder(json_compat)
        self.stats = _replay.ReplayStats()
        self.total = sum(s.count for s in self.streams)
        self._state = "waiting"
        self.telescope_time: float | None = None
        self.consumed = 0
        self.outside = 0
        self.first_time: float | None = None
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.rate_log: list[tuple[float, int]] = []  # (telescope time, events) per second
        self._topic_bytes: dict[str, bytes] = {}
        # control, set by other threads and read by the pacing thread between events
        self._lock = threading.Lock()
        self._interrupt = threading.Event()
        self._commands: list[tuple[str, Any, threading.Event, list]] = []
        self._paused = False
        self._heads: list = []
        self.last_sent: tuple[str, int] | None = None
        self._resolve_window()

    # -- control (any thread) ---------------------------------------------------------
    def _command(self, what: str, arg: Any = None, timeout: float = 5.0) -> Any:
        done = threading.Event()
        result: list = []
        with self._lock:
            if self._state == "done":
                raise RuntimeError("the replay has finished")
            if self._state == "waiting":
                return self._before_start(what, arg)
            self._commands.append((what, arg, done, result))
            self._interrupt.set()
        if not done.wait(timeout):
            raise TimeoutError(f"the replay did not take {what!r} within {timeout:g} s")
        if result and isinstance(result[0], BaseException):
            raise result[0]
        return result[0] if result else None

    @property
    def state(self) -> str:
        """``'waiting'`` (not started), ``'running'``, ``'paused'`` or ``'done'``."""
        if self._paused and self._state != "done":
            return "paused"
        return self._state

    def _before_start(self, what: str, arg: Any) -> Any:
        """A command given before :meth:`run` (e.g. while waiting for a subscriber)."""
        if what == "pause":
            self._paused = True
        elif what == "resume":
            self._paused = False
        elif what == "speedup":
            self.speedup = arg
        elif what == "seek":
            self.start_time = self._resolve(arg)
            return self.start_time
        elif what == "step":
            raise RuntimeError("the replay has not started yet")
        return None

    def pause(self) -> None:
        """Stop sending; returns once the pacing thread has stopped (nothing is sent
        after it returns until :meth:`resume` or :meth:`step`)."""
        self._command("pause")

    def resume(self) -> None:
        """Go on from where the replay was paused, at the current speed."""
        self._command("resume")

    def set_speedup(self, speedup: float) -> None:
        """Change the speed from now on (> 0; ``inf`` for no waiting)."""
        speedup = float(speedup)
        if not speedup > 0:
            raise ValueError(f"speedup must be > 0, got {speedup!r}")
        self._command("speedup", speedup)

    def seek(self, when: str | float) -> float | None:
        """Jump to the first event at or after ``when`` (as ``start``); returns its time
        (None when no event is left)."""
        spec = parse_time(when) if isinstance(when, str) else ("abs", float(when))
        return self._command("seek", spec, timeout=60.0)

    def step(self, n: int = 1) -> int:
        """Send the next ``n`` events at once (while paused); returns how many were sent."""
        if n < 1:
            raise ValueError(f"step needs n >= 1, got {n!r}")
        return self._command("step", int(n), timeout=60.0)

    @property
    def fraction_done(self) -> float:
        """Share of all events read so far (0..1)."""
        return self.consumed / self.total if self.total else 1.0

    # -- window ---------------------------------------------------------------------
    def _first_time(self) -> float | None:
        best = None
        for s in self.streams:
            got = s.next()
            if got is not None and got[0] != -INF and (best is None or got[0] < best):
                best = got[0]
            s.restart()
        return best

    def _resolve(self, spec) -> float | None:
        if spec is None:
            return None
        kind, v = spec
        if kind == "abs":
            return v
        return (self.first_time if self.first_time is not None else 0.0) + v

    def _resolve_window(self) -> None:
        try:
            self.first_time = self._first_time()
        except ReplayDatabaseError:
            self.first_time = None  # reported when the replay reaches it
        self.start_time = self._resolve(self._start_spec)
        self.end_time = self._resolve(self._end_spec)
        if (self.start_time is not None and self.end_time is not None
                and self.end_time < self.start_time):
            raise ValueError(f"the window ends ({self.end_time}) before it starts "
                             f"({self.start_time})")

    # -- the pacing thread --------------------------------------------------------------
    def _fill(self, skip_before: float | None) -> None:
        """Read every stream's head (passing over events before ``skip_before``)."""
        self._heads = []
        for i, s in enumerate(self.streams):
            self._push(i, skip_before)

    def _push(self, i: int, skip_before: float | None = None) -> None:
        s = self.streams[i]
        while True:
            got = s.next()
            if got is None:
                return
            self.consumed += 1
            if skip_before is not None and got[0] < skip_before:
                self.outside += 1
                continue
            heapq.heappush(self._heads, (got[0], i, got[1]))
            return

    def _restart(self, at: float | None) -> None:
        for s in self.streams:
            s.restart()
        self.consumed = 0
        self.outside = 0
        self._fill(at)

    def run(self, send: Callable[[list[bytes]], Any], loop: bool = False) -> int:
        """Send every event of the window with ``send([topic, json])``.

        ``send`` returning False counts the event as dropped.  Returns the number of
        events sent.  :class:`ReplayDatabaseError` ends the replay at a damaged page
        (:attr:`last_good` says after which event).
        """
        stats = self.stats
        wait_until = self.pacer.wait_until
        mono = _replay.monotonic
        encode = self._encode
        interrupt = self._interrupt
        with self._lock:
            self._state = "running"
        self._restart(self.start_time)
        shift = 0.0
        prev: float | None = None
        anchor_mono = anchor_wall = anchor_tt = None
        speed = self.speedup
        max_gap = self.max_gap
        end = self.end_time
        sent = 0
        rate_sec = None
        rate_n = 0
        try:
            while True:
                if interrupt.is_set() or self._paused:
                    shift_reset, anchor = self._handle(prev, anchor_mono, anchor_tt, speed,
                                                       shift, send)
                    speed = self.speedup
                    if shift_reset:
                        shift, prev = 0.0, None
                        anchor_mono = anchor_wall = anchor_tt = None
                    elif anchor is not None:
                        anchor_mono, anchor_wall, anchor_tt = anchor
                    sent = stats.sent
                    continue
                if not self._heads:
                    if loop and sent:
                        self._restart(self.start_time)
                        shift, prev = 0.0, None
                        anchor_mono = anchor_wall = anchor_tt = None
                        continue
                    break
                t, i, r = self._heads[0]
                if end is not None and t > end:
                    heapq.heappop(self._heads)
                    self.outside += 1
                    self._push(i)
                    continue
                # the time this event is replayed at, gaps shortened
                tp = t - shift
                if prev is not None and t != -INF:
                    cap = max_gap
                    if r[0] in self.streams[i].sessions:
                        cap = 0.0
                    if cap is not None and tp - prev > cap:
                        shift += tp - prev - cap
                        tp = prev + cap
                if anchor_mono is None:
                    anchor_mono, anchor_wall = mono(), time.time()
                    anchor_tt = tp
                if speed == INF or t == -INF:
                    deadline = None
                else:
                    deadline = anchor_mono + (tp - anchor_tt) / speed
                event = r[2]
                have = r[5]
                if have & 1:
                    event["__data_time"] = anchor_wall + ((r[3] - shift - anchor_tt) / speed
                                                          if speed != INF else 0.0)
                if have & 2:
                    event["__wire_time"] = anchor_wall + ((r[4] - shift - anchor_tt) / speed
                                                          if speed != INF else 0.0)
                topic = r[1]
                tb = self._topic_bytes.get(topic)
                if tb is None:
                    tb = topic.encode("utf-8")
                    self._topic_bytes[topic] = tb
                payload = encode(event)
                if type(payload) is not bytes:
                    payload = payload.encode("utf-8")
                if deadline is not None:
                    if not wait_until(deadline, interrupt):
                        continue  # a command came first; this event is still the head
                    stats.record(mono() - deadline)
                heapq.heappop(self._heads)
                stats.sent += 1
                if send([tb, payload]) is False:
                    stats.dropped += 1
                else:
                    stats.delivered += 1
                sent += 1
                self.last_sent = (self.streams[i].path, r[0])
                if t != -INF:
                    prev = tp if prev is None else max(prev, tp)
                    self.telescope_time = t
                    sec = math.floor(t)
                    if sec != rate_sec:
                        if rate_sec is not None:
                            self.rate_log.append((rate_sec, rate_n))
                        rate_sec, rate_n = sec, 0
                    rate_n += 1
                self._push(i)
        finally:
            if rate_sec is not None:
                self.rate_log.append((rate_sec, rate_n))
            self.sync_counts()
            with self._lock:
                self._state = "done"
                pending, self._commands = self._commands, []
            for what, _arg, done, result in pending:
                result.append(RuntimeError("the replay has finished"))
                done.set()
        return stats.sent

    def sync_counts(self) -> None:
        """Bring ``stats.filtered``/``skipped`` and :attr:`errors` up to date."""
        self.stats.filtered = sum(s.rep.stats.filtered for s in self.streams)
        self.stats.skipped = sum(s.rep.stats.skipped for s in self.streams)

    @property
    def errors(self) -> list[tuple[str, int, str]]:
        """Corrupt events passed over: ``(database, event_id, reason)``."""
        return [(s.path, eid, why) for s in self.streams for eid, why in s.rep.errors]

    def _handle(self, prev, anchor_mono, anchor_tt, speed, shift, send):
        """Run the queued commands in the pacing thread; block while paused.

        Returns ``(restart_clock, anchor)``: the new anchor ``(mono, wall, tt)``.
        """
        mono = _replay.monotonic
        restart = False
        # where the replay stands now, in replayed telescope time
        if anchor_mono is None or prev is None:
            tt_now = None
        elif speed == INF:
            tt_now = prev
        else:
            tt_now = anchor_tt + (mono() - anchor_mono) * speed
        while True:
            with self._lock:
                cmds, self._commands = self._commands, []
                self._interrupt.clear()
            for what, arg, done, result in cmds:
                try:
                    if what == "pause":
                        self._paused = True
                        pass  # the state property says paused
                        result.append(True)
                    elif what == "resume":
                        self._paused = False
                        self._state = "running"
                        result.append(True)
                    elif what == "speedup":
                        self.speedup = arg
                        result.append(arg)
                    elif what == "seek":
                        at = self._resolve(arg)
                        self._restart(at)
                        restart = True
                        result.append(self._heads[0][0] if self._heads else None)
                    elif what == "step":
                        result.append(self._step(arg, send))
                        if self.telescope_time is not None:
                            tt_now = self.telescope_time - shift
                except BaseException as exc:  # reported to the caller, replay goes on
                    result.append(exc)
                done.set()
            if not self._paused:
                break
            self._interrupt.wait(0.5)
        if restart or tt_now is None:
            return True, None
        return False, (mono(), time.time(), tt_now)

    def _step(self, n: int, send) -> int:
        """Send the next ``n`` events without waiting (times rewritten to now)."""
        done = 0
        stats = self.stats
        encode = self._encode
        end = self.end_time
        while done < n and self._heads:
            t, i, r = heapq.heappop(self._heads)
            if end is not None and t > end:
                self.outside += 1
                self._push(i)
                continue
            now = time.time()
            event = r[2]
            if r[5] & 1:
                event["__data_time"] = now
            if r[5] & 2:
                event["__wire_time"] = now
            payload = encode(event)
            if type(payload) is not bytes:
                payload = payload.encode("utf-8")
            stats.sent += 1
            if send([r[1].encode("utf-8"), payload]) is False:
                stats.dropped += 1
            else:
                stats.delivered += 1
            if t != -INF:
                self.telescope_time = t
            self.last_sent = (self.streams[i].path, r[0])
            done += 1
            self._push(i)
        return done

    def close(self) -> None:
        """Close the databases."""
        for s in self.streams:
            s.replay.close()

    def __enter__(self) -> "SteeredReplay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
