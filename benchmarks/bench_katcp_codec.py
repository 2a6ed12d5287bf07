"""KATCP codec benchmark: ctlwire beside katcp-python, aiokatcp and katcp-codec.

Run with ``python benchmarks/bench_katcp_codec.py`` after ``pip install '.[bench]'``.

Corpus: a fixed-seed mix of about 100,000 realistic lines (requests with message ids,
``#sensor-status`` informs, replies carrying escaped tracebacks, a few lines with 1 KiB
binary arguments) plus one wide message of about 4,100 arguments (80 KB).

Measures, best of several repeats, in lines (or messages) per second:

* ``parse``: one line at a time (``MessageParser.parse`` and each peer's equivalent);
* ``stream``: the corpus as one byte stream fed in 64 KiB chunks;
* ``format``: ``bytes(msg)`` of already-built messages;
* ``inform``: building and formatting a ``#sensor-status`` inform;
* ``wide``: parsing the wide message (microseconds per message).

Before timing, every implementation's parse results and formatted bytes are checked
against ctlwire's, so the figures compare equal work.
"""
from __future__ import annotations

import argparse
import collections
import collections.abc
import gc
import random
import sys
import time

# katcp-python 0.9.3 pins tornado 4.5, which still imports ABCs from `collections`.
for _n in dir(collections.abc):
    if not _n.startswith("_") and not hasattr(collections, _n):
        setattr(collections, _n, getattr(collections.abc, _n))

from ctlwire.katcp import Message, MessageParser, StreamParser, encode_message  # noqa: E402

try:
    import katcp as katcp_py  # katcp-python
except Exception as exc:  # pragma: no cover - optional peer
    katcp_py = None
    print(f"# katcp-python unavailable: {exc}", file=sys.stderr)
try:
    import aiokatcp
except Exception as exc:  # pragma: no cover
    aiokatcp = None
    print(f"# aiokatcp unavailable: {exc}", file=sys.stderr)
try:
    import katcp_codec
    import katcp_codec._lib as kc_lib
except Exception as exc:  # pragma: no cover
    katcp_codec = kc_lib = None
    print(f"# katcp-codec unavailable: {exc}", file=sys.stderr)

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/opt/device/server.py", line 412, in request_configure\n'
    "    self._apply(config)\n"
    '  File "/opt/device/hw.py", line 88, in _apply\n'
    "    raise RuntimeError('ADC %d not responding\\tretry later' % n)\n"
    "RuntimeError: ADC 3 not responding\tretry later\n"
)


def make_corpus(n_lines: int, seed: int = 20261122) -> list[bytes]:
    """Realistic KATCP traffic, as wire lines without end-of-line bytes."""
    rng = random.Random(seed)
    sensors = [f"rx{r}.adc{a}.{q}" for r in range(8) for a in range(16)
               for q in ("temperature", "power", "state", "rate")]
    statuses = ["nominal", "nominal", "nominal", "warn", "error", "unknown"]
    requests = ["sensor-value", "sensor-sampling", "set-gain", "capture-start", "watchdog",
                "configure", "help", "log-level"]
    lines = []
    t = 1_763_770_000.0
    for i in range(n_lines):
        r = rng.random()
        t += rng.random() * 0.01
        if r < 0.40:
            name = rng.choice(sensors)
            value = rng.choice([repr(rng.uniform(-100, 100)), str(rng.randint(0, 5000)),
                                "locked", "1"])
            msg = encode_message(2, "sensor-status",
                                 [b"%.6f" % t, b"1", name, rng.choice(statuses), value])
        elif r < 0.78:
            req = rng.choice(requests)
            args = [rng.choice(sensors)] if req.startswith("sensor") else \
                [str(rng.randint(0, 100)) for _ in range(rng.randint(0, 4))]
            msg = encode_message(0, req, args, mid=rng.randint(1, 2**31 - 1))
        elif r < 0.90:
            msg = encode_message(1, rng.choice(requests),
                                 ["fail", TRACEBACK * rng.randint(1, 3)],
                                 mid=rng.randint(1, 99999))
        elif r < 0.99:
            msg = encode_message(2, "log", ["info", b"%.6f" % t, "device.hw",
                                            "capture running at %d Hz" % rng.randint(1, 9000)])
        else:
            blob = bytes(rng.getrandbits(8) for _ in range(1024))
            msg = encode_message(1, "read-memory", ["ok", blob], mid=rng.randint(1, 999))
        lines.append(msg[:-1])
    return lines


