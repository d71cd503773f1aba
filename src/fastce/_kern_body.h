/*
 * Template body of _kernels.h: included once with FCE_T = float and once with double.
 * FCE_SUF(name) appends the dtype suffix; FCE_EXP / FCE_LOG / FCE_LOG1P are the dtype's
 * vectorisable functions from _simd.h.
 */
#define T FCE_T
#define S(name) FCE_SUF(name)

/* ===================================================== row primitives (contiguous, length n) */

FCE_INLINE T S(row_max)(const T *x, fce_idx n)
{
    T mk[FCE_LANES];
    fce_idx j = 0;
    int k;
    T m = -INFINITY;
    for (k = 0; k < FCE_LANES; k++) mk[k] = -INFINITY;
    for (; j + FCE_LANES <= n; j += FCE_LANES)
        _Pragma("omp simd")
        for (k = 0; k < FCE_LANES; k++) mk[k] = x[j + k] > mk[k] ? x[j + k] : mk[k];
    for (; j < n; j++) m = x[j] > m ? x[j] : m;
    for (k = 0; k < FCE_LANES; k++) m = mk[k] > m ? mk[k] : m;
    return m;
}

/* sum_j exp(x_j - m) in double; stores the exps in e when e != NULL (e may alias x). */
FCE_INLINE double S(row_sumexp)(const T *x, fce_idx n, T m, T *e)
{
    double acc[FCE_LANES] = {0};
    double tail = 0.0;
    fce_idx j = 0;
    int k;
    if (e) {
        for (; j + FCE_LANES <= n; j += FCE_LANES)
            _Pragma("omp simd")
            for (k = 0; k < FCE_LANES; k++) {
                T v = FCE_EXP(x[j + k] - m);
                e[j + k] = v;
                acc[k] += (double)v;
            }
        for (; j < n; j++) { T v = FCE_EXP(x[j] - m); e[j] = v; tail += (double)v; }
    } else {
        for (; j + FCE_LANES <= n; j += FCE_LANES)
            _Pragma("omp simd")
            for (k = 0; k < FCE_LANES; k++) acc[k] += (double)FCE_EXP(x[j + k] - m);
        for (; j < n; j++) tail += (double)FCE_EXP(x[j] - m);
    }
    return fce_combine_lanes(acc) + tail;
}

/* sum_{j != skip} exp(x_j - m) in double, in one pass (the skipped term is masked, not split
 * out, so there is one scalar tail instead of two); stores every exp, the skipped one included,
 * in e when e != NULL (e may alias x). */
FCE_INLINE double S(row_sumexp_skip_k)(const T *x, fce_idx n, T m, T *e, fce_idx skip,
                                       const int store)
{
    double acc[FCE_LANES] = {0};
    double tail = 0.0;
    fce_idx j = 0;
    int k;
    for (; j + FCE_LANES <= n; j += FCE_LANES)
        _Pragma("omp simd")
        for (k = 0; k < FCE_LANES; k++) {
            T v = FCE_EXP(x[j + k] - m);
            if (store) e[j + k] = v;
            acc[k] += j + k == skip ? 0.0 : (double)v;
        }
    for (; j < n; j++) {
        T v = FCE_EXP(x[j] - m);
        if (store) e[j] = v;
        tail += j == skip ? 0.0 : (double)v;
    }
    return fce_combine_lanes(acc) + tail;
}

FCE_INLINE double S(row_sumexp_skip)(const T *x, fce_idx n, T m, T *e, fce_idx skip)
{
    return e ? S(row_sumexp_skip_k)(x, n, m, e, skip, 1) : S(row_sumexp_skip_k)(x, n, m, e, skip, 0);
}

/*
 * rest = s - 1 for s = sum_j exp(x_j - m), without rounding 1 + tiny.  When s >= 1.5 (or NaN),
 * s - 1 is exact to a few ulps.  Otherwise the row is confident: one term is exp(0) = 1 (the
 * max) and the others are small, so they are summed again with that term left out.  This keeps
 * log s = log1p(rest) to full relative precision where log(s) would be exactly 0, and costs a
 * second pass only on such rows.  `v` is the row itself (is_exp = 0, compare with m) or the
 * stored exps (is_exp = 1, compare with 1), for callers whose input was overwritten in place.
 */
FCE_INLINE double S(row_rest)(const T *v, fce_idx n, T m, double s, const int is_exp)
{
    fce_idx i = 0, j;
    double r = 0.0;
    if (!(s < 1.5)) return s - 1.0;
    T top = is_exp ? (T)1 : m;
    while (i < n && v[i] != top) i++;
    if (i == n) return s - 1.0;
    if (!is_exp)
        return S(row_sumexp)(v, i, m, NULL) + S(row_sumexp)(v + i + 1, n - i - 1, m, NULL);
    for (j = 0; j < n; j++) r += j == i ? 0.0 : (double)v[j];
    return r;
}

/* sum_j k_j (m - x_j) with k_j = w_j (w == NULL: 1), terms with k_j == 0 skipped so that a
 * masked (-inf) logit of zero weight contributes 0 rather than 0*inf = NaN.
 * Every term is >= 0 (m is the row max), so the sum has no cancellation. */
FCE_INLINE double S(row_wdist)(const T *x, const double *w, fce_idx n, T m)
{
    double acc[FCE_LANES] = {0};
    double tail = 0.0;
    fce_idx j = 0;
    int k;
    if (w) {
        for (; j + FCE_LANES <= n; j += FCE_LANES)
            _Pragma("omp simd")
            for (k = 0; k < FCE_LANES; k++) {
                double wk = w[j + k];
                acc[k] += wk == 0.0 ? 0.0 : wk * (double)(m - x[j + k]);
            }
        for (; j < n; j++) tail += w[j] == 0.0 ? 0.0 : w[j] * (double)(m - x[j]);
    } else {
        for (; j + FCE_LANES <= n; j += FCE_LANES)
            _Pragma("omp simd")
            for (k = 0; k < FCE_LANES; k++) acc[k] += (double)(m - x[j + k]);
        for (; j < n; j++) tail += (double)(m - x[j]);
    }
    return fce_combine_lanes(acc) + tail;
}

