# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Kernels beyond cross-entropy (math in _div_body.h): distillation KL from logits, softmax
entropy, sigmoid focal loss and torch's elementwise kl_div.

Class-axis drivers (kl_logits, entropy) write the per-sample loss (float64, before reduction)
into `loss` and, when `grad` is given, the gradient of sum_n gcoef * gscale_n * loss_n in the
same pass; `grad` must not overlap the inputs (the kernels park exps in it between passes).
Elementwise drivers (focal, kldiv) write per-chunk float64 sums into `chunk_sum` (the caller
adds them in order), the elementwise loss into `loss` when given, and the gradient into `grad`
(which may be `x` itself).  All arrays are validated, C-contiguous, of one float dtype.
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t
cimport numpy as cnp

include "_buffers.pxi"

cdef extern from "_div_body.h" nogil:
    ctypedef Py_ssize_t div_idx
    div_idx div_n_items(div_idx A, div_idx C, div_idx B)

    ctypedef struct kl_args_f:
        double k
        double tau
        double *loss
        const double *gscale
        double gcoef
    ctypedef struct kl_args_d:
        double k
        double tau
        double *loss
        const double *gscale
        double gcoef
    void kl_logits_item_f(const float *s, const float *t, div_idx A, div_idx C, div_idx B, div_idx item, const kl_args_f *a, float *grad)
    void kl_logits_item_d(const double *s, const double *t, div_idx A, div_idx C, div_idx B, div_idx item, const kl_args_d *a, double *grad)

    ctypedef struct ent_args_f:
        double *loss
        const double *gscale
        double gcoef
    ctypedef struct ent_args_d:
        double *loss
        const double *gscale
        double gcoef
    void entropy_item_f(const float *x, div_idx A, div_idx C, div_idx B, div_idx item, const ent_args_f *a, float *grad)
    void entropy_item_d(const double *x, div_idx A, div_idx C, div_idx B, div_idx item, const ent_args_d *a, double *grad)

    ctypedef struct ew_args_f:
        const float *y
        div_idx n
        div_idx chunk
        float *loss
        double *chunk_sum
        const float *gscale
        double gcoef
        double alpha
        double gamma
        int log_target
    ctypedef struct ew_args_d:
        const double *y
        div_idx n
        div_idx chunk
        double *loss
        double *chunk_sum
        const double *gscale
        double gcoef
        double alpha
        double gamma
        int log_target
    void topk_rank_item_f(const float *x, const int64_t *tgt, div_idx A, div_idx C, div_idx B, div_idx item, int64_t *rank)
    void topk_rank_item_d(const double *x, const int64_t *tgt, div_idx A, div_idx C, div_idx B, div_idx item, int64_t *rank)
    void focal_item_f(const float *x, div_idx item, const ew_args_f *a, float *grad)
    void focal_item_d(const double *x, div_idx item, const ew_args_d *a, double *grad)
    void kldiv_item_f(const float *x, div_idx item, const ew_args_f *a, float *grad)
    void kldiv_item_d(const double *x, div_idx item, const ew_args_d *a, double *grad)


def kl_logits(s, t, Py_ssize_t A, Py_ssize_t C, Py_ssize_t B, double inv_temperature,
              double temperature, loss, grad, double gcoef, gscale, int nthreads):
    """loss_n = T^2 KL(softmax(t_n / T) || softmax(s_n / T)); grad w.r.t. s."""
    cdef div_idx i, n = div_n_items(A, C, B)
    cdef Py_ssize_t size = A * C * B, ns = A * B
    cdef kl_args_f af
    cdef kl_args_d ad
    cdef const float *sf
    cdef const float *tf
    cdef float *gf
    cdef const double *sd
    cdef const double *td
    cdef double *gd
    cdef double *lp = <double *>_ptr(loss, cnp.NPY_FLOAT64, ns, True)
    cdef const double *gs = <const double *>_optr(gscale, cnp.NPY_FLOAT64, ns, False)
    if cnp.PyArray_TYPE(s) == cnp.NPY_FLOAT32:
        af.k = inv_temperature; af.tau = temperature; af.loss = lp; af.gscale = gs
        af.gcoef = gcoef
        sf = <const float *>_ptr(s, cnp.NPY_FLOAT32, size, False)
        tf = <const float *>_ptr(t, cnp.NPY_FLOAT32, size, False)
        gf = <float *>_optr(grad, cnp.NPY_FLOAT32, size, True)
        with nogil:
            for i in prange(n, num_threads=nthreads, schedule="guided"):
                kl_logits_item_f(sf, tf, A, C, B, i, &af, gf)
    else:
        ad.k = inv_temperature; ad.tau = temperature; ad.loss = lp; ad.gscale = gs
        ad.gcoef = gcoef
        sd = <const double *>_ptr(s, cnp.NPY_FLOAT64, size, False)
        td = <const double *>_ptr(t, cnp.NPY_FLOAT64, size, False)
        gd = <double *>_optr(grad, cnp.NPY_FLOAT64, size, True)
        with nogil:
            for i in prange(n, num_threads=nthreads, schedule="guided"):
                kl_logits_item_d(sd, td, A, C, B, i, &ad, gd)


