"""Demo section "katcp": the codec, a live device server and the clients."""
from __future__ import annotations

import importlib
import time

from ctlwire.katcp import KatcpSyntaxError, Message, MessageParser, StreamParser


def _codec() -> None:
    parser = MessageParser()
    msg = Message.request("set-gain", "rx 1", 12.5, True, mid=7)
    wire = msg.to_wire()
    print(f"format  {msg!r}\n     -> {wire!r}")
    back = parser.parse(wire.rstrip(b"\n"))
    print(f"parse   {back!r}  (round trip equal: {back == msg})")
    try:
        parser.parse(b"?sensor-value[01] cpu")
    except KatcpSyntaxError as exc:
        print(f"reject  {exc}")
    stream = StreamParser(max_line_length=64)
    chunks = [b"#sensor-status 1763770000.5 1 cpu nom", b"inal 0.3\n?bad\\z\n?wat",
              b"chdog[3]\n?" + b"x" * 100 + b"\n!ok\n"]
    t0 = time.perf_counter()
    results = [r for c in chunks for r in stream.feed(c)]
    dt = (time.perf_counter() - t0) * 1e6
    print(f"stream  3 chunks -> {len(results)} results in {dt:.0f} us:")
    for r in results:
        kind = "error  " if isinstance(r, KatcpSyntaxError) else "message"
        print(f"          {kind} {r if kind == 'error  ' else repr(r)}")


def run() -> None:
    _codec()
    try:
        server_mod = importlib.import_module("ctlwire.cli._demo_katcp_server")
        client_mod = importlib.import_module("ctlwire.cli._demo_katcp_client")
    except ModuleNotFoundError as exc:
        print(f"(device server/client demo not available yet: {exc.name})")
        return
    server, host, port = server_mod.start_demo_server()
    try:
        print(f"\ndevice server listening on {host}:{port}")
        client_mod.run_client_session(host, port)
    finally:
        server.stop()
        server.join(timeout=5)
    importlib.import_module("ctlwire.cli._demo_katcp_aiokatcp").run_aiokatcp_session()


if __name__ == "__main__":
    run()
