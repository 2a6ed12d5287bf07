# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled 7/MDP frame classification and the broker's routing state machine.

Design note
-----------
``classify`` looks at a fixed number of leading frames (never at bodies), so its cost
per message does not depend on message size.  ``Router`` holds the broker's state:
workers by identity, services by name, idle workers grouped by server, and a bounded
request queue per service.  Every routed message costs a constant number of dict and
deque operations; scans over all workers happen only on the heartbeat tick.

Servers (groups)
----------------
A ``RocServer`` opens several worker connections to serve one object faster, yet runs
its calls one at a time.  Its connections' routing ids share a prefix (``GROUP_TAG``
and 8 random bytes, then a 4-byte counter), so the broker knows which workers are one
server and hands a call to a server with no call running before queueing it behind a
busy one.  Each service keeps two deques of groups with idle workers: ``free`` (no
call running when queued) and ``shared`` (calls running); any other worker is a group
of its own.  Entries can go stale (lazy deletion) and are checked when popped.

Pipelined connections (a ctlwire extension)
-------------------------------------------
7/MDP gives a worker one request at a time.  A ``RocServer`` whose routing ids carry
``PIPELINE_TAG`` instead of ``GROUP_TAG``, with one more byte at the end (the *depth*,
1 to 255), asks for up to that many requests at once on that connection: it runs them
one at a time in the order they arrive and answers them in that order, so the broker
matches each REPLY to the oldest call it handed that connection.  The broker keeps
handing calls to the connection it used last until its depth is reached, so a burst
travels on one connection in few system calls, as through a bare relay.  A broker
that does not know the tag sees an ordinary routing id and gives one request at a
time, so such a server still works with any MDP broker; a worker whose routing id
lacks the tag gets plain 7/MDP here.

