"""``DeviceServer``: a device server with sensors, sampling and the standard requests.

On top of :class:`DeviceServerBase` (transport, dispatch, life cycle) this adds the
device's identity (``#version-connect``), its sensors and every client's sampling
strategies, the device logger (``self.log``) and, mixed in, the standard requests.

Layering: imports ``_server_base``, ``_standard_requests``, ``_sensor_hub``,
``_device_logger`` and ``core``/``sensor``/``sampling``.
"""
from __future__ import annotations

import threading
from typing import Any

from .. import __version__ as _ctlwire_version
from ._connection import ClientConnection
from ._device_logger import DeviceLogger
from ._sensor_hub import SensorHub
from ._server_base import DeviceServerBase
from ._standard_requests import StandardRequests
from .core import Message, encode_message
from .sampling import SampleAuto, SampleNone, SampleStrategy
from .sensor import Sensor

__all__ = ["DeviceServer", "AsyncDeviceServer"]

_INFORM = Message.INFORM
_get_ident = threading.get_ident


class DeviceServer(DeviceServerBase, StandardRequests):
    """A device server with sensors and the standard KATCP requests.

    Subclasses set ``VERSION_INFO = (name, major, minor)`` and
    ``BUILD_INFO = (name, major, minor, suffix)``, implement :meth:`setup_sensors`,
    and add ``request_*`` handlers. ``extra_versions`` maps extra
    ``?version-list`` entries to ``(version, build_state_or_None)``.

    The standard requests come from :class:`StandardRequests`; each sampled sensor has
    one :class:`SensorHub` that fans its updates out to the clients sampling it.
    """

    VERSION_INFO = ("device_stub", 0, 1)
    BUILD_INFO = ("name", 0, 1, "")
    SUPPORTED_PROTOCOL_MAJOR_VERSIONS = (5,)

    def __init__(self, *args: Any, **kwargs: Any):
        if self.PROTOCOL_INFO.major not in self.SUPPORTED_PROTOCOL_MAJOR_VERSIONS:
            raise ValueError(f"Device server only supports katcp protocol versions "
                             f"{self.SUPPORTED_PROTOCOL_MAJOR_VERSIONS}, not "
                             f"{self.PROTOCOL_INFO.major}")
        super().__init__(*args, **kwargs)
        self.log = DeviceLogger(self, python_logger=self._logger)
        self.extra_versions: dict[str, tuple[str, str | None]] = {}
        self._restart_queue: Any = None
        self._sensors: dict[str, Sensor] = {}
        # One hub per sensor ever sampled; kept (observing nothing) when nobody samples
        # it any more, for the next client: mirrors reconnect and sample all again.
        self._hubs: dict[Sensor, SensorHub] = {}
        self.setup_sensors()

    # -- identity ---------------------------------------------------------------------------
    def version(self) -> str:
        """Return ``name-major.minor`` from ``VERSION_INFO``."""
        return "%s-%s.%s" % tuple(self.VERSION_INFO[:3])

    def build_state(self) -> str:
        """Return ``name-major.minor<suffix>`` from ``BUILD_INFO``."""
        info = tuple(self.BUILD_INFO) + ("",) * (4 - len(self.BUILD_INFO))
        return "%s-%s.%s%s" % info[:4]

    def _library_version(self) -> tuple[str, str]:
        return f"ctlwire-{_ctlwire_version}", _ctlwire_version

    def on_client_connect(self, client_conn: ClientConnection) -> None:
        """Greet a new client with the three ``#version-connect`` informs."""
        library, build = self._library_version()
        for args in (("katcp-protocol", str(self.PROTOCOL_INFO)),
                     ("katcp-library", library, build),
                     ("katcp-device", self.version(), self.build_state())):
            client_conn._queue(encode_message(_INFORM, "version-connect", args))

    def on_client_disconnect(self, client_conn: ClientConnection, msg: str,
                             connection_valid: bool) -> None:
        """Stop the client's sampling and, if it can still hear, send ``#disconnect``."""
        self.clear_strategies(client_conn, remove_client=True)
        if connection_valid:
            client_conn._send(encode_message(_INFORM, "disconnect", [msg]))

    # -- sensors ----------------------------------------------------------------------------
    def setup_sensors(self) -> None:
        """Add the device's sensors (override; ``pass`` if there are none)."""
        raise NotImplementedError("Device server subclasses must implement setup_sensors.")

    def add_sensor(self, sensor: Sensor) -> None:
        """Add (or replace) a sensor."""
        old = self._sensors.get(sensor.name)
        if old is not None and old is not sensor:
            self.remove_sensor(old)
        self._sensors[sensor.name] = sensor

    def remove_sensor(self, sensor: Sensor | str) -> None:
        """Remove a sensor (by object or name) and stop everyone's sampling of it."""
        name = sensor if isinstance(sensor, str) else sensor.name
        removed = self._sensors.pop(name)
        if self._loop is not None and _get_ident() != self._loop_tid:
            self._call_in_loop(self._drop_sensor_strategies, removed)
        else:
            self._drop_sensor_strategies(removed)

    def _drop_sensor_strategies(self, sensor: Sensor) -> None:
        hub = self._hubs.pop(sensor, None)
        for conn in list(self._conns):
            strategy = conn.strategies.pop(sensor, None)
            if strategy is not None:
                strategy.cancel()
        if hub is not None:
            hub.autos.clear()
            hub.others.clear()
            hub._refresh()

    def get_sensor(self, sensor_name: str) -> Sensor:
        """Return the sensor called ``sensor_name``; ``ValueError`` if unknown."""
        try:
            return self._sensors[sensor_name]
        except KeyError:
            raise ValueError(f"Unknown sensor '{sensor_name}'.") from None

    def get_sensors(self) -> list[Sensor]:
        """Return all sensors."""
        return list(self._sensors.values())

    def has_sensor(self, sensor_name: str) -> bool:
        """Whether a sensor called ``sensor_name`` exists."""
        return sensor_name in self._sensors

    def set_restart_queue(self, restart_queue: Any) -> None:
        """Set the queue that ``?restart`` puts this server in."""
        self._restart_queue = restart_queue

    def clear_strategies(self, client_conn: ClientConnection,
                         remove_client: bool = False) -> None:
        """Set every sampling strategy of ``client_conn`` to none."""
        if self._loop is not None and _get_ident() != self._loop_tid:
            self._call_in_loop(self.clear_strategies, client_conn, remove_client)
            return
        strategies = client_conn.strategies
        client_conn.strategies = {}
        for sensor, strategy in strategies.items():
            strategy.cancel()
            hub = self._hubs.get(sensor)
            if hub is not None:
                hub.remove(client_conn)

    def _forget_client(self, conn: ClientConnection) -> None:
        if conn.strategies:
            self.clear_strategies(conn)

    def _set_strategy(self, conn: ClientConnection, sensor: Sensor,
                      strategy: SampleStrategy) -> None:
        old = conn.strategies.pop(sensor, None)
        if old is not None:
            old.cancel()
        hub = self._hubs.get(sensor)
        if isinstance(strategy, SampleNone):
            if hub is not None:
                hub.remove(conn)
            return
        if hub is None:
            hub = self._hub(sensor)
        conn.strategies[sensor] = strategy
        strategy.start(observe=False)
        hub.add(conn, strategy)

    def _hub(self, sensor: Sensor) -> SensorHub:
        hub = self._hubs.get(sensor)
        if hub is None:
            hub = self._hubs[sensor] = SensorHub(self, sensor)
        return hub

    def _make_strategy(self, conn: ClientConnection, sensor: Sensor, strategy: bytes,
                       params: list[bytes]) -> SampleStrategy:
        return SampleStrategy.get_strategy(strategy, _informer(conn, self._hub(sensor)),
                                           sensor, *params, loop=self._loop)

    def _sample_auto(self, conn: ClientConnection, sensors: list[Sensor]) -> None:
        """``auto`` on many sensors of ``conn`` at once (loop thread): what
        ``_set_strategy`` does for each, with the first readings sent in one write.

        A bulk ``?sensor-sampling ... auto`` is how mirrors sync a device: this keeps
        its cost per sensor to the bookkeeping (no strategy checks, no per-sensor
        send)."""
        strategies = conn.strategies
        hubs = self._hubs
        loop = self._loop
        started = SampleAuto.started
        queue = conn._queue_fn

        def inform_callback(sensor: Sensor, reading: Any) -> None:
            # (one for all: the hubs feed these strategies' client themselves)
            queue(hubs[sensor].line(reading))

        fed = []
        for sensor in sensors:
            old = strategies.pop(sensor, None)
            if old is not None:
                old.cancel()
            hub = hubs.get(sensor)
            if hub is None:
                hub = hubs[sensor] = SensorHub(self, sensor)
            strategies[sensor] = started(inform_callback, sensor, loop)
            fed.append(hub)

        def failed(hub: SensorHub) -> None:
            # as SampleStrategy.inform: logged, the others still go out
            self._logger.exception("Unhandled exception sending the reading of sensor %r",
                                   hub.sensor.name)

        lines = SensorHub.add_autos(fed, conn, failed)
        if lines:
            conn._queue(b"".join(lines))


def _informer(conn: ClientConnection, hub: SensorHub) -> Any:
    """The inform callback of ``conn``'s strategy for ``hub``'s sensor: the hub's
    (cached) line, queued to the client."""
    line = hub.line
    queue = conn._queue_fn

    def inform_callback(sensor: Sensor, reading: Any) -> None:
        queue(line(reading))

    return inform_callback


#: katcp-python name of a device server whose handlers run in the loop: the default here.
AsyncDeviceServer = DeviceServer
