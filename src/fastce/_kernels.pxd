# Declarations of the C kernels in _kernels.h (shared by every kernel module).  The interface is
# dtype-free: each entry point takes dt (FCE_F32 / FCE_F64) and void pointers, so every op is
# declared once and each Cython driver has one body for float and double.
from libc.stdint cimport int64_t, int32_t

cdef extern from "_kernels.h" nogil:
    ctypedef Py_ssize_t fce_idx
    enum:
        FCE_F32
        FCE_F64
    fce_idx fce_n_items(fce_idx A, fce_idx C, fce_idx B)

    void fce_lse_item(int dt, const void *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, void *out)
    void fce_log_softmax_item(int dt, const void *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, void *out)
    void fce_softmax_item(int dt, const void *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, void *out)
    void fce_log_softmax_vjp_item(int dt, const void *y, const void *g, fce_idx A, fce_idx C, fce_idx B, fce_idx item, void *out)
    void fce_softmax_vjp_item(int dt, const void *p, const void *g, fce_idx A, fce_idx C, fce_idx B, fce_idx item, void *out)

    ctypedef struct fce_ce_args:
        const int64_t *tgt
        const double *w
        double W
        int64_t ignore
        double eps
        double *loss
        const double *gscale
        double gcoef
        double zl
        double cap
        double *item_sum
        fce_idx *item_ign
    void fce_ce_index_item(int dt, const void *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, const fce_ce_args *a, void *grad)
    void fce_nll_item(int dt, const void *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, const fce_ce_args *a, void *grad)

    ctypedef struct fce_ce_prob_args:
        const void *q
        const double *w
        double eps
        double *loss
        const double *gscale
        double gcoef
        double zl
        double cap
        const void *wt
    void fce_ce_prob_item(int dt, const void *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, const fce_ce_prob_args *a, void *grad)
    void fce_count_ignored(const int64_t *t, fce_idx n, int64_t ign, int64_t C, fce_idx *result)
    void fce_widen_targets(const int32_t *src, fce_idx n, int64_t *dst)

    ctypedef struct fce_bin_args:
        const void *y
        const void *w
        const void *pw
        fce_idx K
        fce_idx rows_per_chunk
        fce_idx n
        void *loss
        double *chunk_sum
        const void *gscale
        double gcoef
    void fce_bce_logits_item(int dt, const void *x, fce_idx item, const fce_bin_args *a, void *grad)
    void fce_bce_item(int dt, const void *x, fce_idx item, const fce_bin_args *a, void *grad)
    void fce_first_outside_unit(int dt, const void *p, fce_idx n, fce_idx *first)

    # beyond cross-entropy (_k_div.h)
    ctypedef struct fce_kl_args:
        double k
        double tau
        double *loss
        const double *gscale
        double gcoef
    void fce_kl_logits_item(int dt, const void *s, const void *t, fce_idx A, fce_idx C, fce_idx B, fce_idx item, const fce_kl_args *a, void *grad, void *scratch)
    ctypedef struct fce_ent_args:
        double *loss
        const double *gscale
        double gcoef
    void fce_entropy_item(int dt, const void *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, const fce_ent_args *a, void *grad)
    void fce_topk_rank_item(int dt, const void *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, const int64_t *tgt, int64_t *rank)
    ctypedef struct fce_div_ew_args:
        const void *y
        fce_idx n
        fce_idx chunk
        void *loss
        double *chunk_sum
        const void *gscale
        double gcoef
        double alpha
        double gamma
        int log_target
    void fce_focal_item(int dt, const void *x, fce_idx item, const fce_div_ew_args *a, void *grad)
    void fce_kldiv_item(int dt, const void *x, fce_idx item, const fce_div_ew_args *a, void *grad)

    # instruction-set resolver (see _isa.h)
    int fce_isa_init()
    const char *fce_isa_chosen()
    const char *fce_isa_name(int level)
    int fce_isa_request()
    int fce_isa_best()
    int fce_isa_multi()
