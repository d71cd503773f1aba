/*
 * Template body of _kernels.h: included once with FCE_T = float and once with double.
 * FCE_SUF(name) appends the dtype suffix; FCE_EXP / FCE_LOG / FCE_LOG1P are the dtype's
 * vectorisable functions from _simd.h.
 */
#define T FCE_T
#define S(name) FCE_SUF(name)

/* ===================================================== row primitives (contiguous, length n) */

static inline T S(row_max)(const T *x, fce_idx n)
{
    T mk[FCE_LANES];
    fce_idx j = 0;
    int k;
    T m = -INFINITY;
    for (k = 0; k < FCE_LANES; k++) mk[k] = -INFINITY;
    for (; j + FCE_LANES <= n; j += FCE_LANES)
        for (k = 0; k < FCE_LANES; k++) mk[k] = x[j + k] > mk[k] ? x[j + k] : mk[k];
    for (; j < n; j++) m = x[j] > m ? x[j] : m;
    for (k = 0; k < FCE_LANES; k++) m = mk[k] > m ? mk[k] : m;
    return m;
}

/* sum_j exp(x_j - m) in double; stores the exps in e when e != NULL (e may alias x). */
static inline double S(row_sumexp)(const T *x, fce_idx n, T m, T *e)
{
    double acc[FCE_LANES] = {0};
    double tail = 0.0;
    fce_idx j = 0;
    int k;
    if (e) {
        for (; j + FCE_LANES <= n; j += FCE_LANES)
            for (k = 0; k < FCE_LANES; k++) {
                T v = FCE_EXP(x[j + k] - m);
                e[j + k] = v;
                acc[k] += (double)v;
            }
        for (; j < n; j++) { T v = FCE_EXP(x[j] - m); e[j] = v; tail += (double)v; }
    } else {
        for (; j + FCE_LANES <= n; j += FCE_LANES)
            for (k = 0; k < FCE_LANES; k++) acc[k] += (double)FCE_EXP(x[j + k] - m);
        for (; j < n; j++) tail += (double)FCE_EXP(x[j] - m);
    }
    return fce_combine_lanes(acc) + tail;
}

/* sum_j k_j (m - x_j) with k_j = w_j (w == NULL: 1), terms with k_j == 0 skipped so that a
 * masked (-inf) logit of zero weight contributes 0 rather than 0*inf = NaN.
 * Every term is >= 0 (m is the row max), so the sum has no cancellation. */
static inline double S(row_wdist)(const T *x, const double *w, fce_idx n, T m)
{
    double acc[FCE_LANES] = {0};
    double tail = 0.0;
    fce_idx j = 0;
    int k;
    if (w) {
        for (; j + FCE_LANES <= n; j += FCE_LANES)
            for (k = 0; k < FCE_LANES; k++) {
                double wk = w[j + k];
                acc[k] += wk == 0.0 ? 0.0 : wk * (double)(m - x[j + k]);
            }
        for (; j < n; j++) tail += w[j] == 0.0 ? 0.0 : w[j] * (double)(m - x[j]);
    } else {
        for (; j + FCE_LANES <= n; j += FCE_LANES)
            for (k = 0; k < FCE_LANES; k++) acc[k] += (double)(m - x[j + k]);
        for (; j < n; j++) tail += (double)(m - x[j]);
    }
    return fce_combine_lanes(acc) + tail;
}

/* Soft targets: k_j = w_j ((1-eps) q_j + eps/C).  Returns sum_j k_j (m - x_j) (zero-k terms
 * skipped, as above) and stores sum_j k_j in *ksum. */
