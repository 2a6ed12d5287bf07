"""Helpers for testing KATCP devices and clients: the katcp-python ``testutils`` API.

A device's test starts the device on a free loopback port, connects a
:class:`BlockingTestClient` and states what the device must do::

    server = MyDevice("127.0.0.1", 0)
    start_thread_with_cleanup(self, server, start_timeout=5)
    client = BlockingTestClient(self, *server.bind_address)
    start_thread_with_cleanup(self, client, start_timeout=5)
    client.wait_protocol(5)
    client.assert_request_succeeds("double", 21, args_equal=["42"])
    client.wait_until_sensor_equals(5, "temp", 20.5, float)

``self`` may be a ``unittest.TestCase`` (its ``fail`` and ``addCleanup`` are used) or,
under pytest, ``None`` for the client (failures raise ``AssertionError``) and the
``request`` fixture for :func:`start_thread_with_cleanup`. The pytest plugin
(:mod:`ctlwire.pytest_katcp`) does all of the above as fixtures.

Where this differs from katcp-python: waits for sensor values watch ``#sensor-status``
informs (the sensor is sampled with ``event`` strategy while waiting) instead of polling
``?sensor-value``; ``mock_req`` returns a plain object whose futures are
``concurrent.futures.Future`` (katcp-python's are tornado's).

May import: the standard library and ``ctlwire.katcp`` (core, client, server, sensor,
kattypes).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import re
import threading
import time
from typing import Any, Callable, Iterable, Optional, Sequence
from unittest import mock

from .client import BlockingClient
from .core import AsyncReply, FailReply, Message, ProtocolFlags
from .kattypes import Bool, Float, Int, Str, request, request_timeout_hint, return_reply
from .sensor import Sensor
from .server import DeviceServer

__all__ = [
    "MessageRecorder",
    "BlockingTestClient",
    "DeviceTestSensor",
    "DeviceTestServer",
    "DeviceTestServerWithTimeoutHints",
    "start_thread_with_cleanup",
    "mock_req",
    "handle_mock_req",
]

_INFORM, _REPLY = Message.INFORM, Message.REPLY
_STATUS_NAMES = frozenset(s.decode() for s in Sensor.STATUSES_RAW.values())


def _text(value: Any) -> str:
    """Native ``str`` of a message argument or an expected value."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _texts(values: Iterable[Any]) -> list[str]:
    return [_text(v) for v in values]


