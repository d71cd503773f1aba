"""`python -m fastce bench`: fastce against the hardware limit and against peers, in one process.

Three sections (each can be skipped):

throughput  Large shapes.  Fused loss + gradient ("fwd+bwd") and forward-only ("fwd") rows, in
            float32 and float64.  The *limit* of a fwd+bwd row is ``np.copyto`` of the logits
            (a kernel must read the logits once and write a gradient of the same size); the limit
            of a fwd row is one read pass, ``np.max`` of the logits.  The divergence rows
            (kl_div_logits, entropy, sigmoid_focal_loss, kl_div fwd+bwd; top-k accuracy fwd)
            follow; the limit of the two KL rows is copying both input arrays.
per-call    Mini-batch shapes, the cost of one call as a trainer sees it: the median over k
            samples of 1000 back-to-back calls, in microseconds per call, float32, the gradient
            written into a reused ``out=`` buffer.
linear      Fused linear + cross-entropy against the unfused NumPy computation (time and peak
            memory).

Peers (each optional: a peer that is not importable is skipped and named on stderr):
NumPy (the code a user would write), PyTorch eager, ``torch.compile`` (inductor, CPU), JAX
``jit``, numba (``@njit(parallel=True)`` loops for the throughput rows, plain ``@njit`` for the
per-call rows, where starting a thread team costs more than the work) and scikit-learn's
``_loss`` module.

Rules that keep the comparison fair to the peers:

* every peer gets its inputs already in its own array type (``torch.from_numpy`` views, JAX
  arrays placed on the device) and keeps its gradient in its own type (no copy back);
* compile and JIT time is excluded: each callable is warmed up before it is timed
  (``torch.compile(dynamic=False)`` compiled afresh per case; JAX ``jit`` with
  ``block_until_ready``; numba compiles on its first call);
* torch, numba and scikit-learn get fastce's thread count; XLA sizes its own pool;
* each implementation is timed in its own block of samples after a short pause (never call by
  call interleaved with another runtime, whose spinning thread pool would stall it), in two
  passes (forward, then reverse order) so drift in the machine's load is spread over all;
  the figure reported is the median, the JSON also has the minimum and the IQR.

Absolute times drift on a shared machine; compare the ratios within one run.
"""
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import NDArray

from . import functional as F
from ._threads import get_num_threads

Arr = NDArray[Any]
Call = Callable[[], Any]            # a prepared zero-argument call of one implementation
Row = Dict[str, Any]                # one table row / the machine description, as in the JSON
Shape = Tuple[int, ...]
Progress = Optional[Callable[[str], None]]

SOFTCAP = 30.0
FUSED, FWD, OBJECT = "fwd+bwd", "fwd", "loss object"

# Every implementation, in column order.  "limit" and "fastce" are always run; the others are
# peers.  Display names are the JSON keys.
PEERS = ("NumPy", "torch eager", "torch.compile", "JAX jit", "numba", "sklearn")
PERCALL_PEERS = ("numba", "NumPy", "torch eager", "torch.compile", "JAX jit")
_PEER_MODULES = {"NumPy": "numpy", "torch eager": "torch", "torch.compile": "torch",
                 "JAX jit": "jax", "numba": "numba", "sklearn": "sklearn"}
# Accepted spellings for --peers.
_PEER_ALIASES = {"numpy": "NumPy", "torch": "torch eager", "torch-eager": "torch eager",
                 "eager": "torch eager", "torch.compile": "torch.compile",
                 "torch-compile": "torch.compile", "compile": "torch.compile", "jax": "JAX jit",
                 "numba": "numba", "sklearn": "sklearn", "scikit-learn": "sklearn"}


# ====================================================================== the machine

def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo, else lscpu, else platform), with family/model
    numbers and the widest vector ISA when /proc/cpuinfo gives them ("AMD EPYC" alone does not
    say which generation)."""
    fields: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break                  # the first processor's block is enough
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or fields.get("Model name") or _lscpu_model()
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    extra = []
    if "cpu family" in fields and "model" in fields:
        extra.append(f"family {fields['cpu family']} model {fields['model']}")
    flags = set(fields.get("flags", "").split())
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    if isa:
        extra.append(isa)
    return f"{name} ({', '.join(extra)})" if extra else name


def _lscpu_model() -> Optional[str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return None


def _version(dist: str) -> Optional[str]:
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:
        return None


def machine_info() -> Row:
    from . import __version__
    versions = {"fastce": __version__, "python": sys.version.split()[0], "numpy": np.__version__}
    for dist in ("torch", "jax", "jaxlib", "numba", "scikit-learn", "matplotlib"):
        v = _version(dist)
        if v:
            versions[dist] = v
    return {"cpu": cpu_model(), "threads": get_num_threads(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "versions": versions,
            "load_average_start": load_average()}


def load_average() -> Optional[float]:
    """1-minute load average (None where the OS has none): a number near or above the CPU
    count means other processes compete for the cores and thread teams lose time waiting."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _threads(info: Row) -> str:
    n = info["threads"]
    return f"{n} thread" + ("" if n == 1 else "s")


def header_line(info: Row, quick: bool) -> str:
    line = (f"CPU: {info['cpu']}; {_threads(info)} (fastce, torch, numba, sklearn; XLA "
            f"sizes its own pool); {'--quick shapes' if quick else 'full shapes'}; "
            f"fastce {info['versions']['fastce']}, NumPy {info['versions']['numpy']}")
    load = info.get("load_average_start")
    if load is not None:
        line += f"; load average {load:g} on {info['cpus']} CPUs"
        if info["cpus"] and load > 0.5 * info["cpus"]:
            line += " (busy machine: multi-threaded timings are noisy; compare ratios)"
    return line


# ====================================================================== cases

@dataclass(frozen=True)
class Case:
    """One benchmark row: what is computed (kind, mode), on which shape (full and --quick)."""
    kind: str              # "ce" (classes last), "ce_axis1" (N, C, H, W), "ce_softcap", "bce",
                           # or one of DIV_KINDS (kl_logits, entropy, focal, kl_div,
                           # accuracy)
    mode: str              # FUSED, FWD, or OBJECT (per-call: loss object + backward)
    shape: Shape
    quick_shape: Optional[Shape] = None

    def run_shape(self, quick: bool) -> Shape:
        return tuple(self.quick_shape if quick and self.quick_shape else self.shape)


def _count(n: int) -> str:
    """10000000 -> '10M', 2500000 -> '2.5M', 256 -> '256'."""
    return f"{n / 1e6:g}M" if n >= 1_000_000 else str(n)


def case_label(kind: str, shape: Shape) -> str:
    """The row label, built from the shape that actually ran."""
    if kind in DIV_KINDS:
        return div_label(kind, shape)
    dims = "x".join(map(str, shape))
    if kind == "bce":
        return f"BCE-with-logits {_count(int(np.prod(shape)))}"
    if kind == "ce_axis1":
        return f"CE axis=1 {dims}"
    if kind == "ce_softcap":
        return f"CE softcap={SOFTCAP:g} {dims}"
    return f"CE {dims}"


