"""PyTorch adapter: fastce's fused CPU kernels as ``torch.autograd.Function``s.

Drop-in replacements for the ``torch.nn.functional`` losses, with the same argument names::

    import fastce.torch as fct
    loss = fct.cross_entropy(logits, target, label_smoothing=0.1)
    loss.backward()

The forward pass computes the loss and its gradient in one fused pass (the tensors are shared
with NumPy without copying when contiguous) and saves the gradient; backward only scales it by
the upstream gradient.  The class dimension is dim 1 for inputs of two or more dimensions, as
in torch.  CPU tensors only: CUDA (or any other device) raises ValueError.

Differences from torch.nn.functional: gradients flow to ``input`` (and ``linear_weight`` /
``linear_bias``) only -- a ``target``, ``weight`` or ``pos_weight`` that requires grad raises
NotImplementedError; double backward is not supported; fastce's documented semantics apply at
infinite/NaN inputs (see the README).  Extra keyword options: ``z_loss`` and ``softcap`` on
the cross-entropies, ``chunk_size`` on ``linear_cross_entropy``.

This module imports torch; ``import fastce`` alone never does.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from . import _validate as V
from . import functional as _F

__all__ = [
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy",
    "linear_cross_entropy",
]

Tensor = torch.Tensor
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


# ============================================================================ conversions

def _device_of(t: Tensor) -> torch.device:
    return t.device


_cpu_device_of = _device_of      # (tests replace _device_of to simulate an accelerator)


def _check_cpu(t: Optional[Tensor], name: str) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if t.is_cpu and _device_of is _cpu_device_of:
        return                    # (the common case without building a device object)
    dev = _device_of(t)
    if dev.type != "cpu":
        raise ValueError(
            f"fastce.torch runs on CPU tensors only, but {name} is on device '{dev}'. CUDA and "
            f"other accelerators are not supported: use torch.nn.functional for CUDA tensors, "
            f"or move the tensors to the CPU with .cpu()")


def _check_no_grad(t: Optional[Tensor], name: str) -> None:
    if t is not None and t.requires_grad and torch.is_grad_enabled():
        raise NotImplementedError(
            f"fastce.torch computes gradients with respect to the input only, but {name} "
            f"requires grad: pass {name}.detach() (or use torch.nn.functional)")


def _float_numpy(t: Tensor, name: str) -> np.ndarray:
    """A float tensor as a NumPy array sharing its memory when possible.

    float16/32/64 are shared without a copy (non-contiguous tensors give a strided view that
    fastce copies once); bfloat16 is converted to float32.
    """
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {t.dtype}")
    t = t.detach()
    if t.dtype not in _NUMPY_FLOATS:
        t = t.to(torch.float32)
    if t.is_neg():                # a lazily negated view (torch's neg bit): materialise it
        t = t.resolve_neg()
    return t.numpy()              # (a real tensor never has the conjugate bit)


def _any_numpy(t: Tensor) -> np.ndarray:
    """Targets / weights: floats as _float_numpy, integers and bools as they are."""
    t = t.detach()
    if t.is_complex():
        raise TypeError(f"complex tensors are not supported; got dtype {t.dtype}")
    if t.is_floating_point() and t.dtype not in _NUMPY_FLOATS:
        t = t.to(torch.float32)
    return t.resolve_neg().numpy()


def _opt_numpy(t: Optional[Tensor], name: str) -> Optional[np.ndarray]:
    if t is None:
        return None
    _check_cpu(t, name)
    _check_no_grad(t, name)
    return _any_numpy(t)


def _to_tensor(a: Any, dtype: torch.dtype) -> Tensor:
    """A NumPy result (scalar or array) as a tensor of `dtype` (no copy when dtypes agree)."""
    arr = np.asarray(a)   # (np.ascontiguousarray would turn a 0-d result into shape (1,))
    if not arr.flags.c_contiguous:
        arr = arr.copy()
    t = torch.from_numpy(arr)
    return t if t.dtype == dtype else t.to(dtype)


def _legacy_reduction(size_average: Optional[bool], reduce: Optional[bool], reduction: str) -> str:
    """torch's deprecated size_average/reduce arguments, mapped as torch does."""
    if size_average is None and reduce is None:
        return V.reduction(reduction)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def _class_axis(ndim: int) -> int:
    """torch's class dimension: 1 for batched input, 0 for an unbatched (C,) input."""
    return 1 if ndim >= 2 else 0


