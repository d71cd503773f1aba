# Declarations of the C kernels in _kernels.h (shared by every kernel module).
from libc.stdint cimport int64_t

cdef extern from "_kernels.h" nogil:
    ctypedef Py_ssize_t fce_idx
    fce_idx fce_n_items(fce_idx A, fce_idx C, fce_idx B)

    void lse_item_f(const float *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, float *out)
    void lse_item_d(const double *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, double *out)
    void log_softmax_item_f(const float *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, float *out)
    void log_softmax_item_d(const double *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, double *out)
    void softmax_item_f(const float *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, float *out)
    void softmax_item_d(const double *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, double *out)
    void log_softmax_vjp_item_f(const float *y, const float *g, fce_idx A, fce_idx C, fce_idx B, fce_idx item, float *out)
    void log_softmax_vjp_item_d(const double *y, const double *g, fce_idx A, fce_idx C, fce_idx B, fce_idx item, double *out)
    void softmax_vjp_item_f(const float *p, const float *g, fce_idx A, fce_idx C, fce_idx B, fce_idx item, float *out)
    void softmax_vjp_item_d(const double *p, const double *g, fce_idx A, fce_idx C, fce_idx B, fce_idx item, double *out)

    ctypedef struct ce_args_f:
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
    ctypedef struct ce_args_d:
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
    void ce_index_item_f(const float *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, const ce_args_f *a, float *grad)
    void ce_index_item_d(const double *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, const ce_args_d *a, double *grad)
    void nll_item_f(const float *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, const ce_args_f *a, float *grad)
    void nll_item_d(const double *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, const ce_args_d *a, double *grad)

    ctypedef struct ce_prob_args_f:
        const float *q
        const double *w
        double eps
        double *loss
        const double *gscale
        double gcoef
        double zl
        double cap
    ctypedef struct ce_prob_args_d:
        const double *q
        const double *w
        double eps
        double *loss
        const double *gscale
        double gcoef
        double zl
        double cap
    void ce_prob_item_f(const float *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, const ce_prob_args_f *a, float *grad)
    void ce_prob_item_d(const double *x, fce_idx A, fce_idx C, fce_idx B, fce_idx item, const ce_prob_args_d *a, double *grad)

    ctypedef struct bin_args_f:
        const float *y
        const float *w
        const float *pw
        fce_idx K
        fce_idx rows_per_chunk
        fce_idx n
        float *loss
        double *chunk_sum
        const float *gscale
        double gcoef
    ctypedef struct bin_args_d:
        const double *y
        const double *w
        const double *pw
        fce_idx K
        fce_idx rows_per_chunk
        fce_idx n
        double *loss
        double *chunk_sum
        const double *gscale
        double gcoef
    void bce_logits_item_f(const float *x, fce_idx item, const bin_args_f *a, float *grad)
    void bce_logits_item_d(const double *x, fce_idx item, const bin_args_d *a, double *grad)
    void bce_item_f(const float *x, fce_idx item, const bin_args_f *a, float *grad)
    void bce_item_d(const double *x, fce_idx item, const bin_args_d *a, double *grad)
