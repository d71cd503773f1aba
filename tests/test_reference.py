"""The float64 NumPy reference itself, checked against PyTorch (no fastce involved).

If these fail, the reference (not fastce) is wrong.
"""

import numpy as np
import pytest

from conftest import (
    fd_grad,
    CE_OPTIONS,
    LAYOUT_IDS,
    NLL_OPTIONS,
    REDUCTIONS,
    make_ce_case,
    torch_ce_fn,
    torch_class_axis1,
)
from reference import (
    ref_accuracy,
    ref_binary_cross_entropy,
    ref_binary_cross_entropy_with_logits,
    ref_categorical_cross_entropy,
    ref_cross_entropy,
    ref_log_softmax,
    ref_log_softmax_vjp,
    ref_logsumexp,
    ref_nll_loss,
    ref_softmax,
    ref_softmax_vjp,
)

TOL = dict(rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", list(CE_OPTIONS))
@pytest.mark.parametrize("layout", LAYOUT_IDS)
def test_ref_cross_entropy_vs_torch(torch, F, rng, layout, option, reduction):
    x, t, kw = make_ce_case(rng, layout, option)
    got = ref_cross_entropy(x, t, reduction=reduction, **kw)
    xt = torch_class_axis1(torch, x, kw["axis"])
    want = torch_ce_fn(torch, F, t, kw, reduction)(xt).numpy()
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", list(NLL_OPTIONS))
@pytest.mark.parametrize("layout", LAYOUT_IDS)
def test_ref_nll_vs_torch(torch, F, rng, layout, option, reduction):
    x, t, kw = make_ce_case(rng, layout, option, options=NLL_OPTIONS)
    got = ref_nll_loss(x, t, reduction=reduction, **kw)
    xt = torch_class_axis1(torch, x, kw["axis"])
    want = torch_ce_fn(torch, F, t, kw, reduction, loss="nll")(xt).numpy()
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", ["plain", "weight", "pos_weight", "both"])
@pytest.mark.parametrize("shape", [(7,), (5, 3), (2, 3, 4)], ids=["1d", "2d", "3d"])
def test_ref_bce_logits_vs_torch(torch, F, rng, shape, opts, reduction):
    x = rng.standard_normal(shape) * 3
    y = rng.random(shape)
    kw = {}
    if opts in ("weight", "both"):
        kw["weight"] = rng.uniform(0.1, 2, size=shape[-1:])
    if opts in ("pos_weight", "both"):
        kw["pos_weight"] = rng.uniform(0.1, 3, size=shape[-1:])
    got = ref_binary_cross_entropy_with_logits(x, y, reduction=reduction, **kw)
    tkw = {k: torch.from_numpy(v) for k, v in kw.items()}
    want = F.binary_cross_entropy_with_logits(
        torch.from_numpy(x), torch.from_numpy(y), reduction=reduction, **tkw
    ).numpy()
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weight"])
def test_ref_bce_vs_torch(torch, F, rng, weighted, reduction):
    p = rng.random((6, 3))
    p[0, 0], p[1, 1], p[2, 2], p[3, 0] = 0.0, 1.0, 1e-50, 1.0 - 1e-17  # clamp at -100 exercised
    y = rng.random((6, 3))
    y[0, 0], y[1, 1] = 1.0, 0.0
    kw = {"weight": rng.uniform(0.1, 2, size=(6, 3))} if weighted else {}
    got = ref_binary_cross_entropy(p, y, reduction=reduction, **kw)
    tkw = {k: torch.from_numpy(v) for k, v in kw.items()}
    want = F.binary_cross_entropy(torch.from_numpy(p), torch.from_numpy(y), reduction=reduction, **tkw).numpy()
    np.testing.assert_allclose(got, want, **TOL)


ROW_CASES = {"1d": ((6,), -1), "2d": ((4, 5), -1), "2d_axis0": ((4, 5), 0), "3d_axis1": ((2, 5, 3), 1)}


@pytest.mark.parametrize("case", list(ROW_CASES))
def test_ref_rowops_vs_torch(torch, rng, case):
    shape, axis = ROW_CASES[case]
    x = rng.standard_normal(shape) * 3
    g = rng.standard_normal(shape)
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(ref_log_softmax(x, axis=axis), torch.log_softmax(xt, axis).numpy(), **TOL)
    np.testing.assert_allclose(ref_softmax(x, axis=axis), torch.softmax(xt, axis).numpy(), **TOL)
    np.testing.assert_allclose(ref_logsumexp(x, axis=axis), torch.logsumexp(xt, axis).numpy(), **TOL)
    for fwd, vjp in ((torch.log_softmax, ref_log_softmax_vjp), (torch.softmax, ref_softmax_vjp)):
        xr = xt.clone().requires_grad_(True)
        y = fwd(xr, axis)
        y.backward(torch.from_numpy(g))
        np.testing.assert_allclose(vjp(y.detach().numpy(), g, axis=axis), xr.grad.numpy(), **TOL)


def test_ref_rowops_extreme(torch):
    x = np.array([[1e6, 1e6 + 1, 1e6 + 2], [-1e30, -1e30, -1e30], [0.0, -np.inf, 1.0], [-np.inf] * 3])
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(ref_log_softmax(x), torch.log_softmax(xt, -1).numpy(), **TOL)
    np.testing.assert_allclose(ref_logsumexp(x), torch.logsumexp(xt, -1).numpy(), **TOL)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_ref_categorical_vs_torch_expression(torch, rng, target_kind, reduction):
    p = rng.dirichlet(np.ones(4), size=5)
    p[0] = [1.0, 0.0, 0.0, 0.0]
    eps = 1e-7
    if target_kind == "index":
        t = rng.integers(0, 4, size=5)
        q = np.eye(4)[t]
    else:
        t = q = rng.dirichlet(np.ones(4), size=5)
    per = -(torch.from_numpy(q) * torch.log(torch.clamp(torch.from_numpy(p), eps, 1 - eps))).sum(-1)
    want = {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction].numpy()
    got = ref_categorical_cross_entropy(p, t, eps=eps, reduction=reduction)
    np.testing.assert_allclose(got, want, **TOL)


def test_ref_accuracy():
    s = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])
    assert ref_accuracy(s, [1, 2, 2, 2]) == 0.75
    assert ref_accuracy(s, np.eye(3)[[1, 2, 2, 2]]) == 0.75
    assert ref_accuracy(s.T, [1, 2, 2, 2], axis=0) == 0.75


def test_ref_deviation_limits():
    """The reference implements decisions.md deviations 1 and 3 (where torch gives NaN)."""
    inf = np.inf
    got = ref_binary_cross_entropy_with_logits(
        np.array([-inf, inf, -inf, inf]), np.array([0.0, 1.0, 1.0, 0.0]), reduction="none"
    )
    np.testing.assert_array_equal(got, [0.0, 0.0, inf, inf])
    x = np.array([[0.0, -inf, 1.0]])
    got = ref_cross_entropy(x, np.array([[0.5, 0.0, 0.5]]))
    want = ref_cross_entropy(np.array([[0.0, 1.0]]), np.array([[0.5, 0.5]]))
    np.testing.assert_allclose(got, want, **TOL)


def test_fd_grad_helper_is_fourth_order():
    x = np.linspace(-2, 2, 7)
    np.testing.assert_allclose(fd_grad(lambda z: np.sum(np.sin(z)), x), np.cos(x), rtol=0, atol=1e-12)
    # exact for polynomials up to degree 4
    np.testing.assert_allclose(fd_grad(lambda z: np.sum(z**4), x, h=0.1), 4 * x**3, rtol=1e-12, atol=1e-12)
