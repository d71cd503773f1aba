/*
 * fastce kernels beyond cross-entropy: distillation KL from logits, softmax entropy, sigmoid
 * focal loss and torch's elementwise kl_div, for float and double.
 *
 * This file is its own template: included without DIV_T (from _div.pyx) it defines the
 * dtype-independent helpers and then includes itself once with DIV_T = float and once with
 * double, as _kernels.h does with _kern_body.h.  It depends only on _simd.h (fce_exp_*,
 * fce_log_*, fce_log1p_*): the small pieces of the class-axis engine it needs (work items, lane
 * combine, row max, transposes) are private `div_` copies, so that engine can be reorganised
 * without touching this file.
 *
 * Layout and determinism follow _kernels.h: a class-axis op sees a C-contiguous (A, C, B) array;
 * an item is one row (B == 1, C > DIV_SMALL_C, vectorised along the classes), a tile of up to
 * DIV_TILE columns of one a-slab (B > 1, vectorised across the columns), or a block of up to
 * DIV_TILE short rows (B == 1, C <= DIV_SMALL_C) transposed into stack buffers and run through
 * the column code.  Every sum is accumulated in double in an order fixed by the data layout
 * (fixed lanes combined pairwise, columns in class order), never by the thread schedule.
 */
#ifndef DIV_T
#ifndef FASTCE_DIV_BODY_H
#define FASTCE_DIV_BODY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <stdlib.h>
#include "_simd.h"

typedef ptrdiff_t div_idx;

/* Same runtime ISA dispatch as _kernels.h (FCE_KERNEL), under a private name. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(FCE_NO_CLONES)
#define DIV_KERNEL __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define DIV_KERNEL
#endif

#define DIV_TILE 128       /* columns per item (B > 1) and rows per block (small C) */
#define DIV_SMALL_C 16     /* rows of at most this many classes go through the block path */
#define DIV_LANES 16       /* fixed accumulator lanes: sums independent of the vector width */

enum { DIV_ROW = 0, DIV_COLS = 1, DIV_BLOCK = 2 };

static inline div_idx div_n_items(div_idx A, div_idx C, div_idx B)
{
    if (B == 1)
        return C > DIV_SMALL_C ? A : (A + DIV_TILE - 1) / DIV_TILE;
    return A * ((B + DIV_TILE - 1) / DIV_TILE);
}

typedef struct { int kind; div_idx off; div_idx soff; div_idx bw; } div_item;

/* off: element offset of the item's first entry; soff: its first sample (s = a*B + b). */
FCE_INLINE div_item div_decode(div_idx A, div_idx C, div_idx B, div_idx item)
{
    div_item it;
    if (B == 1 && C > DIV_SMALL_C) {
        it.kind = DIV_ROW; it.off = item * C; it.soff = item; it.bw = 1;
    } else if (B == 1) {
        div_idx r0 = item * DIV_TILE;
        it.kind = DIV_BLOCK; it.off = r0 * C; it.soff = r0;
        it.bw = A - r0 < DIV_TILE ? A - r0 : DIV_TILE;
    } else {
        div_idx ntile = (B + DIV_TILE - 1) / DIV_TILE;
        div_idx a = item / ntile, b0 = (item % ntile) * DIV_TILE;
        it.kind = DIV_COLS; it.off = a * C * B + b0; it.soff = a * B + b0;
        it.bw = B - b0 < DIV_TILE ? B - b0 : DIV_TILE;
    }
    return it;
}

/* Pairwise combine of the DIV_LANES accumulators, in a fixed order. */
FCE_INLINE double div_combine(const double *acc)
{
    double t[DIV_LANES];
    int k, w;
    for (k = 0; k < DIV_LANES; k++) t[k] = acc[k];
    for (w = DIV_LANES / 2; w >= 1; w /= 2)
        for (k = 0; k < w; k++) t[k] = t[k] + t[k + w];
    return t[0];
}

/*
 * e2(d) = expm1(d) - d = d^2 P(d), P(d) = sum_{k>=2} d^(k-2) / k!, for |d| < 1/2 (the callers
 * select another formula outside).  Truncated Taylor series: the first omitted term is below
 * 2^-30 (float, through 1/10!) and 2^-58 (double, through 1/17!) of P at |d| = 1/2.
 */
FCE_INLINE float div_e2p_f(float d)
{
    float p = 1.0f / 3628800.0f;
    p = p * d + 1.0f / 362880.0f;
    p = p * d + 1.0f / 40320.0f;
    p = p * d + 1.0f / 5040.0f;
    p = p * d + 1.0f / 720.0f;
    p = p * d + 1.0f / 120.0f;
    p = p * d + 1.0f / 24.0f;
    p = p * d + 1.0f / 6.0f;
    p = p * d + 0.5f;
    return p;
}

FCE_INLINE double div_e2p_d(double d)
{
    double p = 1.0 / 355687428096000.0;      /* 1/17! */
    p = p * d + 1.0 / 20922789888000.0;
    p = p * d + 1.0 / 1307674368000.0;
    p = p * d + 1.0 / 87178291200.0;
    p = p * d + 1.0 / 6227020800.0;
    p = p * d + 1.0 / 479001600.0;
    p = p * d + 1.0 / 39916800.0;
    p = p * d + 1.0 / 3628800.0;
    p = p * d + 1.0 / 362880.0;
    p = p * d + 1.0 / 40320.0;
    p = p * d + 1.0 / 5040.0;
    p = p * d + 1.0 / 720.0;
    p = p * d + 1.0 / 120.0;
    p = p * d + 1.0 / 24.0;
    p = p * d + 1.0 / 6.0;
    p = p * d + 0.5;
    return p;
}

/*
 * e^x for x <= 0 (or NaN), for the row-max-shifted exponents of kl_div_logits: the _simd.h
 * algorithm (same reduction and polynomial) without its overflow clamp and without the
 * two-factor scaling that rounds subnormal results correctly: results below the smallest
 * normal number (x < ln DBL/FLT_MIN) are 0.  They only ever enter sums that are >= 1 (the max
 * class contributes e^0) or gradients of classes of probability < 2^-126 (2^-1022), so the
 * flush changes no result by more than that.  -inf gives 0 and NaN stays NaN, as in fce_exp.
 */
