"""Loading of compiled extensions with an error that says how to fix a missing one.

Layering: imports nothing from ctlwire (every family's loader of its compiled engine).
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["load_extension"]

_BUILD_HINT = ("Install a prebuilt wheel (pip install ctlwire) or build from a source "
               "checkout with `pip install .` (needs Cython and a C compiler), or "
               "`python setup.py build_ext --inplace` for development.")


def load_extension(name: str) -> ModuleType:
    """Import the compiled module ``name`` or explain how to build it.

    Parameters
    ----------
    name : str
        Dotted module name, e.g. ``"ctlwire.katcp._codec"``.

    Raises
    ------
    ImportError
        Naming the missing extension and the commands that build it; when the package
        is being imported from a source tree whose extensions were never built (the
        usual cause: running from a checkout, or with its ``src/`` on the path, instead
        of the installed copy), saying so and where to run them.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(_explain(name, exc), name=name) from exc


def _explain(name: str, exc: ImportError) -> str:
    package, _, leaf = name.rpartition(".")
    pkg_dir = _package_dir(package)
    if pkg_dir is None:
        return f"ctlwire's compiled extension {name!r} is missing ({exc}). {_BUILD_HINT}"
    built = sorted(p.name for p in pkg_dir.glob(leaf + ".*")
                   if p.name.endswith(tuple(_all_extension_suffixes())))
    mine = [n for n in built
            if n in {leaf + suffix for suffix in importlib.machinery.EXTENSION_SUFFIXES}]
    if mine:  # it is there but does not load: a broken or mismatched build
        return (f"ctlwire's compiled extension {name!r} failed to load from "
                f"{pkg_dir / mine[0]} ({exc}). Rebuild it: `pip install .` (or "
                "`python setup.py build_ext --inplace` in a development checkout).")
    root = _source_root(pkg_dir) if (pkg_dir / f"{leaf}.pyx").exists() else None
    if root is None:
        return f"ctlwire's compiled extension {name!r} is missing ({exc}). {_BUILD_HINT}"
    text = (f"ctlwire is being imported from the source tree {root} (package directory "
            f"{pkg_dir}), where the compiled extension {name!r} has not been built")
    if built:
        text += (f" for this Python (found only {', '.join(built)}, built for another "
                 f"interpreter; this one needs {importlib.machinery.EXTENSION_SUFFIXES[0]})")
    return (f"{text}. Either build it in place: `cd {root} && pip install -e .` (or "
            "`python setup.py build_ext --inplace` after editing a .pyx), or install "
            "ctlwire (`pip install .`) and make sure the checkout's src/ is not on "
            "sys.path or PYTHONPATH, so that the installed copy is imported.")


def _package_dir(package: str) -> Path | None:
    module = sys.modules.get(package)
    paths = getattr(module, "__path__", None)
    if paths is None:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            return None
        paths = spec.submodule_search_locations if spec is not None else None
    for entry in paths or ():
        return Path(entry)
    return None


def _source_root(pkg_dir: Path) -> Path | None:
    # A checkout has setup.py / pyproject.toml a few levels up (src/ layout: two).
    for parent in list(pkg_dir.parents)[:4]:
        if (parent / "setup.py").exists() or (parent / "pyproject.toml").exists():
            return parent
    return None


def _all_extension_suffixes() -> list[str]:
    # Any interpreter's: ".cpython-311-x86_64-linux-gnu.so", ".abi3.so", ".pyd", ...
    return [".so", ".pyd"]
