"""The directory: what every server offers, from the client and from ``rocbroker --list``."""
from __future__ import annotations

import subprocess
import sys

from ctlwire.roc import RocClient

from ctlwire._testing.proc import child_env


class Camera:
    """A camera."""

    fps = 10.0

    def openShutter(self):
        """Open the shutter.

        More detail that the directory leaves out."""
        return "open"

    def frames(self, n):
        """Take n frames, one by one."""
        yield from range(n)

    @property
    def temperature(self):
        """Sensor temperature in C."""
        return -20.0


class Dome:
    def rotate(self, az):
        return az


def test_objects_lists_what_the_servers_offer(broker, serve, ep, wait_for):
    serve("vnir", Camera())
    serve("dome", Dome())
    c = RocClient(ep, timeout=5.0)
    try:
        wait_for(lambda: c.service_available("vnir") and c.service_available("dome"), 10,
                 "both servers")
        objects = c.objects()
        assert sorted(objects) == ["dome", "vnir"]
        assert objects["vnir"]["methods"] == {"frames": "Take n frames, one by one.",
                                              "openShutter": "Open the shutter."}
        assert objects["vnir"]["attributes"] == {"fps": "",
                                                 "temperature": "Sensor temperature in C."}
        assert objects["vnir"]["generators"] == ["frames"]
        assert objects["dome"] == {"methods": {"rotate": ""}, "attributes": {},
                                   "generators": []}
    finally:
        c.close()


def test_objects_is_empty_with_no_server(broker, ep):
    with RocClient(ep, timeout=2.0) as c:
        assert c.objects() == {}


def test_rocbroker_list_prints_the_directory(broker, serve, ep, wait_for):
    serve("vnir", Camera())
    with RocClient(ep, timeout=5.0) as c:
        wait_for(lambda: c.service_available("vnir"), 10, "the server")
    out = subprocess.run([sys.executable, "-m", "ctlwire.cli.rocbroker", "--list",
                          f"127.0.0.1:{ep.brokerBasePort}"], capture_output=True,
                         text=True, timeout=30, env=child_env(CTLWIRE_ROC_BROKER=None))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "vnir"
    assert "    openShutter()  [method]  Open the shutter." in lines
    assert "    frames()  [generator]  Take n frames, one by one." in lines
    assert "    fps  [attribute]" in lines