def _wire_text(value: Any) -> str:
    """How a request parameter reads once it has crossed the wire (``True`` is ``1``)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return _text(value)


class MessageRecorder:
    """Collects the messages a :class:`BlockingTestClient` receives that match a filter.

    Made by :meth:`BlockingTestClient.message_recorder`; calling it returns (and forgets)
    the messages recorded since the last call.

    Parameters
    ----------
    msg_types : container
        Message types to record (``Message.INFORM``, ``Message.REPLY``).
    whitelist : container of str
        Record only messages with these names (empty: any name not blacklisted).
    regex_filter : str or None
        Record only messages whose text (``str(msg)``) matches this regex (``re.match``),
        after the whitelist.
    blacklist : container of str
        Names never recorded (the whitelist wins when a name is in both).
    """

    def __init__(self, msg_types: Any, whitelist: Any, regex_filter: Optional[str],
                 blacklist: Any) -> None:
        self.msgs: list[Message] = []
        self.msg_types = msg_types
        self.whitelist = whitelist
        self.blacklist = blacklist
        self.regex_filter = re.compile(regex_filter) if regex_filter else None
        self._cond = threading.Condition()

    def get_msgs(self, min_number: int = 0, timeout: Optional[float] = 1) -> list[Message]:
        """Return the messages recorded so far and forget them.

        Parameters
        ----------
        min_number : int, optional
            Wait until at least this many have been recorded (or ``timeout`` passes).
        timeout : float or None, optional
            Seconds to wait at most.
        """
        with self._cond:
            self._cond.wait_for(lambda: len(self.msgs) >= min_number, timeout)
            msgs, self.msgs = self.msgs, []
        return msgs

    __call__ = get_msgs

    def wait_number(self, number: int, timeout: Optional[float] = 1) -> Optional[bool]:
        """Wait until at least ``number`` messages are recorded: True, or None on timeout."""
        with self._cond:
            return True if self._cond.wait_for(lambda: len(self.msgs) >= number,
                                               timeout) else None

    def append_msg(self, msg: Message) -> None:
        """Record ``msg`` if it matches the filter (called by the client)."""
        if msg.mtype in self.msg_types and self._wanted(msg):
            with self._cond:
                self.msgs.append(msg)
                self._cond.notify_all()

    def _wanted(self, msg: Message) -> bool:
        if self.whitelist and msg.name not in self.whitelist:
            return False
        if self.regex_filter is not None:
            return self.regex_filter.match(str(msg)) is not None
        return msg.name not in self.blacklist


def _convert(value: bytes, sensortype: Any) -> Any:
    if sensortype is bool:
        return bool(int(value))
    if sensortype is str:
        return value.decode("utf-8", "replace")
    return sensortype(value)


def _type_text(sensortype: Any) -> str:
    return f"{int!r} and then {bool!r}" if sensortype is bool else repr(sensortype)


class BlockingTestClient(BlockingClient):
    """A :class:`~ctlwire.katcp.client.BlockingClient` with assertions for device tests.

    Parameters
    ----------
    test : unittest.TestCase or None
        Failures call ``test.fail(message)``; with ``None`` they raise ``AssertionError``
        (pytest). ``test.sensor_lag`` (seconds, optional) is waited after setter
        requests, as in katcp-python.
    host, port
        The device.
    **kwargs
        As for :class:`~ctlwire.katcp.client.BlockingClient` (``timeout``,
        ``auto_reconnect``, ...).
    """

    def __init__(self, test: Any, *args: Any, **kwargs: Any) -> None:
        self.test = test
        self._message_recorders: dict[int, Callable[[Message], None]] = {}
        # latest #sensor-status reading of each sampled sensor: name -> (ts, status, value)
        self._readings: dict[str, tuple[bytes, bytes, bytes]] = {}
        self._readings_cond = threading.Condition()
        self._watching: dict[str, int] = {}
        super().__init__(*args, **kwargs)

    # -- failing ---------------------------------------------------------------------------
    def _fail(self, message: str) -> None:
        if self.test is not None and hasattr(self.test, "fail"):
            self.test.fail(message)
        raise AssertionError(message)

    def _check(self, condition: bool, message: str) -> None:
        if not condition:
            self._fail(message)

    def _sensor_lag(self) -> float:
        return float(getattr(self.test, "sensor_lag", 0) or 0)

    # -- what arrives ------------------------------------------------------------------------
    def handle_inform(self, msg: Message) -> Any:
        """Pass every inform to the message recorders, then to the usual handling."""
        if msg.name == "sensor-status" and len(msg.arguments) >= 5:
            args = msg.arguments
            with self._readings_cond:
                # bulk form: ts n (name status value)*n
                for i in range(2, len(args) - 2, 3):
                    self._readings[_text(args[i])] = (args[0], args[i + 1], args[i + 2])
                self._readings_cond.notify_all()
        for append in list(self._message_recorders.values()):
            append(msg)
        return super().handle_inform(msg)

    def handle_reply(self, msg: Message) -> Any:
        """Pass every reply to the message recorders, then to the usual handling."""
        for append in list(self._message_recorders.values()):
            append(msg)
        return super().handle_reply(msg)

    def raw_send(self, chunk: bytes) -> None:
        """Send raw bytes to the device (to test how it copes with bad input)."""
        self._send_bytes(bytes(chunk), None)

    def message_recorder(self, whitelist: Sequence[str] = (), blacklist: Sequence[str] = (),
                         regex_filter: Optional[str] = None, informs: bool = True,
                         replies: bool = False) -> MessageRecorder:
        """Record received messages that match a filter (see :class:`MessageRecorder`).

        Returns
        -------
        MessageRecorder
            Call it to get the messages recorded since the previous call.
        """
        types = set()
        if informs:
            types.add(_INFORM)
        if replies:
            types.add(_REPLY)
        recorder = MessageRecorder(types, set(whitelist), regex_filter, set(blacklist))
        self._message_recorders[id(recorder)] = recorder.append_msg
        return recorder

    # -- sensors ------------------------------------------------------------------------------
    @staticmethod
    def expected_sensor_value_tuple(sensorname: str, value: Any, sensortype: Any = str,
                                    places: int = 7) -> tuple:
        """Fill in the optional parts of ``(name, value[, type[, places]])``."""
        return (sensorname, value, sensortype, places)

    def _parse_reading(self, sensorname: str, raw: tuple, sensortype: Any) -> tuple:
        timestamp, status, value = raw
        try:
            got = _convert(value, sensortype)
        except ValueError as exc:
            self._fail(f"Could not convert value {value!r} of sensor '{sensorname}' to type "
                       f"{_type_text(sensortype)}: {exc}")
        status_text = _text(status)
        self._check(status_text in _STATUS_NAMES,
                    f"Got invalid status value {status_text!r} for sensor '{sensorname}'.")
        try:
            ts = float(timestamp)
        except ValueError as exc:
            self._fail(f"Could not convert timestamp {timestamp!r} of sensor "
                       f"'{sensorname}' to type {float!r}: {exc}")
        return got, status_text, ts

    def get_sensor(self, sensorname: str, sensortype: Any = str) -> tuple[Any, str, float]:
        """Read a sensor with ``?sensor-value``: ``(value, status, timestamp)``.

        ``sensortype`` converts the value (``bool`` reads ``1``/``0``).
        """
        reply, informs = self.blocking_request(Message.request("sensor-value", sensorname))
        self._check(reply.reply_ok(), f"Could not retrieve sensor '{sensorname}': "
                    f"{_text(reply.arguments[1]) if len(reply.arguments) > 1 else ''}")
        self._check(len(informs) == 1, f"Expected one sensor value inform for sensor "
                    f"'{sensorname}', but received {len(informs)}.")
        args = informs[0].arguments
        self._check(len(args) == 5, f"Expected sensor value inform for sensor "
                    f"'{sensorname}' to have five arguments, but received {len(args)}.")
        return self._parse_reading(sensorname, (args[0], args[3], args[4]), sensortype)

    def get_sensor_value(self, sensorname: str, sensortype: Any = str) -> Any:
        """The value of a sensor, converted by ``sensortype``."""
        return self.get_sensor(sensorname, sensortype)[0]

    def get_sensor_status(self, sensorname: str) -> str:
        """The status of a sensor (``"nominal"``, ...)."""
        return self.get_sensor(sensorname)[1]

    def get_sensor_timestamp(self, sensorname: str) -> float:
        """The timestamp of a sensor's reading (seconds since the epoch)."""
        return self.get_sensor(sensorname)[2]

    @staticmethod
    def _equal(got: Any, expected: Any, sensortype: Any, places: int) -> bool:
        if sensortype is float:
            return round(abs(got - expected), places) == 0
        return got == expected

    @staticmethod
    def _expected_text(sensorname: str, expected: Any, sensortype: Any, places: int) -> str:
        within = f" (within {places} decimal places)" if sensortype is float else ""
        return f"Value of sensor '{sensorname}' is %r. Expected {expected!r}{within}."

    def assert_sensor_equals(self, sensorname: str, expected: Any, sensortype: Any = str,
                             msg: Optional[str] = None, places: int = 7,
                             status: Optional[str] = None) -> None:
        """Assert that a sensor's value (and optionally status) is as expected.

        Parameters
        ----------
        sensorname : str
        expected : object
            Of type ``sensortype``.
        sensortype : type, optional
            Converts the value read; ``float`` compares to ``places`` decimal places.
        msg : str, optional
            Failure message; ``%r`` in it is replaced by the value read.
        places : int, optional
        status : str, optional
            The expected status (``"nominal"``, ...).
        """
        if msg is None:
            msg = self._expected_text(sensorname, expected, sensortype, places)
        got, got_status, _ = self.get_sensor(sensorname, sensortype)
        if "%r" in msg:
            msg = msg % (got,)
        self._check(self._equal(got, expected, sensortype, places), msg)
        if status is not None:
            self._check(got_status == status, f"Status of sensor '{sensorname}' is "
                        f"{got_status!r}. Expected {status!r}.")

    def assert_sensor_status_equals(self, sensorname: str, expected_status: str,
                                    msg: Optional[str] = None) -> None:
        """Assert that a sensor's status is ``expected_status``."""
        if msg is None:
            msg = f"Status of sensor '{sensorname}' is %r. Expected {expected_status!r}."
        got = self.get_sensor_status(sensorname)
        if "%r" in msg:
            msg = msg % (got,)
        self._check(got == expected_status, msg)

    def assert_sensor_not_equal(self, sensorname: str, expected: Any, sensortype: Any = str,
                                msg: Optional[str] = None, places: int = 7) -> None:
        """Assert that a sensor's value differs from ``expected``."""
        if msg is None:
            within = f" (within {places} decimal places)" if sensortype is float else ""
            msg = f"Value of sensor '{sensorname}' is %r. Expected a different value{within}."
        got = self.get_sensor_value(sensorname, sensortype)
        if "%r" in msg:
            msg = msg % (got,)
        self._check(not self._equal(got, expected, sensortype, places), msg)

    def assert_sensors_equal(self, sensor_tuples: Iterable[tuple],
                             msg: Optional[str] = None) -> None:
        """Assert several sensors: tuples as for :meth:`expected_sensor_value_tuple`."""
        for name, value, stype, places in (self.expected_sensor_value_tuple(*t)
                                           for t in sensor_tuples):
            self.assert_sensor_equals(name, value, stype, msg=msg, places=places)

    def assert_sensors_not_equal(self, sensor_tuples: Iterable[tuple],
                                 msg: Optional[str] = None) -> None:
        """Assert that several sensors differ from the values given."""
        for name, value, stype, places in (self.expected_sensor_value_tuple(*t)
                                           for t in sensor_tuples):
            self.assert_sensor_not_equal(name, value, stype, msg=msg, places=places)

    def _start_watch(self, names: Sequence[str]) -> None:
        # An event strategy makes the device send the current reading at once and every
        # change after it, so a wait needs no polling.
        for name in names:
            count = self._watching.get(name, 0)
            self._watching[name] = count + 1
            if count == 0:
                with self._readings_cond:
                    self._readings.pop(name, None)
                reply, _ = self.blocking_request(
                    Message.request("sensor-sampling", name, "event"))
                if not reply.reply_ok():
                    self._watching[name] -= 1
                    self._fail(f"Could not watch sensor '{name}': "
                               f"{_text(reply.arguments[1]) if len(reply.arguments) > 1 else ''}")

    def _stop_watch(self, names: Sequence[str]) -> None:
        for name in names:
            count = self._watching.get(name, 0) - 1
            if count > 0:
                self._watching[name] = count
                continue
            self._watching.pop(name, None)
            if self.is_connected():
                try:
                    self.blocking_request(Message.request("sensor-sampling", name, "none"))
                except Exception:  # noqa: BLE001 - the wait's own result matters more
                    pass

    def wait_until_sensors_equal(self, timeout: float, sensor_tuples: Iterable[tuple],
                                 msg: Optional[str] = None) -> None:
        """Wait up to ``timeout`` s until every sensor has its expected value.

        ``sensor_tuples`` as for :meth:`expected_sensor_value_tuple`. Fails with the last
        values seen if they are not all reached in time.
        """
        tuples = [self.expected_sensor_value_tuple(*t) for t in sensor_tuples]
        names = [t[0] for t in tuples]
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}

        def reached() -> bool:
            ok = True
            for name, value, stype, places in tuples:
                raw = self._readings.get(name)
                if raw is None:
                    ok = False
                    continue
                try:
                    got = _convert(raw[2], stype)
                except ValueError:
                    ok = False
                    continue
                last[name] = got
                ok = ok and self._equal(got, value, stype, places)
            return ok

        self._start_watch(names)
        try:
            with self._readings_cond:
                done = self._readings_cond.wait_for(
                    reached, max(0.0, deadline - time.monotonic()))
        finally:
            self._stop_watch(names)
        if not done:
            wanted = ", ".join(f"{n}={v!r}" for n, v, _, _ in tuples)
            seen = ", ".join(f"{n}={last.get(n, '(no reading)')!r}" for n in names)
            self._fail(f"{msg + ': ' if msg else ''}Timed out after {timeout} s waiting for "
                       f"{wanted}. Last values: {seen}.")

    def wait_until_sensor_equals(self, timeout: float, sensorname: str, value: Any,
                                 sensortype: Any = str, places: int = 7,
                                 pollperiod: float = 0.02) -> None:
        """Wait up to ``timeout`` s until a sensor has ``value``; fail if it doesn't.

        The sensor is sampled with the ``event`` strategy while waiting (its previous
        strategy on this connection goes back to ``none`` afterwards). ``pollperiod`` is
        accepted for katcp-python compatibility and not used: nothing is polled.
        """
        self.wait_until_sensors_equal(timeout, [(sensorname, value, sensortype, places)])

    def wait_condition(self, timeout: float, predicate: Callable[..., bool], *args: Any,
                       **kwargs: Any) -> tuple[bool, str]:
        """Call ``predicate(*args, **kwargs)`` every ``poll_period`` s (default 0.02)
        until it is true or ``timeout`` passes: ``(result, why)``.

        For conditions that no message announces; a sensor value is better waited for
        with :meth:`wait_until_sensor_equals`.
        """
        poll = kwargs.pop("poll_period", 0.02)
        deadline = time.monotonic() + timeout
        while True:
            if predicate(*args, **kwargs):
                return True, ""
            left = deadline - time.monotonic()
            if left <= 0:
                return False, f"Timed out after {timeout} seconds"
            time.sleep(min(poll, left))

    # -- device description ------------------------------------------------------------------
    def test_sensor_list(self, expected_sensors: Iterable[tuple],
                         ignore_descriptions: bool = False) -> None:
        """Assert that ``?sensor-list`` lists exactly these sensors.

        Parameters
        ----------
        expected_sensors : iterable of tuples
            ``(name, description, units, type, *params)`` as the informs carry them.
        ignore_descriptions : bool, optional
            Leave descriptions out of the comparison.
        """
        def row(name: Any, description: Any, units: Any, stype: Any, *params: Any) -> tuple:
            stype = _text(stype)
            if stype == "float":
                params = tuple(repr(float(p)) for p in params)
            return (_text(name), _text(description), _text(units), stype, *_texts(params))

        reply, informs = self.blocking_request(Message.request("sensor-list"))
        self._check(reply.reply_ok(), "Could not retrieve sensor list: "
                    f"{_text(reply.arguments[1]) if len(reply.arguments) > 1 else ''}")
        expected = {row(*t) for t in expected_sensors}
        got = {row(*m.arguments) for m in informs}
        if ignore_descriptions:
            expected = {s[:1] + s[2:] for s in expected}
            got = {s[:1] + s[2:] for s in got}
        self._check(got == expected, "Sensor list differs from expected list.\n"
                    "These sensors are missing:\n" + "\n".join(sorted(map(str, expected - got)))
                    + "\nFound these unexpected sensors:\n"
                    + "\n".join(sorted(map(str, got - expected))))

    def test_help(self, expected_requests: Sequence[Any], full_descriptions: bool = False,
                  exclude_defaults: bool = True) -> None:
        """Assert that ``?help`` lists exactly these requests.

        Parameters
        ----------
        expected_requests : sequence of str or of (name, description)
            Names only, or names with the first line (or, with ``full_descriptions``, the
            whole text) of their help.
        full_descriptions : bool, optional
        exclude_defaults : bool, optional
            Leave out the standard requests of :class:`DeviceServer` (``help``, ...).
        """
        with_text = bool(expected_requests) and not isinstance(expected_requests[0], str)
        reply, informs = self.blocking_request(Message.request("help"))
        self._check(reply.reply_ok(), "Could not retrieve help list: "
                    f"{_text(reply.arguments[1]) if len(reply.arguments) > 1 else ''}")
        got_rows = [(_text(m.arguments[0]), _text(m.arguments[1]) if len(m.arguments) > 1
                     else "") for m in informs]
        defaults = set(DeviceServer._request_handlers) if exclude_defaults else set()
        if with_text:
            cut = (lambda text: text) if full_descriptions else (
                lambda text: text.split("\n")[0])
            got: set = {(n, cut(d)) for n, d in got_rows if n not in defaults}
            expected: set = {(_text(n), cut(_text(d))) for n, d in expected_requests}
        else:
            got = {n for n, _ in got_rows if n not in defaults}
            expected = set(_texts(expected_requests))
        self._check(got == expected, "Help list differs from expected list.\n"
                    "These requests are missing:\n" + "\n".join(sorted(map(str, expected - got)))
                    + "\nFound these unexpected requests:\n"
                    + "\n".join(sorted(map(str, got - expected))))

    # -- requests -----------------------------------------------------------------------------
    def assert_request_succeeds(self, requestname: str, *params: Any, **kwargs: Any
                                ) -> list[str]:
        """Assert that a request replies ``ok``; return the reply's other arguments.

        Keyword arguments (each optional) check more:

        * ``args_echo=True``: the reply's arguments equal the parameters;
        * ``args_equal``: they equal this list;
        * ``args_in``: they equal one of these lists;
        * ``args_length``: there are this many;
        * ``informs_count``: this many informs came with the reply;
        * ``informs_args_equal``: the informs' arguments, in order, equal these lists.
        * ``timeout``: seconds to wait for the reply (default: the client's).
        """
        timeout = kwargs.get("timeout")
        reply, informs = self.blocking_request(Message.request(requestname, *params),
                                               timeout=timeout)
        self._check(reply.name == requestname,
                    f"Reply to request '{requestname}' has name '{reply.name}'.")
        error = (f"with error '{_text(reply.arguments[1])}'" if len(reply.arguments) > 1
                 else "(with no error message)")
        self._check(reply.reply_ok(), f"Expected request '{requestname}' called with "
                    f"parameters {params!r} to succeed, but it failed {error}.")
        args = _texts(reply.arguments[1:])
        args_equal = kwargs.get("args_equal")
        if kwargs.get("args_echo"):
            args_equal = [_wire_text(p) for p in params]
        where = f"reply to request '{requestname}' called with parameters {params!r}"
        if args_equal is not None:
            args_equal = [_wire_text(a) for a in args_equal]
            self._check(args == args_equal, f"Expected {where} to have arguments "
                        f"{args_equal}, but received {args}.")
        elif kwargs.get("args_in") is not None:
            options = [[_wire_text(a) for a in option] for option in kwargs["args_in"]]
            self._check(args in options, f"Expected {where} to have arguments in "
                        f"{options}, but received {args}.")
        elif kwargs.get("args_length") is not None:
            n = kwargs["args_length"]
            self._check(len(args) == n, f"Expected {where} to have {n} arguments, but "
                        f"received {len(args)}: {args}.")
        if kwargs.get("informs_count") is not None:
            n = kwargs["informs_count"]
            self._check(len(informs) == n, f"Expected {n} informs in {where}, but "
                        f"received {len(informs)}.")
        if kwargs.get("informs_args_equal") is not None:
            want = [[_wire_text(a) for a in inform] for inform in kwargs["informs_args_equal"]]
            got = [_texts(m.arguments) for m in informs]
            self._check(got == want, f"Expected inform arguments {want} in {where}, but "
                        f"received {got}.")
        return args

    def assert_request_fails(self, requestname: str, *params: Any, **kwargs: Any
                             ) -> tuple[str, Optional[str]]:
        """Assert that a request does not reply ``ok``; return ``(status, error)``.

        ``status_equals`` (``"fail"`` or ``"invalid"``) and ``error_equals`` check the
        reply further; ``timeout`` bounds the wait.
        """
        reply, _ = self.blocking_request(Message.request(requestname, *params),
                                         timeout=kwargs.get("timeout"))
        self._check(reply.name == requestname,
                    f"Reply to request '{requestname}' has name '{reply.name}'.")
        self._check(not reply.reply_ok(), f"Expected request '{requestname}' called with "
                    f"parameters {params!r} to fail, but it was successful.")
        status = _text(reply.arguments[0]) if reply.arguments else ""
        error = _text(reply.arguments[1]) if len(reply.arguments) > 1 else None
        if kwargs.get("status_equals") is not None:
            want = _text(kwargs["status_equals"])
            self._check(status == want, f"Expected request '{requestname}' called with "
                        f"parameters {params!r} to return status {want}, but the status "
                        f"was {status!r}.")
        if kwargs.get("error_equals") is not None:
            want = _text(kwargs["error_equals"])
            self._check(error == want, f"Expected request '{requestname}' called with "
                        f"parameters {params!r} to fail with error {want}, but the error "
                        f"was {error!r}.")
        return status, error

    def test_setter_request(self, requestname: str, sensorname: str, sensortype: Any = str,
                            good: Iterable[Any] = (), bad: Iterable[Any] = (),
                            places: int = 7, args_echo: bool = False) -> None:
        """Assert that a request sets a sensor to each ``good`` value and refuses ``bad``."""
        for value in good:
            self.assert_request_succeeds(requestname, value, args_echo=args_echo)
            lag = self._sensor_lag()
            if lag:
                time.sleep(lag)  # the device's documented lag (katcp-python behaviour)
            self.assert_sensor_equals(
                sensorname, value, sensortype,
                f"After request '{requestname}' was called with parameter {value!r}, "
                + self._expected_text(sensorname, value, sensortype, places), places)
        for value in bad:
            self.assert_request_fails(requestname, value)


