# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Row-operation kernels: logsumexp, log_softmax, softmax and their VJPs.

Each driver runs a prange over the work items of an (A, C, B) layout (see _kernels.h); the
math of one item lives in C so that GCC can vectorise it.  Inputs are C-contiguous arrays of
one float dtype, already validated by the Python layer.
"""
from cython.parallel cimport prange
cimport numpy as cnp
from ._kernels cimport *

include "_buffers.pxi"


def logsumexp(x, Py_ssize_t A, Py_ssize_t C, Py_ssize_t B, out, int nthreads):
    cdef fce_idx i, n = fce_n_items(A, C, B)
    cdef Py_ssize_t size = A * C * B
    cdef float *xf
    cdef float *of
    cdef double *xd
    cdef double *od
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        xf = <float *>_ptr(x, cnp.NPY_FLOAT32, size, False)
        of = <float *>_ptr(out, cnp.NPY_FLOAT32, A * B, True)
        with nogil:
            for i in prange(n, num_threads=nthreads, schedule="guided"):
                lse_item_f(xf, A, C, B, i, of)
    else:
        xd = <double *>_ptr(x, cnp.NPY_FLOAT64, size, False)
        od = <double *>_ptr(out, cnp.NPY_FLOAT64, A * B, True)
        with nogil:
            for i in prange(n, num_threads=nthreads, schedule="guided"):
                lse_item_d(xd, A, C, B, i, od)


def rowwise(str kind, x, Py_ssize_t A, Py_ssize_t C, Py_ssize_t B, out, int nthreads):
    """kind: "log_softmax" or "softmax"; out has x's shape (and may be x)."""
    cdef fce_idx i, n = fce_n_items(A, C, B)
    cdef Py_ssize_t size = A * C * B
    cdef bint is_log = kind == "log_softmax"
    cdef float *xf
    cdef float *of
    cdef double *xd
    cdef double *od
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        xf = <float *>_ptr(x, cnp.NPY_FLOAT32, size, False)
        of = <float *>_ptr(out, cnp.NPY_FLOAT32, size, True)
        with nogil:
            for i in prange(n, num_threads=nthreads, schedule="guided"):
                if is_log:
                    log_softmax_item_f(xf, A, C, B, i, of)
                else:
                    softmax_item_f(xf, A, C, B, i, of)
    else:
        xd = <double *>_ptr(x, cnp.NPY_FLOAT64, size, False)
        od = <double *>_ptr(out, cnp.NPY_FLOAT64, size, True)
        with nogil:
            for i in prange(n, num_threads=nthreads, schedule="guided"):
                if is_log:
                    log_softmax_item_d(xd, A, C, B, i, od)
                else:
                    softmax_item_d(xd, A, C, B, i, od)


def vjp(str kind, y, g, Py_ssize_t A, Py_ssize_t C, Py_ssize_t B, out, int nthreads):
    """kind: "log_softmax" or "softmax"; y is the forward output, g the upstream gradient."""
    cdef fce_idx i, n = fce_n_items(A, C, B)
    cdef Py_ssize_t size = A * C * B
    cdef bint is_log = kind == "log_softmax"
    cdef float *yf
    cdef float *gf
    cdef float *of
    cdef double *yd
    cdef double *gd
    cdef double *od
    if cnp.PyArray_TYPE(y) == cnp.NPY_FLOAT32:
        yf = <float *>_ptr(y, cnp.NPY_FLOAT32, size, False)
        gf = <float *>_ptr(g, cnp.NPY_FLOAT32, size, False)
        of = <float *>_ptr(out, cnp.NPY_FLOAT32, size, True)
        with nogil:
            for i in prange(n, num_threads=nthreads, schedule="guided"):
                if is_log:
                    log_softmax_vjp_item_f(yf, gf, A, C, B, i, of)
                else:
                    softmax_vjp_item_f(yf, gf, A, C, B, i, of)
    else:
        yd = <double *>_ptr(y, cnp.NPY_FLOAT64, size, False)
        gd = <double *>_ptr(g, cnp.NPY_FLOAT64, size, False)
        od = <double *>_ptr(out, cnp.NPY_FLOAT64, size, True)
        with nogil:
            for i in prange(n, num_threads=nthreads, schedule="guided"):
                if is_log:
                    log_softmax_vjp_item_d(yd, gd, A, C, B, i, od)
                else:
                    softmax_vjp_item_d(yd, gd, A, C, B, i, od)
