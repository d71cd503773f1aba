/*
 * Template (see _kern_body.h): cross-entropy with class-index or probability targets, and NLL.
 *
 * Class-index targets.  Per sample with target y, class weights w (1 when absent),
 * W = sum_c w_c, smoothing eps, softcap c and z-loss z:
 *   1. x'_j = c tanh(x_j / c) under softcap, else x_j.  tanh is monotone, so the capped row
 *      max is the cap of the raw max: the max pass reads raw logits and no tanh.
 *   2. m = max_j x'_j, e_j = exp(x'_j - m), r = sum_{j != y} e_j, s = r + e_y.
 *   3. nll = log1p(r) + (e_y - 1)     when x'_y == m (then e_y == 1 exactly)
 *          = (m - x'_y) + log(s)       otherwise (both terms >= 0, no cancellation).
 *      The first form keeps full relative precision for confident predictions (nll ~ 1e-30),
 *      where lse - x_y rounds to 0; (e_y - 1) is NaN for an infinite max, as log_softmax.
 *   4. loss = (1-eps) w_y nll + (eps/C) [sum_c w_c (m - x'_c) + W log s] + z lse^2,
 *      lse = m + log s (0 when y == ignore_index).
 *   5. dL/dx'_j = g [ e_j kp - (eps/C) w_j ],  kp = ((1-eps) w_y + (eps/C) W + 2 z lse) / s,
 *      and at the target p_y - 1 = -r / s exactly (again no cancellation), g the sample's
 *      scale (1/denominator * grad_output).
 *   6. Under softcap dL/dx_j = dL/dx'_j (1 - (x'_j / c)^2).
 * An option that is off contributes no term at all -- never 0 * (something) -- so an infinite
 * (or float32-overflowing) weight of a class no sample uses cannot turn 0 into NaN.  Terms of
 * zero weight or zero distance in sum_c w_c (m - x'_c) are skipped for the same reason (a
 * masked -inf logit of zero weight, an infinite weight at the max).
 *
 * Probability targets q: k_c = w_c ((1-eps) q_c + eps/C) (k_c = q_c w_c, and 0 where q_c == 0,
 * without smoothing), K = sum_c k_c, s = 1 + rest:
 *   loss = sum_c k_c (m - x'_c) + K log1p(rest) + z lse^2          (all terms >= 0)
 *   dL/dx'_j = g (p_j (K + 2 z lse) - k_j); at a max element (e_j = 1) the difference is
 *   ((K - k_j) - k_j rest) / s, which keeps the tiny gradient of a confident one-hot target.
 *
 * Compile-time specialisation.  Every kernel below takes three constant flags, and each item
 * entry point switches once on them, so each combination is its own straight-line code:
 *   G  the gradient is wanted (the loss pass is the same either way: the loss is bitwise
 *      identical with and without return_grad),
 *   K  softcap on,
 *   O  any of class weights / label smoothing / z-loss (runtime-checked inside; the plain
 *      case carries no option test).
 * The per-sample "finish" functions hold the formulas of steps 3-5 once, for the row path
 * (one long row), the column path (B > 1) and the short-row blocks (transposed to columns).
 */

/* ------------------------------------------------------------------ per-element pieces */

/* x / c as x * (1/c): a multiply instead of a division per element (1/c is loop-invariant and
 * hoisted), at most one rounding more in tanh's argument */
FCE_INLINE T S(cap_of)(T x, T cap, const int K) { return K ? cap * FCE_TANH(x * ((T)1 / cap)) : x; }

/* d tanh-cap / dx at a capped value xc = c tanh(x / c) */
FCE_INLINE T S(cap_slope)(T xc, T cap) { T t = xc * ((T)1 / cap); return 1 - t * t; }

/* w_c (m - x'_c), 0 for a zero weight or a zero distance (the 0 * inf cases) */
FCE_INLINE double S(wdist_term)(double wc, double d) { return wc == 0.0 || d == 0.0 ? 0.0 : wc * d; }

/* k_c of a probability target (see the header comment) */
FCE_INLINE double S(prob_k)(T q, double wc, double keep, double spread, const int O)
{
    if (!O) return (double)q;
    return spread != 0.0 ? (keep * (double)q + spread) * wc : (q == 0 ? 0.0 : (double)q * wc);
}

/* The class-index targets of a tile as T class numbers, -1 for a dead column (ignored or out of
 * range), and bad[b] = NaN for an out-of-range target (0 otherwise: the loss adds it).  The int64
 * targets are only compared and selected in 64-bit lanes, converted exactly to double
 * (fce_small_i64_to_d) and narrowed to T in a loop of their own.  A loop mixing int64 targets
 * with T lanes stays scalar (AVX2 has no int64 -> float conversion) or packs the 64-bit masks
 * with lane-crossing shuffles: the C = 2 block ran at 113 cycles per 8 rows that way against 87
 * split (Zen 1, AVX2).  Exact for C <= 2^24, the callers' bound. */
FCE_INLINE void S(tile_targets)(const int64_t *tg, fce_idx bw, int64_t ignore, int64_t C, T *yc,
                                double *bad)
{
    double ycd[FCE_TILE];
    fce_idx b;
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        int64_t y = tg[b];
        int ign = y == ignore, out_of_range = !ign && (uint64_t)y >= (uint64_t)C;
        ycd[b] = ign || out_of_range ? -1.0 : fce_small_i64_to_d(y);
        bad[b] = out_of_range ? NAN : 0.0;
    }
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) yc[b] = (T)ycd[b];
}

/* ------------------------------------------------------------------ per-sample finish */

/*
 * Class-index finish (steps 3-5): from m (capped max), dxy = m - x'_y (0 exactly when the
 * target is the max), ey = e_y, r, wd = sum_c w_c (m - x'_c) (smoothing only), the target
 * weight wy and the gradient scale g.  Gives the loss, the e_j coefficient kp, the w_j
 * coefficient ks and the target's gradient gy.
 */
FCE_INLINE void S(ce_index_finish)(double m, double dxy, double ey, double r, double wd,
                                   double wy, double g, double keep, double spread, double W,
                                   double zl, const int O,
                                   double *loss, double *kp, double *ks, double *gy)
{
    /* One log1p for log s: u = s - 1 is r itself when the target is the max (e_y = 1), and
     * (r - 1) + e_y otherwise, where r >= 1 holds the max's e = 1 exactly (r - 1 keeps full
     * relative precision).
     * One reciprocal for every 1/s.  Divisions and logs in double are what a short row costs
     * (a vdivpd is ~10x a multiply), so this keeps them to three per sample, the selects
     * branch-free for the loops over columns. */
    double s = r + ey, inv = 1.0 / s;
    double ls = FCE_LOG1P_D(dxy == 0.0 ? r : (r - 1.0) + ey);
    double nll = (dxy == 0.0 ? ey - 1.0 : dxy) + ls;
    if (!O) {
        *loss = nll; *kp = g * inv; *ks = 0.0; *gy = g * (-r * inv);
        return;
    }
    double lse = m + ls;
    double l = keep * wy * nll, cp = keep * wy, ct = keep * wy * (-r * inv);
    double zc = zl != 0.0 ? 2.0 * zl * lse : 0.0;
    l += spread != 0.0 ? spread * (wd + W * ls) : 0.0;
    cp += spread != 0.0 ? spread * W : 0.0;
    ct += spread != 0.0 ? spread * (W * (ey * inv) - wy) : 0.0;
    l += zl != 0.0 ? zl * lse * lse : 0.0;
    cp += zc;
    ct += zl != 0.0 ? zc * ey * inv : 0.0;
    *loss = l; *kp = g * cp * inv; *ks = g * spread; *gy = g * ct;
}

/* Probability-target finish: loss and the p_j coefficient Kz = K + 2 z lse. */
FCE_INLINE void S(ce_prob_finish)(double m, double rest, double qd, double Ks, double zl,
                                  const int O, double *loss, double *Kz)
{
    double l1 = FCE_LOG1P_D(rest), lse = m + l1;
    double l = qd + (Ks == 0.0 ? 0.0 : Ks * l1);        /* no mass: 0 even for C = 0 */
    *loss = O && zl != 0.0 ? l + zl * lse * lse : l;
    *Kz = O && zl != 0.0 ? Ks + 2.0 * zl * lse : Ks;
}

/* dL/dx'_j = g (e_j K / s - k_j) with gis = g / s and gKs = g K / s formed once per sample (a
 * division per element was the gradient pass's cost); at a max element (e_j = 1) the difference
 * is formed as ((K - k_j) - k_j rest) g / s, see the header. */
