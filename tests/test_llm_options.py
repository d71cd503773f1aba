"""z_loss and softcap on cross_entropy, and the fused linear_cross_entropy (issue 5).

References: tests/reference.py (float64, softcap/z-loss written out), 4th-order finite
differences, the unfused NumPy computation, and torch.nn.functional.linear_cross_entropy.
"""
import numpy as np
import pytest

import fastce
from conftest import fd_grad
from reference import ref_cross_entropy

# rows (ROW path), few classes (BLOCK path), axis=1 (COLS path), 1-D
LAYOUTS = [((6, 40), -1), ((300, 5), -1), ((2, 7, 150), 1), ((9,), -1)]
OPTIONS = [dict(z_loss=1e-2), dict(softcap=3.0), dict(z_loss=0.05, softcap=2.5, label_smoothing=0.1),
           dict(softcap=1.5, weight=True, ignore=True)]


def _case(rng, shape, axis, target_kind, opts):
    x = rng.standard_normal(shape) * 3
    C = shape[axis]
    ps = tuple(np.delete(np.array(shape), axis))
    kw = {k: v for k, v in opts.items() if k not in ("weight", "ignore")}
    if opts.get("weight"):
        kw["weight"] = rng.uniform(0.5, 2.0, C)
    if target_kind == "index":
        t = rng.integers(0, C, ps)
        if opts.get("ignore") and t.size > 1:
            t.reshape(-1)[::4] = -100
    else:
        t = rng.random(shape)
    return x, t, kw


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(sorted(o)))
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("shape,axis", LAYOUTS, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_reference(rng, shape, axis, target_kind, opts, reduction):
    x, t, kw = _case(rng, shape, axis, target_kind, opts)
    got = fastce.cross_entropy(x, t, axis=axis, reduction=reduction, **kw)
    want = ref_cross_entropy(x, t, axis=axis, reduction=reduction, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    x32 = x.astype(np.float32)
    got32 = fastce.cross_entropy(x32, t if target_kind == "index" else t.astype(np.float32),
                                 axis=axis, reduction=reduction, **kw)
    np.testing.assert_allclose(got32, ref_cross_entropy(x32, t, axis=axis, reduction=reduction, **kw),
                               rtol=2e-5, atol=1e-5)


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(sorted(o)))
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("shape,axis", [((3, 6), -1), ((4, 3), -1), ((2, 3, 2), 1)], ids=str)
def test_gradient_finite_differences(rng, shape, axis, target_kind, opts):
    x, t, kw = _case(rng, shape, axis, target_kind, opts)
    g_out = 0.7
    g = fastce.cross_entropy_grad(x, t, axis=axis, grad_output=g_out, **kw)
    want = fd_grad(lambda z: g_out * ref_cross_entropy(z, t, axis=axis, **kw), x, h=1e-3)
    np.testing.assert_allclose(g, want, rtol=1e-7, atol=1e-9)
    loss, g2 = fastce.cross_entropy(x, t, axis=axis, return_grad=True, grad_output=g_out, **kw)
    np.testing.assert_array_equal(g, g2)


def test_softcap_limits_masked_logits():
    # softcap maps -inf to -c: a "masked" logit becomes an ordinary low logit (the math of
    # c*tanh(x/c)), with zero gradient because tanh is flat there.
    x = np.array([[0.5, -np.inf, 1.0]])
    loss, g = fastce.cross_entropy(x, [2], softcap=2.0, return_grad=True)
    capped = np.array([[2.0 * np.tanh(0.25), -2.0, 2.0 * np.tanh(0.5)]])   # c tanh(x/c), c = 2
    want = ref_cross_entropy(capped, [2])
    assert np.isfinite(loss) and loss == pytest.approx(want, rel=1e-12)
    assert g[0, 1] == 0.0


def test_options_validation():
    x = np.zeros((2, 3))
    t = np.array([0, 1])
    for bad in (-1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="z_loss"):
            fastce.cross_entropy(x, t, z_loss=bad)
    for bad in (0.0, -2.0, np.inf):
        with pytest.raises(ValueError, match="softcap"):
            fastce.cross_entropy(x, t, softcap=bad)
    with pytest.raises(TypeError, match="softcap"):
        fastce.cross_entropy(x, t, softcap="big")


# ----------------------------------------------------------------- linear_cross_entropy

def _unfused(X, W, t, b=None, **kw):
    logits = X @ W.T + (0 if b is None else b)
    return ref_cross_entropy(logits, t, **kw)


LCE_OPTS = [dict(), dict(bias=True), dict(bias=True, weight=True, label_smoothing=0.1),
            dict(z_loss=1e-3, softcap=5.0), dict(reduction="sum"), dict(reduction="none", bias=True)]


def _lce_case(rng, opts, N=37, D=16, V=50, prob=False):
    X = rng.standard_normal((N, D))
    W = rng.standard_normal((V, D)) * 0.3
    t = rng.random((N, V)) if prob else rng.integers(0, V, N)
    if not prob:
        t[3] = -100
    kw = {k: v for k, v in opts.items() if k not in ("bias", "weight")}
    b = rng.standard_normal(V) if opts.get("bias") else None
    if opts.get("weight"):
        kw["weight"] = rng.uniform(0.5, 2, V)
    return X, W, t, b, kw


@pytest.mark.parametrize("chunk_size", [None, 1, 5, 37, 1000])
@pytest.mark.parametrize("opts", LCE_OPTS, ids=lambda o: "-".join(sorted(o)) or "plain")
@pytest.mark.parametrize("prob", [False, True], ids=["index", "prob"])
def test_linear_ce_matches_unfused(rng, opts, chunk_size, prob):
    X, W, t, b, kw = _lce_case(rng, opts, prob=prob)
    got = fastce.linear_cross_entropy(X, W, t, linear_bias=b, chunk_size=chunk_size, **kw)
    np.testing.assert_allclose(got, _unfused(X, W, t, b, **kw), rtol=1e-12, atol=1e-13)
    res = fastce.linear_cross_entropy(X, W, t, linear_bias=b, chunk_size=chunk_size,
                                      return_grad=True, **kw)
    assert len(res) == (4 if b is not None else 3)
    # the unfused path: fastce's own fused CE gradient on the full logits, then the two matmuls
    logits = X @ W.T + (0 if b is None else b)
    G = fastce.cross_entropy_grad(logits, t, **kw)
    np.testing.assert_allclose(res[1], G @ W, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(res[2], G.T @ X, rtol=1e-10, atol=1e-14)
    if b is not None:
        np.testing.assert_allclose(res[3], G.sum(axis=0), rtol=1e-10, atol=1e-14)


def test_linear_ce_finite_differences(rng):
    X, W, t, b, kw = _lce_case(rng, dict(bias=True, label_smoothing=0.2, z_loss=0.01), N=4, D=3, V=5)
    _, gX, gW, gb = fastce.linear_cross_entropy(X, W, t, linear_bias=b, return_grad=True, **kw)
    np.testing.assert_allclose(gX, fd_grad(lambda z: _unfused(z, W, t, b, **kw), X), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(gW, fd_grad(lambda z: _unfused(X, z, t, b, **kw), W), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(gb, fd_grad(lambda z: _unfused(X, W, t, z, **kw), b), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_linear_ce_torch_parity(rng, torch, F, reduction):
    X, W, t, b, kw = _lce_case(rng, dict(bias=True, weight=True, label_smoothing=0.1))
    res = fastce.linear_cross_entropy(X, W, t, linear_bias=b, reduction=reduction, return_grad=True,
                                      chunk_size=8, **kw)
    Xt, Wt, bt = (torch.tensor(a, requires_grad=True) for a in (X, W, b))
    tk = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    loss = F.linear_cross_entropy(Xt, Wt, torch.tensor(t), linear_bias=bt, reduction=reduction, **tk)
    loss.sum().backward()
    np.testing.assert_allclose(res[0], loss.detach().numpy(), rtol=1e-12, atol=1e-14)
    for got, want in zip(res[1:], (Xt.grad, Wt.grad, bt.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-14)


def test_linear_ce_float32_and_1d(rng):
    X, W, t, b, kw = _lce_case(rng, dict(bias=True))
    got = fastce.linear_cross_entropy(X.astype(np.float32), W.astype(np.float32), t, linear_bias=b)
    assert isinstance(got, np.float32)
    np.testing.assert_allclose(got, _unfused(X.astype(np.float32), W.astype(np.float32), t, b),
                               rtol=1e-5)
    loss, gx, gw, gb = fastce.linear_cross_entropy(X[0], W, t[0], linear_bias=b, return_grad=True)
    assert gx.shape == X[0].shape and gw.shape == W.shape and gb.shape == b.shape
    np.testing.assert_allclose(loss, _unfused(X[:1], W, t[:1], b), rtol=1e-12)


def test_linear_ce_bad_shapes():
    X = np.zeros((4, 3))
    W = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"\(4, 2\)"):
        fastce.linear_cross_entropy(np.zeros((4, 2)), W, np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="linear_bias"):
        fastce.linear_cross_entropy(X, W, np.zeros(4, dtype=int), linear_bias=np.zeros(4))
    with pytest.raises(IndexError, match="5"):
        fastce.linear_cross_entropy(X, W, np.array([0, 1, 5, 2]))
    with pytest.raises(ValueError, match="chunk_size"):
        fastce.linear_cross_entropy(X, W, np.zeros(4, dtype=int), chunk_size=0)


def test_linear_ce_peak_memory_is_a_chunk(rng):
    """Peak traced allocation stays near one chunk of logits, far below N x V."""
    import tracemalloc
    N, D, V = 2048, 32, 8192
    X = rng.standard_normal((N, D)).astype(np.float32)
    W = (rng.standard_normal((V, D)) * 0.1).astype(np.float32)
    t = rng.integers(0, V, N)
    full_logits = N * V * 4                                    # 64 MiB
    tracemalloc.start()
    try:
        fastce.linear_cross_entropy(X, W, t, chunk_size=128, return_grad=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one 128 x V chunk (4 MiB) + grad_weight and its partial (2 x 1 MiB) + grad_input + per-sample
    assert peak < full_logits / 6, peak
