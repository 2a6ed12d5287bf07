"""ctlwire.katcp.testutils and the pytest plugin, over loopback against real devices."""
from __future__ import annotations

import textwrap
import threading
import unittest

import pytest

from ctlwire.katcp import Message, Sensor
from ctlwire.katcp.testutils import (BlockingTestClient, DeviceTestServer,
                                     DeviceTestServerWithTimeoutHints, handle_mock_req,
                                     mock_req, start_thread_with_cleanup)

pytest_plugins = ["pytester"]

TIMEOUT = 10.0

EXPECTED_SENSORS = [
    ("an.int", "An Integer.", "count", "integer", "-5", "5"),
    ("a.discrete", "A Discrete.", "", "discrete", "one", "two", "three"),
    ("a.float", "A Float.", "", "float", "-123.4", "123.4"),
    ("a.floatwithzero", "A Float with zero.", "", "float", "-123.0", "123.0"),
]
EXPECTED_REQUESTS = ["new-command", "raise-exception", "raise-fail", "slow-command",
                     "cancel-slow-command", "decorated", "decorated-return-exception"]


@pytest.fixture
def device():
    server = DeviceTestServer("127.0.0.1", 0)
    server.start(timeout=TIMEOUT)
    yield server
    server.stop(timeout=TIMEOUT)


@pytest.fixture
def client(device):
    c = BlockingTestClient(None, *device.bind_address, timeout=TIMEOUT)
    c.start()
    assert c.wait_protocol(TIMEOUT)
    yield c
    c.stop()
    c.join(TIMEOUT)


# -- requests ---------------------------------------------------------------------------------

def test_assert_request_succeeds_returns_reply_arguments(client):
    assert client.assert_request_succeeds("new-command", args_equal=["param1", "param2"],
                                          informs_count=0) == ["param1", "param2"]


def test_assert_request_succeeds_checks_informs_and_echo(client):
    client.assert_request_succeeds(
        "decorated", "x y", 1.5, 3, False, args_echo=True,
        informs_args_equal=[["_string", "<class 'str'>"], ["_float", "<class 'float'>"],
                            ["_int", "<class 'int'>"], ["do_raise", "<class 'bool'>"]])


def test_assert_request_succeeds_fails_on_wrong_arguments(client):
    with pytest.raises(AssertionError, match=r"to have arguments \['nope'\]"):
        client.assert_request_succeeds("new-command", args_equal=["nope"])


def test_assert_request_succeeds_fails_on_fail_reply(client):
    with pytest.raises(AssertionError, match="There was a problem with your request"):
        client.assert_request_succeeds("raise-fail")


def test_assert_request_fails_returns_status_and_error(client):
    assert client.assert_request_fails("raise-fail", status_equals="fail") == (
        "fail", "There was a problem with your request.")
    status, _ = client.assert_request_fails("no-such-request")
    assert status == "invalid"


def test_assert_request_fails_fails_on_ok_reply(client):
    with pytest.raises(AssertionError, match="but it was successful"):
        client.assert_request_fails("new-command")


# -- sensors ------------------------------------------------------------------------------------

def test_get_sensor_converts_the_reading(client):
    assert client.get_sensor("an.int", int) == (3, "nominal", 12345.0)
    assert client.get_sensor_value("a.float", float) == 12.0
    assert client.get_sensor_value("a.discrete") == "one"


def test_get_sensor_of_unknown_sensor_fails(client):
    with pytest.raises(AssertionError, match="Could not retrieve sensor 'nope'"):
        client.get_sensor("nope")


def test_assert_sensor_equals_compares_value_and_status(device, client):
    client.assert_sensor_equals("a.float", 12.00000001, float, status="nominal")
    with pytest.raises(AssertionError, match=r"Value of sensor 'an.int' is 3. Expected 4"):
        client.assert_sensor_equals("an.int", 4, int)
    device.get_sensor("an.int").set_value(2, Sensor.WARN)
    with pytest.raises(AssertionError, match="Status of sensor 'an.int' is 'warn'"):
        client.assert_sensor_equals("an.int", 2, int, status="nominal")


def test_wait_until_sensor_equals_sees_a_change_made_while_waiting(device, client):
    before = len(device.messages)
    sensor = device.get_sensor("an.int")

    def set_once_watched():
        # the wait has asked for event sampling: now change the value
        device.until_messages(before + 1).result(TIMEOUT)
        sensor.set_value(5)

    setter = threading.Thread(target=set_once_watched)
    setter.start()
    client.wait_until_sensor_equals(TIMEOUT, "an.int", 5, int)
    setter.join(TIMEOUT)
    assert [m.name for m in device.messages[before:]][:1] == ["sensor-sampling"]


