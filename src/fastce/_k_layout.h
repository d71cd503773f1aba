/*
 * Template (see _kern_body.h): how an item maps onto the (A, C, B) layout, and the
 * row <-> column transposes that let short rows run through the column code.
 */

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
