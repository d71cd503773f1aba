/*
 * The kernel template: included by _kern_inst.h once per dtype and ISA, with
 *   FCE_T                       float or double
 *   FCE_SUF(name)               name suffixed with dtype and ISA (name_f_avx2, ...)
 *   FCE_EXP/EXPN/LOG/LOG1M/LOG1P01/LOG1P_D/TANH   the dtype's functions from _simd.h
 * It names them T and S(name) and includes the kernel families in dependency order.
 */
#define T FCE_T
#define S(name) FCE_SUF(name)

#include "_k_layout.h"
#include "_k_reduce.h"
#if FCE_WANT(ROWOPS)
#include "_k_rowops.h"
#endif
#if FCE_WANT(CE)
/* GCC builds schedule before register allocation (setup.py, -fschedule-insns), except the
 * float32 class-loss kernels: there it measured mixed (C = 10 forward 10% slower, softcap and
 * label smoothing 6%, plain rows 3% faster; AMD Zen 1), while float64 gained 5-35% everywhere.
 * The float32 row kernels (class-index and probability targets) take it back with register
 * pressure weighed (_k_ce.h). */
#if defined(__GNUC__) && !defined(__clang__) && !FCE_SCHED_CE
#define FCE_NO_SCHED 1
#pragma GCC push_options
#pragma GCC optimize("no-schedule-insns")
#endif
#include "_k_ce.h"
#include "_k_check.h"
#ifdef FCE_NO_SCHED
#pragma GCC pop_options
#undef FCE_NO_SCHED
#endif
#endif
#if FCE_WANT(BINARY)
#include "_k_binary.h"
#endif
#if FCE_WANT(DIV)
/* every divergence kernel with register pressure weighed (FCE_SCHED_PRESSURE_ON): its loops
 * are the longest chains of the engine (two exps and a degree-15 polynomial per KL term), and
 * the plain scheduler spilled kl_div_logits' float64 block to 4 KiB of stack.  One thread,
 * Zen 1: kl_div_logits float64 17-23% faster, kl_div float64 10%, focal forward float64 13%;
 * float32 and focal fwd+bwd within noise (+-4%). */
FCE_SCHED_PRESSURE_ON
#include "_k_div.h"
FCE_SCHED_PRESSURE_OFF
#endif

#undef T
#undef S
