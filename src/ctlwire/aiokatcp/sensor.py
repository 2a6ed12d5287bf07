"""aiokatcp-compatible sensors: readings, sensors, sampling strategies, sensor sets.

The names and behaviour of ``aiokatcp.sensor`` (2.x). Sampling runs on the asyncio loop
given to :class:`SensorSampler` and schedules with ``loop.time()`` and ``loop.call_at``,
so it follows whatever clock the loop has (a simulated-time test loop included);
reading timestamps are ``time.time()`` unless given.

Layering: imports the standard library and :mod:`.core`.
"""
from __future__ import annotations

import abc
import asyncio
import enum
import inspect
import numbers
import time
import warnings
import weakref
from typing import (Any, Callable, Dict, Generic, Iterable, Iterator, List, Mapping,
                    Optional, Protocol, Tuple, Type, TypeVar, Union)

from . import core

__all__ = ["ClassicObserver", "DeltaObserver", "Observer", "Reading", "Sensor", "SensorSampler", "SensorSet", "AggregateSensor",
           "SimpleAggregateSensor"]

_T = TypeVar("_T")
_U = TypeVar("_U")


class ClassicObserver(Protocol[_T]):
    """An observer called as ``observer(sensor, reading)``."""

    def __call__(self, __sensor: "Sensor[_T]", __reading: "Reading[_T]") -> None: ...


class DeltaObserver(Protocol[_T]):
    """An observer that also gets the previous reading (``old_reading=``)."""

    def __call__(self, __sensor: "Sensor[_T]", __reading: "Reading[_T]", *,
                 old_reading: "Reading[_T]") -> None: ...


Observer = Union[ClassicObserver[_T], DeltaObserver[_T]]


class Reading(Generic[_T]):
    """One sensor reading.

    Parameters
    ----------
    timestamp : float
        UNIX time at which the value was determined.
    status : Sensor.Status
        Status at that time.
    value
        Value at that time.
    """

    __slots__ = ("timestamp", "status", "value")

    def __init__(self, timestamp: float, status: "Sensor.Status", value: _T) -> None:
        self.timestamp = timestamp
        self.status = status
        self.value = value

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        o: Reading = other  # type: ignore[assignment]
        return (self.timestamp, self.status, self.value) == (o.timestamp, o.status, o.value)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"Reading(timestamp={self.timestamp!r}, status={self.status!r}, "
                f"value={self.value!r})")


def _always_nominal(value: Any) -> "Sensor.Status":
    return _Status.NOMINAL


def _takes_old_reading(observer: Callable) -> bool:
    try:
        return "old_reading" in inspect.signature(observer).parameters
    except (TypeError, ValueError):
        return False