FCE_INLINE T S(ce_prob_grad)(T e, double kj, double K, double rest, double g, double gis,
                             double gKs)
{
    return (T)(e == (T)1 ? ((K - kj) - kj * rest) * gis : (double)e * gKs - g * kj);
}

/* ------------------------------------------------------------------ class indices, one row */

/*
 * The loss pass over a row: x'_j, e_j, r = sum_{j != skip} e_j and (WD) wd.  With a gradient
 * (ST) it stores into st (which may alias x) what the gradient pass needs: e_j; under softcap
 * with smoothing x'_j (the pass recomputes e_j from it); under softcap without smoothing the
 * chain product e_j (1 - t_j^2), t_j = x'_j / c, so that the gradient pass is one multiply.
 * row_ce_elems does n elements from j0 (whole vectors: per lane, in groups of FCE_ROW_GROUP
 * vectors summed in T, as lanes_sumexp), leaving element skip out of the sum (a mask of its
 * own vector only: the pass splits the row around that vector, so no other vector tests it).
 * float64 (groups of one) keeps the single masked loop: there the split measured slower.
 */
/* One element j of the loss pass: e_j (returned), what the gradient pass needs stored (ST), and
 * the smoothing distance m - x'_j in *d.  WD = 1 (class weights): the weighted term is added to
 * *wsum here, in double (a weight may overflow T); WD = 2 (no weights): the caller sums *d in
 * T lanes like the exps.  The single home of the element formula for the vector groups and the
 * tail. */
FCE_INLINE T S(row_ce_one)(const T *x, fce_idx j, T m, T *st, T cap, T inv, const double *w,
                           double *wsum, T *d, const int ST, const int K, const int WD)
{
    T t = K ? FCE_TANH(x[j] * inv) : (T)0;
    T v = K ? cap * t : x[j];                   /* = cap_of(x_j) */
    T e = FCE_EXPN(v - m);
    /* st: element j of the store, or (row_ce_elems) of a block buffer stored afterwards */
    if (ST) *st = K ? (WD ? v : e * (1 - t * t)) : e;
    *d = m - v;
    if (WD == 1) *wsum += S(wdist_term)(w[j], (double)(m - v));
    return e;
}

FCE_INLINE void S(row_ce_elems)(const T *x, fce_idx j0, fce_idx n, T m, fce_idx skip, T *st,
                                T cap, const double *w, double *acc, double *wacc, const int ST,
                                const int K, const int WD, const int SK)
{
    T inv = (T)1 / cap, part[FCE_LANES], dpart[FCE_LANES];
    fce_idx j = j0, stop, end = j0 + n;
    int k;
    /* double: the stores after each vector block (FCE_STORE_AFTER).  float stores as it goes:
     * its chains are shorter, and the buffer (a second store per element) measured slower. */
    T sb[FCE_LANES];
    if (FCE_ROW_GROUP(T) == 1) {              /* double: straight into the lanes */
        for (; j + FCE_LANES <= end; j += FCE_LANES) {
            _Pragma("omp simd")
            for (k = 0; k < FCE_LANES; k++) {
                T d;
                T e = S(row_ce_one)(x, j + k, m, &sb[k], cap, inv, w, &wacc[k], &d, ST, K, WD);
                acc[k] += SK && j + k == skip ? 0.0 : (double)e;
                if (WD == 2) wacc[k] += (double)d;
            }
            if (ST) FCE_STORE_AFTER(st + j, sb, FCE_LANES, FCE_LANES);
        }
        return;
    }
    /* float: the unweighted distances (WD = 2) are summed like the exps, in T over a group
     * (all terms >= 0, so a group adds a few roundings of 2^-24 relative to its own sum), then
     * widened once; a per-element double term was the one thing keeping this loop scalar-slow */
    while (j + FCE_LANES <= end) {
        stop = j + FCE_ROW_GROUP(T) * FCE_LANES <= end ? j + FCE_ROW_GROUP(T) * FCE_LANES : end;
        for (k = 0; k < FCE_LANES; k++) { part[k] = 0; dpart[k] = 0; }
        for (; j + FCE_LANES <= stop; j += FCE_LANES)
            _Pragma("omp simd")
            for (k = 0; k < FCE_LANES; k++) {
                T d;
                T e = S(row_ce_one)(x, j + k, m, ST ? st + j + k : NULL, cap, inv, w, &wacc[k], &d,
                                    ST, K, WD);
                part[k] += SK && j + k == skip ? (T)0 : e;
                if (WD == 2) dpart[k] += d;
            }
        _Pragma("omp simd")
        for (k = 0; k < FCE_LANES; k++) {
            acc[k] += (double)part[k];
            if (WD == 2) wacc[k] += (double)dpart[k];
        }
    }
}

FCE_INLINE double S(row_ce_pass)(const T *x, fce_idx n, T m, fce_idx skip, T *st, T cap,
                                 const double *w, double *wd, const int ST, const int K,
                                 const int WD)
{
    double acc[FCE_LANES] = {0}, wacc[FCE_LANES] = {0}, tail = 0.0, wtail = 0.0;
    T inv = (T)1 / cap;
    fce_idx vl = n - n % FCE_LANES, js = skip - skip % FCE_LANES, j;
    if (FCE_ROW_GROUP(T) == 1) {
        S(row_ce_elems)(x, 0, vl, m, skip, st, cap, w, acc, wacc, ST, K, WD, 1);
    } else if (skip >= 0 && skip < vl) {
        S(row_ce_elems)(x, 0, js, m, skip, st, cap, w, acc, wacc, ST, K, WD, 0);
        S(row_ce_elems)(x, js, FCE_LANES, m, skip, st, cap, w, acc, wacc, ST, K, WD, 1);
        S(row_ce_elems)(x, js + FCE_LANES, vl - js - FCE_LANES, m, skip, st, cap, w, acc, wacc,
                        ST, K, WD, 0);
    } else {
        S(row_ce_elems)(x, 0, vl, m, skip, st, cap, w, acc, wacc, ST, K, WD, 0);
    }
    for (j = vl; j < n; j++) {
        T d;
        T e = S(row_ce_one)(x, j, m, ST ? st + j : NULL, cap, inv, w, &wtail, &d, ST, K, WD);
        tail += j == skip ? 0.0 : (double)e;
        if (WD == 2) wtail += (double)d;
    }
    if (WD) *wd = fce_combine_lanes(wacc) + wtail;
    return fce_combine_lanes(acc) + tail;
}

/* The gradient pass over a row: g_j = e_j kp - ks w_j (WS: smoothing on), times the softcap
 * chain factor under K (g holds what row_ce_pass stored: the chain product already without
 * smoothing, x'_j with it). */
FCE_INLINE void S(row_ce_grad)(T *g, fce_idx n, T m, T kp, T ks, const double *w, T cap,
                               const int K, const int WS)
{
    fce_idx j;
    if (K && !WS) {
        _Pragma("omp simd")
        for (j = 0; j < n; j++) g[j] *= kp;
        return;
    }
    _Pragma("omp simd")
    for (j = 0; j < n; j++) {
        T e = K ? FCE_EXPN(g[j] - m) : g[j];
        T v = e * kp - (WS == 1 ? ks * (T)w[j] : WS == 2 ? ks : (T)0);
        g[j] = K ? v * S(cap_slope)(g[j], cap) : v;
    }
}

