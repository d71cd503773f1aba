# C-level entry of the binary-loss driver, for the per-call fast path (_fastpath.pyx).
from ._kernels cimport fce_idx, fce_bin_args

cdef void run_binary(int dt, bint logits, const void *xp, fce_idx nitems, const fce_bin_args *a,
                     void *gp, int nthreads) noexcept nogil
cdef Py_ssize_t outside_unit(int dt, const void *p, Py_ssize_t n, int nthreads) noexcept nogil