# ============================================================================ autograd functions

class _ScaledGrad(torch.autograd.Function):
    """Shared backward: the saved gradient times grad_output (per sample for "none")."""

    @staticmethod
    @once_differentiable   # (its typing makes the wrapped method's parameters positional-only)
    def backward(  # pyright: ignore[reportIncompatibleMethodOverride]
            ctx: Any, grad_output: Tensor) -> Tuple[Optional[Tensor], ...]:
        (grad,) = ctx.saved_tensors
        go = grad_output
        if ctx.reduction == "none" and ctx.class_dim is not None and grad.dim() >= 2:
            go = go.unsqueeze(ctx.class_dim)
        return (grad * go.to(grad.dtype),) + (None,) * ctx.n_other


class _ClassLoss(_ScaledGrad):
    """cross_entropy / nll_loss."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, target: Tensor, kind: str, kwargs: Dict[str, Any],
                need_grad: bool) -> Tensor:
        x = _float_numpy(input, "input")
        t = _any_numpy(target)
        axis = _class_axis(x.ndim)
        fn = _F.cross_entropy if kind == "ce" else _F.nll_loss
        ctx.reduction = kwargs["reduction"]
        ctx.class_dim = axis
        ctx.n_other = 4
        if need_grad and ctx.needs_input_grad[0]:
            loss, grad = fn(x, t, axis=axis, return_grad=True, **kwargs)
            ctx.save_for_backward(_to_tensor(grad, input.dtype))
        else:
            loss = fn(x, t, axis=axis, **kwargs)
        return _to_tensor(loss, input.dtype)


class _BinaryLoss(_ScaledGrad):
    """binary_cross_entropy_with_logits / binary_cross_entropy."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, target: Tensor, kind: str, kwargs: Dict[str, Any],
                need_grad: bool) -> Tensor:
        x = _float_numpy(input, "input")
        y = _any_numpy(target)
        fn = _F.binary_cross_entropy_with_logits if kind == "logits" else _F.binary_cross_entropy
        ctx.reduction = kwargs["reduction"]
        ctx.class_dim = None
        ctx.n_other = 4
        if need_grad and ctx.needs_input_grad[0]:
            loss, grad = fn(x, y, return_grad=True, **kwargs)
            ctx.save_for_backward(_to_tensor(grad, input.dtype))
        else:
            loss = fn(x, y, **kwargs)
        return _to_tensor(loss, input.dtype)


