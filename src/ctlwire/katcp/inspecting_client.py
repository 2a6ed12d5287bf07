"""A threaded client that mirrors a KATCP device: its requests, sensors and readings.

:class:`InspectingClient` connects, learns the device's requests (``?help``) and sensors
(``?sensor-list``), keeps both current through ``#interface-changed`` and reconnects, and
keeps the latest reading of every sensor it samples::

    client = InspectingClient("127.0.0.1", 7147)
    client.start()
    client.until_synced(timeout=10)
    print(client.requests["double"])             # the request's help text
    temp = client.sensor["temp"]                 # an InspectedSensor
    client.set_sampling_strategy("temp", "event")
    client.until_synced(timeout=5)
    temp.wait(lambda v: v > 20.0, timeout=60)    # blocks this thread only
    client.stop()

The bookkeeping (what is known, what changed, which request brings the mirror back in
step) is :class:`ctlwire.katcp.mirror.DeviceMirror`, the I/O-free engine that the asyncio
face's ``SensorWatcher`` uses too. This module is the threaded driver around it:

* the client's I/O thread applies ``#sensor-status`` and ``#interface-changed`` to the
  mirror and calls sensor listeners (which must not block);
* one *sync thread* per client makes the requests the mirror asks for (``?sensor-list``,
  ``?help``, ``?request-timeout-hint``, ``?sensor-sampling``; in bulk where the device
  offers it), so application threads never wait for a sync they did not ask for;
* application threads call anything here, with timeouts.

States (:class:`ClientState`): ``DISCONNECTED`` -> ``CONNECTED`` (link up) -> ``SYNCING``
-> ``SYNCED`` (requests, sensors and every sampling strategy in place); a lost link goes
back to ``DISCONNECTED`` and, with ``auto_reconnect``, round again; an
``#interface-changed`` goes back to ``SYNCING``. After a reconnect only what changed is
reported to the state callbacks (sensors and requests added, changed, removed), sensor
objects of unchanged sensors stay the same objects, and sampling strategies are set again.

May import: the standard library and ``ctlwire.katcp`` (client, core, sensor, mirror).
"""
from __future__ import annotations

import contextlib
import enum
import logging
import re
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

from _thread import get_ident

from ._client_requests import BlockingClient
from .core import KatcpClientError, Message
from .mirror import DeviceMirror, MirroredSensor, SensorInfo, SensorReading, SyncState
from .sensor import Reading, Sensor

__all__ = ["ClientState", "InspectingClient", "InspectedSensor", "ModelChange",
           "SensorWaitTimeout", "reading_test"]

log = logging.getLogger("ctlwire.katcp.inspecting_client")

_STATUS_CODES = {raw.decode(): code for code, raw in Sensor.STATUSES_RAW.items()}
_MESSAGE = Message
_NO_PARAMS: list = []  # (never changed: _typed() replaces it)
_INFORM = Message.INFORM


class ClientState(enum.Enum):
    """Where an :class:`InspectingClient` is with its device."""

    DISCONNECTED = "disconnected"
    CONNECTED = "connected"
    SYNCING = "syncing"
    SYNCED = "synced"
    CLOSED = "closed"


class SensorWaitTimeout(KatcpClientError, TimeoutError):
    """A sensor did not reach the value waited for in time (the last value is in the text)."""


class ModelChange:
    """What a sync found changed on the device, handed to state callbacks.

    Attributes
    ----------
    sensors_added, sensors_removed, sensors_changed : list of str
    requests_added, requests_removed, requests_changed : list of str
    """

    __slots__ = ("sensors_added", "sensors_removed", "sensors_changed", "requests_added",
                 "requests_removed", "requests_changed")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, [])

    def __bool__(self) -> bool:
        return any(getattr(self, name) for name in self.__slots__)

    def __repr__(self) -> str:
        parts = [f"{n}={getattr(self, n)!r}" for n in self.__slots__ if getattr(self, n)]
        return f"ModelChange({', '.join(parts)})"


Listener = Callable[["InspectedSensor", Reading], None]


