"""The standard KATCP requests of a device server (``?help``, ``?sensor-list``, ...).

:class:`StandardRequests` holds the ``request_*`` handlers every ``DeviceServer``
offers, as the protocol specifies them; ``DeviceServer`` mixes it in (the handler
tables are collected from the whole class hierarchy). Their docstrings are the
``?help`` texts.

The handlers use what ``DeviceServer`` provides: its sensors (``_sensors``), clients
(``_conns``), ``log``, identity (``version()``, ``build_state()``) and sampling
(``_make_strategy``, ``_set_strategy``, ``_sample_auto``, ``clear_strategies``).

Layering: imports ``ctlwire.katcp.core``, ``kattypes``, ``sampling`` and ``sensor``.
"""
from __future__ import annotations

import inspect
import re
import threading
from typing import TYPE_CHECKING, Any, Callable

from .core import AsyncReply, FailReply, Message, ProtocolFlags, encode_message
from .kattypes import (Int, Str, has_katcp_protocol_flags, minimum_katcp_version, request,
                       return_reply)
from .sampling import SampleStrategy
from .sensor import Sensor

if TYPE_CHECKING:  # pragma: no cover
    from ._connection import ClientRequestConnection

__all__ = ["StandardRequests", "construct_name_filter"]

_INFORM = Message.INFORM
_get_ident = threading.get_ident
_STATUS_RAW = Sensor.STATUSES_RAW


def construct_name_filter(pattern: str | None) -> tuple[bool, Callable[[str], bool]]:
    """Return ``(exact, filter)`` for a sensor name or ``/regex/`` pattern.

    ``None`` matches everything; ``/regex/`` matches names where the regex is found
    (``re.search``); anything else matches that exact name.
    """
    if pattern is None:
        return False, lambda name: True
    if len(pattern) > 1 and pattern.startswith("/") and pattern.endswith("/"):
        try:
            regex = re.compile(pattern[1:-1])
        except re.error as exc:
            raise FailReply(f"Invalid sensor name regex {pattern!r}: {exc}") from None
        return False, lambda name: regex.search(name) is not None
    return True, lambda name: name == pattern


def _help_text(handler: Callable) -> str:
    return inspect.cleandoc(handler.__doc__ or "")


