"""Recording a KATCP device into a TCS event database, and serving the recording again.

:class:`DeviceRecorder` samples a device's sensors (``auto``: every update) and writes its
sensor descriptions, every ``#sensor-status`` reading and every ``#log`` message as TCS
events; :class:`ReplayDevice` is a KATCP device with the recorded sensors (same names,
types, units, descriptions, parameters) whose readings change at the recorded times,
paced by the TCS replay engine (``ctlwire.tcs._replay``), so that controllers and GUIs can
be tested offline against a real night with any KATCP client.

The recording (the TCS schema: one ``event`` row per event, one ``attribute`` row per key)
holds three kinds of events:

=================================  ==================================================
topic                              attributes besides ``__system/__source/__key``
=================================  ==================================================
``katcp.sensor-list.<sensor>``     ``__data`` description, ``units``, ``type``,
                                   ``params`` (JSON list of the wire parameters),
                                   ``__data_time``/``__wire_time`` when listed
``katcp.sensor.<sensor>``          ``__data`` value (as on the wire, unescaped; bytes
                                   that are not UTF-8 as ``\\xNN``), ``status``,
                                   ``__data_time`` the reading's timestamp,
                                   ``__wire_time`` when it was received
``katcp.log.<level>``              ``__data`` message, ``logger``, ``__data_time`` its
                                   timestamp, ``__wire_time`` when received
=================================  ==================================================

``tcs-replay`` replays it as TCS events too; ``tcs-info`` summarises it.

The replay paces by ``__wire_time`` (the order and spacing in which the recorder received
the readings) and gives each reading a timestamp shifted by the same offset, so a client
sees the night as if it were happening now (``speedup`` compresses it).

May import: the standard library, ``ctlwire._json``, ``ctlwire.tcs.events`` (the schema,
pure Python) and ``ctlwire.katcp`` (client, server, sensor, core); the compiled replay
engine (``ctlwire.tcs.server``) only when a replay starts, so importing this module loads
no other family's compiled code.
"""
from __future__ import annotations

import collections
import logging
import re
import sqlite3
import threading
import time
from typing import Any, Callable, Optional

from .. import _json
from ..tcs.events import EventWriter, create_database, open_database
from ._client_requests import BlockingClient
from .core import Message
from .sensor import Reading, Sensor
from .server import DeviceServer

__all__ = ["DeviceRecorder", "ReplayDevice", "RecordingSummary", "read_descriptions",
           "prompt_thread_switches",
           "SENSOR_TOPIC", "LIST_TOPIC", "LOG_TOPIC"]

log = logging.getLogger("ctlwire.katcp.recording")

SENSOR_TOPIC = "katcp.sensor."
LIST_TOPIC = "katcp.sensor-list."
LOG_TOPIC = "katcp.log."


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


class RecordingSummary:
    """What a recorder has done: ``readings``, ``logs`` and ``descriptions`` received
    (every one of them written once :meth:`DeviceRecorder.stop` returns), ``sensors``
    sampled, ``connects`` made, and ``written`` events."""

    __slots__ = ("readings", "logs", "descriptions", "sensors", "connects", "written")

    def __init__(self) -> None:
        self.readings = self.logs = self.descriptions = self.sensors = 0
        self.connects = self.written = 0

    @property
    def received(self) -> int:
        return self.readings + self.logs + self.descriptions

    def __str__(self) -> str:
        return (f"{self.readings} reading(s) of {self.sensors} sensor(s), {self.logs} log "
                f"message(s), {self.descriptions} description(s): {self.written} event(s) "
                f"written")


class _RecordingLink(BlockingClient):
    """Queues what arrives (the I/O thread never touches the database)."""

    def __init__(self, recorder: "DeviceRecorder", *args: Any, **kwargs: Any) -> None:
        self._recorder = recorder
        super().__init__(*args, **kwargs)

    def inform_sensor_status(self, msg: Message) -> None:
        self._recorder._queue_reading(msg.arguments, time.time())

    def inform_log(self, msg: Message) -> None:
        self._recorder._queue_log(msg.arguments, time.time())

    def inform_interface_changed(self, msg: Message) -> None:
        self._recorder._need_setup.set()

    def notify_connected(self, connected: bool) -> None:
        if connected:
            self._recorder._need_setup.set()


