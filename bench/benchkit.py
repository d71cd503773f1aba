"""Helpers of fastce's pytest-benchmark suite: cases, inputs, peers, baselines and `run`.

Imported by bench/conftest.py (fixtures, hooks) and by the bench/test_bench_*.py modules.  It has
its own module name (not `conftest`) so the suite works however pytest orders conftest imports.

Every test is parametrised over a *case* (shape + dtype, one module-scoped set of inputs) and an
*impl*: ``fastce``, ``numpy`` (the reference), ``memcpy`` (``np.copyto`` of the same input, the
floor) and, when importable, ``torch`` / ``jax``.  All impls of one function/case/dtype land in
one pytest-benchmark group named ``"<function> <case> <dtype>"`` so the ratios are side by side.

Modes (decided at collection time, see `bench_mode`):

* quick  -- shapes shrunk ~8x.  On with ``FASTCE_BENCH_QUICK=1`` or ``--benchmark-disable``.
* check  -- after running, compare each result with the float64 reference (correctness smoke).
            Defaults to quick; force with ``FASTCE_BENCH_CHECK=0/1``.
* peers  -- torch / JAX / torch.compile / numba impls.  Default on for timed runs, off with ``--benchmark-disable``;
            force with ``FASTCE_BENCH_PEERS=0/1``.

No timing assertion is made anywhere.
"""
import functools
import importlib.util
import os
import zlib

import numpy as np
import pytest

import fastce
from fastce import _bench
from fastce._bench import numpy_bce, numpy_ce, numpy_ce_axis1  # the CLI's NumPy baselines

QUICK_SHRINK = 8

# name (also the test id; stable between quick and full mode), full shape, class axis
CE_CASES = [
    ("4096x32000", (4096, 32000), -1),
    ("256x128256", (256, 128256), -1),
    ("8192x1000", (8192, 1000), -1),
    ("65536x10", (65536, 10), -1),
    ("1000000x2", (1000000, 2), -1),
    ("8x21x256x256_axis1", (8, 21, 256, 256), 1),
]
BCE_CASES = [
    ("10M", (10_000_000,), -1),
]
DTYPES = ["float32", "float64"]
IMPLS = ["numpy", "fastce", "memcpy"]          # numpy first: in check mode its result is reused
PEERS = ["torch", "jax", "torch_compile", "numba"]
# the module each peer needs
PEER_MODULES = {"torch": "torch", "jax": "jax", "torch_compile": "torch", "numba": "numba"}


# ================================================================== modes

def _env_flag(name):
    v = os.environ.get(name, "").strip().lower()
    if not v:
        return None
    return v not in ("0", "false", "no", "off")


def bench_mode(config):
    disabled = bool(config.getoption("benchmark_disable", False))
    quick = _env_flag("FASTCE_BENCH_QUICK")
    quick = disabled if quick is None else quick
    check = _env_flag("FASTCE_BENCH_CHECK")
    check = quick if check is None else check
    peers = _env_flag("FASTCE_BENCH_PEERS")
    peers = (not disabled) if peers is None else peers
    available = [p for p in PEERS
                 if peers and importlib.util.find_spec(PEER_MODULES[p]) is not None]
    return {"quick": quick, "check": check, "peers": available, "disabled": disabled}


# ================================================================== inputs