class StandardRequests:
    """The standard requests of a KATCP v5 device (mixed into ``DeviceServer``)."""

    # Declared here for the type checker; DeviceServer provides them.
    _request_handlers: dict[str, Callable]
    _sensors: dict[str, Sensor]
    _conns: dict
    _restart_queue: Any
    _loop_tid: int | None
    extra_versions: dict[str, tuple[str, str | None]]
    log: Any
    loop: Any
    PROTOCOL_INFO: ProtocolFlags
    _call_in_loop: Callable[..., None]

    if TYPE_CHECKING:  # pragma: no cover  (DeviceServer's methods these handlers call)
        def version(self) -> str: ...
        def build_state(self) -> str: ...
        def _library_version(self) -> tuple[str, str]: ...
        def stop(self, timeout: float | None = 1.0) -> None: ...
        def clear_strategies(self, client_conn: Any, remove_client: bool = False) -> None: ...
        def _make_strategy(self, conn: Any, sensor: Sensor, strategy: bytes,
                           params: list[bytes]) -> SampleStrategy: ...
        def _sample_auto(self, conn: Any, sensors: list[Sensor]) -> None: ...
        def _set_strategy(self, conn: Any, sensor: Sensor,
                          strategy: SampleStrategy) -> None: ...

    def request_halt(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Halt the device server.

        Returns
        -------
        success : {'ok', 'fail'}
            Whether scheduling the halt succeeded.

        Examples
        --------
        ::

            ?halt
            !halt ok
        """
        req.reply("ok")
        # Thread-safe: with handler_thread=True this runs outside the loop.
        self.loop.call_soon_threadsafe(self.stop)
        raise AsyncReply()

    def request_help(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Return help on the available requests.

        Return a description of the available requests using a sequence of #help
        informs.

        Parameters
        ----------
        request : str, optional
            The name of the request to return help for (the default is to return help
            for all requests).

        Returns
        -------
        success : {'ok', 'fail'}
        informs : int
            Number of #help informs sent.

        Examples
        --------
        ::

            ?help
            #help halt ...description...
            #help help ...description...
            ...
            !help ok 5

            ?help halt
            #help halt ...description...
            !help ok 1
        """
        handlers = self._request_handlers
        if not msg.arguments:
            for name in sorted(handlers):
                req.inform(name, _help_text(handlers[name]))
            return req.make_reply("ok", len(handlers))
        name = msg.arguments[0].decode("utf-8", "replace")
        if name in handlers:
            req.inform(name, _help_text(handlers[name]))
            return req.make_reply("ok", 1)
        return req.make_reply("fail", "Unknown request method.")

    @request(Str(optional=True))
    @return_reply(Int())
    @has_katcp_protocol_flags([ProtocolFlags.REQUEST_TIMEOUT_HINTS])
    def request_request_timeout_hint(self, req: ClientRequestConnection,
                                     request: str | None) -> tuple:
        """Return timeout hints for requests.

        KATCP requests should generally take less than 5 s to complete, but some
        requests are unavoidably slow. This request lists the suggested client timeout
        of such requests as #request-timeout-hint informs.

        Parameters
        ----------
        request : str, optional
            The name of the request to return a hint for (default: every request that
            has a hint).

        Returns
        -------
        success : {'ok', 'fail'}
        informs : int
            Number of #request-timeout-hint informs sent.
        """
        hints: dict[str, float] = {}
        if request:
            if request not in self._request_handlers:
                raise FailReply("Unknown request method.")
            hint = getattr(self._request_handlers[request], "request_timeout_hint", None)
            hints[request] = hint or 0.0
        else:
            for name, handler in self._request_handlers.items():
                hint = getattr(handler, "request_timeout_hint", None)
                if hint:
                    hints[name] = hint
        for name, hint in sorted(hints.items()):
            req.inform(name, float(hint))
        return ("ok", len(hints))

    def request_log_level(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Query or set the current logging level.

        Parameters
        ----------
        level : {'all', 'trace', 'debug', 'info', 'warn', 'error', 'fatal', 'off'}, optional
            Name of the logging level to set the device server to (the default is to
            leave the log level unchanged).

        Returns
        -------
        success : {'ok', 'fail'}
        level : {'all', 'trace', 'debug', 'info', 'warn', 'error', 'fatal', 'off'}
            The log level after processing the request.

        Examples
        --------
        ::

            ?log-level
            !log-level ok warn

            ?log-level info
            !log-level ok info
        """
        if msg.arguments:
            try:
                self.log.set_log_level_by_name(msg.arguments[0])
            except ValueError as exc:
                raise FailReply(str(exc)) from None
        return req.make_reply("ok", self.log.level_name())

    def request_restart(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Restart the device server.

        Returns
        -------
        success : {'ok', 'fail'}
            Whether scheduling the restart succeeded.

        Examples
        --------
        ::

            ?restart
            !restart ok
        """
        if self._restart_queue is None:
            raise FailReply("No restart queue registered -- cannot restart.")
        self._restart_queue.put_nowait(self)
        return req.make_reply("ok")

    def request_client_list(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Request the list of connected clients.

        The list of clients is sent as a sequence of #client-list informs.

        Informs
        -------
        addr : str
            The address of the client as host:port.

        Returns
        -------
        success : {'ok', 'fail'}
        informs : int
            Number of #client-list informs sent.

        Examples
        --------
        ::

            ?client-list
            #client-list 127.0.0.1:53600
            !client-list ok 1
        """
        conns = list(self._conns)
        for conn in conns:
            req.inform(conn.address)
        return req.make_reply("ok", len(conns))

    @minimum_katcp_version(5, 0)
    def request_version_list(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Request the list of versions of roles and subcomponents.

        Informs
        -------
        name : str
            Name of the role or component.
        version : str
            A string identifying the version of the component.
        build_state_or_serial_number : str
            A string identifying the specific instance of a component.

        Returns
        -------
        success : {'ok', 'fail'}
        informs : int
            Number of #version-list informs sent.

        Examples
        --------
        ::

            ?version-list
            #version-list katcp-protocol 5.1-BIM
            #version-list katcp-library ctlwire-0.1.0 0.1.0
            #version-list katcp-device foodevice-1.0 foodevice-1.0.0rc1
            !version-list ok 3
        """
        library, build = self._library_version()
        versions: list[tuple[str, tuple[str, str | None]]] = [
            ("katcp-protocol", (str(self.PROTOCOL_INFO), None)),
            ("katcp-library", (library, build)),
            ("katcp-device", (self.version(), self.build_state())),
        ]
        versions += sorted(self.extra_versions.items())
        for name, (version, build_state) in versions:
            if build_state is None:
                req.inform(name, version)
            else:
                req.inform(name, version, build_state)
        return req.make_reply("ok", len(versions))

    def _matching_sensors(self, msg: Message) -> list[tuple[str, Sensor]]:
        if not msg.arguments:
            return sorted(self._sensors.items())  # all of them (a mirror's every sync)
        pattern = msg.arguments[0].decode("utf-8", "replace")
        exact, name_filter = construct_name_filter(pattern)
        sensors = [(name, sensor) for name, sensor in sorted(self._sensors.items())
                   if name_filter(name)]
        if exact and not sensors:
            raise FailReply("Unknown sensor name.")
        return sensors

    def request_sensor_list(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Request the list of sensors.

        The list of sensors is sent as a sequence of #sensor-list informs.

        Parameters
        ----------
        name : str, optional
            Name of the sensor to list (the default is to list all sensors). If name
            starts and ends with '/' it is treated as a regular expression and all
            sensors whose names contain the regular expression are returned.

        Informs
        -------
        name : str
            The name of the sensor being described.
        description : Str
            Description of the named sensor.
        units : str
            Units for the value of the named sensor.
        type : str
            Type of the named sensor.
        params : list of str, optional
            Additional sensor parameters (type dependent). For integer and float
            sensors the additional parameters are the minimum and maximum sensor value.
            For discrete sensors the additional parameters are the allowed values.
            For all other types no additional parameters are sent.

        Returns
        -------
        success : {'ok', 'fail'}
        informs : int
            Number of #sensor-list informs sent.

        Examples
        --------
        ::

            ?sensor-list
            #sensor-list psu.voltage PSU\\_voltage. V float 0.0 5.0
            #sensor-list cpu.status CPU\\_status. \\@ discrete on off error
            ...
            !sensor-list ok 5

            ?sensor-list /voltage/
            #sensor-list psu.voltage PSU\\_voltage. V float 0.0 5.0
            #sensor-list cpu.voltage CPU\\_voltage. V float 0.0 3.0
            !sensor-list ok 2
        """
        sensors = self._matching_sensors(msg)
        mid = msg.mid
        # one send for the whole list: mirrors ask for all of it at every (re)connect
        if sensors:
            req.client_connection._send(b"".join([
                encode_message(_INFORM, "sensor-list", (
                    name, sensor.description, sensor.units, sensor.stype,
                    *sensor.formatted_params), mid)
                for name, sensor in sensors]))
        return req.make_reply("ok", len(sensors))

    def request_sensor_value(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Request the value of a sensor or sensors.

        A list of sensor values as a sequence of #sensor-value informs.

        Parameters
        ----------
        name : str, optional
            Name of the sensor to poll (the default is to send values for all sensors).
            If name starts and ends with '/' it is treated as a regular expression and
            all sensors whose names contain the regular expression are returned.

        Informs
        -------
        timestamp : float
            Timestamp of the sensor reading in seconds since the Unix epoch.
        count : {1}
            Number of sensors described in this #sensor-value inform. Will always be
            one.
        name : str
            Name of the sensor whose value is being reported.
        status : str
            Sensor status.
        value : object
            Value of the named sensor. Type depends on the type of the sensor.

        Returns
        -------
        success : {'ok', 'fail'}
        informs : int
            Number of #sensor-value informs sent.

        Examples
        --------
        ::

            ?sensor-value
            #sensor-value 1244631611.415231 1 psu.voltage nominal 4.5
            #sensor-value 1244631611.415200 1 cpu.status nominal off
            ...
            !sensor-value ok 5
        """
        sensors = self._matching_sensors(msg)
        send = req.client_connection._send
        mid = msg.mid
        for name, sensor in sensors:
            timestamp, status, value = sensor.read()
            send(encode_message(_INFORM, "sensor-value", (
                b"%.6f" % timestamp, b"1", name, _STATUS_RAW[status],
                sensor._formatter(value, True)), mid))
        return req.make_reply("ok", len(sensors))

    def request_sensor_sampling(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Configure or query the way a sensor is sampled.

        Sampled values are reported asynchronously using the #sensor-status message.
        With the B protocol flag, several comma-separated sensor names may be given
        to set the same strategy on all of them at once.

        Parameters
        ----------
        names : str
            Name of the sensor whose sampling strategy to query or configure, or a
            comma-separated list of names when setting a strategy.
        strategy : {'none', 'auto', 'event', 'differential', 'period', 'event-rate', 'differential-rate'}, optional
            Type of strategy to use to report the sensor value. The differential
            strategy types may only be used with integer, float or timestamp sensors.
        params : list of str, optional
            Additional strategy parameters (dependent on the strategy being used).

        Returns
        -------
        success : {'ok', 'fail'}
        names : str
            Name(s) of the sensor(s).
        strategy : str
            Name of the new or current sampling strategy.
        params : list of str
            Additional strategy parameters.

        Examples
        --------
        ::

            ?sensor-sampling cpu.power.on
            !sensor-sampling ok cpu.power.on none

            ?sensor-sampling cpu.power.on period 0.5
            #sensor-status 1244631611.415231 1 cpu.power.on nominal 1
            !sensor-sampling ok cpu.power.on period 0.5
        """
        if not msg.arguments:
            raise FailReply("No sensor name given.")
        names_arg = msg.arguments[0].decode("utf-8", "replace")
        names = names_arg.split(",") if self.PROTOCOL_INFO.bulk_set_sensor_sampling \
            else [names_arg]
        unknown = [n for n in names if n not in self._sensors]
        if unknown:
            if len(names) == 1:
                raise FailReply(f"Unknown sensor name: {unknown[0]}.")
            raise FailReply(f"Unknown sensor names: {', '.join(unknown)}.")
        conn = req.client_connection
        if len(msg.arguments) == 1:
            if len(names) > 1:
                raise FailReply("Cannot query the strategies of several sensors at once.")
            strategy = conn.strategies.get(self._sensors[names[0]])
            if strategy is None:
                return req.make_reply("ok", names_arg, "none")
            name, params = strategy.get_sampling_formatted()
            return req.make_reply("ok", names_arg, name, *params)
        strategy_name = msg.arguments[1]
        params = list(msg.arguments[2:])
        if strategy_name not in SampleStrategy.SAMPLING_LOOKUP_REV:
            raise FailReply(f"Unknown strategy name: "
                            f"{strategy_name.decode('utf-8', 'replace')}.")
        if not self.PROTOCOL_INFO.strategy_allowed(strategy_name):
            raise FailReply(f"Strategy {strategy_name.decode()} not allowed for version "
                            f"{self.PROTOCOL_INFO.major} of katcp")
        if strategy_name == b"auto" and not params and len(names) > 1 \
                and _get_ident() == self._loop_tid:
            # a mirror syncing: nothing to check per sensor, nothing to build
            self._sample_auto(conn, [self._sensors[name] for name in names])
            return req.make_reply("ok", names_arg, "auto")
        # Build every strategy first so a bad parameter changes nothing.
        new: list[tuple[Sensor, SampleStrategy]] = []
        for name in names:
            sensor = self._sensors[name]
            try:
                new.append((sensor, self._make_strategy(conn, sensor, strategy_name,
                                                        params)))
            except ValueError as exc:
                raise FailReply(f"Invalid strategy for sensor {name}: {exc}") from None
        if _get_ident() != self._loop_tid:  # handler thread: apply in the loop
            done = threading.Event()

            def apply() -> None:
                for sensor, strategy in new:
                    self._set_strategy(conn, sensor, strategy)
                done.set()
            self._call_in_loop(apply)
            done.wait(10.0)
        else:
            for sensor, strategy in new:
                self._set_strategy(conn, sensor, strategy)
        name, fparams = new[-1][1].get_sampling_formatted()
        return req.make_reply("ok", names_arg, name, *fparams)

    def request_sensor_sampling_clear(self, req: ClientRequestConnection,
                                      msg: Message) -> Message:
        """Set all sampling strategies for this client to none.

        Returns
        -------
        success : {'ok', 'fail'}

        Examples
        --------
        ::

            ?sensor-sampling-clear
            !sensor-sampling-clear ok
        """
        self.clear_strategies(req.client_connection)
        return req.make_reply("ok")

    def request_watchdog(self, req: ClientRequestConnection, msg: Message) -> Message:
        """Check that the server is still alive.

        Returns
        -------
        success : {'ok'}

        Examples
        --------
        ::

            ?watchdog
            !watchdog ok
        """
        return req.make_reply("ok")
