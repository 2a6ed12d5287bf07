# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled per-sensor loops of ``ctlwire.katcp.mirror``: what a sync does once per
sensor.

A device of a thousand sensors brings a thousand ``#sensor-list`` informs and then a
thousand ``#sensor-status`` readings in a burst; :class:`~ctlwire.katcp.mirror.DeviceMirror`
applies them with these loops. Each leaves the mirror exactly as the one-at-a-time
methods of ``DeviceMirror`` do (``sensor_list``, ``sensor_status``, ``watch``), which
stay in Python as the reference: ``tests/katcp/test_mirror_batch.py`` checks the two
against each other with hypothesis.

:class:`MirroredSensor` (one sensor as the mirror knows it) is defined here, as an
extension type, so that these loops make and update it without attribute lookups;
``mirror`` exports it. The caller passes the other types and constants
(``SensorInfo``, ``Subscribed.YES`` ...) and a callback for the rare cases (a sensor
whose description changed, a reading of a sensor nobody watches), so the state's rules
stay in ``mirror.py``.

Layering: imports nothing of ctlwire.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeUTF8

cdef extern from "Python.h":
    # (a new reference, zero-filled: a named tuple's own allocation, without its __new__)
    object PyType_GenericAlloc(PyTypeObject *tp, Py_ssize_t nitems)


cdef class MirroredSensor:
    """One sensor of the device as the mirror knows it: its ``info`` (a
    ``SensorInfo``), its latest ``reading`` (a ``SensorReading`` or ``None``), whether
    the device is known to sample it (``subscribed``, a ``Subscribed``) and who wants
    its updates (``watchers``, a dict used as an ordered set)."""

    cdef public object info
    cdef public object reading
    cdef public object subscribed
    cdef public dict watchers

    def __init__(self, info, reading=None, subscribed=None, watchers=None):
        self.info = info
        self.reading = reading
        # (Subscribed.NO, which lives in mirror.py: see _SUBSCRIBED_NO)
        self.subscribed = _SUBSCRIBED_NO if subscribed is None else subscribed
        self.watchers = {} if watchers is None else watchers

    def __repr__(self):
        return (f"MirroredSensor(info={self.info!r}, reading={self.reading!r}, "
                f"subscribed={self.subscribed!r}, watchers={self.watchers!r})")

    def __eq__(self, other):
        if type(other) is not MirroredSensor:
            return NotImplemented
        cdef MirroredSensor o = <MirroredSensor>other
        return ((self.info, self.reading, self.subscribed, self.watchers)
                == (o.info, o.reading, o.subscribed, o.watchers))

    __hash__ = None


cdef object _SUBSCRIBED_NO = None


def set_default_subscribed(no):
    """Tell :class:`MirroredSensor` what ``Subscribed.NO`` is (``mirror`` calls this once)."""
    global _SUBSCRIBED_NO
    _SUBSCRIBED_NO = no


cdef _check_named(type tp, Py_ssize_t fields):
    if not issubclass(tp, tuple) or len(getattr(tp, "_fields", ())) != fields:
        raise TypeError(f"{tp!r} is not a named tuple of {fields} fields")


cdef inline object _named(object tp, Py_ssize_t n, object a, object b, object c,
                          object d=None, object e=None):
    """``tp(a, b, c[, d, e])`` for a named tuple type ``tp`` of ``n`` (3 or 5) fields."""
    cdef object t = PyType_GenericAlloc(<PyTypeObject*>tp, n)
    cdef PyObject *items[5]
    cdef Py_ssize_t i
    items[0] = <PyObject*>a
    items[1] = <PyObject*>b
    items[2] = <PyObject*>c
    items[3] = <PyObject*>d
    items[4] = <PyObject*>e
    for i in range(n):
        Py_INCREF(<object>items[i])  # (the tuple's own reference: SET_ITEM steals one)
        PyTuple_SET_ITEM(t, i, <object>items[i])
    return t


cdef inline str _text(object raw):
    """UTF-8 text of bytes (strict: raises UnicodeDecodeError)."""
    if type(raw) is bytes:
        return PyUnicode_DecodeUTF8(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), NULL)
    return raw.decode()


