"""The layering rule of docs/layering.md, checked on the installed package's source.

A static walk of every module of ``ctlwire`` (``.py`` through its syntax tree, ``.pyx``
through its ``import`` / ``cimport`` lines), counting every import wherever it stands
(inside functions and ``if TYPE_CHECKING:`` blocks too) and every
``load_extension("...")`` / ``importlib.import_module("...")`` of a literal name. An
import of a package's submodule counts as an edge to that submodule, not to the
package's ``__init__`` (Python runs the parent first, but that is not a choice the
importing module makes).
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ctlwire

PKG_DIR = Path(ctlwire.__file__).parent
ROOT = "ctlwire"

# Modules of the shared plumbing and the harness: see docs/layering.md.
HARNESS = "ctlwire._testing"
# The harness is imported by tests, benchmarks and the demo command only.
HARNESS_IMPORTERS = ("ctlwire._testing", "ctlwire.cli")
FAMILIES = ("katcp", "roc", "tcs", "ocd", "dc", "aiokatcp")
# Family -> the other families (or single modules of them) it may import: ocd uses the
# TCS event transport, a module that loads no extension; aiokatcp (aiokatcp's API) is
# built on ctlwire.katcp's public modules.
FAMILY_IMPORTS = {"ocd": {"ctlwire.tcs.transport"}, "aiokatcp": {"katcp"}}
# Single modules that speak another family's protocol by design: the replay's control port
# is a KATCP device (issue 14). Nothing imports it but ``tcs-replay --katcp-port``, and
# ``import ctlwire.tcs`` never loads KATCP (test_tcs_does_not_load_katcp below).
MODULE_IMPORTS = {"ctlwire.tcs.control": {"katcp"},
                  # records a KATCP device into a TCS event database and serves it
                  # again paced by the TCS replay engine (issue 13); nothing in katcp
                  # imports it, and ``import ctlwire.katcp`` never loads TCS
                  # (test_katcp_does_not_load_tcs below)
                  "ctlwire.katcp.recording": {"tcs"}}

# ctlwire.katcp, bottom up: a module may import modules of its own layer or below.
KATCP_LAYERS = {
    # the codec: pure, no I/O
    "exceptions": 0,
    "_codec": 1,
    "core": 2,
    "_types": 3, "_decorators": 3, "kattypes": 3, "sensor": 3, "sampling": 3,
    "mirror": 3,  # a client's I/O-free model of a server (the stdlib and its loops only)
    "_mirror_ops": 3,  # the mirror's compiled per-sensor loops (imports nothing)
    # transport: sockets, threads, event loops, and the pieces the servers share
    "_dispatch": 4, "_roundtrip": 4, "_connection": 4, "_loop": 4, "_handlers": 4,
    "_sensor_hub": 4, "_device_logger": 4, "_client_link": 4,
    # the documented classes
    "_server_base": 5, "_standard_requests": 5, "_device_server": 5,
    "_client_device": 5, "_client_requests": 5, "aio": 5,
    # public faces that re-export
    "server": 6, "client": 6, "ctlwire.katcp": 6,
    # tools built on the faces: mirrors, resource clients, test utilities, recording
    "inspecting_client": 7, "resource_client": 7, "testutils": 7, "recording": 7,
}
# The compiled codec and the pure core load nothing but the exceptions and the codec.
CODEC_LAYER = 2


def _module_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(PKG_DIR.rglob("*")):
        if path.suffix not in (".py", ".pyx") or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(PKG_DIR.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


MODULES = _module_files()
_LOADERS = {"load_extension", "import_module"}
_PYX_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+c?import\s+([\w., ()*]+)"
                         r"|c?import\s+([\w.]+))", re.M)


def _resolve(base: str, names: list[str]) -> set[str]:
    """Modules of ctlwire that ``from base import names`` loads."""
    out = {base} if not names else set()
    for name in names:
        sub = f"{base}.{name}"
        out.add(sub if sub in MODULES else base)
    return {m for m in out if m == ROOT or m.startswith(ROOT + ".")}


def _imports(module: str, path: Path) -> set[str]:
    text = path.read_text()
    is_package = path.stem == "__init__"
    targets: set[str] = set()
    if path.suffix == ".pyx":
        for m in _PYX_IMPORT.finditer(text):
            if m.group(1):
                names = [n.strip(" ()").split(" as ")[0] for n in m.group(2).split(",")]
                targets |= _resolve(m.group(1), [n for n in names if n])
            else:
                targets |= _resolve(m.group(3), [])
        return {t for t in targets if t in MODULES or t == ROOT}
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets |= _resolve(alias.name, [])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets |= _resolve(base, [a.name for a in node.names])
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "id", getattr(node.func, "attr", None)) in _LOADERS):
            targets |= _resolve(node.args[0].value, [])
    return {t for t in targets if t != module and (t in MODULES or t == ROOT)}


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _family(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FAMILIES else None


def test_the_walk_sees_the_package():
    # Guards the test itself: the modules and edges it must find are there.
    assert {"ctlwire.katcp.core", "ctlwire.katcp._codec", "ctlwire.roc.broker"} <= set(MODULES)
    assert "ctlwire.katcp._codec" in GRAPH["ctlwire.katcp.core"]  # load_extension
    assert "ctlwire.katcp.exceptions" in GRAPH["ctlwire.katcp.core"]  # relative import
    assert "ctlwire.katcp.core" in GRAPH["ctlwire.katcp"]  # a package's submodules


def test_a_cycle_is_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_anywhere_in_ctlwire():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_library_module_imports_the_harness():
    offenders = sorted(f"{m} imports {t}" for m, targets in GRAPH.items()
                       for t in targets if t.startswith(HARNESS)
                       and not m.startswith(HARNESS_IMPORTERS))
    assert not offenders, offenders


def test_families_import_only_shared_plumbing_and_themselves():
    offenders = []
    for module, targets in GRAPH.items():
        family = _family(module)
        if family is None:
            continue
        for target in targets:
            other = _family(target)
            if other is None:
                # shared plumbing: ctlwire itself and its top-level private modules
                if target != ROOT and not target.split(".")[1].startswith("_"):
                    offenders.append(f"{module} imports {target}")
                elif target.startswith(HARNESS):
                    offenders.append(f"{module} imports {target}")
            elif (other != family and other not in FAMILY_IMPORTS.get(family, ())
                  and target not in FAMILY_IMPORTS.get(family, ())
                  and other not in MODULE_IMPORTS.get(module, ())):
                offenders.append(f"{module} imports {target}")
    assert not offenders, offenders


def test_katcp_does_not_load_tcs():
    code = ("import sys, ctlwire.katcp, ctlwire.katcp.client, ctlwire.katcp.server, "
            "ctlwire.katcp.inspecting_client, ctlwire.katcp.resource_client, "
            "ctlwire.katcp.testutils; "
            "print(sorted(m for m in sys.modules if m.startswith('ctlwire.tcs')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_tcs_does_not_load_katcp():
    code = ("import sys, ctlwire.tcs, ctlwire.tcs.server, ctlwire.tcs.record; "
            "print(sorted(m for m in sys.modules if m.startswith('ctlwire.katcp')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"


def _katcp_layer(module: str) -> int | None:
    if module == "ctlwire.katcp":
        return KATCP_LAYERS[module]
    if module.startswith("ctlwire.katcp."):
        return KATCP_LAYERS.get(module.split(".", 2)[2])
    return None


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _katcp_layer(m) is not None))
def test_katcp_modules_import_only_their_own_layer_or_below(module):
    mine = _katcp_layer(module)
    above = sorted(t for t in GRAPH[module] if t.startswith("ctlwire.katcp")
                   and (_katcp_layer(t) is None or _katcp_layer(t) > mine))
    assert not above, f"{module} (layer {mine}) imports {above}"


def test_the_codec_layer_loads_nothing_but_itself():
    for name, layer in KATCP_LAYERS.items():
        if layer > CODEC_LAYER:
            continue
        module = f"ctlwire.katcp.{name}"
        others = {t for t in GRAPH[module] if t != "ctlwire._ext"
                  and (_katcp_layer(t) is None or _katcp_layer(t) > CODEC_LAYER)}
        assert not others, f"{module} imports {sorted(others)}"