# -- a device for tests --------------------------------------------------------------------

class DeviceTestSensor(Sensor):
    """A sensor created with a given reading (``timestamp``, ``status``, ``value``)."""

    def __init__(self, sensor_type: Any, name: str, description: str, units: str,
                 params: Any, timestamp: float, status: int, value: Any) -> None:
        super().__init__(sensor_type, name, description, units, params)
        self.set(timestamp, status, value)


class DeviceTestServer(DeviceServer):
    """A device with a few sensors and requests of each kind, for client tests.

    Sensors: ``an.int`` (count, -5..5, 3), ``a.discrete`` (one/two/three, ``one``),
    ``a.float`` (-123.4..123.4, 12.0), ``a.floatwithzero`` (-123..123, 12.0), all
    nominal at timestamp 12345. Requests: ``new-command``, ``raise-exception``,
    ``raise-fail``, ``slow-command SECONDS`` (timeout hint 99 s; cancelled by
    ``cancel-slow-command``), ``decorated STR FLOAT INT BOOL``,
    ``decorated-return-exception``.

    Attributes
    ----------
    messages : list of Message
        Every request received, in order.
    break_help, break_sensor_list : str or False
        When set, ``?help`` / ``?sensor-list`` fail with this text.
    """

    VERSION_INFO = ("device-test-server", 1, 0)
    BUILD_INFO = ("device-test-server", 1, 0, "")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._messages: list[Message] = []
        self._messages_lock = threading.Lock()
        self._count_waiters: list[tuple[int, concurrent.futures.Future]] = []
        self._slow: dict[Any, asyncio.Event] = {}
        self.break_help: Any = False
        self.break_sensor_list: Any = False
        super().__init__(*args, **kwargs)

    @property
    def request_names(self) -> list[str]:
        """Names of every request the device serves."""
        return list(self._request_handlers)

    @property
    def sensor_names(self) -> list[str]:
        """Names of every sensor of the device."""
        return list(self._sensors)

    @property
    def messages(self) -> list[Message]:
        """Every request received so far."""
        with self._messages_lock:
            return list(self._messages)

    def until_messages(self, count: int) -> concurrent.futures.Future:
        """A future resolved with :attr:`messages` once ``count`` requests have come."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._messages_lock:
            self._count_waiters.append((count, future))
        self._resolve_waiters()
        return future

    def _resolve_waiters(self) -> None:
        with self._messages_lock:
            done = [(n, f) for n, f in self._count_waiters if len(self._messages) >= n]
            for item in done:
                self._count_waiters.remove(item)
            msgs = list(self._messages)
        for _, future in done:
            future.set_result(msgs)

    def handle_request(self, connection: Any, msg: Message) -> None:
        """Record the request, then handle it as usual."""
        with self._messages_lock:
            self._messages.append(msg)
        if self._count_waiters:
            self._resolve_waiters()
        super().handle_request(connection, msg)

    def setup_sensors(self) -> None:
        """The four test sensors."""
        self.restarted = False
        for args in ((Sensor.INTEGER, "an.int", "An Integer.", "count", [-5, 5], 3),
                     (Sensor.DISCRETE, "a.discrete", "A Discrete.", "",
                      ["one", "two", "three"], "one"),
                     (Sensor.FLOAT, "a.float", "A Float.", "", [-123.4, 123.4], 12.0),
                     (Sensor.FLOAT, "a.floatwithzero", "A Float with zero.", "",
                      [-123.0, 123.0], 12.0)):
            stype, name, desc, units, params, value = args
            self.add_sensor(DeviceTestSensor(stype, name, desc, units, params,
                                             timestamp=12345, status=Sensor.NOMINAL,
                                             value=value))

    def request_new_command(self, req: Any, msg: Message) -> Message:
        """A new command."""
        return Message.reply(msg.name, "ok", "param1", "param2")

    def request_raise_exception(self, req: Any, msg: Message) -> Message:
        """A handler which raises an exception."""
        raise Exception("An exception occurred!")

    def request_raise_fail(self, req: Any, msg: Message) -> Message:
        """A handler which raises a FailReply."""
        raise FailReply("There was a problem with your request.")

    @request_timeout_hint(99)
    async def request_slow_command(self, req: Any, msg: Message) -> Message:
        """A slow command: replies after SECONDS, or at once on ?cancel-slow-command."""
        conn = req.client_connection
        if conn in self._slow:
            raise FailReply("A slow command is already running for this connection")
        try:
            seconds = float(msg.arguments[0])
        except (IndexError, ValueError):
            raise FailReply("give the number of seconds to wait") from None
        cancelled = self._slow[conn] = asyncio.Event()
        try:
            await asyncio.wait_for(cancelled.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        finally:
            self._slow.pop(conn, None)
        return req.make_reply("ok")

    def request_cancel_slow_command(self, req: Any, msg: Message) -> Message:
        """Cancel this connection's slow command: it replies at once."""
        event = self._slow.pop(req.client_connection, None)
        if event is not None:
            event.set()
        return req.make_reply("ok")

    @request(Str(), Float(), Int(), Bool())
    @return_reply(Str(), Float(), Int(), Bool())
    def request_decorated(self, req: Any, _string: str, _float: float, _int: int,
                          do_raise: bool) -> tuple:
        """Decorated handler: returns its parameters, or raises if the last is true."""
        if do_raise:
            raise Exception("An exception occurred!")
        for name, value in (("_string", _string), ("_float", _float), ("_int", _int),
                            ("do_raise", do_raise)):
            req.inform(name, str(type(value)))
        return ("ok", _string, _float, _int, do_raise)

    @return_reply()
    def request_decorated_return_exception(self, req: Any, msg: Message) -> tuple:
        """Decorated handler that returns a fail reply carrying an exception."""
        return ("fail", Exception("An exception occurred!"))

    def request_help(self, req: Any, msg: Message) -> Message:
        """Return help on the available requests (fails when ``break_help`` is set)."""
        if self.break_help:
            return req.make_reply("fail", self.break_help)
        return super().request_help(req, msg)

    def request_sensor_list(self, req: Any, msg: Message) -> Message:
        """Request the list of sensors (fails when ``break_sensor_list`` is set)."""
        if self.break_sensor_list:
            return req.make_reply("fail", self.break_sensor_list)
        return super().request_sensor_list(req, msg)


