"""Dask adapter: fastce's losses on dask arrays chunked along the batch, with exact reductions.

Use it to evaluate a prediction set larger than memory, or on a Dask cluster::

    import dask.array as da
    import fastce.dask as fcd
    logits = da.from_zarr("logits.zarr")        # (N, C), chunked along N
    target = da.from_zarr("target.zarr")        # (N,)
    loss = fcd.cross_entropy(logits, target, weight=w).compute()

Every block is evaluated by fastce's kernels.  The class axis must lie in one chunk: it is
rechunked automatically when it does not (which moves data; chunk it that way up front when you
can), and the target is rechunked to line up with the input's blocks.  ``"mean"`` and
``"sum"`` are exact global reductions: each block contributes its ``(sum of losses, sum of
weights)`` pair in float64 and the mean is ``sum(losses) / sum(weights)`` over all blocks -- the
same number as one call on the whole array, never a mean of per-block means.

All results are lazy: ``"mean"``/``"sum"`` give a 0-d dask array, ``"none"`` a dask array of the
per-sample shape (chunked like the input without its class axis); call ``.compute()`` (or
``dask.compute(...)`` on several) to evaluate.  Gradients are not provided here.

This module imports dask; ``import fastce`` alone never does.
"""
from __future__ import annotations

import string
from typing import Any, Callable, Optional, Tuple

import dask.array as da
import numpy as np
from numpy.typing import ArrayLike

from . import _validate as V
from . import functional as _F

__all__ = [
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy",
]

_REDUCTIONS = ("mean", "sum", "none")


# ============================================================================ helpers

def _as_dask(a: Any, name: str) -> da.Array:
    if isinstance(a, da.Array):
        return a
    arr = np.asarray(a)
    return da.from_array(arr, chunks=arr.shape or ())


def _compute_dtype(dtype: np.dtype, name: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.dtype(np.float32) if dtype == np.float16 else (
            dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64))
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    raise TypeError(f"{name} must be a real numeric array; got dtype {dtype}")


def _check_reduction(reduction: str) -> str:
    return V.reduction(reduction)


def _small_numpy(a: Any) -> Optional[np.ndarray]:
    """A small parameter (class weights, pos_weight) as NumPy, computing it if lazy."""
    if a is None:
        return None
    if isinstance(a, da.Array):
        a = a.compute()
    return np.asarray(a)


def _indices(ndim: int) -> str:
    return string.ascii_lowercase[:ndim]


def _pair_graph(block_fn: Callable[..., Tuple[float, float]], out_ind: str, args: list,
                token: str) -> da.Array:
    """Per block of the output index `out_ind`, a float64 (sum, weight) pair; summed exactly.

    Returns a (2,) float64 dask array [sum of losses, sum of weights] over every block.
    """
    def wrapped(*blocks: np.ndarray) -> np.ndarray:
        s, w = block_fn(*blocks)
        return np.array([s, w], dtype=np.float64).reshape((1,) * len(out_ind) + (2,))

    pairs = da.blockwise(wrapped, out_ind + "Z", *args, new_axes={"Z": 2}, token=token,
                         adjust_chunks={i: 1 for i in out_ind}, dtype=np.float64,
                         meta=np.empty((0,) * (len(out_ind) + 1), dtype=np.float64),
                         concatenate=True)
    return pairs.sum(axis=tuple(range(len(out_ind))), dtype=np.float64)


def _finish(pair: da.Array, reduction: str, dtype: np.dtype, token: str) -> da.Array:
    """The lazy 0-d result from the global [sum, weight] pair."""
    def fin(p: np.ndarray) -> np.ndarray:
        if reduction == "sum":
            return np.asarray(p[0], dtype=dtype)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(np.float64(p[0]) / np.float64(p[1]), dtype=dtype)

    return da.map_blocks(fin, pair.rechunk(2), drop_axis=0, dtype=dtype, token=token,
                         meta=np.empty((), dtype=dtype))


# ============================================================================ class losses

