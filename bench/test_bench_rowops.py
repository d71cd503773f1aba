"""log_softmax, softmax, logsumexp and their VJPs on the cross-entropy shapes.

Baseline: tests/reference.py (float64 NumPy, class axis moved last).  fastce writes into a
preallocated out= buffer, like the memcpy floor.
"""
from functools import partial

import fastce as F
from benchkit import jax_call, run
from reference import (ref_log_softmax, ref_log_softmax_vjp, ref_logsumexp, ref_softmax,
                       ref_softmax_vjp)


def test_log_softmax(benchmark, ce, impl):
    x, ax = ce.x, ce.axis
    run(benchmark, ce, impl, "log_softmax",
        fastce=partial(F.log_softmax, x, axis=ax, out=ce.out),
        numpy=partial(ref_log_softmax, x, axis=ax),
        torch=lambda th: partial(th.log_softmax, ce.torch("x"), dim=ax),
        jax=lambda jx: jax_call(jx.nn.log_softmax, ce.jax("x"), axis=ax))


def test_softmax(benchmark, ce, impl):
    x, ax = ce.x, ce.axis
    run(benchmark, ce, impl, "softmax",
        fastce=partial(F.softmax, x, axis=ax, out=ce.out),
        numpy=partial(ref_softmax, x, axis=ax),
        torch=lambda th: partial(th.softmax, ce.torch("x"), dim=ax),
        jax=lambda jx: jax_call(jx.nn.softmax, ce.jax("x"), axis=ax))


def test_logsumexp(benchmark, ce, impl):
    x, ax = ce.x, ce.axis
    run(benchmark, ce, impl, "logsumexp",
        fastce=partial(F.logsumexp, x, axis=ax),
        numpy=partial(ref_logsumexp, x, axis=ax),
        torch=lambda th: partial(th.logsumexp, ce.torch("x"), dim=ax),
        jax=lambda jx: jax_call(jx.nn.logsumexp, ce.jax("x"), axis=ax))


def _jax_log_softmax_vjp(y, g, axis):
    import jax.numpy as jnp
    return g - jnp.exp(y) * g.sum(axis=axis, keepdims=True)


def _jax_softmax_vjp(p, g, axis):
    return p * (g - (p * g).sum(axis=axis, keepdims=True))


def test_log_softmax_vjp(benchmark, ce, impl):
    y, g, ax = ce.logp, ce.g, ce.axis
    run(benchmark, ce, impl, "log_softmax_vjp",
        fastce=partial(F.log_softmax_vjp, y, g, axis=ax, out=ce.out),
        numpy=partial(ref_log_softmax_vjp, y, g, axis=ax),
        torch=lambda th: partial(th._log_softmax_backward_data, ce.torch("g"), ce.torch("logp"),
                                 ax, ce.torch("logp").dtype),
        jax=lambda jx: jax_call(_jax_log_softmax_vjp, ce.jax("logp"), ce.jax("g"), axis=ax),
        src=y)


def test_softmax_vjp(benchmark, ce, impl):
    p, g, ax = ce.p, ce.g, ce.axis
    run(benchmark, ce, impl, "softmax_vjp",
        fastce=partial(F.softmax_vjp, p, g, axis=ax, out=ce.out),
        numpy=partial(ref_softmax_vjp, p, g, axis=ax),
        torch=lambda th: partial(th._softmax_backward_data, ce.torch("g"), ce.torch("p"),
                                 ax, ce.torch("p").dtype),
        jax=lambda jx: jax_call(_jax_softmax_vjp, ce.jax("p"), ce.jax("g"), axis=ax),
        src=p)
