"""The suite's closing line names the reference tests it skipped and how to enable them
(tests/conftest.py: pytest_terminal_summary)."""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _pytest_without(modules, *test_args):
    hide = "; ".join(f"sys.modules[{m!r}] = None" for m in modules) or "pass"  # import fails
    code = (f"import sys; {hide}; import pytest; "
            f"raise SystemExit(pytest.main({list(test_args)!r} + ['-q', '-p', 'no:cacheprovider']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=HERE, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_missing_torch_is_reported_with_the_install_command():
    out = _pytest_without(["torch"], "test_api_names.py", "test_nll.py", "-k",
                          "torch or input_keyword")
    line = [ln for ln in out.splitlines() if ln.startswith("fastce: reference tests skipped")]
    assert len(line) == 1, out
    assert "pip install torch==2.13.0" in line[0]
    # every skip is accounted for (torch's, and dask's where dask is not installed either)
    counts = {mod: int(n) for n, mod in re.findall(r"(\d+) need (\w+)", line[0])}
    skipped = int(re.search(r"(\d+) skipped", out).group(1))
    assert counts.get("torch", 0) > 0 and sum(counts.values()) == skipped, out


def test_no_line_when_nothing_is_missing():
    out = _pytest_without([], "test_api_names.py", "-k", "first_parameter")
    assert "fastce: reference tests skipped" not in out, out
