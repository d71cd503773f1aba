/*
 * Template (see _kern_body.h): losses beyond cross-entropy -- distillation KL from logits,
 * softmax entropy, the top-k rank of a target, sigmoid focal loss and torch's pointwise kl_div.
 *
 * The class-axis ops (kl_logits, entropy, topk_rank) run on the engine's items (_k_layout.h:
 * ROW, COLS, BLOCK through cols_view / cols_to_rows) with its reductions (_k_reduce.h:
 * row_max, col_max, fce_combine_lanes); the elementwise ones (focal, kldiv) run in fixed
 * chunks as _k_binary.h does.  Every sum is accumulated in double in an order fixed by the
 * data layout (fixed lanes, classes in order), never by the thread schedule or the ISA.
 *
 * The first inclusion also defines the dtype-specific scalar helpers below (once, outside
 * every ISA target region; they are always_inline, so each variant inlines them with its own
 * instruction set, as it does _simd.h's functions).
 */
#ifndef FCE_K_DIV_ONCE
#define FCE_K_DIV_ONCE

/*
 * e2(d) = expm1(d) - d = d^2 P(d), P(d) = sum_{k>=2} d^(k-2) / k!, for |d| < 1/2 (the callers
 * select another formula outside).  float: a degree-5 polynomial fitted to P on [-1/2, 1/2]
 * for minimal relative error (iteratively reweighted least squares on Chebyshev nodes against
 * 40-digit mpmath values): 2.4e-8 relative as an approximation, 1.78 ulp measured in float32
 * Horner evaluation over 40001 points (the truncated Taylor series it replaces needed degree 8
 * for the same accuracy; three fewer multiply-adds in the KL kernel's inner loop).  double:
 * Taylor through 1/17! (first omitted term below 2^-58 of P at |d| = 1/2).
 */
FCE_INLINE float fce_div_e2p_f(float d, const int F)
{
    float p = 1.987558062e-04f;
    p = fce_madd_f(p, d, 1.398199704e-03f, F);
    p = fce_madd_f(p, d, 8.333452046e-03f, F);
    p = fce_madd_f(p, d, 4.166579619e-02f, F);
    p = fce_madd_f(p, d, 1.666666567e-01f, F);
    p = fce_madd_f(p, d, 0.5f, F);
    return p;
}

FCE_INLINE double fce_div_e2p_d(double d, const int F)
{
    /* Estrin's scheme (pairs, then d^2, d^4, d^8 steps): 16 dependent multiply-adds by Horner
     * were an ~80-cycle chain, longer than both exps of the KL term together, that the
     * out-of-order window could not overlap across vectors (Zen 1; kl_div_logits float64 5%
     * faster).  Max error 2.0 ulp of P on a dense [-1/2, 1/2] sweep without FMA, against 1.0
     * by Horner: the KL term d^2 + (d-1) e2 keeps a few ulps. */
    double d2 = d * d, d4 = d2 * d2, d8 = d4 * d4;
    double q0 = fce_madd_d(1.0 / 6.0, d, 0.5, F);
    double q1 = fce_madd_d(1.0 / 120.0, d, 1.0 / 24.0, F);
    double q2 = fce_madd_d(1.0 / 5040.0, d, 1.0 / 720.0, F);
    double q3 = fce_madd_d(1.0 / 362880.0, d, 1.0 / 40320.0, F);
    double q4 = fce_madd_d(1.0 / 39916800.0, d, 1.0 / 3628800.0, F);
    double q5 = fce_madd_d(1.0 / 6227020800.0, d, 1.0 / 479001600.0, F);
    double q6 = fce_madd_d(1.0 / 1307674368000.0, d, 1.0 / 87178291200.0, F);
    double q7 = fce_madd_d(1.0 / 355687428096000.0, d, 1.0 / 20922789888000.0, F);
    double r0 = fce_madd_d(q1, d2, q0, F), r1 = fce_madd_d(q3, d2, q2, F);
    double r2 = fce_madd_d(q5, d2, q4, F), r3 = fce_madd_d(q7, d2, q6, F);
    return fce_madd_d(fce_madd_d(r3, d4, r2, F), d8, fce_madd_d(r1, d4, r0, F), F);
}

