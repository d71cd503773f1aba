# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Kernels beyond cross-entropy (math in _k_div.h, dispatched by the kernel engine like _ce):
distillation KL from logits, softmax entropy, top-k rank, sigmoid focal loss and torch's
elementwise kl_div.

Class-axis drivers (kl_logits, entropy) write the per-sample loss (float64, before reduction)
into `loss` and, when `grad` is given, the gradient of sum_n gcoef * gscale_n * loss_n in the
same pass; `grad` must not overlap the inputs (the kernels park intermediate values in it
between passes).  Elementwise drivers (focal, kldiv) write per-chunk float64 sums into
`chunk_sum` (the caller adds them in order), the elementwise loss into `loss` when given, and
the gradient into `grad` (which may be `x` itself).  All arrays are validated, C-contiguous, of
one float dtype; one body serves float32 and float64 (the C entry points take the dtype code).
"""
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t
cimport numpy as cnp
from ._kernels cimport *

include "_buffers.pxi"
include "_dispatch.pxi"

import numpy as np


def kl_logits(s, t, Py_ssize_t A, Py_ssize_t C, Py_ssize_t B, double inv_temperature,
              double temperature, loss, grad, double gcoef, gscale, int nthreads):
    """loss_n = T^2 KL(softmax(t_n / T) || softmax(s_n / T)); grad w.r.t. s."""
    cdef fce_idx i, n = fce_n_items(A, C, B)
    cdef Py_ssize_t size = A * C * B, ns = A * B
    cdef int tn
    cdef int dt = _dtype_code(s, &tn)
    cdef fce_kl_args a
    cdef const void *sp = _ptr(s, tn, size, False)
    cdef const void *tp = _ptr(t, tn, size, False)
    cdef void *gp = _optr(grad, tn, size, True)
    cdef int nt = nthreads if nthreads > 0 else 1
    cdef char *scr = NULL
    cdef Py_ssize_t row_bytes = C * cnp.PyArray_ITEMSIZE(<cnp.ndarray>s)
    a.k = inv_temperature; a.tau = temperature
    a.loss = <double *>_ptr(loss, cnp.NPY_FLOAT64, ns, True)
    a.gscale = <const double *>_optr(gscale, cnp.NPY_FLOAT64, ns, False)
    a.gcoef = gcoef
    # Row items with a gradient park one row of exps per thread here: allocated once per call,
    # never per item (threadid() < nt inside the prange).
    scratch = np.empty(nt * C, dtype=s.dtype) if gp != NULL and B == 1 and size else None
    if scratch is not None:
        scr = <char *>_ptr(scratch, tn, nt * C, True)
    with nogil:
        for i in prange(n, num_threads=nt, schedule="guided"):
            fce_kl_logits_item(dt, sp, tp, A, C, B, i, &a, gp,
                               <void *>(scr + threadid() * row_bytes) if scr != NULL else NULL)


def entropy(x, Py_ssize_t A, Py_ssize_t C, Py_ssize_t B, loss, grad, double gcoef, gscale,
            int nthreads):
    """loss_n = entropy of softmax(x_n) in nats; grad w.r.t. x."""
    cdef fce_idx i, n = fce_n_items(A, C, B)
    cdef Py_ssize_t size = A * C * B, ns = A * B
    cdef int tn
    cdef int dt = _dtype_code(x, &tn)
    cdef fce_ent_args a
    cdef const void *xp = _ptr(x, tn, size, False)
    cdef void *gp = _optr(grad, tn, size, True)
    a.loss = <double *>_ptr(loss, cnp.NPY_FLOAT64, ns, True)
    a.gscale = <const double *>_optr(gscale, cnp.NPY_FLOAT64, ns, False)
    a.gcoef = gcoef
    with nogil:
        for i in prange(n, num_threads=nthreads, schedule="guided"):
            fce_entropy_item(dt, xp, A, C, B, i, &a, gp)


def topk_rank(x, target, Py_ssize_t A, Py_ssize_t C, Py_ssize_t B, rank, int nthreads):
    """rank[s]: classes ranked before sample s's target (ties by index, NaN highest)."""
    cdef fce_idx i, n = fce_n_items(A, C, B)
    cdef Py_ssize_t size = A * C * B, ns = A * B
    cdef int tn
    cdef int dt = _dtype_code(x, &tn)
    cdef const void *xp = _ptr(x, tn, size, False)
    cdef const int64_t *tp = <const int64_t *>_ptr(target, cnp.NPY_INT64, ns, False)
    cdef int64_t *rp = <int64_t *>_ptr(rank, cnp.NPY_INT64, ns, True)
    with nogil:
        for i in prange(n, num_threads=nthreads, schedule="guided"):
            fce_topk_rank_item(dt, xp, A, C, B, i, tp, rp)


def elementwise(str kind, x, y, Py_ssize_t chunk, loss, chunk_sum, grad, double gcoef, gscale,
                double alpha, double gamma, bint log_target, int nthreads):
    """kind: "focal" (alpha, gamma) or "kldiv" (log_target)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray?>x)
    cdef fce_idx i, nitems = (n + chunk - 1) // chunk if n else 0
    cdef bint focal = kind == "focal"
    cdef int tn
    cdef int dt = _dtype_code(x, &tn)
    cdef fce_div_ew_args a
    cdef const void *xp = _ptr(x, tn, n, False)
    cdef void *gp = _optr(grad, tn, n, True)
    if kind not in ("focal", "kldiv"):
        raise ValueError(f"internal: unknown elementwise kernel {kind!r}")
    a.y = _ptr(y, tn, n, False)
    a.n = n; a.chunk = chunk; a.gcoef = gcoef
    a.chunk_sum = <double *>_ptr(chunk_sum, cnp.NPY_FLOAT64, nitems, True)
    a.loss = _optr(loss, tn, n, True)
    a.gscale = _optr(gscale, tn, n, False)
    a.alpha = alpha; a.gamma = gamma; a.log_target = log_target
    with nogil:
        for i in prange(nitems, num_threads=nthreads, schedule="guided"):
            if focal:
                fce_focal_item(dt, xp, i, &a, gp)
            else:
                fce_kldiv_item(dt, xp, i, &a, gp)