def percall_label(case: "Case") -> str:
    shape = "(" + ", ".join(map(str, case.shape)) + ("," if len(case.shape) == 1 else "") + ")"
    if case.mode == OBJECT:
        return f"CrossEntropyLoss {shape} obj(x, t, out=g) + backward()"
    name = "BCE-with-logits" if case.kind == "bce" else "CE"
    return f"{name} {shape}" + (" fwd only" if case.mode == FWD else "")


CASES = [
    # fused loss + gradient
    Case("ce", FUSED, (4096, 32000), (1024, 32000)),
    Case("ce", FUSED, (256, 128256), (64, 128256)),
    Case("ce", FUSED, (8192, 1000), (2048, 1000)),
    Case("ce", FUSED, (65536, 10), (16384, 10)),
    Case("ce", FUSED, (1_000_000, 2), (250_000, 2)),
    Case("bce", FUSED, (10_000_000,), (2_500_000,)),
    Case("ce_softcap", FUSED, (8192, 1000), (2048, 1000)),
    Case("ce_axis1", FUSED, (8, 21, 256, 256), (2, 21, 256, 256)),
    # forward only
    Case("ce", FWD, (4096, 32000), (1024, 32000)),
    Case("ce", FWD, (8192, 1000), (2048, 1000)),
    Case("ce", FWD, (65536, 10), (16384, 10)),
    Case("ce", FWD, (1_000_000, 2), (250_000, 2)),
    Case("bce", FWD, (10_000_000,), (2_500_000,)),
]

PERCALL_CASES = [
    Case("ce", FUSED, (32, 10)),
    Case("ce", FUSED, (256, 10)),
    Case("ce", FUSED, (64, 1000)),
    Case("bce", FUSED, (256,)),
    Case("ce", FWD, (32, 10)),
    Case("ce", OBJECT, (32, 10)),
]
PERCALL_CALLS = 1000

LINEAR_CASE = ((8192, 256, 65536), (2048, 256, 16384))   # (N, D, V): full, quick


def make_inputs(kind: str, shape: Shape, dtype: Any,
                rng: np.random.Generator) -> Tuple[Arr, Arr]:
    """Logits and targets: class indices (int64) for CE, {0, 1} floats for BCE."""
    if kind in DIV_KINDS:
        return div_inputs(kind, shape, dtype, rng)
    if kind == "bce":
        x = rng.standard_normal(shape).astype(dtype)
        return x, (rng.random(shape) < 0.5).astype(dtype)
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    C = shape[1] if kind == "ce_axis1" else shape[-1]
    tshape = (shape[0],) + tuple(shape[2:]) if kind == "ce_axis1" else tuple(shape[:-1])
    return x, rng.integers(0, C, size=tshape)


# ====================================================================== NumPy (what a user writes)

def numpy_ce(x: Arr, t: Arr, out: Optional[Arr] = None) -> Tuple[Any, Arr]:
    """Fused CE (mean) + gradient, classes last; the gradient goes into `out` when given."""
    n = x.shape[0]
    rows = np.arange(n)
    picked = x[rows, t]
    m = x.max(axis=1, keepdims=True)
    e = np.subtract(x, m, out=out)
    np.exp(e, out=e)
    s = e.sum(axis=1, keepdims=True)
    loss = (np.log(s[:, 0]) + m[:, 0] - picked).mean()
    e /= s
    e[rows, t] -= 1
    e /= n
    return loss, e


def numpy_ce_loss(x: Arr, t: Arr) -> Any:
    """Forward-only CE (mean), classes last."""
    m = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - m).sum(axis=1)) + m[:, 0]
    return (lse - x[np.arange(x.shape[0]), t]).mean()


def numpy_ce_axis1(x: Arr, t: Arr, out: Optional[Arr] = None) -> Tuple[Any, Arr]:
    """Fused CE for the (N, C, H, W) layout, as a user would write it (moveaxis)."""
    xl = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
    loss, g = numpy_ce(xl, t.reshape(-1))
    g = np.moveaxis(g.reshape(x.shape[0], *x.shape[2:], x.shape[1]), -1, 1)
    if out is not None:
        np.copyto(out, g)
        g = out
    return loss, g


def numpy_ce_axis1_loss(x: Arr, t: Arr) -> Any:
    return numpy_ce_loss(np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]), t.reshape(-1))


def numpy_ce_softcap(x: Arr, t: Arr, out: Optional[Arr] = None,
                     cap: float = SOFTCAP) -> Tuple[Any, Arr]:
    """Fused CE of cap * tanh(x / cap): a tanh pre-pass, CE, and the chain rule."""
    th = np.tanh(x / cap)
    loss, g = numpy_ce(cap * th, t, out=out)
    g *= 1 - th * th
    return loss, g


def numpy_ce_softcap_loss(x: Arr, t: Arr, cap: float = SOFTCAP) -> Any:
    return numpy_ce_loss(cap * np.tanh(x / cap), t)


def numpy_bce(x: Arr, y: Arr, out: Optional[Arr] = None) -> Tuple[Any, Arr]:
    """Fused BCE-with-logits (mean) + gradient."""
    loss = np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x))))
    if out is None:
        grad = (1.0 / (1.0 + np.exp(-x)) - y) / x.size
    else:
        grad = np.negative(x, out=out)
        np.exp(grad, out=grad)
        grad += 1
        np.reciprocal(grad, out=grad)
        grad -= y
        grad /= x.size
    return loss, grad


def numpy_bce_loss(x: Arr, y: Arr) -> Any:
    return np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x))))


_NUMPY: Dict[Tuple[str, str], Callable[..., Any]] = {
    ("ce", FUSED): numpy_ce, ("ce", FWD): numpy_ce_loss,
    ("ce_axis1", FUSED): numpy_ce_axis1, ("ce_axis1", FWD): numpy_ce_axis1_loss,
    ("ce_softcap", FUSED): numpy_ce_softcap, ("ce_softcap", FWD): numpy_ce_softcap_loss,
    ("bce", FUSED): numpy_bce, ("bce", FWD): numpy_bce_loss}


def numpy_fn(kind: str, x: Arr, t: Arr, out: Optional[Arr] = None,
             mode: str = FUSED) -> Call:
    """Zero-arg call of the NumPy implementation (a loss object is the fused function)."""
    f = _NUMPY[(kind, FUSED if mode == OBJECT else mode)]
    return partial(f, x, t) if mode == FWD else partial(f, x, t, out=out)


# ====================================================================== numba (what a user writes)

# numba recognises `prange` by identity; the real numba.prange is swapped in before the first
# numba kernel is compiled (numba reads module globals at compile time).  As plain Python the
# two behave alike, and a non-parallel @njit treats prange as range.
prange = range


def _nb_ce_fused(x: Arr, t: Arr, g: Arr) -> Any:
    """CE (mean) + gradient into g, classes last."""
    n, c = x.shape
    inv_n = 1.0 / n
    total = 0.0
    for i in prange(n):
        m = x[i, 0]
        for j in range(1, c):
            m = max(m, x[i, j])
        s = 0.0
        for j in range(c):
            e = np.exp(x[i, j] - m)
            g[i, j] = e
            s += e
        total += np.log(s) + m - x[i, t[i]]
        r = inv_n / s
        for j in range(c):
            g[i, j] *= r
        g[i, t[i]] -= inv_n
    return total * inv_n


