"""Smoke tests of `python -m fastce info` and the bench CLI machinery (tiny shapes: no timing
is asserted, only that every column is produced and the NumPy baselines agree with fastce)."""
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import fastce
from fastce import _bench


def test_info_runs():
    out = subprocess.run([sys.executable, "-m", "fastce", "info"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "OpenMP" in out and "SIMD path" in out and f"threads: {fastce.get_num_threads()}" in out


@pytest.mark.parametrize("kind,shape", [("ce", (64, 10)), ("ce_axis1", (2, 3, 4, 5)), ("bce", (100,))])
def test_numpy_baselines_match_fastce(rng, kind, shape):
    x, t = _bench.make_inputs(kind, shape, np.float64, rng)
    ref_loss, ref_grad = _bench.numpy_fn(kind, x, t)()
    if kind == "bce":
        loss, grad = fastce.binary_cross_entropy_with_logits(x, t, return_grad=True)
    else:
        loss, grad = fastce.cross_entropy(x, t, axis=1 if kind == "ce_axis1" else -1, return_grad=True)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)


def test_bench_main_writes_json_and_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_bench, "CASES", [("CE tiny", "ce", (64, 10), (64, 10)),
                                          ("BCE tiny", "bce", (1000,), (1000,)),
                                          ("axis1 tiny", "ce_axis1", (2, 3, 8, 8), (2, 3, 8, 8))])
    monkeypatch.setattr(_bench, "LINEAR_CASE", ((32, 8, 64), (32, 8, 64)))
    path = tmp_path / "bench.json"
    args = SimpleNamespace(quick=True, no_peers=True, no_linear=False, float64=True,
                           json=str(path), plot=None)
    _bench.main(args)
    out = capsys.readouterr().out
    assert "CE tiny" in out and "(float64)" in out and "linear CE 32x8x64" in out
    data = json.loads(path.read_text())
    assert len(data["results"]) == 6 and data["linear"]["fastce_peak_mib"] > 0
    for row in data["results"]:
        assert row["fastce"] > 0 and row["numpy"] > 0 and row["memcpy"] > 0


def test_bench_plot(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [{"case": "CE tiny", "dtype": "float32", "memcpy": 1.0, "fastce": 2.0, "numpy": 5.0}]
    path = tmp_path / "bench.png"
    _bench.plot(rows, str(path))
    assert path.stat().st_size > 1000
