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
 * log1p(u) for u >= -1:  w = 1 + u rounded; log1p(u) = log(w) + (u - (w-1))/w, the second term
 *   restoring what the rounding of 1+u lost (exact to first order).
 *
 * Measured max error (tests/test_simd_ulp.py: dense sweeps, every binade, subnormals and edge
 * values; reference float64 for the float32 functions, 80-bit long double for the float64 ones;
 * built with -ffp-contract=off, so every ISA variant rounds identically):
 *     function   float32   float64      (ulp; the test asserts the bound in brackets)
 *     exp        0.98      1.02         [1.0, 1.1]
 *     log        1.89      1.95         [2.0, 2.0]
 *     log1p      2.33      2.29         [2.5, 2.5]
 *     tanh       1.97      4.01         [2.0, 4.5]   (the (1-e)/(1+e) branch near |u| = 0.1)
 * Special values are exact: exp(-inf) = 0, exp(+inf) = inf, log(0) = -inf, log(<0) = NaN,
 * log1p(-1) = -inf, tanh(+-inf) = +-1, NaN in -> NaN out.
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

/* ---------------------------------------------------------------- exp, float */
FCE_INLINE float fce_exp_f(float x)
{
    const float SHIFT = 12582912.0f;               /* 1.5 * 2^23 */
    const float LOG2E = 1.44269504088896341f;
    const float LN2_HI = 0.693359375f;             /* 8 significant bits: n*LN2_HI exact */
    const float LN2_LO = -2.12194440e-4f;
    const float HI = 88.8f, LO = -104.0f;          /* e^88.8 > FLT_MAX; e^-104 < FLT_TRUE_MIN/2 */
    float xc = x > HI ? HI : x;                    /* NaN: both comparisons false, stays NaN */
    xc = xc < LO ? LO : xc;
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
    /* n1 = floor(n/2) by the same rounding trick, so everything stays in float lanes */
    float t1 = (n * 0.5f - 0.25f) + SHIFT;
    float n1 = t1 - SHIFT;
    float t2 = (n - n1) + SHIFT;
    uint32_t b1 = (fce_bits_f(t1) - fce_bits_f(SHIFT) + 127u) << 23;
    uint32_t b2 = (fce_bits_f(t2) - fce_bits_f(SHIFT) + 127u) << 23;
    float res = (p * fce_from_bits_f(b1)) * fce_from_bits_f(b2);
    res = x < LO ? 0.0f : res;                     /* exact 0 for -inf and deep underflow */
    return res;
}

/* ---------------------------------------------------------------- exp, double */
FCE_INLINE double fce_exp_d(double x)
{
    const double SHIFT = 6755399441055744.0;       /* 1.5 * 2^52 */
    const double LOG2E = 1.4426950408889634074;
    const double LN2_HI = 6.93145751953125E-1;     /* Cephes split: n*LN2_HI exact */
    const double LN2_LO = 1.42860682030941723212E-6;
    const double HI = 709.9, LO = -746.0;          /* e^709.9 > DBL_MAX; e^-746 < DBL_TRUE_MIN/2 */
    double xc = x > HI ? HI : x;
    xc = xc < LO ? LO : xc;
    double t = xc * LOG2E + SHIFT;
    double n = t - SHIFT;
    double r = xc - n * LN2_HI;
    r = r - n * LN2_LO;
    /* degree-11 interpolant of e^r at the Chebyshev nodes of [-ln2/2, ln2/2] (truncation error
     * 4e-18, two terms fewer than the Taylor series of the same accuracy) */
    double p = 2.5110037605963777e-08;
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
    double t1 = (n * 0.5 - 0.25) + SHIFT;
    double n1 = t1 - SHIFT;
    double t2 = (n - n1) + SHIFT;
    uint64_t b1 = (fce_bits_d(t1) - fce_bits_d(SHIFT) + 1023u) << 52;
    uint64_t b2 = (fce_bits_d(t2) - fce_bits_d(SHIFT) + 1023u) << 52;
    double res = (p * fce_from_bits_d(b1)) * fce_from_bits_d(b2);
    res = x < LO ? 0.0 : res;
    return res;
}

/* ---------------------------------------------------------------- log, x > 0 */
FCE_INLINE float fce_log_f(float x)
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
    s = s * z2 + 2.0f / 7.0f;
    s = s * z2 + 2.0f / 5.0f;
    s = s * z2 + 2.0f / 3.0f;
    float kf = (float)k - (sub ? 25.0f : 0.0f);
    float res = kf * 0.693147180559945309f + (z * s * z2 + 2.0f * z);
    res = x == 0.0f ? -INFINITY : res;
    res = x == INFINITY ? INFINITY : res;
    res = x < 0.0f ? NAN : res;
    res = x != x ? x : res;
    return res;
}