def test_wait_until_sensor_equals_times_out_with_last_value(device, client):
    with pytest.raises(AssertionError, match=r"Timed out after 0.2 s .*an.int=3"):
        client.wait_until_sensor_equals(0.2, "an.int", 4, int)
    # the wait leaves no sampling behind on the device
    client.assert_request_succeeds("sensor-sampling", "an.int", args_equal=["an.int", "none"])


def test_wait_until_sensors_equal_waits_for_all(device, client):
    device.get_sensor("a.discrete").set_value("two")
    client.wait_until_sensors_equal(TIMEOUT, [("a.discrete", "two"), ("an.int", 3, int)])


# -- device description ----------------------------------------------------------------------

def test_sensor_list_matches(client):
    client.test_sensor_list(EXPECTED_SENSORS)
    client.test_sensor_list([(n, "other", *rest) for n, _, *rest in EXPECTED_SENSORS],
                            ignore_descriptions=True)


def test_sensor_list_mismatch_names_missing_and_unexpected(client):
    with pytest.raises(AssertionError) as info:
        client.test_sensor_list(EXPECTED_SENSORS[1:] + [("b.int", "B", "", "integer")])
    text = str(info.value)
    assert "missing:\n('b.int'" in text and "unexpected sensors:\n('an.int'" in text


def test_help_lists_the_device_requests(client):
    client.test_help(EXPECTED_REQUESTS)
    with pytest.raises(AssertionError, match="unexpected requests:\nslow-command"):
        client.test_help([r for r in EXPECTED_REQUESTS if r != "slow-command"])


HELP_FIRST_LINES = [
    ("new-command", "A new command."),
    ("raise-exception", "A handler which raises an exception."),
    ("raise-fail", "A handler which raises a FailReply."),
    ("slow-command", "A slow command: replies after SECONDS, or at once on "
                     "?cancel-slow-command."),
    ("cancel-slow-command", "Cancel this connection's slow command: it replies at once."),
    ("decorated", "Decorated handler: returns its parameters, or raises if the last is true."),
    ("decorated-return-exception",
     "Decorated handler that returns a fail reply carrying an exception."),
]


def test_help_compares_first_lines_of_descriptions(client):
    client.test_help(HELP_FIRST_LINES)
    wrong = [(name, "x") if name == "raise-fail" else (name, text)
             for name, text in HELP_FIRST_LINES]
    with pytest.raises(AssertionError, match=r"missing:\n\('raise-fail', 'x'\)"):
        client.test_help(wrong)


def test_broken_help_fails_clearly(device, client):
    device.break_help = "help is broken"
    with pytest.raises(AssertionError, match="Could not retrieve help list: help is broken"):
        client.test_help(EXPECTED_REQUESTS)


# -- message recorder, raw input ---------------------------------------------------------------

def test_message_recorder_records_matching_informs(device, client):
    record = client.message_recorder(whitelist=["sensor-status"])
    client.assert_request_succeeds("sensor-sampling", "an.int", "event")
    device.get_sensor("an.int").set_value(-1)
    msgs = record(2, timeout=TIMEOUT)
    assert [m.arguments[-1] for m in msgs] == [b"3", b"-1"]
    assert record(0, timeout=0) == []


def test_message_recorder_with_replies_and_regex(client):
    record = client.message_recorder(regex_filter=r"!new-command", replies=True)
    client.assert_request_succeeds("new-command")
    assert [m.name for m in record(1, timeout=TIMEOUT)] == ["new-command"]


def test_raw_send_of_a_bad_line_gets_a_log_error(client):
    record = client.message_recorder(whitelist=["log"])
    client.raw_send(b"?bad_name\n")
    msgs = record(1, timeout=TIMEOUT)
    assert msgs and msgs[0].arguments[0] == b"error"
    client.assert_request_succeeds("watchdog")  # the link is still usable


# -- DeviceTestServer -------------------------------------------------------------------------

def test_slow_command_is_cancelled_by_cancel_slow_command(device):
    c = BlockingTestClient(None, *device.bind_address, timeout=TIMEOUT)
    c.start()
    assert c.wait_protocol(TIMEOUT)
    try:
        fut = c.future_request(Message.request("slow-command", 60), timeout=TIMEOUT)
        device.until_messages(1).result(TIMEOUT)
        c.assert_request_succeeds("cancel-slow-command")
        reply, _ = fut.result(TIMEOUT)
        assert reply.reply_ok()
    finally:
        c.stop()
        c.join(TIMEOUT)


def test_timeout_hint_server_reports_the_slow_command_hint(katcp_device_factory,
                                                           katcp_client_factory):
    server = katcp_device_factory(DeviceTestServerWithTimeoutHints)
    c = katcp_client_factory(server)
    c.assert_request_succeeds("request-timeout-hint", informs_count=1,
                              informs_args_equal=[["slow-command", "99.0"]])
    server.request_timeout_hints["new-command"] = 2.5
    c.assert_request_succeeds("request-timeout-hint", "new-command",
                              informs_args_equal=[["new-command", "2.5"]])