class DeviceTestServerWithTimeoutHints(DeviceTestServer):
    """:class:`DeviceTestServer` offering ``?request-timeout-hint`` (protocol flag T).

    ``request_timeout_hints`` (name -> seconds) overrides the handlers' own hints.
    """

    PROTOCOL_INFO = ProtocolFlags(5, 1, sorted(DeviceServer.PROTOCOL_INFO.flags)
                                  + [ProtocolFlags.REQUEST_TIMEOUT_HINTS])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.request_timeout_hints: dict[str, float] = {}
        super().__init__(*args, **kwargs)

    def request_request_timeout_hint(self, req: Any, msg: Message) -> Message:
        """Return the suggested client timeouts of slow requests.

        With a request name, one ``#request-timeout-hint NAME SECONDS`` (0 for none);
        without, one for every request that has a hint.
        """
        handlers = self._request_handlers
        hints = {name: float(getattr(h, "request_timeout_hint", 0) or 0)
                 for name, h in handlers.items()}
        hints.update(self.request_timeout_hints)
        if msg.arguments:
            name = _text(msg.arguments[0])
            if name not in handlers:
                return req.make_reply("fail", "Unknown request method.")
            chosen = {name: hints.get(name, 0.0)}
        else:
            chosen = {n: h for n, h in hints.items() if h}
        for name, hint in sorted(chosen.items()):
            req.inform(name, float(hint))
        return req.make_reply("ok", len(chosen))