/*
 * kappa(z) = z/(1+z) - log1p(z) <= 0, the second term of the KL formula below.  Near 0 the two
 * parts cancel (kappa ~ -z^2/2), so |z| < 1/8 uses its series
 *   kappa(z) = sum_{n>=2} (-1)^(n+1) (n-1)/n z^n      (truncated after n = 20: < 2^-54 relative)
 * and the direct form elsewhere (cancellation there costs at most 4 bits).
 */
FCE_INLINE double fce_div_kappa(double z)
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

/* The variant of a helper above for the template's T (sizeof(T) is a constant: the other
 * arm is folded away before vectorisation). */
#define FCE_DIV_E2P(d)                                                                         \
    (sizeof(T) == 4 ? (T)fce_div_e2p_f((float)(d), FCE_ISA_FMA)                                \
                    : (T)fce_div_e2p_d((double)(d), FCE_ISA_FMA))

/* Row sums: per lane, groups of FCE_DIV_GROUP consecutive blocks of FCE_LANES are summed in T
 * and the group totals in double; columns: groups of FCE_DIV_CGROUP classes.  A fixed
 * structure (the same for any thread count and vector width) that keeps the conversions to
 * double out of the innermost loops. */
#define FCE_DIV_GROUP 8
#define FCE_DIV_CGROUP 16

/* Prefetch for reading into L2 (a hint: no effect on results, none where unsupported). */
#if defined(__GNUC__)
#define FCE_DIV_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 2)
#else
#define FCE_DIV_PREFETCH(p) ((void)0)
#endif

#endif /* FCE_K_DIV_ONCE */

/* ============================================================ KL divergence from logits */

/*
 * Distillation loss of one sample, temperature tau (k = 1/tau):
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
 *       KL = g1 / (1 + g0) + kappa(g0),   kappa(z) = z/(1+z) - log1p(z)  (fce_div_kappa).
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
 *
 * Passes over a row (ROW items): the max of each row (the only pass that reads the logits
 * from memory: a 32000-class float32 row pair is 250 KiB, so later passes hit L2); the exps
 * and the three sums, parking t0 in the gradient row and ea in the caller's per-thread scratch
 * row (when given; otherwise ea is recomputed); the gradient, from those two.  No allocation.
 */

/* Step 3: the exps and the two q-weighted terms of one class, from the raw logits sv, tv, the
 * raw row maxes ms, mt, dm = mt - ms and k = 1/tau.  The shifts come before the scaling, and d
 * is formed from differences of the raw logits, ((tv - sv) - dm) k: for nearly equal rows
 * tv - sv and dm are exact (Sterbenz), so d keeps its relative precision (the difference of
 * the separately rounded tv k and sv k would not). */
FCE_INLINE void S(kl_terms)(T sv, T tv, T ms, T mt, T dm, T k, T *ea_out, T *t0, T *t1)
{
    T ap = (sv - ms) * k, bp = (tv - mt) * k;
    T d = ((tv - sv) - dm) * k;
    T ea = FCE_EXPN(ap), eb = FCE_EXPN(bp);
    T e2 = d * d * FCE_DIV_E2P(d);
    T small0 = ea * (d + e2);
    T small1 = ea * (d * d + (d - 1) * e2);
    int small = d < (T)0.5 && d > (T)-0.5;           /* NaN: false */
    *t0 = small ? small0 : eb - ea;
    *t1 = small ? small1 : (eb == 0 ? (T)0 : eb * (d - 1)) + ea;
    *ea_out = ea;
}

/* Step 2 from the three sums; rounding could only push a mathematically >= 0 result to a tiny
 * negative, which is clamped (NaN passes the comparison and propagates). */
FCE_INLINE double S(kl_finish)(double Sa, double G0, double G1, double tau)
{
    double g0 = G0 / Sa, g1 = G1 / Sa;
    double kl = g1 / (1.0 + g0) + fce_div_kappa(g0);
    kl = kl < 0.0 ? 0.0 : kl;
    return tau * tau * kl;
}

/* Step 4's per-sample factors: the gradient of class c is cg (ea_c g0 - t0_c). */
FCE_INLINE void S(kl_grad_coefs)(double Sa, double G0, double tau, double gs, T *cg, T *g0t)
{
    double g0 = G0 / Sa;
    *g0t = (T)g0;
    *cg = (T)(gs * tau / (Sa * (1.0 + g0)));
}

