"""Property-based tests (hypothesis): random shapes (including 0 and 1), dtypes, layouts
(classes last / axis=1), weights, ignore_index, label_smoothing, reductions and special values.
fastce must agree with the float64 reference (tests/reference.py, and analytic gradients written
here) and never crash; invalid targets must raise IndexError exactly when the reference does.

Profiles: the default one is quick (CI); FASTCE_HYPOTHESIS_PROFILE=long runs ~30x more examples.
"""

import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastce  # noqa: E402
from reference import (  # noqa: E402
    ref_accuracy,
    ref_binary_cross_entropy,
    ref_binary_cross_entropy_with_logits,
    ref_categorical_cross_entropy,
    ref_cross_entropy,
    ref_log_softmax,
    ref_log_softmax_vjp,
    ref_logsumexp,
    ref_nll_loss,
    ref_softmax,
    ref_softmax_vjp,
)

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               print_blob=True)
# The default run (CI, the README's test command) is derandomized: the same examples every run,
# so a red CI is a regression, not a new draw.  The long profile explores with fresh draws.
settings.register_profile("fastce-default", max_examples=60, derandomize=True, **_COMMON)
settings.register_profile("fastce-long", max_examples=2000, derandomize=False, **_COMMON)
PROFILE = "fastce-long" if os.environ.get("FASTCE_HYPOTHESIS_PROFILE", "") == "long" else "fastce-default"
PROFILE_SETTINGS = settings.get_profile(PROFILE)

DTYPES = [np.float64, np.float32, np.float16]
TOL = {np.float64: 1e-9, np.float32: 3e-5, np.float16: 3e-5}  # losses (f16 computes in f32)
GTOL = {np.float64: 1e-9, np.float32: 3e-5, np.float16: 3e-3}  # gradients / row ops (f16 stored)


# =========================================================================== strategies


@st.composite
def class_layouts(draw, min_c=1, max_c=40):
    """(shape, axis): (C,), (N, C), (N, d, C) classes last, or (N, C, d1[, d2]) with axis=1."""
    C = draw(st.one_of(st.integers(min_c, min(max_c, 6)), st.integers(min_c, max_c)))
    kind = draw(st.sampled_from(["1d", "2d", "3d_last", "axis1", "axis1_4d"]))
    n = draw(st.one_of(st.integers(0, 3), st.integers(0, 140)))
    if kind == "1d":
        return (C,), -1
    if kind == "2d":
        return (n, C), draw(st.sampled_from([-1, 1]))
    d = draw(st.integers(0, 5))
    if kind == "3d_last":
        return (min(n, 30), d, C), -1
    if kind == "axis1":
        return (min(n, 30), C, draw(st.one_of(st.integers(0, 3), st.integers(0, 140)))), 1
    return (min(n, 4), C, d, draw(st.integers(0, 4))), 1


@st.composite
def logits_arrays(draw, shape, dtype, allow_special=True):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([0.01, 1.0, 5.0, 30.0]))
    x = rng.standard_normal(shape) * scale
    offset = draw(st.sampled_from([0.0, 0.0, 0.0, 1e3, -1e3]))
    x = x + offset
    if allow_special and x.size and draw(st.booleans()):
        # -inf (masked) entries, never a whole row (that is NaN by design and tested elsewhere)
        mask = rng.random(shape) < draw(st.sampled_from([0.05, 0.3]))
        x = np.where(mask, -np.inf, x)
    return x.astype(dtype)


def _finite_mag(x):
    x = np.asarray(x, dtype=np.float64)
    f = np.abs(x[np.isfinite(x)])
    return float(f.max()) if f.size else 0.0


def _per_sample(shape, axis):
    return tuple(np.delete(np.array(shape), axis))


