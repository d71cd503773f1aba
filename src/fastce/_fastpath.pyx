# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Per-call fast path: canonical inputs go from the Python call to the kernel driver in a few
hundred nanoseconds of checks, instead of the general validation layer's ~15 us.

A mini-batch trainer calls the loss once per step on small arrays, where the general path's
NumPy calls (asarray, min/max, shape tuples, dtype objects) cost ten to a hundred times the
kernel.  Here each check is a C comparison on the array struct.  The rule is strict: the fast
path only *accepts* what it has proven canonical, and returns SLOW for everything else, so the
general path (fastce._validate, the security boundary) still sees, and rejects with its
messages, every unusual or bad input.  Canonical means:

- input: exactly an ndarray (no subclass: masked arrays, matrices), float32/float64, aligned
  and C-contiguous, 2-D (N, C) with the class axis last (axis -1 or 1) for the class losses;
  any shape for the binary losses;
- class-index target: exactly an ndarray, int64 or int32, (N,), contiguous, every value in
  [0, C) or == ignore_index (checked here, in one pass that also counts the ignored ones);
  binary target: the input's dtype and shape; BCE's probabilities: every value in [0, 1] or
  NaN (one C scan, as the general path's);
- options: the plain Python types and values the general rules would accept (bools, strings
  and NumPy scalars go the general way), no class weight / pos_weight / softcap, scalar
  grad_output (1.0 for reduction="none");
- out: None, or an ndarray of the input's dtype and shape, writable, aligned, C-contiguous,
  that is the input itself or shares no memory with anything the kernel reads.

Results are bitwise those of the general path: the same kernel driver, the same per-sample
or per-item buffers, and the same fixed-order sum (pairwise_sum, used by both paths).
"""
import numpy as np
cimport numpy as cnp
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.math cimport isfinite, isnan, copysign, NAN, INFINITY
from libc.stdint cimport int64_t, int32_t

from ._kernels cimport fce_ce_args, fce_bin_args, fce_idx, fce_n_items, FCE_F32, FCE_F64
from ._ce cimport run_ce_index, count_ignored, widen_targets
from ._binary cimport run_binary, outside_unit
from . import _parallel

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    # (not in numpy's .pxd) a NumPy scalar of `descr` from the bytes at data; descr borrowed
    object PyArray_Scalar(void *data, cnp.dtype descr, object base)

SLOW = object()        # "not canonical: take the general path"

cdef cnp.dtype _f32 = np.dtype(np.float32)
cdef cnp.dtype _f64 = np.dtype(np.float64)
cdef Py_ssize_t _BINARY_CHUNK = 1 << 14
# Below this many elements the kernel runs with the GIL held: releasing and re-taking it costs
# more than such a call's kernel, and no other Python thread gets useful time in between.
cdef Py_ssize_t _NOGIL_MIN_ELEMENTS = 1 << 14


# --------------------------------------------------------------------------- summation

cdef double _pairwise(const double *a, Py_ssize_t n) noexcept nogil:
    """Pairwise sum in a fixed order (8 partial sums per leaf of <= 128 terms): rounding error
    O(log n) ulps, and the same bits for the same input whatever called it."""
    cdef double r[8]
    cdef double s
    cdef Py_ssize_t i, k, h
    if n < 8:
        s = 0.0
        for i in range(n):
            s += a[i]
        return s
    if n <= 128:
        for k in range(8):
            r[k] = a[k]
        i = 8
        while i + 8 <= n:
            for k in range(8):
                r[k] += a[i + k]
            i += 8
        s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            s += a[i]
            i += 1
        return s
    h = (n // 2) - (n // 2) % 8
    return _pairwise(a, h) + _pairwise(a + h, n - h)


def pairwise_sum(cnp.ndarray a):
    """Sum of a C-contiguous float64 array, in the fixed pairwise order of the fast path."""
    if cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT64 or not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise TypeError("internal: pairwise_sum needs a C-contiguous float64 array")
    return _pairwise(<const double *>cnp.PyArray_DATA(a), cnp.PyArray_SIZE(a))


cdef inline double _ieee_div(double a, double b) noexcept:
    """a / b with IEEE semantics for b == 0 (as functional._ieee_div)."""
    if b != 0.0:
        return a / b
    if a == 0.0 or isnan(a):
        return NAN
    return copysign(INFINITY, a) * copysign(1.0, b)


# --------------------------------------------------------------------------- checks

cdef inline bint _canonical_float(object a):
    """Exactly an ndarray of float32/float64, aligned and C-contiguous."""
    cdef cnp.ndarray arr
    cdef int tn
    if type(a) is not cnp.ndarray:
        return False
    arr = <cnp.ndarray>a
    tn = cnp.PyArray_TYPE(arr)
    return ((tn == cnp.NPY_FLOAT32 or tn == cnp.NPY_FLOAT64) and _plain_layout(arr))


cdef inline bint _plain_layout(cnp.ndarray a):
    """C-contiguous, aligned and in native byte order (a byte-swapped array has the same type
    number as a native one)."""
    return (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a)
            and cnp.PyArray_ISNOTSWAPPED(a))


cdef inline bint _real(object v):
    """A plain Python float or int (bools excluded: type(True) is bool)."""
    return type(v) is float or type(v) is int


cdef inline bint _disjoint(cnp.ndarray a, cnp.ndarray b):
    cdef char *a0 = <char *>cnp.PyArray_DATA(a)
    cdef char *b0 = <char *>cnp.PyArray_DATA(b)
    cdef Py_ssize_t na = cnp.PyArray_NBYTES(a), nb = cnp.PyArray_NBYTES(b)
    return na == 0 or nb == 0 or a0 + na <= b0 or b0 + nb <= a0


cdef object _grad_buffer(cnp.ndarray x, object out, tuple others):
    """The gradient buffer: a fresh array, or `out` when canonical (None: not canonical)."""
    cdef cnp.ndarray o
    cdef cnp.ndarray other
    cdef int k
    if out is None:
        return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), cnp.PyArray_TYPE(x), 0)
    if type(out) is not cnp.ndarray:
        return None
    o = <cnp.ndarray>out
    if (cnp.PyArray_TYPE(o) != cnp.PyArray_TYPE(x) or cnp.PyArray_NDIM(o) != cnp.PyArray_NDIM(x)
            or not _plain_layout(o) or not cnp.PyArray_ISWRITEABLE(o)):
        return None
    for k in range(cnp.PyArray_NDIM(x)):
        if cnp.PyArray_DIM(o, k) != cnp.PyArray_DIM(x, k):
            return None
    # in place (out is x) is supported by every kernel; any other overlap goes the general way
    if cnp.PyArray_DATA(o) != cnp.PyArray_DATA(x) and not _disjoint(o, x):
        return None
    for other in others:
        if not _disjoint(o, other):
            return None
    return o


cdef inline int _nthreads(Py_ssize_t n, str family):
    if n < _parallel.PARALLEL_MIN_ELEMENTS:      # (no dict lookup for the small calls)
        return 1
    return _parallel.nthreads(n, family)


cdef object _scalar(double v, int typenum):
    """np.float32 / np.float64 scalar of v, built from its bytes (calling np.float32(v) costs
    ~2,000 instructions of argument parsing, ten times this)."""
    cdef float f
    if typenum == cnp.NPY_FLOAT32:
        f = <float>v
        return PyArray_Scalar(&f, _f32, None)
    return PyArray_Scalar(&v, _f64, None)


cdef inline int _dt(int typenum) noexcept nogil:
    return FCE_F32 if typenum == cnp.NPY_FLOAT32 else FCE_F64


cdef int _reduction_code(object reduction):
    """0 mean, 1 sum, 2 none, -1 anything else."""
    if type(reduction) is not str:
        return -1
    if reduction == "mean":
        return 0
    if reduction == "sum":
        return 1
    if reduction == "none":
        return 2
    return -1


cdef object _per_sample(cnp.ndarray loss, int typenum):
    """The per-sample losses (float64 kernel buffer) in the input's dtype."""
    cdef Py_ssize_t i, n = cnp.PyArray_SIZE(loss)
    cdef cnp.ndarray res
    cdef const double *l = <const double *>cnp.PyArray_DATA(loss)
    cdef float *rf
    if typenum == cnp.NPY_FLOAT64:
        return loss
    res = cnp.PyArray_EMPTY(1, cnp.PyArray_DIMS(loss), cnp.NPY_FLOAT32, 0)
    rf = <float *>cnp.PyArray_DATA(res)
    for i in range(n):
        rf[i] = <float>l[i]
    return res


# --------------------------------------------------------------------------- class losses

def class_loss(bint nll, x, target, weight, ignore_index, reduction, label_smoothing, axis,
               z_loss, softcap, return_grad, grad_output, out):
    """cross_entropy (nll=False) / nll_loss (nll=True) for canonical inputs; SLOW otherwise."""
    cdef cnp.ndarray xa, ta, loss_arr = None
    cdef Py_ssize_t N, C, i, ignored = 0, nitems = 0
    cdef long long ign
    cdef const int64_t *t64
    cdef int64_t *tcopy = NULL
    cdef fce_idx *item_ign = NULL
    cdef bint fused_check
    cdef double *lossp = NULL
    cdef int red, typenum, nth
    cdef double eps, zl, g, denom, total, gcoef
    cdef bint want_grad
    cdef fce_ce_args a
    cdef void *gp = NULL
    cdef const void *xp
    if weight is not None or softcap is not None or not _canonical_float(x):
        return SLOW
    xa = <cnp.ndarray>x
    if cnp.PyArray_NDIM(xa) != 2 or not (type(axis) is int and (axis == -1 or axis == 1)):
        return SLOW
    N = cnp.PyArray_DIM(xa, 0)
    C = cnp.PyArray_DIM(xa, 1)
    if N == 0 or C == 0:
        return SLOW
    red = _reduction_code(reduction)
    if (red < 0 or type(ignore_index) is not int or not _real(label_smoothing)
            or not _real(z_loss) or not _real(grad_output)
            or not (return_grad is True or return_grad is False)):
        return SLOW
    want_grad = return_grad is True
    try:
        ign = ignore_index
        eps = label_smoothing
        zl = z_loss
        g = grad_output
    except OverflowError:
        return SLOW
    if not (0.0 <= eps <= 1.0) or not (isfinite(zl) and zl >= 0.0) or (nll and (eps != 0.0 or zl != 0.0)):
        return SLOW
    if (red == 2 and g != 1.0) or (out is not None and not want_grad):
        return SLOW
    # target: (N,) int64 / int32, values in [0, C) or == ignore_index
    if type(target) is not cnp.ndarray:
        return SLOW
    ta = <cnp.ndarray>target
    if cnp.PyArray_NDIM(ta) != 1 or cnp.PyArray_DIM(ta, 0) != N or not _plain_layout(ta):
        return SLOW
    typenum = cnp.PyArray_TYPE(ta)
    if typenum != cnp.NPY_INT64 and typenum != cnp.NPY_INT32:
        return SLOW
    grad = None
    if want_grad:
        grad = _grad_buffer(xa, out, (ta,))
        if grad is None:
            return SLOW
        gp = cnp.PyArray_DATA(<cnp.ndarray>grad)
    if red == 2:
        loss_arr = cnp.PyArray_EMPTY(1, <cnp.npy_intp *>&N, cnp.NPY_FLOAT64, 0)
        lossp = <double *>cnp.PyArray_DATA(loss_arr)
    try:
        if typenum == cnp.NPY_INT64:
            t64 = <const int64_t *>cnp.PyArray_DATA(ta)
        else:
            # the kernels read int64 targets: widen into a scratch copy first
            tcopy = <int64_t *>PyMem_Malloc(N * sizeof(int64_t))
            if tcopy == NULL:
                raise MemoryError()
            widen_targets(<const int32_t *>cnp.PyArray_DATA(ta), N, tcopy)
            t64 = tcopy
        nitems = fce_n_items(N, C, 1)
        # Without a gradient the target check runs inside the kernel, per item, on targets it
        # reads anyway (fce_ce_args.item_ign): one pass over them fewer.  A bad target there
        # only gave NaN losses in scratch memory, and the general path reruns the call.  A
        # gradient needs the count (the mean's scale) before the kernel.
        fused_check = not want_grad and not nll
        if fused_check:
            item_ign = <fce_idx *>PyMem_Malloc(nitems * sizeof(fce_idx))
            if item_ign == NULL:
                raise MemoryError()
        else:
            ignored = count_ignored(t64, N, ign, C, _nthreads(N, "ce_small"))
            if ignored < 0:
                return SLOW                  # the general path names the offending value
        if lossp == NULL:
            # mean/sum: one sum per work item (see fce_ce_args.item_sum), as the general path
            lossp = <double *>PyMem_Malloc(nitems * sizeof(double))
            if lossp == NULL:
                raise MemoryError()
        typenum = cnp.PyArray_TYPE(xa)
        denom = <double>(N - ignored)
        if red == 0:
            gcoef = g / denom if denom != 0.0 else 0.0
        elif red == 1:
            gcoef = g
        else:
            gcoef = 1.0
        a.tgt = t64; a.w = NULL; a.W = <double>C; a.ignore = ign; a.eps = eps
        a.loss = lossp if red == 2 else NULL
        a.item_sum = NULL if red == 2 else lossp
        a.gscale = NULL; a.gcoef = gcoef if want_grad else 0.0
        a.zl = zl; a.cap = 0.0; a.item_ign = item_ign
        xp = cnp.PyArray_DATA(xa)
        nth = _nthreads(N * C, "ce_rows" if C > 16 else "ce_small")
        if N * C < _NOGIL_MIN_ELEMENTS:
            run_ce_index(_dt(typenum), xp, N, C, 1, &a, gp, nth, nll)
        else:
            with nogil:
                run_ce_index(_dt(typenum), xp, N, C, 1, &a, gp, nth, nll)
        if fused_check:
            for i in range(nitems):
                if item_ign[i] < 0:
                    return SLOW              # the general path names the offending value
                ignored += item_ign[i]
            denom = <double>(N - ignored)
        if red == 2:
            value = _per_sample(loss_arr, typenum)
        else:
            total = _pairwise(lossp, nitems)
            value = _scalar(_ieee_div(total, denom) if red == 0 else total, typenum)
    finally:
        PyMem_Free(tcopy)
        PyMem_Free(item_ign)
        if loss_arr is None:
            PyMem_Free(lossp)
    if want_grad:
        return value, grad
    return value


# --------------------------------------------------------------------------- binary losses

def binary_loss(str kind, x, target, weight, pos_weight, reduction, return_grad, grad_output,
                out):
    """BCE with logits / from probabilities for canonical inputs; SLOW otherwise."""
    cdef cnp.ndarray xa, ya
    cdef Py_ssize_t n, nchunks, k
    cdef int red, typenum, nth
    cdef double g, total, gcoef
    cdef double *chunk_sum
    cdef bint want_grad, logits
    cdef fce_bin_args a
    cdef const void *xp
    cdef void *gp
    if weight is not None or pos_weight is not None or not _canonical_float(x):
        return SLOW
    xa = <cnp.ndarray>x
    typenum = cnp.PyArray_TYPE(xa)
    n = cnp.PyArray_SIZE(xa)
    red = _reduction_code(reduction)
    if (n == 0 or red < 0 or not _real(grad_output)
            or not (return_grad is True or return_grad is False)):
        return SLOW
    want_grad = return_grad is True
    try:
        g = grad_output
    except OverflowError:
        return SLOW
    if (red == 2 and g != 1.0) or (out is not None and not want_grad):
        return SLOW
    if type(target) is not cnp.ndarray:
        return SLOW
    ya = <cnp.ndarray>target
    if (cnp.PyArray_TYPE(ya) != typenum or cnp.PyArray_NDIM(ya) != cnp.PyArray_NDIM(xa)
            or not _plain_layout(ya)):
        return SLOW
    for k in range(cnp.PyArray_NDIM(xa)):
        if cnp.PyArray_DIM(ya, k) != cnp.PyArray_DIM(xa, k):
            return SLOW
    logits = kind == "logits"
    if not logits:
        # probabilities outside [0, 1]: the general path raises, naming the first one
        xp = cnp.PyArray_DATA(xa)
        nth = _nthreads(n, "binary")
        if n < _NOGIL_MIN_ELEMENTS:
            k = outside_unit(_dt(typenum), xp, n, nth)
        else:
            with nogil:
                k = outside_unit(_dt(typenum), xp, n, nth)
        if k >= 0:
            return SLOW
    grad = None
    if want_grad:
        grad = _grad_buffer(xa, out, (ya,))
        if grad is None:
            return SLOW
    nchunks = (n + _BINARY_CHUNK - 1) // _BINARY_CHUNK
    loss_arr = (cnp.PyArray_EMPTY(cnp.PyArray_NDIM(xa), cnp.PyArray_DIMS(xa), typenum, 0)
                if red == 2 else None)
    if red == 0:
        gcoef = g / <double>n
    elif red == 1:
        gcoef = g
    else:
        gcoef = 1.0
    chunk_sum = <double *>PyMem_Malloc(nchunks * sizeof(double))
    if chunk_sum == NULL:
        raise MemoryError()
    a.y = cnp.PyArray_DATA(ya); a.w = NULL; a.pw = NULL
    a.K = _BINARY_CHUNK; a.rows_per_chunk = 1; a.n = n      # (as the general path without pos_weight)
    a.loss = cnp.PyArray_DATA(<cnp.ndarray>loss_arr) if red == 2 else NULL
    a.chunk_sum = chunk_sum; a.gscale = NULL; a.gcoef = gcoef if want_grad else 0.0
    xp = cnp.PyArray_DATA(xa)
    gp = cnp.PyArray_DATA(<cnp.ndarray>grad) if want_grad else NULL
    nth = _nthreads(n, "binary")
    if n < _NOGIL_MIN_ELEMENTS:
        run_binary(_dt(typenum), logits, xp, nchunks, &a, gp, nth)
    else:
        with nogil:
            run_binary(_dt(typenum), logits, xp, nchunks, &a, gp, nth)
    if red == 2:
        PyMem_Free(chunk_sum)
        value = loss_arr
    else:
        total = _pairwise(chunk_sum, nchunks)
        PyMem_Free(chunk_sum)
        value = _scalar(total / <double>n if red == 0 else total, typenum)
    if want_grad:
        return value, grad
    return value
