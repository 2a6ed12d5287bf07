"""ctlwire.roc: remote objects through a Majordomo broker, distributed logs, status trees.

Documented API (names as users of the original ROC know them)::

    from ctlwire.roc import RocServer, RocClient, Endpoints, run_simple_server
    from ctlwire.roc import RocLogger, initRocLogging, RocStatusUpdater, statusUpdateIterator
"""
from ctlwire.roc.broker import Broker
from ctlwire.roc.client import (BrokerUnavailable, ProtocolError, RemoteError, RocClient,
                                RocError, RocFuture, RocProxy, RocTimeout,
                                UnknownObjectError, WorkerLostError)
from ctlwire.roc.endpoints import Endpoints
from ctlwire.roc.server import RocServer, run_simple_server

runSimpleServer = run_simple_server  # the spelling of the original documentation

__all__ = [
    "Broker", "BrokerUnavailable", "Endpoints", "ProtocolError", "RemoteError",
    "RocClient", "RocError", "RocFuture", "RocProxy", "RocServer", "RocTimeout",
    "UnknownObjectError", "WorkerLostError", "run_simple_server", "runSimpleServer",
]
