"""Typed API (issue 11): `mypy --strict` is clean on the package and on an annotated user
script, catches the mistakes in tests/typing/user_errors.py, and the .pyi stubs of the Cython
modules and of _validate match the compiled / runtime modules (mypy.stubtest).

Runs when mypy is installed (it is in the test extra).  Uses the project's mypy configuration
(pyproject.toml): strict, plus the documented exceptions for untyped third-party APIs.
"""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("mypy")

import fastce  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONFIG = os.path.join(ROOT, "pyproject.toml")
TYPING = os.path.join(HERE, "typing")
STUBBED = ["fastce._ce", "fastce._softmax", "fastce._binary", "fastce._threads",
           "fastce._fastpath", "fastce._div", "fastce._validate"]


@pytest.fixture(scope="module")
def mypy_run(tmp_path_factory):
    if not os.path.exists(CONFIG):
        pytest.skip("pyproject.toml (the mypy configuration) is not next to tests/")
    cache = str(tmp_path_factory.mktemp("mypy_cache"))

    def run(*args, module="mypy"):
        if module == "mypy":
            cmd = [sys.executable, "-m", "mypy", "--config-file", CONFIG, "--cache-dir", cache,
                   "--no-error-summary", "--hide-error-context",
                   "--python-executable", sys.executable, *args]
        else:
            cmd = [sys.executable, "-m", module, "--mypy-config-file", CONFIG, *args]
        # the runtime fastce (stubtest imports it): the one this test session imported
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fastce.__file__)))
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env,
                             timeout=600)
        return res.returncode, res.stdout + res.stderr
    return run


def _modules():
    """fastce's modules; the adapters only where their library is installed."""
    mods = ["fastce", "fastce.functional", "fastce.losses", "fastce._validate",
            "fastce._parallel", "fastce._threads", "fastce._fastpath", "fastce.divergence",
            "fastce._div", "fastce.__main__"]
    if importlib.util.find_spec("torch") is not None:
        mods.append("fastce.torch")
    if importlib.util.find_spec("dask") is not None:
        mods.append("fastce.dask")
    return mods


def test_package_is_strict_clean(mypy_run):
    args = []
    for m in _modules():
        args += ["-m", m]
    code, out = mypy_run("--strict", *args)
    assert code == 0, out


def test_user_script_is_strict_clean(mypy_run):
    code, out = mypy_run("--strict", os.path.join(TYPING, "user_script.py"))
    assert code == 0, out


def test_user_script_runs():
    res = subprocess.run([sys.executable, os.path.join(TYPING, "user_script.py")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_mistakes_are_caught(mypy_run):
    path = os.path.join(TYPING, "user_errors.py")
    with open(path) as f:
        marked = {i for i, line in enumerate(f, 1) if line.rstrip().endswith("# E")}
    code, out = mypy_run("--strict", path)
    reported = {int(m.group(1)) for m in re.finditer(r"user_errors\.py:(\d+): error", out)}
    assert code != 0
    assert reported == marked, out


def test_stubs_match_the_compiled_modules(mypy_run, tmp_path):
    # Cython adds a `__test__` dict to every module, and a `__pyx_capi__` dict of C function
    # capsules to a module whose .pxd exports cdef functions (_ce, _binary: the fast path's
    # entry points); nothing else may differ.
    allow = tmp_path / "allowlist.txt"
    allow.write_text("fastce\\._\\w+\\.__test__\nfastce\\._\\w+\\.__pyx_capi__\n")
    code, out = mypy_run("--allowlist", str(allow), *STUBBED, module="mypy.stubtest")
    assert code == 0, out