/* One row (steps 1-4).  G: the gradient is wanted (t0 is parked in g); E: ea is parked in the
 * scratch row e (else the gradient pass recomputes it).  sn, tn: the next row pair (or NULL),
 * prefetched during the compute-bound sum pass, so that its max pass -- the one pass that
 * reads from memory -- finds it in L2 instead of waiting for DRAM (the schedule hands a thread
 * consecutive rows; a row another thread takes is still in the shared L3). */
FCE_INLINE void S(kl_row)(const T *s, const T *t, fce_idx C, fce_idx sidx,
                          const fce_kl_args *a, T *g, T *e, const T *sn, const T *tn,
                          const int G, const int E)
{
    const T k = (T)a->k;
    const T ms = S(row_max)(s, C), mt = S(row_max)(t, C);
    const T dm = mt - ms;
    double as[FCE_LANES] = {0}, a0[FCE_LANES] = {0}, a1[FCE_LANES] = {0};
    double ts = 0.0, t0s = 0.0, t1s = 0.0;
    fce_idx j = 0, jg;
    int l;
    while (j + FCE_LANES <= C) {
        T fs[FCE_LANES] = {0}, f0[FCE_LANES] = {0}, f1[FCE_LANES] = {0};
        fce_idx stop = j + FCE_DIV_GROUP * FCE_LANES <= C ? j + FCE_DIV_GROUP * FCE_LANES : C;
        for (jg = j; jg + FCE_LANES <= stop; jg += FCE_LANES) {
            if (sn) {
                int pb;
                for (pb = 0; pb < FCE_LANES * (int)sizeof(T); pb += 64) {
                    FCE_DIV_PREFETCH((const char *)(sn + jg) + pb);
                    FCE_DIV_PREFETCH((const char *)(tn + jg) + pb);
                }
            }
            T gb[FCE_LANES], eb[FCE_LANES];          /* stored after the block */
            _Pragma("omp simd")
            for (l = 0; l < FCE_LANES; l++) {
                T ea, v0, v1;
                S(kl_terms)(s[jg + l], t[jg + l], ms, mt, dm, k, &ea, &v0, &v1);
                gb[l] = v0;
                eb[l] = ea;
                fs[l] += ea; f0[l] += v0; f1[l] += v1;
            }
            if (G) FCE_STORE_AFTER(g + jg, gb, FCE_LANES, FCE_LANES);
            if (G && E) FCE_STORE_AFTER(e + jg, eb, FCE_LANES, FCE_LANES);
        }
        j = jg;
        _Pragma("omp simd")
        for (l = 0; l < FCE_LANES; l++) {
            as[l] += (double)fs[l]; a0[l] += (double)f0[l]; a1[l] += (double)f1[l];
        }
    }
    for (; j < C; j++) {
        T ea, v0, v1;
        S(kl_terms)(s[j], t[j], ms, mt, dm, k, &ea, &v0, &v1);
        if (G) g[j] = v0;
        if (G && E) e[j] = ea;
        ts += (double)ea; t0s += (double)v0; t1s += (double)v1;
    }
    double Sa = fce_combine_lanes(as) + ts;
    double G0 = fce_combine_lanes(a0) + t0s, G1 = fce_combine_lanes(a1) + t1s;
    a->loss[sidx] = S(kl_finish)(Sa, G0, G1, a->tau);
    if (!G) return;
    T cg, g0t;
    S(kl_grad_coefs)(Sa, G0, a->tau, a->gcoef * (a->gscale ? a->gscale[sidx] : 1.0), &cg, &g0t);
    if (E) {
        _Pragma("omp simd")
        for (j = 0; j < C; j++) g[j] = cg * (e[j] * g0t - g[j]);
    } else {
        _Pragma("omp simd")
        for (j = 0; j < C; j++) g[j] = cg * (FCE_EXPN((s[j] - ms) * k) * g0t - g[j]);
    }
}

/* bw samples as columns: element (c, b) at s[c*st + b].  g (stride st) may be t itself (each
 * t element is read before g's element at the same place is written, and never again), not s. */
