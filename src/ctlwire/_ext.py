"""Loading of compiled extensions with an error that says how to fix a missing one."""
from __future__ import annotations

import importlib
from types import ModuleType


def load_extension(name: str) -> ModuleType:
    """Import the compiled module ``name`` or explain how to build it.

    Parameters
    ----------
    name : str
        Dotted module name, e.g. ``"ctlwire.katcp._codec"``.

    Raises
    ------
    ImportError
        Naming the missing extension and the commands that build it.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(
            f"ctlwire's compiled extension {name!r} is missing or failed to load ({exc}). "
            "Install a prebuilt wheel (pip install ctlwire) or build from a source "
            "checkout with `pip install .` (needs Cython and a C compiler), or "
            "`python setup.py build_ext --inplace` for development."
        ) from exc
