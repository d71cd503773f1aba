/*
 * The kernel template: included by _kern_inst.h once per dtype and ISA, with
 *   FCE_T                       float or double
 *   FCE_SUF(name)               name suffixed with dtype and ISA (name_f_avx2, ...)
 *   FCE_EXP/LOG/LOG1P/TANH      the dtype's functions from _simd.h
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
#include "_k_ce.h"
#include "_k_check.h"
#endif
#if FCE_WANT(BINARY)
#include "_k_binary.h"
#endif
#if FCE_WANT(DIV)
#include "_k_div.h"
#endif

#undef T
#undef S
