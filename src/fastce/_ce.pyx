# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cross-entropy and NLL kernels (class-index and probability targets), loss and fused gradient.

Every driver writes the per-sample loss (float64, before reduction) into `loss` and, when
`grad` is given, the gradient of sum_n gscale_n * gcoef * loss_n into `grad` in the same pass.
`grad` may be the input array itself (in-place): each kernel reads what it needs of an item
before writing that item's gradient.  One body serves float32 and float64 (the C entry points
take the dtype code).
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t
cimport numpy as cnp
import numpy as np
from ._kernels cimport *

include "_buffers.pxi"
include "_dispatch.pxi"


def cross_entropy_index(x, target, weight, double weight_sum, long long ignore_index,
                        double label_smoothing, Py_ssize_t A, Py_ssize_t C, Py_ssize_t B,
                        loss, grad, double gcoef, gscale, int nthreads, bint nll=False,
                        double z_loss=0.0, double softcap=0.0, item_sum=None):
    """Class-index targets.  nll=True: `x` holds log-probabilities and no smoothing applies.
    softcap=0 means no softcap.  item_sum (float64, n_items(A, C, B)): instead of the
    per-sample losses (loss may then be None), one fixed-order sum per item, for mean/sum."""
    cdef Py_ssize_t size = A * C * B, ns = A * B
    cdef int tn
    cdef int dt = _dtype_code(x, &tn)
    cdef fce_ce_args a
    cdef const void *xp = _ptr(x, tn, size, False)
    cdef void *gp = _optr(grad, tn, size, True)
    a.tgt = <const int64_t *>_ptr(target, cnp.NPY_INT64, ns, False)
    a.w = <const double *>_optr(weight, cnp.NPY_FLOAT64, C, False)
    a.W = weight_sum; a.ignore = ignore_index; a.eps = label_smoothing
    a.item_sum = <double *>_optr(item_sum, cnp.NPY_FLOAT64, fce_n_items(A, C, B), True)
    a.loss = (<double *>_ptr(loss, cnp.NPY_FLOAT64, ns, True) if a.item_sum == NULL
              else <double *>_optr(loss, cnp.NPY_FLOAT64, ns, True))
    a.gscale = <const double *>_optr(gscale, cnp.NPY_FLOAT64, ns, False)
    a.gcoef = gcoef; a.zl = z_loss; a.cap = softcap; a.item_ign = NULL
    with nogil:
        run_ce_index(dt, xp, A, C, B, &a, gp, nthreads, nll)


cdef void run_ce_index(int dt, const void *xp, fce_idx A, fce_idx C, fce_idx B,
                       const fce_ce_args *a, void *gp, int nthreads, bint nll) noexcept nogil:
    """Every item of a class-index CE / NLL call.  One thread runs a plain loop: an OpenMP
    parallel region of one thread still costs ~1,500 instructions (GOMP_parallel), more than
    the kernel of a (32, 10) mini-batch."""
    cdef fce_idx i, n = fce_n_items(A, C, B)
    if nthreads <= 1:
        for i in range(n):
            if nll:
                fce_nll_item(dt, xp, A, C, B, i, a, gp)
            else:
                fce_ce_index_item(dt, xp, A, C, B, i, a, gp)
        return
    for i in prange(n, num_threads=nthreads, schedule="guided"):
        if nll:
            fce_nll_item(dt, xp, A, C, B, i, a, gp)
        else:
            fce_ce_index_item(dt, xp, A, C, B, i, a, gp)


def n_items(Py_ssize_t A, Py_ssize_t C, Py_ssize_t B):
    """How many work items an (A, C, B) call has: the length of cross_entropy_index's item_sum."""
    return fce_n_items(A, C, B)


def cross_entropy_prob(x, q, weight, double label_smoothing, Py_ssize_t A, Py_ssize_t C,
                       Py_ssize_t B, loss, grad, double gcoef, gscale, int nthreads,
                       double z_loss=0.0, double softcap=0.0):
    """Probability targets q (same layout and dtype as x)."""
    cdef fce_idx i, n = fce_n_items(A, C, B)
    cdef Py_ssize_t size = A * C * B, ns = A * B
    cdef int tn
    cdef int dt = _dtype_code(x, &tn)
    cdef fce_ce_prob_args a
    cdef const void *xp = _ptr(x, tn, size, False)
    cdef void *gp = _optr(grad, tn, size, True)
    a.q = _ptr(q, tn, size, False)
    a.w = <const double *>_optr(weight, cnp.NPY_FLOAT64, C, False)
    a.eps = label_smoothing
    a.loss = <double *>_ptr(loss, cnp.NPY_FLOAT64, ns, True)
    a.gscale = <const double *>_optr(gscale, cnp.NPY_FLOAT64, ns, False)
    a.gcoef = gcoef; a.zl = z_loss; a.cap = softcap
    # The weights in x's dtype for the T-lane passes (products w_c q_c in T), unless one is so
    # large that they could overflow there: then the double path (a.wt = NULL).
    wt = None
    if weight is not None and np.all(np.abs(weight) <= 2.0 ** 64):
        wt = np.ascontiguousarray(weight, dtype=x.dtype)
    a.wt = _optr(wt, tn, C, False)
    with nogil:
        if nthreads <= 1:          # (no OpenMP region for one thread, see run_ce_index)
            for i in range(n):
                fce_ce_prob_item(dt, xp, A, C, B, i, &a, gp)
        else:
            for i in prange(n, num_threads=nthreads, schedule="guided"):
                fce_ce_prob_item(dt, xp, A, C, B, i, &a, gp)


cdef Py_ssize_t count_ignored(const int64_t *t, Py_ssize_t n, int64_t ign, Py_ssize_t C,
                              int nthreads) noexcept nogil:
    """How many of the n targets equal ign, or -1 if any other lies outside [0, C) (the fast
    path's target check).  A long target array is scanned in halves by two threads: the scan
    reads as many bytes as a C = 2 kernel's logits."""
    cdef fce_idx part[2]
    cdef fce_idx h = n // 2
    cdef int k
    if nthreads <= 1 or n < (1 << 16):
        fce_count_ignored(t, n, ign, C, &part[0])
        return part[0]
    for k in prange(2, num_threads=2, schedule="static"):
        if k == 0:
            fce_count_ignored(t, h, ign, C, &part[0])
        else:
            fce_count_ignored(t + h, n - h, ign, C, &part[1])
    if part[0] < 0 or part[1] < 0:
        return -1
    return part[0] + part[1]


cdef void widen_targets(const int32_t *src, Py_ssize_t n, int64_t *dst) noexcept nogil:
    fce_widen_targets(src, n, dst)
