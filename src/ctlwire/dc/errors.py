"""Errors shared by the group codec (pure and compiled) and the layers above it.

Layering: imports nothing from ctlwire, so the compiled framing can import it (no cycle).
"""
from __future__ import annotations

__all__ = ["CodecError"]


class CodecError(ValueError):
    """A group message or record is malformed; the message says what and where."""
