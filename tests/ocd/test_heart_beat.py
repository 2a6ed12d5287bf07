"""Heartbeat query and handler over loopback, in one process and across two."""
from __future__ import annotations

import configparser
import json

import pytest
import zmq

from ctlwire.ocd import utils
from ctlwire.ocd.heart_beat import ENQUIRY_TOPIC, REPLY_TOPIC, HeartBeatHandler, HeartBeatQuery
from ctlwire.ocd.utils import EventDispatcher, SendAndListen
from ctlwire.tcs.server import ZMQServer

ANY = "tcp://127.0.0.1:0"


@pytest.fixture
def handler_side():
    """A handler publishing on a random port; its dispatcher started by ``listen``."""
    handler = HeartBeatHandler.from_address(ANY)
    started = []

    def listen(url):
        d = EventDispatcher(url, [handler]).start()
        started.append(d)
        return handler.server.endpoint

    yield listen
    for d in started:
        d.stop()
    handler.server.close()


def test_topics_are_the_documented_strings():
    assert ENQUIRY_TOPIC == "ocd.heartbeat.enquiry"
    assert REPLY_TOPIC == "ocd.heartbeat.reply"


def test_handler_topics_are_the_enquiry():
    handler = HeartBeatHandler.from_address(ANY)
    try:
        assert handler.topics == [ENQUIRY_TOPIC]
    finally:
        handler.server.close()


def test_handler_declines_other_topics():
    handler = HeartBeatHandler.from_address(ANY)
    try:
        assert handler.handle_event("other.topic", {"id": "x"}) is False
        assert handler.handle_event(ENQUIRY_TOPIC, {"id": "x"}) is True
    finally:
        handler.server.close()


def test_handler_reemits_the_event_on_reply_topic():
    handler = HeartBeatHandler.from_address(ANY)
    sub = zmq.Context.instance().socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(handler.server.endpoint)
        assert handler.server.wait_for_subscriber(timeout=5.0)
        handler.handle_event(ENQUIRY_TOPIC, {"id": "abc"})
        assert sub.poll(5000)
        topic, payload = sub.recv_multipart()
        assert topic == REPLY_TOPIC.encode() and json.loads(payload)["id"] == "abc"
    finally:
        sub.close(linger=0)
        handler.server.close()


def test_first_query_is_answered_despite_late_joining(handler_side):
    query_server = ZMQServer(ANY)
    reply_url = handler_side(query_server.endpoint)
    # no waiting for subscriptions: the very first communicate() must still succeed
    query = HeartBeatQuery(query_server, reply_url, timeout=10.0)
    try:
        topic, event = query.communicate()
        assert topic == REPLY_TOPIC and event["id"] == query.id_
    finally:
        query.close()
        query_server.close()


def test_each_query_has_its_own_id():
    s1, s2 = ZMQServer(ANY), ZMQServer(ANY)
    q1 = HeartBeatQuery(s1, "tcp://127.0.0.1:1", timeout=0.1)
    q2 = HeartBeatQuery(s2, "tcp://127.0.0.1:1", timeout=0.1)
    try:
        assert q1.id_ != q2.id_ and q1.event == {"id": q1.id_}
    finally:
        for x in (q1, q2, s1, s2):
            x.close()


def test_reply_with_another_id_is_ignored():
    fake = ZMQServer(ANY)  # answers every enquiry with a foreign id
    query = HeartBeatQuery.from_addresses(ANY, fake.endpoint, timeout=0.5)
    sub = zmq.Context.instance().socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(query.server.endpoint)
        assert fake.wait_for_subscriber(timeout=5.0)
        assert query.server.wait_for_subscriber(timeout=5.0)
        fake.send_tcs_event(REPLY_TOPIC, {"id": "someone-else"})
        assert query.communicate() is None
    finally:
        sub.close(linger=0)
        query.close()
        fake.close()


def test_no_answer_returns_none_after_timeout():
    query = HeartBeatQuery.from_addresses(ANY, "tcp://127.0.0.1:1", timeout=0.2)
    try:
        assert query.communicate() is SendAndListen.NO_ANSWER is None
        assert query.sends >= 2  # it kept resending until the timeout
    finally:
        query.close()


def test_heartbeat_across_processes(responder_factory):
    server = ZMQServer(ANY)
    try:
        reply_url = responder_factory(server.endpoint)
        query = HeartBeatQuery(server, reply_url, timeout=10.0)
        try:
            for _ in range(3):
                assert query.communicate()[1]["id"] == query.id_
        finally:
            query.close()
    finally:
        server.close()


def _conf():
    conf = configparser.ConfigParser()
    # URL 0 cannot be bound (no such port), URL 1 can: binding shows which was used
    conf["urls"] = {"ocd": "tcp://127.0.0.1:noport, tcp://127.0.0.1:0",
                    "cmd": "tcp://127.0.0.1:0"}
    return conf


