"""`python -m fastce bench`: fused loss+gradient timings against NumPy, memcpy and peers.

Every case times, in one process: fastce's fused loss+gradient, a plain NumPy implementation
of the same thing (what a user would write), `np.copyto` of the logits (the floor for a kernel
that reads the logits once and writes the gradient once), and PyTorch / JAX / scikit-learn when
they are importable.  Medians of several repeats; ratios are taken within the run, because the
machine is shared and absolute times drift.
"""
import json
import platform
import sys
import time

import numpy as np

from . import functional as F
from ._threads import get_num_threads

# name, kind, shape, quick shape
CASES = [
    ("CE 4096x32000", "ce", (4096, 32000), (1024, 32000)),
    ("CE 256x128256", "ce", (256, 128256), (64, 128256)),
    ("CE 8192x1000", "ce", (8192, 1000), (8192, 1000)),
    ("CE 65536x10", "ce", (65536, 10), (65536, 10)),
    ("CE 1000000x2", "ce", (1000000, 2), (250000, 2)),
    ("BCE-with-logits 10M", "bce", (10_000_000,), (2_000_000,)),
    ("CE axis=1 8x21x256x256", "ce_axis1", (8, 21, 256, 256), (2, 21, 256, 256)),
]


# ------------------------------------------------------------------ NumPy reference (fused)

def numpy_ce(x, t):
    """Straightforward NumPy fused CE (mean) + gradient, classes last."""
    n = x.shape[0]
    rows = np.arange(n)
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    loss = (np.log(s[:, 0]) + m[:, 0] - x[rows, t]).mean()
    grad = e / s
    grad[rows, t] -= 1
    grad /= n
    return loss, grad


def numpy_ce_axis1(x, t):
    """NumPy fused CE for the (N, C, H, W) layout, as a user would write it (moveaxis)."""
    xl = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
    loss, g = numpy_ce(xl, t.reshape(-1))
    return loss, np.moveaxis(g.reshape(x.shape[0], *x.shape[2:], x.shape[1]), -1, 1)


def numpy_bce(x, y):
    loss = np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x))))
    grad = (1.0 / (1.0 + np.exp(-x)) - y) / x.size
    return loss, grad


# ------------------------------------------------------------------ peers (optional)

def _torch_fn(kind):
    try:
        import torch
        import torch.nn.functional as tF
    except Exception:
        return None

    def run(x, t):
        xt = torch.from_numpy(x).requires_grad_(True)
        tt = torch.from_numpy(t)
        if kind == "bce":
            loss = tF.binary_cross_entropy_with_logits(xt, tt)
        else:
            loss = tF.cross_entropy(xt, tt)
        loss.backward()
        return loss.item(), xt.grad
    return run


def _jax_fn(kind):
    try:
        import jax
        import jax.numpy as jnp
    except Exception:
        return None
    if kind == "bce":
        def f(x, y):
            return jnp.mean(jnp.maximum(x, 0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x))))
    else:
        axis = 1 if kind == "ce_axis1" else -1

        def f(x, t):
            ls = jax.nn.log_softmax(x, axis=axis)
            return -jnp.mean(jnp.take_along_axis(ls, jnp.expand_dims(t, axis), axis=axis))
    g = jax.jit(jax.value_and_grad(f))

    def run(x, t):
        loss, grad = g(x, t)
        grad.block_until_ready()
        return loss, grad
    return run


def _sklearn_fn(kind):
    if kind == "ce_axis1":
        return None
    try:
        from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss
    except Exception:
        return None
    if kind == "bce":
        lossobj = HalfBinomialLoss()

        def run(x, y):
            loss, grad = lossobj.loss_gradient(y_true=y, raw_prediction=x, n_threads=get_num_threads())
            return loss.mean(), grad
        return run

    def run(x, t):
        lossobj = HalfMultinomialLoss(n_classes=x.shape[1])
        loss, grad = lossobj.loss_gradient(y_true=t.astype(x.dtype), raw_prediction=x,
                                           n_threads=get_num_threads())
        return loss.mean(), grad
    return run


