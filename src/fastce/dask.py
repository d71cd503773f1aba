# dask ships no type information, so pyright infers its parameter types from their defaults
# (da.from_array's chunks="auto" becomes `str`) and rejects every tuple of chunks; mypy treats
# dask as untyped instead (pyproject.toml).
# pyright: reportArgumentType=false
"""Dask adapter: fastce's losses on chunked dask arrays, vocab-parallel and out of core.

Use it to evaluate a prediction set larger than memory, or on a Dask cluster::

    import dask.array as da
    import fastce.dask as fcd
    logits = fcd.from_npy("logits.npy", chunks=(65536, -1))   # or da.from_zarr("logits.zarr")
    target = fcd.from_npy("target.npy", chunks=65536)
    loss = fcd.cross_entropy(logits, target, weight=w).compute()

How the work is split
---------------------
*Batch-chunked* logits (the class axis in one chunk): every block goes through fastce's own
kernels, so each sample's loss and gradient are exactly what the in-memory call computes.

*Class-chunked* logits (the vocabulary split over several chunks, "vocab-parallel"): no chunk
ever spans the whole class axis.  Pass 1 reduces each class chunk k of each sample to float64
partials -- its max ``m_k``, ``r_k = sum exp(z - m_k)`` with the max's own term (exactly 1) left
out, the target logit if the chunk owns the target, and the weighted sums label smoothing or
probability targets need.  A merge per sample block combines them exactly::

    M = max_k m_k,   S - 1 = r_{k*} + sum_{k != k*} (1 + r_k) exp(m_k - M)   (k*: chunk of M)
    lse = M + log1p(S - 1)

Keeping ``S - 1`` instead of ``S`` is what keeps confident rows accurate (loss ~ 1e-30 where
``lse - x_y`` would round to 0), as the in-memory kernel does.  Pass 2 (gradients only) reads
each chunk again and writes ``softmax - target terms`` with the logits' chunks.
:func:`entropy` merges its partials the same way; :func:`kl_div_logits` splits the in-memory
kernel's three cancellation-free sums over class chunks at merged row maxes (one pass more);
:func:`nll_loss` takes each target term from the chunk that owns it.

Precision
---------
Partials are float64 end to end: ``"mean"``/``"sum"`` are one global float64 sum over all blocks
divided by the global float64 denominator, cast to the compute dtype once at the end (never a
mean of per-block means, never per-block sums rounded to float32).  Measured against the
in-memory call (see tests/test_dask.py):

* float64 logits: the batch path agrees to ~1e-15 relative, the vocab-parallel path to 1e-12.
* float32 logits: the result is within 1 ulp of the in-memory call, but not always the same
  number.  The batch path adds the kernel's per-sample losses, which fastce's public functions
  round to float32 before they reach us; the vocab-parallel path computes exp, log and tanh in
  float64 while the in-memory float32 kernel computes them in float32 (with float64 sums).

Where the vocab-parallel path is less accurate than the in-memory kernel: the gradient of
probability targets at a confident class (``K p_c - k_c`` with ``p_c ~ 1``) has an absolute,
not relative, error of ~1e-16; the softcapped logits are float64 ``tanh`` (more accurate, so
different in the last float32 bit).

All results are lazy dask arrays; ``dask.compute(loss, grad)`` evaluates both, reading the
logits once on the batch path and twice (once per pass) on the vocab-parallel path.  Out of
core: :func:`from_npy` and ``da.from_zarr``, never ``da.from_array(np.load(path,
mmap_mode="r"))`` (see docs/dask.md).  This module imports dask; ``import fastce`` alone never
does.
"""
from __future__ import annotations

import math
import os
import string
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, cast

import dask.array as da
import numpy as np
from numpy.typing import ArrayLike

from . import _validate as V
from . import functional as _F

__all__ = [
    "cross_entropy",
    "nll_loss",
    "log_softmax",
    "softmax",
    "logsumexp",
    "linear_cross_entropy",
    "entropy",
    "kl_div_logits",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy",
    "from_npy",
    "NpyFile",
]

F64 = np.dtype(np.float64)
Chunks = Tuple[Any, ...]       # dask chunks: a tuple of per-axis tuples of block sizes


# ============================================================================ input

