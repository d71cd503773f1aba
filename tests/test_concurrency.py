"""Concurrency and resources (issue 4).

- The GIL is released in the kernels: a pure-Python thread keeps running while a kernel runs,
  and 8 Python threads calling fastce at once on different arrays get bitwise the results of
  serial calls.
- Determinism: results are bitwise identical for 1, 2, 3 and 4 OpenMP threads
  (threadpoolctl.threadpool_limits), on every kernel path, for inputs above
  fastce.functional.PARALLEL_MIN_ELEMENTS.
- No leak: thousands of calls (including ones that raise) grow neither tracemalloc-traced memory
  nor the resident set size beyond a small bound.
"""

import gc
import os
import threading
import time
import tracemalloc

import numpy as np
import pytest

import fastce
from fastce import functional as FN

threadpoolctl = pytest.importorskip("threadpoolctl")


def _bitwise_equal(a, b):
    """Same type, dtype, shape and bytes (NaNs with the same payload compare equal)."""
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(_bitwise_equal, a, b))
    if isinstance(a, float):
        return isinstance(b, float) and np.float64(a).tobytes() == np.float64(b).tobytes()
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    return (type(a) is type(b) and a_arr.dtype == b_arr.dtype and a_arr.shape == b_arr.shape
            and a_arr.tobytes() == b_arr.tobytes())


# =========================================================================== workloads
# Paths: "block" (B == 1, C <= 16), "row" (B == 1, C > 16), "cols" (B > 1, axis=1).

PATHS = {
    "block": ((14_000, 5), -1),   # 70k elements: > PARALLEL_MIN_ELEMENTS, 109 full blocks + a partial
    "row": ((701, 100), -1),
    "cols": ((9, 4, 2_001), 1),
}


def make_workload(rng, path, dtype):
    shape, axis = PATHS[path]
    C = shape[axis]
    ps = tuple(np.delete(np.array(shape), axis))
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    t = rng.integers(0, C, size=ps)
    t.reshape(-1)[::11] = -100
    z = rng.random(shape)
    q = (z / z.sum(axis=axis, keepdims=True)).astype(dtype)
    return dict(
        x=x, t=t, q=q, axis=axis,
        w=rng.uniform(0.5, 2.0, C).astype(dtype),
        ls=fastce.log_softmax(x, axis=axis),
        sm=fastce.softmax(x, axis=axis),
        g=rng.standard_normal(shape).astype(dtype),
        gn=rng.standard_normal(ps).astype(dtype),
        y=(rng.random(shape) < 0.3).astype(dtype),
        p=rng.uniform(0.001, 0.999, shape).astype(dtype),
        pw=rng.uniform(0.5, 3.0, shape[-1]).astype(dtype),
        wb=rng.uniform(0.5, 2.0, shape).astype(dtype),
    )


def workload_calls(d):
    a = d["axis"]
    F = fastce
    out = []
    for red in ("mean", "sum", "none"):
        go = d["gn"] if red == "none" else 0.7
        out += [
            (f"ce_{red}", lambda red=red, go=go: F.cross_entropy(
                d["x"], d["t"], reduction=red, axis=a, return_grad=True, grad_output=go)),
            (f"ce_w_ls_{red}", lambda red=red, go=go: F.cross_entropy(
                d["x"], d["t"], weight=d["w"], label_smoothing=0.15, reduction=red, axis=a,
                return_grad=True, grad_output=go)),
            (f"ce_soft_{red}", lambda red=red: F.cross_entropy(
                d["x"], d["q"], weight=d["w"], label_smoothing=0.05, reduction=red, axis=a,
                return_grad=True)),
            (f"ce_grad_{red}", lambda red=red, go=go: F.cross_entropy_grad(
                d["x"], d["t"], reduction=red, axis=a, grad_output=go)),
            (f"nll_{red}", lambda red=red: F.nll_loss(d["ls"], d["t"], weight=d["w"], reduction=red,
                                                      axis=a, return_grad=True)),
            (f"bcel_{red}", lambda red=red: F.binary_cross_entropy_with_logits(
                d["x"], d["y"], weight=d["wb"], pos_weight=d["pw"], reduction=red, return_grad=True)),
            (f"bcel_plain_{red}", lambda red=red: F.binary_cross_entropy_with_logits(
                d["x"], d["q"], reduction=red, return_grad=True)),
            (f"bce_{red}", lambda red=red: F.binary_cross_entropy(d["p"], d["y"], weight=d["wb"],
                                                                  reduction=red, return_grad=True)),
            (f"cat_{red}", lambda red=red: F.categorical_cross_entropy(d["sm"], d["q"], reduction=red,
                                                                       axis=a)),
        ]
    out += [
        ("log_softmax", lambda: F.log_softmax(d["x"], axis=a)),
        ("softmax", lambda: F.softmax(d["x"], axis=a)),
        ("logsumexp", lambda: F.logsumexp(d["x"], axis=a)),
        ("log_softmax_vjp", lambda: F.log_softmax_vjp(d["ls"], d["g"], axis=a)),
        ("softmax_vjp", lambda: F.softmax_vjp(d["sm"], d["g"], axis=a)),
        ("accuracy", lambda: F.accuracy(d["x"], np.where(d["t"] < 0, 0, d["t"]), axis=a)),
    ]
    return out


