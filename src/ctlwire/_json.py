"""JSON codecs shared by every protocol family (msgspec underneath).

``dumps`` and ``loads`` are the fast paths: compact UTF-8 bytes out, any JSON in.
``dumps_std`` produces exactly what ``json.dumps`` of the standard library produces,
for golden files and peers that compare bytes.
"""
from __future__ import annotations

import json as _stdjson
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()

#: Exception raised for malformed JSON input.
DecodeError = msgspec.DecodeError


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` as compact JSON bytes."""
    return _encoder.encode(obj)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode JSON ``data`` (bytes or str); raises :data:`DecodeError` on bad input."""
    return _decoder.decode(data)


def dumps_std(obj: Any) -> str:
    """Encode ``obj`` byte-for-byte like ``json.dumps(obj)`` from the standard library."""
    return _stdjson.dumps(obj)