class NpyFile:
    """A ``.npy`` file that reads only the slice asked for (an array-like for ``da.from_array``).

    It holds the path, shape, dtype and data offset only, so a dask graph built on it is a few
    hundred bytes whatever the file's size.  ``__getitem__`` with unit-step slices either

    * ``mmap=False`` (default): reads the slice into a writeable C-contiguous array, one
      ``os.preadv`` per contiguous run of the file.  Large slices land in a per-process pool
      of pre-faulted buffers (_BufferPool), reused once nothing refers to them any more, so a
      read is a copy out of the page cache and nothing else;
    * ``mmap=True``: a slice that is one contiguous run of the file (a block of whole rows) is
      mapped and returned as a read-only view -- no copy, but every 4 KiB page of it is
      page-faulted in and the mapping torn down again.  Other slices (a class chunk: one run
      per row) are read as with ``mmap=False``.

    Measured on 2.5 GiB of float32 logits in 64 MiB row blocks, one thread (AMD EPYC, busy
    machine): reading alone 0.24 CPU-s pooled vs 2.1 into fresh buffers; read + kernel 0.44
    CPU-s pooled vs 0.75 mapped (the kernel on in-memory slices: 0.20).

    Fortran-ordered files and fancy indices go through ``np.load(mmap_mode="r")``, copied and
    unmapped again.  (``da.from_array(np.load(path, mmap_mode="r"))`` instead puts the memmap
    itself in the graph, and pickling a memmap for a worker copies the whole file into memory.)
    A file shorter than its header promises raises OSError instead of reading past its end.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], mmap: bool = False):
        self.path = os.fspath(path)
        m = np.load(self.path, mmap_mode="r")
        self.shape: Tuple[int, ...] = tuple(m.shape)
        self.dtype: np.dtype[Any] = m.dtype
        self.ndim: int = m.ndim
        self.offset = int(m.offset)
        self.fortran = bool(m.ndim > 1 and not m.flags.c_contiguous)
        self.mmap = bool(mmap)
        del m

    def __getitem__(self, index: Any) -> np.ndarray[Any, Any]:
        ranges = self._ranges(index)
        if ranges is None or not hasattr(os, "preadv"):
            m = np.load(self.path, mmap_mode="r")
            try:
                return np.array(m[index], copy=True, order="C")
            finally:
                del m
        shape = [b - a for a, b in ranges]
        if math.prod(shape) == 0:
            return np.empty(shape, dtype=self.dtype)
        strides = [self.dtype.itemsize * math.prod(self.shape[i + 1:]) for i in range(self.ndim)]
        # k: the last axis that is not read whole; axes after it are, so each index of the
        # axes before it is one contiguous run of the file
        k = self.ndim - 1
        while k > 0 and ranges[k] == (0, self.shape[k]):
            k -= 1
        if self.mmap and math.prod(shape[:k]) == 1:
            # one contiguous run (a block of whole rows): map it.  Several runs (a class chunk)
            # are read instead: a mapping would span, and fault in, the whole rows (measured
            # 1.5x the CPU of the copies on the vocab-parallel bench)
            return self._mapped(ranges, shape, strides)
        out = _POOL.array(shape, self.dtype)
        runs = out.reshape(math.prod(b - a for a, b in ranges[:k]), -1)
        with open(self.path, "rb", buffering=0) as f:
            outer = np.ndindex(*[b - a for a, b in ranges[:k]])
            for row, idx in zip(runs, outer):
                pos = self.offset + ranges[k][0] * strides[k] + sum(
                    (ranges[i][0] + j) * strides[i] for i, j in enumerate(idx))
                _read_exact(f.fileno(), row.data.cast("B"), pos, self.path)
        return out

    def _mapped(self, ranges: List[Tuple[int, int]], shape: List[int],
                strides: List[int]) -> np.ndarray[Any, Any]:
        """A read-only view of the slice on a private mapping of the bytes it spans."""
        import mmap as _mmap
        first = self.offset + sum(a * st for (a, _), st in zip(ranges, strides))
        last = self.offset + sum((b - 1) * st for (_, b), st in zip(ranges, strides))
        end = last + self.dtype.itemsize
        start = first - first % _mmap.ALLOCATIONGRANULARITY
        with open(self.path, "rb", buffering=0) as f:
            if os.fstat(f.fileno()).st_size < end:      # reading past the end: SIGBUS
                raise OSError(f"{self.path}: file ends before byte {end} (truncated .npy?)")
            # (no MAP_POPULATE: measured slower than the faults, each mapping 64 KiB around)
            mm = _mmap.mmap(f.fileno(), end - start, flags=_mmap.MAP_SHARED,
                            prot=_mmap.PROT_READ, offset=start)
        view: np.ndarray[Any, Any] = np.ndarray(shape, dtype=self.dtype, buffer=mm,
                                                offset=first - start, strides=strides)
        return view

    def _ranges(self, index: Any) -> Optional[List[Tuple[int, int]]]:
        """[(start, stop)] per axis for a tuple of unit-step slices, else None."""
        idx = index if isinstance(index, tuple) else (index,)
        if self.fortran or len(idx) > self.ndim or not all(isinstance(s, slice) for s in idx):
            return None
        out = []
        for s, n in zip(idx + (slice(None),) * (self.ndim - len(idx)), self.shape):
            a, b, step = s.indices(n)
            if step != 1:
                return None
            out.append((a, max(a, b)))
        return out

    def __repr__(self) -> str:
        return f"NpyFile({self.path!r}, shape={self.shape}, dtype={self.dtype})"


class _Lease(np.ndarray):
    """A pooled buffer on loan: the base of every array _BufferPool.array hands out.

    NumPy collapses a view's base chain to the first array that owns its data or whose base is
    of another type.  A lease is an ndarray *subclass* whose own base is a raw mmap, so the
    chain of a plain ndarray view of it stops here: every array derived from the one handed out
    (slices, reshapes, np.asarray, astype(copy=False), dask's concatenations of one block) keeps
    this object alive, and its finalizer returns the buffer to the pool only when the last of
    them is gone.  (Giving a buffer back while a view is alive would be a silent wrong answer:
    tests/test_dask.py checks the chain.)"""


class _BufferPool:
    """Per-process pool of pre-faulted read buffers for NpyFile.

    A fresh buffer costs one page fault per 4 KiB page on first touch and an munmap when freed
    -- reading 2.5 GiB in 64 MiB chunks took 2.1 CPU-s into fresh buffers against 0.24 into
    reused ones, the kernel on the same bytes 0.20 (AMD EPYC, one thread).  A reused buffer
    pays neither: os.preadv copies the page cache into memory that is already
    mapped.  At most `per_size` free buffers of each size and `max_free` bytes in all are kept,
    so the pool holds a bounded amount on top of the chunks in flight."""

    MIN_BYTES = 1 << 20             # smaller reads: np.empty (malloc reuses them anyway)

    def __init__(self, per_size: int = 4, max_free: int = 256 << 20):
        import threading
        self.per_size, self.max_free = per_size, max_free
        self._free: Dict[int, List[Any]] = {}
        self._free_bytes = 0
        self._lock = threading.RLock()      # a finalizer may run inside _take (GC)

    def array(self, shape: Sequence[int], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
        """An uninitialised C-contiguous writeable array, on a pooled buffer when large."""
        import mmap as _mmap
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.MIN_BYTES or not hasattr(_mmap, "MAP_PRIVATE"):    # (Windows)
            return np.empty(shape, dtype=dtype)
        size = -(-nbytes // _mmap.PAGESIZE) * _mmap.PAGESIZE
        raw = self._take(size)
        if raw is None:
            # anonymous and page aligned; MAP_PRIVATE, not Python's default MAP_SHARED: a
            # forked child (multiprocessing, a fork-based worker) must get its own copy of
            # the pool's buffers, never write into the parent's
            raw = _mmap.mmap(-1, size, flags=_mmap.MAP_PRIVATE)
            np.frombuffer(raw, np.uint8)[::_mmap.PAGESIZE] = 0      # fault every page in now
        lease = _Lease((size,), np.uint8, buffer=raw)
        import weakref
        weakref.finalize(lease, self._give_back, raw, size).atexit = False
        return lease[:nbytes].view(dtype).reshape(shape).view(np.ndarray)

    def _take(self, size: int) -> Any:
        with self._lock:
            free = self._free.get(size)
            if not free:
                return None
            self._free_bytes -= size
            return free.pop()

    def _give_back(self, raw: Any, size: int) -> None:
        with self._lock:
            free = self._free.setdefault(size, [])
            if len(free) < self.per_size and self._free_bytes + size <= self.max_free:
                free.append(raw)
                self._free_bytes += size
        # else: dropped; the mmap is unmapped when the last reference goes

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
            self._free_bytes = 0


_POOL = _BufferPool()


def _read_exact(fd: int, buf: memoryview, pos: int, path: str) -> None:
    got = 0
    while got < len(buf):
        n = os.preadv(fd, [buf[got:]], pos + got)
        if n <= 0:
            raise OSError(f"{path}: file ends before byte {pos + len(buf)} (truncated .npy?)")
        got += n


def from_npy(path: Union[str, "os.PathLike[str]"], chunks: Any = "auto", *,
             mmap: bool = False) -> da.Array:
    """A dask array reading a ``.npy`` file chunk by chunk.

    Parameters
    ----------
    path : str or path-like
        A ``.npy`` file (``np.save`` output).
    chunks : dask chunks spec, default "auto"
        E.g. ``(65536, -1)`` for logits chunked along the batch, ``(65536, 32768)`` for
        vocab-parallel chunks.
    mmap : bool, default False
        False: each task copies its slice out of the page cache into a pooled, pre-faulted
        buffer (the cheapest in CPU, see NpyFile).  True: whole-row slices are mapped and
        handed to the kernels as read-only views (no copy, but page faults per 4 KiB).

    Returns
    -------
    dask.array.Array
        One task per chunk; each maps (or reads) only its slice of the file, so a worker holds
        only the chunks it is working on, and the graph holds a path, not data.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(p, np.arange(12.0).reshape(4, 3))
    >>> float(from_npy(p, chunks=(2, -1)).sum().compute())
    66.0
    """
    from dask.array.core import normalize_chunks
    src = NpyFile(path, mmap=mmap)
    chunks = normalize_chunks(chunks, src.shape, dtype=src.dtype)
    # inline_array: the (tiny) NpyFile is embedded in each task instead of being one more key.
    # The name covers the chunks: two chunkings of one file must not share keys (a cluster
    # still holding the blocks of one would hand them to the other).
    return da.from_array(src, chunks=chunks, asarray=False, inline_array=True,
                         name="from-npy-" + _token(src.path, src.shape, str(src.dtype),
                                                   os.path.getmtime(src.path), src.mmap,
                                                   chunks),
                         meta=np.empty((0,) * src.ndim, dtype=src.dtype))


def _token(*parts: Any) -> str:
    from dask.base import tokenize
    return tokenize(*parts)


def _as_dask(a: Any, name: str) -> da.Array:
    """`a` as a dask array; masked arrays are refused as by every fastce entry point (a dask
    array of masked chunks is recognised by its meta)."""
    if isinstance(a, da.Array):
        if isinstance(a._meta, np.ma.MaskedArray):
            V.plain_array(a._meta, name)                    # raises, naming the argument
        if any(math.isnan(n) for n in a.shape):
            raise ValueError(f"{name} has unknown chunk sizes (shape {a.shape}); fastce.dask "
                             f"needs them: call {name}.compute_chunk_sizes() first")
        return a
    arr = V.plain_array(a, name)
    return da.from_array(arr, chunks=cast(Any, arr.shape or ()))


def _shape(a: da.Array) -> Tuple[int, ...]:
    """A dask array's shape as ints (dask types it int-or-NaN; _as_dask refuses NaN)."""
    return tuple(int(n) for n in a.shape)


def _small_numpy(a: Any) -> Optional[np.ndarray]:
    """An optional small parameter (class weights, pos_weight, a bias) as NumPy."""
    return None if a is None else _numpy(a)


def _numpy(a: Any) -> np.ndarray:
    """A small parameter (a head weight, class weights) as NumPy; a dask array is computed."""
    if isinstance(a, da.Array):
        a = a.compute()
    return np.asarray(a)


def _indices(ndim: int) -> str:
    return string.ascii_lowercase[:ndim]


def _standin(dtype: np.dtype, shape: Sequence[int]) -> np.ndarray:
    """A zero-cost array of `dtype` and `shape` (one element broadcast), so that _validate's
    rules can judge a lazy array's dtype and shape without reading it."""
    return np.broadcast_to(np.zeros((), dtype=dtype), tuple(shape))


def _check_target_dtype(t: da.Array, fmt: str, samples: Tuple[int, ...], C: int, ignore: int,
                        shape: Tuple[int, ...]) -> None:
    """Raise _validate's own error now, not when a block is computed, for a target its rules
    reject by dtype (or, for probabilities, an explicit ignore_index); the range of class
    indices is checked per block, when the data is read."""
    st = _standin(t.dtype, _shape(t))
    if fmt == "index" and t.dtype.kind not in "iu":
        V.class_index_target(st, samples, C, ignore, shape)      # raises TypeError
    if fmt == "prob" and (t.dtype.kind != "f" or ignore != V.DEFAULT_IGNORE_INDEX):
        V.probability_target(st, shape, F64, ignore)              # raises


def _sample_chunks(chunks: Chunks, ax: int) -> Chunks:
    return chunks[:ax] + chunks[ax + 1:]


# ============================================================================ graph helpers

def _per_block(func: Callable[..., Any], *args: Any, ind: str, name: str, **kw: Any) -> da.Array:
    """Blocks that are Python tuples (several outputs of one kernel call), laid out like the
    output index `ind`.  Take fields out with _field / _block_sum: the tuple task runs once
    however many fields are used (dask does not fuse a layer that several layers read)."""
    return da.blockwise(func, ind, *args, dtype=object, token=name, concatenate=True,
                        meta=np.empty((0,) * len(ind), dtype=object), **kw)


# Layers derived from a tuple layer are named after it: its name tokenizes the task function
# with everything it captured (weights, grad_output), so two calls that differ only there never
# share a key.

def _field(parts: da.Array, i: int, dtype: np.dtype) -> da.Array:
    return da.map_blocks(lambda b: b[i].astype(dtype, copy=False), parts, dtype=dtype,
                         name=f"{parts.name}-{i}",
                         meta=np.empty((0,) * parts.ndim, dtype=dtype))


def _block_sum(parts: da.Array, i: int) -> da.Array:
    """The float64 sum over all blocks of the float64 sum of each block's field `i`."""
    return _sum_per_block(parts, lambda b: np.sum(b[i], dtype=F64), f"{parts.name}-{i}-sum")


def _sum_per_block(arr: da.Array, fn: Callable[[Any], float], name: str) -> da.Array:
    """0-d float64: sum over the blocks of `arr` of fn(block).

    fn runs in the task that makes the block (dask fuses it there), and one final task adds
    the per-block float64 scalars in block order -- no tree of tiny tasks, whose scheduling
    cost more than the kernels on small clusters."""
    nd = arr.ndim               # (the functions must not capture `arr`: see _Spec.light)

    def one(b: Any) -> np.ndarray:
        return np.full((1,) * nd, fn(b), dtype=F64)

    ones = tuple((1,) * len(c) for c in arr.chunks)
    per = da.map_blocks(one, arr, chunks=ones, dtype=F64, name=name,
                        meta=np.empty((0,) * nd, dtype=F64))
    ind = _indices(nd)
    return da.blockwise(_sum_all, "", per, ind, dtype=F64, concatenate=True,
                        name=name + "-total", meta=np.empty((), dtype=F64))


def _sum_all(a: np.ndarray) -> np.ndarray:
    return np.asarray(np.sum(a, dtype=F64))


def _pairs_of(arr: da.Array, fn: Callable[[Any], Tuple[float, float]], name: str) -> da.Array:
    """Per block of `arr`, the float64 pair fn(block) = (sum of losses, denominator share), as
    a (blocks..., 2) array (fn runs in the task that makes the block: dask fuses it there)."""
    nd = arr.ndim               # (the functions must not capture `arr`: see _Spec.light)

    def pair(b: Any) -> np.ndarray:
        return np.asarray(fn(b), dtype=F64).reshape((1,) * nd + (2,))

    return da.map_blocks(pair, arr, chunks=tuple((1,) * len(c) for c in arr.chunks) + ((2,),),
                         new_axis=nd, dtype=F64, name=name,
                         meta=np.empty((0,) * (nd + 1), dtype=F64))


def _pair_blocks(func: Callable[..., Tuple[float, float]], ind: str, args: List[Any],
                 token: str) -> da.Array:
    """blockwise(func) laid out by the output index `ind`, each block's result the float64
    pair func(...) = (sum of losses, denominator share): a (blocks..., 2) array."""
    def wrapped(*blocks: Any) -> np.ndarray:
        return np.asarray(func(*blocks), dtype=F64).reshape((1,) * len(ind) + (2,))

    return da.blockwise(wrapped, ind + "Z", *args, new_axes={"Z": 2}, token=token,
                        adjust_chunks={i: 1 for i in ind}, dtype=F64, concatenate=True,
                        meta=np.empty((0,) * (len(ind) + 1), dtype=F64))


def _finish_pairs(pairs: da.Array, reduction: str, dtype: np.dtype,
                  pair_axis: int = -1) -> da.Array:
    """The 0-d result from per-block (sum, denominator) pairs along `pair_axis`, in one task:
    the global float64 sums, divided for "mean", cast once at the very end."""
    def fin(a: np.ndarray) -> np.ndarray:
        tot = np.asarray(np.sum(np.moveaxis(a, pair_axis, -1).reshape(-1, 2), axis=0, dtype=F64))
        s, d = float(tot[0]), float(tot[1])
        value = float(s) if reduction == "sum" else _F._ieee_div(float(s), float(d))
        return np.asarray(value, dtype=dtype)

    ind = _indices(pairs.ndim)
    return da.blockwise(fin, "", pairs, ind, dtype=dtype, concatenate=True,
                        name=pairs.name + "-" + reduction, meta=np.empty((), dtype=dtype))


def _finish(total: da.Array, denominator: Optional[da.Array], reduction: str,
            dtype: np.dtype) -> da.Array:
    """The 0-d result: the global float64 sum (over the global denominator for "mean"), cast
    once, at the very end."""
    if reduction == "sum":
        return da.map_blocks(lambda s: np.asarray(s, dtype=dtype), total, dtype=dtype,
                             meta=np.empty((), dtype=dtype))

    def div(s: np.ndarray, d: np.ndarray) -> np.ndarray:
        return np.asarray(_F._ieee_div(float(s), float(d)), dtype=dtype)

    return da.map_blocks(div, total, denominator, dtype=dtype, meta=np.empty((), dtype=dtype))


def _grad_scale(reduction: str, grad_output: Any, denominator: Optional[da.Array],
                samples: Tuple[int, ...], sample_chunks: Chunks
                ) -> Tuple[Any, Optional[da.Array]]:
    """(scalar part, per-sample part) of the gradient's scale.

    "sum": grad_output; "mean": grad_output / global denominator (0 when it is 0, as in torch)
    as a lazy 0-d array; "none": grad_output broadcast to the per-sample shape and chunked like
    the samples."""
    if reduction != "none":
        g = V.grad_output_scalar(grad_output)
        if reduction == "sum":
            return g, None
        return da.map_blocks(lambda d: np.asarray(g / d if d != 0 else 0.0, F64), denominator,
                             dtype=F64, meta=np.empty((), F64)), None
    go = _as_dask(grad_output, "grad_output")
    V.float_dtypes(go.dtype, "grad_output")
    try:
        np.broadcast_shapes(_shape(go), samples)
        ok = np.broadcast_shapes(_shape(go), samples) == tuple(samples)
    except ValueError:
        ok = False
    if not ok:
        V.grad_output_array(_standin(go.dtype, _shape(go)), samples, F64)   # raises its error
    return None, da.broadcast_to(go.astype(F64), samples).rechunk(sample_chunks)


def _scale_args(g: Any, gdask: Optional[da.Array], s_ind: str) -> List[Any]:
    """The gradient scale from _grad_scale as blockwise arguments (array, index) for a task's
    ``scale`` parameter: a lazy 0-d "mean" scale (index ""), a per-sample "none" scale chunked
    like the samples, or a plain scalar (index None: passed to every task as it is)."""
    if isinstance(g, da.Array):
        return [g, ""]
    if gdask is not None:
        return [gdask, s_ind]
    return [g, None]


# ============================================================================ class-axis setup

@dataclass
class _Spec:
    """The validated options and the layout of one class-axis call."""
    kind: str                   # "ce" or "nll"
    x: da.Array
    t: da.Array
    fmt: str                    # "index" or "prob"
    w: Optional[np.ndarray]     # float64 (C,) or None
    ignore: int
    reduction: str
    eps: float
    zl: float
    cap: float                  # 0.0: no softcap
    ax: int
    C: int
    samples: Tuple[int, ...]
    compute: np.dtype           # kernels' dtype, and the loss dtype
    result: np.dtype            # the gradient's / log_softmax's dtype
    shape: Tuple[int, ...] = ()  # the logits' shape (for error messages)

    def light(self) -> "_Spec":
        """This spec without the dask arrays and the class weights: what a task's function may
        capture.  (A closure over the arrays would drag their whole graph -- data included,
        for arrays made from NumPy -- into every task and into dask's tokenizer; the weights,
        C floats, reach the tasks as one shared graph key instead: see _weight_arg.)"""
        # (typed as the full spec: the tasks that get it never touch x, t or w)
        return replace(self, x=cast(Any, None), t=cast(Any, None), w=None)

    def weight_arg(self) -> List[Any]:
        """[weights as a one-chunk dask array, its index] for blockwise, or [] without
        weights: one key that every task reads, sent to each worker once."""
        if self.w is None:
            return []
        return [da.from_array(self.w, chunks=-1, name="fastce-weight-" + _token(self.w)), "W"]

    @property
    def ind(self) -> str:
        return _indices(self.x.ndim)

    @property
    def s_ind(self) -> str:
        return self.ind[:self.ax] + self.ind[self.ax + 1:]

    @property
    def t_ind(self) -> str:
        return self.s_ind if self.fmt == "index" else self.ind

    @property
    def vocab_parallel(self) -> bool:
        return len(self.x.chunks[self.ax]) > 1

    def kernel_kwargs(self) -> Dict[str, Any]:
        kw: Dict[str, Any] = dict(weight=self.w, ignore_index=self.ignore, axis=self.ax)
        if self.kind == "ce":
            kw.update(label_smoothing=self.eps, z_loss=self.zl,
                      softcap=self.cap if self.cap else None)
        return kw


def _spec(kind: str, input: Any, target: Any, weight: Any, ignore_index: Any, reduction: Any,
          label_smoothing: Any, axis: Any, z_loss: Any, softcap: Any) -> _Spec:
    # the same rules, in the same order, as functional._class_loss
    reduction, eps, zl, ignore = _F._ce_options(reduction, label_smoothing, z_loss, ignore_index)
    x = _as_dask(input, "input")
    compute, result = V.float_dtypes(x.dtype, "input")
    cap = V.softcap(softcap, compute)
    _, C, _, ax = V.split_axis(_shape(x), axis, "input")
    samples = V.sample_shape(_shape(x), ax)
    w = V.class_weight(_small_numpy(weight), C)
    t = _as_dask(target, "target")
    fmt = V.target_format(_standin(t.dtype, _shape(t)), _shape(x), samples)
    if fmt == "prob" and kind == "nll":
        raise TypeError(f"nll_loss needs class-index targets of shape {samples} with an integer "
                        f"dtype; got a target of the input's shape {tuple(t.shape)}")
    _check_target_dtype(t, fmt, samples, C, ignore, _shape(x))
    t = t.rechunk(_sample_chunks(x.chunks, ax) if fmt == "index" else x.chunks)
    return _Spec(kind, x, t, fmt, w, ignore, reduction, eps, zl, cap, ax, C, samples,
                 compute, result, _shape(x))


def _index_target_block(sp: _Spec, tb: np.ndarray) -> np.ndarray:
    """A block of class indices checked by _validate (range errors raise here, at compute)."""
    return V.class_index_target(tb, tb.shape, sp.C, sp.ignore, sp.shape)


def _block_denominator(sp: _Spec, tb: np.ndarray, w: Optional[np.ndarray]) -> float:
    """One target block's share of the "mean" denominator."""
    if sp.fmt == "prob":
        return float(math.prod(V.sample_shape(tb.shape, sp.ax)))
    return _F._index_denominator(_index_target_block(sp, tb), w, sp.ignore)


def _denominator(sp: _Spec) -> da.Array:
    """The "mean" denominator, lazy 0-d float64: sum of m_n w_{y_n} (from the targets alone,
    without reading the logits) or the number of samples."""
    if sp.fmt == "prob":
        return da.from_array(np.asarray(float(math.prod(sp.samples)), F64))
    o = sp.light()

    def part(tb: np.ndarray, w: Optional[np.ndarray] = None) -> np.ndarray:
        return np.full((1,) * tb.ndim, _block_denominator(o, tb, w), dtype=F64)

    ti = _indices(sp.t.ndim)
    per = da.blockwise(part, ti, sp.t, ti, *sp.weight_arg(), adjust_chunks={i: 1 for i in ti},
                       dtype=F64, concatenate=True, meta=np.empty((0,) * sp.t.ndim, F64))
    return da.blockwise(_sum_all, "", per, ti, dtype=F64, concatenate=True,
                        meta=np.empty((), dtype=F64))


# ============================================================================ batch path

def _batch_class_loss(sp: _Spec, want_grad: bool, grad_output: Any) -> Any:
    """Class axis in one chunk: fastce's kernel per block, float64 sums across blocks.

    Every call is the kernel with reduction="none" (each sample's loss, unrounded by a block
    sum); the gradient, when wanted, comes out of the same call, scaled for the global
    reduction through grad_output."""
    fn = _F.cross_entropy if sp.kind == "ce" else _F.nll_loss
    kw = sp.kernel_kwargs()
    weighted = kw.pop("weight") is not None
    o = sp.light()
    args: List[Any] = [sp.x, sp.ind, sp.t, sp.t_ind, *sp.weight_arg()]
    name = f"fastce-{sp.kind}-{_token(sp.x.name, sp.t.name, sp.reduction, want_grad, repr(kw))}"

    cdt = sp.compute

    if not want_grad:
        def losses(xb: np.ndarray, tb: np.ndarray, *rest: Any) -> np.ndarray:
            return fn(xb, tb, weight=rest[0] if weighted else None, reduction="none", **kw)

        if sp.reduction == "none":
            return da.blockwise(losses, sp.s_ind, *args, dtype=sp.result, token=name,
                                concatenate=True,
                                meta=np.empty((0,) * len(sp.samples), sp.result))

        ax = sp.ax

        def pair(xb: np.ndarray, tb: np.ndarray, *rest: Any) -> np.ndarray:
            # the block's (sum, denominator share): one task per block, targets read once.
            # (float16 logits go in as float32, the compute dtype, so that the per-sample
            # losses come back in float32, not rounded to float16.)
            w = rest[0] if weighted else None
            out = np.ones(xb.ndim, dtype=np.intp)
            out[ax] = 2
            return np.array([np.sum(losses(xb.astype(cdt, copy=False), tb, *rest), dtype=F64),
                             _block_denominator(o, tb, w) if o.reduction == "mean" else 0.0]
                            ).reshape(out)

        # The pair sits where the class axis was (one chunk here), so no index is contracted:
        # dask then fuses the reads of the logits and targets (from_npy, from_zarr) into this
        # task instead of scheduling them as tasks of their own.
        cl = sp.ind[sp.ax]
        pargs = [sp.x, sp.ind, sp.t, sp.t_ind]
        if weighted:
            pargs += [da.from_array(sp.w, chunks=(sp.x.chunks[sp.ax],),
                                    name="fastce-weight-" + _token(sp.w)), cl]
        pairs = da.blockwise(pair, sp.ind, *pargs, token=name + "-pair", dtype=F64,
                             adjust_chunks={i: (1 if i != cl else 2) for i in sp.ind},
                             meta=np.empty((0,) * sp.x.ndim, dtype=F64))
        return _finish_pairs(pairs, sp.reduction, sp.compute, pair_axis=sp.ax)

    # with the gradient, the "mean" denominator is needed before the blocks: from the targets
    denominator = _denominator(sp) if sp.reduction == "mean" else None
    g, gdask = _grad_scale(sp.reduction, grad_output, denominator, sp.samples,
                           _sample_chunks(sp.x.chunks, sp.ax))
    args += _scale_args(g, gdask, sp.s_ind)

    def block(xb: np.ndarray, tb: np.ndarray, *rest: Any) -> Any:
        # in the compute dtype (float32 for float16): per-sample losses unrounded to float16;
        # the gradient is cast to the result dtype below, as the in-memory call does
        go = rest[-1]
        return fn(xb.astype(cdt, copy=False), tb, weight=rest[0] if weighted else None,
                  reduction="none", return_grad=True,
                  grad_output=float(go) if np.ndim(go) == 0 else go, **kw)

    # one (losses, grad) tuple per sample block (the class axis is one chunk: one block of x)
    parts = _per_block(block, *args, ind=sp.s_ind, name=name + "-parts")
    if sp.reduction == "none":
        loss = _field(parts, 0, sp.result)
    else:
        loss = _finish(_block_sum(parts, 0), denominator, sp.reduction, sp.compute)
    result = sp.result
    grad = da.map_blocks(lambda b: b[1].astype(result, copy=False), parts, new_axis=sp.ax,
                         chunks=sp.x.chunks, dtype=sp.result, name=f"{parts.name}-grad",
                         meta=np.empty((0,) * sp.x.ndim, sp.result))
    return loss, grad


# ============================================================================ vocab-parallel path
#
# Per class chunk (pass 1), fields along the class axis, all float64, per sample:
#   0  m_k    the chunk's max of the (softcapped) logits
#   1  r_k    sum exp(z - m_k) over the chunk with the max's own term (exactly 1) left out
#   index targets:  2  z_y if this chunk owns the target else 0
#                   3  a_k = sum_c w_c (sh_k - z_c)          (label smoothing only)
#   prob targets:   2  b_k = sum_c k_c (sh_k - z_c),  3  ksum_k = sum_c k_c,
#                   with k_c = w_c ((1 - eps) q_c + eps / C)
# sh_k is m_k where finite, else 0 (an all -inf chunk must not give -inf - -inf = NaN); every
# term of a_k and b_k is >= 0, so those sums do not cancel.
#
# Merged per sample (the G fields, float64):
_G_LOSS, _G_DEN, _G_SHIFT, _G_LOGS, _G_COEF, _G_YM1, _G_WY = range(7)
#   LOSS  the sample's loss             DEN   its share of the "mean" denominator
#   SHIFT M where finite, else 0        LOGS  log S (so lse = SHIFT + LOGS, log p = z-SHIFT-LOGS)
#   COEF  the p_c coefficient of the gradient other than (1-eps) w_y: (eps/C) W + 2 z lse
#         (index), K + 2 z lse (prob, K = sum_c k_c)
#   YM1   p_y - 1 = expm1(z_y - lse), accurate for a confident target (index)
#   WY    (1 - eps) w_y, or 0 for an ignored sample (index)


def _capped64(sp_cap: float, xb: np.ndarray) -> np.ndarray:
    """The logits in float64 (a private copy, on a pooled buffer: a fresh one per chunk would
    be page-faulted in again), softcapped when asked."""
    z = _POOL.array(xb.shape, F64)
    np.copyto(z, xb)
    if sp_cap:
        z /= sp_cap
        np.tanh(z, out=z)
        z *= sp_cap
    return z


def _max_rest(z: np.ndarray, ax: int) -> Tuple[np.ndarray, np.ndarray]:
    """(m, r) of a float64 chunk along `ax`, keepdims: its max and r = sum exp(z - m) over the
    chunk with the max's own term (exactly 1) left out.

    One fused fastce kernel call computes r: cross-entropy with the chunk's own argmax as the
    target is ``nll = log1p(r)`` (the kernel's confident-row form, full relative precision), so
    ``r = expm1(nll)`` to a few ulps -- in float64, and without a NumPy exp pass.  A chunk
    whose max is not finite gives NaN here; the merge never reads its r (it weighs an all -inf
    chunk by 0 and returns M itself for an infinite or NaN M)."""
    kept_shape = z.shape[:ax] + (1,) + z.shape[ax + 1:]
    if z.shape[ax] == 0:
        return np.full(kept_shape, -np.inf), np.zeros(kept_shape)
    top = np.expand_dims(np.argmax(z, axis=ax), ax)
    m = np.take_along_axis(z, top, axis=ax)
    with np.errstate(invalid="ignore", over="ignore"):
        nll = _F.cross_entropy(z, np.squeeze(top, ax), reduction="none", axis=ax)
        r = np.expm1(np.asarray(nll, dtype=F64)).reshape(kept_shape)
    return m, r


def _shifted(z: np.ndarray, m: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(sh, d): the finite shift (m, or 0 where m is not finite) and d = z - sh, in z's
    memory."""
    sh = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(invalid="ignore"):
        np.subtract(z, sh, out=z)
    return sh, z


def _weighted_gap(coef: Optional[np.ndarray], d: np.ndarray, ax: int) -> np.ndarray:
    """sum_c coef_c (sh - z_c) = -sum_c coef_c d_c, with 0 * inf = 0 where coef_c == 0 (a
    masked class with zero weight contributes nothing)."""
    with np.errstate(invalid="ignore"):
        if coef is None:
            return -d.sum(axis=ax, keepdims=True)
        return -np.where(coef == 0.0, 0.0, coef * d).sum(axis=ax, keepdims=True)


def _class_view(v: np.ndarray, ndim: int, ax: int) -> np.ndarray:
    """A (Ck,) per-class vector shaped to broadcast along the class axis `ax`."""
    shape = [1] * ndim
    shape[ax] = v.shape[0]
    return v.reshape(shape)


def _owned(tb: np.ndarray, c0: int, ck: int, ax: int) -> Tuple[np.ndarray, np.ndarray]:
    """(mask, local index) of the samples whose target lies in classes [c0, c0 + ck)."""
    t = np.asarray(tb).astype(np.int64, copy=False)
    own = (t >= c0) & (t < c0 + ck)
    return np.expand_dims(own, ax), np.expand_dims(np.where(own, t - c0, 0), ax)


def _chunk_stats(sp: _Spec, xb: np.ndarray, tb: np.ndarray, cls: np.ndarray,
                 wb: Optional[np.ndarray]) -> np.ndarray:
    ax, nd = sp.ax, xb.ndim
    z = _capped64(sp.cap, xb)
    fields = []
    if sp.fmt == "index" and cls.size:
        own, loc = _owned(tb, int(cls[0]), cls.size, ax)
        zy = np.where(own, np.take_along_axis(z, loc, axis=ax), 0.0)
    else:       # (no class in this chunk, or probability targets, which do not use it)
        zy = np.zeros(z.shape[:ax] + (1,) + z.shape[ax + 1:])
    m, r = _max_rest(z, ax)
    wv = None if wb is None else _class_view(wb, nd, ax)
    if sp.fmt == "index":
        fields.append(zy)
        if sp.eps:
            fields.append(_weighted_gap(wv, _shifted(z, m)[1], ax))
    else:
        q = V.probability_target(tb, tb.shape, F64)
        k = (1.0 - sp.eps) * q + sp.eps / sp.C
        if wv is not None:
            k *= wv
        fields += [_weighted_gap(k, _shifted(z, m)[1], ax), k.sum(axis=ax, keepdims=True)]
    return np.concatenate([m, r] + fields, axis=ax)


def _n_stats(sp: _Spec) -> int:
    if sp.fmt == "index":
        return 3 + (1 if sp.eps else 0)
    return 4


def _merge_lse(m: np.ndarray, r: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample, from the chunks' (m_k, r_k) on the last axis: (shift, log S, per-chunk
    shifts sh_k).  lse = shift + log S; log S = log1p(S - 1) for a finite max M, else M itself
    (-inf for an all -inf row, +inf with a +inf logit, NaN with a NaN)."""
    M = np.max(m, axis=-1)
    finite = np.isfinite(M)
    shift = np.where(finite, M, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        s = np.where(m == -np.inf, 0.0, 1.0 + r) * np.exp(m - shift[..., None])
    top = np.expand_dims(np.argmax(m, axis=-1), -1)
    np.put_along_axis(s, top, np.take_along_axis(r, top, axis=-1), axis=-1)   # S - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        log_s = np.where(finite, np.log1p(s.sum(axis=-1)), M)
    return shift, log_s, np.where(np.isfinite(m), m, 0.0)


def _fields_last(a: np.ndarray, ax: int, nf: int) -> np.ndarray:
    """Stats concatenated along the class axis (K chunks x nf fields) -> (..., K, nf)."""
    a = np.moveaxis(a, ax, -1)
    return a.reshape(a.shape[:-1] + (a.shape[-1] // nf, nf))


def _merge(sp: _Spec, st: np.ndarray, tb: Optional[np.ndarray], w: Optional[np.ndarray],
           w_chunk_sums: np.ndarray) -> np.ndarray:
    nf = _n_stats(sp)
    f = _fields_last(st, sp.ax, nf)
    shift, log_s, sh_k = _merge_lse(f[..., 0], f[..., 1])
    # a row whose max is not finite (all -inf, a +inf, a NaN) has no finite log-probability
    # to offer: NaN loss and gradient, as the in-memory kernel gives
    log_s = np.where(np.isfinite(log_s), log_s, np.nan)
    lse = shift + log_s
    G = np.zeros(shift.shape + (7,), dtype=F64)
    zc = 2.0 * sp.zl * lse if sp.zl else 0.0
    zloss = sp.zl * lse * lse if sp.zl else 0.0
    spread = sp.eps / sp.C if sp.C else 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        if sp.fmt == "index":
            assert tb is not None           # index targets always come with their block
            t = _index_target_block(sp, tb)
            kept = t != sp.ignore
            ts = np.where(kept, t, 0)
            wy = np.where(kept, w[ts] if w is not None else 1.0, 0.0)
            zy = f[..., 2].sum(axis=-1)     # only the owning chunk holds a nonzero z_y
            nll = (shift - zy) + log_s      # = log1p(S - 1) exactly when z_y is the max
            per = (1.0 - sp.eps) * wy * nll
            W = float(w_chunk_sums.sum())
            if sp.eps:
                smooth = (f[..., 3] + (shift[..., None] - sh_k) * w_chunk_sums).sum(axis=-1)
                per = per + spread * (smooth + W * log_s)
            G[..., _G_LOSS] = np.where(kept, per + zloss, 0.0)
            G[..., _G_DEN] = wy
            G[..., _G_COEF] = np.where(kept, spread * W + zc, 0.0)
            G[..., _G_YM1] = np.expm1((zy - shift) - log_s)
            G[..., _G_WY] = (1.0 - sp.eps) * wy
        else:
            K = f[..., 3].sum(axis=-1)
            per = (f[..., 2] + (shift[..., None] - sh_k) * f[..., 3]).sum(axis=-1)
            G[..., _G_LOSS] = per + K * log_s + zloss
            G[..., _G_DEN] = 1.0
            G[..., _G_COEF] = K + zc
    G[..., _G_SHIFT] = shift
    G[..., _G_LOGS] = log_s
    return G


def _stats_graph(sp: _Spec, name: str) -> da.Array:
    """Pass 1 and the merge: (the chunks' partials, the per-sample G fields chunked like the
    samples plus a trailing axis of 7 fields)."""
    cl = sp.ind[sp.ax]
    nf = _n_stats(sp)
    cls = da.arange(sp.C, chunks=(sp.x.chunks[sp.ax],))
    args: List[Any] = [sp.x, sp.ind, sp.t, sp.t_ind, cls, cl]
    wd = None
    if sp.w is not None:
        wd = da.from_array(sp.w, chunks=(sp.x.chunks[sp.ax],))
        args += [wd, cl]

    o = sp.light()

    def stats(xb: np.ndarray, tb: np.ndarray, cb: np.ndarray,
              wb: Optional[np.ndarray] = None) -> np.ndarray:
        return _chunk_stats(o, xb, tb, cb, wb)

    st = da.blockwise(stats, sp.ind, *args, dtype=F64, token=name + "-stats",
                      adjust_chunks={cl: nf}, meta=np.empty((0,) * sp.x.ndim, F64))
    bounds = np.cumsum((0,) + sp.x.chunks[sp.ax])
    w_chunk_sums = np.array([float(sp.w[a:b].sum()) if sp.w is not None else float(b - a)
                             for a, b in zip(bounds[:-1], bounds[1:])])
    targs: List[Any] = [sp.t, sp.t_ind, *sp.weight_arg()] if sp.fmt == "index" else []

    def merge(stb: np.ndarray, tb: Optional[np.ndarray] = None,
              w: Optional[np.ndarray] = None) -> np.ndarray:
        return _merge(o, stb, tb, w, w_chunk_sums)

    return da.blockwise(merge, sp.s_ind + "Z", st, sp.ind, *targs, new_axes={"Z": 7},
                        dtype=F64, token=name + "-merge", concatenate=True,
                        meta=np.empty((0,) * (len(sp.samples) + 1), F64))


def _chunk_probs(z: np.ndarray, Gb: np.ndarray, ax: int) -> np.ndarray:
    """p_c = exp((z_c - M) - log S) for one chunk, in z's memory: the in-memory kernels'
    form, from the merged per-sample shift and log S (a masked class gives exp(-inf) = 0, a
    row with a non-finite max NaN through log S).  One NumPy float64 exp pass, about the cost
    of fastce's one-thread float64 softmax kernel over the chunk, and it needs no per-chunk
    partials (so the gradient tasks do not read pass 1's)."""
    shift = np.expand_dims(Gb[..., _G_SHIFT], ax)
    log_s = np.expand_dims(Gb[..., _G_LOGS], ax)
    with np.errstate(invalid="ignore", over="ignore"):
        np.subtract(z, shift, out=z)
        np.subtract(z, log_s, out=z)
        np.exp(z, out=z)
    return z


def _grad_chunk(sp: _Spec, xb: np.ndarray, tb: np.ndarray, cls: np.ndarray, Gb: np.ndarray,
                scale: Any, wb: Optional[np.ndarray]) -> np.ndarray:
    """Pass 2: d(loss)/d(logits) for one chunk, from the merged per-sample fields of its
    sample block."""
    ax, nd = sp.ax, xb.ndim
    if cls.size == 0:
        return np.zeros(xb.shape, dtype=sp.result)

    def col(i: int) -> np.ndarray:
        return np.expand_dims(Gb[..., i], ax)

    z = _capped64(sp.cap, xb)
    dcap = None
    if sp.cap:
        dcap = z / sp.cap
        np.multiply(dcap, dcap, out=dcap)
        np.subtract(1.0, dcap, out=dcap)        # d(c tanh(x / c))/dx = 1 - tanh^2
    with np.errstate(invalid="ignore", over="ignore"):
        g = _chunk_probs(z, Gb, ax)             # p, in z's memory
        wv = None if wb is None else _class_view(wb, nd, ax)
        if sp.fmt == "index":
            t = _index_target_block(sp, tb)
            own, loc = _owned(t, int(cls[0]), cls.size, ax)
            py = np.take_along_axis(g, loc, axis=ax)
            g *= col(_G_COEF) + col(_G_WY)
            if sp.eps:
                g -= (sp.eps / sp.C) * (1.0 if wv is None else wv)
            # at the target: COEF p_y + (1-eps) w_y (p_y - 1) - (eps/C) w_y, with p_y - 1 from
            # the merge (no cancellation when p_y ~ 1)
            wyc = (sp.eps / sp.C) * (1.0 if wb is None else wb[loc]) if sp.eps else 0.0
            gy = col(_G_COEF) * py + col(_G_WY) * col(_G_YM1) - wyc
            np.put_along_axis(g, loc, np.where(own, gy, np.take_along_axis(g, loc, axis=ax)),
                              axis=ax)
            kept = np.expand_dims(t != sp.ignore, ax)
        else:
            q = V.probability_target(tb, tb.shape, F64)
            kc = (1.0 - sp.eps) * q + sp.eps / sp.C
            if wv is not None:
                kc *= wv
            g *= col(_G_COEF)
            g -= kc
            kept = None
        g *= scale if np.ndim(scale) == 0 else np.expand_dims(scale, ax)
        if kept is not None and not kept.all():
            g = np.where(kept, g, 0.0)      # ignored samples: exactly 0, even for NaN logits
        if dcap is not None:
            g *= dcap
    return g.astype(sp.result, copy=False)


def _G_pair(b: np.ndarray) -> Tuple[float, float]:
    return np.sum(b[..., _G_LOSS], dtype=F64), np.sum(b[..., _G_DEN], dtype=F64)


def _vocab_class_loss(sp: _Spec, want_grad: bool, grad_output: Any) -> Any:
    name = f"fastce-vp-{_token(sp.x.name, sp.t.name, sp.reduction, repr(sp.kernel_kwargs()))}"
    G = _stats_graph(sp, name)
    if sp.reduction == "none":
        loss = G[..., _G_LOSS].astype(sp.result)     # per-sample: the input's float dtype
        denominator = None
    elif not want_grad:         # each merge task ends with its block's (sum, denominator)
        return _finish_pairs(_pairs_of(G, _G_pair, G.name + "-pair"), sp.reduction, sp.compute)
    else:
        total = _sum_per_block(G, lambda b: np.sum(b[..., _G_LOSS], dtype=F64), G.name + "-sum")
        denominator = (_sum_per_block(G, lambda b: np.sum(b[..., _G_DEN], dtype=F64),
                                      G.name + "-den") if sp.reduction == "mean" else None)
        loss = _finish(total, denominator, sp.reduction, sp.compute)
    if not want_grad:
        return loss
    g, gdask = _grad_scale(sp.reduction, grad_output, denominator, sp.samples,
                           _sample_chunks(sp.x.chunks, sp.ax))
    cl = sp.ind[sp.ax]
    cls = da.arange(sp.C, chunks=(sp.x.chunks[sp.ax],))
    args: List[Any] = [sp.x, sp.ind, sp.t, sp.t_ind, cls, cl, G, sp.s_ind + "Z"]
    args += _scale_args(g, gdask, sp.s_ind)
    if sp.w is not None:
        args += [da.from_array(sp.w, chunks=(sp.x.chunks[sp.ax],)), cl]

    o = sp.light()

    def grad(xb: np.ndarray, tb: np.ndarray, cb: np.ndarray, Gb: np.ndarray, scale: Any,
             wb: Optional[np.ndarray] = None) -> np.ndarray:
        return _grad_chunk(o, xb, tb, cb, Gb, scale, wb)

    gr = da.blockwise(grad, sp.ind, *args, dtype=sp.result, token=name + "-grad",
                      concatenate=True, meta=np.empty((0,) * sp.x.ndim, sp.result))
    return loss, gr


# ============================================================================ public: class losses

def cross_entropy(input: Any, target: Any, *, weight: Optional[ArrayLike] = None,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0, axis: int = -1, z_loss: float = 0.0,
                  softcap: Optional[float] = None, return_grad: bool = False,
                  grad_output: Any = 1.0) -> Any:
    """Cross-entropy of dask-array logits (see :func:`fastce.cross_entropy`).

    Parameters
    ----------
    input : dask.array.Array or array_like
        Logits, chunked along the batch axes, the class axis, or both.  Class-chunked logits
        are evaluated vocab-parallel (see the module docstring): no task ever holds a whole row.
    target : dask.array.Array or array_like
        Integer class indices (the input's shape without `axis`) or float probabilities (the
        input's shape); rechunked to line up with the input's chunks.
    weight : array_like of shape (C,), optional
        Per-class weights (a dask array is computed first: it is small).
    ignore_index, label_smoothing, z_loss, softcap : as in :func:`fastce.cross_entropy`
        Validated by the same rules (fastce._validate), with the same errors.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` is the exact global weighted mean ``sum_n m_n w_{y_n} l_n / sum_n m_n
        w_{y_n}`` (the number of samples for probability targets), accumulated in float64 over
        all blocks and cast once.
    axis : int, default -1
        The class axis.
    return_grad : bool, default False
        Also return d(loss)/d(logits) as a lazy dask array with the logits' chunks.
    grad_output : float or array_like, default 1.0
        Upstream gradient: a scalar for mean/sum, broadcastable to the per-sample shape for
        ``"none"`` (may be a dask array).

    Returns
    -------
    loss : dask.array.Array
        Lazy: 0-d for ``"mean"``/``"sum"``, the per-sample shape for ``"none"``; dtype is
        fastce's compute dtype (float32 for float16 input).
    grad : dask.array.Array, with return_grad=True
        The logits' shape and chunks and fastce's gradient dtype.  Compute it together with the
        loss (``dask.compute(loss, grad)``) to read the logits once on the batch path (twice,
        once per pass, on the vocab-parallel path).

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> x = da.from_array(np.log([[1.0, 1.0, 2.0], [4.0, 2.0, 2.0]]), chunks=(1, 2))
    >>> round(float(cross_entropy(x, np.array([2, 0])).compute()), 6)   # -log(1/2)
    0.693147
    """
    sp = _spec("ce", input, target, weight, ignore_index, reduction, label_smoothing, axis,
               z_loss, softcap)
    if sp.vocab_parallel:
        return _vocab_class_loss(sp, return_grad, grad_output)
    return _batch_class_loss(sp, return_grad, grad_output)


def nll_loss(input: Any, target: Any, *, weight: Optional[ArrayLike] = None,
             ignore_index: int = -100, reduction: str = "mean", axis: int = -1,
             return_grad: bool = False, grad_output: Any = 1.0) -> Any:
    """Negative log-likelihood of dask-array log-probabilities (see :func:`fastce.nll_loss`).

    Parameters
    ----------
    input : dask.array.Array or array_like
        Log-probabilities, chunked along the batch, the class axis, or both.  With the class
        axis split, each class chunk contributes ``-w_y x_y`` for the samples whose target it
        owns (vocab-parallel; no chunk spans the class axis); the per-sample values are added
        across chunks in float64 (one nonzero term each, so exactly).
    target : dask.array.Array or array_like
        Integer class indices of the input's shape without `axis`.
    weight, ignore_index, reduction, axis, return_grad, grad_output
        As in :func:`cross_entropy`.

    Returns
    -------
    loss, or (loss, grad) with return_grad=True: lazy dask arrays; the gradient has the
    input's chunks (on the vocab-parallel path it is built from the targets alone: NLL's
    gradient, ``-w_y`` times the scale at the target, does not depend on the input's values).
    """
    sp = _spec("nll", input, target, weight, ignore_index, reduction, 0.0, axis, 0.0, None)
    if sp.vocab_parallel:
        return _vocab_nll(sp, return_grad, grad_output)
    return _batch_class_loss(sp, return_grad, grad_output)


def _owned_kept(sp: _Spec, tb: np.ndarray, cls: np.ndarray
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(validated targets, mask of the samples this class chunk owns and does not ignore,
    their local class index), the mask and index with the class axis kept (size 1)."""
    t = _index_target_block(sp, tb)
    if cls.size == 0:
        z = np.zeros(t.shape, dtype=bool)
        return t, np.expand_dims(z, sp.ax), np.expand_dims(z.astype(np.intp), sp.ax)
    own, loc = _owned(t, int(cls[0]), cls.size, sp.ax)
    own &= np.expand_dims(t != sp.ignore, sp.ax)
    return t, own, loc


def _nll_terms(sp: _Spec, xb: np.ndarray, tb: np.ndarray, cls: np.ndarray,
               w: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Per sample of one (sample block, class chunk): (-w_y x_y, w_y) where this chunk owns the
    (kept) target, else (0, 0), in float64 with the class axis kept (size 1)."""
    t, own, loc = _owned_kept(sp, tb, cls)
    if cls.size == 0:
        z = np.zeros(own.shape, dtype=F64)
        return z, z
    ts = np.expand_dims(np.where(t == sp.ignore, 0, t), sp.ax)
    wy = np.where(own, 1.0 if w is None else np.asarray(w, F64)[ts], 0.0)
    xy = np.take_along_axis(xb, loc, axis=sp.ax).astype(F64)
    with np.errstate(invalid="ignore"):
        # where(): a sample owned elsewhere contributes exactly 0, whatever x holds here
        return np.where(own, -(wy * xy), 0.0), wy


def _vocab_nll(sp: _Spec, want_grad: bool, grad_output: Any) -> Any:
    """NLL on a split class axis: the chunk that owns a sample's target gives its term."""
    o = sp.light()
    cl = sp.ind[sp.ax]
    cls = da.arange(sp.C, chunks=(sp.x.chunks[sp.ax],))
    args: List[Any] = [sp.x, sp.ind, sp.t, sp.t_ind, cls, cl, *sp.weight_arg()]
    name = f"fastce-vp-nll-{_token(sp.x.name, sp.t.name, sp.reduction, sp.ignore)}"
    weighted = sp.w is not None

    if sp.reduction == "none":
        def per_chunk(xb: np.ndarray, tb: np.ndarray, cb: np.ndarray, *w: np.ndarray
                      ) -> np.ndarray:
            return _nll_terms(o, xb, tb, cb, w[0] if weighted else None)[0]

        per = da.blockwise(per_chunk, sp.ind, *args, dtype=F64, token=name + "-terms",
                           adjust_chunks={cl: 1}, concatenate=True,
                           meta=np.empty((0,) * sp.x.ndim, F64))
        ax, result = sp.ax, sp.result

        def add(b: np.ndarray) -> np.ndarray:
            return np.sum(b, axis=ax, dtype=F64).astype(result)

        loss = da.blockwise(add, sp.s_ind, per, sp.ind, dtype=result, token=name + "-loss",
                            concatenate=True, meta=np.empty((0,) * len(sp.samples), result))
    else:
        def pair(xb: np.ndarray, tb: np.ndarray, cb: np.ndarray, *w: np.ndarray
                 ) -> Tuple[float, float]:
            v, wy = _nll_terms(o, xb, tb, cb, w[0] if weighted else None)
            return float(np.sum(v, dtype=F64)), float(np.sum(wy, dtype=F64))

        loss = _finish_pairs(_pair_blocks(pair, sp.ind, args, name + "-pair"), sp.reduction,
                             sp.compute)
    if not want_grad:
        return loss
    denominator = _denominator(sp) if sp.reduction == "mean" else None
    g, gdask = _grad_scale(sp.reduction, grad_output, denominator, sp.samples,
                           _sample_chunks(sp.x.chunks, sp.ax))
    gargs: List[Any] = [sp.t, sp.t_ind, cls, cl]
    gargs += _scale_args(g, gdask, sp.s_ind)
    gargs += sp.weight_arg()

    def grad(tb: np.ndarray, cb: np.ndarray, scale: Any, *w: np.ndarray) -> np.ndarray:
        # the chunk's shape from the target block and the class chunk: x is not read
        t, own, loc = _owned_kept(o, tb, cb)
        shape = list(t.shape)
        shape.insert(o.ax, cb.size)
        out = np.zeros(shape, dtype=o.result)
        if cb.size == 0 or not own.any():
            return out
        ts = np.expand_dims(np.where(t == o.ignore, 0, t), o.ax)
        wy = 1.0 if not w else np.asarray(w[0], F64)[ts]
        sc = scale if np.ndim(scale) == 0 else np.expand_dims(scale, o.ax)
        gy = np.where(own, -(wy * sc), np.take_along_axis(out, loc, axis=o.ax))
        np.put_along_axis(out, loc, gy.astype(o.result), axis=o.ax)
        return out

    gr = da.blockwise(grad, sp.ind, *gargs, dtype=sp.result, token=name + "-grad",
                      concatenate=True, meta=np.empty((0,) * sp.x.ndim, sp.result))
    return loss, gr


# ============================================================================ entropy

def entropy(input: Any, *, axis: int = -1, reduction: str = "none", return_grad: bool = False,
            grad_output: Any = 1.0) -> Any:
    """Shannon entropy (nats) of softmax(logits) along `axis` (see :func:`fastce.entropy`).

    A class axis in one chunk runs fastce's kernel per block.  A split class axis is merged from
    per-chunk float64 partials -- (m_k, r_k) as for cross_entropy and
    ``u_k = sum_c exp(z_c - m_k) (m_k - z_c)`` -- as::

        H = log S + sum_k exp(m_k - M) [u_k + (M - m_k) s_k] / S

    (every term >= 0: a confident row keeps its tiny entropy to full relative precision).  The
    gradient ``-p_j (log p_j + H)`` keeps the logits' chunks.  Rows with a +inf logit have a
    NaN gradient throughout on the split path (the kernel gives 0 at the finite classes).

    Returns
    -------
    entropy, or (entropy, grad) with return_grad=True: lazy dask arrays ("none": the per-sample
    shape in the input's float dtype; "mean"/"sum": 0-d in the compute dtype).
    """
    from . import divergence as _D
    reduction = V.reduction(reduction)
    x = _as_dask(input, "input")
    compute, result = V.float_dtypes(x.dtype, "input")
    _, C, _, ax = V.split_axis(_shape(x), V.axis_option(axis), "input")
    samples = V.sample_shape(_shape(x), ax)
    ind = _indices(x.ndim)
    s_ind = ind[:ax] + ind[ax + 1:]
    schunks = _sample_chunks(x.chunks, ax)
    name = "fastce-entropy-" + _token(x.name, ax, reduction, return_grad)
    if len(x.chunks[ax]) == 1:
        # one chunk per row: the kernel's per-sample entropies (and gradient) per block
        def per_block(xb: np.ndarray) -> Any:
            return _D.entropy(xb.astype(compute, copy=False), axis=ax, reduction="none",
                              return_grad=True)

        def values(xb: np.ndarray) -> np.ndarray:
            return np.asarray(_D.entropy(xb.astype(compute, copy=False), axis=ax,
                                         reduction="none"), dtype=F64)

        H = da.blockwise(values, s_ind, x, ind, dtype=F64, token=name, concatenate=True,
                         meta=np.empty((0,) * len(samples), F64))
        G = None
    else:
        G = _entropy_stats(x, ax, name)
        H = G[..., 0]
    if reduction == "none":
        loss = H.astype(result)
    else:
        total = _sum_per_block(H, lambda b: np.sum(b, dtype=F64), H.name + "-sum")
        n = da.from_array(np.asarray(float(math.prod(samples)), F64))
        loss = _finish(total, n, reduction, compute)
    if not return_grad:
        return loss
    n_samples = float(math.prod(samples))
    g, gdask = _grad_scale(reduction, grad_output, da.from_array(np.asarray(n_samples, F64))
                           if reduction == "mean" else None, samples, schunks)
    scale_args = _scale_args(g, gdask, s_ind)
    if G is None:
        def grad_block(xb: np.ndarray, sc: Any) -> np.ndarray:
            gb = per_block(xb)[1]
            sc = sc if np.ndim(sc) == 0 else np.expand_dims(sc, ax)
            with np.errstate(invalid="ignore"):
                return (gb * sc).astype(result, copy=False)

        gr = da.blockwise(grad_block, ind, x, ind, *scale_args, dtype=result,
                          token=name + "-grad", concatenate=True,
                          meta=np.empty((0,) * x.ndim, result))
        return loss, gr
    def grad_chunk(xb: np.ndarray, Gb: np.ndarray, sc: Any) -> np.ndarray:
        z = np.array(xb, dtype=F64)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            logp = (z - np.expand_dims(Gb[..., 1], ax)) - np.expand_dims(Gb[..., 2], ax)
            p = np.exp(logp)
            gch = -p * (logp + np.expand_dims(Gb[..., 0], ax))
            gch = np.where(p == 0.0, 0.0, gch)          # masked classes: p = 0, no gradient
            gch *= sc if np.ndim(sc) == 0 else np.expand_dims(sc, ax)
        return gch.astype(result, copy=False)

    gr = da.blockwise(grad_chunk, ind, x, ind, G, s_ind + "Z", *scale_args, dtype=result, token=name + "-grad", concatenate=True,
                      meta=np.empty((0,) * x.ndim, result))
    return loss, gr


def _entropy_stats(x: da.Array, ax: int, name: str) -> da.Array:
    """Per-sample fields [H, shift, log S] merged from per-chunk partials [m_k, r_k, u_k]."""
    ind = _indices(x.ndim)
    s_ind = ind[:ax] + ind[ax + 1:]

    def stats(xb: np.ndarray) -> np.ndarray:
        z = np.array(xb, dtype=F64)
        m, r = _max_rest(z, ax)
        sh, d = _shifted(z, m)
        with np.errstate(invalid="ignore", over="ignore"):
            e = np.exp(d)
            u = -np.where(e == 0.0, 0.0, e * d).sum(axis=ax, keepdims=True)
        return np.concatenate([m, r, u], axis=ax)

    st = da.blockwise(stats, ind, x, ind, dtype=F64, token=name + "-stats",
                      adjust_chunks={ind[ax]: 3}, meta=np.empty((0,) * x.ndim, F64))

    def merge(stb: np.ndarray) -> np.ndarray:
        f = _fields_last(stb, ax, 3)
        m, r, u = f[..., 0], f[..., 1], f[..., 2]
        shift, log_s, sh_k = _merge_lse(m, r)
        with np.errstate(invalid="ignore", over="ignore"):
            log_s = np.where(np.isfinite(log_s), log_s, np.nan)   # non-finite max: NaN
            w_k = np.where(m == -np.inf, 0.0, np.exp(m - shift[..., None]))
            s_k = np.where(m == -np.inf, 0.0, 1.0 + r)
            spread = (w_k * (u + (shift[..., None] - sh_k) * s_k)).sum(axis=-1)
            H = log_s + spread / np.exp(log_s)
        return np.stack([H, shift, log_s], axis=-1)

    return da.blockwise(merge, s_ind + "Z", st, ind, new_axes={"Z": 3}, dtype=F64,
                        token=name + "-merge", concatenate=True,
                        meta=np.empty((0,) * x.ndim, F64))


# ============================================================================ kl_div_logits
#
# Vocab-parallel distillation loss.  The kernel's formulation (fastce/_div_body.h, "KL
# divergence from logits") shifts both rows by their *global* raw maxes ms, mt, and sums, per
# class c with a' = (s_c - ms)/tau, b' = (t_c - mt)/tau, d = ((t_c - s_c) - (mt - ms))/tau,
# ea = e^a', eb = e^b':
#     Sa = sum ea,   G0 = sum ea (e^d - 1),   G1 = sum ea h(d),  h(d) = d e^d - (e^d - 1) >= 0
# then  KL = g1 / (1 + g0) + kappa(g0),  g0 = G0/Sa, g1 = G1/Sa,  kappa(z) = z/(1+z) - log1p(z)
# (no difference of nearly equal totals: nearly equal rows keep their relative precision).
# The sums are plain sums over classes, so with the global maxes known they split over class
# chunks exactly: pass 1 takes each chunk's maxes, pass 2 each chunk's (Sa, G0, G1) in float64
# with the merged maxes, a merge adds them; the gradient tau (q - p) = tau (ea g0 - t0) / (Sa
# (1 + g0)) (t0 = ea (e^d - 1)) is pass 3, per chunk.  One more read of the logits than
# cross_entropy's (its partials can be rescaled to a common max; these, at small d, cannot
# without losing what the formulation keeps).

# e2(d)/d^2 = (expm1(d) - d)/d^2 = sum_{k>=2} d^(k-2)/k!, Horner coefficients 1/17! .. 1/2!
_E2P = [1.0 / math.factorial(k) for k in range(17, 1, -1)]
# kappa(z) series for |z| < 1/8: sum_{n>=2} (-1)^(n+1) (n-1)/n z^n, Horner from n = 20 to 2
_KAPPA = [(-1.0) ** (n + 1) * (n - 1) / n for n in range(20, 1, -1)]


def _kappa(z: np.ndarray) -> np.ndarray:
    """z/(1+z) - log1p(z), from its series near 0 where the two terms cancel."""
    p = np.zeros_like(z)
    for c in _KAPPA:
        p = p * z + c
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        direct = z / (1.0 + z) - np.log1p(z)
    return np.where(np.abs(z) < 0.125, p * z * z, direct)


def _kl_terms(sb: np.ndarray, tb: np.ndarray, ms: np.ndarray, mt: np.ndarray, k: float,
              want_t1: bool = True) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Per class, float64: (ea, t0, t1) as the kernel's kl_terms: t0 = ea (e^d - 1), t1 = ea
    h(d), each from its cancellation-free form for |d| < 1/2 and (eb - ea, eb (d-1) + ea)
    beyond.  ms, mt: the global raw row maxes, broadcastable along the class axis.  t1 is None
    unless `want_t1` (the gradient needs ea and t0 only)."""
    s = np.asarray(sb, dtype=F64)
    t = np.asarray(tb, dtype=F64)
    with np.errstate(invalid="ignore", over="ignore"):
        ea = np.subtract(s, ms)
        ea *= k
        np.exp(ea, out=ea)
        eb = np.subtract(t, mt)
        eb *= k
        np.exp(eb, out=eb)
        d = np.subtract(t, s)
        d -= mt - ms
        d *= k
        # the |d| >= 1/2 forms everywhere (cheap), then the series where |d| < 1/2 only
        t0 = eb - ea
        t1 = None
        if want_t1:
            t1 = d - 1.0
            t1 *= eb
            t1[eb == 0.0] = 0.0
            t1 += ea
        small = np.abs(d) < 0.5                  # NaN: False
        if small.any():
            ds, eas = d[small], ea[small]
            p = np.full_like(ds, _E2P[0])
            for c in _E2P[1:]:
                p *= ds
                p += c
            e2 = ds * ds * p
            t0[small] = eas * (ds + e2)
            if t1 is not None:
                t1[small] = eas * (ds * ds + (ds - 1.0) * e2)
    return ea, t0, t1


def _raw_max(a: np.ndarray, ax: int) -> np.ndarray:
    """Row max along `ax` (keepdims) ignoring NaN, -inf for an empty or all-NaN chunk: the
    kernel's max (a NaN never wins a comparison; the NaN itself reaches the sums)."""
    if a.shape[ax] == 0:
        return np.full(a.shape[:ax] + (1,) + a.shape[ax + 1:], -np.inf)
    with np.errstate(invalid="ignore"):
        m = np.fmax.reduce(np.asarray(a, dtype=F64), axis=ax, keepdims=True)
    return np.where(np.isnan(m), -np.inf, m)


def _kl_setup(input: Any, target: Any, temperature: Any, reduction: Any, axis: Any
              ) -> Tuple[da.Array, da.Array, float, str, int, np.dtype, np.dtype]:
    """The in-memory function's rules, in its order, judged before any data is read.  The
    scalar options go through a one-element call of fastce.kl_div_logits itself."""
    from . import divergence as _D
    one = np.zeros((1, 1))
    _D.kl_div_logits(one, one, reduction=reduction)            # reduction's rule
    s = _as_dask(input, "input (student logits)")
    compute, result = V.float_dtypes(s.dtype, "input (student logits)")
    t = _as_dask(target, "target (teacher logits)")
    V.float_dtypes(t.dtype, "target (teacher logits)")
    V.same_shape(_standin(s.dtype, _shape(s)), _standin(t.dtype, _shape(t)),
                 "input (student logits)", "target (teacher logits)")
    one_c = one.astype(compute)
    _D.kl_div_logits(one_c, one_c, temperature=temperature)      # temperature's rule
    _, _, _, ax = V.split_axis(_shape(s), V.axis_option(axis), "input")
    red = "mean" if reduction == "batchmean" else str(reduction)
    # the teacher in the student's compute dtype, as the in-memory call casts it
    t = t.astype(compute).rechunk(s.chunks)
    return s, t, float(temperature), red, ax, compute, result


def kl_div_logits(input: Any, target: Any, *, temperature: float = 1.0,
                  reduction: str = "batchmean", axis: int = -1, return_grad: bool = False,
                  grad_output: Any = 1.0) -> Any:
    """Distillation loss ``tau^2 KL(softmax(t/tau) || softmax(s/tau))`` of dask-array student
    logits `input` and teacher logits `target` (see :func:`fastce.kl_div_logits`).

    A class axis in one chunk runs fastce's kernel per block.  A split class axis (both
    student and teacher chunked along the classes; the teacher is rechunked like the student)
    is evaluated vocab-parallel with the kernel's own cancellation-free formulation, its sums
    split over class chunks in float64: pass 1 reads each chunk's row maxes, pass 2 each
    chunk's three sums at the merged maxes, pass 3 (gradients only) each chunk's gradient.

    Parameters
    ----------
    input : dask.array.Array or array_like
        Student logits (the gradient is taken w.r.t. them).
    target : dask.array.Array or array_like
        Teacher logits, the input's shape; cast to the student's compute dtype.
    temperature, reduction, axis, grad_output
        As in :func:`fastce.kl_div_logits` ("batchmean" = "mean": over samples).
    return_grad : bool
        Also return the gradient w.r.t. the student, lazy with the student's chunks.

    Returns
    -------
    loss, or (loss, grad) with return_grad=True: lazy dask arrays ("none": the per-sample
    shape in the input's float dtype; otherwise 0-d in the compute dtype).
    """
    from . import divergence as _D
    s, t, tau, red, ax, compute, result = _kl_setup(input, target, temperature, reduction,
                                                    axis)
    samples = V.sample_shape(_shape(s), ax)
    ns = float(math.prod(samples))
    ind = _indices(s.ndim)
    s_ind = ind[:ax] + ind[ax + 1:]
    schunks = _sample_chunks(s.chunks, ax)
    name = "fastce-kl-" + _token(s.name, t.name, tau, red, ax, return_grad)
    g, gdask = ((_grad_scale(red, grad_output, da.from_array(np.asarray(ns, F64))
                             if red == "mean" else None, samples, schunks))
                if return_grad else (None, None))
    scale_args = _scale_args(g, gdask, s_ind)

    if len(s.chunks[ax]) == 1:
        def values(sb: np.ndarray, tb: np.ndarray) -> np.ndarray:
            return np.asarray(_D.kl_div_logits(sb.astype(compute, copy=False), tb,
                                               temperature=tau, reduction="none", axis=ax),
                              dtype=F64)

        per = da.blockwise(values, s_ind, s, ind, t, ind, dtype=F64, token=name,
                           concatenate=True, meta=np.empty((0,) * len(samples), F64))
        G = None
    else:
        G = _kl_stats(s, t, ax, tau, name)
        per = G[..., 0]
    if red == "none":
        loss = per.astype(result)
    else:
        total = _sum_per_block(per, lambda b: float(np.sum(b, dtype=F64)), per.name + "-sum")
        loss = _finish(total, da.from_array(np.asarray(ns, F64)), red, compute)
    if not return_grad:
        return loss
    if G is None:
        def grad_block(sb: np.ndarray, tb: np.ndarray, sc: Any) -> np.ndarray:
            # grad_output = the scale: the kernel's gradient of the global loss, in one call
            go = float(sc) if np.ndim(sc) == 0 else sc
            gb = _D.kl_div_logits_grad(sb.astype(compute, copy=False), tb, temperature=tau,
                                       reduction="none", axis=ax, grad_output=go)
            return np.asarray(gb).astype(result, copy=False)

        gr = da.blockwise(grad_block, ind, s, ind, t, ind, *scale_args, dtype=result,
                          token=name + "-grad", concatenate=True,
                          meta=np.empty((0,) * s.ndim, result))
        return loss, gr
    k = 1.0 / tau

    def grad_chunk(sb: np.ndarray, tb: np.ndarray, Gb: np.ndarray, sc: Any) -> np.ndarray:
        ms, mt = np.expand_dims(Gb[..., 3], ax), np.expand_dims(Gb[..., 4], ax)
        g0, cg = np.expand_dims(Gb[..., 1], ax), np.expand_dims(Gb[..., 2], ax)
        ea, t0, _ = _kl_terms(sb, tb, ms, mt, k, want_t1=False)
        with np.errstate(invalid="ignore", over="ignore"):
            gch = cg * (ea * g0 - t0)
            gch *= sc if np.ndim(sc) == 0 else np.expand_dims(sc, ax)
        return gch.astype(result, copy=False)

    gr = da.blockwise(grad_chunk, ind, s, ind, t, ind, G, s_ind + "Z", *scale_args,
                      dtype=result, token=name + "-grad", concatenate=True,
                      meta=np.empty((0,) * s.ndim, result))
    return loss, gr


def _kl_stats(s: da.Array, t: da.Array, ax: int, tau: float, name: str) -> da.Array:
    """Per sample, float64 fields [loss, g0, tau / (Sa (1 + g0)), ms, mt] of class-chunked
    student `s` and teacher `t` (passes 1 and 2 and their merges)."""
    ind = _indices(s.ndim)
    s_ind = ind[:ax] + ind[ax + 1:]
    cl = ind[ax]
    k = 1.0 / tau

    def maxes(sb: np.ndarray, tb: np.ndarray) -> np.ndarray:
        return np.concatenate([_raw_max(sb, ax), _raw_max(tb, ax)], axis=ax)

    mx = da.blockwise(maxes, ind, s, ind, t, ind, dtype=F64, token=name + "-max",
                      adjust_chunks={cl: 2}, meta=np.empty((0,) * s.ndim, F64))

    def merge_max(b: np.ndarray) -> np.ndarray:
        f = _fields_last(b, ax, 2)
        return np.max(f, axis=-2)                  # (samples..., 2): ms, mt (no NaN here)

    M = da.blockwise(merge_max, s_ind + "Z", mx, ind, new_axes={"Z": 2}, dtype=F64,
                     token=name + "-maxes", concatenate=True,
                     meta=np.empty((0,) * s.ndim, F64))

    def sums(sb: np.ndarray, tb: np.ndarray, Mb: np.ndarray) -> np.ndarray:
        ms, mt = np.expand_dims(Mb[..., 0], ax), np.expand_dims(Mb[..., 1], ax)
        ea, t0, t1 = _kl_terms(sb, tb, ms, mt, k)
        assert t1 is not None
        return np.concatenate([x.sum(axis=ax, keepdims=True) for x in (ea, t0, t1)], axis=ax)

    st = da.blockwise(sums, ind, s, ind, t, ind, M, s_ind + "Z", dtype=F64,
                      token=name + "-sums", adjust_chunks={cl: 3}, concatenate=True,
                      meta=np.empty((0,) * s.ndim, F64))

    def merge(stb: np.ndarray, Mb: np.ndarray) -> np.ndarray:
        f = _fields_last(stb, ax, 3).sum(axis=-2)        # (samples..., 3): Sa, G0, G1
        Sa, G0, G1 = f[..., 0], f[..., 1], f[..., 2]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            g0, g1 = G0 / Sa, G1 / Sa
            kl = g1 / (1.0 + g0) + _kappa(g0)
            kl = np.where(kl < 0.0, 0.0, kl)              # rounding only; NaN passes
            cg = tau / (Sa * (1.0 + g0))
        return np.stack([tau * tau * kl, g0, cg, Mb[..., 0], Mb[..., 1]], axis=-1)

    return da.blockwise(merge, s_ind + "Z", st, ind, M, s_ind + "Y", new_axes={"Z": 5},
                        dtype=F64, token=name + "-merge", concatenate=True,
                        meta=np.empty((0,) * s.ndim, F64))


# ============================================================================ public: row ops

def _row_setup(x: Any, axis: Any, name: str) -> Tuple[da.Array, int, np.dtype, np.dtype]:
    # `name`: what the in-memory function calls its input in messages
    x = _as_dask(x, name)
    compute, result = V.float_dtypes(x.dtype, name)
    _, _, _, ax = V.split_axis(_shape(x), axis, name)
    return x, ax, compute, result


def _row_lse(x: da.Array, ax: int, name: str) -> da.Array:
    """Per-sample (shift, log S) of class-chunked x: a trailing axis of 2 fields."""
    ind = _indices(x.ndim)
    s_ind = ind[:ax] + ind[ax + 1:]
    cl = ind[ax]

    def stats(xb: np.ndarray) -> np.ndarray:
        return np.concatenate(_max_rest(np.array(xb, dtype=F64), ax), axis=ax)

    st = da.blockwise(stats, ind, x, ind, dtype=F64, token=name + "-stats",
                      adjust_chunks={cl: 2}, meta=np.empty((0,) * x.ndim, F64))

    def merge(stb: np.ndarray) -> np.ndarray:
        f = _fields_last(stb, ax, 2)
        shift, log_s, _ = _merge_lse(f[..., 0], f[..., 1])
        return np.stack([shift, log_s], axis=-1)

    return da.blockwise(merge, s_ind + "Z", st, ind, new_axes={"Z": 2}, dtype=F64,
                        token=name + "-merge", concatenate=True,
                        meta=np.empty((0,) * x.ndim, F64))


def logsumexp(input: Any, axis: int = -1) -> da.Array:
    """log(sum(exp(x))) along `axis` of a dask array (see :func:`fastce.logsumexp`).

    Class-chunked input is merged from per-chunk float64 (max, sum-exp) partials; a class axis
    in one chunk uses fastce's kernel per block.

    Returns
    -------
    dask.array.Array
        Lazy, x's shape without `axis`, chunked like x's other axes; -inf for all -inf rows,
        +inf for rows with +inf, NaN for rows with NaN.
    """
    x, ax, compute, result = _row_setup(input, axis, "input")
    if len(x.chunks[ax]) == 1:
        return da.map_blocks(lambda b: np.asarray(_F.logsumexp(b, axis=ax)), x, drop_axis=ax,
                             dtype=result, meta=np.empty((0,) * (x.ndim - 1), result))
    L = _row_lse(x, ax, "fastce-lse-" + _token(x.name, ax))
    return da.map_blocks(lambda b: (b[..., 0] + b[..., 1]).astype(result), L,
                         drop_axis=x.ndim - 1, dtype=result,
                         meta=np.empty((0,) * (x.ndim - 1), result))


def _row_output(kind: str, x: Any, axis: Any) -> da.Array:
    x, ax, compute, result = _row_setup(x, axis, "x")
    fn = _F.log_softmax if kind == "log_softmax" else _F.softmax
    if len(x.chunks[ax]) == 1:
        return da.map_blocks(fn, x, axis=ax, dtype=result, meta=np.empty((0,) * x.ndim, result))
    ind = _indices(x.ndim)
    L = _row_lse(x, ax, f"fastce-{kind}-" + _token(x.name, ax))

    def out(xb: np.ndarray, Lb: np.ndarray) -> np.ndarray:
        # a row whose max is not finite is NaN throughout, as fastce.log_softmax gives
        log_s = np.where(np.isfinite(Lb[..., 1]), Lb[..., 1], np.nan)
        with np.errstate(invalid="ignore"):
            y = (np.asarray(xb, F64) - np.expand_dims(Lb[..., 0], ax)) - np.expand_dims(log_s, ax)
        return (y if kind == "log_softmax" else np.exp(y)).astype(result, copy=False)

    s_ind = ind[:ax] + ind[ax + 1:]
    return da.blockwise(out, ind, x, ind, L, s_ind + "Z", dtype=result, concatenate=True,
                        token=f"fastce-{kind}-out", meta=np.empty((0,) * x.ndim, result))


def log_softmax(input: Any, axis: int = -1) -> da.Array:
    """log_softmax along `axis` of a dask array (see :func:`fastce.log_softmax`).

    Computed as ``(x - M) - log S`` with M and S merged from per-chunk partials, so the result
    keeps x's chunks, also along a split class axis.

    Returns
    -------
    dask.array.Array
        Lazy, x's shape, chunks and fastce's result dtype.
    """
    return _row_output("log_softmax", input, axis)


def softmax(input: Any, axis: int = -1) -> da.Array:
    """softmax along `axis` of a dask array (see :func:`fastce.softmax`): ``exp(log_softmax)``
    on a split class axis.

    Returns
    -------
    dask.array.Array
        Lazy, x's shape, chunks and fastce's result dtype.
    """
    return _row_output("softmax", input, axis)


# ============================================================================ linear + CE

def linear_cross_entropy(input: Any, linear_weight: Any, target: Any, *,
                         linear_bias: Optional[ArrayLike] = None,
                         weight: Optional[ArrayLike] = None, ignore_index: int = -100,
                         reduction: str = "mean", label_smoothing: float = 0.0,
                         z_loss: float = 0.0, softcap: Optional[float] = None,
                         chunk_size: Optional[int] = None, return_grad: bool = False,
                         grad_output: Any = 1.0) -> Any:
    """Cross-entropy of ``input @ linear_weight.T + linear_bias`` for hidden states chunked along
    the batch (see :func:`fastce.linear_cross_entropy`).

    Each block of rows runs fastce's fused, chunked kernel against the shared head weight, so a
    worker holds one block of hidden states, the head, and ``chunk_size`` rows of logits --
    never the (N, V) logits.

    Parameters
    ----------
    input : dask.array.Array or array_like, shape (N, D)
        Hidden states; chunked along N (a split D axis is rechunked into one chunk).
    linear_weight : array_like, shape (V, D)
        The head, shared by every block (a dask array is computed first).  Sent to each worker
        once, as one graph key.
    target : dask.array.Array or array_like
        Class indices (N,) or probabilities (N, V); rechunked to the input's row chunks.
    linear_bias, weight, ignore_index, reduction, label_smoothing, z_loss, softcap, chunk_size
        As in :func:`fastce.linear_cross_entropy`.
    return_grad : bool
        Also return (grad_input, grad_linear_weight[, grad_linear_bias]): grad_input lazy with
        the input's chunks, the others lazy sums over the blocks (float64, cast at the end).
    grad_output : float or array_like
        Scalar for mean/sum; broadcastable to (N,) for "none".

    Returns
    -------
    loss, or (loss, grad_input, grad_linear_weight[, grad_linear_bias]): lazy dask arrays.
    """
    reduction, eps, zl, ignore = _F._ce_options(reduction, label_smoothing, z_loss, ignore_index)
    X = _as_dask(input, "input")
    Wm = _numpy(linear_weight)
    in_c, in_r = V.float_dtypes(X.dtype, "input")
    w_c, w_r = V.float_dtypes(Wm.dtype, "linear_weight")
    dtype = np.promote_types(in_c, w_c)
    V.softcap(softcap, dtype)
    if Wm.ndim != 2:
        raise ValueError(f"linear_weight must have shape (V, D); got {tuple(Wm.shape)}")
    if X.ndim != 2 or X.shape[1] != Wm.shape[1]:
        raise ValueError(f"input shape {tuple(X.shape)} does not match linear_weight shape "
                         f"{tuple(Wm.shape)}: expected (N, {Wm.shape[1]}) (fastce.dask takes "
                         f"2-D hidden states)")
    N, Vn = int(X.shape[0]), int(Wm.shape[0])
    bias = _small_numpy(linear_bias)
    b_r = F64
    if bias is not None:
        b_r = V.float_dtypes(bias.dtype, "linear_bias")[1]
        if bias.shape != (Vn,):
            raise ValueError(f"linear_bias must have shape ({Vn},); got {tuple(bias.shape)}")
    w = V.class_weight(_small_numpy(weight), Vn)
    if chunk_size is not None:
        V.positive_int(chunk_size, "chunk_size")
    t = _as_dask(target, "target")
    fmt = V.target_format(_standin(t.dtype, _shape(t)), (N, Vn), (N,))
    _check_target_dtype(t, fmt, (N,), Vn, ignore, (N, Vn))
    X = X.rechunk({1: -1})
    t = t.rechunk((X.chunks[0],) if fmt == "index" else (X.chunks[0], (Vn,)))
    head = da.from_array(Wm, chunks=Wm.shape, name="fastce-head-" + _token(Wm))
    args: List[Any] = [X, "nd", t, "n" if fmt == "index" else "nv", head, "vd"]
    if bias is not None:
        args += [da.from_array(bias, chunks=bias.shape), "v"]
    kw: Dict[str, Any] = dict(ignore_index=ignore, label_smoothing=eps, z_loss=zl, softcap=softcap,
              chunk_size=chunk_size)

    sp = _Spec("ce", X, t, fmt, w, ignore, reduction, eps, zl, 0.0, 1, Vn, (N,), dtype, dtype,
               (N, Vn))
    args += sp.weight_arg()
    denominator = _denominator(sp) if reduction == "mean" and return_grad else None
    o = sp.light()
    g, gdask = (_grad_scale(reduction, grad_output, denominator, (N,), (X.chunks[0],))
                if return_grad else (None, None))
    if return_grad and reduction == "mean":
        args += [g, ""]
    if gdask is not None:
        args += [gdask, "n"]
    has_bias = bias is not None
    scale_is_arg = return_grad and (gdask is not None or reduction == "mean")

    weighted = w is not None

    def block(xb: np.ndarray, tb: np.ndarray, Wb: np.ndarray, *rest: Any) -> Any:
        bb = rest[0] if has_bias else None
        kwb: Dict[str, Any] = dict(kw, weight=rest[1 if has_bias else 0] if weighted else None)
        if not return_grad:
            per = _F.linear_cross_entropy(xb, Wb, tb, linear_bias=bb, reduction="none", **kwb)
            if reduction == "none":
                return (per,)
            # the block's (sum, denominator share), ending the block's task
            return (np.sum(per, dtype=F64),
                    _block_denominator(o, tb, kwb["weight"]) if reduction == "mean" else 0.0)
        scale: Any = rest[-1] if scale_is_arg else g
        # reduction="none" with the scale as grad_output: the per-sample losses (summed here in
        # float64) and the gradient of the global loss, in one pass
        return _F.linear_cross_entropy(xb, Wb, tb, linear_bias=bb, reduction="none",
                                       return_grad=True, grad_output=scale, **kwb)

    name = f"fastce-lce-{_token(X.name, t.name, head.name, reduction, return_grad, repr(kw))}"
    if not return_grad and reduction != "none":
        return _finish_pairs(_pair_blocks(block, "n", args, name + "-pair"), reduction, dtype)
    parts = _per_block(block, *args, ind="n", name=name + "-parts")
    if reduction == "none":
        loss = da.map_blocks(lambda b: b[0], parts, dtype=dtype, meta=np.empty((0,), dtype))
    else:
        loss = _finish(_block_sum(parts, 0), denominator, reduction, dtype)
    if not return_grad:
        return loss
    gX = da.map_blocks(lambda b: b[1], parts, dtype=in_r, chunks=X.chunks, new_axis=1,
                       meta=np.empty((0, 0), in_r))
    outs = [loss, gX, _sum_of_blocks(parts, 2, (Vn, Wm.shape[1]), w_r)]
    if has_bias:
        outs.append(_sum_of_blocks(parts, 3, (Vn,), b_r))
    return tuple(outs)


def _sum_of_blocks(parts: da.Array, i: int, shape: Tuple[int, ...], dtype: np.dtype[Any]
                   ) -> da.Array:
    """sum over row blocks of an array field of each block's tuple, in float64, cast at the
    end (the head's gradient: every block contributes a full (V, D) term)."""
    nb = len(parts.chunks[0])
    per = da.map_blocks(lambda b: np.asarray(b[i], dtype=F64)[None], parts,
                        chunks=((1,) * nb,) + tuple((s,) for s in shape),
                        new_axis=list(range(1, len(shape) + 1)), dtype=F64,
                        meta=np.empty((0,) * (len(shape) + 1), F64))
    return per.sum(axis=0, dtype=F64).astype(dtype)


# ============================================================================ binary losses

def _binary_loss(kind: str, input: Any, target: Any, weight: Any, pos_weight: Any,
                 reduction: str) -> da.Array:
    reduction = V.reduction(reduction)
    x = _as_dask(input, "input")
    cdt, _ = V.float_dtypes(x.dtype, "input")
    y = _as_dask(target, "target")
    V.same_shape(_standin(x.dtype, _shape(x)), _standin(y.dtype, _shape(y)), "input", "target")
    y = y.rechunk(x.chunks)
    ind = _indices(x.ndim)
    args: List[Any] = [x, ind, y, ind]
    names = ["x", "y"]
    if weight is not None:
        wd = _as_dask(weight, "weight")
        V.float_dtypes(wd.dtype, "weight")
        try:
            np.broadcast_shapes(_shape(wd), _shape(x))
        except ValueError:
            V.broadcast_weight(_standin(wd.dtype, _shape(wd)), _shape(x), cdt)   # raises
        args += [da.broadcast_to(wd, x.shape).rechunk(x.chunks), ind]
        names.append("weight")
    if pos_weight is not None:
        pw = V.pos_weight(_small_numpy(pos_weight), _shape(x), cdt)
        if x.ndim:
            args += [da.from_array(np.ascontiguousarray(pw), chunks=(x.chunks[-1],)), ind[-1]]
        else:
            args += [pw, None]
        names.append("pos_weight")
    fn: Callable[..., Any] = (_F.binary_cross_entropy_with_logits if kind == "logits"
                              else _F.binary_cross_entropy)

    def call(*blocks: np.ndarray) -> np.ndarray:
        kw: Dict[str, Any] = dict(zip(names[2:], blocks[2:]))
        return fn(blocks[0], blocks[1], reduction="none", **kw)

    token = f"fastce-bce-{kind}-{_token(x.name, y.name, reduction)}"
    per = da.blockwise(call, ind, *args, dtype=cdt, token=token,
                       meta=np.empty((0,) * x.ndim, dtype=cdt))
    if reduction == "none":
        return per
    total = per.sum(dtype=F64)      # float64 over every element, cast once at the end
    n = da.from_array(np.asarray(float(math.prod(x.shape)), F64))
    return _finish(total, n, reduction, cdt)


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
        ``"mean"`` divides the global float64 sum by the number of elements.

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
