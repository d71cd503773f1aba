"""fastce's public functions: validate -> pick a kernel -> reduce.  No math lives here.

Semantics follow torch.nn.functional (2.13); the deliberate differences are listed in the
README ("Semantics").  Every loss comes in three forms sharing one signature:

    loss = f(input, target, ...)                             the loss
    loss, grad = f(input, target, ..., return_grad=True)     loss and d(loss)/d(input), one pass
    grad = f_grad(input, target, ..., grad_output=1.0)       only the gradient
"""
from __future__ import annotations

import math
from typing import Any, Literal, Optional, Tuple, TypeVar, Union, overload

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from . import _validate as V
from . import _binary, _ce, _div, _fastpath, _softmax
from ._fastpath import SLOW as _SLOW, pairwise_sum as _pairwise_sum
from ._parallel import PARALLEL_MIN_ELEMENTS, ce_family as _ce_family, nthreads as _nthreads  # noqa: F401

__all__ = [
    "log_softmax", "softmax", "logsumexp", "log_softmax_vjp", "softmax_vjp",
    "cross_entropy", "cross_entropy_grad", "nll_loss", "nll_loss_grad",
    "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_grad",
    "binary_cross_entropy", "binary_cross_entropy_grad",
    "categorical_cross_entropy", "accuracy", "linear_cross_entropy",
]

# Public types.  A reduced loss is a NumPy scalar, reduction="none" an array; gradients and
# row-op results keep the input's float dtype, which the overloads carry through the type
# variable FloatT (a float32 array in, NDArray[float32] out; lists and integers give float64,
# typed as the general FloatArray).  Every public function is overloaded on `return_grad`
# (Literal[True] -> a tuple) and `reduction` (Literal["none"] -> an array), so a type checker
# knows `loss, grad = cross_entropy(x, t, return_grad=True)` and `float(cross_entropy(x, t))`
# are fine and `reduction="avg"` is not.
FloatT = TypeVar("FloatT", bound=np.floating[Any])
FloatArray = NDArray[np.floating[Any]]
Scalar = np.floating[Any]
Loss = Union[Scalar, FloatArray]
LossOrGrad = Union[Loss, Tuple[Loss, FloatArray]]
Axis = int
Reduction = Literal["mean", "sum", "none"]
Reduced = Literal["mean", "sum"]

# Elements per chunk of the elementwise (binary) losses; fixed so sums are thread-independent.
BINARY_CHUNK = 1 << 14


def _scalar(value: float, dtype: np.dtype[Any]) -> Any:
    return dtype.type(value)


# ================================================================== row operations

@overload
def log_softmax(input: NDArray[FloatT], axis: Axis = ..., out: Optional[NDArray[FloatT]] = ...
               ) -> NDArray[FloatT]: ...
@overload
def log_softmax(input: ArrayLike, axis: Axis = ..., out: Optional[FloatArray] = ...
               ) -> FloatArray: ...

def log_softmax(input: ArrayLike, axis: Axis = -1, out: Optional[FloatArray] = None) -> Any:
    """Logarithm of softmax along `axis`, computed as (x - max) - log(sum(exp(x - max))).

    Parameters
    ----------
    input : array_like
        Real input; float16 is computed in float32, integers in float64.
    axis : int, default -1
        The class axis.
    out : ndarray, optional
        C-contiguous buffer of x's shape and result dtype; may be `x` itself.

    Returns
    -------
    ndarray of x's shape and float dtype.
    """
    return _rowwise("log_softmax", input, axis, out)


@overload
def softmax(input: NDArray[FloatT], axis: Axis = ..., out: Optional[NDArray[FloatT]] = ...
           ) -> NDArray[FloatT]: ...
@overload
def softmax(input: ArrayLike, axis: Axis = ..., out: Optional[FloatArray] = ...) -> FloatArray: ...

def softmax(input: ArrayLike, axis: Axis = -1, out: Optional[FloatArray] = None) -> Any:
    """Softmax along `axis`, computed as exp(x - max) / sum(exp(x - max)).

    Parameters
    ----------
    input : array_like
        Real input; float16 is computed in float32, integers in float64.
    axis : int, default -1
        The class axis.
    out : ndarray, optional
        C-contiguous buffer of x's shape and result dtype; may be `x` itself.

    Returns
    -------
    ndarray of x's shape and float dtype; -inf entries get probability 0.
    """
    return _rowwise("softmax", input, axis, out)


def _rowwise(kind: Literal["log_softmax", "softmax"], x: ArrayLike, axis: Axis,
             out: Optional[FloatArray]) -> Any:
    xc, rdt = V.float_input(x, "x")
    A, C, B, _ = V.split_axis(xc.shape, axis, "x")
    buf, pending = V.output_buffer(out, xc.shape, rdt, xc.dtype, (xc,))
    if xc.size:                 # (an empty array can still have many empty rows: skip them)
        _softmax.rowwise(kind, xc.reshape(-1), A, C, B, buf.reshape(-1),
                         _nthreads(xc.size, "softmax"))
    return V.deliver(buf, pending, rdt)


def logsumexp(input: ArrayLike, axis: Axis = -1) -> Loss:
    """log(sum(exp(x))) along `axis`, stable for any magnitude.

    Parameters
    ----------
    input : array_like
        Real input (float16 computed in float32, integers in float64).
    axis : int, default -1
        The axis reduced.

    Returns
    -------
    ndarray of x's shape without `axis` (a NumPy scalar for 1-D input).  Rows of all -inf give
    -inf and rows containing +inf give +inf, as in torch.logsumexp.
    """
    xc, rdt = V.float_input(input, "input")
    A, C, B, ax = V.split_axis(xc.shape, axis, "input")
    res = np.empty(V.sample_shape(xc.shape, ax), dtype=xc.dtype)
    if C == 0:
        res.fill(-np.inf)       # log of an empty sum, as torch.logsumexp
    elif res.size:
        _softmax.logsumexp(xc.reshape(-1), A, C, B, res.reshape(-1),
                          _nthreads(xc.size, "softmax"))
    res = res.astype(rdt, copy=False)
    return res[()] if res.ndim == 0 else res


@overload
def log_softmax_vjp(output: NDArray[FloatT], grad_output: ArrayLike, axis: Axis = ...,
                    out: Optional[NDArray[FloatT]] = ...) -> NDArray[FloatT]: ...
@overload
def log_softmax_vjp(output: ArrayLike, grad_output: ArrayLike, axis: Axis = ...,
                    out: Optional[FloatArray] = ...) -> FloatArray: ...

def log_softmax_vjp(output: ArrayLike, grad_output: ArrayLike, axis: Axis = -1,
                    out: Optional[FloatArray] = None) -> Any:
    """Gradient w.r.t. the input of log_softmax, given its output and the upstream gradient.

    grad_input = grad_output - softmax * sum(grad_output), with softmax = exp(output).

    Parameters
    ----------
    output : array_like
        The result of log_softmax(x, axis).
    grad_output : array_like
        d(loss)/d(output), same shape.
    axis : int, default -1
        The class axis used in the forward pass.
    out : ndarray, optional
        Buffer for the result (may be `output`).

    Returns
    -------
    ndarray: d(loss)/d(x), of output's shape and float dtype.
    """
    return _vjp("log_softmax", output, grad_output, axis, out)