def _need_grad(*tensors: Optional[Tensor]) -> bool:
    """Whether autograd will record this call (inside forward, grad mode is always off)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _prep_input(input: Tensor, target: Tensor) -> None:
    _check_cpu(input, "input")
    _check_cpu(target, "target")
    _check_no_grad(target, "target")


def cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                  size_average: Optional[bool] = None, ignore_index: int = -100,
                  reduce: Optional[bool] = None, reduction: str = "mean",
                  label_smoothing: float = 0.0, *, z_loss: float = 0.0,
                  softcap: Optional[float] = None) -> Tensor:
    """Cross-entropy of logits and targets, as ``torch.nn.functional.cross_entropy``.

    Parameters
    ----------
    input : Tensor
        Logits of shape (C,), (N, C) or (N, C, d1, ...) (class dimension 1), CPU, floating.
    target : Tensor
        Class indices of shape (), (N,) or (N, d1, ...), or class probabilities of the
        input's shape.
    weight : Tensor of shape (C,), optional
        Per-class rescaling weights.
    size_average, reduce : bool, optional
        Deprecated torch arguments, mapped to `reduction` as torch does.
    ignore_index : int, default -100
    reduction : {"mean", "sum", "none"}, default "mean"
    label_smoothing : float in [0, 1], default 0.0
    z_loss : float, default 0.0
        fastce extension: adds ``z_loss * logsumexp(x)**2`` per counted sample.
    softcap : float, optional
        fastce extension: logits pass through ``softcap * tanh(x / softcap)`` first.

    Returns
    -------
    Tensor
        Scalar (mean/sum) or the per-sample losses ("none"), in the input's dtype.
    """
    _prep_input(input, target)
    kw: Dict[str, Any] = dict(weight=_opt_numpy(weight, "weight"), ignore_index=ignore_index,
                    reduction=_legacy_reduction(size_average, reduce, reduction),
                    label_smoothing=label_smoothing)
    kw.update(z_loss=z_loss, softcap=softcap)
    return _ClassLoss.apply(input, target, "ce", kw, _need_grad(input))


def nll_loss(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
             size_average: Optional[bool] = None, ignore_index: int = -100,
             reduce: Optional[bool] = None, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood loss, as ``torch.nn.functional.nll_loss``.

    Parameters
    ----------
    input : Tensor
        Log-probabilities of shape (C,), (N, C) or (N, C, d1, ...) (class dimension 1).
    target : Tensor
        Integer class indices of shape (), (N,) or (N, d1, ...).
    weight : Tensor of shape (C,), optional
    size_average, reduce : bool, optional
        Deprecated torch arguments, mapped to `reduction` as torch does.
    ignore_index : int, default -100
    reduction : {"mean", "sum", "none"}, default "mean"

    Returns
    -------
    Tensor
        Scalar (mean/sum) or the per-sample losses ("none"), in the input's dtype.
    """
    _prep_input(input, target)
    kw = dict(weight=_opt_numpy(weight, "weight"), ignore_index=ignore_index,
              reduction=_legacy_reduction(size_average, reduce, reduction))
    return _ClassLoss.apply(input, target, "nll", kw, _need_grad(input))


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor,
                                     weight: Optional[Tensor] = None,
                                     size_average: Optional[bool] = None,
                                     reduce: Optional[bool] = None, reduction: str = "mean",
                                     pos_weight: Optional[Tensor] = None) -> Tensor:
    """Binary cross-entropy on logits, as ``torch.nn.functional.binary_cross_entropy_with_logits``.

    Parameters
    ----------
    input : Tensor
        Logits of any shape.
    target : Tensor
        Targets in [0, 1] of the input's shape.
    weight : Tensor, optional
        Elementwise weights broadcastable to the input.
    size_average, reduce : bool, optional
        Deprecated torch arguments, mapped to `reduction` as torch does.
    reduction : {"mean", "sum", "none"}, default "mean"
    pos_weight : Tensor, optional
        Weight of positive examples, broadcast along the last dimension.

    Returns
    -------
    Tensor
        Scalar (mean/sum) or elementwise losses ("none"), in the input's dtype.
    """
    _prep_input(input, target)
    kw = dict(weight=_opt_numpy(weight, "weight"), pos_weight=_opt_numpy(pos_weight, "pos_weight"),
              reduction=_legacy_reduction(size_average, reduce, reduction))
    return _BinaryLoss.apply(input, target, "logits", kw, _need_grad(input))


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                         size_average: Optional[bool] = None, reduce: Optional[bool] = None,
                         reduction: str = "mean") -> Tensor:
    """Binary cross-entropy on probabilities, as ``torch.nn.functional.binary_cross_entropy``.

    Parameters
    ----------
    input : Tensor
        Probabilities in [0, 1] (outside raises ValueError; NaN propagates).
    target : Tensor
        Targets of the input's shape.
    weight : Tensor, optional
        Elementwise weights broadcastable to the input.
    size_average, reduce : bool, optional
        Deprecated torch arguments, mapped to `reduction` as torch does.
    reduction : {"mean", "sum", "none"}, default "mean"

    Returns
    -------
    Tensor
        Scalar (mean/sum) or elementwise losses ("none"), in the input's dtype.
    """
    _prep_input(input, target)
    kw = dict(weight=_opt_numpy(weight, "weight"),
              reduction=_legacy_reduction(size_average, reduce, reduction))
    return _BinaryLoss.apply(input, target, "probs", kw, _need_grad(input))


# ============================================================================ linear CE

