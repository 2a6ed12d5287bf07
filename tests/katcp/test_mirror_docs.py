"""The examples of docs/katcp-client.md (mirrors, resource clients, test utilities) run."""
from __future__ import annotations

import os
import re

import pytest

pytest_plugins = ["pytester"]

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "katcp-client.md")


def examples() -> dict[str, str]:
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    found = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        first = block.split("\n", 1)[0]
        m = re.match(r"# example: ([\w-]+)", first)
        if m:
            found[m.group(1)] = block
    return found


def test_the_doc_has_the_examples():
    assert {"inspecting-client", "resource-client", "pytest-plugin",
            "record-replay"} <= set(examples())


@pytest.mark.parametrize("name", ["inspecting-client", "resource-client", "record-replay"])
def test_example_runs(name, capsys):
    exec(compile(examples()[name], f"{DOC}:{name}", "exec"), {"__name__": "__doc_example__"})
    assert capsys.readouterr().out  # each example prints what it shows


def test_pytest_plugin_example_passes(pytester):
    pytester.makepyfile(test_thermostat=examples()["pytest-plugin"])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)
