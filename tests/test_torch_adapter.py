"""fastce.torch: autograd Functions with torch.nn.functional's arguments, values and gradients."""

import inspect
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import fastce  # noqa: E402
import fastce.torch as fct  # noqa: E402
from conftest import LAYOUTS, make_ce_case, NLL_OPTIONS, per_sample_shape  # noqa: E402

HAS_LINEAR = hasattr(fastce.functional, "linear_cross_entropy")
HAS_ZLOSS = "z_loss" in inspect.signature(fastce.cross_entropy).parameters
REDUCTIONS = ["mean", "sum", "none"]
# NumPy layouts whose class axis is already torch's dim 1 (or the unbatched (C,) case)
TORCH_LAYOUTS = ["2d", "4d_axis1", "1d"]
CE_OPTIONS = ["plain", "weight_ignore_smooth", "ignore_index_1", "prob_weight_smooth", "onehot"]
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=2e-5, atol=2e-6)}


def _t(a, dtype=torch.float64):
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.integer):
        return torch.from_numpy(a.astype(np.int64))
    return torch.from_numpy(np.array(a)).to(dtype)


def _ce_torch_args(x, t, kw, dtype):
    """(input, target, torch kwargs) for a make_ce_case case in torch layout."""
    extra = {}
    if kw.get("weight") is not None:
        extra["weight"] = _t(kw["weight"], dtype)
    for k in ("ignore_index", "label_smoothing"):
        if k in kw:
            extra[k] = kw[k]
    return _t(x, dtype), _t(t, dtype), extra


def _loss_and_grads(fn, inputs, others, kwargs, reduction, go):
    leaves = [a.detach().clone().requires_grad_() for a in inputs]
    loss = fn(*leaves, *others, **kwargs)
    loss.backward(go if reduction == "none" else torch.tensor(go, dtype=loss.dtype))
    return loss.detach(), [a.grad for a in leaves]


def _assert_close(a, b, dtype):
    torch.testing.assert_close(a, b, **TOL[dtype], equal_nan=True)


def _grad_output(reduction, shape, dtype, seed=0):
    if reduction != "none":
        return 0.7
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 3 - 1.5).to(dtype)


