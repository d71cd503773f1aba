"""binary_cross_entropy_with_logits and binary_cross_entropy: forward, fused, gradient only.

Baselines: forward -> tests/reference.py (float64); fused / gradient -> NumPy fused
implementations in the input dtype (numpy_bce is the one of `python -m fastce bench`).
reduction="mean"; fastce writes the gradient into a preallocated out=.
"""
from functools import partial

import numpy as np

import fastce as F
from fastce._bench import FUSED, FWD
from benchkit import jax_call, numpy_bce, numpy_bce_probs_fused, run, torch_value_and_grad
from reference import ref_binary_cross_entropy, ref_binary_cross_entropy_with_logits


def _jax_bce_logits(x, y):
    import jax.numpy as jnp
    return jnp.mean(jnp.maximum(x, 0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x))))


def _jax_bce_probs(p, y):
    import jax.numpy as jnp
    logp = jnp.maximum(jnp.log(p), -100)
    log1mp = jnp.maximum(jnp.log1p(-p), -100)
    return -jnp.mean(y * logp + (1 - y) * log1mp)


def _jax_value_and_grad(f, grad_only=False):
    def vg(x, y):
        import jax
        v, g = jax.value_and_grad(f)(x, y)
        return g if grad_only else (v, g)
    return vg


# ------------------------------------------------------------------ from logits

def test_bce_with_logits(benchmark, bce, impl):
    x, y = bce.x, bce.t
    run(benchmark, bce, impl, "binary_cross_entropy_with_logits",
        fastce=partial(F.binary_cross_entropy_with_logits, x, y),
        numpy=partial(ref_binary_cross_entropy_with_logits, x, y),
        torch=lambda th: partial(th.nn.functional.binary_cross_entropy_with_logits,
                                 bce.torch("x"), bce.torch("t")),
        jax=lambda jx: jax_call(_jax_bce_logits, bce.jax("x"), bce.jax("t")),
        cli=("bce", FWD))


def test_bce_with_logits_fused(benchmark, bce, impl):
    x, y = bce.x, bce.t
    run(benchmark, bce, impl, "binary_cross_entropy_with_logits+grad",
        fastce=partial(F.binary_cross_entropy_with_logits, x, y, return_grad=True, out=bce.out),
        numpy=partial(numpy_bce, x, y),
        expected=lambda: numpy_bce(x.astype(np.float64), y.astype(np.float64)),
        torch=lambda th: torch_value_and_grad(th.nn.functional.binary_cross_entropy_with_logits,
                                              bce.torch("x"), bce.torch("t")),
        jax=lambda jx: jax_call(_jax_value_and_grad(_jax_bce_logits), bce.jax("x"),
                                bce.jax("t")),
        cli=("bce", FUSED))


def test_bce_with_logits_grad(benchmark, bce, impl):
    x, y = bce.x, bce.t
    run(benchmark, bce, impl, "binary_cross_entropy_with_logits_grad",
        fastce=partial(F.binary_cross_entropy_with_logits_grad, x, y, out=bce.out),
        numpy=lambda: numpy_bce(x, y)[1],
        expected=lambda: numpy_bce(x.astype(np.float64), y.astype(np.float64))[1],
        torch=lambda th: torch_value_and_grad(th.nn.functional.binary_cross_entropy_with_logits,
                                              bce.torch("x"), bce.torch("t"), grad_only=True),
        jax=lambda jx: jax_call(_jax_value_and_grad(_jax_bce_logits, grad_only=True),
                                bce.jax("x"), bce.jax("t")))


# ------------------------------------------------------------------ from probabilities

def test_bce(benchmark, bce, impl):
    p, y = bce.p, bce.t
    run(benchmark, bce, impl, "binary_cross_entropy",
        fastce=partial(F.binary_cross_entropy, p, y),
        numpy=partial(ref_binary_cross_entropy, p, y),
        torch=lambda th: partial(th.nn.functional.binary_cross_entropy,
                                 bce.torch("p"), bce.torch("t")),
        jax=lambda jx: jax_call(_jax_bce_probs, bce.jax("p"), bce.jax("t")),
        src=p)


def test_bce_fused(benchmark, bce, impl):
    p, y = bce.p, bce.t
    run(benchmark, bce, impl, "binary_cross_entropy+grad",
        fastce=partial(F.binary_cross_entropy, p, y, return_grad=True, out=bce.out),
        numpy=partial(numpy_bce_probs_fused, p, y),
        expected=lambda: numpy_bce_probs_fused(p.astype(np.float64), y.astype(np.float64)),
        torch=lambda th: torch_value_and_grad(th.nn.functional.binary_cross_entropy,
                                              bce.torch("p"), bce.torch("t")),
        jax=lambda jx: jax_call(_jax_value_and_grad(_jax_bce_probs), bce.jax("p"),
                                bce.jax("t")),
        src=p)


def test_bce_grad(benchmark, bce, impl):
    p, y = bce.p, bce.t
    run(benchmark, bce, impl, "binary_cross_entropy_grad",
        fastce=partial(F.binary_cross_entropy_grad, p, y, out=bce.out),
        numpy=lambda: numpy_bce_probs_fused(p, y)[1],
        expected=lambda: numpy_bce_probs_fused(p.astype(np.float64), y.astype(np.float64))[1],
        torch=lambda th: torch_value_and_grad(th.nn.functional.binary_cross_entropy,
                                              bce.torch("p"), bce.torch("t"), grad_only=True),
        jax=lambda jx: jax_call(_jax_value_and_grad(_jax_bce_probs, grad_only=True),
                                bce.jax("p"), bce.jax("t")),
        src=p)