FCE_INLINE void S(ce_index_row)(const T *xr, fce_idx C, fce_idx sidx, const fce_ce_args *a,
                                T *gr, const int G, const int K, const int O)
{
    double keep = O ? 1.0 - a->eps : 1.0, spread = O ? a->eps / (double)C : 0.0;
    const double *w = O ? a->w : NULL;
    T cap = K ? (T)a->cap : (T)1;
    int64_t y = a->tgt[sidx];
    if (y == a->ignore || (uint64_t)y >= (uint64_t)C) {
        /* out of range despite validation (the caller's target array changed under us):
         * NaN, never an out-of-bounds access.  An ignored sample's gradient is 0 whatever its
         * logits hold (NaN/inf padding included). */
        a->loss[sidx] = y == a->ignore ? 0.0 : NAN;
        if (G) memset(gr, 0, (size_t)C * sizeof(T));
        return;
    }
    double wy = w ? w[y] : 1.0, wd = 0.0, loss, kp, ks, gy, r;
    double g = G ? a->gcoef * (a->gscale ? a->gscale[sidx] : 1.0) : 0.0;
    T m, xy = S(cap_of)(xr[y], cap, K);       /* read before an in-place gradient overwrites it */
    int wdon = O && spread != 0.0;
    /* Without softcap or smoothing only m and r are needed: one read of the row
     * (row_max_sumexp), and with a gradient a second pass g_j = e_j kp from the cached row.
     * The same r either way, so the loss does not depend on G. */
    /* Rows of up to FCE_ROW_MAXBLK blocks keep their exps for the gradient (one exp per
     * element).  Longer rows take the three-pass route (max; exps stored while summed; scale)
     * with or without a gradient: recomputing their exps in the gradient pass made a
     * 256x128256 call 1.3x slower, and one route for both keeps the loss bitwise independent
     * of G.  (Such rows fit L2, so the second read of the forward pass is cheap.) */
    int online = !K && !wdon && C <= FCE_ROW_MAXBLK * FCE_ROW_BLOCK;
    int kept = G && online;
    T bM[FCE_ROW_MAXBLK];
    if (online) {
        r = kept ? S(row_max_sumexp)(xr, C, y, &m, gr, bM, 1)
                 : S(row_max_sumexp)(xr, C, y, &m, NULL, NULL, 0);
    } else {
        m = S(cap_of)(S(row_max)(xr, C), cap, K);
        /* the weights as a compile-time mode (1 weighted, 2 not): a run-time w ? w[j] : 1 in
         * the element loop kept it from vectorising (smoothing cost 4x plain CE) */
        r = !wdon ? S(row_ce_pass)(xr, C, m, y, gr, cap, w, &wd, G, K, 0)
            : w ? S(row_ce_pass)(xr, C, m, y, gr, cap, w, &wd, G, K, 1)
                : S(row_ce_pass)(xr, C, m, y, gr, cap, w, &wd, G, K, 2);
    }
    double ey = (double)FCE_EXPN(xy - m);
    S(ce_index_finish)((double)m, (double)(m - xy), ey, r, wd, wy, g, keep, spread, O ? a->W : 0.0,
                       O ? a->zl : 0.0, O, &loss, &kp, &ks, &gy);
    a->loss[sidx] = loss;
    if (!G) return;
    if (kept) S(row_scale_blocks)(gr, C, m, bM, kp);
    else if (wdon && w) S(row_ce_grad)(gr, C, m, (T)kp, (T)ks, w, cap, K, 1);
    else if (wdon) S(row_ce_grad)(gr, C, m, (T)kp, (T)ks, w, cap, K, 2);
    else S(row_ce_grad)(gr, C, m, (T)kp, (T)ks, w, cap, K, 0);
    gr[y] = (T)gy * (K ? S(cap_slope)(xy, cap) : (T)1);
}

/* ------------------------------------------------------------------ class indices, columns */

/* Loss pass of one class over bw columns (see row_ce_pass).  The target is left out of r by
 * comparing the class number with yc in T (YT: exact for C <= 2^24, and no int64 lanes in the
 * loop, see tile_targets) or with the int64 yy.  WD = 1 (class weights) adds w_c (m - x'_c) to wd
 * in double; WD = 2 (smoothing without weights) adds m - x'_c to the T partial dp, which the
 * caller widens with the exps (a double term per element kept this loop 1.4x plain CE). */
FCE_INLINE void S(col_ce_pass)(const T *xc, fce_idx c, fce_idx bw, const T *m, const T *yc,
                               const int64_t *yy, T *gc, T cap, double wc, T *r, double *wd,
                               T *dp, const int ST, const int K, const int WD, const int YT)
{
    const T cf = (T)c;
    fce_idx b;
    for (b = 0; b < bw; b++) {
        T v = S(cap_of)(xc[b], cap, K);
        T e = FCE_EXPN(v - m[b]);
        if (ST) gc[b] = K ? v : e;
        r[b] += (YT ? cf == yc[b] : c == yy[b]) ? (T)0 : e;
        if (WD == 1) wd[b] += S(wdist_term)(wc, (double)(m[b] - v));
        if (WD == 2) dp[b] += m[b] - v;
    }
}

/* Gradient pass of one class over bw columns; ignored samples get 0 (the select keeps NaN/inf
 * logits of padding out of their zero gradient, softcap included). */
FCE_INLINE void S(col_ce_grad)(T *gc, fce_idx bw, const T *m, const T *kp, const T *ks,
                               const T *live, T wc, T cap, const int K, const int WS)
{
    fce_idx b;
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        T e = K ? FCE_EXPN(gc[b] - m[b]) : gc[b];
        T v = e * kp[b] - (WS ? ks[b] * wc : (T)0);
        v = K ? v * S(cap_slope)(gc[b], cap) : v;
        gc[b] = live[b] != 0 ? v : (T)0;
    }
}

/* bw samples laid out as columns: element (c, b) at xt[c*st + b]; gt may alias xt.
 * Per-column scalars live in arrays of one width per loop (double for the loss math, T for the
 * gradient pass, mask included) so that every loop over b vectorises. */
FCE_INLINE void S(ce_index_cols)(const T *xt, fce_idx C, fce_idx st, fce_idx bw, fce_idx soff,
                                 const fce_ce_args *a, T *gt, double *loss, const int G,
                                 const int K, const int O)
{
    double keep = O ? 1.0 - a->eps : 1.0, spread = O ? a->eps / (double)C : 0.0;
    double W = O ? a->W : 0.0, zl = O ? a->zl : 0.0, gcoef = a->gcoef;
    const double *w = O ? a->w : NULL, *gsc = a->gscale ? a->gscale + soff : NULL;
    const int64_t *tg = a->tgt + soff;
    int64_t ignore = a->ignore;
    int wdon = O && spread != 0.0;
    T cap = K ? (T)a->cap : (T)1;
    T m[FCE_TILE], xy[FCE_TILE], live[FCE_TILE], kpt[FCE_TILE], kst[FCE_TILE], yc[FCE_TILE];
    double r[FCE_TILE], wd[FCE_TILE], gy[FCE_TILE], liv[FCE_TILE], bad[FCE_TILE], wyv[FCE_TILE];
    int64_t yy[FCE_TILE];
    fce_idx c, c0, c1, b;
    int yt = C <= ((fce_idx)1 << 24);             /* the class test in T is exact (col_ce_pass) */
    S(col_max)(xt, C, st, bw, m);
    S(tile_targets)(tg, bw, ignore, C, yc, bad);
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        int64_t y = tg[b];
        int ign = y == ignore;
        /* validated in Python; re-checked so a target changed under us gives NaN, not an
         * out-of-bounds access */
        int out_of_range = !ign && (uint64_t)y >= (uint64_t)C;
        yy[b] = ign || out_of_range ? -1 : y;  /* -1 never matches a class below */
        liv[b] = ign || out_of_range ? 0.0 : 1.0;
    }
    /* gather the targets before an in-place gradient overwrites them; class 0 stands in for
     * ignored samples (C == 0: there is no class to read) */
    for (b = 0; b < bw; b++) {
        T v = C > 0 ? xt[(yy[b] < 0 ? 0 : yy[b]) * st + b] : m[b];
        xy[b] = S(cap_of)(yy[b] < 0 ? m[b] : v, cap, K);
        m[b] = S(cap_of)(m[b], cap, K);
        wyv[b] = w && yy[b] >= 0 ? w[yy[b]] : 1.0;
        r[b] = 0.0; wd[b] = 0.0;
    }
    /* the exps summed in T over FCE_COL_SPAN classes, then widened (see FCE_COL_BLK) */
    for (c0 = 0; c0 < C; c0 = c1) {
        T pr[FCE_TILE], pd[FCE_TILE];
        c1 = c0 + FCE_COL_SPAN(T, C) < C ? c0 + FCE_COL_SPAN(T, C) : C;
        for (b = 0; b < bw; b++) { pr[b] = 0; pd[b] = 0; }
        for (c = c0; c < c1; c++) {
            const T *xc = xt + c * st;
            T *gc = G ? gt + c * st : NULL;
            double wc = w ? w[c] : 1.0;
#define FCE_COL_PASS(WD) \
            do { \
                if (yt) \
                    S(col_ce_pass)(xc, c, bw, m, yc, yy, gc, cap, wc, pr, wd, pd, G, K, WD, 1); \
                else \
                    S(col_ce_pass)(xc, c, bw, m, yc, yy, gc, cap, wc, pr, wd, pd, G, K, WD, 0); \
            } while (0)
            if (wdon && w) FCE_COL_PASS(1);
            else if (wdon) FCE_COL_PASS(2);
            else FCE_COL_PASS(0);
#undef FCE_COL_PASS
        }
        for (b = 0; b < bw; b++) r[b] += (double)pr[b];
        if (wdon && !w)
            for (b = 0; b < bw; b++) wd[b] += (double)pd[b];
    }
    /* the gradient scale first: a conditional load would keep the loop below from vectorising */
    if (gsc)
        for (b = 0; b < bw; b++) gy[b] = liv[b] * gcoef * gsc[b];
    else
        for (b = 0; b < bw; b++) gy[b] = liv[b] * gcoef;
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        double l, kp, ks, gyb;
        S(ce_index_finish)((double)m[b], (double)(m[b] - xy[b]), (double)FCE_EXPN(xy[b] - m[b]),
                           r[b], wd[b], wyv[b], gy[b], keep, spread, W, zl, O, &l, &kp, &ks, &gyb);
        loss[b] = (liv[b] != 0.0 ? l : 0.0) + bad[b];
        kpt[b] = (T)kp; kst[b] = (T)ks; gy[b] = gyb;
        live[b] = (T)liv[b];
    }
    if (!G) return;
    for (c = 0; c < C; c++) {
        T wc = w ? (T)w[c] : (T)1;
        if (wdon) S(col_ce_grad)(gt + c * st, bw, m, kpt, kst, live, wc, cap, K, 1);
        else S(col_ce_grad)(gt + c * st, bw, m, kpt, kst, live, wc, cap, K, 0);
    }
    /* scatter of the target gradients: distinct columns, so no two lanes write one address */
    for (b = 0; b < bw; b++)
        if (yy[b] >= 0)
            gt[yy[b] * st + b] = (T)gy[b] * (K ? S(cap_slope)(xy[b], cap) : (T)1);
}

