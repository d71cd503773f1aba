#!/usr/bin/env bash
# Install fastce from its sdist into a fresh venv of every CPython this machine has (pyenv's
# 3.9 ... 3.13 by default) and run the sdist's test suite there, against the installed build.
#
# Usage: tools/test_all_pythons.sh [pytest args...]
# Environment:
#   PYTHONS        space-separated interpreters to use (default: every pyenv CPython 3.9+)
#   FASTCE_SDIST   an sdist to use (default: build one from this checkout)
#   NUMPY_FLOOR    NumPy installed for the oldest Python, so the declared floor is what runs
#                  there (default: the floor in pyproject.toml's dependencies)
# Torch is not installed (a multi-hundred-MB download per interpreter): the torch reference
# tests are skipped here, as the closing line of each run says; CI runs them.
# Prints one summary line per interpreter and exits non-zero if any run failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d -t fastce-pythons.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
say() { echo "test_all_pythons.sh: $*"; }

if [[ -z "${PYTHONS:-}" ]]; then
    root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
    PYTHONS=""
    for v in $(ls "$root/versions" 2>/dev/null | grep -E '^3\.(9|1[0-9])\.[0-9]+$' | sort -t. -k2,2n -k3,3n); do
        PYTHONS+="$root/versions/$v/bin/python "
    done
fi
[[ -n "$PYTHONS" ]] || { say "no CPython 3.9+ found (set PYTHONS)"; exit 2; }

FLOOR="${NUMPY_FLOOR:-$(sed -n 's/^dependencies = \["numpy>=\([0-9.]*\)"\]/\1/p' "$ROOT/pyproject.toml")}"
SDIST="${FASTCE_SDIST:-}"
if [[ -z "$SDIST" ]]; then
    first="${PYTHONS%% *}"
    "$first" -m venv "$WORK/sdist-venv" && "$WORK/sdist-venv/bin/python" -m pip install -q build
    "$WORK/sdist-venv/bin/python" -m build --sdist --outdir "$WORK" "$ROOT" >"$WORK/sdist.log" 2>&1 \
        || { cat "$WORK/sdist.log"; exit 1; }
    SDIST="$(ls "$WORK"/fastce-*.tar.gz)"
fi
tar -xzf "$SDIST" -C "$WORK"
SRC="$(ls -d "$WORK"/fastce-*/)"
say "sdist $(basename "$SDIST"); NumPy floor $FLOOR (installed for the oldest Python)"

declare -a SUMMARY
status=0
oldest=1
for py in $PYTHONS; do
    ver="$("$py" -c 'import platform; print(platform.python_version())')"
    venv="$WORK/venv-$ver"
    log="$WORK/log-$ver.txt"
    start=$(date +%s)
    numpy_spec="numpy"
    [[ $oldest == 1 && -n "$FLOOR" ]] && numpy_spec="numpy==$FLOOR"
    oldest=0
    say "== CPython $ver: installing ($numpy_spec) ..."
    if ! { "$py" -m venv "$venv" \
           && "$venv/bin/python" -m pip install -q --upgrade pip \
           && "$venv/bin/python" -m pip install -q "$numpy_spec" \
           && "$venv/bin/python" -m pip install -q "${SDIST}[test]" "$numpy_spec"; } >"$log" 2>&1; then
        tail -20 "$log"
        SUMMARY+=("CPython $ver: INSTALL FAILED")
        status=1
        continue
    fi
    npv="$("$venv/bin/python" -c 'import numpy; print(numpy.__version__)')"
    ( cd "$SRC" && "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@" ) >>"$log" 2>&1
    rc=$?
    result="$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed)' "$log" | tail -1 | tr -d '=' | xargs)"
    secs=$(( $(date +%s) - start ))
    if [[ $rc == 0 ]]; then
        SUMMARY+=("CPython $ver, NumPy $npv: passed ($result; ${secs} s)")
    else
        grep -E "^(FAILED|ERROR)" "$log" | head -20
        SUMMARY+=("CPython $ver, NumPy $npv: FAILED ($result; ${secs} s)")
        status=1
    fi
    say "${SUMMARY[-1]}"
done

echo
say "summary"
for line in "${SUMMARY[@]}"; do echo "  $line"; done
exit $status
