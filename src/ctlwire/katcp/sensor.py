"""KATCP sensors: typed values with a status and a timestamp, observed by samplers.

A :class:`Sensor` holds its current :class:`Reading` ``(timestamp, status, value)``.
Setting it notifies every attached observer with ``observer.update(sensor, reading)``
in the thread that set it; the device server's observer hands updates from other
threads over to its event loop in batches.

Layering: imports ``ctlwire.katcp.core`` and ``kattypes``.
"""
from __future__ import annotations

import numbers
import time
from typing import Any, Iterable, NamedTuple

from .core import DEFAULT_KATCP_MAJOR, KatcpSyntaxError, escape_argument
from .kattypes import (
    Address,
    Bool,
    Discrete,
    Float,
    Int,
    KatcpType,
    Lru,
    Str,
    Timestamp,
)

__all__ = ["Sensor", "Reading"]


class Reading(NamedTuple):
    """One sensor reading: when, how healthy, what value."""

    timestamp: float
    status: int
    value: Any


_TIMESTAMP = Timestamp()


class Sensor:
    """A typed, timestamped value with a status, as a device publishes it.

    Parameters
    ----------
    sensor_type : int or type
        One of the type constants (``Sensor.INTEGER``, ``Sensor.FLOAT``,
        ``Sensor.BOOLEAN``, ``Sensor.LRU``, ``Sensor.DISCRETE``, ``Sensor.STRING``,
        ``Sensor.TIMESTAMP``, ``Sensor.ADDRESS``) or the shortcuts ``int``,
        ``float``, ``str``, ``bool``.
    name : str
        Sensor name, e.g. ``"psu.voltage"``.
    description : str, optional
        One line for operators; a default is made from type, name and units.
    units : str, optional
        Units of the value (empty for none; must be empty for timestamps).
    params : list, optional
        ``[min, max]`` for integer and float sensors (informational); the allowed
        values for discrete sensors (required, at least one).
    default : object, optional
        Initial value (default: 0, 0.0, False, nominal, first discrete value, "",
        0.0, ``("0.0.0.0", None)``; for integer/float with a range that excludes 0,
        the minimum).
    initial_status : int, optional
        Initial status (default ``Sensor.UNKNOWN``).

    Examples
    --------
    >>> s = Sensor.float("psu.voltage", "PSU voltage", "V", [0.0, 5.0])
    >>> s.set_value(4.5)
    >>> s.value()
    4.5
    """

    __slots__ = (
        "_sensor_type", "_observers", "_observer_tuple", "_kattype", "_current_reading",
        "_formatter", "_parser", "_wire", "type", "stype", "name", "description", "units",
        "params", "formatted_params", "__weakref__", "__dict__",
    )

    INTEGER, FLOAT, BOOLEAN, LRU, DISCRETE, STRING, TIMESTAMP, ADDRESS = range(8)

    SENSOR_TYPES: dict[int, tuple[type, Any]] = {
        INTEGER: (Int, 0),
        FLOAT: (Float, 0.0),
        BOOLEAN: (Bool, False),
        LRU: (Lru, Lru.LRU_NOMINAL),
        DISCRETE: (Discrete, "unknown"),
        STRING: (Str, ""),
        TIMESTAMP: (Timestamp, 0.0),
        ADDRESS: (Address, Address.NULL),
    }
    SENSOR_SHORTCUTS = {int: INTEGER, float: FLOAT, str: STRING, bool: BOOLEAN}
    SENSOR_TYPE_LOOKUP = {cls.name: code for code, (cls, _) in SENSOR_TYPES.items()}

    UNKNOWN, NOMINAL, WARN, ERROR, FAILURE, UNREACHABLE, INACTIVE = range(7)
    STATUSES_RAW = {
        UNKNOWN: b"unknown",
        NOMINAL: b"nominal",
        WARN: b"warn",
        ERROR: b"error",
        FAILURE: b"failure",
        UNREACHABLE: b"unreachable",
        INACTIVE: b"inactive",
    }
    STATUSES = {k: v.decode() for k, v in STATUSES_RAW.items()}
    STATUS_NAMES = {v: k for k, v in STATUSES.items()}
    STATUS_NAMES_RAW = {v: k for k, v in STATUSES_RAW.items()}

    LRU_NOMINAL, LRU_ERROR = Lru.LRU_NOMINAL, Lru.LRU_ERROR
    LRU_VALUES = Lru.LRU_VALUES
    LRU_CONSTANTS = Lru.LRU_CONSTANTS
    TIMESTAMP_TYPE = _TIMESTAMP

    def __init__(self, sensor_type: Any, name: str, description: str | None = None,
                 units: str | None = None, params: list | None = None, default: Any = None,
                 initial_status: int | None = None):
        units = "" if units is None else _native(units)
        params = [] if params is None else list(params)
        if initial_status is None:
            initial_status = Sensor.UNKNOWN
        if initial_status not in self.STATUSES:
            raise ValueError(f"Sensor {name!r}: unknown initial status {initial_status!r}")
        sensor_type = self.SENSOR_SHORTCUTS.get(sensor_type, sensor_type)
        if sensor_type not in self.SENSOR_TYPES:
            raise ValueError(f"Sensor {name!r}: unknown sensor type {sensor_type!r}")
        typeclass, default_value = self.SENSOR_TYPES[sensor_type]
        if sensor_type in (Sensor.INTEGER, Sensor.FLOAT):
            # Ranges are informational since KATCP v5: shown, not enforced.
            if len(params) == 2 and not params[0] <= default_value <= params[1]:
                default_value = params[0]
            kattype: KatcpType = typeclass()
        elif sensor_type == Sensor.DISCRETE:
            params = [_native(p) for p in params]
            if not params:
                raise ValueError(f"Discrete sensor {name!r} needs at least one allowed value")
            default_value = params[0]
            kattype = typeclass(params)
        else:
            if sensor_type == Sensor.TIMESTAMP and units:
                raise ValueError(
                    f"Timestamp sensor {name!r}: units cannot be given (KATCP fixes them "
                    "as seconds)")
            kattype = typeclass()
        if default is not None:
            default_value = default
        self._sensor_type = sensor_type
        self._observers: dict[Any, None] = {}
        self._observer_tuple: tuple = ()
        self._kattype = kattype
        self._formatter = kattype.pack
        self._parser = kattype.unpack
        self._wire = _WIRE_FORMATTERS[sensor_type]
        self.type = self.stype = kattype.name
        self.name = _native(name)
        if description is None:
            unit_text = f"in unit {units}" if units else "with no unit"
            description = f"{self.stype.capitalize()} sensor {self.name!r} {unit_text}"
        self.description = _native(description)
        self.units = units
        self.params = params
        self.formatted_params = [self._formatter(p, True) for p in params]
        # One attribute holds the whole reading, so readers in other threads never see
        # a timestamp from one update and a value from another.
        self._current_reading = Reading(time.time(), initial_status, default_value)

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__name__} name={self.name!r} " \
               f"type={self.stype}>"

    # -- type constructors -------------------------------------------------------------
    @classmethod
    def integer(cls, name: str, description: str | None = None, unit: str = "",
                params: list | None = None, default: int | None = None,
                initial_status: int | None = None) -> "Sensor":
        """Make an integer sensor; ``params`` is ``[min, max]``."""
        return cls(cls.INTEGER, name, description, unit, params, default, initial_status)

    @classmethod
    def float(cls, name: str, description: str | None = None, unit: str = "",
              params: list | None = None, default: float | None = None,
              initial_status: int | None = None) -> "Sensor":
        """Make a float sensor; ``params`` is ``[min, max]``."""
        return cls(cls.FLOAT, name, description, unit, params, default, initial_status)

    @classmethod
    def boolean(cls, name: str, description: str | None = None, unit: str = "",
                default: bool | None = None, initial_status: int | None = None) -> "Sensor":
        """Make a boolean sensor."""
        return cls(cls.BOOLEAN, name, description, unit, None, default, initial_status)

    @classmethod
    def lru(cls, name: str, description: str | None = None, unit: str = "",
            default: int | None = None, initial_status: int | None = None) -> "Sensor":
        """Make an LRU sensor (``Sensor.LRU_NOMINAL`` / ``Sensor.LRU_ERROR``)."""
        return cls(cls.LRU, name, description, unit, None, default, initial_status)

    @classmethod
    def string(cls, name: str, description: str | None = None, unit: str = "",
               default: str | None = None, initial_status: int | None = None) -> "Sensor":
        """Make a string sensor."""
        return cls(cls.STRING, name, description, unit, None, default, initial_status)

    @classmethod
    def discrete(cls, name: str, description: str | None = None, unit: str = "",
                 params: list | None = None, default: str | None = None,
                 initial_status: int | None = None) -> "Sensor":
        """Make a discrete sensor; ``params`` lists the allowed values."""
        return cls(cls.DISCRETE, name, description, unit, params, default, initial_status)

    @classmethod
    def timestamp(cls, name: str, description: str | None = None, unit: str = "",
                  default: float | None = None, initial_status: int | None = None) -> "Sensor":
        """Make a timestamp sensor (seconds since the epoch)."""
        return cls(cls.TIMESTAMP, name, description, unit, None, default, initial_status)

    @classmethod
    def address(cls, name: str, description: str | None = None, unit: str = "",
                default: tuple | None = None, initial_status: int | None = None) -> "Sensor":
        """Make an address sensor; values are ``(host, port)``."""
        return cls(cls.ADDRESS, name, description, unit, None, default, initial_status)

    # -- observers ---------------------------------------------------------------------
    def attach(self, observer: Any) -> None:
        """Attach an observer; it gets ``observer.update(sensor, reading)`` on every set."""
        self._observers[observer] = None
        self._observer_tuple = tuple(self._observers)

    def detach(self, observer: Any) -> None:
        """Detach an observer (no error if it was not attached)."""
        self._observers.pop(observer, None)
        self._observer_tuple = tuple(self._observers)

    def notify(self, reading: Reading | None = None) -> None:
        """Tell every observer about ``reading`` (default: the current reading)."""
        if reading is None:
            reading = self._current_reading
        for observer in self._observer_tuple:
            observer.update(self, reading)

    # -- reading -----------------------------------------------------------------------
    def read(self) -> Reading:
        """Return the current ``(timestamp, status, value)`` reading."""
        return self._current_reading

    def value(self) -> Any:
        """Return the current value."""
        return self._current_reading[2]

    def status(self) -> int:
        """Return the current status constant."""
        return self._current_reading[1]

    def read_formatted(self, major: int = DEFAULT_KATCP_MAJOR) -> tuple[bytes, bytes, bytes]:
        """Return the current reading as KATCP byte strings ``(timestamp, status, value)``."""
        return self.format_reading(self._current_reading, major)

    def format_reading(self, reading: Reading,
                       major: int = DEFAULT_KATCP_MAJOR) -> tuple[bytes, bytes, bytes]:
        """Format ``reading`` (of this sensor) as KATCP byte strings."""
        timestamp, status, value = reading
        return (_TIMESTAMP.encode(timestamp, major), self.STATUSES_RAW[status],
                self._formatter(value, True, major))

    def _wire_value(self, value: Any) -> bytes:
        """The value as an escaped wire argument (server fast path)."""
        return self._wire(self, value)

    # -- setting -----------------------------------------------------------------------
    def set(self, timestamp: float, status: int, value: Any) -> None:
        """Set the reading without checks and notify the observers."""
        reading = self._current_reading = Reading(timestamp, status, value)
        self.notify(reading)

    def set_value(self, value: Any, status: int = NOMINAL, timestamp: float | None = None,
                  major: int = DEFAULT_KATCP_MAJOR) -> None:
        """Check ``value`` and ``status`` against this sensor, then set them.

        Parameters
        ----------
        value : object
            A value of the sensor's type.
        status : int, optional
            Status constant (default ``Sensor.NOMINAL``).
        timestamp : float, optional
            When the value was measured (default: now).

        Raises
        ------
        ValueError
            The value does not fit the sensor type, or the status is unknown.
        """
        self.check_value(value, major)
        if status not in self.STATUSES:
            raise ValueError(f"Sensor {self.name!r}: unknown status {status!r}")
        if timestamp is None:
            timestamp = time.time()
        self.set(timestamp, status, value)

    def check_value(self, value: Any, major: int = DEFAULT_KATCP_MAJOR) -> None:
        """Raise ``ValueError`` naming the sensor if ``value`` does not fit its type."""
        stype = self._sensor_type
        ok = True
        if stype == Sensor.INTEGER:
            ok = isinstance(value, numbers.Integral)
        elif stype in (Sensor.FLOAT, Sensor.TIMESTAMP):
            ok = isinstance(value, numbers.Real)
        elif stype == Sensor.BOOLEAN:
            ok = isinstance(value, (bool, numbers.Integral)) and value in (0, 1)
        elif stype == Sensor.STRING:
            ok = isinstance(value, (str, bytes))
        elif stype == Sensor.LRU:
            ok = isinstance(value, numbers.Integral) and value in Lru.LRU_VALUES
        if not ok:
            raise ValueError(f"Sensor {self.name!r}: value {value!r} is not a valid "
                             f"{self.stype}")
        try:
            self._kattype.check(value, major)
        except ValueError as exc:
            raise ValueError(f"Sensor {self.name!r}: {exc}") from None

    def set_formatted(self, raw_timestamp: bytes, raw_status: bytes, raw_value: bytes,
                      major: int = DEFAULT_KATCP_MAJOR) -> None:
        """Set the reading from KATCP byte strings (as a client receives them)."""
        timestamp = _TIMESTAMP.decode(raw_timestamp, major)
        try:
            status = self.STATUS_NAMES_RAW[raw_status]
        except KeyError:
            raise ValueError(f"Sensor {self.name!r}: unknown status {raw_status!r}") from None
        self.set(timestamp, status, self.parse_value(raw_value, major))

    def parse_value(self, s_value: bytes, katcp_major: int = DEFAULT_KATCP_MAJOR) -> Any:
        """Parse a KATCP byte string into a value of this sensor's type."""
        if not isinstance(s_value, bytes):
            raise ValueError(f"Sensor value must be bytes, not {type(s_value).__name__}")
        return self._parser(s_value, katcp_major)

    @classmethod
    def parse_type(cls, type_string: str | bytes) -> int:
        """Return the type constant for a KATCP type name such as ``"float"``."""
        name = _native(type_string)
        try:
            return cls.SENSOR_TYPE_LOOKUP[name]
        except KeyError:
            raise KatcpSyntaxError(f"Invalid sensor type string {name!r}") from None

    @classmethod
    def parse_params(cls, sensor_type: int, formatted_params: Iterable[bytes],
                     major: int = DEFAULT_KATCP_MAJOR) -> list:
        """Parse ``?sensor-list`` parameters into Python values for ``sensor_type``."""
        typeclass, _ = cls.SENSOR_TYPES[sensor_type]
        kattype = typeclass([]) if sensor_type == cls.DISCRETE else typeclass()
        return [kattype.decode(p, major) for p in formatted_params]