def check_close(got, want, tol, mag=0.0, err_msg="", floor=1.0, dtype=np.float64):
    """|got - want| <= tol (|want| + floor + mag) + 2 * (smallest subnormal of `dtype`), with inf/nan
    positions equal.  (Results stored in float16/float32 may underflow.)"""
    atol = 2.0 * float(np.finfo(dtype).smallest_subnormal)
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (err_msg, got.shape, want.shape)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"NaN pattern {err_msg}")
    inf = np.isinf(want)
    np.testing.assert_array_equal(got[inf], want[inf], err_msg=f"inf pattern {err_msg}")
    fin = np.isfinite(want)
    assert np.all(np.isfinite(got[fin])), err_msg
    err = np.abs(got[fin] - want[fin])
    bound = tol * (np.abs(want[fin]) + floor + mag) + atol
    if err.size:
        i = int(np.argmax(err - bound))
        assert np.all(err <= bound), (f"{err_msg}: got {got[fin][i]!r}, want {want[fin][i]!r} "
                                      f"(tol {tol}, mag {mag})")


def reduce_bound_scale(reduction, n_samples, denom):
    """How much the absolute error bound of one sample grows after the reduction."""
    if reduction == "none":
        return 1.0
    s = max(n_samples, 1)
    if reduction == "sum":
        return float(s)
    return float(s) / abs(denom) if denom else 1.0


# =========================================================================== analytic gradients


def ce_index_grad(x, t, w, ignore_index, eps, reduction, grad_output, axis):
    """d/dx of the cross_entropy loss (index targets) in float64; x finite.

    Returns (gradient, scale): `scale` is the sum of the absolute values of the terms, the
    natural size of a rounding error (the gradient is a difference p - q of O(1) terms)."""
    xl = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    C = xl.shape[-1]
    p = ref_softmax(xl)
    w = np.ones(C) if w is None else np.asarray(w, dtype=np.float64)
    mask = t != ignore_index
    ts = np.where(mask, t, 0)
    wy = np.where(mask, w[ts], 0.0)
    onehot = np.eye(C)[ts]
    g = (1 - eps) * wy[..., None] * (p - onehot) + (eps / C) * mask[..., None] * (w.sum() * p - w)
    sc = (1 - eps) * wy[..., None] * (p + onehot) + (eps / C) * mask[..., None] * (w.sum() * p + w)
    if reduction == "none":
        go = np.abs(np.asarray(grad_output, dtype=np.float64))[..., None]
        g = g * np.asarray(grad_output, dtype=np.float64)[..., None]
        sc = sc * go
    else:
        g = g * grad_output
        sc = sc * abs(grad_output)
        if reduction == "mean":
            den = wy.sum()
            g = g / den if den else np.zeros_like(g)
            sc = sc / den if den else np.zeros_like(sc)
    return np.moveaxis(g, -1, axis), np.moveaxis(sc, -1, axis)


def ce_prob_grad(x, q, w, eps, reduction, axis):
    xl = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    ql = np.moveaxis(np.asarray(q, dtype=np.float64), axis, -1)
    C = xl.shape[-1]
    p = ref_softmax(xl)
    w = np.ones(C) if w is None else np.asarray(w, dtype=np.float64)
    qq = (1 - eps) * ql + eps / C
    wq = w * qq
    g = wq.sum(-1, keepdims=True) * p - wq
    sc = wq.sum(-1, keepdims=True) * p + wq
    if reduction == "mean":
        n = int(np.prod(xl.shape[:-1]))
        g = g / n if n else g
        sc = sc / n if n else sc
    return np.moveaxis(g, -1, axis), np.moveaxis(sc, -1, axis)


# =========================================================================== cross_entropy / nll


@st.composite
def ce_cases(draw):
    shape, axis = draw(class_layouts())
    dtype = draw(st.sampled_from(DTYPES))
    x = draw(logits_arrays(shape, dtype))
    C = shape[axis]
    ps = _per_sample(shape, axis)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kw = dict(axis=axis, reduction=draw(st.sampled_from(["mean", "sum", "none"])))
    if draw(st.booleans()):
        kw["weight"] = rng.uniform(0.1, 3.0, C).astype(draw(st.sampled_from([np.float64, np.float32])))
    if draw(st.booleans()):
        kw["label_smoothing"] = draw(st.sampled_from([0.0, 1e-3, 0.1, 0.5, 1.0]))
    target_kind = draw(st.sampled_from(["index", "index", "prob", "onehot"]))
    if target_kind == "index":
        ii = draw(st.sampled_from([-100, -1, 0, C - 1, 7]))
        if ii != -100:
            kw["ignore_index"] = ii
        t = rng.integers(0, C, size=ps)
        frac = draw(st.sampled_from([0.0, 0.3, 1.0]))
        t = np.where(rng.random(ps) < frac, ii, t)
        t = np.asarray(t).astype(draw(st.sampled_from([np.int64, np.int32, np.int16, np.intp])))
    else:
        z = rng.random(shape)
        if target_kind == "onehot" and C:
            z = (z == z.max(axis=axis, keepdims=True)).astype(float)
        with np.errstate(invalid="ignore"):
            t = (z / z.sum(axis=axis, keepdims=True)).astype(dtype)
    return x, t, kw