FCE_INLINE float div_exp_nonpos_f(float x)
{
    const float SHIFT = 12582912.0f, LOG2E = 1.44269504088896341f;
    const float LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
    const float LO = -87.33654f;                   /* ln FLT_MIN: n >= -126 below */
    float xc = x < LO ? LO : x;
    float t = xc * LOG2E + SHIFT;
    float n = t - SHIFT;
    float r = xc - n * LN2_HI;
    r = r - n * LN2_LO;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * (r * r) + r + 1.0f;
    uint32_t b = (fce_bits_f(t) - fce_bits_f(SHIFT) + 127u) << 23;
    float res = p * fce_from_bits_f(b);
    return x < LO ? 0.0f : res;
}

FCE_INLINE double div_exp_nonpos_d(double x)
{
    const double SHIFT = 6755399441055744.0, LOG2E = 1.4426950408889634074;
    const double LN2_HI = 6.93145751953125E-1, LN2_LO = 1.42860682030941723212E-6;
    const double LO = -708.3964185322641;          /* ln DBL_MIN */
    double xc = x < LO ? LO : x;
    double t = xc * LOG2E + SHIFT;
    double n = t - SHIFT;
    double r = xc - n * LN2_HI;
    r = r - n * LN2_LO;
    double p = 2.5110037605963777e-08;             /* _simd.h's interpolant of e^r */
    p = p * r + 2.763263963904103e-07;
    p = p * r + 2.755724091857897e-06;
    p = p * r + 2.4801485482328494e-05;
    p = p * r + 0.00019841269890047113;
    p = p * r + 0.0013888888952314775;
    p = p * r + 0.008333333333319601;
    p = p * r + 0.0416666666664881;
    p = p * r + 0.1666666666666668;
    p = p * r + 0.5000000000000019;
    p = p * (r * r) + r + 1.0;
    uint64_t b = (fce_bits_d(t) - fce_bits_d(SHIFT) + 1023u) << 52;
    double res = p * fce_from_bits_d(b);
    return x < LO ? 0.0 : res;
}

/*
 * kappa(z) = z/(1+z) - log1p(z) <= 0, the second term of the KL formula below.  Near 0 the two
 * parts cancel (kappa ~ -z^2/2), so |z| < 1/8 uses its series
 *   kappa(z) = sum_{n>=2} (-1)^(n+1) (n-1)/n z^n      (truncated after n = 20: < 2^-54 relative)
 * and the direct form elsewhere (cancellation there costs at most 4 bits).
 */
FCE_INLINE double div_kappa(double z)
{
    double p = -19.0 / 20.0;                 /* c_n = (-1)^(n+1) (n-1)/n, n = 20 .. 2 */
    p = p * z + 18.0 / 19.0;
    p = p * z - 17.0 / 18.0;
    p = p * z + 16.0 / 17.0;
    p = p * z - 15.0 / 16.0;
    p = p * z + 14.0 / 15.0;
    p = p * z - 13.0 / 14.0;
    p = p * z + 12.0 / 13.0;
    p = p * z - 11.0 / 12.0;
    p = p * z + 10.0 / 11.0;
    p = p * z - 9.0 / 10.0;
    p = p * z + 8.0 / 9.0;
    p = p * z - 7.0 / 8.0;
    p = p * z + 6.0 / 7.0;
    p = p * z - 5.0 / 6.0;
    p = p * z + 4.0 / 5.0;
    p = p * z - 3.0 / 4.0;
    p = p * z + 2.0 / 3.0;
    p = p * z - 1.0 / 2.0;
    double series = p * z * z;
    double direct = z / (1.0 + z) - fce_log1p_d(z);
    return (z < 0.125 && z > -0.125) ? series : direct;
}

#define DIV_T float
#define DIV_SUF(name) name##_f
#define DIV_EXP fce_exp_f
#define DIV_LOG fce_log_f
#define DIV_E2P div_e2p_f
#define DIV_EXPN div_exp_nonpos_f
#include "_div_body.h"
#undef DIV_T
#undef DIV_SUF
#undef DIV_EXP
#undef DIV_LOG
#undef DIV_E2P
#undef DIV_EXPN

#define DIV_T double
#define DIV_SUF(name) name##_d
#define DIV_EXP fce_exp_d
#define DIV_LOG fce_log_d
#define DIV_E2P div_e2p_d
#define DIV_EXPN div_exp_nonpos_d
#include "_div_body.h"
#undef DIV_T
#undef DIV_SUF
#undef DIV_EXP
#undef DIV_LOG
#undef DIV_E2P
#undef DIV_EXPN

#endif /* FASTCE_DIV_BODY_H */
#else  /* ============================================== template part: one copy per dtype */

#define T DIV_T
#define S(name) DIV_SUF(name)
#define L DIV_LANES

/* ------------------------------------------------------------------ shared item helpers */

FCE_INLINE void S(div_row_max2)(const T *x, const T *y, div_idx n, T *mx, T *my)
{
    T ax[L], ay[L];
    T m1 = -INFINITY, m2 = -INFINITY;
    div_idx j = 0;
    int k;
    for (k = 0; k < L; k++) { ax[k] = -INFINITY; ay[k] = -INFINITY; }
    for (; j + L <= n; j += L)
        _Pragma("omp simd")
        for (k = 0; k < L; k++) {
            ax[k] = x[j + k] > ax[k] ? x[j + k] : ax[k];
            ay[k] = y[j + k] > ay[k] ? y[j + k] : ay[k];
        }
    for (; j < n; j++) {
        m1 = x[j] > m1 ? x[j] : m1;
        m2 = y[j] > m2 ? y[j] : m2;
    }
    for (k = 0; k < L; k++) {
        m1 = ax[k] > m1 ? ax[k] : m1;
        m2 = ay[k] > m2 ? ay[k] : m2;
    }
    *mx = m1;
    *my = m2;
}

