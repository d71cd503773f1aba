/*
 * Template (see _kern_body.h): logsumexp, log_softmax, softmax and their VJPs.
 * log_softmax = (x - m) - log(s) (m subtracted first keeps rows far from 0 exact);
 * lse = m + log1p(s - 1) with s - 1 computed without rounding 1 + tiny (row_rest/col_sumexp).
 */


/* torch.logsumexp semantics: an infinite max is not subtracted, so a row of -inf gives -inf and
 * a row holding +inf gives +inf (NaN if it also holds a NaN).  The sums take fce_expn of x - m,
 * which needs x - m <= 43: a -inf max is replaced by 0 (every term is then exp(-inf) = 0, or
 * NaN), and a +inf max is answered without the sum (lse_of_inf_max). */
FCE_INLINE T S(lse_of_inf_max)(const T *x, fce_idx n, fce_idx stride)
{
    fce_idx j;
    for (j = 0; j < n; j++)
        if (x[j * stride] != x[j * stride]) return (T)NAN;
    return (T)INFINITY;
}

static void S(lse_item)(const void *xv, fce_idx A, fce_idx C, fce_idx B, fce_idx item, void *ov)
{
    const T *x = (const T *)xv; T *out = (T *)ov;
    S(fce_item) it = S(decode)(A, C, B, item);
    fce_idx b, st;
    if (it.kind == FCE_ROW) {
        T m = S(row_max)(x + it.off, C);
        if (m == (T)INFINITY) {
            out[it.soff] = S(lse_of_inf_max)(x + it.off, C, 1);
            return;
        }
        if (m == -(T)INFINITY) m = 0;
        double s = S(row_sumexp)(x + it.off, C, m, NULL);
        out[it.soff] = (T)((double)m + fce_log1p_d(S(row_rest)(x + it.off, C, m, s, 0)));
    } else {
        T m[FCE_TILE], buf[FCE_SMALL_C * FCE_TILE]; double s[FCE_TILE];
        unsigned char pinf[FCE_TILE];
        int any_pinf = 0;
        const T *xt = S(cols_view)(x, C, B, it, buf, &st);
        S(col_max)(xt, C, st, it.bw, m);
        for (b = 0; b < it.bw; b++) {
            pinf[b] = m[b] == (T)INFINITY;
            any_pinf |= pinf[b];
            m[b] = isinf(m[b]) ? (T)0 : m[b];   /* a +inf column's sum is replaced below */
        }
        S(col_sumexp)(xt, C, st, it.bw, m, s, NULL, 0);
        _Pragma("omp simd")
        for (b = 0; b < it.bw; b++) out[it.soff + b] = (T)((double)m[b] + fce_log1p_d(s[b]));
        if (any_pinf)
            for (b = 0; b < it.bw; b++)
                if (pinf[b]) out[it.soff + b] = S(lse_of_inf_max)(xt + b, C, st);
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
            T ls = (T)fce_log1p_d(S(row_rest)(xr, C, m, s, 0));
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

static void S(log_softmax_item)(const void *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item,
                                void *out)
{
    S(softmax_like)((const T *)x, A, C, B, item, (T *)out, 1);
}

static void S(softmax_item)(const void *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item,
                            void *out)
{
    S(softmax_like)((const T *)x, A, C, B, item, (T *)out, 0);
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

static void S(log_softmax_vjp_item)(const void *y, const void *g, fce_idx A, fce_idx C,
                                    fce_idx B, fce_idx item, void *out)
{
    S(vjp_like)((const T *)y, (const T *)g, A, C, B, item, (T *)out, 1);
}

static void S(softmax_vjp_item)(const void *p, const void *g, fce_idx A, fce_idx C,
                                fce_idx B, fce_idx item, void *out)
{
    S(vjp_like)((const T *)p, (const T *)g, A, C, B, item, (T *)out, 0);
}

