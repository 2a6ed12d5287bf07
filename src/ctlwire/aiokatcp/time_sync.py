"""aiokatcp-compatible clock-health sensors from Linux's ``adjtimex(2)``.

:class:`TimeSyncUpdater` sets sensors from the kernel's clock discipline: its state
(``state``, a :class:`ClockState`), maximum and estimated error (``maxerror``,
``esterror``, seconds). ``adjtimex`` with ``modes = 0`` only reads, needs no privilege
and works inside containers. Where it does not exist (not Linux) the sensors are set
``INACTIVE``.

Layering: imports the standard library and :mod:`.sensor`.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import enum
import sys
from typing import Callable, Dict, Mapping, Optional, Tuple

from .sensor import Sensor

__all__ = ["ClockState", "TimeSyncUpdater", "get_adjtimex", "Timex"]

#: ``timex.status`` bit: ``time.tv_usec`` holds nanoseconds.
STA_NANO = 0x2000
#: ``timex.status`` bit: the clock is not synchronised.
STA_UNSYNC = 0x0040


class ClockState(enum.Enum):
    """The return value of ``adjtimex`` (the kernel's ``TIME_*`` constants)."""

    OK = 0
    INS = 1
    DEL = 2
    OOP = 3
    WAIT = 4
    ERROR = 5


class Timeval(ctypes.Structure):
    """``struct timeval``."""

    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class Timex(ctypes.Structure):
    """``struct timex`` of ``<sys/timex.h>`` (Linux ABI)."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


_adjtimex: Optional[Callable] = None


def _load() -> Optional[Callable]:
    global _adjtimex
    if _adjtimex is None and sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = getattr(libc, "adjtimex", None)
        if func is not None:
            func.argtypes = [ctypes.POINTER(Timex)]
            func.restype = ctypes.c_int
            _adjtimex = func
    return _adjtimex


def get_adjtimex() -> Tuple[int, Timex]:
    """Read the kernel's clock state: ``(return value, struct timex)``.

    Raises
    ------
    NotImplementedError
        Where there is no ``adjtimex`` (not Linux).
    OSError
        If the call fails.
    """
    func = _load()
    if func is None:
        raise NotImplementedError("adjtimex is only available on Linux")
    timex = Timex()
    timex.modes = 0  # read only
    state = func(ctypes.byref(timex))
    if state < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"adjtimex failed (errno {err})")
    return state, timex


def _micro_to_seconds(value: int) -> float:
    return 1e-6 * value


_CONVERT: Mapping[str, Callable] = {
    "state": ClockState,
    "maxerror": _micro_to_seconds,
    "esterror": _micro_to_seconds,
}


class TimeSyncUpdater:
    """Sets clock-health sensors from ``adjtimex``.

    Parameters
    ----------
    sensor_map : mapping
        Sensors by what they show, any of ``state`` (a :class:`ClockState` sensor),
        ``maxerror`` and ``esterror`` (float sensors, seconds).

    Raises
    ------
    KeyError
        For a key that is none of those.
    """

    def __init__(self, sensor_map: Mapping[str, Sensor]) -> None:
        self.sensor_map: Dict[str, Sensor] = dict(sensor_map)
        for key in self.sensor_map:
            if key not in _CONVERT:
                raise KeyError(f"Key {key!r} is not valid")

    def update(self) -> None:
        """Read the clock state now and set the sensors (timestamped by the kernel's
        clock reading); ``INACTIVE`` where ``adjtimex`` does not exist."""
        try:
            state, timex = get_adjtimex()
        except NotImplementedError:
            for s in self.sensor_map.values():
                s.set_value(s.value, Sensor.Status.INACTIVE)
            return
        scale = 1e-9 if timex.status & STA_NANO else 1e-6
        now = timex.time.tv_sec + scale * timex.time.tv_usec
        for key, s in self.sensor_map.items():
            raw = state if key == "state" else getattr(timex, key)
            s.set_value(_CONVERT[key](raw), timestamp=now)
