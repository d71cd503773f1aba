/*
 * fastce kernels: the per-row / per-tile math of every op, for float and double, for three
 * instruction sets, behind one dtype- and ISA-free entry point per op.
 *
 * Layout.  Every class-axis op sees its input as a C-contiguous (A, C, B) array: A = product of
 * the dims before the class axis, C = classes, B = product of the dims after it.  axis=-1 is
 * B == 1 (rows: contiguous, vectorised along the class axis); PyTorch's (N, C, d1, ...) with
 * axis=1 is B > 1 (columns: vectorised across B, the class axis strided).  No layout is ever
 * transposed into a full copy.  The unit of parallel work is an "item": one row (B == 1, many
 * classes), a tile of FCE_TILE columns of one a-slab (B > 1), or a block of FCE_TILE short rows
 * (B == 1, few classes) transposed through a stack buffer; fce_n_items() counts them and every
 * op's item function decodes its item, so the Cython drivers are a bare prange over items.
 *
 * Sample s = a*B + b owns per-sample outputs (loss, target) at index s.
 *
 * Precision.  exp is evaluated in the input dtype; every sum is accumulated in double, in a
 * fixed order (fixed lanes combined pairwise) that depends on neither the thread count nor the
 * item schedule, so results are bitwise reproducible for any number of threads.
 *
 * Files (each family reads on its own; all but this one are templates included per dtype x ISA
 * through _kern_body.h with T = float/double and S(name) = the suffixed name):
 *   _simd.h        exp / log / log1p / tanh with IEEE special cases (measured max ulp there)
 *   _isa.h         which instruction sets are compiled, and the resolver (FASTCE_ISA)
 *   _k_layout.h    item decoding, row <-> column transposes of short-row blocks
 *   _k_reduce.h    row and column reductions (max, sum of exps, dot products)
 *   _k_rowops.h    logsumexp, log_softmax, softmax and their VJPs
 *   _k_ce.h        cross-entropy (class indices, probabilities; softcap, z-loss) and NLL
 *   _k_binary.h    BCE with logits and BCE from probabilities
 *   _k_div.h       distillation KL from logits, softmax entropy, top-k rank, sigmoid focal
 *                  loss, torch's pointwise kl_div
 *
 * The C <-> Cython interface is dtype-free: every entry point takes `int dt` (0 float,
 * 1 double) and void pointers, and the argument structs hold only double/int64 scalars and
 * void pointers, so _kernels.pxd declares each op once and each driver has one body.
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

/* Columns per item in the B > 1 layout and rows per short-row block.  Every per-column scratch
 * array of an item lives on the stack at this width: 64 keeps the largest kernel frame near
 * 20 KiB (threads started with threading.stack_size(64 KiB) must be able to run a kernel). */
/* Stores of a block of results, written after the block is computed: dst[0..n) = buf[0..n).
 * A store into an output array may alias the next vector's inputs as far as the compiler knows,
 * so a loop that stores each vector's result as it goes makes every vector's loads wait for the
 * previous vector's stores, and its exp/log/tanh chain (50-150 cycles) for the previous one's.
 * Computed into a local buffer (which nothing aliases) and stored afterwards, the vectors of a
 * block are independent chains that the compiler's scheduler interleaves (setup.py:
 * -fschedule-insns); on Zen 1, whose reorder window holds about one such chain, that took
 * BCE-with-logits fwd+bwd from 19.2 to 16.9 ms (float32) and 48 to 37 ms (float64) per 4M.
 * The inputs of the whole block are read before the first store, so an output that is the
 * input itself (an in-place gradient) stays correct. */
/* CAP, the buffer's (constant) length, is spelled out for a full buffer: with a variable count
 * GCC calls memcpy for the loop, a call per block. */
#define FCE_STORE_AFTER(dst, buf, n, CAP)                                                      \
    do {                                                                                       \
        fce_idx q_, n_ = (n);                                                                  \
        if (n_ == (CAP))                                                                       \
            for (q_ = 0; q_ < (CAP); q_++) (dst)[q_] = (buf)[q_];                              \
        else                                                                                   \
            for (q_ = 0; q_ < n_; q_++) (dst)[q_] = (buf)[q_];                                 \
    } while (0)