FCE_INLINE T S(div_row_max)(const T *x, div_idx n)
{
    T a[L], m = -INFINITY;
    div_idx j = 0;
    int k;
    for (k = 0; k < L; k++) a[k] = -INFINITY;
    for (; j + L <= n; j += L)
        _Pragma("omp simd")
        for (k = 0; k < L; k++) a[k] = x[j + k] > a[k] ? x[j + k] : a[k];
    for (; j < n; j++) m = x[j] > m ? x[j] : m;
    for (k = 0; k < L; k++) m = a[k] > m ? a[k] : m;
    return m;
}

/* (bw rows of C, contiguous) <-> (C columns of bw, contiguous).  The switch hands GCC a
 * constant C for the common small class counts, which turns the loops into vector shuffles. */
FCE_INLINE void S(div_transpose_k)(const T *src, div_idx C, div_idx bw, T *dst, const int to_cols)
{
    div_idx b, c;
    if (to_cols) {
        for (c = 0; c < C; c++)
            for (b = 0; b < bw; b++) dst[c * bw + b] = src[b * C + c];
    } else {
        for (b = 0; b < bw; b++)
            for (c = 0; c < C; c++) dst[b * C + c] = src[c * bw + b];
    }
}

FCE_INLINE void S(div_transpose)(const T *src, div_idx C, div_idx bw, T *dst, const int to_cols)
{
    switch (C) {
    case 2: S(div_transpose_k)(src, 2, bw, dst, to_cols); break;
    case 3: S(div_transpose_k)(src, 3, bw, dst, to_cols); break;
    case 4: S(div_transpose_k)(src, 4, bw, dst, to_cols); break;
    case 5: S(div_transpose_k)(src, 5, bw, dst, to_cols); break;
    case 8: S(div_transpose_k)(src, 8, bw, dst, to_cols); break;
    case 10: S(div_transpose_k)(src, 10, bw, dst, to_cols); break;
    case 16: S(div_transpose_k)(src, 16, bw, dst, to_cols); break;
    default: S(div_transpose_k)(src, C, bw, dst, to_cols); break;
    }
}

FCE_INLINE void S(div_to_cols)(const T *src, div_idx C, div_idx bw, T *dst)
{
    S(div_transpose)(src, C, bw, dst, 1);
}

FCE_INLINE void S(div_to_rows)(const T *src, div_idx C, div_idx bw, T *dst)
{
    S(div_transpose)(src, C, bw, dst, 0);
}

/* ============================================================ KL divergence from logits */

/*
 * Distillation loss of one sample, temperature tau (the caller passes k = 1/tau):
 *   a_c = s_c / tau (student), b_c = t_c / tau (teacher), q = softmax(a), p = softmax(b)
 *   loss = tau^2 KL(p || q),      d loss / d s_c = tau (q_c - p_c).
 * Derivation, in the steps the kernel takes (never forming p or q):
 *  1. Shift by the row maxes: a'_c = a_c - max a, b'_c = b_c - max b (both <= 0), and let
 *     d_c = b'_c - a'_c (formed from raw differences, see kl_terms).  Then
 *     log p_c - log q_c = d_c - log Z with
 *       Z = Sb / Sa = sum_c q_c e^(d_c),   Sa = sum_c e^(a'_c),  Sb = sum_c e^(b'_c).
 *  2. KL = sum_c p_c (d_c - log Z) = (1/Z) sum_c q_c d_c e^(d_c) - log Z.  Write
 *       g0 = sum_c q_c (e^(d_c) - 1)               (so Z = 1 + g0)
 *       g1 = sum_c q_c h(d_c),  h(d) = d e^d - (e^d - 1) >= 0
 *     so that sum_c q_c d_c e^(d_c) = g1 + g0 and
 *       KL = g1 / (1 + g0) + kappa(g0),   kappa(z) = z/(1+z) - log1p(z)  (div_kappa).
 *     No difference of nearly equal totals is ever formed: every term of g1 is >= 0, and
 *     kappa(g0) is evaluated from its series near 0.  For nearly equal rows (d small)
 *     KL ~ Var_q(d)/2 comes out to a few ulps, where sum p log p - sum p log q (torch) loses
 *     everything to cancellation.  Identical rows give d == 0, hence g0 = g1 = 0, loss 0.
 *  3. Per class, with ea = e^(a'), eb = e^(b'), e2 = expm1(d) - d = d^2 P(d) for |d| < 1/2:
 *       q-weighted terms    ea (e^d - 1) = ea (d + e2)              ea h(d) = ea (d^2 + (d-1) e2)
 *       for |d| >= 1/2:     eb - ea                                 eb (d-1) + ea
 *     (the second form needs no expm1 and is exact where the first would overflow:
 *     e^d huge while ea underflowed).  -inf at the same class of both rows makes d NaN but
 *     ea = eb = 0: the second form gives 0 for both terms (eb == 0 skips eb (d-1)).  A class
 *     masked in the student only gives eb * inf = inf: KL = +inf, as it mathematically is.
 *  4. Gradient: q_c - p_c = q_c (1 - e^(d_c)/Z) = (ea/Sa)(g0 - (e^d - 1))/(1 + g0), again
 *     without cancellation for nearly equal rows (0 exactly when d == 0); for |d| >= 1/2
 *     (ea (1 + g0) - eb) / (Sa (1 + g0)).  Sa (1 + g0) = Sb >= 1.
 *     Both forms are ea g0 - t0 with t0 the first q-weighted term of step 3.
 * Passes over a row: max of both rows; the exps and the three sums (t0 parked in the gradient
 * buffer, ea in a row buffer); the gradient, from those two.
 */
typedef struct {
    double k;            /* 1 / temperature, applied to both rows */
    double tau;          /* temperature */
    double *loss;        /* per-sample loss, tau^2 KL */
    const double *gscale; double gcoef;
} S(kl_args);

