/*
 * Vectorisable elementary functions with IEEE special cases, for fastce's kernels.
 *
 * Why not libm: a loop calling expf() cannot be vectorised without GCC's fast-math mode, and
 * fast-math breaks what we promise (-inf logits are "masked", NaN propagates).  These
 * functions are branch-free straight-line code (clamps and special cases are selects written
 * as comparisons, so NaN falls through every one of them), which GCC turns into SIMD code at
 * -O3 on SSE2, AVX2 and AVX-512 alike.
 *
 * exp(x):  x = n*ln2 + r with |r| <= ln2/2.  n is rounded with the "add 1.5*2^(mantissa bits)"
 *   trick: after t = x*log2(e) + SHIFT the low mantissa bits of t hold n as an integer, so the
 *   integer is read from the bits of t without a float->int conversion instruction (which SSE2
 *   lacks for 64-bit lanes).  ln2 is split in a high part with trailing zero bits and a low
 *   part (Cody-Waite) so n*LN2_HI is exact.  e^r is a polynomial (Cephes' minimax for float;
 *   for double a degree-11 Chebyshev interpolant: truncation < 5e-18 on |r| <= 0.347).
 *   2^n is built from exponent bits in two factors 2^n1 * 2^n2 (n1 = floor(n/2)), each a
 *   normal number, so the single rounding happens in the final product and subnormal results
 *   are correctly rounded.
 *
 * log(x) for x > 0:  x = 2^k * f with f in [sqrt(1/2), sqrt(2)); log f = 2 atanh(z) with
 *   z = (f-1)/(f+1), |z| <= 0.1716, an odd series in z.
 * tanh(u), float: exp-free, two rational functions of s = u^2 (fitted by tools/fit_tanh.py) and
 *   one division: |u| < 1.25: u + u s PA(s)/QA(s) (degrees 2/2 on s in [0, 1.5625]); above:
 *   t = tanh(u/2) = u PB(s)/QB(s) (degrees 3/4 on s in [1.5625, 82.81]) and tanh = 2t/(1+t^2)
 *   written as 1 - (QB - u PB)^2/(QB^2 + (u PB)^2); |u| clamped at 9.1.  double: odd series for
 *   |u| < 0.1, else (1 - e)/(1 + e) with e = exp(-2|u|).
 * log1p(u) for u >= -1:  w = 1 + u rounded; log1p(u) = log(w) + (u - (w-1))/w, the second term
 *   restoring what the rounding of 1+u lost (exact to first order).
 * log1m(p) = log(1-p) for p in [0, 1]: the same lost part folded into log's atanh argument, one
 *   division instead of two (see the function).
 *
 * Two variants of each function, selected by a constant flag F: the portable one (F = 0, every
 * multiply-add rounded twice; the baseline SSE2 kernels, _div_body.h, the per-sample finish
 * functions) and the FMA one (F = 1, fused multiply-adds; the AVX2 and AVX-512 kernels).  The
 * build has -ffp-contract=off, so each variant rounds the same wherever it is inlined: within
 * one kernel variant the loss-only and fused kernels agree bitwise.  The variants may differ
 * from each other in the last bit.
 *
 * Measured max error (tests/test_simd_ulp.py: dense sweeps, every binade, subnormals and edge
 * values; reference float64 for the float32 functions, 80-bit long double for the float64 ones):
 *     function   float32       float64        (ulp, portable / FMA; the test asserts the bound
 *                                               in brackets for both)
 *     exp        0.98 / 0.98   1.02 / 1.04    [1.0, 1.1]
 *     log        1.89 / 1.89   1.95 / 1.95    [2.0, 2.0]
 *     log1p      2.33 / 2.33   2.29 / 2.29    [2.5, 2.5]
 *     log1m      1.68 / 1.68   2.01 / 2.01    [1.7, 2.1]   (log(1-p) on [0, 1]; float32: every
 *                                                            float of the domain)
 *     tanh       1.92 / 1.83   4.09 / 4.09    [2.0, 4.5]   (float: every float in [0, 11], max
 *                                                            near the split at |u| = 1.25; double:
 *                                                            the (1-e)/(1+e) branch near 0.1)
 *     log1p01    1.55 / 1.22   1.66 / 1.40    [1.7, 1.7]   (log1p on [0, 1], polynomial)
 *     expn       = exp         = exp          [1.0, 1.1]   (exp's bits on x <= 43 / 664: checked
 *                                                            on every float32 with a subnormal
 *                                                            result; the kernels' exp of x - max)
 * Special values are exact: exp(-inf) = 0, exp(+inf) = inf, log(0) = -inf, log(<0) = NaN,
 * log1p(-1) = log1m(1) = -inf, tanh(+-inf) = +-1, NaN in -> NaN out.
 */
