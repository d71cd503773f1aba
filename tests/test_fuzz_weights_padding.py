"""Differential fuzz of cross-entropy against float64 references (issue 8, items 2, 3, 8).

Hypothesis draws every option combination (weights with inf / huge / zero entries on classes
no live sample uses, label smoothing, z-loss, softcap, reductions, layouts that reach the row,
block, column and C = 2 kernel paths) over batches with padded samples: target = ignore_index
and NaN / +-inf logits.  Losses are compared with tests/reference.py, gradients with torch
autograd in float64 (padded rows' logits zeroed there, since torch lets their NaN through; in
fastce an ignored sample's gradient is exactly 0).  The loss must also be bitwise the same with
and without return_grad.
"""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import fastce  # noqa: E402
from reference import ref_cross_entropy  # noqa: E402

IGNORE = -100

# layout -> (shape maker, axis): (N, C) rows or blocks, (N, C, B) columns
LAYOUTS = {
    "block": (lambda n, c, b: (n, c), -1),
    "row": (lambda n, c, b: (n, c + 16), -1),
    "cols": (lambda n, c, b: (n, c, b), 1),
}


@st.composite
def cases(draw):
    layout = draw(st.sampled_from(sorted(LAYOUTS)))
    make, axis = LAYOUTS[layout]
    n = draw(st.integers(1, 6))
    c = draw(st.sampled_from([2, 3, 5, 11]))
    b = draw(st.integers(2, 5))
    shape = make(n, c, b)
    C = shape[axis]
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    xl = np.moveaxis(x, axis, -1)                      # view: classes last
    samples = xl.shape[:-1]
    t = rng.integers(0, C, samples)
    # padded samples: ignored, with garbage logits
    pad = rng.random(samples) < 0.3
    t[pad] = IGNORE
    garbage = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    rows = np.argwhere(pad)
    for r in rows:
        k = rng.integers(0, C)
        xl[tuple(r)][k] = garbage
    kw = dict(ignore_index=IGNORE, axis=axis,
              reduction=draw(st.sampled_from(["mean", "sum", "none"])),
              label_smoothing=draw(st.sampled_from([0.0, 0.0, 0.1])),
              z_loss=draw(st.sampled_from([0.0, 0.0, 0.01])),
              softcap=draw(st.sampled_from([None, None, 5.0])))
    wkind = draw(st.sampled_from(["none", "plain", "inf", "huge", "zero"]))
    if wkind != "none":
        w = rng.uniform(0.5, 2.0, C)
        unused = np.setdiff1d(np.arange(C), t[t != IGNORE])
        if wkind == "zero":
            w[rng.integers(0, C)] = 0.0
        elif unused.size:
            # inverse-frequency weights of an absent class (1/0), or a float64 weight beyond
            # float32's range
            w[unused[0]] = np.inf if wkind == "inf" else 1e39
        kw["weight"] = w
    return x, t, kw


def _finite_weights(kw):
    w = kw.get("weight")
    return w is None or bool(np.all(w <= np.finfo(np.float32).max))


def _torch_grad(x, t, kw):
    """d(loss)/dx by torch autograd in float64, with z-loss and softcap written out."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    axis = kw["axis"]
    xs = np.moveaxis(x.astype(np.float64), axis, -1).copy()
    xs[t == IGNORE] = 0.0                 # torch would turn padded NaNs into NaN gradients
    xt = torch.tensor(xs, requires_grad=True)
    C = xs.shape[-1]
    z = xt if kw["softcap"] is None else kw["softcap"] * torch.tanh(xt / kw["softcap"])
    w = kw.get("weight")
    wt = None if w is None else torch.tensor(w)
    tt = torch.tensor(t)
    per = F.cross_entropy(z.reshape(-1, C), tt.reshape(-1), weight=wt, ignore_index=IGNORE,
                          reduction="none", label_smoothing=kw["label_smoothing"])
    live = (tt.reshape(-1) != IGNORE).double()
    if kw["z_loss"]:
        per = per + kw["z_loss"] * torch.logsumexp(z.reshape(-1, C), dim=-1) ** 2 * live
    # (where, not a product: an ignored sample's class-0 weight may be inf)
    wy = live if wt is None else torch.where(
        live > 0, wt[torch.where(tt.reshape(-1) == IGNORE, 0, tt.reshape(-1))], 0.0)
    red = kw["reduction"]
    if red == "none":
        go = torch.linspace(-1.0, 2.0, per.numel(), dtype=torch.float64)
        (per * go).sum().backward()
    else:
        loss = per.sum() if red == "sum" else per.sum() / wy.sum()
        loss.backward()
    return np.moveaxis(xt.grad.numpy(), -1, axis)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))   # same examples in every CI run
@given(case=cases())
def test_cross_entropy_fuzz(case):
    x, t, kw = case
    red = kw["reduction"]
    go = (np.linspace(-1.0, 2.0, t.size).reshape(t.shape) if red == "none" else 1.0)
    loss = fastce.cross_entropy(x, t, **kw)
    loss_g, grad = fastce.cross_entropy(x, t, return_grad=True, grad_output=go, **kw)
    # item 8: the loss does not depend on whether the gradient is wanted
    assert np.asarray(loss).tobytes() == np.asarray(loss_g).tobytes()

    with np.errstate(all="ignore"):
        want = ref_cross_entropy(x.astype(np.float64), t, **kw)
    rtol = 1e-9 if x.dtype == np.float64 else 2e-4
    # item 2: an infinite / overflowing weight of an unused class changes nothing; with
    # smoothing the uniform part reaches that class and the loss is +inf, as in the reference
    # (NaN only for a mean over all-ignored samples)
    # (the reference rounded to the result dtype: a 1e39 weight can overflow float32 to inf)
    with np.errstate(over="ignore"):
        want_r = np.asarray(want).astype(x.dtype).astype(np.float64)
    np.testing.assert_allclose(np.asarray(loss, np.float64), want_r, rtol=rtol, atol=rtol,
                               equal_nan=True)
    if not (_finite_weights(kw) or kw["label_smoothing"] == 0.0):
        return

    # item 3: ignored samples get exactly zero gradient, softcap or not, NaN logits or not
    g_last = np.moveaxis(grad, kw["axis"], -1)
    assert np.all(g_last[t == IGNORE] == 0)
    w = kw.get("weight")
    live = t != IGNORE
    denom = live.sum() if w is None else w[t[live]].sum()
    if red == "mean" and denom == 0:
        # a zero "mean" denominator (all ignored, or zero weights): loss NaN, gradient zero
        # (documented; torch's gradient is 0/0 = NaN there)
        assert np.all(grad == 0)
        return
    gw = _torch_grad(x, t, kw)
    gtol = 1e-9 if x.dtype == np.float64 else 2e-4
    np.testing.assert_allclose(grad.astype(np.float64), gw, rtol=gtol, atol=gtol * np.abs(gw).max())