def _nb_ce_loss(x: Arr, t: Arr) -> Any:
    """Forward-only CE (mean), classes last."""
    n, c = x.shape
    total = 0.0
    for i in prange(n):
        m = x[i, 0]
        for j in range(1, c):
            m = max(m, x[i, j])
        s = 0.0
        for j in range(c):
            s += np.exp(x[i, j] - m)
        total += np.log(s) + m - x[i, t[i]]
    return total / n


def _nb_bce_fused(x: Arr, y: Arr, g: Arr) -> Any:
    """BCE-with-logits (mean) + gradient into g (1-D)."""
    n = x.shape[0]
    inv_n = 1.0 / n
    total = 0.0
    for i in prange(n):
        xi = x[i]
        e = np.exp(-abs(xi))
        total += max(xi, 0.0) - xi * y[i] + np.log1p(e)
        sig = 1.0 / (1.0 + e) if xi >= 0 else e / (1.0 + e)
        g[i] = (sig - y[i]) * inv_n
    return total * inv_n


def _nb_bce_loss(x: Arr, y: Arr) -> Any:
    n = x.shape[0]
    total = 0.0
    for i in prange(n):
        xi = x[i]
        total += max(xi, 0.0) - xi * y[i] + np.log1p(np.exp(-abs(xi)))
    return total / n


_NUMBA_SOURCES: Dict[Tuple[str, str], Callable[..., Any]] = {
    ("ce", FUSED): _nb_ce_fused, ("ce", FWD): _nb_ce_loss,
    ("bce", FUSED): _nb_bce_fused, ("bce", FWD): _nb_bce_loss}
_NUMBA_CACHE: Dict[Tuple[Tuple[str, str], bool], Any] = {}


def numba_kernel(kind: str, mode: str, parallel: bool) -> Any:
    """The numba-compiled kernel for (kind, mode), or None when numba has no loop for it."""
    key = (kind, FUSED if mode == OBJECT else mode)
    if key not in _NUMBA_SOURCES:
        return None
    numba = _optional("numba")
    globals()["prange"] = numba.prange
    if (key, parallel) not in _NUMBA_CACHE:
        _NUMBA_CACHE[key, parallel] = numba.njit(parallel=parallel)(_NUMBA_SOURCES[key])
    return _NUMBA_CACHE[key, parallel]


# ====================================================================== implementations

class NotApplicable(Exception):
    """The implementation has no equivalent of this case (shown as '-')."""


def fastce_fn(kind: str, x: Arr, t: Arr, out: Optional[Arr] = None,
              mode: str = FUSED) -> Call:
    """Zero-arg call of fastce for the case."""
    if kind in DIV_KINDS:
        return fastce_div_fn(kind, x, t, out, mode)
    if mode == OBJECT:
        from .losses import BCEWithLogitsLoss, CrossEntropyLoss
        crit = BCEWithLogitsLoss() if kind == "bce" else CrossEntropyLoss(
            axis=1 if kind == "ce_axis1" else -1)

        def call() -> Any:
            loss = crit(x, t, out=out)
            return loss, crit.backward()
        return call
    if kind == "bce":
        f: Callable[..., Any] = F.binary_cross_entropy_with_logits
        kw: Dict[str, Any] = {}
    else:
        f = F.cross_entropy
        kw = {"axis": 1 if kind == "ce_axis1" else -1}
        if kind == "ce_softcap":
            kw["softcap"] = SOFTCAP
    if mode == FWD:
        return partial(f, x, t, **kw)
    return partial(f, x, t, return_grad=True, out=out, **kw)


def limit_fn(mode: str, x: Arr, out: Arr) -> Call:
    """The floor: one copy for a call that writes a gradient, one read pass otherwise."""
    return partial(np.max, x) if mode == FWD else partial(np.copyto, out, x)


def limit_op(mode: str, kind: str = "ce") -> str:
    if kind in TWO_INPUT_KINDS and mode != FWD:
        return "np.copyto of both input arrays"
    return "np.max" if mode == FWD else "np.copyto"


def _torch_threads(torch: Any, threads: int, fn: Call) -> Call:
    """`fn` run on `threads` torch threads, the process's thread count put back after each call.

    torch and fastce share one OpenMP runtime (libgomp): torch.set_num_threads sets
    omp_set_num_threads, i.e. fastce.get_num_threads(), so a torch row built with another
    count would change the thread count of fastce (timed in the same row) and of every later
    row.  When the counts already agree, `fn` is returned as it is (no per-call cost)."""
    if threads == get_num_threads():
        return fn

    def call() -> Any:
        before = get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn()
        finally:
            torch.set_num_threads(before)
    return call


def _torch_loss(kind: str, mode: str) -> Any:
    import torch
    import torch.nn.functional as tF
    if kind in DIV_KINDS:
        return torch_div_loss(kind)
    if mode == OBJECT:
        return (torch.nn.BCEWithLogitsLoss() if kind == "bce" else torch.nn.CrossEntropyLoss())
    if kind == "bce":
        return tF.binary_cross_entropy_with_logits
    if kind == "ce_softcap":
        return lambda x, t: tF.cross_entropy(SOFTCAP * torch.tanh(x / SOFTCAP), t)
    # torch's class dim is 1: the classes-last 2-D cases and the (N, C, H, W) case alike
    return lambda x, t: tF.cross_entropy(x, t)


def _torch_call(torch: Any, loss: Any, mode: str, x: Arr, t: Arr) -> Call:
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    def forward() -> Any:
        with torch.no_grad():
            return loss(xt, tt)

    def fused() -> Any:
        xg = xt.detach().requires_grad_(True)
        value = loss(xg, tt)
        value.backward()
        return value, xg.grad
    return forward if mode == FWD else fused


def torch_eager_fn(kind: str, mode: str, x: Arr, t: Arr, out: Arr, threads: int,
                   percall: bool) -> Call:
    import torch
    return _torch_threads(torch, threads, _torch_call(torch, _torch_loss(kind, mode), mode, x, t))


def torch_compile_fn(kind: str, mode: str, x: Arr, t: Arr, out: Arr, threads: int,
                     percall: bool) -> Call:
    import torch
    import torch._dynamo
    torch._dynamo.reset()          # a fresh cache per case: no recompile limit, no dynamic shapes
    compiled = torch.compile(_torch_loss(kind, mode), dynamic=False)
    return _torch_threads(torch, threads, _torch_call(torch, compiled, mode, x, t))


def _optional(module: str) -> Any:
    """Import an optional peer (numba, JAX, scikit-learn: typed as Any, so the package
    type-checks whether or not they are installed)."""
    return importlib.import_module(module)


def _jax_module() -> Any:
    jax = _optional("jax")
    jax.config.update("jax_enable_x64", True)      # else float64 silently becomes float32
    return jax


def jax_fn(kind: str, mode: str, x: Arr, t: Arr, out: Arr, threads: int,
           percall: bool) -> Call:
    if kind in DIV_KINDS:
        return jax_div_fn(kind, mode, x, t)
    jax = _jax_module()
    jnp = _optional("jax.numpy")
    axis = 1 if kind == "ce_axis1" else -1
    cap = SOFTCAP if kind == "ce_softcap" else None

    def bce_loss(x: Any, y: Any) -> Any:
        return jnp.mean(jnp.maximum(x, 0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x))))

    def ce_loss(x: Any, t: Any) -> Any:
        if cap is not None:
            x = cap * jnp.tanh(x / cap)
        ls = jax.nn.log_softmax(x, axis=axis)
        return -jnp.mean(jnp.take_along_axis(ls, jnp.expand_dims(t, axis), axis=axis))
    loss = bce_loss if kind == "bce" else ce_loss
    f = jax.jit(loss if mode == FWD else jax.value_and_grad(loss))
    xj, tj = jax.device_put(x), jax.device_put(t)
    return lambda: jax.block_until_ready(f(xj, tj))


