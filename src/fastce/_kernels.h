/*
 * fastce kernels: the per-row / per-tile math of every op, for float and double.
 *
 * Layout.  Every class-axis op sees its input as a C-contiguous (A, C, B) array: A = product of
 * the dims before the class axis, C = classes, B = product of the dims after it.  axis=-1 is
 * B == 1 (rows: contiguous, vectorised along the class axis); PyTorch's (N, C, d1, ...) with
 * axis=1 is B > 1 (columns: vectorised across B, the class axis strided).  No layout is ever
 * transposed into a full copy.  The unit of parallel work is an "item": one row (B == 1, many
 * classes), a tile of FCE_TILE columns of one a-slab (B > 1), or a block of FCE_TILE short rows
 * (B == 1, few classes) transposed through a stack buffer; fce_n_items() counts them and every
 * op's *_item() function decodes its item, so the Cython drivers are a bare prange over items.
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
#include <stdlib.h>
#include "_simd.h"

typedef ptrdiff_t fce_idx;

/*
 * Runtime ISA dispatch.  The default build targets baseline x86-64 (SSE2), where the vectorised
 * exp runs 4 lanes wide.  On GCC/x86-64/glibc every item function is compiled three times
 * (AVX-512 "x86-64-v4", AVX2, baseline) and the loader picks one through an ifunc on first
 * use; the always_inline helpers of _simd.h are inlined into each clone.  FCE_NO_CLONES (set for
 * -march=native and sanitizer builds) or any other platform gives one plain version.
 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(FCE_NO_CLONES)
#define FCE_KERNEL __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#define FCE_CLONES_ISA "x86-64-v4 / avx2 / default, chosen at load time"
#else
#define FCE_KERNEL
#define FCE_CLONES_ISA "single build (no runtime dispatch)"
#endif

#define FCE_TILE 128        /* columns per item in the B > 1 layout (tile buffers on the stack) */
#define FCE_LANES 16        /* fixed accumulator lanes for deterministic sums */

#define FCE_SMALL_C 16   /* rows of at most this many classes are processed in transposed blocks */

enum { FCE_ROW = 0, FCE_COLS = 1, FCE_BLOCK = 2 };

/* Number of work items of an (A, C, B) op; see decode() in _kern_body.h. */
static inline fce_idx fce_n_items(fce_idx A, fce_idx C, fce_idx B)
{
    if (B == 1)
        return C > FCE_SMALL_C ? A : (A + FCE_TILE - 1) / FCE_TILE;
    return A * ((B + FCE_TILE - 1) / FCE_TILE);
}

/* Pairwise combine of the FCE_LANES accumulators, in a fixed order. */
FCE_INLINE double fce_combine_lanes(const double *acc)
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
#define FCE_TANH fce_tanh_f
#include "_kern_body.h"
#undef FCE_T
#undef FCE_SUF
#undef FCE_EXP
#undef FCE_LOG
#undef FCE_LOG1P
#undef FCE_TANH

#define FCE_T double
#define FCE_SUF(name) name##_d
#define FCE_EXP fce_exp_d
#define FCE_LOG fce_log_d
#define FCE_LOG1P fce_log1p_d
#define FCE_TANH fce_tanh_d
#include "_kern_body.h"
#undef FCE_T
#undef FCE_SUF
#undef FCE_EXP
#undef FCE_LOG
#undef FCE_LOG1P
#undef FCE_TANH

#endif
