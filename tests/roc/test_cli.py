"""``rocbroker`` and ``roclogdump`` follow the command conventions (docs/cli.md)."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import zmq

import ctlwire
from ctlwire._testing.proc import child_env, free_base_port

LIMIT = 20.0


def _run(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", f"ctlwire.cli.{module}", *args],
                         capture_output=True, text=True, timeout=LIMIT * 2,
                         env=child_env(**{"CTLWIRE_ROC_BROKER": None, **(env or {})}),
                         stdin=subprocess.DEVNULL)
    assert time.monotonic() - t0 < LIMIT
    return out


def _one_line(out: subprocess.CompletedProcess, prog: str, status: int, says: str) -> None:
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == status, (out.returncode, out.stderr)
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"{prog}: ") and says in lines[0], lines[0]


@pytest.fixture(scope="module")
def held_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "adir").mkdir()
    (tmp_path / "public.key").write_text("not a key\n")
    return tmp_path


BAD = [
    ("rocbroker", ["--base-port", "0"], 2, "'0'"),
    ("rocbroker", ["--base-port", "65535"], 2, "65535"),
    ("rocbroker", ["--base-port", "x"], 2, "'x'"),
    ("rocbroker", ["--heartbeat", "0"], 2, "'0'"),
    ("rocbroker", ["--heartbeat", "nan"], 2, "nan"),
    ("rocbroker", ["--liveness", "-1"], 2, "-1"),
    ("rocbroker", ["--base-port", "{held}"], 3, "{held}"),
    ("rocbroker", ["--standby-for", "tcp://127.0.0.1:5555"], 2, "tcp://"),
    ("rocbroker", ["--standby-for", "127.0.0.1:5555", "--no-peer"], 2, "exclude"),
    ("rocbroker", ["--peer-interval", "1", "--peer-timeout", "0.5"], 2, "--peer-timeout"),
    ("rocbroker", ["--curve-secret", "{root}/missing", "--allow-keys", "{root}"], 2,
     "missing"),
    ("rocbroker", ["--curve-secret", "{root}/public.key"], 2, "--allow-keys"),
    ("rocbroker", ["--list", "127.0.0.1:{free}", "--timeout", "0.5"], 3, "no answer"),
    ("roclogdump", ["--output", "{root}/adir"], 2, "directory"),
    ("roclogdump", ["--output", "{root}/no/such/dir/x.log"], 2, "x.log"),
    ("roclogdump", ["--output", "{root}/x.log", "--duration", "0"], 2, "'0'"),
    ("roclogdump", ["--output", "{root}/x.log", "--base-port", "{free}", "--duration",
                    "1"], 3, "nothing to connect to"),
    ("roclogdump", ["--output", "{root}/x.log", "--duration", "0.5"], 2, "foo:bar",
     ),
]


@pytest.mark.parametrize("prog,args,status,says", BAD,
                         ids=[f"{p}-{i}" for i, (p, *_r) in enumerate(BAD)])
def test_bad_input_is_one_line_with_the_right_status(prog, args, status, says, held_port,
                                                     files):
    values = {"held": held_port, "root": files, "free": free_base_port()}
    env = {"CTLWIRE_ROC_BROKER": "foo:bar"} if says == "foo:bar" else None
    out = _run(prog, *[a.format(**values) for a in args], env=env)
    _one_line(out, prog, status, says.format(**values))


@pytest.mark.parametrize("prog", ["rocbroker", "roclogdump"])
def test_version_and_help_ignore_a_bad_environment(prog):
    out = _run(prog, "--version", env={"CTLWIRE_ROC_BROKER": "foo:bar"})
    assert out.returncode == 0 and ctlwire.__version__ in out.stdout
    out = _run(prog, "--help", env={"CTLWIRE_ROC_BROKER": "foo:bar"})
    assert out.returncode == 0 and "usage:" in out.stdout and not out.stderr


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ctlwire.cli.rocbroker", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(CTLWIRE_ROC_BROKER=None))


def test_rocbroker_logs_with_v_and_exits_0_on_sigterm():
    base = free_base_port()
    p = _start("--base-port", str(base), "-v")
    try:
        assert "rocbroker: MDP" in p.stdout.readline()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=LIMIT)
    finally:
        p.kill()
    assert p.returncode == 0, err
    assert f"rocbroker INFO ctlwire.roc.broker: bound MDP tcp://127.0.0.1:{base}" in err
    assert "stopped" in out


def test_roclogdump_counts_malformed_messages(tmp_path):
    from ctlwire.roc import Broker, Endpoints
    ep = Endpoints("127.0.0.1", free_base_port())
    broker = Broker(ep).start()
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(ep.generalXSUB)
    log = tmp_path / "roc.log"
    p = subprocess.Popen([sys.executable, "-m", "ctlwire.cli.roclogdump", "--base-port",
                          str(ep.brokerBasePort), "--address", "127.0.0.1", "-o", str(log),
                          "--count", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=child_env(CTLWIRE_ROC_BROKER=None))
    try:
        assert "roclogdump:" in p.stdout.readline()
        deadline = time.monotonic() + LIMIT
        while p.poll() is None and time.monotonic() < deadline:
            # until it has joined: a malformed record, then a good one
            pub.send_multipart([b"ROCLnode", b"{not json"])
            pub.send_multipart([b"ROCLnode", b'{"message": "hello"}'])
            time.sleep(0.05)
        out, err = p.communicate(timeout=LIMIT)
    finally:
        p.kill()
        pub.close()
        broker.stop()
    assert p.returncode == 0, err
    bad = int(re.search(r"(\d+) malformed messages dropped", out).group(1))
    assert "1 records written, 0 lost" in out and bad >= 1
    assert '"message":"hello"' in log.read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_roclogdump_stops_cleanly_on_a_signal(tmp_path, sig):
    from ctlwire.roc import Broker, Endpoints
    ep = Endpoints("127.0.0.1", free_base_port())
    broker = Broker(ep).start()
    try:
        p = subprocess.Popen([sys.executable, "-m", "ctlwire.cli.roclogdump", "--address",
                              "127.0.0.1", "--base-port", str(ep.brokerBasePort), "-v",
                              "-o", str(tmp_path / "x.log")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env=child_env(CTLWIRE_ROC_BROKER=None))
        try:
            assert "roclogdump:" in p.stdout.readline()
            # a run that never reached a relay exits 3: wait until it has
            while "connected to the relay" not in p.stderr.readline():
                assert p.poll() is None
            p.send_signal(sig)
            out, err = p.communicate(timeout=LIMIT)
        finally:
            p.kill()
    finally:
        broker.stop()
    assert p.returncode == 0, err
    assert "0 records written, 0 lost on the way" in out and " 0 malformed" in out


def test_a_broker_whose_standby_port_is_taken_runs_alone_and_says_so():
    base = free_base_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", base + 3))
        s.listen()
        p = _start("--base-port", str(base))
        try:
            assert "rocbroker: MDP" in p.stdout.readline()
            warning = p.stderr.readline()
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=LIMIT)
        finally:
            p.kill()
    assert "cannot listen for a standby" in warning and str(base + 3) in warning
    assert p.returncode == 0, err
