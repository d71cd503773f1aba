"""The per-call fast path (issue 10): bitwise the general path's results, and it accepts only
canonical inputs (everything else goes through fastce._validate and its messages)."""
import math

import numpy as np
import pytest

import fastce
from fastce import _fastpath, functional as FN

SLOW = _fastpath.SLOW


class _NoFastPath:
    """Stand-in for the _fastpath module that declines every call."""

    SLOW = SLOW

    @staticmethod
    def class_loss(*a):
        return SLOW

    @staticmethod
    def binary_loss(*a):
        return SLOW


def _both_paths(monkeypatch, call):
    fast = call()
    with monkeypatch.context() as m:
        m.setattr(FN, "_fastpath", _NoFastPath)
        slow = call()
    return fast, slow


def _same_bits(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for u, v in zip(a, b):
            _same_bits(u, v)
        return
    assert type(a) is type(b)
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(1, 1), (32, 2), (32, 10), (7, 17), (256, 10), (64, 1000),
                                   (40, 300)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", [{}, {"label_smoothing": 0.1, "z_loss": 1e-3},
                                  {"ignore_index": 3}, {"axis": 1, "grad_output": 2.5}],
                         ids=["plain", "smooth-z", "ignore", "axis1-go"])
@pytest.mark.parametrize("tdtype", [np.int64, np.int32])
def test_cross_entropy_fast_equals_general(monkeypatch, rng, dtype, shape, reduction, opts,
                                           tdtype):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    t = rng.integers(0, shape[1], shape[0]).astype(tdtype)
    t[::3] = opts.get("ignore_index", -100)
    if reduction == "none" and "grad_output" in opts:
        opts = {k: v for k, v in opts.items() if k != "grad_output"}
    assert _fastpath.class_loss(False, x, t, None, opts.get("ignore_index", -100), reduction,
                                opts.get("label_smoothing", 0.0), opts.get("axis", -1),
                                opts.get("z_loss", 0.0), None, True, opts.get("grad_output", 1.0),
                                None) is not SLOW
    _same_bits(*_both_paths(monkeypatch, lambda: fastce.cross_entropy(x, t, reduction=reduction,
                                                                      **opts)))
    _same_bits(*_both_paths(monkeypatch, lambda: fastce.cross_entropy(
        x, t, reduction=reduction, return_grad=True, **opts)))
    # gradient into out=, and in place
    out1, out2 = np.empty_like(x), np.empty_like(x)
    lf, gf = fastce.cross_entropy(x, t, reduction=reduction, return_grad=True, out=out1, **opts)
    with monkeypatch.context() as m:
        m.setattr(FN, "_fastpath", _NoFastPath)
        ls, gs = fastce.cross_entropy(x, t, reduction=reduction, return_grad=True, out=out2, **opts)
    assert gf is out1 and gs is out2
    _same_bits((lf, gf), (ls, gs))
    xi = x.copy()
    li, gi = fastce.cross_entropy(xi, t, reduction=reduction, return_grad=True, out=xi, **opts)
    assert gi is xi
    _same_bits((li, gi), (lf, gf))
    if not opts.get("label_smoothing") and not opts.get("z_loss"):
        _same_bits(*_both_paths(monkeypatch, lambda: fastce.nll_loss(x, t, reduction=reduction,
                                                                     return_grad=True, **opts)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(1,), (256,), (33, 7), (70000,)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits_fast_equals_general(monkeypatch, rng, dtype, shape, reduction):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    y = rng.random(shape).astype(dtype)
    for rg in (False, True):
        _same_bits(*_both_paths(monkeypatch, lambda: fastce.binary_cross_entropy_with_logits(
            x, y, reduction=reduction, return_grad=rg)))
    _same_bits(*_both_paths(monkeypatch, lambda: fastce.binary_cross_entropy_with_logits_grad(
        x, y, reduction=reduction)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(1,), (256,), (33, 7), (70000,)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_probabilities_fast_equals_general(monkeypatch, rng, dtype, shape, reduction):
    p = rng.random(shape).astype(dtype)
    p.reshape(-1)[::5] = 0.0
    p.reshape(-1)[1::7] = 1.0
    p.reshape(-1)[2::11] = np.nan
    y = rng.random(shape).astype(dtype)
    assert _fastpath.binary_loss("probs", p, y, None, None, reduction, True, 1.0, None) is not SLOW
    for rg in (False, True):
        _same_bits(*_both_paths(monkeypatch, lambda: fastce.binary_cross_entropy(
            p, y, reduction=reduction, return_grad=rg)))
    _same_bits(*_both_paths(monkeypatch, lambda: fastce.binary_cross_entropy_grad(
        p, y, reduction=reduction)))


@pytest.mark.parametrize("n", [1, 300, 70001])
@pytest.mark.parametrize("bad", [-0.5, 1.5, -np.inf, np.inf, -1e-30])
def test_fast_path_declines_probabilities_outside_unit_interval(n, bad):
    """An out-of-range probability anywhere sends the call to the general path, which names it."""
    for where in (0, n // 2, n - 1):
        p = np.full(n, 0.25)
        p[where] = bad
        y = np.zeros(n)
        assert _fastpath.binary_loss("probs", p, y, None, None, "mean", False, 1.0, None) is SLOW
        with pytest.raises(ValueError, match=r"\[0, 1\]; found"):
            fastce.binary_cross_entropy(p, y)
        with pytest.raises(ValueError, match=r"\[0, 1\]; found"):
            fastce.BCELoss()(p, y)


def _ce_fast(x, t, **kw):
    a = dict(weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, axis=-1,
             z_loss=0.0, softcap=None, return_grad=True, grad_output=1.0, out=None)
    a.update(kw)
    return _fastpath.class_loss(False, x, t, a["weight"], a["ignore_index"], a["reduction"],
                                a["label_smoothing"], a["axis"], a["z_loss"], a["softcap"],
                                a["return_grad"], a["grad_output"], a["out"])


X = np.random.default_rng(0).standard_normal((8, 5))
T = np.arange(8) % 5


@pytest.mark.parametrize("case", [
    dict(x=np.ma.array(X)), dict(x=X.astype(np.float16)), dict(x=X.T.copy().T),
    dict(x=X.astype(X.dtype.newbyteorder()).byteswap()), dict(x=X[None]), dict(x=X[:0]),
    dict(t=T.astype(np.uint8)), dict(t=T.reshape(8, 1)), dict(t=T[:7]), dict(t=list(T)),
    dict(t=np.where(T == 0, 5, T)), dict(t=np.where(T == 0, -1, T)),
    dict(t=np.where(T == 0, 2**40, T)),
    dict(weight=np.ones(5)), dict(softcap=5.0), dict(ignore_index=True),
    dict(ignore_index=2**70), dict(reduction="avg"), dict(reduction=np.str_("mean")),
    dict(label_smoothing=True), dict(label_smoothing=1.5), dict(label_smoothing="0.1"),
    dict(z_loss=-1.0), dict(z_loss=float("inf")), dict(grad_output=np.float64(2.0)),
    dict(grad_output=2**2000), dict(reduction="none", grad_output=2.0), dict(axis=0),
    dict(axis=True), dict(return_grad=1), dict(out=np.empty((8, 5), np.float32)),
    dict(out=np.empty((5, 8))), dict(out=np.empty((8, 5))[::1, ::1].T.copy().T),
    dict(out=np.empty((8, 5)).view(np.matrix)),
], ids=lambda c: next(iter(c)) + "-" + str(next(iter(c.values())))[:18].replace(" ", ""))
def test_fast_path_declines_what_it_cannot_prove(case):
    """Anything non-canonical (or invalid) goes to the general path, which validates."""
    kw = dict(case)
    x = kw.pop("x", X)
    t = kw.pop("t", T)
    assert _ce_fast(x, t, **kw) is SLOW


def test_fast_path_declines_overlapping_out():
    buf = np.zeros(8 * 5 + 8)
    x = X.copy()
    t = buf[:8].view(np.int64)
    t[:] = T
    out = buf[:40].reshape(8, 5)       # shares memory with the target
    assert _ce_fast(x, t, out=out) is SLOW
    xs = np.zeros((9, 5))
    xs[:8] = X
    assert _ce_fast(xs[:8], T, out=xs[1:]) is SLOW       # partial overlap with the input
    # the general path routes it through a temporary and gets the right answer
    want = fastce.cross_entropy(X, T, return_grad=True)
    got = fastce.cross_entropy(x, t, return_grad=True, out=out)
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 127, 128, 129, 1000, 12345])
def test_pairwise_sum(n):
    a = np.random.default_rng(n).standard_normal(n) * 10.0 ** np.random.default_rng(1).integers(-5, 5, n)
    got = _fastpath.pairwise_sum(a)
    assert math.isclose(got, math.fsum(a), rel_tol=1e-13, abs_tol=1e-13 * np.abs(a).sum())
    with pytest.raises(TypeError):
        _fastpath.pairwise_sum(a.astype(np.float32))


@pytest.mark.parametrize("n", [1, 17, 70001])          # 70001: vector body + two-thread split
@pytest.mark.parametrize("tdtype", [np.int64, np.int32])
@pytest.mark.parametrize("where", [0, "mid", "second-half", -1])
@pytest.mark.parametrize("bad", [-1, 2, -(2**31), 2**31 - 1])
def test_fast_path_target_scan_finds_every_bad_target(n, tdtype, where, bad):
    """The vectorised target scan declines (general path: the error naming the value) for one
    out-of-range target anywhere, among valid and ignored ones."""
    x = np.zeros((n, 2), np.float32)
    t = (np.arange(n) % 2).astype(tdtype)
    t[::3] = -100
    pos = {0: 0, "mid": n // 2, "second-half": (3 * n) // 4, -1: n - 1}[where]
    t[pos] = bad
    assert _ce_fast(x, t) is SLOW
    with pytest.raises(IndexError, match=f"target value {bad} is out of bounds"):
        fastce.cross_entropy(x, t)


@pytest.mark.parametrize("tdtype", [np.int64, np.int32])
def test_fast_path_counts_ignored_targets_of_a_long_batch(monkeypatch, rng, tdtype):
    n = 70001
    x = rng.standard_normal((n, 2)).astype(np.float32)
    t = rng.integers(0, 2, n).astype(tdtype)
    t[rng.random(n) < 0.3] = -100
    assert _ce_fast(x, t) is not SLOW
    fast, slow = _both_paths(monkeypatch, lambda: fastce.cross_entropy(x, t, return_grad=True))
    _same_bits(fast, slow)
    # and against a float64 reference of the mean over the counted samples
    keep = t != -100
    z = x[keep].astype(np.float64)
    lse = np.logaddexp(z[:, 0], z[:, 1])
    ref = np.mean(lse - z[np.arange(z.shape[0]), t[keep]])
    assert abs(float(fast[0]) - ref) <= 1e-5 * abs(ref)
