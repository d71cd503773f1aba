"""Independent float64 NumPy reference for the fastce public API.

Plain, deliberately unoptimised NumPy: the class axis is moved last with
``np.moveaxis``, everything is computed in float64, and every formula is written
the way it appears in the specification (issue 2 / decisions.md).  The module is
shared by the test suite and by ``bench/``; it must never import fastce.

Function names are ``ref_<fastce name>`` and take the same keyword names as
fastce (``weight``, ``ignore_index``, ``reduction``, ``label_smoothing``,
``axis``, ``pos_weight``, ``eps``).  Losses return a float64 NumPy scalar for
``reduction="mean"``/``"sum"`` and a float64 array of the per-sample shape for
``reduction="none"``.  Gradients are not provided here: the tests check them
with finite differences and against torch autograd.
"""

import numpy as np

__all__ = [
    "ref_log_softmax",
    "ref_softmax",
    "ref_logsumexp",
    "ref_log_softmax_vjp",
    "ref_softmax_vjp",
    "ref_cross_entropy",
    "ref_nll_loss",
    "ref_binary_cross_entropy_with_logits",
    "ref_binary_cross_entropy",
    "ref_categorical_cross_entropy",
    "ref_accuracy",
]

_REDUCTIONS = ("none", "mean", "sum")


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}")


def _times(coef, v):
    """coef * v with the convention 0 * (+-inf) = 0 (0 * nan stays nan)."""
    coef = _f64(coef)
    v = _f64(v)
    with np.errstate(invalid="ignore"):
        prod = coef * v
    return np.where((coef == 0) & np.isinf(v), 0.0, prod)


# --------------------------------------------------------------------------- row ops


def _shifted(x):
    """(x - m, m) with m the row max (class axis last); m replaced by 0 where not finite."""
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(invalid="ignore"):
        return x - m, m[..., 0]


def ref_logsumexp(x, axis=-1):
    z, m = _shifted(np.moveaxis(_f64(x), axis, -1))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return np.log(np.sum(np.exp(z), axis=-1)) + m


def ref_log_softmax(x, axis=-1):
    z, _ = _shifted(np.moveaxis(_f64(x), axis, -1))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        out = z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))
    return np.moveaxis(out, -1, axis)


def ref_softmax(x, axis=-1):
    return np.exp(ref_log_softmax(x, axis=axis))


def ref_log_softmax_vjp(output, grad_output, axis=-1):
    """Gradient w.r.t. x of sum(g * log_softmax(x)) given y = log_softmax(x)."""
    y = np.moveaxis(_f64(output), axis, -1)
    g = np.moveaxis(_f64(grad_output), axis, -1)
    out = g - np.exp(y) * np.sum(g, axis=-1, keepdims=True)
    return np.moveaxis(out, -1, axis)


def ref_softmax_vjp(output, grad_output, axis=-1):
    """Gradient w.r.t. x of sum(g * softmax(x)) given y = softmax(x)."""
    y = np.moveaxis(_f64(output), axis, -1)
    g = np.moveaxis(_f64(grad_output), axis, -1)
    out = y * (g - np.sum(y * g, axis=-1, keepdims=True))
    return np.moveaxis(out, -1, axis)


# --------------------------------------------------------------------------- helpers


def _reduce(per_sample, reduction, denom):
    _check_reduction(reduction)
    if reduction == "none":
        return per_sample
    total = np.float64(np.sum(per_sample))
    if reduction == "sum":
        return total
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.float64(total / np.float64(denom))


def _class_last(x, axis):
    x = _f64(x)
    if x.ndim == 0:
        raise ValueError("input must have at least one dimension")
    return np.moveaxis(x, axis, -1)


def _is_index_target(logits_last, target):
    target = np.asarray(target)
    return target.shape == logits_last.shape[:-1] and (
        np.issubdtype(target.dtype, np.integer) or target.dtype == bool
    )


# --------------------------------------------------------------------------- losses


def ref_nll_loss(log_probs, target, *, weight=None, ignore_index=-100, reduction="mean", axis=-1):
    lp = _class_last(log_probs, axis)
    C = lp.shape[-1]
    t = np.asarray(target).astype(np.int64)
    if t.shape != lp.shape[:-1]:
        raise ValueError(f"target shape {t.shape} does not match {lp.shape[:-1]}")
    w = np.ones(C) if weight is None else _f64(weight)
    mask = t != ignore_index
    if np.any((t[mask] < 0) | (t[mask] >= C)):
        raise IndexError("target out of range")
    t_safe = np.where(mask, t, 0)
    picked = np.take_along_axis(lp, t_safe[..., None], axis=-1)[..., 0]
    wy = np.where(mask, w[t_safe], 0.0)
    per = np.where(mask, -wy * picked, 0.0)
    return _reduce(per, reduction, np.sum(wy))