/* Soft targets: k_j = w_j ((1-eps) q_j + eps/C).  Returns sum_j k_j (m - x_j) (zero-k terms
 * skipped, as above) and stores sum_j k_j in *ksum. */
FCE_INLINE double S(row_qdist)(const T *x, const T *q, const double *w, fce_idx n, T m,
                                  double keep, double spread, double *ksum)
{
    double acc[FCE_LANES] = {0}, qacc[FCE_LANES] = {0};
    double tail = 0.0, qtail = 0.0;
    fce_idx j = 0;
    int k;
    for (; j + FCE_LANES <= n; j += FCE_LANES)
        _Pragma("omp simd")
        for (k = 0; k < FCE_LANES; k++) {
            double kk = (keep * (double)q[j + k] + spread) * (w ? w[j + k] : 1.0);
            acc[k] += kk == 0.0 ? 0.0 : kk * (double)(m - x[j + k]);
            qacc[k] += kk;
        }
    for (; j < n; j++) {
        double kk = (keep * (double)q[j] + spread) * (w ? w[j] : 1.0);
        tail += kk == 0.0 ? 0.0 : kk * (double)(m - x[j]);
        qtail += kk;
    }
    *ksum = fce_combine_lanes(qacc) + qtail;
    return fce_combine_lanes(acc) + tail;
}

/* sum_j a_j (b == NULL) or sum_j a_j b_j, in double */
FCE_INLINE double S(row_dot)(const T *a, const T *b, fce_idx n)
{
    double acc[FCE_LANES] = {0};
    double tail = 0.0;
    fce_idx j = 0;
    int k;
    if (b) {
        for (; j + FCE_LANES <= n; j += FCE_LANES)
            _Pragma("omp simd")
            for (k = 0; k < FCE_LANES; k++) acc[k] += (double)a[j + k] * (double)b[j + k];
        for (; j < n; j++) tail += (double)a[j] * (double)b[j];
    } else {
        for (; j + FCE_LANES <= n; j += FCE_LANES)
            _Pragma("omp simd")
            for (k = 0; k < FCE_LANES; k++) acc[k] += (double)a[j + k];
        for (; j < n; j++) tail += (double)a[j];
    }
    return fce_combine_lanes(acc) + tail;
}

/* ============================================ column primitives (tile of bw columns, stride B) */

FCE_INLINE void S(col_max)(const T *x, fce_idx C, fce_idx B, fce_idx bw, T *m)
{
    fce_idx c, b;
    for (b = 0; b < bw; b++) m[b] = -INFINITY;
    for (c = 0; c < C; c++) {
        const T *xc = x + c * B;
        for (b = 0; b < bw; b++) m[b] = xc[b] > m[b] ? xc[b] : m[b];
    }
}

/* Column version: rest[b] = s_b - 1 accurately, by counting the terms equal to 1 apart from the
 * others (rest = (ones - 1) + sum of the others; NaN terms go to the sum).  Branch-free, so it
 * vectorises across the columns. */
FCE_INLINE void S(col_sumexp)(const T *x, fce_idx C, fce_idx B, fce_idx bw, const T *m,
                                 double *rest, T *e, fce_idx eB)
{
    double ones[FCE_TILE];
    fce_idx c, b;
    for (b = 0; b < bw; b++) { rest[b] = 0.0; ones[b] = 0.0; }
    for (c = 0; c < C; c++) {
        const T *xc = x + c * B;
        T *ec = e ? e + c * eB : NULL;
        if (ec) {
            for (b = 0; b < bw; b++) {
                T v = FCE_EXP(xc[b] - m[b]);
                double one = (double)(v == (T)1);
                ec[b] = v;
                rest[b] += (double)v - one;
                ones[b] += one;
            }
        } else {
            for (b = 0; b < bw; b++) {
                T v = FCE_EXP(xc[b] - m[b]);
                double one = (double)(v == (T)1);
                rest[b] += (double)v - one;
                ones[b] += one;
            }
        }
    }
    for (b = 0; b < bw; b++) rest[b] = (ones[b] - 1.0) + rest[b];
}

/* ====================================================================== item decoding */

/*
 * Three kinds of item (see fce_n_items in _kernels.h):
 *   ROW   B == 1, C > FCE_SMALL_C: one contiguous row, vectorised along the classes.
 *   COLS  B > 1: a tile of up to FCE_TILE columns of one a-slab, class stride B.
 *   BLOCK B == 1, C <= FCE_SMALL_C: up to FCE_TILE short rows, transposed into a stack buffer
 *         and run through the COLS code, so the work vectorises across rows instead of paying
 *         per-row overhead on a handful of classes.
 */
typedef struct { int kind; fce_idx off; fce_idx soff; fce_idx bw; } S(fce_item);

/* off: element offset of the item's first entry; soff: its first sample index. */
FCE_INLINE S(fce_item) S(decode)(fce_idx A, fce_idx C, fce_idx B, fce_idx item)
{
    S(fce_item) it;
    if (B == 1 && C > FCE_SMALL_C) {
        it.kind = FCE_ROW; it.off = item * C; it.soff = item; it.bw = 1;
    } else if (B == 1) {
        fce_idx r0 = item * FCE_TILE;
        it.kind = FCE_BLOCK; it.off = r0 * C; it.soff = r0;
        it.bw = A - r0 < FCE_TILE ? A - r0 : FCE_TILE;
    } else {
        fce_idx ntile = (B + FCE_TILE - 1) / FCE_TILE;
        fce_idx a = item / ntile, b0 = (item % ntile) * FCE_TILE;
        it.kind = FCE_COLS; it.off = a * C * B + b0; it.soff = a * B + b0;
        it.bw = B - b0 < FCE_TILE ? B - b0 : FCE_TILE;
    }
    return it;
}

/* BLOCK items: rows (bw x C, contiguous) <-> columns (C x bw, contiguous).  The switch hands
 * GCC a constant C for the common tiny class counts, which turns the transposes into vector
 * shuffles instead of scalar gathers. */