@settings(PROFILE_SETTINGS)
@given(case=ce_cases(), want_grad=st.booleans())
def test_cross_entropy_matches_reference(case, want_grad):
    x, t, kw = case
    dtype = x.dtype.type
    axis, reduction = kw["axis"], kw["reduction"]
    ref_kw = {k: v for k, v in kw.items()}
    with np.errstate(all="ignore"):
        want = ref_cross_entropy(x.astype(np.float64), t, **ref_kw)
    ps = _per_sample(x.shape, axis)
    is_index = np.issubdtype(t.dtype, np.integer)
    if reduction == "none":
        go = np.random.default_rng(0).uniform(-2, 2, ps)
    else:
        go = 0.75
    if want_grad:
        loss, grad = fastce.cross_entropy(x, t, return_grad=True, grad_output=go, **kw)
    else:
        loss = fastce.cross_entropy(x, t, **kw)
    # types
    cd = np.float64 if dtype == np.float64 else np.float32
    if reduction == "none":
        # per-sample losses come in the input's float dtype (float16 stays float16)
        assert isinstance(loss, np.ndarray) and loss.shape == ps and loss.dtype == dtype
    else:
        assert type(loss) is np.dtype(cd).type
    mag = _finite_mag(x)
    if is_index:
        ii = kw.get("ignore_index", -100)
        wv = kw.get("weight")
        wy = np.where(t != ii, (np.ones(x.shape[axis]) if wv is None else wv.astype(np.float64))[
            np.where(t != ii, t, 0)], 0.0)
        denom = wy.sum()
    else:
        denom = float(np.prod(ps))
    n = int(np.prod(ps))
    ltol = GTOL[dtype] if reduction == "none" else TOL[dtype]   # float16 per-sample: stored in f16
    check_close(loss, want, ltol * 4, mag * 3 * reduce_bound_scale(reduction, n, denom),
                err_msg="cross_entropy loss")
    if not want_grad:
        return
    assert grad.shape == x.shape and grad.dtype == dtype
    if not np.all(np.isfinite(x)):
        # masked logits: the gradient there is 0 whenever the loss is finite
        finite_rows = np.isfinite(np.asarray(fastce.cross_entropy(x, t, **{**kw, "reduction": "none"})))
        masked = np.isneginf(x) & np.expand_dims(finite_rows, axis)
        assert np.all(grad[masked] == 0)
        return
    if is_index:
        gw, sc = ce_index_grad(x, t, kw.get("weight"), kw.get("ignore_index", -100),
                               kw.get("label_smoothing", 0.0), reduction, go, axis)
    else:
        gw, sc = ce_prob_grad(x, t, kw.get("weight"), kw.get("label_smoothing", 0.0), reduction, axis)
        gw = gw * go if reduction != "none" else gw * np.expand_dims(go, axis)
        sc = sc * abs(go) if reduction != "none" else sc * np.expand_dims(np.abs(go), axis)
    # the confident-prediction accuracy of tiny gradients is tested in test_accuracy.py
    check_close(grad, gw, GTOL[dtype] * 4, _finite_mag(sc), err_msg="cross_entropy grad", floor=0.0,
                dtype=dtype)
    # the gradient-only form is the same
    g2 = fastce.cross_entropy_grad(x, t, grad_output=go, **kw)
    np.testing.assert_array_equal(g2, grad)


