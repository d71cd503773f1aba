# cython: language_level=3
"""OpenMP thread count, with a serial fallback when the extension is built without OpenMP.

fastce uses the OpenMP runtime's own setting (omp_get_max_threads), so OMP_NUM_THREADS and
threadpoolctl.threadpool_limits(...) control fastce exactly as they control other OpenMP code.
"""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FCE_HAVE_OPENMP 1
    #else
    #define FCE_HAVE_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    #endif
    """
    int FCE_HAVE_OPENMP
    int omp_get_max_threads() nogil

OPENMP = bool(FCE_HAVE_OPENMP)


def get_num_threads():
    """Number of threads fastce kernels use for large inputs (1 without OpenMP)."""
    return omp_get_max_threads()
