"""The shared harness of the benchmark suite: alternating rounds, the results table,
its markdown report and its plot.

A benchmark module builds one :class:`Measure` per measure (ctlwire, its peers and the
physical limit, each a callable returning one figure), runs its rounds through
pytest-benchmark (``benchmark.pedantic(measure.round, ...)``) and adds the resulting
:class:`Row` to the session's :class:`Table`, which ``conftest.py`` prints at the end,
writes into the JSON's ``extra_info``, and, on request, to markdown and a PNG.

Imports: the standard library; matplotlib only when a plot is asked for. Child
processes are started with :func:`spawn`, whose environment never adds the checkout's
``src/``: the suite measures the installed ctlwire.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
FAMILIES = ["KATCP codec", "KATCP server", "KATCP client", "KATCP asyncio client",
            "ROC", "TCS", "OCD", "groups"]


# -- processes ------------------------------------------------------------------------
def spawn(argv: list[str], **kw) -> subprocess.Popen:
    """``sys.executable argv...`` with this environment unchanged (no ``PYTHONPATH``
    added), so the child imports the same installed ctlwire as this process."""
    return subprocess.Popen([sys.executable, *argv], **kw)


def spawn_port(argv: list[str], what: str, timeout: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Start a child that prints one line (its port or endpoint) once it serves; return
    the process and that line. ``RuntimeError`` naming ``what`` if it doesn't."""
    import selectors

    proc = spawn(argv, stdout=subprocess.PIPE, text=True)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
    try:
        ready = sel.select(timeout)
    finally:
        sel.close()
    line = proc.stdout.readline().strip() if ready else ""  # type: ignore[union-attr]
    if not line:
        stop(proc)
        raise RuntimeError(f"{what} did not start within {timeout} s")
    return proc, line


