"""Sensor sampling strategies: when a client gets a ``#sensor-status`` inform.

Each client chooses a strategy per sensor with ``?sensor-sampling``. A strategy is fed
every sensor update through :meth:`SampleStrategy.update` and decides, with timers on
an asyncio event loop for the time-based ones, when to call its inform callback
``callback(sensor, reading)``.

======================  =====================  =========================================
strategy                params                 sends
======================  =====================  =========================================
``none``                                       never
``auto``                                       on every update
``period``              p > 0 (s)              at once, then every p s on a fixed grid
``event``                                      when value or status changes
``differential``        d > 0                  when abs(change) > d or status changes
``event-rate``          shortest longest (s)   on change, at most once per shortest and
                                               at least once per longest
``differential-rate``   d shortest longest     differential, with the event-rate limits
======================  =====================  =========================================

All methods except construction must be called in the loop's thread; the device server
hands sensor updates made in other threads over to its loop before they reach a
strategy.

Layering: imports ``ctlwire.katcp.sensor`` only.
"""
from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Callable

from .sensor import Reading, Sensor

__all__ = [
    "SampleStrategy",
    "SampleNone",
    "SampleAuto",
    "SamplePeriod",
    "SampleEvent",
    "SampleDifferential",
    "SampleEventRate",
    "SampleDifferentialRate",
]

log = logging.getLogger("ctlwire.katcp.sampling")

InformCallback = Callable[[Sensor, Reading], Any]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _float_param(value: Any, what: str) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, not '{_text(value)}'") from None
    if math.isnan(result):
        raise ValueError(f"{what} must be a number, not NaN")
    return result


class SampleStrategy:
    """Base class of the sampling strategies.

    Parameters
    ----------
    inform_callback : callable
        Called as ``inform_callback(sensor, reading)`` whenever a reading must be sent.
    sensor : Sensor
        The sampled sensor.
    *params : bytes or str or number
        Strategy parameters as given on the wire (echoed back unchanged by
        :meth:`get_sampling_formatted`).
    loop : asyncio.AbstractEventLoop, optional
        Loop for the timers (default: the running loop when started).
    """

    NONE, AUTO, PERIOD, EVENT, DIFFERENTIAL, EVENT_RATE, DIFFERENTIAL_RATE = range(7)
    SAMPLING_LOOKUP = {
        NONE: b"none",
        AUTO: b"auto",
        PERIOD: b"period",
        EVENT: b"event",
        DIFFERENTIAL: b"differential",
        EVENT_RATE: b"event-rate",
        DIFFERENTIAL_RATE: b"differential-rate",
    }
    SAMPLING_LOOKUP_REV = {v: k for k, v in SAMPLING_LOOKUP.items()}
    #: Whether the strategy needs every sensor update (False: timers only).
    OBSERVE_UPDATES = False

    __slots__ = ("_inform_callback", "_sensor", "_params", "_loop", "_attached", "_cancelled")

    def __init__(self, inform_callback: InformCallback, sensor: Sensor, *params: Any,
                 loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any):
        self._inform_callback = inform_callback
        self._sensor = sensor
        self._params = params
        self._loop = loop
        self._attached = False
        self._cancelled = False

    @classmethod
    def get_strategy(cls, strategyName: str | bytes, inform_callback: InformCallback,
                     sensor: Sensor, *params: Any, **kwargs: Any) -> "SampleStrategy":
        """Make the strategy called ``strategyName`` (e.g. ``"event-rate"``).

        Raises
        ------
        ValueError
            Unknown strategy, or parameters that do not fit it or the sensor type.
        """
        name = strategyName.encode("ascii", "replace") if isinstance(strategyName, str) \
            else bytes(strategyName)
        try:
            code = cls.SAMPLING_LOOKUP_REV[name]
        except KeyError:
            known = ", ".join(v.decode() for v in cls.SAMPLING_LOOKUP.values())
            raise ValueError(f"Unknown sampling strategy '{_text(name)}'. "
                             f"Known strategies are {known}.") from None
        return _STRATEGY_CLASSES[code](inform_callback, sensor, *params, **kwargs)

    # -- what it is ---------------------------------------------------------------------
    def get_sampling(self) -> int:  # pragma: no cover - abstract
        """Return the strategy constant (``SampleStrategy.AUTO``, ...)."""
        raise NotImplementedError

    def get_sampling_formatted(self) -> tuple[bytes, list[bytes]]:
        """Return ``(strategy_name, params)`` as byte strings, as the reply echoes them."""
        params = [p if isinstance(p, bytes) else str(p).encode("ascii")
                  for p in self._params]
        return self.SAMPLING_LOOKUP[self.get_sampling()], params

    @property
    def sensor(self) -> Sensor:
        """The sampled sensor."""
        return self._sensor

    # -- life cycle ---------------------------------------------------------------------
    def update(self, sensor: Sensor, reading: Reading) -> None:
        """Receive a sensor update (no-op for strategies that use only timers)."""

    def attach(self) -> None:
        """Send the current reading as an update, then observe the sensor directly."""
        self.update(self._sensor, self._sensor.read())
        self._sensor.attach(self)
        self._attached = True

    def detach(self) -> None:
        """Stop observing the sensor directly."""
        if self._attached:
            self._sensor.detach(self)
            self._attached = False

    def start(self, observe: bool = True) -> None:
        """Start sampling: send what must be sent now and arm the timers.

        Parameters
        ----------
        observe : bool, optional
            Attach to the sensor to receive its updates. A device server passes False
            and feeds :meth:`update` itself from its event loop.
        """
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if self.OBSERVE_UPDATES:
            if observe:
                self.attach()
            else:
                self.update(self._sensor, self._sensor.read())

    def cancel(self) -> None:
        """Stop sampling: detach and cancel timers. No inform is sent afterwards."""
        self._cancelled = True
        self.detach()
        self.cancel_timeouts()

    def cancel_timeouts(self) -> None:
        """Cancel pending timers (subclasses with timers override)."""

    def inform(self, reading: Reading) -> None:
        """Send ``reading`` through the inform callback (errors are logged)."""
        try:
            self._inform_callback(self._sensor, reading)
        except Exception:
            log.exception("Unhandled exception sending %r for sensor %r", reading,
                          self._sensor.name)


