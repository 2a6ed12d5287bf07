# cython: language_level=3, boundscheck=False, wraparound=False
"""Engine room of the TCS replay: rows to events, events to JSON, and pacing.

Reads the event database through the sqlite3 C API (no tuple per row), converts
attribute values straight from the row's bytes, and paces events against absolute
monotonic deadlines.  The documented classes in :mod:`ctlwire.tcs.server` wrap it.
"""
from cpython.unicode cimport PyUnicode_DecodeUTF8
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.conversion cimport PyOS_string_to_double
from cpython.exc cimport PyErr_CheckSignals
from libc.string cimport memcmp, memset, strcmp
from libc.stdlib cimport strtod
from libc.math cimport isfinite, INFINITY, NAN
from posix.time cimport clock_gettime, nanosleep, timespec, CLOCK_MONOTONIC

import logging
import math
import time as _time

_log = logging.getLogger("ctlwire.tcs.replay")

# ---------------------------------------------------------------------------
# Value conversions (never raise)
# ---------------------------------------------------------------------------

cdef inline bint _is_digit(char c) noexcept nogil:
    return c'0' <= c <= c'9'


cdef int _scan_int(const char *s, Py_ssize_t n, long long *out) noexcept nogil:
    """Parse ``[+-]digits`` (at most 18 digits, so no overflow): 1 on success, 0 if the
    text is not that plain shape (the caller then asks Python, which knows every form)."""
    cdef Py_ssize_t i = 0
    cdef bint neg = False
    cdef long long acc = 0
    if n == 0:
        return 0
    if s[0] == c'-' or s[0] == c'+':
        neg = s[0] == c'-'
        i = 1
    if n - i < 1 or n - i > 18:
        return 0
    while i < n:
        if not _is_digit(s[i]):
            return 0
        acc = acc * 10 + (s[i] - c'0')
        i += 1
    out[0] = -acc if neg else acc
    return 1


cdef int _plain_float_shape(const char *s, Py_ssize_t n) noexcept nogil:
    """1 if ``s`` is ``[+-](d+[.d*]|.d+)([eE][+-]d+)?`` in plain ASCII, else 0."""
    cdef Py_ssize_t i = 0, digits = 0
    if n == 0 or n > 64:
        return 0
    if s[0] == c'-' or s[0] == c'+':
        i = 1
    while i < n and _is_digit(s[i]):
        i += 1
        digits += 1
    if i < n and s[i] == c'.':
        i += 1
        while i < n and _is_digit(s[i]):
            i += 1
            digits += 1
    if digits == 0:
        return 0
    if i < n and (s[i] == c'e' or s[i] == c'E'):
        i += 1
        if i < n and (s[i] == c'-' or s[i] == c'+'):
            i += 1
        if i >= n or not _is_digit(s[i]):
            return 0
        while i < n and _is_digit(s[i]):
            i += 1
    return 1 if i == n else 0


cdef double[23] _POW10 = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                          1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22]


cdef inline bint _clinger(const char *s, Py_ssize_t n, double *out) noexcept nogil:
    """Exact fast path for a plain decimal (Clinger): when the digits fit in 53 bits
    and the power of ten is at most 22, both are exact doubles and one IEEE multiply
    or divide rounds correctly, as float() does.  0 means "use the full parser"."""
    cdef Py_ssize_t i = 0
    cdef unsigned long long m = 0
    cdef int ndig = 0, e = 0, ev = 0, edig = 0
    cdef bint neg = False, eneg = False
    cdef double r
    if s[0] == c'-' or s[0] == c'+':
        neg = s[0] == c'-'
        i = 1
    while i < n and _is_digit(s[i]):
        m = m * 10 + <unsigned long long>(s[i] - c'0')
        ndig += 1
        i += 1
    if i < n and s[i] == c'.':
        i += 1
        while i < n and _is_digit(s[i]):
            m = m * 10 + <unsigned long long>(s[i] - c'0')
            ndig += 1
            e -= 1
            i += 1
    if ndig > 19:
        return False
    if i < n:  # exponent (shape already checked)
        i += 1
        if s[i] == c'-' or s[i] == c'+':
            eneg = s[i] == c'-'
            i += 1
        while i < n:
            ev = ev * 10 + (s[i] - c'0')
            edig += 1
            i += 1
            if edig > 4:
                return False
        e += -ev if eneg else ev
    if m > (1ULL << 53):
        return False
    if e == 0:
        r = <double>m
    elif 0 < e <= 22:
        r = <double>m * _POW10[e]
    elif -22 <= e < 0:
        r = <double>m / _POW10[-e]
    else:
        return False
    out[0] = -r if neg else r
    return True


cdef inline double _parse_double(const char *s, Py_ssize_t n) except? -1.0:
    """Value of a plain-shaped decimal (see _plain_float_shape).

    libc's strtod rounds correctly like Python's float(); if the C locale's decimal
    point is not '.', it stops early and Python's own parser is used instead.  The
    text from sqlite is NUL-terminated, so strtod cannot read past it.
    """
    cdef char *end
    cdef double f
    if _clinger(s, n, &f):
        return f
    f = strtod(s, &end)
    if end == s + n:
        return f
    return PyOS_string_to_double(s, NULL, NULL)


cdef object _number_from_text(object text):
    """Slow path: Python's own int() then float(); non-finite floats stay text."""
    cdef double f
    try:
        return int(text)
    except (ValueError, TypeError):
        pass
    try:
        f = float(text)
    except (ValueError, TypeError):
        return text
    return f if isfinite(f) else text


