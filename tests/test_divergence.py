"""kl_div_logits, entropy, sigmoid_focal_loss and kl_div: values and gradients against float64
references written here (NumPy, the formulas as published), torch autograd in float64, finite
differences and high-precision (mpmath) values; layouts, dtypes, reductions, special values,
thread-count determinism and input errors."""

import numpy as np
import pytest
from _stack import run_with_small_stack, skip_under_asan
from conftest import assert_close, fd_grad

import fastce
from fastce import _threads

# name -> (shape, class axis): every item kind of the class-axis kernels
#   rows (C > 16), block (C <= 16, many rows: transposed tiles, with a ragged last tile),
#   cols (axis=1 with spatial dims: a full tile and a partial one), 1-D, C = 1 and C = 2.
KL_LAYOUTS = {
    "rows": ((6, 37), -1),
    "rows_3d": ((2, 3, 40), -1),
    "block": ((300, 5), -1),
    "block_c2": ((131, 2), -1),
    "block_c16": ((20, 16), -1),
    "cols": ((2, 7, 3, 50), 1),
    "cols_tile": ((1, 4, 130), 1),
    "vector": ((9,), -1),
    "c1": ((5, 1), -1),
}
DTYPES = [np.float64, np.float32, np.float16]
DTYPE_IDS = ["f64", "f32", "f16"]


def _tol(dtype):
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return dict(rtol=1e-11, atol=1e-13)
    if dtype == np.float32:
        return dict(rtol=2e-5, atol=2e-6)
    return dict(rtol=1e-3, atol=1e-4)        # float16 inputs: computed in float32, grads in f16


def _close(a, b, dtype):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               **_tol(dtype))


# ============================================================================ float64 references

def _log_softmax_last(x):
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    z = x - m
    with np.errstate(divide="ignore"):
        return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def ref_kl_logits(s, t, temperature=1.0, axis=-1):
    """Per-sample tau^2 sum_c p_c (log p_c - log q_c), terms with p_c == 0 taken as 0; and the
    gradient tau (q - p) w.r.t. s, in float64."""
    s = np.moveaxis(np.asarray(s, np.float64), axis, -1) / temperature
    t = np.moveaxis(np.asarray(t, np.float64), axis, -1) / temperature
    lq, lp = _log_softmax_last(s), _log_softmax_last(t)
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):
        terms = np.where(p == 0, 0.0, p * (lp - lq))
    loss = temperature ** 2 * terms.sum(-1)
    grad = temperature * (np.exp(lq) - p)
    return loss, np.moveaxis(grad, -1, axis)


def ref_entropy(x, axis=-1):
    lp = _log_softmax_last(np.moveaxis(np.asarray(x, np.float64), axis, -1))
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):
        h = -np.where(p == 0, 0.0, p * lp).sum(-1)
        grad = -p * (lp + h[..., None])
    grad = np.where(p == 0, 0.0, grad)
    return h, np.moveaxis(grad, -1, axis)