@overload
def softmax_vjp(output: NDArray[FloatT], grad_output: ArrayLike, axis: Axis = ...,
                out: Optional[NDArray[FloatT]] = ...) -> NDArray[FloatT]: ...
@overload
def softmax_vjp(output: ArrayLike, grad_output: ArrayLike, axis: Axis = ...,
                out: Optional[FloatArray] = ...) -> FloatArray: ...

def softmax_vjp(output: ArrayLike, grad_output: ArrayLike, axis: Axis = -1,
                out: Optional[FloatArray] = None) -> Any:
    """Gradient w.r.t. the input of softmax, given its output and the upstream gradient.

    grad_input = p * (grad_output - sum(p * grad_output)), with p the softmax output.

    Parameters
    ----------
    output : array_like
        The result of softmax(x, axis).
    grad_output : array_like
        d(loss)/d(output), same shape.
    axis : int, default -1
        The class axis used in the forward pass.
    out : ndarray, optional
        Buffer for the result (may be `output`).

    Returns
    -------
    ndarray: d(loss)/d(x), of output's shape and float dtype.
    """
    return _vjp("softmax", output, grad_output, axis, out)


def _vjp(kind: Literal["log_softmax", "softmax"], output: ArrayLike, grad_output: ArrayLike,
         axis: Axis, out: Optional[FloatArray]) -> Any:
    yc, rdt = V.float_input(output, "output")
    gc = V.same_dtype_input(grad_output, yc.dtype, "grad_output")
    V.same_shape(yc, gc, "output", "grad_output")
    A, C, B, _ = V.split_axis(yc.shape, axis, "output")
    buf, pending = V.output_buffer(out, yc.shape, rdt, yc.dtype, (yc, gc))
    if yc.size:
        _softmax.vjp(kind, yc.reshape(-1), gc.reshape(-1), A, C, B, buf.reshape(-1),
                     _nthreads(yc.size, "softmax"))
    return V.deliver(buf, pending, rdt)


# ================================================================== cross-entropy family

def _grad_scaling(reduction: str, grad_output: ArrayLike, denominator: float,
                  samples: Tuple[int, ...], dtype: DTypeLike = np.float64
                  ) -> Tuple[float, Optional[NDArray[Any]]]:
    """(gcoef, gscale) for the kernels: grad = gcoef * gscale_n * d(loss_n)/dx.  gscale (the
    "none" grad_output, one per sample) is in `dtype`: float64 for the class kernels, the
    input's dtype for the elementwise ones (binary, focal, kl_div), whose kernels read it so."""
    if reduction == "none":
        return 1.0, V.grad_output_array(grad_output, samples, dtype)
    g = V.grad_output_scalar(grad_output)
    if reduction == "sum":
        return g, None
    # mean with a zero denominator (every target ignored): the loss is NaN and the gradient
    # zero, as in torch.
    return (g / denominator if denominator != 0 else 0.0), None


def _reduce(per_sample: NDArray[np.float64], reduction: str, denominator: float,
            samples: Tuple[int, ...], dtype: np.dtype[Any],
            result_dtype: Optional[np.dtype[Any]] = None) -> Any:
    """The loss value: per-sample losses in `result_dtype` (the input's float dtype, float16
    for float16 input) for "none"; a NumPy scalar of the compute `dtype` for mean/sum."""
    if reduction == "none":
        return per_sample.reshape(samples).astype(result_dtype or dtype)
    total = _pairwise_sum(per_sample)     # the fast path's fixed order: same bits on both paths
    if reduction == "sum":
        return _scalar(total, dtype)
    return _scalar(_ieee_div(total, denominator), dtype)


def _ieee_div(a: float, b: float) -> float:
    """a / b with IEEE semantics for b == 0 (an empty batch or all targets ignored gives
    0 / 0 = NaN, as in torch), without the cost of an np.errstate block."""
    if b != 0:
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _check_out_usage(out: Optional[FloatArray], want_grad: bool) -> None:
    if out is not None and not want_grad:
        raise ValueError("out= receives the gradient: pass return_grad=True (or use the *_grad form)")


def _index_denominator(t: NDArray[np.int64], w: Optional[NDArray[np.float64]],
                       ignore: int) -> float:
    """sum_n m_n w_{y_n}: the "mean" denominator of class-index losses (m_n = not ignored)."""
    if w is None:
        if t.size == 0 or not t.min() <= ignore <= t.max():
            return float(t.size)
        return float(t.size - np.count_nonzero(t == ignore))
    kept = t != ignore
    return float(w[t[kept]].sum(dtype=np.float64))


def _ce_options(reduction: str, label_smoothing: float, z_loss: float,
                ignore_index: int) -> Tuple[Reduction, float, float, int]:
    """The validated scalar options shared by every cross-entropy entry point (softcap is
    checked once the compute dtype is known)."""
    return (V.reduction(reduction), V.label_smoothing(label_smoothing), V.z_loss(z_loss),
            V.ignore_index(ignore_index))


def _class_loss(kind: Literal["ce", "nll"], inp: ArrayLike, target: ArrayLike,
                weight: Optional[ArrayLike], ignore_index: int, reduction: str,
                label_smoothing: float, axis: Axis, want_grad: bool, grad_output: ArrayLike,
                out: Optional[FloatArray], z_loss: float = 0.0,
                softcap: Optional[float] = None) -> Any:
    """Shared driver of cross_entropy (kind='ce') and nll_loss (kind='nll')."""
    reduction, eps, zl, ignore = _ce_options(reduction, label_smoothing, z_loss, ignore_index)
    xc, rdt = V.float_input(inp, "input")
    cap = V.softcap(softcap, xc.dtype)
    A, C, B, ax = V.split_axis(xc.shape, axis, "input")
    samples = V.sample_shape(xc.shape, ax)
    w = V.class_weight(weight, C)
    fmt = V.target_format(target, xc.shape, samples)
    if fmt == "prob" and kind == "nll":
        raise TypeError(f"nll_loss needs class-index targets of shape {samples} with an integer "
                        f"dtype; got a target of the input's shape {tuple(np.shape(target))}")
    nth = _nthreads(xc.size, _ce_family(C, B))
    # mean/sum of class-index losses: the kernels sum each work item's losses (in a fixed
    # order, items fixed by the shape) instead of writing per-sample losses to be re-read;
    # the fast path does the same, so both give the same bits.
    by_item = fmt == "index" and reduction != "none" and xc.size != 0
    loss = np.empty(_ce.n_items(A, C, B) if by_item else A * B, dtype=np.float64)

    # tgt: int64 class indices of the sample shape, or probabilities of the input's shape
    tgt: Any        # (the two formats share one name; each kernel call takes its own)
    if fmt == "index":
        tgt = V.class_index_target(target, samples, C, ignore, xc.shape)
        denominator = _index_denominator(tgt, w, ignore)
    else:
        tgt = V.probability_target(target, xc.shape, xc.dtype, ignore)
        denominator = float(A * B)

    gcoef, gscale = (_grad_scaling(reduction, grad_output, denominator, samples)
                     if want_grad else (0.0, None))
    # Everything the kernel reads: an out= overlapping any of it gets a temporary instead
    # (a gradient written over validated class indices would turn them into wild indices).
    reads = (xc, tgt, w, gscale)
    grad, pending = (V.output_buffer(out, xc.shape, rdt, xc.dtype, reads)
                     if want_grad else (None, None))
    gflat = grad.reshape(-1) if grad is not None else None

    if xc.size == 0:
        # no logits: every sample is ignored (validated) or has no class mass, loss 0
        loss.fill(0.0)
    elif fmt == "index":
        W = float(w.sum()) if w is not None else float(C)
        _ce.cross_entropy_index(xc.reshape(-1), tgt.reshape(-1), w, W, ignore, eps, A, C, B,
                                None if by_item else loss, gflat, gcoef, gscale, nth,
                                kind == "nll", zl, cap, loss if by_item else None)
    else:
        _ce.cross_entropy_prob(xc.reshape(-1), tgt.reshape(-1), w, eps, A, C, B, loss, gflat,
                               gcoef, gscale, nth, zl, cap)

    value = _reduce(loss, reduction, denominator, samples, xc.dtype, rdt)   # (per item: a sum)
    if not want_grad:
        return value
    return value, V.deliver(grad, pending, rdt)


