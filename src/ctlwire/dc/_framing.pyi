"""Type stubs for the compiled group framing (:mod:`ctlwire.dc._framing`)."""
from typing import Any, Callable

HEADER_LEN: int
VERSION: int
KIND_APP: int
KIND_CONTROL: int

def bind(addresses: dict[str, int]) -> None: ...
def is_bound() -> bool: ...
def encode(kind: int, term: int, sender: bytes, payload: bytes | bytearray | memoryview,
           send_time: float | None = ..., native: bool = ...) -> bytes: ...
def decode(frame: bytes | bytearray | memoryview, timed: bool,
           native: bool = ...) -> tuple[int, bytes, bytes, float | None, int]: ...

class GroupMessage:
    sender: bytes
    data: bytes
    channel: str
    send_time: float | None
    recv_time: float | None
    term: int
    codec: Any
    def __init__(self, sender: bytes, data: bytes, channel: str, send_time: float | None,
                 recv_time: float | None, codec: Any, term: int = ...) -> None: ...
    def obj(self) -> Any: ...

class Sender:
    term: int
    raw: bool
    def __init__(self, sock: Any, member_id: bytes, timed: bool, native: bool, codec: Any,
                 closed_error: type[BaseException] = ..., what: str = ...,
                 raw: bool = ...) -> None: ...
    def send(self, kind: int, payload: bytes) -> bool: ...
    def send_obj(self, obj: Any) -> bool: ...
    def close(self) -> None: ...

class Receiver:
    raw: bool
    def __init__(self, sock: Any, timed: bool, native: bool, channel: str, codec: Any,
                 router: bool = ..., raw: bool = ...) -> None: ...
    def drain(self, limit: int, peers: dict[bytes, Any],
              keep: Callable[[bytes], bool] | None, batch: list[GroupMessage],
              heard: dict[bytes, None],
              slow: list[tuple[int, bytes, bytes, float | None, int]]) -> tuple[int, int, int]: ...
    def close(self) -> None: ...
