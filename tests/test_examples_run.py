"""Smoke tests: every script in examples/ runs to completion and prints what it promises."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
TIMEOUT = 120     # each example is meant to finish in well under a minute


def run_example(name, *args, cwd=None, pre=None):
    path = os.path.join(EXAMPLES, name)
    if pre is None:
        cmd = [sys.executable, path, *args]
    else:   # run some code first (e.g. hide a module), then the script as __main__
        code = f"{pre}; import runpy, sys; sys.argv = {[path, *args]!r}; runpy.run_path({path!r}, run_name='__main__')"
        cmd = [sys.executable, "-c", code]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd)
    assert res.returncode == 0, f"{name} exited {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_train_spiral_mlp(tmp_path):
    out = run_example("train_spiral_mlp.py", cwd=tmp_path)
    losses = [float(v) for v in re.findall(r"loss (\d+\.\d+)", out)]
    assert len(losses) >= 5 and losses[-1] < losses[0]          # it prints its loss as it goes
    acc = float(re.search(r"final training accuracy: (\d\.\d+)", out).group(1))
    assert acc >= 0.9


def test_bce_vs_mse(tmp_path):
    png = tmp_path / "curves.png"
    out = run_example("bce_vs_mse.py", "--out", str(png), cwd=tmp_path)
    m = re.search(r"output below 0\.5 after: MSE (\d+) epochs, BCE (\d+) epochs", out)
    assert m and int(m.group(2)) < int(m.group(1))
    final = re.search(r"final output: MSE (\d\.\d+), BCE (\d\.\d+)", out)
    assert float(final.group(2)) < float(final.group(1))
    if importlib.util.find_spec("matplotlib") is not None:
        assert png.exists() and png.stat().st_size > 0
    else:
        assert "matplotlib not installed" in out


def test_bce_vs_mse_default_png_in_cwd(tmp_path):
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib not installed")
    run_example("bce_vs_mse.py", "--epochs", "30", cwd=tmp_path)
    assert (tmp_path / "bce_vs_mse.png").exists()


def test_torch_cpu_training(tmp_path):
    pytest.importorskip("torch")
    out = run_example("torch_cpu_training.py", "--steps", "15", cwd=tmp_path)
    assert re.search(r"torch\.nn\.functional: .*loss step +\d+\.\d+ ms/step", out)
    assert re.search(r"fastce\.torch: .*loss step +\d+\.\d+ ms/step", out)
    assert "speed-up" in out


def test_torch_cpu_training_without_torch(tmp_path):
    # sys.modules['torch'] = None makes `import torch` raise ImportError
    out = run_example("torch_cpu_training.py", cwd=tmp_path, pre="import sys; sys.modules['torch'] = None")
    assert "PyTorch is not installed" in out
