# C-level entry of the cross-entropy driver, for the per-call fast path (_fastpath.pyx), which
# has already proven every buffer canonical and calls it without a Python-level call.
from libc.stdint cimport int64_t, int32_t
from ._kernels cimport fce_idx, fce_ce_args

cdef void run_ce_index(int dt, const void *xp, fce_idx A, fce_idx C, fce_idx B,
                       const fce_ce_args *a, void *gp, int nthreads, bint nll) noexcept nogil
cdef Py_ssize_t count_ignored(const int64_t *t, Py_ssize_t n, int64_t ign, Py_ssize_t C,
                              int nthreads) noexcept nogil
cdef void widen_targets(const int32_t *src, Py_ssize_t n, int64_t *dst) noexcept nogil
