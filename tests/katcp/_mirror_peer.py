"""A device for the mirror tests, served by aiokatcp, katcp-python or ctlwire in a child process.

Run as ``python _mirror_peer.py --impl aiokatcp|katcp|ctlwire [--port N] [--sensors N]``;
prints ``PORT <n>`` once serving. Sensors: ``counter`` and ``s0000`` .. (``--sensors``)
integers, all nominal. Requests besides the standard ones:

* ``?set NAME VALUE`` sets an integer sensor;
* ``?add-sensor NAME`` / ``?remove-sensor NAME`` change the interface and send
  ``#interface-changed sensor-list``;
* ``?slow SECONDS`` replies after a delay (timeout hint 30 s where the library has them).
"""
# No "from __future__ import annotations": aiokatcp reads the handlers' annotations as types.
import argparse
import asyncio
import sys
import threading


def serve_aiokatcp(port: int, n: int) -> None:
    import aiokatcp

    class Peer(aiokatcp.DeviceServer):
        VERSION = "mirror-peer-1.0"
        BUILD_STATE = "mirror-peer-1.0.0"

        def __init__(self) -> None:
            super().__init__("127.0.0.1", port)
            for name in ["counter"] + [f"s{i:04d}" for i in range(n)]:
                self.sensors.add(self._int(name))

        @staticmethod
        def _int(name: str) -> "aiokatcp.Sensor":
            return aiokatcp.Sensor(int, name, f"Sensor {name}", default=0,
                                   initial_status=aiokatcp.Sensor.Status.NOMINAL)

        async def request_set(self, ctx, name: str, value: int) -> None:
            """Set an integer sensor."""
            self.sensors[name].value = value

        async def request_add_sensor(self, ctx, name: str) -> None:
            """Add an integer sensor."""
            self.sensors.add(self._int(name))
            self.mass_inform("interface-changed", "sensor-list")

        async def request_remove_sensor(self, ctx, name: str) -> None:
            """Remove a sensor."""
            self.sensors.remove(self.sensors[name])
            self.mass_inform("interface-changed", "sensor-list")

        async def request_slow(self, ctx, seconds: float) -> None:
            """Reply after a delay."""
            await asyncio.sleep(seconds)

    async def main() -> None:
        server = Peer()
        await server.start()
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        await server.join()

    asyncio.run(main())


def serve_katcp_python(port: int, n: int) -> None:
    import katcp
    from katcp.kattypes import Float, Int, Str, request, request_timeout_hint, return_reply

    class Peer(katcp.DeviceServer):
        VERSION_INFO = ("mirror-peer", 1, 0)
        BUILD_INFO = ("mirror-peer", 1, 0, "")
        PROTOCOL_INFO = katcp.core.ProtocolFlags(5, 1, set([
            katcp.core.ProtocolFlags.MULTI_CLIENT, katcp.core.ProtocolFlags.MESSAGE_IDS,
            katcp.core.ProtocolFlags.BULK_SET_SENSOR_SAMPLING,
            katcp.core.ProtocolFlags.REQUEST_TIMEOUT_HINTS]))

        def setup_sensors(self):
            for name in ["counter"] + [f"s{i:04d}" for i in range(n)]:
                self.add_sensor(self._int(name))

        @staticmethod
        def _int(name):
            s = katcp.Sensor.integer(name, f"Sensor {name}", "", default=0)
            s.set_value(0, katcp.Sensor.NOMINAL)
            return s

        @request(Str(), Int())
        @return_reply()
        def request_set(self, req, name, value):
            """Set an integer sensor."""
            self.get_sensor(name).set_value(value, katcp.Sensor.NOMINAL)
            return ("ok",)

        @request(Str())
        @return_reply()
        def request_add_sensor(self, req, name):
            """Add an integer sensor."""
            self.add_sensor(self._int(name))
            self.mass_inform(katcp.Message.inform("interface-changed", "sensor-list"))
            return ("ok",)

        @request(Str())
        @return_reply()
        def request_remove_sensor(self, req, name):
            """Remove a sensor."""
            self.remove_sensor(name)
            self.mass_inform(katcp.Message.inform("interface-changed", "sensor-list"))
            return ("ok",)

        @request_timeout_hint(30)
        @request(Float())
        @return_reply()
        def request_slow(self, req, seconds):
            """Reply after a delay."""
            import time
            time.sleep(seconds)
            return ("ok",)

    server = Peer("127.0.0.1", port)
    server.set_concurrency_options(thread_safe=True, handler_thread=True)
    server.start(timeout=10)
    print(f"PORT {server.bind_address[1]}", flush=True)
    server.join()