def numba_fn(kind: str, mode: str, x: Arr, t: Arr, out: Arr, threads: int,
             percall: bool) -> Call:
    kernel = numba_kernel(kind, mode, parallel=not percall)
    if kernel is None:
        raise NotApplicable
    numba = _optional("numba")
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    return partial(kernel, x, t) if mode == FWD else partial(kernel, x, t, out)


def sklearn_fn(kind: str, mode: str, x: Arr, t: Arr, out: Arr, threads: int,
               percall: bool) -> Call:
    if kind not in ("ce", "bce") or percall:
        raise NotApplicable
    sk = _optional("sklearn._loss.loss")
    if kind == "bce":
        lossobj = sk.HalfBinomialLoss()
        y = t
    else:
        lossobj = sk.HalfMultinomialLoss(n_classes=x.shape[1])
        y = t.astype(x.dtype)                      # sklearn keeps class labels as floats
    if mode == FWD:
        return lambda: lossobj.loss(y_true=y, raw_prediction=x, n_threads=threads).mean()

    def call() -> Any:
        loss, grad = lossobj.loss_gradient(y_true=y, raw_prediction=x, n_threads=threads)
        return loss.mean(), grad
    return call


def numpy_peer_fn(kind: str, mode: str, x: Arr, t: Arr, out: Arr, threads: int,
                  percall: bool) -> Call:
    if kind in DIV_KINDS:
        return numpy_div_fn(kind, mode, x, t, out)
    return numpy_fn(kind, x, t, out=out, mode=mode)


_PEER_FACTORIES = {"NumPy": numpy_peer_fn, "torch eager": torch_eager_fn,
                   "torch.compile": torch_compile_fn, "JAX jit": jax_fn, "numba": numba_fn,
                   "sklearn": sklearn_fn}
# warm-up calls before timing (compilation happens in the first; torch.compile compiles the
# backward graph on the first backward and may specialise once more)
_WARMUP = {"torch.compile": 3, "JAX jit": 2, "numba": 2}


def build_impl(name: str, kind: str, mode: str, x: Arr, t: Arr, out: Arr,
               threads: Optional[int] = None, percall: bool = False) -> Call:
    """Zero-arg callable of implementation `name` ("limit", "fastce" or a peer) for one case.
    Raises NotApplicable when the peer has no equivalent, ImportError when it is missing."""
    threads = threads or get_num_threads()
    if name == "limit":
        if kind in TWO_INPUT_KINDS and mode != FWD:
            return copy_both_fn(x, t, out)
        return limit_fn(mode, x, out)
    if name == "fastce":
        return fastce_fn(kind, x, t, out=out, mode=mode)
    return _PEER_FACTORIES[name](kind, mode, x, t, out, threads, percall)


def available_peers(wanted: Sequence[str]) -> Tuple[List[str], Dict[str, str]]:
    """(peers that import, {peer: reason} for the others).  Imports each module once, here, so
    that a broken install is reported once and not per case."""
    ok, skipped = [], {}
    for name in wanted:
        module = _PEER_MODULES[name]
        if importlib.util.find_spec(module) is None:
            skipped[name] = f"{module} is not installed"
            continue
        try:
            __import__(module)
            if name == "sklearn":
                __import__("sklearn._loss.loss")
        except Exception as exc:                     # a broken peer must not stop the bench
            skipped[name] = f"import {module} failed: {str(exc)[:120]}"
            continue
        ok.append(name)
    return ok, skipped


def parse_peers(spec: Optional[str]) -> List[str]:
    """--peers value -> list of peer names ("all", "none", or a comma list of aliases)."""
    if spec is None or spec.strip().lower() == "all":
        return list(PEERS)
    if spec.strip().lower() in ("", "none"):
        return []
    out = []
    for part in spec.split(","):
        key = part.strip().lower()
        if key not in _PEER_ALIASES:
            raise SystemExit(f"unknown peer {part!r}; choose from "
                             f"{', '.join(sorted(set(_PEER_ALIASES)))}")
        if _PEER_ALIASES[key] not in out:
            out.append(_PEER_ALIASES[key])
    return out


# ====================================================================== divergence rows (issue 12)
# kl_div_logits, entropy and sigmoid_focal_loss, fused loss + gradient, against what a user of
# each peer writes: NumPy; torch.nn.functional (eager and torch.compile; torchvision's
# sigmoid_focal_loss formula written out, torchvision not being a dependency); JAX jit with
# optax where optax has the loss (kl_divergence_with_log_targets, sigmoid_focal_loss) and
# jax.nn otherwise.  Every implementation computes the loss fastce reports (batchmean KL at
# temperature DIV_TEMPERATURE, mean entropy, mean focal loss), which _prepare checks.  numba and
# sklearn have no such loss (not applicable).  The limit of the KL row is copying both logit
# arrays (the kernel reads two arrays and writes one).

DIV_TEMPERATURE = 2.0
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
ACC_K = 5
DIV_KINDS = ("kl_logits", "entropy", "focal", "kl_div", "accuracy")
# kinds whose kernel reads two arrays of the input's shape: their fused limit copies both
TWO_INPUT_KINDS = ("kl_logits", "kl_div")

DIV_CASES = [
    Case("kl_logits", FUSED, (4096, 32000), (512, 32000)),
    Case("entropy", FUSED, (2048, 32000), (256, 32000)),
    Case("focal", FUSED, (10_000_000,), (1_000_000,)),
    Case("kl_div", FUSED, (4096, 32000), (512, 32000)),
    Case("accuracy", FWD, (65536, 1000), (8192, 1000)),
]
CASES += DIV_CASES


def div_label(kind: str, shape: Shape) -> str:
    dims = "x".join(map(str, shape))
    if kind == "kl_logits":
        return f"kl_div_logits {dims} T={DIV_TEMPERATURE:g}"
    if kind == "entropy":
        return f"entropy {dims}"
    if kind == "kl_div":
        return f"kl_div {dims}"
    if kind == "accuracy":
        return f"accuracy k={ACC_K} {dims}"
    return f"sigmoid_focal_loss {_count(int(np.prod(shape)))}"


def div_inputs(kind: str, shape: Shape, dtype: Any,
               rng: np.random.Generator) -> Tuple[Arr, Arr]:
    """(student, teacher) logits for KL (the teacher near the student, as in distillation);
    (logits, unused) for entropy; (logits, {0, 1} labels with 10% positives) for focal;
    (log-probabilities, probabilities) for kl_div; (scores, int64 class indices) for
    accuracy."""
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    if kind == "kl_logits":
        return x, (x + rng.standard_normal(shape)).astype(dtype)
    if kind == "kl_div":
        def log_softmax(z: Arr) -> Arr:
            z = z - z.max(axis=-1, keepdims=True)
            ls: Arr = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
            return ls
        t = np.exp(log_softmax(x + rng.standard_normal(shape)))
        return log_softmax(x).astype(dtype), t.astype(dtype)
    if kind == "accuracy":
        return x, rng.integers(0, shape[-1], shape[0])
    if kind == "entropy":
        return x, np.zeros(1, dtype)
    return x, (rng.random(shape) < 0.1).astype(dtype)