The router owns no socket: it is handed a ``send`` callable taking one multipart
message (a list of bytes, ROUTER identity first), so the whole state machine can be
driven with plain lists in tests.  Workers removed while idle stay in their service's
idle deque with ``alive = False`` and are skipped when popped (lazy deletion keeps
removal O(1)).
"""
from collections import deque

from time import monotonic as _py_monotonic

from cpython.exc cimport PyErr_CheckSignals

from ctlwire._json import dumps as _json_dumps
from ctlwire.roc import rpc as _rpc

# Protocol constants (RFC 7/MDP 0.1, RFC 8/MMI)
MDPC = b"MDPC01"
MDPW = b"MDPW01"
READY = b"\x01"
REQUEST = b"\x02"
REPLY = b"\x03"
HEARTBEAT = b"\x04"
DISCONNECT = b"\x05"
#: ctlwire extension: a progress value of a call still running (see docs/roc.md)
PARTIAL = b"\x06"

# classify() results for messages arriving at the broker's ROUTER socket
C_REQUEST = 1
W_READY = 2
W_REPLY = 3
W_HEARTBEAT = 4
W_DISCONNECT = 5
W_UNEXPECTED = 6  # well-formed, but a broker never receives it (worker REQUEST)
W_PARTIAL = 7     # extension: progress of a running call, passed on to the client
# malformed (negative): the reason, so counters and tests can tell them apart
BAD_SHORT = -1
BAD_DELIMITER = -2
BAD_PROTOCOL = -3
BAD_COMMAND = -4
BAD_LENGTH = -5
BAD_SERVICE = -6
BAD_ENVELOPE = -7

# classify_worker() results for messages a worker's DEALER receives from a broker
B_REQUEST = 1
B_HEARTBEAT = 4
B_DISCONNECT = 5
B_UNEXPECTED = 6

cdef bytes _MDPC = MDPC
cdef bytes _MDPW = MDPW
cdef bytes _EMPTY = b""
cdef bytes _REQUEST = REQUEST
cdef bytes _REPLY = REPLY
cdef bytes _HEARTBEAT = HEARTBEAT
cdef bytes _DISCONNECT = DISCONNECT
cdef bytes _MMI = b"mmi."
cdef bytes _MMI_SERVICE = b"mmi.service"
cdef bytes _MMI_DIRECTORY = b"mmi.directory"
cdef bytes _MMI_STATE = b"mmi.state"

#: Routing-id prefix of a RocServer's connections: tag + 8-byte server id + counter.
GROUP_TAG = b"roc\x01"
cdef bytes _GROUP_TAG = GROUP_TAG
#: Routing-id tag of a server whose connections take several requests at once: then
#: the id is the tag, 8 server bytes, a 4-byte connection counter and the depth.
PIPELINE_TAG = b"roc\x02"
cdef bytes _PIPELINE_TAG = PIPELINE_TAG
cdef Py_ssize_t _PIPELINE_ID_LEN = 17
cdef Py_ssize_t _GROUP_KEY_LEN = 12  # tag + server id


cdef inline double _monotonic():
    # time.monotonic itself: portable (no POSIX-only clock_gettime in Windows builds)
    return _py_monotonic()


cdef inline bint _is_empty(object f):
    return type(f) is bytes and len(<bytes>f) == 0


cdef inline bint _is_nonempty(object f):
    return type(f) is bytes and len(<bytes>f) > 0


cdef inline int _command(object f):
    # a command frame is exactly one byte; anything else is not a command
    if type(f) is not bytes or len(<bytes>f) != 1:
        return -1
    return (<unsigned char*><char*>(<bytes>f))[0]


cpdef int classify(list frames):
    """Classify a message received on the broker's ROUTER socket.

    Parameters
    ----------
    frames : list of bytes
        ``[identity, b"", protocol, ...]`` as returned by ``recv_multipart``.

    Returns
    -------
    int
        One of ``C_REQUEST``, ``W_READY``, ``W_REPLY``, ``W_HEARTBEAT``,
        ``W_DISCONNECT``, ``W_UNEXPECTED`` or a negative ``BAD_*`` reason.
    """
    cdef Py_ssize_t n = len(frames)
    cdef object proto
    cdef int cmd
    if n < 3:
        return BAD_SHORT
    if not _is_nonempty(frames[0]) or not _is_empty(frames[1]):
        return BAD_DELIMITER
    proto = frames[2]
    if type(proto) is not bytes:
        return BAD_PROTOCOL
    if <bytes>proto == _MDPC:
        if n < 5:
            return BAD_LENGTH
        if not _is_nonempty(frames[3]):
            return BAD_SERVICE
        return C_REQUEST
    if <bytes>proto != _MDPW:
        return BAD_PROTOCOL
    if n < 4:
        return BAD_LENGTH
    cmd = _command(frames[3])
    if cmd == 1:
        if n != 5:
            return BAD_LENGTH
        if not _is_nonempty(frames[4]):
            return BAD_SERVICE
        return W_READY
    if cmd == 3 or cmd == 2 or cmd == 6:
        if n < 7:
            return BAD_LENGTH
        if not _is_nonempty(frames[4]) or not _is_empty(frames[5]):
            return BAD_ENVELOPE
        return W_REPLY if cmd == 3 else (W_PARTIAL if cmd == 6 else W_UNEXPECTED)
    if cmd == 4:
        return W_HEARTBEAT if n == 4 else BAD_LENGTH
    if cmd == 5:
        return W_DISCONNECT if n == 4 else BAD_LENGTH
    return BAD_COMMAND


cpdef int classify_worker(list frames):
    """Classify a message a worker's DEALER socket received from the broker.

    Parameters
    ----------
    frames : list of bytes
        ``[b"", b"MDPW01", command, ...]``.

    Returns
    -------
    int
        ``B_REQUEST``, ``B_HEARTBEAT``, ``B_DISCONNECT``, ``B_UNEXPECTED`` (a
        well-formed READY or REPLY, which only brokers receive) or a negative
        ``BAD_*`` reason.
    """
    cdef Py_ssize_t n = len(frames)
    cdef int cmd
    if n < 3:
        return BAD_SHORT
    if not _is_empty(frames[0]):
        return BAD_DELIMITER
    if type(frames[1]) is not bytes or <bytes>frames[1] != _MDPW:
        return BAD_PROTOCOL
    cmd = _command(frames[2])
    if cmd == 2 or cmd == 3:
        if n < 6:
            return BAD_LENGTH
        if not _is_nonempty(frames[3]) or not _is_empty(frames[4]):
            return BAD_ENVELOPE
        return B_REQUEST if cmd == 2 else B_UNEXPECTED
    if cmd == 4:
        return B_HEARTBEAT if n == 3 else BAD_LENGTH
    if cmd == 5:
        return B_DISCONNECT if n == 3 else BAD_LENGTH
    if cmd == 1:
        if n != 4:
            return BAD_LENGTH
        return B_UNEXPECTED if _is_nonempty(frames[3]) else BAD_SERVICE
    return BAD_COMMAND


cdef class _Service:
    cdef public bytes name
    cdef object free      # deque[_Group] queued with no call running (may be stale)
    cdef object shared    # deque[_Group] queued with calls running (may be stale)
    cdef object queue     # deque[(expiry, client, body)] in arrival order
    cdef public int nworkers
    cdef public bint served  # has ever had a worker: decides how long requests wait

    def __cinit__(self, bytes name):
        self.name = name
        self.free = deque()
        self.shared = deque()
        self.queue = deque()
        self.nworkers = 0
        self.served = False


cdef class _Group:
    # the workers of one server (or a lone worker)
    cdef object key       # routing-id prefix, or None for a lone worker
    cdef _Service service
    cdef object idle      # deque[_Worker] used as a stack; may hold dead workers (lazy deletion)
    cdef int busy         # workers with a call
    cdef int nworkers
    cdef bint in_free
    cdef bint in_shared

    def __cinit__(self, key, _Service service):
        self.key = key
        self.service = service
        self.idle = deque()
        self.busy = 0
        self.nworkers = 0
        self.in_free = False
        self.in_shared = False


cdef inline _Worker _pop_idle(_Group g):
    cdef _Worker w
    while g.idle:
        w = g.idle.pop()  # most recently freed (or used, if pipelined): warm
        w.in_idle = False
        if w.alive:
            return w
    return None


cdef class _Worker:
    cdef public bytes identity
    cdef _Service service
    cdef _Group group
    cdef double expiry
    cdef object calls    # deque[(client address, body frames)] handed out, oldest first
    cdef int depth       # calls it takes at once (1: plain 7/MDP)
    cdef bint alive
    cdef bint in_idle    # on its group's idle stack (it has room for a call)

    def __cinit__(self, bytes identity, _Service service, double expiry):
        self.identity = identity
        self.service = service
        self.expiry = expiry
        self.calls = deque()
        self.depth = 1
        if len(identity) == _PIPELINE_ID_LEN and identity.startswith(_PIPELINE_TAG):
            self.depth = identity[_PIPELINE_ID_LEN - 1] or 1
        self.alive = True
        self.in_idle = False


cdef inline void _share_if_idle(_Group g):
    # a group with idle connections left goes (back) to the end of the shared queue
    if g.idle:
        g.in_shared = True
        g.service.shared.append(g)


cdef class Router:
    """The broker's routing state machine.

    Parameters
    ----------
    send : callable
        Called with one multipart message (list of bytes, identity first).
    heartbeat : float
        Heartbeat interval in seconds (both directions).
    liveness : int
        Missed intervals after which a worker is dead.
    queue_timeout : float
        Seconds a request waits for a worker of an object id that has had one.
    unknown_grace : float
        Seconds a request waits for a worker of an object id never seen before; then
        the client gets a "no worker" error.
    max_queue : int
        Requests waiting per object id; more are refused at once.
    """
    cdef object _send
    cdef dict _workers
    cdef dict _services
    cdef dict _groups    # routing-id prefix -> _Group of a multi-connection server
    cdef public double heartbeat
    cdef public int liveness
    cdef public double queue_timeout
    cdef public double unknown_grace
    cdef public Py_ssize_t max_queue
    cdef public long long malformed
    cdef public long long requests
    cdef public long long replies
    cdef public long long expired
    cdef public long long refused
    cdef public long long lost
    cdef public long long disconnects_sent
    cdef double _next_heartbeat
    cdef public double deadline  # when tick() wants to run next; handle() may lower it
    cdef public bint stopping    # set (from any thread) to make serve() return
    cdef public bint passive     # a standby: client requests are held, not routed
    cdef public object ha        # peer-state machine deciding take-overs, or None
    cdef public double hold      # seconds a passive broker holds a request
    cdef public long long partials
    cdef public long long not_active
    cdef public long long deepest  # most calls one connection held at once
    cdef object _held            # deque[(expiry, client, service, body)] while passive

    def __init__(self, send, double heartbeat=1.0, int liveness=3,
                 double queue_timeout=2.0, double unknown_grace=0.5,
                 Py_ssize_t max_queue=1000):
        if heartbeat <= 0 or liveness < 1:
            raise ValueError("heartbeat must be > 0 and liveness >= 1")
        self._send = send
        self._workers = {}
        self._services = {}
        self._groups = {}
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.queue_timeout = queue_timeout
        self.unknown_grace = unknown_grace
        self.max_queue = max_queue
        self.malformed = self.requests = self.replies = 0
        self.expired = self.refused = self.lost = self.disconnects_sent = 0
        self._next_heartbeat = 0.0
        self.deadline = 0.0
        self.stopping = False
        self.passive = False
        self.ha = None
        self.hold = 1.0
        self.partials = 0
        self.not_active = 0
        self.deepest = 0
        self._held = deque()

    cdef inline double _life(self):
        return self.heartbeat * self.liveness

    cdef _Service _service(self, bytes name):
        cdef _Service svc = self._services.get(name)
        if svc is None:
            svc = _Service(name)
            self._services[name] = svc
        return svc

    cdef void _answer_error(self, object client, bytes service, object body,
                            int code, str message):
        cid = _rpc.request_id(body[0]) if body else None
        self._send([client, _EMPTY, _MDPC, service,
                    _rpc.error_body(cid, code, message, None)])

    cdef void _dispatch(self, _Worker w, object client, list body):
        w.calls.append((client, body))
        w.group.busy += 1
        if len(w.calls) > self.deepest:
            self.deepest = len(w.calls)
        self._send([w.identity, _EMPTY, _MDPW, _REQUEST, client, _EMPTY] + body)

    cdef inline void _park(self, _Worker w):
        # a worker with room for another call goes (back) on top of its group's stack
        if len(w.calls) < w.depth:
            if not w.in_idle:
                w.in_idle = True
                w.group.idle.append(w)
            self._offer(w.group)

    cdef void _worker_free(self, _Worker w, double now):
        # its oldest call is answered (or it just registered): hand it queued
        # requests while it has room, else park it as idle
        cdef _Service svc = w.service
        cdef tuple item
        if w.calls:
            w.calls.popleft()
            w.group.busy -= 1
        while svc.queue and len(w.calls) < w.depth:
            item = svc.queue.popleft()
            if <double>item[0] <= now:
                self._expire(svc, item)
                continue
            self._dispatch(w, item[1], item[2])
        self._park(w)

    cdef inline void _offer(self, _Group g):
        # queue a group that has idle workers where _take will look for it
        if g.busy == 0:
            if not g.in_free:
                g.in_free = True
                g.service.free.append(g)
        elif not g.in_shared:
            g.in_shared = True
            g.service.shared.append(g)

    cdef _Worker _take(self, _Service svc):
        # an idle worker, from a server with no call running if there is one
        cdef _Group g
        cdef _Worker w
        while svc.free:
            g = svc.free.popleft()
            g.in_free = False
            if g.busy == 0:
                w = _pop_idle(g)
                if w is not None:
                    # its other connections wait behind the servers still free
                    _share_if_idle(g)
                    return w
            elif not g.in_shared:
                _share_if_idle(g)
        while svc.shared:
            g = svc.shared.popleft()
            g.in_shared = False
            w = _pop_idle(g)
            if w is not None:
                _share_if_idle(g)
                return w
        return None

    cdef _Group _group_of(self, bytes identity, _Service svc):
        cdef _Group g
        if len(identity) > _GROUP_KEY_LEN and (identity.startswith(_GROUP_TAG) or
                                               identity.startswith(_PIPELINE_TAG)):
            key = identity[:_GROUP_KEY_LEN]
            g = self._groups.get(key)
            if g is None:
                g = _Group(key, svc)
                self._groups[key] = g
                return g
            if g.service is svc:
                return g
        return _Group(None, svc)  # not ours, or a prefix reused for another object

    cdef void _expire(self, _Service svc, tuple item):
        self.expired += 1
        oid = svc.name.decode("utf-8", "replace")
        if svc.nworkers == 0 and not svc.served:
            msg = f"no server for object {oid!r} (unknown object id)"
        else:
            msg = f"no server for object {oid!r} became free in time"
        self._answer_error(item[1], svc.name, item[2], _rpc.NO_WORKER, msg)

    cdef void _remove_worker(self, _Worker w, bint died):
        cdef _Service svc = w.service
        cdef _Group g
        if not w.alive:
            return
        w.alive = False
        self._workers.pop(w.identity, None)
        svc.nworkers -= 1
        g = w.group
        g.nworkers -= 1
        if g.nworkers == 0 and g.key is not None and self._groups.get(g.key) is g:
            del self._groups[g.key]
        if w.calls:
            g.busy -= len(w.calls)
            if g.idle:
                self._offer(g)
            # never resend: the call may have run; tell the caller what happened
            oid = svc.name.decode("utf-8", "replace")
            why = "stopped responding" if died else "disconnected"
            while w.calls:
                client, body = w.calls.popleft()
                self.lost += 1
                self._answer_error(client, svc.name, body, _rpc.WORKER_LOST,
                                   f"server of object {oid!r} {why} during the call; "
                                   "the call may or may not have run and was not resent")

    cdef void _disconnect(self, bytes identity):
        self.disconnects_sent += 1
        self._send([identity, _EMPTY, _MDPW, _DISCONNECT])

    cdef void _route(self, object client, bytes service, list body, double now):
        cdef _Service svc = self._service(service)
        cdef _Worker w = self._take(svc)
        if w is not None:
            self._dispatch(w, client, body)
            self._park(w)  # pipelined with room left: the next call goes to it as well
            return
        if len(svc.queue) >= self.max_queue:
            self.refused += 1
            self._answer_error(client, service, body, _rpc.QUEUE_FULL,
                               f"too many calls waiting for object "
                               f"{service.decode('utf-8', 'replace')!r}")
            return
        expiry = now + (self.queue_timeout if svc.served else self.unknown_grace)
        svc.queue.append((expiry, client, body))
        if expiry < self.deadline:
            self.deadline = expiry

    cdef bint _take_over(self, double now):
        # a passive standby asks its peer-state machine whether this call is the
        # client's vote that makes it active (see ctlwire.roc.ha)
        if self.ha is not None and self.ha.client_vote(now):
            self.passive = False
        return not self.passive

    cdef void _hold(self, object client, bytes service, list body, double now):
        cdef double expiry = now + self.hold
        if len(self._held) >= self.max_queue:
            self.refused += 1
            self._answer_error(client, service, body, _rpc.NOT_ACTIVE,
                               "this broker is a passive standby")
            return
        self._held.append((expiry, client, service, body))
        if expiry < self.deadline:
            self.deadline = expiry

    cdef void _release_held(self, double now):
        cdef tuple item
        if self.passive:
            self._take_over(now)
        while self._held:
            item = self._held[0]
            if not self.passive:
                self._held.popleft()
                self._route(item[1], item[2], item[3], now)
            elif <double>item[0] <= now:
                self._held.popleft()
                self.not_active += 1
                self._answer_error(item[1], item[2], item[3], _rpc.NOT_ACTIVE,
                                   "this broker is a passive standby and its primary "
                                   "is alive; use the active broker")
            else:
                break

    cpdef handle(self, list frames, double now):
        """Process one message received on the ROUTER socket at time ``now``."""
        cdef int kind = classify(frames)
        cdef bytes identity
        cdef _Worker w
        cdef _Service svc
        cdef list body
        if kind == C_REQUEST:
            self.requests += 1
            service = <bytes>frames[3]
            body = frames[4:]
            if service.startswith(_MMI):
                self._mmi(frames[0], service, body)
                return
            if self.passive and not self._take_over(now):
                self._hold(frames[0], service, body, now)
                return
            self._route(frames[0], service, body, now)
            return
        if kind < 0:
            self.malformed += 1
            return
        identity = <bytes>frames[0]
        w = self._workers.get(identity)
        if kind == W_REPLY:
            if w is None:
                self._disconnect(identity)
                return
            if not w.calls or <bytes>frames[4] != (<tuple>w.calls[0])[0]:
                # a reply to no call of ours: forwarding it could answer a call twice
                self._remove_worker(w, False)
                self._disconnect(identity)
                return
            self.replies += 1
            w.expiry = now + self._life()
            self._send([frames[4], _EMPTY, _MDPC, w.service.name] + frames[6:])
            self._worker_free(w, now)
        elif kind == W_PARTIAL:
            if w is None or not w.calls or <bytes>frames[4] != (<tuple>w.calls[0])[0]:
                if w is not None:
                    self._remove_worker(w, False)
                self._disconnect(identity)
                return
            self.partials += 1
            w.expiry = now + self._life()
            self._send([frames[4], _EMPTY, _MDPC, w.service.name] + frames[6:])
        elif kind == W_HEARTBEAT:
            if w is None:
                self._disconnect(identity)
            else:
                w.expiry = now + self._life()
        elif kind == W_READY:
            service = <bytes>frames[4]
            if w is not None or service.startswith(_MMI):
                # READY is sent once per connection; a second one, or a claim on a
                # reserved name, is a protocol error answered with DISCONNECT
                if w is not None:
                    self._remove_worker(w, False)
                self._disconnect(identity)
                return
            svc = self._service(service)
            w = _Worker(identity, svc, now + self._life())
            w.group = self._group_of(identity, svc)
            w.group.nworkers += 1
            self._workers[identity] = w
            svc.nworkers += 1
            svc.served = True
            self._worker_free(w, now)
        elif kind == W_DISCONNECT:
            if w is not None:
                self._remove_worker(w, False)
        else:  # W_UNEXPECTED
            if w is not None:
                self._remove_worker(w, False)
            self._disconnect(identity)

    cdef void _mmi(self, object client, bytes service, list body):
        cdef _Service svc
        if service == _MMI_SERVICE:
            svc = self._services.get(body[0])
            code = b"200" if svc is not None and svc.nworkers > 0 else b"404"
        elif service == _MMI_DIRECTORY:
            code = _json_dumps(sorted(s.name.decode("utf-8", "replace")
                                      for s in self._services.values() if s.nworkers > 0))
        elif service == _MMI_STATE:
            code = b"passive" if self.passive else b"active"
        else:
            code = b"501"
        self._send([client, _EMPTY, _MDPC, service, code])

    cpdef double tick(self, double now):
        """Expire dead workers and old requests, send heartbeats when due.

        Returns
        -------
        float
            The time at which ``tick`` wants to run next.
        """
        cdef _Worker w
        cdef _Service svc
        cdef list dead
        dead = [w for w in self._workers.values() if w.expiry < now]
        for w in dead:
            self._remove_worker(w, True)
        if self._held:
            self._release_held(now)
        idle_names = []
        for svc in self._services.values():
            while svc.queue and <double>svc.queue[0][0] <= now:
                self._expire(svc, svc.queue.popleft())
            if not svc.served and svc.nworkers == 0 and not svc.queue:
                idle_names.append(svc.name)
        for name in idle_names:
            # names asked for but never served must not pile up
            del self._services[name]
        if now >= self._next_heartbeat:
            # busy workers get heartbeats too, so they know the broker is alive
            for w in self._workers.values():
                self._send([w.identity, _EMPTY, _MDPW, _HEARTBEAT])
            self._next_heartbeat = now + self.heartbeat
        self.deadline = self._next_deadline(now)
        return self.deadline

    cdef double _next_deadline(self, double now):
        cdef double t = self._next_heartbeat
        cdef _Service svc
        # the earliest queued expiry matters for prompt "no worker" answers
        for svc in self._services.values():
            if svc.queue and <double>svc.queue[0][0] < t:
                t = <double>svc.queue[0][0]
        if self._held and <double>self._held[0][0] < t:
            t = <double>self._held[0][0]
        if self.passive and self._held and now + 0.02 < t:
            # the peer may fall silent any moment: look again soon
            t = now + 0.02
        return t

    def serve(self, recv, set_timeout, double stop_check=0.1):
        """Route until ``stopping`` is set: the broker's receive loop, compiled.

        Parameters
        ----------
        recv : callable
            ``recv()`` -> list of frames, or ``None`` when the receive timeout expired.
        set_timeout : callable
            ``set_timeout(ms)`` sets the receive timeout; called only on change.
        stop_check : float
            Longest wait, in seconds, before ``stopping`` is looked at again.
        """
        cdef double now, wait
        cdef int timeout_ms, last = -2
        cdef object frames
        self.tick(_monotonic())
        while not self.stopping:
            now = _monotonic()
            if now >= self.deadline:
                self.tick(now)
            wait = self.deadline - now
            if wait > stop_check:
                wait = stop_check
            timeout_ms = <int>(wait * 1000.0) + 1
            if timeout_ms < 1:
                timeout_ms = 1
            if timeout_ms != last:
                set_timeout(timeout_ms)
                last = timeout_ms
            frames = recv()
            if frames is None:
                # timeouts and signals land here: let Python run its signal handlers
                PyErr_CheckSignals()
                continue
            self.handle(<list>frames, _monotonic())

    def stats(self):
        """Counters and current sizes, as a dict."""
        cdef _Service s
        cdef Py_ssize_t queued = 0
        services = {}
        for s in self._services.values():
            queued += len(s.queue)
            if s.nworkers:
                services[s.name.decode("utf-8", "replace")] = s.nworkers
        return {
            "malformed": self.malformed,
            "requests": self.requests,
            "replies": self.replies,
            "expired": self.expired,
            "refused": self.refused,
            "lost": self.lost,
            "disconnects_sent": self.disconnects_sent,
            "partials": self.partials,
            "not_active": self.not_active,
            "deepest": self.deepest,
            "held": len(self._held),
            "state": "passive" if self.passive else "active",
            "workers": len(self._workers),
            "services": services,
            "queued": queued,
        }