class InspectedSensor:
    """One sensor of a mirrored device: its description and latest reading.

    Made by the client (:attr:`InspectingClient.sensor`); the same object lives as long
    as the device has the sensor, across reconnects.

    Attributes
    ----------
    name, description, units, type : str
        As ``?sensor-list`` gives them (``type`` is ``"float"``, ``"integer"``, ...).
    params : list
        Range or discrete values, as Python values.
    """

    __slots__ = ("_client", "_mirrored", "_params", "_parser", "_listeners", "__weakref__")

    def __init__(self, client: "InspectingClient", mirrored: MirroredSensor) -> None:
        # (a sync makes one per sensor: nothing is allocated here that can wait)
        self._client = client
        self._listeners: Sequence[Listener] = ()  # a list once one is registered
        self._mirrored = mirrored
        self._parser: Any = None  # as _set_info
        self._params: list = _NO_PARAMS

    def _set_info(self, mirrored: MirroredSensor) -> None:
        self._mirrored = mirrored
        # the typed parser is made on first use: a sync of thousands of sensors need not
        # pay for the sensors nobody reads
        self._parser: Any = None
        self._params: list = _NO_PARAMS

    # (read from the mirror's description: a sync makes one of these per sensor)
    @property
    def name(self) -> str:
        return self._mirrored.info.name

    @property
    def description(self) -> str:
        return self._mirrored.info.description

    @property
    def units(self) -> str:
        return self._mirrored.info.units

    @property
    def type(self) -> str:
        return self._mirrored.info.type_name

    def _typed(self) -> Optional[Sensor]:
        parser = self._parser
        if parser is None:
            info = self._mirrored.info
            try:
                stype = Sensor.parse_type(info.type_name)
                self._params = Sensor.parse_params(stype, info.params)
                parser = Sensor(stype, info.name, info.description or info.name,
                                info.units, self._params)
            except Exception:  # noqa: BLE001 - an odd sensor keeps its raw values
                self._params = list(info.params)
                parser = False
            self._parser = parser
        return parser or None

    @property
    def params(self) -> list:
        """Range or discrete values, as Python values."""
        self._typed()
        return self._params

    def __repr__(self) -> str:
        return f"<InspectedSensor {self.name} ({self.type})>"

    def _parse(self, raw: Any) -> Optional[Reading]:
        if raw is None:
            return None
        value: Any = raw.value
        parser = self._typed()
        if parser is not None:
            try:
                value = parser.parse_value(raw.value)
            except ValueError:
                pass  # a value outside the declared type stays as bytes
        return Reading(raw.timestamp, _STATUS_CODES.get(raw.status, Sensor.UNKNOWN), value)

    # -- readings ---------------------------------------------------------------------------------
    def get_reading(self) -> Optional[Reading]:
        """The latest reading ``(timestamp, status, value)`` received, or ``None``.

        Only sampled sensors get readings (see :meth:`InspectingClient.set_sampling_strategy`);
        use :meth:`read` to ask the device now.
        """
        return self._parse(self._mirrored.reading)

    def get_value(self) -> Any:
        """The value of the latest reading (``None`` if there is none)."""
        reading = self.get_reading()
        return None if reading is None else reading.value

    def get_status(self) -> Optional[int]:
        """The status of the latest reading (``Sensor.NOMINAL``, ...)."""
        reading = self.get_reading()
        return None if reading is None else reading.status

    def read(self, timeout: Optional[float] = None) -> Reading:
        """Ask the device for the current reading (``?sensor-value``)."""
        return self._client.read_sensor(self.name, timeout)

    # -- sampling and listeners -------------------------------------------------------------------
    def set_strategy(self, strategy: str, *params: Any) -> None:
        """Have the device sample this sensor (``"event"``, ``"period", 0.5``, ``"none"``).

        The strategy is set again after every reconnect; :meth:`InspectingClient.until_synced`
        returns once it is in place.
        """
        self._client.set_sampling_strategy(self.name, strategy, *params)

    def get_strategy(self) -> Optional[tuple]:
        """The strategy asked for with :meth:`set_strategy`, or ``None``."""
        return self._client.sampling_strategies().get(self.name)

    def register_listener(self, listener: Listener, reading: bool = False) -> None:
        """Call ``listener(sensor, reading)`` on every reading received.

        It runs in the client's I/O thread and must not block. With ``reading=True`` it is
        also called at once with the latest reading, if there is one.
        """
        with self._client._lock:
            if not self._listeners:
                self._listeners = []
            self._listeners.append(listener)  # type: ignore[union-attr]
            self._client._listening += 1
        if reading:
            latest = self.get_reading()
            if latest is not None:
                listener(self, latest)

    def unregister_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        with self._client._lock:
            try:
                self._listeners.remove(listener)  # type: ignore[union-attr]
            except ValueError:
                return
            self._client._listening -= 1

    def is_listener(self, listener: Listener) -> bool:
        return listener in self._listeners

    def wait(self, condition_or_value: Any, timeout: Optional[float] = None) -> Reading:
        """Block until the sensor's value satisfies a predicate or equals a value.

        Parameters
        ----------
        condition_or_value : callable or value
            ``predicate(value)`` or ``predicate(reading)`` (a callable with a
            ``reading`` attribute set to True is given the whole reading), or a value to
            equal.
        timeout : float, optional
            Seconds (``None``: for ever).

        Returns
        -------
        Reading
            The reading that satisfied it.

        Raises
        ------
        SensorWaitTimeout
            Not reached in time.

        If the sensor has no sampling strategy it is sampled with ``auto`` while waiting.
        """
        return self._client.wait_sensor(self.name, condition_or_value, timeout)