# -- unittest style ---------------------------------------------------------------------------

def test_unittest_case_uses_fail_and_cleans_up():
    seen = {}

    class Case(unittest.TestCase):
        def test_device(self):
            server = start_thread_with_cleanup(self, DeviceTestServer("127.0.0.1", 0),
                                               start_timeout=TIMEOUT)
            client = BlockingTestClient(self, *server.bind_address, timeout=TIMEOUT)
            start_thread_with_cleanup(self, client)
            self.assertTrue(client.wait_protocol(TIMEOUT))
            seen["server"], seen["client"] = server, client
            client.assert_sensor_equals("an.int", 3, int)
            client.assert_sensor_equals("an.int", 99, int)  # fails through self.fail

    result = unittest.TestResult()
    Case("test_device").run(result)
    assert len(result.failures) == 1 and not result.errors
    assert "Expected 99" in result.failures[0][1]
    assert not seen["server"].running() and not seen["client"].running()


def test_start_thread_with_cleanup_needs_a_cleanup_hook():
    with pytest.raises(TypeError, match="addCleanup"):
        start_thread_with_cleanup(object(), DeviceTestServer("127.0.0.1", 0))


# -- mock_req ---------------------------------------------------------------------------------

def test_mock_req_runs_a_handler_without_a_network():
    dev = DeviceTestServer("127.0.0.1", 0)
    req = mock_req("decorated", "a", 2.0, 7, 0)
    reply, informs = handle_mock_req(dev, req).result(0)
    assert reply.arguments == [b"ok", b"a", b"2.0", b"7", b"0"]
    assert [m.arguments[0] for m in informs] == [b"_string", b"_float", b"_int", b"do_raise"]
    req.reply.assert_called_once()


def test_mock_req_fail_and_async_handlers():
    dev = DeviceTestServer("127.0.0.1", 0)
    reply, _ = handle_mock_req(dev, mock_req("raise-fail")).result(0)
    assert reply.arguments == [b"fail", b"There was a problem with your request."]
    reply, _ = handle_mock_req(dev, mock_req("slow-command", 0.01)).result(0)
    assert reply.reply_ok()


# -- against another implementation's server --------------------------------------------------

def test_blocking_test_client_against_a_peer_server(peer):
    c = BlockingTestClient(None, "127.0.0.1", peer.port, timeout=TIMEOUT)
    c.start()
    try:
        assert c.wait_protocol(TIMEOUT)
        start = int(c.assert_request_succeeds("bump")[0])
        done = threading.Event()

        def bump_later():
            done.wait(TIMEOUT)
            c.assert_request_succeeds("bump", start + 10)

        t = threading.Thread(target=bump_later)
        record = c.message_recorder(whitelist=["sensor-status"])
        t.start()
        done.set()
        c.wait_until_sensor_equals(TIMEOUT, "counter", start + 10, int)
        t.join(TIMEOUT)
        assert record(1, timeout=TIMEOUT)
    finally:
        c.stop()
        c.join(TIMEOUT)


# -- the pytest plugin ------------------------------------------------------------------------

def test_plugin_fixtures_need_no_conftest(pytester):
    pytester.makepyfile(test_device=textwrap.dedent("""
        import pytest
        from ctlwire.katcp import Sensor
        from ctlwire.katcp.testutils import DeviceTestServer

        class Thermo(DeviceTestServer):
            def setup_sensors(self):
                super().setup_sensors()
                self.add_sensor(Sensor.float("temp", "Box temperature", "degC"))

            def request_heat(self, req, msg):
                '''Set the temperature.'''
                self.get_sensor("temp").set_value(float(msg.arguments[0]))
                return req.make_reply("ok")

        @pytest.fixture
        def katcp_device_class():
            return Thermo

        def test_heat(katcp_client):
            katcp_client.assert_request_succeeds("heat", 21.5)
            katcp_client.wait_until_sensor_equals(5, "temp", 21.5, float)

        def test_default_device(katcp_device_factory, katcp_client_factory):
            c = katcp_client_factory(katcp_device_factory(DeviceTestServer))
            c.test_sensor_list([("an.int", "An Integer.", "count", "integer", "-5", "5"),
                                ("a.discrete", "A Discrete.", "", "discrete", "one", "two",
                                 "three"),
                                ("a.float", "A Float.", "", "float", "-123.4", "123.4"),
                                ("a.floatwithzero", "A Float with zero.", "", "float",
                                 "-123.0", "123.0")])

        def test_fails(katcp_client):
            katcp_client.assert_sensor_equals("temp", 99.0, float)
    """))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*Value of sensor 'temp' is 0.0. Expected 99.0*"])