@overload
def cross_entropy(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., reduction: Reduced = ..., label_smoothing: float = ...,
                  axis: Axis = ..., z_loss: float = ..., softcap: Optional[float] = ...,
                  return_grad: Literal[False] = ..., grad_output: ArrayLike = ..., out: None = ...
                 ) -> Scalar: ...
@overload
def cross_entropy(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., reduction: Literal["none"],
                  label_smoothing: float = ..., axis: Axis = ..., z_loss: float = ...,
                  softcap: Optional[float] = ..., return_grad: Literal[False] = ...,
                  grad_output: ArrayLike = ..., out: None = ...) -> FloatArray: ...
@overload
def cross_entropy(input: NDArray[FloatT], target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., reduction: Reduced = ..., label_smoothing: float = ...,
                  axis: Axis = ..., z_loss: float = ..., softcap: Optional[float] = ...,
                  return_grad: Literal[True], grad_output: ArrayLike = ...,
                  out: Optional[NDArray[FloatT]] = ...) -> Tuple[Scalar, NDArray[FloatT]]: ...
@overload
def cross_entropy(input: NDArray[FloatT], target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., reduction: Literal["none"],
                  label_smoothing: float = ..., axis: Axis = ..., z_loss: float = ...,
                  softcap: Optional[float] = ..., return_grad: Literal[True],
                  grad_output: ArrayLike = ..., out: Optional[NDArray[FloatT]] = ...
                 ) -> Tuple[FloatArray, NDArray[FloatT]]: ...
@overload
def cross_entropy(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., reduction: Reduced = ..., label_smoothing: float = ...,
                  axis: Axis = ..., z_loss: float = ..., softcap: Optional[float] = ...,
                  return_grad: Literal[True], grad_output: ArrayLike = ...,
                  out: Optional[FloatArray] = ...) -> Tuple[Scalar, FloatArray]: ...
@overload
def cross_entropy(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., reduction: Literal["none"],
                  label_smoothing: float = ..., axis: Axis = ..., z_loss: float = ...,
                  softcap: Optional[float] = ..., return_grad: Literal[True],
                  grad_output: ArrayLike = ..., out: Optional[FloatArray] = ...
                 ) -> Tuple[FloatArray, FloatArray]: ...
@overload
def cross_entropy(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., reduction: Reduction = ...,
                  label_smoothing: float = ..., axis: Axis = ..., z_loss: float = ...,
                  softcap: Optional[float] = ..., return_grad: Literal[False] = ...,
                  grad_output: ArrayLike = ..., out: None = ...) -> Loss: ...
@overload
def cross_entropy(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., reduction: Reduction = ...,
                  label_smoothing: float = ..., axis: Axis = ..., z_loss: float = ...,
                  softcap: Optional[float] = ..., return_grad: bool, grad_output: ArrayLike = ...,
                  out: Optional[FloatArray] = ...) -> LossOrGrad: ...

def cross_entropy(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = None,
                  ignore_index: int = -100, reduction: Reduction = "mean",
                  label_smoothing: float = 0.0, axis: Axis = -1, z_loss: float = 0.0,
                  softcap: Optional[float] = None, return_grad: bool = False,
                  grad_output: ArrayLike = 1.0, out: Optional[FloatArray] = None) -> Any:
    """Cross-entropy between logits and targets, as torch.nn.functional.cross_entropy.

    Parameters
    ----------
    input : array_like
        Unnormalised scores; the class axis is `axis`.  Shapes: (C,), (N, C), (N, d1, ..., C)
        with axis=-1, or PyTorch's (N, C, d1, ...) with axis=1.
    target : array_like
        Integer class indices with the logits' shape minus the class axis, or float class
        probabilities with the logits' shape.
    weight : array_like of shape (C,), optional
        Per-class rescaling weights.
    ignore_index : int, default -100
        Class-index targets equal to it contribute neither loss nor gradient nor weight.
    reduction : {"mean", "sum", "none"}
        "mean" divides by the sum of target weights of non-ignored samples (index targets) or
        by the number of samples (probability targets).
    label_smoothing : float in [0, 1]
        Mixes the target with the uniform distribution: (1 - eps) target + eps / C.
    axis : int, default -1
        The class axis.
    z_loss : float, default 0
        Adds ``z_loss * logsumexp(logits_n)**2`` per non-ignored sample (PaLM's auxiliary loss),
        reduced like the main loss.
    softcap : float, optional
        Logits pass through ``softcap * tanh(logits / softcap)`` first (Gemma 2); the gradient
        includes the tanh.
    return_grad : bool
        Also return d(loss)/d(logits), computed in the same pass.
    grad_output : float or array_like
        Upstream gradient (scalar for mean/sum; per-sample shape for "none").
    out : ndarray, optional
        Buffer for the gradient; may be `logits` itself for an in-place gradient.

    Returns
    -------
    loss : NumPy scalar (mean/sum) or ndarray of the per-sample shape ("none")
    grad : ndarray of the logits' shape and dtype, when return_grad=True
    """
    r = _fastpath.class_loss(False, input, target, weight, ignore_index, reduction,
                             label_smoothing, axis, z_loss, softcap, return_grad, grad_output, out)
    if r is not _SLOW:
        return r
    _check_out_usage(out, return_grad)
    return _class_loss("ce", input, target, weight, ignore_index, reduction, label_smoothing,
                       axis, return_grad, grad_output, out, z_loss, softcap)


@overload
def cross_entropy_grad(input: NDArray[FloatT], target: ArrayLike, *,
                       weight: Optional[ArrayLike] = ..., ignore_index: int = ...,
                       reduction: Reduction = ..., label_smoothing: float = ..., axis: Axis = ...,
                       z_loss: float = ..., softcap: Optional[float] = ...,
                       grad_output: ArrayLike = ..., out: Optional[NDArray[FloatT]] = ...
                      ) -> NDArray[FloatT]: ...