class _Link(BlockingClient):
    """The connection: hands informs and link changes to the :class:`InspectingClient`."""

    def __init__(self, owner: "InspectingClient", *args: Any, **kwargs: Any) -> None:
        self._owner = owner
        super().__init__(*args, **kwargs)

    def _dispatch_items(self, items: list) -> None:
        # Readings are most of the traffic of a mirror, and a sync brings one per sensor
        # in a burst: each run of them goes to the owner at once (one lock, one wake-up),
        # everything else through the generic dispatch, in the order received.
        statuses: list = []
        others: list = []
        dispatch = super()._dispatch_items
        for item in items:
            if (item.__class__ is _MESSAGE and item.mtype == _INFORM and item.mid is None
                    and item.name == "sensor-status"):
                if others:
                    dispatch(others)
                    others = []
                statuses.append(item.arguments)
            else:
                if statuses:
                    self._readings(statuses)
                    statuses = []
                others.append(item)
        if statuses:
            self._readings(statuses)
        if others or not items:
            dispatch(others)

    def _readings(self, statuses: list) -> None:
        self._dispatching_thread = get_ident()  # (listeners may not make blocking requests)
        try:
            self._owner._on_sensor_statuses(statuses)
        except Exception:  # noqa: BLE001 - as the generic dispatch: logged, never fatal
            self._logger.exception("handling %d #sensor-status informs failed", len(statuses))
        finally:
            self._dispatching_thread = 0

    def inform_interface_changed(self, msg: Message) -> None:
        self._owner._on_interface_changed(msg.arguments)

    def notify_connected(self, connected: bool) -> None:
        self._owner._on_link(connected)


StateCallback = Callable[[ClientState, ModelChange], None]


