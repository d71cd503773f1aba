/*
 * Template (see _kern_body.h): reductions over one contiguous row (length n, FCE_LANES fixed
 * double accumulators combined pairwise, then the scalar tail) and over a tile of bw columns
 * with class stride B (one accumulator per column, classes in order).  Both orders depend only
 * on the data's shape, never on threads or ISA width.
 */


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
                T v = FCE_EXPN(x[j + k] - m);
                e[j + k] = v;
                acc[k] += (double)v;
            }
        for (; j < n; j++) { T v = FCE_EXPN(x[j] - m); e[j] = v; tail += (double)v; }
    } else {
        for (; j + FCE_LANES <= n; j += FCE_LANES)
            _Pragma("omp simd")
            for (k = 0; k < FCE_LANES; k++) acc[k] += (double)FCE_EXPN(x[j + k] - m);
        for (; j < n; j++) tail += (double)FCE_EXPN(x[j] - m);
    }
    return fce_combine_lanes(acc) + tail;
}

/*
 * One read of a row: *mo = max_j x_j and the return value r = sum_{j != skip} exp(x_j - m)
 * (skip outside [0, n): every term).  A two-pass row (max, then the exps) streams the row from
 * memory in the first pass and computes in the second, so the two never overlap; here the row
 * is read in blocks of FCE_ROW_BLOCK elements small enough to stay in L1: the block's max first
 * (the memory read), then its exps from L1 against the running max M.  When a block raises M,
 * the lane sums so far are rescaled by exp(M_old - M_new), evaluated in double (one double
 * rounding per raise, at most n / FCE_ROW_BLOCK of them, typically a handful), so each sum term
 * keeps the float accuracy of exp(x_j - M) in T.  The last M is m: no final rescale.
 *
 * With ST (the fused kernels) each block's exps go to st (which may alias x) and its running max
 * to bM[block] (FCE_ROW_MAXBLK entries at most): row_scale_blocks then turns them into
 * exp(x_j - m) * kp with one multiply per element instead of a second exp.
 * Lanes, blocks and the tail depend only on n, so the sum is the same for any thread count, and
 * one function serves the loss-only and the fused kernels (the loss is bitwise identical).
 * Special values as a two-pass row: NaN never wins the max (x > M is false) and propagates
 * through its exp; a block whose running max is still -inf (all -inf/NaN so far) takes its exps
 * against 0, so -inf contributes 0 and NaN stays NaN; a row of -inf only gives r = NaN, as
 * exp(-inf - -inf) would; M = +inf zeroes the earlier sums (exp(-inf) = 0) and makes its own +inf
 * terms NaN (inf - inf).
 */
#define FCE_ROW_BLOCK (FCE_LANES * 32)
/* Exps (each in [0, 1]) are summed per lane in groups of FCE_ROW_GROUP vectors in T and the
 * group totals in double: one conversion per group instead of one per vector (the conversion
 * and double add were a sixth of a float32 row's instructions).  A group of 8 terms <= 1 adds
 * at most 7 roundings of T relative to its total, below the float32 exp's own error budget
 * once the groups' independent errors are summed; a fixed structure (lanes, groups, blocks
 * depend only on the row length and the target position), so the same for any thread count.
 * float64 has nothing to convert: groups of one (lanes_sumexp sums straight into the lanes). */
#define FCE_ROW_GROUP(T) (sizeof(T) == 4 ? 8 : 1)   /* double: the terms are summed as they come */
#define FCE_ROW_MAXBLK 64               /* rows of up to 32768 elements store their exps */
/* The column version of the same rule: per column, float32 terms of FCE_COL_BLK classes are
 * summed in T, then widened once into the double sums (the widening and double add per class
 * were a third of a C = 10 pass).  float64 sums every class in one block. */
#define FCE_COL_BLK 4
#define FCE_COL_SPAN(T, C) (sizeof(T) == 4 ? FCE_COL_BLK : (C))

/* sum_k exp(x_k - m) over len (a multiple of FCE_LANES) elements into the lanes; with ST the
 * exps are also stored in st (which may alias x): float64 after each vector block
 * (FCE_STORE_AFTER, _kernels.h), float as they come (its exp chain is short enough for the
 * reorder window, and the buffer measured slower: a second store per element). */