@settings(PROFILE_SETTINGS)
@given(case=ce_cases())
def test_nll_loss_matches_reference(case):
    x, t, kw = case
    if not np.issubdtype(t.dtype, np.integer):
        with pytest.raises(TypeError):
            fastce.nll_loss(x, t, axis=kw["axis"])
        return
    kw = {k: v for k, v in kw.items() if k != "label_smoothing"}
    dtype = x.dtype.type
    lp = fastce.log_softmax(x, axis=kw["axis"])
    with np.errstate(all="ignore"):
        want = ref_nll_loss(lp.astype(np.float64), t, **kw)
    loss, grad = fastce.nll_loss(lp, t, return_grad=True, **kw)
    mag = _finite_mag(lp)
    ps = _per_sample(x.shape, kw["axis"])
    check_close(loss, want, TOL[dtype] * 4, mag * 3 * max(int(np.prod(ps)), 1) * 10,
                err_msg="nll_loss")
    # gradient: -w_y at the target, 0 elsewhere, / denominator for mean
    ii = kw.get("ignore_index", -100)
    axis = kw["axis"]
    C = x.shape[axis]
    w = np.ones(C) if kw.get("weight") is None else kw["weight"].astype(np.float64)
    mask = t != ii
    ts = np.where(mask, t, 0)
    wy = np.where(mask, w[ts], 0.0)
    g = -wy[..., None] * np.eye(C)[ts] if C else np.zeros(ps + (0,))
    if kw["reduction"] == "mean":
        g = g / wy.sum() if wy.sum() else np.zeros_like(g)
    check_close(grad, np.moveaxis(g, -1, axis), GTOL[dtype], _finite_mag(g), err_msg="nll grad", floor=0.0,
                dtype=dtype)


@settings(PROFILE_SETTINGS)
@given(shape_axis=class_layouts(min_c=1, max_c=30), dtype=st.sampled_from(DTYPES),
       data=st.data())
def test_invalid_targets_raise_exactly_when_reference_does(shape_axis, dtype, data):
    shape, axis = shape_axis
    C = shape[axis]
    ps = _per_sample(shape, axis)
    x = np.zeros(shape, dtype)
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    lo, hi = data.draw(st.sampled_from([(-3, C + 3), (-101, -99), (C - 1, C + 1), (-(2**40), 2**40)]))
    t = rng.integers(lo, hi, size=ps, endpoint=True)
    ii = data.draw(st.sampled_from([-100, -1, C, 2**40]))
    try:
        want = ref_cross_entropy(x, t, ignore_index=ii, axis=axis, reduction="sum")
    except IndexError:
        with pytest.raises(IndexError):
            fastce.cross_entropy(x, t, ignore_index=ii, axis=axis, reduction="sum")
        with pytest.raises(IndexError):
            fastce.nll_loss_grad(x, t, ignore_index=ii, axis=axis)
    else:
        got = fastce.cross_entropy(x, t, ignore_index=ii, axis=axis, reduction="sum")
        check_close(got, want, TOL[dtype] * 4, 0.0)


# =========================================================================== row operations


@settings(PROFILE_SETTINGS)
@given(shape_axis=class_layouts(min_c=0), dtype=st.sampled_from(DTYPES), data=st.data())
def test_row_ops_match_reference(shape_axis, dtype, data):
    shape, axis = shape_axis
    x = data.draw(logits_arrays(shape, dtype))
    x64 = x.astype(np.float64)
    tol = GTOL[dtype] * 4
    if shape[axis] == 0:  # no classes (the reference cannot take a max over nothing)
        assert fastce.log_softmax(x, axis=axis).shape == shape
        assert fastce.softmax(x, axis=axis).shape == shape
        lse = fastce.logsumexp(x, axis=axis)
        assert np.shape(lse) == _per_sample(shape, axis) and np.all(lse == -np.inf)
        return
    with np.errstate(all="ignore"):
        ls_want = ref_log_softmax(x64, axis=axis)
        sm_want = ref_softmax(x64, axis=axis)
        lse_want = ref_logsumexp(x64, axis=axis)
    ls = fastce.log_softmax(x, axis=axis)
    sm = fastce.softmax(x, axis=axis)
    lse = fastce.logsumexp(x, axis=axis)
    for r in (ls, sm):
        assert r.shape == x.shape and r.dtype == dtype
    mag = _finite_mag(x)
    # log_softmax = x - lse: its absolute error scales with the logits' magnitude
    check_close(ls, ls_want, tol, mag, err_msg="log_softmax")
    check_close(sm, sm_want, tol, 0.0, err_msg="softmax", dtype=dtype)
    check_close(lse, lse_want, tol, 0.0, err_msg="logsumexp")
    # vjps on the outputs, with a random upstream gradient
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    g = rng.standard_normal(shape).astype(dtype)
    if np.all(np.isfinite(x)):
        with np.errstate(all="ignore"):
            vw = ref_log_softmax_vjp(ls.astype(np.float64), g.astype(np.float64), axis=axis)
        check_close(fastce.log_softmax_vjp(ls, g, axis=axis), vw, tol, 3.0 * (shape[axis] + 1),
                    err_msg="log_softmax_vjp", dtype=dtype)
    vs = ref_softmax_vjp(sm.astype(np.float64), g.astype(np.float64), axis=axis)
    check_close(fastce.softmax_vjp(sm, g, axis=axis), vs, tol, 3.0, err_msg="softmax_vjp", dtype=dtype)