class InspectingClient:
    """Mirror of a KATCP device for threaded programs.

    Parameters
    ----------
    host : str
    port : int
    auto_reconnect : bool, optional
        Reconnect after a lost link (and sync again).
    timeout : float, optional
        Default timeout of requests (the sync's own and :meth:`simple_request`'s).
    initial_inspection : bool, optional
        Learn requests and sensors (False: only the connection is made; the mirror
        stays empty).
    sample : str, optional
        A strategy (``"auto"``, ``"event"``, ``"period 1"``...) for every sensor that
        has none of its own, including sensors that appear later; ``None`` (default)
        samples only what :meth:`set_sampling_strategy` names.
    logger : logging.Logger, optional

    Attributes
    ----------
    sensor : dict
        Sensor name -> :class:`InspectedSensor` (a snapshot copy; read it again after a
        change).
    requests : dict
        Request name -> help text.
    """

    def __init__(self, host: str, port: int, *, auto_reconnect: bool = True,
                 timeout: float = 5.0, initial_inspection: bool = True,
                 sample: Optional[str] = None, logger: logging.Logger = log) -> None:
        self._logger = logger
        self._timeout = timeout
        self._inspect = initial_inspection
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._state = ClientState.DISCONNECTED
        self._state_callbacks: list[StateCallback] = []
        self._callbacks_due: list[tuple[ClientState, ModelChange]] = []
        self._wanted: dict[str, None] = {}  # sensors to sample (any strategy but none)
        self._default: Optional[tuple] = tuple(sample.split()) if sample else None
        self._unsampled: set[str] = set()   # set to none explicitly: no default for them
        self._pending_changes = ModelChange()
        # name -> InspectedSensor, or its MirroredSensor until someone asks for it (a
        # sync of thousands of sensors makes no objects nobody uses): see _inspected
        self._sensors: dict[str, Union[InspectedSensor, MirroredSensor]] = {}
        self._strategies: dict[str, tuple] = {}     # name -> (strategy, *params) not auto
        self._strategies_due: set[str] = set()      # custom strategies to (re)apply
        self._timeout_hints: dict[str, float] = {}
        self._readings_seen = 0
        self._listening = 0  # listeners registered on sensors: none, no lookups per reading
        self._waiters = 0
        self._help_due = False
        self._help_futures: Optional[tuple] = None  # (help, hints, link generation)
        # a first sync's bulk ?sensor-sampling, sent as soon as the names are known:
        # (names, future, link generation), used by _sample
        self._sampling_ahead: Optional[tuple] = None
        self._link_generation = 0
        self._mirror = DeviceMirror(track_requests=initial_inspection,
                                    on_state=self._on_mirror_state)
        self._kick = threading.Event()
        self._stopping = threading.Event()
        self._sync_thread: Optional[threading.Thread] = None
        self._link = _Link(self, host, port, timeout=timeout, auto_reconnect=auto_reconnect,
                           logger=logger)

    # -- life cycle ----------------------------------------------------------------------------
    def start(self, timeout: Optional[float] = None) -> None:
        """Connect (in the background) and start syncing.

        With ``timeout``, wait that long for the first sync (``TimeoutError`` if not).
        """
        self._stopping.clear()
        self._sync_thread = threading.Thread(target=self._sync_loop, daemon=True,
                                             name=f"katcp-inspect-{self._link.bind_address[1]}")
        # the link first: its connect is on the way to everything; the sync thread has
        # nothing to do before #version-connect has come (a kick waits for it if need be)
        self._link.start()
        self._sync_thread.start()
        if timeout is not None:
            self.until_synced(timeout)

    connect = start

    def stop(self, timeout: Optional[float] = None) -> None:
        """Disconnect and stop the threads (``timeout``: also wait for them)."""
        self._stopping.set()
        self._kick.set()
        self._link.stop()
        with self._lock:
            self._mirror.close()
            self._set_state(ClientState.CLOSED)
        self._flush_callbacks()
        if timeout is not None:
            self.join(timeout)

    close = stop

    def join(self, timeout: Optional[float] = None) -> None:
        """Wait for the client's threads to end (after :meth:`stop`)."""
        self._link.join(timeout)
        if self._sync_thread is not None:
            self._sync_thread.join(timeout)

    def __enter__(self) -> "InspectingClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop(timeout=5.0)

    # -- state ---------------------------------------------------------------------------------
    @property
    def state(self) -> ClientState:
        """The current :class:`ClientState`."""
        return self._state

    @property
    def synced(self) -> bool:
        """Whether the mirror is in step with the device."""
        return self._state is ClientState.SYNCED

    @property
    def connected(self) -> bool:
        """Whether the link is up."""
        return self._link.is_connected()

    def is_connected(self) -> bool:
        """Whether the link is up."""
        return self._link.is_connected()

    @property
    def bind_address(self) -> tuple[str, int]:
        return self._link.bind_address

    @property
    def link(self) -> BlockingClient:
        """The underlying :class:`~ctlwire.katcp.client.BlockingClient`."""
        return self._link

    def add_state_callback(self, callback: StateCallback) -> None:
        """Call ``callback(state, model_change)`` on every change of state.

        ``model_change`` (a :class:`ModelChange`) lists what the sync found changed; it is
        empty except on ``SYNCED``. Callbacks run in the client's threads and must not
        block.
        """
        self._state_callbacks.append(callback)

    set_state_callback = add_state_callback

    def remove_state_callback(self, callback: StateCallback) -> None:
        try:
            self._state_callbacks.remove(callback)
        except ValueError:
            pass

    def until_state(self, state: ClientState, timeout: Optional[float] = None) -> None:
        """Block until the client is in ``state``; ``TimeoutError`` if not in time."""
        with self._cond:
            if not self._wait_for(lambda: self._state is state, timeout):
                raise TimeoutError(f"{self._address()} not {state.value} within {timeout} s "
                                   f"(it is {self._state.value})")

    def until_synced(self, timeout: Optional[float] = None) -> None:
        """Block until the mirror is in step with the device (``TimeoutError`` if not)."""
        self.until_state(ClientState.SYNCED, timeout)

    def until_not_synced(self, timeout: Optional[float] = None) -> None:
        """Block until the mirror is no longer in step (``TimeoutError`` if it stays so)."""
        with self._cond:
            if not self._wait_for(lambda: self._state is not ClientState.SYNCED,
                                       timeout):
                raise TimeoutError(f"{self._address()} still synced after {timeout} s")

    def until_sensor(self, name: str, present: bool = True,
                     timeout: Optional[float] = None) -> None:
        """Block until the synced mirror has (``present``) or lacks a sensor ``name``."""
        def done() -> bool:
            return (self._state is ClientState.SYNCED
                    and (name in self._sensors) == present)

        with self._cond:
            if not self._wait_for(done, timeout):
                raise TimeoutError(f"{self._address()} {'has no' if present else 'still has'}"
                                   f" sensor {name!r} after {timeout} s")

    def _wait_for(self, predicate: Callable[[], bool], timeout: Optional[float]) -> bool:
        # caller holds the lock; counted so that readings notify only when someone waits
        self._waiters += 1
        try:
            return self._cond.wait_for(predicate, timeout)
        finally:
            self._waiters -= 1

    def _address(self) -> str:
        host, port = self._link.bind_address
        return f"{host}:{port}"

    def _set_state(self, state: ClientState) -> None:
        # caller holds the lock; callbacks run once it is released (_flush_callbacks)
        if state is self._state:
            return
        self._state = state
        change = ModelChange()
        if state is ClientState.SYNCED:
            change, self._pending_changes = self._pending_changes, ModelChange()
        self._callbacks_due.append((state, change))
        self._cond.notify_all()

    def _flush_callbacks(self) -> None:
        with self._lock:
            due, self._callbacks_due = self._callbacks_due, []
        for state, change in due:
            for cb in list(self._state_callbacks):
                try:
                    cb(state, change)
                except Exception:  # noqa: BLE001 - a callback's bug must not stop the sync
                    self._logger.exception("state callback %r raised", cb)

    def _on_mirror_state(self, state: SyncState) -> None:
        if state is SyncState.SYNCING:
            self._set_state(ClientState.SYNCING)
        elif state is SyncState.SYNCED and not self._strategies_due:
            self._set_state(ClientState.SYNCED)
        elif state is SyncState.DISCONNECTED:
            self._set_state(ClientState.DISCONNECTED)

    # -- what the device has -----------------------------------------------------------------------
    @property
    def sensor(self) -> dict[str, InspectedSensor]:
        with self._lock:
            return {name: self._inspected(name) for name in self._sensors}

    @property
    def sensors(self) -> list[str]:
        """Names of the device's sensors."""
        with self._lock:
            return list(self._sensors)

    @property
    def requests(self) -> dict[str, str]:
        """Request name -> help text."""
        with self._lock:
            return dict(self._mirror.requests)

    @property
    def request_timeout_hints(self) -> dict[str, float]:
        """Request name -> suggested timeout, from ``?request-timeout-hint``."""
        with self._lock:
            return dict(self._timeout_hints)

    def get_sensor(self, name: str) -> InspectedSensor:
        """The sensor called ``name`` (``KeyError`` if the device has none)."""
        with self._lock:
            try:
                return self._inspected(name)
            except KeyError:
                raise KeyError(f"{self._address()} has no sensor {name!r}") from None

    def _inspected(self, name: str) -> InspectedSensor:
        # caller holds the lock; KeyError for a sensor the device does not have
        sensor = self._sensors[name]
        if sensor.__class__ is not InspectedSensor:
            sensor = self._sensors[name] = InspectedSensor(self, sensor)  # type: ignore
        return sensor  # type: ignore[return-value]

    # -- requests --------------------------------------------------------------------------------
    def request_timeout(self, name: str, timeout: Optional[float] = None) -> Optional[float]:
        """The timeout for request ``name``: ``timeout`` if given, else the device's hint
        (if it gave one), else the client's default."""
        if timeout is not None:
            return timeout
        hint = self._timeout_hints.get(name)
        return hint if hint else self._timeout

    def simple_request(self, name: str, *args: Any, timeout: Optional[float] = None,
                       ) -> tuple[Message, list[Message]]:
        """Make a request and wait for its reply: ``(reply, informs)``.

        The timeout follows :meth:`request_timeout`.
        """
        return self._link.blocking_request(Message.request(name, *args),
                                           timeout=self.request_timeout(name, timeout))

    def read_sensor(self, name: str, timeout: Optional[float] = None) -> Reading:
        """Ask the device for a sensor's current reading (``?sensor-value``)."""
        reply, informs = self.simple_request("sensor-value", name, timeout=timeout)
        if not reply.reply_ok() or not informs:
            raise KatcpClientError(f"?sensor-value {name} failed on {self._address()}: "
                                   f"{_reason(reply)}")
        a = informs[0].arguments
        raw = SensorReading(float(a[0]), a[3].decode(), a[4])
        with self._lock:
            sensor = self._inspected(name) if name in self._sensors else None
        if sensor is not None:
            return sensor._parse(raw)  # type: ignore[return-value]
        return Reading(raw.timestamp, _STATUS_CODES.get(raw.status, 0), raw.value)

    # -- sampling --------------------------------------------------------------------------------
    def set_sampling_strategy(self, name: str, strategy: str, *params: Any) -> None:
        """Have the device sample sensor ``name`` with ``strategy`` (and its ``params``).

        ``"none"`` stops it. Persistent: set again after every reconnect and interface
        change. Returns at once; :meth:`until_synced` waits until it is in place.
        """
        strategy = strategy.strip()
        if " " in strategy and not params:
            strategy, *params = strategy.split()  # "period 0.5" in one string
        with self._lock:
            if name not in self._sensors and self._state is ClientState.SYNCED:
                raise KeyError(f"{self._address()} has no sensor {name!r}")
            if strategy == "none":
                self._unsampled.add(name)
                self._strategies.pop(name, None)
                self._strategies_due.discard(name)
                if name in self._mirror.sensors:
                    self._mirror.unwatch(name, self)
            else:
                self._unsampled.discard(name)
                if strategy != "auto":
                    self._strategies[name] = (strategy, *params)
                    self._strategies_due.add(name)
                else:
                    self._strategies.pop(name, None)
                    self._strategies_due.discard(name)
                self._wanted[name] = None
                if name in self._mirror.sensors:
                    self._mirror.watch(name, self)
                elif self._state is ClientState.SYNCED:
                    self._set_state(ClientState.SYNCING)
            if strategy == "none":
                self._wanted.pop(name, None)
            if self._strategies_due and self._state is ClientState.SYNCED:
                self._set_state(ClientState.SYNCING)
        self._flush_callbacks()
        self._kick.set()

    def set_sampling_strategies(self, names: Union[str, Iterable[str], Callable[[str], bool]],
                                strategy: str, *params: Any) -> list[str]:
        """Set a strategy on many sensors: a list of names, a regex (searched in the
        names) or a predicate. Returns the names it applied to."""
        with self._lock:
            all_names = list(self._sensors)
        if isinstance(names, str):
            regex = re.compile(names)
            chosen = [n for n in all_names if regex.search(n)]
        elif callable(names):
            chosen = [n for n in all_names if names(n)]
        else:
            chosen = list(names)
        for name in chosen:
            self.set_sampling_strategy(name, strategy, *params)
        return chosen

    def sampling_strategies(self) -> dict[str, tuple]:
        """Sensor name -> the strategy asked for (``("auto",)`` for auto)."""
        with self._lock:
            out = {name: ("auto",) for name in self._wanted}
            out.update(self._strategies)
            return out

    def wait_sensor(self, name: str, condition_or_value: Any,
                    timeout: Optional[float] = None) -> Reading:
        """Block until sensor ``name`` satisfies a predicate or equals a value
        (see :meth:`InspectedSensor.wait`)."""
        sensor = self.get_sensor(name)
        test = reading_test(condition_or_value)
        deadline = None if timeout is None else time.monotonic() + timeout
        last: list = [None]

        def reached() -> bool:
            reading = sensor.get_reading()
            last[0] = reading
            return reading is not None and test(reading)

        with self.sampled(name):
            with self._cond:
                while not reached():
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        seen = "no reading" if last[0] is None else repr(last[0].value)
                        raise SensorWaitTimeout(
                            f"sensor {name} of {self._address()} not reached within "
                            f"{timeout} s (last value: {seen})")
                    self._waiters += 1
                    try:
                        self._cond.wait(left)
                    finally:
                        self._waiters -= 1
                return last[0]

    @contextlib.contextmanager
    def sampled(self, name: str) -> Iterator[InspectedSensor]:
        """Keep sensor ``name`` sampled (``auto``) inside the ``with`` block, unless it
        already has a strategy; afterwards the device stops sampling it again.

        Readings arrive in the sensor's listeners and :meth:`InspectedSensor.get_reading`.
        """
        sensor = self.get_sensor(name)
        token = object()
        temporary = False
        with self._lock:
            mirrored = self._mirror.sensors.get(name)
            if mirrored is not None and not mirrored.watchers:
                self._mirror.watch(name, token)
                temporary = True
        if temporary:  # (only then is there anything for the sync thread to do)
            self._flush_callbacks()
            self._kick.set()
        try:
            yield sensor
        finally:
            if temporary:
                with self._lock:
                    self._mirror.unwatch(name, token)
                self._flush_callbacks()
                self._kick.set()

    # -- from the I/O thread ------------------------------------------------------------------------
    def _on_link(self, connected: bool) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            if connected:
                self._set_state(ClientState.CONNECTED)
                if self._inspect:
                    self._mirror.connected()
                    self._strategies_due = set(self._strategies)
                    self._help_due = True
                    self._help_futures = None  # any in flight belonged to the old link
                    self._sampling_ahead = None
                    self._link_generation += 1
                else:
                    self._set_state(ClientState.SYNCED)
            else:
                self._mirror.disconnected()
                self._set_state(ClientState.DISCONNECTED)
        self._flush_callbacks()
        self._kick.set()

    def _on_interface_changed(self, args: Sequence[bytes]) -> None:
        with self._lock:
            if self._inspect:
                self._mirror.interface_changed(*args)
                kinds = {a.split(b" ")[0] for a in args}
                if not kinds or b"request-list" in kinds:
                    self._help_due = True
        self._flush_callbacks()
        self._kick.set()

    def _on_sensor_statuses(self, informs: list) -> None:
        """``#sensor-status`` informs (their arguments), from whichever thread reads."""
        updated = []
        with self._lock:
            mirror = self._mirror
            was = mirror.state
            if self._listening:
                readings: list = []
                bad = mirror.sensor_status_informs(informs, readings)
                known = self._sensors
                for mirrored, raw in readings:
                    sensor = known.get(mirrored.info.name)
                    if sensor.__class__ is InspectedSensor and sensor._listeners:
                        updated.append((sensor, raw))
            else:
                bad = mirror.sensor_status_informs(informs)
            self._readings_seen += len(informs)
            if self._waiters:  # (notify_all costs more than the rest of a reading)
                self._cond.notify_all()
        for args in bad:
            self._logger.warning("bad #sensor-status from %s: %r", self._address(), args)
        for sensor, raw in updated:
            reading = sensor._parse(raw)
            for listener in list(sensor._listeners):
                try:
                    listener(sensor, reading)
                except Exception:  # noqa: BLE001 - a listener's bug must not stop the client
                    self._logger.exception("sensor listener %r raised", listener)
        if mirror.state is SyncState.SYNCING and was is not SyncState.SYNCING:
            # a reading of a sensor nobody samples: the sync thread has to say "none"
            self._flush_callbacks()
            self._kick.set()

    # -- the sync thread -----------------------------------------------------------------------------
    def _sync_loop(self) -> None:
        while not self._stopping.is_set():
            self._kick.wait()
            self._kick.clear()
            if self._stopping.is_set():
                return
            try:
                self._sync_step()
            except KatcpClientError as exc:
                # the link dropped mid-sync: the reconnect starts it again
                self._logger.debug("sync of %s interrupted: %s", self._address(), exc)
            except Exception:  # noqa: BLE001 - the sync thread must survive a bug report
                self._logger.exception("sync of %s failed", self._address())
                self._stopping.wait(1.0)
                self._kick.set()
            self._flush_callbacks()

    def _sync_step(self) -> None:
        if not self._link.is_connected():
            return
        # message ids (and bulk sampling) are known once #version-connect has come
        self._link.wait_protocol(min(self._timeout, 1.0))
        while not self._stopping.is_set():
            with self._lock:
                action = self._mirror.next_action()
                generation = self._mirror.list_generation
                due = sorted(self._strategies_due) if action is None else []
                if action is None and not due:
                    if self._mirror.state is SyncState.SYNCED:
                        self._set_state(ClientState.SYNCED)
                    return
            self._flush_callbacks()
            if action is None:
                self._apply_strategies(due)
            elif action.kind == "sensor-list":
                self._learn_sensors(generation)
            elif action.kind == "help":
                self._learn_requests()
            else:
                self._sample(list(action.names), action.strategy)

    def _prefetch_requests(self, force: bool = False) -> None:
        """Send ``?help`` (and ``?request-timeout-hint``) now, to be read by
        :meth:`_learn_requests`: they travel while the sensor list is read."""
        link = self._link
        if (self._help_due or force) and self._help_futures is None:
            self._help_due = False
            flags = link.protocol_flags
            hints = (link.future_request(Message.request("request-timeout-hint"),
                                         timeout=self._timeout)
                     if flags is not None and flags.request_timeout_hints else None)
            self._help_futures = (link.future_request(Message.request("help"),
                                                      timeout=self._timeout), hints,
                                  self._link_generation)

    def _learn_sensors(self, generation: int) -> None:
        if self._inspect and not self._may_sample_ahead():
            with self._lock:
                self._prefetch_requests()
        # (else ?help goes after the bulk ?sensor-sampling: the device answers requests
        # in order, and the readings are what a first sync waits for longest)
        reply, informs = self._link.blocking_request(Message.request("sensor-list"),
                                                     timeout=self._timeout)
        with self._lock:
            if not reply.reply_ok():
                self._mirror.sensor_list_failed()
                self._logger.warning("?sensor-list failed on %s: %s", self._address(),
                                     _reason(reply))
                failed = True
            else:
                failed = False
                mirror = self._mirror
                entries = [m.arguments for m in informs]
                del informs  # (a thousand objects fewer for the garbage collector to visit)
                # (readings it brings wait for this lock, so they find their sensors)
                self._sample_ahead(entries)
                if self._inspect:
                    self._prefetch_requests()
                change, bad = mirror.sensor_list_informs(entries, generation)
                for args in bad:
                    self._logger.warning("#sensor-list inform without name, description, "
                                         "units and type from %s skipped: %r",
                                         self._address(), args)
                added = [info.name for info in change.added]
                sensors = self._sensors
                mirrored = mirror.sensors
                # (made an InspectedSensor on demand)
                sensors.update(zip(added, map(mirrored.__getitem__, added)))
                self._pending_changes.sensors_added.extend(added)
                wanted = self._wanted
                strategies = self._strategies
                default = self._default
                watch = None
                if default == ("auto",) and not wanted and not self._unsampled:
                    wanted.update(dict.fromkeys(added))  # (a first sync: sample them all)
                    watch = added
                elif default is not None:
                    unsampled = self._unsampled
                    custom = default != ("auto",)
                    for name in added:
                        if name not in wanted and name not in unsampled:
                            wanted[name] = None
                            if custom:
                                strategies[name] = default
                if watch is None:
                    watch = [name for name in added if name in wanted]
                mirror.watch_many(watch, self)
                if strategies:
                    self._strategies_due.update(name for name in watch if name in strategies)
                pending = self._pending_changes
                for old, new in change.changed:
                    sensor = sensors[new.name]
                    if sensor.__class__ is InspectedSensor:
                        sensor._set_info(mirrored[new.name])  # type: ignore[union-attr]
                    else:
                        sensors[new.name] = mirrored[new.name]
                    pending.sensors_changed.append(new.name)
                    if new.name in self._strategies:
                        self._strategies_due.add(new.name)
                for info in change.removed:
                    self._sensors.pop(info.name, None)
                    self._strategies_due.discard(info.name)
                    pending.sensors_removed.append(info.name)
        if failed:
            self._stopping.wait(1.0)  # don't hammer a device whose ?sensor-list fails

    def _may_sample_ahead(self) -> bool:
        """Whether this sync may send the bulk ``?sensor-sampling`` of
        :meth:`_sample_ahead` (a first sync sampling everything with ``auto``)."""
        flags = self._link.protocol_flags
        return not (self._default != ("auto",) or self._wanted or self._unsampled
                    or self._strategies or flags is None
                    or not flags.bulk_set_sensor_sampling)

    def _sample_ahead(self, entries: list) -> None:
        """On a first sync that samples every sensor with ``auto``, send the bulk
        ``?sensor-sampling`` before the list is applied: the readings travel while it
        is (:meth:`_sample` then waits for that reply instead of asking)."""
        if not self._may_sample_ahead() or len(entries) < 2:
            return
        try:
            names = [a[0].decode() for a in entries]
        except (IndexError, UnicodeDecodeError):
            return  # the mirror reports the bad informs; sampled the usual way
        if any("," in n for n in names) or len(set(names)) != len(names):
            return
        future = self._link.future_request(
            Message.request("sensor-sampling", ",".join(names), "auto"),
            timeout=self._timeout)
        self._sampling_ahead = (frozenset(names), future, self._link_generation)

    def _learn_requests(self) -> None:
        with self._lock:
            self._prefetch_requests(force=True)
            futures, self._help_futures = self._help_futures, None
        if futures is None:
            raise KatcpClientError("the link changed while learning the requests")
        help_future, hints_future, generation = futures
        reply, informs = help_future.result()
        if generation != self._link_generation:
            raise KatcpClientError("the link changed while learning the requests")
        entries = [(m.arguments[0].decode("utf-8", "replace"),
                    m.arguments[1].decode("utf-8", "replace") if len(m.arguments) > 1 else "")
                   for m in informs if m.arguments]
        hints: dict[str, float] = {}
        if hints_future is not None:
            hreply, hinforms = hints_future.result()
            if hreply.reply_ok():
                for m in hinforms:
                    try:
                        hints[m.arguments[0].decode()] = float(m.arguments[1])
                    except (IndexError, ValueError):
                        pass
        with self._lock:
            if not reply.reply_ok():
                # a device without ?help: mirror no requests rather than retry for ever
                self._logger.warning("?help failed on %s: %s", self._address(), _reason(reply))
                entries = []
            change = self._mirror.help(entries)
            self._timeout_hints = hints
            pending = self._pending_changes
            pending.requests_added.extend(change.added)
            pending.requests_changed.extend(name for name, _ in change.changed)
            pending.requests_removed.extend(change.removed)

    def _sample(self, names: list[str], strategy: str) -> None:
        # The mirror only knows "sampled (auto) or not": a sensor with a strategy of its
        # own gets that strategy straight away instead (one reading, not two).
        ahead, self._sampling_ahead = self._sampling_ahead, None
        if (ahead is not None and strategy == "auto" and ahead[2] == self._link_generation
                and ahead[0].issuperset(names)):
            reply, _ = ahead[1].result()
            with self._lock:
                if reply.reply_ok() and not self._strategies.keys() & names:
                    self._mirror.sampling_done(names, strategy, True)
                    return
        plain = (strategy,)
        groups: dict[tuple, list[str]] = {plain: []}
        with self._lock:
            strategies = self._strategies
            if strategy != "auto" or not strategies.keys() & names:
                groups[plain] = names
            else:
                for name in names:
                    own = strategies.get(name)
                    if own:
                        groups.setdefault(own, []).append(name)
                        self._strategies_due.discard(name)
                    else:
                        groups[plain].append(name)
        ok_names: list[str] = []
        failed: list[str] = []
        for group_strategy, group in groups.items():
            ok, bad = self._set_strategy_on_device(group, group_strategy)
            ok_names += ok
            failed += bad
        with self._lock:
            self._mirror.sampling_done(ok_names, strategy, True)
            if failed:
                self._mirror.sampling_done(failed, strategy, False)

    def _apply_strategies(self, names: list[str]) -> None:
        with self._lock:
            groups: dict[tuple, list[str]] = {}
            for name in names:
                if name in self._strategies and name in self._mirror.sensors:
                    groups.setdefault(self._strategies[name], []).append(name)
                self._strategies_due.discard(name)
        for strategy, group in groups.items():
            _, failed = self._set_strategy_on_device(group, strategy)
            for name in failed:
                self._logger.warning("could not set strategy %s on %s of %s", strategy, name,
                                     self._address())

    def _set_strategy_on_device(self, names: list[str], strategy: tuple
                                ) -> tuple[list[str], list[str]]:
        """``?sensor-sampling`` for many sensors: one bulk request where the device offers
        it (flag B), else all requests in flight at once. Returns (ok, failed) names."""
        link = self._link
        flags = link.protocol_flags
        if not names:
            return [], []
        if flags is not None and flags.bulk_set_sensor_sampling and len(names) > 1:
            reply, _ = link.blocking_request(
                Message.request("sensor-sampling", ",".join(names), *strategy),
                timeout=self._timeout)
            if reply.reply_ok():
                return names, []
            # one bad name fails the whole bulk request: fall back to one by one
        futures = [(name, link.future_request(Message.request("sensor-sampling", name,
                                                               *strategy),
                                              timeout=self._timeout)) for name in names]
        ok, failed = [], []
        for name, future in futures:
            reply, _ = future.result()
            (ok if reply.reply_ok() else failed).append(name)
        return ok, failed


def reading_test(condition_or_value: Any) -> Callable[[Reading], bool]:
    """A test of a :class:`Reading`: a predicate of the value (or, if the callable has a
    true ``reading`` attribute, of the whole reading), or equality with a value."""
    if callable(condition_or_value):
        pred = condition_or_value
        if getattr(pred, "reading", False):
            return lambda r: bool(pred(r))
        return lambda r: bool(pred(r.value))
    target = condition_or_value
    return lambda r: r.value == target


def _reason(reply: Message) -> str:
    return " ".join(a.decode("utf-8", "replace") for a in reply.arguments[1:]) or "no reason"
