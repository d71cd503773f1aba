"""Issue 8 (11): the kernels' promise to run in a thread with a 64 KiB stack.

One harness for every test of it: the code under test runs once per (shape, axis) case inside a
thread started with ``threading.stack_size``, in a fresh single-threaded interpreter (a stack
overflow there kills the process: the return code says so, not a crashed pytest).
"""
import os
import subprocess
import sys
import textwrap

import pytest

# AddressSanitizer's redzones inflate every stack frame: the promise is about normal builds
skip_under_asan = pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                                     reason="AddressSanitizer's redzones inflate every stack frame")

_TEMPLATE = """
import threading, numpy as np, fastce
threading.stack_size({kib} * 1024)
errors = []
def work():
    try:
        rng = np.random.default_rng(0)
        for shape, axis in {cases!r}:
            for dt in (np.float64, np.float32):
{body}
    except BaseException as e:
        errors.append(repr(e))
th = threading.Thread(target=work)
th.start(); th.join()
assert not errors, errors
print("ok")
"""


def run_with_small_stack(body, cases, kib=64):
    """Run `body` for every (shape, axis) in `cases` and both float dtypes (names in scope:
    np, fastce, rng, shape, axis, dt) in a thread with a `kib` KiB stack; assert it finished."""
    code = _TEMPLATE.format(kib=int(kib), cases=[(tuple(s), int(a)) for s, a in cases],
                            body=textwrap.indent(textwrap.dedent(body).strip("\n"), " " * 16))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, (r.returncode, r.stdout, r.stderr[-2000:])
