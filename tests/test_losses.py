"""Loss objects (fastce.losses): forward = the fused function, backward = its scaled gradient."""

import gc
import inspect
import subprocess
import sys
import weakref

import numpy as np
import pytest

import fastce
from conftest import (
    NLL_OPTIONS,
    REDUCTIONS,
    assert_close,
    make_ce_case,
    make_grad_output,
    per_sample_shape,
    LAYOUTS,
)
from fastce.losses import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, NLLLoss
from reference import (
    ref_binary_cross_entropy,
    ref_binary_cross_entropy_with_logits,
    ref_cross_entropy,
    ref_nll_loss,
)

HAS_ZLOSS = "z_loss" in inspect.signature(fastce.cross_entropy).parameters
CE_CASES = ["plain", "weight_ignore_smooth", "prob_weight_smooth"]
CE_LAYOUTS = ["2d", "4d_axis1", "1d"]


# ------------------------------------------------------------------------------ class losses


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", CE_LAYOUTS)
@pytest.mark.parametrize("option", CE_CASES)
def test_cross_entropy_loss_matches_function(rng, option, layout, reduction):
    x, t, kw = make_ce_case(rng, layout, option)
    crit = CrossEntropyLoss(reduction=reduction, **kw)
    loss = crit(x, t)
    assert_close(loss, ref_cross_entropy(x, t, reduction=reduction, **kw))
    assert_close(loss, fastce.cross_entropy(x, t, reduction=reduction, **kw))
    go = make_grad_output(rng, reduction, per_sample_shape(*LAYOUTS[layout]))
    grad = crit.backward(go)
    want = fastce.cross_entropy_grad(x, t, reduction=reduction, grad_output=go, **kw)
    assert grad.shape == x.shape and grad.dtype == x.dtype
    assert_close(grad, want, kind="grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("option", list(NLL_OPTIONS))
def test_nll_loss_matches_function(rng, option, reduction):
    x, t, kw = make_ce_case(rng, "4d_axis1", option, options=NLL_OPTIONS)
    logp = fastce.log_softmax(x, axis=kw["axis"])
    crit = NLLLoss(reduction=reduction, **kw)
    assert_close(crit.forward(logp, t), ref_nll_loss(logp, t, reduction=reduction, **kw))
    go = make_grad_output(rng, reduction, per_sample_shape(*LAYOUTS["4d_axis1"]))
    assert_close(crit.backward(go),
                 fastce.nll_loss_grad(logp, t, reduction=reduction, grad_output=go, **kw),
                 kind="grad")


def test_default_backward_is_the_gradient_of_the_loss(rng):
    x = rng.standard_normal((7, 5))
    t = rng.integers(0, 5, 7)
    crit = CrossEntropyLoss()
    crit(x, t)
    assert_close(crit.backward(), fastce.cross_entropy_grad(x, t), kind="grad")
    crit = CrossEntropyLoss(reduction="none")
    crit(x, t)
    # grad_output=1 for "none": the gradient of the sum of the per-sample losses
    assert_close(crit.backward(), fastce.cross_entropy_grad(x, t, reduction="sum"), kind="grad")


@pytest.mark.skipif(not HAS_ZLOSS, reason="fastce.cross_entropy has no z_loss/softcap yet")
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_loss_z_loss_softcap(rng, reduction):
    x = rng.standard_normal((9, 6)) * 3
    t = rng.integers(0, 6, 9)
    t[2] = -100
    kw = dict(z_loss=1e-2, softcap=5.0, label_smoothing=0.1)
    crit = CrossEntropyLoss(reduction=reduction, **kw)
    assert "z_loss" in repr(crit) and "softcap" in repr(crit)
    assert_close(crit(x, t), fastce.cross_entropy(x, t, reduction=reduction, **kw))
    go = make_grad_output(rng, reduction, (9,))
    assert_close(crit.backward(go),
                 fastce.cross_entropy_grad(x, t, reduction=reduction, grad_output=go, **kw),
                 kind="grad")


# ------------------------------------------------------------------------------ binary losses


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weight_posweight"])
def test_bce_with_logits_loss_matches_function(rng, reduction, weighted):
    x = rng.standard_normal((6, 4)) * 3
    y = rng.random((6, 4))
    kw = dict(weight=rng.uniform(0.2, 2, (1, 4)), pos_weight=rng.uniform(0.5, 3, 4)) if weighted else {}
    crit = BCEWithLogitsLoss(reduction=reduction, **kw)
    assert_close(crit(x, y), ref_binary_cross_entropy_with_logits(x, y, reduction=reduction, **kw))
    go = make_grad_output(rng, reduction, x.shape)
    assert_close(crit.backward(go),
                 fastce.binary_cross_entropy_with_logits_grad(x, y, reduction=reduction,
                                                              grad_output=go, **kw),
                 kind="grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_loss_matches_function(rng, reduction):
    p = rng.uniform(0.05, 0.95, (3, 5))
    y = (rng.random((3, 5)) < 0.5).astype(np.float64)
    w = rng.uniform(0.5, 2.0, (3, 1))
    crit = BCELoss(w, reduction=reduction)
    assert_close(crit(p, y), ref_binary_cross_entropy(p, y, weight=w, reduction=reduction))
    go = make_grad_output(rng, reduction, p.shape)
    assert_close(crit.backward(go),
                 fastce.binary_cross_entropy_grad(p, y, weight=w, reduction=reduction,
                                                  grad_output=go),
                 kind="grad")


# ------------------------------------------------------------------------------ protocol


@pytest.mark.parametrize("cls", [CrossEntropyLoss, NLLLoss, BCEWithLogitsLoss, BCELoss])
def test_backward_before_forward_raises(cls):
    with pytest.raises(RuntimeError, match="before forward"):
        cls().backward()


def test_backward_consumes_unless_retained(rng):
    x = rng.standard_normal((4, 3))
    t = rng.integers(0, 3, 4)
    crit = CrossEntropyLoss(reduction="sum")
    crit(x, t)
    assert crit.has_grad
    g1 = crit.backward(2.0, retain=True)
    g2 = crit.backward(2.0, retain=True)
    assert g1 is not g2
    np.testing.assert_array_equal(g1, g2)
    g3 = crit.backward(2.0)
    np.testing.assert_array_equal(g1, g3)
    assert not crit.has_grad
    with pytest.raises(RuntimeError):
        crit.backward()
    crit(x, t)                       # a new forward makes backward available again
    assert_close(crit.backward(), fastce.cross_entropy_grad(x, t, reduction="sum"), kind="grad")


def test_forward_does_not_keep_the_input_alive(rng):
    x = rng.standard_normal((50, 10))
    t = rng.integers(0, 10, 50)
    ref_x, ref_t = weakref.ref(x), weakref.ref(t)
    crit = CrossEntropyLoss()
    crit(x, t)
    del x, t
    gc.collect()
    assert ref_x() is None and ref_t() is None
    assert crit.backward().shape == (50, 10)


def test_out_receives_the_gradient_in_place(rng):
    x = rng.standard_normal((5, 4))
    t = rng.integers(0, 4, 5)
    want = fastce.cross_entropy_grad(x, t, grad_output=3.0)
    crit = CrossEntropyLoss()
    crit(x, t, out=x)                # in-place: the logits buffer becomes the gradient
    g = crit.backward(3.0)
    assert g is x
    assert_close(g, want, kind="grad")


def test_grad_output_validation(rng):
    x = rng.standard_normal((5, 4))
    t = rng.integers(0, 4, 5)
    crit = CrossEntropyLoss()
    crit(x, t)
    with pytest.raises(ValueError, match="scalar"):
        crit.backward(np.ones(5), retain=True)
    with pytest.raises(TypeError):
        crit.backward("x", retain=True)
    crit = CrossEntropyLoss(reduction="none")
    crit(x, t)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        crit.backward(np.ones(4), retain=True)
    # a scalar broadcasts to every sample
    assert_close(crit.backward(0.5), fastce.cross_entropy_grad(x, t, reduction="sum") * 0.5,
                 kind="grad")


def test_float16_gradient(rng):
    x = rng.standard_normal((6, 3)).astype(np.float16)
    t = rng.integers(0, 3, 6)
    crit = CrossEntropyLoss(reduction="none")
    loss = crit(x, t)
    assert loss.dtype == np.float16        # per-sample losses in the input's float dtype
    go = rng.uniform(-2, 2, 6)
    g = crit.backward(go)
    assert g.dtype == np.float16
    assert_close(g, fastce.cross_entropy_grad(x, t, reduction="none", grad_output=go),
                 dtype=np.float16, kind="grad")


def test_constructor_validation_and_repr():
    with pytest.raises(ValueError, match="reduction"):
        CrossEntropyLoss(reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        BCELoss(reduction="batchmean")
    r = repr(CrossEntropyLoss(weight=[1.0, 2.0], label_smoothing=0.1, ignore_index=3))
    assert r.startswith("CrossEntropyLoss(") and "label_smoothing=0.1" in r and "ignore_index=3" in r
    assert repr(BCEWithLogitsLoss(pos_weight=[2.0])) == "BCEWithLogitsLoss(reduction='mean', pos_weight=[2.0])"


def test_errors_from_the_function_propagate(rng):
    crit = CrossEntropyLoss()
    with pytest.raises(IndexError, match="7"):
        crit(rng.standard_normal((3, 4)), np.array([0, 7, 1]))
    assert not crit.has_grad


def test_import_fastce_imports_neither_torch_nor_dask():
    code = ("import sys, fastce, fastce.losses, fastce.functional; "
            "bad = [m for m in ('torch', 'dask', 'dask.array') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr + res.stdout
