"""``ctlwire-demo``: exercise every protocol family end to end on loopback.

Each section lives in its own module ``ctlwire.cli._demo_<section>`` with a ``run()``
function that starts real servers on 127.0.0.1, talks to them and prints what happened.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time

SECTIONS = [
    ("katcp", "KATCP codec, device server and clients"),
    ("roc", "ROC: a shared object through the Majordomo broker, logs and a status tree"),
    ("tcs", "TCS: replay of a generated event database, OCD heartbeat"),
    ("dc", "Group coordination: members elect a leader"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ctlwire-demo", description=__doc__)
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help="sections to run (default: all): "
                        + ", ".join(name for name, _ in SECTIONS))
    args = parser.parse_args(argv)
    wanted = args.sections or [name for name, _ in SECTIONS]
    known = {name for name, _ in SECTIONS}
    unknown = [s for s in wanted if s not in known]
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    failed = 0
    for name, title in SECTIONS:
        if name not in wanted:
            continue
        print(f"\n=== {title} ===", flush=True)
        t0 = time.perf_counter()
        try:
            importlib.import_module(f"ctlwire.cli._demo_{name}").run()
        except Exception as exc:  # a broken section must not hide the others
            failed += 1
            print(f"!!! section {name} failed: {type(exc).__name__}: {exc}", flush=True)
        else:
            print(f"--- {name} done in {time.perf_counter() - t0:.2f} s", flush=True)
    print("\nctlwire demo:", "all sections passed" if not failed else f"{failed} section(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
