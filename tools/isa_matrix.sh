#!/usr/bin/env bash
# Run the test suite once per kernel instruction-set path on one build (issue 9): the kernels
# are compiled for baseline x86-64 (SSE2), AVX2 and AVX-512, and FASTCE_ISA pins which one the
# resolver picks at import (src/fastce/_isa.h).  Paths this CPU cannot run are skipped (the
# resolver would cap them to the best supported one, which is already covered).
#
# Usage:  tools/isa_matrix.sh [pytest arguments...]      e.g. tools/isa_matrix.sh -q -x
# ISA_MATRIX_SKIP_BEST=1 leaves out the best path this CPU runs: the one an unpinned run chooses,
# for callers (CI) that have just run the suite on the same build without FASTCE_ISA.
# Uses the fastce importable from the current environment (an installed build, or set
# PYTHONPATH=$PWD/src after an in-place build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"

best="$("$PY" -c 'from fastce import _threads; print(_threads.isa_report()["best"])')"
case "$best" in
    avx512) paths="baseline avx2 avx512" ;;
    avx2) paths="baseline avx2" ;;
    baseline) paths="baseline" ;;
    *) echo "isa_matrix: single-variant build ($best); running the suite once"; paths="auto" ;;
esac

status=0
for isa in $paths; do
    if [ "${ISA_MATRIX_SKIP_BEST:-0}" = 1 ] && [ "$isa" = "$best" ]; then
        echo "=== FASTCE_ISA=$isa: skipped (the best path; ISA_MATRIX_SKIP_BEST=1)"
        continue
    fi
    chosen="$(FASTCE_ISA=$isa "$PY" -c 'from fastce import _threads; print(_threads.simd_path())')"
    echo "=== FASTCE_ISA=$isa (kernels run: $chosen)"
    if [ "$isa" != "auto" ] && [ "$chosen" != "$isa" ]; then
        echo "isa_matrix: asked for $isa, resolver chose $chosen" >&2
        status=1
        continue
    fi
    FASTCE_ISA=$isa "$PY" -m pytest -p no:cacheprovider "$@" || status=1
done
exit $status