def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, input: Tensor, linear_weight: Tensor, linear_bias: Optional[Tensor],
                target: Tensor, kwargs: Dict[str, Any], need_grad: bool) -> Tensor:
        cdt = _compute_dtype(input.dtype)
        x = _float_numpy(input.to(cdt), "input")
        W = _float_numpy(linear_weight.to(cdt), "linear_weight")
        b = None if linear_bias is None else _float_numpy(linear_bias.to(cdt), "linear_bias")
        t = _any_numpy(target)
        reduction = kwargs["reduction"]
        ctx.reduction = reduction
        ctx.has_bias = b is not None
        need = need_grad and any(ctx.needs_input_grad[:3])
        if reduction == "none" and need:
            # grad_output is per sample: the weight gradient is sum_n g_n dl_n/dW, which cannot
            # be rescaled from a saved total, so backward recomputes the logits chunk by chunk.
            loss = _F.linear_cross_entropy(x, W, t, linear_bias=b, **kwargs)
            ctx.save_for_backward(input, linear_weight, linear_bias)
            ctx.target = t
            ctx.kwargs = kwargs
        elif need:
            res = _F.linear_cross_entropy(x, W, t, linear_bias=b, return_grad=True, **kwargs)
            loss = res[0]
            grads = [_to_tensor(res[1], input.dtype), _to_tensor(res[2], linear_weight.dtype)]
            if b is not None:
                grads.append(_to_tensor(res[3], linear_bias.dtype))  # type: ignore[union-attr]
            ctx.save_for_backward(*grads)
        else:
            loss = _F.linear_cross_entropy(x, W, t, linear_bias=b, **kwargs)
        return _to_tensor(loss, input.dtype)

    @staticmethod
    @once_differentiable   # (its typing makes the wrapped method's parameters positional-only)
    def backward(  # pyright: ignore[reportIncompatibleMethodOverride]
            ctx: Any, grad_output: Tensor) -> Tuple[Optional[Tensor], ...]:
        nig = ctx.needs_input_grad
        if ctx.reduction != "none":
            saved = ctx.saved_tensors
            gx, gW = saved[0], saved[1]
            gb = saved[2] if ctx.has_bias else None
            go = grad_output
            return (gx * go.to(gx.dtype) if nig[0] else None,
                    gW * go.to(gW.dtype) if nig[1] else None,
                    gb * go.to(gb.dtype) if gb is not None and nig[2] else None,
                    None, None, None)
        input, linear_weight, linear_bias = ctx.saved_tensors
        gx, gW, gb = _linear_ce_backward_none(input, linear_weight, linear_bias, ctx.target,
                                              grad_output, ctx.kwargs)
        return (gx if nig[0] else None, gW if nig[1] else None,
                gb if linear_bias is not None and nig[2] else None, None, None, None)


