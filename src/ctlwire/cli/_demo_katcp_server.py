"""Demo device for ``ctlwire-demo katcp``: a KATCP device server with live sensors.

:func:`start_demo_server` starts it on 127.0.0.1 (a free port) in a background thread;
the client half of the demo talks to it. A second thread updates the sensors a few
times a second, as a real device's acquisition thread would.
"""
from __future__ import annotations

import asyncio
import logging
import math
import threading
import time

from ctlwire.katcp import (DeviceServer, Discrete, Float, Int, Sensor, request,
                           return_reply)

__all__ = ["DemoDevice", "start_demo_server"]


class DemoDevice(DeviceServer):
    """A small instrument: a cryostat with a temperature, a mode and a counter."""

    VERSION_INFO = ("ctlwire-demo", 1, 0)
    BUILD_INFO = ("ctlwire-demo", 1, 0, "")

    def setup_sensors(self) -> None:
        self.temperature = Sensor.float("cryo.temperature", "Cold head temperature", "K",
                                        [0.0, 300.0], default=4.2,
                                        initial_status=Sensor.NOMINAL)
        self.mode = Sensor.discrete("cryo.mode", "Operating mode", "",
                                    ["idle", "cooling", "warming"],
                                    initial_status=Sensor.NOMINAL)
        self.counter = Sensor.integer("frames.count", "Frames acquired", "",
                                      initial_status=Sensor.NOMINAL)
        self.psu_ok = Sensor.boolean("psu.ok", "Power supply good", default=True,
                                     initial_status=Sensor.NOMINAL)
        for sensor in (self.temperature, self.mode, self.counter, self.psu_ok):
            self.add_sensor(sensor)
        self._updates_stop = threading.Event()
        self._updater: threading.Thread | None = None

    @request(Float(), Float())
    @return_reply(Float())
    def request_add(self, req, a, b):
        """Add two numbers and return the sum."""
        return ("ok", a + b)

    @request(Discrete(["idle", "cooling", "warming"]))
    @return_reply(Discrete(["idle", "cooling", "warming"]))
    def request_set_mode(self, req, mode):
        """Set the cryostat operating mode (idle, cooling or warming)."""
        self.mode.set_value(mode)
        self.log.warn("mode changed to %s", mode)
        return ("ok", mode)

    @request(Int(min=1, max=100))
    @return_reply(Int())
    async def request_count_slowly(self, req, n):
        """Count to n, one #count-slowly inform every 10 ms, then reply with n."""
        for i in range(1, n + 1):
            await asyncio.sleep(0.01)
            req.inform(i)
        return ("ok", n)

    def start(self, timeout=None, daemon=None, excepthook=None):
        """Start the server and the sensor-update thread."""
        super().start(timeout=timeout, daemon=daemon, excepthook=excepthook)
        self._updates_stop.clear()
        self._updater = threading.Thread(target=self._update_sensors, daemon=True,
                                         name="demo-sensor-updates")
        self._updater.start()

    def stop(self, timeout=1.0):
        """Stop the sensor-update thread and the server."""
        self._updates_stop.set()
        if self._updater is not None and self._updater is not threading.current_thread():
            self._updater.join(timeout)
        super().stop(timeout=timeout)

    def _update_sensors(self) -> None:
        t0 = time.monotonic()
        n = 0
        while not self._updates_stop.wait(0.1):
            n += 1
            elapsed = time.monotonic() - t0
            self.temperature.set_value(round(4.2 + 0.3 * math.sin(elapsed), 3))
            self.counter.set_value(n)


def start_demo_server() -> tuple[DemoDevice, str, int]:
    """Start the demo device on 127.0.0.1 in a background thread.

    Returns
    -------
    (server, host, port)
        Call ``server.stop(); server.join()`` when done.
    """
    # The device's #log informs are the demo's point; keep them off the terminal.
    logger = logging.getLogger("ctlwire.demo.katcp-device")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    server = DemoDevice("127.0.0.1", 0, logger=logger)
    server.start(timeout=10.0, daemon=True)
    host, port = server.bind_address
    return server, host, port
