"""KATCP codec: parsing and formatting, ctlwire beside katcp-codec, aiokatcp and
katcp-python, and the limit.

The limit of parsing is splitting the same lines into byte strings with no validation
or unescaping (``line.split(b" ")``): the least a parser that returns Python objects must
do. The limit of formatting is joining already-escaped fields (``b" ".join``). Corpus
and peers come from ``bench_katcp_codec.py``; every implementation's results are checked
equal to ctlwire's before timing. All in this process, so rounds keep the best.

Imports: the codec script, the harness, ctlwire.katcp, the peers.
"""
from __future__ import annotations

import gc
import operator
import time

import pytest

import bench_katcp_codec as bc
from _harness import Measure, Target
from ctlwire.katcp import MessageParser, StreamParser

FAMILY = "KATCP codec"
SPLIT = operator.methodcaller("split", b" ")  # a C-level call, like the parsers


def _rate(fn, count: int) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return count / (time.perf_counter() - t0)


@pytest.fixture(scope="module")
def corpus(suite):
    lines = bc.make_corpus(suite.pick(10_000, 100_000))
    stream = b"".join(line + b"\n" for line in lines)
    parser = MessageParser()
    ours = [parser.parse(line) for line in lines]
    return {"lines": lines, "nl_lines": [line + b"\n" for line in lines],
            "chunks": bc.chunks_of(stream, 65536), "ours": ours,
            "args": [m.arguments for m in ours], "bytes": [bytes(m) for m in ours],
            "wide": bc.make_wide()}


def _each(fn, items) -> None:
    """Call ``fn`` on every item, keeping no result alive (as a consumer would)."""
    for item in items:
        fn(item)