FCE_INLINE void S(lanes_sumexp)(const T *x, fce_idx len, T m, double *acc, T *st, const int ST)
{
    fce_idx j = 0, stop;
    int k;
    T part[FCE_LANES], sb[FCE_LANES];
    if (FCE_ROW_GROUP(T) == 1) {             /* double: straight into the lanes */
        for (; j + FCE_LANES <= len; j += FCE_LANES) {
            _Pragma("omp simd")
            for (k = 0; k < FCE_LANES; k++) {
                T e = FCE_EXPN(x[j + k] - m);
                sb[k] = e;
                acc[k] += (double)e;
            }
            if (ST) FCE_STORE_AFTER(st + j, sb, FCE_LANES, FCE_LANES);
        }
        return;
    }
    while (j + FCE_LANES <= len) {
        stop = j + FCE_ROW_GROUP(T) * FCE_LANES <= len ? j + FCE_ROW_GROUP(T) * FCE_LANES : len;
        for (k = 0; k < FCE_LANES; k++) part[k] = 0;
        for (; j + FCE_LANES <= stop; j += FCE_LANES)
            _Pragma("omp simd")
            for (k = 0; k < FCE_LANES; k++) {
                T e = FCE_EXPN(x[j + k] - m);
                if (ST) st[j + k] = e;
                part[k] += e;
            }
        _Pragma("omp simd")
        for (k = 0; k < FCE_LANES; k++) acc[k] += (double)part[k];
    }
}

/* The same leaving element skip (0 <= skip < len) out of the sum (it is still stored): only its
 * own vector is masked, so every term has the lane it has in lanes_sumexp */
FCE_INLINE void S(lanes_sumexp_skip)(const T *x, fce_idx len, T m, fce_idx skip, double *acc,
                                     T *st, const int ST)
{
    fce_idx js = skip - skip % FCE_LANES;
    int k;
    S(lanes_sumexp)(x, js, m, acc, st, ST);
    _Pragma("omp simd")
    for (k = 0; k < FCE_LANES; k++) {
        T e = FCE_EXPN(x[js + k] - m);
        if (ST) st[js + k] = e;
        acc[k] += js + k == skip ? 0.0 : (double)e;
    }
    S(lanes_sumexp)(x + js + FCE_LANES, len - js - FCE_LANES, m, acc,
                    ST ? st + js + FCE_LANES : NULL, ST);
}

FCE_INLINE double S(row_max_sumexp)(const T *x, fce_idx n, fce_idx skip, T *mo, T *st, T *bM,
                                     const int ST)
{
    double acc[FCE_LANES] = {0}, tail = 0.0;
    T M = -INFINITY;
    fce_idx b0, j;
    int k;
    for (b0 = 0; b0 < n; b0 += FCE_ROW_BLOCK) {
        fce_idx len = n - b0 < FCE_ROW_BLOCK ? n - b0 : FCE_ROW_BLOCK;
        fce_idx vl = len - len % FCE_LANES;
        const T *xb = x + b0;
        T mk[FCE_LANES], bm = M, Mc;
        for (k = 0; k < FCE_LANES; k++) mk[k] = -INFINITY;
#if defined(__GNUC__)
        /* Ask for the same block of the next row (the thread's next item, usually): a short
         * row starts on a new page, where the hardware prefetcher starts over (measured: a
         * sixth of the time of 1000-class rows).  A prefetch never faults; the address is
         * formed as an integer because it may lie past the end of the array. */
        for (j = 0; j < len; j += 64 / (fce_idx)sizeof(T))
            __builtin_prefetch((const void *)((uintptr_t)(xb + j) + (uintptr_t)n * sizeof(T)));
#endif
        for (j = 0; j + FCE_LANES <= vl; j += FCE_LANES)
            _Pragma("omp simd")
            for (k = 0; k < FCE_LANES; k++) mk[k] = xb[j + k] > mk[k] ? xb[j + k] : mk[k];
        for (j = vl; j < len; j++) bm = xb[j] > bm ? xb[j] : bm;
        for (k = 0; k < FCE_LANES; k++) bm = mk[k] > bm ? mk[k] : bm;
        if (bm > M) {
            /* sums so far are 0 or NaN while M is -inf: nothing to rescale */
            if (M != -INFINITY) {
                double f = fce_exp_d((double)M - (double)bm);
                for (k = 0; k < FCE_LANES; k++) acc[k] *= f;
            }
            M = bm;
        }
        Mc = M == -INFINITY ? (T)0 : M;
        if (ST) bM[b0 / FCE_ROW_BLOCK] = M;
        if (skip >= b0 && skip < b0 + vl)
            S(lanes_sumexp_skip)(xb, vl, Mc, skip - b0, acc, ST ? st + b0 : NULL, ST);
        else
            S(lanes_sumexp)(xb, vl, Mc, acc, ST ? st + b0 : NULL, ST);
        for (j = vl; j < len; j++) {         /* the row's last < FCE_LANES elements */
            T e = FCE_EXPN(xb[j] - Mc);
            if (ST) st[b0 + j] = e;
            tail += b0 + j == skip ? 0.0 : (double)e;
        }
    }
    *mo = M;
    double r = fce_combine_lanes(acc) + tail;
    /* a row of -inf (and NaN) only: NaN, as exp(-inf - -inf) in a two-pass row */
    return M == -INFINITY && n > (skip >= 0 && skip < n) ? NAN : r;
}

