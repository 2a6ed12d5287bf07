"""Heartbeat: check that an OCD process (or its main loop) is alive.

Drop-in for ``ocd.heart_beat``.  A :class:`HeartBeatQuery` publishes
``{'id': id_}`` on :data:`ENQUIRY_TOPIC`; a :class:`HeartBeatHandler` in the queried
process re-emits it on :data:`REPLY_TOPIC`; only a reply carrying the query's id
counts.
"""
from __future__ import annotations

import uuid
from typing import Any

from ..tcs.transport import ZMQServer
from .utils import SendAndListen, get_zmq_server

__all__ = ["ENQUIRY_TOPIC", "REPLY_TOPIC", "HeartBeatQuery", "HeartBeatHandler"]

#: Topic sent when enquiring about heartbeat status
ENQUIRY_TOPIC = "ocd.heartbeat.enquiry"
#: Topic expected as a reply when enquiring about heartbeat status
REPLY_TOPIC = "ocd.heartbeat.reply"


class HeartBeatQuery(SendAndListen):
    """Specialised :class:`~ctlwire.ocd.utils.SendAndListen` that checks a heartbeat.

    Parameters
    ----------
    server : ZMQServer
        Server the enquiry is published on (the queried process listens to it).
    listener_addresses : str or list of str
        Where the queried process publishes its replies.
    **kwargs
        As :class:`SendAndListen` (``timeout``, ``resend_interval``, ``context``...);
        the topics and the event are fixed. ``from_addresses`` and ``from_names``
        are inherited.

    Attributes
    ----------
    id_ : str
        Unique token of this instance, sent as ``{'id': id_}`` and expected back.
    """

    def __init__(self, server: ZMQServer, listener_addresses: Any, *args: Any,
                 **kwargs: Any) -> None:
        self.id_ = uuid.uuid4().hex
        kwargs.pop("topic", None)
        kwargs.pop("send_topic", None)
        kwargs.pop("event", None)
        super().__init__(server, listener_addresses, REPLY_TOPIC, ENQUIRY_TOPIC,
                         {"id": self.id_}, **kwargs)

    def is_answer(self, topic: str, event: dict[str, Any]) -> bool:
        """Only a reply carrying this instance's id counts."""
        return event.get("id") == self.id_

    def communicate(self) -> tuple[str, dict[str, Any]] | None:
        """Send ENQUIRY_TOPIC with ``{'id': id_}`` and wait for REPLY_TOPIC with that id.

        Returns
        -------
        (topic, event) or None
            The reply, or None if the process did not answer within ``timeout``.
        """
        return super().communicate()


class HeartBeatHandler:
    """Answer heartbeat enquiries: re-emit them on REPLY_TOPIC.

    Parameters
    ----------
    server : ZMQServer
        Server used to send the replies.

    Attributes
    ----------
    topics : list of str
        Topics handled (``[ENQUIRY_TOPIC]``).
    """

    def __init__(self, server: ZMQServer) -> None:
        self.server = server
        self.topics = [ENQUIRY_TOPIC]

    @classmethod
    def from_address(cls, server_address: str) -> "HeartBeatHandler":
        """Create the handler with a new server bound to ``server_address``."""
        return cls(ZMQServer(server_address))

    @classmethod
    def from_name(cls, server_name: str) -> "HeartBeatHandler":
        """Create the handler on the server ``server_name`` of
        :func:`~ctlwire.ocd.utils.init_zmq_servers`."""
        return cls(get_zmq_server(server_name))

    def handle_event(self, tcs_topic: str, tcs_event: dict[str, Any]) -> bool:
        """Re-emit an ENQUIRY_TOPIC event on REPLY_TOPIC.

        Returns
        -------
        bool
            True if the event was handled, False for any other topic.
        """
        if tcs_topic != ENQUIRY_TOPIC:
            return False
        self.server.send_tcs_event(REPLY_TOPIC, dict(tcs_event))
        return True