# =========================================================================== determinism


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("path", list(PATHS))
def test_bitwise_identical_across_thread_counts(path, dtype):
    rng = np.random.default_rng(hash(path) % 2**32)
    d = make_workload(rng, path, dtype)
    assert d["x"].size > FN.PARALLEL_MIN_ELEMENTS
    results = {}
    for n in (1, 2, 3, 4):
        with threadpoolctl.threadpool_limits(n):
            assert fastce.get_num_threads() == (n if fastce.OPENMP else 1), \
                "threadpool_limits does not reach fastce's OpenMP"
            results[n] = [(name, call()) for name, call in workload_calls(d)]
    for n in (2, 3, 4):
        for (name, want), (_, got) in zip(results[1], results[n]):
            assert _bitwise_equal(got, want), f"{path}/{name}: {n} threads differ from 1 thread"


def test_bitwise_identical_across_thread_counts_odd_sizes():
    """Sizes that do not divide evenly into blocks, tiles or chunks, just above the threshold."""
    rng = np.random.default_rng(3)
    cases = [((32768 // 3 + 1, 3), -1), ((331, 101), -1), ((3, 7, 1601), 1), ((2, 40, 411), 1),
             ((70_001,), -1)]
    for shape, axis in cases:
        x = rng.standard_normal(shape)
        C = shape[axis]
        t = rng.integers(0, C, size=tuple(np.delete(np.array(shape), axis)))
        y = rng.random(shape)
        calls = [lambda: fastce.log_softmax(x, axis=axis),
                 lambda: fastce.cross_entropy(x, t, axis=axis, return_grad=True, label_smoothing=0.1),
                 lambda: fastce.binary_cross_entropy_with_logits(x, y, return_grad=True),
                 lambda: fastce.binary_cross_entropy_with_logits(x, y, reduction="sum",
                                                                 pos_weight=np.full(shape[-1], 2.0))]
        want = [c() for c in calls]
        for n in (2, 3, 4):
            with threadpoolctl.threadpool_limits(n):
                for c, w in zip(calls, want):
                    assert _bitwise_equal(c(), w), (shape, n)


# =========================================================================== GIL


def _timed_kernel_window(call):
    """Run `call` once while a pure-Python thread ticks; return the tick times and the call's
    (start, end)."""
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            sum(range(50))  # a little pure-Python work; needs the GIL

    th = threading.Thread(target=ticker)
    th.start()
    try:
        time.sleep(0.01)
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
    finally:
        stop.set()
        th.join()
    return np.array(ticks), t0, t1


@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("kernel", ["log_softmax", "cross_entropy", "cross_entropy_cols",
                                    "bce_with_logits", "bce_probs", "softmax_vjp", "logsumexp"])
def test_gil_released_during_kernels(kernel, nthreads):
    """While a long kernel runs, another Python thread keeps executing bytecode.

    If the GIL were held for the whole kernel, no tick could happen inside the call.
    """
    rng = np.random.default_rng(1)
    # Calls of up to 64000 x 1000 are built by repeating one random 1000 x 1000 block: the data
    # only has to be valid input, and drawing 2 x 64M fresh normals per size took seconds.
    block = rng.standard_normal((1000, 1000), dtype=np.float32)
    pblock = rng.random((1000, 1000), dtype=np.float32)

    def make_call(rows):
        x = np.resize(block, (rows, 1000))
        if kernel == "log_softmax":
            return lambda: fastce.log_softmax(x, out=np.empty_like(x))
        if kernel == "cross_entropy":
            t = rng.integers(0, 1000, size=rows)
            return lambda: fastce.cross_entropy(x, t, return_grad=True)
        if kernel == "cross_entropy_cols":
            x3 = x.reshape(rows // 100, 100, 1000)
            t3 = rng.integers(0, 100, size=(rows // 100, 1000))
            return lambda: fastce.cross_entropy(x3, t3, axis=1, return_grad=True)
        if kernel == "logsumexp":
            return lambda: fastce.logsumexp(x)
        y = np.resize(pblock, (rows, 1000))
        if kernel == "bce_with_logits":
            return lambda: fastce.binary_cross_entropy_with_logits(x, y, return_grad=True)
        if kernel == "bce_probs":                    # (the [0, 1] scan, then the kernel)
            return lambda: fastce.binary_cross_entropy(y, y, return_grad=True)
        assert kernel == "softmax_vjp"
        return lambda: fastce.softmax_vjp(y, x)

    with threadpoolctl.threadpool_limits(nthreads):
        # One call must last long enough (>= 60 ms) for the ticker to be scheduled inside it:
        # ticks *between* calls would pass even with the GIL held, so the window is one call.
        rows = 2000
        call = make_call(rows)
        call()  # warm up
        while rows < 64000:
            t0 = time.perf_counter()
            call()
            if time.perf_counter() - t0 >= 0.06:
                break
            rows *= 2
            call = make_call(rows)
        for attempt in range(3):
            ticks, t0, t1 = _timed_kernel_window(call)
            span = t1 - t0
            inside = ticks[(ticks > t0 + 0.2 * span) & (ticks < t1 - 0.2 * span)]
            if len(inside) >= 3:
                return
    pytest.fail(f"{kernel}: no Python progress during {span * 1e3:.0f} ms of kernel time "
                f"(ticks inside the middle 60%: {len(inside)}) -- is the GIL held?")


def test_eight_threads_match_serial():
    """8 Python threads call fastce at once on different arrays: bitwise the serial results."""
    rng = np.random.default_rng(8)
    jobs = []
    for i in range(8):
        kind = i % 4
        if kind == 0:
            x = rng.standard_normal((40_000, 50)).astype(np.float32)
            t = rng.integers(0, 50, size=40_000)
            t[::9] = -100
            jobs.append(lambda x=x, t=t: fastce.cross_entropy(x, t, return_grad=True, label_smoothing=0.1,
                                                              reduction="none"))
        elif kind == 1:
            x = rng.standard_normal((300_000, 5))
            t = rng.integers(0, 5, size=300_000)
            jobs.append(lambda x=x, t=t: fastce.cross_entropy(x, t, return_grad=True, weight=np.arange(1.0, 6)))
        elif kind == 2:
            x = rng.standard_normal((50, 8, 4000)).astype(np.float32)
            jobs.append(lambda x=x: (fastce.log_softmax(x, axis=1), fastce.logsumexp(x, axis=1)))
        else:
            x = rng.standard_normal((1000, 1500))
            y = rng.random((1000, 1500))
            jobs.append(lambda x=x, y=y: fastce.binary_cross_entropy_with_logits(
                x, y, pos_weight=np.full(1500, 1.5), return_grad=True))
    serial = [job() for job in jobs]

    for rounds in range(2):
        results = [None] * len(jobs)
        errors = []
        barrier = threading.Barrier(len(jobs))

        def run(i):
            try:
                barrier.wait()
                results[i] = jobs[i]()
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        for i, (got, want) in enumerate(zip(results, serial)):
            assert _bitwise_equal(got, want), f"thread {i} (round {rounds}) differs from the serial call"


def test_threads_with_in_place_outputs_and_errors():
    """Concurrent in-place (out=) calls and concurrent failing calls do not interfere."""
    rng = np.random.default_rng(9)
    xs = [rng.standard_normal((20_000, 30)) for _ in range(6)]
    ts = [rng.integers(0, 30, size=20_000) for _ in range(6)]
    want = [fastce.cross_entropy(x, t, return_grad=True) for x, t in zip(xs, ts)]
    bufs = [x.copy() for x in xs]
    results = [None] * 6
    errors = []
    barrier = threading.Barrier(8)

    def good(i):
        barrier.wait()
        results[i] = fastce.cross_entropy(bufs[i], ts[i], return_grad=True, out=bufs[i])

    def bad():
        barrier.wait()
        for _ in range(50):
            try:
                fastce.cross_entropy(xs[0], np.full(20_000, 31))
            except IndexError:
                pass
            else:  # pragma: no cover
                errors.append("no IndexError")

    threads = [threading.Thread(target=good, args=(i,)) for i in range(6)]
    threads += [threading.Thread(target=bad) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for i in range(6):
        assert results[i][1] is bufs[i]
        assert _bitwise_equal(results[i], want[i])


# =========================================================================== leaks


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _leak_round(rng, arrays):
    """One round of many different calls, a third of which raise."""
    x, t, xs, ts, y, p, out = arrays
    F = fastce
    F.cross_entropy(x, t, return_grad=True)
    F.cross_entropy(x, t, return_grad=True, out=out, reduction="none", label_smoothing=0.2)
    F.cross_entropy_grad(xs, ts, weight=np.ones(xs.shape[1]))
    F.nll_loss(x, t, return_grad=True)
    F.binary_cross_entropy_with_logits(x, y, pos_weight=np.ones(x.shape[1]), return_grad=True)
    F.binary_cross_entropy(p, y, reduction="none", return_grad=True)
    F.log_softmax(x, out=out)
    F.softmax_vjp(p, y)
    F.logsumexp(xs)
    F.categorical_cross_entropy(p, t)
    F.accuracy(xs, ts)
    for bad in (
        lambda: F.cross_entropy(x, t + x.shape[1]),             # IndexError
        lambda: F.cross_entropy(x, t, reduction="avg"),         # ValueError
        lambda: F.cross_entropy(x, t.astype(np.float64)),       # TypeError
        lambda: F.cross_entropy(x, t, weight=np.ones(3)),       # ValueError
        lambda: F.binary_cross_entropy(p + 2, y),               # ValueError
        lambda: F.log_softmax(x.astype(complex)),               # TypeError
        lambda: F.cross_entropy(x, t, return_grad=True, out=out[:, :2]),  # ValueError
        lambda: F.cross_entropy(x, t, label_smoothing=2.0),    # ValueError
    ):
        try:
            bad()
        except (IndexError, ValueError, TypeError):
            pass
        else:  # pragma: no cover
            raise AssertionError("expected an exception")


def _leak_arrays(rng, n_rows):
    x = rng.standard_normal((n_rows, 20))
    t = rng.integers(0, 20, size=n_rows)
    xs = rng.standard_normal((n_rows, 3))
    ts = rng.integers(0, 3, size=n_rows)
    y = rng.random((n_rows, 20))
    p = rng.uniform(0.01, 0.99, (n_rows, 20))
    return x, t, xs, ts, y, p, np.empty_like(x)


def test_no_leak_tracemalloc():
    """Small inputs, many calls: Python-visible (and NumPy, which reports to tracemalloc)
    allocations must not accumulate."""
    rng = np.random.default_rng(10)
    arrays = _leak_arrays(rng, 50)
    for _ in range(50):  # warm caches (error-message formatting, numpy ufunc caches, ...)
        _leak_round(rng, arrays)
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(30):
            _leak_round(rng, arrays)
        gc.collect()
        base, _ = tracemalloc.get_traced_memory()
        rounds = 250  # 250 x 19 = 4750 calls, 2000 of them raising
        for _ in range(rounds):
            _leak_round(rng, arrays)
        gc.collect()
        now, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    growth = now - base
    assert growth < 64 * 1024, f"traced memory grew by {growth} bytes over {rounds * 19} calls"


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="ASan's quarantine keeps freed memory resident (tools/sanitize.sh)")
def test_no_leak_rss():
    """Medium inputs (a leaked buffer per call would be ~100 KB): RSS must stay flat."""
    rng = np.random.default_rng(11)
    arrays = _leak_arrays(rng, 400)  # x: 400 x 20 float64 = 64 KB
    big = rng.standard_normal((2000, 20))  # > PARALLEL_MIN_ELEMENTS: OpenMP path too
    bt = rng.integers(0, 20, size=2000)
    for _ in range(30):
        _leak_round(rng, arrays)
        fastce.cross_entropy(big, bt, return_grad=True)
    gc.collect()
    base = _rss_bytes()
    rounds = 150  # ~3000 calls
    for _ in range(rounds):
        _leak_round(rng, arrays)
        fastce.cross_entropy(big, bt, return_grad=True)
    gc.collect()
    growth = _rss_bytes() - base
    assert growth < 4 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over {rounds * 20} calls"
