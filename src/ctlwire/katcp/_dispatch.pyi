from typing import Any, Callable

from ._codec import Message

class DispatchState:
    owner: Any
    handlers: dict[str, Callable[..., Any]]
    logger: Any
    loop_tid: int
    threaded: bool
    fast: bool
    def __init__(self, owner: Any, handlers: dict[str, Callable[..., Any]], logger: Any,
                 fast: bool) -> None: ...

class ConnectionCore:
    _state: DispatchState
    _transport: Any
    _parser: Any
    _out: list[bytes]
    _in_read: bool
    _flush_queued: bool
    _closing: bool
    address: str
    def __init__(self, state: DispatchState, parser: Any) -> None: ...
    def _queue(self, data: bytes) -> None: ...
    def data_received(self, data: bytes) -> None: ...

class ClientRequestConnection:
    client_connection: Any
    msg: Message
    _replied: bool
    def __init__(self, client_connection: Any, req_msg: Message) -> None: ...
    @property
    def replied(self) -> bool: ...
    def inform(self, *args: Any) -> None: ...
    def reply(self, *args: Any) -> None: ...
    def reply_with_message(self, rep_msg: Message) -> None: ...
    def make_reply(self, *args: Any) -> Message: ...
    def mass_inform(self, msg: Message) -> None: ...

def handle_request(connection: ConnectionCore, msg: Message) -> None: ...