/*
 * The plain case of ce_index_cols (no weights, smoothing, z-loss or softcap), which is what most
 * callers run: the same formulas and summation order, so the same bits, in loops that all
 * vectorise across the columns.  The target is found by comparing the class number with a
 * per-column target held in T (exact: the dispatch sends only C <= 2^24 here), so the gradient
 * pass writes the target's gradient with a select instead of a scatter, and nothing per column
 * is held as int64 or double except the sums.  Dead columns (ignored or out of range) carry -1.
 */
FCE_INLINE void S(ce_plain_cols)(const T *xt, fce_idx C, fce_idx st, fce_idx bw, fce_idx soff,
                                 const fce_ce_args *a, T *gt, double *loss, const int G,
                                 const int GS)
{
    const int64_t *tg = a->tgt + soff;
    const double *gsc = GS ? a->gscale + soff : NULL;
    const double gcoef = a->gcoef;
    const int64_t ignore = a->ignore;
    T m[FCE_TILE], yc[FCE_TILE], ey[FCE_TILE], xy[FCE_TILE], kp[FCE_TILE], gy[FCE_TILE];
    double r[FCE_TILE], bad[FCE_TILE];
    fce_idx c, c0, b;
    S(col_max)(xt, C, st, bw, m);
    S(tile_targets)(tg, bw, ignore, C, yc, bad);
    for (b = 0; b < bw; b++) r[b] = 0.0;
    /* x_y gathered before an in-place gradient overwrites it (m for dead columns); one gather
     * per column costs less than selecting it out of every class's pass */
    for (b = 0; b < bw; b++)
        xy[b] = yc[b] >= 0 ? xt[(fce_idx)yc[b] * st + b] : m[b];
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) ey[b] = FCE_EXPN(xy[b] - m[b]);
    /* float32: the exps of FCE_COL_BLK classes are summed per column in float, then widened
     * once into the double sum r (widening and adding into r[b] per class was a third of this
     * pass at C = 10).  The terms are positive, so a block adds at most 3 roundings of 2^-24
     * relative to its own sum.  float64 sums every class in one block, as before. */
    for (c0 = 0; c0 < C; c0 += FCE_COL_SPAN(T, C)) {
        fce_idx c1 = c0 + FCE_COL_SPAN(T, C) < C ? c0 + FCE_COL_SPAN(T, C) : C;
        T part[FCE_TILE];
        _Pragma("omp simd")
        for (b = 0; b < bw; b++) part[b] = 0;
        for (c = c0; c < c1; c++) {
            const T *xc = xt + c * st;
            T *gc = G ? gt + c * st : NULL;
            const T cf = (T)c;
            _Pragma("omp simd")
            for (b = 0; b < bw; b++) {
                T e = FCE_EXPN(xc[b] - m[b]);
                if (G) gc[b] = e;
                part[b] += cf == yc[b] ? (T)0 : e;
            }
        }
        _Pragma("omp simd")
        for (b = 0; b < bw; b++) r[b] += (double)part[b];
    }
    /* The per-column finish in three loops of one width each: widen, finish in double, narrow.
     * Written as one loop mixing T and double, GCC's AVX2 target left it scalar (with branches
     * for the selects): a third of a C = 10 call on AVX2. */
    double md[FCE_TILE], dxy[FCE_TILE], eyd[FCE_TILE], gd[FCE_TILE], kpd[FCE_TILE];
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        md[b] = (double)m[b]; dxy[b] = (double)(m[b] - xy[b]); eyd[b] = (double)ey[b];
        gd[b] = G ? (GS ? gcoef * gsc[b] : gcoef) : 0.0;
    }
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        double l, ks, kk, gyd;
        S(ce_index_finish)(md[b], dxy[b], eyd[b], r[b], 0.0, 1.0, gd[b], 1.0, 0.0, 0.0, 0.0, 0,
                           &l, &kk, &ks, &gyd);
        loss[b] = l; kpd[b] = kk; gd[b] = gyd;
    }
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        loss[b] = (yc[b] >= 0 ? loss[b] : 0.0) + bad[b];
        kp[b] = (T)kpd[b]; gy[b] = (T)gd[b];
    }
    if (!G) return;
    for (c = 0; c < C; c++) {
        T *gc = gt + c * st;
        const T cf = (T)c;
        _Pragma("omp simd")
        for (b = 0; b < bw; b++) {
            T v = cf == yc[b] ? gy[b] : gc[b] * kp[b];
            gc[b] = yc[b] >= 0 ? v : (T)0;       /* NaN/inf padding stays out of a zero gradient */
        }
    }
}

static void S(ce_plain_cols_0)(const T *xt, fce_idx C, fce_idx st, fce_idx bw, fce_idx soff,
                               const fce_ce_args *a, T *gt, double *loss)
{ S(ce_plain_cols)(xt, C, st, bw, soff, a, gt, loss, 0, 0); }
static void S(ce_plain_cols_1)(const T *xt, fce_idx C, fce_idx st, fce_idx bw, fce_idx soff,
                               const fce_ce_args *a, T *gt, double *loss)
{ S(ce_plain_cols)(xt, C, st, bw, soff, a, gt, loss, 1, 0); }
static void S(ce_plain_cols_2)(const T *xt, fce_idx C, fce_idx st, fce_idx bw, fce_idx soff,
                               const fce_ce_args *a, T *gt, double *loss)
{ S(ce_plain_cols)(xt, C, st, bw, soff, a, gt, loss, 1, 1); }

/* ------------------------------------------------------------------ class indices, C = 2 */

/*
 * Two classes, no options, no softcap: a closed form on the row pairs in place (no transpose,
 * no double-precision logs).  With d = x_other - x_y and e = exp(-|d|):
 *   loss = softplus(d) = max(d, 0) + log1p(e)                       (one exp, one log per row)
 *   dL/dx_other = g sigmoid(d) = -dL/dx_y,  sigmoid(d) = 1/(1+e) (d >= 0), e/(1+e) (d < 0)
 * Every term is >= 0 and sigmoid is never formed as 1 - something, so confident rows keep
 * their relative precision (loss ~ e).  d = +inf gives inf, -inf gives 0, NaN propagates; both
 * logits -inf (a fully masked row) or any +inf logit gives NaN, as the general path does.  log1p(e) shares
 * 1/(1+e) with the sigmoid, as bce_logits_one does.
 */
