"""nll_loss / nll_loss_grad: torch parity, finite differences, edge cases."""

import numpy as np
import pytest

import fastce
from conftest import (
    DTYPE_IDS,
    FLOAT_DTYPES,
    LAYOUT_IDS,
    LAYOUTS,
    NLL_OPTIONS,
    REDUCTIONS,
    assert_close,
    fd_grad,
    make_ce_case,
    make_grad_output,
    per_sample_shape,
    torch_ce_fn,
    torch_loss_and_grad,
    assert_loss_and_grad,
)
from reference import ref_log_softmax, ref_nll_loss

nll = fastce.nll_loss
nll_grad = fastce.nll_loss_grad


def _case(rng, layout, option, dtype=np.float64):
    x, t, kw = make_ce_case(rng, layout, option, dtype, options=NLL_OPTIONS)
    # realistic inputs are log-probabilities (the loss itself does not require it)
    return ref_log_softmax(x, axis=kw["axis"]).astype(dtype), t, kw


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", list(NLL_OPTIONS))
@pytest.mark.parametrize("layout", LAYOUT_IDS)
def test_parity_with_torch(torch, F, rng, layout, option, reduction, dtype):
    x, t, kw = _case(rng, layout, option, dtype)
    ps = per_sample_shape(x.shape, kw["axis"])
    go = make_grad_output(rng, reduction, ps)
    want_loss, want_grad = torch_loss_and_grad(
        torch, torch_ce_fn(torch, F, t, kw, reduction, loss="nll"), x, kw["axis"], go, reduction
    )
    assert_loss_and_grad(nll, nll_grad, x, t, kw, reduction, go, want_loss, want_grad, dtype, ps)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", list(NLL_OPTIONS))
@pytest.mark.parametrize("layout", LAYOUT_IDS)
def test_reference_and_finite_differences(rng, layout, option, reduction):
    x, t, kw = _case(rng, layout, option)
    x = x + rng.standard_normal(x.shape)  # unnormalised input is fine for nll_loss
    assert_close(nll(x, t, reduction=reduction, **kw), ref_nll_loss(x, t, reduction=reduction, **kw))
    go = make_grad_output(rng, reduction, per_sample_shape(x.shape, kw["axis"]))
    want = fd_grad(lambda z: np.sum(np.asarray(go) * nll(z, t, reduction=reduction, **kw)), x)
    got = nll_grad(x, t, reduction=reduction, grad_output=go, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", LAYOUT_IDS)
def test_return_grad_and_out(rng, layout, reduction, dtype):
    x, t, kw = _case(rng, layout, "weight", dtype)
    go = make_grad_output(rng, reduction, per_sample_shape(x.shape, kw["axis"]))
    loss, grad = nll(x, t, reduction=reduction, return_grad=True, grad_output=go, **kw)
    tight = dict(rtol=8 * np.finfo(dtype).eps, atol=4 * np.finfo(dtype).eps)
    np.testing.assert_allclose(loss, nll(x, t, reduction=reduction, **kw), **tight)
    sep = nll_grad(x, t, reduction=reduction, grad_output=go, **kw)
    np.testing.assert_allclose(grad, sep, **tight)
    buf = np.empty_like(x)
    assert nll_grad(x, t, reduction=reduction, grad_output=go, out=buf, **kw) is buf
    np.testing.assert_allclose(buf, sep, **tight)
    xin = x.copy()
    _, g = nll(xin, t, reduction=reduction, return_grad=True, grad_output=go, out=xin, **kw)
    assert g is xin
    np.testing.assert_allclose(xin, sep, **tight)


def test_grad_is_minus_weight_onehot(rng):
    x = rng.standard_normal((5, 4))
    t = np.array([0, 3, -100, 1, 3])
    w = np.array([0.5, 1.0, 2.0, 3.0])
    g = nll_grad(x, t, weight=w, reduction="sum")
    want = np.zeros((5, 4))
    for i, ti in enumerate(t):
        if ti != -100:
            want[i, ti] = -w[ti]
    np.testing.assert_array_equal(g, want)
    denom = w[[0, 3, 1, 3]].sum()
    np.testing.assert_allclose(nll_grad(x, t, weight=w), want / denom, rtol=1e-15)


@pytest.mark.parametrize("layout", ["2d", "4d_axis1"])
def test_empty_and_all_ignored(rng, layout):
    shape, axis = LAYOUTS[layout]
    e_shape = (0,) + shape[1:]
    x = np.zeros(e_shape)
    t = np.zeros(per_sample_shape(e_shape, axis), dtype=np.int64)
    assert np.isnan(nll(x, t, axis=axis))
    assert nll(x, t, axis=axis, reduction="sum") == 0
    assert nll(x, t, axis=axis, reduction="none").shape == t.shape
    assert nll_grad(x, t, axis=axis).shape == e_shape
    x = rng.standard_normal(shape)
    t = np.full(per_sample_shape(shape, axis), 7)
    w = rng.uniform(0.5, 2, size=shape[axis])
    assert np.isnan(nll(x, t, axis=axis, ignore_index=7, weight=w))
    assert nll(x, t, axis=axis, ignore_index=7, reduction="sum") == 0
    for red in REDUCTIONS:
        np.testing.assert_array_equal(nll_grad(x, t, axis=axis, ignore_index=7, reduction=red), 0.0)


def test_inf_and_nan_entries():
    inf = np.inf
    x = np.array([[-0.5, -inf, -1.0], [-inf, -0.1, -2.0], [np.nan, -0.3, -1.0], [-0.2, -0.3, -4.0]])
    t = np.array([0, 0, 0, 1])
    loss = nll(x, t, reduction="none")
    assert loss[0] == 0.5  # -inf at a non-target class is irrelevant
    assert loss[1] == inf
    assert np.isnan(loss[2])
    assert loss[3] == 0.3
    # (a NaN at a non-target class is deliberately not tested: torch ignores it,
    # decisions.md rule 4 is stated for logits rows)
    g = nll_grad(x[[0, 3]], t[[0, 3]], reduction="sum")
    np.testing.assert_array_equal(g, [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@pytest.mark.parametrize("C", [1, 2])
@pytest.mark.parametrize("N", [1, 3])
def test_few_classes_and_single_sample(torch, F, rng, N, C):
    x = ref_log_softmax(rng.standard_normal((N, C)))
    t = rng.integers(0, C, size=N)
    w = rng.uniform(0.5, 2, size=C)
    for red in REDUCTIONS:
        go = make_grad_output(rng, red, (N,))
        kw = dict(axis=-1, weight=w)
        want_l, want_g = torch_loss_and_grad(torch, torch_ce_fn(torch, F, t, kw, red, loss="nll"), x, -1, go, red)
        assert_close(nll(x, t, reduction=red, weight=w), want_l)
        assert_close(nll_grad(x, t, reduction=red, weight=w, grad_output=go), want_g, kind="grad")
