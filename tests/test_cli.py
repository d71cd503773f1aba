"""Smoke tests of `python -m fastce info` and of the bench CLI (tiny shapes; no timing is ever
asserted).  What is checked: every implementation the bench times computes the loss of the
tests' float64 reference (tests/reference.py) and its gradient matches central finite
differences of that reference, so the bench never times the wrong computation; the tables, JSON
and plot carry the shapes that actually ran, the CPU, the thread count and only the columns that
ran; ratios are computed from the times; a peer whose loss disagrees is flagged."""
import json
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import fastce
from fastce import _bench
from fastce.__main__ import main as cli_main
from reference import ref_binary_cross_entropy_with_logits, ref_cross_entropy

FUSED, FWD, OBJECT = _bench.FUSED, _bench.FWD, _bench.OBJECT
TINY = {"ce": (6, 5), "ce_axis1": (2, 3, 2, 2), "ce_softcap": (5, 4), "bce": (9,)}
# what each implementation covers (the others raise NotApplicable)
COVERS = {"fastce": set(TINY), "NumPy": set(TINY), "torch eager": set(TINY),
          "JAX jit": set(TINY), "numba": {"ce", "bce"}, "sklearn": {"ce", "bce"}}


def test_info_runs():
    out = subprocess.run([sys.executable, "-m", "fastce", "info"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    # (the child's own thread count: this process's may have been changed by earlier tests
    # that run peers with torch.set_num_threads, which shares the OpenMP runtime)
    assert "OpenMP" in out and "SIMD path" in out and re.search(r"^threads: [1-9]\d*$", out, re.M)


# ---------------------------------------------------------------- the timed code is right

def ref_loss(kind, x, t):
    """The float64 reference loss (mean) of a case."""
    if kind == "bce":
        return ref_binary_cross_entropy_with_logits(x, t)
    return ref_cross_entropy(x, t, axis=1 if kind == "ce_axis1" else -1,
                             softcap=_bench.SOFTCAP if kind == "ce_softcap" else None)


def fd_grad(kind, x, t, h=1e-6):
    """Central finite differences of the reference loss."""
    g = np.empty_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (ref_loss(kind, xp, t) - ref_loss(kind, xm, t)) / (2 * h)
    return g


def _need(impl):
    module = {"torch eager": "torch", "JAX jit": "jax", "numba": "numba",
              "sklearn": "sklearn"}.get(impl)
    if module:
        pytest.importorskip(module)


CASES = [(impl, kind, mode, percall)
         for impl in COVERS for kind in TINY for mode in (FUSED, FWD)
         for percall in ((False, True) if impl == "numba" else (False,))
         if kind in COVERS[impl]]


@pytest.mark.parametrize("impl,kind,mode,percall", CASES,
                         ids=[f"{i}-{k}-{m}" + ("-percall" if p else "") for i, k, m, p in CASES])
def test_implementation_matches_reference(rng, impl, kind, mode, percall):
    _need(impl)
    x, t = _bench.make_inputs(kind, TINY[kind], np.float64, rng)
    out = np.full_like(x, np.nan)
    fn = _bench.build_impl(impl, kind, mode, x, t, out, threads=1, percall=percall)
    loss, grad = _bench.split_result(fn())
    np.testing.assert_allclose(loss, ref_loss(kind, x, t), rtol=1e-10)
    if mode == FWD:
        return
    if grad is None:            # numba writes the gradient into out=
        grad = out
    if impl == "sklearn":       # sklearn's gradient is per sample: d loss_i / d x_i
        grad = grad.reshape(x.shape) / t.size
    np.testing.assert_allclose(grad, fd_grad(kind, x, t), rtol=1e-6, atol=1e-9)
    if impl in ("fastce", "NumPy"):
        assert np.shares_memory(grad, out), "gradient not written into the out= buffer"


def test_loss_object_row_matches_function(rng):
    x, t = _bench.make_inputs("ce", (8, 5), np.float32, rng)
    out = np.empty_like(x)
    loss, grad = _bench.split_result(_bench.build_impl("fastce", "ce", OBJECT, x, t, out)())
    ref, ref_grad = fastce.cross_entropy(x, t, return_grad=True)
    assert loss == pytest.approx(float(ref)) and np.array_equal(grad, ref_grad)


@pytest.mark.parametrize("mode", [FUSED, FWD])
def test_limit_is_one_copy_or_one_read(rng, mode):
    x, _ = _bench.make_inputs("ce", (4, 3), np.float32, rng)
    out = np.zeros_like(x)
    r = _bench.build_impl("limit", "ce", mode, x, None, out)()
    if mode == FUSED:
        assert np.array_equal(out, x) and _bench.limit_op(mode) == "np.copyto"
    else:
        assert r == x.max() and not out.any() and _bench.limit_op(mode) == "np.max"


def test_peers_without_an_equivalent_are_not_applicable(rng):
    x, t = _bench.make_inputs("ce_axis1", (2, 3, 2, 2), np.float32, rng)
    with pytest.raises(_bench.NotApplicable):
        _bench.build_impl("sklearn", "ce_axis1", FUSED, x, t, np.empty_like(x))


# ---------------------------------------------------------------- ratios, labels, peers

def test_ratios_and_best_peer():
    row = {"times_ms": {"limit": 1.0, "fastce": 2.0, "NumPy": 10.0, "JAX jit": 3.0,
                        "numba": None}}
    _bench._finish_row(row, ["NumPy", "JAX jit", "numba"], "ms")
    assert row["x_limit"] == 2.0 and row["best_peer"] == "JAX jit"
    assert row["best_peer_ms"] == 3.0 and row["best_peer_over_fastce"] == 1.5


def test_labels_follow_the_shape_that_ran():
    case = _bench.Case("ce", FUSED, (4096, 32000), (1024, 32000))
    assert _bench.case_label("ce", case.run_shape(quick=True)) == "CE 1024x32000"
    assert _bench.case_label("ce", case.run_shape(quick=False)) == "CE 4096x32000"
    assert _bench.case_label("bce", (2_500_000,)) == "BCE-with-logits 2.5M"
    assert _bench.case_label("ce_axis1", (2, 21, 8, 8)) == "CE axis=1 2x21x8x8"
    assert "softcap=30" in _bench.case_label("ce_softcap", (8, 4))


def test_parse_peers():
    assert _bench.parse_peers(None) == list(_bench.PEERS)
    assert _bench.parse_peers("none") == []
    assert _bench.parse_peers("torch,compile,jax,torch") == ["torch eager", "torch.compile",
                                                             "JAX jit"]
    with pytest.raises(SystemExit, match="unknown peer"):
        _bench.parse_peers("tensorflow")


def test_missing_peer_is_skipped_with_a_reason(monkeypatch):
    monkeypatch.setitem(_bench._PEER_MODULES, "numba", "no_such_module_fastce_test")
    ok, skipped = _bench.available_peers(["NumPy", "numba"])
    assert ok == ["NumPy"] and "not installed" in skipped["numba"]


def test_cpu_model_names_the_cpu():
    name = _bench.cpu_model()
    assert name and name != "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("model name")), None)
    except OSError:
        line = None
    if line:
        assert name.startswith(line.split(":", 1)[1].strip())


# ---------------------------------------------------------------- the whole CLI, tiny

@pytest.fixture
def tiny_bench(monkeypatch):
    """Tiny cases whose full shapes differ from their quick shapes, and few calls."""
    monkeypatch.setattr(_bench, "CASES", [
        _bench.Case("ce", FUSED, (640, 10), (64, 10)),
        _bench.Case("bce", FUSED, (10_000,), (1000,)),
        _bench.Case("ce_axis1", FUSED, (4, 3, 8, 8), (2, 3, 8, 8)),
        _bench.Case("ce", FWD, (640, 10), (64, 10)),
    ])
    monkeypatch.setattr(_bench, "PERCALL_CASES", [_bench.Case("ce", FUSED, (8, 4)),
                                                  _bench.Case("ce", OBJECT, (8, 4))])
    monkeypatch.setattr(_bench, "PERCALL_CALLS", 5)
    monkeypatch.setattr(_bench, "LINEAR_CASE", ((64, 8, 128), (32, 8, 64)))
    monkeypatch.setattr(_bench, "SETTLE_S", 0.0)
    monkeypatch.setattr(_bench, "MIN_SAMPLE_S", {True: 0.0005, False: 0.0005})


def test_bench_main_tables_json_progress(tiny_bench, tmp_path, capsys):
    path = tmp_path / "bench.json"
    cli_main(["bench", "--quick", "--float64", "--peers", "numpy", "--repeats", "2",
              "--json", str(path)])
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    # labels and the JSON carry the quick shapes that ran, never the full ones
    assert "| CE 64x10 | float32 |" in out and "CE 640x10" not in out
    assert "BCE-with-logits 1000 " in out and "CE axis=1 2x3x8x8" in out
    assert "linear CE 32x8x64" in out
    # CPU and threads on the table; only the columns that ran
    n = fastce.get_num_threads()
    assert _bench.cpu_model() in out and f"; {n} thread{'' if n == 1 else 's'} (" in out
    assert "limit (np.copyto)" in out and "limit (np.max)" in out
    assert "| NumPy |" in out and "torch" not in out.split("Per call")[0].split("\n", 1)[1]
    # progress for every case on stderr
    for i in range(1, 9):
        assert f"[{i}/8]" in err
    assert "[per-call 2/2]" in err and "[linear]" in err

    data = json.loads(path.read_text())
    assert data["machine"]["cpu"] == _bench.cpu_model()
    assert data["machine"]["threads"] == fastce.get_num_threads()
    assert data["machine"]["versions"]["numpy"] == np.__version__
    rows = data["results"]
    assert len(rows) == 8 and {r["dtype"] for r in rows} == {"float32", "float64"}
    assert rows[0]["shape"] == [64, 10] and rows[0]["nominal_shape"] == [640, 10]
    for r in rows:
        t = r["times_ms"]
        assert t["limit"] > 0 and t["fastce"] > 0 and t["NumPy"] > 0
        assert r["x_limit"] == pytest.approx(t["fastce"] / t["limit"])
        assert r["best_peer"] == "NumPy"
        assert r["best_peer_over_fastce"] == pytest.approx(t["NumPy"] / t["fastce"])
        assert r["errors"] == {}
    pc = data["percall"]
    assert [r["case"] for r in pc] == ["CE (8, 4)",
                                       "CrossEntropyLoss (8, 4) obj(x, t, out=g) + backward()"]
    assert all(r["times_us"]["fastce"] > 0 and r["calls_per_sample"] == 5 for r in pc)


def test_percall_only(tiny_bench, capsys):
    cli_main(["bench", "--percall", "--no-peers", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "Per call (us, median of 1 x 5 calls)" in out
    assert "Fused loss + gradient" not in out and "linear CE" not in out


def test_stat_min_drives_table_and_ratios(tiny_bench, tmp_path, capsys):
    path = tmp_path / "b.json"
    cli_main(["bench", "--quick", "--no-percall", "--no-linear", "--peers", "numpy",
              "--repeats", "3", "--stat", "min", "--json", str(path)])
    assert "ms, min of 3 samples" in capsys.readouterr().out
    for r in json.loads(path.read_text())["results"]:
        assert r["stat"] == "min" and r["times_ms"] == r["min_ms"]
        assert all(r["min_ms"][k] <= r["median_ms"][k] for k in r["min_ms"])
        assert r["x_limit"] == pytest.approx(r["min_ms"]["fastce"] / r["min_ms"]["limit"])


def test_wrong_peer_is_flagged(tiny_bench, monkeypatch, capsys):
    """A peer whose loss differs from fastce's is reported, not silently timed."""
    monkeypatch.setitem(_bench._PEER_FACTORIES, "NumPy", lambda *a: (lambda: 123.0))
    rows = _bench.run_cases(quick=True, peers=["NumPy"], repeats=1)
    assert all("differs from fastce" in r["errors"]["NumPy"] for r in rows)


def test_bench_plot(tiny_bench, tmp_path):
    pytest.importorskip("matplotlib")
    results = _bench.run_cases(quick=True, peers=["NumPy"], repeats=1)
    percall = _bench.run_percall(peers=["NumPy"], repeats=1)
    path = tmp_path / "bench.png"
    _bench.plot(results, str(path), percall, _bench.machine_info(), quick=True)
    assert path.stat().st_size > 10_000


def test_bench_help_lists_the_options():
    out = subprocess.run([sys.executable, "-m", "fastce", "bench", "--help"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    for opt in ("--quick", "--percall", "--peers", "--dtypes", "--json", "--plot", "--cases"):
        assert opt in out


def test_bench_main_accepts_a_namespace(tiny_bench, capsys):
    """main() also takes a bare namespace with the old options only (scripts that call it)."""
    _bench.main(SimpleNamespace(quick=True, no_peers=True, no_linear=True, float64=False,
                                json=None, plot=None))
    assert "CE 64x10" in capsys.readouterr().out