#ifndef FASTCE_SIMD_H
#define FASTCE_SIMD_H

#include <stdint.h>
#include <string.h>
#include <math.h>

#if defined(__GNUC__)
#define FCE_INLINE static inline __attribute__((always_inline))
#else
#define FCE_INLINE static inline
#endif

FCE_INLINE uint32_t fce_bits_f(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
FCE_INLINE float fce_from_bits_f(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }
FCE_INLINE uint64_t fce_bits_d(double x) { uint64_t u; memcpy(&u, &x, 8); return u; }
FCE_INLINE double fce_from_bits_d(uint64_t u) { double x; memcpy(&x, &u, 8); return x; }
/* An integer 0 <= y < 2^52 as a double, exactly: y in the mantissa of 2^52, minus 2^52.  AVX2 has
 * no int64 -> double (or float) conversion, so (double)y in a loop leaves it scalar; this is an
 * or and a subtraction in 64-bit lanes.  Other y give garbage (callers select it away). */
FCE_INLINE double fce_small_i64_to_d(int64_t y)
{
    return fce_from_bits_d((uint64_t)y | 0x4330000000000000ull) - 4503599627370496.0;
}

/* a*b + c.  F = 1 (only in the AVX2 / AVX-512 kernel variants, whose target has FMA): one fused
 * rounding, one instruction; F = 0: two roundings (the build has -ffp-contract=off, so this is
 * never contracted behind our back).  F is a compile-time constant at every call, so each
 * variant is straight-line code and rounds identically wherever it is inlined: the loss-only and
 * the fused kernels of one variant agree bitwise.  (On a target without FMA, fmaf would be a
 * libm call, hence the flag rather than fmaf everywhere.) */
FCE_INLINE float fce_madd_f(float a, float b, float c, const int F)
{ return F ? fmaf(a, b, c) : a * b + c; }
FCE_INLINE double fce_madd_d(double a, double b, double c, const int F)
{ return F ? fma(a, b, c) : a * b + c; }

/* ---------------------------------------------------------------- exp, float */
/* The shared core of fce_exp and fce_tanh_em2_dv: returns e^r for the reduced argument r of x and
 * leaves in *t the shifted value whose low mantissa bits hold n (x = n ln2 + r).  NaN stays
 * NaN; outside the callers' ranges the lanes hold garbage that they select away. */
FCE_INLINE float fce_exp_core_fv(float x, float *t_out, const int F)
{
    const float SHIFT = 12582912.0f;               /* 1.5 * 2^23 */
    const float LOG2E = 1.44269504088896341f;
    const float LN2_HI = 0.693359375f;             /* 8 significant bits: n*LN2_HI exact */
    const float LN2_LO = -2.12194440e-4f;
    float t = fce_madd_f(x, LOG2E, SHIFT, F);
    float n = t - SHIFT;
    float r = fce_madd_f(-n, LN2_HI, x, F);        /* exact either way */
    r = fce_madd_f(-n, LN2_LO, r, F);
    float p = 1.9875691500E-4f;
    p = fce_madd_f(p, r, 1.3981999507E-3f, F);
    p = fce_madd_f(p, r, 8.3334519073E-3f, F);
    p = fce_madd_f(p, r, 4.1665795894E-2f, F);
    p = fce_madd_f(p, r, 1.6666665459E-1f, F);
    p = fce_madd_f(p, r, 5.0000001201E-1f, F);
    *t_out = t;
    return fce_madd_f(p, r * r, r, F) + 1.0f;
}

FCE_INLINE float fce_exp_fv(float x, const int F)
{
    const float SHIFT = 12582912.0f;               /* 1.5 * 2^23 */
    const float HI = 88.8f, LO = -104.0f;          /* e^88.8 > FLT_MAX; e^-104 < FLT_TRUE_MIN/2 */
    /* No clamp on the way in: outside [LO, HI] (and for +-inf) the lanes compute garbage that
     * the two selects at the end replace, which costs two compares instead of a clamp chain.
     * NaN fails both comparisons and stays NaN throughout. */
    float t;
    float p = fce_exp_core_fv(x, &t, F);
    /* 2^n = 2^n1 * 2^n2, n1 = floor(n/2), in integer lanes: nb = n + 256 >= 0 (n >= -150 in
     * range), so a logical shift halves it (SSE2 has no 64-bit arithmetic shift; the double
     * version does the same) and h = nb >> 1 = n1 + 128. */
    uint32_t nb = fce_bits_f(t) - (fce_bits_f(SHIFT) - 256u), h = nb >> 1;
    uint32_t b1 = (h - 1u) << 23;                  /* (n1 + 127) << 23 */
    uint32_t b2 = (nb - h - 1u) << 23;             /* (n - n1 + 127) << 23 */
    float res = (p * fce_from_bits_f(b1)) * fce_from_bits_f(b2);
    res = x > HI ? INFINITY : res;
    res = x < LO ? 0.0f : res;                     /* exact 0 for -inf and deep underflow */
    return res;
}

/* ---------------------------------------------------------------- exp, double */
/* as fce_exp_core_fv */
FCE_INLINE double fce_exp_core_dv(double x, double *t_out, const int F)
{
    const double SHIFT = 6755399441055744.0;       /* 1.5 * 2^52 */
    const double LOG2E = 1.4426950408889634074;
    const double LN2_HI = 6.93145751953125E-1;     /* Cephes split: n*LN2_HI exact */
    const double LN2_LO = 1.42860682030941723212E-6;
    double t = fce_madd_d(x, LOG2E, SHIFT, F);
    double n = t - SHIFT;
    double r = fce_madd_d(-n, LN2_HI, x, F);
    r = fce_madd_d(-n, LN2_LO, r, F);
    /* degree-11 interpolant of e^r at the Chebyshev nodes of [-ln2/2, ln2/2] (truncation error
     * 4e-18, two terms fewer than the Taylor series of the same accuracy) */
    double p = 2.5110037605963777e-08;
    p = fce_madd_d(p, r, 2.763263963904103e-07, F);
    p = fce_madd_d(p, r, 2.755724091857897e-06, F);
    p = fce_madd_d(p, r, 2.4801485482328494e-05, F);
    p = fce_madd_d(p, r, 0.00019841269890047113, F);
    p = fce_madd_d(p, r, 0.0013888888952314775, F);
    p = fce_madd_d(p, r, 0.008333333333319601, F);
    p = fce_madd_d(p, r, 0.0416666666664881, F);
    p = fce_madd_d(p, r, 0.1666666666666668, F);
    p = fce_madd_d(p, r, 0.5000000000000019, F);
    *t_out = t;
    return fce_madd_d(p, r * r, r, F) + 1.0;
}

FCE_INLINE double fce_exp_dv(double x, const int F)
{
    const double SHIFT = 6755399441055744.0;       /* 1.5 * 2^52 */
    const double HI = 709.9, LO = -746.0;          /* e^709.9 > DBL_MAX; e^-746 < DBL_TRUE_MIN/2 */
    /* no clamp on the way in, as the float version */
    double t;
    double p = fce_exp_core_dv(x, &t, F);
    /* nb = n + 2048 >= 0, h = nb >> 1 = n1 + 1024 (see the float version) */
    uint64_t nb = fce_bits_d(t) - (fce_bits_d(SHIFT) - 2048u), h = nb >> 1;
    uint64_t b1 = (h - 1u) << 52;
    uint64_t b2 = (nb - h - 1u) << 52;
    double res = (p * fce_from_bits_d(b1)) * fce_from_bits_d(b2);
    res = x > HI ? INFINITY : res;
    res = x < LO ? 0.0 : res;
    return res;
}

/* ---------------------------------------------------------------- exp of a difference from a max
 * fce_expn: exp(x) for x <= 43 (float) / 664 (double), NaN or -inf: what every kernel takes the exp
 * of -- a logit minus its row's max, or -|x| -- so the overflow select of fce_exp is not needed,
 * and 2^n is one factor: 2^(n+64) is a normal number for n in [-150, 63] (float; [-1077, 959]
 * double), so p * 2^(n+64) is exact and the one rounding of a subnormal result happens in the
 * multiply by the constant 2^-64.  Both forms round p * 2^n once, so the bits are fce_exp's
 * wherever both are defined (tests/test_simd_ulp.py checks every float of the domain), for four
 * integer ops and a compare-select fewer per vector (about a quarter of fce_exp's). */
FCE_INLINE float fce_expn_fv(float x, const int F)
{
    const float SHIFT = 12582912.0f, LO = -104.0f;
    float t;
    float p = fce_exp_core_fv(x, &t, F);
    uint32_t b = (fce_bits_f(t) - fce_bits_f(SHIFT) + (64u + 127u)) << 23;
    float res = (p * fce_from_bits_f(b)) * 5.42101086242752217e-20f;      /* 2^-64 */
    return x < LO ? 0.0f : res;                /* exact 0 for -inf and deep underflow */
}

FCE_INLINE double fce_expn_dv(double x, const int F)
{
    const double SHIFT = 6755399441055744.0, LO = -746.0;
    double t;
    double p = fce_exp_core_dv(x, &t, F);
    uint64_t b = (fce_bits_d(t) - fce_bits_d(SHIFT) + (64u + 1023u)) << 52;
    double res = (p * fce_from_bits_d(b)) * 5.42101086242752217e-20;      /* 2^-64 */
    return x < LO ? 0.0 : res;
}

/* ---------------------------------------------------------------- log, x > 0 */
FCE_INLINE float fce_log_fv(float x, const int F)
{
    /* Normalise subnormals first (scale by 2^25) so the exponent field is meaningful. */
    int sub = x < 1.17549435e-38f;
    float xs = sub ? x * 33554432.0f : x;
    uint32_t u = fce_bits_f(xs);
    /* Subtracting the bits of sqrt(1/2) puts f in [sqrt(1/2), sqrt(2)) with k = exponent. */
    uint32_t v = u - 0x3f3504f3u;
    int32_t k = (int32_t)v >> 23;
    float f = fce_from_bits_f((v & 0x007fffffu) + 0x3f3504f3u);
    float z = (f - 1.0f) / (f + 1.0f);
    float z2 = z * z;
    float s = 2.0f / 9.0f;
    s = fce_madd_f(s, z2, 2.0f / 7.0f, F);
    s = fce_madd_f(s, z2, 2.0f / 5.0f, F);
    s = fce_madd_f(s, z2, 2.0f / 3.0f, F);
    float kf = (float)k - (sub ? 25.0f : 0.0f);
    float res = fce_madd_f(kf, 0.693147180559945309f, fce_madd_f(z * s, z2, 2.0f * z, F), F);
    res = x == 0.0f ? -INFINITY : res;
    res = x == INFINITY ? INFINITY : res;
    res = x < 0.0f ? NAN : res;
    res = x != x ? x : res;
    return res;
}

FCE_INLINE double fce_log_dv(double x, const int F)
{
    int sub = x < 2.2250738585072014e-308;
    double xs = sub ? x * 18014398509481984.0 : x;   /* 2^54 */
    uint64_t u = fce_bits_d(xs);
    uint64_t v = u - 0x3fe6a09e667f3bcdull;
    /* k = (int64_t)v >> 52 as a double, without the two operations AVX2 lacks for 64-bit lanes
     * (arithmetic shift, int64 -> double): a loop calling this stayed scalar on AVX2.  The top
     * 12 bits h = v >> 52 (logical) are put in the mantissa of 2^52 (exact), and the sign of the
     * 12-bit field restored: k = h - 4096 when h >= 2048. */
    double h = fce_from_bits_d((v >> 52) | 0x4330000000000000ull) - 4503599627370496.0;
    double kraw = h >= 2048.0 ? h - 4096.0 : h;
    double f = fce_from_bits_d((v & 0x000fffffffffffffull) + 0x3fe6a09e667f3bcdull);
    double z = (f - 1.0) / (f + 1.0);
    double z2 = z * z;
    double s = 2.0 / 23.0;
    s = fce_madd_d(s, z2, 2.0 / 21.0, F);
    s = fce_madd_d(s, z2, 2.0 / 19.0, F);
    s = fce_madd_d(s, z2, 2.0 / 17.0, F);
    s = fce_madd_d(s, z2, 2.0 / 15.0, F);
    s = fce_madd_d(s, z2, 2.0 / 13.0, F);
    s = fce_madd_d(s, z2, 2.0 / 11.0, F);
    s = fce_madd_d(s, z2, 2.0 / 9.0, F);
    s = fce_madd_d(s, z2, 2.0 / 7.0, F);
    s = fce_madd_d(s, z2, 2.0 / 5.0, F);
    s = fce_madd_d(s, z2, 2.0 / 3.0, F);
    double kd = kraw - (sub ? 54.0 : 0.0);
    /* k*ln2 split in two parts so large k does not lose the series' low bits */
    double res = fce_madd_d(kd, 1.90821492927058770002e-10,
                            fce_madd_d(kd, 6.93147180369123816490e-01,
                                       fce_madd_d(z * s, z2, 2.0 * z, F), F), F);
    res = x == 0.0 ? -INFINITY : res;
    res = x == INFINITY ? INFINITY : res;
    res = x < 0.0 ? NAN : res;
    res = x != x ? x : res;
    return res;
}

/* log1p(u) for u >= -1 (or NaN) */
FCE_INLINE float fce_log1p_fv(float u, const int F)
{
    float w = 1.0f + u;
    float c = (u - (w - 1.0f)) / w;
    float res = fce_log_fv(w, F) + c;
    res = w == 0.0f ? -INFINITY : res;
    return u == INFINITY ? INFINITY : res;
}

FCE_INLINE double fce_log1p_dv(double u, const int F)
{
    double w = 1.0 + u;
    double c = (u - (w - 1.0)) / w;
    double res = fce_log_dv(w, F) + c;
    res = w == 0.0 ? -INFINITY : res;
    return u == INFINITY ? INFINITY : res;
}

/* ---------------------------------------------------------------- log(1 - p), p in [0, 1]
 * BCE's log of the complement probability with one division where log1p(-p) takes two.  w = 1-p
 * rounded and c = (1 - w) - p, exact (Fast2Sum, |1| >= |p|), is what the rounding lost: w + c =
 * 1 - p exactly, and c = 0 for p >= 1/2 (Sterbenz).  w is reduced like log's argument, f = w 2^-k
 * (never subnormal: w = 0 or w >= 2^-24 / 2^-53), and the lost part goes into atanh's argument
 * instead of a correction term c/w:  f_exact - 1 = (f - 1) + c 2^-k, with f - 1 exact and
 * k in {0, -1} wherever c != 0 (w >= 1/2), so z = n / (n + 2), n = (f - 1) + d, d = c or 2c.
 * For tiny p, w = 1, n = -p: z = -p/(2-p) keeps full relative precision, like log1p, down to
 * where p/2 is subnormal (the smallest subnormal p gives -0, 1 ulp off). */
FCE_INLINE float fce_log1m_fv(float p, const int F)
{
    float w = 1.0f - p;
    float c = (1.0f - w) - p;
    uint32_t v = fce_bits_f(w) - 0x3f3504f3u;
    int32_t k = (int32_t)v >> 23;
    float f = fce_from_bits_f((v & 0x007fffffu) + 0x3f3504f3u);
    float kf = (float)k;
    float n = (f - 1.0f) + (kf < 0.0f ? c + c : c);
    float z = n / (n + 2.0f);
    float z2 = z * z;
    float s = 2.0f / 9.0f;
    s = fce_madd_f(s, z2, 2.0f / 7.0f, F);
    s = fce_madd_f(s, z2, 2.0f / 5.0f, F);
    s = fce_madd_f(s, z2, 2.0f / 3.0f, F);
    float res = fce_madd_f(kf, 0.693147180559945309f, fce_madd_f(z * s, z2, 2.0f * z, F), F);
    res = w == 0.0f ? -INFINITY : res;
    return p != p ? p : res;
}

FCE_INLINE double fce_log1m_dv(double p, const int F)
{
    double w = 1.0 - p;
    double c = (1.0 - w) - p;
    uint64_t v = fce_bits_d(w) - 0x3fe6a09e667f3bcdull;
    /* k as a double without 64-bit shifts or conversions (see fce_log_dv) */
    double h = fce_from_bits_d((v >> 52) | 0x4330000000000000ull) - 4503599627370496.0;
    double kd = h >= 2048.0 ? h - 4096.0 : h;
    double f = fce_from_bits_d((v & 0x000fffffffffffffull) + 0x3fe6a09e667f3bcdull);
    double n = (f - 1.0) + (kd < 0.0 ? c + c : c);
    double z = n / (n + 2.0);
    double z2 = z * z;
    double s = 2.0 / 23.0;
    s = fce_madd_d(s, z2, 2.0 / 21.0, F);
    s = fce_madd_d(s, z2, 2.0 / 19.0, F);
    s = fce_madd_d(s, z2, 2.0 / 17.0, F);
    s = fce_madd_d(s, z2, 2.0 / 15.0, F);
    s = fce_madd_d(s, z2, 2.0 / 13.0, F);
    s = fce_madd_d(s, z2, 2.0 / 11.0, F);
    s = fce_madd_d(s, z2, 2.0 / 9.0, F);
    s = fce_madd_d(s, z2, 2.0 / 7.0, F);
    s = fce_madd_d(s, z2, 2.0 / 5.0, F);
    s = fce_madd_d(s, z2, 2.0 / 3.0, F);
    double res = fce_madd_d(kd, 1.90821492927058770002e-10,
                            fce_madd_d(kd, 6.93147180369123816490e-01,
                                       fce_madd_d(z * s, z2, 2.0 * z, F), F), F);
    res = w == 0.0 ? -INFINITY : res;
    return p != p ? p : res;
}

/* ---------------------------------------------------------------- log1p on [0, 1]
 * log1p(e) for e in [0, 1] (or NaN) without a division or a range reduction: softplus(-a) =
 * log1p(e^-a) for a >= 0, the BCE-with-logits and C = 2 loss, has its argument there.
 * log1p(e) = e + e * (e * r(e)) with r(e) = (log1p(e)/e - 1)/e; r is analytic on [0, 1] (the
 * nearest singularity is at e = -1), so a polynomial converges fast: float32 degree 8
 * (relative error of the fit 4.7e-9, 0.08 ulp), float64 degree 20 (fit error 7e-18).  Writing
 * the result as e + e*t (|t| <= 0.31) keeps the final rounding dominant.  e = 0 gives 0 (the
 * limit at |x| = inf), NaN propagates; no other input occurs (the caller's e = exp(-|x|)). */
FCE_INLINE float fce_log1p01_fv(float e, const int F)
{
    float p = -3.242146922275424e-03f;
    p = fce_madd_f(p, e, 1.9843000918626785e-02f, F);
    p = fce_madd_f(p, e, -5.694365128874779e-02f, F);
    p = fce_madd_f(p, e, 1.060204729437828e-01f, F);
    p = fce_madd_f(p, e, -1.5304644405841827e-01f, F);
    p = fce_madd_f(p, e, 1.9675610959529877e-01f, F);
    p = fce_madd_f(p, e, -2.4954070150852203e-01f, F);
    p = fce_madd_f(p, e, 3.3329954743385315e-01f, F);
    p = fce_madd_f(p, e, -4.999990165233612e-01f, F);
    return fce_madd_f(p * e, e, e, F);
}

FCE_INLINE double fce_log1p01_dv(double e, const int F)
{
    /* degree 20, interpolated at the Chebyshev nodes of [0, 1] (truncation ~0.07 ulp); L01_Ck the
     * coefficient of e^k */
#define L01_C0 -0.5
#define L01_C1 0.33333333333332466
#define L01_C2 -0.2499999999987205
#define L01_C3 0.1999999999247163
#define L01_C4 -0.1666666643097834
#define L01_C5 0.14285709745445543
#define L01_C6 -0.12499941281507687
#define L01_C7 0.11110571142855806
#define L01_C8 -0.09996324347550137
#define L01_C9 0.09071835292534261
#define L01_C10 -0.0825618541627825
#define L01_C11 0.07444817019942226
#define L01_C12 -0.06504010366036855
#define L01_C13 0.053223522460321214
#define L01_C14 -0.03912505115233944
#define L01_C15 0.024682950191684934
#define L01_C16 -0.012732150528247672
#define L01_C17 0.005081090478548994
#define L01_C18 -0.0014569248473329174
#define L01_C19 0.000265295970542531
#define L01_C20 -2.2938856818471438e-05
    double p;
    if (F) {
        /* FMA variant: degrees 8-20 by Estrin's scheme (pairs, then e^2, e^4, e^8 steps), the
         * low degrees, which carry the result's precision, by Horner.  21 dependent FMAs were a
         * 105-cycle chain that the out-of-order window could not overlap across iterations:
         * float64 BCE-with-logits ran ~20% slower (Zen 1).  The max error is unchanged (1.44 ulp
         * on a dense [0, 1] sweep, 1.43 with Horner). */
        double e2 = e * e, e4 = e2 * e2, e8 = e4 * e4;
        double h0 = fce_madd_d(fce_madd_d(L01_C11, e, L01_C10, F), e2,
                               fce_madd_d(L01_C9, e, L01_C8, F), F);
        double h1 = fce_madd_d(fce_madd_d(L01_C15, e, L01_C14, F), e2,
                               fce_madd_d(L01_C13, e, L01_C12, F), F);
        double h2 = fce_madd_d(fce_madd_d(L01_C19, e, L01_C18, F), e2,
                               fce_madd_d(L01_C17, e, L01_C16, F), F);
        p = fce_madd_d(fce_madd_d(L01_C20, e4, h2, F), e8, fce_madd_d(h1, e4, h0, F), F);
    } else {
        p = L01_C20;
        p = fce_madd_d(p, e, L01_C19, F);
        p = fce_madd_d(p, e, L01_C18, F);
        p = fce_madd_d(p, e, L01_C17, F);
        p = fce_madd_d(p, e, L01_C16, F);
        p = fce_madd_d(p, e, L01_C15, F);
        p = fce_madd_d(p, e, L01_C14, F);
        p = fce_madd_d(p, e, L01_C13, F);
        p = fce_madd_d(p, e, L01_C12, F);
        p = fce_madd_d(p, e, L01_C11, F);
        p = fce_madd_d(p, e, L01_C10, F);
        p = fce_madd_d(p, e, L01_C9, F);
        p = fce_madd_d(p, e, L01_C8, F);
    }
    p = fce_madd_d(p, e, L01_C7, F);
    p = fce_madd_d(p, e, L01_C6, F);
    p = fce_madd_d(p, e, L01_C5, F);
    p = fce_madd_d(p, e, L01_C4, F);
    p = fce_madd_d(p, e, L01_C3, F);
    p = fce_madd_d(p, e, L01_C2, F);
    p = fce_madd_d(p, e, L01_C1, F);
    p = fce_madd_d(p, e, L01_C0, F);
#undef L01_C0
#undef L01_C1
#undef L01_C2
#undef L01_C3
#undef L01_C4
#undef L01_C5
#undef L01_C6
#undef L01_C7
#undef L01_C8
#undef L01_C9
#undef L01_C10
#undef L01_C11
#undef L01_C12
#undef L01_C13
#undef L01_C14
#undef L01_C15
#undef L01_C16
#undef L01_C17
#undef L01_C18
#undef L01_C19
#undef L01_C20
    return fce_madd_d(p * e, e, e, F);
}

/* ---------------------------------------------------------------- tanh
 * double: |u| small: odd Taylor series (relative precision where (1-e)/(1+e) would cancel);
 * otherwise tanh|u| = (1 - e)/(1 + e) with e = exp(-2|u|) in (0, 1], which is exact to a few
 * ulps there and gives 1 at +-inf; the sign is or-ed back last (tanh(-0) = -0).  NaN propagates.
 * float: the rational form below. */
/* e^(-2a) for 0 <= a <= 20, or NaN: fce_exp's reduction and polynomial,
 * so the same value wherever fce_exp's result is normal, but with what the restricted range
 * allows left out: 2^n (n >= -58) is one normal factor, so the two-factor scaling and
 * the overflow / underflow selects go (a seventh of float64 softcap's per-element instructions).
 * The caller clamps a: at 20 tanh already rounds to 1, so the clamp changes no result. */
FCE_INLINE double fce_tanh_em2_dv(double a, const int F)
{
    const double SHIFT = 6755399441055744.0;
    double t;
    double p = fce_exp_core_dv(-2.0 * a, &t, F);
    uint64_t b = (fce_bits_d(t) - fce_bits_d(SHIFT) + 1023u) << 52;
    return p * fce_from_bits_d(b);
}

/* float: exp-free, two rationals in s = u^2 (coefficients from tools/fit_tanh.py, minimax in
 * relative error, refitted after each coefficient is rounded to float), one shared division.
 *   |u| < 1.25:  tanh u = u + u s c(s), c = PA/QA (deg 2/2) on s in [0, 1.5625]; the correction is
 *               at most 0.47 of the result, which scales its rounding errors down by that much.
 *   |u| >= 1.25: t = tanh(u/2) = u PB/QB (deg 3/4) on s in [1.5625, 82.81], and
 *               tanh u = 2t/(1+t^2) = 1 - (QB - u PB)^2 / (QB^2 + (u PB)^2): the errors of PB, QB
 *               cancel to first order, R's own are scaled by R <= 0.15, and R >= 0 so |tanh| <= 1.
 * |u| is clamped at 9.1 (tanh rounds to 1 from 9.011 on; 1 - R(9.1) rounds to exactly 1), the sign
 * is or-ed back from u's bits (so -0 -> -0, odd symmetry exact); NaN fails every comparison and
 * propagates through the second branch.  Max error (every float in [0, 11], double reference):
 * 1.92 ulp portable, 1.83 FMA, at |u| ~ 1.2-1.3 either side of the split. */
FCE_INLINE float fce_tanh_fv(float u, const int F)
{
    uint32_t sg = fce_bits_f(u) & 0x80000000u;
    float a = fce_from_bits_f(fce_bits_f(u) & 0x7fffffffu);
    float x = a > 9.1f ? 9.1f : a;
    float s = x * x;
    float pa = fce_madd_f(-6.107322861e-06f, s, -1.609398983e-02f, F);
    pa = fce_madd_f(pa, s, -3.333333433e-01f, F);
    float qa = fce_madd_f(1.742635481e-02f, s, 4.482819736e-01f, F);
    qa = fce_madd_f(qa, s, 1.0f, F);
    float pb = fce_madd_f(1.169483781e-07f, s, 1.011417626e-04f, F);
    pb = fce_madd_f(pb, s, 1.647501811e-02f, F);
    pb = fce_madd_f(pb, s, 0.5f, F);
    float qb = fce_madd_f(1.454832699e-09f, s, 4.395511496e-06f, F);
    qb = fce_madd_f(qb, s, 1.559232245e-03f, F);
    qb = fce_madd_f(qb, s, 1.162833646e-01f, F);
    qb = fce_madd_f(qb, s, 1.0f, F);
    float h = x * pb;                              /* tanh(x/2) * qb */
    float e = qb - h;
    float d = fce_madd_f(h, h, qb * qb, F);
    /* one division for both branches: the operands are picked with a bit mask, since GCC turns
     * a select of operands into two divisions and a select of the quotients */
    uint32_t m = x < 1.25f ? 0xffffffffu : 0u;
    float num = fce_from_bits_f((fce_bits_f(pa) & m) | (fce_bits_f(e * e) & ~m));
    float den = fce_from_bits_f((fce_bits_f(qa) & m) | (fce_bits_f(d) & ~m));
    float r = num / den;
    float t = m ? fce_madd_f(x * s, r, x, F) : 1.0f - r;
    return fce_from_bits_f(fce_bits_f(t) | sg);
}

FCE_INLINE double fce_tanh_dv(double u, const int F)
{
    double a = u < 0.0 ? -u : u;
    double a2 = a * a;
    double p = 6404582.0 / 10854718875.0;
    p = fce_madd_d(p, a2, -929569.0 / 638512875.0, F);
    p = fce_madd_d(p, a2, 21844.0 / 6081075.0, F);
    p = fce_madd_d(p, a2, -1382.0 / 155925.0, F);
    p = fce_madd_d(p, a2, 62.0 / 2835.0, F);
    p = fce_madd_d(p, a2, -17.0 / 315.0, F);
    p = fce_madd_d(p, a2, 2.0 / 15.0, F);
    p = fce_madd_d(p, a2, -1.0 / 3.0, F);
    double small = fce_madd_d(a * a2, p, a, F);
    double e = fce_tanh_em2_dv(a > 20.0 ? 20.0 : a, F);
    double big = (1.0 - e) / (1.0 + e);
    double t = a < 0.1 ? small : big;              /* >= 0, or +0 for u = -0 */
    return fce_from_bits_d(fce_bits_d(t) | (fce_bits_d(u) & 0x8000000000000000u));
}

/* ---------------------------------------------------------------- the named functions
 * fce_<fn>_<f|d>: the portable variant (two roundings per multiply-add), usable anywhere;
 * fce_<fn>_<f|d>_fma: fused multiply-adds, only inside code compiled for a target with FMA
 * (the AVX2 / AVX-512 kernel variants pick these through FCE_EXP & co. in _kern_inst.h). */
#define FCE_NAMED(fn, T)                                                                       \
    FCE_INLINE T fce_##fn(T x) { return fce_##fn##v(x, 0); }                                  \
    FCE_INLINE T fce_##fn##_fma(T x) { return fce_##fn##v(x, 1); }
FCE_NAMED(exp_f, float)
FCE_NAMED(exp_d, double)
FCE_NAMED(expn_f, float)
FCE_NAMED(expn_d, double)
FCE_NAMED(log_f, float)
FCE_NAMED(log_d, double)
FCE_NAMED(log1p_f, float)
FCE_NAMED(log1p_d, double)
FCE_NAMED(log1m_f, float)
FCE_NAMED(log1m_d, double)
FCE_NAMED(log1p01_f, float)
FCE_NAMED(log1p01_d, double)
FCE_NAMED(tanh_f, float)
FCE_NAMED(tanh_d, double)
#undef FCE_NAMED

#endif
