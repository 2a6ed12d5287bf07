"""The device server's sensor hub: one observer per sampled sensor, fanning updates out.

Layering: imports ``ctlwire.katcp.core``, ``sensor`` and ``sampling``; the server it
serves is anything with a loop thread and ``_call_in_loop`` (:class:`HubOwner`).
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .core import Message, encode_message
from .sampling import SampleAuto, SampleStrategy
from .sensor import Sensor

if TYPE_CHECKING:  # pragma: no cover
    from ._connection import ClientConnection

__all__ = ["SensorHub", "HubOwner"]

_INFORM = Message.INFORM
_get_ident = threading.get_ident
_STATUS_RAW = Sensor.STATUSES_RAW


class HubOwner(Protocol):
    """What a :class:`SensorHub` needs from the server."""

    #: Ident of the thread running the server's event loop (None when stopped).
    _loop_tid: int | None

    def _call_in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in the loop thread."""


class SensorHub:
    """The server's single observer of one sensor.

    Fans each update out to the clients sampling the sensor. The ``#sensor-status``
    line is encoded once per reading and shared by every client; ``auto`` samplers
    get it straight from here, other strategies decide for themselves. Updates made in
    other threads are handed to the loop in batches by the server.
    """

    __slots__ = ("owner", "sensor", "autos", "others", "_autos", "_others",
                 "_last_reading", "_last_line", "_prefix")

    def __init__(self, owner: HubOwner, sensor: Sensor):
        self.owner = owner
        self.sensor = sensor
        self.autos: dict[ClientConnection, Callable] = {}
        self.others: dict[ClientConnection, SampleStrategy] = {}
        self._autos: tuple = ()
        self._others: tuple = ()
        self._last_reading: Any = None
        self._last_line = b""
        self._prefix = b" 1 " + encode_message(_INFORM, "x", [sensor.name])[3:-1] + b" "

    def line(self, reading: Any) -> bytes:
        """``#sensor-status`` wire line of ``reading`` (cached for the last reading)."""
        if reading is self._last_reading:
            return self._last_line
        line = self.render(reading)
        self._last_reading = reading
        self._last_line = line
        return line

    def render(self, reading: Any) -> bytes:
        """``#sensor-status`` wire line of ``reading``, made afresh (no cache: for
        threads other than the loop's)."""
        timestamp, status, value = reading
        sensor = self.sensor
        return b"#sensor-status %.6f%s%s %s\n" % (timestamp, self._prefix,
                                                  _STATUS_RAW[status],
                                                  sensor._wire(sensor, value))

    def update(self, sensor: Sensor, reading: Any) -> None:
        owner = self.owner
        if _get_ident() == owner._loop_tid:
            self.fan_out(reading)
        else:
            owner._call_in_loop(self.fan_out, reading)

    def fan_out(self, reading: Any) -> None:
        autos = self._autos
        if autos:
            line = self.line(reading)
            for queue in autos:
                queue(line)
        if self._others:
            sensor = self.sensor
            for strategy in self._others:
                strategy.update(sensor, reading)

    def add(self, conn: ClientConnection, strategy: SampleStrategy) -> None:
        self.remove(conn)
        if type(strategy) is SampleAuto:
            self.autos[conn] = conn._queue_fn
        else:
            self.others[conn] = strategy
        self._refresh()

    def add_auto(self, conn: ClientConnection) -> bytes:
        """Have ``conn`` sample with ``auto`` (what :meth:`add` does for a
        :class:`SampleAuto`, for a bulk request); returns the line of the current
        reading, which the caller sends."""
        autos = self.autos
        if conn in self.others or conn in autos:
            self.others.pop(conn, None)
            autos[conn] = conn._queue_fn
            self._refresh()
        else:
            autos[conn] = queue = conn._queue_fn
            self._autos += (queue,)
            if len(autos) == 1 and not self.others:
                self.sensor.attach(self)
        return self.line(self.sensor.read())

    @staticmethod
    def add_autos(hubs: list["SensorHub"], conn: ClientConnection,
                  failed: Callable[["SensorHub"], None]) -> list[bytes]:
        """:meth:`add_auto` on many hubs for one client (a bulk request): the lines of
        their current readings, in order. A line that cannot be made is left out and
        its hub given to ``failed`` (from inside an ``except`` block)."""
        queue = conn._queue_fn
        lines = []
        append = lines.append
        for hub in hubs:
            try:
                autos = hub.autos
                if conn in autos or conn in hub.others:
                    append(hub.add_auto(conn))
                    continue
                # add_auto's usual case, inline
                autos[conn] = queue
                hub._autos += (queue,)
                if len(autos) == 1 and not hub.others:
                    hub.sensor.attach(hub)
                reading = hub.sensor.read()
                append(hub._last_line if reading is hub._last_reading else hub.line(reading))
            except Exception:  # noqa: BLE001 - one bad sensor must not stop the others
                failed(hub)
        return lines

    def remove(self, conn: ClientConnection) -> None:
        self.autos.pop(conn, None)
        self.others.pop(conn, None)
        self._refresh()

    def _refresh(self) -> None:
        self._autos = tuple(self.autos.values())
        self._others = tuple(s for s in self.others.values() if s.OBSERVE_UPDATES)
        # Observe the sensor only while someone samples it: unobserved sets stay cheap.
        if self.autos or self.others:
            self.sensor.attach(self)
        else:
            self.sensor.detach(self)

    @property
    def empty(self) -> bool:
        return not (self.autos or self.others)