/* g_j = st_j * kp exp(M_b - m) for the exps row_max_sumexp stored against the running max M_b of
 * their block.  A block stored while M was still -inf holds only 0 and NaN: factor kp * 0 (never
 * exp(0 - m), which may overflow), which is 0, or NaN for a row whose kp is NaN (a fully masked
 * row, any +inf logit), so such a row's gradient is NaN throughout, as exp(x_j - m) gives. */
FCE_INLINE void S(row_scale_blocks)(T *g, fce_idx n, T m, const T *bM, double kp)
{
    fce_idx b0, j;
    for (b0 = 0; b0 < n; b0 += FCE_ROW_BLOCK) {
        fce_idx len = n - b0 < FCE_ROW_BLOCK ? n - b0 : FCE_ROW_BLOCK;
        T Mb = bM[b0 / FCE_ROW_BLOCK];
        T c = (T)(kp * (Mb == -INFINITY ? 0.0 : fce_exp_d((double)Mb - (double)m)));
        T *gb = g + b0;
        _Pragma("omp simd")
        for (j = 0; j < len; j++) gb[j] *= c;
    }
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

/* one class of col_sumexp: e = exp(x - m) per column (stored under ST), the ones counted apart */
FCE_INLINE void S(col_sumexp_class)(const T *xc, fce_idx bw, const T *m, T *pr, T *po, T *ec,
                                    const int ST)
{
    fce_idx b;
    _Pragma("omp simd")
    for (b = 0; b < bw; b++) {
        T v = FCE_EXPN(xc[b] - m[b]);
        T one = v == (T)1 ? (T)1 : (T)0;
        if (ST) ec[b] = v;
        pr[b] += v - one;
        po[b] += one;
    }
}

/* Column version: rest[b] = s_b - 1 accurately, by counting the terms equal to 1 apart from the
 * others (rest = (ones - 1) + sum of the others; NaN terms go to the sum).  Branch-free, so it
 * vectorises across the columns; sums in T over FCE_COL_SPAN classes (counts exact in T). */
FCE_INLINE void S(col_sumexp)(const T *x, fce_idx C, fce_idx B, fce_idx bw, const T *m,
                                 double *rest, T *e, fce_idx eB)
{
    double ones[FCE_TILE];
    T pr[FCE_TILE], po[FCE_TILE];
    fce_idx c, c0, c1, b;
    for (b = 0; b < bw; b++) { rest[b] = 0.0; ones[b] = 0.0; }
    for (c0 = 0; c0 < C; c0 = c1) {
        c1 = c0 + FCE_COL_SPAN(T, C) < C ? c0 + FCE_COL_SPAN(T, C) : C;
        for (b = 0; b < bw; b++) { pr[b] = 0; po[b] = 0; }
        for (c = c0; c < c1; c++) {
            if (e) S(col_sumexp_class)(x + c * B, bw, m, pr, po, e + c * eB, 1);
            else S(col_sumexp_class)(x + c * B, bw, m, pr, po, NULL, 0);
        }
        _Pragma("omp simd")
        for (b = 0; b < bw; b++) { rest[b] += (double)pr[b]; ones[b] += (double)po[b]; }
    }
    for (b = 0; b < bw; b++) rest[b] = (ones[b] - 1.0) + rest[b];
}