FCE_INLINE void S(transpose_k)(const T *src, fce_idx C, fce_idx bw, T *dst, const int to_cols)
{
    fce_idx b, c;
    if (to_cols) {
        for (c = 0; c < C; c++)
            for (b = 0; b < bw; b++) dst[c * bw + b] = src[b * C + c];
    } else {
        for (b = 0; b < bw; b++)
            for (c = 0; c < C; c++) dst[b * C + c] = src[c * bw + b];
    }
}

FCE_INLINE void S(transpose)(const T *src, fce_idx C, fce_idx bw, T *dst, const int to_cols)
{
    switch (C) {
    case 2: S(transpose_k)(src, 2, bw, dst, to_cols); break;
    case 3: S(transpose_k)(src, 3, bw, dst, to_cols); break;
    case 4: S(transpose_k)(src, 4, bw, dst, to_cols); break;
    case 8: S(transpose_k)(src, 8, bw, dst, to_cols); break;
    case 10: S(transpose_k)(src, 10, bw, dst, to_cols); break;
    default: S(transpose_k)(src, C, bw, dst, to_cols); break;
    }
}

FCE_INLINE void S(rows_to_cols)(const T *src, fce_idx C, fce_idx bw, T *dst)
{
    S(transpose)(src, C, bw, dst, 1);
}

FCE_INLINE void S(cols_to_rows)(const T *src, fce_idx C, fce_idx bw, T *dst)
{
    S(transpose)(src, C, bw, dst, 0);
}

/* Column view of an item: for COLS the data in place (stride B); for BLOCK a transposed copy in
 * buf (stride bw).  Returns the pointer to column data and sets *stride. */
FCE_INLINE const T *S(cols_view)(const T *x, fce_idx C, fce_idx B, S(fce_item) it, T *buf,
                                 fce_idx *stride)
{
    if (it.kind == FCE_BLOCK) {
        S(rows_to_cols)(x + it.off, C, it.bw, buf);
        *stride = it.bw;
        return buf;
    }
    *stride = B;
    return x + it.off;
}

/* ========================================================================== row ops */

/* torch.logsumexp semantics: an infinite max is not subtracted (so all -inf -> -inf,
 * any +inf -> +inf) */
FCE_KERNEL static void S(lse_item)(const T *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item,
                                   T *out)
{
    S(fce_item) it = S(decode)(A, C, B, item);
    fce_idx b, st;
    if (it.kind == FCE_ROW) {
        T m = S(row_max)(x + it.off, C);
        if (isinf(m)) m = 0;
        double s = S(row_sumexp)(x + it.off, C, m, NULL);
        out[it.soff] = (T)((double)m + log1p(S(row_rest)(x + it.off, C, m, s, 0)));
    } else {
        T m[FCE_TILE], buf[FCE_SMALL_C * FCE_TILE]; double s[FCE_TILE];
        const T *xt = S(cols_view)(x, C, B, it, buf, &st);
        S(col_max)(xt, C, st, it.bw, m);
        for (b = 0; b < it.bw; b++) m[b] = isinf(m[b]) ? (T)0 : m[b];
        S(col_sumexp)(xt, C, st, it.bw, m, s, NULL, 0);
        _Pragma("omp simd")
        for (b = 0; b < it.bw; b++) out[it.soff + b] = (T)((double)m[b] + fce_log1p_d(s[b]));
    }
}

/* log_softmax = (x - m) - log(s): subtracting m first keeps the offsets of rows far from 0.
 * softmax = exp(x - m) / s.  One driver for both: they share everything but the last pass. */
FCE_INLINE void S(softmax_like)(const T *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item,
                                T *out, const int is_log)
{
    S(fce_item) it = S(decode)(A, C, B, item);
    fce_idx j, c, b, st;
    if (it.kind == FCE_ROW) {
        const T *xr = x + it.off; T *o = out + it.off;
        T m = S(row_max)(xr, C);
        if (is_log) {
            double s = S(row_sumexp)(xr, C, m, NULL);
            T ls = (T)log1p(S(row_rest)(xr, C, m, s, 0));
            for (j = 0; j < C; j++) o[j] = (xr[j] - m) - ls;
        } else {
            T r = (T)(1.0 / S(row_sumexp)(xr, C, m, o));
            for (j = 0; j < C; j++) o[j] *= r;
        }
    } else {
        T m[FCE_TILE], f[FCE_TILE], buf[FCE_SMALL_C * FCE_TILE]; double s[FCE_TILE];
        const T *xt = S(cols_view)(x, C, B, it, buf, &st);
        /* BLOCK results go to buf (in place) and are transposed back at the end */
        T *ot = it.kind == FCE_BLOCK ? buf : out + it.off;
        S(col_max)(xt, C, st, it.bw, m);
        S(col_sumexp)(xt, C, st, it.bw, m, s, is_log ? NULL : ot, st);
        _Pragma("omp simd")
        for (b = 0; b < it.bw; b++) f[b] = is_log ? (T)fce_log1p_d(s[b]) : (T)(1.0 / (1.0 + s[b]));
        for (c = 0; c < C; c++) {
            const T *xc = xt + c * st; T *oc = ot + c * st;
            if (is_log)
                for (b = 0; b < it.bw; b++) oc[b] = (xc[b] - m[b]) - f[b];
            else
                for (b = 0; b < it.bw; b++) oc[b] *= f[b];
        }
        if (it.kind == FCE_BLOCK) S(cols_to_rows)(buf, C, it.bw, out + it.off);
    }
}

FCE_KERNEL static void S(log_softmax_item)(const T *x, fce_idx A, fce_idx C, fce_idx B,
                                           fce_idx item, T *out)
{
    S(softmax_like)(x, A, C, B, item, out, 1);
}

FCE_KERNEL static void S(softmax_item)(const T *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item,
                                       T *out)
{
    S(softmax_like)(x, A, C, B, item, out, 0);
}

/* VJPs.  log_softmax: g - softmax(x) * sum(g), with softmax(x) = exp(output).
 *        softmax:     p * (g - sum(p g)).
 * Memory-bound elementwise work after one reduction; BLOCK items use the strided column code
 * directly on the rows (stride 1 across classes is not needed for speed here). */