class Sensor(Generic[_T]):
    """A sensor: a name, a type, a description and a current :class:`Reading`.

    Parameters
    ----------
    sensor_type : type
        A registered type (``int``, ``float``, ``bool``, ``str``, ``bytes``, an enum,
        :class:`~.core.Address`, :class:`~.core.Timestamp`...).
    name, description, units : str
        What ``?sensor-list`` shows.
    default : optional
        Initial value (else the type's default).
    initial_status : Sensor.Status
        Initial status (``UNKNOWN``).
    status_func : callable, optional
        Maps a value to a status when :meth:`set_value` is given none (always
        ``NOMINAL`` by default).
    auto_strategy : SensorSampler.Strategy, optional
        What a client's ``auto`` strategy means for this sensor (every update by
        default).
    auto_strategy_parameters : iterable
        Decoded parameters of ``auto_strategy``.
    """

    class Status(enum.IntEnum):
        """Sensor statuses (the wire names are the lower-case member names)."""

        UNKNOWN = 0
        NOMINAL = 1
        WARN = 2
        ERROR = 3
        FAILURE = 4
        UNREACHABLE = 5
        INACTIVE = 6

        def valid_value(self) -> bool:
            """True for statuses whose value means something (nominal, warn, error)."""
            return self in _VALID_STATUSES

    def __init__(self, sensor_type: Type[_T], name: str, description: str = "",
                 units: str = "", default: Optional[_T] = None,
                 initial_status: "Sensor.Status" = Status.UNKNOWN, *,
                 status_func: Callable[[_T], "Sensor.Status"] = _always_nominal,
                 auto_strategy: Optional["SensorSampler.Strategy"] = None,
                 auto_strategy_parameters: Iterable[Any] = ()) -> None:
        self.stype = sensor_type
        info = core.get_type(sensor_type)  # type: ignore[arg-type]
        self.type_name = info.name
        self._core_type = info.type_
        self.name = name
        self.description = description
        self.units = units
        self.status_func = status_func
        # observers are kept in tuples, rebuilt on attach/detach, so notify() iterates
        # without copying (it runs on every update)
        self._classic: Tuple[Callable, ...] = ()
        self._delta: Tuple[Callable, ...] = ()
        value = info.default(sensor_type) if default is None else self._cast_value_type(default)
        self._reading: Reading[_T] = Reading(time.time(), initial_status, value)
        self.auto_strategy = (SensorSampler.Strategy.AUTO if auto_strategy is None
                              else auto_strategy)
        self.auto_strategy_parameters = tuple(auto_strategy_parameters)

    def _cast_value_type(self, value: Any) -> _T:
        stype = self.stype
        if isinstance(value, stype):
            return value
        if isinstance(value, self._core_type) and not issubclass(self._core_type, enum.Enum):
            return stype(value)  # type: ignore[call-arg]
        if stype is core.Timestamp and isinstance(value, numbers.Real):
            return stype(value)  # type: ignore[call-arg,return-value]
        raise TypeError(f"Value type {type(value)} is not compatible with Sensor type "
                        f"{stype} with core type {self._core_type}")

    def notify(self, reading: Reading[_T], old_reading: Reading[_T]) -> None:
        """Call the observers (done by :meth:`set_value`)."""
        for observer in self._classic:
            observer(self, reading)
        for observer in self._delta:
            observer(self, reading, old_reading=old_reading)

    def set_value(self, value: Any, status: Optional[_Status] = None,
                  timestamp: Optional[float] = None) -> None:
        """Set the reading.

        Parameters
        ----------
        value
            New value, of (or convertible to) the sensor's type.
        status : Sensor.Status, optional
            Status; from ``status_func`` if not given.
        timestamp : float, optional
            When the value was determined (``time.time()`` if not given).

        Raises
        ------
        TypeError
            If ``value`` does not fit the sensor's type.
        """
        value = self._cast_value_type(value)
        reading = Reading(time.time() if timestamp is None else timestamp,
                          self.status_func(value) if status is None else status, value)
        old = self._reading
        self._reading = reading
        self.notify(reading, old)

    @property
    def value(self) -> _T:
        """The current value (assigning calls :meth:`set_value`)."""
        return self._reading.value

    @value.setter
    def value(self, value: Any) -> None:
        self.set_value(value)

    @property
    def timestamp(self) -> float:
        return self._reading.timestamp

    @property
    def status(self) -> _Status:
        return self._reading.status

    @property
    def reading(self) -> Reading[_T]:
        return self._reading

    @property
    def params(self) -> List[bytes]:
        """Extra ``?sensor-list`` arguments: the values of a discrete sensor."""
        if self.type_name == "discrete":
            return [core.encode(v) for v in self.stype]  # type: ignore[attr-defined]
        return []

    def attach(self, observer: Callable) -> None:
        """Call ``observer(sensor, reading)`` on every update; an observer with an
        ``old_reading`` keyword parameter also gets the previous reading."""
        if _takes_old_reading(observer):
            if observer not in self._delta:
                self._delta = self._delta + (observer,)
        elif observer not in self._classic:
            self._classic = self._classic + (observer,)

    def detach(self, observer: Callable) -> None:
        """Stop calling ``observer`` (no error if it was not attached)."""
        self._classic = tuple(o for o in self._classic if o != observer)
        self._delta = tuple(o for o in self._delta if o != observer)


