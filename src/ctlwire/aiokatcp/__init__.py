"""aiokatcp's API on ctlwire's KATCP engine: change ``import aiokatcp`` to
``from ctlwire import aiokatcp`` and a device or client runs on ctlwire.

Submodules hold what aiokatcp's modules of the same names hold (``core``,
``connection``, ``sensor``, ``server``, ``client``, ``time_sync``); everything public
is re-exported here. See ``docs/aiokatcp.md`` for the migration guide.

Layering: the top of ``ctlwire.aiokatcp``; imports its own submodules only.
"""
from __future__ import annotations

from .client import (AbstractSensorWatcher, Client, ProtocolError, SensorWatcher,
                     SyncState)
from .connection import Connection, FailReply, InvalidReply
from .core import (Address, DeviceStatus, KatcpSyntaxError, LogLevel, Message, Now,
                   Timestamp, TimestampOrNow, TypeInfo, decode, encode, get_type,
                   register_type)
from .sensor import (AggregateSensor, Reading, Sensor, SensorSampler, SensorSet,
                     SimpleAggregateSensor)
from .server import DeviceServer, RequestContext
from .time_sync import ClockState, TimeSyncUpdater

#: The aiokatcp release whose API this package follows (code that checks
#: ``aiokatcp.__version__`` keeps working); ctlwire's own is ``ctlwire.__version__``.
__version__ = "2.3.0"

__all__ = [
    "Address", "DeviceStatus", "KatcpSyntaxError", "LogLevel", "Message", "Now",
    "Timestamp", "TimestampOrNow", "TypeInfo", "decode", "encode", "get_type",
    "register_type", "Connection", "FailReply", "InvalidReply", "AggregateSensor",
    "Reading", "Sensor", "SensorSampler", "SensorSet", "SimpleAggregateSensor",
    "DeviceServer", "RequestContext", "AbstractSensorWatcher", "Client", "ProtocolError",
    "SensorWatcher", "SyncState", "ClockState", "TimeSyncUpdater",
]


def minor_version() -> str:
    """``major.minor`` of :data:`__version__`."""
    return ".".join(__version__.split(".")[:2])
