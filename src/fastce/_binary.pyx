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


def binary(str kind, x, y, w, pw, Py_ssize_t K, Py_ssize_t rows_per_chunk, loss, chunk_sum,
           grad, double gcoef, gscale, int nthreads):
    """kind: "logits" or "probs".  w: full-size weights or None; pw: (K,) or None."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef Py_ssize_t chunk = rows_per_chunk * K
    cdef fce_idx i, nitems = (n + chunk - 1) // chunk if n else 0
    cdef bint logits = kind == "logits"
    cdef bin_args_f af
    cdef bin_args_d ad
    cdef float *xf
    cdef float *gf
    cdef double *xd
    cdef double *gd
    cdef double *cs = <double *>_ptr(chunk_sum, cnp.NPY_FLOAT64, nitems, True)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        af.y = <const float *>_ptr(y, cnp.NPY_FLOAT32, n, False)
        af.w = <const float *>_optr(w, cnp.NPY_FLOAT32, n, False)
        af.pw = <const float *>_optr(pw, cnp.NPY_FLOAT32, K, False)
        af.K = K; af.rows_per_chunk = rows_per_chunk; af.n = n
        af.loss = <float *>_optr(loss, cnp.NPY_FLOAT32, n, True)
        af.chunk_sum = cs; af.gcoef = gcoef
        af.gscale = <const float *>_optr(gscale, cnp.NPY_FLOAT32, n, False)
        xf = <float *>_ptr(x, cnp.NPY_FLOAT32, n, False)
        gf = <float *>_optr(grad, cnp.NPY_FLOAT32, n, True)
        with nogil:
            for i in prange(nitems, num_threads=nthreads, schedule="guided"):
                if logits:
                    bce_logits_item_f(xf, i, &af, gf)
                else:
                    bce_item_f(xf, i, &af, gf)
    else:
        ad.y = <const double *>_ptr(y, cnp.NPY_FLOAT64, n, False)
        ad.w = <const double *>_optr(w, cnp.NPY_FLOAT64, n, False)
        ad.pw = <const double *>_optr(pw, cnp.NPY_FLOAT64, K, False)
        ad.K = K; ad.rows_per_chunk = rows_per_chunk; ad.n = n
        ad.loss = <double *>_optr(loss, cnp.NPY_FLOAT64, n, True)
        ad.chunk_sum = cs; ad.gcoef = gcoef
        ad.gscale = <const double *>_optr(gscale, cnp.NPY_FLOAT64, n, False)
        xd = <double *>_ptr(x, cnp.NPY_FLOAT64, n, False)
        gd = <double *>_optr(grad, cnp.NPY_FLOAT64, n, True)
        with nogil:
            for i in prange(nitems, num_threads=nthreads, schedule="guided"):
                if logits:
                    bce_logits_item_d(xd, i, &ad, gd)
                else:
                    bce_item_d(xd, i, &ad, gd)
