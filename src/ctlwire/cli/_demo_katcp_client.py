"""Demo: a short KATCP client session against a running device server.

``run_client_session(host, port)`` prints what the three clients do: blocking requests
(``BlockingClient``), a request answered through callbacks (``CallbackClient``), and a
sensor subscription with the asyncio client (``AioClient``). Every wait is bounded, and
every client is stopped before it returns.
"""
from __future__ import annotations

import asyncio
import threading
import time

from ctlwire.katcp.aio import AioClient
from ctlwire.katcp.client import BlockingClient, CallbackClient
from ctlwire.katcp.core import Message

TIMEOUT = 5.0


def _show(msg: Message) -> str:
    if msg.mid is not None:  # message ids are bookkeeping; keep the transcript readable
        msg = msg.copy()
        msg.mid = None
    text = str(msg)
    return text if len(text) <= 100 else text[:97] + "..."


def _blocking(host: str, port: int) -> list[str]:
    client = BlockingClient(host, port, timeout=TIMEOUT, auto_reconnect=False)
    client.start()
    try:
        if not client.wait_connected(TIMEOUT) or not client.wait_protocol(TIMEOUT):
            raise RuntimeError(f"no KATCP server at {host}:{port}")
        print(f"BlockingClient: connected, server protocol {client.protocol_flags}, "
              f"device {client.versions.get('katcp-device', ('?',))[0]}")
        for request in (Message.request("watchdog"), Message.request("help", "watchdog")):
            reply, informs = client.blocking_request(request)
            print(f"  {_show(request)}")
            for inform in informs:
                print(f"    {_show(inform)}")
            print(f"    {_show(reply)}")
        reply, informs = client.blocking_request(Message.request("sensor-list"))
        names = [m.arguments[0].decode() for m in informs if m.arguments]
        # Numeric sensors first: their updates make the better show.
        numeric = [m.arguments[0].decode() for m in informs
                   if len(m.arguments) > 3 and m.arguments[3] in (b"float", b"integer")]
        print(f"  ?sensor-list -> {_show(reply)}: {', '.join(names[:6])}"
              f"{' ...' if len(names) > 6 else ''}")
        t0 = time.perf_counter()
        for _ in range(1000):
            client.blocking_request(Message.request("watchdog"))
        print(f"  1000 sequential ?watchdog in {(time.perf_counter() - t0) * 1e3:.0f} ms")
        return numeric + [n for n in names if n not in numeric]
    finally:
        client.stop()
        client.join(TIMEOUT)


def _callback(host: str, port: int) -> None:
    client = CallbackClient(host, port, timeout=TIMEOUT, auto_reconnect=False)
    client.start()
    done = threading.Event()
    lines: list[str] = []
    try:
        if not client.wait_protocol(TIMEOUT):
            raise RuntimeError(f"no KATCP server at {host}:{port}")
        client.callback_request(
            Message.request("version-list"),
            inform_cb=lambda msg: lines.append(f"    inform_cb {_show(msg)}"),
            reply_cb=lambda msg: (lines.append(f"    reply_cb  {_show(msg)}"), done.set()))
        finished = done.wait(TIMEOUT)
        print("CallbackClient: ?version-list")
        print("\n".join(lines) if finished else "    (no reply in time)")
    finally:
        client.stop()
        client.join(TIMEOUT)


async def _subscribe(host: str, port: int, sensors: list[str]) -> None:
    async with await AioClient.connect(host, port, timeout=TIMEOUT) as client:
        print(f"AioClient: connected, protocol {client.protocol_flags}")
        if not sensors:
            print("  (server has no sensors)")
            return
        name = sensors[0]
        updates = client.sensor_updates()
        reply = await client.subscribe(name, "period", 0.1)
        print(f"  ?sensor-sampling {name} period 0.1 -> {_show(reply)}")
        try:
            for _ in range(3):
                reading = await asyncio.wait_for(updates.__anext__(), TIMEOUT)
                print(f"  update: {reading.name} = {reading.value.decode(errors='replace')} "
                      f"({reading.status}) at {reading.timestamp:.3f}")
        except asyncio.TimeoutError:
            print("  (no update within the timeout)")
        finally:
            updates.close()
            await client.subscribe(name, "none")
        replies = await asyncio.gather(*(client.request("watchdog") for _ in range(100)))
        print(f"  100 concurrent awaited ?watchdog: {sum(r.reply_ok() for r, _ in replies)} ok")


def run_client_session(host: str, port: int) -> None:
    """Print a short client session against the KATCP server at ``host:port``."""
    sensors = _blocking(host, port)
    _callback(host, port)
    asyncio.run(asyncio.wait_for(_subscribe(host, port, sensors), TIMEOUT * 3))