FCE_INLINE void S(ce_index_c2)(const T *x, fce_idx bw, fce_idx soff, const fce_ce_args *a, T *g,
                               double *loss, const int G, const int GS)
{
    const double *gsc = a->gscale ? a->gscale + soff : NULL;
    double gcoef = a->gcoef;
    T yc[FCE_TILE], lt[FCE_TILE], gs[FCE_TILE];
    T gp[FCE_TILE];              /* dL/dx_0 per row; dL/dx_1 = -dL/dx_0 */
    double bad[FCE_TILE];
    fce_idx b;
    /* each loop in one lane width: targets (tile_targets), the scale, the math in T, the loss
     * widened */
    S(tile_targets)(a->tgt + soff, bw, a->ignore, 2, yc, bad);
    if (G) {
        if (GS)
            for (b = 0; b < bw; b++) gs[b] = (T)(gcoef * gsc[b]);
        else
            for (b = 0; b < bw; b++) gs[b] = (T)gcoef;
    }
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        int live = yc[b] >= 0, y1 = yc[b] == (T)1;
        T x0 = x[2 * b], x1 = x[2 * b + 1];
        T d = y1 ? x0 - x1 : x1 - x0;
        /* a +inf logit: NaN, as log_softmax (and the general path) give for an infinite max */
        d = x0 == (T)INFINITY || x1 == (T)INFINITY ? (T)NAN : d;
        T ad = d < 0 ? -d : d;
        T e = FCE_EXPN(-ad);
        T inv = 1 / (1 + e);                     /* used by the gradient only */
        T l = (d > 0 ? d : (T)0) + FCE_LOG1P01(e);
        lt[b] = live ? l : (T)0;                 /* dead rows: 0, plus NaN below if out of range */
        if (G) {
            /* p_other = sigmoid(d); dL/dx_0 = +g p_other when the target is 1, else -g p_other */
            T sig = d >= 0 ? inv : e * inv;
            T gv = gs[b] * sig;
            gp[b] = live ? (y1 ? gv : -gv) : (T)0;
        }
    }
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) loss[b] = (double)lt[b] + bad[b];
    if (!G) return;
    /* the pair stores in a loop of their own: contiguous in g, one shuffle per vector.  x may
     * alias g (in-place gradient): every x of the block was read above. */
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        g[2 * b] = gp[b];
        g[2 * b + 1] = (T)0 - gp[b];             /* 0 - (+0) = +0 for dead rows */
    }
}

static void S(ce_index_c2_00)(const T *x, fce_idx bw, fce_idx soff, const fce_ce_args *a, T *g,
                               double *loss)
{ S(ce_index_c2)(x, bw, soff, a, g, loss, 0, 0); }
static void S(ce_index_c2_10)(const T *x, fce_idx bw, fce_idx soff, const fce_ce_args *a, T *g,
                               double *loss)
{ S(ce_index_c2)(x, bw, soff, a, g, loss, 1, 0); }
static void S(ce_index_c2_11)(const T *x, fce_idx bw, fce_idx soff, const fce_ce_args *a, T *g,
                               double *loss)
{ S(ce_index_c2)(x, bw, soff, a, g, loss, 1, 1); }

/* ------------------------------------------------------------------ probability targets */

/* Loss pass over a row: rest = s - 1 by counting the exact ones apart (as col_sumexp: the max
 * contributes e = 1 exactly, so rest keeps full precision for confident rows, in one pass and
 * identically with or without a gradient), qd = sum_j k_j (m - x'_j), Ks = sum_j k_j. */
FCE_INLINE void S(row_prob_pass)(const T *x, const T *q, fce_idx n, T m, T *st, T cap,
                                 const double *w, double keep, double spread, double *rest,
                                 double *qd, double *Ks, const int ST, const int K, const int O)
{
    double acc[FCE_LANES] = {0}, ones[FCE_LANES] = {0}, dacc[FCE_LANES] = {0};
    double kacc[FCE_LANES] = {0};
    double tail = 0.0, otail = 0.0, dtail = 0.0, ktail = 0.0;
    fce_idx j = 0;
    int k;
    for (; j + FCE_LANES <= n; j += FCE_LANES)
        _Pragma("omp simd")
        for (k = 0; k < FCE_LANES; k++) {
            T v = S(cap_of)(x[j + k], cap, K);
            T e = FCE_EXPN(v - m);
            double one = (double)(e == (T)1);
            double kk = S(prob_k)(q[j + k], w ? w[j + k] : 1.0, keep, spread, O);
            if (ST) st[j + k] = K ? v : e;
            acc[k] += (double)e - one;
            ones[k] += one;
            dacc[k] += S(wdist_term)(kk, (double)(m - v));
            kacc[k] += kk;
        }
    for (; j < n; j++) {
        T v = S(cap_of)(x[j], cap, K);
        T e = FCE_EXPN(v - m);
        double one = (double)(e == (T)1);
        double kk = S(prob_k)(q[j], w ? w[j] : 1.0, keep, spread, O);
        if (ST) st[j] = K ? v : e;
        tail += (double)e - one;
        otail += one;
        dtail += S(wdist_term)(kk, (double)(m - v));
        ktail += kk;
    }
    *rest = (fce_combine_lanes(ones) + otail - 1.0) + (fce_combine_lanes(acc) + tail);
    *qd = fce_combine_lanes(dacc) + dtail;
    *Ks = fce_combine_lanes(kacc) + ktail;
}

/* One element of the T-lane probability passes (rows and column tiles alike): e = exp(v - m)
 * (returned), the ones counted apart, qq (m - v) with wdist_term's zero rule, qq, and under
 * smoothing (SM) the distance m - v.  qq is q, or w q under class weights (never with smoothing,
 * see ce_prob_row).  The single home of that formula. */
FCE_INLINE T S(prob_elem)(T v, T qq, T m, T *pa, T *po, T *pd, T *pk, T *ps, const int SM)
{
    T d = m - v, e = FCE_EXPN(v - m);
    T one = e == (T)1 ? (T)1 : (T)0;
    *pa += e - one;
    *po += one;
    *pd += qq == (T)0 || d == (T)0 ? (T)0 : qq * d;   /* wdist_term */
    *pk += qq;
    if (SM) *ps += d;
    return e;
}

/* One element of the T-lane probability gradient: g (e K / s - k) as e a - gg k with a = g K / s,
 * and at a max element (e = 1) ((K - k) - k rest) g / s with K = Khi + Klo split in T, so Khi - k
 * is exact for a confident k near K (Sterbenz) and a confident one-hot target keeps the relative
 * precision of its tiny gradient. */
FCE_INLINE T S(prob_grad_elem)(T e, T kj, T a, T gg, T gis, T rt, T Khi, T Klo)
{
    T top = (((Khi - kj) + Klo) - kj * rt) * gis;
    return e == (T)1 ? top : e * a - gg * kj;
}

/* Under smoothing k_j = keep q_j + spread is linear in q_j, so the passes sum q_j (m - x'_j), q_j
 * and (m - x'_j) in T and the smoothing is applied here once, in double: forming k_j in T would
 * round keep and spread in every term, a bias the float32 mean of a large batch shows. */
FCE_INLINE void S(prob_smooth_sums)(double *qd, double *Ks, double dsum, double C, double keep,
                                    double spread)
{
    *qd = keep * *qd + spread * dsum;
    *Ks = keep * *Ks + spread * C;
}

/* The probability-target row without softcap (k_j = q_j, keep q_j + spread under smoothing (SM),
 * or w_j q_j under class weights without smoothing (WT), formed in T), what distillation callers
 * run: the loss pass of row_prob_pass with its four sums (rest, ones, qd, Ks; every term >= 0)
 * kept in T per lane over groups of FCE_ROW_GROUP vectors and widened once per group, and a
 * gradient pass in T without a division per element.  The general pass does all of it in
 * double lanes (4x the instructions of plain class-index CE, plus a vdivpd per element in the
 * gradient). */
FCE_INLINE void S(row_prob_pass_plain)(const T *x, const T *q, const T *wt, fce_idx n, T m,
                                       T *st, double keep, double spread, double *rest,
                                       double *qd, double *Ks, const int ST, const int SM,
                                       const int WT)
{
    double acc[FCE_LANES] = {0}, ones[FCE_LANES] = {0}, dacc[FCE_LANES] = {0};
    double kacc[FCE_LANES] = {0}, sacc[FCE_LANES] = {0};
    double tail = 0.0, otail = 0.0, dtail = 0.0, ktail = 0.0, stail = 0.0;
    T pa[FCE_LANES], po[FCE_LANES], pd[FCE_LANES], pk[FCE_LANES], ps[FCE_LANES];
    fce_idx j = 0, stop;
    int k;
    while (j + FCE_LANES <= n) {
        stop = j + FCE_ROW_GROUP(T) * FCE_LANES <= n ? j + FCE_ROW_GROUP(T) * FCE_LANES : n;
        for (k = 0; k < FCE_LANES; k++) { pa[k] = 0; po[k] = 0; pd[k] = 0; pk[k] = 0; ps[k] = 0; }
        for (; j + FCE_LANES <= stop; j += FCE_LANES)
            _Pragma("omp simd")
            for (k = 0; k < FCE_LANES; k++) {
                T e = S(prob_elem)(x[j + k], WT ? wt[j + k] * q[j + k] : q[j + k], m, &pa[k],
                                   &po[k], &pd[k], &pk[k], &ps[k], SM);
                if (ST) st[j + k] = e;
            }
        _Pragma("omp simd")
        for (k = 0; k < FCE_LANES; k++) {
            acc[k] += (double)pa[k]; ones[k] += (double)po[k];
            dacc[k] += (double)pd[k]; kacc[k] += (double)pk[k];
            if (SM) sacc[k] += (double)ps[k];
        }
    }
    for (; j < n; j++) {
        T v = x[j];
        T e = FCE_EXPN(v - m);
        double one = (double)(e == (T)1);
        double qq = WT ? (double)(wt[j] * q[j]) : (double)q[j];
        if (ST) st[j] = e;
        tail += (double)e - one;
        otail += one;
        dtail += S(wdist_term)(qq, (double)(m - v));
        ktail += qq;
        if (SM) stail += (double)(m - v);
    }
    *rest = (fce_combine_lanes(ones) + otail - 1.0) + (fce_combine_lanes(acc) + tail);
    *qd = fce_combine_lanes(dacc) + dtail;
    *Ks = fce_combine_lanes(kacc) + ktail;
    if (SM) S(prob_smooth_sums)(qd, Ks, fce_combine_lanes(sacc) + stail, (double)n, keep, spread);
}

