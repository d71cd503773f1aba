"""Loss objects for NumPy trainers: ``loss = crit(input, target)``, then ``crit.backward()``.

Each criterion is constructed with the options of its function in :mod:`fastce.functional`.
The forward call computes the loss *and*, in the same fused kernel pass, the gradient with
``grad_output=1``; :meth:`~_Criterion.backward` then only rescales that stored gradient, so a
training step costs one pass over the logits::

    crit = fastce.CrossEntropyLoss(label_smoothing=0.1)
    for x, y in batches:
        scores = model.forward(x)
        loss = crit(scores, y)          # loss and d(loss)/d(scores), one pass
        model.backward(crit.backward())

The criterion keeps no reference to ``input`` or ``target``: it stores only the gradient, and
hands that buffer over to the caller on ``backward()`` (pass ``retain=True`` to keep it for
further ``backward`` calls).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Generic, List, Literal, Optional, Tuple, TypeVar, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _fastpath
from . import _validate as V
from . import functional as _F

__all__ = ["CrossEntropyLoss", "NLLLoss", "BCEWithLogitsLoss", "BCELoss"]

# A criterion's loss type follows its reduction: a NumPy scalar for "mean"/"sum" (the
# default), an array for "none".  The overloaded constructors pick it from the literal, so
# `float(CrossEntropyLoss()(x, t))` and `CrossEntropyLoss(reduction="none")(x, t).shape` both
# type-check, and `reduction="avg"` does not.
LossT = TypeVar("LossT", np.floating[Any], NDArray[np.floating[Any]])
_Scalar = np.floating[Any]
_Array = NDArray[np.floating[Any]]
_Reduced = Literal["mean", "sum"]
_None = Literal["none"]
_Reduction = Literal["mean", "sum", "none"]
_Options = Dict[str, Any]
_ReprItems = List[Tuple[str, Any]]


class _Criterion(Generic[LossT]):
    """Shared machinery: one fused loss+grad call in forward, rescaling in backward."""

    axis: int                  # the class axis (class-index criteria only)
    # The fastce.functional loss function, always called with return_grad=True (the subclasses'
    # assignments ignore the overloads that return the loss alone).
    _fn: Callable[..., Tuple[LossT, _Array]]
    _class_axis: bool = True   # per-sample losses drop the class axis (CE/NLL) or not (BCE)

    def __init__(self, reduction: _Reduction) -> None:
        self.reduction = V.reduction(reduction)
        self._grad: Optional[NDArray[np.floating[Any]]] = None
        self._axis: int = 0                # normalised class axis of the last input

    # -- options passed to the function (subclasses) -------------------------------------
    def _kwargs(self) -> _Options:
        raise NotImplementedError

    def _fast(self, input: Any, target: Any, out: Any) -> Any:
        """(loss, grad) from the per-call fast path, or _fastpath.SLOW (then the function's
        general path runs).  Subclasses with a fast path override this."""
        return _fastpath.SLOW

    # -- public API ----------------------------------------------------------------------
    def __call__(self, input: ArrayLike, target: ArrayLike, *,
                 out: Optional[NDArray[np.floating[Any]]] = None) -> LossT:
        """Same as :meth:`forward`."""
        return self.forward(input, target, out=out)

    def forward(self, input: ArrayLike, target: ArrayLike, *,
                out: Optional[NDArray[np.floating[Any]]] = None) -> LossT:
        """Compute the loss, and the gradient for :meth:`backward` in the same pass.

        Parameters
        ----------
        input : array_like
            The loss function's first argument (logits, log-probabilities or probabilities).
        target : array_like
            Targets, as for the loss function.
        out : ndarray, optional
            Buffer that receives the gradient (the input's shape and float dtype,
            C-contiguous, writable); may be ``input`` itself for an in-place gradient, which
            then overwrites the input.

        Returns
        -------
        loss : NumPy scalar (``"mean"``/``"sum"``) or ndarray of the per-sample shape
            (``"none"``).
        """
        self._grad = None   # release the previous step's buffer before allocating a new one
        r = self._fast(input, target, out)
        if r is _fastpath.SLOW:
            r = type(self)._fn(input, target, reduction=self.reduction, return_grad=True,
                               out=out, **self._kwargs())
        loss: LossT = r[0]
        grad: NDArray[np.floating[Any]] = r[1]
        if self._class_axis and self.reduction == "none":
            ndim = grad.ndim
            self._axis = int(self.axis) % ndim if ndim else 0
        self._grad = grad
        return loss

    def backward(self, grad_output: ArrayLike = 1.0, *, retain: bool = False
                 ) -> NDArray[np.floating[Any]]:
        """Gradient of the last forward's loss w.r.t. its input, scaled by `grad_output`.

        Parameters
        ----------
        grad_output : float or array_like, default 1.0
            Upstream gradient: a scalar for ``reduction="mean"``/``"sum"``; for
            ``reduction="none"`` an array broadcastable to the per-sample loss shape (a scalar
            is broadcast).
        retain : bool, default False
            Keep the stored gradient so ``backward`` can be called again (the result is then
            a new array).  By default the stored buffer is scaled in place, returned, and
            released, and a second ``backward`` without a new ``forward`` raises.

        Returns
        -------
        ndarray
            d(grad_output * loss)/d(input), of the input's shape and float dtype.

        Raises
        ------
        RuntimeError
            If no forward pass has stored a gradient (never called, or already consumed by a
            previous ``backward`` without ``retain=True``).
        ValueError
            If `grad_output` has the wrong shape.
        """
        grad = self._grad
        if grad is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before forward() (or the stored "
                f"gradient was already consumed by a backward() without retain=True): call "
                f"the criterion on (input, target) first")
        scale = self._scale(grad_output, grad)
        if retain:
            return grad.copy() if scale is None else (grad * scale).astype(grad.dtype, copy=False)
        self._grad = None
        if scale is not None:
            np.multiply(grad, scale, out=grad, casting="unsafe")
        return grad

    @property
    def has_grad(self) -> bool:
        """True when a gradient from ``forward`` is stored and ``backward`` may be called."""
        return self._grad is not None

    # -- helpers -------------------------------------------------------------------------
    def _scale(self, grad_output: ArrayLike, grad: NDArray[Any]) -> Any:
        """The factor to multiply the stored gradient by (None when it is exactly 1).

        grad_output follows the functions' rules (fastce._validate); the rescale runs in at
        least float32 (float16 gradients are rescaled in float32)."""
        if (type(grad_output) is float or type(grad_output) is int) and grad_output == 1:
            return None                    # the per-step default, without NumPy calls
        cdt = np.result_type(grad.dtype, np.float32)
        if self.reduction != "none" or np.ndim(grad_output) == 0:
            s = V.grad_output_scalar(grad_output)
            return None if s == 1.0 else np.asarray(s, dtype=cdt)
        if self._class_axis:
            samples = grad.shape[:self._axis] + grad.shape[self._axis + 1:]
        else:
            samples = grad.shape
        g = V.grad_output_array(grad_output, samples, cdt).reshape(samples)
        return np.expand_dims(g, self._axis) if self._class_axis else g

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._repr_items())
        return f"{type(self).__name__}({opts})"

    def _repr_items(self) -> _ReprItems:
        return [("reduction", self.reduction)]


def _opt_weight(weight: Optional[ArrayLike], name: str = "weight") -> Optional[NDArray[Any]]:
    return None if weight is None else V.plain_array(weight, name)


def _class_repr_items(crit: Any) -> _ReprItems:
    """repr options shared by the class-index criteria (CrossEntropyLoss, NLLLoss)."""
    items = [("reduction", crit.reduction), ("axis", crit.axis)]
    if crit.weight is not None:
        items.append(("weight", crit.weight.tolist()))
    if crit.ignore_index != -100:
        items.append(("ignore_index", crit.ignore_index))
    return items


class CrossEntropyLoss(_Criterion[LossT]):
    """Cross-entropy of logits and targets as a criterion object (``torch.nn.CrossEntropyLoss``).

    Parameters
    ----------
    weight : array_like of shape (C,), optional
        Per-class rescaling weights.
    ignore_index : int, default -100
        Class-index targets equal to it contribute neither loss nor gradient.
    reduction : {"mean", "sum", "none"}, default "mean"
    label_smoothing : float in [0, 1], default 0.0
    axis : int, default -1
        The class axis of the logits (use 1 for PyTorch's (N, C, d1, ...) layout).
    z_loss : float, default 0.0
        Coefficient of the auxiliary ``logsumexp(x)**2`` loss (PaLM).
    softcap : float, optional
        Logits pass through ``softcap * tanh(x / softcap)`` first (Gemma 2).

    Examples
    --------
    >>> import numpy as np, fastce
    >>> crit = fastce.CrossEntropyLoss()
    >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3], [0.1, 0.2, 3.0]])
    >>> round(float(crit(logits, np.array([0, 1, 2]))), 8)
    0.24889366
    >>> crit.backward().shape
    (3, 3)
    """

    _fn = staticmethod(_F.cross_entropy)  # type: ignore[assignment]

    @overload
    def __init__(self: CrossEntropyLoss[_Scalar], weight: Optional[ArrayLike] = ..., *,
                 ignore_index: int = ..., reduction: _Reduced = ..., label_smoothing: float = ...,
                 axis: int = ..., z_loss: float = ..., softcap: Optional[float] = ...) -> None: ...
    @overload
    def __init__(self: CrossEntropyLoss[_Array], weight: Optional[ArrayLike] = ..., *,
                 ignore_index: int = ..., reduction: _None, label_smoothing: float = ...,
                 axis: int = ..., z_loss: float = ..., softcap: Optional[float] = ...) -> None: ...

    def __init__(self, weight: Optional[ArrayLike] = None, *, ignore_index: int = -100,
                 reduction: _Reduction = "mean", label_smoothing: float = 0.0, axis: int = -1,
                 z_loss: float = 0.0, softcap: Optional[float] = None) -> None:
        super().__init__(reduction)
        # options checked now by the functions' own rules (a bad one raises here, with the same
        # exception the function would raise); the function checks them again per call
        self.weight = _opt_weight(weight)
        self.ignore_index = V.ignore_index(ignore_index)
        self.label_smoothing = V.label_smoothing(label_smoothing)
        self.axis = V.axis_option(axis)
        self.z_loss = V.z_loss(z_loss)
        V.softcap(softcap)
        self.softcap = softcap

    def _kwargs(self) -> _Options:
        return dict(weight=self.weight, ignore_index=self.ignore_index,
                    label_smoothing=self.label_smoothing, axis=self.axis, z_loss=self.z_loss,
                    softcap=self.softcap)

    def _fast(self, input: Any, target: Any, out: Any) -> Any:
        return _fastpath.class_loss(False, input, target, self.weight, self.ignore_index,
                                    self.reduction, self.label_smoothing, self.axis, self.z_loss,
                                    self.softcap, True, 1.0, out)

    def _repr_items(self) -> _ReprItems:
        items = _class_repr_items(self)
        if self.label_smoothing:
            items.append(("label_smoothing", self.label_smoothing))
        if self.z_loss:
            items.append(("z_loss", self.z_loss))
        if self.softcap is not None:
            items.append(("softcap", self.softcap))
        return items


class NLLLoss(_Criterion[LossT]):
    """Negative log-likelihood of class-index targets given log-probabilities, as a criterion
    object (``torch.nn.NLLLoss``).

    Parameters
    ----------
    weight : array_like of shape (C,), optional
        Per-class rescaling weights.
    ignore_index : int, default -100
        Targets equal to it contribute neither loss nor gradient.
    reduction : {"mean", "sum", "none"}, default "mean"
    axis : int, default -1
        The class axis of the log-probabilities.
    """

    _fn = staticmethod(_F.nll_loss)  # type: ignore[assignment]

    @overload
    def __init__(self: NLLLoss[_Scalar], weight: Optional[ArrayLike] = ..., *,
                 ignore_index: int = ..., reduction: _Reduced = ..., axis: int = ...) -> None: ...
    @overload
    def __init__(self: NLLLoss[_Array], weight: Optional[ArrayLike] = ..., *,
                 ignore_index: int = ..., reduction: _None, axis: int = ...) -> None: ...

    def __init__(self, weight: Optional[ArrayLike] = None, *, ignore_index: int = -100,
                 reduction: _Reduction = "mean", axis: int = -1) -> None:
        super().__init__(reduction)
        self.weight = _opt_weight(weight)
        self.ignore_index = V.ignore_index(ignore_index)
        self.axis = V.axis_option(axis)

    def _kwargs(self) -> _Options:
        return dict(weight=self.weight, ignore_index=self.ignore_index, axis=self.axis)

    def _fast(self, input: Any, target: Any, out: Any) -> Any:
        return _fastpath.class_loss(True, input, target, self.weight, self.ignore_index,
                                    self.reduction, 0.0, self.axis, 0.0, None, True, 1.0, out)

    def _repr_items(self) -> _ReprItems:
        return _class_repr_items(self)


class BCEWithLogitsLoss(_Criterion[LossT]):
    """Binary cross-entropy on logits as a criterion object (``torch.nn.BCEWithLogitsLoss``).

    Parameters
    ----------
    weight : array_like, optional
        Elementwise weights broadcastable to the input.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides by the number of elements.
    pos_weight : array_like, optional
        Weight of positive examples, broadcast along the last axis.
    """

    _fn = staticmethod(_F.binary_cross_entropy_with_logits)  # type: ignore[assignment]
    _class_axis = False

    @overload
    def __init__(self: BCEWithLogitsLoss[_Scalar], weight: Optional[ArrayLike] = ..., *,
                 reduction: _Reduced = ..., pos_weight: Optional[ArrayLike] = ...) -> None: ...
    @overload
    def __init__(self: BCEWithLogitsLoss[_Array], weight: Optional[ArrayLike] = ..., *,
                 reduction: _None, pos_weight: Optional[ArrayLike] = ...) -> None: ...

    def __init__(self, weight: Optional[ArrayLike] = None, *, reduction: _Reduction = "mean",
                 pos_weight: Optional[ArrayLike] = None) -> None:
        super().__init__(reduction)
        self.weight = _opt_weight(weight)
        self.pos_weight = _opt_weight(pos_weight, "pos_weight")

    def _kwargs(self) -> _Options:
        return dict(weight=self.weight, pos_weight=self.pos_weight)

    def _fast(self, input: Any, target: Any, out: Any) -> Any:
        return _fastpath.binary_loss("logits", input, target, self.weight, self.pos_weight,
                                     self.reduction, True, 1.0, out)

    def _repr_items(self) -> _ReprItems:
        items: _ReprItems = [("reduction", self.reduction)]
        if self.weight is not None:
            items.append(("weight", self.weight.tolist()))
        if self.pos_weight is not None:
            items.append(("pos_weight", self.pos_weight.tolist()))
        return items


class BCELoss(_Criterion[LossT]):
    """Binary cross-entropy on probabilities as a criterion object (``torch.nn.BCELoss``).

    Logs are clamped at -100; probabilities outside [0, 1] raise ValueError.

    Parameters
    ----------
    weight : array_like, optional
        Elementwise weights broadcastable to the input.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides by the number of elements.
    """

    _fn = staticmethod(_F.binary_cross_entropy)  # type: ignore[assignment]
    _class_axis = False

    @overload
    def __init__(self: BCELoss[_Scalar], weight: Optional[ArrayLike] = ..., *,
                 reduction: _Reduced = ...) -> None: ...
    @overload
    def __init__(self: BCELoss[_Array], weight: Optional[ArrayLike] = ..., *,
                 reduction: _None) -> None: ...

    def __init__(self, weight: Optional[ArrayLike] = None, *,
                 reduction: _Reduction = "mean") -> None:
        super().__init__(reduction)
        self.weight = _opt_weight(weight)

    def _kwargs(self) -> _Options:
        return dict(weight=self.weight)

    def _fast(self, input: Any, target: Any, out: Any) -> Any:
        return _fastpath.binary_loss("probs", input, target, self.weight, None, self.reduction,
                                     True, 1.0, out)

    def _repr_items(self) -> _ReprItems:
        items: _ReprItems = [("reduction", self.reduction)]
        if self.weight is not None:
            items.append(("weight", self.weight.tolist()))
        return items
