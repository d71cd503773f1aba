# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Row-operation kernels: logsumexp, log_softmax, softmax and their VJPs.

Each driver runs a prange over the work items of an (A, C, B) layout (see _kernels.h); the
math of one item lives in C so that the compiler can vectorise it.  Inputs are C-contiguous
arrays of one float dtype, already validated by the Python layer; one body serves both dtypes.
"""
from cython.parallel cimport prange
cimport numpy as cnp
from ._kernels cimport *

include "_buffers.pxi"
include "_dispatch.pxi"


def logsumexp(x, Py_ssize_t A, Py_ssize_t C, Py_ssize_t B, out, int nthreads):
    cdef fce_idx i, n = fce_n_items(A, C, B)
    cdef int tn
    cdef int dt = _dtype_code(x, &tn)
    cdef const void *xp = _ptr(x, tn, A * C * B, False)
    cdef void *op = _ptr(out, tn, A * B, True)
    with nogil:
        for i in prange(n, num_threads=nthreads, schedule="guided"):
            fce_lse_item(dt, xp, A, C, B, i, op)


def rowwise(str kind, x, Py_ssize_t A, Py_ssize_t C, Py_ssize_t B, out, int nthreads):
    """kind: "log_softmax" or "softmax"; out has x's shape (and may be x)."""
    cdef fce_idx i, n = fce_n_items(A, C, B)
    cdef bint is_log = kind == "log_softmax"
    cdef int tn
    cdef int dt = _dtype_code(x, &tn)
    cdef const void *xp = _ptr(x, tn, A * C * B, False)
    cdef void *op = _ptr(out, tn, A * C * B, True)
    with nogil:
        for i in prange(n, num_threads=nthreads, schedule="guided"):
            if is_log:
                fce_log_softmax_item(dt, xp, A, C, B, i, op)
            else:
                fce_softmax_item(dt, xp, A, C, B, i, op)


def vjp(str kind, y, g, Py_ssize_t A, Py_ssize_t C, Py_ssize_t B, out, int nthreads):
    """kind: "log_softmax" or "softmax"; y is the forward output, g the upstream gradient."""
    cdef fce_idx i, n = fce_n_items(A, C, B)
    cdef Py_ssize_t size = A * C * B
    cdef bint is_log = kind == "log_softmax"
    cdef int tn
    cdef int dt = _dtype_code(y, &tn)
    cdef const void *yp = _ptr(y, tn, size, False)
    cdef const void *gp = _ptr(g, tn, size, False)
    cdef void *op = _ptr(out, tn, size, True)
    with nogil:
        for i in prange(n, num_threads=nthreads, schedule="guided"):
            if is_log:
                fce_log_softmax_vjp_item(dt, yp, gp, A, C, B, i, op)
            else:
                fce_softmax_vjp_item(dt, yp, gp, A, C, B, i, op)


cdef extern from "_kernels.h" nogil:
    int fce_simd_eval_fma(int fn, int dt, const void *x, void *o, fce_idx n)


def _simd_eval_fma(str name, x):
    """Test hook: the FMA variant (used by the AVX2 / AVX-512 kernels) of the elementary function
    `name` of _simd.h applied to every element of the float32 or float64 array x, or None where
    this build or CPU has no such variant."""
    import numpy as np
    cdef int fn = ("exp", "log", "log1p", "tanh", "log1p01", "expn", "log1m").index(name)
    a = np.ascontiguousarray(x)
    if a.dtype != np.float32 and a.dtype != np.float64:
        raise TypeError("float32 or float64 only")
    out = np.empty_like(a)
    cdef cnp.ndarray ai = a, oi = out
    if not fce_simd_eval_fma(fn, a.dtype == np.float64, <const void *>ai.data, <void *>oi.data,
                             a.size):
        return None
    return out
