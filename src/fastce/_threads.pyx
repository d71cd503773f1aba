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

cdef extern from "_isa.h":
    int fce_isa_init()
    int fce_isa_multi()
    int fce_isa_best()
    int fce_isa_request()
    const char *fce_isa_name(int level)
    const char *fce_isa_chosen()

fce_isa_init()

OPENMP = bool(FCE_HAVE_OPENMP)
DISPATCH = ("baseline / avx2 / avx512, chosen at import (FASTCE_ISA forces one)"
            if fce_isa_multi() else "single build (no runtime dispatch)")


def simd_path():
    """The vector instruction set the kernels run with on this CPU: the resolver's choice
    (the same function every kernel module runs at import; see isa_report())."""
    return fce_isa_chosen().decode()


def isa_report():
    """{'requested': FASTCE_ISA or 'auto', 'best': best level this CPU supports,
    'chosen': what the kernels run, per kernel module}."""
    import os
    from . import _binary, _ce, _div, _softmax
    return {
        "requested": os.environ.get("FASTCE_ISA") or "auto",
        "best": fce_isa_name(fce_isa_best()).decode(),
        "chosen": {m.__name__.rsplit(".", 1)[1]: m.isa() for m in (_ce, _softmax, _binary, _div)},
    }


def get_num_threads():
    """Number of threads fastce kernels use for large inputs (1 without OpenMP)."""
    return omp_get_max_threads()


cdef extern from "_simd.h" nogil:
    float fce_exp_f(float)
    double fce_exp_d(double)
    float fce_log_f(float)
    double fce_log_d(double)
    float fce_log1p_f(float)
    double fce_log1p_d(double)
    float fce_tanh_f(float)
    double fce_tanh_d(double)
    float fce_log1p01_f(float)
    double fce_log1p01_d(double)
    float fce_expn_f(float)
    double fce_expn_d(double)
    float fce_log1m_f(float)
    double fce_log1m_d(double)


def _simd_eval(str name, x):
    """Test hook: the elementary function `name` of _simd.h (exp, log, log1p, tanh, log1p01, expn, log1m) applied to
    every element of the float32 or float64 array x (baseline-ISA build of the function)."""
    import numpy as np
    cdef Py_ssize_t i, n
    a = np.ascontiguousarray(x)
    out = np.empty_like(a)
    n = a.size
    cdef float[::1] xf, of
    cdef double[::1] xd, od
    if a.dtype == np.float32:
        xf = a.reshape(-1); of = out.reshape(-1)
        for i in range(n):
            v = xf[i]
            of[i] = (fce_exp_f(v) if name == "exp" else fce_log_f(v) if name == "log"
                     else fce_log1p_f(v) if name == "log1p" else fce_tanh_f(v) if name == "tanh"
                     else fce_expn_f(v) if name == "expn" else fce_log1m_f(v) if name == "log1m"
                     else fce_log1p01_f(v))
    elif a.dtype == np.float64:
        xd = a.reshape(-1); od = out.reshape(-1)
        for i in range(n):
            v = xd[i]
            od[i] = (fce_exp_d(v) if name == "exp" else fce_log_d(v) if name == "log"
                     else fce_log1p_d(v) if name == "log1p" else fce_tanh_d(v) if name == "tanh"
                     else fce_expn_d(v) if name == "expn" else fce_log1m_d(v) if name == "log1m"
                     else fce_log1p01_d(v))
    else:
        raise TypeError("float32 or float64 only")
    return out
