"""The device logger: ``#log`` informs to a server's clients, bridged to Python logging.

:class:`DeviceLogger` is ``DeviceServer.log`` (katcp-python's API); the level it keeps
is the one ``?log-level`` reports and sets. :class:`DeviceLogHandler` sends Python log
records to the clients the same way.

Layering: imports ``ctlwire.katcp.core`` only; the server it logs to is anything with
``mass_inform`` and ``create_log_inform`` (:class:`LogSink`).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from .core import Message

__all__ = ["DeviceLogger", "DeviceLogHandler", "LogSink"]


class LogSink(Protocol):
    """What a :class:`DeviceLogger` needs from its server."""

    def mass_inform(self, msg: Message) -> None:
        """Send an inform to every client."""

    def create_log_inform(self, level_name: str, msg: str, name: str,
                          timestamp: float | None = None) -> Message:
        """Build a ``#log`` inform."""


class DeviceLogger:
    """Logging for a device: ``#log`` informs to every client, mirrored to Python logging.

    Parameters
    ----------
    device_server : LogSink
        The server whose clients receive the ``#log`` informs (a ``DeviceServer``).
    root_logger : str, optional
        Logger name put in the informs when none is given.
    python_logger : logging.Logger, optional
        Python logger that also receives every message.
    """

    ALL, TRACE, DEBUG, INFO, WARN, ERROR, FATAL, OFF = range(8)
    LEVELS = ["all", "trace", "debug", "info", "warn", "error", "fatal", "off"]
    PYTHON_LEVEL = {
        ALL: 0,
        TRACE: 0,
        DEBUG: logging.DEBUG,
        INFO: logging.INFO,
        WARN: logging.WARNING,
        ERROR: logging.ERROR,
        FATAL: logging.FATAL,
        OFF: logging.FATAL + 10,
    }

    def __init__(self, device_server: LogSink, root_logger: str = "root",
                 python_logger: logging.Logger | None = None):
        self._device_server = device_server
        self._python_logger = python_logger
        self._log_level = self.WARN
        self._root_logger_name = root_logger

    def level_name(self, level: int | None = None) -> str:
        """Name of ``level`` (default: the current level)."""
        return self.LEVELS[self._log_level if level is None else level]

    def level_from_name(self, level_name: str | bytes) -> int:
        """Level constant for ``level_name``; ``ValueError`` if unknown."""
        name = level_name.decode("utf-8", "replace") if isinstance(level_name, bytes) \
            else level_name
        try:
            return self.LEVELS.index(name)
        except ValueError:
            raise ValueError(f"Unknown logging level name '{name}'") from None

    def set_log_level(self, level: int) -> None:
        """Set the level below which messages are not sent to clients."""
        if level not in range(len(self.LEVELS)):
            raise ValueError(f"Unknown logging level {level!r}")
        self._log_level = level

    def set_log_level_by_name(self, level_name: str | bytes) -> None:
        """Set the level by name (``"info"``, ...)."""
        self.set_log_level(self.level_from_name(level_name))

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log ``msg % args`` at ``level``: to Python logging and, if at or above the
        current level, as ``#log`` to every client.

        Keyword arguments ``name`` (logger name) and ``timestamp`` are honoured.
        """
        timestamp = kwargs.get("timestamp")
        if self._python_logger is not None and not _bridge_state.active:
            # Mark the mirror call so a DeviceLogHandler on that logger skips it.
            _bridge_state.active = True
            try:
                self._python_logger.log(self.PYTHON_LEVEL[level], msg, *args)
            finally:
                _bridge_state.active = False
        if level >= self._log_level and level < self.OFF:
            name = kwargs.get("name") or self._root_logger_name
            try:
                text = msg % args if args else msg
            except TypeError:
                text = f"{msg} {args}".strip()
            self._device_server.mass_inform(self._device_server.create_log_inform(
                self.level_name(level), str(text), name, timestamp=timestamp))

    def trace(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log a trace message."""
        self.log(self.TRACE, msg, *args, **kwargs)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log a debug message."""
        self.log(self.DEBUG, msg, *args, **kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log an info message."""
        self.log(self.INFO, msg, *args, **kwargs)

    def warn(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log a warning message."""
        self.log(self.WARN, msg, *args, **kwargs)

    warning = warn

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log an error message."""
        self.log(self.ERROR, msg, *args, **kwargs)

    def fatal(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log a fatal error message."""
        self.log(self.FATAL, msg, *args, **kwargs)

    @classmethod
    def log_to_python(cls, logger: logging.Logger, msg: Message) -> None:
        """Log a received ``#log`` inform to a Python logger."""
        level, timestamp, name, message = (a.decode("utf-8", "replace")
                                           for a in msg.arguments[:4])
        python_level = cls.PYTHON_LEVEL.get(cls.LEVELS.index(level)
                                            if level in cls.LEVELS else cls.WARN,
                                            logging.WARNING)
        logger.log(python_level, "%s %s: %s", timestamp, name, message)

    def python_handler(self) -> "DeviceLogHandler":
        """Return a :class:`logging.Handler` sending Python log records as ``#log``."""
        return DeviceLogHandler(self)


class _BridgeState(threading.local):
    active = False


_bridge_state = _BridgeState()


class DeviceLogHandler(logging.Handler):
    """Bridge from Python logging to ``#log`` informs (respecting ``?log-level``).

    Examples
    --------
    >>> logging.getLogger("mydevice").addHandler(server.log.python_handler())
    """

    _FROM_PYTHON = [(logging.FATAL, DeviceLogger.FATAL), (logging.ERROR, DeviceLogger.ERROR),
                    (logging.WARNING, DeviceLogger.WARN), (logging.INFO, DeviceLogger.INFO),
                    (logging.DEBUG, DeviceLogger.DEBUG)]

    def __init__(self, device_logger: DeviceLogger):
        super().__init__()
        self._device_logger = device_logger

    def emit(self, record: logging.LogRecord) -> None:
        if _bridge_state.active:  # a message the device logger itself mirrored
            return
        level = DeviceLogger.TRACE
        for python_level, katcp_level in self._FROM_PYTHON:
            if record.levelno >= python_level:
                level = katcp_level
                break
        _bridge_state.active = True
        try:
            self._device_logger.log(level, record.getMessage(), name=record.name,
                                    timestamp=record.created)
        except Exception:
            self.handleError(record)
        finally:
            _bridge_state.active = False
