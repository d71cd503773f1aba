"""fastce.torch's kl_div_logits, entropy and sigmoid_focal_loss against torch autograd of the
textbook formulas (float64), gradients through .backward(), and their input errors."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastce.torch as fct  # noqa: E402

F = torch.nn.functional


def _kl_ref(s, t, tau, dim):
    return F.kl_div(F.log_softmax(s / tau, dim), F.log_softmax(t / tau, dim), log_target=True,
                    reduction="none").sum(dim) * tau ** 2


@pytest.mark.parametrize("reduction", ["batchmean", "mean", "sum", "none"])
@pytest.mark.parametrize("shape,dim", [((5, 30), -1), ((4, 7, 3), 1), ((9,), -1), ((300, 4), -1)])
def test_kl_div_logits(shape, dim, reduction):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(shape, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.randn(shape, dtype=torch.float64, generator=g)
    ref = _kl_ref(s, t, 2.0, dim)
    ref = ref if reduction == "none" else ref.sum() if reduction == "sum" else ref.mean()
    got = fct.kl_div_logits(s, t, temperature=2.0, reduction=reduction, dim=dim)
    assert got.shape == ref.shape and got.dtype == torch.float64
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
    go = torch.randn(ref.shape, dtype=torch.float64, generator=g)
    (gs,) = torch.autograd.grad(got, s, go)
    (gr,) = torch.autograd.grad(ref, s, go)
    torch.testing.assert_close(gs, gr, rtol=1e-11, atol=1e-14)


def test_kl_div_logits_float32_and_no_grad():
    s = torch.randn(8, 50)
    t = torch.randn(8, 50)
    got = fct.kl_div_logits(s, t)
    assert got.dtype == torch.float32 and not got.requires_grad
    torch.testing.assert_close(got, _kl_ref(s.double(), t.double(), 1.0, -1).mean().float())


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_entropy(reduction):
    x = torch.randn(6, 5, 4, dtype=torch.float64, requires_grad=True)
    h = -(F.softmax(x, 1) * F.log_softmax(x, 1)).sum(1)
    h = h if reduction == "none" else h.sum() if reduction == "sum" else h.mean()
    got = fct.entropy(x, dim=1, reduction=reduction)
    torch.testing.assert_close(got, h, rtol=1e-12, atol=1e-14)
    go = torch.randn(h.shape, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(got, x, go)[0],
                               torch.autograd.grad(h, x, go)[0], rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.0), (0.5, 1.5)])
def test_sigmoid_focal_loss(alpha, gamma, reduction):
    x = (torch.randn(7, 9, dtype=torch.float64) * 3).requires_grad_(True)
    y = (torch.rand(7, 9) < 0.4).double()
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    ref = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        ref = (alpha * y + (1 - alpha) * (1 - y)) * ref
    ref = ref if reduction == "none" else ref.sum() if reduction == "sum" else ref.mean()
    got = fct.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, reduction=reduction)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-14)
    go = torch.randn(ref.shape, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(got, x, go)[0],
                               torch.autograd.grad(ref, x, go)[0], rtol=1e-10, atol=1e-14)


def test_errors():
    s = torch.randn(3, 4, requires_grad=True)
    with pytest.raises(ValueError, match=r"teacher logits\) shape \(3, 5\).*student logits"):
        fct.kl_div_logits(s, torch.randn(3, 5))
    with pytest.raises(ValueError, match="temperature"):
        fct.kl_div_logits(s, torch.randn(3, 4), temperature=0.0)
    with pytest.raises(NotImplementedError, match="teacher logits"):
        fct.kl_div_logits(s, torch.randn(3, 4, requires_grad=True))
    with pytest.raises(ValueError, match="gamma"):
        fct.sigmoid_focal_loss(s, torch.zeros(3, 4), gamma=-1.0)
    with pytest.raises(NotImplementedError, match="target"):
        fct.sigmoid_focal_loss(s, torch.zeros(3, 4, requires_grad=True))
    with pytest.raises(ValueError, match="reduction"):
        fct.entropy(s, reduction="batchmean")
    with pytest.raises(TypeError, match="floating"):
        fct.entropy(torch.zeros(3, 4, dtype=torch.int64))