PEERS = {"PyTorch": _torch_fn, "JAX": _jax_fn, "sklearn": _sklearn_fn}


# ------------------------------------------------------------------ timing

def median_ms(fn, repeats, min_time=0.05):
    """Median wall time of fn() in ms over `repeats` runs (more when each run is short)."""
    fn()                                      # warm-up: page faults, JIT, thread pool start
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    n = max(repeats, min(200, int(min_time / max(once, 1e-7))))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def make_inputs(kind, shape, dtype, rng):
    if kind == "bce":
        x = rng.standard_normal(shape).astype(dtype)
        return x, (rng.random(shape) < 0.5).astype(dtype)
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    C = shape[1] if kind == "ce_axis1" else shape[-1]
    tshape = (shape[0],) + shape[2:] if kind == "ce_axis1" else shape[:-1]
    return x, rng.integers(0, C, size=tshape)


def fastce_fn(kind, x, t):
    grad = np.empty_like(x)
    if kind == "bce":
        return lambda: F.binary_cross_entropy_with_logits(x, t, return_grad=True, out=grad)
    axis = 1 if kind == "ce_axis1" else -1
    return lambda: F.cross_entropy(x, t, axis=axis, return_grad=True, out=grad)


def numpy_fn(kind, x, t):
    f = {"ce": numpy_ce, "ce_axis1": numpy_ce_axis1, "bce": numpy_bce}[kind]
    return lambda: f(x, t)


def run_cases(quick=False, dtype=np.float32, peers=True, progress=None, repeats=None):
    rng = np.random.default_rng(0)
    repeats = repeats or (3 if quick else 7)
    results = []
    for i, (name, kind, shape, qshape) in enumerate(CASES):
        shape = qshape if quick else shape
        if progress:
            progress(f"[{i + 1}/{len(CASES)}] {name} {np.dtype(dtype).name} ...")
        x, t = make_inputs(kind, shape, dtype, rng)
        dst = np.empty_like(x)
        row = {"case": name, "shape": list(shape), "dtype": np.dtype(dtype).name,
               "memcpy": median_ms(lambda: np.copyto(dst, x), repeats),
               "fastce": median_ms(fastce_fn(kind, x, t), repeats),
               "numpy": median_ms(numpy_fn(kind, x, t), repeats)}
        if peers:
            for pname, make in PEERS.items():
                fn = make(kind)
                if fn is not None:
                    try:
                        row[pname] = median_ms(lambda: fn(x, t), repeats)
                    except Exception as exc:          # a peer failing must not stop the table
                        row[pname] = None
                        row[pname + "_error"] = str(exc)[:200]
        results.append(row)
    return results


def format_table(results):
    peers = [p for p in PEERS if any(r.get(p) is not None for r in results)]
    head = ["case", "memcpy", "fastce", "xmemcpy", "numpy", "numpy/fastce"] + peers
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in results:
        cells = [r["case"] + ("" if r["dtype"] == "float32" else f" ({r['dtype']})"),
                 f"{r['memcpy']:.2f}", f"{r['fastce']:.2f}",
                 f"{r['fastce'] / r['memcpy']:.1f}x", f"{r['numpy']:.2f}",
                 f"{r['numpy'] / r['fastce']:.1f}x"]
        cells += [f"{r[p]:.2f}" if r.get(p) is not None else "-" for p in peers]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def machine_info():
    import os
    return {"python": sys.version.split()[0], "numpy": np.__version__,
            "platform": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "fastce_threads": get_num_threads()}


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib (or fastce[bench])")
    cols = ["memcpy", "fastce", "numpy"] + [p for p in PEERS if any(r.get(p) for r in results)]
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / len(cols)
    for j, c in enumerate(cols):
        vals = [r[c] / r["memcpy"] if r.get(c) else 0 for r in results]
        ax.bar(np.arange(len(results)) + j * width, vals, width, label=c)
    ax.set_yscale("log")
    ax.set_ylabel("time / memcpy of the logits (log scale, lower is better)")
    ax.set_xticks(np.arange(len(results)) + 0.4)
    ax.set_xticklabels([r["case"] for r in results], rotation=20, ha="right", fontsize=8)
    ax.set_title("Fused loss + gradient, float32, median")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------ fused linear + CE

