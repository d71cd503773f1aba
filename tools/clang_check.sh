#!/usr/bin/env bash
# Build fastce with clang (OpenMP through LLVM's libomp) in a scratch copy and run the test
# suite against that build (issue 11: builds keep their speed on every compiler we can reach).
#
# Usage: tools/clang_check.sh [pytest arguments...]     (default: the whole suite, -q)
#
# Checks, besides the tests:
#   - setup.py identified the compiler as clang and found OpenMP (libomp, not libgomp, linked);
#   - the kernels' runtime ISA dispatch is the same as a GCC build's: clang must not lose the
#     AVX2/AVX-512 variants.  (Skipped, with a note, while the kernel header still excludes
#     clang from dispatch: `!defined(__clang__)` in its guard.)
#
# Requirements: clang and libomp-dev (Debian/Ubuntu: apt-get install clang libomp-dev), Cython,
# NumPy, pytest.  Environment: PYTHON (default python3), CLANG (default clang).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
CLANG="${CLANG:-clang}"
say() { echo "clang_check.sh: $*"; }
command -v "$CLANG" >/dev/null || { say "$CLANG not found (apt-get install clang libomp-dev)"; exit 2; }

WORK="$(mktemp -d -t fastce-clang.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
( cd "$ROOT" && tar -cf - \
    --exclude=./.git --exclude=./build --exclude=./dist --exclude='./dist-*' --exclude='*.egg-info' \
    --exclude='__pycache__' --exclude='.pytest_cache' --exclude='.hypothesis' \
    --exclude='.benchmarks' --exclude='.venv*' --exclude='.mypy_cache' \
    --exclude='./src/fastce/*.so' --exclude='./src/fastce/*.c' --exclude='./src/fastce/_build_info.py' \
    . ) | ( cd "$WORK" && tar -xf - )

START=$(date +%s)
say "building with $("$CLANG" --version | head -1) ..."
( cd "$WORK" && CC="$CLANG" LDSHARED="$CLANG -shared" "$PY" setup.py build_ext --inplace ) \
    >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; say "build FAILED"; exit 1; }
grep -m1 "fastce: compiler" "$WORK/build.log"
say "built in $(( $(date +%s) - START )) s"

fail() { say "CHECK FAILED: $*"; exit 1; }
grep -q "fastce: compiler clang" "$WORK/build.log" || fail "setup.py did not identify clang"
grep -q "OpenMP on" "$WORK/build.log" || fail "no OpenMP with clang (is libomp-dev installed?)"
so="$(ls "$WORK"/src/fastce/_ce*.so)"
ldd "$so" | grep -q "libomp" || fail "$(basename "$so") does not link libomp"
if ldd "$so" | grep -q "libgomp"; then fail "$(basename "$so") links libgomp next to libomp"; fi

export PYTHONPATH="$WORK/src"
where="$("$PY" -c 'import fastce, os; print(os.path.dirname(fastce.__file__))')"
[[ "$where" == "$WORK/src/fastce" ]] || fail "import fastce resolves to $where"
"$PY" -m fastce info

# Runtime dispatch parity with GCC: what `python -m fastce info` says about ISA dispatch for
# this clang build against a GCC build of the same sources (the installed fastce, e.g. CI's
# wheel, when it was built by GCC; otherwise skipped).
isa_lines() { grep -iE "dispatch|isa|simd" | grep -viE "flags|compiler" || true; }
clang_isa="$("$PY" -m fastce info | isa_lines)"
gcc_isa="$(cd / && env -u PYTHONPATH "$PY" -c 'from fastce import _build_info as b; print(b.COMPILER)' 2>/dev/null || true)"
if [[ "$gcc_isa" == gcc* ]]; then
    gcc_isa="$(cd / && env -u PYTHONPATH "$PY" -m fastce info | isa_lines)"
    if grep -q '!defined(__clang__)' "$ROOT"/src/fastce/*.h; then
        say "note: the kernel header still excludes clang from runtime ISA dispatch"
        say "  clang: $clang_isa"
        say "  gcc:   $gcc_isa"
    elif [[ "$clang_isa" != "$gcc_isa" ]]; then
        fail "clang build dispatches differently from the GCC build:
$clang_isa
--- gcc:
$gcc_isa"
    else
        say "runtime ISA dispatch identical to the GCC build"
    fi
else
    say "no GCC-built fastce installed to compare the ISA dispatch with; clang: $clang_isa"
fi

say "running the suite against the clang build ..."
set +e
( cd "$WORK" && "$PY" -m pytest tests -p no:cacheprovider "${@:--q}" )
status=$?
set -e
say "pytest exit status $status; total $(( $(date +%s) - START )) s"
exit $status