class DeviceRecorder:
    """Record a device's sensors and log messages into a TCS event database.

    Parameters
    ----------
    host, port
        The device.
    path : str
        The database (created with the TCS schema if new; events are appended).
    sensors : str, optional
        A regex (searched in the names) choosing the sensors; default all.
    batch : int, optional
        Events per committed transaction at most.
    flush_interval : float, optional
        Longest time (s) a received event waits before it is committed.
    timeout : float, optional
        Timeout of the recorder's requests and of the connection.

    The client reconnects after a lost link and samples the sensors again, recording
    their descriptions each time they are listed (a replay uses the last ones). An
    ``#interface-changed`` is handled the same way (new sensors are sampled).
    """

    def __init__(self, host: str, port: int, path: str, *, sensors: Optional[str] = None,
                 batch: int = 2000, flush_interval: float = 0.5,
                 timeout: float = 5.0) -> None:
        self.address = (host, int(port))
        self.path = path
        self.pattern = re.compile(sensors) if sensors else None
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.summary = RecordingSummary()
        self._batch = batch
        self._queue: collections.deque = collections.deque()
        self._queued = threading.Event()
        self._need_setup = threading.Event()
        self._sampled: set[str] = set()
        self._writer: Optional[EventWriter] = None
        self._link = _RecordingLink(self, host, int(port), timeout=timeout,
                                    auto_reconnect=True, connect_timeout=timeout)

    # -- from the I/O thread ---------------------------------------------------------------
    def _queue_reading(self, args: list, received: float) -> None:
        # ts n (name status value)*n; a reading of a sensor not chosen is still kept if
        # the device sends it (another strategy on this connection)
        try:
            ts = float(args[0])
        except (ValueError, IndexError):
            log.warning("bad #sensor-status from %s:%s: %r", *self.address, args)
            return
        for i in range(2, len(args) - 2, 3):
            self._queue.append(("r", _text(args[i]), ts, _text(args[i + 1]),
                                _text(args[i + 2]), received))
        self._queued.set()

    def _queue_log(self, args: list, received: float) -> None:
        if len(args) < 4:
            return
        try:
            ts = float(args[1])
        except ValueError:
            ts = received
        self._queue.append(("l", _text(args[0]), ts, _text(args[2]), _text(args[3]),
                            received))
        self._queued.set()

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> bool:
        """Open the database, connect and sample the sensors.

        Returns True once connected (within ``timeout``) and sampling: every reading
        from then on is recorded. False if the device could not be reached.
        """
        conn = create_database(self.path)
        self._writer = EventWriter(conn, batch=self._batch)
        self._link.start()
        if not self._link.wait_connected(self.timeout):
            return False
        self._link.wait_protocol(min(self.timeout, 1.0))
        self._need_setup.clear()
        try:
            self._setup()
        except Exception as exc:  # noqa: BLE001 - the link dropped: run() tries again
            log.info("setting up sampling on %s:%s failed: %s", *self.address, exc)
            self._need_setup.set()
        return True

    def is_connected(self) -> bool:
        return self._link.is_connected()

    def run(self, duration: Optional[float] = None,
            stop: Optional[threading.Event] = None,
            on_progress: Optional[Callable[[RecordingSummary], None]] = None) -> RecordingSummary:
        """Record until ``duration`` seconds pass or ``stop`` is set; then :meth:`stop`.

        Returns the summary; every event received is written.
        """
        stop = stop or threading.Event()
        deadline = None if duration is None else time.monotonic() + duration
        next_flush = time.monotonic() + self.flush_interval
        try:
            while not stop.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if self._need_setup.is_set() and self._link.is_connected():
                    self._need_setup.clear()
                    try:
                        self._setup()
                    except Exception as exc:  # noqa: BLE001 - the link dropped: retried
                        log.info("setting up sampling on %s:%s failed: %s", *self.address,
                                 exc)
                        self._need_setup.set()
                self._drain()
                if now >= next_flush:
                    self._writer.flush()  # type: ignore[union-attr]
                    self.summary.written = self._writer.written  # type: ignore[union-attr]
                    next_flush = now + self.flush_interval
                    if on_progress is not None:
                        on_progress(self.summary)
                wait = self.flush_interval if deadline is None else min(
                    self.flush_interval, max(0.0, deadline - now))
                # short waits keep Ctrl-C prompt in the main thread
                self._queued.wait(min(wait, 0.2))
                self._queued.clear()
        finally:
            self.stop()
        return self.summary

    def stop(self) -> RecordingSummary:
        """Disconnect, write everything received and close the database."""
        self._link.stop()
        self._link.join(self.timeout)
        if self._writer is not None:
            self._drain()
            self._writer.close()
            self.summary.written = self._writer.written
            self._writer = None
        return self.summary

    # -- work of the recording thread ------------------------------------------------------------
    def _setup(self) -> None:
        """List the sensors (recording their descriptions) and sample the chosen ones."""
        reply, informs = self._link.blocking_request(Message.request("sensor-list"),
                                                     timeout=self.timeout)
        if not reply.reply_ok():
            raise RuntimeError(f"?sensor-list failed: {reply}")
        self.summary.connects += 1
        now = time.time()
        names = []
        for m in informs:
            a = m.arguments
            name = _text(a[0])
            if self.pattern is not None and not self.pattern.search(name):
                continue
            names.append(name)
            self._queue.append(("d", name, now, _text(a[1]), _text(a[2]), _text(a[3]),
                                [_text(p) for p in a[4:]]))
        if not names:
            log.warning("no sensor of %s:%s matches %s", *self.address,
                        self.pattern.pattern if self.pattern else "(any)")
        flags = self._link.protocol_flags
        if flags is not None and flags.bulk_set_sensor_sampling and len(names) > 1:
            reply, _ = self._link.blocking_request(
                Message.request("sensor-sampling", ",".join(names), "auto"),
                timeout=self.timeout)
            ok = names if reply.reply_ok() else []
        else:
            ok = []
        if not ok:
            futures = [(n, self._link.future_request(
                Message.request("sensor-sampling", n, "auto"), timeout=self.timeout))
                for n in names]
            ok = [n for n, f in futures if f.result()[0].reply_ok()]
        self._sampled.update(ok)
        self.summary.sensors = len(self._sampled)

    def _drain(self) -> None:
        writer = self._writer
        queue = self._queue
        summary = self.summary
        add = writer.add  # type: ignore[union-attr]
        while queue:
            item = queue.popleft()
            kind = item[0]
            if kind == "r":
                _, name, ts, status, value, received = item
                add(SENSOR_TOPIC + name, {
                    "__system": "katcp", "__source": "sensor", "__key": name,
                    "__data": value, "status": status,
                    "__data_time": ts, "__wire_time": received})
                summary.readings += 1
            elif kind == "l":
                _, level, ts, logger, message, received = item
                add(LOG_TOPIC + level, {
                    "__system": "katcp", "__source": "log", "__key": level,
                    "__data": message, "logger": logger,
                    "__data_time": ts, "__wire_time": received})
                summary.logs += 1
            else:
                _, name, now, description, units, stype, params = item
                add(LIST_TOPIC + name, {
                    "__system": "katcp", "__source": "sensor-list", "__key": name,
                    "__data": description, "units": units, "type": stype,
                    "params": _json.dumps(params).decode(),
                    "__data_time": now, "__wire_time": now})
                summary.descriptions += 1