FCE_INLINE void S(kl_cols)(const T *s, const T *t, fce_idx C, fce_idx st, fce_idx bw,
                           fce_idx soff, const fce_kl_args *a, T *g, const int G)
{
    T ma[FCE_TILE], mb[FCE_TILE], dm[FCE_TILE], g0t[FCE_TILE], cg[FCE_TILE];
    double Sa[FCE_TILE], G0[FCE_TILE], G1[FCE_TILE];
    const T k = (T)a->k;
    fce_idx c, c0, b;
    S(col_max)(s, C, st, bw, ma);
    S(col_max)(t, C, st, bw, mb);
    for (b = 0; b < bw; b++) { dm[b] = mb[b] - ma[b]; Sa[b] = 0.0; G0[b] = 0.0; G1[b] = 0.0; }
    for (c0 = 0; c0 < C; c0 += FCE_DIV_CGROUP) {
        T fs[FCE_TILE], f0[FCE_TILE], f1[FCE_TILE];
        fce_idx c1 = c0 + FCE_DIV_CGROUP < C ? c0 + FCE_DIV_CGROUP : C;
        for (b = 0; b < bw; b++) { fs[b] = 0; f0[b] = 0; f1[b] = 0; }
        for (c = c0; c < c1; c++) {
            const T *sc = s + c * st, *tc = t + c * st;
            T *gc = G ? g + c * st : NULL;
            _Pragma("omp simd")
            for (b = 0; b < bw; b++) {
                T ea, v0, v1;
                S(kl_terms)(sc[b], tc[b], ma[b], mb[b], dm[b], k, &ea, &v0, &v1);
                if (G) gc[b] = v0;
                fs[b] += ea; f0[b] += v0; f1[b] += v1;
            }
        }
        _Pragma("omp simd")
        for (b = 0; b < bw; b++) {
            Sa[b] += (double)fs[b]; G0[b] += (double)f0[b]; G1[b] += (double)f1[b];
        }
    }
    double *loss = a->loss + soff;
    const double *gsc = a->gscale ? a->gscale + soff : NULL;
    for (b = 0; b < bw; b++) {
        loss[b] = S(kl_finish)(Sa[b], G0[b], G1[b], a->tau);
        S(kl_grad_coefs)(Sa[b], G0[b], a->tau, a->gcoef * (gsc ? gsc[b] : 1.0), &cg[b], &g0t[b]);
    }
    if (!G) return;
    for (c = 0; c < C; c++) {
        const T *sc = s + c * st;
        T *gc = g + c * st;
        _Pragma("omp simd")
        for (b = 0; b < bw; b++)
            gc[b] = cg[b] * (FCE_EXPN((sc[b] - ma[b]) * k) * g0t[b] - gc[b]);
    }
}