cdef object _number_from_bytes(const char *s, Py_ssize_t n, object text):
    """Number conversion from UTF-8 bytes; ``text`` is the decoded value or None
    (decoded lazily so that plain numbers never build a str)."""
    cdef long long iv
    cdef double f
    if _scan_int(s, n, &iv):
        return iv
    if _plain_float_shape(s, n):
        # float() accepts this grammar, and _parse_double rounds exactly as float()
        # does: same value, no exception on the way
        f = _parse_double(s, n)
        if isfinite(f):
            # a plain-shaped digit string longer than 18 digits is an int for Python
            if _all_int_shape(s, n):
                return _number_from_text(PyUnicode_DecodeUTF8(s, n, NULL))
            return f
        return PyUnicode_DecodeUTF8(s, n, NULL) if text is None else text
    if text is None:
        text = PyUnicode_DecodeUTF8(s, n, NULL)
    return _number_from_text(text)


cdef inline bint _all_int_shape(const char *s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i = 0
    if n and (s[0] == c'-' or s[0] == c'+'):
        i = 1
    if i >= n:
        return False
    while i < n:
        if not _is_digit(s[i]):
            return False
        i += 1
    return True


def convert_number(value):
    """Convert ``value`` to int, else float, else return it unchanged; never raises.

    Non-finite floats (``"nan"``, ``"inf"``, ``"1e999"``) stay text so that the JSON
    output is valid for every standard decoder.
    """
    cdef bytes b
    if type(value) is str:
        b = (<str>value).encode("utf-8", "surrogatepass")
        return _number_from_bytes(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), value)
    # numbers are already converted (int(2.5) would truncate); other objects stay
    return value


def convert_bool(value):
    """Return True for ``"true"``, False for ``"false"``, else ``value`` unchanged."""
    if type(value) is str:
        if value == "true":
            return True
        if value == "false":
            return False
    return value


def time_value(value):
    """Return ``value`` read as a finite float, or None when it is not a number."""
    cdef object v
    if value is None:
        return None
    if type(value) is float or type(value) is int:
        v = value
    else:
        if type(value) is bytes:  # raw sqlite text; bad UTF-8 is no time
            try:
                value = (<bytes>value).decode("utf-8")
            except UnicodeDecodeError:
                return None
        v = convert_number(value)
    if type(v) is int:
        try:
            return float(v)
        except OverflowError:  # an int beyond any double is no usable time
            return None
    if type(v) is float and isfinite(v):
        return v
    return None


cdef int _time_from_bytes(const char *s, Py_ssize_t n, double *out):
    """Read a time attribute: 1 and ``out`` set when it is a finite number, else 0."""
    cdef object v
    cdef double f
    if _plain_float_shape(s, n):
        f = _parse_double(s, n)
        if isfinite(f):
            out[0] = f
            return 1
        return 0
    v = time_value(PyUnicode_DecodeUTF8(s, n, "replace"))
    if v is None:
        return 0
    out[0] = v
    return 1


# ---------------------------------------------------------------------------
# Clock and waiting
# ---------------------------------------------------------------------------

cdef extern from *:
    """
    #ifdef __linux__
    #include <sys/prctl.h>
    static long ctlwire_get_slack(void) { return prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0); }
    static void ctlwire_set_slack(long ns) { prctl(PR_SET_TIMERSLACK, ns, 0, 0, 0); }
    #else
    static long ctlwire_get_slack(void) { return -1; }
    static void ctlwire_set_slack(long ns) { (void)ns; }
    #endif
    """
    long ctlwire_get_slack() nogil
    void ctlwire_set_slack(long ns) nogil


cdef extern from *:
    """
    #include <sched.h>
    static int ctlwire_realtime(void) {
    #if defined(SCHED_FIFO) && defined(SCHED_RR)
        int p = sched_getscheduler(0);
        return p == SCHED_FIFO || p == SCHED_RR;
    #else
        return 0;
    #endif
    }
    """
    int ctlwire_realtime() nogil


cdef inline double _mono() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


def monotonic():
    """The clock the pacing uses (CLOCK_MONOTONIC, seconds)."""
    return _mono()


# Adaptive spinning (the default): the wait sleeps until ``window`` before the deadline
# and spins the rest.  The window follows the 99th percentile of how late this thread's
# sleeps end (a stochastic quantile tracker: up by 99 steps when a sleep ends past the
# window, down by one step otherwise), between 0 and ADAPT_MAX.  On an idle machine a
# sleep ends 50-100 µs late (a virtual CPU that halts is woken by its host), a spin does
# not; on a busy one a spinning thread is preempted and ends up later than a sleeping
# one, so when more than PREEMPT_SHARE of the spinning time was lost to preemption the
# wait only sleeps for a cool-down, then tries spinning again; the cool-down doubles
# (COOLDOWN up to COOLDOWN_MAX) each time the machine is still busy, and halves after
# a judgement that finds it idle.
cdef double ADAPT_START = 200e-6
cdef double ADAPT_MAX = 500e-6
cdef double ADAPT_STEP = 0.1e-6       # the window goes down by this, up by 99 times it

#: Adaptive pacing: the first spin window, its largest, and the step of its tracker (s).
ADAPTIVE_START = ADAPT_START
ADAPTIVE_MAX = ADAPT_MAX
ADAPTIVE_STEP = ADAPT_STEP
cdef double PREEMPT_GAP = 30e-6       # a gap this long between clock reads: preempted
cdef double PREEMPT_SHARE = 0.2
cdef double JUDGE_EVERY = 0.25        # seconds of spinning between judgements
cdef double COOLDOWN = 2.0
cdef double COOLDOWN_MAX = 64.0