/* GCC: the functions between these two are scheduled before register allocation with the
 * register pressure weighed (-fschedule-insns -fsched-pressure; setup.py turns the pre-RA
 * scheduler on everywhere, and this also takes it back inside a region that turned it off).
 * For loops of several long chains whose plain interleaving runs out of vector registers; see
 * the users for what it measured.  Nothing for other compilers, nor with FCE_NO_SCHED (the
 * sanitizer build: the pass is slow on these loops and finds no memory error). */
#if defined(__GNUC__) && !defined(__clang__) && !defined(FCE_NO_SCHED)
#define FCE_SCHED_PRESSURE_ON                                                                  \
    _Pragma("GCC push_options") _Pragma("GCC optimize(\"schedule-insns\", \"sched-pressure\")")
#define FCE_SCHED_PRESSURE_OFF _Pragma("GCC pop_options")
#else
#define FCE_SCHED_PRESSURE_ON
#define FCE_SCHED_PRESSURE_OFF
#endif
#define FCE_TILE 64
#define FCE_LANES 16        /* fixed accumulator lanes for deterministic sums */
#define FCE_SMALL_C 16      /* rows of at most this many classes run in transposed blocks */

enum { FCE_ROW = 0, FCE_COLS = 1, FCE_BLOCK = 2 };
enum { FCE_F32 = 0, FCE_F64 = 1 };

/* Number of work items of an (A, C, B) op; see decode() in _k_layout.h. */
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

/* ------------------------------------------------------------ argument structs (dtype-free) */

/* Class-index CE / NLL.  w: class weights or NULL; W = sum(w) (C without weights), read only
 * when label smoothing is on; cap = softcap (0: off); zl = z-loss coefficient (0: off).
 * item_sum NULL: per-sample losses into loss[A*B]; else (reduction mean/sum) one sum of the
 * item's per-sample losses per item into item_sum[fce_n_items()], and loss is not touched.
 * item_ign NULL, or (class-index CE, not NLL) per item the fast path's target check of the
 * item's samples (count_ignored in _k_check.h): how many equal ignore, -1 if any other is out
 * of range. */
typedef struct {
    const int64_t *tgt; const double *w; double W; int64_t ignore; double eps;
    double *loss; const double *gscale; double gcoef; double zl; double cap;
    double *item_sum; fce_idx *item_ign;
} fce_ce_args;

/* Probability targets: q has the logits' layout and dtype. */
typedef struct {
    const void *q; const double *w; double eps; double *loss; const double *gscale; double gcoef;
    double zl; double cap;
    /* the class weights again in the logits' dtype, set when every |w_c| <= 2^64, so the T-lane
     * passes can form w_c q_c without overflow; NULL sends weighted calls to the double path */
    const void *wt;
} fce_ce_prob_args;

/* Elementwise binary losses; y, w, pw, loss, gscale have the logits' dtype. */
typedef struct {
    const void *y; const void *w; const void *pw; fce_idx K; fce_idx rows_per_chunk; fce_idx n;
    void *loss; double *chunk_sum; const void *gscale; double gcoef;
} fce_bin_args;

/* Beyond cross-entropy (_k_div.h).  KL from logits: k = 1/temperature, tau = temperature. */
typedef struct { double k; double tau; double *loss; const double *gscale; double gcoef; } fce_kl_args;
typedef struct { double *loss; const double *gscale; double gcoef; } fce_ent_args;
/* Elementwise focal / kl_div in chunks of `chunk`; y, loss, gscale have the input's dtype. */
typedef struct {
    const void *y; fce_idx n; fce_idx chunk; void *loss; double *chunk_sum; const void *gscale;
    double gcoef; double alpha; double gamma; int log_target;
} fce_div_ew_args;

/* ------------------------------------------------------------ instantiation per ISA x dtype */

/* Kernel families an extension module compiles: FCE_FAMILIES (set per module by setup.py) is
 * a mask of these; unset means all.  Each module then builds only its own kernels (x 2 dtypes
 * x 3 ISAs), which keeps the build time down. */
#define FCE_FAM_ROWOPS 1
#define FCE_FAM_CE 2
#define FCE_FAM_BINARY 4
#define FCE_FAM_DIV 8
#ifndef FCE_FAMILIES
#define FCE_FAMILIES 15
#endif
#define FCE_WANT(fam) ((FCE_FAMILIES) & FCE_FAM_##fam)

#include "_isa.h"