@overload
def cross_entropy_grad(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                       ignore_index: int = ..., reduction: Reduction = ...,
                       label_smoothing: float = ..., axis: Axis = ..., z_loss: float = ...,
                       softcap: Optional[float] = ..., grad_output: ArrayLike = ...,
                       out: Optional[FloatArray] = ...) -> FloatArray: ...

def cross_entropy_grad(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = None,
                       ignore_index: int = -100, reduction: Reduction = "mean",
                       label_smoothing: float = 0.0, axis: Axis = -1, z_loss: float = 0.0,
                       softcap: Optional[float] = None, grad_output: ArrayLike = 1.0,
                       out: Optional[FloatArray] = None) -> Any:
    """Gradient of cross_entropy w.r.t. the logits, scaled by grad_output.

    Takes cross_entropy's parameters (without return_grad) and returns only the gradient, from
    the same fused kernel.

    Returns
    -------
    ndarray of the logits' shape and dtype: grad_output * d(loss)/d(logits).
    """
    r = _fastpath.class_loss(False, input, target, weight, ignore_index, reduction,
                             label_smoothing, axis, z_loss, softcap, True, grad_output, out)
    if r is not _SLOW:
        return r[1]
    return _class_loss("ce", input, target, weight, ignore_index, reduction, label_smoothing,
                       axis, True, grad_output, out, z_loss, softcap)[1]


@overload
def nll_loss(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
             ignore_index: int = ..., reduction: Reduced = ..., axis: Axis = ...,
             return_grad: Literal[False] = ..., grad_output: ArrayLike = ..., out: None = ...
            ) -> Scalar: ...
@overload
def nll_loss(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
             ignore_index: int = ..., reduction: Literal["none"], axis: Axis = ...,
             return_grad: Literal[False] = ..., grad_output: ArrayLike = ..., out: None = ...
            ) -> FloatArray: ...
@overload
def nll_loss(input: NDArray[FloatT], target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
             ignore_index: int = ..., reduction: Reduced = ..., axis: Axis = ...,
             return_grad: Literal[True], grad_output: ArrayLike = ...,
             out: Optional[NDArray[FloatT]] = ...) -> Tuple[Scalar, NDArray[FloatT]]: ...
@overload
def nll_loss(input: NDArray[FloatT], target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
             ignore_index: int = ..., reduction: Literal["none"], axis: Axis = ...,
             return_grad: Literal[True], grad_output: ArrayLike = ...,
             out: Optional[NDArray[FloatT]] = ...) -> Tuple[FloatArray, NDArray[FloatT]]: ...
@overload
def nll_loss(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
             ignore_index: int = ..., reduction: Reduced = ..., axis: Axis = ...,
             return_grad: Literal[True], grad_output: ArrayLike = ...,
             out: Optional[FloatArray] = ...) -> Tuple[Scalar, FloatArray]: ...
@overload
def nll_loss(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
             ignore_index: int = ..., reduction: Literal["none"], axis: Axis = ...,
             return_grad: Literal[True], grad_output: ArrayLike = ...,
             out: Optional[FloatArray] = ...) -> Tuple[FloatArray, FloatArray]: ...
@overload
def nll_loss(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
             ignore_index: int = ..., reduction: Reduction = ..., axis: Axis = ...,
             return_grad: Literal[False] = ..., grad_output: ArrayLike = ..., out: None = ...
            ) -> Loss: ...
@overload
def nll_loss(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
             ignore_index: int = ..., reduction: Reduction = ..., axis: Axis = ...,
             return_grad: bool, grad_output: ArrayLike = ..., out: Optional[FloatArray] = ...
            ) -> LossOrGrad: ...

def nll_loss(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = None,
             ignore_index: int = -100, reduction: Reduction = "mean", axis: Axis = -1,
             return_grad: bool = False, grad_output: ArrayLike = 1.0,
             out: Optional[FloatArray] = None) -> Any:
    """Negative log-likelihood of class-index targets given log-probabilities, as
    torch.nn.functional.nll_loss: loss_n = -weight[y_n] * log_probs[n, y_n].

    Parameters
    ----------
    input : array_like
        Log-probabilities (e.g. log_softmax output); the class axis is `axis`.
    target : array_like of int
        Class indices, the input's shape without the class axis.
    weight, ignore_index, reduction, axis, return_grad, grad_output, out
        As in cross_entropy ("mean" divides by the sum of the targets' weights).

    Returns
    -------
    loss, or (loss, grad) with return_grad=True; grad is -weight[y] * grad_output at the target
    and 0 elsewhere.
    """
    r = _fastpath.class_loss(True, input, target, weight, ignore_index, reduction, 0.0, axis,
                             0.0, None, return_grad, grad_output, out)
    if r is not _SLOW:
        return r
    _check_out_usage(out, return_grad)
    return _class_loss("nll", input, target, weight, ignore_index, reduction, 0.0, axis,
                       return_grad, grad_output, out)


@overload
def nll_loss_grad(input: NDArray[FloatT], target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., reduction: Reduction = ..., axis: Axis = ...,
                  grad_output: ArrayLike = ..., out: Optional[NDArray[FloatT]] = ...
                 ) -> NDArray[FloatT]: ...
@overload
def nll_loss_grad(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., reduction: Reduction = ..., axis: Axis = ...,
                  grad_output: ArrayLike = ..., out: Optional[FloatArray] = ...) -> FloatArray: ...

def nll_loss_grad(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = None,
                  ignore_index: int = -100, reduction: Reduction = "mean", axis: Axis = -1,
                  grad_output: ArrayLike = 1.0, out: Optional[FloatArray] = None) -> Any:
    """Gradient of nll_loss w.r.t. the log-probabilities, scaled by grad_output.

    Takes nll_loss's parameters (without return_grad).

    Returns
    -------
    ndarray of the input's shape and dtype.
    """
    return _class_loss("nll", input, target, weight, ignore_index, reduction, 0.0, axis,
                       True, grad_output, out)[1]


# ================================================================== binary losses

