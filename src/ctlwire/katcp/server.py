"""KATCP device servers: :class:`DeviceServerBase`, :class:`DeviceServer`, :class:`DeviceLogger`.

A device is a subclass of :class:`DeviceServer` with ``request_*`` handlers and a
``setup_sensors`` method, written as for katcp-python::

    from ctlwire.katcp import DeviceServer, Sensor, request, return_reply, Int

    class MyDevice(DeviceServer):
        VERSION_INFO = ("my-device", 1, 0)
        BUILD_INFO = ("my-device", 1, 0, "")

        def setup_sensors(self):
            self.temp = Sensor.float("temp", "Box temperature", "degC", [-40.0, 80.0])
            self.add_sensor(self.temp)

        @request(Int())
        @return_reply(Int())
        def request_double(self, req, x):
            '''Double a number.'''
            return ("ok", 2 * x)

    server = MyDevice("127.0.0.1", 0)
    server.start()              # in its own thread, with its own event loop
    host, port = server.bind_address

or inside an application's own asyncio loop::

    await server.async_start()
    ...
    await server.async_stop()

Handlers run in the server's event loop thread. A handler returns a reply
:class:`Message`, raises :class:`~ctlwire.katcp.core.FailReply` (``fail``) or
:class:`~ctlwire.katcp.core.AsyncReply` (answer later through ``req``, from any
thread), or returns an awaitable (``async def``) whose result is the reply. Any other
exception becomes a ``fail`` reply carrying the traceback.

This module is the public face of the server side; the parts live in modules by role:

* ``_server_base``: :class:`DeviceServerBase` (transport, dispatch, life cycle);
* ``_connection``: one client (:class:`ClientConnection`) and the declared interface
  between a connection and its server (``ConnectionOwner``, ``DispatchState``);
* ``_device_server``: :class:`DeviceServer` (sensors, sampling, identity);
* ``_standard_requests``: the standard requests (``?help``, ``?sensor-list``, ...);
* ``_sensor_hub``: the fan-out of sensor updates to sampling clients;
* ``_device_logger``: :class:`DeviceLogger` and :class:`DeviceLogHandler`;
* ``_handlers``, ``_loop``: handler tables; the event loop and cross-thread calls.

Layering: imports those modules only (it re-exports them).
"""
from __future__ import annotations

from ._connection import ClientConnection, ClientRequestConnection
from ._device_logger import DeviceLogger, DeviceLogHandler
from ._device_server import AsyncDeviceServer, DeviceServer
from ._handlers import DeviceMetaclass
from ._loop import new_event_loop
from ._server_base import DEFAULT_MAX_WRITE_BUFFER, DeviceServerBase  # noqa: F401
from ._standard_requests import construct_name_filter

__all__ = [
    "DeviceMetaclass",
    "DeviceServerBase",
    "DeviceServer",
    "AsyncDeviceServer",
    "DeviceLogger",
    "DeviceLogHandler",
    "ClientConnection",
    "ClientRequestConnection",
    "construct_name_filter",
    "new_event_loop",
]
