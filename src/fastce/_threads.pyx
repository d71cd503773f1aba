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

cdef extern from "_kernels.h":
    const char *FCE_CLONES_ISA

cdef extern from *:
    """
    /* The kernel variant the loader's ifunc picks (same order as target_clones tries them). */
    static const char *fce_simd_path(void)
    {
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
        && !defined(FCE_NO_CLONES)
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
                && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq")
                && __builtin_cpu_supports("avx512vl"))
            return "x86-64-v4 (AVX-512)";
        if (__builtin_cpu_supports("avx2"))
            return "avx2";
        return "default (baseline x86-64, SSE2)";
    #elif defined(__AVX512F__)
        return "compile-time AVX-512 (-march)";
    #elif defined(__AVX2__)
        return "compile-time AVX2 (-march)";
    #else
        return "compile-time baseline";
    #endif
    }
    """
    const char *fce_simd_path()

OPENMP = bool(FCE_HAVE_OPENMP)
DISPATCH = FCE_CLONES_ISA.decode()


def simd_path():
    """The vector instruction set the kernels run with on this CPU."""
    return fce_simd_path().decode()


def get_num_threads():
    """Number of threads fastce kernels use for large inputs (1 without OpenMP)."""
    return omp_get_max_threads()
