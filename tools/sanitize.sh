#!/usr/bin/env bash
# Build fastce's extensions with AddressSanitizer + UndefinedBehaviorSanitizer and run the test
# suite under them (issue 4).
#
# Usage:  tools/sanitize.sh [pytest arguments...]
#         e.g. tools/sanitize.sh                  # the whole suite
#              tools/sanitize.sh -k hostile -x    # a subset
#
# What it does
#   1. Copies the working tree (including uncommitted changes, without build products, .git or
#      generated .c/.so files) into a throw-away directory -- the build in the checkout itself is
#      never touched.
#   2. Builds the extensions in place there with FASTCE_SANITIZE=1 (setup.py then compiles and
#      links with -fsanitize=address,undefined -fno-omit-frame-pointer -g) and
#      CFLAGS=-DFCE_NO_CLONES (GCC target_clones and ifunc resolvers do not mix with ASan).
#   3. Runs pytest on the copy's tests with PYTHONPATH=<copy>/src (checked: `import fastce` must
#      resolve to the copy), LD_PRELOAD=$(gcc -print-file-name=libasan.so) (the ASan runtime must
#      be loaded before the python binary's own libraries; libstdc++ is preloaded after it so
#      C++ exceptions thrown inside torch work), ASAN_OPTIONS=detect_leaks=0 (CPython leaks by
#      design at exit) and UBSan set to halt on the first error.
#   4. Exits non-zero if pytest fails or if any sanitizer report appears in the log.
#
# Environment
#   PYTHON                 interpreter to use (default: python3, or python if that is missing)
#   FASTCE_SANITIZE_DIR    build directory to use (default: a new mktemp -d; removed on success
#                          unless FASTCE_SANITIZE_KEEP=1)
#   FASTCE_SANITIZE_KEEP=1 keep the build directory (the log is <dir>/sanitize.log)
#   FASTCE_SANITIZE_MALLOC=1  also run CPython with PYTHONMALLOC=malloc (ASan then sees every
#                          Python object allocation; slower)
#   Any FASTCE_* test switches (FASTCE_BIG_TESTS, FASTCE_HYPOTHESIS_PROFILE) pass through.
#
# Requirements: gcc with libasan/libubsan, Cython>=3, NumPy, pytest (+ the test extra).
# Typical cost on a 2-core machine: ~1-2 min to build, a few minutes to test.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
CC_BIN="${CC:-gcc}"

ASAN_LIB="$("$CC_BIN" -print-file-name=libasan.so)"
if [[ ! -e "$ASAN_LIB" || "$ASAN_LIB" == "libasan.so" ]]; then
    echo "sanitize.sh: cannot find libasan.so via '$CC_BIN -print-file-name=libasan.so'" >&2
    exit 2
fi
# libstdc++ is preloaded right after ASan: otherwise ASan's __cxa_throw interceptor finds no real
# __cxa_throw at start-up and the first C++ exception (e.g. inside torch) aborts with
# "AddressSanitizer: CHECK failed: asan_interceptors.cpp ... real___cxa_throw".
STDCXX_LIB="$("$CC_BIN" -print-file-name=libstdc++.so)"
PRELOAD="$ASAN_LIB"
if [[ -e "$STDCXX_LIB" && "$STDCXX_LIB" != "libstdc++.so" ]]; then
    PRELOAD="$ASAN_LIB $(readlink -f "$STDCXX_LIB")"
fi

WORK="${FASTCE_SANITIZE_DIR:-$(mktemp -d -t fastce-sanitize.XXXXXX)}"
mkdir -p "$WORK"
LOG="$WORK/sanitize.log"
START=$(date +%s)

echo "sanitize.sh: source  $ROOT"
echo "sanitize.sh: build   $WORK"
echo "sanitize.sh: preload $PRELOAD"

# ---------------------------------------------------------------- 1. copy the tree
( cd "$ROOT" && tar -cf - \
    --exclude=./.git --exclude=./build --exclude=./dist --exclude='*.egg-info' \
    --exclude='__pycache__' --exclude='.pytest_cache' --exclude='.hypothesis' \
    --exclude='.benchmarks' --exclude='.venv*' \
    --exclude='./src/fastce/*.so' --exclude='./src/fastce/*.c' --exclude='./src/fastce/*.html' \
    . ) | ( cd "$WORK" && tar -xf - )

# ---------------------------------------------------------------- 2. build with sanitizers
echo "sanitize.sh: building (FASTCE_SANITIZE=1, CFLAGS=-DFCE_NO_CLONES) ..."
(
    cd "$WORK"
    FASTCE_SANITIZE=1 \
    CFLAGS="-DFCE_NO_CLONES ${CFLAGS:-}" \
    LDFLAGS="${LDFLAGS:-}" \
    "$PY" setup.py build_ext --inplace
) >"$WORK/build.log" 2>&1 || { echo "sanitize.sh: build failed, see $WORK/build.log" >&2; tail -30 "$WORK/build.log" >&2; exit 2; }
grep -m1 "fastce: OpenMP" "$WORK/build.log" || true
BUILT=$(date +%s)
echo "sanitize.sh: built in $((BUILT - START)) s"

# every extension must really be instrumented
for so in "$WORK"/src/fastce/*.so; do
    if [[ "$(nm -D "$so" 2>/dev/null | grep -c "__asan_" || true)" == "0" ]]; then
        echo "sanitize.sh: $so is not ASan-instrumented" >&2
        exit 2
    fi
done

# ---------------------------------------------------------------- 3. run the tests
export PYTHONPATH="$WORK/src${PYTHONPATH:+:$PYTHONPATH}"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=0:allocator_may_return_null=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
if [[ "${FASTCE_SANITIZE_MALLOC:-0}" == "1" ]]; then
    export PYTHONMALLOC=malloc
fi

where=$(LD_PRELOAD="$PRELOAD" "$PY" -c "import fastce, os; print(os.path.dirname(fastce.__file__))")
if [[ "$where" != "$WORK/src/fastce" ]]; then
    echo "sanitize.sh: 'import fastce' resolves to $where, not the sanitized copy" >&2
    exit 2
fi

echo "sanitize.sh: running pytest $* ..."
set +e
( cd "$WORK" && LD_PRELOAD="$PRELOAD" "$PY" -m pytest tests -q -p no:cacheprovider "$@" ) 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
END=$(date +%s)

# ---------------------------------------------------------------- 4. verdict
# Reports from subprocesses spawned by the tests land in the pytest output too.
PATTERN="ERROR: AddressSanitizer|AddressSanitizer: CHECK failed|runtime error:|ERROR: LeakSanitizer|SUMMARY: (Address|UndefinedBehavior)Sanitizer"
reports=$(grep -cE "$PATTERN" "$LOG" || true)
echo
echo "sanitize.sh: pytest exit status $status; sanitizer reports: $reports; test time $((END - BUILT)) s; total $((END - START)) s"
if [[ "$reports" != "0" ]]; then
    grep -nE -A3 "$PATTERN" "$LOG" | head -60
fi
if [[ "$status" == "0" && "$reports" == "0" ]]; then
    echo "sanitize.sh: CLEAN"
    if [[ -z "${FASTCE_SANITIZE_DIR:-}" && "${FASTCE_SANITIZE_KEEP:-0}" != "1" ]]; then
        rm -rf "$WORK"
    else
        echo "sanitize.sh: log $LOG"
    fi
    exit 0
fi
echo "sanitize.sh: NOT CLEAN (build and log kept: $LOG)"
exit 1
