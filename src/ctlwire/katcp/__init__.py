"""KATCP: the Karoo Array Telescope Control Protocol.

Everything a device or client author needs is importable from here, with the names
katcp-python users know (``Message``, ``DeviceServer``, ``Sensor``, ``BlockingClient``,
``request``, ``return_reply``, ``Int``, ...).
"""
from __future__ import annotations

import importlib as _importlib

__all__: list[str] = []


def _export(modname: str) -> None:
    # Modules land one by one while the package grows; a module that does not exist yet
    # is skipped, but any error inside an existing module is raised.
    try:
        mod = _importlib.import_module(f"{__name__}.{modname}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{modname}":
            return
        raise
    for name in getattr(mod, "__all__", ()):
        globals()[name] = getattr(mod, name)
        __all__.append(name)


for _modname in ("core", "sensor", "sampling", "kattypes", "server", "client", "aio"):
    _export(_modname)
del _modname
