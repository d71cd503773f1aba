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

