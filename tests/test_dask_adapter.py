"""fastce.dask: losses on chunked dask arrays with exact global reductions."""

import inspect

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
import dask  # noqa: E402

import fastce  # noqa: E402
import fastce.dask as fcd  # noqa: E402
from conftest import assert_close  # noqa: E402
from reference import (  # noqa: E402
    ref_binary_cross_entropy,
    ref_binary_cross_entropy_with_logits,
    ref_cross_entropy,
    ref_nll_loss,
)

HAS_ZLOSS = "z_loss" in inspect.signature(fastce.cross_entropy).parameters
REDUCTIONS = ["mean", "sum", "none"]
UNEVEN = (3, 17, 1, 29)            # batch chunks of very different sizes (N = 50)


def _check(result, want, reduction, dtype=np.float64):
    assert isinstance(result, da.Array)          # lazy, whatever the reduction
    got = result.compute()
    if reduction == "none":
        assert got.shape == np.shape(want)
    else:
        assert np.ndim(got) == 0
    assert np.asarray(got).dtype == np.dtype(dtype)
    assert_close(got, want, dtype=dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", ["plain", "weight_ignore_smooth", "prob_weight_smooth"])
def test_cross_entropy_exact_global_reduction(rng, option, reduction):
    N, C = 50, 6
    x = rng.standard_normal((N, C)) * 2
    kw = {}
    if option == "prob_weight_smooth":
        t = rng.dirichlet(np.ones(C), size=N)
        td = da.from_array(t, chunks=(10, 3))
    else:
        t = rng.integers(0, C, N)
        td = da.from_array(t, chunks=7)          # misaligned with the input: rechunked
    if "weight" in option:
        kw["weight"] = rng.uniform(0.1, 3.0, C)
        kw["label_smoothing"] = 0.2
    if "ignore" in option:
        t[rng.random(N) < 0.3] = 7
        t[:3] = 7                                # the first chunk holds only ignored samples
        kw["ignore_index"] = 7
        td = da.from_array(t, chunks=7)
    xd = da.from_array(x, chunks=(UNEVEN, 4))    # class axis split too: rechunked
    res = fcd.cross_entropy(xd, td, reduction=reduction, **kw)
    _check(res, ref_cross_entropy(x, t, reduction=reduction, **kw), reduction)
    if reduction == "none":
        assert res.chunks == (UNEVEN,)


def test_weighted_mean_is_not_a_mean_of_means(rng):
    x = rng.standard_normal((40, 3))
    t = rng.integers(0, 3, 40)
    w = np.array([0.1, 1.0, 10.0])
    chunks = (5, 35)
    got = float(fcd.cross_entropy(da.from_array(x, chunks=(chunks, 3)), t, weight=w).compute())
    mean_of_means = np.mean([ref_cross_entropy(x[:5], t[:5], weight=w),
                             ref_cross_entropy(x[5:], t[5:], weight=w)])
    want = ref_cross_entropy(x, t, weight=w)
    assert abs(want - mean_of_means) > 1e-3
    assert_close(got, want)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_axis1_multidim(rng, reduction):
    x = rng.standard_normal((7, 5, 3, 4))
    t = rng.integers(0, 5, (7, 3, 4))
    t[0, 0, :] = -100
    w = rng.uniform(0.5, 2.0, 5)
    xd = da.from_array(x, chunks=(3, 2, 2, 3))
    _check(fcd.cross_entropy(xd, t, weight=w, axis=1, reduction=reduction),
           ref_cross_entropy(x, t, weight=w, axis=1, reduction=reduction), reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss(rng, reduction):
    x = rng.standard_normal((31, 5))
    logp = x - np.log(np.exp(x).sum(1, keepdims=True))
    t = rng.integers(0, 5, 31)
    t[::4] = -100
    w = rng.uniform(0.5, 2.0, 5)
    _check(fcd.nll_loss(da.from_array(logp, chunks=(4, 5)), t, weight=w, reduction=reduction),
           ref_nll_loss(logp, t, weight=w, reduction=reduction), reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits(rng, reduction):
    x = rng.standard_normal((23, 6)) * 3
    y = rng.random((23, 6))
    w = rng.uniform(0.1, 2.0, (23, 1))
    pw = rng.uniform(0.5, 3.0, 6)
    xd = da.from_array(x, chunks=((5, 11, 7), (4, 2)))    # last axis split: pos_weight follows
    res = fcd.binary_cross_entropy_with_logits(xd, da.from_array(y, chunks=6), weight=w,
                                               pos_weight=pw, reduction=reduction)
    _check(res, ref_binary_cross_entropy_with_logits(x, y, weight=w, pos_weight=pw,
                                                     reduction=reduction), reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce(rng, reduction):
    p = rng.uniform(0.01, 0.99, (19, 3))
    y = (rng.random((19, 3)) < 0.5).astype(np.float64)
    w = da.from_array(rng.uniform(0.1, 2.0, (19, 3)), chunks=(10, 3))
    res = fcd.binary_cross_entropy(da.from_array(p, chunks=(4, 3)), y, weight=w, reduction=reduction)
    _check(res, ref_binary_cross_entropy(p, y, weight=w.compute(), reduction=reduction), reduction)


def test_float32_results_and_lazy_graph(rng):
    x = rng.standard_normal((20, 4)).astype(np.float32)
    t = rng.integers(0, 4, 20)
    calls = []

    def spy(block):
        calls.append(block.shape)
        return block

    xd = da.from_array(x, chunks=(6, 4)).map_blocks(spy, dtype=np.float32,
                                                         meta=np.empty((0, 0), np.float32))
    res = fcd.cross_entropy(xd, t)
    none = fcd.cross_entropy(xd, t, reduction="none")
    assert not calls                               # nothing computed yet
    assert res.dtype == np.float32 and none.dtype == np.float32
    got, per = dask.compute(res, none)
    assert calls
    assert got.dtype == np.float32 and per.dtype == np.float32
    assert_close(got, fastce.cross_entropy(x, t), dtype=np.float32)
    assert_close(per, fastce.cross_entropy(x, t, reduction="none"), dtype=np.float32)


def test_all_ignored_mean_is_nan_and_sum_zero(rng):
    x = da.from_array(rng.standard_normal((9, 3)), chunks=4)
    t = np.full(9, -100)
    assert np.isnan(fcd.cross_entropy(x, t).compute())
    assert fcd.cross_entropy(x, t, reduction="sum").compute() == 0.0


def test_numpy_inputs_accepted(rng):
    x = rng.standard_normal((8, 3))
    t = rng.integers(0, 3, 8)
    assert_close(fcd.cross_entropy(x, t).compute(), ref_cross_entropy(x, t))


@pytest.mark.skipif(not HAS_ZLOSS, reason="fastce.cross_entropy has no z_loss/softcap yet")
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_z_loss_softcap(rng, reduction):
    x = rng.standard_normal((25, 5)) * 3
    t = rng.integers(0, 5, 25)
    t[::3] = -100
    kw = dict(z_loss=0.05, softcap=4.0, weight=rng.uniform(0.5, 2.0, 5))
    _check(fcd.cross_entropy(da.from_array(x, chunks=(6, 5)), t, reduction=reduction, **kw),
           fastce.cross_entropy(x, t, reduction=reduction, **kw), reduction)


def test_errors(rng):
    x = da.from_array(rng.standard_normal((6, 3)), chunks=2)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        fcd.cross_entropy(x, np.zeros(5, dtype=np.int64))
    with pytest.raises(TypeError, match="class-index"):
        fcd.nll_loss(x, rng.random((6, 3)))
    with pytest.raises(ValueError, match="reduction"):
        fcd.cross_entropy(x, np.zeros(6, dtype=np.int64), reduction="avg")
    with pytest.raises(ValueError, match="pos_weight"):
        fcd.binary_cross_entropy_with_logits(x, x, pos_weight=np.ones(4))
    with pytest.raises(IndexError, match="3"):       # raised when the block is computed
        fcd.cross_entropy(x, np.array([0, 1, 2, 3, 0, 0])).compute()