def test_init_zmq_servers_binds_the_indexed_url():
    servers = utils.init_zmq_servers(_conf(), index=1, names=["ocd"])
    assert utils.get_zmq_server("ocd") is servers["ocd"]
    assert servers["ocd"].endpoint.startswith("tcp://127.0.0.1:")
    assert utils.get_zmq_urls("cmd") == ["tcp://127.0.0.1:0"]  # remembered, not bound


def test_init_zmq_servers_default_index_is_the_first_url():
    with pytest.raises(zmq.ZMQError, match="noport"):
        utils.init_zmq_servers(_conf(), names=["ocd"])


def test_get_zmq_server_names_the_unknown_server():
    utils.init_zmq_servers({"ocd": ["tcp://127.0.0.1:0"]})
    with pytest.raises(KeyError, match=r"unknown ZMQ server 'nope' \(known: ocd\)"):
        utils.get_zmq_server("nope")


def test_init_zmq_servers_rejects_index_out_of_range():
    with pytest.raises(ValueError, match="index 3 is out of range"):
        utils.init_zmq_servers({"ocd": ["tcp://127.0.0.1:0"]}, index=3)


def test_from_names_and_from_name_talk():
    utils.init_zmq_servers({"cmd": [ANY], "ocd": [ANY]})
    cmd_url = utils.get_zmq_server("cmd").endpoint
    handler = HeartBeatHandler.from_name("ocd")
    d = EventDispatcher(cmd_url, [handler]).start()
    try:
        utils._urls["ocd"] = [handler.server.endpoint]  # resolve the :0 port
        query = HeartBeatQuery.from_names("cmd", "ocd", timeout=10.0)
        try:
            assert query.communicate()[1]["id"] == query.id_
        finally:
            query.close()
    finally:
        d.stop()


def test_dispatcher_keeps_serving_after_a_failing_handler():
    class Broken:
        topics = [ENQUIRY_TOPIC]

        def handle_event(self, topic, event):
            raise RuntimeError("boom")

    query_server = ZMQServer(ANY)
    handler = HeartBeatHandler.from_address(ANY)
    d = EventDispatcher(query_server.endpoint, [Broken(), handler]).start()
    query = HeartBeatQuery(query_server, handler.server.endpoint, timeout=10.0)
    try:
        assert query.communicate() is not None
    finally:
        query.close()
        d.stop()
        handler.server.close()
        query_server.close()


def test_cli_exits_0_when_the_process_answers(responder_factory, capsys, tmp_path):
    from ctlwire.cli.ocd_heartbeat import main
    # the responder must know the CLI's address before the CLI binds it: an ipc
    # path is unique, a guessed TCP port could be taken by another test meanwhile
    bind = f"ipc://{tmp_path}/query.ipc"
    reply_url = responder_factory(bind)
    assert main(["--bind", bind, "--listen", reply_url, "--timeout", "10"]) == 0
    assert "answered in" in capsys.readouterr().out


def test_cli_exits_1_when_nobody_answers(capsys):
    from ctlwire.cli.ocd_heartbeat import main
    assert main(["--bind", ANY, "--listen", "tcp://127.0.0.1:1", "--timeout", "0.2"]) == 1
    assert "no heartbeat" in capsys.readouterr().out


def test_dispatcher_survives_malformed_messages():
    query_server = ZMQServer(ANY)
    handler = HeartBeatHandler.from_address(ANY)
    d = EventDispatcher(query_server.endpoint, [handler]).start()
    query = HeartBeatQuery(query_server, handler.server.endpoint, timeout=10.0)
    try:
        assert query_server.wait_for_subscriber(timeout=5.0)
        query_server.send_event([ENQUIRY_TOPIC, "{not json"])
        query_server.send_event([ENQUIRY_TOPIC, "[1, 2]", "extra frame"])
        assert query.communicate() is not None
    finally:
        query.close()
        d.stop()
        handler.server.close()
        query_server.close()


def test_send_and_listen_with_custom_topics():
    class Echo:
        topics = ["ping"]

        def __init__(self, server):
            self.server = server

        def handle_event(self, topic, event):
            self.server.send_tcs_event("pong", {"n": event["n"] + 1})
            return True

    query_server, echo_server = ZMQServer(ANY), ZMQServer(ANY)
    d = EventDispatcher(query_server.endpoint, [Echo(echo_server)]).start()
    sal = SendAndListen(query_server, [echo_server.endpoint], "pong", "ping", {"n": 1},
                        timeout=10.0)
    try:
        topic, event = sal.communicate()
        assert (topic, event["n"]) == ("pong", 2)
    finally:
        sal.close()
        d.stop()
        echo_server.close()
        query_server.close()