def _linear_ce_backward_none(input: Tensor, linear_weight: Tensor, linear_bias: Optional[Tensor],
                             target: np.ndarray, grad_output: Tensor, kwargs: Dict[str, Any]
                             ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Gradients of sum_n g_n l_n with per-sample g, one chunk of logits at a time."""
    cdt = _compute_dtype(input.dtype)
    x = input.detach().to(cdt)
    W = linear_weight.detach().to(cdt)
    b = None if linear_bias is None else linear_bias.detach().to(cdt)
    g = grad_output.detach().to(cdt).numpy()
    N, V = x.shape[0], W.shape[0]
    chunk = kwargs.get("chunk_size") or max(1, min(N, (1 << 22) // max(V, 1)))
    ce_kw = {k: v for k, v in kwargs.items() if k not in ("chunk_size", "reduction")}
    gx = torch.empty_like(x)
    gW = torch.zeros_like(W)
    gb = torch.zeros_like(b) if b is not None else None
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        logits = x[s:e] @ W.T
        if b is not None:
            logits += b
        G = torch.from_numpy(_F.cross_entropy_grad(logits.numpy(), target[s:e], reduction="none",
                                                   grad_output=g[s:e], out=logits.numpy(),
                                                   **ce_kw))
        torch.mm(G, W, out=gx[s:e])
        gW.addmm_(G.T, x[s:e])
        if gb is not None:
            gb += G.sum(0)
    return (gx.to(input.dtype), gW.to(linear_weight.dtype),
            None if gb is None else gb.to(linear_bias.dtype))  # type: ignore[union-attr]


def linear_cross_entropy(input: Tensor, linear_weight: Tensor, target: Tensor, *,
                         linear_bias: Optional[Tensor] = None, weight: Optional[Tensor] = None,
                         reduction: str = "mean", ignore_index: Optional[int] = None,
                         label_smoothing: float = 0.0, options: Any = None, z_loss: float = 0.0,
                         softcap: Optional[float] = None, chunk_size: Optional[int] = None
                         ) -> Tensor:
    """Cross-entropy of ``input @ linear_weight.T + linear_bias`` without materialising the
    logits, as ``torch.nn.functional.linear_cross_entropy``.

    Parameters
    ----------
    input : Tensor of shape (N, D)
    linear_weight : Tensor of shape (V, D)
    target : Tensor
        Class indices of shape (N,) or class probabilities of shape (N, V).
    linear_bias : Tensor of shape (V,), optional
    weight : Tensor of shape (V,), optional
        Per-class rescaling weights.
    reduction : {"mean", "sum", "none"}, default "mean"
    ignore_index : int, optional
        None (torch's default) means -100.
    label_smoothing : float in [0, 1], default 0.0
    options : optional
        torch's chunking options; accepted for compatibility and ignored (fastce always
        chunks; see `chunk_size`).
    z_loss, softcap : float, optional
        fastce extensions, as in :func:`cross_entropy`.
    chunk_size : int, optional
        Rows of logits materialised at a time (fastce picks one by default).

    Returns
    -------
    Tensor
        Scalar (mean/sum) or per-sample losses of shape (N,) ("none"), in the input's dtype.
    """
    for t, name in ((input, "input"), (linear_weight, "linear_weight"),
                    (linear_bias, "linear_bias"), (target, "target")):
        _check_cpu(t, name)
    _check_no_grad(target, "target")
    if input.dim() != 2:
        raise ValueError(f"fastce.torch.linear_cross_entropy needs input of shape (N, D); got "
                         f"{tuple(input.shape)}")
    V.reduction(reduction)
    kw: Dict[str, Any] = dict(weight=_opt_numpy(weight, "weight"),
                    ignore_index=-100 if ignore_index is None else ignore_index,
                    reduction=reduction, label_smoothing=label_smoothing)
    kw.update(z_loss=z_loss, softcap=softcap)
    if chunk_size is not None:
        kw["chunk_size"] = chunk_size
    return _LinearCE.apply(input, linear_weight, linear_bias, target, kw,
                           _need_grad(input, linear_weight, linear_bias))


# ============================================================================ beyond cross-entropy
# kl_div_logits, entropy and sigmoid_focal_loss (fastce.divergence) as autograd Functions.
# Same pattern as above: one fused forward computes the loss and the gradient, backward scales
# the saved gradient.  Gradients flow to the first argument only.

__all__ += ["kl_div_logits", "entropy", "sigmoid_focal_loss"]


class _DivLoss(_ScaledGrad):
    """kl_div_logits (other = teacher) / entropy (other = None)."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, other: Optional[Tensor], kind: str, kwargs: dict[str, Any],
                need_grad: bool) -> Tensor:
        from . import divergence as _D
        x = _float_numpy(input, "input")
        args = (x,) if other is None else (x, _float_numpy(other, kwargs.pop("_other_name")))
        fn = _D.kl_div_logits if kind == "kl" else _D.entropy
        ctx.reduction = "none" if kwargs["reduction"] == "none" else "mean"
        ctx.class_dim = kwargs.get("axis")
        ctx.n_other = 4
        if need_grad and ctx.needs_input_grad[0]:
            res: Any = fn(*args, return_grad=True, **kwargs)
            loss, grad = res
            ctx.save_for_backward(_to_tensor(grad, input.dtype))
        else:
            loss = fn(*args, **kwargs)
        return _to_tensor(loss, input.dtype)