cdef class Pacer:
    """How the replay waits for a deadline: sleep, then spin the last stretch.

    Parameters
    ----------
    spin : float or None
        None (default): adaptive, the spin window follows how late this thread's
        sleeps end, and spinning stops for a while when the machine is busy enough
        to preempt it.  0: always sleep.  > 0: a fixed spin window (seconds).

    Attributes
    ----------
    window : float
        The spin window now (seconds; 0 while spinning is suspended).
    sleeps, spins, suspended : int
        Waits that slept, waits that spun, and times spinning was suspended
        because it was being preempted.
    spin_time, spin_lost : float
        Seconds spent spinning, and how much of it the thread was not running
        (gaps of more than 30 µs between two clock reads).
    """

    def __init__(self, spin=None):
        if spin is None:
            self.adaptive = True
            self.fixed = 0.0
            self.window_ = ADAPT_START
        else:
            spin = float(spin)
            if not spin >= 0:  # also NaN
                raise ValueError(f"spin must be >= 0 seconds or None, got {spin!r}")
            self.adaptive = False
            self.fixed = spin
            self.window_ = spin
        self.resume_at = 0.0
        self.policy_at = -1e9
        self.realtime = False
        self.cooldown = COOLDOWN
        self.spun = 0.0
        self.lost = 0.0
        self.sleeps = self.spins = self.suspended = 0
        self.spin_time = self.spin_lost = 0.0

    @property
    def spin(self):
        """None (adaptive) or the fixed spin window in seconds."""
        return None if self.adaptive else self.fixed

    @property
    def window(self):
        """The spin window now (seconds; 0 while spinning is suspended)."""
        if self.adaptive and (self.resume_at != 0.0 or self.realtime):
            return 0.0
        return self.window_

    def wait_until(self, double deadline, interrupt=None):
        """Wait until ``deadline`` (:func:`monotonic` seconds).

        Returns True at the deadline, False when ``interrupt.is_set()`` became true
        first (checked at least every 50 ms).
        """
        if interrupt is not None and interrupt.is_set():
            return False
        return self._wait(deadline, interrupt) == 0

    cdef int _wait(self, double deadline, object interrupt) except -1:
        """Wait until ``deadline``; 1 when ``interrupt`` was set first, else 0.

        Sleeps without the GIL in chunks of at most 50 ms (Ctrl-C and ``interrupt``
        are checked between them) with a 1 µs timer slack on Linux (the kernel's
        licence to wake late is 50 µs by default), then spins without the GIL.
        """
        cdef double rem, chunk, target, now, prev, gap, worst, t0, window
        cdef timespec ts
        cdef long slack = -2
        cdef bint slept = False
        now = _mono()
        rem = deadline - now
        if rem <= 0:
            return 0
        window = self.window_
        if self.adaptive:
            if now - self.policy_at > 1.0:
                # a real-time thread that spins starves its core (and is throttled
                # for 50 ms a second): under SCHED_FIFO/RR the adaptive wait sleeps
                self.policy_at = now
                self.realtime = ctlwire_realtime() != 0
            if self.realtime:
                window = 0.0
            elif self.resume_at != 0.0:
                if now < self.resume_at:
                    window = 0.0
                else:
                    self.resume_at = 0.0
        try:
            while rem > window:
                chunk = rem - window
                if chunk > 0.05:
                    chunk = 0.05
                target = now + chunk
                ts.tv_sec = <long>chunk
                ts.tv_nsec = <long>((chunk - ts.tv_sec) * 1e9)
                if slack == -2:
                    slack = ctlwire_get_slack()
                    if slack > 1000:
                        ctlwire_set_slack(1000)
                with nogil:
                    nanosleep(&ts, NULL)
                now = _mono()
                slept = True
                if self.adaptive and target >= deadline - window - 1e-9:
                    self._learn(now - target)
                PyErr_CheckSignals()
                if interrupt is not None and interrupt.is_set():
                    return 1
                rem = deadline - now
        finally:
            if slack > 1000:
                ctlwire_set_slack(slack)
        if slept:
            self.sleeps += 1
        if now >= deadline:
            return 0
        self.spins += 1
        worst = 0.0
        with nogil:
            t0 = prev = _mono()
            while prev < deadline:
                now = _mono()
                gap = now - prev
                if gap > PREEMPT_GAP:
                    worst += gap
                prev = now
        self.spin_time += prev - t0
        self.spin_lost += worst
        if self.adaptive:
            self.spun += prev - t0
            self.lost += worst
            if self.spun >= JUDGE_EVERY:
                if self.lost > PREEMPT_SHARE * self.spun:
                    # preempted while spinning: the machine is busy, sleep for a while
                    self.resume_at = prev + self.cooldown
                    self.cooldown = min(self.cooldown * 2, COOLDOWN_MAX)
                    self.suspended += 1
                else:
                    self.cooldown = max(self.cooldown / 2, COOLDOWN)
                self.spun = self.lost = 0.0
        return 0

    def learn(self, double late):
        """Feed the adaptive window one sleep that ended ``late`` seconds past its
        target (what every sleeping wait does; public for tests and tuning)."""
        self._learn(late)

    cdef void _learn(self, double late) noexcept:
        """One sleep ended ``late`` seconds after it was due: move the window."""
        if late > self.window_:
            self.window_ += 99 * ADAPT_STEP
            if self.window_ > ADAPT_MAX:
                self.window_ = ADAPT_MAX
        else:
            self.window_ -= ADAPT_STEP
            if self.window_ < 0:
                self.window_ = 0.0

    def __repr__(self):
        mode = "adaptive" if self.adaptive else f"spin={self.fixed!r}"
        return (f"Pacer({mode}, window={self.window * 1e6:.0f} µs, sleeps={self.sleeps}, "
                f"spins={self.spins}, suspended={self.suspended}, "
                f"spin lost {self.spin_lost * 1e3:.1f} of {self.spin_time * 1e3:.0f} ms)")


def wait_until(double deadline, spin=0.0, interrupt=None):
    """Wait until ``deadline`` (:func:`monotonic` seconds) as the replay does.

    ``spin``: seconds spun before the deadline (0: sleep only; None: adaptive, with a
    pacer of this call alone; keep a :class:`Pacer` to let it learn).  Returns True at
    the deadline, False when ``interrupt.is_set()`` became true first (checked at least
    every 50 ms).
    """
    return Pacer(spin).wait_until(deadline, interrupt)


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------