/* g_j = g (e_j K / s - k_j) from the stored e_j, in T (prob_grad_elem); k_j = q_j, keep q_j +
 * spread (SM) or w_j q_j (WT). */
FCE_INLINE void S(row_prob_grad_plain)(T *g, const T *q, const T *wt, fce_idx n, double K,
                                       double rest, double gs, T keep, T spread, const int SM,
                                       const int WT)
{
    double inv = 1.0 / (1.0 + rest);
    T a = (T)(gs * K * inv), gg = (T)gs, gis = (T)(gs * inv), rt = (T)rest;
    T Khi = (T)K, Klo = (T)(K - (double)Khi);
    fce_idx j;
    _Pragma("omp simd")
    for (j = 0; j < n; j++) {
        T k = SM ? keep * q[j] + spread : WT ? wt[j] * q[j] : q[j];
        g[j] = S(prob_grad_elem)(g[j], k, a, gg, gis, rt, Khi, Klo);
    }
}

FCE_INLINE void S(ce_prob_row)(const T *xr, const T *qr, fce_idx C, fce_idx sidx,
                               const fce_ce_prob_args *a, T *gr, const int G, const int K,
                               const int O)
{
    double keep = O ? 1.0 - a->eps : 1.0, spread = O ? a->eps / (double)C : 0.0;
    const double *w = O ? a->w : NULL;
    T cap = K ? (T)a->cap : (T)1;
    double rest, qd, Ks, loss, Kz;
    fce_idx j;
    T m = S(cap_of)(S(row_max)(xr, C), cap, K);
    /* The T-lane passes: no softcap, and class weights only without smoothing (k_j = w_j q_j
     * formed in T, and K = sum_j k_j of those same values, so K - k_j is exact where it must be,
     * e.g. 0 for C = 1).  With both, K's linear form keep sum w q + spread sum w (see
     * prob_smooth_sums) would not match the k_j formed in T to the last bit: the double path. */
    int sm = O && spread != 0.0;
    const T *wt = w && !sm ? (const T *)a->wt : NULL;
    if (!K && (!w || wt)) {
#define FCE_PROB_PASS(SM, WT) \
        S(row_prob_pass_plain)(xr, qr, wt, C, m, gr, SM ? keep : 1.0, SM ? spread : 0.0, \
                               &rest, &qd, &Ks, G, SM, WT)
        if (sm) FCE_PROB_PASS(1, 0);
        else if (wt) FCE_PROB_PASS(0, 1);
        else FCE_PROB_PASS(0, 0);
#undef FCE_PROB_PASS
        S(ce_prob_finish)((double)m, rest, qd, Ks, O ? a->zl : 0.0, O, &loss, &Kz);
        a->loss[sidx] = loss;
        if (!G) return;
        double gs = a->gcoef * (a->gscale ? a->gscale[sidx] : 1.0);
#define FCE_PROB_GRAD(SM, WT) \
        S(row_prob_grad_plain)(gr, qr, wt, C, Kz, rest, gs, SM ? (T)keep : (T)1, \
                               SM ? (T)spread : (T)0, SM, WT)
        if (sm) FCE_PROB_GRAD(1, 0);
        else if (wt) FCE_PROB_GRAD(0, 1);
        else FCE_PROB_GRAD(0, 0);
#undef FCE_PROB_GRAD
        return;
    }
    S(row_prob_pass)(xr, qr, C, m, gr, cap, w, keep, spread, &rest, &qd, &Ks, G, K, O);
    S(ce_prob_finish)((double)m, rest, qd, Ks, O ? a->zl : 0.0, O, &loss, &Kz);
    a->loss[sidx] = loss;
    if (!G) return;
    double g = a->gcoef * (a->gscale ? a->gscale[sidx] : 1.0);
    double gis = g / (1.0 + rest), gKs = Kz * gis;
    _Pragma("omp simd")
    for (j = 0; j < C; j++) {
        T e = K ? FCE_EXPN(gr[j] - m) : gr[j];
        T v = S(ce_prob_grad)(e, S(prob_k)(qr[j], w ? w[j] : 1.0, keep, spread, O), Kz, rest, g,
                              gis, gKs);
        gr[j] = K ? v * S(cap_slope)(gr[j], cap) : v;
    }
}

/* One class of the probability-target column pass without softcap (class weight wc under WT, as
 * the row): the sums of row_prob_pass_plain in T (the distances too under smoothing, SM), widened
 * by the caller every FCE_COL_SPAN classes. */
FCE_INLINE void S(col_prob_class_plain)(const T *xc, const T *qc, T wc, fce_idx bw, const T *m,
                                        T *gc, T *pa, T *po, T *pd, T *pk, T *ps, const int ST,
                                        const int SM, const int WT)
{
    fce_idx b;
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        T e = S(prob_elem)(xc[b], WT ? wc * qc[b] : qc[b], m[b], &pa[b], &po[b], &pd[b], &pk[b],
                           &ps[b], SM);
        if (ST) gc[b] = e;
    }
}

/* The matching gradient of one class, in T (see row_prob_grad_plain): a = g K / s, gg = g,
 * gis = g / s, rt = rest, K = Khi + Klo per column. */
FCE_INLINE void S(col_prob_grad_plain)(T *gc, const T *qc, T wc, fce_idx bw, const T *a,
                                       const T *gg, const T *gis, const T *rt, const T *Khi,
                                       const T *Klo, T keep, T spread, const int SM, const int WT)
{
    fce_idx b;
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        T k = SM ? keep * qc[b] + spread : WT ? wc * qc[b] : qc[b];
        gc[b] = S(prob_grad_elem)(gc[b], k, a[b], gg[b], gis[b], rt[b], Khi[b], Klo[b]);
    }
}