def _class_loss(kind: str, input: Any, target: Any, weight: Optional[ArrayLike],
                ignore_index: int, reduction: str, label_smoothing: float, axis: int,
                extra: dict) -> da.Array:
    reduction = _check_reduction(reduction)
    x = _as_dask(input, "input")
    ax = V.split_axis(x.shape, axis, "input")[3]
    cdt = _compute_dtype(x.dtype, "input")
    if len(x.chunks[ax]) > 1:
        x = x.rechunk({ax: -1})
    t = _as_dask(target, "target")
    samples = x.shape[:ax] + x.shape[ax + 1:]
    if t.shape == samples:
        fmt = "index"
        t = t.rechunk(x.chunks[:ax] + x.chunks[ax + 1:])
    elif t.shape == x.shape:
        fmt = "prob"
        t = t.rechunk(x.chunks)
    else:
        raise ValueError(
            f"target shape {t.shape} does not match input shape {x.shape}: class-index targets "
            f"have the input's shape without the class axis, {samples}; probability targets "
            f"have the input's shape")
    if fmt == "prob" and kind == "nll":
        raise TypeError(f"nll_loss needs class-index targets of shape {samples}; got a target "
                        f"of the input's shape {t.shape}")
    w = _small_numpy(weight)
    fn = _F.cross_entropy if kind == "ce" else _F.nll_loss
    kw = dict(weight=w, ignore_index=ignore_index, axis=ax, **extra)
    if kind == "ce":
        kw["label_smoothing"] = label_smoothing

    ind = _indices(x.ndim)
    s_ind = ind[:ax] + ind[ax + 1:]
    t_ind = s_ind if fmt == "index" else ind
    args = [x, ind, t, t_ind]

    if reduction == "none":
        def none_block(xb: np.ndarray, tb: np.ndarray) -> np.ndarray:
            return fn(xb, tb, reduction="none", **kw)

        return da.blockwise(none_block, s_ind, *args, dtype=cdt, token=f"fastce-{kind}-none",
                            meta=np.empty((0,) * len(s_ind), dtype=cdt), concatenate=True)

    w64 = None if w is None else np.asarray(w, dtype=np.float64)

    def pair_block(xb: np.ndarray, tb: np.ndarray) -> Tuple[float, float]:
        total = float(fn(xb, tb, reduction="sum", **kw))
        if fmt == "prob":       # mean over samples
            return total, float(np.prod(xb.shape[:ax] + xb.shape[ax + 1:], dtype=np.float64))
        kept = tb != ignore_index
        if w64 is None:
            return total, float(np.count_nonzero(kept))
        return total, float(w64[tb[kept]].sum())

    name = f"fastce-{kind}-{reduction}"
    return _finish(_pair_graph(pair_block, s_ind, args, name + "-parts"), reduction, cdt, name)


def cross_entropy(input: Any, target: Any, *, weight: Optional[ArrayLike] = None,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0, axis: int = -1, z_loss: float = 0.0,
                  softcap: Optional[float] = None) -> da.Array:
    """Cross-entropy of dask-array logits and targets (see :func:`fastce.cross_entropy`).

    Parameters
    ----------
    input : dask.array.Array or array_like
        Logits, chunked along the batch; the class axis `axis` is rechunked into one chunk
        when split.
    target : dask.array.Array or array_like
        Integer class indices (the input's shape without `axis`) or float probabilities (the
        input's shape); rechunked to line up with the input's blocks.
    weight : array_like of shape (C,), optional
        Per-class weights (a dask array is computed first: it is small).
    ignore_index : int, default -100
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` is the exact global weighted mean ``sum_n m_n w_{y_n} l_n / sum_n m_n
        w_{y_n}`` (the number of samples for probability targets).
    label_smoothing : float in [0, 1], default 0.0
    axis : int, default -1
        The class axis.
    z_loss, softcap : float, optional
        As in :func:`fastce.cross_entropy`.

    Returns
    -------
    dask.array.Array
        Lazy: 0-d for ``"mean"``/``"sum"``, the per-sample shape for ``"none"``; dtype is
        fastce's compute dtype (float32 for float16 input).
    """
    extra: dict = {}
    if z_loss:
        extra["z_loss"] = z_loss
    if softcap is not None:
        extra["softcap"] = softcap
    return _class_loss("ce", input, target, weight, ignore_index, reduction, label_smoothing,
                       axis, extra)


def nll_loss(input: Any, target: Any, *, weight: Optional[ArrayLike] = None,
             ignore_index: int = -100, reduction: str = "mean", axis: int = -1) -> da.Array:
    """Negative log-likelihood of dask-array log-probabilities (see :func:`fastce.nll_loss`).

    Parameters
    ----------
    input : dask.array.Array or array_like
        Log-probabilities, chunked along the batch (the class axis is rechunked into one chunk).
    target : dask.array.Array or array_like
        Integer class indices of the input's shape without `axis`.
    weight : array_like of shape (C,), optional
    ignore_index : int, default -100
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` is the exact global weighted mean.
    axis : int, default -1

    Returns
    -------
    dask.array.Array
        Lazy: 0-d for ``"mean"``/``"sum"``, the per-sample shape for ``"none"``.
    """
    return _class_loss("nll", input, target, weight, ignore_index, reduction, 0.0, axis, {})