_Status = Sensor.Status
_VALID_STATUSES = frozenset((_Status.NOMINAL, _Status.WARN, _Status.ERROR))


class SensorSampler(Generic[_T], metaclass=abc.ABCMeta):
    """A ``?sensor-sampling`` strategy: decides when a sensor's readings are reported.

    Build one with :meth:`factory`. The observer is called at once (if set), then
    whenever the strategy says: on a change bigger than ``difference`` (any change when
    it is ``None``, every update with ``always_update``) or of status, but not sooner
    than ``shortest`` seconds after the previous report, and at least every
    ``longest`` seconds when that is set.

    Parameters
    ----------
    sensor : Sensor
        Sensor to watch.
    observer : callable or None
        ``observer(sensor, reading)``; may be set later (the current reading is then
        reported).
    loop : asyncio.AbstractEventLoop
        Loop whose clock and timers are used.
    difference : optional
        Smallest change reported.
    shortest, longest : float
        Rate limits in seconds (``longest=None``: no periodic report).
    always_update : bool
        Report every update.
    is_auto : bool
        This sampler stands for the ``auto`` strategy.
    """

    class Strategy(enum.Enum):
        """The ``?sensor-sampling`` strategies."""

        NONE = 0
        AUTO = 1
        PERIOD = 2
        EVENT = 3
        DIFFERENTIAL = 4
        EVENT_RATE = 5
        DIFFERENTIAL_RATE = 6

    def __init__(self, sensor: Sensor[_T], observer: Optional[Callable],
                 loop: asyncio.AbstractEventLoop, difference: Optional[_T] = None,
                 shortest: core.Timestamp = core.Timestamp(0),
                 longest: Optional[core.Timestamp] = None, *,
                 always_update: bool = False, is_auto: bool = False) -> None:
        self.longest: Optional[float] = None
        if longest is not None:
            self.longest = float(longest)
            if self.longest <= 0:
                raise ValueError("period must be positive")
        self.shortest = float(shortest)
        self.sensor: Optional[Sensor[_T]] = sensor
        self._observer = observer
        self.difference = difference
        self.always_update = always_update
        self.is_auto = is_auto
        self.loop = loop
        self._timer: Optional[asyncio.Handle] = None
        self._last_time = 0.0
        self._last_value: Any = None
        self._last_status: Optional[_Status] = None
        self._waiting = False   # a change is known and its report is scheduled
        sensor.attach(self._receive_update)
        self._report(loop.time(), sensor.reading)

    def __del__(self) -> None:
        if getattr(self, "sensor", None) is not None:
            warnings.warn(f"unclosed SensorSampler {self!r}", ResourceWarning)
            if not self.loop.is_closed():
                try:
                    in_loop = asyncio.get_running_loop() is self.loop
                except RuntimeError:
                    in_loop = False
                try:
                    (self.loop.call_soon if in_loop else self.loop.call_soon_threadsafe)(
                        self.close)
                except Exception:
                    # a loop without call_soon_threadsafe (a simulated one): close now
                    self.close()

    @property
    def observer(self) -> Optional[Callable]:
        return self._observer

    @observer.setter
    def observer(self, observer: Optional[Callable]) -> None:
        assert self.sensor is not None
        self._observer = observer
        self._report(self.loop.time(), self.sensor.reading)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _report(self, when: float, reading: Optional[Reading[_T]]) -> None:
        sensor = self.sensor
        if self._observer is None or sensor is None:
            return
        if reading is None:
            reading = sensor.reading
        self._observer(sensor, reading)
        self._last_time = when
        self._last_value = reading.value
        self._last_status = reading.status
        self._waiting = False
        self._cancel_timer()
        if self.longest is not None:
            due = max(self.loop.time(), when + self.longest)
            self._timer = self.loop.call_at(due, self._report, due, None)

    def _changed(self, reading: Reading[_T]) -> bool:
        if self.always_update or reading.status != self._last_status:
            return True
        if self.difference is None:
            return reading.value != self._last_value
        return abs(reading.value - self._last_value) > self.difference  # type: ignore

    def _receive_update(self, sensor: Sensor[_T], reading: Reading[_T]) -> None:
        if self._waiting or self._observer is None or not self._changed(reading):
            return
        self._waiting = True
        self._cancel_timer()
        now = self.loop.time()
        due = self._last_time + self.shortest
        if not self.shortest or now >= due:
            self._report(now, reading)
        else:
            # the latest reading goes out when the shortest interval ends
            self._timer = self.loop.call_at(due, self._report, due, None)

    def close(self) -> None:
        """Stop watching the sensor; the sampler is not used again."""
        self._cancel_timer()
        if self.sensor is not None:
            self.sensor.detach(self._receive_update)
            self.sensor = None
        self._observer = None

    @abc.abstractmethod
    def _parameters(self) -> tuple:
        """The strategy and its parameters."""

    def parameters(self) -> tuple:
        """The strategy and parameters this sampler was made with."""
        return (_Strategy.AUTO,) if self.is_auto else self._parameters()

    @classmethod
    def factory(cls, sensor: Sensor[_T], observer: Optional[Callable],
                loop: asyncio.AbstractEventLoop, strategy: "SensorSampler.Strategy",
                *args: bytes) -> Optional["SensorSampler[_T]"]:
        """Make the sampler of ``strategy`` with its (encoded) arguments.

        Returns ``None`` for the ``none`` strategy.

        Raises
        ------
        ValueError
            On a wrong number or bad value of the arguments.
        TypeError
            For a differential strategy on a sensor that is not integer or float.
        """
        if strategy is _Strategy.AUTO:
            strategy = sensor.auto_strategy
            sampler_cls = _SAMPLERS[strategy][0]
            values = sensor.auto_strategy_parameters
            is_auto = True
        else:
            sampler_cls, types = _SAMPLERS[strategy]
            if strategy in (_Strategy.DIFFERENTIAL, _Strategy.DIFFERENTIAL_RATE):
                if sensor.stype not in (int, float):
                    raise TypeError(
                        "differential strategies only valid for integer and float sensors")
                types = [sensor.stype] + types[1:]
            if len(types) != len(args):
                raise ValueError(
                    f"expected {len(types)} strategy arguments, found {len(args)}")
            values = tuple(core.decode(t, a) for t, a in zip(types, args))
            is_auto = False
        if sampler_cls is None:
            return None
        return sampler_cls(sensor, observer, loop, *values, is_auto=is_auto)


