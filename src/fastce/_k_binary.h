/*
 * Template (see _kern_body.h): elementwise binary losses.
 */


/*
 * The n elements are processed in chunks of whole "rows" of length K (K = length of pos_weight,
 * which repeats along the last axis; K = chunk length when there is none).  Chunk boundaries
 * depend only on n and K, so the per-chunk double sums (combined in order by the caller) are
 * the same for any thread count.
 */

/*
 * BCE with logits, L = 1 + (p-1) y, a = |x|, e = exp(-a), sp = log1p(e) = softplus(-a):
 *   loss = w [ (1-y) x + L softplus(-x) ]
 *        = w [ (x >= 0 ? (1-y) : p y) a + L sp ]       (softplus(-x) = -x + softplus(x) for x < 0)
 * Each branch adds nonnegative terms, so confident predictions keep relative precision
 * (loss ~ e^-|x|), and a zero coefficient times an infinite |x| is taken as 0, which gives the
 * mathematical limits at x = +-inf instead of NaN.
 *   dL/dx = w [ L sigmoid(x) - p y ] = w [ (1-y) sigmoid(x) - p y sigmoid(-x) ]   (no cancellation)
 * with sigmoid(a) = 1/(1+e), sigmoid(-a) = e/(1+e).
 */
FCE_INLINE T S(bce_logits_one)(T xv, T yv, T p, T wv, T gs, T *g, const int PW)
{
    /* PW = 0 (no pos_weight, p = 1): L = 1 and p y = y spelled out; the compiler may not fold
     * 1 + 0 * y itself (y could be inf or NaN), and these are two of ~60 vector ops. */
    T av = xv < 0 ? -xv : xv;
    T e = FCE_EXPN(-av);
    /* softplus(-a) = log1p(e) with e in [0, 1]: a polynomial, no division (see _simd.h); the one
     * division left, 1/(1+e), feeds only the gradient and is dropped from loss-only loops. */
    T sp = FCE_LOG1P01(e);
    T inv = 1 / (1 + e);
    T L = PW ? 1 + (p - 1) * yv : (T)1;
    T coef = xv >= 0 ? 1 - yv : PW ? p * yv : yv;
    T lin = coef == 0 ? (T)0 : coef * av;
    T sig_pos = xv >= 0 ? inv : e * inv;     /* sigmoid(x) */
    T sig_neg = xv >= 0 ? e * inv : inv;     /* sigmoid(-x) */
    *g = gs * wv * ((1 - yv) * sig_pos - p * yv * sig_neg);
    return wv * (lin + L * sp);
}

/*
 * BCE from probabilities (torch's clamp of the logs at -100):
 *   loss = -w [ y max(log p, -100) + (1-y) max(log(1-p), -100) ]
 *   dL/dp = w (p - y) / max(p (1-p), 1e-12)
 * log(1-p) is log1m (_simd.h), one division where log1p(-p) took two: with the gradient's, three
 * per element instead of four (one thread, Zen 1, 4M elements, A/B on a quiet machine, the
 * validation included: float32 forward 37.5 -> 24.2 ms,
 * fwd+bwd 31.0 -> 24.7 ms; float64 66.5 -> 47.3 and 62.7 -> 53.0 ms), and 1.7 ulp instead of
 * 2.1 (float32).
 */
FCE_INLINE T S(bce_one)(T p, T yv, T unused, T wv, T gs, T *g, const int PW)
{
    (void)unused; (void)PW;
    T lp = FCE_LOG(p), lq = FCE_LOG1M(p);
    lp = lp < (T)-100 ? (T)-100 : lp;
    lq = lq < (T)-100 ? (T)-100 : lq;
    T den = p * (1 - p);
    den = den < (T)1e-12f ? (T)1e-12f : den;   /* torch's EPSILON is the float 1e-12 */
    *g = gs * wv * (p - yv) / den;
    return -wv * (yv * lp + (1 - yv) * lq);
}

/*
 * One chunk of an elementwise loss.  The flags are compile-time constants at every call site
 * (see bin_dispatch), so each combination becomes its own branch-free vector loop.  Lanes are
 * fixed per position within a row, so the chunk sum does not depend on the ISA's vector width.
 */
/* One element k of the chunk's current row: its loss into V and, at position q of the current
 * block, into the block buffers lb / gb, which FCE_BIN_STORE writes out once the block is done
 * (FCE_STORE_AFTER in _kernels.h: so the block's exp/log chains overlap). */
#define FCE_BIN_ELEM(ONE, k, q, V)                                                             \
    do {                                                                                       \
        T g_;                                                                                  \
        V = S(ONE)(xr[k], yr[k], has_pw ? pw[k] : (T)1, has_w ? wr[k] : (T)1,                  \
                   (T)(has_gs ? gcoef * (double)gsr[k] : gcoef), &g_, has_pw);                 \
        if (has_loss) lb[q] = V;                                                               \
        if (has_grad) gb[q] = g_;                                                              \
    } while (0)