def kl_div_logits(input: Tensor, target: Tensor, *, temperature: float = 1.0,
                  reduction: str = "batchmean", dim: int = -1) -> Tensor:
    """Distillation loss ``T**2 * KL(softmax(teacher/T) || softmax(student/T))`` per sample,
    fused (see :func:`fastce.kl_div_logits`).

    Parameters
    ----------
    input : Tensor
        The student's logits, CPU, floating; receives the gradient.
    target : Tensor of the same shape
        The teacher's logits; must not require grad (detach it, as distillation does anyway).
    temperature : float > 0, default 1
    reduction : {"batchmean", "mean", "sum", "none"}, default "batchmean"
        "batchmean" (= "mean") averages over samples.
    dim : int, default -1
        The class dimension.

    Returns
    -------
    Tensor
        Scalar, or the per-sample losses ("none"), in the input's dtype.
    """
    from .divergence import KL_LOGITS_REDUCTIONS
    _check_cpu(input, "input")
    _check_cpu(target, "target")
    _check_no_grad(target, "target (the teacher logits)")
    # the options' rules (fastce._validate) before any conversion; the dtype-dependent part of
    # the temperature rule runs again in fastce.kl_div_logits
    kw: dict[str, Any] = dict(temperature=V.temperature(temperature)[0],
                              reduction=V.choice_option(reduction, KL_LOGITS_REDUCTIONS),
                              axis=V.integer_option(dim, "dim"),
                              _other_name="target (teacher logits)")
    return _DivLoss.apply(input, target, "kl", kw, _need_grad(input))


def entropy(input: Tensor, dim: int = -1, reduction: str = "none") -> Tensor:
    """Shannon entropy (nats) of ``softmax(logits, dim)``, accurate for confident rows (see
    :func:`fastce.entropy`).

    Parameters
    ----------
    input : Tensor
        Logits, CPU, floating.
    dim : int, default -1
        The class dimension.
    reduction : {"none", "mean", "sum"}, default "none"

    Returns
    -------
    Tensor
        Per-sample entropies ("none") or a scalar, in the logits' dtype.
    """
    _check_cpu(input, "input")
    kw: dict[str, Any] = dict(axis=V.integer_option(dim, "dim"), reduction=V.reduction(reduction))
    return _DivLoss.apply(input, None, "entropy", kw, _need_grad(input))


def sigmoid_focal_loss(inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "none") -> Tensor:
    """Sigmoid focal loss, as ``torchvision.ops.sigmoid_focal_loss`` (same arguments), fused
    and stable for infinite logits (see :func:`fastce.sigmoid_focal_loss`).

    Parameters
    ----------
    inputs : Tensor
        Logits of any shape, CPU, floating.
    targets : Tensor of the same shape
        Labels in [0, 1]; must not require grad.
    alpha : float, default 0.25
        Weight of the positives in [0, 1]; negative disables the weighting.
    gamma : float >= 0, default 2
    reduction : {"none", "mean", "sum"}, default "none"

    Returns
    -------
    Tensor
        Elementwise losses ("none") or a scalar, in the inputs' dtype.
    """
    _prep_input(inputs, targets)
    kw: dict[str, Any] = dict(alpha=V.focal_alpha(alpha), gamma=V.focal_gamma(gamma),
                              reduction=V.reduction(reduction))
    y = _any_numpy(targets)
    return _FocalLoss.apply(inputs, y, kw, _need_grad(inputs))


class _FocalLoss(_ScaledGrad):
    @staticmethod
    def forward(ctx: Any, input: Tensor, target: np.ndarray, kwargs: dict[str, Any],
                need_grad: bool) -> Tensor:
        from . import divergence as _D
        x = _float_numpy(input, "inputs")
        ctx.reduction = kwargs["reduction"]
        ctx.class_dim = None
        ctx.n_other = 3
        if need_grad and ctx.needs_input_grad[0]:
            res: Any = _D.sigmoid_focal_loss(x, target, return_grad=True, **kwargs)
            loss, grad = res
            ctx.save_for_backward(_to_tensor(grad, input.dtype))
        else:
            loss = _D.sigmoid_focal_loss(x, target, **kwargs)
        return _to_tensor(loss, input.dtype)
