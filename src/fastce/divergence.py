"""Losses beyond cross-entropy: distillation KL from logits, torch's kl_div, softmax entropy and
sigmoid focal loss.  Validate -> kernel (_div.pyx / _k_div.h) -> reduce; no math here.

Every function comes in the three forms of fastce.functional::

    loss = f(...)                          loss, grad = f(..., return_grad=True)
    grad = f_grad(..., grad_output=1.0)

Gradients are w.r.t. the first argument only (the student logits for kl_div_logits).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from . import _div
from . import _validate as V
from ._parallel import ce_family, nthreads
from .functional import (Axis, FloatArray, LossOrGrad, _check_out_usage, _grad_scaling,
                         _ieee_div, _reduce, _scalar)

__all__ = [
    "kl_div", "kl_div_grad", "kl_div_logits", "kl_div_logits_grad", "entropy", "entropy_grad",
    "sigmoid_focal_loss", "sigmoid_focal_loss_grad",
]

# Elements per chunk of the elementwise losses: fixed, so chunk sums (and totals) do not depend
# on the thread count.
ELEMENTWISE_CHUNK = 1 << 14

KL_DIV_REDUCTIONS = ("none", "mean", "batchmean", "sum")
KL_LOGITS_REDUCTIONS = ("none", "batchmean", "mean", "sum")


# Option rules (temperature, alpha, gamma, log_target, the reductions) live in fastce._validate
# with every other input rule, shared with fastce.torch.

# ================================================================== class-axis drivers

def _class_axis_loss(kind: str, xc: FloatArray, rdt: np.dtype[Any], tc: Optional[FloatArray],
                     axis: Axis, name: str, reduction: str, want_grad: bool,
                     grad_output: ArrayLike, out: Optional[FloatArray],
                     temperature: Optional[Tuple[float, float]] = None) -> Any:
    """Shared driver of kl_div_logits (kind 'kl', tc = teacher) and entropy (kind 'entropy').

    reduction is 'none', 'mean' (over samples) or 'sum'."""
    A, C, B, ax = V.split_axis(xc.shape, axis, name)
    samples = V.sample_shape(xc.shape, ax)
    ns = A * B
    loss = np.empty(ns, dtype=np.float64)
    gcoef, gscale = (_grad_scaling(reduction, grad_output, float(ns), samples)
                     if want_grad else (0.0, None))
    # The kernels park exps in the gradient buffer between passes, so it must not overlap any
    # input (the leading None: not even the first one, as in-place kernels allow).
    grad, pending = (V.output_buffer(out, xc.shape, rdt, xc.dtype, (None, xc, tc, gscale))
                     if want_grad else (None, None))
    gflat = grad.reshape(-1) if grad is not None else None
    if xc.size == 0:
        loss.fill(0.0)          # no classes: an empty sum (and no gradient entries)
    elif kind == "kl":
        assert tc is not None and temperature is not None
        tau, k = temperature
        _div.kl_logits(xc.reshape(-1), tc.reshape(-1), A, C, B, k, tau, loss, gflat, gcoef,
                       gscale, nthreads(2 * xc.size, ce_family(C, B)))
    else:
        _div.entropy(xc.reshape(-1), A, C, B, loss, gflat, gcoef, gscale,
                     nthreads(xc.size, ce_family(C, B)))
    value = _reduce(loss, reduction, float(ns), samples, xc.dtype, rdt)
    if not want_grad:
        return value
    return value, V.deliver(grad, pending, rdt)


def _kl_logits(student: ArrayLike, teacher: ArrayLike, temperature: float, reduction: str,
               axis: Axis, want_grad: bool, grad_output: ArrayLike,
               out: Optional[FloatArray]) -> Any:
    reduction = V.choice_option(reduction, KL_LOGITS_REDUCTIONS)
    sc, rdt = V.float_input(student, "input (student logits)")
    tc = V.same_dtype_input(teacher, sc.dtype, "target (teacher logits)")
    V.same_shape(sc, tc, "input (student logits)", "target (teacher logits)")
    temp = V.temperature(temperature, sc.dtype)
    red = "mean" if reduction == "batchmean" else reduction
    return _class_axis_loss("kl", sc, rdt, tc, V.axis_option(axis), "input", red, want_grad,
                            grad_output, out, temp)


def kl_div_logits(input: ArrayLike, target: ArrayLike, *,
                  temperature: float = 1.0, reduction: str = "batchmean", axis: Axis = -1,
                  return_grad: bool = False, grad_output: ArrayLike = 1.0,
                  out: Optional[FloatArray] = None) -> LossOrGrad:
    r"""Knowledge-distillation loss between teacher and student logits, in one fused pass.

    .. math::

        \ell_n = \tau^2 \, \mathrm{KL}\big(\mathrm{softmax}(t_n/\tau) \,\|\,
                 \mathrm{softmax}(s_n/\tau)\big)
               = \tau^2 \sum_c p_c (\log p_c - \log q_c)

    with :math:`p` the teacher's and :math:`q` the student's softmax at temperature
    :math:`\tau` (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015: the
    :math:`\tau^2` keeps gradient magnitudes comparable across temperatures).  The gradient
    w.r.t. the student logits is :math:`\tau (q - p)`.  Neither softmax is materialised; the
    loss is exactly 0 (and the gradient exactly 0) where the rows are equal, and nearly equal
    rows keep full relative precision (no difference of two large totals is formed; see
    _k_div.h).  A class that is ``-inf`` in both rows contributes 0; one that is ``-inf``
    in the student only, with teacher mass, gives ``inf``.

    Parameters
    ----------
    input : array_like
        The student's logits (unnormalised scores; the class axis is `axis`); the gradient is
        taken w.r.t. them.  (fastce names every first argument `input`.)
    target : array_like of the input's shape
        The teacher's logits, cast to the student's compute dtype (float32/float64; float16
        computes in float32).
    temperature : float > 0, default 1
    reduction : {"batchmean", "mean", "sum", "none"}, default "batchmean"
        "batchmean" (= "mean") averages the per-sample losses, "sum" adds them, "none"
        returns them with the input's shape without `axis`.
    axis : int, default -1
        The class axis (1 for PyTorch's (N, C, d1, ...) layout).
    return_grad : bool
        Also return d(loss)/d(input), the student logits, from the same pass.
    grad_output : float or array_like
        Upstream gradient (per-sample shape for "none").
    out : ndarray, optional
        Buffer for the gradient; must not overlap the inputs.

    Returns
    -------
    loss : NumPy scalar, or ndarray of the per-sample shape ("none")
    grad : ndarray of the input's shape and dtype, when return_grad=True

    Examples
    --------
    >>> import numpy as np, fastce
    >>> s = np.array([[1.0, 2.0, 3.0]]); t = np.array([[1.0, 2.0, 3.0]])
    >>> float(fastce.kl_div_logits(s, t, temperature=2.0))
    0.0
    """
    _check_out_usage(out, return_grad)
    return _kl_logits(input, target, temperature, reduction, axis, return_grad,  # type: ignore[no-any-return]
                      grad_output, out)


def kl_div_logits_grad(input: ArrayLike, target: ArrayLike, *,
                       temperature: float = 1.0, reduction: str = "batchmean", axis: Axis = -1,
                       grad_output: ArrayLike = 1.0,
                       out: Optional[FloatArray] = None) -> FloatArray:
    """Gradient of kl_div_logits w.r.t. the student logits, scaled by grad_output:
    ``temperature * (softmax(s/T) - softmax(t/T))`` times the reduction's scale.

    Takes kl_div_logits's parameters (without return_grad).
    """
    grad: FloatArray = _kl_logits(input, target, temperature, reduction, axis, True,
                                  grad_output, out)[1]
    return grad


def _entropy(logits: ArrayLike, axis: Axis, reduction: str, want_grad: bool,
             grad_output: ArrayLike, out: Optional[FloatArray]) -> Any:
    reduction = V.reduction(reduction)
    xc, rdt = V.float_input(logits, "input")
    return _class_axis_loss("entropy", xc, rdt, None, V.axis_option(axis), "input", reduction,
                            want_grad, grad_output, out)


def entropy(input: ArrayLike, *, axis: Axis = -1, reduction: str = "none",
            return_grad: bool = False, grad_output: ArrayLike = 1.0,
            out: Optional[FloatArray] = None) -> LossOrGrad:
    r"""Shannon entropy (nats) of softmax(logits) along `axis`, and its gradient.

    .. math::

        H_n = -\sum_c p_c \log p_c = \log S + \frac{1}{S}\sum_c e_c (m - x_c),
        \qquad e_c = e^{x_c - m},\ S = \sum_c e_c,\ m = \max_c x_c

    Both terms are nonnegative, so a confident row gets its tiny positive entropy to full
    relative precision (``-(p * log p).sum()`` rounds it to 0 or a negative number).
    :math:`\partial H/\partial x_j = -p_j(\log p_j + H)`.  ``-inf`` logits are masked classes
    (probability 0, contribution 0); a row with ``+inf`` or NaN gives NaN.

    Parameters
    ----------
    input : array_like
        Logits: unnormalised scores (float16 computes in float32, integers in float64).
    axis : int, default -1
        The class axis.
    reduction : {"none", "mean", "sum"}, default "none"
        "mean" averages over samples.
    return_grad, grad_output, out
        As in kl_div_logits (out must not overlap `input`).

    Returns
    -------
    entropy : ndarray of the per-sample shape ("none") or NumPy scalar
    grad : ndarray of the logits' shape, when return_grad=True

    Examples
    --------
    >>> import numpy as np, fastce
    >>> round(float(fastce.entropy(np.zeros(4))), 12) == round(float(np.log(4)), 12)
    True
    """
    _check_out_usage(out, return_grad)
    return _entropy(input, axis, reduction, return_grad, grad_output, out)  # type: ignore[no-any-return]


def entropy_grad(input: ArrayLike, *, axis: Axis = -1, reduction: str = "none",
                 grad_output: ArrayLike = 1.0, out: Optional[FloatArray] = None) -> FloatArray:
    """Gradient of entropy w.r.t. the logits, scaled by grad_output (entropy's parameters
    without return_grad)."""
    return _entropy(input, axis, reduction, True, grad_output, out)[1]  # type: ignore[no-any-return]


# ================================================================== elementwise drivers

def _elementwise(kind: str, xc: FloatArray, rdt: np.dtype[Any], y: FloatArray, reduction: str,
                 denominator: float, want_grad: bool, grad_output: ArrayLike,
                 out: Optional[FloatArray], alpha: float = 0.0, gamma: float = 0.0,
                 log_target: bool = False) -> Tuple[Any, Optional[FloatArray], Any]:
    """Shared driver of sigmoid_focal_loss and kl_div: reduction 'none', 'sum' or 'mean'
    (total / denominator)."""
    n = xc.size
    nchunks = -(-n // ELEMENTWISE_CHUNK)
    chunk_sum = np.empty(nchunks, dtype=np.float64)
    loss = np.empty(xc.shape, dtype=xc.dtype) if reduction == "none" else None
    gcoef = 0.0
    gscale: Optional[FloatArray] = None
    grad: Optional[FloatArray] = None
    pending: Any = None
    if want_grad:
        gcoef, gscale = _grad_scaling(reduction, grad_output, denominator, xc.shape, xc.dtype)
        grad, pending = V.output_buffer(out, xc.shape, rdt, xc.dtype, (xc, y, gscale))
    _div.elementwise(kind, xc.reshape(-1), y.reshape(-1), ELEMENTWISE_CHUNK,
                     loss.reshape(-1) if loss is not None else None, chunk_sum,
                     grad.reshape(-1) if grad is not None else None, gcoef, gscale, alpha,
                     gamma, log_target, nthreads(n, "binary"))
    value: Any
    if reduction == "none":
        assert loss is not None
        value = loss.astype(rdt, copy=False)
    else:
        total = float(chunk_sum.sum())
        value = _scalar(_ieee_div(total, denominator) if reduction == "mean" else total,
                        xc.dtype)
    return value, grad, pending


def _elementwise_inputs(inp: ArrayLike, target: ArrayLike, in_name: str,
                        t_name: str) -> Tuple[FloatArray, np.dtype[Any], FloatArray]:
    xc, rdt = V.float_input(inp, in_name)
    y = V.same_dtype_input(target, xc.dtype, t_name)
    V.same_shape(xc, y, in_name, t_name)
    return xc, rdt, y


def _finish(value: Any, grad: Optional[FloatArray], pending: Any, rdt: np.dtype[Any],
            want_grad: bool) -> Any:
    if not want_grad:
        return value
    return value, V.deliver(grad, pending, rdt)


def _focal(inp: ArrayLike, target: ArrayLike, alpha: float, gamma: float, reduction: str,
           want_grad: bool, grad_output: ArrayLike, out: Optional[FloatArray]) -> Any:
    reduction = V.reduction(reduction)
    a, g = V.focal_alpha(alpha), V.focal_gamma(gamma)
    xc, rdt, y = _elementwise_inputs(inp, target, "input", "target")
    value, grad, pending = _elementwise("focal", xc, rdt, y, reduction, float(xc.size), want_grad,
                                        grad_output, out, alpha=a, gamma=g)
    return _finish(value, grad, pending, rdt, want_grad)


def sigmoid_focal_loss(input: ArrayLike, target: ArrayLike, *, alpha: float = 0.25,
                       gamma: float = 2.0, reduction: str = "none", return_grad: bool = False,
                       grad_output: ArrayLike = 1.0,
                       out: Optional[FloatArray] = None) -> LossOrGrad:
    r"""Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", 2017), with
    torchvision.ops.sigmoid_focal_loss semantics.

    .. math::

        \ell = \alpha_t \, \mathrm{BCE}(x, y)\, (1 - p_t)^\gamma,\quad p = \sigma(x),\
        p_t = p y + (1 - p)(1 - y),\ \alpha_t = \alpha y + (1 - \alpha)(1 - y)

    ``alpha < 0`` disables the weighting (:math:`\alpha_t = 1`); ``gamma = 0`` is the
    alpha-weighted binary cross-entropy with logits.  Stable for any logit, ``+-inf``
    included (the mathematical limits, not NaN), and accurate for confident predictions
    (:math:`1 - p_t` is formed from sigmoids, never as ``1 - p``).

    Parameters
    ----------
    input : array_like
        Logits of any shape.
    target : array_like of the input's shape
        Labels in [0, 1] (soft labels allowed).
    alpha : float, default 0.25
    gamma : float >= 0, default 2
    reduction : {"none", "mean", "sum"}, default "none"
        "mean" averages over all elements.
    return_grad, grad_output, out
        As in fastce.binary_cross_entropy_with_logits (out may be `input` itself).

    Returns
    -------
    loss : ndarray of the input's shape ("none") or NumPy scalar
    grad : ndarray of the input's shape, when return_grad=True
    """
    _check_out_usage(out, return_grad)
    return _focal(input, target, alpha, gamma, reduction, return_grad, grad_output, out)  # type: ignore[no-any-return]


def sigmoid_focal_loss_grad(input: ArrayLike, target: ArrayLike, *, alpha: float = 0.25,
                            gamma: float = 2.0, reduction: str = "none",
                            grad_output: ArrayLike = 1.0,
                            out: Optional[FloatArray] = None) -> FloatArray:
    """Gradient of sigmoid_focal_loss w.r.t. the logits, scaled by grad_output
    (sigmoid_focal_loss's parameters without return_grad)."""
    return _focal(input, target, alpha, gamma, reduction, True, grad_output, out)[1]  # type: ignore[no-any-return]


def _kl_div(inp: ArrayLike, target: ArrayLike, reduction: str, log_target: bool, want_grad: bool,
            grad_output: ArrayLike, out: Optional[FloatArray]) -> Any:
    reduction = V.choice_option(reduction, KL_DIV_REDUCTIONS)
    lt = V.bool_option(log_target, "log_target")
    xc, rdt, y = _elementwise_inputs(inp, target, "input", "target")
    if reduction == "batchmean":
        # torch: the sum divided by input.size(0); a 0-d input is just summed
        red, denominator = ("mean", float(xc.shape[0])) if xc.ndim else ("sum", 1.0)
    else:
        red, denominator = reduction, float(xc.size)
    value, grad, pending = _elementwise("kldiv", xc, rdt, y, red, denominator, want_grad, grad_output,
                                        out, log_target=lt)
    return _finish(value, grad, pending, rdt, want_grad)


def kl_div(input: ArrayLike, target: ArrayLike, *, reduction: str = "mean",
           log_target: bool = False, return_grad: bool = False, grad_output: ArrayLike = 1.0,
           out: Optional[FloatArray] = None) -> LossOrGrad:
    r"""Pointwise KL divergence, exactly torch.nn.functional.kl_div.

    `input` holds log-probabilities :math:`\log q`; the pointwise loss is

    .. math::

        y (\log y - x) \ \ (\text{log\_target=False, with } 0 \log 0 = 0), \qquad
        e^{y} (y - x) \ \ (\text{log\_target=True})

    and its gradient w.r.t. `input` is :math:`-y` (resp. :math:`-e^{y}`).  IEEE products are
    kept as in torch (a zero target against a ``-inf`` input is NaN there too).  For the
    distillation loss between two sets of logits use kl_div_logits, which never forms the
    log-probabilities.

    Parameters
    ----------
    input : array_like
        Log-probabilities, any shape.
    target : array_like of the input's shape
        Probabilities (or log-probabilities with log_target=True).
    reduction : {"mean", "batchmean", "sum", "none"}, default "mean"
        "mean" averages over all elements (torch's default, which is not the KL divergence),
        "batchmean" divides the sum by ``input.shape[0]`` (the mathematical KL per sample).
    log_target : bool, default False
    return_grad, grad_output, out
        As in fastce.binary_cross_entropy_with_logits (out may be `input` itself).

    Returns
    -------
    loss : NumPy scalar, or ndarray of the input's shape ("none")
    grad : ndarray of the input's shape, when return_grad=True
    """
    _check_out_usage(out, return_grad)
    return _kl_div(input, target, reduction, log_target, return_grad, grad_output, out)  # type: ignore[no-any-return]


def kl_div_grad(input: ArrayLike, target: ArrayLike, *, reduction: str = "mean",
                log_target: bool = False, grad_output: ArrayLike = 1.0,
                out: Optional[FloatArray] = None) -> FloatArray:
    """Gradient of kl_div w.r.t. the input, scaled by grad_output (kl_div's parameters
    without return_grad)."""
    return _kl_div(input, target, reduction, log_target, True, grad_output, out)[1]  # type: ignore[no-any-return]
