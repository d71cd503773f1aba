"""One name for the first argument everywhere (issue 11): torch users write `input=`, so every
public function, loss object and adapter accepts it, and gives what the NumPy float64
reference (or torch itself) gives."""
import importlib.util
import inspect

import numpy as np
import pytest

import fastce
from reference import (ref_accuracy, ref_binary_cross_entropy,
                       ref_binary_cross_entropy_with_logits, ref_categorical_cross_entropy,
                       ref_cross_entropy, ref_log_softmax, ref_logsumexp, ref_nll_loss,
                       ref_softmax)

# Functions whose first argument is not the input itself, but a result: it keeps its name.
FIRST_IS_OUTPUT = {"log_softmax_vjp", "softmax_vjp"}
NO_ARGUMENTS = {"get_num_threads"}


def _public_functions():
    for name in fastce.__all__:
        obj = getattr(fastce, name)
        if inspect.isfunction(obj) and name not in NO_ARGUMENTS:
            yield name, obj


@pytest.mark.parametrize("name,fn", list(_public_functions()), ids=lambda v: v if isinstance(v, str) else "")
def test_first_parameter_is_named_input(name, fn):
    first = next(iter(inspect.signature(fn).parameters))
    assert first == ("output" if name in FIRST_IS_OUTPUT else "input")


@pytest.fixture
def case(rng):
    x = rng.standard_normal((6, 4))
    t = rng.integers(0, 4, size=6)
    y = (rng.random((6, 4)) < 0.5).astype(np.float64)
    p = rng.uniform(0.05, 0.95, (6, 4))
    return x, t, y, p


def test_functions_accept_input_keyword(case):
    x, t, y, p = case
    lp = ref_log_softmax(x)
    checks = [
        (fastce.cross_entropy(input=x, target=t), ref_cross_entropy(x, t)),
        (fastce.nll_loss(input=lp, target=t), ref_nll_loss(lp, t)),
        (fastce.binary_cross_entropy_with_logits(input=x, target=y),
         ref_binary_cross_entropy_with_logits(x, y)),
        (fastce.binary_cross_entropy(input=p, target=y), ref_binary_cross_entropy(p, y)),
        (fastce.categorical_cross_entropy(input=fastce.softmax(x), target=t),
         ref_categorical_cross_entropy(ref_softmax(x), t)),
        (fastce.accuracy(input=x, target=t), ref_accuracy(x, t)),
        (fastce.log_softmax(input=x), lp),
        (fastce.softmax(input=x), ref_softmax(x)),
        (fastce.logsumexp(input=x), ref_logsumexp(x)),
    ]
    for got, want in checks:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    # the *_grad forms and linear_cross_entropy too (gradients compared with the fused form)
    _, g = fastce.cross_entropy(x, t, return_grad=True)
    np.testing.assert_array_equal(fastce.cross_entropy_grad(input=x, target=t), g)
    _, g = fastce.nll_loss(lp, t, return_grad=True)
    np.testing.assert_array_equal(fastce.nll_loss_grad(input=lp, target=t), g)
    _, g = fastce.binary_cross_entropy_with_logits(x, y, return_grad=True)
    np.testing.assert_array_equal(fastce.binary_cross_entropy_with_logits_grad(input=x, target=y), g)
    _, g = fastce.binary_cross_entropy(p, y, return_grad=True)
    np.testing.assert_array_equal(fastce.binary_cross_entropy_grad(input=p, target=y), g)
    W = np.eye(4)
    np.testing.assert_allclose(fastce.linear_cross_entropy(input=x, linear_weight=W, target=t),
                               ref_cross_entropy(x, t), rtol=1e-12)


@pytest.mark.parametrize("cls,first", [("CrossEntropyLoss", "x"), ("NLLLoss", "lp"),
                                       ("BCEWithLogitsLoss", "x"), ("BCELoss", "p")])
def test_loss_objects_accept_input_keyword(case, cls, first):
    x, t, y, p = case
    inp = {"x": x, "lp": ref_log_softmax(x), "p": p}[first]
    tgt = t if cls in ("CrossEntropyLoss", "NLLLoss") else y
    crit = getattr(fastce, cls)()
    assert next(iter(inspect.signature(crit.forward).parameters)) == "input"
    np.testing.assert_array_equal(crit(input=inp, target=tgt), crit(inp, tgt))
    np.testing.assert_array_equal(crit.forward(input=inp, target=tgt), crit(inp, tgt))


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch not installed")
def test_torch_adapter_accepts_input_keyword_like_torch(case):
    import torch
    import torch.nn.functional as F

    import fastce.torch as fct

    x, t, y, p = case
    xt, tt, yt, pt = (torch.from_numpy(a) for a in (x, t, y, p))
    for name, args in [("cross_entropy", (xt, tt)), ("nll_loss", (F.log_softmax(xt, 1), tt)),
                       ("binary_cross_entropy_with_logits", (xt, yt)),
                       ("binary_cross_entropy", (pt, yt))]:
        ours = getattr(fct, name)(input=args[0], target=args[1])
        theirs = getattr(F, name)(input=args[0], target=args[1])
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
        assert next(iter(inspect.signature(getattr(fct, name)).parameters)) == "input"
    W = torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(fct.linear_cross_entropy(input=xt, linear_weight=W, target=tt),
                               F.cross_entropy(xt, tt), rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(importlib.util.find_spec("dask") is None, reason="dask not installed")
def test_dask_adapter_accepts_input_keyword(case):
    import dask.array as da

    import fastce.dask as fcd

    x, t, y, p = case
    dx, dt, dy = da.from_array(x, chunks=3), da.from_array(t, chunks=3), da.from_array(y, chunks=3)
    np.testing.assert_allclose(fcd.cross_entropy(input=dx, target=dt).compute(),
                               ref_cross_entropy(x, t), rtol=1e-12)
    np.testing.assert_allclose(fcd.binary_cross_entropy_with_logits(input=dx, target=dy).compute(),
                               ref_binary_cross_entropy_with_logits(x, y), rtol=1e-12)
    for name in ("cross_entropy", "nll_loss", "binary_cross_entropy_with_logits",
                 "binary_cross_entropy", "linear_cross_entropy", "log_softmax", "softmax",
                 "logsumexp"):
        if hasattr(fcd, name):
            assert next(iter(inspect.signature(getattr(fcd, name)).parameters)) == "input", name