def fastce_div_fn(kind: str, x: Arr, t: Arr, out: Optional[Arr], mode: str) -> Call:
    from . import divergence as D
    grad: Dict[str, Any] = {} if mode == FWD else {"return_grad": True, "out": out}
    if kind == "kl_logits":
        return partial(D.kl_div_logits, x, t, temperature=DIV_TEMPERATURE, **grad)
    if kind == "entropy":
        return partial(D.entropy, x, reduction="mean", **grad)
    if kind == "kl_div":
        return partial(D.kl_div, x, t, reduction="batchmean", **grad)
    if kind == "accuracy":
        from .functional import accuracy
        return partial(accuracy, x, t, k=ACC_K)
    return partial(D.sigmoid_focal_loss, x, t, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA,
                   reduction="mean", **grad)


def copy_both_fn(x: Arr, t: Arr, out: Arr) -> Call:
    out2 = np.empty_like(t)

    def call() -> None:
        np.copyto(out, x)
        np.copyto(out2, t)
    return call


def numpy_kl_logits(s: Arr, t: Arr, out: Optional[Arr] = None) -> Tuple[Any, Arr]:
    """batchmean tau^2 KL(softmax(t/tau) || softmax(s/tau)) and its gradient tau (q - p) / n."""
    tau, n = DIV_TEMPERATURE, s.shape[0]
    a, b = s / tau, t / tau
    a -= a.max(axis=-1, keepdims=True)
    b -= b.max(axis=-1, keepdims=True)
    la = a - np.log(np.exp(a).sum(axis=-1, keepdims=True))
    lb = b - np.log(np.exp(b).sum(axis=-1, keepdims=True))
    p = np.exp(lb)
    loss = tau * tau * (p * (lb - la)).sum() / n
    g = np.exp(la, out=out)
    g -= p
    g *= tau / n
    return loss, g


def numpy_entropy(x: Arr, out: Optional[Arr] = None) -> Tuple[Any, Arr]:
    """Mean entropy of softmax rows and its gradient -p (log p + H) / n."""
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    S = e.sum(axis=-1, keepdims=True)
    lp = z - np.log(S)
    p = e / S
    h = -(p * lp).sum(axis=-1)
    g = np.multiply(p, -(lp + h[:, None]) / x.shape[0], out=out)
    return h.mean(), g


def numpy_focal(x: Arr, y: Arr, out: Optional[Arr] = None) -> Tuple[Any, Arr]:
    """Mean sigmoid focal loss (torchvision's formula) and its gradient."""
    al, gm = FOCAL_ALPHA, FOCAL_GAMMA
    p = 1 / (1 + np.exp(-x))
    ce = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    z = 1 - (p * y + (1 - p) * (1 - y))
    at = al * y + (1 - al) * (1 - y)
    loss = (at * ce * z ** gm).mean()
    g = at * ((p - y) * z ** gm + gm * ce * z ** (gm - 1) * p * (1 - p) * (1 - 2 * y)) / x.size
    if out is not None:
        np.copyto(out, g)
        g = out
    return loss, g


def numpy_kl_div(x: Arr, t: Arr, out: Optional[Arr] = None) -> Tuple[Any, Arr]:
    """torch's kl_div(x, t, reduction="batchmean"): sum t (log t - x) / n (0 log 0 = 0), and
    its gradient -t / n."""
    n = x.shape[0]
    with np.errstate(divide="ignore"):
        lt = np.where(t > 0, np.log(t), 0)
    loss = (t * (lt - x)).sum() / n
    g = np.divide(t, -n, out=out)
    return loss, g


def numpy_accuracy(x: Arr, t: Arr) -> float:
    """Top-k accuracy: the target among the k largest scores (argpartition: no full sort)."""
    top = np.argpartition(x, x.shape[-1] - ACC_K, axis=-1)[:, -ACC_K:]
    return float(np.mean(np.any(top == t[:, None], axis=-1)))


def numpy_div_fn(kind: str, mode: str, x: Arr, t: Arr, out: Arr) -> Call:
    if kind == "accuracy":
        return partial(numpy_accuracy, x, t)
    if kind == "kl_div":
        f = partial(numpy_kl_div, x, t, out=out)
    elif kind == "kl_logits":
        f = partial(numpy_kl_logits, x, t, out=out)
    elif kind == "entropy":
        f = partial(numpy_entropy, x, out=out)
    else:
        f = partial(numpy_focal, x, t, out=out)
    return (lambda: f()[0]) if mode == FWD else f


def torch_div_loss(kind: str) -> Any:
    import torch
    import torch.nn.functional as tF
    tau = DIV_TEMPERATURE
    if kind == "kl_div":
        return lambda x, t: tF.kl_div(x, t, reduction="batchmean")
    if kind == "accuracy":
        return lambda x, t: (x.topk(ACC_K, -1).indices == t[:, None]).any(-1).double().mean()
    if kind == "kl_logits":
        return lambda s, t: tF.kl_div(tF.log_softmax(s / tau, -1), tF.log_softmax(t / tau, -1),
                                      reduction="batchmean", log_target=True) * (tau * tau)
    if kind == "entropy":
        def entropy(x: Any, _: Any) -> Any:
            lp = tF.log_softmax(x, -1)
            return -(lp.exp() * lp).sum(-1).mean()
        return entropy

    def focal(x: Any, y: Any) -> Any:          # torchvision.ops.sigmoid_focal_loss, "mean"
        p = torch.sigmoid(x)
        ce = tF.binary_cross_entropy_with_logits(x, y, reduction="none")
        p_t = p * y + (1 - p) * (1 - y)
        a_t = FOCAL_ALPHA * y + (1 - FOCAL_ALPHA) * (1 - y)
        return (a_t * ce * (1 - p_t) ** FOCAL_GAMMA).mean()
    return focal


