"""``ctlwire-demo``: exercise every protocol family end to end on loopback.

Each section lives in its own module ``ctlwire.cli._demo_<section>`` with a ``run()``
function that starts real servers on 127.0.0.1, talks to them and prints what happened.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time

from ._common import CommandParser, UsageError, run_command

SECTIONS = [
    ("katcp", "KATCP codec, device server and clients"),
    ("roc", "ROC: a shared object through the Majordomo broker, logs and a status tree"),
    ("tcs", "TCS: replay of a generated event database, OCD heartbeat"),
    ("dc", "Group coordination: members elect a leader"),
]


def _parser() -> CommandParser:
    parser = CommandParser("ctlwire-demo", description=__doc__ + """
Exit status (docs/cli.md): 0 every section passed; 1 a section failed; 2 bad arguments.""")
    parser.add_argument("sections", nargs="*", metavar="SECTION",
                        help="sections to run (default: all): "
                        + ", ".join(name for name, _ in SECTIONS))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``ctlwire-demo``; returns the exit status (see docs/cli.md)."""
    return run_command(_parser(), _run, argv)


def _run(args: argparse.Namespace) -> int:
    wanted = args.sections or [name for name, _ in SECTIONS]
    known = {name for name, _ in SECTIONS}
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise UsageError(f"unknown section(s): {', '.join(unknown)} "
                         f"(known: {', '.join(name for name, _ in SECTIONS)})")
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
