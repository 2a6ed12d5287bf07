"""Build the compiled hot paths of ctlwire.

Every ``.pyx`` file under ``src/ctlwire`` becomes an extension module of the same
dotted name, so a protocol family adds its hot path by adding a file, not by editing
this script.
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


def find_extensions():
    compile_args = [] if os.name == "nt" else ["-O3"]
    exts = []
    for pyx in sorted(SRC.rglob("*.pyx")):
        rel = pyx.relative_to(SRC).with_suffix("")
        name = ".".join(rel.parts)
        exts.append(
            Extension(
                name,
                [str(pyx.relative_to(Path(__file__).parent))],
                extra_compile_args=compile_args,
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