_Strategy = SensorSampler.Strategy


class _AutoSampler(SensorSampler[_T]):
    def __init__(self, sensor: Sensor[_T], observer: Optional[Callable],
                 loop: asyncio.AbstractEventLoop, *, is_auto: bool) -> None:
        super().__init__(sensor, observer, loop, always_update=True, is_auto=is_auto)

    def _receive_update(self, sensor: Sensor[_T], reading: Reading[_T]) -> None:
        # every update is reported: the one hot path of fan-out, kept short
        observer = self._observer
        if observer is not None:
            observer(sensor, reading)
            self._last_value = reading.value
            self._last_status = reading.status

    def _parameters(self) -> tuple:
        return (_Strategy.AUTO,)


class _PeriodSampler(SensorSampler[_T]):
    def __init__(self, sensor: Sensor[_T], observer: Optional[Callable],
                 loop: asyncio.AbstractEventLoop, period: core.Timestamp, *,
                 is_auto: bool) -> None:
        super().__init__(sensor, observer, loop, shortest=period, longest=period,
                         is_auto=is_auto)

    def _parameters(self) -> tuple:
        return (_Strategy.PERIOD, core.Timestamp(self.shortest))


class _EventSampler(SensorSampler[_T]):
    def __init__(self, sensor: Sensor[_T], observer: Optional[Callable],
                 loop: asyncio.AbstractEventLoop, *, is_auto: bool) -> None:
        super().__init__(sensor, observer, loop, is_auto=is_auto)

    def _parameters(self) -> tuple:
        return (_Strategy.EVENT,)