def ref_cross_entropy(
    logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, axis=-1,
    z_loss=0.0, softcap=None,
):
    x = _class_last(logits, axis)
    if softcap is not None:
        x = softcap * np.tanh(x / softcap)
    C = x.shape[-1]
    # z-loss (PaLM): z * logsumexp^2 per counted sample, reduced like the main loss
    zterm = z_loss * ref_logsumexp(x, axis=-1) ** 2 if z_loss else 0.0
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError("label_smoothing must be in [0, 1]")
    w = np.ones(C) if weight is None else _f64(weight)
    logp = ref_log_softmax(x, axis=-1)
    target = np.asarray(target)

    if _is_index_target(x, target):
        t = target.astype(np.int64)
        mask = t != ignore_index
        if np.any((t[mask] < 0) | (t[mask] >= C)):
            raise IndexError("target out of range")
        t_safe = np.where(mask, t, 0)
        picked = np.take_along_axis(logp, t_safe[..., None], axis=-1)[..., 0]
        wy = np.where(mask, w[t_safe], 0.0)
        nll = -wy * picked
        if eps > 0.0:
            smooth = -np.sum(w * logp, axis=-1)
            with np.errstate(invalid="ignore"):
                per = (1.0 - eps) * nll + (eps / C) * smooth
        else:
            per = nll
        per = np.where(mask, per + zterm, 0.0)
        return _reduce(per, reduction, np.sum(wy))

    # probability targets: same shape as the logits (class axis moved last too)
    q = np.moveaxis(_f64(target), axis, -1)
    if q.shape != x.shape:
        raise ValueError(f"target shape {np.asarray(target).shape} does not match {np.shape(logits)}")
    q = (1.0 - eps) * q + eps / C
    per = -np.sum(_times(w * q, logp), axis=-1) + zterm
    n_samples = int(np.prod(x.shape[:-1]))
    return _reduce(per, reduction, n_samples)


def _softplus(z):
    """log(1 + exp(z)), stable, exact limits at +-inf."""
    z = _f64(z)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def ref_binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None, reduction="mean"):
    """l = w[(1-y) x + (1 + (p-1) y) softplus(-x)] = w[(1-y) softplus(x) + p y softplus(-x)].

    The second (algebraically identical) form is used; a term whose coefficient is
    zero contributes zero, which yields the mathematical limits at infinite logits.
    """
    x = _f64(logits)
    y = _f64(target)
    if x.shape != y.shape:
        raise ValueError("shape mismatch")
    p = np.ones(x.shape[-1:] if x.ndim else ()) if pos_weight is None else _f64(pos_weight)
    p = np.broadcast_to(p, x.shape)
    w = np.ones_like(x) if weight is None else np.broadcast_to(_f64(weight), x.shape)
    per = _times(1.0 - y, _softplus(x)) + _times(p * y, _softplus(-x))
    with np.errstate(invalid="ignore"):
        per = w * per
    return _reduce(per, reduction, x.size)


def ref_binary_cross_entropy(probs, target, *, weight=None, reduction="mean"):
    """-w[y log p + (1-y) log(1-p)] with both logs clamped at -100 (as torch)."""
    p = _f64(probs)
    y = _f64(target)
    if p.shape != y.shape:
        raise ValueError("shape mismatch")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probabilities must be in [0, 1]")
    w = np.ones_like(p) if weight is None else np.broadcast_to(_f64(weight), p.shape)
    with np.errstate(divide="ignore"):
        logp = np.maximum(np.log(p), -100.0)
        log1mp = np.maximum(np.log1p(-p), -100.0)
    # np.maximum propagates NaN, so NaN probabilities give NaN losses
    per = -w * (y * logp + (1.0 - y) * log1mp)
    return _reduce(per, reduction, p.size)


def ref_categorical_cross_entropy(probs, target, *, eps=None, reduction="mean", axis=-1):
    """Keras-style CE from probabilities: -sum_c q_c log(clip(p_c, eps, 1-eps)).

    ``eps=None`` means the machine epsilon of the *input's* float dtype (float64 for
    non-float input).  The target is class indices (shape without the class axis)
    or one-hot / probabilities (the input's shape).  ``mean`` divides by the
    number of samples.
    """
    probs_arr = np.asarray(probs)
    if eps is None:
        dt = probs_arr.dtype if np.issubdtype(probs_arr.dtype, np.floating) else np.float64
        eps = float(np.finfo(dt).eps)
    p = _class_last(probs_arr, axis)
    logp = np.log(np.clip(p, eps, 1.0 - eps))
    target = np.asarray(target)
    if _is_index_target(p, target):
        t = target.astype(np.int64)
        per = -np.take_along_axis(logp, t[..., None], axis=-1)[..., 0]
    else:
        q = np.moveaxis(_f64(target), axis, -1)
        per = -np.sum(q * logp, axis=-1)
    return _reduce(per, reduction, int(np.prod(p.shape[:-1])))


def ref_accuracy(scores, target, *, axis=-1):
    s = _class_last(scores, axis)
    pred = np.argmax(s, axis=-1)
    target = np.asarray(target)
    if _is_index_target(s, target):
        t = target.astype(np.int64)
    else:
        t = np.argmax(np.moveaxis(_f64(target), axis, -1), axis=-1)
    n = pred.size
    return float(np.sum(pred == t)) / n if n else float("nan")
