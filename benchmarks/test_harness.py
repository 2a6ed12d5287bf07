"""The harness's arithmetic: rounds alternate, ratios point the right way for rates and
latencies, targets are judged as stated, and the table holds every implementation.
Plain unit tests (no measurement), run with the suite so its figures can be trusted.

Imports: the harness.
"""
from __future__ import annotations

from _harness import Measure, Table, Target


def _measure(values: dict[str, list[float]], **kw) -> Measure:
    calls: list[str] = []
    iters = {k: iter(v) for k, v in values.items()}

    def impl(name):
        def run():
            calls.append(name)
            return next(iters[name])
        return run

    m = Measure("ROC", "calls", "calls/s", {k: impl(k) for k in values}, **kw)
    m.calls = calls  # type: ignore[attr-defined]
    return m


def test_rounds_alternate_order_abba():
    m = _measure({"ctlwire": [1, 1, 1], "peer": [1, 1, 1], "lim": [1, 1, 1]}, limit="lim")
    for _ in range(3):
        m.round()
    assert m.calls == ["ctlwire", "peer", "lim", "lim", "peer", "ctlwire",  # type: ignore[attr-defined]
                       "ctlwire", "peer", "lim"]


def test_rates_take_the_median_and_ratios_say_how_much_faster_ctlwire_is():
    m = _measure({"ctlwire": [90, 100, 500], "peer": [50, 40, 60], "lim": [200, 100, 110]},
                 limit="lim", targets=[Target("peer", 2.0, "peer"), Target("limit", 0.9)])
    for _ in range(3):
        m.round()
    row = m.row()
    assert row.values == {"ctlwire": 100, "peer": 50, "lim": 110}
    assert row.peers == ["peer"] and row.limit == "lim"
    assert row.speedup("peer") == 2.0
    assert abs(row.of_limit() - 100 / 110) < 1e-12
    assert [row.target_met(t) for t in row.targets] == [True, True]
    assert row.met() == "yes"
    # every round's figure goes along, in the order measured
    assert row.as_dict()["samples"] == {"ctlwire": [90, 100, 500], "peer": [50, 40, 60],
                                        "lim": [200, 100, 110]}


def test_latencies_invert_the_ratio_and_best_means_lowest():
    m = _measure({"ctlwire": [300, 200], "base": [400, 500], "lim": [100, 150]},
                 limit="lim", higher_is_better=False, aggregate="best",
                 targets=[Target("max", 150.0)])
    m.round()
    m.round()
    row = m.row()
    assert row.values == {"ctlwire": 200, "base": 400, "lim": 100}
    assert row.speedup("base") == 2.0
    assert row.of_limit() == 0.5
    assert row.met() == "NO"


def test_cpu_target_compares_serving_cpu_per_op():
    m = Measure("KATCP server", "rt", "req/s",
                {"ctlwire": lambda: (10.0, 20.0), "aiokatcp": lambda: (5.0, 60.0)},
                targets=[Target("cpu", 0.6, "aiokatcp")])
    m.round()
    row = m.row()
    assert abs(row.cpu_ratio("aiokatcp") - 1 / 3) < 1e-12
    assert row.met() == "yes"


def test_a_target_that_cannot_be_judged_is_shown_as_unknown():
    m = Measure("KATCP server", "rt", "req/s",
                {"ctlwire": lambda: (10.0, None), "aiokatcp": lambda: (5.0, None)},
                targets=[Target("cpu", 0.6, "aiokatcp")])
    m.round()
    assert m.row().met() == "?"


def test_one_measure_can_make_several_rows_of_some_implementations():
    m = _measure({"ctlwire": [3], "ctlwire-aio": [2], "peer": [1], "raw": [4]}, limit="raw")
    m.round()
    row = m.row(family="KATCP asyncio client", name="aio",
                impls={"ctlwire-aio": "ctlwire", "peer": "peer", "raw": "raw socket"})
    assert row.family == "KATCP asyncio client"
    assert row.values == {"ctlwire": 2, "peer": 1, "raw socket": 4}
    assert row.peers == ["peer"] and row.limit == "raw socket"


def test_table_lists_every_implementation_in_family_order():
    table = Table()
    for family in ("groups", "KATCP codec"):
        m = Measure(family, f"{family} m", "x/s", {"ctlwire": lambda: 2.0,
                                                  "peer": lambda: 1.0,
                                                  "limit": lambda: 4.0}, limit="limit")
        m.round()
        table.add(m.row())
    md = table.markdown().splitlines()
    assert md[2].startswith("| KATCP codec |") and md[3].startswith("| groups |")
    assert "peer 1" in md[2] and "limit 4" in md[2] and "2.00x peer" in md[2]
    assert "0.50" in md[2]
    text = table.text()
    assert text.index("KATCP codec") < text.index("groups")
    assert [d["family"] for d in table.as_dicts()] == ["KATCP codec", "groups"]
