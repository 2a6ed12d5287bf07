"""Errors shared by the group codec (pure and compiled) and the layers above it.

Imports nothing from ctlwire, so the compiled framing module can import it without a cycle.
"""
from __future__ import annotations

__all__ = ["CodecError"]


class CodecError(ValueError):
    """A group message or record is malformed; the message says what and where."""
