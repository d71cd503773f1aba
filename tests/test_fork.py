"""Child processes after the parent ran multi-threaded kernels (issue 8, item 1).

libgomp's thread pool does not survive fork(): before the fix, the first parallel kernel in a
forked child waited forever.  Each scenario runs in a fresh interpreter under a timeout, so a
regression fails the test instead of hanging the suite.
"""

import os
import subprocess
import sys
import textwrap

import pytest

import fastce

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")

# Prints OK when every child's results equal the parent's (bitwise) — the parent computes them
# with its OpenMP team first, which is what used to poison the children.
_SCRIPT = textwrap.dedent(r"""
    import multiprocessing as mp, os, sys
    from concurrent.futures import ProcessPoolExecutor
    import numpy as np
    import fastce
    from fastce import functional as FN

    def work(seed):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((512, 100)).astype(np.float32)   # > PARALLEL_MIN_ELEMENTS
        t = rng.integers(0, 100, 512)
        assert x.size >= FN.PARALLEL_MIN_ELEMENTS
        loss, g = fastce.cross_entropy(x, t, return_grad=True)
        b = fastce.binary_cross_entropy_with_logits(x, (x > 0).astype(np.float32))
        s = fastce.softmax(x.reshape(8, 64, 100), axis=1)
        return float(loss), g.tobytes(), float(b), s.tobytes(), fastce.get_num_threads()

    if __name__ == "__main__":
        method = sys.argv[1]
        parent = work(0)
        assert parent[4] == fastce.get_num_threads()
        if method == "os.fork":
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                child = work(0)
                os.write(w, b"1" if child[:4] == parent[:4] and child[4] == 1 else b"0")
                os._exit(0)
            os.waitpid(pid, 0)
            assert os.read(r, 1) == b"1", "forked child computed different results"
        elif method == "pool":
            with mp.get_context(sys.argv[2]).Pool(2) as pool:
                results = pool.map(work, [0, 0, 0])
            assert all(c[:4] == parent[:4] for c in results)
        else:
            with ProcessPoolExecutor(2, mp_context=mp.get_context(sys.argv[2])) as ex:
                results = list(ex.map(work, [0, 0]))
            assert all(c[:4] == parent[:4] for c in results)
        print("OK")
""")


@pytest.mark.parametrize("method", [("os.fork", ""), ("pool", "fork"), ("pool", "spawn"),
                                    ("executor", "fork"), ("executor", "forkserver")],
                         ids=lambda m: "-".join(filter(None, m)))
def test_child_processes_after_parent_used_threads(tmp_path, method):
    script = tmp_path / "fork_check.py"
    script.write_text(_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="2")      # a real team in the parent, even on 1 core
    try:
        proc = subprocess.run([sys.executable, str(script), *method], capture_output=True,
                              text=True, timeout=60, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{method}: child process deadlocked (timed out)")
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-2000:]


def test_forked_child_reports_one_thread():
    """get_num_threads() tells the truth in a forked child: kernels run serially there."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                       # pragma: no cover - runs in the child
        os.write(w, str(fastce.get_num_threads()).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 8) == b"1"
