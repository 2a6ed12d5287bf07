"""``DeviceClient``: the handler API of the threaded KATCP clients.

Messages from the server go to ``reply_*``, ``inform_*`` and ``request_*`` methods (or
the ``unhandled_*`` fallbacks), the protocol flags are learnt from
``#version-connect``, and requests are sent with message ids when the server offers
them. The names and semantics follow katcp-python. The socket and I/O thread are
:class:`~ctlwire.katcp._client_link.ClientLink`'s; request tracking (callbacks,
blocking requests) is added by ``CallbackClient`` in ``_client_requests``.

Handlers (``reply_*``, ``inform_*``, ``unhandled_*``, callbacks) never run concurrently,
but they may run in the I/O thread or in a thread waiting in ``blocking_request``; they
must not block; requests sent from inside them are written in one batch when the
current chunk of input has been dispatched.

Layering: imports ``_client_link`` and ``ctlwire.katcp.core``.
"""
from __future__ import annotations

import logging
import sys
import threading
import traceback
from _thread import get_ident
from typing import Any, Callable, Optional

from ctlwire.katcp._client_link import ClientLink, log
from ctlwire.katcp.core import (
    KatcpSyntaxError,
    KatcpVersionError,
    Message,
    ProtocolFlags,
    encode_message,
)

__all__ = ["DeviceClient"]

_REQUEST, _REPLY, _INFORM = Message.REQUEST, Message.REPLY, Message.INFORM


def _handler_tables(cls: type) -> tuple[dict, dict, dict]:
    """Collect ``request_*``, ``inform_*`` and ``reply_*`` methods of a class.

    ``inform_version_connect`` serves ``#version-connect``: underscores become dashes.
    """
    tables: tuple[dict, dict, dict] = ({}, {}, {})
    for attr in dir(cls):
        for prefix, table in zip(("request_", "inform_", "reply_"), tables):
            if attr.startswith(prefix) and len(attr) > len(prefix):
                func = getattr(cls, attr)
                if callable(func):
                    table[attr[len(prefix):].replace("_", "-")] = func
    return tables