# ============================================================================ binary losses

def _binary_loss(kind: str, input: Any, target: Any, weight: Any, pos_weight: Any,
                 reduction: str) -> da.Array:
    reduction = _check_reduction(reduction)
    x = _as_dask(input, "input")
    cdt = _compute_dtype(x.dtype, "input")
    y = _as_dask(target, "target")
    if y.shape != x.shape:
        raise ValueError(f"target shape {y.shape} does not match input shape {x.shape}")
    y = y.rechunk(x.chunks)
    ind = _indices(x.ndim)
    args: list = [x, ind, y, ind]
    names = ["x", "y"]
    if weight is not None:
        wd = _as_dask(weight, "weight")
        try:
            wd = da.broadcast_to(wd, x.shape)
        except ValueError:
            raise ValueError(f"weight shape {wd.shape} does not broadcast to input shape "
                             f"{x.shape}") from None
        args += [wd.rechunk(x.chunks), ind]
        names.append("weight")
    if pos_weight is not None:
        pw = _small_numpy(pos_weight)
        K = x.shape[-1] if x.ndim else 1
        if pw.ndim > max(x.ndim, 1) or any(d != 1 for d in pw.shape[:-1]) or (
                pw.ndim and pw.shape[-1] not in (1, K)):
            raise ValueError(f"pos_weight must broadcast along the last axis of the input: "
                             f"shape {pw.shape} given, input shape {x.shape} (expected ({K},))")
        pw_full = np.broadcast_to(pw.reshape(-1), (K,))
        if x.ndim:
            args += [da.from_array(np.ascontiguousarray(pw_full), chunks=(x.chunks[-1],)),
                     ind[-1]]
        else:
            args += [pw_full, None]
        names.append("pos_weight")
    fn = _F.binary_cross_entropy_with_logits if kind == "logits" else _F.binary_cross_entropy

    def call(blocks: tuple, red: str) -> Any:
        kw = dict(zip(names[2:], blocks[2:]))
        return fn(blocks[0], blocks[1], reduction=red, **kw)

    if reduction == "none":
        return da.blockwise(lambda *b: call(b, "none"), ind, *args, dtype=cdt,
                            token=f"fastce-{kind}-none",
                            meta=np.empty((0,) * x.ndim, dtype=cdt))
    name = f"fastce-bce-{kind}-{reduction}"
    parts = _pair_graph(lambda *b: (float(call(b, "sum")), float(b[0].size)), ind, args,
                        name + "-parts")
    return _finish(parts, reduction, cdt, name)


def binary_cross_entropy_with_logits(input: Any, target: Any, *, weight: Any = None,
                                     pos_weight: Optional[ArrayLike] = None,
                                     reduction: str = "mean") -> da.Array:
    """Binary cross-entropy on dask-array logits (see
    :func:`fastce.binary_cross_entropy_with_logits`).

    Parameters
    ----------
    input : dask.array.Array or array_like
        Logits, chunked any way.
    target : dask.array.Array or array_like
        Targets of the input's shape (rechunked to the input's chunks).
    weight : dask.array.Array or array_like, optional
        Elementwise weights broadcastable to the input.
    pos_weight : array_like, optional
        Broadcast along the last axis (shape (K,) or (1,)).
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides the global sum by the number of elements.

    Returns
    -------
    dask.array.Array
        Lazy: 0-d for ``"mean"``/``"sum"``, the input's shape for ``"none"``.
    """
    return _binary_loss("logits", input, target, weight, pos_weight, reduction)


def binary_cross_entropy(input: Any, target: Any, *, weight: Any = None,
                         reduction: str = "mean") -> da.Array:
    """Binary cross-entropy on dask-array probabilities (see
    :func:`fastce.binary_cross_entropy`).  Probabilities outside [0, 1] raise ValueError when
    the offending block is computed.

    Parameters
    ----------
    input : dask.array.Array or array_like
        Probabilities.
    target : dask.array.Array or array_like
        Targets of the input's shape.
    weight : dask.array.Array or array_like, optional
        Elementwise weights broadcastable to the input.
    reduction : {"mean", "sum", "none"}, default "mean"

    Returns
    -------
    dask.array.Array
        Lazy: 0-d for ``"mean"``/``"sum"``, the input's shape for ``"none"``.
    """
    return _binary_loss("probs", input, target, weight, None, reduction)