# -- replay ---------------------------------------------------------------------------------

#: GIL switch interval (s) for a process that replays: see :func:`prompt_thread_switches`.
REPLAY_SWITCH_INTERVAL = 0.0002


def prompt_thread_switches(interval: float = REPLAY_SWITCH_INTERVAL) -> float:
    """Make the interpreter hand the GIL over sooner (``sys.setswitchinterval``).

    The replay thread must run at its deadlines, while the server's event loop thread
    formats and writes the readings; with the default interval (5 ms) the loop thread
    may keep the GIL that long past a deadline. This is process-wide, so the library
    never calls it: ``ctlwire-katcp replay`` (a process of its own) does. Returns the
    previous interval.
    """
    import sys

    old = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    return old


def read_descriptions(path: str) -> list[dict[str, Any]]:
    """The sensors described in a recording (the last description of each), in name
    order: dicts with ``name``, ``description``, ``units``, ``type``, ``params``."""
    conn = open_database(path)
    try:
        rows = conn.execute(
            "SELECT e.event_id, a.name, a.value FROM event e JOIN attribute a "
            "ON a.event_id = e.event_id WHERE e.topic >= ? AND e.topic < ? "
            "ORDER BY e.event_id", (LIST_TOPIC, LIST_TOPIC[:-1] + "/")).fetchall()
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{path}: can't read the sensor descriptions: {exc}") from None
    finally:
        conn.close()
    events: dict[int, dict[str, Any]] = {}
    for eid, name, value in rows:
        events.setdefault(eid, {})[name] = value
    sensors: dict[str, dict[str, Any]] = {}
    for attrs in events.values():
        name = attrs.get("__key")
        if not name:
            continue
        try:
            params = _json.loads(attrs.get("params") or "[]")
        except _json.DecodeError:
            params = []
        sensors[name] = {"name": name, "description": attrs.get("__data") or "",
                         "units": attrs.get("units") or "", "type": attrs.get("type"),
                         "params": [str(p) for p in params]}
    return [sensors[n] for n in sorted(sensors)]