# -- threads with cleanup -------------------------------------------------------------------

def start_thread_with_cleanup(test_instance: Any, thread_object: Any, timeout: float = 1,
                              start_timeout: Optional[float] = None) -> Any:
    """Start a server or client and make sure it is stopped when the test ends.

    Parameters
    ----------
    test_instance : unittest.TestCase or pytest ``request`` fixture
        Whose ``addCleanup`` (TestCase) or ``addfinalizer`` (pytest) registers the stop.
    thread_object
        Anything with ``start()``, ``stop()`` and ``join(timeout=...)``.
    timeout : float, optional
        Seconds given to ``join`` at cleanup.
    start_timeout : float, optional
        Passed to ``start(timeout=...)`` when given.

    Returns
    -------
    thread_object
    """
    def cleanup() -> None:
        thread_object.stop()
        thread_object.join(timeout=timeout)

    if hasattr(test_instance, "addCleanup"):
        test_instance.addCleanup(cleanup)
    elif hasattr(test_instance, "addfinalizer"):
        test_instance.addfinalizer(cleanup)
    else:
        raise TypeError("test_instance needs addCleanup (unittest) or addfinalizer "
                        f"(pytest's request fixture), got {type(test_instance).__name__}")
    if start_timeout is not None:
        thread_object.start(timeout=start_timeout)
    else:
        thread_object.start()
    return thread_object


