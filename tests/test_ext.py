"""The error a missing compiled extension raises: which one, why, and what to run.

A fake package in a temporary source tree (``setup.py`` + ``src/<pkg>/<ext>.pyx``) for
the exact wording, and a copy of ctlwire itself without its compiled files, imported in
a child process the way a user would hit it: from an unbuilt checkout.
"""
from __future__ import annotations

import importlib.machinery
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ctlwire
from ctlwire._ext import load_extension


def make_tree(root: Path, package: str, *files: str) -> Path:
    (root / "setup.py").write_text("# a checkout\n")
    # a flat layout (package beside setup.py): the detection is the same as for src/
    pkg = root / package
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for name in files:
        (pkg / name).write_text("")
    return pkg


@pytest.fixture
def fresh_package(monkeypatch, tmp_path):
    def make(package: str, *files: str) -> Path:
        pkg = make_tree(tmp_path, package, *files)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, package, raising=False)
        return pkg
    return make


def test_an_unbuilt_source_tree_is_named_with_what_to_run(fresh_package, tmp_path):
    fresh_package("fakewire", "_engine.pyx")
    with pytest.raises(ImportError) as info:
        load_extension("fakewire._engine")
    text = str(info.value)
    assert "'fakewire._engine'" in text
    assert f"source tree {tmp_path}" in text
    assert f"cd {tmp_path} && pip install -e ." in text
    assert "build_ext --inplace" in text
    assert "src/ is not on sys.path or PYTHONPATH" in text
    assert info.value.name == "fakewire._engine"


def test_an_extension_built_for_another_python_is_reported(fresh_package):
    other = "_engine.cpython-29-x86_64-linux-gnu.so"
    fresh_package("fakewire2", "_engine.pyx", other)
    with pytest.raises(ImportError, match="built for another interpreter") as info:
        load_extension("fakewire2._engine")
    assert other in str(info.value)
    assert importlib.machinery.EXTENSION_SUFFIXES[0] in str(info.value)


def test_a_broken_build_is_reported_as_failing_to_load(fresh_package):
    broken = "_engine" + importlib.machinery.EXTENSION_SUFFIXES[0]
    fresh_package("fakewire3", "_engine.pyx", broken)  # an empty file: not a library
    with pytest.raises(ImportError, match="failed to load") as info:
        load_extension("fakewire3._engine")
    assert broken in str(info.value) and "pip install ." in str(info.value)


def test_outside_a_source_tree_the_message_says_how_to_build(fresh_package, tmp_path):
    pkg = fresh_package("fakewire4")
    (tmp_path / "setup.py").unlink()
    with pytest.raises(ImportError) as info:
        load_extension("fakewire4._engine")
    text = str(info.value)
    assert "'fakewire4._engine'" in text and "source tree" not in text
    assert "pip install" in text and "build_ext --inplace" in text
    assert pkg.exists()


def test_importing_an_unbuilt_copy_of_ctlwire_says_so(tmp_path):
    installed = Path(ctlwire.__file__).parent
    copy = make_tree(tmp_path, "ctlwire")
    shutil.rmtree(copy)
    shutil.copytree(installed, copy, ignore=shutil.ignore_patterns(
        "*.so", "*.pyd", "*.c", "__pycache__"))
    codec_src = copy / "katcp" / "_codec.pyx"
    if not codec_src.exists():  # an installed wheel ships no .pyx: a checkout has it
        codec_src.write_text("")
    out = subprocess.run([sys.executable, "-c", "import ctlwire.katcp"],
                         cwd=copy.parent, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ctlwire is being imported from the source tree")
    assert "'ctlwire.katcp._codec'" in last and "pip install -e ." in last