/* Step 3: the exps and the two q-weighted terms of one class, from the raw logits sv, tv, the
 * raw row maxes ms, mt, dm = mt - ms and k = 1/tau.  The shifts come before the scaling, and d
 * is formed from differences of the raw logits, ((tv - sv) - dm) k: for nearly equal rows
 * tv - sv and dm are exact (Sterbenz), so d keeps its relative precision (the difference of
 * the separately rounded tv k and sv k would not). */
FCE_INLINE void S(kl_terms)(T sv, T tv, T ms, T mt, T dm, T k, T *ea_out, T *t0, T *t1)
{
    T ap = (sv - ms) * k, bp = (tv - mt) * k;
    T d = ((tv - sv) - dm) * k;
    T ea = DIV_EXPN(ap), eb = DIV_EXPN(bp);
    T e2 = d * d * DIV_E2P(d);
    T small0 = ea * (d + e2);
    T small1 = ea * (d * d + (d - 1) * e2);
    int small = d < (T)0.5 && d > (T)-0.5;           /* NaN: false */
    *t0 = small ? small0 : eb - ea;
    *t1 = small ? small1 : (eb == 0 ? (T)0 : eb * (d - 1)) + ea;
    *ea_out = ea;
}

/* Step 4: the unscaled gradient of one class (multiply by tau g / Sb), from ea and the stored
 * t0: ea g0 - t0 is ea (g0 - (e^d - 1)) for |d| < 1/2 and ea (1 + g0) - eb otherwise. */
FCE_INLINE T S(kl_grad_term)(T sv, T ms, T k, T t0, T g0)
{
    T ea = DIV_EXPN((sv - ms) * k);
    return ea * g0 - t0;
}

/* Step 2 from the three sums; rounding could only push a mathematically >= 0 result to a tiny
 * negative, which is clamped (NaN passes the comparison and propagates). */
FCE_INLINE double S(kl_finish)(double Sa, double G0, double G1, double tau)
{
    double g0 = G0 / Sa, g1 = G1 / Sa;
    double kl = g1 / (1.0 + g0) + div_kappa(g0);
    kl = kl < 0.0 ? 0.0 : kl;
    return tau * tau * kl;
}

/* Row sums: per lane, groups of DIV_GROUP consecutive blocks are summed in T and the group
 * totals in double (a fixed structure: the same for any thread count and vector width); this
 * keeps the double conversions out of the innermost loop. */
#ifndef DIV_GROUP
#define DIV_GROUP 4         /* blocks of DIV_LANES per partial sum (rows) */
#define DIV_CGROUP 16       /* classes per partial sum (columns) */
#endif
/* One row.  With a gradient, t0 is parked in g and ea in `scratch` (a private row buffer; when
 * it could not be allocated ea is recomputed in the gradient pass instead), so the gradient
 * pass is pure arithmetic. */
FCE_INLINE void S(kl_row_k)(const T *s, const T *t, div_idx C, div_idx sidx,
                            const S(kl_args) *a, T *g, T *scratch, const int has_grad,
                            const int has_scratch)
{
    T ms, mt;
    T k = (T)a->k;
    double as[L] = {0}, a0[L] = {0}, a1[L] = {0};
    double ts = 0.0, t0s = 0.0, t1s = 0.0;
    div_idx j = 0, jg;
    int l;
    S(div_row_max2)(s, t, C, &ms, &mt);
    T dm = mt - ms;
    while (j + L <= C) {
        T fs[L] = {0}, f0[L] = {0}, f1[L] = {0};
        div_idx stop = j + DIV_GROUP * L <= C ? j + DIV_GROUP * L : C;
        for (jg = j; jg + L <= stop; jg += L)
            _Pragma("omp simd")
            for (l = 0; l < L; l++) {
                T ea, v0, v1;
                S(kl_terms)(s[jg + l], t[jg + l], ms, mt, dm, k, &ea, &v0, &v1);
                if (has_grad) g[jg + l] = v0;
                if (has_scratch) scratch[jg + l] = ea;
                fs[l] += ea; f0[l] += v0; f1[l] += v1;
            }
        j = jg;
        _Pragma("omp simd")
        for (l = 0; l < L; l++) {
            as[l] += (double)fs[l]; a0[l] += (double)f0[l]; a1[l] += (double)f1[l];
        }
    }
    for (; j < C; j++) {
        T ea, v0, v1;
        S(kl_terms)(s[j], t[j], ms, mt, dm, k, &ea, &v0, &v1);
        if (has_grad) g[j] = v0;
        if (has_scratch) scratch[j] = ea;
        ts += (double)ea; t0s += (double)v0; t1s += (double)v1;
    }
    double Sa = div_combine(as) + ts, G0 = div_combine(a0) + t0s, G1 = div_combine(a1) + t1s;
    a->loss[sidx] = S(kl_finish)(Sa, G0, G1, a->tau);
    if (!has_grad) return;
    double g0 = G0 / Sa;
    double gs = a->gcoef * (a->gscale ? a->gscale[sidx] : 1.0);
    T cg = (T)(gs * a->tau / (Sa * (1.0 + g0)));
    T g0t = (T)g0;
    if (has_scratch) {
        _Pragma("omp simd")
        for (j = 0; j < C; j++) g[j] = cg * (scratch[j] * g0t - g[j]);
    } else {
        _Pragma("omp simd")
        for (j = 0; j < C; j++) g[j] = cg * S(kl_grad_term)(s[j], ms, k, g[j], g0t);
    }
}