def test_parse(benchmark, suite, corpus):
    lines, nl_lines = corpus["lines"], corpus["nl_lines"]
    parse = MessageParser().parse
    impls = {"ctlwire": lambda: _rate(lambda: _each(parse, lines), len(lines))}
    if bc.kc_lib is not None:
        kp = bc.kc_lib.Parser(2**21)
        assert [m.arguments for x in nl_lines for m in kp.append(x)] == corpus["args"]

        def kc_raw():
            ap = bc.kc_lib.Parser(2**21).append
            return _rate(lambda: _each(ap, nl_lines), len(lines))
        impls["katcp-codec raw"] = kc_raw
    if bc.katcp_codec is not None:
        def kc_py():
            ap = bc.katcp_codec.Parser(2**21).append
            return _rate(lambda: _each(ap, nl_lines), len(lines))
        impls["katcp-codec"] = kc_py
    if bc.aiokatcp is not None:
        aparse = bc.aiokatcp.Message.parse
        assert [aparse(x).arguments for x in nl_lines[:2000]] == corpus["args"][:2000]
        impls["aiokatcp"] = lambda: _rate(lambda: _each(aparse, nl_lines), len(lines))
    if bc.katcp_py is not None:
        sub = lines[: max(1, len(lines) // 10)]  # katcp-python is slow: a tenth suffices
        kparse = bc.katcp_py.MessageParser().parse
        assert [kparse(x).arguments for x in sub] == corpus["args"][:len(sub)]
        impls["katcp-python"] = lambda: _rate(lambda: _each(kparse, sub), len(sub))
    impls["split only"] = lambda: _rate(lambda: _each(SPLIT, lines), len(lines))
    measure = Measure(FAMILY, "parse one line at a time", "lines/s", impls,
                      limit="split only", aggregate="best",
                      targets=[Target("peer", 1.0, "katcp-codec raw")]
                      if "katcp-codec raw" in impls else [])
    suite.run(benchmark, measure, rounds=suite.pick(3, 5))


def _split_stream(chunks: list[bytes]) -> None:
    tail = b""
    for chunk in chunks:
        *lines, tail = (tail + chunk).split(b"\n")
        for line in lines:
            line.split(b" ")


def test_stream(benchmark, suite, corpus):
    lines, chunks = corpus["lines"], corpus["chunks"]
    got = [m.arguments for sp in [StreamParser()] for c in chunks for m in sp.feed(c)]
    assert got == corpus["args"]

    def ours():
        sp = StreamParser()
        return _rate(lambda: _each(sp.feed, chunks), len(lines))
    impls = {"ctlwire": ours}
    if bc.kc_lib is not None:
        def kc_raw():
            ap = bc.kc_lib.Parser(2**21).append
            return _rate(lambda: _each(ap, chunks), len(lines))
        impls["katcp-codec raw"] = kc_raw
    impls["split only"] = lambda: _rate(lambda: _split_stream(chunks), len(lines))
    measure = Measure(FAMILY, "parse a stream (64 KiB chunks)", "lines/s", impls,
                      limit="split only", aggregate="best",
                      targets=[Target("peer", 1.0, "katcp-codec raw")]
                      if "katcp-codec raw" in impls else [])
    suite.run(benchmark, measure, rounds=suite.pick(3, 5))


def test_format(benchmark, suite, corpus):
    ours, lines = corpus["ours"], corpus["lines"]
    impls = {"ctlwire": lambda: _rate(lambda: _each(bytes, ours), len(ours))}
    if bc.kc_lib is not None:
        mt = bc.kc_lib.MessageType
        kinds = {0: mt.REQUEST, 1: mt.REPLY, 2: mt.INFORM}
        raw = [bc.kc_lib.Message(kinds[m.mtype], m.name.encode(),
                                 int(m.mid) if m.mid else None, m.arguments) for m in ours]
        assert [bytes(m)[:-1] for m in raw] == corpus["bytes"]
        impls["katcp-codec raw"] = lambda: _rate(lambda: _each(bytes, raw), len(raw))
    if bc.aiokatcp is not None:
        amsgs = [bc.aiokatcp.Message.parse(x) for x in corpus["nl_lines"]]
        impls["aiokatcp"] = lambda: _rate(lambda: _each(bytes, amsgs), len(amsgs))
    # The limit: the wire fields already escaped, only joined.
    fields = [line.split(b" ") for line in lines]
    join = b" ".join
    impls["join only"] = lambda: _rate(lambda: _each(join, fields), len(fields))
    measure = Measure(FAMILY, "format bytes(msg)", "msgs/s", impls, limit="join only",
                      aggregate="best",
                      targets=[Target("peer", 1.0, "katcp-codec raw")]
                      if "katcp-codec raw" in impls else [])
    suite.run(benchmark, measure, rounds=suite.pick(3, 5))


def test_inform(benchmark, suite):
    from ctlwire.katcp import Message

    n = suite.pick(5_000, 20_000)
    args = [(b"%.6f" % (1.7e9 + i), b"1", f"rx0.adc{i % 16}.power", "nominal", repr(i * 0.5))
            for i in range(n)]
    expected = [bytes(Message.inform("sensor-status", *a)) for a in args]

    def ours() -> float:
        inform = Message.inform

        def run() -> None:
            for a in args:
                bytes(inform("sensor-status", *a))
        return _rate(run, n)
    impls = {"ctlwire": ours}
    if bc.kc_lib is not None:
        msg, kind = bc.kc_lib.Message, bc.kc_lib.MessageType.INFORM

        def kc_raw() -> float:
            def run() -> None:
                for a in args:
                    bytes(msg(kind, b"sensor-status", None,
                              [a[0], a[1], a[2].encode(), a[3].encode(), a[4].encode()]))
            return _rate(run, n)
        assert bytes(msg(kind, b"sensor-status", None, [args[0][0], args[0][1],
                     *(x.encode() for x in args[0][2:])]))[:-1] == expected[0]
        impls["katcp-codec raw"] = kc_raw
    if bc.aiokatcp is not None:
        def aio() -> float:
            inform = bc.aiokatcp.Message.inform

            def run() -> None:
                for a in args:
                    bytes(inform("sensor-status", *a))
            return _rate(run, n)
        impls["aiokatcp"] = aio

    def join_only() -> float:
        # The limit: the fields already bytes and needing no escape, only joined.
        fields = [(b"#sensor-status", a[0], a[1], a[2].encode(), a[3].encode(),
                   a[4].encode()) for a in args]
        join = b" ".join
        return _rate(lambda: _each(join, fields), n)
    impls["join only"] = join_only
    m = Measure(FAMILY, "build and format a #sensor-status inform", "msgs/s", impls,
                limit="join only", aggregate="best",
                targets=[Target("peer", 1.0, "katcp-codec raw")]
                if "katcp-codec raw" in impls else [])
    suite.run(benchmark, m, rounds=suite.pick(3, 5))


def test_wide(benchmark, suite, corpus):
    wide = corpus["wide"]
    reps = 200
    parse = MessageParser().parse

    def per_message_us(fn) -> float:
        def run() -> None:
            for _ in range(reps):
                fn()
        return 1e6 / _rate(run, reps)
    impls = {"ctlwire": lambda: per_message_us(lambda: parse(wide))}
    if bc.kc_lib is not None:
        wide_nl = wide + b"\n"

        def kc_raw():
            ap = bc.kc_lib.Parser(2**21).append
            return per_message_us(lambda: ap(wide_nl))
        impls["katcp-codec raw"] = kc_raw
    impls["split only"] = lambda: per_message_us(lambda: SPLIT(wide))
    measure = Measure(FAMILY, f"parse one message of {wide.count(b' ') + 1:,} arguments",
                      "us", impls, limit="split only", higher_is_better=False,
                      aggregate="best", targets=[Target("max", 150.0)])
    suite.run(benchmark, measure, rounds=suite.pick(3, 5))