def _shrink(shape, quick):
    if not quick:
        return tuple(shape)
    n = shape[0]
    if n >= QUICK_SHRINK:
        return (n // QUICK_SHRINK,) + tuple(shape[1:])
    # leading dim too small to shrink (8x21x256x256): shrink the rest
    return (1,) + tuple(shape[1:])


class CaseData:
    """Inputs of one (case, dtype), created lazily on first use and freed at module teardown."""

    def __init__(self, kind, case, shape, axis, dtype, mode):
        self.kind, self.case, self.axis = kind, case, axis
        self.nominal_shape = tuple(shape)
        self.shape = _shrink(shape, mode["quick"])
        self.dtype = np.dtype(dtype)
        self.quick, self.check = mode["quick"], mode["check"]
        self.label = f"{case} {self.dtype.name}"
        if self.quick:
            self.label += " (quick: " + "x".join(map(str, self.shape)) + ")"
        self.sample_shape = tuple(s for i, s in enumerate(self.shape)
                                  if i != axis % len(self.shape))
        self.C = self.shape[axis]
        self._cache = {}
        self.expected_cache = {}

    def _rng(self, what):
        return np.random.default_rng(zlib.crc32(f"{self.case}/{self.dtype}/{what}".encode()))

    def __getattr__(self, name):          # lazy arrays: x, t, logp, p, g, out (see _MAKERS)
        if name.startswith("_") or name not in _MAKERS:
            raise AttributeError(name)
        cache = self.__dict__["_cache"]
        if name not in cache:
            cache[name] = _MAKERS[name](self)
        return cache[name]

    # ---- peers: converted inputs cached per data set
    def torch(self, name):
        key = "torch:" + name
        if key not in self._cache:
            self._cache[key] = _torch().from_numpy(getattr(self, name))
        return self._cache[key]

    def jax(self, name):
        key = "jax:" + name
        if key not in self._cache:
            jax = _jax()
            self._cache[key] = jax.device_put(getattr(self, name))
        return self._cache[key]

    def free(self):
        self._cache.clear()
        self.expected_cache.clear()


def _make_logits(d):
    x = d._rng("x").standard_normal(d.shape, dtype=d.dtype)
    if d.kind == "ce":
        x *= 2
    return x


def _make_logp(d):
    x = d._cache.get("x")
    x = _make_logits(d) if x is None else x
    m = x.max(axis=d.axis, keepdims=True)
    z = x - m
    z -= np.log(np.exp(z).sum(axis=d.axis, keepdims=True))
    return z


def _make_probs(d):
    if d.kind == "ce":                               # softmax rows
        return np.exp(d.logp)
    x = d._cache.get("x")
    x = _make_logits(d) if x is None else x
    return (1 / (1 + np.exp(-x))).astype(d.dtype)    # sigmoid, strictly inside (0, 1)


def _make_target(d):
    rng = d._rng("t")
    if d.kind == "ce":
        return rng.integers(0, d.C, size=d.sample_shape, dtype=np.int64)
    return (rng.random(d.shape, dtype=np.float32) < 0.5).astype(d.dtype)


_MAKERS = {
    "x": _make_logits,
    "logp": _make_logp,                                     # log_softmax(x), NumPy, input dtype
    "p": _make_probs,                                       # softmax(x) / sigmoid(x)
    "t": _make_target,                                      # class indices / {0, 1} targets
    "g": lambda d: d._rng("g").standard_normal(d.shape, dtype=d.dtype),   # upstream gradient
    "out": lambda d: np.empty(d.shape, dtype=d.dtype),      # fastce out= buffer, memcpy dst
}


# ================================================================== peers

@functools.lru_cache(maxsize=None)
def _torch():
    import torch
    torch.set_num_threads(fastce.get_num_threads())     # same thread budget as fastce
    return torch


@functools.lru_cache(maxsize=None)
def _jax():
    import jax
    jax.config.update("jax_enable_x64", True)           # else float64 silently becomes float32
    return jax


def jax_call(fn, *args, **static):
    """jit(fn) with `static` keyword arguments bound; returns a blocking zero-arg call, compiled."""
    jax = _jax()
    f = jax.jit(functools.partial(fn, **static))

    def call():
        return jax.block_until_ready(f(*args))
    call()                                                # compile outside the timing
    return call


def torch_value_and_grad(loss_fn, x, *args, grad_only=False, **kwargs):
    """Zero-arg call computing loss_fn(x, ...) and its gradient w.r.t. x with autograd."""
    def call():
        xt = x.detach().requires_grad_(True)
        loss = loss_fn(xt, *args, **kwargs)
        loss.backward()
        return xt.grad if grad_only else (loss.detach(), xt.grad)
    return call


# ================================================================== NumPy baselines not in the CLI

def numpy_ce_fused(x, t, axis):
    """The CLI's NumPy fused CE (mean) + gradient, for either layout."""
    return numpy_ce(x, t) if axis == -1 else numpy_ce_axis1(x, t)


def numpy_nll_fused(lp, t, axis):
    """NumPy fused NLL (mean) + gradient w.r.t. the log-probabilities."""
    lpl = np.moveaxis(lp, axis, -1)
    picked = np.take_along_axis(lpl, t[..., None], axis=-1)
    loss = -picked.mean(dtype=lp.dtype)
    grad = np.zeros_like(lp)
    np.put_along_axis(np.moveaxis(grad, axis, -1), t[..., None], -1.0 / t.size, axis=-1)
    return loss, grad


def numpy_bce_probs_fused(p, y):
    """NumPy fused BCE from probabilities (mean) + gradient, torch's clamps."""
    with np.errstate(divide="ignore"):
        logp = np.maximum(np.log(p), -100)
        log1mp = np.maximum(np.log1p(-p), -100)
    loss = -(y * logp + (1 - y) * log1mp).mean()
    grad = (p - y) / np.maximum(p * (1 - p), 1e-12)
    grad /= p.size
    return loss, grad


# ================================================================== the runner

def _to_numpy(r):
    if isinstance(r, (tuple, list)):
        return tuple(_to_numpy(v) for v in r)
    if hasattr(r, "detach"):                              # torch tensor
        r = r.detach().numpy()
    return np.asarray(r)


_CHUNK = 1 << 18


def assert_close(actual, expected, dtype, peer=False, what=""):
    """|actual - expected| <= rtol |expected| + atol_rel * max|expected|, NaNs matching.

    Works chunk by chunk in float64 so big arrays need no big temporaries.
    """
    actual, expected = _to_numpy(actual), _to_numpy(expected)
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), what
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, dtype, peer, f"{what}[{i}]")
        return
    if np.dtype(dtype) == np.float64:
        rtol, arel = (1e-9, 1e-12) if not peer else (1e-7, 1e-10)
    else:
        rtol, arel = (1e-4, 1e-6) if not peer else (2e-3, 1e-4)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    a, e = actual.reshape(-1), expected.reshape(-1)
    chunks = range(0, e.size, _CHUNK)
    scale = max((float(np.nanmax(np.abs(e[i:i + _CHUNK]), initial=0.0)) for i in chunks),
                default=0.0)
    atol = arel * scale
    worst = 0.0
    for i in chunks:
        ac = a[i:i + _CHUNK].astype(np.float64)
        ec = e[i:i + _CHUNK].astype(np.float64)
        err = np.abs(ac - ec)
        bad = ~(err <= rtol * np.abs(ec) + atol)
        if bad.any():
            bad &= ~(np.isnan(ac) & np.isnan(ec))
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise AssertionError(
                    f"{what}: not close at flat index {i + k}: {ac[k]!r} vs {ec[k]!r} "
                    f"(rtol={rtol}, atol={atol:.3g})")
        worst = max(worst, float(np.nanmax(err, initial=0.0)))
    return worst


