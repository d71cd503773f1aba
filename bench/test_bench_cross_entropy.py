"""cross_entropy and nll_loss: forward, fused loss+gradient (return_grad=True), gradient only.

Baselines: forward -> tests/reference.py (float64); fused / gradient -> the NumPy fused
implementation of `python -m fastce bench` (input dtype), checked against the same in float64.
Class-index targets, reduction="mean"; fastce writes the gradient into a preallocated out=.
"""
from functools import partial

import numpy as np

import fastce as F
from fastce._bench import FUSED, FWD
from benchkit import jax_call, numpy_ce_fused, numpy_nll_fused, run, torch_value_and_grad
from reference import ref_cross_entropy, ref_nll_loss


def _jax_ce(x, t, axis):
    import jax
    import jax.numpy as jnp
    ls = jax.nn.log_softmax(x, axis=axis)
    return -jnp.mean(jnp.take_along_axis(ls, jnp.expand_dims(t, axis), axis=axis))


def _jax_nll(lp, t, axis):
    import jax.numpy as jnp
    return -jnp.mean(jnp.take_along_axis(lp, jnp.expand_dims(t, axis), axis=axis))


def _jax_value_and_grad(f, grad_only=False):
    def vg(x, t, axis):
        import jax
        v, g = jax.value_and_grad(partial(f, axis=axis))(x, t)
        return g if grad_only else (v, g)
    return vg


def _cli_kind(axis):
    return "ce" if axis == -1 else "ce_axis1"


# torch's class axis is dim 1: the (N, C) cases use axis=-1 == 1, the (N, C, H, W) case axis=1.

def test_cross_entropy(benchmark, ce, impl):
    x, t, ax = ce.x, ce.t, ce.axis
    run(benchmark, ce, impl, "cross_entropy",
        fastce=partial(F.cross_entropy, x, t, axis=ax),
        numpy=partial(ref_cross_entropy, x, t, axis=ax),
        torch=lambda th: partial(th.nn.functional.cross_entropy, ce.torch("x"), ce.torch("t")),
        jax=lambda jx: jax_call(_jax_ce, ce.jax("x"), ce.jax("t"), axis=ax),
        cli=(_cli_kind(ax), FWD))


def test_cross_entropy_fused(benchmark, ce, impl):
    x, t, ax = ce.x, ce.t, ce.axis
    run(benchmark, ce, impl, "cross_entropy+grad",
        fastce=partial(F.cross_entropy, x, t, axis=ax, return_grad=True, out=ce.out),
        numpy=partial(numpy_ce_fused, x, t, ax),
        expected=lambda: numpy_ce_fused(x.astype(np.float64), t, ax),
        torch=lambda th: torch_value_and_grad(th.nn.functional.cross_entropy, ce.torch("x"),
                                              ce.torch("t")),
        jax=lambda jx: jax_call(_jax_value_and_grad(_jax_ce), ce.jax("x"), ce.jax("t"), axis=ax),
        cli=(_cli_kind(ax), FUSED))


def test_cross_entropy_grad(benchmark, ce, impl):
    x, t, ax = ce.x, ce.t, ce.axis
    run(benchmark, ce, impl, "cross_entropy_grad",
        fastce=partial(F.cross_entropy_grad, x, t, axis=ax, out=ce.out),
        numpy=lambda: numpy_ce_fused(x, t, ax)[1],
        expected=lambda: numpy_ce_fused(x.astype(np.float64), t, ax)[1],
        torch=lambda th: torch_value_and_grad(th.nn.functional.cross_entropy, ce.torch("x"),
                                              ce.torch("t"), grad_only=True),
        jax=lambda jx: jax_call(_jax_value_and_grad(_jax_ce, grad_only=True), ce.jax("x"),
                                ce.jax("t"), axis=ax))


def test_nll_loss(benchmark, ce, impl):
    lp, t, ax = ce.logp, ce.t, ce.axis
    run(benchmark, ce, impl, "nll_loss",
        fastce=partial(F.nll_loss, lp, t, axis=ax),
        numpy=partial(ref_nll_loss, lp, t, axis=ax),
        torch=lambda th: partial(th.nn.functional.nll_loss, ce.torch("logp"), ce.torch("t")),
        jax=lambda jx: jax_call(_jax_nll, ce.jax("logp"), ce.jax("t"), axis=ax),
        src=lp)


def test_nll_loss_fused(benchmark, ce, impl):
    lp, t, ax = ce.logp, ce.t, ce.axis
    run(benchmark, ce, impl, "nll_loss+grad",
        fastce=partial(F.nll_loss, lp, t, axis=ax, return_grad=True, out=ce.out),
        numpy=partial(numpy_nll_fused, lp, t, ax),
        expected=lambda: numpy_nll_fused(lp.astype(np.float64), t, ax),
        torch=lambda th: torch_value_and_grad(th.nn.functional.nll_loss, ce.torch("logp"),
                                              ce.torch("t")),
        jax=lambda jx: jax_call(_jax_value_and_grad(_jax_nll), ce.jax("logp"), ce.jax("t"),
                                axis=ax),
        src=lp)


def test_nll_loss_grad(benchmark, ce, impl):
    lp, t, ax = ce.logp, ce.t, ce.axis
    run(benchmark, ce, impl, "nll_loss_grad",
        fastce=partial(F.nll_loss_grad, lp, t, axis=ax, out=ce.out),
        numpy=lambda: numpy_nll_fused(lp, t, ax)[1],
        expected=lambda: numpy_nll_fused(lp.astype(np.float64), t, ax)[1],
        torch=lambda th: torch_value_and_grad(th.nn.functional.nll_loss, ce.torch("logp"),
                                              ce.torch("t"), grad_only=True),
        jax=lambda jx: jax_call(_jax_value_and_grad(_jax_nll, grad_only=True), ce.jax("logp"),
                                ce.jax("t"), axis=ax),
        src=lp)
