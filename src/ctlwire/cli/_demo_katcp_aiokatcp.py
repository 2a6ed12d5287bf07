"""Demo section "katcp", last part: an aiokatcp-style device served by ctlwire.

The device is written against aiokatcp's API (``async def request_x(self, ctx, a:
int)`` handlers, ``Sensor(type, name, ...)``) with ``from ctlwire import aiokatcp`` as
its only change; a ``ctlwire.aiokatcp`` client talks to it and mirrors its sensors.

Layering: imports :mod:`ctlwire.aiokatcp` and the standard library.
"""
from __future__ import annotations

import asyncio
import enum

from ctlwire import aiokatcp


class Mode(enum.Enum):
    IDLE = 1
    TRACKING = 2


class Antenna(aiokatcp.DeviceServer):
    """A small antenna positioner, in aiokatcp's style."""

    VERSION = "antenna-1.0"
    BUILD_STATE = "antenna-1.0.0"

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.azimuth = aiokatcp.Sensor(float, "ant.azimuth", "Azimuth", "deg", default=0.0,
                                       initial_status=aiokatcp.Sensor.Status.NOMINAL)
        self.mode = aiokatcp.Sensor(Mode, "ant.mode", "Drive mode",
                                    initial_status=aiokatcp.Sensor.Status.NOMINAL)
        self.sensors.add(self.azimuth)
        self.sensors.add(self.mode)

    async def request_slew(self, ctx: aiokatcp.RequestContext, azimuth: float,
                           speed: float = 90.0) -> float:
        """Slew to an azimuth (deg) at speed (deg/s); informs on the way."""
        if not 0 <= azimuth < 360:
            raise aiokatcp.FailReply(f"azimuth {azimuth} outside 0..360")
        self.mode.value = Mode.TRACKING
        while abs(self.azimuth.value - azimuth) > 1e-9:
            await asyncio.sleep(0.02)
            step = min(speed * 0.02, abs(azimuth - self.azimuth.value))
            self.azimuth.value += step if azimuth > self.azimuth.value else -step
            ctx.inform(round(self.azimuth.value, 3))
        self.mode.value = Mode.IDLE
        return self.azimuth.value


async def session() -> None:
    server = Antenna("127.0.0.1", 0)
    await server.start()
    port = server.sockets[0].getsockname()[1]
    print(f"\naiokatcp-style device (ctlwire.aiokatcp) listening on 127.0.0.1:{port}")
    client = await aiokatcp.Client.connect("127.0.0.1", port)
    watcher = aiokatcp.SensorWatcher(client)
    client.add_sensor_watcher(watcher)
    await watcher.synced.wait()
    print(f"  mirrored sensors: {sorted(watcher.sensors)}")
    reply, informs = await client.request("slew", 5.4)
    steps = [float(m.arguments[0]) for m in informs]
    print(f"  ?slew 5.4 -> !slew ok {reply[0].decode()} after {len(steps)} informs {steps}")
    await client.request("watchdog")  # the sensor updates came before this reply
    az = watcher.sensors["ant.azimuth"]
    print(f"  mirror: ant.azimuth = {az.value} ({az.status.name}), "
          f"ant.mode = {watcher.sensors['ant.mode'].value.katcp_value.decode()}")
    try:
        await client.request("slew", 400)
    except aiokatcp.FailReply as exc:
        print(f"  ?slew 400 -> fail: {exc}")
    client.close()
    await client.wait_closed()
    await server.stop()


def run_aiokatcp_session() -> None:
    """Run the section on a fresh event loop."""
    asyncio.run(session())


if __name__ == "__main__":
    run_aiokatcp_session()
