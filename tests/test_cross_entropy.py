"""cross_entropy / cross_entropy_grad: torch parity, finite differences, edge cases."""

import numpy as np
import pytest

import fastce
from conftest import (
    CE_OPTIONS,
    DTYPE_IDS,
    FLOAT_DTYPES,
    LAYOUT_IDS,
    LAYOUTS,
    REDUCTIONS,
    assert_close,
    check_grad_type,
    check_loss_type,
    fd_grad,
    make_ce_case,
    make_grad_output,
    per_sample_shape,
    torch_ce_fn,
    torch_loss_and_grad,
    assert_loss_and_grad,
)
from reference import ref_cross_entropy

ce = fastce.cross_entropy
ce_grad = fastce.cross_entropy_grad


# --------------------------------------------------------------------------- parity with torch


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", list(CE_OPTIONS))
@pytest.mark.parametrize("layout", LAYOUT_IDS)
def test_parity_with_torch(torch, F, rng, layout, option, reduction, dtype):
    x, t, kw = make_ce_case(rng, layout, option, dtype)
    ps = per_sample_shape(x.shape, kw["axis"])
    go = make_grad_output(rng, reduction, ps)
    want_loss, want_grad = torch_loss_and_grad(
        torch, torch_ce_fn(torch, F, t, kw, reduction), x, kw["axis"], go, reduction
    )
    assert_loss_and_grad(ce, ce_grad, x, t, kw, reduction, go, want_loss, want_grad, dtype, ps)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", list(CE_OPTIONS))
@pytest.mark.parametrize("layout", LAYOUT_IDS)
def test_matches_reference_float64(rng, layout, option, reduction):
    """Same cases without torch, at the strict float64 tolerance against tests/reference.py."""
    x, t, kw = make_ce_case(rng, layout, option)
    assert_close(ce(x, t, reduction=reduction, **kw), ref_cross_entropy(x, t, reduction=reduction, **kw))


# --------------------------------------------------------------------------- fused form and out=


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", ["plain", "weight_ignore_smooth", "prob_weight_smooth"])
@pytest.mark.parametrize("layout", LAYOUT_IDS)
def test_return_grad_equals_separate_calls(rng, layout, option, reduction, dtype):
    x, t, kw = make_ce_case(rng, layout, option, dtype)
    go = make_grad_output(rng, reduction, per_sample_shape(x.shape, kw["axis"]))
    x0 = x.copy()
    res = ce(x, t, reduction=reduction, return_grad=True, grad_output=go, **kw)
    assert isinstance(res, tuple) and len(res) == 2
    loss, grad = res
    check_loss_type(loss, reduction, dtype, per_sample_shape(x.shape, kw["axis"]))
    check_grad_type(grad, x.shape, dtype)
    tight = dict(rtol=8 * np.finfo(dtype).eps, atol=4 * np.finfo(dtype).eps)
    np.testing.assert_allclose(loss, ce(x, t, reduction=reduction, **kw), **tight)
    np.testing.assert_allclose(grad, ce_grad(x, t, reduction=reduction, grad_output=go, **kw), **tight)
    np.testing.assert_array_equal(x, x0)  # input untouched


@pytest.mark.parametrize("form", ["grad_fn", "return_grad"])
@pytest.mark.parametrize("option", ["plain", "prob_smooth"])
def test_out_buffer_and_inplace(rng, option, form):
    x, t, kw = make_ce_case(rng, "4d_axis1", option)
    want = ce_grad(x, t, **kw)

    def call(xx, out):
        if form == "grad_fn":
            return ce_grad(xx, t, out=out, **kw)
        loss, g = ce(xx, t, return_grad=True, out=out, **kw)
        assert_close(loss, ref_cross_entropy(x, t, **kw))
        return g

    buf = np.full_like(x, np.nan)
    assert call(x, buf) is buf
    assert_close(buf, want, kind="grad")
    xin = x.copy()
    assert call(xin, xin) is xin
    assert_close(xin, want, kind="grad")