cdef class ReplayStats:
    """Counters of one replay pass: events sent, filtered, skipped, and lateness.

    ``sent`` counts events the replay put out; when a socket sends them
    (:meth:`Replayer.run`), each is either ``delivered`` (the socket took it) or
    ``dropped`` (refused: a subscriber's queue was full), so ``sent == delivered +
    dropped`` there.  Lateness is how long after its deadline an event was handed
    over, kept in a 1-microsecond histogram (constant memory however long the replay
    runs).
    """

    def __cinit__(self):
        self.reset()

    cpdef reset(self):
        """Zero every counter."""
        memset(self._bins, 0, sizeof(self._bins))
        self.sent = self.filtered = self.skipped = self.timed = 0
        self.delivered = self.dropped = 0
        self.lateness_sum = 0.0
        self.lateness_max = 0.0

    def record(self, double late):
        """Count one paced event handed over ``late`` seconds after its deadline."""
        self._record(late)

    cdef void _record(self, double late) noexcept:
        cdef long long b
        if late < 0:
            late = 0
        self.timed += 1
        self.lateness_sum += late
        if late > self.lateness_max:
            self.lateness_max = late
        b = <long long>(late * 1e6)
        if b > NBINS:
            b = NBINS
        self._bins[b] += 1

    def lateness_percentile(self, double q):
        """Lateness (seconds) below which ``q`` percent of paced events were sent.

        Resolution is one microsecond (upper bin edge); None when nothing was paced.
        """
        cdef long long need, acc = 0
        cdef int i
        if self.timed == 0:
            return None
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be within [0, 100], got {q}")
        need = <long long>math.ceil(self.timed * q / 100.0)
        if need < 1:
            need = 1
        for i in range(NBINS + 1):
            acc += self._bins[i]
            if acc >= need:
                if i == NBINS:
                    return self.lateness_max
                return min((i + 1) * 1e-6, self.lateness_max)
        return self.lateness_max

    @property
    def lateness_mean(self):
        """Mean lateness in seconds (None when nothing was paced)."""
        return self.lateness_sum / self.timed if self.timed else None

    def as_dict(self):
        """Plain dict of the counters and lateness summary (seconds)."""
        return {
            "sent": self.sent, "delivered": self.delivered, "dropped": self.dropped,
            "filtered": self.filtered, "skipped": self.skipped,
            "lateness_mean": self.lateness_mean,
            "lateness_p50": self.lateness_percentile(50),
            "lateness_p99": self.lateness_percentile(99),
            "lateness_max": self.lateness_max if self.timed else None,
        }

    def __repr__(self):
        d = self.as_dict()
        return "ReplayStats(" + ", ".join(f"{k}={v!r}" for k, v in d.items()) + ")"


# ---------------------------------------------------------------------------
# The replay engine
# ---------------------------------------------------------------------------

# Fast plan: two sequential scans merged on event_id (attribute rows in rowid order,
# i.e. insertion order).  Valid when attribute event_ids never decrease in rowid
# order, which is how every writer appends events; checked before use.  Otherwise,
# and for sorted replays, one join sorted by sqlite.
cdef const char *_SQL_EVENTS = b"SELECT event_id, event_id, topic FROM event ORDER BY event_id"
cdef const char *_SQL_ATTRS = (
    b"SELECT event_id, name, value, data_type FROM attribute ORDER BY rowid")
cdef const char *_SQL_ATTR_IDS = b"SELECT event_id FROM attribute ORDER BY rowid"
cdef const char *_SQL_PLAIN = (
    b"SELECT e.event_id, e.event_id, e.topic, a.rowid, a.name, a.value, a.data_type "
    b"FROM event e LEFT JOIN attribute a ON a.event_id = e.event_id "
    b"ORDER BY e.event_id, a.rowid")
cdef const char *_SQL_ORDERED = (
    b"SELECT o.pos, e.event_id, e.topic, a.rowid, a.name, a.value, a.data_type "
    b"FROM temp.ctlwire_replay_order o JOIN event e ON e.event_id = o.event_id "
    b"LEFT JOIN attribute a ON a.event_id = o.event_id "
    b"ORDER BY o.pos, a.rowid")
cdef const char *_SQL_ONE = (
    b"SELECT e.event_id, e.event_id, e.topic, a.rowid, a.name, a.value, a.data_type "
    b"FROM event e LEFT JOIN attribute a ON a.event_id = e.event_id "
    b"WHERE e.event_id = ? ORDER BY a.rowid")

# result columns
cdef enum:
    C_GROUP = 0
    C_ID = 1
    C_TOPIC = 2
    C_AROWID = 3
    C_NAME = 4
    C_VALUE = 5
    C_TYPE = 6

cdef enum:
    SORT_NONE = 0
    SORT_DATA = 1
    SORT_WIRE = 2


from ctlwire.tcs.events import TCSDatabaseError


class ReplayDatabaseError(TCSDatabaseError):
    """The database failed while being read (I/O error, damaged file)."""


class _Corrupt(Exception):
    pass