FCE_INLINE void S(vjp_like)(const T *y, const T *g, fce_idx A, fce_idx C, fce_idx B, fce_idx item,
                            T *out, const int is_log)
{
    S(fce_item) it = S(decode)(A, C, B, item);
    fce_idx j, c, b;
    if (it.kind == FCE_ROW) {
        const T *yr = y + it.off, *gr = g + it.off; T *o = out + it.off;
        if (is_log) {
            T sg = (T)S(row_dot)(gr, NULL, C);
            for (j = 0; j < C; j++) o[j] = gr[j] - FCE_EXP(yr[j]) * sg;
        } else {
            T d = (T)S(row_dot)(yr, gr, C);
            for (j = 0; j < C; j++) o[j] = yr[j] * (gr[j] - d);
        }
        return;
    }
    /* element (c, b) of the item sits at off + c*cs + b*bs */
    fce_idx cs = it.kind == FCE_BLOCK ? 1 : B, bs = it.kind == FCE_BLOCK ? C : 1;
    double d[FCE_TILE]; T dt[FCE_TILE];
    for (b = 0; b < it.bw; b++) d[b] = 0.0;
    for (c = 0; c < C; c++) {
        const T *yc = y + it.off + c * cs, *gc = g + it.off + c * cs;
        for (b = 0; b < it.bw; b++)
            d[b] += is_log ? (double)gc[b * bs] : (double)yc[b * bs] * (double)gc[b * bs];
    }
    for (b = 0; b < it.bw; b++) dt[b] = (T)d[b];
    for (c = 0; c < C; c++) {
        const T *yc = y + it.off + c * cs, *gc = g + it.off + c * cs; T *oc = out + it.off + c * cs;
        for (b = 0; b < it.bw; b++)
            oc[b * bs] = is_log ? gc[b * bs] - FCE_EXP(yc[b * bs]) * dt[b]
                                : yc[b * bs] * (gc[b * bs] - dt[b]);
    }
}

FCE_KERNEL static void S(log_softmax_vjp_item)(const T *y, const T *g, fce_idx A, fce_idx C,
                                               fce_idx B, fce_idx item, T *out)
{
    S(vjp_like)(y, g, A, C, B, item, out, 1);
}

FCE_KERNEL static void S(softmax_vjp_item)(const T *p, const T *g, fce_idx A, fce_idx C,
                                           fce_idx B, fce_idx item, T *out)
{
    S(vjp_like)(p, g, A, C, B, item, out, 0);
}

/* ============================================================ cross-entropy, class indices */

/*
 * Per sample n with target y, weights w (1 when absent), W = sum_c w_c, smoothing eps:
 *   nll_n    = -log p_y
 *   smooth_n = sum_c w_c (-log p_c) = sum_c w_c (m - x_c) + W log s
 *   loss_n   = (1-eps) w_y nll_n + (eps/C) smooth_n          (0 when y == ignore_index)
 * With e_j = exp(x_j - m), s = sum_j e_j and r = sum_{j != y} e_j (the target left out):
 *   nll_n = log1p(r)                 when x_y is the row max (then e_y == 1 exactly)
 *         = (m - x_y) + log(s)       otherwise (both terms >= 0, no cancellation).
 * The first form keeps full relative precision for confident predictions (nll ~ 1e-30), where
 * lse - x_y rounds to 0.  Gradient, g the sample's scale (1/denominator * grad_output):
 *   dL/dx_j = g [ p_j ((1-eps) w_y + (eps/C) W) - (1-eps) w_y [j == y] - (eps/C) w_j ]
 * and at the target  p_y - 1 = -r / s  exactly, again without cancellation.
 * z-loss z (PaLM): loss_n += z lse^2 with lse = m + log s, so dL/dx_j gains g 2 z lse p_j,
 * which joins the p_j coefficient as zc = 2 z lse.  Softcap (Gemma 2) is applied before all of
 * this by the *_item wrappers (see "softcap" below).
 */
typedef struct {
    const int64_t *tgt; const double *w; double W; int64_t ignore; double eps;
    double *loss; const double *gscale; double gcoef; double zl; double cap;
} S(ce_args);

/* z-loss term and its gradient coefficient; zero (not 0*inf) when z-loss is off. */
FCE_INLINE double S(zloss)(double zl, double lse) { return zl != 0.0 ? zl * lse * lse : 0.0; }
FCE_INLINE double S(zcoef)(double zl, double lse) { return zl != 0.0 ? 2.0 * zl * lse : 0.0; }

/* (ey - 1) is 0 for a finite max and NaN for an infinite one (inf - inf), so a row whose max
 * is +-inf gets NaN, as log_softmax gives there, rather than log1p(0) = 0. */
FCE_INLINE double S(ce_nll_from_parts)(T m, T xy, double ey, double log_s, double log1p_r)
{
    return xy == m ? log1p_r + (ey - 1.0) : (double)(m - xy) + log_s;
}

/* Gradient at the target class (see the derivation above). */
FCE_INLINE double S(ce_target_grad)(double g, double keep, double spread, double W, double wy,
                                    double ey, double r, double s)
{
    return g * (keep * wy * (-r / s) + spread * (W * (ey / s) - wy));
}