LINEAR_CASE = ((8192, 256, 65536), (2048, 256, 16384))   # (N, D, V): full, quick


def numpy_linear_ce(X, W, t):
    """The unfused computation: full logits, fused NumPy CE, two matmuls."""
    logits = X @ W.T
    loss, G = numpy_ce(logits, t)
    return loss, G @ W, G.T @ X


def _peak_mib(fn):
    import tracemalloc
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def run_linear_case(quick=False, peers=True, progress=None, repeats=None):
    N, D, V = LINEAR_CASE[1] if quick else LINEAR_CASE[0]
    if progress:
        progress(f"[linear] linear CE N={N} D={D} V={V} float32 ...")
    rng = np.random.default_rng(1)
    X = rng.standard_normal((N, D)).astype(np.float32)
    W = (rng.standard_normal((V, D)) / np.sqrt(D)).astype(np.float32)
    t = rng.integers(0, V, N)
    repeats = repeats or 3
    fused = lambda: F.linear_cross_entropy(X, W, t, return_grad=True)  # noqa: E731
    unfused = lambda: numpy_linear_ce(X, W, t)                          # noqa: E731
    row = {"case": f"linear CE {N}x{D}x{V}", "logits_mib": N * V * 4 / 2**20,
           "fastce": median_ms(fused, repeats, min_time=0),
           "fastce_peak_mib": _peak_mib(fused),
           "numpy_unfused": median_ms(unfused, repeats, min_time=0),
           "numpy_peak_mib": _peak_mib(unfused)}
    if peers:
        try:
            import torch
            import torch.nn.functional as tF
            Xt, Wt, tt = torch.from_numpy(X), torch.from_numpy(W), torch.from_numpy(t)

            def run_torch():
                xg = Xt.clone().requires_grad_(True)
                wg = Wt.clone().requires_grad_(True)
                tF.linear_cross_entropy(xg, wg, tt).backward()
            row["PyTorch"] = median_ms(run_torch, repeats, min_time=0)
        except Exception as exc:
            row["PyTorch_error"] = str(exc)[:200]
    return row


def format_linear(row):
    lines = [f"{row['case']} (float32, loss + grad_input + grad_weight; full logits would be "
             f"{row['logits_mib']:.0f} MiB)",
             f"  fastce fused/chunked : {row['fastce']:8.1f} ms, peak {row['fastce_peak_mib']:7.1f} MiB",
             f"  NumPy unfused        : {row['numpy_unfused']:8.1f} ms, peak {row['numpy_peak_mib']:7.1f} MiB"]
    if "PyTorch" in row:
        lines.append(f"  PyTorch linear_cross_entropy: {row['PyTorch']:8.1f} ms")
    return "\n".join(lines)


def main(args):
    progress = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    results = run_cases(quick=args.quick, peers=not args.no_peers, progress=progress)
    if args.float64:
        results += run_cases(quick=args.quick, dtype=np.float64, peers=False, progress=progress)
    linear = None if args.no_linear else run_linear_case(args.quick, not args.no_peers, progress)
    print(f"fastce fused loss+gradient, ms (median), {get_num_threads()} threads")
    print(format_table(results))
    if linear:
        print()
        print(format_linear(linear))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_info(), "results": results, "linear": linear}, f,
                      indent=2)
        print(f"wrote {args.json}")
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