def _binary_loss(kind: Literal["logits", "probs"], inp: ArrayLike, target: ArrayLike,
                 weight: Optional[ArrayLike], pos_weight: Optional[ArrayLike], reduction: str,
                 want_grad: bool, grad_output: ArrayLike, out: Optional[FloatArray]) -> Any:
    reduction = V.reduction(reduction)
    xc, rdt = V.float_input(inp, "input")
    y = V.same_dtype_input(target, xc.dtype, "target")
    V.same_shape(xc, y, "input", "target")
    if kind == "probs":
        V.unit_interval(xc, "input", "binary_cross_entropy")
    w = V.broadcast_weight(weight, xc.shape, xc.dtype)
    pw = V.pos_weight(pos_weight, xc.shape, xc.dtype) if kind == "logits" else None
    n = xc.size
    if pw is not None and pw.shape[0] > 0:
        K = pw.shape[0]
        rows_per_chunk = max(1, BINARY_CHUNK // K)
    else:                       # no pos_weight, or an empty last axis (then n == 0)
        pw, K, rows_per_chunk = None, BINARY_CHUNK, 1
    nchunks = -(-n // (K * rows_per_chunk)) if n else 0
    chunk_sum = np.empty(nchunks, dtype=np.float64)
    loss = np.empty(xc.shape, dtype=xc.dtype) if reduction == "none" else None

    gcoef, gscale = 0.0, None
    grad = pending = None
    if want_grad:
        gcoef, gscale = _grad_scaling(reduction, grad_output, n, xc.shape, xc.dtype)
        grad, pending = V.output_buffer(out, xc.shape, rdt, xc.dtype, (xc, y, w, pw, gscale))

    _binary.binary(kind, xc.reshape(-1), y.reshape(-1),
                   w.reshape(-1) if w is not None else None, pw, K, rows_per_chunk,
                   loss.reshape(-1) if loss is not None else None, chunk_sum,
                   grad.reshape(-1) if grad is not None else None, gcoef, gscale,
                   _nthreads(n, "binary"))

    if loss is not None:                # reduction == "none"
        value = loss.astype(rdt, copy=False)
    else:
        total = _pairwise_sum(chunk_sum)
        value = _scalar(_ieee_div(total, n) if reduction == "mean" else total, xc.dtype)
    if not want_grad:
        return value
    return value, V.deliver(grad, pending, rdt)


@overload
def binary_cross_entropy_with_logits(input: ArrayLike, target: ArrayLike, *,
                                     weight: Optional[ArrayLike] = ...,
                                     pos_weight: Optional[ArrayLike] = ...,
                                     reduction: Reduced = ..., return_grad: Literal[False] = ...,
                                     grad_output: ArrayLike = ..., out: None = ...) -> Scalar: ...
@overload
def binary_cross_entropy_with_logits(input: ArrayLike, target: ArrayLike, *,
                                     weight: Optional[ArrayLike] = ...,
                                     pos_weight: Optional[ArrayLike] = ...,
                                     reduction: Literal["none"], return_grad: Literal[False] = ...,
                                     grad_output: ArrayLike = ..., out: None = ...
                                    ) -> FloatArray: ...
@overload
def binary_cross_entropy_with_logits(input: NDArray[FloatT], target: ArrayLike, *,
                                     weight: Optional[ArrayLike] = ...,
                                     pos_weight: Optional[ArrayLike] = ...,
                                     reduction: Reduced = ..., return_grad: Literal[True],
                                     grad_output: ArrayLike = ...,
                                     out: Optional[NDArray[FloatT]] = ...
                                    ) -> Tuple[Scalar, NDArray[FloatT]]: ...
@overload
def binary_cross_entropy_with_logits(input: NDArray[FloatT], target: ArrayLike, *,
                                     weight: Optional[ArrayLike] = ...,
                                     pos_weight: Optional[ArrayLike] = ...,
                                     reduction: Literal["none"], return_grad: Literal[True],
                                     grad_output: ArrayLike = ...,
                                     out: Optional[NDArray[FloatT]] = ...
                                    ) -> Tuple[FloatArray, NDArray[FloatT]]: ...
@overload
def binary_cross_entropy_with_logits(input: ArrayLike, target: ArrayLike, *,
                                     weight: Optional[ArrayLike] = ...,
                                     pos_weight: Optional[ArrayLike] = ...,
                                     reduction: Reduced = ..., return_grad: Literal[True],
                                     grad_output: ArrayLike = ..., out: Optional[FloatArray] = ...
                                    ) -> Tuple[Scalar, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(input: ArrayLike, target: ArrayLike, *,
                                     weight: Optional[ArrayLike] = ...,
                                     pos_weight: Optional[ArrayLike] = ...,
                                     reduction: Literal["none"], return_grad: Literal[True],
                                     grad_output: ArrayLike = ..., out: Optional[FloatArray] = ...
                                    ) -> Tuple[FloatArray, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(input: ArrayLike, target: ArrayLike, *,
                                     weight: Optional[ArrayLike] = ...,
                                     pos_weight: Optional[ArrayLike] = ...,
                                     reduction: Reduction = ..., return_grad: Literal[False] = ...,
                                     grad_output: ArrayLike = ..., out: None = ...) -> Loss: ...
@overload
def binary_cross_entropy_with_logits(input: ArrayLike, target: ArrayLike, *,
                                     weight: Optional[ArrayLike] = ...,
                                     pos_weight: Optional[ArrayLike] = ...,
                                     reduction: Reduction = ..., return_grad: bool,
                                     grad_output: ArrayLike = ..., out: Optional[FloatArray] = ...
                                    ) -> LossOrGrad: ...

def binary_cross_entropy_with_logits(input: ArrayLike, target: ArrayLike, *,
                                     weight: Optional[ArrayLike] = None,
                                     pos_weight: Optional[ArrayLike] = None,
                                     reduction: Reduction = "mean", return_grad: bool = False,
                                     grad_output: ArrayLike = 1.0,
                                     out: Optional[FloatArray] = None) -> Any:
    """Binary cross-entropy on logits, as torch.nn.functional.binary_cross_entropy_with_logits:
    loss = weight * [(1 - y) x + (1 + (pos_weight - 1) y) softplus(-x)], computed stably.

    Parameters
    ----------
    input, target : array_like of the same shape (logits; targets in [0, 1], soft labels allowed)
    weight : array_like broadcastable to the input, optional
    pos_weight : array_like broadcastable along the last axis, optional
    reduction, return_grad, grad_output, out : as cross_entropy ("mean" divides by the number
        of elements).

    At infinite logits the mathematical limits are returned (0 or +inf), not NaN.
    """
    r = _fastpath.binary_loss("logits", input, target, weight, pos_weight, reduction,
                              return_grad, grad_output, out)
    if r is not _SLOW:
        return r
    _check_out_usage(out, return_grad)
    return _binary_loss("logits", input, target, weight, pos_weight, reduction, return_grad,
                        grad_output, out)


@overload
def binary_cross_entropy_with_logits_grad(input: NDArray[FloatT], target: ArrayLike, *,
                                          weight: Optional[ArrayLike] = ...,
                                          pos_weight: Optional[ArrayLike] = ...,
                                          reduction: Reduction = ..., grad_output: ArrayLike = ...,
                                          out: Optional[NDArray[FloatT]] = ...
                                         ) -> NDArray[FloatT]: ...
@overload
def binary_cross_entropy_with_logits_grad(input: ArrayLike, target: ArrayLike, *,
                                          weight: Optional[ArrayLike] = ...,
                                          pos_weight: Optional[ArrayLike] = ...,
                                          reduction: Reduction = ..., grad_output: ArrayLike = ...,
                                          out: Optional[FloatArray] = ...) -> FloatArray: ...

def binary_cross_entropy_with_logits_grad(input: ArrayLike, target: ArrayLike, *,
                                          weight: Optional[ArrayLike] = None,
                                          pos_weight: Optional[ArrayLike] = None,
                                          reduction: Reduction = "mean",
                                          grad_output: ArrayLike = 1.0,
                                          out: Optional[FloatArray] = None) -> Any:
    """Gradient of binary_cross_entropy_with_logits w.r.t. the logits, scaled by grad_output.

    Takes binary_cross_entropy_with_logits's parameters (without return_grad).

    Returns
    -------
    ndarray of the logits' shape and dtype: weight [(1-y) sigmoid(x) - p y sigmoid(-x)] times
    the reduction's scale, finite at infinite logits.
    """
    r = _fastpath.binary_loss("logits", input, target, weight, pos_weight, reduction, True,
                              grad_output, out)
    if r is not _SLOW:
        return r[1]
    return _binary_loss("logits", input, target, weight, pos_weight, reduction, True,
                        grad_output, out)[1]


@overload
def binary_cross_entropy(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                         reduction: Reduced = ..., return_grad: Literal[False] = ...,
                         grad_output: ArrayLike = ..., out: None = ...) -> Scalar: ...
@overload
def binary_cross_entropy(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                         reduction: Literal["none"], return_grad: Literal[False] = ...,
                         grad_output: ArrayLike = ..., out: None = ...) -> FloatArray: ...
@overload
def binary_cross_entropy(input: NDArray[FloatT], target: ArrayLike, *,
                         weight: Optional[ArrayLike] = ..., reduction: Reduced = ...,
                         return_grad: Literal[True], grad_output: ArrayLike = ...,
                         out: Optional[NDArray[FloatT]] = ...
                        ) -> Tuple[Scalar, NDArray[FloatT]]: ...
@overload
def binary_cross_entropy(input: NDArray[FloatT], target: ArrayLike, *,
                         weight: Optional[ArrayLike] = ..., reduction: Literal["none"],
                         return_grad: Literal[True], grad_output: ArrayLike = ...,
                         out: Optional[NDArray[FloatT]] = ...
                        ) -> Tuple[FloatArray, NDArray[FloatT]]: ...
@overload
def binary_cross_entropy(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                         reduction: Reduced = ..., return_grad: Literal[True],
                         grad_output: ArrayLike = ..., out: Optional[FloatArray] = ...
                        ) -> Tuple[Scalar, FloatArray]: ...
@overload
def binary_cross_entropy(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                         reduction: Literal["none"], return_grad: Literal[True],
                         grad_output: ArrayLike = ..., out: Optional[FloatArray] = ...
                        ) -> Tuple[FloatArray, FloatArray]: ...
@overload
def binary_cross_entropy(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                         reduction: Reduction = ..., return_grad: Literal[False] = ...,
                         grad_output: ArrayLike = ..., out: None = ...) -> Loss: ...
@overload
def binary_cross_entropy(input: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                         reduction: Reduction = ..., return_grad: bool,
                         grad_output: ArrayLike = ..., out: Optional[FloatArray] = ...
                        ) -> LossOrGrad: ...

def binary_cross_entropy(input: ArrayLike, target: ArrayLike, *,
                         weight: Optional[ArrayLike] = None, reduction: Reduction = "mean",
                         return_grad: bool = False, grad_output: ArrayLike = 1.0,
                         out: Optional[FloatArray] = None) -> Any:
    """Binary cross-entropy on probabilities, as torch.nn.functional.binary_cross_entropy:
    loss = -weight [y log p + (1 - y) log(1 - p)] with each log clamped at -100.

    Parameters
    ----------
    input, target : array_like of the same shape
        Probabilities in [0, 1] (outside: ValueError; NaN propagates) and targets.
    weight : array_like broadcastable to the input, optional
    reduction, return_grad, grad_output, out
        As in cross_entropy ("mean" divides by the number of elements).

    Returns
    -------
    loss, or (loss, grad) with return_grad=True; the gradient is
    weight (p - y) / max(p (1 - p), 1e-12), as in torch.
    """
    r = _fastpath.binary_loss("probs", input, target, weight, None, reduction, return_grad,
                              grad_output, out)
    if r is not _SLOW:
        return r
    _check_out_usage(out, return_grad)
    return _binary_loss("probs", input, target, weight, None, reduction, return_grad,
                        grad_output, out)


@overload
def binary_cross_entropy_grad(input: NDArray[FloatT], target: ArrayLike, *,
                              weight: Optional[ArrayLike] = ..., reduction: Reduction = ...,
                              grad_output: ArrayLike = ..., out: Optional[NDArray[FloatT]] = ...
                             ) -> NDArray[FloatT]: ...
@overload
def binary_cross_entropy_grad(input: ArrayLike, target: ArrayLike, *,
                              weight: Optional[ArrayLike] = ..., reduction: Reduction = ...,
                              grad_output: ArrayLike = ..., out: Optional[FloatArray] = ...
                             ) -> FloatArray: ...

def binary_cross_entropy_grad(input: ArrayLike, target: ArrayLike, *,
                              weight: Optional[ArrayLike] = None, reduction: Reduction = "mean",
                              grad_output: ArrayLike = 1.0, out: Optional[FloatArray] = None
                             ) -> Any:
    """Gradient of binary_cross_entropy w.r.t. the probabilities, scaled by grad_output.

    Takes binary_cross_entropy's parameters (without return_grad).

    Returns
    -------
    ndarray of the input's shape and dtype.
    """
    r = _fastpath.binary_loss("probs", input, target, weight, None, reduction, True, grad_output,
                              out)
    if r is not _SLOW:
        return r[1]
    return _binary_loss("probs", input, target, weight, None, reduction, True, grad_output,
                        out)[1]


# ================================================================== from probabilities

@overload
def categorical_cross_entropy(input: ArrayLike, target: ArrayLike, *, eps: Optional[float] = ...,
                              reduction: Reduced = ..., axis: Axis = ...) -> Scalar: ...
@overload
def categorical_cross_entropy(input: ArrayLike, target: ArrayLike, *, eps: Optional[float] = ...,
                              reduction: Literal["none"], axis: Axis = ...) -> FloatArray: ...
@overload
def categorical_cross_entropy(input: ArrayLike, target: ArrayLike, *, eps: Optional[float] = ...,
                              reduction: Reduction = ..., axis: Axis = ...) -> Loss: ...

def categorical_cross_entropy(input: ArrayLike, target: ArrayLike, *, eps: Optional[float] = None,
                              reduction: Reduction = "mean", axis: Axis = -1) -> Any:
    """Cross-entropy of predicted probabilities (Keras' from_logits=False).

    Parameters
    ----------
    input : array_like
        Predicted probabilities; the class axis is `axis`.
    target : array_like
        Class indices (the input's shape without `axis`) or one-hot / probabilities (the
        input's shape).
    eps : float, optional
        Probabilities are clipped to [eps, 1 - eps] before the log; default: the input dtype's
        machine epsilon.
    reduction : {"mean", "sum", "none"}
        "mean" averages over samples.
    axis : int, default -1

    Returns
    -------
    NumPy scalar (mean/sum) or per-sample ndarray ("none").
    """
    what = "categorical_cross_entropy"
    reduction = V.reduction(reduction)
    pc, rdt = V.float_input(V.predicted_probabilities(input, what), "input")
    A, C, B, ax = V.split_axis(pc.shape, axis, "input")
    V.unit_interval(pc, "input", what)
    samples = V.sample_shape(pc.shape, ax)
    e = V.eps_value(eps, rdt)          # the input dtype's epsilon (float16's for float16 input)
    if V.target_format(target, pc.shape, samples) == "index":
        t = V.class_index_target(target, samples, C, None, pc.shape)
        # gather first: one log per sample, not per class
        py = np.take_along_axis(pc, np.expand_dims(t, ax), axis=ax).squeeze(ax)
        per = -np.log(np.clip(py, e, 1.0 - e))
    else:
        q = V.distribution_target(target, pc.shape, pc.dtype, ax, what)
        per = -(q * np.log(np.clip(pc, e, 1.0 - e))).sum(axis=ax, dtype=np.float64)
    per = np.asarray(per, dtype=np.float64).reshape(-1)
    return _reduce(per, reduction, float(per.size), samples, pc.dtype, rdt)


def _top_k_hits(sc: NDArray[Any], t: NDArray[Any], ax: int, k: int) -> NDArray[np.bool_]:
    """Whether each sample's target ranks among its k highest scores (kernel in _div: classes
    ordered before the target are the higher scores and the equal ones of lower index; NaN
    ranks above every number, as np.argmax and np.sort order it)."""
    xc, _ = V.float_input(sc, "input")
    A, C, B, _ = V.split_axis(xc.shape, ax, "input")
    rank = np.empty(t.shape, dtype=np.int64)
    _div.topk_rank(xc.reshape(-1), V.kernel_array(t, np.int64).reshape(-1), A, C, B,
                   rank.reshape(-1), _nthreads(xc.size, "softmax"))
    return rank < k


def accuracy(input: ArrayLike, target: ArrayLike, *, axis: Axis = -1, k: int = 1,
             sample_weight: Optional[ArrayLike] = None) -> float:
    """Top-k accuracy: the (weighted) fraction of samples whose target class is among the k
    highest scores over `axis` (sklearn.metrics.top_k_accuracy_score with normalize=True; k=1
    is plain accuracy, the argmax equals the target).

    Parameters
    ----------
    input : array_like
        Logits or probabilities; the class axis is `axis`.
    target : array_like
        Class indices, or one-hot / probabilities (reduced by argmax).
    axis : int, default -1
    k : int >= 1, default 1
        k >= the number of classes counts every sample as a hit.
    sample_weight : array_like of the per-sample shape, optional
        Weights of the samples: the result is sum(w * hit) / sum(w).

    Returns
    -------
    float in [0, 1] (NaN for an empty batch or zero total weight).

    Notes
    -----
    Ties: classes with equal scores are ranked by class index, lowest first (the order of
    np.argmax and of a stable descending sort), so with k=1 a tie goes to the lowest index.
    sklearn's top_k_accuracy_score ranks ties highest index first; the two agree whenever the
    scores of a sample are distinct.  NaN scores rank above every number, as in np.argmax.
    """
    k = V.positive_int(k, "k")
    sc = np.asarray(input)
    V.float_dtypes(sc.dtype, "scores")
    A, C, B, ax = V.split_axis(sc.shape, axis, "scores")
    samples = V.sample_shape(sc.shape, ax)
    if V.target_format(target, sc.shape, samples) == "index":
        t = V.class_index_target(target, samples, C, None, sc.shape)
    else:
        oh = np.asarray(target)
        V.float_dtypes(oh.dtype, "target")
        V.same_shape(sc, oh, "scores", "target")
        t = oh.argmax(axis=ax) if oh.size else np.empty(samples, dtype=np.int64)
    if t.size == 0:
        return float("nan")
    hits = sc.argmax(axis=ax) == t if k == 1 else _top_k_hits(sc, t, ax, k)
    if sample_weight is None:
        return float(np.mean(hits))
    w = np.asarray(sample_weight)
    V.float_dtypes(w.dtype, "sample_weight")
    if w.shape != tuple(samples):
        raise ValueError(f"sample_weight shape {tuple(w.shape)} does not match the scores' "
                         f"per-sample shape {tuple(samples)} (scores shape {tuple(sc.shape)})")
    w = w.astype(np.float64, copy=False)
    return _ieee_div(float(np.sum(w, where=hits)), float(w.sum()))


# ================================================================== fused linear + cross-entropy

# Default chunk of linear_cross_entropy: at least LINEAR_CE_MIN_ROWS rows (every chunk adds a
# V x H partial into grad_weight and runs three BLAS calls, whose fixed costs and thread
# hand-offs dominate below a few hundred rows: 8192 x 256 x 65536 on 2 threads took 2.3x longer
# with 128-row chunks than with 512), else about LINEAR_CE_CHUNK_ELEMENTS logits, and never more
# than LINEAR_CE_MAX_ELEMENTS logits (the chunk is the function's peak extra memory).
LINEAR_CE_CHUNK_ELEMENTS = 1 << 23
LINEAR_CE_MIN_ROWS = 512
LINEAR_CE_MAX_ELEMENTS = 1 << 26


@overload
def linear_cross_entropy(input: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
                         linear_bias: Optional[ArrayLike] = ..., weight: Optional[ArrayLike] = ...,
                         ignore_index: int = ..., reduction: Reduced = ...,
                         label_smoothing: float = ..., z_loss: float = ...,
                         softcap: Optional[float] = ..., chunk_size: Optional[int] = ...,
                         return_grad: Literal[False] = ..., grad_output: ArrayLike = ...
                        ) -> Scalar: ...
@overload
def linear_cross_entropy(input: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
                         linear_bias: Optional[ArrayLike] = ..., weight: Optional[ArrayLike] = ...,
                         ignore_index: int = ..., reduction: Literal["none"],
                         label_smoothing: float = ..., z_loss: float = ...,
                         softcap: Optional[float] = ..., chunk_size: Optional[int] = ...,
                         return_grad: Literal[False] = ..., grad_output: ArrayLike = ...
                        ) -> FloatArray: ...
@overload
def linear_cross_entropy(input: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
                         linear_bias: None = ..., weight: Optional[ArrayLike] = ...,
                         ignore_index: int = ..., reduction: Reduction = ...,
                         label_smoothing: float = ..., z_loss: float = ...,
                         softcap: Optional[float] = ..., chunk_size: Optional[int] = ...,
                         return_grad: Literal[True], grad_output: ArrayLike = ...
                        ) -> Tuple[Loss, FloatArray, FloatArray]: ...
@overload
def linear_cross_entropy(input: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
                         linear_bias: ArrayLike, weight: Optional[ArrayLike] = ...,
                         ignore_index: int = ..., reduction: Reduction = ...,
                         label_smoothing: float = ..., z_loss: float = ...,
                         softcap: Optional[float] = ..., chunk_size: Optional[int] = ...,
                         return_grad: Literal[True], grad_output: ArrayLike = ...
                        ) -> Tuple[Loss, FloatArray, FloatArray, FloatArray]: ...
@overload
def linear_cross_entropy(input: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
                         linear_bias: Optional[ArrayLike] = ..., weight: Optional[ArrayLike] = ...,
                         ignore_index: int = ..., reduction: Reduction = ...,
                         label_smoothing: float = ..., z_loss: float = ...,
                         softcap: Optional[float] = ..., chunk_size: Optional[int] = ...,
                         return_grad: Literal[True], grad_output: ArrayLike = ...
                        ) -> Tuple[Loss, ...]: ...
@overload
def linear_cross_entropy(input: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
                         linear_bias: Optional[ArrayLike] = ..., weight: Optional[ArrayLike] = ...,
                         ignore_index: int = ..., reduction: Reduction = ...,
                         label_smoothing: float = ..., z_loss: float = ...,
                         softcap: Optional[float] = ..., chunk_size: Optional[int] = ...,
                         return_grad: bool = ..., grad_output: ArrayLike = ...
                        ) -> Union[Loss, Tuple[Loss, ...]]: ...

def linear_cross_entropy(input: ArrayLike, linear_weight: ArrayLike, target: ArrayLike, *,
                         linear_bias: Optional[ArrayLike] = None,
                         weight: Optional[ArrayLike] = None, ignore_index: int = -100,
                         reduction: Reduction = "mean", label_smoothing: float = 0.0,
                         z_loss: float = 0.0, softcap: Optional[float] = None,
                         chunk_size: Optional[int] = None, return_grad: bool = False,
                         grad_output: ArrayLike = 1.0) -> Any:
    """Cross-entropy of ``input @ linear_weight.T + linear_bias`` without materialising the
    full (N, V) logits, as torch.nn.functional.linear_cross_entropy.

    The batch is processed in chunks of rows: a BLAS matmul gives the chunk's logits, the fused
    cross-entropy kernel turns them into the loss and, in place, the logits' gradient, and that
    gradient is folded into grad_input and grad_linear_weight before the next chunk.  Peak extra
    memory is one chunk of logits, not N x V.

    Parameters
    ----------
    input : array_like, shape (N, D) or (D,)
    linear_weight : array_like, shape (V, D)
    target : array_like
        Class indices of shape (N,) (or a scalar for 1-D input), or probabilities (N, V).
    linear_bias : array_like of shape (V,), optional
    weight, ignore_index, reduction, label_smoothing, z_loss, softcap
        As in cross_entropy (classes are the V outputs).
    chunk_size : int, optional
        Rows per chunk; default: at least 512 rows (about 8M logits when that is more), at
        most 64M logits.
    return_grad : bool
        Also return the gradients, computed in the same pass.
    grad_output : float or array_like
        Upstream gradient (per-sample for reduction="none").

    Returns
    -------
    loss, or (loss, grad_input, grad_linear_weight) with return_grad=True, plus
    grad_linear_bias when a bias is given.
    """
    reduction, eps, zl, ignore = _ce_options(reduction, label_smoothing, z_loss, ignore_index)
    X0, in_dt = V.float_input(input, "input")
    W0, w_dt = V.float_input(linear_weight, "linear_weight")
    dtype = np.promote_types(X0.dtype, W0.dtype)
    cap = V.softcap(softcap, dtype)
    X = np.asarray(X0, dtype=dtype)
    Wm = np.asarray(W0, dtype=dtype)
    if Wm.ndim != 2:
        raise ValueError(f"linear_weight must have shape (V, D); got {tuple(Wm.shape)}")
    if X.ndim not in (1, 2) or X.shape[-1] != Wm.shape[1]:
        raise ValueError(f"input shape {tuple(X.shape)} does not match linear_weight shape "
                         f"{tuple(Wm.shape)}: expected (N, {Wm.shape[1]}) or ({Wm.shape[1]},)")
    one_d = X.ndim == 1
    X2 = X.reshape(1, -1) if one_d else X
    N, Vn = X2.shape[0], Wm.shape[0]
    samples = () if one_d else (N,)
    logits_shape = (Vn,) if one_d else (N, Vn)
    bias = None
    b_dt = dtype
    if linear_bias is not None:
        b_dt = V.float_dtypes(np.asarray(linear_bias).dtype, "linear_bias")[1]
        bias = V.same_dtype_input(linear_bias, dtype, "linear_bias")
        if bias.shape != (Vn,):
            raise ValueError(f"linear_bias must have shape ({Vn},); got {tuple(bias.shape)}")
    w = V.class_weight(weight, Vn)
    fmt = V.target_format(target, logits_shape, samples)
    # tgt: flat int64 class indices, or (N, V) probabilities
    tgt: Any        # (the two formats share one name; each kernel call takes its own)
    if fmt == "index":
        tgt = V.class_index_target(target, samples, Vn, ignore, logits_shape).reshape(-1)
        denominator = _index_denominator(tgt, w, ignore)
    else:
        tgt = V.probability_target(target, logits_shape, dtype, ignore).reshape(N, Vn)
        denominator = float(N)
    gcoef, gscale = (_grad_scaling(reduction, grad_output, denominator, samples)
                     if return_grad else (0.0, None))
    if chunk_size is None:
        chunk = max(LINEAR_CE_MIN_ROWS, LINEAR_CE_CHUNK_ELEMENTS // max(Vn, 1))
        chunk = max(1, min(N, chunk, LINEAR_CE_MAX_ELEMENTS // max(Vn, 1)))
    else:
        chunk = V.positive_int(chunk_size, "chunk_size")
    W_sum = float(w.sum()) if w is not None else float(Vn)

    loss = np.empty(N, dtype=np.float64)
    buf = np.empty((min(chunk, N), Vn), dtype=dtype)
    # gradient accumulators (0-row placeholders without return_grad: never written)
    rows = N if return_grad else 0
    gX = np.empty((rows, X2.shape[1]), dtype=dtype)
    gW = np.zeros((Vn if return_grad else 0, Wm.shape[1]), dtype=dtype)
    gW_part = np.empty_like(gW)
    gb = np.zeros(Vn, dtype=np.float64) if bias is not None and return_grad else None
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        L = buf[:e - s]
        np.matmul(X2[s:e], Wm.T, out=L)
        if bias is not None:
            L += bias
        G = L.reshape(-1) if return_grad else None
        gs = gscale[s:e] if gscale is not None else None
        nth = _nthreads(L.size, _ce_family(Vn, 1))
        if L.size == 0:             # V == 0: every target ignored (validated), loss 0
            loss[s:e] = 0.0
        elif fmt == "index":
            _ce.cross_entropy_index(L.reshape(-1), tgt[s:e], w, W_sum, ignore, eps, e - s, Vn, 1,
                                    loss[s:e], G, gcoef, gs, nth, False, zl, cap)
        else:
            _ce.cross_entropy_prob(L.reshape(-1), np.ascontiguousarray(tgt[s:e]).reshape(-1), w,
                                   eps, e - s, Vn, 1, loss[s:e], G, gcoef, gs, nth, zl, cap)
        if return_grad:             # L now holds d(loss)/d(logits) for the chunk
            np.matmul(L, Wm, out=gX[s:e])
            np.matmul(L.T, X2[s:e], out=gW_part)
            gW += gW_part
            if gb is not None:
                gb += L.sum(axis=0, dtype=np.float64)

    value = _reduce(loss, reduction, denominator, samples, dtype)
    if not return_grad:
        return value
    grads = [gX.reshape(X.shape).astype(in_dt, copy=False), gW.astype(w_dt, copy=False)]
    if gb is not None:
        grads.append(gb.astype(b_dt))
    return (value, *grads)
