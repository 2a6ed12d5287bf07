"""Deprecated: moved to :mod:`ctlwire._testing.proc`.

A forwarder kept only while branches written against the old path are merged; delete
it once nothing imports ``ctlwire._proc`` any more.

Layering: imports ``ctlwire._testing.proc`` only.
"""
from ctlwire._testing.proc import JsonLinesChild, child_env, free_base_port  # noqa: F401