/* bw samples as columns: element (c, b) at s[c*st + b]; g (stride st) must not alias s or t. */
FCE_INLINE void S(kl_cols)(const T *s, const T *t, div_idx C, div_idx st, div_idx bw,
                           div_idx soff, const S(kl_args) *a, T *g)
{
    T ma[DIV_TILE], mb[DIV_TILE], dm[DIV_TILE], g0t[DIV_TILE], cg[DIV_TILE];
    double Sa[DIV_TILE], G0[DIV_TILE], G1[DIV_TILE];
    T k = (T)a->k;
    div_idx c, c0, b;
    for (b = 0; b < bw; b++) { ma[b] = -INFINITY; mb[b] = -INFINITY; }
    for (c = 0; c < C; c++) {
        const T *sc = s + c * st, *tc = t + c * st;
        for (b = 0; b < bw; b++) {
            ma[b] = sc[b] > ma[b] ? sc[b] : ma[b];
            mb[b] = tc[b] > mb[b] ? tc[b] : mb[b];
        }
    }
    for (b = 0; b < bw; b++) { dm[b] = mb[b] - ma[b]; Sa[b] = 0.0; G0[b] = 0.0; G1[b] = 0.0; }
    /* classes in groups of DIV_CGROUP: partial sums in T, group totals in double (a fixed
     * structure, as in the row kernel) */
    for (c0 = 0; c0 < C; c0 += DIV_CGROUP) {
        T fs[DIV_TILE], f0[DIV_TILE], f1[DIV_TILE];
        div_idx c1 = c0 + DIV_CGROUP < C ? c0 + DIV_CGROUP : C;
        for (b = 0; b < bw; b++) { fs[b] = 0; f0[b] = 0; f1[b] = 0; }
        for (c = c0; c < c1; c++) {
            const T *sc = s + c * st, *tc = t + c * st;
            T *gc = g ? g + c * st : NULL;
            if (gc) {
                _Pragma("omp simd")
                for (b = 0; b < bw; b++) {
                    T ea, v0, v1;
                    S(kl_terms)(sc[b], tc[b], ma[b], mb[b], dm[b], k, &ea, &v0, &v1);
                    gc[b] = v0;
                    fs[b] += ea; f0[b] += v0; f1[b] += v1;
                }
            } else {
                _Pragma("omp simd")
                for (b = 0; b < bw; b++) {
                    T ea, v0, v1;
                    S(kl_terms)(sc[b], tc[b], ma[b], mb[b], dm[b], k, &ea, &v0, &v1);
                    fs[b] += ea; f0[b] += v0; f1[b] += v1;
                }
            }
        }
        _Pragma("omp simd")
        for (b = 0; b < bw; b++) {
            Sa[b] += (double)fs[b]; G0[b] += (double)f0[b]; G1[b] += (double)f1[b];
        }
    }
    double tau = a->tau, gcoef = a->gcoef, *loss = a->loss + soff;
    const double *gsc = a->gscale ? a->gscale + soff : NULL;
    for (b = 0; b < bw; b++) {
        loss[b] = S(kl_finish)(Sa[b], G0[b], G1[b], tau);
        double g0 = G0[b] / Sa[b];
        g0t[b] = (T)g0;
        cg[b] = (T)(gcoef * (gsc ? gsc[b] : 1.0) * tau / (Sa[b] * (1.0 + g0)));
    }
    if (!g) return;
    for (c = 0; c < C; c++) {
        const T *sc = s + c * st;
        T *gc = g + c * st;
        _Pragma("omp simd")
        for (b = 0; b < bw; b++)
            gc[b] = cg[b] * S(kl_grad_term)(sc[b], ma[b], k, gc[b], g0t[b]);
    }
}

DIV_KERNEL static void S(kl_logits_item)(const T *s, const T *t, div_idx A, div_idx C,
                                         div_idx B, div_idx item, const S(kl_args) *a, T *grad)
{
    div_item it = div_decode(A, C, B, item);
    if (it.kind == DIV_ROW) {
        T *scratch = grad ? (T *)malloc((size_t)C * sizeof(T)) : NULL;
        if (scratch) S(kl_row_k)(s + it.off, t + it.off, C, it.soff, a, grad + it.off, scratch, 1, 1);
        else if (grad) S(kl_row_k)(s + it.off, t + it.off, C, it.soff, a, grad + it.off, NULL, 1, 0);
        else S(kl_row_k)(s + it.off, t + it.off, C, it.soff, a, NULL, NULL, 0, 0);
        free(scratch);
    } else if (it.kind == DIV_COLS) {
        S(kl_cols)(s + it.off, t + it.off, C, B, it.bw, it.soff, a, grad ? grad + it.off : NULL);
    } else {
        T sb[DIV_SMALL_C * DIV_TILE], tb[DIV_SMALL_C * DIV_TILE], gb[DIV_SMALL_C * DIV_TILE];
        S(div_to_cols)(s + it.off, C, it.bw, sb);
        S(div_to_cols)(t + it.off, C, it.bw, tb);
        S(kl_cols)(sb, tb, C, it.bw, it.bw, it.soff, a, grad ? gb : NULL);
        if (grad) S(div_to_rows)(gb, C, it.bw, grad + it.off);
    }
}

/* ===================================================================== softmax entropy */

/*
 * H = -sum_c p_c log p_c of p = softmax(x).  With m = max x, e_c = e^(x_c - m), S = sum e_c:
 *   -log p_c = (m - x_c) + log S, so  H = log S + W / S,  W = sum_c e_c (m - x_c).
 * Both terms are >= 0 and W's terms are >= 0: no cancellation anywhere, so a confident row
 * keeps its tiny entropy to full relative precision.  log S = log1p(rest) with
 * rest = S - 1 summed without the 1 of the max class (its e is exactly 1; e == 1 terms are
 * counted apart, as the engine's column sums do).  A -inf logit has e = 0 and contributes 0
 * (not 0 * inf).
 *   dH/dx_j = -p_j (log p_j + H) = p_j ((m - x_j) - W / S)
 * (at the max class: -p_j W / S, again without cancellation).
 */
typedef struct { double *loss; const double *gscale; double gcoef; } S(ent_args);

FCE_INLINE void S(ent_terms)(T xv, T m, T *e_out, T *one, T *rest, T *w)
{
    T e = DIV_EXP(xv - m);
    int is1 = e == (T)1;
    *one = is1 ? (T)1 : (T)0;
    *rest = is1 ? (T)0 : e;
    *w = e == 0 ? (T)0 : e * (m - xv);
    *e_out = e;
}

FCE_INLINE double S(ent_finish)(double ones, double rest, double W, double *S_out)
{
    double r = (ones - 1.0) + rest;            /* S - 1 */
    double Sv = 1.0 + r;
    *S_out = Sv;
    return fce_log1p_d(r) + W / Sv;
}

