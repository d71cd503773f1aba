"""pytest configuration of fastce's benchmark suite: modes, fixtures, hooks (see README.md).

Run it on its own (`pytest bench/ ...`), not in the same invocation as tests/: both directories
have a top-level conftest.py and tests/ does `from conftest import ...`.
"""
import gc
import importlib.util
import os
import sys

import numpy as np
import pytest

# Reuse the tests' float64 NumPy reference: make tests/reference.py importable as `reference`.
_TESTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import fastce  # noqa: E402
from benchkit import BCE_CASES, CE_CASES, DTYPES, IMPLS, PEERS, CaseData, bench_mode  # noqa: E402

HAVE_PYTEST_BENCHMARK = importlib.util.find_spec("pytest_benchmark") is not None
if not HAVE_PYTEST_BENCHMARK:                                 # pragma: no cover
    collect_ignore_glob = ["test_*.py"]
    print("bench/: pytest-benchmark is not installed (pip install pytest-benchmark); skipping",
          file=sys.stderr)


# ================================================================== hooks

def pytest_report_header(config):
    m = bench_mode(config)
    return (f"fastce bench: quick={m['quick']} check={m['check']} "
            f"peers={','.join(m['peers']) or 'none'} fastce={fastce.__version__} "
            f"threads={fastce.get_num_threads()} openmp={fastce.OPENMP}")


if HAVE_PYTEST_BENCHMARK:
    def pytest_benchmark_update_machine_info(config, machine_info):
        """Recorded in the saved JSON: which fastce build and which mode produced the numbers."""
        m = bench_mode(config)
        machine_info["fastce"] = {"version": fastce.__version__, "file": fastce.__file__,
                                  "threads": fastce.get_num_threads(),
                                  "openmp": bool(fastce.OPENMP), "numpy": np.__version__,
                                  "quick": m["quick"]}


# ================================================================== inputs

def _data_fixture(kind, request):
    case, shape, axis, dtype = request.param
    d = CaseData(kind, case, shape, axis, dtype, bench_mode(request.config))
    yield d
    d.free()
    gc.collect()


@pytest.fixture(scope="module")
def ce(request):
    """Class-axis inputs: x logits, t int64 targets, logp, p, g, out (axis = d.axis)."""
    yield from _data_fixture("ce", request)


@pytest.fixture(scope="module")
def bce(request):
    """Elementwise inputs: x logits, p probabilities, t {0,1} targets, out."""
    yield from _data_fixture("bce", request)


def pytest_generate_tests(metafunc):
    """Parametrise `ce` / `bce` (module-scoped inputs, one per case x dtype) and `impl`."""
    mode = bench_mode(metafunc.config)
    for name, cases in (("ce", CE_CASES), ("bce", BCE_CASES)):
        if name in metafunc.fixturenames:
            params = [(c, s, a, dt) for dt in DTYPES for (c, s, a) in cases]
            metafunc.parametrize(name, params, ids=[f"{p[0]}-{p[3]}" for p in params],
                                 indirect=True, scope="module")
    if "impl" in metafunc.fixturenames:
        metafunc.parametrize("impl", IMPLS + mode["peers"])


# ================================================================== ratio summary

@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    """After pytest-benchmark's tables: one line per group with the ratios that matter."""
    bs = getattr(config, "_benchmarksession", None)
    if bs is None or getattr(bs, "disabled", False):
        return
    groups = {}
    for b in getattr(bs, "benchmarks", []):
        info = getattr(b, "extra_info", {}) or {}
        if "impl" not in info or not b:
            continue
        groups.setdefault(b.group, {})[info["impl"]] = b.stats.median * 1e3
    if not groups:
        return
    peers = [p for p in PEERS if any(p in g for g in groups.values())]
    tr = terminalreporter
    tr.write_sep("-", "fastce ratios (medians, ms)")
    head = (f"{'group':<62} {'memcpy':>9} {'fastce':>9} {'numpy':>9} "
            f"{'fastce/memcpy':>13} {'numpy/fastce':>12}" + "".join(f" {p:>9}" for p in peers))
    tr.write_line(head)

    def fmt(v, spec="9.3f"):
        return format(v, spec) if v is not None else " " * (int(spec.split(".")[0]) - 1) + "-"

    for name in sorted(groups):
        g = groups[name]
        f, m, n = g.get("fastce"), g.get("memcpy"), g.get("numpy")
        xm = f"{f / m:12.1f}x" if f and m else " " * 12 + "-"
        xn = f"{n / f:11.1f}x" if f and n else " " * 11 + "-"
        line = f"{name:<62} {fmt(m)} {fmt(f)} {fmt(n)} {xm} {xn}"
        line += "".join(" " + fmt(g.get(p)) for p in peers)
        tr.write_line(line)
