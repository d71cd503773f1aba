# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Elementwise binary losses: BCE with logits (weight, pos_weight) and BCE from probabilities.

The n elements are split into chunks of `rows_per_chunk` rows of length K (K = the period of
pos_weight along the last axis); each chunk's loss sum (float64) goes to chunk_sum[item], and
the caller adds those in order, so the total is the same for any thread count.
"""
from cython.parallel cimport prange
cimport numpy as cnp
from ._kernels cimport *

include "_buffers.pxi"
include "_dispatch.pxi"


def binary(str kind, x, y, w, pw, Py_ssize_t K, Py_ssize_t rows_per_chunk, loss, chunk_sum,
           grad, double gcoef, gscale, int nthreads):
    """kind: "logits" or "probs".  w: full-size weights or None; pw: (K,) or None."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef Py_ssize_t chunk = rows_per_chunk * K
    cdef fce_idx nitems = (n + chunk - 1) // chunk if n else 0
    cdef bint logits = kind == "logits"
    cdef int tn
    cdef int dt = _dtype_code(x, &tn)
    cdef fce_bin_args a
    cdef const void *xp = _ptr(x, tn, n, False)
    cdef void *gp = _optr(grad, tn, n, True)
    a.y = _ptr(y, tn, n, False)
    a.w = _optr(w, tn, n, False)
    a.pw = _optr(pw, tn, K, False)
    a.K = K; a.rows_per_chunk = rows_per_chunk; a.n = n
    a.loss = _optr(loss, tn, n, True)
    a.chunk_sum = <double *>_ptr(chunk_sum, cnp.NPY_FLOAT64, nitems, True)
    a.gcoef = gcoef
    a.gscale = _optr(gscale, tn, n, False)
    with nogil:
        run_binary(dt, logits, xp, nitems, &a, gp, nthreads)


cdef void run_binary(int dt, bint logits, const void *xp, fce_idx nitems, const fce_bin_args *a,
                     void *gp, int nthreads) noexcept nogil:
    """Every chunk of a binary-loss call; one thread runs a plain loop (no OpenMP region)."""
    cdef fce_idx i
    if nthreads <= 1:
        for i in range(nitems):
            if logits:
                fce_bce_logits_item(dt, xp, i, a, gp)
            else:
                fce_bce_item(dt, xp, i, a, gp)
        return
    for i in prange(nitems, num_threads=nthreads, schedule="guided"):
        if logits:
            fce_bce_logits_item(dt, xp, i, a, gp)
        else:
            fce_bce_item(dt, xp, i, a, gp)


cdef Py_ssize_t outside_unit(int dt, const void *p, Py_ssize_t n, int nthreads) noexcept nogil:
    """Index of the first value of p[0..n) (dtype dt) outside [0, 1], or -1; NaN is not outside.
    A long array is scanned in halves by two threads."""
    cdef const char *pp = <const char *>p
    cdef Py_ssize_t h = n // 2
    cdef Py_ssize_t size = 4 if dt == FCE_F32 else 8
    cdef fce_idx part[2]
    cdef int k
    if nthreads <= 1 or n < (1 << 16):
        fce_first_outside_unit(dt, pp, n, &part[0])
        return part[0]
    for k in prange(2, num_threads=2, schedule="static"):
        if k == 0:
            fce_first_outside_unit(dt, pp, h, &part[0])
        else:
            fce_first_outside_unit(dt, pp + h * size, n - h, &part[1])
    if part[0] >= 0:
        return part[0]
    return h + part[1] if part[1] >= 0 else -1


def first_outside_unit(p, int nthreads):
    """Index (flat) of the first value of the C-contiguous float32/float64 array p outside
    [0, 1], or -1; NaN is not outside."""
    cdef int tn
    cdef int dt = _dtype_code(p, &tn)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(p)
    cdef const void *pp = _ptr(p, tn, n, False)
    cdef Py_ssize_t i
    with nogil:
        i = outside_unit(dt, pp, n, nthreads)
    return i