# ------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", TORCH_LAYOUTS)
@pytest.mark.parametrize("option", CE_OPTIONS)
def test_cross_entropy_parity(rng, option, layout, reduction, dtype):
    x, t, kw = make_ce_case(rng, layout, option)
    xt, tt, extra = _ce_torch_args(x, t, kw, dtype)
    go = _grad_output(reduction, per_sample_shape(*LAYOUTS[layout]), dtype)

    def reference(a, b, **k):
        if a.dim() == 1:
            # torch 2.13 fails on unbatched (C,) input with label smoothing + mean: use (1, C)
            out = F.cross_entropy(a.unsqueeze(0), b.unsqueeze(0), **k)
            return out[0] if k["reduction"] == "none" else out
        return F.cross_entropy(a, b, **k)

    got = _loss_and_grads(fct.cross_entropy, [xt], [tt], dict(reduction=reduction, **extra),
                          reduction, go)
    want = _loss_and_grads(reference, [xt], [tt], dict(reduction=reduction, **extra),
                           reduction, go)
    assert got[0].dtype == dtype and got[0].shape == want[0].shape
    _assert_close(got[0], want[0], dtype)
    _assert_close(got[1][0], want[1][0], dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", list(NLL_OPTIONS))
def test_nll_loss_parity(rng, option, reduction):
    x, t, kw = make_ce_case(rng, "4d_axis1", option, options=NLL_OPTIONS)
    xt, tt, extra = _ce_torch_args(x, t, kw, torch.float64)
    xt = torch.log_softmax(xt, dim=1)
    go = _grad_output(reduction, per_sample_shape(*LAYOUTS["4d_axis1"]), torch.float64)
    got = _loss_and_grads(fct.nll_loss, [xt], [tt], dict(reduction=reduction, **extra), reduction, go)
    want = _loss_and_grads(F.nll_loss, [xt], [tt], dict(reduction=reduction, **extra), reduction, go)
    _assert_close(got[0], want[0], torch.float64)
    _assert_close(got[1][0], want[1][0], torch.float64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", ["plain", "weight", "pos_weight", "both"])
def test_bce_with_logits_parity(rng, opts, reduction, dtype):
    x = _t(rng.standard_normal((5, 3, 4)) * 3, dtype)
    y = _t(rng.random((5, 3, 4)), dtype)
    kw = {"reduction": reduction}
    if opts in ("weight", "both"):
        kw["weight"] = _t(rng.uniform(0.2, 2.0, (3, 1)), dtype)
    if opts in ("pos_weight", "both"):
        kw["pos_weight"] = _t(rng.uniform(0.5, 3.0, 4), dtype)
    go = _grad_output(reduction, x.shape, dtype)
    got = _loss_and_grads(fct.binary_cross_entropy_with_logits, [x], [y], kw, reduction, go)
    want = _loss_and_grads(F.binary_cross_entropy_with_logits, [x], [y], kw, reduction, go)
    _assert_close(got[0], want[0], dtype)
    _assert_close(got[1][0], want[1][0], dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_parity(rng, reduction, weighted):
    p = _t(rng.uniform(0.02, 0.98, (6, 5)))
    y = _t((rng.random((6, 5)) < 0.4).astype(np.float64))
    kw = {"reduction": reduction}
    if weighted:
        kw["weight"] = _t(rng.uniform(0.2, 2.0, 5))
    go = _grad_output(reduction, p.shape, torch.float64)
    got = _loss_and_grads(fct.binary_cross_entropy, [p], [y], kw, reduction, go)
    want = _loss_and_grads(F.binary_cross_entropy, [p], [y], kw, reduction, go)
    _assert_close(got[0], want[0], torch.float64)
    _assert_close(got[1][0], want[1][0], torch.float64)


# ------------------------------------------------------------------------------ gradcheck


def _gradcheck(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_cross_entropy(reduction):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 2, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.tensor([[0, 3], [-100, 1], [2, 2]])
    w = torch.rand(4, dtype=torch.float64, generator=g) + 0.5
    _gradcheck(lambda a: fct.cross_entropy(a, t, weight=w, reduction=reduction,
                                           label_smoothing=0.2), x)
    q = torch.softmax(torch.randn(3, 4, 2, dtype=torch.float64, generator=g), dim=1)
    _gradcheck(lambda a: fct.cross_entropy(a, q, weight=w, reduction=reduction,
                                           label_smoothing=0.1), x)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_nll_and_binary(reduction):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.tensor([0, 2, 1, -100, 2])
    _gradcheck(lambda a: fct.nll_loss(a, t, weight=torch.tensor([1.0, 2.0, 0.5],
                                                                dtype=torch.float64),
                                      reduction=reduction), x)
    y = torch.rand(5, 3, dtype=torch.float64, generator=g)
    pw = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    w = torch.rand(5, 1, dtype=torch.float64, generator=g)
    _gradcheck(lambda a: fct.binary_cross_entropy_with_logits(a, y, weight=w, pos_weight=pw,
                                                              reduction=reduction), x)
    p = (torch.rand(5, 3, dtype=torch.float64, generator=g) * 0.8 + 0.1).requires_grad_()
    _gradcheck(lambda a: fct.binary_cross_entropy(a, y, weight=w, reduction=reduction), p)


@pytest.mark.skipif(not HAS_ZLOSS, reason="fastce.cross_entropy has no z_loss/softcap yet")
def test_gradcheck_z_loss_softcap():
    g = torch.Generator().manual_seed(3)
    x = (3 * torch.randn(4, 5, dtype=torch.float64, generator=g)).requires_grad_()
    t = torch.tensor([0, 4, -100, 2])
    for reduction in REDUCTIONS:
        _gradcheck(lambda a: fct.cross_entropy(a, t, reduction=reduction, z_loss=0.1,
                                               softcap=4.0), x)


# ------------------------------------------------------------------------------ linear CE

needs_linear = pytest.mark.skipif(not HAS_LINEAR, reason="fastce.linear_cross_entropy not available yet")


@needs_linear
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", ["plain", "bias_weight_ignore_smooth"])
def test_linear_cross_entropy_parity(rng, reduction, opts):
    N, D, V = 37, 8, 11
    x = _t(rng.standard_normal((N, D)))
    W = _t(rng.standard_normal((V, D)) * 0.5)
    t = rng.integers(0, V, N)
    inputs, kw = [x, W], dict(reduction=reduction)
    if opts != "plain":
        t[::5] = -100
        inputs.append(_t(rng.standard_normal(V)))
        kw.update(weight=_t(rng.uniform(0.2, 2.0, V)), label_smoothing=0.15)
    tt = _t(t)

    def ours(x, W, b=None, **k):
        return fct.linear_cross_entropy(x, W, tt, linear_bias=b, chunk_size=10, **k)

    def theirs(x, W, b=None, **k):
        return F.linear_cross_entropy(x, W, tt, linear_bias=b, **k)

    go = _grad_output(reduction, (N,), torch.float64)
    got = _loss_and_grads(ours, inputs, [], kw, reduction, go)
    want = _loss_and_grads(theirs, inputs, [], kw, reduction, go)
    _assert_close(got[0], want[0], torch.float64)
    for a, b in zip(got[1], want[1]):
        _assert_close(a, b, torch.float64)


@needs_linear
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_linear_cross_entropy(reduction):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 3, dtype=torch.float64, generator=g, requires_grad=True)
    W = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, generator=g, requires_grad=True)
    t = torch.tensor([0, 4, -100, 2, 1, 1])
    _gradcheck(lambda x, W, b: fct.linear_cross_entropy(x, W, t, linear_bias=b,
                                                        reduction=reduction,
                                                        label_smoothing=0.1, chunk_size=4),
               x, W, b)


# ------------------------------------------------------------------------------ behaviour


def test_cuda_tensors_raise(monkeypatch):
    x = torch.randn(3, 4)
    t = torch.tensor([0, 1, 2])
    monkeypatch.setattr(fct, "_device_of", lambda tensor: torch.device("cuda", 0))
    for call in (lambda: fct.cross_entropy(x, t), lambda: fct.nll_loss(x, t),
                 lambda: fct.binary_cross_entropy_with_logits(x, x),
                 lambda: fct.binary_cross_entropy(x.sigmoid(), x.sigmoid()),
                 lambda: fct.linear_cross_entropy(x, torch.randn(5, 4), t)):
        with pytest.raises(ValueError, match="CUDA"):
            call()


def test_other_devices_raise():
    x = torch.empty(3, 4, device="meta")
    with pytest.raises(ValueError, match="CPU tensors only"):
        fct.cross_entropy(x, torch.zeros(3, dtype=torch.long, device="meta"))


def test_target_requiring_grad_raises():
    x = torch.randn(3, 4, requires_grad=True)
    q = torch.softmax(torch.randn(3, 4), 1).requires_grad_()
    with pytest.raises(NotImplementedError, match="target"):
        fct.cross_entropy(x, q)
    with torch.no_grad():           # fine when no graph is recorded
        fct.cross_entropy(x, q)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_dtypes(dtype):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 5, generator=g).to(dtype).requires_grad_()
    t = torch.randint(0, 5, (8,), generator=g)
    loss = fct.cross_entropy(x, t, reduction="sum")
    loss.backward()
    assert loss.dtype == dtype and loss.shape == () and x.grad.dtype == dtype
    x64 = x.detach().double().requires_grad_()
    F.cross_entropy(x64, t, reduction="sum").backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-2, atol=1e-2)