def jax_div_fn(kind: str, mode: str, x: Arr, t: Arr) -> Call:
    jax = _jax_module()
    jnp = _optional("jax.numpy")
    optax = _optional("optax") if importlib.util.find_spec("optax") else None
    tau = DIV_TEMPERATURE

    def kl(s: Any, t: Any) -> Any:
        ls, lt = jax.nn.log_softmax(s / tau, -1), jax.nn.log_softmax(t / tau, -1)
        per = (optax.losses.kl_divergence_with_log_targets(ls, lt) if optax is not None
               else (jnp.exp(lt) * (lt - ls)).sum(-1))
        return tau * tau * jnp.mean(per)

    def entropy(x: Any, _: Any) -> Any:
        lp = jax.nn.log_softmax(x, -1)
        return -jnp.mean((jnp.exp(lp) * lp).sum(-1))

    def kl_div(x: Any, t: Any) -> Any:          # batchmean of optax's per-sample KL
        per = (optax.losses.kl_divergence(x, t) if optax is not None
               else jnp.where(t > 0, t * (jnp.log(jnp.where(t > 0, t, 1)) - x), 0).sum(-1))
        return jnp.mean(per)

    def accuracy(x: Any, t: Any) -> Any:
        return jnp.mean(jnp.any(jax.lax.top_k(x, ACC_K)[1] == t[:, None], axis=-1))

    def focal(x: Any, y: Any) -> Any:
        if optax is not None:
            per = optax.losses.sigmoid_focal_loss(x, y, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA)
        else:
            p = jax.nn.sigmoid(x)
            ce = jnp.maximum(x, 0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x)))
            p_t = p * y + (1 - p) * (1 - y)
            per = (FOCAL_ALPHA * y + (1 - FOCAL_ALPHA) * (1 - y)) * ce * (1 - p_t) ** FOCAL_GAMMA
        return jnp.mean(per)
    loss = {"kl_logits": kl, "entropy": entropy, "focal": focal, "kl_div": kl_div,
            "accuracy": accuracy}[kind]
    f = jax.jit(loss if mode == FWD else jax.value_and_grad(loss))
    xj, tj = jax.device_put(x), jax.device_put(t)
    return lambda: jax.block_until_ready(f(xj, tj))


# ====================================================================== timing

def warm_up(fn: Call, calls: int = 1) -> Any:
    """Call fn `calls` times (compilation, page faults, thread pools); return the last result."""
    result = None
    for _ in range(calls):
        result = fn()
    return result


def split_result(result: Any) -> Tuple[float, Optional[Arr]]:
    """(loss as a Python float, gradient as an ndarray or None) from any implementation's result:
    a loss, or a (loss, grad) pair, in NumPy, torch or JAX types (numba returns a float and
    writes the gradient into out=, which the caller knows)."""
    grad = None
    if isinstance(result, (tuple, list)):
        result, grad = result[0], result[1]
        if hasattr(grad, "detach"):
            grad = grad.detach().numpy()
        grad = np.asarray(grad)
    if hasattr(result, "detach"):
        result = result.detach()
    return float(np.asarray(result)), grad


def loss_mismatch(loss: float, ref: float, dtype: Any) -> Optional[str]:
    """A message when `loss` is not `ref` to the dtype's tolerance (the peers compute the same
    mean loss as fastce; a differing value means the bench is timing the wrong thing)."""
    rtol = 1e-3 if np.dtype(dtype) == np.float32 else 1e-8
    if abs(loss - ref) <= rtol * max(1.0, abs(ref)):
        return None
    return f"loss {loss!r} differs from fastce's {ref!r} (rtol {rtol:g})"


SETTLE_S = 0.05                     # pause before each block (s)
MIN_SAMPLE_S = {True: 0.005, False: 0.02}    # shortest sample (s), by quick


def time_blocks(fns: Dict[str, Call], samples: int, inner: Optional[int] = None,
                min_sample: float = 0.01, settle: Optional[float] = None,
                progress: Progress = None) -> Dict[str, Dict[str, float]]:
    """Timing statistics (seconds per call) of each zero-arg callable in `fns` (name -> fn).

    Each implementation is timed in a block of back-to-back samples, never interleaved call by
    call with another one: the OpenMP runtimes of fastce, torch, numba and sklearn (each its own
    libgomp) and XLA's pool keep their threads spinning for a few ms after a parallel region,
    and on a small machine a spinning pool of one runtime stalls the next runtime's team (seen
    here: fastce 0.1 ms alone, 20-30 ms right after sklearn or numba).  Before each block the
    process sleeps `settle` seconds and makes one untimed call.  To spread drift in the machine's
    load over all implementations, the samples are taken in two passes, the second in reverse
    order.  A sample is `inner` calls (default: enough to last `min_sample` seconds, calibrated
    from one call) divided by their number.
    """
    settle = SETTLE_S if settle is None else settle
    counts = {}
    for name, fn in fns.items():
        if inner:
            counts[name] = inner
            continue
        t0 = time.perf_counter()
        fn()
        once = time.perf_counter() - t0
        counts[name] = max(1, min(10_000, int(min_sample / max(once, 1e-9))))
    taken: Dict[str, List[float]] = {name: [] for name in fns}
    started = time.perf_counter()
    first = (samples + 1) // 2
    for order, n in ((list(fns), first), (list(fns)[::-1], samples - first)):
        for name in order:
            if n <= 0:
                continue
            fn, k = fns[name], counts[name]
            time.sleep(settle)
            fn()
            for _ in range(n):
                t0 = time.perf_counter()
                for _ in range(k):
                    fn()
                taken[name].append((time.perf_counter() - t0) / k)
        if progress and time.perf_counter() - started > 10 and order[0] == next(iter(fns)):
            progress(f"    first pass done ({time.perf_counter() - started:.0f} s)")
    return {name: _stats(v) for name, v in taken.items()}


def _stats(values: List[float]) -> Dict[str, float]:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return {"median": float(med), "min": float(np.min(values)), "iqr": float(q3 - q1),
            "samples": len(values)}