# -- request handlers without a server -------------------------------------------------------

def mock_req(req_name: str, *args: Any, **kwargs: Any) -> mock.Mock:
    """A stand-in for a request connection, to call a handler without a network.

    ``req.msg`` is ``?req_name args...``; ``req.reply(...)``, ``req.inform(...)`` and
    ``req.make_reply(...)`` build real messages (``req.reply_msg``, ``req.inform_msgs``)
    and are mocks, so calls can be asserted. ``req.reply_and_inform_msgs_future``
    (a ``concurrent.futures.Future``) resolves with ``(reply_msg, inform_msgs)`` once
    the handler replies. ``client_conn=`` sets ``req.client_connection`` (default: a mock).
    """
    if kwargs.get("server") is not None and kwargs.get("client_conn") is not None:
        raise TypeError("Specify either server or client_conn, not both")
    req = mock.Mock(name=f"req:{req_name}")
    req.msg = Message.request(req_name, *args)
    req.reply_msg = None
    req.inform_msgs = []
    req.client_connection = kwargs.get("client_conn") or mock.Mock(name="client_connection")
    future: concurrent.futures.Future = concurrent.futures.Future()
    req.reply_and_inform_msgs_future = future

    def reply(*reply_args: Any) -> None:
        req.reply_msg = Message.reply_to_request(req.msg, *reply_args)
        if not future.done():
            future.set_result((req.reply_msg, req.inform_msgs))

    req.make_reply.side_effect = lambda *a: Message.reply_to_request(req.msg, *a)
    req.reply.side_effect = reply
    req.reply_with_message.side_effect = lambda m: reply(*m.arguments)
    req.inform.side_effect = lambda *a: req.inform_msgs.append(
        Message.reply_inform(req.msg, *a))
    return req


def handle_mock_req(dev: DeviceServer, req: mock.Mock) -> concurrent.futures.Future:
    """Run the handler of ``req`` (from :func:`mock_req`) on an unstarted device.

    The handler's reply (returned, raised as ``FailReply``, or an exception) goes to
    ``req.reply``; an ``async`` handler is run to completion in a fresh event loop
    (so call this outside a running loop). Returns ``req.reply_and_inform_msgs_future``.
    """
    msg = req.msg
    handler = dev._request_handlers.get(msg.name)
    try:
        if handler is None:
            req.reply("invalid", "Unknown request.")
            return req.reply_and_inform_msgs_future
        result = handler(dev, req, msg)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        if isinstance(result, Message):
            req.reply(*result.arguments)
    except AsyncReply:
        pass
    except FailReply as exc:
        req.reply("fail", str(exc))
    except Exception as exc:  # noqa: BLE001 - a handler's error is its fail reply
        req.reply("fail", f"{type(exc).__name__}: {exc}")
    return req.reply_and_inform_msgs_future


async def _await(awaitable: Any) -> Any:
    return await awaitable