#define FCE_ISA_TAG base
/* the baseline variant has FMA only when the build's own -march has it (FASTCE_NATIVE, arm64) */
#if defined(__FMA__) || defined(__aarch64__)
#define FCE_ISA_FMA 1
#else
#define FCE_ISA_FMA 0
#endif
#include "_kern_inst.h"
#undef FCE_ISA_FMA
#undef FCE_ISA_TAG

#if FCE_MULTI_ISA
FCE_TARGET_AVX2_BEGIN
#define FCE_ISA_TAG avx2
#define FCE_ISA_FMA 1
#include "_kern_inst.h"
#undef FCE_ISA_FMA
#undef FCE_ISA_TAG
#if FCE_WANT(ROWOPS)
/* Test hook (tests/test_simd_ulp.py): the FMA variants of _simd.h's functions over an array,
 * compiled for the AVX2+FMA target as the kernels use them; fn 0 exp, 1 log, 2 log1p, 3 tanh,
 * 4 log1p01. */
static void fce_simd_eval_fma_avx2(int fn, int dt, const void *x, void *o, fce_idx n)
{
    fce_idx i;
    if (dt) {
        const double *xd = (const double *)x; double *od = (double *)o;
        for (i = 0; i < n; i++)
            od[i] = fn == 0 ? fce_exp_d_fma(xd[i]) : fn == 1 ? fce_log_d_fma(xd[i])
                  : fn == 2 ? fce_log1p_d_fma(xd[i]) : fn == 3 ? fce_tanh_d_fma(xd[i])
                  : fn == 4 ? fce_log1p01_d_fma(xd[i]) : fn == 5 ? fce_expn_d_fma(xd[i])
                  : fce_log1m_d_fma(xd[i]);
    } else {
        const float *xf = (const float *)x; float *of = (float *)o;
        for (i = 0; i < n; i++)
            of[i] = fn == 0 ? fce_exp_f_fma(xf[i]) : fn == 1 ? fce_log_f_fma(xf[i])
                  : fn == 2 ? fce_log1p_f_fma(xf[i]) : fn == 3 ? fce_tanh_f_fma(xf[i])
                  : fn == 4 ? fce_log1p01_f_fma(xf[i]) : fn == 5 ? fce_expn_f_fma(xf[i])
                  : fce_log1m_f_fma(xf[i]);
    }
}
#endif
FCE_TARGET_AVX2_END

FCE_TARGET_AVX512_BEGIN
#define FCE_ISA_TAG avx512
#define FCE_ISA_FMA 1
#include "_kern_inst.h"
#undef FCE_ISA_FMA
#undef FCE_ISA_TAG
FCE_TARGET_AVX512_END
#endif

/* ------------------------------------------------------------ entry points
 * One switch per call on (ISA chosen at import, dtype); well predicted, so it costs nothing
 * next to an item's work.  FCE_CALL(fn, dt, args) calls fn_<f|d>_<isa>(args). */
#if FCE_MULTI_ISA
#define FCE_CALL(fn, dt, ...)                                                                  \
    do {                                                                                       \
        switch (fce_isa_level * 2 + ((dt) != 0)) {                                             \
        case 5: fn##_d_avx512(__VA_ARGS__); break;                                             \
        case 4: fn##_f_avx512(__VA_ARGS__); break;                                             \
        case 3: fn##_d_avx2(__VA_ARGS__); break;                                               \
        case 2: fn##_f_avx2(__VA_ARGS__); break;                                               \
        case 1: fn##_d_base(__VA_ARGS__); break;                                               \
        default: fn##_f_base(__VA_ARGS__); break;                                              \
        }                                                                                      \
    } while (0)
#else
#define FCE_CALL(fn, dt, ...)                                                                  \
    do {                                                                                       \
        if (dt) fn##_d_base(__VA_ARGS__); else fn##_f_base(__VA_ARGS__);                       \
    } while (0)
#endif

#define FCE_XARGS const void *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item

#if FCE_WANT(ROWOPS)
/* 1 and the FMA variants' values in o where this build and CPU have them, else 0 */
static inline int fce_simd_eval_fma(int fn, int dt, const void *x, void *o, fce_idx n)
{
#if FCE_MULTI_ISA
    if (fce_isa_best() >= FCE_ISA_AVX2) { fce_simd_eval_fma_avx2(fn, dt, x, o, n); return 1; }
#endif
    (void)fn; (void)dt; (void)x; (void)o; (void)n;
    return 0;
}
#endif