class SampleNone(SampleStrategy):
    """Never send anything."""

    __slots__ = ()

    def __init__(self, inform_callback: InformCallback, sensor: Sensor, *params: Any,
                 **kwargs: Any):
        super().__init__(inform_callback, sensor, *params, **kwargs)
        if params:
            raise ValueError("The 'none' strategy takes no parameters.")

    def start(self, observe: bool = True) -> None:
        """Nothing to start."""

    def get_sampling(self) -> int:
        return SampleStrategy.NONE


class SampleAuto(SampleStrategy):
    """Send every update."""

    __slots__ = ()
    OBSERVE_UPDATES = True

    def __init__(self, inform_callback: InformCallback, sensor: Sensor, *params: Any,
                 **kwargs: Any):
        super().__init__(inform_callback, sensor, *params, **kwargs)
        if params:
            raise ValueError("The 'auto' strategy takes no parameters.")

    @classmethod
    def started(cls, inform_callback: InformCallback, sensor: Sensor,
                loop: asyncio.AbstractEventLoop | None) -> "SampleAuto":
        """An ``auto`` strategy that counts as started, for a device server that feeds
        it and has sent the first reading itself (a bulk ``?sensor-sampling``: the
        checks of the constructor and :meth:`start` have nothing to check)."""
        self = cls.__new__(cls)
        self._inform_callback = inform_callback
        self._sensor = sensor
        self._params = ()
        self._loop = loop
        self._attached = False
        self._cancelled = False
        return self

    def update(self, sensor: Sensor, reading: Reading) -> None:
        self.inform(reading)

    def get_sampling(self) -> int:
        return SampleStrategy.AUTO