class _DifferentialSampler(SensorSampler[_T]):
    def __init__(self, sensor: Sensor[_T], observer: Optional[Callable],
                 loop: asyncio.AbstractEventLoop, difference: _T, *,
                 is_auto: bool) -> None:
        super().__init__(sensor, observer, loop, difference=difference, is_auto=is_auto)

    def _parameters(self) -> tuple:
        return (_Strategy.DIFFERENTIAL, self.difference)


class _EventRateSampler(SensorSampler[_T]):
    def __init__(self, sensor: Sensor[_T], observer: Optional[Callable],
                 loop: asyncio.AbstractEventLoop, shortest: core.Timestamp,
                 longest: core.Timestamp, *, is_auto: bool) -> None:
        super().__init__(sensor, observer, loop, shortest=shortest, longest=longest,
                         is_auto=is_auto)

    def _parameters(self) -> tuple:
        return (_Strategy.EVENT_RATE, core.Timestamp(self.shortest),
                core.Timestamp(self.longest))  # type: ignore[arg-type]


class _DifferentialRateSampler(SensorSampler[_T]):
    def __init__(self, sensor: Sensor[_T], observer: Optional[Callable],
                 loop: asyncio.AbstractEventLoop, difference: _T,
                 shortest: core.Timestamp, longest: core.Timestamp, *,
                 is_auto: bool) -> None:
        super().__init__(sensor, observer, loop, difference=difference,
                         shortest=shortest, longest=longest, is_auto=is_auto)

    def _parameters(self) -> tuple:
        return (_Strategy.DIFFERENTIAL_RATE, self.difference,
                core.Timestamp(self.shortest), core.Timestamp(self.longest))  # type: ignore


# strategy -> (sampler class, argument types; the first type of the differential ones
# is replaced by the sensor's own)
_SAMPLERS: Dict[_Strategy, Tuple[Optional[type], List[type]]] = {
    _Strategy.NONE: (None, []),
    _Strategy.AUTO: (_AutoSampler, []),
    _Strategy.PERIOD: (_PeriodSampler, [core.Timestamp]),
    _Strategy.EVENT: (_EventSampler, []),
    _Strategy.DIFFERENTIAL: (_DifferentialSampler, [float]),
    _Strategy.EVENT_RATE: (_EventRateSampler, [core.Timestamp, core.Timestamp]),
    _Strategy.DIFFERENTIAL_RATE: (_DifferentialRateSampler,
                                  [float, core.Timestamp, core.Timestamp]),
}


class _NoDefault(enum.Enum):
    NO_DEFAULT = 0