#if FCE_WANT(ROWOPS)
static inline void fce_lse_item(int dt, FCE_XARGS, void *out)
{ FCE_CALL(lse_item, dt, x, A, C, B, item, out); }
static inline void fce_log_softmax_item(int dt, FCE_XARGS, void *out)
{ FCE_CALL(log_softmax_item, dt, x, A, C, B, item, out); }
static inline void fce_softmax_item(int dt, FCE_XARGS, void *out)
{ FCE_CALL(softmax_item, dt, x, A, C, B, item, out); }
static inline void fce_log_softmax_vjp_item(int dt, const void *y, const void *g, fce_idx A,
                                            fce_idx C, fce_idx B, fce_idx item, void *out)
{ FCE_CALL(log_softmax_vjp_item, dt, y, g, A, C, B, item, out); }
static inline void fce_softmax_vjp_item(int dt, const void *y, const void *g, fce_idx A,
                                        fce_idx C, fce_idx B, fce_idx item, void *out)
{ FCE_CALL(softmax_vjp_item, dt, y, g, A, C, B, item, out); }
#endif
#if FCE_WANT(CE)
static inline void fce_ce_index_item(int dt, FCE_XARGS, const fce_ce_args *a, void *grad)
{ FCE_CALL(ce_index_item, dt, x, A, C, B, item, a, grad); }
static inline void fce_nll_item(int dt, FCE_XARGS, const fce_ce_args *a, void *grad)
{ FCE_CALL(nll_item, dt, x, A, C, B, item, a, grad); }
static inline void fce_ce_prob_item(int dt, FCE_XARGS, const fce_ce_prob_args *a, void *grad)
{ FCE_CALL(ce_prob_item, dt, x, A, C, B, item, a, grad); }
/* target scans of the fast path (_k_check.h; dtype-free, the float instance serves) */
static inline void fce_count_ignored(const int64_t *t, fce_idx n, int64_t ign, int64_t C,
                                     fce_idx *result)
{ FCE_CALL(count_ignored, 0, t, n, ign, C, result); }
static inline void fce_widen_targets(const int32_t *src, fce_idx n, int64_t *dst)
{ FCE_CALL(widen_targets, 0, src, n, dst); }
#endif
#if FCE_WANT(BINARY)
static inline void fce_bce_logits_item(int dt, const void *x, fce_idx item, const fce_bin_args *a,
                                       void *grad)
{ FCE_CALL(bce_logits_item, dt, x, item, a, grad); }
static inline void fce_first_outside_unit(int dt, const void *p, fce_idx n, fce_idx *first)
{ FCE_CALL(first_outside_unit, dt, p, n, first); }
static inline void fce_bce_item(int dt, const void *x, fce_idx item, const fce_bin_args *a,
                                void *grad)
{ FCE_CALL(bce_item, dt, x, item, a, grad); }
#endif
#if FCE_WANT(DIV)
/* scratch: NULL or the calling thread's own buffer of C elements of the dtype */
static inline void fce_kl_logits_item(int dt, const void *s, const void *t, fce_idx A, fce_idx C,
                                      fce_idx B, fce_idx item, const fce_kl_args *a, void *grad,
                                      void *scratch)
{ FCE_CALL(kl_logits_item, dt, s, t, A, C, B, item, a, grad, scratch); }
static inline void fce_entropy_item(int dt, FCE_XARGS, const fce_ent_args *a, void *grad)
{ FCE_CALL(entropy_item, dt, x, A, C, B, item, a, grad); }
static inline void fce_topk_rank_item(int dt, FCE_XARGS, const int64_t *tgt, int64_t *rank)
{ FCE_CALL(topk_rank_item, dt, x, A, C, B, item, tgt, rank); }
static inline void fce_focal_item(int dt, const void *x, fce_idx item, const fce_div_ew_args *a,
                                  void *grad)
{ FCE_CALL(focal_item, dt, x, item, a, grad); }
static inline void fce_kldiv_item(int dt, const void *x, fce_idx item, const fce_div_ew_args *a,
                                  void *grad)
{ FCE_CALL(kldiv_item, dt, x, item, a, grad); }
#endif

#endif