def stop(*procs: subprocess.Popen) -> None:
    """Kill and reap child processes (each by its own handle)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait(10)


def cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of process ``pid`` (Linux ``/proc``); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class CpuMeter:
    """CPU microseconds per operation of a serving process over one measurement.

    ``with CpuMeter(pid) as m: n = run()`` then ``m.per_op(n)``; None where the
    platform can't tell.
    """

    __slots__ = ("pid", "c0", "c1")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.c0 = self.c1 = None

    def __enter__(self) -> "CpuMeter":
        self.c0 = cpu_seconds(self.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.c1 = cpu_seconds(self.pid)

    def per_op(self, ops: float) -> float | None:
        if self.c0 is None or self.c1 is None or ops <= 0:
            return None
        return (self.c1 - self.c0) / ops * 1e6


# -- targets --------------------------------------------------------------------------
@dataclass
class Target:
    """One target of a measure.

    ``kind``: ``"limit"`` (ctlwire's fraction of the limit >= value), ``"peer"``
    (ctlwire's speed-up over peer ``against`` >= value), ``"cpu"`` (ctlwire's serving
    CPU per op / the peer's <= value), ``"max"`` (ctlwire's figure <= value, for
    latencies) or ``"min"`` (ctlwire's figure >= value).
    """

    kind: str
    value: float
    against: str = ""

    def text(self, unit: str) -> str:
        if self.kind == "limit":
            return f">= {self.value:g} of limit"
        if self.kind == "peer":
            return f">= {self.value:g}x {self.against}"
        if self.kind == "cpu":
            return f"CPU/op <= {self.value:g} of {self.against}"
        sign = "<=" if self.kind == "max" else ">="
        return f"{sign} {self.value:g} {unit}"


# -- a measure and its row ------------------------------------------------------------
@dataclass
class Row:
    """One line of the table: the medians (or bests) of one measure."""

    family: str
    measure: str
    unit: str
    higher_is_better: bool
    values: dict[str, float]          # implementation -> figure
    peers: list[str]
    limit: str | None
    cpu: dict[str, float] = field(default_factory=dict)  # implementation -> CPU us/op
    targets: list[Target] = field(default_factory=list)
    rounds: int = 0
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)  # every round's figure

    def speedup(self, other: str) -> float | None:
        """ctlwire's speed relative to ``other`` (> 1: ctlwire is faster)."""
        ours, theirs = self.values.get("ctlwire"), self.values.get(other)
        if not ours or not theirs:
            return None
        return ours / theirs if self.higher_is_better else theirs / ours

    def of_limit(self) -> float | None:
        return self.speedup(self.limit) if self.limit else None

    def cpu_ratio(self, other: str) -> float | None:
        ours, theirs = self.cpu.get("ctlwire"), self.cpu.get(other)
        if ours is None or not theirs:
            return None
        return ours / theirs

    def target_met(self, t: Target) -> bool | None:
        if t.kind == "limit":
            got = self.of_limit()
            return None if got is None else got >= t.value
        if t.kind == "peer":
            got = self.speedup(t.against)
            return None if got is None else got >= t.value
        if t.kind == "cpu":
            got = self.cpu_ratio(t.against)
            return None if got is None else got <= t.value
        ours = self.values.get("ctlwire")
        if ours is None:
            return None
        return ours <= t.value if t.kind == "max" else ours >= t.value

    def met(self) -> str:
        if not self.targets:
            return ""
        results = [self.target_met(t) for t in self.targets]
        if None in results:
            return "?"
        return "yes" if all(results) else "NO"

    def as_dict(self) -> dict:
        return {
            "family": self.family, "measure": self.measure, "unit": self.unit,
            "higher_is_better": self.higher_is_better, "values": self.values,
            "peers": self.peers, "limit": self.limit, "cpu_us_per_op": self.cpu,
            "speedup": {p: self.speedup(p) for p in self.peers},
            "of_limit": self.of_limit(),
            "cpu_ratio": {p: self.cpu_ratio(p) for p in self.peers if p in self.cpu},
            "targets": [{"target": t.text(self.unit), "met": self.target_met(t)}
                        for t in self.targets],
            "met": self.met(), "rounds": self.rounds, "note": self.note,
            "samples": self.samples,
        }


class Measure:
    """ctlwire, its peers and the limit of one measure, measured in alternating rounds.

    Parameters
    ----------
    family, name, unit : str
        Where the row goes in the table and what its figures are.
    impls : dict of str to callable
        ``"ctlwire"``, each peer and the limit, in that order; each callable runs one
        measurement and returns the figure, or ``(figure, cpu_us_per_op)``.
    limit : str, optional
        Which of ``impls`` is the physical limit.
    higher_is_better : bool
        False for latencies and durations.
    aggregate : ``"median"`` or ``"best"``
        How rounds combine: the median for anything crossing processes (load from
        elsewhere hits the rounds unevenly), the best for CPU-bound work in this
        process (the least disturbed run is the truest).
    note : str or callable
        A remark for the row (or a function making it once the rounds are done).
    """

    def __init__(self, family: str, name: str, unit: str, impls: dict[str, Callable],
                 limit: str | None = None, higher_is_better: bool = True,
                 targets: list[Target] | None = None, aggregate: str = "median",
                 note: str | Callable[[], str] = "") -> None:
        assert family in FAMILIES, family
        self.family, self.name, self.unit = family, name, unit
        self.impls = impls
        self.limit = limit
        self.higher_is_better = higher_is_better
        self.targets = targets or []
        self.aggregate = aggregate
        self.note = note
        self.samples: dict[str, list[float]] = {k: [] for k in impls}
        self.cpu: dict[str, list[float]] = {k: [] for k in impls}
        self.rounds = 0

    def round(self) -> None:
        """One measurement of every implementation; the order reverses every other
        round (ABBA), so slow drifts in background load hit all of them alike."""
        order = list(self.impls)
        if self.rounds % 2:
            order.reverse()
        for name in order:
            got = self.impls[name]()
            if isinstance(got, tuple):
                got, cpu = got
                if cpu is not None:
                    self.cpu[name].append(cpu)
            self.samples[name].append(got)
        self.rounds += 1

    def _combine(self, values: list[float]) -> float:
        if self.aggregate == "best":
            return max(values) if self.higher_is_better else min(values)
        return statistics.median(values)

    def row(self, family: str | None = None, name: str | None = None,
            impls: dict[str, str] | None = None,
            targets: list[Target] | None = None) -> Row:
        """The row of this measure; or, with ``impls`` (the implementations to keep,
        each mapped to its name in the row), a row of some of them: several rows can
        share the same rounds (e.g. a blocking and an asyncio client beside the same
        peers)."""
        keep = impls or {k: k for k in self.impls}
        values = {keep[k]: self._combine(v) for k, v in self.samples.items()
                  if v and k in keep}
        cpu = {keep[k]: statistics.median(v) for k, v in self.cpu.items()
               if v and k in keep}
        limit = keep.get(self.limit) if self.limit else None
        peers = [keep[k] for k in self.impls if k in keep and keep[k] not in ("ctlwire", limit)]
        note = self.note() if callable(self.note) else self.note
        samples = {keep[k]: list(v) for k, v in self.samples.items() if v and k in keep}
        return Row(family or self.family, name or self.name, self.unit,
                   self.higher_is_better, values, peers, limit, cpu,
                   self.targets if targets is None else targets, self.rounds, note,
                   samples)


# -- the table ------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _ratio(value: float | None, suffix: str = "x") -> str:
    return "-" if value is None else f"{value:.2f}{suffix}"


class Table:
    """Every row of the session, in family order."""

    HEADER = ["family", "measure", "unit", "ctlwire", "peers", "limit",
              "ctlwire / peer", "of limit", "CPU us/op (serving)", "target", "met"]

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def sorted_rows(self) -> list[Row]:
        return sorted(self.rows, key=lambda r: FAMILIES.index(r.family))

    def cells(self, row: Row) -> list[str]:
        peers = "; ".join(f"{p} {_fmt(row.values.get(p))}" for p in row.peers) or "-"
        limit = f"{row.limit} {_fmt(row.values.get(row.limit))}" if row.limit else "-"
        ratios = "; ".join(f"{_ratio(row.speedup(p))} {p}" for p in row.peers) or "-"
        cpu = "; ".join(f"{k} {_fmt(v)}" for k, v in row.cpu.items()) or "-"
        targets = "; ".join(t.text(row.unit) for t in row.targets) or "-"
        return [row.family, row.measure, row.unit, _fmt(row.values.get("ctlwire")), peers,
                limit, ratios, _ratio(row.of_limit(), ""), cpu, targets, row.met()]

    def text(self) -> str:
        """A plain-text table for the terminal (columns padded, one row per line)."""
        grid = [self.HEADER] + [self.cells(r) for r in self.sorted_rows()]
        widths = [max(len(r[i]) for r in grid) for i in range(len(self.HEADER))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in grid]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines + self.notes())

    def notes(self) -> list[str]:
        return [f"* {r.family}, {r.measure}: {r.note}" for r in self.sorted_rows() if r.note]

    def markdown(self) -> str:
        out = ["| " + " | ".join(self.HEADER) + " |",
               "|" + "---|" * len(self.HEADER)]
        for r in self.sorted_rows():
            cells = [c.replace("|", "\\|") for c in self.cells(r)]
            out.append("| " + " | ".join(cells) + " |")
        notes = self.notes()
        return "\n".join(out + ([""] + notes if notes else [])) + "\n"

    def as_dicts(self) -> list[dict]:
        return [r.as_dict() for r in self.sorted_rows()]

    def plot(self, path: str) -> None:
        """Horizontal bars per measure: ctlwire, peers and limit as a fraction of the
        limit's speed (or of the fastest where a measure has no limit)."""
        try:
            import matplotlib
        except ImportError as exc:
            raise RuntimeError("--plot needs matplotlib (pip install matplotlib, or "
                               "pip install '.[bench]')") from exc
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.sorted_rows()
        labels, bars = [], []
        for r in rows:
            speeds = {k: (v if r.higher_is_better else 1.0 / v)
                      for k, v in r.values.items() if v}
            ref = speeds.get(r.limit) if r.limit else max(speeds.values(), default=1.0)
            for name in ["ctlwire", *r.peers, *([r.limit] if r.limit else [])]:
                if name in speeds:
                    labels.append(f"{r.family}: {r.measure} - {name}")
                    bars.append((speeds[name] / ref, name))
        fig, ax = plt.subplots(figsize=(11, max(3, 0.28 * len(bars))))
        colours = [("tab:blue" if n == "ctlwire" else
                    "tab:grey" if any(n == r.limit for r in rows) else "tab:orange")
                   for _, n in bars]
        ax.barh(range(len(bars)), [b for b, _ in bars], color=colours)
        ax.set_yticks(range(len(bars)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("speed as a fraction of the physical limit "
                      "(of the fastest where there is none)")
        ax.set_title("ctlwire (blue), peers (orange) and the limit (grey), one run")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