class SensorSet(Mapping[str, Sensor]):
    """Sensors by name: a mapping you can also ``add``/``remove``/``discard`` like a set.

    Callbacks registered with :meth:`add_add_callback` / :meth:`add_remove_callback`
    get each sensor added or removed.
    """

    __hash__ = None  # type: ignore[assignment]

    def __init__(self) -> None:
        self._sensors: Dict[str, Sensor] = {}
        self._add_callbacks: List[Callable[[Sensor], None]] = []
        self._remove_callbacks: List[Callable[[Sensor], None]] = []

    def _run(self, callbacks: List[Callable[[Sensor], None]], s: Sensor) -> None:
        for callback in list(callbacks):
            callback(s)

    def add_add_callback(self, callback: Callable[[Sensor], None]) -> None:
        """Call ``callback(sensor)`` for every sensor added."""
        self._add_callbacks.append(callback)

    def add_remove_callback(self, callback: Callable[[Sensor], None]) -> None:
        """Call ``callback(sensor)`` for every sensor removed."""
        self._remove_callbacks.append(callback)

    def remove_add_callback(self, callback: Callable[[Sensor], None]) -> None:
        self._add_callbacks.remove(callback)

    def remove_remove_callback(self, callback: Callable[[Sensor], None]) -> None:
        self._remove_callbacks.remove(callback)

    def add(self, elem: Sensor) -> None:
        """Add a sensor, replacing (and removing) another of the same name."""
        old = self._sensors.get(elem.name)
        if old is elem:
            return
        if old is not None:
            del self[elem.name]
        self._sensors[elem.name] = elem
        self._run(self._add_callbacks, elem)

    def remove(self, elem: Sensor) -> None:
        """Remove a sensor; ``KeyError`` if this sensor is not in the set."""
        if elem not in self:
            raise KeyError(elem.name)
        del self[elem.name]

    def discard(self, elem: Sensor) -> None:
        """Remove a sensor if it is in the set."""
        if elem in self:
            del self[elem.name]

    def clear(self) -> None:
        while self._sensors:
            self.popitem()

    def popitem(self) -> Tuple[str, Sensor]:
        name, s = self._sensors.popitem()
        self._run(self._remove_callbacks, s)
        return name, s

    def pop(self, key: str, default: Union[Sensor, None, _NoDefault] = _NoDefault.NO_DEFAULT
            ) -> Optional[Sensor]:
        if key not in self._sensors:
            if default is _NoDefault.NO_DEFAULT:
                raise KeyError(key)
            return default  # type: ignore[return-value]
        s = self._sensors.pop(key)
        self._run(self._remove_callbacks, s)
        return s

    def __delitem__(self, key: str) -> None:
        s = self._sensors.pop(key)
        self._run(self._remove_callbacks, s)

    def __getitem__(self, name: str) -> Sensor:
        return self._sensors[name]

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self._sensors.get(name, default)

    def __contains__(self, s: object) -> bool:
        if isinstance(s, Sensor):
            return self._sensors.get(s.name) is s
        return s in self._sensors

    def __len__(self) -> int:
        return len(self._sensors)

    def __bool__(self) -> bool:
        return bool(self._sensors)

    def __iter__(self) -> Iterator[str]:
        return iter(self._sensors)

    def keys(self):  # type: ignore[override]
        return self._sensors.keys()

    def values(self):  # type: ignore[override]
        return self._sensors.values()

    def items(self):  # type: ignore[override]
        return self._sensors.items()

    def copy(self) -> Dict[str, Sensor]:
        return self._sensors.copy()


class _WeakAggregateObserver:
    """Delta observer holding its aggregate weakly, so sensors don't keep it alive."""

    __slots__ = ("_ref", "__weakref__")

    def __init__(self, aggregate: "AggregateSensor") -> None:
        self._ref = weakref.ref(aggregate)

    def __call__(self, sensor: Sensor, reading: Reading, *, old_reading: Reading) -> None:
        aggregate = self._ref()
        if aggregate is not None:
            aggregate._update_aggregate(sensor, reading, old_reading)


def _set_callbacks(target: SensorSet, aggregate: "AggregateSensor") -> Tuple[Callable, Callable]:
    ref = weakref.ref(aggregate)

    def added(s: Sensor) -> None:
        agg = ref()
        if agg is not None:
            agg._sensor_added(s)

    def removed(s: Sensor) -> None:
        agg = ref()
        if agg is not None:
            agg._sensor_removed(s)

    return added, removed


