# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cross-entropy and NLL kernels (class-index and probability targets), loss and fused gradient.

Every driver writes the per-sample loss (float64, before reduction) into `loss` and, when
`grad` is given, the gradient of sum_n gscale_n * gcoef * loss_n into `grad` in the same pass.
`grad` may be the input array itself (in-place): each kernel reads what it needs of an item
before writing that item's gradient.
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t
cimport numpy as cnp
from ._kernels cimport *

include "_buffers.pxi"


def cross_entropy_index(x, target, weight, double weight_sum, long long ignore_index,
                        double label_smoothing, Py_ssize_t A, Py_ssize_t C, Py_ssize_t B,
                        loss, grad, double gcoef, gscale, int nthreads, bint nll=False,
                        double z_loss=0.0, double softcap=0.0):
    """Class-index targets.  nll=True: `x` holds log-probabilities and no smoothing applies.
    softcap=0 means no softcap."""
    cdef fce_idx i, n = fce_n_items(A, C, B)
    cdef Py_ssize_t size = A * C * B, ns = A * B
    cdef ce_args_f af
    cdef ce_args_d ad
    cdef float *xf
    cdef float *gf
    cdef double *xd
    cdef double *gd
    cdef const int64_t *tp = <const int64_t *>_ptr(target, cnp.NPY_INT64, ns, False)
    cdef const double *wp = <const double *>_optr(weight, cnp.NPY_FLOAT64, C, False)
    cdef double *lp = <double *>_ptr(loss, cnp.NPY_FLOAT64, ns, True)
    cdef const double *gs = <const double *>_optr(gscale, cnp.NPY_FLOAT64, ns, False)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        af.tgt = tp; af.w = wp; af.W = weight_sum; af.ignore = ignore_index
        af.eps = label_smoothing; af.loss = lp; af.gscale = gs; af.gcoef = gcoef
        af.zl = z_loss; af.cap = softcap
        xf = <float *>_ptr(x, cnp.NPY_FLOAT32, size, False)
        gf = <float *>_optr(grad, cnp.NPY_FLOAT32, size, True)
        with nogil:
            for i in prange(n, num_threads=nthreads, schedule="guided"):
                if nll:
                    nll_item_f(xf, A, C, B, i, &af, gf)
                else:
                    ce_index_item_f(xf, A, C, B, i, &af, gf)
    else:
        ad.tgt = tp; ad.w = wp; ad.W = weight_sum; ad.ignore = ignore_index
        ad.eps = label_smoothing; ad.loss = lp; ad.gscale = gs; ad.gcoef = gcoef
        ad.zl = z_loss; ad.cap = softcap
        xd = <double *>_ptr(x, cnp.NPY_FLOAT64, size, False)
        gd = <double *>_optr(grad, cnp.NPY_FLOAT64, size, True)
        with nogil:
            for i in prange(n, num_threads=nthreads, schedule="guided"):
                if nll:
                    nll_item_d(xd, A, C, B, i, &ad, gd)
                else:
                    ce_index_item_d(xd, A, C, B, i, &ad, gd)


def cross_entropy_prob(x, q, weight, double label_smoothing, Py_ssize_t A, Py_ssize_t C,
                       Py_ssize_t B, loss, grad, double gcoef, gscale, int nthreads,
                       double z_loss=0.0, double softcap=0.0):
    """Probability targets q (same layout as x)."""
    cdef fce_idx i, n = fce_n_items(A, C, B)
    cdef Py_ssize_t size = A * C * B, ns = A * B
    cdef ce_prob_args_f af
    cdef ce_prob_args_d ad
    cdef float *xf
    cdef float *gf
    cdef double *xd
    cdef double *gd
    cdef const double *wp = <const double *>_optr(weight, cnp.NPY_FLOAT64, C, False)
    cdef double *lp = <double *>_ptr(loss, cnp.NPY_FLOAT64, ns, True)
    cdef const double *gs = <const double *>_optr(gscale, cnp.NPY_FLOAT64, ns, False)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        af.q = <const float *>_ptr(q, cnp.NPY_FLOAT32, size, False)
        af.w = wp; af.eps = label_smoothing; af.loss = lp; af.gscale = gs; af.gcoef = gcoef
        af.zl = z_loss; af.cap = softcap
        xf = <float *>_ptr(x, cnp.NPY_FLOAT32, size, False)
        gf = <float *>_optr(grad, cnp.NPY_FLOAT32, size, True)
        with nogil:
            for i in prange(n, num_threads=nthreads, schedule="guided"):
                ce_prob_item_f(xf, A, C, B, i, &af, gf)
    else:
        ad.q = <const double *>_ptr(q, cnp.NPY_FLOAT64, size, False)
        ad.w = wp; ad.eps = label_smoothing; ad.loss = lp; ad.gscale = gs; ad.gcoef = gcoef
        ad.zl = z_loss; ad.cap = softcap
        xd = <double *>_ptr(x, cnp.NPY_FLOAT64, size, False)
        gd = <double *>_optr(grad, cnp.NPY_FLOAT64, size, True)
        with nogil:
            for i in prange(n, num_threads=nthreads, schedule="guided"):
                ce_prob_item_d(xd, A, C, B, i, &ad, gd)
