"""Log records through the relay, and roclogdump writing them to disk."""
from __future__ import annotations

import json
import logging
import time

import zmq

from ctlwire.roc import RocLogger, initRocLogging
from ctlwire.roc.logdump import LogDump


def _lines(path) -> list[dict]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


def test_log_records_arrive_with_their_fields(ep, broker):
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"ROCL")
    sub.connect(ep.generalXPUB)
    handler = RocLogger("cam1", ep)
    log = logging.getLogger("test.roc.fields")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        deadline = time.monotonic() + 10
        frames = None
        while frames is None and time.monotonic() < deadline:
            log.warning("shutter %s", "stuck")
            if sub.poll(50):
                frames = sub.recv_multipart()
        assert frames is not None, "no log record arrived"
        assert frames[0] == b"ROCLcam1"
        rec = json.loads(frames[1])
        assert (rec["node"], rec["logger"], rec["level"], rec["message"]) == (
            "cam1", "test.roc.fields", "WARNING", "shutter stuck")
        assert rec["iso"].endswith("Z") and rec["line"] > 0
    finally:
        log.removeHandler(handler)
        handler.close()
        sub.close()


def test_logdump_writes_json_lines(ep, broker, tmp_path, wait_for):
    import threading
    out = tmp_path / "roc.log"
    dump = LogDump(ep, str(out))
    t = threading.Thread(target=dump.run, daemon=True)
    t.start()
    handler = initRocLogging("dumpnode", ep, level=logging.INFO)
    log = logging.getLogger("test.roc.dump")
    try:
        deadline = time.monotonic() + 10
        while not _lines(out) and time.monotonic() < deadline:
            log.info("hello %d", 1)
            time.sleep(0.02)  # pacing of a producer, not a wait for an event
        recs = _lines(out)
        assert recs and recs[0]["message"] == "hello 1" and recs[0]["node"] == "dumpnode"
        assert list(recs[0])[:5] == ["iso", "level", "node", "logger", "message"]
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
        dump.stop()
        t.join(5)


def test_init_roc_logging_is_idempotent(ep, broker):
    h1 = initRocLogging("same", ep)
    try:
        assert initRocLogging("same", ep) is h1
        assert logging.getLogger().handlers.count(h1) == 1
    finally:
        logging.getLogger().removeHandler(h1)
        h1.close()


def test_logdump_rotates(tmp_path, ep):
    out = tmp_path / "r.log"
    dump = LogDump(ep, str(out), max_bytes=300, backups=2)
    try:
        rec = json.dumps({"iso": "x", "message": "m" * 100}).encode()
        for _ in range(8):
            dump.write([b"ROCLn", rec])
    finally:
        dump.close()
    assert (tmp_path / "r.log.1").exists() and (tmp_path / "r.log.2").exists()
    assert not (tmp_path / "r.log.3").exists()
    assert out.stat().st_size <= 300


def test_logdump_counts_garbage_instead_of_writing_it(tmp_path, ep):
    dump = LogDump(ep, str(tmp_path / "g.log"))
    try:
        assert dump.write([b"ROCLn", b"{broken"]) is False
        assert dump.bad == 1 and dump.written == 0
    finally:
        dump.close()


def test_logdump_moves_to_the_standby_when_its_broker_goes(tmp_path, free_port):
    import threading

    from ctlwire.roc import Broker, Endpoints
    p_ep, s_ep = Endpoints("127.0.0.1", free_port()), Endpoints("127.0.0.1", free_port())
    primary = Broker(p_ep, has_standby=True).start()
    standby = Broker(s_ep, standby_for=p_ep).start()
    dump = LogDump([p_ep, s_ep], str(tmp_path / "x.log"))
    handler = RocLogger("node", [p_ep, s_ep])
    logger = logging.getLogger("failover-test")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    t = threading.Thread(target=dump.run, daemon=True)
    t.start()
    try:
        def logged(message: str) -> None:
            deadline = time.monotonic() + 10
            while message not in (tmp_path / "x.log").read_text():
                assert time.monotonic() < deadline, f"{message!r} never written"
                logger.info(message)
                time.sleep(0.05)

        logged("before")
        primary.stop()
        logged("after")  # through the standby's relay
        assert dump.endpoint == s_ep.generalXPUB
    finally:
        dump.stop()
        t.join(5)
        logger.removeHandler(handler)
        handler.close()
        standby.stop()
        primary.stop()
