"""Type stubs for the compiled MDP classifier and broker state machine."""
from typing import Any, Callable

MDPC: bytes
MDPW: bytes
READY: bytes
REQUEST: bytes
REPLY: bytes
HEARTBEAT: bytes
DISCONNECT: bytes
PARTIAL: bytes
C_REQUEST: int
W_READY: int
W_REPLY: int
W_HEARTBEAT: int
W_DISCONNECT: int
W_UNEXPECTED: int
W_PARTIAL: int
BAD_SHORT: int
BAD_DELIMITER: int
BAD_PROTOCOL: int
BAD_COMMAND: int
BAD_LENGTH: int
BAD_SERVICE: int
BAD_ENVELOPE: int
B_REQUEST: int
B_HEARTBEAT: int
B_DISCONNECT: int
B_UNEXPECTED: int

def classify(frames: list[bytes]) -> int: ...
def classify_worker(frames: list[bytes]) -> int: ...

class Router:
    heartbeat: float
    liveness: int
    queue_timeout: float
    unknown_grace: float
    max_queue: int
    malformed: int
    requests: int
    replies: int
    expired: int
    refused: int
    lost: int
    disconnects_sent: int
    deadline: float
    stopping: bool
    passive: bool
    ha: Any
    hold: float
    partials: int
    not_active: int
    def __init__(self, send: Callable[[list[bytes]], Any], heartbeat: float = ...,
                 liveness: int = ..., queue_timeout: float = ..., unknown_grace: float = ...,
                 max_queue: int = ...) -> None: ...
    def handle(self, frames: list[bytes], now: float) -> None: ...
    def tick(self, now: float) -> float: ...
    def serve(self, recv: Callable[[], list[bytes] | None],
              set_timeout: Callable[[int], Any], stop_check: float = ...) -> None: ...
    def stats(self) -> dict[str, Any]: ...
GROUP_TAG: bytes