class AggregateSensor(Sensor[_T], metaclass=abc.ABCMeta):
    """A sensor whose reading is computed from the sensors of a :class:`SensorSet`.

    Subclasses implement :meth:`update_aggregate`; it is called when a sensor of
    ``target`` is added, removed or updated (and once at construction, with ``None``
    arguments) and returns the new :class:`Reading` or ``None`` to keep the current one.

    Parameters
    ----------
    target : SensorSet
        The sensors aggregated (the aggregate itself may be in it; it is ignored).
    sensor_type, name, description, units, auto_strategy, auto_strategy_parameters
        As for :class:`Sensor`.
    """

    def __init__(self, target: SensorSet, sensor_type: Type[_T], name: str,
                 description: str = "", units: str = "", *,
                 auto_strategy: Optional["SensorSampler.Strategy"] = None,
                 auto_strategy_parameters: Iterable[Any] = ()) -> None:
        super().__init__(sensor_type=sensor_type, name=name, description=description,
                         units=units, auto_strategy=auto_strategy,
                         auto_strategy_parameters=auto_strategy_parameters)
        self.target = target
        self._agg_observer = _WeakAggregateObserver(self)
        for s in target.values():
            if self.filter_aggregate(s):
                s.attach(self._agg_observer)
        added, removed = _set_callbacks(target, self)
        target.add_add_callback(added)
        target.add_remove_callback(removed)
        weakref.finalize(self, target.remove_add_callback, added)
        weakref.finalize(self, target.remove_remove_callback, removed)
        self._update_aggregate(None, None, None)

    def __del__(self) -> None:
        observer = getattr(self, "_agg_observer", None)
        target = getattr(self, "target", None)
        if observer is not None and target is not None:
            for s in target.values():
                s.detach(observer)

    @abc.abstractmethod
    def update_aggregate(self, updated_sensor: Optional[Sensor[_U]],
                         reading: Optional[Reading[_U]],
                         old_reading: Optional[Reading[_U]]) -> Optional[Reading[_T]]:
        """Return the aggregate's new reading after a change (``None``: no change).

        ``reading`` is ``None`` when ``updated_sensor`` was removed, ``old_reading``
        when it was added; all three are ``None`` on the first call.
        """

    def filter_aggregate(self, sensor: Sensor) -> bool:
        """Whether ``sensor`` takes part (every sensor but this one by default)."""
        return sensor is not self

    def _update_aggregate(self, updated_sensor: Optional[Sensor], reading: Optional[Reading],
                          old_reading: Optional[Reading]) -> None:
        new = self.update_aggregate(updated_sensor, reading, old_reading)
        if new is not None:
            self.set_value(new.value, new.status, new.timestamp)

    def _sensor_added(self, s: Sensor) -> None:
        if self.filter_aggregate(s):
            s.attach(self._agg_observer)
            self._update_aggregate(s, s.reading, None)

    def _sensor_removed(self, s: Sensor) -> None:
        if self.filter_aggregate(s):
            s.detach(self._agg_observer)
            self._update_aggregate(s, None, s.reading)


class SimpleAggregateSensor(AggregateSensor[_T]):
    """An :class:`AggregateSensor` driven by an internal state of added/removed readings.

    Subclasses implement :meth:`aggregate_add`, :meth:`aggregate_remove` and
    :meth:`aggregate_compute`. Only readings whose status is valid (nominal, warn,
    error) are added at construction. The timestamp is that of the sensor update, or
    the wall clock for an addition or removal, and never goes backwards.
    """

    @abc.abstractmethod
    def aggregate_add(self, sensor: Sensor[_U], reading: Reading[_U]) -> bool:
        """Take a reading into the state; True if the aggregate must be recomputed."""

    @abc.abstractmethod
    def aggregate_remove(self, sensor: Sensor[_U], reading: Reading[_U]) -> bool:
        """Take a reading out of the state; True if the aggregate must be recomputed."""

    @abc.abstractmethod
    def aggregate_compute(self) -> Tuple[_Status, _T]:
        """The status and value of the aggregate from the state."""

    def update_aggregate(self, updated_sensor: Optional[Sensor[_U]],
                         reading: Optional[Reading[_U]],
                         old_reading: Optional[Reading[_U]]) -> Optional[Reading[_T]]:
        if updated_sensor is None:
            for s in self.target.values():
                if self.filter_aggregate(s) and s.reading.status.valid_value():
                    self.aggregate_add(s, s.reading)
            timestamp = time.time()
        else:
            changed = False
            if old_reading is not None:
                changed |= bool(self.aggregate_remove(updated_sensor, old_reading))
            if reading is not None:
                changed |= bool(self.aggregate_add(updated_sensor, reading))
            if not changed:
                return None
            if reading is not None and old_reading is not None:
                timestamp = reading.timestamp
            else:
                timestamp = time.time()
        status, value = self.aggregate_compute()
        return Reading(max(timestamp, self.timestamp), status, value)