#define FCE_BIN_STORE(k0, cnt)                                                                 \
    do {                                                                                       \
        if (has_loss) FCE_STORE_AFTER(lr + (k0), lb, cnt, cnt);                                \
        if (has_grad) FCE_STORE_AFTER(gr + (k0), gb, cnt, cnt);                                \
    } while (0)
/* float32: FCE_BIN_BLK consecutive vectors are summed per lane in float before the lane's
 * double sum.  Widening every vector to double took ~20% of the BCE loop (an extract and two
 * conversions per 16 elements); a block of 4 costs at most 3 roundings of 2^-24 relative to the
 * block (its terms are nonnegative for labels in [0, 1] and nonnegative weights), far below the
 * float32 result's own half ulp once the blocks are summed in double. */
#define FCE_BIN_BLK 4

#define FCE_BIN_CHUNK(NAME, ONE)                                                               \
FCE_INLINE void S(NAME##_chunk)(const T *x, fce_idx item, const fce_bin_args *a, T *grad,      \
                                const int has_loss, const int has_grad, const int has_w,       \
                                const int has_gs, const int has_pw)                            \
{                                                                                              \
    fce_idx start = item * a->rows_per_chunk * a->K;                                           \
    fce_idx stop = start + a->rows_per_chunk * a->K;                                           \
    fce_idx i0, k0;                                                                            \
    int l;                                                                                     \
    double acc[FCE_LANES] = {0}, tail = 0.0;                                                   \
    /* the scale in a local: a store through grad (T = double) could otherwise alias a->gcoef \
     * and force a reload per element */                                                     \
    const double gcoef = a->gcoef;                                                             \
    if (stop > a->n) stop = a->n;                                                              \
    for (i0 = start; i0 < stop; i0 += a->K) {                                                  \
        fce_idx len = stop - i0 < a->K ? stop - i0 : a->K;                                     \
        const T *xr = x + i0, *yr = (const T *)a->y + i0, *pw = (const T *)a->pw;             \
        const T *wr = has_w ? (const T *)a->w + i0 : NULL;                                     \
        const T *gsr = has_gs ? (const T *)a->gscale + i0 : NULL;                              \
        T *lr = has_loss ? (T *)a->loss + i0 : NULL, *gr = has_grad ? grad + i0 : NULL;       \
        k0 = 0;                                                                                \
        if (sizeof(T) == 4)                                                                    \
            for (; k0 + FCE_BIN_BLK * FCE_LANES <= len; k0 += FCE_BIN_BLK * FCE_LANES) {      \
                T part[FCE_LANES], lb[FCE_BIN_BLK * FCE_LANES], gb[FCE_BIN_BLK * FCE_LANES];   \
                int j;                                                                         \
                for (l = 0; l < FCE_LANES; l++) part[l] = 0;                                   \
                _Pragma("GCC unroll 4")                                                        \
                for (j = 0; j < FCE_BIN_BLK; j++) {                                            \
                    _Pragma("omp simd")                                                        \
                    for (l = 0; l < FCE_LANES; l++) {                                          \
                        T v;                                                                   \
                        FCE_BIN_ELEM(ONE, k0 + j * FCE_LANES + l, j * FCE_LANES + l, v);       \
                        part[l] += v;                                                          \
                    }                                                                          \
                }                                                                              \
                FCE_BIN_STORE(k0, FCE_BIN_BLK * FCE_LANES);                                    \
                _Pragma("omp simd")                                                            \
                for (l = 0; l < FCE_LANES; l++) acc[l] += (double)part[l];                     \
            }                                                                                  \
        for (; k0 + FCE_LANES <= len; k0 += FCE_LANES) {                                       \
            T lb[FCE_LANES], gb[FCE_LANES];                                                    \
            _Pragma("omp simd")                                                                \
            for (l = 0; l < FCE_LANES; l++) {                                                  \
                T v;                                                                           \
                FCE_BIN_ELEM(ONE, k0 + l, l, v);                                               \
                acc[l] += (double)v;                                                           \
            }                                                                                  \
            FCE_BIN_STORE(k0, FCE_LANES);                                                      \
        }                                                                                      \
        for (; k0 < len; k0++) {                                                               \
            T v, lb[1], gb[1];                                                                 \
            FCE_BIN_ELEM(ONE, k0, 0, v);                                                       \
            FCE_BIN_STORE(k0, 1);                                                              \
            tail += (double)v;                                                                 \
        }                                                                                      \
    }                                                                                          \
    a->chunk_sum[item] = fce_combine_lanes(acc) + tail;                                        \
}

FCE_BIN_CHUNK(bce_logits, bce_logits_one)
FCE_BIN_CHUNK(bce, bce_one)
#undef FCE_BIN_CHUNK
#undef FCE_BIN_ELEM
#undef FCE_BIN_STORE
#undef FCE_BIN_BLK

/* Expands to a call of CHUNK with the runtime flags turned into constants.  pos_weight is one
 * of them: a run-time "pw ? pw[k] : 1" inside the vector loop compiles to a masked load that
 * stalls the loop even when there is no pos_weight.  G (a constant) is whether a gradient is
 * wanted; the other half of the cases folds away. */