def test_grad_output_scaling(rng):
    x, t, kw = make_ce_case(rng, "3d_classes_last", "weight_ignore_smooth")
    for red in ("mean", "sum"):
        g1 = ce_grad(x, t, reduction=red, **kw)
        assert_close(ce_grad(x, t, reduction=red, grad_output=-2.5, **kw), -2.5 * g1, kind="grad")
        assert_close(ce_grad(x, t, reduction=red, grad_output=np.float32(0.5), **kw), 0.5 * g1, kind="grad")
    g1 = ce_grad(x, t, reduction="none", **kw)
    assert_close(ce_grad(x, t, reduction="none", grad_output=3.0, **kw), 3.0 * g1, kind="grad")
    go = rng.uniform(-2, 2, size=t.shape)
    assert_close(ce_grad(x, t, reduction="none", grad_output=go, **kw), go[..., None] * g1, kind="grad")
    # default of reduction="none" is the gradient of the sum of the per-sample losses
    assert_close(g1, ce_grad(x, t, reduction="sum", **kw), kind="grad")


# --------------------------------------------------------------------------- finite differences


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", list(CE_OPTIONS))
@pytest.mark.parametrize("layout", LAYOUT_IDS)
def test_finite_differences(rng, layout, option, reduction):
    x, t, kw = make_ce_case(rng, layout, option)
    go = make_grad_output(rng, reduction, per_sample_shape(x.shape, kw["axis"]))
    want = fd_grad(lambda z: np.sum(np.asarray(go) * ce(z, t, reduction=reduction, **kw)), x)
    got = ce_grad(x, t, reduction=reduction, grad_output=go, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


def test_finite_differences_full_smoothing(rng):
    x, t, _ = make_ce_case(rng, "2d", "plain")
    w = rng.uniform(0.5, 2, size=x.shape[1])
    f = lambda z: ce(z, t, weight=w, label_smoothing=1.0)  # noqa: E731
    assert_close(f(x), ref_cross_entropy(x, t, weight=w, label_smoothing=1.0))
    np.testing.assert_allclose(ce_grad(x, t, weight=w, label_smoothing=1.0), fd_grad(f, x), rtol=1e-7, atol=1e-9)


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("C", [1, 2, 3])
@pytest.mark.parametrize("option", ["plain", "weight_ignore_smooth", "prob_weight_smooth"])
def test_single_sample_and_few_classes(torch, F, rng, option, C):
    opt = CE_OPTIONS[option]
    x = rng.standard_normal((1, C))
    w = rng.uniform(0.5, 2, size=C)
    kw = dict(axis=-1, weight=w if opt.get("weight") else None, label_smoothing=opt.get("label_smoothing", 0.0))
    if opt["target"] == "index":
        t = np.array([C - 1])
    else:
        t = rng.dirichlet(np.ones(C), size=1)
    for red in REDUCTIONS:
        go = make_grad_output(rng, red, (1,))
        kwt = {k: v for k, v in kw.items() if v is not None}
        want_l, want_g = torch_loss_and_grad(torch, torch_ce_fn(torch, F, t, kwt, red), x, -1, go, red)
        assert_close(ce(x, t, reduction=red, **kw), want_l)
        assert_close(ce_grad(x, t, reduction=red, grad_output=go, **kw), want_g, kind="grad")
    if C == 1:
        assert ce(x, t, **kw) == 0.0 and np.all(ce_grad(x, t, **kw) == 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("target", ["index", "prob"])
@pytest.mark.parametrize("layout", ["2d", "3d_classes_last", "4d_axis1"])
def test_empty_batch(layout, target, dtype):
    shape, axis = LAYOUTS[layout]
    shape = (0,) + shape[1:]
    x = np.zeros(shape, dtype=dtype)
    ps = per_sample_shape(shape, axis)
    t = np.zeros(ps, dtype=np.int64) if target == "index" else np.zeros(shape, dtype=dtype)
    mean = ce(x, t, axis=axis)
    check_loss_type(mean, "mean", dtype, ps)
    assert np.isnan(mean)
    s = ce(x, t, axis=axis, reduction="sum")
    check_loss_type(s, "sum", dtype, ps)
    assert s == 0
    none = ce(x, t, axis=axis, reduction="none")
    check_loss_type(none, "none", dtype, ps)
    for red in REDUCTIONS:
        g = ce_grad(x, t, axis=axis, reduction=red)
        check_grad_type(g, shape, dtype)
        loss, g = ce(x, t, axis=axis, reduction=red, return_grad=True)
        check_grad_type(g, shape, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("offset", [1e4, -1e4, 1e6], ids=["+1e4", "-1e4", "+1e6"])
def test_large_offsets(rng, offset, dtype):
    base = rng.standard_normal((6, 5)) * 2
    x = (base + offset).astype(dtype)
    t = rng.integers(0, 5, size=6)
    for red in REDUCTIONS:
        assert_close(ce(x, t, reduction=red), ref_cross_entropy(x, t, reduction=red), dtype)
        assert np.all(np.isfinite(ce(x, t, reduction=red)))
    q = rng.dirichlet(np.ones(5), size=6).astype(dtype)
    assert_close(ce(x, q, label_smoothing=0.1), ref_cross_entropy(x, q, label_smoothing=0.1), dtype)
    g = ce_grad(x, t)
    assert np.all(np.isfinite(g))
    # the gradient is p - onehot: it depends only on the (exactly representable) differences
    xd = x.astype(np.float64)
    p = np.exp(xd - xd.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(6), t] -= 1
    assert_close(g, p / 6, dtype, kind="grad")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("scale", [1e4, 1e-30, 0.0], ids=["1e4", "1e-30", "zero"])
def test_huge_and_tiny_logits(rng, scale, dtype):
    x = (rng.standard_normal((7, 4)) * scale).astype(dtype)
    t = rng.integers(0, 4, size=7)
    for red in REDUCTIONS:
        assert_close(ce(x, t, reduction=red), ref_cross_entropy(x, t, reduction=red), dtype)
    if scale <= 1e-30:
        assert_close(ce(x, t), np.log(4.0), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("option", ["plain", "weight", "ignore"])
def test_masked_logits_index_target(torch, F, option, dtype):
    inf = np.inf
    x = np.array([[0.5, -inf, 2.0, -inf], [-inf, 1.0, -1.0, 0.0], [3.0, 0.1, -inf, 0.2]], dtype=dtype)
    t = np.array([2, 1, 0])
    kw = dict(axis=-1)
    if option == "weight":
        kw["weight"] = np.array([0.5, 1.5, 2.0, 1.0], dtype=dtype)
    if option == "ignore":
        t = np.array([2, -100, 0])
    for red in REDUCTIONS:
        loss, g = ce(x, t, reduction=red, return_grad=True, **kw)
        assert np.all(np.isfinite(loss))
        assert np.all(np.isfinite(g))
        assert np.all(g[np.isinf(x)] == 0)
        want_l, want_g = torch_loss_and_grad(torch, torch_ce_fn(torch, F, t, kw, red), x, -1, 1.0, red)
        assert_close(loss, want_l, dtype)
        assert_close(g, want_g, dtype, kind="grad")


def test_masked_logits_soft_target_deviation():
    """decisions.md deviation 1: 0 * log 0 = 0 -> finite loss, zero gradient (torch gives NaN)."""
    inf = np.inf
    x = np.array([[0.5, -inf, 2.0, -inf], [-inf, 1.0, -1.0, 0.0]])
    q = np.array([[0.3, 0.0, 0.7, 0.0], [0.0, 0.5, 0.25, 0.25]])
    keep = ~np.isinf(x)
    for red in REDUCTIONS:
        loss, g = ce(x, q, reduction=red, return_grad=True)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(g))
        assert np.all(g[~keep] == 0)
        want = np.array([ref_cross_entropy(x[i][keep[i]], q[i][keep[i]]) for i in range(2)])
        want = {"none": want, "sum": want.sum(), "mean": want.mean()}[red]
        assert_close(loss, want)
    # zero target mass through a zero class weight, with label smoothing (w_c q'_c == 0)
    w = np.array([1.0, 0.0, 2.0, 1.0])
    x2 = np.array([[0.5, -inf, 2.0, 1.0]])
    q2 = np.array([[0.2, 0.3, 0.4, 0.1]])
    loss, g = ce(x2, q2, weight=w, label_smoothing=0.1, return_grad=True)
    assert np.isfinite(loss) and np.all(np.isfinite(g)) and g[0, 1] == 0
    assert_close(loss, ref_cross_entropy(x2, q2, weight=w, label_smoothing=0.1))


def test_masked_soft_target_torch_is_nan(torch, F):
    """Documents that the deviation above is one: torch 2.13 returns NaN for the same input."""
    x = torch.tensor([[0.5, -float("inf"), 2.0]], dtype=torch.float64)
    q = torch.tensor([[0.3, 0.0, 0.7]], dtype=torch.float64)
    assert torch.isnan(F.cross_entropy(x, q))
    assert np.isfinite(ce(x.numpy(), q.numpy()))


@pytest.mark.parametrize("target", ["index", "prob"])
def test_nan_propagates_to_its_sample_only(rng, target):
    x = rng.standard_normal((4, 3))
    x[1, 2] = np.nan
    t = np.array([0, 1, 2, 0]) if target == "index" else rng.dirichlet(np.ones(3), size=4)
    loss, g = ce(x, t, reduction="none", return_grad=True)
    assert np.isnan(loss[1]) and np.isnan(g[1]).all()
    rows = [0, 2, 3]
    assert_close(loss[rows], ref_cross_entropy(x[rows], t[rows], reduction="none"))
    assert_close(g[rows], ce_grad(x[rows], t[rows], reduction="none"), kind="grad")
    assert np.isnan(ce(x, t)) and np.isnan(ce(x, t, reduction="sum"))


def test_all_neg_inf_row_is_nan():
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, 1.0, 2.0]])
    loss = ce(x, np.array([1, 2]), reduction="none")
    assert np.isnan(loss[0]) and np.isfinite(loss[1])