def merge_sensor_list_informs(informs, dict sensors, list bad, list added, set seen,
                              type info_type, no, on_changed):
    """Merge ``#sensor-list`` informs (their arguments, as bytes) into ``sensors``.

    For each inform of at least four arguments (``name description units type
    params...``): its ``info_type`` (a named tuple of the four texts, UTF-8 with
    replacement characters where it is not, and the params as a tuple of bytes, one
    tuple shared by the informs with equal params); its name goes into ``seen``; a new
    name gets a fresh :class:`MirroredSensor` (``reading=None``, ``subscribed=no``) and its info is appended to ``added``; a known one whose info
    differs is handed to ``on_changed(sensor, info)``. Shorter informs go to ``bad``.
    """
    cdef dict shared = {}
    cdef Py_ssize_t n
    _check_named(info_type, 5)
    cdef object a, params, info, found
    cdef MirroredSensor s
    cdef str name
    for a in informs:
        n = len(a)
        if n < 4:
            bad.append(a)
            continue
        params = tuple(a[4:])
        # sensors often share their params (a range): one tuple for all, not one each
        params = shared.setdefault(params, params)
        try:
            name = _text(a[0])
            info = _named(info_type, 5, name, _text(a[1]), _text(a[2]), _text(a[3]), params)
        except UnicodeDecodeError:
            name = a[0].decode("utf-8", "replace")
            info = _named(info_type, 5, name, a[1].decode("utf-8", "replace"),
                           a[2].decode("utf-8", "replace"),
                           a[3].decode("utf-8", "replace"), params)
        seen.add(name)
        found = sensors.get(name)
        if found is None:
            s = MirroredSensor.__new__(MirroredSensor)
            s.info = info
            s.subscribed = no
            s.watchers = {}
            sensors[name] = s
            added.append(info)
        elif (<MirroredSensor?>found).info != info:
            on_changed(found, info)


def apply_status_informs(informs, dict sensors, set need, updated, list bad,
                         type reading_type, dict words, yes, check_sampling):
    """Apply ``#sensor-status`` informs (``timestamp count name status value ...``, as
    bytes) to ``sensors``.

    Each reading of a known sensor becomes its ``reading`` (a ``reading_type`` of the
    timestamp as a float, the status word as ``words`` spells it or as ASCII text, and
    the raw value); a sensor not yet known to be sampled becomes ``subscribed = yes``
    and leaves ``need`` if it has watchers, else goes to ``check_sampling(sensor)``.
    With ``updated`` (a list), ``(sensor, reading)`` is appended for every reading
    applied, in order. Informs whose timestamp is missing or not a number go to
    ``bad``; readings of unknown sensors are skipped.
    """
    cdef Py_ssize_t n, i
    cdef object args, found, status, word, reading, raw, timestamp
    cdef MirroredSensor s
    cdef str name
    cdef bint record = updated is not None
    _check_named(reading_type, 3)
    for args in informs:
        n = len(args)
        if n == 0:
            bad.append(args)
            continue
        try:
            timestamp = float(args[0])
        except ValueError:
            bad.append(args)
            continue
        i = 2
        while i < n - 2:
            raw = args[i]
            try:
                name = _text(raw)
            except UnicodeDecodeError:
                name = raw.decode("utf-8", "replace")
            found = sensors.get(name)
            if found is not None:
                s = <MirroredSensor?>found
                status = args[i + 1]
                word = words.get(status)
                if not word:
                    word = status.decode("ascii", "replace")
                reading = _named(reading_type, 3, timestamp, word, args[i + 2])
                s.reading = reading
                if s.subscribed is not yes:
                    # the device is evidently sampling it
                    s.subscribed = yes
                    if s.watchers:
                        need.discard(name)
                    else:
                        check_sampling(s)
                if record:
                    updated.append((s, reading))
            i += 3


def watch_many(dict sensors, names, watcher, set need, yes):
    """Add ``watcher`` to the watchers of each sensor named (``KeyError`` for an
    unknown one); one that is not known to be sampled loses its reading and goes into
    ``need``. True when any did (the mirror then wants a sync)."""
    cdef bint wanted = False
    cdef MirroredSensor s
    cdef dict watchers
    for name in names:
        s = <MirroredSensor?>sensors[name]
        watchers = s.watchers
        if watcher in watchers:
            continue
        watchers[watcher] = None
        if s.subscribed is yes:
            need.discard(name)
        else:
            s.reading = None
            need.add(name)
            wanted = True
    return wanted
