"""Resource clients: a device (or many) as Python attributes, in katcp-python's style.

:class:`KATCPClientResource` wraps an :class:`~ctlwire.katcp.inspecting_client.InspectingClient`
so that a device's requests and sensors are attributes::

    dev = KATCPClientResource(dict(name="psu", address=("127.0.0.1", 7147), controlled=True))
    dev.start()
    dev.until_synced(timeout=10)
    reply = dev.req.set_voltage(4.5, timeout=2)      # ?set-voltage 4.5; help is its __doc__
    assert reply.succeeded
    dev.sensor.psu_voltage.wait(lambda v: v > 4.4, timeout=5)
    dev.set_sampling_strategies("voltage", "event")  # kept across reconnects
    dev.stop()

Names with ``.`` or ``-`` become Python identifiers with ``_`` (``psu.voltage`` is
``sensor.psu_voltage``; ``set-voltage`` is ``req.set_voltage``). Request timeouts follow
the device's ``?request-timeout-hint`` where it gives one.

:class:`KATCPClientResourceContainer` holds many devices by name, with group requests
(``container.req.name(...)`` goes to every device that has it) and :class:`ClientGroup`
(``container.groups.antennas.wait("mode", "track", timeout=10, quorum=0.5)``).

Everything blocks the calling thread only, with timeouts; the clients' own threads do the
I/O. Where this differs from katcp-python: requests and waits block and return results
(katcp-python returns tornado futures; its ``ThreadSafeKATCPClientResourceWrapper`` is the
closest match), and a failed wait raises :class:`SensorWaitTimeout`.

May import: the standard library and ``ctlwire.katcp`` (core, sensor, inspecting_client).
"""
from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from .core import KatcpClientError, Message
from .inspecting_client import (ClientState, InspectedSensor, InspectingClient,
                                SensorWaitTimeout, reading_test)
from .sensor import Reading

__all__ = ["KATCPReply", "KATCPClientResource", "KATCPClientResourceContainer",
           "ClientGroup", "escape_name", "SensorWaitTimeout"]

log = logging.getLogger("ctlwire.katcp.resource_client")


def escape_name(name: str) -> str:
    """A KATCP name as a Python identifier (``.`` and ``-`` become ``_``)."""
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


class KATCPReply:
    """A request's reply and informs.

    Attributes
    ----------
    reply : Message
    informs : list of Message
    succeeded : bool
        The reply is ``ok``.
    """

    __slots__ = ("reply", "informs")

    def __init__(self, reply: Message, informs: list) -> None:
        self.reply = reply
        self.informs = informs

    @property
    def succeeded(self) -> bool:
        return self.reply.reply_ok()

    @property
    def messages(self) -> list:
        """The reply followed by its informs (katcp-python's order)."""
        return [self.reply, *self.informs]

    def __iter__(self) -> Iterator:
        return iter((self.reply, self.informs))

    def __bool__(self) -> bool:
        return self.succeeded

    def __repr__(self) -> str:
        return f"KATCPReply({self.reply}, {len(self.informs)} informs)"


class _Request:
    """``req.<name>(*args, timeout=None)``: make the request and return a :class:`KATCPReply`."""

    # no __slots__: the instance's __doc__ is the request's help text

    def __init__(self, resource: "KATCPClientResource", name: str, doc: str) -> None:
        self._resource = resource
        self.name = name
        self.__doc__ = doc

    def __call__(self, *args: Any, timeout: Optional[float] = None) -> KATCPReply:
        return self._resource.request(self.name, *args, timeout=timeout)

    def __repr__(self) -> str:
        return f"<request {self.name} of {self._resource.name}>"


class _Namespace:
    """Attribute access to a changing mapping (``req`` and ``sensor``)."""

    __slots__ = ("_lookup", "_names", "_what")

    def __init__(self, lookup: Callable[[str], Any], names: Callable[[], Iterable[str]],
                 what: str) -> None:
        self._lookup = lookup
        self._names = names
        self._what = what

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        try:
            return self._lookup(attr)
        except KeyError:
            raise AttributeError(f"no {self._what} {attr!r}") from None

    def __getitem__(self, key: str) -> Any:
        return self._lookup(escape_name(key))

    def __contains__(self, key: str) -> bool:
        return escape_name(key) in set(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._names()))

    def __len__(self) -> int:
        return len(list(self._names()))

    def __dir__(self) -> list[str]:
        return sorted(self._names())

    def keys(self) -> list[str]:
        return sorted(self._names())