def ref_focal(x, y, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss's formula, elementwise, in float64."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    with np.errstate(over="ignore"):
        p = 1 / (1 + np.exp(-x))
    ce = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss


def ref_kl_div(x, y, log_target=False):
    """torch's pointwise kl_div: xlogy(y, y) - y x, or e^y (y - x)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if log_target:
            return np.exp(y) * (y - x)
        return np.where(y == 0, 0.0, y * np.log(y)) - y * x


def _reduce(per, reduction, denominator=None):
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / (per.size if denominator is None else denominator)


def _grad_output(rng, reduction, shape):
    return rng.uniform(-1.5, 1.5, size=shape) if reduction == "none" else 0.7


def _pair(rng, shape, dtype, scale=2.0):
    s = (rng.standard_normal(shape) * scale).astype(dtype)
    t = (rng.standard_normal(shape) * scale).astype(dtype)
    return s, t


def _per_sample(shape, axis):
    return tuple(np.delete(np.array(shape, dtype=np.int64), axis % len(shape)).tolist())


# ============================================================================ kl_div_logits

@pytest.mark.parametrize("reduction", ["batchmean", "mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", list(KL_LAYOUTS))
def test_kl_logits_matches_reference(rng, layout, dtype, reduction):
    shape, axis = KL_LAYOUTS[layout]
    s, t = _pair(rng, shape, dtype)
    tau = 1.7
    per, g = ref_kl_logits(s, t, tau, axis)
    go = _grad_output(rng, reduction, per.shape)
    denom = per.size if reduction in ("mean", "batchmean") else None
    want = _reduce(per, "mean" if denom else reduction)
    loss = fastce.kl_div_logits(s, t, temperature=tau, reduction=reduction, axis=axis)
    _close(loss, want, dtype)
    loss2, grad = fastce.kl_div_logits(s, t, temperature=tau, reduction=reduction, axis=axis,
                                       return_grad=True, grad_output=go)
    assert grad.shape == s.shape and grad.dtype == s.dtype
    scale = np.expand_dims(np.asarray(go), axis) if reduction == "none" else go / (denom or 1)
    _close(grad, g * scale, dtype)
    np.testing.assert_array_equal(loss2, loss)
    only = fastce.kl_div_logits_grad(s, t, temperature=tau, reduction=reduction, axis=axis,
                                     grad_output=go)
    np.testing.assert_array_equal(only, grad)
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == per.shape
    else:
        assert type(loss) is (np.float64 if dtype == np.float64 else np.float32).__mro__[0]


@pytest.mark.parametrize("layout", ["rows", "block", "cols", "vector"])
@pytest.mark.parametrize("tau", [0.5, 1.0, 4.0])
def test_kl_logits_matches_torch(rng, torch, layout, tau):
    F = torch.nn.functional
    shape, axis = KL_LAYOUTS[layout]
    s, t = _pair(rng, shape, np.float64)
    st = torch.tensor(s, requires_grad=True)
    tt = torch.tensor(t)
    ax = axis % s.ndim
    ref = F.kl_div(F.log_softmax(st / tau, ax), F.log_softmax(tt / tau, ax), log_target=True,
                   reduction="none").sum(ax) * tau ** 2
    ref.mean().backward()
    loss, grad = fastce.kl_div_logits(s, t, temperature=tau, axis=axis, return_grad=True)
    np.testing.assert_allclose(loss, ref.mean().item(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, st.grad.numpy(), rtol=1e-11, atol=1e-14)


def test_kl_logits_finite_differences(rng):
    s, t = _pair(rng, (3, 6), np.float64)
    for axis, tau in ((-1, 1.0), (0, 2.5)):
        _, g = fastce.kl_div_logits(s, t, temperature=tau, axis=axis, reduction="sum",
                                    return_grad=True)
        fd = fd_grad(lambda z: fastce.kl_div_logits(z, t, temperature=tau, axis=axis,
                                                    reduction="sum"), s, h=1e-3)
        np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("layout", list(KL_LAYOUTS))
def test_kl_logits_identical_rows_exactly_zero(rng, layout, dtype):
    shape, axis = KL_LAYOUTS[layout]
    s = (rng.standard_normal(shape) * 5).astype(dtype)
    s.reshape(-1)[::7] = -np.inf                   # masked classes in both: contribute 0
    np.moveaxis(s, axis, -1)[..., 0] = 3.0         # every row keeps a finite class
    for tau in (1.0, 0.3, 7.0):
        loss, grad = fastce.kl_div_logits(s, s.copy(), temperature=tau, axis=axis,
                                          reduction="none", return_grad=True)
        assert np.all(loss == 0), loss
        assert np.all(grad == 0), grad


def _mp_kl(s, t, tau):
    """tau^2 KL(softmax(t/tau) || softmax(s/tau)) and tau (q - p) with 60 significant digits."""
    mp = pytest.importorskip("mpmath")
    with mp.workdps(60):
        tau = mp.mpf(float(tau))
        a = [mp.mpf(float(v)) / tau for v in s]
        b = [mp.mpf(float(v)) / tau for v in t]
        la = mp.log(mp.fsum(mp.exp(v) for v in a))
        lb = mp.log(mp.fsum(mp.exp(v) for v in b))
        p = [mp.exp(v - lb) for v in b]
        q = [mp.exp(v - la) for v in a]
        kl = mp.fsum(pc * ((bc - lb) - (ac - la)) for pc, ac, bc in zip(p, a, b))
        return float(tau ** 2 * kl), np.array([float(tau * (qc - pc)) for qc, pc in zip(q, p)])


@pytest.mark.parametrize("dtype,eps", [(np.float64, 1e-3), (np.float64, 1e-7), (np.float64, 1e-11),
                                       (np.float32, 1e-3), (np.float32, 3e-5)])
@pytest.mark.parametrize("C", [5, 40])
def test_kl_logits_nearly_equal_rows_keep_relative_precision(rng, dtype, eps, C):
    """KL ~ eps^2 is formed without cancellation: a few ulps of relative error, where the
    textbook sum p (log p - log q) in float64 loses everything below eps ~ 1e-8."""
    rows = []
    for _ in range(3):
        t = rng.standard_normal(C) * 3
        s = t + eps * rng.standard_normal(C)
        rows.append((s.astype(dtype), t.astype(dtype)))
    s = np.stack([r[0] for r in rows])
    t = np.stack([r[1] for r in rows])
    loss, grad = fastce.kl_div_logits(s, t, temperature=1.3, reduction="none", return_grad=True)
    rtol = 1e-13 if dtype == np.float64 else 2e-6
    for i in range(len(rows)):
        want, gwant = _mp_kl(s[i], t[i], 1.3)
        assert want > 0
        np.testing.assert_allclose(loss[i], want, rtol=rtol)
        np.testing.assert_allclose(grad[i], gwant, rtol=rtol * 10, atol=rtol * np.abs(gwant).max())


def test_kl_logits_extreme_but_finite_rows(rng):
    """Rows far apart (one class's probability underflows in one softmax only) stay finite and
    exact: the large-|d| branch never multiplies an underflowed exp by an overflowed one."""
    s = np.array([[0.0, -200.0, 1.0, -50.0], [300.0, 0.0, -300.0, 2.0]])
    t = np.array([[-200.0, 0.0, 1.0, 3.0], [-300.0, 5.0, 300.0, 2.0]])
    for dtype, tol in ((np.float64, 1e-13), (np.float32, 1e-5)):
        loss, grad = fastce.kl_div_logits(s.astype(dtype), t.astype(dtype), reduction="none",
                                          return_grad=True)
        want, gwant = ref_kl_logits(s, t)
        np.testing.assert_allclose(loss, want, rtol=tol)
        np.testing.assert_allclose(grad, gwant, rtol=tol, atol=tol)


def test_kl_logits_masked_classes():
    s = np.array([[0.5, -np.inf, 1.0, 0.0], [0.5, 2.0, 1.0, 0.0], [1.0, -np.inf, 0.0, 2.0]])
    t = np.array([[0.1, -np.inf, 2.0, 1.0], [-np.inf, 2.0, 1.0, 0.0], [1.0, 3.0, 0.0, 2.0]])
    loss, grad = fastce.kl_div_logits(s, t, reduction="none", return_grad=True)
    # row 0: the class masked in both rows changes nothing
    l0, g0 = ref_kl_logits(s[0, [0, 2, 3]], t[0, [0, 2, 3]])
    np.testing.assert_allclose(loss[0], l0, rtol=1e-13)
    np.testing.assert_allclose(grad[0, [0, 2, 3]], g0, rtol=1e-12, atol=1e-15)
    assert grad[0, 1] == 0
    # row 1: masked in the teacher only: p = 0 there, finite loss (torch's kl_div gives NaN)
    want, gwant = ref_kl_logits(s[1], t[1])
    np.testing.assert_allclose(loss[1], want, rtol=1e-13)
    np.testing.assert_allclose(grad[1], gwant, rtol=1e-12, atol=1e-15)
    # row 2: masked in the student only where the teacher has mass: KL is +inf
    assert loss[2] == np.inf
    assert np.all(np.isfinite(grad[2]))
    np.testing.assert_allclose(grad[2], ref_kl_logits(s[2], t[2])[1], rtol=1e-12, atol=1e-15)


def test_kl_logits_nan_propagates():
    s = np.array([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]])
    t = np.array([[0.0, 1.0, 1.0], [0.0, np.nan, 2.0]])
    loss = fastce.kl_div_logits(s, t, reduction="none")
    assert np.isnan(loss).all()


def test_kl_logits_zero_sized():
    for shape, axis in (((0, 4), -1), ((3, 0), -1), ((2, 0, 5), 1)):
        x = np.zeros(shape)
        loss, g = fastce.kl_div_logits(x, x, axis=axis, reduction="none", return_grad=True)
        assert loss.shape == _per_sample(shape, axis) and np.all(loss == 0)
        assert g.shape == shape
    assert np.isnan(fastce.kl_div_logits(np.zeros((0, 4)), np.zeros((0, 4))))


def test_kl_logits_out_buffer_and_aliasing(rng):
    s, t = _pair(rng, (40, 20), np.float64)
    want = fastce.kl_div_logits_grad(s, t, temperature=2.0)
    out = np.empty_like(s)
    assert fastce.kl_div_logits_grad(s, t, temperature=2.0, out=out) is out
    np.testing.assert_array_equal(out, want)
    for alias in ("student", "teacher"):           # never in place: routed through a temporary
        s2, t2 = s.copy(), t.copy()
        buf = s2 if alias == "student" else t2
        r = fastce.kl_div_logits_grad(s2, t2, temperature=2.0, out=buf)
        assert r is buf
        np.testing.assert_array_equal(buf, want)


def test_kl_logits_teacher_cast_to_student_dtype(rng):
    s, t = _pair(rng, (5, 30), np.float32)
    a = fastce.kl_div_logits(s, t.astype(np.float64))
    b = fastce.kl_div_logits(s, t)
    assert type(a) is np.float32 and a == b


# ============================================================================ entropy

@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("layout", list(KL_LAYOUTS))
def test_entropy_matches_reference(rng, layout, dtype, reduction):
    shape, axis = KL_LAYOUTS[layout]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    per, g = ref_entropy(x, axis)
    go = _grad_output(rng, reduction, per.shape)
    _close(fastce.entropy(x, axis=axis, reduction=reduction), _reduce(per, reduction), dtype)
    h, grad = fastce.entropy(x, axis=axis, reduction=reduction, return_grad=True,
                             grad_output=go)
    scale = (np.expand_dims(np.asarray(go), axis) if reduction == "none"
             else go / (per.size if reduction == "mean" else 1))
    _close(grad, g * scale, dtype)
    assert grad.dtype == x.dtype
    np.testing.assert_array_equal(
        fastce.entropy_grad(x, axis=axis, reduction=reduction, grad_output=go), grad)


def test_entropy_matches_torch(rng, torch):
    F = torch.nn.functional
    for shape, axis in (((6, 37), -1), ((300, 5), -1), ((2, 7, 3, 50), 1)):
        x = rng.standard_normal(shape) * 2
        xt = torch.tensor(x, requires_grad=True)
        ax = axis % x.ndim
        h = -(F.softmax(xt, ax) * F.log_softmax(xt, ax)).sum(ax)
        h.sum().backward()
        got, g = fastce.entropy(x, axis=axis, reduction="sum", return_grad=True)
        np.testing.assert_allclose(got, h.sum().item(), rtol=1e-12)
        np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_entropy_finite_differences(rng):
    x = rng.standard_normal((3, 5)) * 2
    _, g = fastce.entropy(x, reduction="sum", return_grad=True)
    fd = fd_grad(lambda z: fastce.entropy(z, reduction="sum"), x)
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-14), (np.float32, 1e-6)])
@pytest.mark.parametrize("layout", ["rows", "block", "cols"])
def test_entropy_confident_rows_relative_precision(rng, layout, dtype, rtol):
    """A confident row's entropy (~1e-10 here) is positive and correct to a few ulps, where
    -(p log p).sum() gives 0 or garbage."""
    mp = pytest.importorskip("mpmath")
    shape, axis = KL_LAYOUTS[layout]
    x = -30.0 - 10.0 * rng.random(shape)
    np.moveaxis(x, axis, -1)[..., 0] = 0.0
    x = x.astype(dtype)
    h = fastce.entropy(x, axis=axis)
    xl = np.moveaxis(x, axis, -1).reshape(-1, shape[axis])
    with mp.workdps(40):
        for hv, row in zip(h.reshape(-1), xl):
            r = [mp.mpf(float(v)) for v in row]
            lse = mp.log(mp.fsum(mp.exp(v) for v in r))
            want = float(-mp.fsum(mp.exp(v - lse) * (v - lse) for v in r))
            assert hv > 0
            np.testing.assert_allclose(hv, want, rtol=rtol)


def test_entropy_special_values():
    x = np.array([[0.0, -np.inf, 0.0], [-np.inf, 5.0, -np.inf], [0.0, np.inf, 1.0],
                  [0.0, np.nan, 1.0]])
    h, g = fastce.entropy(x, reduction="none", return_grad=True)
    np.testing.assert_allclose(h[0], np.log(2), rtol=1e-15)
    assert h[1] == 0 and np.all(g[1] == 0)
    assert g[0, 1] == 0 and np.all(np.isfinite(g[0]))
    assert np.isnan(h[2]) and np.isnan(h[3])
    e = fastce.entropy(np.zeros((4, 0)))
    np.testing.assert_array_equal(e, np.zeros(4))


# ============================================================================ sigmoid_focal_loss

FOCAL_PARAMS = [(0.25, 2.0), (-1.0, 2.0), (0.25, 0.0), (0.6, 1.0), (0.25, 1.5), (0.9, 3.0)]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("alpha,gamma", FOCAL_PARAMS)
def test_focal_matches_reference(rng, alpha, gamma, dtype, reduction):
    shape = (7, 3, 1500)                          # several chunks, ragged lanes
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    y = (rng.random(shape) < 0.3).astype(dtype)
    y.reshape(-1)[::11] = 0.4                     # soft labels too
    per = ref_focal(x, y, alpha, gamma)
    got = fastce.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, reduction=reduction)
    _close(got, _reduce(per, reduction), dtype)


@pytest.mark.parametrize("alpha,gamma", FOCAL_PARAMS)
def test_focal_grad_matches_torch(rng, torch, alpha, gamma):
    x = rng.standard_normal((4, 300)) * 4
    y = (rng.random((4, 300)) < 0.3).astype(np.float64)
    y[0, :20] = 0.7
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.tensor(y)
    p = torch.sigmoid(xt)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(xt, yt, reduction="none")
    p_t = p * yt + (1 - p) * (1 - yt)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * yt + (1 - alpha) * (1 - yt)) * loss
    go = rng.uniform(-1, 1, size=x.shape)
    loss.backward(torch.tensor(go))
    got, g = fastce.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, return_grad=True,
                                       grad_output=go)
    np.testing.assert_allclose(got, loss.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-14)
    gm = fastce.sigmoid_focal_loss_grad(x, y, alpha=alpha, gamma=gamma, reduction="mean")
    np.testing.assert_allclose(gm * x.size, fastce.sigmoid_focal_loss_grad(
        x, y, alpha=alpha, gamma=gamma, reduction="sum"), rtol=1e-14)


def test_focal_finite_differences(rng):
    x = rng.standard_normal(12) * 3
    y = np.array([0, 1, 0.3, 1, 0, 0, 1, 0.5, 0, 1, 1, 0.0])
    for alpha, gamma in ((0.25, 2.0), (0.4, 1.5), (-1, 0.5)):
        _, g = fastce.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, reduction="sum",
                                         return_grad=True)
        fd = fd_grad(lambda z: fastce.sigmoid_focal_loss(z, y, alpha=alpha, gamma=gamma,
                                                         reduction="sum"), x, h=1e-4)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


def test_focal_gamma0_is_alpha_weighted_bce(rng):
    x = rng.standard_normal(500) * 3
    y = (rng.random(500) < 0.5).astype(np.float64)
    w = 0.3 * y + 0.7 * (1 - y)
    bce, gb = fastce.binary_cross_entropy_with_logits(x, y, weight=w, reduction="none",
                                                      return_grad=True)
    f, gf = fastce.sigmoid_focal_loss(x, y, alpha=0.3, gamma=0.0, return_grad=True)
    np.testing.assert_allclose(f, bce, rtol=1e-14)
    np.testing.assert_allclose(gf, gb, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_focal_infinite_and_confident_logits(dtype):
    inf = np.inf
    big = 40.0 if dtype == np.float64 else 15.0    # e^(-4 big) stays a normal number
    x = np.array([inf, inf, -inf, -inf, big, -big, 1e30, -1e30, inf], dtype)
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.5, 0.5], dtype)
    for gamma in (0.0, 0.5, 1.0, 2.0, 3.0):
        loss, g = fastce.sigmoid_focal_loss(x, y, alpha=0.25, gamma=gamma, return_grad=True)
        assert loss[0] == 0 and loss[2] == 0 and loss[1] == inf and loss[3] == inf
        assert loss[8] == inf                     # a soft label at an infinite logit
        want = ref_focal(np.float64(x[6:8]), np.float64(y[6:8]), 0.25, gamma)  # huge, finite
        np.testing.assert_allclose(loss[6:8], want, rtol=1e-6)
        assert np.all(np.isfinite(g)), (gamma, g)
        # the limits: saturated right -> 0, saturated wrong -> -+a_t
        np.testing.assert_array_equal(g[[0, 2]], [0, 0])
        np.testing.assert_allclose(g[[1, 3]], [0.75, -0.25], rtol=1e-6)
        # confident and right: tiny but accurate (e^-40 scale, where the textbook formula's
        # 1 - p_t is exactly 0), from sigmoids, not 1 - p
        want = [_mp_focal(v, t, 0.25, gamma) for v, t in zip(x[4:6], y[4:6])]
        assert np.all(loss[4:6] > 0)
        np.testing.assert_allclose(loss[4:6], want, rtol=1e-5 if dtype == np.float32 else 1e-13)


def _mp_focal(x, y, alpha, gamma):
    mp = pytest.importorskip("mpmath")
    with mp.workdps(50):
        x, y = mp.mpf(float(x)), mp.mpf(float(y))
        p = 1 / (1 + mp.exp(-x))
        ce = -(y * mp.log(p) + (1 - y) * mp.log(1 - p))
        z = p * (1 - y) + (1 - p) * y
        return float((alpha * y + (1 - alpha) * (1 - y)) * ce * z ** gamma)


# ============================================================================ kl_div (torch's)

@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "batchmean", "sum", "none"])
@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 1000), (7,), ()], ids=str)
def test_kl_div_matches_torch(rng, torch, shape, reduction, log_target):
    F = torch.nn.functional
    x = np.log(rng.random(shape) + 0.01)          # log-probability-like inputs
    q = rng.random(shape)
    if q.ndim:
        q.reshape(-1)[::3] = 0.0                  # 0 log 0 = 0
    with np.errstate(divide="ignore"):
        y = np.log(q) if log_target else q
        xt = torch.tensor(x, requires_grad=True)
        want = F.kl_div(xt, torch.tensor(y), reduction=reduction, log_target=log_target)
    go = rng.uniform(-1, 1, size=want.shape) if reduction == "none" else 0.7
    want.backward(torch.tensor(go, dtype=torch.float64))
    got, g = fastce.kl_div(x, y, reduction=reduction, log_target=log_target, return_grad=True,
                           grad_output=go)
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-13, atol=1e-15)
    assert got.shape == (shape if reduction == "none" else ())


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_kl_div_reference_and_ieee_products(rng, dtype):
    x = np.log(rng.random((4, 40))).astype(dtype)
    y = rng.random((4, 40)).astype(dtype)
    y[0, :5] = 0
    _close(fastce.kl_div(x, y, reduction="none"), ref_kl_div(x, y), dtype)
    _close(fastce.kl_div(x, y, reduction="batchmean"), ref_kl_div(x, y).sum() / 4, dtype)
    # torch's products are kept: target 0 against input -inf is 0 * inf = NaN in torch too
    r = fastce.kl_div(np.array([-np.inf, -1.0]), np.array([0.0, 0.0]), reduction="none")
    assert np.isnan(r[0]) and r[1] == 0
    r = fastce.kl_div(np.array([-1.0]), np.array([-np.inf]), log_target=True, reduction="none")
    assert np.isnan(r[0])


def test_kl_div_in_place_gradient(rng):
    x = np.log(rng.random((5, 6)))
    y = rng.random((5, 6))
    want = fastce.kl_div_grad(x, y, reduction="sum")
    got = fastce.kl_div_grad(x, y, reduction="sum", out=x)
    assert got is x
    np.testing.assert_array_equal(x, want)
    np.testing.assert_array_equal(want, -y)


# ============================================================================ peers (optax)

@pytest.fixture(scope="module")
def jnp():
    jax = pytest.importorskip("jax")
    pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", True)
    return jax.numpy


def test_focal_matches_optax(rng, jnp):
    import optax
    x = rng.standard_normal((8, 50)) * 3
    y = (rng.random((8, 50)) < 0.4).astype(np.float64)
    for alpha, gamma in ((0.25, 2.0), (None, 1.5)):
        want = np.asarray(optax.losses.sigmoid_focal_loss(jnp.asarray(x), jnp.asarray(y),
                                                          alpha=alpha, gamma=gamma))
        got = fastce.sigmoid_focal_loss(x, y, alpha=-1 if alpha is None else alpha, gamma=gamma)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)


def test_kl_div_matches_optax(rng, jnp):
    import optax
    lp = np.log(rng.dirichlet(np.ones(7), size=6))
    q = rng.dirichlet(np.ones(7), size=6)
    want = np.asarray(optax.losses.kl_divergence(jnp.asarray(lp), jnp.asarray(q)))
    np.testing.assert_allclose(fastce.kl_div(lp, q, reduction="none").sum(-1), want, rtol=1e-12)
    # and kl_div_logits at temperature 1 is the same divergence from logits
    s = rng.standard_normal((6, 7))
    t = rng.standard_normal((6, 7))
    lq = s - np.log(np.exp(s).sum(-1, keepdims=True))
    p = np.exp(t - np.log(np.exp(t).sum(-1, keepdims=True)))
    want = np.asarray(optax.losses.kl_divergence(jnp.asarray(lq), jnp.asarray(p)))
    np.testing.assert_allclose(fastce.kl_div_logits(s, t, reduction="none"), want, rtol=1e-12)


# ============================================================================ determinism

@pytest.mark.skipif(not _threads.OPENMP, reason="built without OpenMP")
@pytest.mark.parametrize("which", ["kl_rows", "kl_block", "kl_cols", "entropy", "focal", "kl_div"])
def test_thread_count_does_not_change_results(rng, which):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    shapes = {"kl_rows": ((64, 1000), -1), "kl_block": ((4000, 7), -1),
              "kl_cols": ((3, 9, 4000), 1), "entropy": ((64, 1000), -1),
              "focal": ((200, 1000), -1), "kl_div": ((200, 1000), -1)}
    shape, axis = shapes[which]
    a = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal(shape).astype(np.float32)

    def run():
        if which.startswith("kl_") and which != "kl_div":
            return fastce.kl_div_logits(a, b, axis=axis, reduction="sum", return_grad=True)
        if which == "entropy":
            return fastce.entropy(a, reduction="sum", return_grad=True)
        if which == "focal":
            return fastce.sigmoid_focal_loss(a, (b > 0).astype(np.float32), reduction="sum",
                                             return_grad=True)
        return fastce.kl_div(a, np.abs(b), reduction="sum", return_grad=True)

    results = []
    for n in (1, 2, 3):
        with threadpoolctl.threadpool_limits(n):
            results.append(run())
    for loss, grad in results[1:]:
        assert loss == results[0][0]
        np.testing.assert_array_equal(grad, results[0][1])


@skip_under_asan
def test_kernels_run_in_a_thread_with_a_small_stack():
    """The engine's promise (FCE_TILE sized stack buffers): every divergence kernel, every item
    kind and both dtypes run in a thread started with threading.stack_size(64 KiB)."""
    body = """
        x = rng.standard_normal(shape).astype(dt)
        y = rng.standard_normal(shape).astype(dt)
        fastce.kl_div_logits(x, y, axis=axis, return_grad=True)
        fastce.entropy(x, axis=axis, return_grad=True)
        fastce.sigmoid_focal_loss(x, (y > 0).astype(dt), gamma=1.5, return_grad=True)
        fastce.kl_div(x, np.abs(y), return_grad=True)
        t = np.zeros(np.delete(np.array(shape), axis).tolist(), np.int64)
        fastce.accuracy(x, t, axis=axis, k=2)
    """
    run_with_small_stack(body, list(KL_LAYOUTS.values()) + [((3, 40000), -1), ((70, 16), -1)])


# ============================================================================ input errors

def test_errors():
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"target \(teacher logits\) shape \(3, 5\).*input \(student logits\) shape \(3, 4\)"):
        fastce.kl_div_logits(x, np.zeros((3, 5)))
    for tau in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="temperature"):
            fastce.kl_div_logits(x, x, temperature=tau)
    with pytest.raises(ValueError, match="temperature"):
        fastce.kl_div_logits(x.astype(np.float32), x, temperature=1e-40)
    with pytest.raises(TypeError, match="temperature"):
        fastce.kl_div_logits(x, x, temperature="2")
    with pytest.raises(ValueError, match="reduction"):
        fastce.kl_div_logits(x, x, reduction="elementwise")
    with pytest.raises(ValueError, match="reduction"):
        fastce.entropy(x, reduction="batchmean")
    with pytest.raises(ValueError, match="out= receives the gradient"):
        fastce.entropy(x, out=np.empty_like(x))
    for gamma in (-0.5, np.nan, np.inf):
        with pytest.raises(ValueError, match="gamma"):
            fastce.sigmoid_focal_loss(x, x, gamma=gamma)
    with pytest.raises(ValueError, match="alpha"):
        fastce.sigmoid_focal_loss(x, x, alpha=np.nan)
    with pytest.raises(ValueError, match=r"target shape \(4,\).*input shape \(3, 4\)"):
        fastce.sigmoid_focal_loss(x, np.zeros(4))
    with pytest.raises(ValueError, match=r"target shape"):
        fastce.kl_div(x, np.zeros((4, 3)))
    with pytest.raises(TypeError, match="log_target"):
        fastce.kl_div(x, x, log_target="yes")
    with pytest.raises(ValueError, match="reduction"):
        fastce.kl_div(x, x, reduction="batch")
    with pytest.raises(ValueError, match="axis"):
        fastce.entropy(x, axis=2)
    with pytest.raises(TypeError):
        fastce.entropy(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="grad_output"):
        fastce.entropy(x, return_grad=True, grad_output=np.ones(5))
