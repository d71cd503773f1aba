/*
 * One ISA's instantiation: the kernel template (_kern_body.h) once per dtype, with names
 * suffixed _<f|d>_<FCE_ISA_TAG>.  Included by _kernels.h inside that ISA's target region, with
 * FCE_ISA_FMA = 1 where that target has fused multiply-add (the _fma functions of _simd.h).
 */
#define FCE_CAT3_(a, b, c) a##_##b##_##c
#define FCE_CAT3(a, b, c) FCE_CAT3_(a, b, c)
#if FCE_ISA_FMA
#define FCE_SIMD_FN(name) name##_fma
#else
#define FCE_SIMD_FN(name) name
#endif

#define FCE_T float
#define FCE_SCHED_CE 0      /* see _kern_body.h */
#define FCE_SUF(name) FCE_CAT3(name, f, FCE_ISA_TAG)
#define FCE_EXP FCE_SIMD_FN(fce_exp_f)
#define FCE_EXPN FCE_SIMD_FN(fce_expn_f)
#define FCE_LOG FCE_SIMD_FN(fce_log_f)
#define FCE_LOG1M FCE_SIMD_FN(fce_log1m_f)
#define FCE_LOG1P01 FCE_SIMD_FN(fce_log1p01_f)
#define FCE_LOG1P_D FCE_SIMD_FN(fce_log1p_d)
#define FCE_TANH FCE_SIMD_FN(fce_tanh_f)
#include "_kern_body.h"
#undef FCE_T
#undef FCE_SCHED_CE
#undef FCE_SUF
#undef FCE_EXP
#undef FCE_EXPN
#undef FCE_LOG
#undef FCE_LOG1M
#undef FCE_LOG1P01
#undef FCE_LOG1P_D
#undef FCE_TANH

#define FCE_T double
#define FCE_SCHED_CE 1
#define FCE_SUF(name) FCE_CAT3(name, d, FCE_ISA_TAG)
#define FCE_EXP FCE_SIMD_FN(fce_exp_d)
#define FCE_EXPN FCE_SIMD_FN(fce_expn_d)
#define FCE_LOG FCE_SIMD_FN(fce_log_d)
#define FCE_LOG1M FCE_SIMD_FN(fce_log1m_d)
#define FCE_LOG1P01 FCE_SIMD_FN(fce_log1p01_d)
#define FCE_LOG1P_D FCE_SIMD_FN(fce_log1p_d)
#define FCE_TANH FCE_SIMD_FN(fce_tanh_d)
#include "_kern_body.h"
#undef FCE_T
#undef FCE_SCHED_CE
#undef FCE_SUF
#undef FCE_EXP
#undef FCE_EXPN
#undef FCE_LOG
#undef FCE_LOG1M
#undef FCE_LOG1P01
#undef FCE_LOG1P_D
#undef FCE_TANH
#undef FCE_SIMD_FN