class KATCPClientResource:
    """One device, its requests as ``req.<name>`` and its sensors as ``sensor.<name>``.

    Parameters
    ----------
    resource_spec : dict
        ``name`` (str), ``address`` (``(host, port)``), ``controlled`` (bool, default
        False: ``req`` only offers requests when True), ``auto_reconnect`` (default
        True), ``timeout`` (default request timeout, 5 s).
    """

    def __init__(self, resource_spec: dict, logger: logging.Logger = log) -> None:
        spec = dict(resource_spec)
        try:
            self.name: str = spec["name"]
            host, port = spec["address"]
        except (KeyError, TypeError, ValueError):
            raise ValueError("resource_spec needs 'name' and 'address' (host, port), got "
                             f"{resource_spec!r}") from None
        self.address = (host, int(port))
        self.controlled = bool(spec.get("controlled", False))
        self.client = InspectingClient(host, int(port),
                                       auto_reconnect=spec.get("auto_reconnect", True),
                                       timeout=spec.get("timeout", 5.0), logger=logger)
        self.req = _Namespace(self._request_for, self._request_names, "request")
        self.sensor = _Namespace(self._sensor_for, self._sensor_names, "sensor")

    def __repr__(self) -> str:
        return f"<KATCPClientResource {self.name} {self.address[0]}:{self.address[1]}>"

    # -- life cycle -----------------------------------------------------------------------------
    def start(self, timeout: Optional[float] = None) -> None:
        """Connect and sync in the background (``timeout``: wait for the first sync)."""
        self.client.start(timeout)

    def stop(self, timeout: Optional[float] = None) -> None:
        """Disconnect (``timeout``: also wait for the client's threads)."""
        self.client.stop(timeout)

    def join(self, timeout: Optional[float] = None) -> None:
        self.client.join(timeout)

    def until_synced(self, timeout: Optional[float] = None) -> None:
        """Block until the device's requests, sensors and strategies are in place."""
        self.client.until_synced(timeout)

    def until_state(self, state: ClientState, timeout: Optional[float] = None) -> None:
        self.client.until_state(state, timeout)

    @property
    def state(self) -> ClientState:
        return self.client.state

    @property
    def synced(self) -> bool:
        return self.client.synced

    def is_connected(self) -> bool:
        return self.client.is_connected()

    def __enter__(self) -> "KATCPClientResource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop(5.0)

    # -- requests --------------------------------------------------------------------------------
    def _request_names(self) -> list[str]:
        if not self.controlled:
            return []
        return [escape_name(n) for n in self.client.requests]

    def _request_for(self, attr: str) -> _Request:
        if not self.controlled:
            raise KeyError(attr)
        for name, doc in self.client.requests.items():
            if escape_name(name) == attr:
                return _Request(self, name, doc)
        raise KeyError(attr)

    def request(self, name: str, *args: Any, timeout: Optional[float] = None) -> KATCPReply:
        """Make request ``name`` (KATCP spelling) and wait for its reply.

        ``timeout``: seconds; by default the device's hint for it, else the resource's.
        Raises :class:`~ctlwire.katcp.core.KatcpClientError` if not connected, on timeout,
        or if the link drops.
        """
        reply, informs = self.client.simple_request(name, *args, timeout=timeout)
        return KATCPReply(reply, informs)

    # -- sensors ---------------------------------------------------------------------------------
    def _sensor_names(self) -> list[str]:
        return [escape_name(n) for n in self.client.sensors]

    def _sensor_for(self, attr: str) -> InspectedSensor:
        for name, sensor in self.client.sensor.items():
            if escape_name(name) == attr:
                return sensor
        raise KeyError(attr)

    def set_sampling_strategy(self, sensor_name: str, strategy: str, *params: Any) -> None:
        """Sample one sensor (KATCP or Python name); kept across reconnects."""
        self.client.set_sampling_strategy(self._katcp_name(sensor_name), strategy, *params)

    def set_sampling_strategies(self, filter: Union[str, Callable[[str], bool]],
                                strategy: str, *params: Any) -> list[str]:
        """Sample every sensor whose KATCP name matches ``filter`` (a regex, searched, or a
        predicate); kept across reconnects. Returns the names."""
        return self.client.set_sampling_strategies(filter, strategy, *params)

    def set_sensor_listener(self, sensor_name: str, listener: Callable) -> None:
        """Call ``listener(sensor, reading)`` on each reading of a sensor."""
        self.client.get_sensor(self._katcp_name(sensor_name)).register_listener(listener)

    def wait(self, sensor_name: str, condition_or_value: Any,
             timeout: Optional[float] = 5.0) -> Reading:
        """Block until a sensor satisfies a predicate or equals a value (see
        :meth:`InspectedSensor.wait`)."""
        return self.client.wait_sensor(self._katcp_name(sensor_name), condition_or_value,
                                       timeout)

    def list_sensors(self, filter: str = "") -> list[InspectedSensor]:
        """The sensors whose KATCP names match ``filter`` (a regex, searched)."""
        regex = re.compile(filter)
        return [s for n, s in sorted(self.client.sensor.items()) if regex.search(n)]

    def _katcp_name(self, name: str) -> str:
        sensors = self.client.sensor
        if name in sensors:
            return name
        for katcp_name in sensors:
            if escape_name(katcp_name) == name:
                return katcp_name
        return name  # not known (yet): the client says so or keeps it for later