def entropy(x, Py_ssize_t A, Py_ssize_t C, Py_ssize_t B, loss, grad, double gcoef, gscale,
            int nthreads):
    """loss_n = entropy of softmax(x_n) in nats; grad w.r.t. x."""
    cdef div_idx i, n = div_n_items(A, C, B)
    cdef Py_ssize_t size = A * C * B, ns = A * B
    cdef ent_args_f af
    cdef ent_args_d ad
    cdef const float *xf
    cdef float *gf
    cdef const double *xd
    cdef double *gd
    cdef double *lp = <double *>_ptr(loss, cnp.NPY_FLOAT64, ns, True)
    cdef const double *gs = <const double *>_optr(gscale, cnp.NPY_FLOAT64, ns, False)
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        af.loss = lp; af.gscale = gs; af.gcoef = gcoef
        xf = <const float *>_ptr(x, cnp.NPY_FLOAT32, size, False)
        gf = <float *>_optr(grad, cnp.NPY_FLOAT32, size, True)
        with nogil:
            for i in prange(n, num_threads=nthreads, schedule="guided"):
                entropy_item_f(xf, A, C, B, i, &af, gf)
    else:
        ad.loss = lp; ad.gscale = gs; ad.gcoef = gcoef
        xd = <const double *>_ptr(x, cnp.NPY_FLOAT64, size, False)
        gd = <double *>_optr(grad, cnp.NPY_FLOAT64, size, True)
        with nogil:
            for i in prange(n, num_threads=nthreads, schedule="guided"):
                entropy_item_d(xd, A, C, B, i, &ad, gd)


def topk_rank(x, target, Py_ssize_t A, Py_ssize_t C, Py_ssize_t B, rank, int nthreads):
    """rank[s]: classes ranked before sample s's target (ties by index, NaN highest)."""
    cdef div_idx i, n = div_n_items(A, C, B)
    cdef Py_ssize_t size = A * C * B, ns = A * B
    cdef const int64_t *tp = <const int64_t *>_ptr(target, cnp.NPY_INT64, ns, False)
    cdef int64_t *rp = <int64_t *>_ptr(rank, cnp.NPY_INT64, ns, True)
    cdef const float *xf
    cdef const double *xd
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        xf = <const float *>_ptr(x, cnp.NPY_FLOAT32, size, False)
        with nogil:
            for i in prange(n, num_threads=nthreads, schedule="guided"):
                topk_rank_item_f(xf, tp, A, C, B, i, rp)
    else:
        xd = <const double *>_ptr(x, cnp.NPY_FLOAT64, size, False)
        with nogil:
            for i in prange(n, num_threads=nthreads, schedule="guided"):
                topk_rank_item_d(xd, tp, A, C, B, i, rp)


def elementwise(str kind, x, y, Py_ssize_t chunk, loss, chunk_sum, grad, double gcoef, gscale,
                double alpha, double gamma, bint log_target, int nthreads):
    """kind: "focal" (alpha, gamma) or "kldiv" (log_target)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef div_idx i, nitems = (n + chunk - 1) // chunk if n else 0
    cdef bint focal = kind == "focal"
    cdef ew_args_f af
    cdef ew_args_d ad
    cdef float *xf
    cdef float *gf
    cdef double *xd
    cdef double *gd
    cdef double *cs = <double *>_ptr(chunk_sum, cnp.NPY_FLOAT64, nitems, True)
    if kind not in ("focal", "kldiv"):
        raise ValueError(f"internal: unknown elementwise kernel {kind!r}")
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        af.y = <const float *>_ptr(y, cnp.NPY_FLOAT32, n, False)
        af.n = n; af.chunk = chunk; af.chunk_sum = cs; af.gcoef = gcoef
        af.loss = <float *>_optr(loss, cnp.NPY_FLOAT32, n, True)
        af.gscale = <const float *>_optr(gscale, cnp.NPY_FLOAT32, n, False)
        af.alpha = alpha; af.gamma = gamma; af.log_target = log_target
        xf = <float *>_ptr(x, cnp.NPY_FLOAT32, n, False)
        gf = <float *>_optr(grad, cnp.NPY_FLOAT32, n, True)
        with nogil:
            for i in prange(nitems, num_threads=nthreads, schedule="guided"):
                if focal:
                    focal_item_f(xf, i, &af, gf)
                else:
                    kldiv_item_f(xf, i, &af, gf)
    else:
        ad.y = <const double *>_ptr(y, cnp.NPY_FLOAT64, n, False)
        ad.n = n; ad.chunk = chunk; ad.chunk_sum = cs; ad.gcoef = gcoef
        ad.loss = <double *>_optr(loss, cnp.NPY_FLOAT64, n, True)
        ad.gscale = <const double *>_optr(gscale, cnp.NPY_FLOAT64, n, False)
        ad.alpha = alpha; ad.gamma = gamma; ad.log_target = log_target
        xd = <double *>_ptr(x, cnp.NPY_FLOAT64, n, False)
        gd = <double *>_optr(grad, cnp.NPY_FLOAT64, n, True)
        with nogil:
            for i in prange(nitems, num_threads=nthreads, schedule="guided"):
                if focal:
                    focal_item_d(xd, i, &ad, gd)
                else:
                    kldiv_item_d(xd, i, &ad, gd)