FCE_INLINE void S(ce_index_row)(const T *xr, fce_idx C, fce_idx sidx, const S(ce_args) *a, T *gr)
{
    double keep = 1.0 - a->eps, spread = a->eps / (double)C;
    fce_idx j;
    int64_t y = a->tgt[sidx];
    if (y == a->ignore || (uint64_t)y >= (uint64_t)C) {
        /* out of range despite validation (the caller's target array changed under us):
         * NaN, never an out-of-bounds access */
        a->loss[sidx] = y == a->ignore ? 0.0 : NAN;
        if (gr) memset(gr, 0, (size_t)C * sizeof(T));
        return;
    }
    double wy = a->w ? a->w[y] : 1.0;
    T m = S(row_max)(xr, C);
    T xy = xr[y];
    double wd = spread != 0.0 ? S(row_wdist)(xr, a->w, C, m) : 0.0;
    /* the target's exp left out of the sum, so r = sum_{j != y} e_j is exact */
    double r = S(row_sumexp_skip)(xr, C, m, gr, y);
    double ey = (double)FCE_EXP(xy - m);
    double s = r + ey, log_s = log(s);
    double nll = S(ce_nll_from_parts)(m, xy, ey, log_s, log1p(r));
    double smooth = spread != 0.0 ? wd + a->W * log_s : 0.0;
    double lse = (double)m + log_s;
    a->loss[sidx] = keep * wy * nll + spread * smooth + S(zloss)(a->zl, lse);
    if (gr) {
        double g = a->gcoef * (a->gscale ? a->gscale[sidx] : 1.0);
        double zc = S(zcoef)(a->zl, lse);
        T kp = (T)(g * (keep * wy + spread * a->W + zc) / s);
        T ks = (T)(g * spread);
        if (a->w && spread != 0.0) {
            for (j = 0; j < C; j++) gr[j] = gr[j] * kp - ks * (T)a->w[j];
        } else {
            for (j = 0; j < C; j++) gr[j] = gr[j] * kp - ks;
        }
        gr[y] = (T)(S(ce_target_grad)(g, keep, spread, a->W, wy, ey, r, s) + g * zc * ey / s);
    }
}

/* bw samples laid out as columns: element (c, b) at xt[c*st + b]; gt may alias xt.
 * Per-column scalars live in arrays of one width per loop (double for the loss math, T for the
 * gradient pass, mask included) so that every loop over b vectorises. */
FCE_INLINE void S(ce_index_cols)(const T *xt, fce_idx C, fce_idx st, fce_idx bw, fce_idx soff,
                                 const S(ce_args) *a, T *gt)
{
    double keep = 1.0 - a->eps, spread = a->eps / (double)C;
    const int64_t *tg = a->tgt + soff;
    T m[FCE_TILE], xy[FCE_TILE], live[FCE_TILE], kpt[FCE_TILE], kst[FCE_TILE];
    double r[FCE_TILE], wd[FCE_TILE], ey[FCE_TILE], s[FCE_TILE], ls[FCE_TILE], l1r[FCE_TILE];
    double gg[FCE_TILE], wyv[FCE_TILE], zc[FCE_TILE], dxy[FCE_TILE], liv[FCE_TILE], bad[FCE_TILE];
    int64_t yy[FCE_TILE];
    fce_idx c, b;
    int64_t ignore = a->ignore;
    double gcoef = a->gcoef;
    const double *w = a->w, *gsc = a->gscale ? a->gscale + soff : NULL;
    S(col_max)(xt, C, st, bw, m);
    /* loops kept to one lane width each (64-bit here, T below) so that they vectorise */
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        int64_t y = tg[b];
        int ign = y == ignore;
        /* validated in Python; re-checked so a target changed under us gives NaN, not an
         * out-of-bounds access */
        int out_of_range = !ign && (uint64_t)y >= (uint64_t)C;
        yy[b] = ign || out_of_range ? -1 : y;  /* -1 never matches a class below */
        liv[b] = ign || out_of_range ? 0.0 : 1.0;
        bad[b] = out_of_range ? NAN : 0.0;
    }
    memset(r, 0, (size_t)bw * sizeof(double));
    memset(wd, 0, (size_t)bw * sizeof(double));
    /* gather; class 0 stands in for ignored samples (C == 0: there is no class to read) */
    if (C > 0) {
        _Pragma("omp simd")
        for (b = 0; b < bw; b++) {
            T v = xt[(yy[b] < 0 ? 0 : yy[b]) * st + b];
            xy[b] = yy[b] < 0 ? m[b] : v;
        }
    } else {
        for (b = 0; b < bw; b++) xy[b] = m[b];
    }
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        dxy[b] = (double)(m[b] - xy[b]);       /* 0 exactly when the target is the max */
        live[b] = (T)liv[b];
        gg[b] = liv[b] * gcoef * (gsc ? gsc[b] : 1.0);
    }
    if (w && C > 0) {
        _Pragma("omp simd")
        for (b = 0; b < bw; b++) wyv[b] = liv[b] != 0.0 ? w[yy[b] < 0 ? 0 : yy[b]] : 0.0;
    } else {
        for (b = 0; b < bw; b++) wyv[b] = liv[b];
    }
    for (c = 0; c < C; c++) {
        const T *xc = xt + c * st;
        double wc = a->w ? a->w[c] : 1.0;
        /* before the exps are stored: with an in-place gradient gc aliases xc */
        if (spread != 0.0 && wc != 0.0)
            for (b = 0; b < bw; b++) wd[b] += wc * (double)(m[b] - xc[b]);
        if (gt) {
            T *gc = gt + c * st;
            for (b = 0; b < bw; b++) {
                T v = FCE_EXP(xc[b] - m[b]);
                gc[b] = v;
                r[b] += c == yy[b] ? 0.0 : (double)v;
            }
        } else {
            for (b = 0; b < bw; b++) {
                T v = FCE_EXP(xc[b] - m[b]);
                r[b] += c == yy[b] ? 0.0 : (double)v;
            }
        }
    }
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        ey[b] = (double)FCE_EXP(xy[b] - m[b]);
        s[b] = r[b] + ey[b];
        ls[b] = fce_log_d(s[b]);
        l1r[b] = fce_log1p_d(r[b]);
    }
    /* struct fields in locals: stores through loss could otherwise alias them */
    double W = a->W, zl = a->zl, *loss = a->loss + soff;
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        /* ce_nll_from_parts, with the "target is the max" test done in double */
        double nll = dxy[b] == 0.0 ? l1r[b] + (ey[b] - 1.0) : dxy[b] + ls[b];
        double smooth = wd[b] + W * ls[b];
        double lse = (double)m[b] + ls[b];
        double l = keep * wyv[b] * nll + spread * smooth + S(zloss)(zl, lse);
        loss[b] = (liv[b] != 0.0 ? l : 0.0) + bad[b];
        zc[b] = S(zcoef)(zl, lse);
        kpt[b] = (T)(gg[b] * (keep * wyv[b] + spread * W + zc[b]) / s[b]);
        kst[b] = (T)(gg[b] * spread);
    }
    if (!gt) return;
    for (c = 0; c < C; c++) {
        T *gc = gt + c * st;
        T wc = a->w ? (T)a->w[c] : (T)1;
        for (b = 0; b < bw; b++) {
            /* ignored samples: the select keeps NaN/inf logits out of their zero gradient */
            T v = gc[b] * kpt[b] - kst[b] * wc;
            gc[b] = live[b] != 0 ? v : (T)0;
        }
    }
    /* scatter of the target gradients: distinct columns, so no two lanes write one address */
    _Pragma("omp simd")
    for (b = 0; b < bw; b++)
        if (yy[b] >= 0)
            gt[yy[b] * st + b] = (T)(S(ce_target_grad)(gg[b], keep, spread, W, wyv[b], ey[b],
                                                       r[b], s[b]) + gg[b] * zc[b] * ey[b] / s[b]);
}