# =========================================================================== binary losses


@st.composite
def binary_cases(draw):
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.one_of(st.integers(0, 3), st.integers(0, 70)), min_size=ndim,
                                max_size=ndim)))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([0.1, 3.0, 40.0]))
    x = rng.standard_normal(shape) * scale
    if x.size and draw(st.booleans()):
        x = np.where(rng.random(shape) < 0.2, rng.choice([-np.inf, np.inf], size=shape), x)
    y_kind = draw(st.sampled_from(["binary", "soft"]))
    y = (rng.random(shape) < 0.5).astype(float) if y_kind == "binary" else rng.random(shape)
    kw = dict(reduction=draw(st.sampled_from(["mean", "sum", "none"])))
    if draw(st.booleans()):
        wshape = draw(st.sampled_from(["full", "last", "scalar"]))
        ws = {"full": shape, "last": shape[-1:], "scalar": ()}[wshape]
        kw["weight"] = rng.uniform(0.1, 2.0, ws).astype(dtype)  # 0 * inf is NaN (torch) or 0: avoid
    if draw(st.booleans()):
        kw["pos_weight"] = rng.uniform(0.1, 4.0, shape[-1:]).astype(dtype)
    return x.astype(dtype), y.astype(dtype), kw


@settings(PROFILE_SETTINGS)
@given(case=binary_cases())
def test_bce_with_logits_matches_reference(case):
    x, y, kw = case
    dtype = x.dtype.type
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    ref_kw = {k: (np.asarray(v, dtype=np.float64) if k != "reduction" else v) for k, v in kw.items()}
    want = ref_binary_cross_entropy_with_logits(x64, y64, **ref_kw)
    loss, grad = fastce.binary_cross_entropy_with_logits(x, y, return_grad=True, **kw)
    assert grad.shape == x.shape and grad.dtype == dtype
    mag = _finite_mag(x) * 4 * 8  # weights <= 2, pos_weight <= 4
    n = x.size
    ltol = GTOL[dtype] if kw["reduction"] == "none" else TOL[dtype]   # f16 per-sample: stored in f16
    check_close(loss, want, ltol * 4, mag * reduce_bound_scale(kw["reduction"], n, n),
                err_msg="bce_with_logits")
    # gradient: w[(1 - y) sigmoid(x) - p y sigmoid(-x)], finite everywhere
    assert np.all(np.isfinite(grad))
    w = np.broadcast_to(ref_kw.get("weight", 1.0), x.shape)
    p = np.broadcast_to(ref_kw.get("pos_weight", 1.0), x.shape)
    with np.errstate(over="ignore"):
        sig = 1.0 / (1.0 + np.exp(-x64))
        sig_neg = 1.0 / (1.0 + np.exp(x64))
    gw = w * ((1 - y64) * sig - p * y64 * sig_neg)
    if kw["reduction"] == "mean" and n:
        gw = gw / n
    check_close(grad, gw, GTOL[dtype] * 4, _finite_mag(gw), err_msg="bce_with_logits grad",
                floor=0.0, dtype=dtype)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # float16 grads
