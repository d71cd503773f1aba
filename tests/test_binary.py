"""binary_cross_entropy_with_logits and binary_cross_entropy (+ their _grad forms)."""

import numpy as np
import pytest

import fastce
from conftest import (
    DTYPE_IDS,
    FLOAT_DTYPES,
    REDUCTIONS,
    assert_close,
    check_grad_type,
    check_loss_type,
    fd_grad,
    make_grad_output,
    torch_loss_and_grad,
)
from reference import ref_binary_cross_entropy, ref_binary_cross_entropy_with_logits

bcel = fastce.binary_cross_entropy_with_logits
bcel_grad = fastce.binary_cross_entropy_with_logits_grad
bce = fastce.binary_cross_entropy
bce_grad = fastce.binary_cross_entropy_grad

SHAPES = {"single": (1,), "1d": (7,), "2d": (5, 3), "3d": (2, 3, 4)}
LOGIT_OPTIONS = ["plain", "weight_row", "weight_full", "pos_weight", "weight_pos_weight", "hard_targets"]


def _logits_case(rng, shape, option, dtype=np.float64):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    y = (rng.random(shape) < 0.5 if option == "hard_targets" else rng.random(shape)).astype(dtype)
    kw = {}
    if option in ("weight_row", "weight_pos_weight"):
        kw["weight"] = rng.uniform(0.1, 2, size=shape[-1:]).astype(dtype)
    if option == "weight_full":
        kw["weight"] = rng.uniform(0.1, 2, size=shape).astype(dtype)
    if option in ("pos_weight", "weight_pos_weight"):
        kw["pos_weight"] = rng.uniform(0.1, 3, size=shape[-1:]).astype(dtype)
    return x, y, kw


def _torch_bcel(torch, F, y, kw, reduction):
    yt = torch.from_numpy(np.asarray(y, dtype=np.float64))
    tkw = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in kw.items()}
    return lambda xt: F.binary_cross_entropy_with_logits(xt, yt, reduction=reduction, **tkw)


def _torch_bce(torch, F, y, kw, reduction):
    yt = torch.from_numpy(np.asarray(y, dtype=np.float64))
    tkw = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in kw.items()}
    return lambda pt: F.binary_cross_entropy(pt, yt, reduction=reduction, **tkw)