/* Defined below, after the probability-target kernels it also drives. */
static void S(ce_softcap_item)(const T *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item,
                               const S(ce_args) *ai, const void *ap, T *grad);

FCE_KERNEL static void S(ce_index_item)(const T *x, fce_idx A, fce_idx C, fce_idx B,
                                        fce_idx item, const S(ce_args) *a, T *grad)
{
    S(fce_item) it = S(decode)(A, C, B, item);
    if (a->cap != 0.0) {
        S(ce_softcap_item)(x, A, C, B, item, a, NULL, grad);
    } else if (it.kind == FCE_ROW) {
        S(ce_index_row)(x + it.off, C, it.soff, a, grad ? grad + it.off : NULL);
    } else if (it.kind == FCE_COLS) {
        S(ce_index_cols)(x + it.off, C, B, it.bw, it.soff, a, grad ? grad + it.off : NULL);
    } else {
        T buf[FCE_SMALL_C * FCE_TILE];
        S(rows_to_cols)(x + it.off, C, it.bw, buf);
        S(ce_index_cols)(buf, C, it.bw, it.bw, it.soff, a, grad ? buf : NULL);
        if (grad) S(cols_to_rows)(buf, C, it.bw, grad + it.off);
    }
}

/* ====================================================== cross-entropy, probability targets */

/*
 * k_c = w_c ((1-eps) q_c + eps/C), K = sum_c k_c, s = 1 + rest (row_rest / col_sumexp).
 *   loss_n = -sum_c k_c log p_c = sum_c k_c (m - x_c) + K log1p(rest)     (all terms >= 0)
 *   dL/dx_j = g (p_j K - k_j)
 * At a max element (e_j = 1) p_j K - k_j = ((K - k_j) - k_j rest) / s, which keeps the tiny
 * gradient of a confident one-hot target instead of cancelling 1/s - 1 to 0.
 * z-loss adds z lse^2 per sample and 2 z lse to the p_j coefficient K (as for class indices).
 */
typedef struct {
    const T *q; const double *w; double eps; double *loss; const double *gscale; double gcoef;
    double zl; double cap;
} S(ce_prob_args);

FCE_INLINE T S(ce_prob_grad)(T e, double kj, double K, double rest, double g)
{
    double s = 1.0 + rest;
    return (T)(e == (T)1 ? g * ((K - kj) - kj * rest) / s : g * ((double)e * K / s - kj));
}

FCE_INLINE void S(ce_prob_row)(const T *xr, const T *qr, fce_idx C, fce_idx sidx,
                               const S(ce_prob_args) *a, T *gr)
{
    double keep = 1.0 - a->eps, spread = a->eps / (double)C;
    fce_idx j;
    T m = S(row_max)(xr, C);
    double K;
    double qd = S(row_qdist)(xr, qr, a->w, C, m, keep, spread, &K);
    double s = S(row_sumexp)(xr, C, m, gr);
    /* with an in-place gradient the row now holds the exps: row_rest reads those */
    double rest = gr ? S(row_rest)(gr, C, m, s, 1) : S(row_rest)(xr, C, m, s, 0);
    double lse = (double)m + log1p(rest);
    a->loss[sidx] = qd + (K == 0.0 ? 0.0 : K * log1p(rest))    /* no mass: 0 even for C = 0 */
                  + S(zloss)(a->zl, lse);
    if (gr) {
        double g = a->gcoef * (a->gscale ? a->gscale[sidx] : 1.0);
        double Kz = K + S(zcoef)(a->zl, lse);
        for (j = 0; j < C; j++) {
            double kj = (keep * (double)qr[j] + spread) * (a->w ? a->w[j] : 1.0);
            gr[j] = S(ce_prob_grad)(gr[j], kj, Kz, rest, g);
        }
    }
}

FCE_INLINE void S(ce_prob_cols)(const T *xt, const T *qt, fce_idx C, fce_idx st, fce_idx bw,
                                fce_idx soff, const S(ce_prob_args) *a, T *gt)
{
    double keep = 1.0 - a->eps, spread = a->eps / (double)C;
    T m[FCE_TILE]; double rest[FCE_TILE], qd[FCE_TILE], K[FCE_TILE], gg[FCE_TILE];
    fce_idx c, b;
    S(col_max)(xt, C, st, bw, m);
    for (b = 0; b < bw; b++) { qd[b] = 0.0; K[b] = 0.0; }
    for (c = 0; c < C; c++) {
        const T *xc = xt + c * st, *qc = qt + c * st;
        double wc = a->w ? a->w[c] : 1.0;
        for (b = 0; b < bw; b++) {
            double kk = (keep * (double)qc[b] + spread) * wc;
            qd[b] += kk == 0.0 ? 0.0 : kk * (double)(m[b] - xc[b]);
            K[b] += kk;
        }
    }
    S(col_sumexp)(xt, C, st, bw, m, rest, gt, st);
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        fce_idx sidx = soff + b;
        double l1 = fce_log1p_d(rest[b]), lse = (double)m[b] + l1;
        a->loss[sidx] = qd[b] + (K[b] == 0.0 ? 0.0 : K[b] * l1) + S(zloss)(a->zl, lse);
        gg[b] = a->gcoef * (a->gscale ? a->gscale[sidx] : 1.0);
        K[b] += S(zcoef)(a->zl, lse);         /* from here on K is the p_j coefficient */
    }
    if (!gt) return;
    for (c = 0; c < C; c++) {
        T *gc = gt + c * st; const T *qc = qt + c * st;
        double wc = a->w ? a->w[c] : 1.0;
        for (b = 0; b < bw; b++)
            gc[b] = S(ce_prob_grad)(gc[b], (keep * (double)qc[b] + spread) * wc, K[b], rest[b], gg[b]);
    }
}