static inline double S(row_qdist)(const T *x, const T *q, const double *w, fce_idx n, T m,
                                  double keep, double spread, double *ksum)
{
    double acc[FCE_LANES] = {0}, qacc[FCE_LANES] = {0};
    double tail = 0.0, qtail = 0.0;
    fce_idx j = 0;
    int k;
    for (; j + FCE_LANES <= n; j += FCE_LANES)
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
static inline double S(row_dot)(const T *a, const T *b, fce_idx n)
{
    double acc[FCE_LANES] = {0};
    double tail = 0.0;
    fce_idx j = 0;
    int k;
    if (b) {
        for (; j + FCE_LANES <= n; j += FCE_LANES)
            for (k = 0; k < FCE_LANES; k++) acc[k] += (double)a[j + k] * (double)b[j + k];
        for (; j < n; j++) tail += (double)a[j] * (double)b[j];
    } else {
        for (; j + FCE_LANES <= n; j += FCE_LANES)
            for (k = 0; k < FCE_LANES; k++) acc[k] += (double)a[j + k];
        for (; j < n; j++) tail += (double)a[j];
    }
    return fce_combine_lanes(acc) + tail;
}

/* ============================================ column primitives (tile of bw columns, stride B) */

static inline void S(col_max)(const T *x, fce_idx C, fce_idx B, fce_idx bw, T *m)
{
    fce_idx c, b;
    for (b = 0; b < bw; b++) m[b] = -INFINITY;
    for (c = 0; c < C; c++) {
        const T *xc = x + c * B;
        for (b = 0; b < bw; b++) m[b] = xc[b] > m[b] ? xc[b] : m[b];
    }
}

static inline void S(col_sumexp)(const T *x, fce_idx C, fce_idx B, fce_idx bw, const T *m,
                                 double *s, T *e, fce_idx eB)
{
    fce_idx c, b;
    for (b = 0; b < bw; b++) s[b] = 0.0;
    for (c = 0; c < C; c++) {
        const T *xc = x + c * B;
        if (e) {
            T *ec = e + c * eB;
            for (b = 0; b < bw; b++) { T v = FCE_EXP(xc[b] - m[b]); ec[b] = v; s[b] += (double)v; }
        } else {
            for (b = 0; b < bw; b++) s[b] += (double)FCE_EXP(xc[b] - m[b]);
        }
    }
}

/* ====================================================================== item decoding */

typedef struct { fce_idx off; fce_idx soff; fce_idx bw; fce_idx B; } S(fce_item);

/* off: element offset of the item's first (c=0) entry; soff: its first sample index. */
static inline S(fce_item) S(decode)(fce_idx C, fce_idx B, fce_idx item)
{
    S(fce_item) it;
    if (B == 1) {
        it.off = item * C; it.soff = item; it.bw = 1; it.B = 1;
    } else {
        fce_idx ntile = (B + FCE_TILE - 1) / FCE_TILE;
        fce_idx a = item / ntile, b0 = (item % ntile) * FCE_TILE;
        it.off = a * C * B + b0; it.soff = a * B + b0;
        it.bw = B - b0 < FCE_TILE ? B - b0 : FCE_TILE; it.B = B;
    }
    return it;
}

/* ========================================================================== row ops */

/* torch.logsumexp semantics: an infinite max is not subtracted (so all -inf -> -inf,
 * any +inf -> +inf) */
static inline T S(lse_finish)(T m, double s)
{
    return (T)((double)m + log(s));
}

static void S(lse_item)(const T *x, fce_idx C, fce_idx B, fce_idx item, T *out)
{
    S(fce_item) it = S(decode)(C, B, item);
    if (it.B == 1) {
        T m = S(row_max)(x + it.off, C);
        if (isinf(m)) m = 0;
        out[it.soff] = S(lse_finish)(m, S(row_sumexp)(x + it.off, C, m, NULL));
    } else {
        T m[FCE_TILE]; double s[FCE_TILE]; fce_idx b;
        S(col_max)(x + it.off, C, B, it.bw, m);
        for (b = 0; b < it.bw; b++) if (isinf(m[b])) m[b] = 0;
        S(col_sumexp)(x + it.off, C, B, it.bw, m, s, NULL, 0);
        for (b = 0; b < it.bw; b++) out[it.soff + b] = S(lse_finish)(m[b], s[b]);
    }
}

/* log_softmax = (x - m) - log(s): subtracting m first keeps the offsets of rows far from 0. */
static void S(log_softmax_item)(const T *x, fce_idx C, fce_idx B, fce_idx item, T *out)
{
    S(fce_item) it = S(decode)(C, B, item);
    fce_idx j, c, b;
    if (it.B == 1) {
        const T *xr = x + it.off; T *o = out + it.off;
        T m = S(row_max)(xr, C);
        T ls = (T)log(S(row_sumexp)(xr, C, m, NULL));
        for (j = 0; j < C; j++) o[j] = (xr[j] - m) - ls;
    } else {
        T m[FCE_TILE], ls[FCE_TILE]; double s[FCE_TILE];
        S(col_max)(x + it.off, C, B, it.bw, m);
        S(col_sumexp)(x + it.off, C, B, it.bw, m, s, NULL, 0);
        for (b = 0; b < it.bw; b++) ls[b] = (T)log(s[b]);
        for (c = 0; c < C; c++) {
            const T *xc = x + it.off + c * B; T *oc = out + it.off + c * B;
            for (b = 0; b < it.bw; b++) oc[b] = (xc[b] - m[b]) - ls[b];
        }
    }
}

static void S(softmax_item)(const T *x, fce_idx C, fce_idx B, fce_idx item, T *out)
{
    S(fce_item) it = S(decode)(C, B, item);
    fce_idx j, c, b;
    if (it.B == 1) {
        T *o = out + it.off;
        T m = S(row_max)(x + it.off, C);
        T r = (T)(1.0 / S(row_sumexp)(x + it.off, C, m, o));
        for (j = 0; j < C; j++) o[j] *= r;
    } else {
        T m[FCE_TILE], r[FCE_TILE]; double s[FCE_TILE];
        S(col_max)(x + it.off, C, B, it.bw, m);
        S(col_sumexp)(x + it.off, C, B, it.bw, m, s, out + it.off, B);
        for (b = 0; b < it.bw; b++) r[b] = (T)(1.0 / s[b]);
        for (c = 0; c < C; c++) {
            T *oc = out + it.off + c * B;
            for (b = 0; b < it.bw; b++) oc[b] *= r[b];
        }
    }
}

/* d/dx of log_softmax: g - softmax(x) * sum(g), with softmax(x) = exp(output). */
static void S(log_softmax_vjp_item)(const T *y, const T *g, fce_idx C, fce_idx B, fce_idx item,
                                    T *out)
{
    S(fce_item) it = S(decode)(C, B, item);
    fce_idx j, c, b;
    if (it.B == 1) {
        const T *yr = y + it.off, *gr = g + it.off; T *o = out + it.off;
        T sg = (T)S(row_dot)(gr, NULL, C);
        for (j = 0; j < C; j++) o[j] = gr[j] - FCE_EXP(yr[j]) * sg;
    } else {
        double sg[FCE_TILE]; T sgt[FCE_TILE];
        for (b = 0; b < it.bw; b++) sg[b] = 0.0;
        for (c = 0; c < C; c++) {
            const T *gc = g + it.off + c * B;
            for (b = 0; b < it.bw; b++) sg[b] += (double)gc[b];
        }
        for (b = 0; b < it.bw; b++) sgt[b] = (T)sg[b];
        for (c = 0; c < C; c++) {
            const T *yc = y + it.off + c * B, *gc = g + it.off + c * B; T *oc = out + it.off + c * B;
            for (b = 0; b < it.bw; b++) oc[b] = gc[b] - FCE_EXP(yc[b]) * sgt[b];
        }
    }
}

/* d/dx of softmax: p * (g - sum(p g)). */
static void S(softmax_vjp_item)(const T *p, const T *g, fce_idx C, fce_idx B, fce_idx item, T *out)
{
    S(fce_item) it = S(decode)(C, B, item);
    fce_idx j, c, b;
    if (it.B == 1) {
        const T *pr = p + it.off, *gr = g + it.off; T *o = out + it.off;
        T d = (T)S(row_dot)(pr, gr, C);
        for (j = 0; j < C; j++) o[j] = pr[j] * (gr[j] - d);
    } else {
        double d[FCE_TILE]; T dt[FCE_TILE];
        for (b = 0; b < it.bw; b++) d[b] = 0.0;
        for (c = 0; c < C; c++) {
            const T *pc = p + it.off + c * B, *gc = g + it.off + c * B;
            for (b = 0; b < it.bw; b++) d[b] += (double)pc[b] * (double)gc[b];
        }
        for (b = 0; b < it.bw; b++) dt[b] = (T)d[b];
        for (c = 0; c < C; c++) {
            const T *pc = p + it.off + c * B, *gc = g + it.off + c * B; T *oc = out + it.off + c * B;
            for (b = 0; b < it.bw; b++) oc[b] = pc[b] * (gc[b] - dt[b]);
        }
    }
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
 */
typedef struct {
    const int64_t *tgt; const double *w; double W; int64_t ignore; double eps;
    double *loss; const double *gscale; double gcoef;
} S(ce_args);

static inline double S(ce_nll_from_parts)(T m, T xy, double r, double s)
{
    return xy == m ? log1p(r) : (double)(m - xy) + log(s);
}

static void S(ce_index_item)(const T *x, fce_idx C, fce_idx B, fce_idx item,
                             const S(ce_args) *a, T *grad)
{
    S(fce_item) it = S(decode)(C, B, item);
    double keep = 1.0 - a->eps, spread = a->eps / (double)C;
    fce_idx j, c, b;
    if (it.B == 1) {
        const T *xr = x + it.off; T *gr = grad ? grad + it.off : NULL;
        int64_t y = a->tgt[it.soff];
        if (y == a->ignore) {
            a->loss[it.soff] = 0.0;
            if (gr) memset(gr, 0, (size_t)C * sizeof(T));
            return;
        }
        double wy = a->w ? a->w[y] : 1.0;
        T m = S(row_max)(xr, C);
        T xy = xr[y];
        double wd = spread != 0.0 ? S(row_wdist)(xr, a->w, C, m) : 0.0;
        /* exps of the two sides of the target, so r = sum_{j != y} e_j is exact */
        double r = S(row_sumexp)(xr, y, m, gr) + S(row_sumexp)(xr + y + 1, C - y - 1, m, gr ? gr + y + 1 : NULL);
        double ey = (double)FCE_EXP(xy - m);
        double s = r + ey;
        double nll = S(ce_nll_from_parts)(m, xy, r, s);
        double smooth = spread != 0.0 ? wd + a->W * log(s) : 0.0;
        a->loss[it.soff] = keep * wy * nll + spread * smooth;
        if (gr) {
            double g = a->gcoef * (a->gscale ? a->gscale[it.soff] : 1.0);
            T kp = (T)(g * (keep * wy + spread * a->W) / s);
            T ks = (T)(g * spread);
            if (a->w && spread != 0.0) {
                for (j = 0; j < C; j++) gr[j] = gr[j] * kp - ks * (T)a->w[j];
            } else {
                for (j = 0; j < C; j++) gr[j] = gr[j] * kp - ks;
            }
            double py = ey / s;
            gr[y] = (T)(g * (keep * wy * (-r / s) + spread * (a->W * py - wy)));
        }
    } else {
        fce_idx bw = it.bw;
        const T *xt = x + it.off; T *gt = grad ? grad + it.off : NULL;
        const int64_t *tg = a->tgt + it.soff;
        T m[FCE_TILE], xy[FCE_TILE]; double r[FCE_TILE], wd[FCE_TILE], ey[FCE_TILE], s[FCE_TILE];
        double kp[FCE_TILE], gg[FCE_TILE];
        int64_t yy[FCE_TILE];
        S(col_max)(xt, C, B, bw, m);
        for (b = 0; b < bw; b++) {
            int64_t y = tg[b];
            int ign = y == a->ignore;
            yy[b] = ign ? -1 : y;                /* -1 never matches a class below */
            xy[b] = ign ? m[b] : xt[y * B + b];  /* y is valid when not ignored (checked in Python) */
            r[b] = 0.0; wd[b] = 0.0;
        }
        for (c = 0; c < C; c++) {
            const T *xc = xt + c * B;
            double wc = a->w ? a->w[c] : 1.0;
            /* before the exps are stored: with an in-place gradient gc aliases xc */
            if (spread != 0.0 && wc != 0.0)
                for (b = 0; b < bw; b++) wd[b] += wc * (double)(m[b] - xc[b]);
            if (gt) {
                T *gc = gt + c * B;
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
        for (b = 0; b < bw; b++) {
            fce_idx sidx = it.soff + b;
            if (yy[b] < 0) { a->loss[sidx] = 0.0; gg[b] = 0.0; kp[b] = 0.0; continue; }
            double wy = a->w ? a->w[yy[b]] : 1.0;
            ey[b] = (double)FCE_EXP(xy[b] - m[b]);
            s[b] = r[b] + ey[b];
            double nll = S(ce_nll_from_parts)(m[b], xy[b], r[b], s[b]);
            double smooth = spread != 0.0 ? wd[b] + a->W * log(s[b]) : 0.0;
            a->loss[sidx] = keep * wy * nll + spread * smooth;
            gg[b] = a->gcoef * (a->gscale ? a->gscale[sidx] : 1.0);
            kp[b] = gg[b] * (keep * wy + spread * a->W) / s[b];
        }
        if (gt) {
            for (c = 0; c < C; c++) {
                T *gc = gt + c * B;
                double wc = a->w ? a->w[c] : 1.0;
                for (b = 0; b < bw; b++) {
                    /* ignored samples: kp = gg = 0, and the select keeps NaN logits out */
                    T v = (T)((double)gc[b] * kp[b] - gg[b] * spread * wc);
                    gc[b] = yy[b] < 0 ? (T)0 : v;
                }
            }
            for (b = 0; b < bw; b++) {
                if (yy[b] < 0) continue;
                double wy = a->w ? a->w[yy[b]] : 1.0;
                double py = ey[b] / s[b];
                gt[yy[b] * B + b] = (T)(gg[b] * (keep * wy * (-r[b] / s[b]) + spread * (a->W * py - wy)));
            }
        }
    }
}

/* ====================================================== cross-entropy, probability targets */

/*
 * k_c = w_c ((1-eps) q_c + eps/C), K = sum_c k_c.
 *   loss_n = -sum_c k_c log p_c = sum_c k_c (m - x_c) + K log s     (all terms >= 0)
 *   dL/dx_j = g (p_j K - k_j)
 */
typedef struct {
    const T *q; const double *w; double eps; double *loss; const double *gscale; double gcoef;
} S(ce_prob_args);

static void S(ce_prob_item)(const T *x, fce_idx C, fce_idx B, fce_idx item,
                            const S(ce_prob_args) *a, T *grad)
{
    S(fce_item) it = S(decode)(C, B, item);
    double keep = 1.0 - a->eps, spread = a->eps / (double)C;
    fce_idx j, c, b;
    if (it.B == 1) {
        const T *xr = x + it.off, *qr = a->q + it.off; T *gr = grad ? grad + it.off : NULL;
        T m = S(row_max)(xr, C);
        double K;
        double qd = S(row_qdist)(xr, qr, a->w, C, m, keep, spread, &K);
        double s = S(row_sumexp)(xr, C, m, gr);
        a->loss[it.soff] = qd + K * log(s);
        if (gr) {
            double g = a->gcoef * (a->gscale ? a->gscale[it.soff] : 1.0);
            T kp = (T)(g * K / s);
            for (j = 0; j < C; j++) {
                double kj = (keep * (double)qr[j] + spread) * (a->w ? a->w[j] : 1.0);
                gr[j] = gr[j] * kp - (T)(g * kj);
            }
        }
    } else {
        fce_idx bw = it.bw;
        const T *xt = x + it.off, *qt = a->q + it.off; T *gt = grad ? grad + it.off : NULL;
        T m[FCE_TILE]; double s[FCE_TILE], qd[FCE_TILE], K[FCE_TILE], kp[FCE_TILE], gg[FCE_TILE];
        S(col_max)(xt, C, B, bw, m);
        for (b = 0; b < bw; b++) { qd[b] = 0.0; K[b] = 0.0; }
        for (c = 0; c < C; c++) {
            const T *xc = xt + c * B, *qc = qt + c * B;
            double wc = a->w ? a->w[c] : 1.0;
            for (b = 0; b < bw; b++) {
                double kk = (keep * (double)qc[b] + spread) * wc;
                qd[b] += kk == 0.0 ? 0.0 : kk * (double)(m[b] - xc[b]);
                K[b] += kk;
            }
        }
        S(col_sumexp)(xt, C, B, bw, m, s, gt, B);
        for (b = 0; b < bw; b++) {
            fce_idx sidx = it.soff + b;
            a->loss[sidx] = qd[b] + K[b] * log(s[b]);
            gg[b] = a->gcoef * (a->gscale ? a->gscale[sidx] : 1.0);
            kp[b] = gg[b] * K[b] / s[b];
        }
        if (gt) {
            for (c = 0; c < C; c++) {
                T *gc = gt + c * B; const T *qc = qt + c * B;
                double wc = a->w ? a->w[c] : 1.0;
                for (b = 0; b < bw; b++)
                    gc[b] = (T)((double)gc[b] * kp[b] - gg[b] * (keep * (double)qc[b] + spread) * wc);
            }
        }
    }
}

/* ============================================================================ NLL */

/* loss_n = -w_y x_y; dL/dx = -g w_y at the target, 0 elsewhere. */
static void S(nll_item)(const T *x, fce_idx C, fce_idx B, fce_idx item, const S(ce_args) *a, T *grad)
{
    S(fce_item) it = S(decode)(C, B, item);
    fce_idx b, c;
    for (b = 0; b < it.bw; b++) {
        fce_idx sidx = it.soff + b;
        int64_t y = a->tgt[sidx];
        int ign = y == a->ignore;
        double wy = ign ? 0.0 : (a->w ? a->w[y] : 1.0);
        /* read before zeroing: grad may alias x */
        a->loss[sidx] = ign ? 0.0 : -wy * (double)x[it.off + y * it.B + b];
        if (grad)
            for (c = 0; c < C; c++) grad[it.off + c * it.B + b] = 0;
        if (ign) continue;
        if (grad) {
            double g = a->gcoef * (a->gscale ? a->gscale[sidx] : 1.0);
            grad[it.off + y * it.B + b] = (T)(-g * wy);
        }
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
static void S(bce_logits_item)(const T *x, fce_idx item, const S(bin_args) *a, T *grad)
{
    fce_idx start = item * a->rows_per_chunk * a->K;
    fce_idx stop = start + a->rows_per_chunk * a->K;
    fce_idx i0, k;
    double acc[FCE_LANES] = {0};
    if (stop > a->n) stop = a->n;
    for (i0 = start; i0 < stop; i0 += a->K) {
        fce_idx len = stop - i0 < a->K ? stop - i0 : a->K;
        for (k = 0; k < len; k++) {
            fce_idx i = i0 + k;
            T xv = x[i], yv = a->y[i];
            T p = a->pw ? a->pw[k] : (T)1;
            T wv = a->w ? a->w[i] : (T)1;
            T av = xv < 0 ? -xv : xv;
            T e = FCE_EXP(-av);
            T sp = FCE_LOG1P(e);
            T L = 1 + (p - 1) * yv;
            T coef = xv >= 0 ? 1 - yv : p * yv;
            T lin = coef == 0 ? (T)0 : coef * av;
            T l = wv * (lin + L * sp);
            if (a->loss) a->loss[i] = l;
            acc[k % FCE_LANES] += (double)l;
            if (grad) {
                T inv = 1 / (1 + e);
                T sig_pos = xv >= 0 ? inv : e * inv;     /* sigmoid(x) */
                T sig_neg = xv >= 0 ? e * inv : inv;     /* sigmoid(-x) */
                T g = (T)(a->gcoef * (a->gscale ? (double)a->gscale[i] : 1.0));
                grad[i] = g * wv * ((1 - yv) * sig_pos - p * yv * sig_neg);
            }
        }
    }
    a->chunk_sum[item] = fce_combine_lanes(acc);
}

/*
 * BCE from probabilities (torch's clamp of the logs at -100):
 *   loss = -w [ y max(log p, -100) + (1-y) max(log(1-p), -100) ]
 *   dL/dp = w (p - y) / max(p (1-p), 1e-12)
 */
static void S(bce_item)(const T *x, fce_idx item, const S(bin_args) *a, T *grad)
{
    fce_idx start = item * a->rows_per_chunk * a->K;
    fce_idx stop = start + a->rows_per_chunk * a->K;
    fce_idx i;
    double acc[FCE_LANES] = {0};
    if (stop > a->n) stop = a->n;
    for (i = start; i < stop; i++) {
        T p = x[i], yv = a->y[i];
        T wv = a->w ? a->w[i] : (T)1;
        T lp = FCE_LOG(p), lq = FCE_LOG1P(-p);
        lp = lp < (T)-100 ? (T)-100 : lp;
        lq = lq < (T)-100 ? (T)-100 : lq;
        T l = -wv * (yv * lp + (1 - yv) * lq);
        if (a->loss) a->loss[i] = l;
        acc[(i - start) % FCE_LANES] += (double)l;
        if (grad) {
            T den = p * (1 - p);
            den = den < (T)1e-12 ? (T)1e-12 : den;
            T g = (T)(a->gcoef * (a->gscale ? (double)a->gscale[i] : 1.0));
            grad[i] = g * wv * (p - yv) / den;
        }
    }
    a->chunk_sum[item] = fce_combine_lanes(acc);
}

#undef T
#undef S
