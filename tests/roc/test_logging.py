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
        # numbered: the receiver counts what it missed
        assert rec["stream"] == handler.stream and len(handler.stream) == 8
        assert 0 <= rec["seq"] < handler.seq
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
    # every number from the first received to the last is either written once or
    # counted lost (records come to both relays: repeats after the move are skipped)
    lines = _lines(tmp_path / "x.log")
    assert len(lines) == dump.written
    assert dump.written + dump.lost == dump._next[handler.stream] - lines[0]["seq"]
    assert [r["seq"] for r in lines] == sorted({r["seq"] for r in lines})


def _record(stream: str, seq: int) -> list[bytes]:
    return [b"ROCLn", json.dumps({"message": f"{stream} {seq}", "node": "n",
                                  "stream": stream, "seq": seq}).encode()]


def test_logdump_counts_gaps_and_skips_repeats_per_sender(tmp_path, ep):
    out = tmp_path / "s.log"
    dump = LogDump(ep, str(out))
    try:
        for seq in (0, 1, 2, 5, 3, 6):  # 3 and 4 missing; then 3 again: a repeat
            dump.write(_record("aaaa0000", seq))
        for seq in (7, 9):  # another sender: its first record is where it starts
            dump.write(_record("bbbb1111", seq))
        dump.write([b"ROCLn", b'{"message": "unnumbered"}'])  # another library's
    finally:
        dump.close()
    assert (dump.written, dump.lost, dump.repeated, dump.bad) == (8, 2 + 1, 1, 0)
    assert [r["message"] for r in _lines(out)] == [
        "aaaa0000 0", "aaaa0000 1", "aaaa0000 2", "aaaa0000 5", "aaaa0000 6",
        "bbbb1111 7", "bbbb1111 9", "unnumbered"]


class _SmallRelay:
    """A bare XSUB/XPUB relay with small high-water marks on ``ep``'s log ports, in a
    thread: a subscriber that stops reading makes it drop."""

    def __init__(self, ep, hwm: int = 200) -> None:
        import threading
        self.ctx = zmq.Context()
        self.xsub = self.ctx.socket(zmq.XSUB)
        self.xpub = self.ctx.socket(zmq.XPUB)
        for sock in (self.xsub, self.xpub):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, hwm)
            sock.setsockopt(zmq.RCVHWM, hwm)
        self.xsub.bind(ep.generalXSUB)
        self.xpub.bind(ep.generalXPUB)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            zmq.proxy(self.xsub, self.xpub)
        except zmq.ContextTerminated:
            pass
        finally:
            self.xsub.close(0)
            self.xpub.close(0)

    def close(self) -> None:
        self.ctx.term()  # (the proxy returns, its thread closes the sockets)
        self.thread.join(10)


def test_records_dropped_on_the_way_are_counted_by_the_receiver(ep, tmp_path):
    """A flood into a subscriber that is not reading: the relay and the queues drop
    records; the dump counts every one it missed, and its figures add up."""
    import threading
    relay = _SmallRelay(ep)
    out = tmp_path / "flood.log"
    dump = LogDump(ep, str(out))
    handler = RocLogger("flood", ep)
    log = logging.getLogger("test.roc.flood")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    t = None
    try:
        # joined: the dump's subscription has reached the relay and the handler
        deadline = time.monotonic() + 10
        while not dump._sock.poll(20):
            assert time.monotonic() < deadline, "the dump never got a record"
            log.info("join")
        dump.write(dump._sock.recv_multipart())
        first = _lines(out)[0]["seq"]
        for i in range(30_000):  # the dump reads nothing meanwhile
            log.info("flood %d", i)
        last = handler.seq  # the number of the record that ends the test
        t = threading.Thread(target=dump.run, daemon=True)
        t.start()
        deadline = time.monotonic() + 30
        while dump._next.get(handler.stream, 0) <= last:
            assert time.monotonic() < deadline, "the last record never came"
            log.info("end")
            time.sleep(0.02)  # pacing of a producer, not a wait for an event
    finally:
        dump.stop()
        if t is not None:
            t.join(10)
        log.removeHandler(handler)
        handler.close()
        relay.close()
    assert dump.lost > 0, "nothing was dropped: the flood was too small to test"
    # every number from the first received to the last is written once or counted lost
    assert dump.written + dump.lost == dump._next[handler.stream] - first
    assert dump.repeated == 0 and len(_lines(out)) == dump.written


def test_handler_counts_what_a_full_relay_queue_refused(free_port):
    """A relay that reads nothing: the handler's queue fills, later records are
    refused and counted in ``dropped``, never lost unseen, and every record it
    accepted arrives once the relay reads."""
    import threading
    ctx = zmq.Context()
    relay = ctx.socket(zmq.XSUB)
    relay.setsockopt(zmq.RCVHWM, 1)
    relay.setsockopt(zmq.RCVBUF, 4096)
    port = free_port()
    relay.bind(f"tcp://127.0.0.1:{port}")
    relay.send(b"\x01")                       # subscribe to everything
    handler = RocLogger("full", f"tcp://127.0.0.1:{port}", ctx=ctx)
    log = logging.getLogger("test.roc.full")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    got: list[int] = []
    try:
        deadline = time.monotonic() + 10        # joined: the subscription is in
        while not relay.poll(20):
            assert time.monotonic() < deadline, "the relay never got a record"
            log.info("join")
        relay.recv_multipart()
        start = handler.seq
        big = "x" * 4000
        for i in range(20_000):                # the relay reads nothing meanwhile
            log.info("flood %d %s", i, big)
        assert handler.dropped > 0, "nothing refused: the flood was too small to test"
        accepted = 20_000 - handler.dropped

        def read() -> None:
            end = time.monotonic() + 30
            while time.monotonic() < end:
                if relay.poll(200):
                    rec = json.loads(relay.recv_multipart()[1])
                    if rec["message"] == "end":
                        return
                    if rec["message"].startswith("flood"):
                        got.append(rec["seq"])
        reader = threading.Thread(target=read)
        reader.start()
        before = handler.dropped
        deadline = time.monotonic() + 30
        while True:                            # the end record, once there is room
            log.info("end")
            if handler.dropped == before:
                break
            before = handler.dropped
            assert time.monotonic() < deadline, "the queue never made room"
            time.sleep(0.01)                   # pacing of a producer, not a wait
        reader.join(40)
        assert not reader.is_alive()
    finally:
        log.removeHandler(handler)
        handler.close()
        relay.close(0)
        ctx.destroy(linger=0)
    # every record accepted arrived, once, in order; the refused ones were counted
    assert len(got) == accepted
    assert got == sorted(set(got)) and all(start <= s < start + 20_000 for s in got)