def test_no_grad_and_plain_tensors_give_0d_results(monkeypatch):
    x = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 0])
    calls = []
    real = fastce.functional.cross_entropy

    def spy(*args, **kw):
        calls.append(kw.get("return_grad", False))
        return real(*args, **kw)

    monkeypatch.setattr(fastce.functional, "cross_entropy", spy)
    xr = x.clone().requires_grad_()
    with torch.no_grad():
        v = fct.cross_entropy(xr, t)
    assert v.shape == () and not v.requires_grad
    torch.testing.assert_close(v, F.cross_entropy(x, t))
    v = fct.cross_entropy(x, t)     # input not requiring grad: no gradient computed or saved
    assert v.shape == () and v.grad_fn is None
    assert calls == [False, False]  # evaluation never pays for the gradient
    fct.cross_entropy(xr, t)
    assert calls[-1] is True


def test_non_contiguous_input_and_input_untouched():
    base = torch.randn(5, 4, dtype=torch.float64)
    x = base.t().contiguous().t().requires_grad_()      # non-contiguous (column-major) view
    assert not x.is_contiguous()
    before = x.detach().clone()
    t = torch.tensor([3, 0, 1, 2, 2])
    fct.cross_entropy(x, t).backward()
    x2 = before.clone().requires_grad_()
    F.cross_entropy(x2, t).backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(x.detach(), before)


def test_legacy_reduction_arguments():
    x = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 0])
    for sa, r in [(None, False), (False, None), (True, True)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # torch's deprecation warning
            want = F.cross_entropy(x, t, size_average=sa, reduce=r)
        torch.testing.assert_close(fct.cross_entropy(x, t, size_average=sa, reduce=r), want)
    with pytest.raises(ValueError, match="reduction"):
        fct.cross_entropy(x, t, reduction="avg")


def test_errors_propagate():
    x = torch.randn(3, 4, requires_grad=True)
    with pytest.raises(IndexError, match="9"):
        fct.cross_entropy(x, torch.tensor([0, 9, 1]))
    with pytest.raises(TypeError):
        fct.cross_entropy(torch.zeros(3, 4, dtype=torch.long), torch.tensor([0, 1, 1]))


def test_training_step_in_a_module():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4).double()
    x = torch.randn(32, 6, dtype=torch.float64)
    t = torch.randint(0, 4, (32,))
    fct.cross_entropy(model(x), t, label_smoothing=0.1).backward()
    ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    F.cross_entropy(model(x), t, label_smoothing=0.1).backward()
    for a, p in zip(ours, model.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_double_backward_is_refused():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(fct.cross_entropy(x, torch.tensor([0, 1, 2])), x, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


def test_lazily_negated_views_are_materialised():
    # torch._neg_view gives a tensor whose negation is a pending bit, not applied to its memory;
    # the adapter must see the negated values (torch.neg(x) as the reference).
    x = torch.randn(6, 5, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3, 4, 0])
    v = torch._neg_view(x)
    assert v.is_neg()
    got = fct.cross_entropy(v, t)
    want = F.cross_entropy(torch.neg(x), t)
    assert torch.allclose(got, want, rtol=1e-12, atol=0)
    y = (torch.rand(6, 5, dtype=torch.float64) > 0.5).double()
    got = fct.binary_cross_entropy_with_logits(v, y)
    want = F.binary_cross_entropy_with_logits(torch.neg(x), y)
    assert torch.allclose(got, want, rtol=1e-12, atol=0)
