"""``tcs-info``: a look at TCS event databases before replaying them.

    tcs-info night.sqlite [night-0002.sqlite ...] [--gaps 5] [--check] [--json]

Prints the events, the time span, the topics with their counts, the largest gaps
between consecutive events, the event rate, and the recording sessions.  --check also
runs sqlite's integrity check and reports damaged pages.

Exit status: 0 done; 1 --check found damage; 2 a file that is missing or not a TCS
event database; 70 internal error.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from datetime import datetime, timezone

from ._common import (CommandParser, NegativeAnswer, UsageError, existing_file,
                      positive_int, run_command)

PROG = "tcs-info"


def _parser() -> CommandParser:
    p = CommandParser(PROG, description=__doc__)
    p.add_argument("db", nargs="+", type=existing_file, help="TCS event databases")
    p.add_argument("--gaps", type=positive_int, default=5, help="largest gaps to list")
    p.add_argument("--topics", type=positive_int, default=20, help="topics to list")
    p.add_argument("--check", action="store_true", help="run sqlite's integrity check")
    p.add_argument("--json", action="store_true", help="print one JSON object per file")
    return p


def _iso(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def summarize(path: str, n_gaps: int = 5, n_topics: int = 20, check: bool = False) -> dict:
    """What tcs-info prints for one database, as a dict."""
    from ..tcs.events import open_database
    from ..tcs.server import _replay
    conn = open_database(path)
    try:
        events = conn.execute("SELECT count(*) FROM event").fetchone()[0]
        topics = conn.execute("SELECT topic, count(*) AS n FROM event GROUP BY topic "
                              "ORDER BY n DESC, topic").fetchall()
        # the replay's time of each event: __data_time, else __wire_time
        conn.text_factory = bytes
        rows = conn.execute(
            "SELECT e.event_id, d.value, w.value FROM event e "
            "LEFT JOIN attribute d ON d.event_id = e.event_id AND d.name = '__data_time' "
            "LEFT JOIN attribute w ON w.event_id = e.event_id AND w.name = '__wire_time' "
            "ORDER BY e.event_id")
        times = []
        untimed = 0
        tv = _replay.time_value
        for eid, d, w in rows:
            t = tv(d)
            if t is None:
                t = tv(w)
            if t is None:
                untimed += 1
            else:
                times.append((t, eid))
        conn.text_factory = str
        try:
            sessions = conn.execute("SELECT session, first_event_id, started FROM "
                                    "ctlwire_session ORDER BY session").fetchall()
        except sqlite3.Error:
            sessions = []
        problems = []
        if check:
            problems = [r[0] for r in conn.execute("PRAGMA integrity_check")
                        if r[0] != "ok"]
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"TCS database {path!r} is damaged: {exc} (run tcs-info --check)") \
            from None
    finally:
        conn.close()
    times.sort()
    gaps = sorted(((b[0] - a[0], a[1], b[1], a[0]) for a, b in zip(times, times[1:])),
                  reverse=True)[:n_gaps]
    first = times[0][0] if times else None
    last = times[-1][0] if times else None
    span = (last - first) if times else 0.0
    return {
        "file": path, "events": events, "untimed": untimed,
        "first": first, "last": last, "span_s": span,
        "rate_per_s": (len(times) - 1) / span if span > 0 else None,
        "topics": [{"topic": t, "events": n} for t, n in topics[:n_topics]],
        "topic_count": len(topics),
        "largest_gaps": [{"seconds": g, "after_event": a, "before_event": b, "at": t}
                         for g, a, b, t in gaps],
        "sessions": [{"session": s, "first_event_id": e, "started": t}
                     for s, e, t in sessions],
        "problems": problems,
    }


def _print(info: dict) -> None:
    print(f"{info['file']}: {info['events']} events"
          + (f" ({info['untimed']} without a time)" if info["untimed"] else ""))
    print(f"  time span  {_iso(info['first'])} .. {_iso(info['last'])} "
          f"({info['span_s']:.3f} s)")
    if info["rate_per_s"] is not None:
        print(f"  rate       {info['rate_per_s']:.1f} events/s on average")
    print(f"  topics     {info['topic_count']}")
    for t in info["topics"]:
        print(f"    {t['events']:>10}  {t['topic']}")
    if info["largest_gaps"]:
        print("  largest gaps")
        for g in info["largest_gaps"]:
            print(f"    {g['seconds']:>10.3f} s  after event {g['after_event']} "
                  f"at {_iso(g['at'])}")
    if len(info["sessions"]) > 1:
        print(f"  sessions   {len(info['sessions'])} (appended; a replay skips the idle "
              "time between them)")
    if info["problems"]:
        print(f"  DAMAGED: {len(info['problems'])} problem(s), first: {info['problems'][0]}")


def _run(args: argparse.Namespace) -> int:
    from ..tcs.events import TCSDatabaseError
    damaged = []
    for path in args.db:
        try:
            info = summarize(path, args.gaps, args.topics, args.check)
        except TCSDatabaseError as exc:
            raise UsageError(str(exc)) from None
        if args.json:
            print(json.dumps(info))
        elif not args.quiet:
            _print(info)
        if info["problems"]:
            damaged.append(f"{path}: {info['problems'][0]}")
    if damaged:
        raise NegativeAnswer(f"damaged: {'; '.join(damaged)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(_parser(), _run, argv)


if __name__ == "__main__":
    sys.exit(main())
