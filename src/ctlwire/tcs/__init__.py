"""ctlwire.tcs: TCS event streaming over ZeroMQ and replay of event databases.

``ctlwire.tcs.server`` is a drop-in for ``tcs_lib.server`` (ZMQServer, TCSDBReplay,
TCSMockEvent) plus a subscriber; ``ctlwire.tcs.events`` holds the database schema and
helpers; ``ctlwire.tcs.record`` records a live stream into a database.
"""
from .events import TCSDatabaseError
from .server import TCSDBReplay, TCSMockEvent, TCSSubscriber, ZMQServer

__all__ = ["ZMQServer", "TCSDBReplay", "TCSMockEvent", "TCSSubscriber", "TCSDatabaseError"]
