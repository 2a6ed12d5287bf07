"""Type stub of the compiled ``ctlwire.tcs._rawscan`` (the replay's benchmark limit)."""
from os import PathLike
from typing import Callable

def scan(path: str | PathLike[str], send: Callable[[list[bytes]], object]) -> int: ...