/* scratch: NULL, or this thread's row of C elements (used by ROW items with a gradient). */
static void S(kl_logits_item)(const void *sv, const void *tv, fce_idx A, fce_idx C, fce_idx B,
                              fce_idx item, const fce_kl_args *a, void *gv, void *scratch)
{
    const T *s = (const T *)sv, *t = (const T *)tv;
    T *grad = (T *)gv;
    S(fce_item) it = S(decode)(A, C, B, item);
    if (it.kind == FCE_ROW) {
        const T *sr = s + it.off, *tr = t + it.off;
        const T *sn = item + 1 < A ? sr + C : NULL, *tn = item + 1 < A ? tr + C : NULL;
        if (grad && scratch)
            S(kl_row)(sr, tr, C, it.soff, a, grad + it.off, (T *)scratch, sn, tn, 1, 1);
        else if (grad) S(kl_row)(sr, tr, C, it.soff, a, grad + it.off, NULL, sn, tn, 1, 0);
        else S(kl_row)(sr, tr, C, it.soff, a, NULL, NULL, sn, tn, 0, 0);
    } else {
        /* COLS: in place; BLOCK: transposed copies, the gradient built in the teacher's copy */
        T sbuf[FCE_SMALL_C * FCE_TILE], tbuf[FCE_SMALL_C * FCE_TILE];
        fce_idx st;
        const T *sc = S(cols_view)(s, C, B, it, sbuf, &st);
        const T *tc = S(cols_view)(t, C, B, it, tbuf, &st);
        T *gc = it.kind == FCE_BLOCK ? tbuf : grad ? grad + it.off : NULL;
        if (grad) S(kl_cols)(sc, tc, C, st, it.bw, it.soff, a, gc, 1);
        else S(kl_cols)(sc, tc, C, st, it.bw, it.soff, a, NULL, 0);
        if (grad && it.kind == FCE_BLOCK) S(cols_to_rows)(tbuf, C, it.bw, grad + it.off);
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
FCE_INLINE void S(ent_terms)(T xv, T m, T *e_out, T *one, T *rest, T *w)
{
    T e = FCE_EXPN(xv - m);
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

/* One row; with a gradient (G) the exps are parked in g.  xn: the next row (or NULL),
 * prefetched during the sum pass as in kl_row. */
FCE_INLINE void S(ent_row)(const T *x, fce_idx C, fce_idx sidx, const fce_ent_args *a, T *g,
                           const T *xn, const int G)
{
    double ao[FCE_LANES] = {0}, ar[FCE_LANES] = {0}, aw[FCE_LANES] = {0};
    double to = 0.0, tr = 0.0, tw = 0.0;
    fce_idx j = 0, jg;
    int l;
    const T m = S(row_max)(x, C);
    while (j + FCE_LANES <= C) {
        T fo[FCE_LANES] = {0}, fr[FCE_LANES] = {0}, fw[FCE_LANES] = {0};
        fce_idx stop = j + FCE_DIV_GROUP * FCE_LANES <= C ? j + FCE_DIV_GROUP * FCE_LANES : C;
        for (jg = j; jg + FCE_LANES <= stop; jg += FCE_LANES) {
            if (xn) {
                int pb;
                for (pb = 0; pb < FCE_LANES * (int)sizeof(T); pb += 64)
                    FCE_DIV_PREFETCH((const char *)(xn + jg) + pb);
            }
            T gb[FCE_LANES];                          /* stored after the block */
            _Pragma("omp simd")
            for (l = 0; l < FCE_LANES; l++) {
                T e, w, o, r;
                S(ent_terms)(x[jg + l], m, &e, &o, &r, &w);
                gb[l] = e;
                fo[l] += o; fr[l] += r; fw[l] += w;
            }
            if (G) FCE_STORE_AFTER(g + jg, gb, FCE_LANES, FCE_LANES);
        }
        j = jg;
        _Pragma("omp simd")
        for (l = 0; l < FCE_LANES; l++) {
            ao[l] += (double)fo[l]; ar[l] += (double)fr[l]; aw[l] += (double)fw[l];
        }
    }
    for (; j < C; j++) {
        T e, w, o, r;
        S(ent_terms)(x[j], m, &e, &o, &r, &w);
        if (G) g[j] = e;
        to += (double)o; tr += (double)r; tw += (double)w;
    }
    double Sv, W = fce_combine_lanes(aw) + tw;
    a->loss[sidx] = S(ent_finish)(fce_combine_lanes(ao) + to, fce_combine_lanes(ar) + tr, W, &Sv);
    if (!G) return;
    double gs = a->gcoef * (a->gscale ? a->gscale[sidx] : 1.0);
    T ws = (T)(W / Sv), inv_s = (T)(gs / Sv);
    _Pragma("omp simd")
    for (j = 0; j < C; j++) g[j] = S(ent_grad_term)(x[j], m, g[j], ws, inv_s);
}

/* bw samples as columns (stride st); g (stride st) must not alias x (x is read again in the
 * gradient pass). */
FCE_INLINE void S(ent_cols)(const T *x, fce_idx C, fce_idx st, fce_idx bw, fce_idx soff,
                            const fce_ent_args *a, T *g, const int G)
{
    T m[FCE_TILE], ws[FCE_TILE], inv_s[FCE_TILE];
    double ones[FCE_TILE], rest[FCE_TILE], W[FCE_TILE];
    fce_idx c, c0, b;
    S(col_max)(x, C, st, bw, m);
    for (b = 0; b < bw; b++) { ones[b] = 0.0; rest[b] = 0.0; W[b] = 0.0; }
    for (c0 = 0; c0 < C; c0 += FCE_DIV_CGROUP) {
        T fo[FCE_TILE], fr[FCE_TILE], fw[FCE_TILE];
        fce_idx c1 = c0 + FCE_DIV_CGROUP < C ? c0 + FCE_DIV_CGROUP : C;
        for (b = 0; b < bw; b++) { fo[b] = 0; fr[b] = 0; fw[b] = 0; }
        for (c = c0; c < c1; c++) {
            const T *xc = x + c * st;
            T *gc = G ? g + c * st : NULL;
            _Pragma("omp simd")
            for (b = 0; b < bw; b++) {
                T e, w, o, r;
                S(ent_terms)(xc[b], m[b], &e, &o, &r, &w);
                if (G) gc[b] = e;
                fo[b] += o; fr[b] += r; fw[b] += w;
            }
        }
        _Pragma("omp simd")
        for (b = 0; b < bw; b++) {
            ones[b] += (double)fo[b]; rest[b] += (double)fr[b]; W[b] += (double)fw[b];
        }
    }
    double *loss = a->loss + soff;
    const double *gsc = a->gscale ? a->gscale + soff : NULL;
    for (b = 0; b < bw; b++) {
        double Sv;
        loss[b] = S(ent_finish)(ones[b], rest[b], W[b], &Sv);
        ws[b] = (T)(W[b] / Sv);
        inv_s[b] = (T)(a->gcoef * (gsc ? gsc[b] : 1.0) / Sv);
    }
    if (!G) return;
    for (c = 0; c < C; c++) {
        const T *xc = x + c * st;
        T *gc = g + c * st;
        _Pragma("omp simd")
        for (b = 0; b < bw; b++) gc[b] = S(ent_grad_term)(xc[b], m[b], gc[b], ws[b], inv_s[b]);
    }
}

static void S(entropy_item)(const void *xv, fce_idx A, fce_idx C, fce_idx B, fce_idx item,
                            const fce_ent_args *a, void *gv)
{
    const T *x = (const T *)xv;
    T *grad = (T *)gv;
    S(fce_item) it = S(decode)(A, C, B, item);
    if (it.kind == FCE_ROW) {
        const T *xn = item + 1 < A ? x + it.off + C : NULL;
        if (grad) S(ent_row)(x + it.off, C, it.soff, a, grad + it.off, xn, 1);
        else S(ent_row)(x + it.off, C, it.soff, a, NULL, xn, 0);
    } else {
        T xbuf[FCE_SMALL_C * FCE_TILE], gbuf[FCE_SMALL_C * FCE_TILE];
        fce_idx st;
        const T *xc = S(cols_view)(x, C, B, it, xbuf, &st);
        T *gc = it.kind == FCE_BLOCK ? gbuf : grad ? grad + it.off : NULL;
        if (grad) S(ent_cols)(xc, C, st, it.bw, it.soff, a, gc, 1);
        else S(ent_cols)(xc, C, st, it.bw, it.soff, a, NULL, 0);
        if (grad && it.kind == FCE_BLOCK) S(cols_to_rows)(gbuf, C, it.bw, grad + it.off);
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
FCE_INLINE int64_t S(rank_count)(T xv, T sy, int yn, fce_idx c, int64_t y)
{
    int xn = xv != xv;
    int gt = (xv > sy) | (xn & !yn);
    int eq = (xv == sy) | (xn & yn);
    return (int64_t)(gt | (eq & ((int64_t)c < y)));
}

static void S(topk_rank_item)(const void *xv, fce_idx A, fce_idx C, fce_idx B, fce_idx item,
                              const int64_t *tgt, int64_t *rank)
{
    const T *x = (const T *)xv;
    S(fce_item) it = S(decode)(A, C, B, item);
    fce_idx b, c;
    if (it.kind != FCE_COLS) {               /* rows: one (ROW) or up to FCE_TILE (BLOCK) */
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
        T sy[FCE_TILE];
        int64_t yy[FCE_TILE], cnt[FCE_TILE];
        int yn[FCE_TILE];
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
 * Elements are processed in fixed chunks of a->chunk elements; chunk i's loss sum (double,
 * fixed lanes) goes to chunk_sum[i] and Python adds the chunks in order, so the total does not
 * depend on the thread count.  grad may alias x (each element is read before its gradient is
 * written).
 */

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
    T e = FCE_EXPN(-av);
    T inv = 1 / (1 + e);
    T sp = FCE_LOG1P01(e);                            /* log1p(e), e in [0, 1] */
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
        T ey = FCE_EXP(yv);
        *g = -gsv * ey;
        return ey * (yv - xv);
    }
    T xl = yv == 0 ? (T)0 : yv * FCE_LOG(yv);
    *g = -gsv * yv;
    return xl - yv * xv;
}

/* One chunk.  ONE(x, y, p1, p2, gscale, &grad, K) is the per-element function; the flags and
 * K are compile-time constants at every call site, so each variant is its own vector loop.
 * The option values live in locals: a store through grad (T = double) could otherwise alias
 * the argument struct and force a reload per element. */
#define FCE_DIV_EW_CHUNK(NAME, ONE, P1, P2)                                                    \
FCE_INLINE void S(NAME##_chunk)(const T *x, fce_idx item, const fce_div_ew_args *a, T *grad,   \
                                const int K, const int has_loss, const int has_grad,           \
                                const int has_gs)                                              \
{                                                                                              \
    fce_idx start = item * a->chunk, stop = start + a->chunk, j;                               \
    double acc[FCE_LANES] = {0}, tail = 0.0;                                                   \
    int l;                                                                                     \
    const double gcoef = a->gcoef, alpha = a->alpha;                                           \
    const T gamma = (T)a->gamma, gc = (T)gcoef;                                                \
    const T *y = (const T *)a->y, *gsc = (const T *)a->gscale;                                 \
    T *loss = (T *)a->loss;                                                                    \
    (void)alpha; (void)gamma;                                                                  \
    if (stop > a->n) stop = a->n;                                                              \
    for (j = start; j + FCE_LANES <= stop; j += FCE_LANES) {                                   \
        T lb[FCE_LANES], gb[FCE_LANES];        /* stored after the block: FCE_STORE_AFTER */   \
        _Pragma("omp simd")                                                                    \
        for (l = 0; l < FCE_LANES; l++) {                                                      \
            T g;                                                                               \
            T v = S(ONE)(x[j + l], y[j + l], P1(y[j + l]), P2,                                 \
                         has_gs ? (T)(gcoef * (double)gsc[j + l]) : gc, &g, K);                \
            lb[l] = v;                                                                         \
            gb[l] = g;                                                                         \
            acc[l] += (double)v;                                                               \
        }                                                                                      \
        if (has_loss) FCE_STORE_AFTER(loss + j, lb, FCE_LANES, FCE_LANES);                     \
        if (has_grad) FCE_STORE_AFTER(grad + j, gb, FCE_LANES, FCE_LANES);                     \
    }                                                                                          \
    for (; j < stop; j++) {                                                                    \
        T g;                                                                                   \
        T v = S(ONE)(x[j], y[j], P1(y[j]), P2,                                                 \
                     has_gs ? (T)(gcoef * (double)gsc[j]) : gc, &g, K);                        \
        if (has_loss) loss[j] = v;                                                             \
        if (has_grad) grad[j] = g;                                                             \
        tail += (double)v;                                                                     \
    }                                                                                          \
    a->chunk_sum[item] = fce_combine_lanes(acc) + tail;                                        \
}

/* focal: P1 = a_t (from alpha and the target), P2 = gamma; kldiv uses neither */
#define FCE_DIV_FOCAL_AT(yv) (alpha < 0 ? (T)1 : (T)alpha * (yv) + (T)(1 - alpha) * (1 - (yv)))
#define FCE_DIV_ZERO(yv) ((T)0)
FCE_DIV_EW_CHUNK(focal, focal_one, FCE_DIV_FOCAL_AT, gamma)
FCE_DIV_EW_CHUNK(kldiv, kldiv_one, FCE_DIV_ZERO, (T)0)
#undef FCE_DIV_EW_CHUNK
#undef FCE_DIV_FOCAL_AT
#undef FCE_DIV_ZERO

/* The valid flag combinations: (loss stored?, grad?, per-element grad scale?) */
#define FCE_DIV_EW_DISPATCH(CHUNK, K)                                                          \
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

static void S(focal_item)(const void *xv, fce_idx item, const fce_div_ew_args *a, void *gv)
{
    const T *x = (const T *)xv;
    T *grad = (T *)gv;
    double gm = a->gamma;
    if (gm == 0.0) FCE_DIV_EW_DISPATCH(S(focal_chunk), 0);
    else if (gm == 1.0) FCE_DIV_EW_DISPATCH(S(focal_chunk), 1);
    else if (gm == 2.0) FCE_DIV_EW_DISPATCH(S(focal_chunk), 2);
    else FCE_DIV_EW_DISPATCH(S(focal_chunk), 3);
}

static void S(kldiv_item)(const void *xv, fce_idx item, const fce_div_ew_args *a, void *gv)
{
    const T *x = (const T *)xv;
    T *grad = (T *)gv;
    if (a->log_target) FCE_DIV_EW_DISPATCH(S(kldiv_chunk), 1);
    else FCE_DIV_EW_DISPATCH(S(kldiv_chunk), 0);
}
#undef FCE_DIV_EW_DISPATCH
