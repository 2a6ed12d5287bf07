"""ctlwire.roc: remote objects through a Majordomo broker, distributed logs, status trees.

Documented API (names as users of the original ROC know them)::

    from ctlwire.roc import RocServer, RocClient, Endpoints, run_simple_server
    from ctlwire.roc import RocLogger, initRocLogging, RocStatusUpdater, statusUpdateIterator

Names are imported on first use, so importing one of them does not load the others.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Broker": "broker",
    "BrokerUnavailable": "client", "ProtocolError": "client", "RemoteError": "client",
    "RocClient": "client", "RocError": "client", "RocFuture": "client",
    "RocProxy": "client", "RocTimeout": "client", "UnknownObjectError": "client",
    "ProgressIterator": "client",
    "WorkerLostError": "client",
    "Endpoints": "endpoints",
    "RocLogger": "logging", "initRocLogging": "logging",
    "RocServer": "server", "run_simple_server": "server",
    "RocStatusUpdater": "status", "statusUpdateIterator": "status", "merge_tree": "status",
}

__all__ = sorted([*_EXPORTS, "runSimpleServer"])


def __getattr__(name: str) -> Any:
    if name == "runSimpleServer":  # the spelling of the original documentation
        name = "run_simple_server"
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ctlwire.roc' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ctlwire.roc.{module}"), name)


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs
    from ctlwire.roc.broker import Broker
    from ctlwire.roc.client import (BrokerUnavailable, ProgressIterator, ProtocolError,
                                    RemoteError,
                                    RocClient, RocError, RocFuture, RocProxy, RocTimeout,
                                    UnknownObjectError, WorkerLostError)
    from ctlwire.roc.endpoints import Endpoints
    from ctlwire.roc.logging import RocLogger, initRocLogging
    from ctlwire.roc.server import RocServer, run_simple_server
    from ctlwire.roc.server import run_simple_server as runSimpleServer
    from ctlwire.roc.status import RocStatusUpdater, merge_tree, statusUpdateIterator