# =========================================================================== with logits


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", LOGIT_OPTIONS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_logits_parity_with_torch(torch, F, rng, shape, option, reduction, dtype):
    x, y, kw = _logits_case(rng, SHAPES[shape], option, dtype)
    go = make_grad_output(rng, reduction, x.shape)
    want_l, want_g = torch_loss_and_grad(
        torch, _torch_bcel(torch, F, y, kw, reduction), x, -1, go, reduction, class_axis=False
    )
    loss = bcel(x, y, reduction=reduction, **kw)
    check_loss_type(loss, reduction, dtype, x.shape)
    assert_close(loss, want_l, dtype)
    grad = bcel_grad(x, y, reduction=reduction, grad_output=go, **kw)
    check_grad_type(grad, x.shape, dtype)
    assert_close(grad, want_g, dtype, kind="grad")
    loss2, grad2 = bcel(x, y, reduction=reduction, return_grad=True, grad_output=go, **kw)
    assert_close(loss2, want_l, dtype)
    assert_close(grad2, want_g, dtype, kind="grad")
    # the loss-only and gradient loops are compiled apart (_k_binary.h): same bits all the same
    np.testing.assert_array_equal(loss2, loss)
    np.testing.assert_array_equal(grad2, grad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", LOGIT_OPTIONS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_logits_reference_and_finite_differences(rng, shape, option, reduction):
    x, y, kw = _logits_case(rng, SHAPES[shape], option)
    assert_close(bcel(x, y, reduction=reduction, **kw), ref_binary_cross_entropy_with_logits(x, y, reduction=reduction, **kw))
    go = make_grad_output(rng, reduction, x.shape)
    want = fd_grad(lambda z: np.sum(np.asarray(go) * bcel(z, y, reduction=reduction, **kw)), x)
    got = bcel_grad(x, y, reduction=reduction, grad_output=go, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


def test_logits_out_and_inplace(rng):
    x, y, kw = _logits_case(rng, (4, 3), "weight_pos_weight")
    want = bcel_grad(x, y, **kw)
    buf = np.empty_like(x)
    assert bcel_grad(x, y, out=buf, **kw) is buf
    assert_close(buf, want, kind="grad")
    xin = x.copy()
    loss, g = bcel(xin, y, return_grad=True, out=xin, **kw)
    assert g is xin
    assert_close(xin, want, kind="grad")
    assert_close(loss, ref_binary_cross_entropy_with_logits(x, y, **kw))


def test_logits_analytic_gradient(rng):
    x, y, kw = _logits_case(rng, (6, 4), "weight_pos_weight")
    w, p = kw["weight"], kw["pos_weight"]
    sig = 1 / (1 + np.exp(-x))
    want = w * ((1 - y) * sig - p * y * (1 - sig))
    assert_close(bcel_grad(x, y, reduction="sum", **kw), want, kind="grad")
    assert_close(bcel_grad(x, y, **kw), want / x.size, kind="grad")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_logits_infinite_limits_deviation(dtype):
    """decisions.md deviation 3: mathematical limits at +-inf, finite gradients (torch: NaN)."""
    inf = np.inf
    x = np.array([-inf, inf, -inf, inf], dtype=dtype)
    y = np.array([0.0, 1.0, 1.0, 0.0], dtype=dtype)
    pw = np.array([2.0], dtype=dtype)
    w = np.array([1.0, 1.0, 1.0, 3.0], dtype=dtype)
    np.testing.assert_array_equal(bcel(x, y, reduction="none"), [0.0, 0.0, inf, inf])
    np.testing.assert_array_equal(bcel(x[:2], y[:2], reduction="sum"), 0.0)
    g = bcel_grad(x, y, reduction="sum")
    np.testing.assert_array_equal(g, np.array([0.0, 0.0, -1.0, 1.0], dtype=dtype))
    g = bcel_grad(x, y, reduction="sum", pos_weight=pw, weight=w)
    np.testing.assert_array_equal(g, np.array([0.0, 0.0, -2.0, 3.0], dtype=dtype))
    g = bcel_grad(x, y)
    np.testing.assert_allclose(g, np.array([0.0, 0.0, -0.25, 0.25]), rtol=1e-7)


def test_logits_infinite_torch_is_nan(torch, F):
    """Documents that the limits above deviate: torch 2.13 gives NaN for three of the four."""
    inf = float("inf")
    got = F.binary_cross_entropy_with_logits(
        torch.tensor([-inf, inf, -inf, inf]), torch.tensor([0.0, 1.0, 1.0, 0.0]), reduction="none"
    )
    assert int(torch.isnan(got).sum()) == 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_logits_huge_and_tiny(rng, dtype):
    x = np.array([1e4, -1e4, 1e4, -1e4, 50.0, -50.0, 1e-30, 0.0, -800.0, 800.0], dtype=dtype)
    y = np.array([0.0, 1.0, 1.0, 0.0, 0.3, 0.7, 0.5, 1.0, 0.0, 1.0], dtype=dtype)
    for red in REDUCTIONS:
        assert_close(bcel(x, y, reduction=red), ref_binary_cross_entropy_with_logits(x, y, reduction=red), dtype)
    loss = bcel(x, y, reduction="none")
    assert loss[0] == pytest.approx(1e4) and loss[1] == pytest.approx(1e4)
    assert loss[7] == pytest.approx(np.log(2.0), rel=1e-6)
    g = bcel_grad(x, y, reduction="sum")
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g[:4], [1.0, -1.0, 0.0, 0.0], atol=1e-30)


def test_logits_nan_only_its_element(rng):
    x = rng.standard_normal((3, 4))
    y = rng.random((3, 4))
    x[1, 2] = np.nan
    loss = bcel(x, y, reduction="none")
    g = bcel_grad(x, y, reduction="none")
    mask = np.ones_like(x, dtype=bool)
    mask[1, 2] = False
    assert np.isnan(loss[1, 2]) and np.isnan(g[1, 2])
    assert_close(loss[mask], ref_binary_cross_entropy_with_logits(x, y, reduction="none")[mask])
    assert np.all(np.isfinite(g[mask]))
    assert np.isnan(bcel(x, y))


def test_logits_empty():
    x = np.zeros((0, 3))
    assert np.isnan(bcel(x, x))
    assert bcel(x, x, reduction="sum") == 0
    assert bcel(x, x, reduction="none").shape == (0, 3)
    assert bcel_grad(x, x).shape == (0, 3)


def test_logits_pos_weight_broadcasts_last_axis(rng):
    x = rng.standard_normal((2, 3, 4))
    y = rng.random((2, 3, 4))
    pw = rng.uniform(0.5, 2, size=4)
    want = ref_binary_cross_entropy_with_logits(x, y, pos_weight=np.broadcast_to(pw, x.shape), reduction="none")
    assert_close(bcel(x, y, pos_weight=pw, reduction="none"), want)
    assert_close(bcel(x, y, pos_weight=pw.reshape(1, 1, 4), reduction="none"), want)


def test_logits_seed_notebook_formula(rng):
    """BCE with logits equals the naive sigmoid + log formula for moderate logits."""
    x = rng.uniform(-5, 5, size=20)
    y = rng.random(20)
    s = 1 / (1 + np.exp(-x))
    naive = -np.mean(y * np.log(s) + (1 - y) * np.log(1 - s))
    np.testing.assert_allclose(bcel(x, y), naive, rtol=1e-12)


# =========================================================================== from probabilities


def _probs_case(rng, shape, weighted, dtype=np.float64, lo=0.02, hi=0.98):
    p = rng.uniform(lo, hi, size=shape).astype(dtype)
    y = rng.random(shape).astype(dtype)
    kw = {"weight": rng.uniform(0.1, 2, size=shape[-1:]).astype(dtype)} if weighted else {}
    return p, y, kw


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weight"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_probs_parity_with_torch(torch, F, rng, shape, weighted, reduction, dtype):
    p, y, kw = _probs_case(rng, SHAPES[shape], weighted, dtype)
    go = make_grad_output(rng, reduction, p.shape)
    want_l, want_g = torch_loss_and_grad(
        torch, _torch_bce(torch, F, y, kw, reduction), p, -1, go, reduction, class_axis=False
    )
    loss = bce(p, y, reduction=reduction, **kw)
    check_loss_type(loss, reduction, dtype, p.shape)
    assert_close(loss, want_l, dtype)
    grad = bce_grad(p, y, reduction=reduction, grad_output=go, **kw)
    check_grad_type(grad, p.shape, dtype)
    assert_close(grad, want_g, dtype, kind="grad")
    loss2, grad2 = bce(p, y, reduction=reduction, return_grad=True, grad_output=go, **kw)
    assert_close(loss2, want_l, dtype)
    assert_close(grad2, want_g, dtype, kind="grad")
    np.testing.assert_array_equal(loss2, loss)     # as for the logits above
    np.testing.assert_array_equal(grad2, grad)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["logits", "logits_pos_weight", "probs", "probs_weight"])