FCE_KERNEL static void S(ce_prob_item)(const T *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item,
                                       const S(ce_prob_args) *a, T *grad)
{
    S(fce_item) it = S(decode)(A, C, B, item);
    if (a->cap != 0.0) {
        S(ce_softcap_item)(x, A, C, B, item, NULL, a, grad);
    } else if (it.kind == FCE_ROW) {
        S(ce_prob_row)(x + it.off, a->q + it.off, C, it.soff, a, grad ? grad + it.off : NULL);
    } else if (it.kind == FCE_COLS) {
        S(ce_prob_cols)(x + it.off, a->q + it.off, C, B, it.bw, it.soff, a,
                        grad ? grad + it.off : NULL);
    } else {
        T buf[FCE_SMALL_C * FCE_TILE], qbuf[FCE_SMALL_C * FCE_TILE];
        S(rows_to_cols)(x + it.off, C, it.bw, buf);
        S(rows_to_cols)(a->q + it.off, C, it.bw, qbuf);
        S(ce_prob_cols)(buf, qbuf, C, it.bw, it.bw, it.soff, a, grad ? buf : NULL);
        if (grad) S(cols_to_rows)(buf, C, it.bw, grad + it.off);
    }
}

/* ==================================================================== softcap (Gemma 2) */

/*
 * Logits pass through x' = c tanh(x / c) first.  The item's capped logits go to a private tile
 * (C x bw, contiguous; probability targets beside them), the plain kernel runs there with its
 * gradient in a second tile, and the gradient is chained back through
 *   dx'/dx = 1 - tanh^2(x/c) = 1 - (x'/c)^2.
 * The tiles are heap-allocated (C can be a vocabulary); if that fails the item's losses and
 * gradient are NaN rather than wrong.
 */
static void S(ce_softcap_item)(const T *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item,
                               const S(ce_args) *ai, const void *ap_, T *grad)
{
    const S(ce_prob_args) *ap = (const S(ce_prob_args) *)ap_;
    S(fce_item) it = S(decode)(A, C, B, item);
    fce_idx bw = it.bw, n = C * bw, c, b;
    /* element (c, b) of the item sits at off + c*cs + b*bs */
    fce_idx cs = it.kind == FCE_COLS ? B : 1, bs = it.kind == FCE_COLS ? 1 : C;
    T cap = (T)(ai ? ai->cap : ap->cap);
    double *loss = ai ? ai->loss : ap->loss;
    T *xs = (T *)malloc((size_t)(n ? n : 1) * sizeof(T));
    T *gs = grad ? (T *)malloc((size_t)(n ? n : 1) * sizeof(T)) : NULL;
    T *qs = ap ? (T *)malloc((size_t)(n ? n : 1) * sizeof(T)) : NULL;
    if (!xs || (grad && !gs) || (ap && !qs)) {
        for (b = 0; b < bw; b++) loss[it.soff + b] = NAN;
        if (grad)
            for (c = 0; c < C; c++)
                for (b = 0; b < bw; b++) grad[it.off + c * cs + b * bs] = NAN;
        free(xs); free(gs); free(qs);
        return;
    }
    for (c = 0; c < C; c++)
        for (b = 0; b < bw; b++) {
            xs[c * bw + b] = cap * FCE_TANH(x[it.off + c * cs + b * bs] / cap);
            if (qs) qs[c * bw + b] = ap->q[it.off + c * cs + b * bs];
        }
    if (it.kind == FCE_ROW) {
        if (ai) S(ce_index_row)(xs, C, it.soff, ai, gs);
        else S(ce_prob_row)(xs, qs, C, it.soff, ap, gs);
    } else {
        if (ai) S(ce_index_cols)(xs, C, bw, bw, it.soff, ai, gs);
        else S(ce_prob_cols)(xs, qs, C, bw, bw, it.soff, ap, gs);
    }
    if (grad)
        for (c = 0; c < C; c++)
            for (b = 0; b < bw; b++) {
                T t = xs[c * bw + b] / cap;
                grad[it.off + c * cs + b * bs] = gs[c * bw + b] * (1 - t * t);
            }
    free(xs); free(gs); free(qs);
}

/* ============================================================================ NLL */

/* loss_n = -w_y x_y; dL/dx = -g w_y at the target, 0 elsewhere. */
FCE_KERNEL static void S(nll_item)(const T *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item,
                                   const S(ce_args) *a, T *grad)
{
    S(fce_item) it = S(decode)(A, C, B, item);
    /* element (c, b) of the item sits at off + c*cs + b*bs */
    fce_idx cs = it.kind == FCE_COLS ? B : 1, bs = it.kind == FCE_COLS ? 1 : C;
    fce_idx b, c;
    for (b = 0; b < it.bw; b++) {
        fce_idx sidx = it.soff + b, base = it.off + b * bs;
        int64_t y = a->tgt[sidx];
        int out_of_range = y != a->ignore && (uint64_t)y >= (uint64_t)C;   /* see ce_index_row */
        int ign = y == a->ignore || out_of_range;
        double wy = ign ? 0.0 : (a->w ? a->w[y] : 1.0);
        /* read before zeroing: grad may alias x */
        a->loss[sidx] = out_of_range ? NAN : ign ? 0.0 : -wy * (double)x[base + y * cs];
        if (!grad) continue;
        for (c = 0; c < C; c++) grad[base + c * cs] = 0;
        if (!ign) grad[base + y * cs] = (T)(-a->gcoef * (a->gscale ? a->gscale[sidx] : 1.0) * wy);
    }
}

/* ============================================================ elementwise (binary) losses */