_STATUSES = Sensor.STATUS_NAMES_RAW


def _send_if_idle() -> Callable[..., int]:
    from .._ext import load_extension  # the server's compiled transport (katcp's own)
    return load_extension("ctlwire.katcp._dispatch").send_if_idle


#: Longest line the replay thread writes itself: longer ones go through the loop, so a
#: socket with little room left cannot keep the replay thread (and the GIL) waiting.
_DIRECT_MAX = 4096


class _DirectLink:
    """What the replay thread keeps for one client it writes to itself."""

    __slots__ = ("fd", "sent", "done", "cut")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.cut = False  # a write stopped mid-line: the loop closes the connection
        self.sent = 0   # readings handed to the loop thread (replay thread only)
        self.done = 0   # of those, queued by the loop thread (loop thread only)


def _make_sensor(desc: dict[str, Any]) -> Sensor:
    stype = Sensor.parse_type(desc["type"])
    params = Sensor.parse_params(stype, [p.encode() for p in desc["params"]])
    return Sensor(stype, desc["name"], desc["description"] or desc["name"], desc["units"],
                  params)


class ReplayDevice(DeviceServer):
    """A device serving a recording made by :class:`DeviceRecorder`.

    Parameters
    ----------
    path : str
        The recording.
    host, port
        Where to listen (port 0 picks a free one).
    speedup : float, optional
        > 1 plays faster; ``inf`` as fast as possible.
    loop : bool, optional
        Start again at the end, for ever.
    paused : bool, optional
        Wait for ``?replay-start`` (or :meth:`start_replay`) before the first reading.

    Besides the standard requests: ``?replay-start`` starts a paused replay,
    ``?replay-status`` reports progress. The readings go to the sensors from a replay
    thread; the engine measures their lateness against the recorded schedule
    (:attr:`stats`), up to when they are written.

    A reading of a sensor that clients sample with ``auto`` (and nothing else observes)
    is written by the replay thread itself to each of those clients, holding the GIL
    for the system call so that the event loop cannot write to that socket meanwhile;
    the loop thread is not woken, which on a machine of two cores is what keeps the
    replay on time. A client whose earlier output is still waiting (in the loop's
    queue, or its transport's buffer) gets the reading through the loop instead, so
    that its stream stays in order. :attr:`direct_writes` and :attr:`loop_writes`
    count the two ways. Readings due together (recorded together, or after the replay
    fell behind) go to a client in one write (:attr:`direct_calls` counts the writes).
    """

    VERSION_INFO = ("ctlwire-katcp-replay", 1, 0)
    BUILD_INFO = ("ctlwire-katcp-replay", 1, 0, "")

    def __init__(self, path: str, host: str = "127.0.0.1", port: int = 0, *,
                 speedup: float = 1.0, loop: bool = False, paused: bool = False,
                 **kwargs: Any) -> None:
        speedup = float(speedup)
        if not speedup > 0:
            raise ValueError(f"speedup must be > 0, got {speedup!r}")
        self.path = path
        self.speedup = speedup
        self.loop_replay = loop
        self.descriptions = read_descriptions(path)
        if not self.descriptions:
            raise ValueError(f"{path} holds no KATCP sensor descriptions "
                             "(record it with ctlwire-katcp record)")
        self._go = threading.Event()
        if not paused:
            self._go.set()
        self._halt = threading.Event()
        self.finished = threading.Event()
        self.passes = 0
        self.readings = 0
        self.logs = 0
        self.unknown = 0
        self._replay: Any = None
        self._stats: Any = None
        self._sensor_map: dict[str, Sensor] = {}
        self._replay_thread: Optional[threading.Thread] = None
        self.replay_error: Optional[BaseException] = None
        self._direct: dict[Any, _DirectLink] = {}
        self._send = _send_if_idle()
        self.direct_writes = 0  # readings written by the replay thread
        self.direct_calls = 0   # the system calls that wrote them
        self.loop_writes = 0
        self.cut_links = 0
        super().__init__(host, port, **kwargs)

    def setup_sensors(self) -> None:
        """The recorded sensors."""
        for desc in self.descriptions:
            self.add_sensor(_make_sensor(desc))

    # -- life cycle ------------------------------------------------------------------------------
    def start(self, timeout: Optional[float] = None, *args: Any, **kwargs: Any) -> None:
        """Serve, and start the replay thread (the replay waits if ``paused``)."""
        super().start(timeout, *args, **kwargs)
        self._replay_thread = threading.Thread(target=self._replay_main, daemon=True,
                                               name="katcp-replay")
        self._replay_thread.start()

    def start_replay(self) -> None:
        """Start a paused replay."""
        self._go.set()

    def stop(self, timeout: Optional[float] = 1.0) -> None:
        self._halt.set()
        self._go.set()
        if self._replay_thread is not None:
            self._replay_thread.join(timeout)
        super().stop(timeout)

    def __enter__(self) -> "ReplayDevice":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop(timeout=5.0)

    @property
    def stats(self) -> Any:
        """The engine's counters of the current pass (sent, lateness percentiles...), or
        ``None`` before the replay starts."""
        return self._stats

    # -- the replay thread ---------------------------------------------------------------------------
    def _replay_main(self) -> None:
        from ..tcs.server import TCSDBReplay  # the compiled engine, only now

        try:
            # made in this thread: its sqlite connection is used by this thread only
            self._replay = TCSDBReplay(self.path, sort_by="__wire_time",
                                       speedup=self.speedup, topics=[SENSOR_TOPIC, LOG_TOPIC])
        except Exception as exc:  # noqa: BLE001 - reported by the command, not lost
            self.replay_error = exc
            self.finished.set()
            return
        self._stats = self._replay.stats
        self._go.wait()
        self._sensor_map = {s.name: s for s in self.get_sensors()}
        try:
            while not self._halt.is_set():
                # everything but setting the sensors is done ahead of the deadlines
                # (prepare); the readings due are set together (deliver)
                self._replay.run_due(self._prepare, self._deliver, interrupt=self._halt)
                if self._halt.is_set():
                    return
                self.passes += 1
                if not self.loop_replay:
                    break
                self._replay._reset_iter()
                self._stats = self._replay.stats
        except Exception as exc:  # noqa: BLE001 - reported by the command, not lost
            self.replay_error = exc
            log.exception("replay of %s failed", self.path)
        finally:
            self._replay.close()
            self.finished.set()

    def _prepare(self, topic: str, event: dict) -> Any:
        """What setting one recorded event takes: ``(sensor, timestamp, status, value)``
        for a reading, a ``#log`` message for a log event, None for an unknown sensor."""
        if topic.startswith(SENSOR_TOPIC):
            sensor = self._sensor_map.get(event["__key"])
            if sensor is None:
                self.unknown += 1
                return None
            value = event["__data"]
            raw = value.encode("utf-8") if isinstance(value, str) else b""
            return (sensor, event["__data_time"],
                    _STATUSES.get(event["status"].encode(), Sensor.UNKNOWN),
                    sensor.parse_value(raw))
        return Message.inform("log", event["__key"], "%.6f" % event["__data_time"],
                              event.get("logger", ""), event["__data"])

    def _deliver(self, items: list) -> None:
        """Set the readings (and send the log messages) whose time has come.

        Several readings due at once (behind schedule, or recorded together) go to each
        auto sampler in one write, up to :data:`_DIRECT_MAX` bytes; a reading or log
        message that goes another way first sends what is gathered, so each client's
        stream keeps the replay's order."""
        hubs = self._hubs
        many = len(items) > 1
        gathered: dict[Any, list] = {}  # conn -> [bytes, lines...] (several items only)
        for item in items:
            if type(item) is tuple:
                sensor = item[0]
                hub = hubs.get(sensor)
                if (hub is not None and hub._autos and not hub.others
                        and sensor._observer_tuple == (hub,)):
                    # only auto samplers: what sensor.set would do, but written here
                    reading = sensor._current_reading = Reading(item[1], item[2], item[3])
                    line = hub.render(reading)
                    if not many or len(line) > _DIRECT_MAX:
                        for conn in tuple(hub.autos):
                            if many and conn in gathered:
                                self._write_gathered(conn, gathered.pop(conn))
                            self._write_reading(conn, line)
                    else:
                        for conn in tuple(hub.autos):
                            held = gathered.get(conn)
                            if held is None:
                                gathered[conn] = [len(line), line]
                            elif held[0] + len(line) > _DIRECT_MAX:
                                self._write_gathered(conn, held)
                                gathered[conn] = [len(line), line]
                            else:
                                held[0] += len(line)
                                held.append(line)
                else:
                    if gathered:
                        self._write_all_gathered(gathered)
                    sensor.set(item[1], item[2], item[3])
                self.readings += 1
            else:
                if gathered:
                    self._write_all_gathered(gathered)
                self.mass_inform(item)
                self.logs += 1
        if gathered:
            self._write_all_gathered(gathered)

    def _write_all_gathered(self, gathered: dict) -> None:
        for conn, held in gathered.items():
            self._write_gathered(conn, held)
        gathered.clear()

    def _write_gathered(self, conn: Any, held: list) -> None:
        n = len(held) - 1
        self._write_reading(conn, held[1] if n == 1 else b"".join(held[1:]), n)

    def _write_reading(self, conn: Any, line: bytes, count: int = 1) -> None:
        """(replay thread) ``line`` (``count`` readings) to one auto sampler: straight to
        its socket when nothing of its output is waiting, else through the loop, behind
        the rest."""
        if conn._closing or conn._transport is None:
            return
        link = self._direct.get(conn)
        if link is None:
            sock = conn._sock
            link = self._direct[conn] = _DirectLink(sock.fileno() if sock is not None
                                                    else -1)
        if link.cut:
            return  # being closed by the loop
        if link.fd >= 0 and link.sent == link.done and len(line) <= _DIRECT_MAX:
            try:
                # (nothing when the loop holds output for it: checked with the write);
                # a socket that fills part way takes whole lines only
                n = self._send(conn, link.fd, line, 0.1, count > 1)
            except OSError:
                n = 0  # the transport finds the error out and closes the connection
            if n == len(line):
                self.direct_writes += count
                self.direct_calls += 1
                return
            if n and line[n - 1] != 10:
                # cut in the middle of a line (its socket stayed full for 0.1 s): no
                # more bytes for it, it is closed
                link.cut = True
                self.cut_links += 1
                self._call_in_loop(self._cut, conn)
                return
            if n:
                # some of the lines went: the rest through the loop, behind them
                written = line.count(b"\n", 0, n)
                self.direct_writes += written
                self.direct_calls += 1
                count -= written
                line = line[n:]
        link.sent += 1
        self.loop_writes += count
        self._call_in_loop(self._queue_reading, conn, link, line)

    @staticmethod
    def _queue_reading(conn: Any, link: _DirectLink, line: bytes) -> None:
        conn._queue(line)
        link.done += 1

    def _cut(self, conn: Any) -> None:
        self._logger.warning("client %s stopped reading in the middle of a reading: "
                             "connection closed", conn.address)
        if conn._transport is not None:
            conn._transport.abort()

    def _forget_client(self, conn: Any) -> None:
        super()._forget_client(conn)
        self._direct.pop(conn, None)

    # -- requests -------------------------------------------------------------------------------------
    def request_replay_start(self, req: Any, msg: Message) -> Message:
        """Start a paused replay (no effect on a running one)."""
        self._go.set()
        return req.make_reply("ok")

    def request_replay_status(self, req: Any, msg: Message) -> Message:
        """Report the replay: running|paused|finished, passes, readings, lateness p99 (s)."""
        state = ("finished" if self.finished.is_set() else
                 "running" if self._go.is_set() else "paused")
        stats = self._stats
        p99 = stats.lateness_percentile(99) if stats is not None else None
        return req.make_reply("ok", state, self.passes, self.readings,
                              "%.6f" % p99 if p99 is not None else "-")