FCE_INLINE double fce_log_d(double x)
{
    int sub = x < 2.2250738585072014e-308;
    double xs = sub ? x * 18014398509481984.0 : x;   /* 2^54 */
    uint64_t u = fce_bits_d(xs);
    uint64_t v = u - 0x3fe6a09e667f3bcdull;
    int64_t k = (int64_t)v >> 52;
    double f = fce_from_bits_d((v & 0x000fffffffffffffull) + 0x3fe6a09e667f3bcdull);
    double z = (f - 1.0) / (f + 1.0);
    double z2 = z * z;
    double s = 2.0 / 23.0;
    s = s * z2 + 2.0 / 21.0;
    s = s * z2 + 2.0 / 19.0;
    s = s * z2 + 2.0 / 17.0;
    s = s * z2 + 2.0 / 15.0;
    s = s * z2 + 2.0 / 13.0;
    s = s * z2 + 2.0 / 11.0;
    s = s * z2 + 2.0 / 9.0;
    s = s * z2 + 2.0 / 7.0;
    s = s * z2 + 2.0 / 5.0;
    s = s * z2 + 2.0 / 3.0;
    double kd = (double)k - (sub ? 54.0 : 0.0);
    /* k*ln2 split in two parts so large k does not lose the series' low bits */
    double res = kd * 6.93147180369123816490e-01 + (z * s * z2 + 2.0 * z)
               + kd * 1.90821492927058770002e-10;
    res = x == 0.0 ? -INFINITY : res;
    res = x == INFINITY ? INFINITY : res;
    res = x < 0.0 ? NAN : res;
    res = x != x ? x : res;
    return res;
}

/* log1p(u) for u >= -1 (or NaN) */
FCE_INLINE float fce_log1p_f(float u)
{
    float w = 1.0f + u;
    float c = (u - (w - 1.0f)) / w;
    float res = fce_log_f(w) + c;
    res = w == 0.0f ? -INFINITY : res;
    return u == INFINITY ? INFINITY : res;
}

FCE_INLINE double fce_log1p_d(double u)
{
    double w = 1.0 + u;
    double c = (u - (w - 1.0)) / w;
    double res = fce_log_d(w) + c;
    res = w == 0.0 ? -INFINITY : res;
    return u == INFINITY ? INFINITY : res;
}

/* ---------------------------------------------------------------- tanh
 * |u| small: odd Taylor series (relative precision where (1-e)/(1+e) would cancel);
 * otherwise tanh|u| = (1 - e)/(1 + e) with e = exp(-2|u|) in (0, 1], which is exact to a few
 * ulps there and gives 1 at +-inf; the sign is restored last.  NaN propagates. */
FCE_INLINE float fce_tanh_f(float u)
{
    float a = u < 0.0f ? -u : u;
    float a2 = a * a;
    float p = -929569.0f / 638512875.0f;
    p = p * a2 + 21844.0f / 6081075.0f;
    p = p * a2 - 1382.0f / 155925.0f;
    p = p * a2 + 62.0f / 2835.0f;
    p = p * a2 - 17.0f / 315.0f;
    p = p * a2 + 2.0f / 15.0f;
    p = p * a2 - 1.0f / 3.0f;
    float small = a + a * a2 * p;
    float e = fce_exp_f(-2.0f * a);
    float big = (1.0f - e) / (1.0f + e);
    float t = a < 0.3f ? small : big;
    return u < 0.0f ? -t : t;
}

FCE_INLINE double fce_tanh_d(double u)
{
    double a = u < 0.0 ? -u : u;
    double a2 = a * a;
    double p = 6404582.0 / 10854718875.0;
    p = p * a2 - 929569.0 / 638512875.0;
    p = p * a2 + 21844.0 / 6081075.0;
    p = p * a2 - 1382.0 / 155925.0;
    p = p * a2 + 62.0 / 2835.0;
    p = p * a2 - 17.0 / 315.0;
    p = p * a2 + 2.0 / 15.0;
    p = p * a2 - 1.0 / 3.0;
    double small = a + a * a2 * p;
    double e = fce_exp_d(-2.0 * a);
    double big = (1.0 - e) / (1.0 + e);
    double t = a < 0.1 ? small : big;
    return u < 0.0 ? -t : t;
}

#endif