FCE_INLINE T S(ent_grad_term)(T xv, T m, T e, T ws, T inv_s)
{
    T v = e * inv_s * ((m - xv) - ws);
    return e == 0 ? (T)0 : v;
}

/* Sums grouped as in kl_row_k (T partials of DIV_GROUP blocks per lane, totals in double). */
FCE_INLINE void S(ent_row_k)(const T *x, div_idx C, div_idx sidx, const S(ent_args) *a, T *g,
                             const int has_grad)
{
    double ao[L] = {0}, ar[L] = {0}, aw[L] = {0};
    double to = 0.0, tr = 0.0, tw = 0.0;
    div_idx j = 0, jg;
    int l;
    T m = S(div_row_max)(x, C);
    while (j + L <= C) {
        T fo[L] = {0}, fr[L] = {0}, fw[L] = {0};
        div_idx stop = j + DIV_GROUP * L <= C ? j + DIV_GROUP * L : C;
        for (jg = j; jg + L <= stop; jg += L)
            _Pragma("omp simd")
            for (l = 0; l < L; l++) {
                T e, w, o, r;
                S(ent_terms)(x[jg + l], m, &e, &o, &r, &w);
                if (has_grad) g[jg + l] = e;
                fo[l] += o; fr[l] += r; fw[l] += w;
            }
        j = jg;
        _Pragma("omp simd")
        for (l = 0; l < L; l++) {
            ao[l] += (double)fo[l]; ar[l] += (double)fr[l]; aw[l] += (double)fw[l];
        }
    }
    for (; j < C; j++) {
        T e, w, o, r;
        S(ent_terms)(x[j], m, &e, &o, &r, &w);
        if (has_grad) g[j] = e;
        to += (double)o; tr += (double)r; tw += (double)w;
    }
    double Sv, W = div_combine(aw) + tw;
    a->loss[sidx] = S(ent_finish)(div_combine(ao) + to, div_combine(ar) + tr, W, &Sv);
    if (!has_grad) return;
    double gs = a->gcoef * (a->gscale ? a->gscale[sidx] : 1.0);
    T ws = (T)(W / Sv), inv_s = (T)(gs / Sv);
    _Pragma("omp simd")
    for (j = 0; j < C; j++) g[j] = S(ent_grad_term)(x[j], m, g[j], ws, inv_s);
}

FCE_INLINE void S(ent_cols)(const T *x, div_idx C, div_idx st, div_idx bw, div_idx soff,
                            const S(ent_args) *a, T *g)
{
    T m[DIV_TILE], ws[DIV_TILE], inv_s[DIV_TILE];
    double ones[DIV_TILE], rest[DIV_TILE], W[DIV_TILE];
    div_idx c, c0, b;
    for (b = 0; b < bw; b++) { m[b] = -INFINITY; ones[b] = 0.0; rest[b] = 0.0; W[b] = 0.0; }
    for (c = 0; c < C; c++) {
        const T *xc = x + c * st;
        for (b = 0; b < bw; b++) m[b] = xc[b] > m[b] ? xc[b] : m[b];
    }
    for (c0 = 0; c0 < C; c0 += DIV_CGROUP) {
        T fo[DIV_TILE], fr[DIV_TILE], fw[DIV_TILE];
        div_idx c1 = c0 + DIV_CGROUP < C ? c0 + DIV_CGROUP : C;
        for (b = 0; b < bw; b++) { fo[b] = 0; fr[b] = 0; fw[b] = 0; }
        for (c = c0; c < c1; c++) {
            const T *xc = x + c * st;
            T *gc = g ? g + c * st : NULL;
            if (gc) {
                _Pragma("omp simd")
                for (b = 0; b < bw; b++) {
                    T e, w, o, r;
                    S(ent_terms)(xc[b], m[b], &e, &o, &r, &w);
                    gc[b] = e;
                    fo[b] += o; fr[b] += r; fw[b] += w;
                }
            } else {
                _Pragma("omp simd")
                for (b = 0; b < bw; b++) {
                    T e, w, o, r;
                    S(ent_terms)(xc[b], m[b], &e, &o, &r, &w);
                    fo[b] += o; fr[b] += r; fw[b] += w;
                }
            }
        }
        _Pragma("omp simd")
        for (b = 0; b < bw; b++) {
            ones[b] += (double)fo[b]; rest[b] += (double)fr[b]; W[b] += (double)fw[b];
        }
    }
    double *loss = a->loss + soff, gcoef = a->gcoef;
    const double *gsc = a->gscale ? a->gscale + soff : NULL;
    for (b = 0; b < bw; b++) {
        double Sv;
        loss[b] = S(ent_finish)(ones[b], rest[b], W[b], &Sv);
        ws[b] = (T)(W[b] / Sv);
        inv_s[b] = (T)(gcoef * (gsc ? gsc[b] : 1.0) / Sv);
    }
    if (!g) return;
    for (c = 0; c < C; c++) {
        const T *xc = x + c * st;
        T *gc = g + c * st;
        _Pragma("omp simd")
        for (b = 0; b < bw; b++) gc[b] = S(ent_grad_term)(xc[b], m[b], gc[b], ws[b], inv_s[b]);
    }
}

DIV_KERNEL static void S(entropy_item)(const T *x, div_idx A, div_idx C, div_idx B, div_idx item,
                                       const S(ent_args) *a, T *grad)
{
    div_item it = div_decode(A, C, B, item);
    if (it.kind == DIV_ROW) {
        if (grad) S(ent_row_k)(x + it.off, C, it.soff, a, grad + it.off, 1);
        else S(ent_row_k)(x + it.off, C, it.soff, a, NULL, 0);
    } else if (it.kind == DIV_COLS) {
        S(ent_cols)(x + it.off, C, B, it.bw, it.soff, a, grad ? grad + it.off : NULL);
    } else {
        T xb[DIV_SMALL_C * DIV_TILE], gb[DIV_SMALL_C * DIV_TILE];
        S(div_to_cols)(x + it.off, C, it.bw, xb);
        S(ent_cols)(xb, C, it.bw, it.bw, it.soff, a, grad ? gb : NULL);
        if (grad) S(div_to_rows)(gb, C, it.bw, grad + it.off);
    }
}

