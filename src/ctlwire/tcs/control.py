"""The KATCP control port of a steered replay (``tcs-replay --katcp-port N``).

Requests ``?pause``, ``?resume``, ``?set-speedup X``, ``?seek TIME``, ``?step N``;
sensors for progress (``telescope-time``, ``events-sent``, ``fraction-done``),
lateness (``lateness-p50``, ``lateness-p99``, microseconds) and ``state``.  Any KATCP
client drives it (``ctlwire-katcp 127.0.0.1:N pause``).

The server runs in its own thread; sensors are refreshed twice a second from there, so
the pacing thread does nothing for the control port but read a flag between events.

May import: ``ctlwire.katcp`` (public API), ``ctlwire.tcs.steer``.
"""
from __future__ import annotations

import threading

from ..katcp import DeviceServer, Float, Int, Sensor, Str, request, return_reply
from .steer import SteeredReplay

__all__ = ["ReplayControl"]

#: seconds between sensor refreshes
REFRESH = 0.5


class ReplayControl(DeviceServer):
    """KATCP device serving a :class:`SteeredReplay`.

    Parameters
    ----------
    replay : SteeredReplay
        The replay to steer.
    host, port : str, int
        Where to listen (port 0: a free one, see ``bind_address``).
    """

    VERSION_INFO = ("ctlwire-tcs-replay", 1, 0)
    BUILD_INFO = ("ctlwire-tcs-replay", 1, 0, "")

    def __init__(self, replay: SteeredReplay, host: str = "127.0.0.1", port: int = 0) -> None:
        self.replay = replay
        self._refresh_stop = threading.Event()
        self._refresher: threading.Thread | None = None
        super().__init__(host, port)

    def setup_sensors(self) -> None:
        self.s_time = Sensor.float("telescope-time", "Original time of the last event sent",
                                   "s", default=0.0)
        self.s_sent = Sensor.integer("events-sent", "Events sent in this pass", "",
                                     default=0)
        self.s_done = Sensor.float("fraction-done", "Share of the events read so far", "",
                                   [0.0, 1.0], default=0.0)
        self.s_p50 = Sensor.float("lateness-p50", "Median lateness of paced events", "us",
                                  default=0.0)
        self.s_p99 = Sensor.float("lateness-p99", "99th percentile lateness of paced events",
                                  "us", default=0.0)
        self.s_state = Sensor.discrete("state", "Replay state", "",
                                       ["waiting", "running", "paused", "done"])
        for s in (self.s_time, self.s_sent, self.s_done, self.s_p50, self.s_p99, self.s_state):
            self.add_sensor(s)
        self.refresh()

    def refresh(self) -> None:
        """Copy the replay's progress into the sensors."""
        r = self.replay
        st = r.stats
        if r.telescope_time is not None:
            self.s_time.set_value(r.telescope_time)
        self.s_sent.set_value(st.sent)
        self.s_done.set_value(min(1.0, r.fraction_done))
        p50 = st.lateness_percentile(50)
        p99 = st.lateness_percentile(99)
        if p50 is not None:
            self.s_p50.set_value(p50 * 1e6)
            self.s_p99.set_value(p99 * 1e6)
        self.s_state.set_value(r.state)

    def _refresh_loop(self) -> None:
        while not self._refresh_stop.wait(REFRESH):
            self.refresh()

    def start(self, timeout=None, daemon=None, excepthook=None):
        """Start serving, and the sensor refresh."""
        super().start(timeout=timeout, daemon=daemon, excepthook=excepthook)
        self._refresh_stop.clear()
        self._refresher = threading.Thread(target=self._refresh_loop, daemon=True,
                                           name="tcs-replay-sensors")
        self._refresher.start()

    def stop(self, timeout=1.0):
        """Stop the sensor refresh and the server."""
        self._refresh_stop.set()
        if self._refresher is not None:
            self._refresher.join(timeout)
        super().stop(timeout=timeout)

    def _do(self, fn, *args):
        try:
            got = fn(*args)
        except (RuntimeError, TimeoutError, ValueError) as exc:
            return ("fail", str(exc))
        self.refresh()
        return ("ok", got)

    @request()
    @return_reply()
    def request_pause(self, req):
        """Stop sending events; nothing is sent after the reply until ?resume or ?step."""
        res = self._do(self.replay.pause)
        return res if res[0] == "fail" else ("ok",)

    @request()
    @return_reply()
    def request_resume(self, req):
        """Go on from where the replay was paused."""
        res = self._do(self.replay.resume)
        return res if res[0] == "fail" else ("ok",)

    @request(Float())
    @return_reply()
    def request_set_speedup(self, req, speedup):
        """Replay speed from now on (> 0; a large value for as fast as possible)."""
        res = self._do(self.replay.set_speedup, speedup)
        return res if res[0] == "fail" else ("ok",)

    @request(Str())
    @return_reply(Str())
    def request_seek(self, req, when):
        """Jump to the first event at or after TIME (+SECONDS from the first event, ISO
        8601, or Unix seconds); replies with that event's time."""
        res = self._do(self.replay.seek, when)
        if res[0] == "fail":
            return res
        return ("ok", "end" if res[1] is None else repr(res[1]))

    @request(Int(min=1))
    @return_reply(Int())
    def request_step(self, req, n):
        """Send the next N events at once (use while paused); replies with how many."""
        return self._do(self.replay.step, n)