def _native(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


# Wire formatters: value -> escaped bytes. Numeric forms never need escaping.
def _wire_int(sensor: Sensor, value: Any) -> bytes:
    return b"%d" % value


def _wire_float(sensor: Sensor, value: Any) -> bytes:
    return repr(float(value)).encode()


def _wire_bool(sensor: Sensor, value: Any) -> bytes:
    return b"1" if value else b"0"


def _wire_lru(sensor: Sensor, value: Any) -> bytes:
    return Lru.LRU_VALUES[value]


def _wire_text(sensor: Sensor, value: Any) -> bytes:
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return escape_argument(raw) if raw else b"\\@"


def _wire_timestamp(sensor: Sensor, value: Any) -> bytes:
    return b"%.6f" % value


def _wire_address(sensor: Sensor, value: Any) -> bytes:
    return escape_argument(sensor._kattype.encode(value, DEFAULT_KATCP_MAJOR))


_WIRE_FORMATTERS = {
    Sensor.INTEGER: _wire_int,
    Sensor.FLOAT: _wire_float,
    Sensor.BOOLEAN: _wire_bool,
    Sensor.LRU: _wire_lru,
    Sensor.DISCRETE: _wire_text,
    Sensor.STRING: _wire_text,
    Sensor.TIMESTAMP: _wire_timestamp,
    Sensor.ADDRESS: _wire_address,
}