@pytest.mark.parametrize("n", [5, 67, 4099, 300_007])
def test_loss_and_grad_loops_agree_bitwise(rng, n, kind, reduction, dtype):
    """Without torch: the loss-only, gradient-only and fused calls give the same bits.  Their loops
    are compiled apart, with different instruction scheduling (_k_binary.h); lengths cover the
    scalar tail, the lane loop, the blocks of vectors and several threads' chunks."""
    rows = n // 5 if n % 5 == 0 else n
    shape = (rows, 5) if n % 5 == 0 else (n,)
    y = rng.random(shape).astype(dtype)
    kw = {}
    if kind.startswith("logits"):
        x = (rng.standard_normal(shape) * 4).astype(dtype)
        loss_fn, grad_fn = bcel, bcel_grad
        if kind == "logits_pos_weight":
            kw["pos_weight"] = rng.uniform(0.1, 3, size=shape[-1:]).astype(dtype)
    else:
        # float16: p in [0.01, 0.99], since p = 0 or 1 gives gradients of ~1e12 (inf in float16)
        x = (rng.uniform(0.01, 0.99, shape) if dtype == np.float16 else rng.random(shape)).astype(dtype)
        if dtype != np.float16:
            x.reshape(-1)[::7] = 0.0
            x.reshape(-1)[1::11] = 1.0
        loss_fn, grad_fn = bce, bce_grad
        if kind == "probs_weight":
            kw["weight"] = rng.uniform(0.1, 2, size=shape).astype(dtype)
    go = make_grad_output(rng, reduction, x.shape)
    loss = loss_fn(x, y, reduction=reduction, **kw)
    grad = grad_fn(x, y, reduction=reduction, grad_output=go, **kw)
    loss2, grad2 = loss_fn(x, y, reduction=reduction, return_grad=True, grad_output=go, **kw)
    assert np.all(np.isfinite(np.asarray(loss))) and np.all(np.isfinite(grad))
    np.testing.assert_array_equal(loss2, loss)
    np.testing.assert_array_equal(grad2, grad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weight"])
def test_probs_reference_and_finite_differences(rng, weighted, reduction):
    p, y, kw = _probs_case(rng, (4, 3), weighted, lo=0.05, hi=0.95)
    assert_close(bce(p, y, reduction=reduction, **kw), ref_binary_cross_entropy(p, y, reduction=reduction, **kw))
    go = make_grad_output(rng, reduction, p.shape)
    want = fd_grad(lambda z: np.sum(np.asarray(go) * bce(z, y, reduction=reduction, **kw)), p, h=1e-4)
    got = bce_grad(p, y, reduction=reduction, grad_output=go, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_probs_log_clamp_at_minus_100(torch, F, dtype):
    p = np.array([0.0, 1.0, 0.0, 1.0, 1e-45, 0.5], dtype=dtype)
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.25], dtype=dtype)
    loss = bce(p, y, reduction="none")
    assert np.all(np.isfinite(loss))
    want = F.binary_cross_entropy(torch.from_numpy(p.astype(np.float64)), torch.from_numpy(y.astype(np.float64)), reduction="none")
    assert_close(loss, want.numpy(), dtype)
    np.testing.assert_allclose(loss[:4], [100.0, 100.0, 0.0, 0.0], rtol=1e-6)
    assert_close(bce(p, y, reduction="sum"), ref_binary_cross_entropy(p, y, reduction="sum"), dtype)