def make_wide(seed: int = 7) -> bytes:
    rng = random.Random(seed)
    args = [repr(rng.uniform(-1e3, 1e3)) for _ in range(4100)]
    return encode_message(2, "spectrum", args)[:-1]


def best_rate(fn, count: int, repeats: int) -> float:
    """Items per second: the best of ``repeats`` timed runs of ``fn`` (which does ``count``)."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return count / best


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--peers", default="katcp-codec-raw,katcp-codec,aiokatcp,katcp-python",
                    help="comma-separated peers to run")
    args = ap.parse_args(argv)
    peers = set(args.peers.split(","))

    lines = make_corpus(args.lines)
    wide = make_wide()
    stream = b"".join(line + b"\n" for line in lines)
    chunks = chunks_of(stream, 65536)
    nl_lines = [line + b"\n" for line in lines]
    print(f"corpus: {len(lines)} lines, {len(stream) / 1e6:.1f} MB; wide message "
          f"{len(wide) / 1e3:.0f} KB with {wide.count(b' ')} arguments")

    parser = MessageParser()
    ours = [parser.parse(line) for line in lines]
    expected_args = [m.arguments for m in ours]
    expected_bytes = [bytes(m) for m in ours]
    results: dict[str, dict[str, float]] = {}

    # --- ctlwire -----------------------------------------------------------------------
    def cw_parse():
        p = parser.parse
        for line in lines:
            p(line)

    def cw_stream():
        sp = StreamParser()
        for c in chunks:
            sp.feed(c)

    def cw_format():
        for m in ours:
            bytes(m)

    inform_args = [(b"%.6f" % (1.7e9 + i), b"1", f"rx0.adc{i % 16}.power",
                    "nominal", repr(i * 0.5)) for i in range(20000)]

    def cw_inform():
        inform = Message.inform
        for a in inform_args:
            bytes(inform("sensor-status", *a))

    def cw_wide():
        for _ in range(200):
            parser.parse(wide)

    assert [m.arguments for s in [StreamParser()] for c in chunks for m in s.feed(c)] \
        == expected_args
    results["ctlwire"] = {
        "parse": best_rate(cw_parse, len(lines), args.repeats),
        "stream": best_rate(cw_stream, len(lines), args.repeats),
        "format": best_rate(cw_format, len(lines), args.repeats),
        "inform": best_rate(cw_inform, len(inform_args), args.repeats),
        "wide_us": 1e6 / best_rate(cw_wide, 200, args.repeats),
    }

    # --- katcp-codec raw objects (Rust) ---------------------------------------------------
    if kc_lib is not None and "katcp-codec-raw" in peers:
        kp = kc_lib.Parser(2**21)
        got = [m for line in nl_lines for m in kp.append(line)]
        assert [m.arguments for m in got] == expected_args
        MT = kc_lib.MessageType
        mtmap = {0: MT.REQUEST, 1: MT.REPLY, 2: MT.INFORM}
        raw_msgs = [kc_lib.Message(mtmap[m.mtype], m.name.encode(), 
                                   int(m.mid) if m.mid else None, m.arguments) for m in ours]
        assert [bytes(m)[:-1] for m in raw_msgs] == expected_bytes

        def kr_parse():
            ap_ = kc_lib.Parser(2**21).append
            for line in nl_lines:
                ap_(line)

        def kr_stream():
            ap_ = kc_lib.Parser(2**21).append
            for c in chunks:
                ap_(c)

        def kr_format():
            for m in raw_msgs:
                bytes(m)

        def kr_inform():
            Msg, inf = kc_lib.Message, MT.INFORM
            for a in inform_args:
                bytes(Msg(inf, b"sensor-status", None,
                          [a[0], a[1], a[2].encode(), a[3].encode(), a[4].encode()]))

        wide_nl = wide + b"\n"

        def kr_wide():
            ap_ = kc_lib.Parser(2**21).append
            for _ in range(200):
                ap_(wide_nl)

        results["katcp-codec raw"] = {
            "parse": best_rate(kr_parse, len(lines), args.repeats),
            "stream": best_rate(kr_stream, len(lines), args.repeats),
            "format": best_rate(kr_format, len(lines), args.repeats),
            "inform": best_rate(kr_inform, len(inform_args), args.repeats),
            "wide_us": 1e6 / best_rate(kr_wide, 200, args.repeats),
        }

    # --- katcp-codec Python classes -------------------------------------------------------
    if katcp_codec is not None and "katcp-codec" in peers:
        KM = katcp_codec.MessageType
        kmap = {0: KM.REQUEST, 1: KM.REPLY, 2: KM.INFORM}
        kpy = [katcp_codec.Message(kmap[m.mtype], m.name.encode(),
                                   int(m.mid) if m.mid else None, m.arguments) for m in ours]
        assert [bytes(m)[:-1] for m in kpy] == expected_bytes

        def kp_parse():
            ap_ = katcp_codec.Parser(2**21).append
            for line in nl_lines:
                ap_(line)

        def kp_stream():
            ap_ = katcp_codec.Parser(2**21).append
            for c in chunks:
                ap_(c)

        def kp_format():
            for m in kpy:
                bytes(m)

        def kp_inform():
            Msg, inf = katcp_codec.Message, KM.INFORM
            for a in inform_args:
                bytes(Msg(inf, b"sensor-status", None,
                          [a[0], a[1], a[2].encode(), a[3].encode(), a[4].encode()]))

        results["katcp-codec"] = {
            "parse": best_rate(kp_parse, len(lines), args.repeats),
            "stream": best_rate(kp_stream, len(lines), args.repeats),
            "format": best_rate(kp_format, len(lines), args.repeats),
            "inform": best_rate(kp_inform, len(inform_args), args.repeats),
        }

    # --- aiokatcp ---------------------------------------------------------------------------
    if aiokatcp is not None and "aiokatcp" in peers:
        AM = aiokatcp.Message
        amsgs = [AM.parse(line) for line in nl_lines]
        assert [m.arguments for m in amsgs] == expected_args
        assert [bytes(m)[:-1] for m in amsgs] == expected_bytes

        def ai_parse():
            parse = AM.parse
            for line in nl_lines:
                parse(line)

        def ai_format():
            for m in amsgs:
                bytes(m)

        def ai_inform():
            inform = AM.inform
            for a in inform_args:
                bytes(inform("sensor-status", *a))

        results["aiokatcp"] = {
            "parse": best_rate(ai_parse, len(lines), args.repeats),
            "format": best_rate(ai_format, len(lines), args.repeats),
            "inform": best_rate(ai_inform, len(inform_args), args.repeats),
        }

    # --- katcp-python ------------------------------------------------------------------------
    if katcp_py is not None and "katcp-python" in peers:
        kparser = katcp_py.MessageParser()
        sub = lines[: max(1, len(lines) // 10)]  # katcp-python is slow: a tenth suffices
        kmsgs = [kparser.parse(line) for line in sub]
        assert [m.arguments for m in kmsgs] == expected_args[: len(sub)]
        assert [bytes(m) for m in kmsgs] == expected_bytes[: len(sub)]

        def kpy_parse():
            for line in sub:
                kparser.parse(line)

        def kpy_format():
            for m in kmsgs:
                bytes(m)

        sub_inf = inform_args[:2000]

        def kpy_inform():
            inform = katcp_py.Message.inform
            for a in sub_inf:
                bytes(inform("sensor-status", *a))

        results["katcp-python"] = {
            "parse": best_rate(kpy_parse, len(sub), args.repeats),
            "format": best_rate(kpy_format, len(sub), args.repeats),
            "inform": best_rate(kpy_inform, len(sub_inf), max(1, args.repeats // 2)),
        }

    # --- report -----------------------------------------------------------------------------
    cols = [("parse", "parse lines/s"), ("stream", "stream lines/s"),
            ("format", "bytes(msg)/s"), ("inform", "inform build+fmt/s"),
            ("wide_us", "wide parse us")]
    print()
    print(f"{'implementation':<18}" + "".join(f"{title:>20}" for _, title in cols))
    for impl, r in results.items():
        row = f"{impl:<18}"
        for key, _ in cols:
            v = r.get(key)
            row += f"{'-':>20}" if v is None else (
                f"{v:>20.1f}" if key == "wide_us" else f"{v / 1e6:>18.3f} M")
        print(row)
    print()
    base = results["ctlwire"]
    for impl, r in results.items():
        if impl == "ctlwire":
            continue
        ratios = []
        for key, _ in cols:
            if key in r:
                ratio = (r[key] / base[key]) if key == "wide_us" else (base[key] / r[key])
                ratios.append(f"{key} x{ratio:.2f}")
        print(f"ctlwire vs {impl:<16} " + ", ".join(ratios))
    print(f"\nwide message parse: {base['wide_us']:.1f} us (target < 150 us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
