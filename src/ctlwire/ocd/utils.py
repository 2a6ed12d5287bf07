"""OCD utilities: named ZMQ servers from a configuration, send-and-listen queries,
and a small dispatcher that feeds subscribed TCS events to handlers.

Drop-in for ``ocd.utils``.  Transport is :mod:`ctlwire.tcs.transport`
(:class:`~ctlwire.tcs.transport.ZMQServer` to publish, :class:`TCSSubscriber` to
listen); events are ``[topic, json object]``.  Imports no compiled extension.
"""
from __future__ import annotations

import configparser
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import zmq

from .. import _json
from .._zmq import get_context
from ..tcs.transport import TCSSubscriber, ZMQServer

__all__ = [
    "SendAndListen", "init_zmq_servers", "get_zmq_server", "get_zmq_urls",
    "close_zmq_servers", "UnknownServerError", "EventDispatcher", "parse_url_list",
]

_log = logging.getLogger("ctlwire.ocd")

#: name -> server bound by this process
_servers: dict[str, ZMQServer] = {}
#: name -> every URL configured for that name (all processes)
_urls: dict[str, list[str]] = {}
_lock = threading.Lock()


class UnknownServerError(KeyError):
    """No server of that name was created by :func:`init_zmq_servers`."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def parse_url_list(text: str | Sequence[str]) -> list[str]:
    """Read a configuration value as a list of URLs (commas, spaces or newlines)."""
    if not isinstance(text, str):
        return [str(u) for u in text]
    text = text.strip()
    if text.startswith("["):  # a JSON/Python-style list
        text = text.strip("[]")
    return [u.strip().strip("'\"") for u in re.split(r"[,\s]+", text) if u.strip().strip("'\"")]


def init_zmq_servers(conf: configparser.ConfigParser | Mapping[str, Any] | str,
                     index: int = 0, context: zmq.Context | None = None,
                     names: Iterable[str] | None = None) -> dict[str, ZMQServer]:
    """Create and remember a named :class:`ZMQServer` per option of section ``[urls]``.

    Parameters
    ----------
    conf : ConfigParser, mapping or str
        A configuration with a ``[urls]`` section (or a path to such a file, or a
        mapping ``name -> list of URLs``).  Each option is a list of URLs, one per
        process that may publish under that name.
    index : int, optional
        Which URL of each list this process binds (default the first).
    context : zmq.Context, optional
        Context for the sockets.
    names : iterable of str, optional
        Only create servers for these names (the URLs of all names are remembered).

    Returns
    -------
    dict
        ``name -> ZMQServer`` for the servers created now.

    Raises
    ------
    ValueError
        No ``[urls]`` section, or ``index`` beyond a name's URL list.
    """
    if isinstance(conf, str):
        path = conf
        conf = configparser.ConfigParser()
        if not conf.read(path):
            raise ValueError(f"cannot read OCD configuration {path!r}")
    if isinstance(conf, configparser.ConfigParser):
        if not conf.has_section("urls"):
            raise ValueError("OCD configuration has no [urls] section")
        table = {k: parse_url_list(v) for k, v in conf.items("urls")}
    else:
        table = {k: parse_url_list(v) for k, v in conf.items()}
    wanted = set(table) if names is None else set(names)
    missing = wanted - set(table)
    if missing:
        raise ValueError(f"no URLs configured for {', '.join(sorted(missing))}")
    created: dict[str, ZMQServer] = {}
    with _lock:
        _urls.update(table)
        try:
            for name in sorted(wanted):
                urls = table[name]
                if not 0 <= index < len(urls):
                    raise ValueError(f"server {name!r} has {len(urls)} URL(s); "
                                     f"index {index} is out of range")
                old = _servers.pop(name, None)
                if old is not None:
                    old.close()
                created[name] = _servers[name] = ZMQServer(urls[index], context=context)
        except BaseException:
            for name, srv in created.items():
                srv.close()
                _servers.pop(name, None)
            raise
    return created


def get_zmq_server(name: str) -> ZMQServer:
    """Return the server created by :func:`init_zmq_servers` under ``name``.

    Raises
    ------
    UnknownServerError
        (a KeyError) naming the unknown server and the known ones.
    """
    with _lock:
        try:
            return _servers[name]
        except KeyError:
            known = ", ".join(sorted(_servers)) or "none; call init_zmq_servers() first"
            raise UnknownServerError(f"unknown ZMQ server {name!r} (known: {known})") from None


def get_zmq_urls(name: str) -> list[str]:
    """Every URL configured for ``name`` (to listen to all its processes)."""
    with _lock:
        try:
            return list(_urls[name])
        except KeyError:
            known = ", ".join(sorted(_urls)) or "none; call init_zmq_servers() first"
            raise UnknownServerError(f"no URLs configured for {name!r} (known: {known})") from None


def close_zmq_servers() -> None:
    """Close and forget every server created by :func:`init_zmq_servers`."""
    with _lock:
        for srv in _servers.values():
            srv.close()
        _servers.clear()
        _urls.clear()


class SendAndListen:
    """Send an event on a server and wait for the matching reply on a listener.

    PUB/SUB drops what is published before a subscription reaches the publisher, in
    both directions here (the peer's SUB on our server, our SUB on the peer's), so
    :meth:`communicate` resends its event with a growing interval until it gets an
    answer or the timeout passes.  The first query after start-up is then answered.

    Parameters
    ----------
    server : ZMQServer
        Server the event is sent on.
    listener_addresses : str or list of str
        Addresses of the publishers whose replies are awaited.
    topic : str
        Topic of the awaited reply (the listener subscribes to it).
    send_topic : str
        Topic of the event sent.
    event : dict, optional
        Event sent (default ``{}``).
    timeout : float, optional
        Seconds :meth:`communicate` waits in all (default 5).
    resend_interval : float, optional
        First pause before a resend (doubles up to ``max_resend_interval``).
    max_resend_interval : float, optional
        Longest pause between two sends.
    context : zmq.Context, optional
        Context for the listener socket.
    owns_server : bool, optional
        Close ``server`` in :meth:`close` (set by the ``from_*`` constructors that
        create it).
    """

    #: value returned by :meth:`communicate` when nobody answered in time
    NO_ANSWER = None

    def __init__(self, server: ZMQServer, listener_addresses: str | Sequence[str], topic: str,
                 send_topic: str, event: dict[str, Any] | None = None, *,
                 timeout: float = 5.0, resend_interval: float = 0.01,
                 max_resend_interval: float = 0.25, context: zmq.Context | None = None,
                 owns_server: bool = False) -> None:
        if isinstance(listener_addresses, str):
            listener_addresses = [listener_addresses]
        self.server = server
        self.listener_addresses = list(listener_addresses)
        self.topic = topic
        self.send_topic = send_topic
        self.event = {} if event is None else event
        self.timeout = timeout
        self.resend_interval = resend_interval
        self.max_resend_interval = max_resend_interval
        self.owns_server = owns_server
        self.sends = 0
        self._sub = TCSSubscriber(self.listener_addresses, [topic],
                                  context=context if context is not None else server.context)
        self._listener = self._sub.socket

    @classmethod
    def from_addresses(cls, server_address: str, listener_addresses: str | Sequence[str],
                       **kwargs: Any) -> "SendAndListen":
        """Create the server bound to ``server_address`` and listen on the addresses."""
        server = ZMQServer(server_address, context=kwargs.get("context"))
        try:
            return cls(server, listener_addresses, owns_server=True, **kwargs)
        except BaseException:
            server.close()
            raise

    @classmethod
    def from_names(cls, server_name: str, listener_name: str, **kwargs: Any) -> "SendAndListen":
        """Use the named server of :func:`init_zmq_servers` and listen on every URL
        configured for ``listener_name``."""
        return cls(get_zmq_server(server_name), get_zmq_urls(listener_name), **kwargs)

    def is_answer(self, topic: str, event: dict[str, Any]) -> bool:
        """Whether a received event answers the query (any event on the topic here)."""
        return True

    def _drain(self) -> None:
        # replies to an earlier call's resends must not answer this one; EVENTS is
        # checked rather than catching zmq.Again, which costs more than a round trip's
        # worth of Python on the common path
        sock = self._listener
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            sock.recv_multipart(zmq.NOBLOCK)

    def communicate(self) -> tuple[str, dict[str, Any]] | None:
        """Send the event and wait for the answer.

        Returns
        -------
        (topic, event) or None
            The answer, or :attr:`NO_ANSWER` (None) if none came within ``timeout``.
        """
        self._drain()
        payload = [self.send_topic.encode("utf-8"), _json.dumps(self.event)]
        send = self.server.send_frames
        start = time.monotonic()
        deadline = start + self.timeout
        interval = self.resend_interval
        next_send = start
        while True:
            now = time.monotonic()
            if now >= deadline:
                return self.NO_ANSWER
            if now >= next_send:
                send(payload)
                self.sends += 1
                next_send = now + interval
                interval = min(interval * 2, self.max_resend_interval)
            wait = min(next_send, deadline) - now
            # one message per wake-up; the next call returns at once if more wait
            got = self._sub.recv(wait)
            if got is not None and got[0] == self.topic and self.is_answer(*got):
                return got

    def close(self) -> None:
        """Close the listener (and the server if this object created it)."""
        self._sub.close()
        if self.owns_server:
            self.server.close()

    def __enter__(self) -> "SendAndListen":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Handler(Protocol):
    topics: list[str]

    def handle_event(self, tcs_topic: str, tcs_event: dict[str, Any]) -> bool: ...


class EventDispatcher:
    """Subscribe to publishers and hand each event to the handlers of its topic.

    A minimal OCD main loop: handlers expose ``topics`` (prefixes) and
    ``handle_event(topic, event)``.  A handler that raises is logged and the loop
    keeps serving.

    Parameters
    ----------
    addresses : str or list of str
        Publishers to subscribe to.
    handlers : list
        Objects with ``topics`` and ``handle_event``.
    context : zmq.Context, optional
    """

    def __init__(self, addresses: str | Sequence[str], handlers: Sequence[Handler],
                 context: zmq.Context | None = None) -> None:
        if isinstance(addresses, str):
            addresses = [addresses]
        self.handlers = list(handlers)
        topics = sorted({t for h in self.handlers for t in h.topics})
        self._sub = TCSSubscriber(list(addresses), topics or [""],
                                  context=get_context(context))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.handled = 0

    def poll_once(self, timeout: float) -> int:
        """Handle the next event if one arrives within ``timeout`` seconds.

        Returns the number of handlers that handled it.
        """
        n = 0
        got = self._sub.recv(timeout)
        if got is None:
            return 0
        topic, event = got
        for h in self.handlers:
            if any(topic.startswith(t) for t in h.topics):
                try:
                    if h.handle_event(topic, event):
                        n += 1
                        self.handled += 1
                except Exception:
                    _log.exception("handler %r failed on %s", h, topic)
        return n

    def run(self, duration: float | None = None) -> None:
        """Serve until :meth:`stop` (or for ``duration`` seconds)."""
        end = None if duration is None else time.monotonic() + duration
        while not self._stop.is_set() and (end is None or time.monotonic() < end):
            self.poll_once(0.05)

    def start(self) -> "EventDispatcher":
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name="ocd-dispatcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving (joins the thread) and close the socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._sub.close()
