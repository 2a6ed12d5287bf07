"""Group coordination: group ports, discovery and RAFT-style leader election.

Layers, bottom up: :mod:`~ctlwire.dc.codec` (pure wire formats),
:mod:`~ctlwire.dc.election` (pure election state machine), :mod:`~ctlwire.dc.ports`
(the four group sockets), :mod:`~ctlwire.dc.discovery` (who is where) and
:mod:`~ctlwire.dc.group` (a member of a group: heartbeat, election, messaging, votes);
:mod:`~ctlwire.dc.fencing` refuses commands of deposed leaders. The framing of group
messages is compiled (:mod:`~ctlwire.dc._framing`).
"""
from .codec import CodecError, PayloadCodec, make_codec
from .discovery import DirectoryDiscovery, Discovery, RedisDiscovery, UDPBeaconDiscovery
from .election import Election, Role, Timings
from .fencing import Fenced, FencedError
from .group import (EventKind, Group, GroupClosed, GroupEvent, GroupMessage, GroupVote,
                    NoLeaderError, VoteOutcome)
from .ports import (BindPort, ConnPort, GroupAnsPort, GroupDuplexPort, GroupPubPort,
                    GroupQryPort, GroupSimplexPort, GroupSpec, GroupSubPort, Port,
                    PortDirectionError, PortError, PortInfo, PortTimeout)
from .security import CurveSecurity

__all__ = [
    "Port", "BindPort", "ConnPort", "GroupSimplexPort", "GroupDuplexPort", "GroupPubPort",
    "GroupSubPort", "GroupQryPort", "GroupAnsPort", "PortInfo", "GroupSpec", "PortError",
    "PortDirectionError", "PortTimeout", "CodecError", "PayloadCodec", "make_codec",
    "CurveSecurity", "Group", "GroupMessage", "GroupEvent", "EventKind", "NoLeaderError",
    "GroupClosed", "Timings", "Election", "Role", "Discovery", "DirectoryDiscovery",
    "UDPBeaconDiscovery", "RedisDiscovery", "GroupVote", "VoteOutcome", "Fenced",
    "FencedError",
]