def serve_ctlwire(port: int, n: int) -> None:
    from ctlwire.katcp import DeviceServer, Message, ProtocolFlags, Sensor
    from ctlwire.katcp.kattypes import request_timeout_hint

    class Peer(DeviceServer):
        VERSION_INFO = ("mirror-peer", 1, 0)
        BUILD_INFO = ("mirror-peer", 1, 0, "")
        PROTOCOL_INFO = ProtocolFlags(5, 1, "MIBT")

        def setup_sensors(self):
            for name in ["counter"] + [f"s{i:04d}" for i in range(n)]:
                self.add_sensor(self._int(name))

        @staticmethod
        def _int(name):
            return Sensor.integer(name, f"Sensor {name}", "", default=0,
                                  initial_status=Sensor.NOMINAL)

        def request_set(self, req, msg):
            """Set an integer sensor."""
            self.get_sensor(msg.arguments[0].decode()).set_value(int(msg.arguments[1]))
            return req.make_reply("ok")

        def request_add_sensor(self, req, msg):
            """Add an integer sensor."""
            self.add_sensor(self._int(msg.arguments[0].decode()))
            self.mass_inform(Message.inform("interface-changed", "sensor-list"))
            return req.make_reply("ok")

        def request_remove_sensor(self, req, msg):
            """Remove a sensor."""
            self.remove_sensor(msg.arguments[0].decode())
            self.mass_inform(Message.inform("interface-changed", "sensor-list"))
            return req.make_reply("ok")

        @request_timeout_hint(30)
        async def request_slow(self, req, msg):
            """Reply after a delay."""
            await asyncio.sleep(float(msg.arguments[0]))
            return req.make_reply("ok")

    server = Peer("127.0.0.1", port)
    server.start(timeout=10)
    print(f"PORT {server.bind_address[1]}", flush=True)
    threading.Event().wait()


class Peer:
    """This script in a child process, restartable on the same port (used by the tests).

    ``impl`` is ``aiokatcp``, ``katcp`` or ``ctlwire``; ``port`` 0 picks a free one.
    """

    def __init__(self, impl: str, sensors: int = 0, port: int = 0,
                 timeout: float = 20.0) -> None:
        import selectors
        import subprocess

        from ctlwire._testing.proc import child_env

        self.impl, self.sensors, self.timeout = impl, sensors, timeout
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--impl", impl, "--port", str(port),
             "--sensors", str(sensors)], stdout=subprocess.PIPE, env=child_env())
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            line = self.proc.stdout.readline().decode() if sel.select(timeout) else ""
        if not line.startswith("PORT "):
            self.kill()
            raise RuntimeError(f"{impl} peer did not start: {line!r}")
        self.port = int(line.split()[1])

    def kill(self) -> None:
        """Kill the child and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(self.timeout)
        self.proc.stdout.close()

    def restart(self) -> None:
        """Kill the device and start a fresh one on the same port."""
        self.kill()
        port = self.port
        self.__init__(self.impl, self.sensors, port, self.timeout)  # type: ignore[misc]
        if self.port != port:
            raise RuntimeError(f"restarted on port {self.port}, not {port}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=("aiokatcp", "katcp", "ctlwire"), required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--sensors", type=int, default=0)
    args = ap.parse_args()
    serve = {"aiokatcp": serve_aiokatcp, "katcp": serve_katcp_python,
             "ctlwire": serve_ctlwire}[args.impl]
    try:
        serve(args.port, args.sensors)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
