"""ctlwire: fast, sturdy control-system protocols for telescopes and instruments.

Subpackages, one per protocol family:

``ctlwire.katcp``  KATCP device servers, clients and the wire codec.
``ctlwire.roc``    Remote object calls through a Majordomo broker, logging and status.
``ctlwire.tcs``    TCS event streaming and sqlite event-log replay.
``ctlwire.ocd``    OCD heartbeat queries over the TCS event transport.
``ctlwire.dc``     Group coordination: group ports, discovery and leader election.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
