"""Property: whatever happens, every accepted call is answered exactly once and
dispatched to a server at most once (never a second execution, nothing lost)."""
from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ctlwire import _json
from ctlwire._ext import load_extension

R = load_extension("ctlwire.roc._router")

# two plain workers, and two connections of one multi-connection server plus one of
# another (routing ids with the group tag), so grouping is exercised too; and two
# pipelined connections of a third server (depth 2 and 3: calls handed out at once)
_A = R.GROUP_TAG + b"A" * 8
_B = R.GROUP_TAG + b"B" * 8
_P = R.PIPELINE_TAG + b"P" * 8
WORKERS = [b"W0", b"W1", _A + b"\0\0\0\1", _A + b"\0\0\0\2", _B + b"\0\0\0\1",
           _P + b"\0\0\0\1\x02", _P + b"\0\0\0\2\x03"]
DEPTH = {w: (w[-1] if w.startswith(R.PIPELINE_TAG) else 1) for w in WORKERS}
CLIENTS = [b"C0", b"C1"]
SERVICES = [b"a", b"b"]

_event = st.one_of(
    st.tuples(st.just("ready"), st.sampled_from(WORKERS), st.sampled_from(SERVICES)),
    st.tuples(st.just("request"), st.sampled_from(CLIENTS), st.sampled_from(SERVICES)),
    st.tuples(st.just("reply"), st.sampled_from(WORKERS), st.none()),
    st.tuples(st.just("reply-again"), st.sampled_from(WORKERS), st.none()),
    st.tuples(st.just("heartbeat"), st.sampled_from(WORKERS), st.none()),
    st.tuples(st.just("disconnect"), st.sampled_from(WORKERS), st.none()),
    st.tuples(st.just("tick"), st.floats(0.0, 2.0), st.none()),
    st.tuples(st.just("garbage"), st.binary(max_size=6), st.none()),
    # extensions: progress of a running call, and a standby's passive state
    st.tuples(st.just("partial"), st.sampled_from(WORKERS), st.none()),
    st.tuples(st.just("passive"), st.booleans(), st.none()),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_event, max_size=60))
@example([("ready", b"W0", b"a"), ("request", b"C0", b"a"), ("reply", b"W0", None),
          ("reply-again", b"W0", None)])
@example([("request", b"C0", b"a"), ("ready", b"W0", b"a"), ("tick", 2.0, None),
          ("reply", b"W0", None)])
def test_every_call_answered_once_and_dispatched_at_most_once(events):
    out: list = []
    router = R.Router(out.append, heartbeat=0.5, liveness=3, queue_timeout=1.0,
                      unknown_grace=0.3, max_queue=3)
    now = 0.0
    token = 0
    accepted: set[int] = set()
    dispatched: dict[int, int] = {}
    answered: dict[int, int] = {}
    progress: dict[int, int] = {}   # progress messages passed on, per call
    client_of: dict[int, bytes] = {}
    # what each worker was handed and has not answered, oldest first (it runs them in
    # that order and answers them in that order)
    current: dict[bytes, list[int]] = {}
    last: dict[bytes, tuple] = {}     # each worker's last reply (client, token)

    def drain() -> None:
        for msg in out:
            if msg[2] == b"MDPW01":
                if msg[3] == b"\x02":
                    tok = _json.loads(msg[6])["id"]
                    dispatched[tok] = dispatched.get(tok, 0) + 1
                    calls = current.setdefault(msg[0], [])
                    calls.append(tok)
                    assert len(calls) <= DEPTH[msg[0]], "more calls than the depth"
                    last.pop(msg[0], None)
                    client_of[tok] = msg[4]
                elif msg[3] == b"\x05":
                    current.pop(msg[0], None)
            elif msg[2] == b"MDPC01":
                body = _json.loads(msg[4])
                tok = body["id"]
                if "progress" in body:
                    # progress only ever belongs to a call still unanswered
                    assert tok not in answered, "progress after the answer"
                    progress[tok] = progress.get(tok, 0) + 1
                else:
                    answered[tok] = answered.get(tok, 0) + 1
        out.clear()

    for kind, a, b in events:
        if kind == "ready":
            router.handle([a, b"", b"MDPW01", b"\x01", b], now)
        elif kind == "request":
            token += 1
            accepted.add(token)
            router.handle([a, b"", b"MDPC01", b, _json.dumps({"id": token})], now)
        elif kind == "reply":
            calls = current.get(a)
            tok = calls.pop(0) if calls else None
            if tok is not None:
                last[a] = (client_of[tok], tok)
                router.handle([a, b"", b"MDPW01", b"\x03", client_of[tok], b"",
                               _json.dumps({"id": tok, "result": 1})], now)
        elif kind == "reply-again":
            # (a plain worker only: a pipelined one answering a call twice, while a
            # later call of the same client waits on it, cannot be told from the
            # answer to that call; the extension requires answers in order, once)
            if a in last and DEPTH[a] == 1:
                client, tok = last[a]
                router.handle([a, b"", b"MDPW01", b"\x03", client, b"",
                               _json.dumps({"id": tok, "result": 2})], now)
        elif kind == "heartbeat":
            router.handle([a, b"", b"MDPW01", b"\x04"], now)
        elif kind == "disconnect":
            current.pop(a, None)
            router.handle([a, b"", b"MDPW01", b"\x05"], now)
        elif kind == "partial":
            tok = current[a][0] if current.get(a) else None
            client = client_of[tok] if tok is not None else b"C0"
            router.handle([a, b"", b"MDPW01", b"\x06", client, b"",
                           _json.dumps({"id": tok if tok is not None else -1,
                                        "progress": 1})], now)
        elif kind == "passive":
            router.passive = a
        elif kind == "tick":
            now += a
            router.tick(now)
        else:
            router.handle([b"G", a], now)
        drain()
        assert all(n == 1 for n in dispatched.values()), "a call was dispatched twice"
        assert all(n == 1 for n in answered.values()), "a call was answered twice"
        assert -1 not in progress, "progress from a server with no call was passed on"

    # let every server and every queued or held call expire: all get their one answer
    router.tick(now + 100.0)
    router.tick(now + 200.0)  # calls released from holding are queued by the first
    drain()
    assert set(answered) == accepted
    assert all(n == 1 for n in answered.values())
