/*
 * fastce kernels: the per-row / per-tile math of every op, for float and double.
 *
 * Layout.  Every class-axis op sees its input as a C-contiguous (A, C, B) array: A = product of
 * the dims before the class axis, C = classes, B = product of the dims after it.  axis=-1 is
 * B == 1 (rows: contiguous, vectorised along the class axis); PyTorch's (N, C, d1, ...) with
 * axis=1 is B > 1 (columns: vectorised across B, the class axis strided).  No layout is ever
 * transposed into a copy.  The unit of parallel work is an "item": one row when B == 1, one
 * tile of FCE_TILE columns of one a-slab otherwise; fce_n_items() counts them and every op's
 * *_item() function decodes the item, so the Cython drivers are a bare prange over items.
 *
 * Sample s = a*B + b owns per-sample outputs (loss, target) at index s.
 *
 * Precision.  exp is evaluated in the input dtype; every sum is accumulated in double, in a
 * fixed order (fixed lanes combined pairwise) that depends on neither the thread count nor the
 * item schedule, so results are bitwise reproducible for any number of threads.
 *
 * This header is the "template": it includes _kern_body.h once per dtype.
 */
#ifndef FASTCE_KERNELS_H
#define FASTCE_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include "_simd.h"

typedef ptrdiff_t fce_idx;

#define FCE_TILE 128        /* columns per item in the B > 1 layout (tile buffers on the stack) */
#define FCE_LANES 16        /* fixed accumulator lanes for deterministic sums */

static inline fce_idx fce_n_items(fce_idx A, fce_idx B)
{
    return B == 1 ? A : A * ((B + FCE_TILE - 1) / FCE_TILE);
}

/* Pairwise combine of the FCE_LANES accumulators, in a fixed order. */
static inline double fce_combine_lanes(const double *acc)
{
    double t[FCE_LANES];
    int k, w;
    for (k = 0; k < FCE_LANES; k++) t[k] = acc[k];
    for (w = FCE_LANES / 2; w >= 1; w /= 2)
        for (k = 0; k < w; k++) t[k] = t[k] + t[k + w];
    return t[0];
}

#define FCE_T float
#define FCE_SUF(name) name##_f
#define FCE_EXP fce_exp_f
#define FCE_LOG fce_log_f
#define FCE_LOG1P fce_log1p_f
#include "_kern_body.h"
#undef FCE_T
#undef FCE_SUF
#undef FCE_EXP
#undef FCE_LOG
#undef FCE_LOG1P

#define FCE_T double
#define FCE_SUF(name) name##_d
#define FCE_EXP fce_exp_d
#define FCE_LOG fce_log_d
#define FCE_LOG1P fce_log1p_d
#include "_kern_body.h"
#undef FCE_T
#undef FCE_SUF
#undef FCE_EXP
#undef FCE_LOG
#undef FCE_LOG1P

#endif
