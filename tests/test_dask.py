"""fastce.dask: vocab-parallel and batch-chunked losses, row ops, linear CE, out-of-core input.

Two kinds of test:
* the parity grid, on the synchronous scheduler: every option x reduction x chunking (batch
  axis, class axis, both) x dtype, loss and gradient, against the in-memory fastce call on the
  same data and against the float64 NumPy reference (tests/reference.py);
* a real ``dask.distributed.LocalCluster(processes=True, n_workers=2)``, module-scoped, for the
  paths that must survive pickling to worker processes (vocab-parallel loss + gradient,
  ``from_npy`` files opened by the workers, zarr, linear CE).
"""

import os
import pickle

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
import dask  # noqa: E402

import fastce  # noqa: E402
import fastce.dask as fcd  # noqa: E402
from conftest import (  # noqa: E402
    CE_OPTIONS,
    assert_close,
    fd_grad,
    make_index_target,
    make_logits,
    make_onehot_target,
    make_prob_target,
)
from reference import ref_cross_entropy, ref_log_softmax, ref_logsumexp  # noqa: E402

REDUCTIONS = ["mean", "sum", "none"]


def compute(*arrays):
    """Evaluate on the synchronous scheduler (even while the module's cluster is up)."""
    return dask.compute(*arrays, scheduler="sync")


def ulps(a, b):
    """|a - b| in units of the last place of b (b's dtype)."""
    b = np.asarray(b)
    return abs(float(a) - float(b)) / float(np.spacing(np.abs(b)))


# --------------------------------------------------------------------------- the parity grid
#
# Logits (N, C) = (23, 17); chunkings: rows split unevenly, classes split unevenly into four
# chunks (one of a single class), both.  Options: conftest's CE_OPTIONS plus z-loss and
# softcap on both target kinds.

N, C = 23, 17
CHUNKINGS = {
    "batch": ((5, 11, 7), (17,)),
    "vocab": ((23,), (6, 1, 4, 6)),
    "both": ((9, 14), (5, 5, 7)),
}
OPTIONS = dict(CE_OPTIONS)
OPTIONS["zloss_softcap"] = dict(target="index", weight=True, ignore_frac=0.2,
                                label_smoothing=0.1, z_loss=0.02, softcap=3.0)
OPTIONS["prob_zloss_softcap"] = dict(target="prob", weight=True, label_smoothing=0.1,
                                     z_loss=0.02, softcap=3.0)


def _case(rng, option, dtype):
    """(x, target, kwargs) of shape (N, C) for one OPTIONS entry (conftest's generators)."""
    opt = OPTIONS[option]
    x = make_logits(rng, (N, C), dtype)
    kw = {k: opt[k] for k in ("label_smoothing", "z_loss", "softcap") if k in opt}
    if opt.get("weight"):
        kw["weight"] = rng.uniform(0.2, 2.0, size=C).astype(dtype)
    if opt["target"] == "index":
        ii = opt.get("ignore_index", -100)
        if "ignore_index" in opt:
            kw["ignore_index"] = ii
        t = make_index_target(rng, (N, C), -1, ignore_frac=opt.get("ignore_frac", 0.0),
                              ignore_index=ii)
    elif opt["target"] == "prob":
        t = make_prob_target(rng, (N, C), -1, dtype)
    else:
        t = make_onehot_target(rng, (N, C), -1, dtype)
    return x, t, kw


def _grad_output(rng, reduction):
    return rng.uniform(-1.5, 1.5, N) if reduction == "none" else 0.7


def _target_dask(t, chunks):
    return da.from_array(t, chunks=chunks if np.ndim(t) == 2 else chunks[0])


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", list(OPTIONS))
def test_parity_float64(rng, option, reduction, chunking):
    """float64: loss and gradient agree with the in-memory call to 1e-12 relative (and with
    the float64 reference)."""
    x, t, kw = _case(rng, option, np.float64)
    go = _grad_output(rng, reduction)
    ch = CHUNKINGS[chunking]
    res = fcd.cross_entropy(da.from_array(x, chunks=ch), _target_dask(t, ch),
                            reduction=reduction, return_grad=True, grad_output=go, **kw)
    assert all(isinstance(r, da.Array) for r in res)
    assert res[1].chunks == ch                        # the gradient keeps the logits' chunks
    loss, grad = compute(*res)
    want_loss, want_grad = fastce.cross_entropy(x, t, reduction=reduction, return_grad=True,
                                                grad_output=go, **kw)
    assert np.asarray(loss).dtype == np.float64 and grad.dtype == np.float64
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-15)
    assert_close(loss, ref_cross_entropy(x, t, reduction=reduction, **kw))


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", ["plain", "weight_ignore_smooth", "prob_weight_smooth",
                                    "zloss_softcap"])
def test_parity_float32(rng, option, reduction, chunking):
    """float32: mean/sum within 1 ulp of the in-memory call; per-sample losses and gradients
    within float32 tolerance; dtypes as the in-memory call."""
    x, t, kw = _case(rng, option, np.float32)
    go = _grad_output(rng, reduction)
    ch = CHUNKINGS[chunking]
    loss, grad = compute(*fcd.cross_entropy(da.from_array(x, chunks=ch), _target_dask(t, ch),
                                            reduction=reduction, return_grad=True,
                                            grad_output=go, **kw))
    want_loss, want_grad = fastce.cross_entropy(x, t, reduction=reduction, return_grad=True,
                                                grad_output=go, **kw)
    assert np.asarray(loss).dtype == np.float32 and grad.dtype == np.float32
    if reduction == "none":
        assert_close(loss, want_loss, dtype=np.float32)
    else:
        assert ulps(loss, want_loss) <= 1
    assert_close(grad, want_grad, dtype=np.float32, kind="grad")


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_float16_dtypes_and_values(rng, reduction, chunking):
    """float16 logits: losses and gradients in the in-memory call's dtypes (float32 mean/sum,
    float16 per-sample losses and gradient), the reduced loss not built from float16-rounded
    per-sample losses."""
    x, t, kw = _case(rng, "weight_ignore_smooth", np.float16)
    ch = CHUNKINGS[chunking]
    loss, grad = compute(*fcd.cross_entropy(da.from_array(x, chunks=ch), _target_dask(t, ch),
                                            reduction=reduction, return_grad=True, **kw))
    want_loss, want_grad = fastce.cross_entropy(x, t, reduction=reduction, return_grad=True,
                                                **kw)
    assert np.asarray(loss).dtype == np.asarray(want_loss).dtype
    assert grad.dtype == want_grad.dtype == np.float16
    if reduction == "none":
        assert_close(loss, want_loss, dtype=np.float16, kind="grad")
    else:
        assert ulps(loss, want_loss) <= 1
    assert_close(grad, want_grad, dtype=np.float16, kind="grad")