def test_probs_nan_propagates_deviation():
    """decisions.md deviation 2: NaN probabilities give NaN (torch raises)."""
    p = np.array([[0.2, np.nan], [0.3, 0.9]])
    y = np.array([[0.0, 1.0], [1.0, 0.0]])
    loss = bce(p, y, reduction="none")
    assert np.isnan(loss[0, 1])
    assert_close(loss[[0, 1, 1], [0, 0, 1]], ref_binary_cross_entropy(p[[0, 1, 1], [0, 0, 1]], y[[0, 1, 1], [0, 0, 1]], reduction="none"))
    assert np.isnan(bce(p, y))


def test_probs_empty():
    p = np.zeros((0,))
    assert np.isnan(bce(p, p))
    assert bce(p, p, reduction="sum") == 0
    assert bce_grad(p, p).shape == (0,)


def test_probs_out_and_inplace(rng):
    p, y, kw = _probs_case(rng, (3, 5), True)
    want = bce_grad(p, y, **kw)
    buf = np.empty_like(p)
    assert bce_grad(p, y, out=buf, **kw) is buf
    assert_close(buf, want, kind="grad")
    pin = p.copy()
    _, g = bce(pin, y, return_grad=True, out=pin, **kw)
    assert g is pin
    assert_close(pin, want, kind="grad")
