"""Build the compiled hot paths of ctlwire.

Every ``.pyx`` file under ``src/ctlwire`` becomes an extension module of the same
dotted name, so a protocol family adds its hot path by adding a file, not by editing
this script. Extensions that read sqlite databases (:data:`SQLITE_USERS`) declare
the sqlite3 functions they call themselves and link the runtime library, so building
needs no sqlite3 headers or development package.
"""
import os
import sys
from pathlib import Path

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - build requirement declared in pyproject
    sys.exit("Building ctlwire needs Cython >= 3.0 (pip install cython)")

SRC = Path(__file__).parent / "src"
# Extensions that call the sqlite3 C API (declared in ctlwire/tcs/_sqlite3.pxd, no headers).
SQLITE_USERS = {"ctlwire.tcs._replay", "ctlwire.tcs._rawscan", "ctlwire.tcs._record"}


def sqlite_link_args():
    """How to link the sqlite3 runtime library: on Linux by its soname
    (``libsqlite3.so.0``, present wherever Python's own sqlite3 module works, with or
    without the -dev package that adds ``libsqlite3.so``); elsewhere ``-lsqlite3``
    (macOS ships it in the SDK)."""
    if not sys.platform.startswith("linux"):
        return {"libraries": ["sqlite3"]}
    import ctypes

    try:  # the dynamic loader's own search, as at import time
        ctypes.CDLL("libsqlite3.so.0")
    except OSError:
        sys.exit("Building ctlwire needs the sqlite3 shared library (libsqlite3.so.0), "
                 "which was not found. Install it: Debian/Ubuntu `apt-get install "
                 "libsqlite3-0`, Fedora/RHEL `dnf install sqlite-libs`, Alpine `apk add "
                 "sqlite-libs` (macOS has it already).")
    return {"extra_link_args": ["-l:libsqlite3.so.0"]}


def find_extensions():
    compile_args = [] if os.name == "nt" else ["-O3"]
    exts = []
    for pyx in sorted(SRC.rglob("*.pyx")):
        rel = pyx.relative_to(SRC).with_suffix("")
        name = ".".join(rel.parts)
        link = sqlite_link_args() if name in SQLITE_USERS else {}
        exts.append(
            Extension(
                name,
                [str(pyx.relative_to(Path(__file__).parent))],
                extra_compile_args=compile_args,
                **link,
            )
        )
    return exts


setup(
    ext_modules=cythonize(
        find_extensions(),
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    ),
)