class SamplePeriod(SampleStrategy):
    """Send the current reading at once and then every ``period`` seconds.

    Deadlines sit on a fixed grid (start + k * period) so the rate does not drift with
    loop latency; if the loop falls more than a period behind, the grid restarts from
    now instead of sending a burst.
    """

    __slots__ = ("_period", "_next_time", "_handle")

    def __init__(self, inform_callback: InformCallback, sensor: Sensor, *params: Any,
                 **kwargs: Any):
        super().__init__(inform_callback, sensor, *params, **kwargs)
        if len(params) != 1:
            raise ValueError("The 'period' strategy takes one parameter.")
        period = _float_param(params[0], "The period")
        if not period > 0 or math.isinf(period):
            raise ValueError("The period must be a positive number of seconds.")
        self._period = period
        self._next_time = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self, observe: bool = True) -> None:
        super().start(observe)
        assert self._loop is not None
        self._next_time = self._loop.time()
        self._run_once()

    def _run_once(self) -> None:
        if self._cancelled:
            return
        loop = self._loop
        assert loop is not None
        now = loop.time()
        self.inform(self._sensor.read())
        self._next_time += self._period
        if self._next_time < now:
            self._next_time = now + self._period
        self._handle = loop.call_at(self._next_time, self._run_once)

    def cancel_timeouts(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def get_sampling(self) -> int:
        return SampleStrategy.PERIOD


class SampleDifferential(SampleStrategy):
    """Send when the value moves by more than a threshold or the status changes.

    Only for integer, float and timestamp sensors.
    """

    __slots__ = ("_threshold", "_last_status", "_last_value")
    OBSERVE_UPDATES = True

    def __init__(self, inform_callback: InformCallback, sensor: Sensor, *params: Any,
                 **kwargs: Any):
        super().__init__(inform_callback, sensor, *params, **kwargs)
        if len(params) != 1:
            raise ValueError("The 'differential' strategy takes one parameter.")
        self._threshold = _differential_threshold(sensor, params[0], "differential")
        self._last_status: int | None = None
        self._last_value: Any = None

    def update(self, sensor: Sensor, reading: Reading) -> None:
        _, status, value = reading
        if status != self._last_status or abs(value - self._last_value) > self._threshold:
            self._last_status = status
            self._last_value = value
            self.inform(reading)

    def get_sampling(self) -> int:
        return SampleStrategy.DIFFERENTIAL


def _differential_threshold(sensor: Sensor, param: Any, name: str) -> float:
    stype = sensor._sensor_type
    if stype not in (Sensor.INTEGER, Sensor.FLOAT, Sensor.TIMESTAMP):
        raise ValueError(f"The '{name}' strategy is only valid for float, integer and "
                         "timestamp sensors.")
    if stype == Sensor.INTEGER:
        try:
            threshold: float = int(param)
        except (TypeError, ValueError):
            raise ValueError(f"The difference must be an integer, not '{_text(param)}'") \
                from None
    else:
        threshold = _float_param(param, "The difference")
    if not threshold > 0:
        raise ValueError("The difference must be positive.")
    return threshold


class SampleEventRate(SampleStrategy):
    """Send changes, at most once per ``shortest`` and at least once per ``longest`` s."""

    __slots__ = ("_shortest", "_longest", "_not_before", "_not_after", "_last_sent",
                 "_short_handle", "_long_handle")
    OBSERVE_UPDATES = True

    def __init__(self, inform_callback: InformCallback, sensor: Sensor, *params: Any,
                 **kwargs: Any):
        super().__init__(inform_callback, sensor, *params, **kwargs)
        if len(params) != 2:
            raise ValueError("The 'event-rate' strategy takes two parameters.")
        self._init_rate(params[0], params[1])

    def _init_rate(self, shortest_param: Any, longest_param: Any) -> None:
        shortest = _float_param(shortest_param, "The shortest period")
        longest = _float_param(longest_param, "The longest period")
        if not 0 <= shortest <= longest:
            raise ValueError("The shortest and longest periods must satisfy "
                             "0 <= shortest <= longest.")
        self._shortest = shortest
        self._longest = longest
        self._not_before = 0.0
        self._not_after = math.inf
        self._last_sent: tuple = (None, None, None)
        self._short_handle: asyncio.TimerHandle | None = None
        self._long_handle: asyncio.TimerHandle | None = None

    def _changed(self, reading: Reading) -> bool:
        _, last_status, last_value = self._last_sent
        return reading[1] != last_status or reading[2] != last_value

    def inform(self, reading: Reading) -> None:
        super().inform(reading)
        assert self._loop is not None
        now = self._loop.time()
        self._not_before = now + self._shortest
        self._not_after = now + self._longest
        self._last_sent = reading
        if self._long_handle is None and not math.isinf(self._longest) \
                and not self._cancelled:
            self._long_handle = self._loop.call_at(self._not_after, self._long_timeout)

    def update(self, sensor: Sensor, reading: Reading) -> None:
        if not self._changed(reading):
            return
        assert self._loop is not None
        if self._loop.time() < self._not_before:
            if self._short_handle is None:
                self._short_handle = self._loop.call_at(self._not_before,
                                                        self._short_timeout)
        else:
            self.inform(reading)

    def _short_timeout(self) -> None:
        self._short_handle = None
        if not self._cancelled:
            reading = self._sensor.read()
            if self._changed(reading):
                self.inform(reading)

    def _long_timeout(self) -> None:
        # One timer at a time: when it fires early (a send moved the deadline), re-arm.
        self._long_handle = None
        if self._cancelled:
            return
        assert self._loop is not None
        if self._loop.time() >= self._not_after:
            self.inform(self._sensor.read())
        else:
            self._long_handle = self._loop.call_at(self._not_after, self._long_timeout)

    def cancel_timeouts(self) -> None:
        for handle in (self._short_handle, self._long_handle):
            if handle is not None:
                handle.cancel()
        self._short_handle = self._long_handle = None

    def get_sampling(self) -> int:
        return SampleStrategy.EVENT_RATE


class SampleEvent(SampleEventRate):
    """Send whenever the value or the status changes."""

    __slots__ = ()

    def __init__(self, inform_callback: InformCallback, sensor: Sensor, *params: Any,
                 **kwargs: Any):
        if params:
            raise ValueError("The 'event' strategy takes no parameters.")
        SampleStrategy.__init__(self, inform_callback, sensor, **kwargs)
        self._init_rate(0, math.inf)

    def get_sampling(self) -> int:
        return SampleStrategy.EVENT


class SampleDifferentialRate(SampleEventRate):
    """Differential sampling with the event-rate limits: ``d shortest longest``."""

    __slots__ = ("_difference",)

    def __init__(self, inform_callback: InformCallback, sensor: Sensor, *params: Any,
                 **kwargs: Any):
        if len(params) != 3:
            raise ValueError("The 'differential-rate' strategy takes three parameters.")
        SampleStrategy.__init__(self, inform_callback, sensor, *params, **kwargs)
        self._difference = _differential_threshold(sensor, params[0], "differential-rate")
        self._init_rate(params[1], params[2])

    def _changed(self, reading: Reading) -> bool:
        _, last_status, last_value = self._last_sent
        if reading[1] != last_status or last_value is None:
            return True
        return abs(reading[2] - last_value) > self._difference

    def get_sampling(self) -> int:
        return SampleStrategy.DIFFERENTIAL_RATE


_STRATEGY_CLASSES = {
    SampleStrategy.NONE: SampleNone,
    SampleStrategy.AUTO: SampleAuto,
    SampleStrategy.PERIOD: SamplePeriod,
    SampleStrategy.EVENT: SampleEvent,
    SampleStrategy.DIFFERENTIAL: SampleDifferential,
    SampleStrategy.EVENT_RATE: SampleEventRate,
    SampleStrategy.DIFFERENTIAL_RATE: SampleDifferentialRate,
}
