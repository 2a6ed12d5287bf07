"""pytest configuration of the benchmark suite (``pytest benchmarks/``).

Options: ``--quick`` (a smoke run of a few minutes: fewer rounds, shorter
measurements, smaller data), ``--report FILE.md`` (the results table as markdown),
``--plot FILE.png`` (the table drawn). pytest-benchmark's own options
(``--benchmark-json``, ``--benchmark-autosave``, ``--benchmark-compare``...) work as
usual; the table also goes into the JSON, under ``extra_info`` of each benchmark (its
row) and of the whole run (``extra_info.ctlwire_table``).

Imports: pytest, the harness beside it. The directory of this file is put on
``sys.path`` so the benchmark modules can import the scripts and the harness; the
checkout's ``src/`` never is: the suite measures the installed ctlwire.
"""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from _harness import FAMILIES, Measure, Table  # noqa: E402

_TABLE = Table()


class Suite:
    """What a benchmark module needs from the session: the mode and the table."""

    __slots__ = ("quick",)

    def __init__(self, quick: bool) -> None:
        self.quick = quick

    def pick(self, quick, full):
        """``quick`` in a ``--quick`` run, else ``full``."""
        return quick if self.quick else full

    def run(self, benchmark, measure: Measure, rounds: int,
            rows: list[dict] | None = None) -> None:
        """Run ``rounds`` alternating rounds of ``measure`` through pytest-benchmark and
        put its row into the table and into the benchmark's ``extra_info``; with
        ``rows``, the rows ``measure.row(**kw)`` for each ``kw`` instead."""
        benchmark.pedantic(measure.round, rounds=rounds, iterations=1, warmup_rounds=0)
        if measure.rounds == 0:  # --benchmark-disable and friends still run it once
            measure.round()
        made = [measure.row(**kw) for kw in rows] if rows else [measure.row()]
        for row in made:
            _TABLE.add(row)
        benchmark.extra_info.update(made[0].as_dict() if len(made) == 1 else
                                    {"rows": [r.as_dict() for r in made]})


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ctlwire benchmarks")
    group.addoption("--quick", action="store_true",
                    help="smoke run: fewer and shorter rounds, smaller data")
    group.addoption("--report", metavar="FILE.md",
                    help="write the results table to FILE.md as markdown")
    group.addoption("--plot", metavar="FILE.png",
                    help="draw ctlwire, peers and limit per measure into FILE.png "
                         "(needs matplotlib)")


HAVE_BENCHMARK = importlib.util.find_spec("pytest_benchmark") is not None


def pytest_configure(config: pytest.Config) -> None:
    if not HAVE_BENCHMARK:
        raise pytest.UsageError("the benchmark suite needs pytest-benchmark and the "
                                "peers: pip install '.[bench]'")
    plot = config.getoption("--plot", None)
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise pytest.UsageError("--plot needs matplotlib: pip install matplotlib")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A full measure alternates several processes for minutes: the test suite's
    # per-test timeout (pyproject) is meant for tests, not for these.
    for item in items:
        item.add_marker(pytest.mark.timeout(1200))


@pytest.fixture(scope="session")
def suite(request: pytest.FixtureRequest) -> Suite:
    return Suite(request.config.getoption("--quick"))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # A benchmark skipped (or failed) inside its rounds leaves pytest-benchmark a
    # benchmark with no data, on which its JSON output raises at the very end of
    # the run: drop those so the rest of a long run is still saved.
    bs = getattr(session.config, "_benchmarksession", None)
    if bs is not None and getattr(bs, "benchmarks", None):
        bs.benchmarks[:] = [b for b in bs.benchmarks if getattr(b.stats, "data", None)]


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _TABLE.rows:
        return
    tr = terminalreporter
    mode = "quick (smoke) run" if config.getoption("--quick") else "full run"
    tr.write_sep("=", f"ctlwire against its peers and the physical limit ({mode})")
    tr.write_line(_TABLE.text())
    tr.write_line("")
    tr.write_line("ctlwire / peer: ctlwire's speed over the peer's (>1: faster; for "
                  "latencies the inverse ratio). of limit: ctlwire's speed as a fraction "
                  "of the limit's.")
    tr.write_line(f"Figures are medians of alternating rounds in one run on a machine "
                  f"with {os.cpu_count()} CPUs; other load on it moves them.")
    missing = [f for f in FAMILIES if f not in {r.family for r in _TABLE.rows}]
    if missing:
        tr.write_line("families not measured in this run: " + ", ".join(missing))
    report = config.getoption("--report")
    if report:
        with open(report, "w") as f:
            f.write(_TABLE.markdown())
        tr.write_line(f"table written to {report}")
    plot = config.getoption("--plot")
    if plot:
        _TABLE.plot(plot)
        tr.write_line(f"plot written to {plot}")


if HAVE_BENCHMARK:  # a hook of pytest-benchmark: pytest rejects it without the plugin
    def pytest_benchmark_update_json(config, benchmarks, output_json) -> None:
        output_json.setdefault("extra_info", {})["ctlwire_table"] = _TABLE.as_dicts()