@settings(PROFILE_SETTINGS)
@given(case=binary_cases(), special=st.booleans())
def test_bce_matches_reference(case, special):
    x, y, kw = case
    kw = {k: v for k, v in kw.items() if k != "pos_weight"}
    dtype = x.dtype.type
    rng = np.random.default_rng(x.size)
    p = rng.uniform(0, 1, x.shape)
    if special and p.size:
        p = np.where(rng.random(x.shape) < 0.3, rng.choice([0.0, 1.0, np.nan], size=x.shape), p)
    p = p.astype(dtype)
    p64, y64 = p.astype(np.float64), y.astype(np.float64)
    ref_kw = {k: (np.asarray(v, dtype=np.float64) if k != "reduction" else v) for k, v in kw.items()}
    want = ref_binary_cross_entropy(p64, y64, **ref_kw)
    loss, grad = fastce.binary_cross_entropy(p, y, return_grad=True, **kw)
    n = x.size
    ltol = GTOL[dtype] if kw["reduction"] == "none" else TOL[dtype]   # f16 per-sample: stored in f16
    check_close(loss, want, ltol * 4, 200.0 * reduce_bound_scale(kw["reduction"], n, n),
                err_msg="bce")
    w = np.broadcast_to(ref_kw.get("weight", 1.0), x.shape)
    gw = w * (p64 - y64) / np.maximum(p64 * (1 - p64), 1e-12)
    if kw["reduction"] == "mean" and n:
        gw = gw / n
    if dtype == np.float16:
        # float16 gradients overflow beyond 65504 (p within ~1e-5 of 0 or 1): compare the rest
        # (threshold above 6e4 by more than float16's rounding there, 32: a true -60012 is
        # stored as -6e4 exactly)
        big = np.abs(gw) > 6.1e4
        assert np.all(np.isinf(grad[big]) | (np.abs(grad[big]) > 6e4))
        grad, gw = grad[~big], gw[~big]
    # near p = 0 or 1 the float32 rounding of p(1-p) dominates: compare relatively
    check_close(grad, gw, GTOL[dtype] * 10, 0.0, err_msg="bce grad", dtype=dtype)


@settings(PROFILE_SETTINGS)
@given(case=binary_cases())
def test_bce_rejects_probabilities_outside_unit_interval(case):
    x, y, kw = case
    kw = {k: v for k, v in kw.items() if k != "pos_weight"}
    outside = (x < 0) | (x > 1)
    if np.any(outside):
        with pytest.raises(ValueError):
            fastce.binary_cross_entropy(x, y, **kw)
    else:
        fastce.binary_cross_entropy(x, y, **kw)


# =========================================================================== from probabilities


@settings(PROFILE_SETTINGS)
@given(shape_axis=class_layouts(min_c=1, max_c=20), dtype=st.sampled_from([np.float64, np.float32]),
       data=st.data())
def test_categorical_and_accuracy_match_reference(shape_axis, dtype, data):
    shape, axis = shape_axis
    C = shape[axis]
    ps = _per_sample(shape, axis)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = data.draw(logits_arrays(shape, dtype, allow_special=False))
    probs = ref_softmax(x.astype(np.float64), axis=axis).astype(dtype)
    if data.draw(st.booleans()):
        probs = np.where(rng.random(shape) < 0.2, 0.0, probs).astype(dtype)  # exact zeros: clipped
    t = rng.integers(0, C, size=ps)
    eps = data.draw(st.sampled_from([None, 1e-7, 1e-3]))
    red = data.draw(st.sampled_from(["mean", "sum", "none"]))
    for tgt in (t, np.moveaxis(np.eye(C, dtype=dtype)[t], -1, axis) if len(shape) > 1 else np.eye(C)[t]):
        got = fastce.categorical_cross_entropy(probs, tgt, eps=eps, reduction=red, axis=axis)
        want = ref_categorical_cross_entropy(probs, tgt, eps=eps, reduction=red, axis=axis)
        n = int(np.prod(ps))
        check_close(got, want, TOL[dtype] * 4, 40.0 * reduce_bound_scale(red, n, n),
                    err_msg="categorical_cross_entropy")
    acc = fastce.accuracy(x, t, axis=axis)
    want = ref_accuracy(x, t, axis=axis)
    assert isinstance(acc, float)
    assert (np.isnan(acc) and np.isnan(want)) or acc == want