/* ====================================================================== top-k rank */

/*
 * rank[s] = number of classes ordered before the target y of sample s: higher scores first,
 * equal scores by class index (lower first), NaN above every number and NaN ties by index.
 * Top-k accuracy is then rank < k (decided in Python).  Branch-free counts, vectorised along
 * the classes (rows) or across the columns (B > 1).  A target outside [0, C) (validated in
 * Python; re-checked here so a target changed under us cannot read out of bounds) gets rank
 * INT64_MAX, a miss for every k.
 */
FCE_INLINE int64_t S(rank_count)(T xv, T sy, int yn, div_idx c, int64_t y)
{
    int xn = xv != xv;
    int gt = (xv > sy) | (xn & !yn);
    int eq = (xv == sy) | (xn & yn);
    return (int64_t)(gt | (eq & ((int64_t)c < y)));
}

DIV_KERNEL static void S(topk_rank_item)(const T *x, const int64_t *tgt, div_idx A, div_idx C,
                                         div_idx B, div_idx item, int64_t *rank)
{
    div_item it = div_decode(A, C, B, item);
    div_idx b, c;
    if (it.kind != DIV_COLS) {                       /* rows: one (ROW) or up to 128 (BLOCK) */
        for (b = 0; b < it.bw; b++) {
            const T *xr = x + it.off + b * C;
            int64_t y = tgt[it.soff + b], cnt = 0;
            if ((uint64_t)y >= (uint64_t)C) { rank[it.soff + b] = INT64_MAX; continue; }
            T sy = xr[y];
            int yn = sy != sy;
            _Pragma("omp simd reduction(+:cnt)")
            for (c = 0; c < C; c++) cnt += S(rank_count)(xr[c], sy, yn, c, y);
            rank[it.soff + b] = cnt;
        }
        return;
    }
    {
        T sy[DIV_TILE];
        int64_t yy[DIV_TILE], cnt[DIV_TILE];
        int yn[DIV_TILE];
        const T *xt = x + it.off;
        for (b = 0; b < it.bw; b++) {
            int64_t y = tgt[it.soff + b];
            int bad = (uint64_t)y >= (uint64_t)C;
            yy[b] = bad ? 0 : y;
            sy[b] = xt[yy[b] * B + b];
            yn[b] = sy[b] != sy[b];
            cnt[b] = bad ? INT64_MAX / 2 : 0;
        }
        for (c = 0; c < C; c++) {
            const T *xc = xt + c * B;
            _Pragma("omp simd")
            for (b = 0; b < it.bw; b++) cnt[b] += S(rank_count)(xc[b], sy[b], yn[b], c, yy[b]);
        }
        for (b = 0; b < it.bw; b++) rank[it.soff + b] = cnt[b];
    }
}

/* ========================================================== elementwise losses (chunked) */

/*
 * Elements are processed in fixed chunks of `chunk` elements; chunk i's loss sum (double, fixed
 * lanes) goes to chunk_sum[i] and Python adds the chunks in order, so the total does not depend
 * on the thread count.  grad may alias x (each element is read before its gradient is written).
 */
typedef struct {
    const T *y; div_idx n; div_idx chunk;
    T *loss; double *chunk_sum; const T *gscale; double gcoef;
    double alpha; double gamma; int log_target;
} S(ew_args);

/*
 * Sigmoid focal loss (torchvision.ops.sigmoid_focal_loss), p = sigmoid(x):
 *   ce = BCE-with-logits(x, y),  z = 1 - p_t = p (1 - y) + (1 - p) y,
 *   loss = a_t ce z^gamma,  a_t = alpha y + (1 - alpha)(1 - y)  (1 when alpha < 0).
 * Stable for any x: with a = |x|, e = exp(-a),
 *   ce = c a + log1p(e),  c = (x >= 0 ? 1 - y : y)    (c a taken as 0 when c == 0, so x = inf
 *                                                      with a matching label gives 0, not NaN)
 *   sigmoid(x), sigmoid(-x) = 1/(1+e) and e/(1+e) in the right order, so z is a sum of two
 *   nonnegative terms and keeps relative precision for confident predictions.
 * Gradient:  d ce/dx = (1 - y) sigmoid(x) - y sigmoid(-x),  dz/dx = p (1 - p)(1 - 2y),
 *   d loss/dx = a_t [ dce z^gamma + gamma ce z^(gamma-1) p (1 - p)(1 - 2y) ],
 * the second term taken as 0 when ce p (1 - p) == 0 (saturated logits: its limit) and written
 * with z^gamma / z (z > 0 whenever p (1 - p) > 0).  GK selects gamma at compile time:
 * 0 (plain alpha-weighted BCE), 1, 2 (multiplications) or any other (exp(gamma log z) in double).
 */
FCE_INLINE T S(focal_one)(T xv, T yv, T at, T gamma, T gsv, T *g, const int GK)
{
    T av = xv < 0 ? -xv : xv;
    T e = DIV_EXP(-av);
    T w = 1 + e;
    T inv = 1 / w;
    T sp = DIV_LOG(w) + (e - (w - 1)) * inv;          /* log1p(e), as fce_log1p */
    T coef = xv >= 0 ? 1 - yv : yv;
    T ce = (coef == 0 ? (T)0 : coef * av) + sp;
    T sig_pos = xv >= 0 ? inv : e * inv;
    T sig_neg = xv >= 0 ? e * inv : inv;
    T z = sig_pos * (1 - yv) + sig_neg * yv;
    T zg;
    if (GK == 0) zg = 1;
    else if (GK == 1) zg = z;
    else if (GK == 2) zg = z * z;
    else zg = (T)fce_exp_d((double)gamma * fce_log_d((double)z));
    T dce = (1 - yv) * sig_pos - yv * sig_neg;
    T pq = sig_pos * sig_neg;
    T t2 = GK == 0 ? (T)0 : gamma * ce * (zg / z) * pq * (1 - 2 * yv);
    t2 = (pq == 0 || ce == 0) ? (T)0 : t2;
    *g = gsv * at * (dce * zg + t2);
    return at * ce * zg;
}