def cli_impl(name, data, cli):
    """The CLI's implementation `name` ("numba" or "torch.compile") of `cli` = (kind, mode) on
    `data`, warmed up (compilation outside the timing); fused results as (loss, grad)."""
    kind, mode = cli
    try:
        fn = _bench.build_impl(name, kind, mode, data.x, data.t, data.out,
                               threads=fastce_threads())
    except _bench.NotApplicable:
        pytest.skip(f"no {name} equivalent of {kind} {mode}")
    if name == "numba" and mode != _bench.FWD:
        kernel = fn
        fn = lambda: (kernel(), data.out)                     # noqa: E731  gradient in out=
    _bench.warm_up(fn, _bench._WARMUP.get(name, 1))
    return fn


def run(benchmark, data, impl, func, *, fastce, numpy, expected=None, torch=None, jax=None,
        src=None, cli=None):
    """Benchmark one impl of `func` on `data` in the group "<func> <case> <dtype>".

    fastce, numpy : zero-arg callables.
    expected      : zero-arg callable giving the float64 answer; None means `numpy` is itself the
                    float64 reference (tests/reference.py), so its result is the expected one.
    torch, jax    : one-arg factories (the torch module / the jax module) returning a prepared
                    zero-arg callable; None if the peer has no equivalent.
    src           : the input copied by the memcpy floor (default data.x).
    cli           : (kind, mode) of `python -m fastce bench` for the numba and torch.compile
                    impls (fastce._bench builds them); None if they have no equivalent.
    """
    benchmark.group = f"{func} {data.label}"
    benchmark.extra_info.update(
        impl=impl, function=func, case=data.case, dtype=data.dtype.name,
        shape=list(data.shape), nominal_shape=list(data.nominal_shape), quick=data.quick,
        fastce_threads=fastce_threads())
    if impl == "fastce":
        fn = fastce
    elif impl == "numpy":
        fn = numpy
    elif impl == "memcpy":
        fn = functools.partial(np.copyto, data.out, data.x if src is None else src)
    elif impl == "torch":
        if torch is None:
            pytest.skip(f"no torch equivalent of {func}")
        th = _torch()
        benchmark.extra_info.update(peer_version=th.__version__, peer_threads=th.get_num_threads())
        fn = torch(th)
    elif impl == "jax":
        if jax is None:
            pytest.skip(f"no JAX equivalent of {func}")
        jx = _jax()
        benchmark.extra_info.update(peer_version=jx.__version__)
        fn = jax(jx)
    elif impl in ("torch_compile", "numba"):
        if cli is None:
            pytest.skip(f"no {impl} equivalent of {func}")
        fn = cli_impl("torch.compile" if impl == "torch_compile" else "numba", data, cli)
        benchmark.extra_info.update(peer_version=_bench._version(PEER_MODULES[impl]))
    else:                                                 # pragma: no cover
        raise ValueError(impl)

    result = benchmark(fn)

    if not data.check or impl == "memcpy":
        return result
    key = func
    if impl == "numpy" and expected is None:
        data.expected_cache[key] = result                 # the reference itself
        return result
    if key not in data.expected_cache:
        data.expected_cache[key] = (expected or numpy)()
    assert_close(result, data.expected_cache[key], data.dtype, peer=impl in PEERS,
                 what=f"{impl} {func} {data.label}")
    return result


def fastce_threads():
    return fastce.get_num_threads()