/*
 * The n elements are processed in chunks of whole "rows" of length K (K = length of pos_weight,
 * which repeats along the last axis; K = chunk length when there is none).  Chunk boundaries
 * depend only on n and K, so the per-chunk double sums (combined in order by the caller) are
 * the same for any thread count.
 */
typedef struct {
    const T *y; const T *w; const T *pw; fce_idx K; fce_idx rows_per_chunk; fce_idx n;
    T *loss; double *chunk_sum; const T *gscale; double gcoef;
} S(bin_args);

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
FCE_INLINE T S(bce_logits_one)(T xv, T yv, T p, T wv, T gs, T *g)
{
    T av = xv < 0 ? -xv : xv;
    T e = FCE_EXP(-av);
    /* log1p(e) = log(w) + (e - (w - 1)) / w with w = 1 + e (as fce_log1p), sharing 1/w with the
     * sigmoid below: divisions are the slowest vector op here, in float64 especially. */
    T w = 1 + e;
    T inv = 1 / w;
    T sp = FCE_LOG(w) + (e - (w - 1)) * inv;
    T L = 1 + (p - 1) * yv;
    T coef = xv >= 0 ? 1 - yv : p * yv;
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
 */
FCE_INLINE T S(bce_one)(T p, T yv, T unused, T wv, T gs, T *g)
{
    (void)unused;
    T lp = FCE_LOG(p), lq = FCE_LOG1P(-p);
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
#define FCE_BIN_CHUNK(NAME, ONE)                                                               \
FCE_INLINE void S(NAME##_chunk)(const T *x, fce_idx item, const S(bin_args) *a, T *grad,       \
                                const int has_loss, const int has_grad, const int has_w,       \
                                const int has_gs)                                              \
{                                                                                              \
    fce_idx start = item * a->rows_per_chunk * a->K;                                           \
    fce_idx stop = start + a->rows_per_chunk * a->K;                                           \
    fce_idx i0, k0;                                                                            \
    int l;                                                                                     \
    double acc[FCE_LANES] = {0}, tail = 0.0;                                                   \
    if (stop > a->n) stop = a->n;                                                              \
    for (i0 = start; i0 < stop; i0 += a->K) {                                                  \
        fce_idx len = stop - i0 < a->K ? stop - i0 : a->K;                                     \
        const T *xr = x + i0, *yr = a->y + i0;                                                 \
        const T *wr = has_w ? a->w + i0 : NULL, *gsr = has_gs ? a->gscale + i0 : NULL;         \
        T *lr = has_loss ? a->loss + i0 : NULL, *gr = has_grad ? grad + i0 : NULL;             \
        for (k0 = 0; k0 + FCE_LANES <= len; k0 += FCE_LANES) {                                 \
            _Pragma("omp simd")                                                                \
            for (l = 0; l < FCE_LANES; l++) {                                                  \
                fce_idx k = k0 + l;                                                            \
                T g;                                                                           \
                T v = S(ONE)(xr[k], yr[k], a->pw ? a->pw[k] : (T)1, has_w ? wr[k] : (T)1,      \
                             (T)(has_gs ? a->gcoef * (double)gsr[k] : a->gcoef), &g);          \
                if (has_loss) lr[k] = v;                                                       \
                if (has_grad) gr[k] = g;                                                       \
                acc[l] += (double)v;                                                           \
            }                                                                                  \
        }                                                                                      \
        for (; k0 < len; k0++) {                                                               \
            T g;                                                                               \
            T v = S(ONE)(xr[k0], yr[k0], a->pw ? a->pw[k0] : (T)1, has_w ? wr[k0] : (T)1,      \
                         (T)(has_gs ? a->gcoef * (double)gsr[k0] : a->gcoef), &g);             \
            if (has_loss) lr[k0] = v;                                                          \
            if (has_grad) gr[k0] = g;                                                          \
            tail += (double)v;                                                                 \
        }                                                                                      \
    }                                                                                          \
    a->chunk_sum[item] = fce_combine_lanes(acc) + tail;                                        \
}

FCE_BIN_CHUNK(bce_logits, bce_logits_one)
FCE_BIN_CHUNK(bce, bce_one)
#undef FCE_BIN_CHUNK

/* Expands to a call of CHUNK with the runtime flags turned into constants (16 variants). */
#define FCE_BIN_DISPATCH(CHUNK)                                                                \
    do {                                                                                       \
        int flags = (a->loss != NULL) | (grad != NULL) << 1 | (a->w != NULL) << 2              \
                  | (grad != NULL && a->gscale != NULL) << 3;                                  \
        switch (flags) {                                                                       \
        case 0: CHUNK(x, item, a, grad, 0, 0, 0, 0); break;                                    \
        case 1: CHUNK(x, item, a, grad, 1, 0, 0, 0); break;                                    \
        case 2: CHUNK(x, item, a, grad, 0, 1, 0, 0); break;                                    \
        case 3: CHUNK(x, item, a, grad, 1, 1, 0, 0); break;                                    \
        case 4: CHUNK(x, item, a, grad, 0, 0, 1, 0); break;                                    \
        case 5: CHUNK(x, item, a, grad, 1, 0, 1, 0); break;                                    \
        case 6: CHUNK(x, item, a, grad, 0, 1, 1, 0); break;                                    \
        case 7: CHUNK(x, item, a, grad, 1, 1, 1, 0); break;                                    \
        case 10: CHUNK(x, item, a, grad, 0, 1, 0, 1); break;                                   \
        case 11: CHUNK(x, item, a, grad, 1, 1, 0, 1); break;                                   \
        case 14: CHUNK(x, item, a, grad, 0, 1, 1, 1); break;                                   \
        default: CHUNK(x, item, a, grad, 1, 1, 1, 1); break;                                   \
        }                                                                                      \
    } while (0)

FCE_KERNEL static void S(bce_logits_item)(const T *x, fce_idx item, const S(bin_args) *a, T *grad)
{
    FCE_BIN_DISPATCH(S(bce_logits_chunk));
}

FCE_KERNEL static void S(bce_item)(const T *x, fce_idx item, const S(bin_args) *a, T *grad)
{
    FCE_BIN_DISPATCH(S(bce_chunk));
}
#undef FCE_BIN_DISPATCH

#undef T
#undef S