class DeviceClient(ClientLink):
    """Device client proxy: a connection to one KATCP server, run by its own thread.

    Subclasses implement ``reply_*``, ``inform_*`` and ``request_*`` methods to act when
    messages arrive (``reply_sensor_value`` handles ``!sensor-value``), and may override
    ``unhandled_inform``, ``unhandled_reply`` and ``unhandled_request`` as fallbacks for
    messages without a handler. Requests are sent with :meth:`send_request` or
    :meth:`request`. The socket, the I/O thread, reconnection and the write queue are
    those of :class:`~ctlwire.katcp._client_link.ClientLink`.

    Parameters
    ----------
    host : str
        Server host name or address.
    port : int
        Server TCP port.
    tb_limit : int, optional
        Traceback frames to log when a handler raises.
    logger : logging.Logger, optional
        Where to log.
    auto_reconnect : bool, optional
        Reconnect after a failed connect or a lost link, with a bounded randomised
        exponential backoff (``reconnect_delay_min`` .. ``reconnect_delay_max`` s).
    connect_timeout : float, optional
        Seconds allowed for one TCP connect attempt.

    Examples
    --------
    >>> class MyClient(DeviceClient):
    ...     def reply_myreq(self, msg):
    ...         print(msg)
    >>> c = MyClient('localhost', 10000)
    >>> c.start()
    >>> c.send_request(Message.request('myreq'))
    >>> c.stop()
    >>> c.join()
    """

    _request_handlers: dict = {}
    _inform_handlers: dict = {}
    _reply_handlers: dict = {}
    _fast_replies = False
    _pending: dict = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._request_handlers, cls._inform_handlers, cls._reply_handlers = _handler_tables(cls)

    def __init__(self, host: str, port: int, tb_limit: int = 20,
                 logger: logging.Logger = log, auto_reconnect: bool = True,
                 *, connect_timeout: float = 5.0) -> None:
        super().__init__(host, port, logger, auto_reconnect, connect_timeout)
        self._tb_limit = tb_limit
        self._static_protocol_flags: Optional[ProtocolFlags] = None
        self._protocol_flags: Optional[ProtocolFlags] = None
        self._server_supports_ids = False
        self._received_protocol_info = threading.Event()
        self.versions: dict[str, tuple] = {}

    def _reset_session(self) -> None:
        # A new connection: its server announces its protocol (unless preset) anew.
        if self._static_protocol_flags is None:
            self._protocol_flags = None
            self._server_supports_ids = False
            self._received_protocol_info.clear()
        self.versions = {}

    # ------------------------------------------------------------------ properties
    @property
    def protocol_flags(self) -> Optional[ProtocolFlags]:
        """The server's :class:`ProtocolFlags`, or None until they are known."""
        return self._protocol_flags

    @protocol_flags.setter
    def protocol_flags(self, flags: ProtocolFlags) -> None:
        self._protocol_flags = flags
        self._server_supports_ids = bool(flags is not None and flags.message_ids)
        if flags is not None:
            self._received_protocol_info.set()

    # ------------------------------------------------------------------ protocol detection
    def preset_protocol_flags(self, protocol_flags: ProtocolFlags) -> None:
        """Preset server protocol flags.

        Sets the assumed server protocol flags and disables automatic server version
        detection.

        Parameters
        ----------
        protocol_flags : ProtocolFlags
        """
        self._static_protocol_flags = protocol_flags
        self.protocol_flags = protocol_flags

    def inform_version_connect(self, msg: Message) -> None:
        """Process a ``#version-connect`` message (katcp v5)."""
        if len(msg.arguments) < 2:
            return
        name = msg.arguments[0].decode("utf-8", "replace")
        self.versions[name] = tuple(a.decode("utf-8", "replace") for a in msg.arguments[1:])
        if msg.arguments[0] == b"katcp-protocol":
            try:
                flags = ProtocolFlags.parse_version(msg.arguments[1])
            except Exception:
                self._logger.warning("Bad protocol version from %s: %r",
                                     self.bind_address_string, msg.arguments[1])
                return
            self._set_protocol_from_inform(flags, msg)

    def inform_version(self, msg: Message) -> None:
        """Handle katcp v4 and below version inform."""
        if msg.arguments:
            self.versions["katcp-library"] = (msg.arguments[0].decode("utf-8", "replace"),)
        self._set_protocol_from_inform(ProtocolFlags(4, 0, b""), msg)

    def inform_build_state(self, msg: Message) -> None:
        """Handle katcp v4 and below build-state inform."""
        if msg.arguments:
            self.versions["katcp-device"] = (msg.arguments[0].decode("utf-8", "replace"),)
        self._set_protocol_from_inform(ProtocolFlags(4, 0, b""), msg)

    def _set_protocol_from_inform(self, flags: ProtocolFlags, inform: Message) -> None:
        if self._static_protocol_flags is not None:
            if str(flags) != str(self._static_protocol_flags):
                self._logger.warning(
                    "Ignoring %s from %s: protocol flags are preset to %s",
                    inform, self.bind_address_string, self._static_protocol_flags)
            return
        current = self._protocol_flags
        if current is not None and str(current) != str(flags):
            self._logger.warning("Server %s changed its protocol from %s to %s",
                                 self.bind_address_string, current, flags)
        self.protocol_flags = flags

    # ------------------------------------------------------------------ sending
    def _assign_mid(self, msg: Message, use_mid: Optional[bool]) -> None:
        supports = self._server_supports_ids
        if use_mid is None:
            use_mid = supports
        if msg.mid is None:
            if use_mid:
                if not supports:
                    raise KatcpVersionError(
                        f"Message ids requested but server {self.bind_address_string} "
                        f"does not offer them (protocol {self._protocol_flags})")
                msg.mid = self._next_mid()
        elif not supports:
            raise KatcpVersionError(
                f"Message has mid {msg.mid!r} but server {self.bind_address_string} "
                f"does not offer message ids (protocol {self._protocol_flags})")

    def request(self, msg: Message, use_mid: Optional[bool] = None,
                timeout: Optional[float] = None) -> Optional[bytes]:
        """Send a request message, automatically assigning a message id if requested.

        Parameters
        ----------
        msg : Message
            The request. If ``msg.mid`` is None and ids are used, one is assigned.
        use_mid : bool or None, default None
            None: use ids if the server offers them. True: force one (raises
            :class:`KatcpVersionError` if the server does not offer ids).
        timeout : float or None, default None
            Kept for katcp-python compatibility: writes never block (what the kernel
            cannot take at once is queued, see :attr:`max_queued_output`).

        Returns
        -------
        mid : bytes or None
            The message id used, or None.
        """
        self._assign_mid(msg, use_mid)
        self.send_request(msg, timeout)
        return msg.mid

    def send_request(self, msg: Message, timeout: Optional[float] = None) -> None:
        """Send a request message.

        Parameters
        ----------
        msg : Message
        timeout : float or None, default None
            Kept for katcp-python compatibility: writes never block.

        Raises
        ------
        KatcpVersionError
            The message carries a mid and the server does not offer message ids.
        KatcpClientError
            Not connected, or the write failed.
        """
        if msg.mtype != _REQUEST:
            raise ValueError(f"send_request needs a request message, got {msg!r}")
        if msg.mid is not None and not self._server_supports_ids:
            raise KatcpVersionError(
                f"Message ids not supported by server {self.bind_address_string}")
        self.send_message(msg, timeout)

    def send_message(self, msg: Message, timeout: Optional[float] = None) -> None:
        """Send any kind of message.

        Parameters
        ----------
        msg : Message
        timeout : float or None, default None
            Kept for katcp-python compatibility: writes never block (what the kernel
            cannot take at once is queued, see :attr:`max_queued_output`).

        Raises
        ------
        KatcpClientError
            Not connected, the write failed, or the output queue is full.
        """
        self._send_bytes(encode_message(msg.mtype, msg.name, msg.arguments, msg.mid), timeout)

    # ------------------------------------------------------------------ dispatch

    def handle_message(self, msg: Message) -> Any:
        """Handle a message from the server.

        Parameters
        ----------
        msg : Message
            The message to dispatch to the handler methods.
        """
        mtype = msg.mtype
        if mtype == _REPLY:
            return self.handle_reply(msg)
        if mtype == _INFORM:
            return self.handle_inform(msg)
        if mtype == _REQUEST:
            return self.handle_request(msg)
        self._logger.error("Unexpected message type from server: %r", msg)
        return None

    def _log_handler_error(self, what: str, msg: Message) -> None:
        reason = "".join(traceback.format_exception(*sys.exc_info(), limit=self._tb_limit))
        self._logger.error("%s %s FAIL: %s", what, msg.name, reason)

    def _call_handler(self, handlers: dict, fallback: Callable[[Message], Any], what: str,
                      msg: Message) -> Any:
        # a handler's exception is logged, never allowed to kill the I/O thread
        method = handlers.get(msg.name)
        try:
            if method is None:
                return fallback(msg)
            return method(self, msg)
        except Exception:
            self._log_handler_error(what, msg)
        return None

    def handle_inform(self, msg: Message) -> Any:
        """Dispatch an inform message to the appropriate method.

        Parameters
        ----------
        msg : Message
            The inform message to dispatch.
        """
        return self._call_handler(self._inform_handlers, self.unhandled_inform, "Inform", msg)

    def handle_reply(self, msg: Message) -> Any:
        """Dispatch a reply message to the appropriate method.

        Parameters
        ----------
        msg : Message
            The reply message to dispatch.
        """
        return self._call_handler(self._reply_handlers, self.unhandled_reply, "Reply", msg)

    def handle_request(self, msg: Message) -> Any:
        """Dispatch a request message to the appropriate method.

        A handler that returns a reply :class:`Message` has it sent back with the
        request's mid.

        Parameters
        ----------
        msg : Message
            The request message to dispatch.
        """
        method = self._request_handlers.get(msg.name)
        try:
            if method is None:
                return self.unhandled_request(msg)
            reply = method(self, msg)
            if isinstance(reply, Message):
                reply.mid = msg.mid
                self.send_message(reply)
                return None
            return reply
        except Exception:
            self._log_handler_error("Request", msg)
        return None

    def unhandled_inform(self, msg: Message) -> None:
        """Fallback method for inform messages without a registered handler.

        Parameters
        ----------
        msg : Message
        """

    def unhandled_reply(self, msg: Message) -> None:
        """Fallback method for reply messages without a registered handler.

        Parameters
        ----------
        msg : Message
        """

    def unhandled_request(self, msg: Message) -> None:
        """Fallback method for requests without a registered handler.

        Parameters
        ----------
        msg : Message
        """

    def _dispatch_chunk(self, data: Any) -> None:
        # Caller holds the read lock.
        self._dispatch_items(self._parser.feed(data))

    def _dispatch_items(self, items: list) -> None:
        # Caller holds the read lock.
        self._dispatching_thread = get_ident()
        handle = self.handle_message
        # Replies to tracked requests skip the handler chain when no subclass overrides it.
        pending = self._pending if self._fast_replies else None
        try:
            for item in items:
                if isinstance(item, KatcpSyntaxError):
                    self._logger.warning("Bad line from %s: %s", self.bind_address_string, item)
                    continue
                if pending is not None and item.mtype == _REPLY and item.mid is not None:
                    p = pending.pop(item.mid, None)
                    if p is not None:
                        lock = p.lock
                        if lock is None:
                            self._finish(p, item, None)
                        else:  # a blocking caller: hand over the reply and wake it
                            p.reply = item
                            p.done = True
                            lock.release()
                        continue
                try:
                    handle(item)
                except Exception:
                    self._log_handler_error("Message", item)
        finally:
            self._dispatching_thread = 0
            if self._outbuf:
                self._flush_outbuf()

    def wait_protocol(self, timeout: Optional[float] = None) -> bool:
        """Wait until katcp protocol information has been received from the server.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait.

        Returns
        -------
        received : bool
            If True, the server's protocol information is in :attr:`protocol_flags`.
        """
        return self._received_protocol_info.wait(timeout)


DeviceClient._request_handlers, DeviceClient._inform_handlers, DeviceClient._reply_handlers = \
    _handler_tables(DeviceClient)
