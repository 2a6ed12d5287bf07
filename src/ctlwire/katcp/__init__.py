"""KATCP: the Karoo Array Telescope Control Protocol.

Everything a device or client author needs is importable from here, with the names
katcp-python users know (``Message``, ``DeviceServer``, ``Sensor``, ``BlockingClient``,
``request``, ``return_reply``, ``Int``, ...).

Layering: the top of ``ctlwire.katcp``; imports the public modules and re-exports their
``__all__`` (see docs/layering.md for what may import what below).
"""
from __future__ import annotations

from . import aio, client, core, kattypes, sampling, sensor, server

__all__: list[str] = []

for _module in (core, sensor, sampling, kattypes, server, client, aio):
    for _name in _module.__all__:
        globals()[_name] = getattr(_module, _name)
        if _name not in __all__:
            __all__.append(_name)
del _module, _name