FCE_INLINE void S(ce_prob_cols)(const T *xt, const T *qt, fce_idx C, fce_idx st, fce_idx bw,
                                fce_idx soff, const fce_ce_prob_args *a, T *gt, const int G,
                                const int K, const int O)
{
    double keep = O ? 1.0 - a->eps : 1.0, spread = O ? a->eps / (double)C : 0.0;
    double zl = O ? a->zl : 0.0;
    const double *w = O ? a->w : NULL, *gsc = a->gscale ? a->gscale + soff : NULL;
    T cap = K ? (T)a->cap : (T)1;
    T m[FCE_TILE];
    double rest[FCE_TILE], ones[FCE_TILE], qd[FCE_TILE], Ks[FCE_TILE], gg[FCE_TILE];
    double gis[FCE_TILE], dsum[FCE_TILE];
    double *loss = a->loss + soff;
    fce_idx c, c0, c1, b;
    S(col_max)(xt, C, st, bw, m);
    for (b = 0; b < bw; b++) {
        m[b] = S(cap_of)(m[b], cap, K);
        rest[b] = 0.0; ones[b] = 0.0; qd[b] = 0.0; Ks[b] = 0.0;
    }
    int sm = O && spread != 0.0;
    const T *wt = w && !sm ? (const T *)a->wt : NULL;      /* see ce_prob_row */
    int plain = !K && (!w || wt);
    T keepT = (T)keep, spreadT = (T)spread;
    for (b = 0; b < bw; b++) dsum[b] = 0.0;
    for (c0 = 0; plain && c0 < C; c0 = c1) {
        T pa[FCE_TILE], po[FCE_TILE], pd[FCE_TILE], pk[FCE_TILE], ps[FCE_TILE];
        c1 = c0 + FCE_COL_SPAN(T, C) < C ? c0 + FCE_COL_SPAN(T, C) : C;
        for (b = 0; b < bw; b++) { pa[b] = 0; po[b] = 0; pd[b] = 0; pk[b] = 0; ps[b] = 0; }
        for (c = c0; c < c1; c++) {
            const T *xc = xt + c * st, *qc = qt + c * st;
            T *gc = G ? gt + c * st : NULL;
            T wc = wt ? wt[c] : (T)1;
#define FCE_PROB_CLASS(SM, WT) \
            S(col_prob_class_plain)(xc, qc, wc, bw, m, gc, pa, po, pd, pk, ps, G, SM, WT)
            if (sm) FCE_PROB_CLASS(1, 0);
            else if (wt) FCE_PROB_CLASS(0, 1);
            else FCE_PROB_CLASS(0, 0);
#undef FCE_PROB_CLASS
        }
        _Pragma("omp simd")
        for (b = 0; b < bw; b++) {
            rest[b] += (double)pa[b]; ones[b] += (double)po[b];
            qd[b] += (double)pd[b]; Ks[b] += (double)pk[b]; dsum[b] += (double)ps[b];
        }
    }
    if (plain && sm)
        for (b = 0; b < bw; b++)
            S(prob_smooth_sums)(&qd[b], &Ks[b], dsum[b], (double)C, keep, spread);
    for (c = 0; !plain && c < C; c++) {
        const T *xc = xt + c * st, *qc = qt + c * st;
        T *gc = G ? gt + c * st : NULL;
        double wc = w ? w[c] : 1.0;
        _Pragma("omp simd")
        for (b = 0; b < bw; b++) {
            T v = S(cap_of)(xc[b], cap, K);
            T e = FCE_EXPN(v - m[b]);
            double one = (double)(e == (T)1);
            double kk = S(prob_k)(qc[b], wc, keep, spread, O);
            if (G) gc[b] = K ? v : e;
            rest[b] += (double)e - one;
            ones[b] += one;
            qd[b] += S(wdist_term)(kk, (double)(m[b] - v));
            Ks[b] += kk;
        }
    }
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        double l, Kz;
        rest[b] = (ones[b] - 1.0) + rest[b];
        S(ce_prob_finish)((double)m[b], rest[b], qd[b], Ks[b], zl, O, &l, &Kz);
        loss[b] = l;
        Ks[b] = Kz;                            /* from here on the p_j coefficient */
    }
    if (!G) return;
    if (gsc)
        for (b = 0; b < bw; b++) gg[b] = a->gcoef * gsc[b];
    else
        for (b = 0; b < bw; b++) gg[b] = a->gcoef;
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        gis[b] = gg[b] / (1.0 + rest[b]);
        qd[b] = Ks[b] * gis[b];                /* from here on g K / s */
    }
    if (plain) {
        T aT[FCE_TILE], ggT[FCE_TILE], gisT[FCE_TILE], rT[FCE_TILE], Khi[FCE_TILE], Klo[FCE_TILE];
        _Pragma("omp simd")
        for (b = 0; b < bw; b++) {
            aT[b] = (T)qd[b]; ggT[b] = (T)gg[b]; gisT[b] = (T)gis[b]; rT[b] = (T)rest[b];
            Khi[b] = (T)Ks[b]; Klo[b] = (T)(Ks[b] - (double)Khi[b]);
        }
        for (c = 0; c < C; c++) {
            T *gc = gt + c * st; const T *qc = qt + c * st;
            T wc = wt ? wt[c] : (T)1;
#define FCE_PROB_GRAD(SM, WT) \
            S(col_prob_grad_plain)(gc, qc, wc, bw, aT, ggT, gisT, rT, Khi, Klo, keepT, spreadT, \
                                   SM, WT)
            if (sm) FCE_PROB_GRAD(1, 0);
            else if (wt) FCE_PROB_GRAD(0, 1);
            else FCE_PROB_GRAD(0, 0);
#undef FCE_PROB_GRAD
        }
        return;
    }
    for (c = 0; c < C; c++) {
        T *gc = gt + c * st; const T *qc = qt + c * st;
        double wc = w ? w[c] : 1.0;
        _Pragma("omp simd")
        for (b = 0; b < bw; b++) {
            T e = K ? FCE_EXPN(gc[b] - m[b]) : gc[b];
            T v = S(ce_prob_grad)(e, S(prob_k)(qc[b], wc, keep, spread, O), Ks[b], rest[b], gg[b],
                                  gis[b], qd[b]);
            gc[b] = K ? v * S(cap_slope)(gc[b], cap) : v;
        }
    }
}

/* ------------------------------------------------------------------ entry points */

/*
 * Each kernel body is instantiated once per flag combination as an out-of-line function
 * (FCE_CE_SPECIALISE), so the column body serves both column tiles and short-row blocks
 * without being compiled twice; the item functions route by item kind.
 */
