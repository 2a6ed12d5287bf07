"""The examples of docs/aiokatcp.md, cut out of the page and run as written."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ctlwire._testing.proc import child_env

DOC = Path(__file__).resolve().parents[2] / "docs" / "aiokatcp.md"


def examples() -> dict:
    text = DOC.read_text()
    found = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        m = re.match(r"# example: (\S+)\n", block)
        if m:
            found[m.group(1)] = block
    return found


@pytest.fixture
def server(tmp_path):
    code = examples()
    for name, block in code.items():
        (tmp_path / name).write_text(block)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "server.py"), "0"],
                            stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening "), line
        yield tmp_path, int(line.split()[1])
    finally:
        proc.kill()
        proc.wait(10)


def _run(path, port):
    done = subprocess.run([sys.executable, str(path), str(port)], capture_output=True,
                          text=True, timeout=60, env=child_env())
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_page_has_the_three_examples():
    assert sorted(examples()) == ["client.py", "mirror.py", "server.py"]


def test_client_example_against_server_example(server):
    tmp, port = server
    out = _run(tmp / "client.py", port)
    assert out.splitlines() == ["cooled to 100.0 in 4 steps",
                                "refused: target below absolute zero",
                                "mode is cooling"]


def test_mirror_example_against_server_example(server):
    tmp, port = server
    out = _run(tmp / "mirror.py", port).splitlines()
    # a mirrored discrete sensor gets an enum made on the fly, as in aiokatcp
    assert out == ["cryo.mode discrete.ENUM0 UNKNOWN", "cryo.temperature 250.0 WARN"]