def _prepare(names: Sequence[str], kind: str, mode: str, x: Arr, t: Arr, out: Arr,
             threads: int, percall: bool, progress: Progress,
             errors: Dict[str, str]) -> Dict[str, Call]:
    """Build and warm up each implementation; failures go to `errors`, not-applicable peers are
    left out silently."""
    fns = {}
    ref = None
    for name in names:
        t0 = time.perf_counter()
        try:
            fn = build_impl(name, kind, mode, x, t, out, threads, percall)
            result = warm_up(fn, _WARMUP.get(name, 1))
            if name == "fastce":
                ref = split_result(result)[0]
            elif name != "limit" and ref is not None:
                msg = loss_mismatch(split_result(result)[0], ref, x.dtype)
                if msg:
                    errors[name] = msg             # timed all the same, but flagged
                    if progress:
                        progress(f"    {name}: {msg}")
            del result
        except NotApplicable:
            continue
        except Exception as exc:                     # a peer failing must not stop the table
            errors[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
            if progress:
                progress(f"    {name}: failed ({errors[name][:100]})")
            continue
        dt = time.perf_counter() - t0
        if progress and dt > 1.0:
            progress(f"    {name}: built and warmed up in {dt:.1f} s (not timed)")
        fns[name] = fn
    return fns


def _best_peer(times: Dict[str, Optional[float]],
               peers: Sequence[str]) -> Tuple[Optional[float], Optional[str]]:
    timed = [(times[p], p) for p in peers if times.get(p) is not None]
    return min(timed) if timed else (None, None)


def _finish_row(row: Row, peers: Sequence[str], unit: str) -> Row:
    times = row[f"times_{unit}"]
    f, lim = times.get("fastce"), times.get("limit")
    row["x_limit"] = f / lim if f and lim else None
    best, name = _best_peer(times, peers)
    row["best_peer"] = name
    row[f"best_peer_{unit}"] = best
    row["best_peer_over_fastce"] = best / f if best and f else None
    return row


# ====================================================================== sections

def _times(stats: Dict[str, Dict[str, float]], unit: str, stat: str) -> Row:
    """Row fields from time_blocks statistics: times_<unit> (the statistic the tables and
    ratios use: "median", or "min" on a machine too busy for medians) and all three kept."""
    scale = {"ms": 1e3, "us": 1e6}[unit]
    out: Row = {f"{k}_{unit}": {n: v[k] * scale for n, v in stats.items()}
           for k in ("median", "min", "iqr")}
    out[f"times_{unit}"] = dict(out[f"{stat}_{unit}"])
    out["stat"] = stat
    return out


def run_cases(quick: bool = False, dtypes: Sequence[str] = ("float32",),
              peers: Sequence[str] = (), progress: Progress = None,
              repeats: Optional[int] = None, cases: Optional[List["Case"]] = None,
              select: Optional[str] = None, stat: str = "median") -> List[Row]:
    """Throughput rows: one per (case, dtype), times in ms."""
    cases = CASES if cases is None else cases
    if select:
        cases = [c for c in cases if select.lower() in
                 f"{case_label(c.kind, c.run_shape(quick))} {c.mode}".lower()]
    rounds = repeats or (5 if quick else 7)
    threads = get_num_threads()
    results = []
    jobs = [(c, dt) for dt in dtypes for c in cases]
    for i, (case, dtype_name) in enumerate(jobs):
        shape = case.run_shape(quick)
        label = case_label(case.kind, shape)
        dtype = np.dtype(dtype_name)
        if progress:
            progress(f"[{i + 1}/{len(jobs)}] {label} {case.mode} {dtype.name} ...")
        t_case = time.perf_counter()
        rng = np.random.default_rng(0)
        x, t = make_inputs(case.kind, shape, dtype, rng)
        out = np.empty_like(x)
        errors: Dict[str, str] = {}
        fns = _prepare(["limit", "fastce", *peers], case.kind, case.mode, x, t, out, threads,
                       False, progress, errors)
        stats = time_blocks(fns, rounds, min_sample=MIN_SAMPLE_S[bool(quick)],
                            progress=progress)
        del fns
        row = {"case": label, "kind": case.kind, "mode": case.mode, "shape": list(shape),
               "nominal_shape": list(case.shape), "dtype": dtype.name,
               "limit_op": limit_op(case.mode, case.kind), "samples": rounds,
               **_times(stats, "ms", stat), "errors": errors}
        results.append(_finish_row(row, peers, "ms"))
        if progress:
            progress(f"    fastce {_fmt(row['times_ms'].get('fastce'))} ms = "
                     f"{_fmt(row['x_limit'])}x limit; best peer "
                     f"{row['best_peer'] or '-'} {_fmt(row['best_peer_ms'])} ms "
                     f"({time.perf_counter() - t_case:.0f} s)")
    return results


def run_percall(peers: Sequence[str] = (), progress: Progress = None,
                repeats: Optional[int] = None, quick: bool = False,
                cases: Optional[List["Case"]] = None, stat: str = "median") -> List[Row]:
    """Per-call rows: float32, median over k samples of PERCALL_CALLS calls, in us per call."""
    cases = PERCALL_CASES if cases is None else cases
    k = repeats or (5 if quick else 7)
    peers = [p for p in PERCALL_PEERS if p in peers]
    threads = get_num_threads()
    results = []
    for i, case in enumerate(cases):
        label = percall_label(case)
        if progress:
            progress(f"[per-call {i + 1}/{len(cases)}] {label} ...")
        rng = np.random.default_rng(1)
        x, t = make_inputs(case.kind, case.shape, np.float32, rng)
        out = np.empty_like(x)
        errors: Dict[str, str] = {}
        fns = _prepare(["limit", "fastce", *peers], case.kind, case.mode, x, t, out, threads,
                       True, progress, errors)
        stats = time_blocks(fns, k, inner=PERCALL_CALLS, progress=progress)
        del fns
        row = {"case": label, "kind": case.kind, "mode": case.mode, "shape": list(case.shape),
               "dtype": "float32", "limit_op": limit_op(case.mode),
               "samples": k, "calls_per_sample": PERCALL_CALLS,
               **_times(stats, "us", stat), "errors": errors}
        results.append(_finish_row(row, peers, "us"))
    return results


def numpy_linear_ce(X: Arr, W: Arr, t: Arr) -> Tuple[Any, Arr, Arr]:
    """The unfused computation: full logits, fused NumPy CE, two matmuls."""
    logits = X @ W.T
    loss, G = numpy_ce(logits, t)
    return loss, G @ W, G.T @ X


def _peak_mib(fn: Call) -> float:
    import tracemalloc
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def _median_ms(fn: Call, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def run_linear_case(quick: bool = False, peers: bool = True, progress: Progress = None,
                    repeats: Optional[int] = None) -> Row:
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
    row = {"case": f"linear CE {N}x{D}x{V}", "shape": [N, D, V], "logits_mib": N * V * 4 / 2**20,
           "fastce": _median_ms(fused, repeats), "fastce_peak_mib": _peak_mib(fused),
           "numpy_unfused": _median_ms(unfused, repeats), "numpy_peak_mib": _peak_mib(unfused)}
    if peers:
        try:
            import torch           # (on the process's thread count, as fastce's row)
            import torch.nn.functional as tF
            Xt, Wt, tt = torch.from_numpy(X), torch.from_numpy(W), torch.from_numpy(t)

            def run_torch() -> None:
                xg = Xt.detach().requires_grad_(True)
                wg = Wt.detach().requires_grad_(True)
                tF.linear_cross_entropy(xg, wg, tt).backward()
            row["torch eager"] = _median_ms(run_torch, repeats)
        except Exception as exc:
            row["torch_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return row


# ====================================================================== output

def _fmt(v: Optional[float]) -> str:
    """Three significant figures, no exponent for the usual ranges; '-' for missing."""
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _columns(rows: Sequence[Row], unit: str, order: Sequence[str]) -> List[str]:
    """Peer columns that produced at least one figure, in `order`."""
    return [p for p in order if any(r[f"times_{unit}"].get(p) is not None for r in rows)]


def _markdown(head: List[str], body: List[List[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def format_table(results: Sequence[Row], mode: str) -> str:
    """Markdown table of the throughput rows of one mode (ms)."""
    rows = [r for r in results if r["mode"] == mode]
    if not rows:
        return ""
    peers = _columns(rows, "ms", PEERS)
    op = limit_op(mode)
    head = ["case", "dtype", f"limit ({op})", "fastce", "x limit", *peers, "best peer",
            "best peer / fastce"]
    body = []
    for r in rows:
        t = r["times_ms"]
        body.append([r["case"], r["dtype"], _fmt(t.get("limit")), _fmt(t.get("fastce")),
                     _fmt(r["x_limit"]) + "x" if r["x_limit"] else "-",
                     *[_fmt(t.get(p)) for p in peers],
                     r["best_peer"] or "-",
                     _fmt(r["best_peer_over_fastce"]) + "x" if r["best_peer_over_fastce"]
                     else "-"])
    what = ("Fused loss + gradient (fwd+bwd), limit = np.copyto of the logits" if mode == FUSED
            else "Forward only (loss), limit = one read pass (np.max of the logits)")
    return (f"{what}; ms, {rows[0]['stat']} of {rows[0]['samples']} samples per "
            f"implementation\n"
            + _markdown(head, body))


def format_percall(results: Sequence[Row]) -> str:
    if not results:
        return ""
    peers = _columns(results, "us", PERCALL_PEERS)
    head = ["case", "limit", "fastce", *peers, "best peer", "best peer / fastce"]
    body = []
    for r in results:
        t = r["times_us"]
        body.append([r["case"], f"{_fmt(t.get('limit'))} ({r['limit_op']})",
                     _fmt(t.get("fastce")), *[_fmt(t.get(p)) for p in peers],
                     r["best_peer"] or "-",
                     _fmt(r["best_peer_over_fastce"]) + "x" if r["best_peer_over_fastce"]
                     else "-"])
    r0 = results[0]
    return (f"Per call (us, {r0['stat']} of {r0['samples']} x {r0['calls_per_sample']} calls), "
            f"float32, "
            f"gradient into a reused out= buffer (numba: serial @njit)\n" + _markdown(head, body))


def format_linear(row: Row) -> str:
    lines = [f"{row['case']} (float32, loss + grad_input + grad_weight; full logits would be "
             f"{row['logits_mib']:.0f} MiB)",
             f"  fastce fused/chunked : {row['fastce']:8.1f} ms, "
             f"peak {row['fastce_peak_mib']:7.1f} MiB",
             f"  NumPy unfused        : {row['numpy_unfused']:8.1f} ms, "
             f"peak {row['numpy_peak_mib']:7.1f} MiB"]
    if "torch eager" in row:
        lines.append(f"  torch eager linear_cross_entropy: {row['torch eager']:8.1f} ms")
    return "\n".join(lines)


_STYLE = {"limit": ("black", "|"), "fastce": ("tab:red", "o"), "NumPy": ("tab:blue", "s"),
          "torch eager": ("tab:orange", "^"), "torch.compile": ("tab:brown", "v"),
          "JAX jit": ("tab:green", "D"), "numba": ("tab:purple", "P"),
          "sklearn": ("tab:gray", "X")}


def plot(results: Sequence[Row], path: str, percall: Sequence[Row] = (),
         info: Optional[Row] = None, quick: bool = False) -> None:
    """Dot plot of absolute median times (log scale): one line per row, one marker per
    implementation; the CPU, thread count and shapes that ran are in the labels."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib (or fastce[bench])")
    info = info or machine_info()
    stat = next((r["stat"] for r in list(results) + list(percall) if "stat" in r), "median")
    panels = [(list(results), "ms", f"{stat} time per call, ms (log scale)"),
              (list(percall), "us", f"{stat} time per call, us (log scale)")]
    panels = [p for p in panels if p[0]]
    heights = [0.34 * len(p[0]) + 1.2 for p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, sum(heights) + 1.2),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    handles = {}
    for ax, (rows, unit, xlabel) in zip(axes[:, 0], panels):
        names = ["limit", "fastce"] + [p for p in PEERS
                                       if any(r[f"times_{unit}"].get(p) for r in rows)]
        ys = np.arange(len(rows))[::-1]
        for name in names:
            color, marker = _STYLE[name]
            pts = [(r[f"times_{unit}"][name], y) for r, y in zip(rows, ys)
                   if r[f"times_{unit}"].get(name)]
            if pts:
                label = "limit (np.copyto; np.max for fwd only)" if name == "limit" else name
                handles[label] = ax.scatter(*zip(*pts), color=color, marker=marker, label=label,
                                            s=70 if name == "fastce" else 32,
                                            zorder=3 if name == "fastce" else 2)
        labels = []
        for r in rows:
            lab = r["case"] if unit == "us" else f"{r['case']} {r['mode']} {r['dtype']}"
            note = [f"fastce {_fmt(r[f'times_{unit}'].get('fastce'))} {unit}"]
            if r.get("x_limit"):
                note.append(f"{_fmt(r['x_limit'])}x limit")
            if r.get("best_peer_over_fastce"):
                note.append(f"{r['best_peer']} {_fmt(r['best_peer_over_fastce'])}x slower"
                            if r["best_peer_over_fastce"] >= 1 else
                            f"{r['best_peer']} {_fmt(1 / r['best_peer_over_fastce'])}x faster")
            labels.append(lab + "\n" + ", ".join(note))
        ax.set_yticks(ys)
        ax.set_yticklabels(labels, fontsize=7)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.set_title("per call (k samples of 1000 calls), float32, gradient into a reused out="
                     if unit == "us" else "throughput, large shapes", fontsize=9)
    fig.legend(list(handles.values()), list(handles), loc="upper right", fontsize=8,
               bbox_to_anchor=(0.995, 0.985))
    load = info.get("load_average_start")
    fig.suptitle(f"fastce bench{' --quick (shapes as labelled)' if quick else ''}: "
                 f"{info['cpu']}, {_threads(info)}"
                 + (f", load average {load:g}" if load is not None else "")
                 + f"\nabsolute {stat} times, lower is better", fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 0.80, 1))   # the legend sits to the right of the axes
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ====================================================================== main

def _dtypes(args: Any) -> List[str]:
    spec = getattr(args, "dtypes", None)
    if spec:
        out = [s.strip() for s in spec.split(",") if s.strip()]
        for s in out:
            if s not in ("float32", "float64"):
                raise SystemExit(f"--dtypes: unknown dtype {s!r} (float32, float64)")
        return out
    if getattr(args, "float64", False) or not args.quick:
        return ["float32", "float64"]
    return ["float32"]


def main(args: Any) -> None:
    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)
    quick = bool(args.quick)
    percall_only = bool(getattr(args, "percall", False))
    wanted = [] if getattr(args, "no_peers", False) else parse_peers(getattr(args, "peers", None))
    peers, skipped = available_peers(wanted)
    for name, why in skipped.items():
        progress(f"peer {name} skipped: {why}")
    info = machine_info()
    progress(header_line(info, quick))
    repeats = getattr(args, "repeats", None)
    select = getattr(args, "cases", None)

    stat = getattr(args, "stat", None) or "median"
    results = [] if percall_only else run_cases(quick, _dtypes(args), peers, progress, repeats,
                                                select=select, stat=stat)
    percall = [] if getattr(args, "no_percall", False) else run_percall(peers, progress, repeats,
                                                                        quick, stat=stat)
    linear = None
    if not (percall_only or getattr(args, "no_linear", False)):
        linear = run_linear_case(quick, bool(peers), progress)

    info["load_average_end"] = load_average()
    print(f"fastce bench -- {header_line(info, quick)}")
    for mode in (FUSED, FWD):
        table = format_table(results, mode)
        if table:
            print()
            print(table)
    if percall:
        print()
        print(format_percall(percall))
    if linear:
        print()
        print(format_linear(linear))
    errors = [(r["case"], r.get("dtype"), n, e) for r in results + percall
              for n, e in r["errors"].items()]
    if errors or skipped:
        print()
    for name, why in skipped.items():
        print(f"not run: {name} ({why})")
    for case, dtype, name, err in errors:
        print(f"note: {name} on {case} {dtype}: {err}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "quick": quick, "peers": peers, "peers_skipped": skipped,
                       "units": {"results": "ms", "percall": "us per call", "linear": "ms, MiB"},
                       "results": results, "percall": percall, "linear": linear}, f, indent=2)
        print(f"wrote {args.json}")
    if args.plot:
        plot(results, args.plot, percall, info, quick)
        print(f"wrote {args.plot}")
