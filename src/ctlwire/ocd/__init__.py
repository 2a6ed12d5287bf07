"""ctlwire.ocd: OCD utilities (named servers, send-and-listen) and the heartbeat."""
from .heart_beat import ENQUIRY_TOPIC, REPLY_TOPIC, HeartBeatHandler, HeartBeatQuery
from .utils import EventDispatcher, SendAndListen, get_zmq_server, init_zmq_servers

__all__ = ["ENQUIRY_TOPIC", "REPLY_TOPIC", "HeartBeatHandler", "HeartBeatQuery",
           "SendAndListen", "init_zmq_servers", "get_zmq_server", "EventDispatcher"]
