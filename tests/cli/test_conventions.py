"""Every installed command against a table of bad inputs (docs/cli.md).

Each row runs the real console script in a child process and checks what a script or a
supervisor relies on: the exit status, exactly one line on stderr prefixed by the command's
name, no traceback, and an answer within a few seconds.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ctlwire

BIN = Path(sys.executable).parent
#: every command a wheel installs; each has rows below
COMMANDS = ["ctlwire-demo", "ctlwire-katcp", "rocbroker", "roclogdump", "tcs-replay",
            "tcs-record", "tcs-info", "ocd-heartbeat"]
LIMIT = 20.0  # seconds; a bad input is answered in a few on a loaded machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def held_port():
    """A loopback TCP port that is bound and listening for the whole module."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "not-a-config.cfg").write_text("this is not an ini file\n[broken\n")
    (root / "adir").mkdir()
    (root / "notes.txt").write_text("not a database\n")
    return root


def run(command: str, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    exe = BIN / command
    assert exe.exists(), f"{command} is not installed next to {sys.executable}"
    full_env = dict(os.environ)
    full_env.pop("CTLWIRE_ROC_BROKER", None)
    full_env.update(env or {})
    t0 = time.monotonic()
    result = subprocess.run([str(exe), *args], capture_output=True, text=True,
                            timeout=LIMIT * 2, env=full_env, stdin=subprocess.DEVNULL)
    return result, time.monotonic() - t0


def assert_one_line_error(command: str, result: subprocess.CompletedProcess, status: int,
                          elapsed: float, says: str = "") -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{command}: "), lines[0]
    assert says in lines[0], lines[0]
    assert elapsed < LIMIT


@pytest.mark.parametrize("command", COMMANDS)
def test_version_prints_ctlwire_version(command):
    result, _ = run(command, "--version")
    assert result.returncode == 0, result.stderr
    assert ctlwire.__version__ in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option_is_one_line_and_exit_2(command):
    result, elapsed = run(command, "--no-such-option")
    assert_one_line_error(command, result, 2, elapsed, "(see --help)")


# (command, args with {free}/{held}/{dir}/... placeholders, expected status, text in the line)
BAD_INPUTS = [
    ("ctlwire-demo", ["nope"], 2, "nope"),
    ("ctlwire-katcp", ["-t", "inf", "127.0.0.1:{free}", "watchdog"], 2, "inf"),
    ("ctlwire-katcp", ["-t", "-1", "127.0.0.1:{free}", "watchdog"], 2, "-1"),
    ("ctlwire-katcp", ["-t", "nan", "127.0.0.1:{free}", "watchdog"], 2, "nan"),
    ("ctlwire-katcp", ["127.0.0.1:0", "watchdog"], 2, "'0'"),
    ("ctlwire-katcp", ["127.0.0.1:70000", "watchdog"], 2, "70000"),
    ("ctlwire-katcp", ["tcp://127.0.0.1:{free}", "watchdog"], 2, "tcp://"),
    ("ctlwire-katcp", ["127.0.0.1:{free}"], 2, "request"),
    ("ctlwire-katcp", ["-t", "2", "127.0.0.1:{free}", "watchdog"], 3, "refused"),
    ("ocd-heartbeat", ["--bind", "127.0.0.1:{free}", "--listen", "tcp://127.0.0.1:{free}"],
     2, "scheme"),
    ("ocd-heartbeat", ["--bind", "tcp://127.0.0.1:0", "--listen", "127.0.0.1:{free}"],
     2, "scheme"),
    ("ocd-heartbeat", ["--bind", "tcp://127.0.0.1:0", "--listen", "tcp://127.0.0.1:{free}",
                       "--timeout", "-1"], 2, "-1"),
    ("ocd-heartbeat", ["--bind", "tcp://127.0.0.1:0", "--listen", "tcp://127.0.0.1:{free}",
                       "--timeout", "nan"], 2, "nan"),
    ("ocd-heartbeat", ["--config", "{root}/missing.cfg", "--server-name", "a",
                       "--listener-name", "b"], 2, "missing.cfg"),
    ("ocd-heartbeat", ["--config", "{root}/adir", "--server-name", "a",
                       "--listener-name", "b"], 2, "directory"),
    ("ocd-heartbeat", ["--config", "{root}/not-a-config.cfg", "--server-name", "a",
                       "--listener-name", "b"], 2, "not-a-config.cfg"),
    ("ocd-heartbeat", ["--bind", "tcp://127.0.0.1:{held}", "--listen",
                       "tcp://127.0.0.1:{free}", "--timeout", "0.5"], 3, "{held}"),
    ("ocd-heartbeat", ["--respond", "--bind", "tcp://127.0.0.1:{held}", "--listen",
                       "tcp://127.0.0.1:{free}"], 3, "{held}"),
    ("ocd-heartbeat", ["--listen", "tcp://127.0.0.1:{free}"], 2, "--bind"),
    ("rocbroker", ["--base-port", "0"], 2, "'0'"),
    ("rocbroker", ["--base-port", "65535"], 2, "65535"),
    ("rocbroker", ["--base-port", "x"], 2, "'x'"),
    ("rocbroker", ["--heartbeat", "0"], 2, "'0'"),
    ("rocbroker", ["--heartbeat", "inf"], 2, "inf"),
    ("rocbroker", ["--liveness", "-2"], 2, "-2"),
    ("rocbroker", ["--base-port", "{held}"], 3, "{held}"),
    ("rocbroker", ["--standby-for", "nohostport"], 2, "nohostport"),
    ("roclogdump", ["--base-port", "{free}", "-o", "{root}/adir", "--duration", "1"],
     2, "directory"),
    ("roclogdump", ["--base-port", "{free}", "-o", "{root}/nodir/x.log", "--duration", "1"],
     2, "nodir"),
    ("roclogdump", ["--base-port", "{free}", "-o", "{root}/r.log", "--duration", "-1"],
     2, "-1"),
    ("roclogdump", ["--address", "127.0.0.1", "--base-port", "{free}", "-o", "{root}/r.log",
                    "--duration", "1"], 3, "nothing"),
    ("tcs-replay", ["--mock-sleep", "-1"], 2, "-1"),
    ("tcs-replay", ["--speedup", "nan"], 2, "nan"),
    ("tcs-replay", ["--speedup", "0"], 2, "'0'"),
    ("tcs-replay", ["--wait-subscriber", "-5"], 2, "-5"),
    ("tcs-replay", ["--spin", "-1"], 2, "-1"),
    ("tcs-replay", ["--url", "127.0.0.1:{free}"], 2, "scheme"),
    ("tcs-replay", ["{root}/missing.sqlite"], 2, "missing.sqlite"),
    ("tcs-replay", ["{root}/adir"], 2, "directory"),
    ("tcs-replay", ["{root}/notes.txt"], 2, "notes.txt"),
    ("tcs-replay", ["--url", "tcp://127.0.0.1:{held}", "--count", "1"], 3, "{held}"),
    ("tcs-record", ["tcp://127.0.0.1:{free}", "-o", "/nonexistent/x.sqlite"], 2, "nonexistent"),
    ("tcs-record", ["127.0.0.1:{free}", "-o", "{root}/x.sqlite"], 2, "scheme"),
    ("tcs-record", ["tcp://127.0.0.1:{free}", "-o", "{root}/adir"], 2, "directory"),
    ("tcs-record", ["tcp://127.0.0.1:{free}", "-o", "{root}/notes.txt", "--duration", "1"],
     2, "notes.txt"),
    ("tcs-record", ["tcp://127.0.0.1:{free}", "-o", "{root}/y.sqlite", "--duration", "nan"],
     2, "nan"),
    ("tcs-record", ["tcp://127.0.0.1:{free}", "-o", "{root}/z.sqlite", "--duration", "1"],
     3, "nothing"),
    ("tcs-info", ["{root}/missing.sqlite"], 2, "missing.sqlite"),
    ("tcs-info", ["{root}/adir"], 2, "directory"),
    ("tcs-info", ["{root}/notes.txt"], 2, "notes.txt"),
]


@pytest.mark.parametrize("command,args,status,says", BAD_INPUTS,
                         ids=[f"{c}-{i}" for i, (c, *_rest) in enumerate(BAD_INPUTS)])
def test_bad_input(command, args, status, says, held_port, files):
    values = {"free": _free_port(), "held": held_port, "root": files, "dir": files / "adir"}
    result, elapsed = run(command, *[a.format(**values) for a in args])
    assert_one_line_error(command, result, status, elapsed, says.format(**values))


def test_a_bad_broker_variable_is_one_line_not_a_traceback():
    result, elapsed = run("roclogdump", "-o", "x.log", "--duration", "1",
                          env={"CTLWIRE_ROC_BROKER": "foo:bar"})
    assert_one_line_error("roclogdump", result, 2, elapsed, "foo:bar")


def test_help_works_whatever_the_environment():
    result, _ = run("roclogdump", "--help", env={"CTLWIRE_ROC_BROKER": "foo:bar"})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_no_heartbeat_is_exit_1_not_an_error():
    result, elapsed = run("ocd-heartbeat", "--bind", "tcp://127.0.0.1:0", "--listen",
                          f"tcp://127.0.0.1:{_free_port()}", "--timeout", "0.3")
    assert result.returncode == 1, result.stderr
    assert "no heartbeat" in result.stdout
    assert "Traceback" not in result.stderr
    assert elapsed < LIMIT


def test_verbose_shows_the_traceback_of_an_error(held_port):
    result, _ = run("ocd-heartbeat", "-v", "--bind", f"tcp://127.0.0.1:{held_port}",
                    "--listen", f"tcp://127.0.0.1:{_free_port()}", "--timeout", "0.3")
    assert result.returncode == 3
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("ocd-heartbeat: ")


def test_a_command_run_in_process_leaves_logging_as_it_found_it():
    import logging

    from ctlwire.cli.katcpcmd import main

    root = logging.getLogger()
    before = (root.level, list(root.handlers), logging.getLogger("ctlwire.katcp").level)
    assert main(["-t", "1", f"127.0.0.1:{_free_port()}", "watchdog"]) == 3
    after = (root.level, list(root.handlers), logging.getLogger("ctlwire.katcp").level)
    assert after == before