#define FCE_CE_SPEC1(NAME, G, K, O, PARAMS, ARGS)                                             \
    static void S(NAME##_##G##K##O) PARAMS { S(NAME) ARGS; }
#define FCE_CE_SPECIALISE(NAME, PARAMS, ARGS)                                                  \
    FCE_CE_SPEC1(NAME, 0, 0, 0, PARAMS, (FCE_UNPACK ARGS, 0, 0, 0))                              \
    FCE_CE_SPEC1(NAME, 1, 0, 0, PARAMS, (FCE_UNPACK ARGS, 1, 0, 0))                              \
    FCE_CE_SPEC1(NAME, 0, 1, 0, PARAMS, (FCE_UNPACK ARGS, 0, 1, 0))                              \
    FCE_CE_SPEC1(NAME, 1, 1, 0, PARAMS, (FCE_UNPACK ARGS, 1, 1, 0))                              \
    FCE_CE_SPEC1(NAME, 0, 0, 1, PARAMS, (FCE_UNPACK ARGS, 0, 0, 1))                              \
    FCE_CE_SPEC1(NAME, 1, 0, 1, PARAMS, (FCE_UNPACK ARGS, 1, 0, 1))                              \
    FCE_CE_SPEC1(NAME, 0, 1, 1, PARAMS, (FCE_UNPACK ARGS, 0, 1, 1))                              \
    FCE_CE_SPEC1(NAME, 1, 1, 1, PARAMS, (FCE_UNPACK ARGS, 1, 1, 1))
#define FCE_UNPACK(...) __VA_ARGS__

/* The float32 row kernels are scheduled after all, with register pressure weighed (the rest
 * of the float32 class-loss kernels are not; see _kern_body.h).  One thread, Zen 1: class-index
 * forward rows 18-23% faster (C = 1000 and 32000), softcap 6-8%, fwd+bwd within noise;
 * probability targets 7-16% (label smoothing 23-28%); the column tiles and C = 2 measured
 * 8-12% slower with it and keep GCC's default. */
#if !FCE_SCHED_CE
FCE_SCHED_PRESSURE_ON
#endif
FCE_CE_SPECIALISE(ce_index_row,
                  (const T *xr, fce_idx C, fce_idx sidx, const fce_ce_args *a, T *gr),
                  (xr, C, sidx, a, gr))
FCE_CE_SPECIALISE(ce_prob_row,
                  (const T *xr, const T *qr, fce_idx C, fce_idx sidx, const fce_ce_prob_args *a,
                   T *gr),
                  (xr, qr, C, sidx, a, gr))
#if !FCE_SCHED_CE
FCE_SCHED_PRESSURE_OFF
#endif
FCE_CE_SPECIALISE(ce_index_cols,
                  (const T *xt, fce_idx C, fce_idx st, fce_idx bw, fce_idx soff,
                   const fce_ce_args *a, T *gt, double *loss),
                  (xt, C, st, bw, soff, a, gt, loss))
FCE_CE_SPECIALISE(ce_prob_cols,
                  (const T *xt, const T *qt, fce_idx C, fce_idx st, fce_idx bw, fce_idx soff,
                   const fce_ce_prob_args *a, T *gt),
                  (xt, qt, C, st, bw, soff, a, gt))
#undef FCE_CE_SPEC1
#undef FCE_CE_SPECIALISE
#undef FCE_UNPACK

/* The flags of a call as an index: bit 2 gradient, bit 1 softcap, bit 0 other options (the
 * order of the suffixes above, read as a binary number GKO). */
#define FCE_CE_FLAGS(a, grad, opts) (((grad) != NULL) << 2 | ((a)->cap != 0.0) << 1 | (opts))
#define FCE_CE_TABLE(NAME)                                                                     \
    { S(NAME##_000), S(NAME##_001), S(NAME##_010), S(NAME##_011),                              \
      S(NAME##_100), S(NAME##_101), S(NAME##_110), S(NAME##_111) }

/*
 * The sum of an item's per-sample losses (reduction mean/sum with fce_ce_args.item_sum set):
 * eight lanes, then a fixed tree, then the tail, so the sum depends only on the item's losses.
 * Items are fixed by (A, C, B) alone, so the caller's pairwise sum over items gives the same bits
 * for any thread count, and with or without a gradient (the per-sample losses are).
 */
static void S(count_ignored)(const int64_t *t, fce_idx n, int64_t ign, int64_t C,
                             fce_idx *result);                  /* _k_check.h */

FCE_INLINE double S(tile_sum)(const double *l, fce_idx n)
{
    double acc[8] = {0}, s;
    fce_idx i = 0;
    int k;
    for (; i + 8 <= n; i += 8)
        for (k = 0; k < 8; k++) acc[k] += l[i + k];
    s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += l[i];
    return s;
}

static void S(ce_index_item)(const void *xv, fce_idx A, fce_idx C, fce_idx B, fce_idx item,
                             const fce_ce_args *a, void *gv)
{
    typedef void (*row_fn)(const T *, fce_idx, fce_idx, const fce_ce_args *, T *);
    typedef void (*cols_fn)(const T *, fce_idx, fce_idx, fce_idx, fce_idx, const fce_ce_args *,
                            T *, double *);
    static const row_fn rows[8] = FCE_CE_TABLE(ce_index_row);
    static const cols_fn cols[8] = FCE_CE_TABLE(ce_index_cols);
    static const cols_fn plain[3] = { S(ce_plain_cols_0), S(ce_plain_cols_1), S(ce_plain_cols_2) };
    const T *x = (const T *)xv; T *grad = (T *)gv;
    int f = FCE_CE_FLAGS(a, grad, a->w != NULL || a->eps != 0.0 || a->zl != 0.0);
    S(fce_item) it = S(decode)(A, C, B, item);
    /* Per-sample losses of a tile/block go to the caller's buffer, or (item_sum) to a stack
     * buffer summed below: a reduced call then neither writes nor re-reads 8 bytes per sample. */
    double lbuf[FCE_TILE];
    double *lp = a->item_sum ? lbuf : a->loss + it.soff;
    /* the option-free column kernel (its class test is exact for C <= 2^24) */
    cols_fn colf = (f & 3) == 0 && C <= ((fce_idx)1 << 24)
                   ? plain[grad ? (a->gscale ? 2 : 1) : 0] : cols[f];
    /* C = 2 without softcap/options: the closed form, loss and gradient in one pass over the
     * row pairs in place (the loss is the same code with and without a gradient). */
    if (it.kind == FCE_BLOCK && C == 2 && (f & 3) == 0) {
        T *g = grad ? grad + it.off : NULL;
        if (!grad) S(ce_index_c2_00)(x + it.off, it.bw, it.soff, a, NULL, lp);
        else if (a->gscale) S(ce_index_c2_11)(x + it.off, it.bw, it.soff, a, g, lp);
        else S(ce_index_c2_10)(x + it.off, it.bw, it.soff, a, g, lp);
    } else if (it.kind == FCE_ROW) {
        /* one sample per item, item == sample index: its loss is the item's sum */
        fce_ce_args la = *a;
        if (a->item_sum) la.loss = a->item_sum;
        rows[f](x + it.off, C, it.soff, &la, grad ? grad + it.off : NULL);
    } else if (it.kind == FCE_COLS) {
        colf(x + it.off, C, B, it.bw, it.soff, a, grad ? grad + it.off : NULL, lp);
    } else {
        T buf[FCE_SMALL_C * FCE_TILE];
        S(rows_to_cols)(x + it.off, C, it.bw, buf);
        colf(buf, C, it.bw, it.bw, it.soff, a, grad ? buf : NULL, lp);
        if (grad) S(cols_to_rows)(buf, C, it.bw, grad + it.off);
    }
    if (a->item_sum && it.kind != FCE_ROW) a->item_sum[item] = S(tile_sum)(lbuf, it.bw);
    /* the targets were just read: checked again from L1 instead of a pass over memory */
    if (a->item_ign) S(count_ignored)(a->tgt + it.soff, it.bw, a->ignore, C, a->item_ign + item);
}

static void S(ce_prob_item)(const void *xv, fce_idx A, fce_idx C, fce_idx B, fce_idx item,
                            const fce_ce_prob_args *a, void *gv)
{
    typedef void (*row_fn)(const T *, const T *, fce_idx, fce_idx, const fce_ce_prob_args *, T *);
    typedef void (*cols_fn)(const T *, const T *, fce_idx, fce_idx, fce_idx, fce_idx,
                            const fce_ce_prob_args *, T *);
    static const row_fn rows[8] = FCE_CE_TABLE(ce_prob_row);
    static const cols_fn cols[8] = FCE_CE_TABLE(ce_prob_cols);
    const T *x = (const T *)xv, *q = (const T *)a->q; T *grad = (T *)gv;
    int f = FCE_CE_FLAGS(a, grad, a->w != NULL || a->eps != 0.0 || a->zl != 0.0);
    S(fce_item) it = S(decode)(A, C, B, item);
    if (it.kind == FCE_ROW) {
        rows[f](x + it.off, q + it.off, C, it.soff, a, grad ? grad + it.off : NULL);
    } else if (it.kind == FCE_COLS) {
        cols[f](x + it.off, q + it.off, C, B, it.bw, it.soff, a, grad ? grad + it.off : NULL);
    } else {
        T buf[FCE_SMALL_C * FCE_TILE], qbuf[FCE_SMALL_C * FCE_TILE];
        S(rows_to_cols)(x + it.off, C, it.bw, buf);
        S(rows_to_cols)(q + it.off, C, it.bw, qbuf);
        cols[f](buf, qbuf, C, it.bw, it.bw, it.soff, a, grad ? buf : NULL);
        if (grad) S(cols_to_rows)(buf, C, it.bw, grad + it.off);
    }
}
#undef FCE_CE_FLAGS
#undef FCE_CE_TABLE

/* ------------------------------------------------------------------ NLL */

/* loss_n = -w_y x_y; dL/dx = -g w_y at the target, 0 elsewhere. */
static void S(nll_item)(const void *xv, fce_idx A, fce_idx C, fce_idx B, fce_idx item,
                        const fce_ce_args *a, void *gv)
{
    const T *x = (const T *)xv; T *grad = (T *)gv;
    S(fce_item) it = S(decode)(A, C, B, item);
    /* element (c, b) of the item sits at off + c*cs + b*bs */
    fce_idx cs = it.kind == FCE_COLS ? B : 1, bs = it.kind == FCE_COLS ? 1 : C;
    fce_idx b, c;
    double lbuf[FCE_TILE];                      /* per-item sums: see ce_index_item */
    double *lp = a->item_sum ? lbuf : a->loss + it.soff;
    for (b = 0; b < it.bw; b++) {
        fce_idx sidx = it.soff + b, base = it.off + b * bs;
        int64_t y = a->tgt[sidx];
        int out_of_range = y != a->ignore && (uint64_t)y >= (uint64_t)C;   /* see ce_index_row */
        int ign = y == a->ignore || out_of_range;
        double wy = ign ? 0.0 : (a->w ? a->w[y] : 1.0);
        lp[b] = out_of_range ? NAN : ign ? 0.0 : -wy * (double)x[base + y * cs];
    }
    if (grad) {
        /* zeroed after every x_y is read (grad may alias x), in memory order: a class of the
         * tile at a time for columns (per sample, stride B, was 20x slower than CE there) */
        if (it.kind == FCE_COLS)
            for (c = 0; c < C; c++) memset(grad + it.off + c * cs, 0, (size_t)it.bw * sizeof(T));
        else
            memset(grad + it.off, 0, (size_t)it.bw * (size_t)C * sizeof(T));
        for (b = 0; b < it.bw; b++) {
            fce_idx sidx = it.soff + b;
            int64_t y = a->tgt[sidx];
            if (y == a->ignore || (uint64_t)y >= (uint64_t)C) continue;
            grad[it.off + b * bs + y * cs] =
                (T)(-a->gcoef * (a->gscale ? a->gscale[sidx] : 1.0) * (a->w ? a->w[y] : 1.0));
        }
    }
    if (a->item_sum) a->item_sum[item] = S(tile_sum)(lbuf, it.bw);
}
