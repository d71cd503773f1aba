/*
 * Template (see _kern_body.h): the scans the per-call fast path (_fastpath.pyx) runs over
 * class-index targets before a CE / NLL call.  They do not depend on T; they live in the
 * engine only to be compiled per instruction set like the kernels.
 */

/*
 * Targets t[0..n) against C classes and ignore_index ign: *result = how many equal ign when
 * every other target lies in [0, C), else -1 (the caller then takes the general path, which
 * names the offending value).  Branch-free, so it vectorises (the
 * branchy scalar loop cost ~16 instructions per target, as much as the C = 2 kernel): one
 * unsigned compare covers both v < 0 and v >= C.
 */
static void S(count_ignored)(const int64_t *t, fce_idx n, int64_t ign, int64_t C, fce_idx *result)
{
    fce_idx i, count = 0;
    int64_t bad = 0;
    for (i = 0; i < n; i++) {
        int64_t v = t[i];
        int64_t is_ign = v == ign;
        count += is_ign;
        bad |= (is_ign ^ 1) & ((uint64_t)v >= (uint64_t)C);
    }
    *result = bad ? -1 : count;
}

/* int32 targets widened to the int64 the kernels read. */
static void S(widen_targets)(const int32_t *src, fce_idx n, int64_t *dst)
{
    fce_idx i;
    for (i = 0; i < n; i++) dst[i] = src[i];
}