@pytest.mark.parametrize("option", ["plain", "weight_ignore_smooth", "prob_weight_smooth"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_float32_large_within_one_ulp(rng, option, reduction):
    """Many rows in many blocks: the float32 result is within 1 ulp of the in-memory call on
    both paths (the issue's bug: block sums rounded to float32 before the total)."""
    x = (rng.standard_normal((4000, 48)) * 3).astype(np.float32)
    kw = {}
    if option == "prob_weight_smooth":
        t = rng.dirichlet(np.ones(48), size=4000).astype(np.float32)
    else:
        t = rng.integers(0, 48, 4000)
    if option != "plain":
        kw = dict(weight=rng.uniform(0.1, 3.0, 48), label_smoothing=0.2)
    if "ignore" in option:
        t[rng.random(4000) < 0.3] = -100
    want = fastce.cross_entropy(x, t, reduction=reduction, **kw)
    for ch in [(333, 48), (4000, 13), (1000, 20)]:
        got, = compute(fcd.cross_entropy(da.from_array(x, chunks=ch), t, reduction=reduction,
                                         **kw))
        assert ulps(got, want) <= 1, ch


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_vocab_parallel_float32_partials_are_float64(rng, reduction):
    """The vocab-parallel float32 result is the float64 total, cast once: it equals the
    in-memory float64 call on the same (upcast) data, cast to float32."""
    x = (rng.standard_normal((300, 64)) * 4).astype(np.float32)
    t = rng.integers(0, 64, 300)
    w = rng.uniform(0.5, 2.0, 64)
    kw = dict(weight=w, label_smoothing=0.1, reduction=reduction)
    got, = compute(fcd.cross_entropy(da.from_array(x, chunks=(70, 16)), t, **kw))
    want64 = fastce.cross_entropy(x.astype(np.float64), t, **kw)
    assert got == np.float32(want64)
    got64, = compute(fcd.cross_entropy(da.from_array(x.astype(np.float64), chunks=(70, 16)), t,
                                       **kw))
    np.testing.assert_allclose(got64, want64, rtol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target", ["index", "prob"])
def test_axis1_layout_class_chunks(rng, reduction, target):
    """(N, C, H, W) with axis=1, the class axis split and the spatial axes split too."""
    x = rng.standard_normal((3, 11, 4, 5)) * 2
    if target == "index":
        t = rng.integers(0, 11, (3, 4, 5))
        t[0, 0] = -100
        td = da.from_array(t, chunks=(2, 3, 2))
    else:
        t = np.moveaxis(rng.dirichlet(np.ones(11), size=(3, 4, 5)), -1, 1)
        td = da.from_array(t, chunks=(2, 4, 3, 2))
    kw = dict(weight=rng.uniform(0.5, 2.0, 11), label_smoothing=0.1, z_loss=0.01, axis=1)
    go = rng.uniform(0.5, 1.5, (3, 4, 5)) if reduction == "none" else 1.3
    xd = da.from_array(x, chunks=(2, 4, 3, 2))
    loss, grad = compute(*fcd.cross_entropy(xd, td, reduction=reduction, return_grad=True,
                                            grad_output=go, **kw))
    want = fastce.cross_entropy(x, t, reduction=reduction, return_grad=True, grad_output=go,
                                **kw)
    np.testing.assert_allclose(loss, want[0], rtol=1e-12)
    np.testing.assert_allclose(grad, want[1], rtol=1e-12, atol=1e-15)


def test_gradient_finite_differences_vocab_parallel(rng):
    """The vocab-parallel gradient against 4th-order finite differences of the in-memory loss
    (an independent check of the derivation, not only of parity)."""
    x = rng.standard_normal((4, 9))
    t = np.array([1, 8, -100, 4])
    kw = dict(weight=rng.uniform(0.5, 2.0, 9), label_smoothing=0.15, z_loss=0.05, softcap=2.5)
    _, grad = compute(*fcd.cross_entropy(da.from_array(x, chunks=(3, 4)), t, return_grad=True,
                                         **kw))
    want = fd_grad(lambda v: ref_cross_entropy(v, t, **kw), x, h=1e-3)
    np.testing.assert_allclose(grad, want, rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------- IEEE special values

def _special_logits(C=12):
    x = np.linspace(-2.0, 3.0, 8 * C).reshape(8, C)
    x[0, :] = -np.inf                  # every class masked: NaN (as the in-memory call)
    x[1, 3] = -np.inf                  # one masked class, in a chunk of its own below
    x[2, :6] = -np.inf                 # a whole class chunk masked
    x[3, 4] = np.nan                   # NaN propagates to the sample
    x[4, 2] = np.inf                   # +inf: NaN, as the in-memory call
    x[5, 7] = -np.inf                  # masked target class: infinite loss
    return x


@pytest.mark.parametrize("chunking", [(3, -1), (-1, 3), (5, 6)])
@pytest.mark.parametrize("opts", [{}, dict(label_smoothing=0.1), dict(z_loss=0.01),
                                  dict(softcap=20.0)], ids=["plain", "smooth", "zloss", "cap"])
def test_masking_and_nan_like_in_memory(opts, chunking):
    x = _special_logits()
    t = np.array([1, 2, 7, 4, 0, 7, 11, -100])
    for target in (t, np.full(x.shape, 1.0 / x.shape[1])):
        loss, grad = compute(*fcd.cross_entropy(da.from_array(x, chunks=chunking), target,
                                                reduction="none", return_grad=True, **opts))
        want = fastce.cross_entropy(x, target, reduction="none", return_grad=True, **opts)
        np.testing.assert_allclose(loss, want[0], rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(grad, want[1], rtol=1e-12, atol=1e-15, equal_nan=True)


@pytest.mark.parametrize("chunking", [(3, -1), (-1, 3), (5, 5)])
def test_row_ops_special_values(chunking):
    x = _special_logits()
    xd = da.from_array(x, chunks=chunking)
    lse, ls, sm = compute(fcd.logsumexp(xd), fcd.log_softmax(xd), fcd.softmax(xd))
    np.testing.assert_allclose(lse, fastce.logsumexp(x), rtol=1e-13, equal_nan=True)
    np.testing.assert_allclose(ls, fastce.log_softmax(x), rtol=1e-13, equal_nan=True)
    np.testing.assert_allclose(sm, fastce.softmax(x), rtol=1e-13, atol=1e-300, equal_nan=True)


def test_confident_rows_keep_relative_precision(rng):
    """Loss ~1e-30 where lse - x_y rounds to 0: the merged S - 1 keeps it, relative to the
    true value (the reference is exact here: loss = log1p((C-1) exp(-margin)))."""
    C = 64
    margins = np.array([30.0, 50.0, 70.0, 700.0])
    x = np.zeros((4, C))
    x[:, 37] = margins
    x[3] += 1e4                        # a large common offset too
    t = np.full(4, 37)
    exact = np.log1p((C - 1) * np.exp(-margins))
    loss, grad = compute(*fcd.cross_entropy(da.from_array(x, chunks=(4, 16)), t,
                                            reduction="none", return_grad=True))
    np.testing.assert_allclose(loss, exact, rtol=1e-14)
    # d/dx_y = p_y - 1 = exp(-loss) - 1
    np.testing.assert_allclose(grad[:, 37], np.expm1(-exact), rtol=1e-14)
    want = fastce.cross_entropy(x, t, reduction="none", return_grad=True)
    np.testing.assert_allclose(loss, want[0], rtol=1e-14)


# --------------------------------------------------------------------------- structure

def test_no_task_holds_a_whole_row(rng):
    """Vocab-parallel: no task's array result spans the class axis (C = 40, chunks of 10)."""
    from dask.callbacks import Callback
    x = rng.standard_normal((30, 40))
    t = rng.integers(0, 40, 30)
    seen = []

    class Shapes(Callback):
        def _posttask(self, key, result, dsk, state, id):
            for r in (result if isinstance(result, tuple) else (result,)):
                # (not the source array, nor the final gathering of results for the caller)
                if (isinstance(r, np.ndarray) and r.ndim == 2 and r is not x
                        and not str(key).startswith("finalize")):
                    seen.append((key, r.shape))

    xd = da.from_array(x, chunks=(10, 10))
    with Shapes():
        dask.compute(*fcd.cross_entropy(xd, t, weight=np.ones(40), label_smoothing=0.1,
                                        return_grad=True), fcd.log_softmax(xd),
                     scheduler="sync")
    assert seen and max(shape[1] for _, shape in seen) < 40, [s for s in seen if s[1][1] >= 40]


@pytest.mark.parametrize("chunks", [(500, 64), (500, 16)], ids=["batch", "vocab"])
def test_tasks_do_not_carry_the_data(rng, chunks):
    """No task of the loss/gradient graph pickles to more than its own block of input: the
    functions must not capture the input dask arrays (whose graph holds all the NumPy data,
    which would then travel with every task to every worker)."""
    cloudpickle = pytest.importorskip("cloudpickle")
    x = rng.standard_normal((2000, 64))                      # 1 MiB, blocks of <= 256 KiB
    t = rng.integers(0, 64, 2000)
    xd, td = da.from_array(x, chunks=chunks), da.from_array(t, chunks=chunks[0])
    outs = [*fcd.cross_entropy(xd, td, weight=np.ones(64), label_smoothing=0.1,
                               return_grad=True), fcd.log_softmax(xd), fcd.logsumexp(xd),
            *fcd.linear_cross_entropy(xd, rng.standard_normal((8, 64)), td, return_grad=True)]
    for red in REDUCTIONS:          # the loss-only graphs are built differently
        outs += [*fcd.kl_div_logits(xd, xd + 1.0, reduction=red, return_grad=True),
                 fcd.kl_div_logits(xd, xd * 2.0, reduction=red),
                 *fcd.nll_loss(xd, td, weight=np.ones(64), reduction=red, return_grad=True),
                 *fcd.entropy(xd, reduction=red, return_grad=True),
                 fcd.cross_entropy(xd, td, weight=np.ones(64), reduction=red),
                 fcd.nll_loss(xd, td, reduction=red),
                 fcd.linear_cross_entropy(xd, rng.standard_normal((8, 64)), td, reduction=red)]
    graph = dict(dask.base.collections_to_expr(outs).__dask_graph__())
    sizes = {k: len(cloudpickle.dumps(v)) for k, v in graph.items()}
    biggest = max(sizes.items(), key=lambda kv: kv[1])
    assert biggest[1] < x.nbytes / 2, biggest


@pytest.mark.parametrize("chunks", [(5, 8), (5, 3)], ids=["batch", "vocab"])
def test_calls_differing_only_in_weight_or_grad_output_do_not_share_keys(rng, chunks):
    """Computed together, each call gets its own answer (dask keys are content-derived)."""
    x = rng.standard_normal((10, 8))
    t = rng.integers(0, 8, 10)
    w1, w2 = np.ones(8), rng.uniform(0.1, 3.0, 8)
    xd = da.from_array(x, chunks=chunks)
    for red in ("mean", "sum", "none"):
        outs = compute(*fcd.cross_entropy(xd, t, weight=w1, reduction=red, return_grad=True),
                       *fcd.cross_entropy(xd, t, weight=w2, reduction=red, return_grad=True,
                                          grad_output=0.5 if red != "none" else 0.5 * np.ones(10)),
                       fcd.linear_cross_entropy(xd, np.eye(8), t, weight=w1, reduction=red),
                       fcd.linear_cross_entropy(xd, np.eye(8), t, weight=w2, reduction=red))
        go = 0.5 if red != "none" else 0.5 * np.ones(10)
        want = (*fastce.cross_entropy(x, t, weight=w1, reduction=red, return_grad=True),
                *fastce.cross_entropy(x, t, weight=w2, reduction=red, return_grad=True,
                                      grad_output=go),
                fastce.cross_entropy(x, t, weight=w1, reduction=red),
                fastce.cross_entropy(x, t, weight=w2, reduction=red))
        for got, exp in zip(outs, want):
            np.testing.assert_allclose(got, exp, rtol=1e-12, atol=1e-15)
        if red == "sum":        # the same call but for the scalar grad_output
            g1, g2 = compute(fcd.cross_entropy(xd, t, reduction=red, return_grad=True)[1],
                             fcd.cross_entropy(xd, t, reduction=red, return_grad=True,
                                               grad_output=0.25)[1])
            np.testing.assert_allclose(g2, 0.25 * g1, rtol=1e-12)


def test_lazy_until_computed(rng):
    calls = []

    def spy(b):
        calls.append(b.shape)
        return b

    x = rng.standard_normal((12, 8))
    xd = da.from_array(x, chunks=(6, 4)).map_blocks(spy, dtype=x.dtype, meta=np.empty((0, 0)))
    outs = [*fcd.cross_entropy(xd, rng.integers(0, 8, 12), return_grad=True),
            fcd.logsumexp(xd), fcd.log_softmax(xd), fcd.softmax(xd)]
    assert not calls
    assert all(isinstance(o, da.Array) for o in outs)
    compute(*outs)
    assert calls and all(s[1] == 4 for s in calls)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("chunking", [((4, 3), (10,)), ((7,), (3, 3, 4)), ((2, 5), (5, 5))])
def test_row_ops_parity(rng, dtype, chunking):
    x = (rng.standard_normal((7, 10)) * 3).astype(dtype)
    xd = da.from_array(x, chunks=chunking)
    lse, ls, sm = compute(fcd.logsumexp(xd), fcd.log_softmax(xd), fcd.softmax(xd))
    for got, want in [(lse, fastce.logsumexp(x)), (ls, fastce.log_softmax(x)),
                      (sm, fastce.softmax(x))]:
        assert got.dtype == np.asarray(want).dtype
        assert_close(got, want, dtype=np.float32 if dtype == np.float16 else dtype, kind="grad")
    assert_close(lse, ref_logsumexp(x.astype(np.float64)), dtype=dtype, kind="grad")
    assert_close(ls, ref_log_softmax(x.astype(np.float64)), dtype=dtype, kind="grad")


def test_row_ops_axis1(rng):
    x = rng.standard_normal((2, 9, 3, 4))
    xd = da.from_array(x, chunks=(1, 4, 2, 4))
    lse, ls = compute(fcd.logsumexp(xd, axis=1), fcd.log_softmax(xd, axis=1))
    np.testing.assert_allclose(lse, fastce.logsumexp(x, axis=1), rtol=1e-13)
    np.testing.assert_allclose(ls, fastce.log_softmax(x, axis=1), rtol=1e-13)


def test_nll_loss_gradient_keeps_input_chunks(rng):
    lp = fastce.log_softmax(rng.standard_normal((20, 9)))
    t = rng.integers(0, 9, 20)
    loss, grad = fcd.nll_loss(da.from_array(lp, chunks=(6, 4)), t, return_grad=True)
    assert grad.chunks == ((6, 6, 6, 2), (4, 4, 1))
    loss, grad = compute(loss, grad)
    want = fastce.nll_loss(lp, t, return_grad=True)
    np.testing.assert_allclose(loss, want[0], rtol=1e-13)
    np.testing.assert_allclose(grad, want[1], rtol=1e-13)


# --------------------------------------------------------------------------- entropy

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_entropy_parity(rng, reduction, chunking, dtype):
    x = make_logits(rng, (N, C), dtype, scale=3.0)
    x[0, 3] = -np.inf                  # a masked class
    x[1, :6] = -np.inf                 # a whole class chunk masked (vocab chunkings)
    x[2] = 0
    x[2, 5] = 80                       # confident: H ~ 1e-33, kept to full precision
    go = _grad_output(rng, reduction)
    ch = CHUNKINGS[chunking]
    loss, grad = compute(*fcd.entropy(da.from_array(x, chunks=ch), reduction=reduction,
                                      return_grad=True, grad_output=go))
    want = fastce.entropy(x, reduction=reduction, return_grad=True, grad_output=go)
    assert np.asarray(loss).dtype == np.asarray(want[0]).dtype and grad.dtype == want[1].dtype
    if dtype == np.float64:
        np.testing.assert_allclose(loss, want[0], rtol=1e-12)
        np.testing.assert_allclose(grad, want[1], rtol=1e-12, atol=1e-15)
    else:
        assert_close(loss, want[0], dtype=np.float32)
        assert_close(grad, want[1], dtype=np.float32, kind="grad")


def test_entropy_special_rows_and_chunks(rng):
    x = _special_logits()
    xd = da.from_array(x, chunks=(3, 5))
    got, = compute(fcd.entropy(xd))
    np.testing.assert_allclose(got, fastce.entropy(x), rtol=1e-13, equal_nan=True)
    _, grad = fcd.entropy(xd, return_grad=True, reduction="sum")
    assert grad.chunks == xd.chunks


# --------------------------------------------------------------------------- nll_loss

def _ref_nll(lp, t, w, ignore, reduction):
    """float64 NumPy reference: -w[y] lp[n, y], mean over sum of kept weights."""
    lp = np.asarray(lp, dtype=np.float64)
    kept = t != ignore
    ts = np.where(kept, t, 0)
    wy = np.where(kept, 1.0 if w is None else np.asarray(w, np.float64)[ts], 0.0)
    per = np.where(kept, -wy * np.take_along_axis(lp, ts[:, None], axis=1)[:, 0], 0.0)
    if reduction == "none":
        return per
    return per.sum() / (wy.sum() if reduction == "mean" else 1.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weight"])
def test_nll_loss_parity(rng, weighted, reduction, chunking, dtype):
    """nll_loss on every chunking, the class axis split included (vocab-parallel): the chunk
    that owns a target gives its term; an in-range ignore_index, NaN where no target is."""
    lp = fastce.log_softmax(make_logits(rng, (N, C), dtype))
    ignore = 4                          # inside [0, C): owned by a chunk, still ignored
    t = make_index_target(rng, (N, C), -1, ignore_frac=0.2, ignore_index=ignore)
    t[:3] = [4, 5, 16]
    lp[0, :] = np.nan                   # an ignored sample: exactly 0, NaN or not
    lp[1, 2] = np.nan                   # NaN off the target: not read
    w = rng.uniform(0.2, 2.0, C) if weighted else None
    go = _grad_output(rng, reduction)
    xd = da.from_array(lp, chunks=CHUNKINGS[chunking])
    kw = dict(weight=w, ignore_index=ignore, reduction=reduction)
    lazy = fcd.nll_loss(xd, t, return_grad=True, grad_output=go, **kw)
    assert lazy[1].chunks == xd.chunks
    loss, grad = compute(*lazy)
    only, = compute(fcd.nll_loss(xd, t, **kw))
    want = fastce.nll_loss(lp, t, return_grad=True, grad_output=go, **kw)
    assert np.asarray(loss).dtype == np.asarray(want[0]).dtype == np.asarray(only).dtype
    assert grad.dtype == want[1].dtype
    rtol = 1e-14 if dtype == np.float64 else 2e-7
    np.testing.assert_allclose(loss, want[0], rtol=rtol)
    np.testing.assert_allclose(only, want[0], rtol=rtol)
    np.testing.assert_allclose(loss, _ref_nll(lp, t, w, ignore, reduction), rtol=rtol)
    np.testing.assert_allclose(grad, want[1], rtol=rtol)


def test_nll_loss_vocab_parallel_keeps_class_chunks(rng):
    """A split class axis is not rechunked: the gradient has the input's chunks and no task
    result spans the class axis."""
    from dask.callbacks import Callback
    lp = fastce.log_softmax(rng.standard_normal((30, 40)))
    t = rng.integers(0, 40, 30)
    xd = da.from_array(lp, chunks=(10, 10))
    seen = []

    class Shapes(Callback):
        def _posttask(self, key, result, dsk, state, id):
            if (isinstance(result, np.ndarray) and result.ndim == 2 and result is not lp
                    and not str(key).startswith("finalize")):
                seen.append(result.shape)

    for red in REDUCTIONS:
        loss, grad = fcd.nll_loss(xd, t, reduction=red, weight=np.ones(40), return_grad=True)
        assert grad.chunks == xd.chunks
        with Shapes():
            compute(loss, grad)
    assert seen and max(s[1] for s in seen) < 40


# --------------------------------------------------------------------------- kl_div_logits

KL_REDUCTIONS = ["batchmean", "mean", "sum", "none"]


def _kl_pair(rng, dtype, shape=(N, C)):
    """Student, teacher: generic rows plus identical, nearly equal, masked rows and a masked
    class chunk (the first six classes of a row, one whole chunk of the 'vocab' chunking)."""
    s = make_logits(rng, shape, np.float64, scale=3.0)
    t = s + rng.standard_normal(shape)
    t[0] = s[0]                                         # identical: loss and grad exactly 0
    t[1] = s[1] + 1e-6 * rng.standard_normal(C)         # KL ~ 1e-13: relative precision
    s[2, 3] = t[2, 3] = -np.inf                         # a class masked in both
    s[3, :6] = t[3, :6] = -np.inf                       # a whole class chunk masked
    t[4, 7] = -np.inf                                   # teacher-only mask: fine
    return s.astype(dtype), t.astype(dtype)


def _ref_kl(s, t, tau):
    """float64 NumPy reference (per sample): tau^2 sum p (log p - log q), tau (q - p)."""
    s, t = np.asarray(s, np.float64) / tau, np.asarray(t, np.float64) / tau
    ls = s - s.max(1, keepdims=True)
    ls -= np.log(np.exp(ls).sum(1, keepdims=True))
    lt = t - t.max(1, keepdims=True)
    lt -= np.log(np.exp(lt).sum(1, keepdims=True))
    p, q = np.exp(lt), np.exp(ls)
    with np.errstate(invalid="ignore"):
        kl = np.where(p > 0, p * (lt - ls), 0.0).sum(1)
    return tau * tau * kl, tau * (q - p)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("reduction", KL_REDUCTIONS)
@pytest.mark.parametrize("tau", [1.0, 2.5])
def test_kl_div_logits_parity(rng, tau, reduction, chunking, dtype):
    s, t = _kl_pair(rng, dtype)
    go = _grad_output(rng, "none" if reduction == "none" else "mean")
    ch = CHUNKINGS[chunking]
    sd, td = da.from_array(s, chunks=ch), da.from_array(t, chunks=ch)
    kw = dict(temperature=tau, reduction=reduction)
    loss, grad = compute(*fcd.kl_div_logits(sd, td, return_grad=True, grad_output=go, **kw))
    only, = compute(fcd.kl_div_logits(sd, td, **kw))
    want = fastce.kl_div_logits(s, t, return_grad=True, grad_output=go, **kw)
    assert np.asarray(loss).dtype == np.asarray(want[0]).dtype == np.asarray(only).dtype
    assert grad.dtype == want[1].dtype
    if dtype == np.float64:
        np.testing.assert_allclose(loss, want[0], rtol=1e-12)
        np.testing.assert_allclose(only, want[0], rtol=1e-12)
        np.testing.assert_allclose(grad, want[1], rtol=1e-12, atol=1e-15)
    else:
        assert_close(loss, want[0], dtype=np.float32)
        assert_close(only, want[0], dtype=np.float32)
        assert_close(grad, want[1], dtype=np.float32, kind="grad")
    if reduction == "none":
        np.testing.assert_array_equal(loss[0], 0.0)
        np.testing.assert_array_equal(grad[0], 0.0)
        ref, _ = _ref_kl(s, t, tau)
        np.testing.assert_allclose(loss[2:], ref[2:], rtol=1e-10 if dtype == np.float64 else 1e-5)


def test_kl_div_logits_nearly_equal_rows_keep_relative_precision(rng):
    """Rows 1e-7 apart (KL ~ 1e-15): vocab-parallel agrees with the in-memory kernel to
    1e-12 relative, and with the second-order expansion Var_q(d)/2 (an independent formula)."""
    s = rng.standard_normal((8, 64)) * 2
    t = s + 1e-7 * rng.standard_normal((8, 64))
    got, = compute(fcd.kl_div_logits(da.from_array(s, chunks=(4, 16)),
                                     da.from_array(t, chunks=(4, 16)), reduction="none"))
    np.testing.assert_allclose(got, fastce.kl_div_logits(s, t, reduction="none"), rtol=1e-12)
    q = np.exp(s - s.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    d = t - s
    var = (q * d * d).sum(1) - (q * d).sum(1) ** 2
    np.testing.assert_allclose(got, var / 2, rtol=1e-5)
    assert np.all(got > 0)


def test_kl_div_logits_gradient_matches_reference(rng):
    s, t = _kl_pair(rng, np.float64)
    _, grad = compute(*fcd.kl_div_logits(da.from_array(s, chunks=(9, 5)),
                                         da.from_array(t, chunks=(9, 5)), temperature=2.0,
                                         reduction="sum", return_grad=True))
    _, ref = _ref_kl(s, t, 2.0)
    np.testing.assert_allclose(grad, ref, rtol=1e-9, atol=1e-15)
    assert np.isfinite(grad).all()


@pytest.mark.parametrize("chunking", [(8, 2), (3, 1), (8, 3), (4, -1)])
def test_kl_div_logits_special_values_like_in_memory(chunking):
    inf, nan = np.inf, np.nan
    s = np.array([[0., 1, 2, 5], [0, -inf, 1, 2], [-inf, -inf, -inf, -inf], [0, nan, 1, 3],
                  [0, inf, 1, 1], [1, 2, 3, -inf], [-inf, -inf, 1, 2], [1, 2, -inf, -inf]])
    t = np.array([[0., 1, 2, 5], [0, 1, 1, 1], [-inf, -inf, -inf, -inf], [0, 1, 1, 1],
                  [0, 1, 1, 4], [1, -inf, 3, -inf], [-inf, -inf, 1, 3], [0, 0, -inf, -inf]])
    loss, grad = compute(*fcd.kl_div_logits(da.from_array(s, chunks=chunking),
                                            da.from_array(t, chunks=chunking),
                                            reduction="none", return_grad=True))
    want = fastce.kl_div_logits(s, t, reduction="none", return_grad=True)
    np.testing.assert_allclose(loss, want[0], rtol=1e-13)      # inf, NaN where it has them
    np.testing.assert_allclose(grad, want[1], rtol=1e-13, atol=1e-300)


def test_kl_div_logits_axis1_and_teacher_cast(rng):
    s = rng.standard_normal((3, 10, 4)).astype(np.float32)
    t = rng.standard_normal((3, 10, 4))                  # float64 teacher: cast to float32
    got = compute(*fcd.kl_div_logits(da.from_array(s, chunks=(2, 3, 4)),
                                     da.from_array(t, chunks=(3, 5, 2)), axis=1,
                                     reduction="none", return_grad=True))
    want = fastce.kl_div_logits(s, t, axis=1, reduction="none", return_grad=True)
    assert got[0].shape == (3, 4) and got[1].dtype == np.float32
    assert_close(got[0], want[0], dtype=np.float32)
    assert_close(got[1], want[1], dtype=np.float32, kind="grad")


@pytest.mark.parametrize("bad", [dict(reduction="avg"), dict(temperature=0.0),
                                 dict(temperature="2"), dict(axis=2), dict(target="shape"),
                                 dict(target="complex"), dict(input="int8_str")],
                         ids=lambda d: next(iter(d)) + "=" + str(next(iter(d.values()))))
def test_kl_div_logits_bad_options_raise_like_in_memory(rng, bad):
    s = rng.standard_normal((6, 4))
    t = rng.standard_normal((6, 4))
    kw = dict(bad)
    kind = kw.pop("target", None)
    if kind == "shape":
        t = t[:5]
    elif kind == "complex":
        t = t.astype(np.complex128)
    if kw.pop("input", None):
        s = s.astype("U8")
    with pytest.raises(Exception) as want:
        fastce.kl_div_logits(s, t, **kw)
    for ch in [(3, 4), (3, 2)]:
        sd = s if s.dtype.kind == "U" else da.from_array(s, chunks=ch)
        with pytest.raises(type(want.value)) as got:
            fcd.kl_div_logits(sd, da.from_array(t, chunks=ch[:t.ndim]), **kw)
        assert str(got.value) == str(want.value)


# --------------------------------------------------------------------------- validation

BAD = [
    dict(reduction="avg"),
    dict(label_smoothing=1.5),
    dict(label_smoothing="0.1"),
    dict(z_loss=-1.0),
    dict(softcap=0.0),
    dict(softcap=1e300),            # not a normal float32: the compute dtype is checked
    dict(ignore_index=1.5),
    dict(axis=2),
    dict(axis=1.0),
    dict(weight=np.ones(5)),
    dict(target="float_per_sample"),
    dict(target="int_probabilities"),
    dict(target="wrong_shape"),
    dict(target="probabilities", ignore_index=0),     # ignore_index means nothing there
    dict(target="masked"),
    dict(input="masked"),
]


@pytest.mark.parametrize("bad", BAD, ids=lambda d: next(iter(d)) + "=" + str(next(iter(d.values()))))
def test_bad_options_raise_like_in_memory(rng, bad):
    """Same exception type and message as fastce.cross_entropy, raised when the graph is built
    (before any data is read)."""
    x = rng.standard_normal((6, 4)).astype(np.float32)
    t = rng.integers(0, 4, 6)
    kw = dict(bad)
    kind = kw.pop("target", None)
    if kw.pop("input", None) == "masked":
        x = np.ma.masked_array(x, mask=x > 1)
    if kind == "masked":
        t = np.ma.masked_array(t, mask=t == 0)
    elif kind == "probabilities":
        t = np.full((6, 4), 0.25)
    elif kind == "float_per_sample":
        t = t.astype(np.float64)
    elif kind == "int_probabilities":
        t = np.ones((6, 4), dtype=np.int64)
    elif kind == "wrong_shape":
        t = t[:5]
    with pytest.raises(Exception) as want:
        fastce.cross_entropy(x, t, **kw)
    for ch in [(3, 4), (3, 2)]:
        xd = x if np.ma.isMaskedArray(x) else da.from_array(x, chunks=ch)
        with pytest.raises(type(want.value)) as got:
            fcd.cross_entropy(xd, t, **kw)
        assert str(got.value) == str(want.value)


def test_unknown_chunk_sizes_refused(rng):
    x = da.from_array(rng.standard_normal((6, 4)), chunks=3)
    xu = x[x[:, 0] > -10]                              # boolean mask: NaN chunk sizes
    with pytest.raises(ValueError, match=r"input has unknown chunk sizes.*compute_chunk_sizes"):
        fcd.cross_entropy(xu, np.zeros(6, dtype=np.int64))
    got, = compute(fcd.logsumexp(xu.compute_chunk_sizes()))
    np.testing.assert_allclose(got, fastce.logsumexp(x.compute()), rtol=1e-14)


def test_masked_dask_array_refused(rng):
    x = da.ma.masked_greater(da.from_array(rng.random((6, 4)), chunks=3), 0.5)
    with pytest.raises(TypeError, match="input is a numpy.ma.MaskedArray"):
        fcd.cross_entropy(x, np.zeros(6, dtype=np.int64))


def test_target_out_of_range_raises_when_computed(rng):
    x = da.from_array(rng.standard_normal((6, 4)), chunks=(3, 2))
    t = np.array([0, 1, 2, 4, 0, 0])
    with pytest.raises(IndexError) as want:
        fastce.cross_entropy(x.compute(), t)
    for xd in (x, x.rechunk((3, 4))):
        with pytest.raises(IndexError) as got:
            compute(fcd.cross_entropy(xd, t))
        assert str(got.value) == str(want.value)


def test_grad_output_shape_error(rng):
    x = da.from_array(rng.standard_normal((6, 4)), chunks=(3, 2))
    t = rng.integers(0, 4, 6)
    with pytest.raises(ValueError) as want:
        fastce.cross_entropy(x.compute(), t, reduction="none", return_grad=True,
                             grad_output=np.ones(5))
    with pytest.raises(ValueError) as got:
        fcd.cross_entropy(x, t, reduction="none", return_grad=True, grad_output=np.ones(5))
    assert str(got.value) == str(want.value)


# --------------------------------------------------------------------------- linear + CE

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target", ["index", "prob"])
def test_linear_cross_entropy(rng, reduction, target):
    Nn, D, Vv = 41, 6, 11
    X = rng.standard_normal((Nn, D))
    Wm = rng.standard_normal((Vv, D))
    b = rng.standard_normal(Vv)
    if target == "index":
        t = rng.integers(0, Vv, Nn)
        t[::5] = -100
    else:
        t = rng.dirichlet(np.ones(Vv), size=Nn)
    kw = dict(linear_bias=b, weight=rng.uniform(0.5, 2.0, Vv), label_smoothing=0.1,
              z_loss=0.01, chunk_size=4)
    go = rng.uniform(0.5, 1.5, Nn) if reduction == "none" else 0.8
    res = fcd.linear_cross_entropy(da.from_array(X, chunks=((10, 20, 11), (3, 3))), Wm, t,
                                   reduction=reduction, return_grad=True, grad_output=go, **kw)
    assert res[1].chunks == ((10, 20, 11), (6,))
    got = compute(*res)
    want = fastce.linear_cross_entropy(X, Wm, t, reduction=reduction, return_grad=True,
                                       grad_output=go, **kw)
    assert len(got) == len(want) == 4
    for g, w in zip(got, want):
        assert np.asarray(g).dtype == np.asarray(w).dtype
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
    loss_only, = compute(fcd.linear_cross_entropy(da.from_array(X, chunks=10), Wm, t,
                                                  reduction=reduction, **kw))
    np.testing.assert_allclose(loss_only, want[0], rtol=1e-12)


def test_linear_cross_entropy_float32_within_one_ulp(rng):
    X = rng.standard_normal((3000, 16)).astype(np.float32)
    Wm = rng.standard_normal((40, 16)).astype(np.float32)
    t = rng.integers(0, 40, 3000)
    got, = compute(fcd.linear_cross_entropy(da.from_array(X, chunks=700), Wm, t))
    assert ulps(got, fastce.linear_cross_entropy(X, Wm, t)) <= 1


def test_linear_cross_entropy_errors(rng):
    with pytest.raises(ValueError, match="linear_weight"):
        fcd.linear_cross_entropy(da.ones((4, 3), chunks=2), np.ones((5, 2)), np.zeros(4, int))
    with pytest.raises(ValueError, match="reduction"):
        fcd.linear_cross_entropy(da.ones((4, 3), chunks=2), np.ones((5, 3)), np.zeros(4, int),
                                 reduction="avg")


# --------------------------------------------------------------------------- out-of-core input

def test_from_npy_graph_holds_no_data(tmp_path, rng):
    x = rng.standard_normal((500, 30)).astype(np.float32)
    p = tmp_path / "x.npy"
    np.save(p, x)
    xd = fcd.from_npy(p, chunks=(100, 10))
    assert xd.shape == x.shape and xd.dtype == x.dtype and xd.chunks[1] == (10, 10, 10)
    graph_bytes = len(pickle.dumps(dict(xd.__dask_graph__())))
    assert graph_bytes < x.nbytes / 10          # paths and slices, not the data
    np.testing.assert_array_equal(xd.compute(scheduler="sync"), x)
    t = rng.integers(0, 30, 500)
    got, = compute(fcd.cross_entropy(xd, t))
    assert ulps(got, fastce.cross_entropy(x, t)) <= 1


def test_from_npy_chunkings_do_not_share_keys(tmp_path, rng):
    """Two chunkings (or read modes) of one file get different names, hence different keys:
    a cluster that still holds one's blocks must not hand them to the other (the bench saw a
    wrong loss from exactly that)."""
    x = rng.standard_normal((10, 6))
    np.save(tmp_path / "k.npy", x)
    a = fcd.from_npy(tmp_path / "k.npy", chunks=(2, -1))
    b = fcd.from_npy(tmp_path / "k.npy", chunks=(3, -1))
    c = fcd.from_npy(tmp_path / "k.npy", chunks=(2, -1), mmap=True)
    assert len({a.name, b.name, c.name}) == 3
    assert fcd.from_npy(tmp_path / "k.npy", chunks=(2, 6)).name == a.name   # same chunks
    for arr in compute(a, b, c):
        np.testing.assert_array_equal(arr, x)


def test_from_npy_fortran_order_and_blocks_are_copies(tmp_path, rng):
    x = np.asfortranarray(rng.standard_normal((40, 7)))
    p = tmp_path / "f.npy"
    np.save(p, x)
    src = fcd.NpyFile(p)
    block = src[5:9, 2:6]
    assert isinstance(block, np.ndarray) and not isinstance(block, np.memmap)
    assert block.flags.c_contiguous and block.flags.writeable
    np.testing.assert_array_equal(fcd.from_npy(p, chunks=(9, 3)).compute(scheduler="sync"), x)


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
@pytest.mark.parametrize("shape", [(50,), (13, 7), (4, 5, 6), (3, 0, 2), (1, 9), (300, 1100)])
def test_npyfile_slices_match_numpy(tmp_path, rng, shape, mmap):
    """Mapped views of contiguous runs and os.preadv reads give exactly NumPy's slice, for any
    unit-step slices (the mapping's offset is not page-aligned in general); other indices fall
    back to a memmap copy.  Mapped views are read-only, reads writeable (pooled buffers)."""
    x = rng.standard_normal(shape).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    src = fcd.NpyFile(tmp_path / "a.npy", mmap=mmap)
    for _ in range(25):
        nd = int(rng.integers(1, len(shape) + 1))
        idx = tuple(slice(*sorted(int(v) for v in rng.integers(0, n + 1, 2))) for n in shape[:nd])
        got = src[idx]
        np.testing.assert_array_equal(got, x[idx])
        assert got.flags.c_contiguous and got.dtype == x.dtype
        assert got.flags.writeable == (not mmap or got.size == 0 or
                                       not x[idx].flags.c_contiguous)
    rows = src[len(x) // 2:]                         # whole rows: one contiguous run
    assert rows.flags.writeable != mmap or rows.size == 0
    np.testing.assert_array_equal(src[..., ::2], x[..., ::2])
    np.testing.assert_array_equal(src[2:1], x[2:1])


def _pooled_array(pool, n=(1 << 18) + 5):
    """A pooled float32 array of n elements (over the pool's 1 MiB floor) filled with 1..n."""
    a = pool.array((n,), np.dtype(np.float32))
    assert a.nbytes >= pool.MIN_BYTES
    a[:] = np.arange(1, n + 1, dtype=np.float32)
    return a


def _lease_alive(pool):
    """Whether the pool's only buffer is on loan (not back in the free list)."""
    return sum(len(v) for v in pool._free.values()) == 0


def test_pooled_buffer_stays_leased_while_any_derived_view_lives():
    """A pooled read buffer goes back to the pool only when no array derived from it is left:
    handing it out again under a live view would overwrite that view's data (a silent wrong
    answer).  Each kind of derived array is the only survivor once; the buffer must stay on
    loan until it goes, and a second request must then get a different buffer."""
    import gc
    pool = fcd._BufferPool(per_size=4)
    derive = {
        "slice": lambda a: a[3:-7],
        "strided": lambda a: a[::3],
        "reshape": lambda a: a[:1 << 18].reshape(512, 512),
        "asarray": lambda a: np.asarray(a),
        "astype-nocopy": lambda a: a.astype(np.float32, copy=False),
        "view-dtype": lambda a: a.view(np.int32),
        "transpose-of-2d": lambda a: a[:1 << 18].reshape(512, 512).T[5:],
        "memoryview": lambda a: memoryview(a),
        "frombuffer": lambda a: np.frombuffer(a, np.float32),
        "dask-block": lambda a: da.from_array(a[:1000], chunks=100).blocks[3].compute(
            scheduler="sync"),
    }
    for name, fn in derive.items():
        pool.clear()
        a = _pooled_array(pool)
        expect = np.array(fn(a), copy=True)
        keep = fn(a)
        shares = np.shares_memory(np.asarray(keep), a)
        assert shares or name == "dask-block", name      # (dask may hand back a copy)
        del a
        gc.collect()
        assert _lease_alive(pool) == shares, name
        b = _pooled_array(pool)            # must not be the buffer `keep` still uses
        b[:] = -1.0
        np.testing.assert_array_equal(np.asarray(keep), expect, err_msg=name)
        del keep, b
        gc.collect()
        assert not _lease_alive(pool), name       # both returned once nothing uses them


def test_pooled_buffer_is_reused_pickles_and_stays_bounded():
    import gc
    pool = fcd._BufferPool(per_size=2, max_free=16 << 20)
    a = _pooled_array(pool)
    addr = a.__array_interface__["data"][0]
    ref = np.arange(1, a.size + 1, dtype=np.float32)
    back = pickle.loads(pickle.dumps(a[10:]))      # pickling copies the data out
    del a
    gc.collect()
    np.testing.assert_array_equal(back, ref[10:])
    b = pool.array((a_size := (1 << 18) + 5,), np.dtype(np.float32))
    assert b.__array_interface__["data"][0] == addr          # the same (pre-faulted) buffer
    assert b.flags.writeable and b.flags.c_contiguous and type(b) is np.ndarray
    del b
    many = [_pooled_array(pool, a_size) for _ in range(5)]
    del many
    gc.collect()
    assert sum(len(v) for v in pool._free.values()) == 2      # per_size cap
    big = [pool.array((3 << 20,), np.dtype(np.float32)) for _ in range(2)]   # 12 MiB each
    del big
    gc.collect()
    assert pool._free_bytes <= 16 << 20                       # max_free cap
    small = pool.array((10,), np.dtype(np.float64))           # under the floor: plain np.empty
    assert small.base is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_pooled_buffers_are_private_to_a_forked_child():
    """A child forked with free buffers in the pool gets copies: its writes never reach the
    parent's buffer (an anonymous mmap is MAP_SHARED unless asked otherwise)."""
    import gc
    pool = fcd._BufferPool()
    a = _pooled_array(pool)
    n, addr = a.size, a.__array_interface__["data"][0]
    del a
    gc.collect()
    pid = os.fork()
    if pid == 0:                                   # the child: take the buffer, overwrite it
        code = 1
        try:
            b = pool.array((n,), np.dtype(np.float32))
            b[:] = -1.0
            code = 0 if b.__array_interface__["data"][0] == addr else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0             # the child reused the inherited buffer
    c = pool.array((n,), np.dtype(np.float32))
    assert c.__array_interface__["data"][0] == addr
    np.testing.assert_array_equal(c, np.arange(1, n + 1, dtype=np.float32))


def test_npyfile_truncated_file_raises(tmp_path, rng):
    """A file shorter than its header says: OSError naming it, never a read past the end (a
    mapping would crash the worker with SIGBUS)."""
    p = tmp_path / "t.npy"
    np.save(p, rng.standard_normal((100, 50)))
    for mmap in (True, False):
        src = fcd.NpyFile(p, mmap=mmap)
        with open(p, "r+b") as f:
            f.truncate(os.path.getsize(p) - 1000)
        with pytest.raises(OSError, match="truncated"):
            src[90:]
        np.save(p, rng.standard_normal((100, 50)))


def test_zarr_input(tmp_path, rng):
    zarr = pytest.importorskip("zarr")
    x = rng.standard_normal((60, 24)).astype(np.float32)
    t = rng.integers(0, 24, 60)
    z = zarr.open_array(str(tmp_path / "x.zarr"), mode="w", shape=x.shape, chunks=(16, 8),
                        dtype=x.dtype)
    z[...] = x
    xd = da.from_zarr(str(tmp_path / "x.zarr"))
    assert xd.chunks[1] == (8, 8, 8)
    loss, grad = compute(*fcd.cross_entropy(xd, t, return_grad=True))
    want = fastce.cross_entropy(x, t, return_grad=True)
    assert ulps(loss, want[0]) <= 1
    assert_close(grad, want[1], dtype=np.float32, kind="grad")


# --------------------------------------------------------------------------- a real cluster

@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                       dashboard_address=None, memory_limit="2GiB")
    cl = distributed.Client(cluster, set_as_default=False)
    try:
        yield cl
    finally:
        cl.close()
        cluster.close()


def test_cluster_vocab_parallel_loss_and_grad(client, rng):
    x = (rng.standard_normal((400, 120)) * 3).astype(np.float32)
    t = rng.integers(0, 120, 400)
    t[::7] = -100
    kw = dict(weight=rng.uniform(0.5, 2.0, 120), label_smoothing=0.1, z_loss=1e-3)
    xd = da.from_array(x, chunks=(100, 30))
    loss, grad = client.compute(list(fcd.cross_entropy(xd, t, return_grad=True, **kw)),
                                sync=True)
    want = fastce.cross_entropy(x, t, return_grad=True, **kw)
    assert ulps(loss, want[0]) <= 1
    assert grad.dtype == np.float32
    assert_close(grad, want[1], dtype=np.float32, kind="grad")


def test_cluster_batch_path_and_row_ops(client, rng):
    x = rng.standard_normal((300, 50))
    q = rng.dirichlet(np.ones(50), size=300)
    xd = da.from_array(x, chunks=(70, 50))
    loss, lse, ls = client.compute([fcd.cross_entropy(xd, q, label_smoothing=0.2),
                                    fcd.logsumexp(xd.rechunk((70, 20))),
                                    fcd.log_softmax(xd.rechunk((70, 20)))], sync=True)
    np.testing.assert_allclose(loss, fastce.cross_entropy(x, q, label_smoothing=0.2),
                               rtol=1e-14)
    np.testing.assert_allclose(lse, fastce.logsumexp(x), rtol=1e-13)
    np.testing.assert_allclose(ls, fastce.log_softmax(x), rtol=1e-13)


def test_cluster_npy_files_opened_by_workers(client, tmp_path, rng):
    x = (rng.standard_normal((2000, 64)) * 2).astype(np.float32)
    t = rng.integers(0, 64, 2000)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "t.npy", t)
    xd = fcd.from_npy(tmp_path / "x.npy", chunks=(500, 16))
    td = fcd.from_npy(tmp_path / "t.npy", chunks=500)
    mean, total = client.compute([fcd.cross_entropy(xd, td),
                                  fcd.cross_entropy(xd, td, reduction="sum")], sync=True)
    assert ulps(mean, fastce.cross_entropy(x, t)) <= 1
    assert ulps(total, fastce.cross_entropy(x, t, reduction="sum")) <= 1


def test_cluster_linear_cross_entropy(client, rng):
    X = rng.standard_normal((600, 12)).astype(np.float32)
    Wm = rng.standard_normal((90, 12)).astype(np.float32)
    t = rng.integers(0, 90, 600)
    got = client.compute(list(fcd.linear_cross_entropy(da.from_array(X, chunks=150), Wm, t,
                                                       return_grad=True)), sync=True)
    want = fastce.linear_cross_entropy(X, Wm, t, return_grad=True)
    assert ulps(got[0], want[0]) <= 1
    assert_close(got[1], want[1], dtype=np.float32, kind="grad")
    assert_close(got[2], want[2], dtype=np.float32, kind="grad")


def test_cluster_kl_and_nll_vocab_parallel(client, rng):
    s = (rng.standard_normal((300, 96)) * 2).astype(np.float32)
    t = s + rng.standard_normal((300, 96)).astype(np.float32)
    lp = fastce.log_softmax(s)
    y = rng.integers(0, 96, 300)
    sd, td = da.from_array(s, chunks=(100, 24)), da.from_array(t, chunks=(100, 24))
    got = client.compute([*fcd.kl_div_logits(sd, td, temperature=2.0, return_grad=True),
                          *fcd.nll_loss(da.from_array(lp, chunks=(100, 24)), y,
                                        return_grad=True)], sync=True)
    kl = fastce.kl_div_logits(s, t, temperature=2.0, return_grad=True)
    nll = fastce.nll_loss(lp, y, return_grad=True)
    assert_close(got[0], kl[0], dtype=np.float32)
    assert_close(got[1], kl[1], dtype=np.float32, kind="grad")
    assert ulps(got[2], nll[0]) <= 1
    np.testing.assert_allclose(got[3], nll[1], rtol=1e-6)


def test_cluster_errors_reach_the_client(client, rng):
    xd = da.from_array(rng.standard_normal((8, 6)), chunks=(4, 3))
    with pytest.raises(IndexError, match="out of bounds"):
        client.compute(fcd.cross_entropy(xd, np.array([0, 1, 2, 9, 0, 0, 0, 0])), sync=True)


def test_cluster_workers_import_fastce_from_this_tree(client):
    import fastce as here
    paths = client.run(lambda: __import__("fastce").__file__)
    assert all(os.path.dirname(p) == os.path.dirname(here.__file__) for p in paths.values())