@pytest.mark.parametrize("option", ["plain", "weight", "smooth", "weight_smooth"])
@pytest.mark.parametrize("layout", ["2d", "4d_axis1", "1d"])
def test_all_targets_ignored(rng, layout, option):
    shape, axis = LAYOUTS[layout]
    x = rng.standard_normal(shape)
    t = np.full(per_sample_shape(shape, axis), -100)
    kw = dict(axis=axis)
    if "weight" in option:
        kw["weight"] = rng.uniform(0.5, 2, size=shape[axis])
    if "smooth" in option:
        kw["label_smoothing"] = 0.2
    assert np.isnan(ce(x, t, **kw))
    assert ce(x, t, reduction="sum", **kw) == 0
    np.testing.assert_array_equal(ce(x, t, reduction="none", **kw), np.zeros(t.shape))
    for red in REDUCTIONS:
        g = ce_grad(x, t, reduction=red, **kw)
        np.testing.assert_array_equal(g, np.zeros(shape))
        loss, g = ce(x, t, reduction=red, return_grad=True, **kw)
        np.testing.assert_array_equal(g, np.zeros(shape))


@pytest.mark.parametrize(
    "tdtype",
    [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64],
    ids=lambda d: np.dtype(d).name,
)
def test_index_target_integer_dtypes(rng, tdtype):
    x = rng.standard_normal((6, 5))
    t = rng.integers(0, 5, size=6)
    want = ref_cross_entropy(x, t, reduction="none")
    assert_close(ce(x, t.astype(tdtype), reduction="none"), want)
    assert_close(ce_grad(x, t.astype(tdtype)), ce_grad(x, t), kind="grad")


def test_zero_dim_target_python_int_and_numpy_scalar(rng):
    x = rng.standard_normal(5)
    want = ref_cross_entropy(x, np.array(3))
    for t in (np.array(3), np.int64(3), np.int32(3)):
        assert_close(ce(x, t), want)
        assert ce(x, t, reduction="none").shape == ()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_loss_values_float32_accumulation(rng, dtype):
    # a larger batch: the float32 mean must still be accurate to ~1e-6 relative
    x = (rng.standard_normal((20000, 10)) * 3).astype(dtype)
    t = rng.integers(0, 10, size=20000)
    assert_close(ce(x, t), ref_cross_entropy(x, t), dtype)
    assert_close(ce(x, t, reduction="sum"), ref_cross_entropy(x, t, reduction="sum"), dtype)