class ClientGroup:
    """Several resources addressed together.

    Parameters
    ----------
    name : str
    clients : iterable of KATCPClientResource
    """

    def __init__(self, name: str, clients: Iterable[KATCPClientResource]) -> None:
        self.name = name
        self.clients = list(clients)
        self.req = _Namespace(self._group_request, self._request_names, "request")

    def __repr__(self) -> str:
        return f"<ClientGroup {self.name}: {[c.name for c in self.clients]}>"

    def __iter__(self) -> Iterator[KATCPClientResource]:
        return iter(self.clients)

    def __len__(self) -> int:
        return len(self.clients)

    def is_connected(self) -> bool:
        """Whether every client is connected."""
        return all(c.is_connected() for c in self.clients)

    def until_synced(self, timeout: Optional[float] = None) -> None:
        """Block until every client is synced (one deadline for all)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for client in self.clients:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            client.until_synced(left)

    def set_sampling_strategies(self, filter: Union[str, Callable[[str], bool]],
                                strategy: str, *params: Any) -> dict[str, list[str]]:
        """Set a strategy on matching sensors of every client (kept across reconnects)."""
        return {c.name: c.set_sampling_strategies(filter, strategy, *params)
                for c in self.clients}

    # -- group requests ----------------------------------------------------------------------------
    def _request_names(self) -> list[str]:
        names: set[str] = set()
        for client in self.clients:
            names.update(client.req.keys())
        return sorted(names)

    def _group_request(self, attr: str) -> Callable[..., dict]:
        targets = [c for c in self.clients if attr in c.req]
        if not targets:
            raise KeyError(attr)
        katcp_name = targets[0].req[attr].name

        def call(*args: Any, timeout: Optional[float] = None) -> dict[str, KATCPReply]:
            return self.request(katcp_name, *args, timeout=timeout, clients=targets)

        call.__doc__ = targets[0].req[attr].__doc__
        call.__name__ = attr
        return call

    def request(self, name: str, *args: Any, timeout: Optional[float] = None,
                clients: Optional[list] = None) -> dict[str, KATCPReply]:
        """Send request ``name`` to every client at once; ``{client name: KATCPReply}``.

        A client that is not connected, times out or loses its link gets a ``fail``
        reply carrying the reason, so one bad device does not hide the others' answers.
        """
        futures = []
        for client in (self.clients if clients is None else clients):
            msg = Message.request(name, *args)
            link = client.client.link
            futures.append((client, link.future_request(
                msg, timeout=client.client.request_timeout(name, timeout))))
        results = {}
        for client, future in futures:
            try:
                reply, informs = future.result()
            except KatcpClientError as exc:
                reply, informs = Message.reply(name, "fail", str(exc)), []
            results[client.name] = KATCPReply(reply, informs)
        return results

    # -- waiting ------------------------------------------------------------------------------------
    def wait(self, sensor_name: str, condition_or_value: Any, timeout: Optional[float] = 5.0,
             quorum: Union[int, float, None] = None) -> bool:
        """Block until enough clients' sensor satisfies a predicate or equals a value.

        Parameters
        ----------
        sensor_name : str
            The sensor's KATCP or Python name (the same on every client).
        condition_or_value : callable or value
            As for :meth:`InspectedSensor.wait`.
        timeout : float or None
        quorum : int or float, optional
            How many clients must be satisfied at the same time: a count, or a fraction
            (``0.5``: half, rounded up) of the group; default all.

        Returns
        -------
        True

        Raises
        ------
        SensorWaitTimeout
            The quorum was not reached in time (how many were is in the text).

        Sensors without a strategy are sampled with ``auto`` while waiting. Readings are
        judged in the clients' I/O threads as they arrive, so the wait ends within a
        thread wake-up of the reading that completes the quorum.
        """
        n = len(self.clients)
        if quorum is None:
            need = n
        elif isinstance(quorum, float):
            if not 0.0 < quorum <= 1.0:
                raise ValueError(f"a fractional quorum must be in (0, 1], got {quorum}")
            need = math.ceil(quorum * n)
        else:
            need = int(quorum)
        if not 0 < need <= n:
            raise ValueError(f"quorum {quorum!r} of a group of {n} clients")
        test = reading_test(condition_or_value)
        cond = threading.Condition()
        satisfied: dict[str, bool] = {}
        count = [0]

        def judge(resource: KATCPClientResource, sensor: InspectedSensor) -> None:
            with cond:
                # read under the lock: whoever judges last judges the newest reading
                reading = sensor.get_reading()
                ok = reading is not None and test(reading)
                if satisfied.get(resource.name, False) != ok:
                    satisfied[resource.name] = ok
                    count[0] += 1 if ok else -1
                    # wake the waiter only when the quorum is reached: each wake-up is a
                    # thread switch on the way of the readings still to come
                    if count[0] >= need:
                        cond.notify_all()

        with contextlib.ExitStack() as stack:
            for resource in self.clients:
                sensor = stack.enter_context(
                    resource.client.sampled(resource._katcp_name(sensor_name)))

                def listener(sensor: InspectedSensor, _reading: Reading,
                             resource: KATCPClientResource = resource) -> None:
                    judge(resource, sensor)

                sensor.register_listener(listener)
                stack.callback(sensor.unregister_listener, listener)
                judge(resource, sensor)
            with cond:
                if cond.wait_for(lambda: count[0] >= need, timeout):
                    return True
                got = count[0]
        raise SensorWaitTimeout(
            f"group {self.name}: {sensor_name} satisfied on {got} of {n} clients, "
            f"{need} needed, within {timeout} s")


class KATCPClientResourceContainer:
    """Many devices by name, with group requests and named :class:`ClientGroup` s.

    Parameters
    ----------
    resources_spec : dict
        ``name``; ``clients``: ``{client name: resource spec without name}`` (see
        :class:`KATCPClientResource`); ``groups`` (optional): ``{group name: [client
        names]}``.

    Attributes
    ----------
    children : dict
        Client name -> :class:`KATCPClientResource`.
    groups : namespace of ClientGroup
    req : group requests over all children (``{child: KATCPReply}``)
    sensor : every child's sensors as ``<child>_<sensor>``
    """

    def __init__(self, resources_spec: dict, logger: logging.Logger = log) -> None:
        self.name = resources_spec.get("name", "container")
        self.children: dict[str, KATCPClientResource] = {}
        for child, spec in resources_spec.get("clients", {}).items():
            self.add_child_resource_client(child, spec, logger)
        self._groups: dict[str, ClientGroup] = {}
        for group, members in resources_spec.get("groups", {}).items():
            self.add_group(group, members)
        self._all = ClientGroup(self.name, [])
        self.groups = _Namespace(self._groups.__getitem__, self._groups.keys, "group")
        self.req = _Namespace(self._request, self._request_names, "request")
        self.sensor = _Namespace(self._sensor_for, self._sensor_names, "sensor")

    def __repr__(self) -> str:
        return f"<KATCPClientResourceContainer {self.name}: {sorted(self.children)}>"

    def add_child_resource_client(self, name: str, spec: dict,
                                  logger: logging.Logger = log) -> KATCPClientResource:
        """Add a device (``spec`` as for :class:`KATCPClientResource`, without name)."""
        resource = KATCPClientResource(dict(spec, name=name), logger)
        self.children[name] = resource
        return resource

    def add_group(self, name: str, client_names: Iterable[str]) -> ClientGroup:
        """Name a group of children."""
        missing = [c for c in client_names if c not in self.children]
        if missing:
            raise ValueError(f"group {name!r} names unknown clients {missing}")
        group = self._groups[name] = ClientGroup(name, [self.children[c] for c in client_names])
        return group

    def _everyone(self) -> ClientGroup:
        self._all.clients = list(self.children.values())
        return self._all

    def start(self) -> None:
        for child in self.children.values():
            child.start()

    def stop(self, timeout: Optional[float] = None) -> None:
        for child in self.children.values():
            child.stop()
        if timeout is not None:
            for child in self.children.values():
                child.join(timeout)

    def until_synced(self, timeout: Optional[float] = None) -> None:
        """Block until every child is synced."""
        self._everyone().until_synced(timeout)

    def is_connected(self) -> bool:
        return self._everyone().is_connected()

    def set_sampling_strategies(self, filter: Union[str, Callable[[str], bool]],
                                strategy: str, *params: Any) -> dict[str, list[str]]:
        return self._everyone().set_sampling_strategies(filter, strategy, *params)

    def _request_names(self) -> list[str]:
        return self._everyone()._request_names()

    def _request(self, attr: str) -> Callable[..., dict]:
        return self._everyone()._group_request(attr)

    def _sensor_names(self) -> list[str]:
        return [f"{escape_name(c)}_{s}" for c, r in self.children.items()
                for s in r.sensor.keys()]

    def _sensor_for(self, attr: str) -> InspectedSensor:
        for child, resource in self.children.items():
            prefix = escape_name(child) + "_"
            if attr.startswith(prefix):
                try:
                    return resource._sensor_for(attr[len(prefix):])
                except KeyError:
                    continue
        raise KeyError(attr)

    def __enter__(self) -> "KATCPClientResourceContainer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop(5.0)