/*
 * torch.nn.functional.kl_div, pointwise (input x = log q, target y):
 *   log_target = 0:  y log y - y x   (y log y = 0 at y == 0: xlogy; NaN for y < 0), grad -y
 *   log_target = 1:  e^y (y - x),                                                   grad -e^y
 * exactly torch's formulas, IEEE products included (so y == 0 with x == -inf is NaN there too).
 */
FCE_INLINE T S(kldiv_one)(T xv, T yv, T unused_a, T unused_b, T gsv, T *g, const int LT)
{
    (void)unused_a; (void)unused_b;
    if (LT) {
        T ey = DIV_EXP(yv);
        *g = -gsv * ey;
        return ey * (yv - xv);
    }
    T xl = yv == 0 ? (T)0 : yv * DIV_LOG(yv);
    *g = -gsv * yv;
    return xl - yv * xv;
}

/* One chunk.  ONE(x, y, p1, p2, gscale, &grad, K) is the per-element function; the flags and
 * K are compile-time constants at every call site, so each variant is its own vector loop. */
#define DIV_EW_CHUNK(NAME, ONE, P1, P2)                                                        \
FCE_INLINE void S(NAME##_chunk)(const T *x, div_idx item, const S(ew_args) *a, T *grad,        \
                                const int K, const int has_loss, const int has_grad,           \
                                const int has_gs)                                              \
{                                                                                              \
    div_idx start = item * a->chunk, stop = start + a->chunk, j;                               \
    double acc[L] = {0}, tail = 0.0;                                                           \
    int l;                                                                                     \
    T gc = (T)a->gcoef;                                                                        \
    if (stop > a->n) stop = a->n;                                                              \
    for (j = start; j + L <= stop; j += L) {                                                   \
        _Pragma("omp simd")                                                                    \
        for (l = 0; l < L; l++) {                                                              \
            T g;                                                                               \
            T v = S(ONE)(x[j + l], a->y[j + l], P1(a, a->y[j + l]), P2(a),                     \
                         has_gs ? (T)(a->gcoef * (double)a->gscale[j + l]) : gc, &g, K);       \
            if (has_loss) a->loss[j + l] = v;                                                  \
            if (has_grad) grad[j + l] = g;                                                     \
            acc[l] += (double)v;                                                               \
        }                                                                                      \
    }                                                                                          \
    for (; j < stop; j++) {                                                                    \
        T g;                                                                                   \
        T v = S(ONE)(x[j], a->y[j], P1(a, a->y[j]), P2(a),                                     \
                     has_gs ? (T)(a->gcoef * (double)a->gscale[j]) : gc, &g, K);               \
        if (has_loss) a->loss[j] = v;                                                          \
        if (has_grad) grad[j] = g;                                                             \
        tail += (double)v;                                                                     \
    }                                                                                          \
    a->chunk_sum[item] = div_combine(acc) + tail;                                              \
}

/* focal: P1 = a_t (from alpha and the target), P2 = gamma */
#define DIV_FOCAL_AT(a, yv) ((a)->alpha < 0 ? (T)1 : (T)(a)->alpha * (yv) + (T)(1 - (a)->alpha) * (1 - (yv)))
#define DIV_FOCAL_GAMMA(a) ((T)(a)->gamma)
#define DIV_ZERO1(a, yv) ((T)0)
#define DIV_ZERO2(a) ((T)0)
DIV_EW_CHUNK(focal, focal_one, DIV_FOCAL_AT, DIV_FOCAL_GAMMA)
DIV_EW_CHUNK(kldiv, kldiv_one, DIV_ZERO1, DIV_ZERO2)
#undef DIV_EW_CHUNK

/* The valid flag combinations: (loss stored?, grad?, per-element grad scale?) */
#define DIV_EW_DISPATCH(CHUNK, K)                                                              \
    do {                                                                                       \
        int has_loss = a->loss != NULL, has_grad = grad != NULL;                               \
        int has_gs = has_grad && a->gscale != NULL;                                            \
        if (has_loss && has_grad && has_gs) CHUNK(x, item, a, grad, K, 1, 1, 1);               \
        else if (has_loss && has_grad) CHUNK(x, item, a, grad, K, 1, 1, 0);                    \
        else if (has_grad && has_gs) CHUNK(x, item, a, grad, K, 0, 1, 1);                      \
        else if (has_grad) CHUNK(x, item, a, grad, K, 0, 1, 0);                                \
        else if (has_loss) CHUNK(x, item, a, grad, K, 1, 0, 0);                                \
        else CHUNK(x, item, a, grad, K, 0, 0, 0);                                              \
    } while (0)

DIV_KERNEL static void S(focal_item)(const T *x, div_idx item, const S(ew_args) *a, T *grad)
{
    double gm = a->gamma;
    if (gm == 0.0) DIV_EW_DISPATCH(S(focal_chunk), 0);
    else if (gm == 1.0) DIV_EW_DISPATCH(S(focal_chunk), 1);
    else if (gm == 2.0) DIV_EW_DISPATCH(S(focal_chunk), 2);
    else DIV_EW_DISPATCH(S(focal_chunk), 3);
}

DIV_KERNEL static void S(kldiv_item)(const T *x, div_idx item, const S(ew_args) *a, T *grad)
{
    if (a->log_target) DIV_EW_DISPATCH(S(kldiv_chunk), 1);
    else DIV_EW_DISPATCH(S(kldiv_chunk), 0);
}
#undef DIV_EW_DISPATCH
#undef DIV_FOCAL_AT
#undef DIV_FOCAL_GAMMA
#undef DIV_ZERO1
#undef DIV_ZERO2

#undef T
#undef S
#undef L
#endif /* DIV_T */
