"""Fencing tokens: refuse commands from a leader that has since been replaced.

Every message a group member sends carries its election term
(:attr:`~ctlwire.dc._framing.GroupMessage.term`); the leader's term is its fencing token.
A leader cut off by a partition keeps believing it leads until its peer timeout, and may
go on sending commands meanwhile. Whatever drives hardware keeps the newest term it has
seen and refuses anything older, so once a successor exists (in a newer term), the old
leader's commands are refused.

Layering: imports the standard library only; a :class:`~ctlwire.dc.group.Group` is used
through its ``term`` and ``add_callback`` alone.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Fenced", "FencedError"]

T = TypeVar("T")


class FencedError(RuntimeError):
    """A command carried an older term than one already seen: its leader was replaced."""

    def __init__(self, term: int, floor: int, what: str) -> None:
        super().__init__(f"{what}: refused a command of term {term}; term {floor} has "
                         "already been seen (its leader was replaced)")
        self.term = term
        self.floor = floor


class Fenced(Generic[T]):
    """Guards a target (an actuator, a driver call) with fencing tokens.

    ``fenced(term, *args)`` calls ``target(*args)`` only if ``term`` is at least the
    newest term seen so far, and remembers ``term``; an older term raises
    :class:`FencedError` and the target is not called. Calls are serialised, so a
    newer term can never overtake an older command half-way.

    Parameters
    ----------
    target : callable, optional
        What to call for an admitted command (:meth:`admit` alone needs none).
    group : Group, optional
        A group this process is a member of: the newest term seen also includes the
        group's own term, and every ``leader_elected`` event raises the floor, so commands
        from a deposed leader are refused as soon as this member knows of its successor,
        even before the successor sends anything.
    term : int
        Initial floor.
    name : str
        Used in error messages.

    Examples
    --------
    >>> move = Fenced(lambda pos: print("moving to", pos))
    >>> move(3, 10.0)
    moving to 10.0
    >>> move(2, 11.0)
    Traceback (most recent call last):
    ...
    ctlwire.dc.fencing.FencedError: fenced: refused a command of term 2; term 3 has already been seen (its leader was replaced)
    """

    def __init__(self, target: Callable[..., T] | None = None, *, group: Any = None,
                 term: int = 0, name: str = "fenced") -> None:
        self.target = target
        self.name = name
        self._group = group
        self._lock = threading.RLock()
        self._highest = term
        #: Commands admitted and refused so far.
        self.admitted = 0
        self.refused = 0
        if group is not None:
            group.add_callback(self._on_event)

    def _on_event(self, event: Any) -> None:
        if getattr(event.kind, "value", None) == "leader_elected":
            self.observe(event.term)

    @property
    def floor(self) -> int:
        """The newest term seen: commands of an older term are refused."""
        group_term = self._group.term if self._group is not None else 0
        return max(self._highest, group_term)

    def observe(self, term: int) -> None:
        """Learn of ``term`` without a command (e.g. a new leader was announced)."""
        with self._lock:
            if term > self._highest:
                self._highest = term

    def check(self, term: int) -> bool:
        """True if a command of ``term`` would be admitted now (changes nothing)."""
        return term >= self.floor

    def admit(self, term: int) -> None:
        """Admit a command of ``term`` (raising the floor to it) or raise FencedError."""
        with self._lock:
            floor = self.floor
            if term < floor:
                self.refused += 1
                raise FencedError(term, floor, self.name)
            self._highest = term
            self.admitted += 1

    def __call__(self, term: int, *args: Any, **kwargs: Any) -> T:
        """Admit ``term`` and call the target with the rest of the arguments."""
        if self.target is None:
            raise TypeError(f"{self.name}: no target to call; use admit(term)")
        with self._lock:  # held through the call: commands never interleave
            self.admit(term)
            return self.target(*args, **kwargs)