#define FCE_BIN_SWITCH(CHUNK, PW, G)                                                           \
    do {                                                                                       \
        int flags = (a->loss != NULL) | (G) << 1 | (a->w != NULL) << 2                         \
                  | ((G) && a->gscale != NULL) << 3;                                           \
        switch (flags) {                                                                       \
        case 0: CHUNK(x, item, a, grad, 0, 0, 0, 0, PW); break;                                \
        case 1: CHUNK(x, item, a, grad, 1, 0, 0, 0, PW); break;                                \
        case 4: CHUNK(x, item, a, grad, 0, 0, 1, 0, PW); break;                                \
        case 5: CHUNK(x, item, a, grad, 1, 0, 1, 0, PW); break;                                \
        case 2: CHUNK(x, item, a, grad, 0, 1, 0, 0, PW); break;                                \
        case 3: CHUNK(x, item, a, grad, 1, 1, 0, 0, PW); break;                                \
        case 6: CHUNK(x, item, a, grad, 0, 1, 1, 0, PW); break;                                \
        case 7: CHUNK(x, item, a, grad, 1, 1, 1, 0, PW); break;                                \
        case 10: CHUNK(x, item, a, grad, 0, 1, 0, 1, PW); break;                               \
        case 11: CHUNK(x, item, a, grad, 1, 1, 0, 1, PW); break;                               \
        case 14: CHUNK(x, item, a, grad, 0, 1, 1, 1, PW); break;                               \
        default: CHUNK(x, item, a, grad, 1, 1, 1, 1, PW); break;                               \
        }                                                                                      \
    } while (0)
#define FCE_BIN_DISPATCH(CHUNK, G)                                                             \
    do {                                                                                       \
        if (a->pw) FCE_BIN_SWITCH(CHUNK, 1, G); else FCE_BIN_SWITCH(CHUNK, 0, G);              \
    } while (0)

/* The loss-only loops and the loops with a gradient are separate functions: the latter are
 * scheduled with register pressure weighed (FCE_SCHED_PRESSURE_ON, _kernels.h).  A gradient
 * keeps more vectors live per element (1/(1+e), both sigmoids), and the plain pre-RA
 * scheduler's interleaving of the block spilled ~200 vectors per iteration (float32); weighed,
 * one thread, Zen 1: BCE-with-logits fwd+bwd 18-23% faster in float32, 5% in float64, BCE from
 * probabilities fwd+bwd 13% in float64.  The loss-only loops fit the registers and measured
 * the same or slower with it (float64 BCE-with-logits forward 11% slower), so keep the plain
 * scheduler. */
#define FCE_BIN_ITEMS(NAME)                                                                    \
static void S(NAME##_item_loss)(const T *x, fce_idx item, const fce_bin_args *a)               \
{                                                                                              \
    T *grad = NULL;                                                                            \
    FCE_BIN_DISPATCH(S(NAME##_chunk), 0);                                                      \
}                                                                                              \
FCE_SCHED_PRESSURE_ON                                                                          \
static void S(NAME##_item_grad)(const T *x, fce_idx item, const fce_bin_args *a, T *grad)      \
{                                                                                              \
    FCE_BIN_DISPATCH(S(NAME##_chunk), 1);                                                      \
}                                                                                              \
FCE_SCHED_PRESSURE_OFF                                                                         \
static void S(NAME##_item)(const void *xv, fce_idx item, const fce_bin_args *a, void *gv)      \
{                                                                                              \
    if (gv) S(NAME##_item_grad)((const T *)xv, item, a, (T *)gv);                              \
    else S(NAME##_item_loss)((const T *)xv, item, a);                                          \
}

FCE_BIN_ITEMS(bce_logits)
FCE_BIN_ITEMS(bce)
#undef FCE_BIN_ITEMS
#undef FCE_BIN_DISPATCH
#undef FCE_BIN_SWITCH

/*
 * Probabilities must lie in [0, 1] (BCE's input, the divergences' distributions): *first = the
 * index of the first value of p[0..n) outside, or -1.  NaN is not outside (it propagates to the
 * loss).  One read of p; NumPy's (p < 0) | (p > 1) wrote and reread two bool arrays and an or,
 * 15% of a float32 BCE call.  Blocks of 4096 are scanned branch-free (a vector or-reduction) and
 * only a block with a hit is searched element by element.
 */
static void S(first_outside_unit)(const T *p, fce_idx n, fce_idx *first)
{
    fce_idx i0, i;
    for (i0 = 0; i0 < n; i0 += 4096) {
        fce_idx stop = n - i0 < 4096 ? n : i0 + 4096;
        int bad = 0;
        _Pragma("omp simd reduction(|:bad)")
        for (i = i0; i < stop; i++) bad |= (p[i] < (T)0) | (p[i] > (T)1);
        if (bad)
            for (i = i0; i < stop; i++)
                if (p[i] < (T)0 || p[i] > (T)1) { *first = i; return; }
    }
    *first = -1;
}
