"""ctlwire.ocd needs only the ZeroMQ transport: it imports and works when the compiled
TCS replay engine is missing (issue 11)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from ctlwire._testing.proc import child_env

# an import hook that makes the replay engine unimportable, as in an unbuilt tree
BLOCK_ENGINE = textwrap.dedent("""
    import sys
    class _NoEngine:
        def find_spec(self, name, path=None, target=None):
            if name == "ctlwire.tcs._replay":
                raise ImportError("blocked by the test: no compiled replay engine")
            return None
    sys.meta_path.insert(0, _NoEngine())
""")


def run_child(body: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_ENGINE + textwrap.dedent(body)],
                          env=child_env(), capture_output=True, text=True, timeout=60)


def test_ocd_imports_and_answers_a_heartbeat_without_the_replay_engine():
    proc = run_child("""
        import sys
        import ctlwire.ocd
        from ctlwire.ocd.heart_beat import HeartBeatHandler, HeartBeatQuery
        from ctlwire.ocd.utils import EventDispatcher
        from ctlwire.tcs.transport import ZMQServer
        assert "ctlwire.tcs._replay" not in sys.modules
        responder = ZMQServer("tcp://127.0.0.1:0")
        enquirer = ZMQServer("tcp://127.0.0.1:0")
        handler = HeartBeatHandler(responder)
        dispatcher = EventDispatcher(enquirer.endpoint, [handler]).start()
        query = HeartBeatQuery(enquirer, responder.endpoint, timeout=20.0)
        answer = query.communicate()
        query.close(); dispatcher.stop(); responder.close(); enquirer.close()
        print("answered" if answer is not None and answer[1]["id"] == query.id_ else "none")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "answered"


def test_the_replay_still_names_the_missing_engine():
    proc = run_child("""
        import ctlwire.tcs
        try:
            ctlwire.tcs.TCSDBReplay
        except ImportError as exc:
            print(exc)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "ctlwire.tcs._replay" in proc.stdout and "build_ext" in proc.stdout
