"""categorical_cross_entropy (from probabilities) and accuracy on the cross-entropy shapes.

Baseline: tests/reference.py (float64 NumPy).
"""
from functools import partial

import numpy as np

import fastce as F
from benchkit import jax_call, run
from reference import ref_accuracy, ref_categorical_cross_entropy


def _jax_cce(p, t, axis, eps):
    import jax.numpy as jnp
    logp = jnp.log(jnp.clip(p, eps, 1 - eps))
    return -jnp.mean(jnp.take_along_axis(logp, jnp.expand_dims(t, axis), axis=axis))


def _jax_accuracy(x, t, axis):
    import jax.numpy as jnp
    return jnp.mean(jnp.argmax(x, axis=axis) == t)


def _torch_cce(th, p, t, axis, eps):
    logp = th.log(th.clamp(p, eps, 1 - eps))
    return -logp.gather(axis, t.unsqueeze(axis)).mean()


def test_categorical_cross_entropy(benchmark, ce, impl):
    p, t, ax = ce.p, ce.t, ce.axis
    eps = float(np.finfo(ce.dtype).eps)
    run(benchmark, ce, impl, "categorical_cross_entropy",
        fastce=partial(F.categorical_cross_entropy, p, t, axis=ax),
        numpy=partial(ref_categorical_cross_entropy, p, t, axis=ax),
        torch=lambda th: partial(_torch_cce, th, ce.torch("p"), ce.torch("t"), ax, eps),
        jax=lambda jx: jax_call(_jax_cce, ce.jax("p"), ce.jax("t"), axis=ax, eps=eps),
        src=p)


def test_accuracy(benchmark, ce, impl):
    x, t, ax = ce.x, ce.t, ce.axis
    run(benchmark, ce, impl, "accuracy",
        fastce=partial(F.accuracy, x, t, axis=ax),
        numpy=partial(ref_accuracy, x, t, axis=ax),
        torch=lambda th: lambda: (ce.torch("x").argmax(ax) == ce.torch("t")).double().mean().item(),
        jax=lambda jx: jax_call(_jax_accuracy, ce.jax("x"), ce.jax("t"), axis=ax))
