"""ctlwire.tcs: TCS event streaming over ZeroMQ and replay of event databases.

``ctlwire.tcs.server`` is a drop-in for ``tcs_lib.server`` (ZMQServer, TCSDBReplay,
TCSMockEvent) plus a subscriber; ``ctlwire.tcs.transport`` holds the publishing server
and the subscriber (no compiled code); ``ctlwire.tcs.events`` the database schema,
helpers and the message codec; ``ctlwire.tcs.record`` records a live stream into a
database.

Importing this package loads no compiled extension: the replay names
(``TCSDBReplay``, ``TCSMockEvent``) load the replay engine when first used, so
``ctlwire.ocd`` works where the engine is not built.
"""
from __future__ import annotations

from typing import Any

from .events import TCSDatabaseError
from .transport import TCSSubscriber, ZMQServer

__all__ = ["ZMQServer", "TCSDBReplay", "TCSMockEvent", "TCSSubscriber", "TCSDatabaseError"]

_LAZY = {"TCSDBReplay", "TCSMockEvent"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import server
        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