cdef class Replayer:
    """Stream events out of a TCS database in replay order, paced or not.

    Parameters
    ----------
    path : str
        Database file (already checked by the caller).
    order : list of int or None
        Event ids in replay order; None for event_id order.
    sort_by : int
        0 none, 1 ``__data_time``, 2 ``__wire_time`` (which attribute is the time).
    speedup : float
        > 0; ``inf`` means no waiting.
    prefixes : list of str
        Accepted topic prefixes; empty accepts all.
    convert_number, convert_bool : bool
        Conversions by ``data_type``.
    encode : callable
        ``obj -> bytes`` (msgspec) or ``obj -> str`` (stdlib-compatible mode).
    spin : float or None
        How the waits spin (see :class:`Pacer`): None adaptive, 0 sleep only, > 0 a
        fixed spin window in seconds.
    """

    def __cinit__(self):
        self._db = NULL
        self._stmt = NULL
        self._attrs = NULL
        self._one = NULL

    def __init__(self, str path, order, int sort_by, double speedup, prefixes,
                 bint convert_number, bint convert_bool, encode, spin=None):
        cdef int rc
        if not speedup > 0:
            raise ValueError(f"speedup must be > 0, got {speedup!r}")
        self._path = path.encode("utf-8", "surrogateescape")
        # one thread at a time uses this handle (the GIL sees to it): no sqlite mutexes
        rc = sqlite3_open_v2(self._path, &self._db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                             NULL)
        if rc != SQLITE_OK:
            msg = sqlite3_errmsg(self._db).decode("utf-8", "replace") if self._db else "?"
            raise ReplayDatabaseError(f"cannot open TCS database {path!r}: {msg}")
        # reading pages through a memory map saves a read() copy per page
        sqlite3_exec(self._db, b"PRAGMA mmap_size = 1073741824", NULL, NULL, NULL)
        self._order = order
        self._sort_by = sort_by
        self.speedup = speedup
        self._prefixes = [p.encode("utf-8") for p in (prefixes or [])]
        self._conv_num = convert_number
        self._conv_bool = convert_bool
        self._encode = encode
        self.pacer = Pacer(spin)
        self._name_cache_b = []
        self._name_cache_s = []
        self._topic_bytes = {}
        self.stats = ReplayStats()
        self.errors = []
        self.max_errors = 1000
        self.last_event_id = 0
        self.reset()

    def __dealloc__(self):
        self._release()

    cdef void _release(self) noexcept:
        if self._stmt != NULL:
            sqlite3_finalize(self._stmt)
            self._stmt = NULL
        if self._attrs != NULL:
            sqlite3_finalize(self._attrs)
            self._attrs = NULL
        if self._one != NULL:
            sqlite3_finalize(self._one)
            self._one = NULL
        if self._db != NULL:
            sqlite3_close_v2(self._db)
            self._db = NULL

    @property
    def spin(self):
        """The pacer's spin setting: None (adaptive) or seconds."""
        return self.pacer.spin

    @spin.setter
    def spin(self, value):
        self.pacer = Pacer(value)

    @property
    def t_first(self):
        """Time of the first timed event of this pass (None before it)."""
        return self._t_first if self._have_first else None

    @property
    def plan(self):
        """``'merge'`` (two sequential scans) or ``'join'`` (sorted by sqlite)."""
        return "merge" if self._merge else "join"

    def close(self):
        """Release the statements and the database handle."""
        self._release()

    cdef _fail(self, str what):
        msg = sqlite3_errmsg(self._db).decode("utf-8", "replace") if self._db else "closed"
        raise ReplayDatabaseError(
            f"{what} failed on TCS database {self._path.decode('utf-8', 'replace')!r}: {msg}")

    cdef sqlite3_stmt *_prepare(self, const char *sql) except NULL:
        cdef sqlite3_stmt *st = NULL
        if sqlite3_prepare_v2(self._db, sql, -1, &st, NULL) != SQLITE_OK:
            self._fail("preparing a query")
        return st

    cdef bint _attrs_in_event_order(self) except -1:
        """True when attribute rows, in rowid order, never go back in event_id."""
        cdef sqlite3_stmt *st = self._prepare(_SQL_ATTR_IDS)
        cdef long long prev = -(1LL << 62), cur
        cdef int rc
        cdef bint ok = True
        try:
            with nogil:
                while True:
                    rc = sqlite3_step(st)
                    if rc != SQLITE_ROW:
                        break
                    cur = sqlite3_column_int64(st, 0)
                    if cur < prev:
                        ok = False
                        rc = SQLITE_DONE
                        break
                    prev = cur
            if rc != SQLITE_DONE:
                # a damaged page: the streaming join still replays what comes before
                # it, and reports the damage when it gets there
                ok = False
        finally:
            sqlite3_finalize(st)
        return ok

    def reset(self):
        """Restart the query from the first event and forget the clock."""
        cdef sqlite3_stmt *ins = NULL
        cdef Py_ssize_t pos
        if self._db == NULL:
            raise ValueError("replayer is closed")
        if self._stmt != NULL:
            sqlite3_finalize(self._stmt)
            self._stmt = NULL
        if self._attrs != NULL:
            sqlite3_finalize(self._attrs)
            self._attrs = NULL
        self._merge = False
        if self._order is not None:
            # the replay order lives in a temp table of this connection so one
            # streaming join returns the events in order (temp tables do not
            # touch the read-only database file)
            if sqlite3_exec(self._db, b"DROP TABLE IF EXISTS temp.ctlwire_replay_order; "
                            b"CREATE TEMP TABLE ctlwire_replay_order "
                            b"(pos INTEGER PRIMARY KEY, event_id INTEGER NOT NULL); "
                            b"BEGIN", NULL, NULL, NULL) != SQLITE_OK:
                self._fail("creating the replay order")
            ins = self._prepare(b"INSERT INTO temp.ctlwire_replay_order VALUES (?, ?)")
            try:
                pos = 0
                for eid in self._order:
                    sqlite3_bind_int64(ins, 1, pos)
                    sqlite3_bind_int64(ins, 2, eid)
                    if sqlite3_step(ins) != SQLITE_DONE:
                        self._fail("filling the replay order")
                    sqlite3_reset(ins)
                    pos += 1
            finally:
                sqlite3_finalize(ins)
            if sqlite3_exec(self._db, b"COMMIT", NULL, NULL, NULL) != SQLITE_OK:
                self._fail("filling the replay order")
            self._stmt = self._prepare(_SQL_ORDERED)
        elif self._attrs_in_event_order():
            self._merge = True
            self._stmt = self._prepare(_SQL_EVENTS)
            self._attrs = self._prepare(_SQL_ATTRS)
        else:
            self._stmt = self._prepare(_SQL_PLAIN)
        self._has_row = False
        self._a_has_row = False
        if self._merge:
            self._a_has_row = self._step(self._attrs) == 1
        self._done = False
        self._started = False
        self._have_first = False
        self.start_iter_time = None
        self.start_wire_time = None
        self.stats.reset()

    cdef int _step(self, sqlite3_stmt *stmt) except -1:
        # no GIL release here: a step takes well under a microsecond, releasing and
        # taking the GIL back would cost more than the step
        cdef int rc = sqlite3_step(stmt)
        if rc == SQLITE_ROW:
            return 1
        if rc == SQLITE_DONE:
            return 0
        self._fail("reading events")
        return -1

    cdef bint _accepted(self, const char *topic, Py_ssize_t n) except -1:
        cdef bytes p
        if not self._prefixes:
            return True
        for p in self._prefixes:
            if PyBytes_GET_SIZE(p) <= n and memcmp(topic, PyBytes_AS_STRING(p),
                                                    PyBytes_GET_SIZE(p)) == 0:
                return True
        return False

    cdef object _name(self, Py_ssize_t idx, const char *s, Py_ssize_t n):
        """Attribute name as str, reusing the one seen at the same position of the
        previous event: events of a database mostly share one layout."""
        cdef bytes b
        cdef object name
        if idx < len(self._name_cache_b):
            b = <bytes>self._name_cache_b[idx]
            if PyBytes_GET_SIZE(b) == n and memcmp(PyBytes_AS_STRING(b), s, n) == 0:
                return self._name_cache_s[idx]
        name = PyUnicode_DecodeUTF8(s, n, NULL)
        b = PyBytes_FromStringAndSize(s, n)
        if idx < len(self._name_cache_b):
            self._name_cache_b[idx] = b
            self._name_cache_s[idx] = name
        elif idx < 64:
            self._name_cache_b.append(b)
            self._name_cache_s.append(name)
        return name

    cdef object _value(self, const char *s, Py_ssize_t n, const char *dtype):
        """The attribute value from its text (NULL pointer: SQL NULL)."""
        if s == NULL:
            return None
        if dtype != NULL:
            if self._conv_num and strcmp(dtype, b"number") == 0:
                return _number_from_bytes(s, n, None)
            if self._conv_bool and strcmp(dtype, b"boolean") == 0:
                if n == 4 and memcmp(s, b"true", 4) == 0:
                    return True
                if n == 5 and memcmp(s, b"false", 5) == 0:
                    return False
        return PyUnicode_DecodeUTF8(s, n, NULL)

    cdef str _add_attr(self, sqlite3_stmt *st, int col, dict event, Py_ssize_t idx,
                       double *times, int *have):
        """Add the attribute of the current row (name, value, data_type from column
        ``col`` on) to ``event``; returns a reason if the row is bad."""
        cdef const char *name_s
        cdef const char *dtype
        cdef const char *vs
        cdef Py_ssize_t name_n, vn = 0
        cdef int is_time
        try:
            # each column is read once: sqlite's column calls are a good part of the cost
            name_s = <const char *>sqlite3_column_text(st, col)
            if name_s == NULL:
                if sqlite3_column_type(st, col) != SQLITE_NULL:
                    raise MemoryError()
                return f"attribute #{idx + 1}: name is NULL"
            name_n = sqlite3_column_bytes(st, col)
            vs = <const char *>sqlite3_column_text(st, col + 1)
            if vs == NULL:
                if sqlite3_column_type(st, col + 1) != SQLITE_NULL:
                    raise MemoryError()
            else:
                vn = sqlite3_column_bytes(st, col + 1)
            dtype = <const char *>sqlite3_column_text(st, col + 2)
            name = self._name(idx, name_s, name_n)
            # the times drive the pacing; read them whatever the conversions
            is_time = 0
            if name_n == 11 and name_s[0] == c'_' and vs != NULL:
                if memcmp(name_s, b"__data_time", 11) == 0:
                    is_time = 1
                elif memcmp(name_s, b"__wire_time", 11) == 0:
                    is_time = 2
            if is_time != 0 and _time_from_bytes(vs, vn, &times[is_time - 1]):
                have[0] |= is_time
                # parsed once for both uses: a plain decimal converts to this float
                if self._conv_num and dtype != NULL and strcmp(dtype, b"number") == 0 \
                        and _plain_float_shape(vs, vn) and not _all_int_shape(vs, vn):
                    event[name] = times[is_time - 1]
                    return None
            event[name] = self._value(vs, vn, dtype)
        except UnicodeDecodeError as exc:
            return (f"attribute #{idx + 1} is not valid UTF-8 "
                    f"({exc.reason} at byte {exc.start})")
        return None

    cdef tuple _header(self, sqlite3_stmt *st):
        """(event_id, topic, accepted, reason) of the current row."""
        cdef long long eid = sqlite3_column_int64(st, C_ID)
        cdef const char *topic_s
        cdef Py_ssize_t topic_n
        cdef object topic = None
        cdef bint accepted
        if sqlite3_column_type(st, C_TOPIC) == SQLITE_NULL:
            return (eid, None, True, "topic is NULL")
        topic_s = <const char *>sqlite3_column_text(st, C_TOPIC)
        topic_n = sqlite3_column_bytes(st, C_TOPIC)
        accepted = self._accepted(topic_s, topic_n)
        if accepted:
            try:
                topic = PyUnicode_DecodeUTF8(topic_s, topic_n, NULL)
            except UnicodeDecodeError as exc:
                return (eid, None, True,
                        f"topic is not valid UTF-8 ({exc.reason} at byte {exc.start})")
        return (eid, topic, accepted, None)

    cdef tuple _read_event(self, sqlite3_stmt *st, bint single):
        """Read the rows of the next event.

        Returns ``(event_id, topic, event_or_None, t_data, t_wire, have)`` (``event``
        None for a filtered event, ``have`` bit 1/2 when __data_time/__wire_time are
        numbers), None at the end; raises ``_Corrupt`` after consuming a bad event.
        """
        cdef long long group, eid, aeid
        cdef bint accepted = True
        cdef str reason = None
        cdef str why
        cdef dict event
        cdef double[2] times
        cdef int have = 0
        cdef Py_ssize_t idx = 0
        cdef tuple head
        times[0] = 0
        times[1] = 0
        if self._merge and not single:
            if self._done or self._step(st) == 0:
                self._done = True
                return None
            head = self._header(st)
            eid = head[0]
            accepted = head[2]
            reason = head[3]
            event = {} if accepted else None
            while self._a_has_row:
                aeid = sqlite3_column_int64(self._attrs, 0)
                if aeid > eid:
                    break
                # aeid < eid: an attribute of no event, which the join would drop too
                if aeid == eid and accepted and reason is None:
                    why = self._add_attr(self._attrs, 1, event, idx, times, &have)
                    idx += 1
                    if why is not None:
                        reason = why
                self._a_has_row = self._step(self._attrs) == 1
        else:
            if not self._has_row:
                if self._done or self._step(st) == 0:
                    self._done = True
                    return None
            self._has_row = False
            group = sqlite3_column_int64(st, C_GROUP)
            head = self._header(st)
            eid = head[0]
            accepted = head[2]
            reason = head[3]
            event = {} if accepted else None
            while True:
                if accepted and reason is None and \
                        sqlite3_column_type(st, C_AROWID) != SQLITE_NULL:
                    why = self._add_attr(st, C_NAME, event, idx, times, &have)
                    idx += 1
                    if why is not None:
                        reason = why
                if self._step(st) == 0:
                    if not single:
                        self._done = True
                    break
                if not single and sqlite3_column_int64(st, C_GROUP) != group:
                    self._has_row = True
                    break
        if reason is not None:
            raise _Corrupt(eid, reason)
        return (eid, head[1], event, times[0], times[1], have)

    def read_one(self, long long event_id):
        """Return ``(topic, event)`` for one event id (no pacing, no time rewrite).

        Raises KeyError for an unknown id, ValueError for a corrupt event.
        """
        cdef tuple r
        if self._db == NULL:
            raise ValueError("replayer is closed")
        if self._one == NULL:
            self._one = self._prepare(_SQL_ONE)
        sqlite3_reset(self._one)
        sqlite3_bind_int64(self._one, 1, event_id)
        if self._step(self._one) == 0:
            sqlite3_reset(self._one)
            raise KeyError(f"no event with event_id {event_id}")
        saved = (self._prefixes, self._has_row, self._done, self._merge)
        self._prefixes = []
        self._has_row = True
        self._merge = False
        try:
            r = self._read_event(self._one, True)
        except _Corrupt as exc:
            raise ValueError(f"event {exc.args[0]} is corrupt: {exc.args[1]}") from None
        finally:
            self._prefixes, self._has_row, self._done, self._merge = saved
            sqlite3_reset(self._one)
        return r[1], r[2]

    cdef tuple _advance(self):
        """Read the next event and rewrite its times.

        Returns ``(topic, event, off)``: ``off`` is when it is due, in seconds after
        :attr:`start_mono` (NaN when it has no time or the replay is unpaced); None
        for a filtered event; raises StopIteration at the end.
        """
        cdef tuple r
        cdef double t, off
        cdef int have
        cdef dict event
        cdef bint timed
        if self._stmt == NULL:
            raise StopIteration
        while True:
            try:
                r = self._read_event(self._stmt, False)
            except _Corrupt as exc:
                self.stats.skipped += 1
                if len(self.errors) < self.max_errors:
                    self.errors.append((exc.args[0], exc.args[1]))
                _log.warning("TCS database %s: skipping corrupt event %s: %s",
                             self._path.decode("utf-8", "replace"), exc.args[0], exc.args[1])
                continue
            break
        if r is None:
            raise StopIteration
        self.last_event_id = r[0]
        event = r[2]
        if event is None:
            self.stats.filtered += 1
            return None
        have = r[5]
        # this event's time: the sort key when sorting, else __data_time, else __wire_time
        if self._sort_by == SORT_DATA:
            timed = (have & 1) != 0
            t = r[3]
        elif self._sort_by == SORT_WIRE:
            timed = (have & 2) != 0
            t = r[4]
        elif have & 1:
            timed = True
            t = r[3]
        else:
            timed = (have & 2) != 0
            t = r[4]
        if not self._started:
            self._started = True
            self.start_mono = _mono()
            self.start_iter_time = _time.time()
            if have & 2:
                self.start_wire_time = r[4]
        if timed and not self._have_first:
            self._have_first = True
            self._t_first = t
        # rewrite both times with one t_first so their difference survives
        if self._have_first:
            if have & 1:
                off = 0.0 if self.speedup == INFINITY else (<double>r[3] - self._t_first) / self.speedup
                event["__data_time"] = self.start_iter_time + off
            if have & 2:
                off = 0.0 if self.speedup == INFINITY else (<double>r[4] - self._t_first) / self.speedup
                event["__wire_time"] = self.start_iter_time + off
        if timed and self.speedup != INFINITY:
            off = (t - self._t_first) / self.speedup
        else:
            off = NAN
        return (r[1], event, off)

    cdef object _next(self, bint as_bytes):
        """Next message: ``[topic, json]``, None (filtered), or raise StopIteration."""
        cdef tuple r
        cdef double off, deadline
        cdef object payload, topic, tb, msg
        r = self._advance()
        if r is None:
            return None
        topic = r[0]
        off = r[2]
        # all the work is done before the wait, so at the deadline the event is
        # only handed over; lateness is measured at that hand-over
        payload = self._encode(r[1])
        if as_bytes:
            tb = self._topic_bytes.get(topic)
            if tb is None:
                tb = (<str>topic).encode("utf-8")
                if len(self._topic_bytes) < 4096:
                    self._topic_bytes[topic] = tb
            if type(payload) is not bytes:
                payload = (<str>payload).encode("utf-8")
            msg = [tb, payload]
        else:
            if type(payload) is bytes:
                payload = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(payload),
                                               PyBytes_GET_SIZE(payload), NULL)
            msg = [topic, payload]
        if off == off:  # timed and paced
            deadline = self.start_mono + off
            self.pacer._wait(deadline, None)
            self.stats._record(_mono() - deadline)
        self.stats.sent += 1
        return msg

    cdef int _prepare_one(self, prepare, list ahead, double* cost, bint* fresh) except -2:
        """Read and prepare the next accepted event onto ``ahead``: 1 when one was
        added, 0 when it was passed over (filtered, or ``prepare`` returned None), -1
        at the end."""
        cdef double t0 = _mono()
        cdef tuple r
        try:
            r = self._advance()
        except StopIteration:
            return -1
        if r is None:
            return 0
        item = prepare(r[0], r[1])
        if item is None:
            return 0
        if fresh[0]:
            # the schedule starts when its first event is ready to go
            fresh[0] = False
            self.start_mono = _mono()
        ahead.append((r[2], item))
        cost[0] += (_mono() - t0 - cost[0]) * 0.125
        return 1

    def run_due(self, prepare, deliver, long long limit=-1, interrupt=None):
        """Pace the remaining events, handing them over in batches of those due.

        ``prepare(topic, event)`` is called for each accepted event (times rewritten)
        ahead of its deadline, while the replay would otherwise wait; it returns what
        to hand over, or None for nothing (the event is then not counted as sent).
        ``deliver(items)`` gets, in replay order, every prepared item whose deadline
        has come, at once: after a late event the ones due meanwhile go together
        instead of one wait each.  An event's lateness is from its deadline to when
        ``deliver`` returned.  Returns the number of items delivered; ``limit`` >= 0
        stops after that many; ``interrupt`` (an object with ``is_set()``) being set
        during a wait ends the pass there (the items prepared ahead are not sent).

        Items are prepared up to 64 ahead, and only while the next deadline is
        further away than about twice what preparing one costs.  Behind schedule
        (the head late by more than that), the events already due are prepared too,
        up to 64, and go in the same batch: catching up costs one hand-over, not one
        per event.  The clock starts when the first item is ready, so preparing it
        does not make it late.
        """
        cdef list ahead = []
        cdef list batch
        cdef double now, cost = 20e-6, off
        cdef Py_ssize_t i, k, m
        cdef long long n = 0
        cdef bint end = False, fresh = not self._started, paced
        while limit < 0 or n < limit:
            paced = self.speedup != INFINITY
            while not end and len(ahead) < 64 and (limit < 0 or n + len(ahead) < limit):
                if ahead and paced:
                    off = (<tuple>ahead[0])[0]
                    if off != off:
                        break
                    if self.start_mono + off - _mono() <= 2 * cost + 10e-6:
                        break
                if self._prepare_one(prepare, ahead, &cost, &fresh) < 0:
                    end = True
            m = len(ahead)
            if m == 0:
                break
            off = (<tuple>ahead[0])[0]
            if off == off:
                if self.pacer._wait(self.start_mono + off, interrupt):
                    break
            elif interrupt is not None and interrupt.is_set():
                break
            now = _mono()
            if paced:
                # behind schedule: the events due meanwhile join this batch
                while not end and m < 64 and (limit < 0 or n + m < limit):
                    off = (<tuple>ahead[m - 1])[0]
                    if off != off or now - (self.start_mono + off) <= 2 * cost + 10e-6:
                        break
                    if self._prepare_one(prepare, ahead, &cost, &fresh) < 0:
                        end = True
                    m = len(ahead)
                    now = _mono()
            # the head is due: so is every item behind it whose deadline has passed
            k = 1
            while k < m:
                off = (<tuple>ahead[k])[0]
                if off == off and self.start_mono + off > now:
                    break
                k += 1
            batch = [(<tuple>ahead[i])[1] for i in range(k)]
            deliver(batch)
            now = _mono()
            for i in range(k):
                off = (<tuple>ahead[i])[0]
                if off == off:
                    self.stats._record(now - (self.start_mono + off))
            self.stats.sent += k
            self.stats.delivered += k
            del ahead[:k]
            n += k
        return n

    def read_next(self):
        """Next accepted event, unpaced and with its times untouched.

        Returns ``(event_id, topic, event, t_data, t_wire, have)`` (``have`` bit 1/2
        when ``__data_time``/``__wire_time`` are numbers), or None at the end.
        Filtered and corrupt events are counted (``stats.filtered``/``skipped``) and
        passed over, as the paced iteration does.
        """
        cdef tuple r
        if self._stmt == NULL:
            return None
        while True:
            try:
                r = self._read_event(self._stmt, False)
            except _Corrupt as exc:
                self.stats.skipped += 1
                if len(self.errors) < self.max_errors:
                    self.errors.append((exc.args[0], exc.args[1]))
                _log.warning("TCS database %s: skipping corrupt event %s: %s",
                             self._path.decode("utf-8", "replace"), exc.args[0], exc.args[1])
                continue
            if r is None:
                return None
            self.last_event_id = r[0]
            if r[2] is None:
                self.stats.filtered += 1
                continue
            return r

    def next_message(self):
        """Next ``[topic, json]`` as str (waiting for its deadline), or None for an
        event whose topic is not accepted; StopIteration at the end."""
        return self._next(False)

    def next_frames(self):
        """As :meth:`next_message` but both frames are bytes, ready for zmq."""
        return self._next(True)

    def run(self, send, long long limit=-1):
        """Send every remaining event with ``send([topic_bytes, json_bytes])``.

        ``send`` returning False means the event was dropped (counted in
        ``stats.dropped``); anything else, delivered.  Returns the number of events
        sent; ``limit`` >= 0 stops after that many.
        """
        cdef long long n = 0
        cdef object msg
        while limit < 0 or n < limit:
            try:
                msg = self._next(True)
            except StopIteration:
                break
            if msg is not None:
                try:
                    r = send(msg)
                except BaseException:
                    # interrupted before the socket took it: not sent after all
                    self.stats.sent -= 1
                    raise
                if r is False:
                    self.stats.dropped += 1
                else:
                    self.stats.delivered += 1
                n += 1
        return n
