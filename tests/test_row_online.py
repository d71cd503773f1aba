"""The one-read row kernel (row_max_sumexp in src/fastce/_k_reduce.h): class-index CE rows
without softcap or label smoothing read the row once, in blocks of FCE_ROW_BLOCK = 512
elements, raising a running max and rescaling the lane sums between blocks.  Rows here are
longer than one block so that the rescale runs (ascending rows raise the max in every block),
with special values placed in the first, middle and last block, confident rows, and the
promises of the row path: the loss is bitwise the same with and without a gradient and for any
thread count, and every forced instruction set agrees with the float64 reference.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastce
from conftest import assert_close
from reference import ref_cross_entropy

DTYPES = [np.float32, np.float64]
BLOCK = 512
# one vector past a lane multiple, a block and one, several blocks with a short tail
LENGTHS = [17, BLOCK + 1, 2 * BLOCK + 276, 4 * BLOCK + 3]
# past the 64 blocks whose exps the fused kernel keeps: the three-pass route
LONG = 64 * BLOCK + 5
PATTERNS = ["random", "ascending", "descending", "spike-last", "spike-first"]


def _rows(rng, C, pattern, n=6, scale=3.0):
    x = rng.standard_normal((n, C)) * scale
    if pattern == "ascending":          # the max rises in every block: a rescale per block
        x = np.sort(x, axis=1) + np.linspace(0, 40, C)
    elif pattern == "descending":       # the first block holds the max: no rescale
        x = -np.sort(-x, axis=1)
    elif pattern == "spike-last":       # one rescale by a large factor in the last block
        x[:, -1] += 60.0
    elif pattern == "spike-first":
        x[:, 0] += 60.0
    return x


def _softmax_grad(x, t):
    """float64 softmax minus one-hot, 1/N scaled (the mean reduction's gradient)."""
    x = np.asarray(x, np.float64)
    m = np.max(x, axis=1, keepdims=True)
    e = np.exp(x - m)
    p = e / e.sum(axis=1, keepdims=True)
    p[np.arange(len(t)), t] -= 1.0
    return p / len(t)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("C", LENGTHS + [LONG])
def test_long_rows_match_the_reference(C, pattern, dtype, rng):
    x = _rows(rng, C, pattern).astype(dtype)
    t = rng.integers(0, C, x.shape[0])
    t[0] = C - 1                        # the target in the last block (and its tail)
    t[1] = 0
    loss = fastce.cross_entropy(x, t, reduction="none")
    assert_close(loss, ref_cross_entropy(x, t, reduction="none"), dtype)
    l2, g = fastce.cross_entropy(x, t, return_grad=True)
    assert_close(l2, ref_cross_entropy(x, t), dtype)
    assert_close(g, _softmax_grad(x, t), dtype, kind="grad")
    # options the one-read path also serves (weights, z-loss, ignore_index)
    w = rng.uniform(0.5, 2.0, C)
    t2 = t.copy()
    t2[2] = -100
    kw = dict(weight=w, ignore_index=-100, reduction="none")
    assert_close(fastce.cross_entropy(x, t2, **kw), ref_cross_entropy(x, t2, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_special_values_in_every_block(dtype, rng):
    C = 3 * BLOCK + 7
    x = rng.standard_normal((8, C))
    t = np.full(8, 5)
    x[0, : BLOCK + 20] = -np.inf        # masked: the first block (and more) all -inf
    t[0] = BLOCK + 30
    x[1, ::3] = -np.inf                 # masked entries in every block
    x[1, 5] = 0.3                       # (the target itself is not masked)
    x[2, BLOCK + 9] = np.nan            # NaN propagates
    x[3, 2 * BLOCK + 1] = np.inf        # +inf elsewhere: NaN, as log_softmax
    x[4, 5] = np.inf                    # +inf at the target: NaN
    x[5, :] = -np.inf                   # fully masked row: NaN
    x[6, : 2 * BLOCK] = -np.inf         # only the last block and the tail are live
    x[6, 5] = -1.0
    x[7, -1] = np.nan                   # NaN in the scalar tail
    x = x.astype(dtype)
    with np.errstate(all="ignore"):
        ref = ref_cross_entropy(x, t, reduction="none")
    loss = fastce.cross_entropy(x, t, reduction="none")
    # NaN rows: NaN anywhere, any +inf logit (as the two-pass rows always gave; the float64
    # reference gives inf for a +inf elsewhere than the target), a fully masked row
    assert np.array_equal(np.isnan(loss), [False, False, True, True, True, True, False, True])
    live = ~np.isnan(loss)
    assert_close(loss[live], ref[live], dtype)
    l2, g = fastce.cross_entropy(x, t, reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss, l2)
    with np.errstate(all="ignore"):
        gref = _softmax_grad(x[live], t[live]) * live.sum()
    assert_close(g[live], gref, dtype, kind="grad")
    assert np.all(g[live][np.isinf(x[live])] == 0)          # masked logits: exactly 0
    assert np.all(np.isnan(g[2])) and np.all(np.isnan(g[5]))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("C", [BLOCK + 1, 2 * BLOCK + 276])
def test_confident_rows_keep_relative_precision(C, dtype, rng):
    """nll = log1p(sum_{j != y} e^(x_j - x_y)) ~ 1e-20: lse - x_y would round to 0."""
    x = rng.standard_normal((4, C))
    t = np.array([0, C // 2, C - 1, 3])
    x[np.arange(4), t] = 55.0           # the target is the max, in the first/middle/last block
    x[3, 0] = 80.0                      # ... except here: the max elsewhere, a normal loss
    x = x.astype(dtype)
    xd = x.astype(np.float64)
    rest = np.array([np.exp(np.delete(xd[i], t[i]) - xd[i, t[i]]).sum() for i in range(3)])
    want = np.log1p(rest)
    loss = fastce.cross_entropy(x, t, reduction="none")
    assert np.all(loss[:3] > 0)
    np.testing.assert_allclose(loss[:3], want, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert_close(loss[3], ref_cross_entropy(x[3:], t[3:], reduction="none")[0], dtype)
    l2, _ = fastce.cross_entropy(x, t, reduction="none", return_grad=True)
    np.testing.assert_array_equal(loss, l2)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("C,rows", [(2 * BLOCK + 276, 40), (LONG, 2)], ids=["online", "long"])
def test_bitwise_with_and_without_grad_and_across_threads(dtype, rng, C, rows):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x = np.concatenate([_rows(rng, C, p, n=rows) for p in PATTERNS]).astype(dtype)
    t = rng.integers(0, C, x.shape[0])
    results = []
    for n in (1, 2, 3):
        with threadpoolctl.threadpool_limits(n):
            a = fastce.cross_entropy(x, t, reduction="none")
            b, g = fastce.cross_entropy(x, t, reduction="none", return_grad=True)
            xi = x.copy()
            c, _ = fastce.cross_entropy(xi, t, reduction="none", return_grad=True, out=xi)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(g, xi)    # the in-place gradient is the same gradient
        results.append((a, g))
    for a, g in results[1:]:
        np.testing.assert_array_equal(a, results[0][0])
        np.testing.assert_array_equal(g, results[0][1])


SNIPPET = r"""
import json, sys, numpy as np, fastce
sys.path.insert(0, %r)
from reference import ref_cross_entropy
from fastce import _threads
rng = np.random.default_rng(5)
out = dict(chosen=sorted(set(_threads.isa_report()["chosen"].values())), err={}, same={})
for dt in ("float32", "float64"):
    x = rng.standard_normal((12, 1300)) * 4
    x[:, ::7] = -np.inf
    x[0] = np.sort(x[0]) + np.linspace(0, 30, 1300)
    x = x.astype(dt)
    t = rng.integers(0, 1300, 12)
    t[t %% 7 == 0] += 1
    a = fastce.cross_entropy(x, t, reduction="none")
    b, g = fastce.cross_entropy(x, t, reduction="none", return_grad=True)
    ref = ref_cross_entropy(x, t, reduction="none")
    out["err"][dt] = float(np.max(np.abs(a - ref) / np.abs(ref)))
    out["same"][dt] = bool(np.array_equal(a, b))
print(json.dumps(out))
"""


def _levels():
    from fastce import _threads
    order = ["baseline", "avx2", "avx512"]
    best = _threads.isa_report()["best"]
    return order[: order.index(best) + 1] if best in order else []


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_every_isa_agrees_with_the_reference(isa):
    if isa not in _levels():
        pytest.skip(f"this CPU (or build) cannot run {isa}")
    env = dict(os.environ, FASTCE_ISA=isa)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run([sys.executable, "-c", SNIPPET % tests_dir], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["chosen"] == [isa]
    assert out["err"]["float32"] < 1e-5 and out["err"]["float64"] < 1e-12, out["err"]
    assert out["same"] == {"float32": True, "float64": True}


def _capped_softmax_grad(x, t, cap):
    """float64 gradient of mean CE over softcapped logits (chain rule through cap tanh(x/cap))."""
    x = np.asarray(x, np.float64)
    th = np.tanh(x / cap)
    return _softmax_grad(cap * th, t) * (1.0 - th * th)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("opts", [dict(softcap=3.0), dict(label_smoothing=0.1),
                                  dict(softcap=3.0, label_smoothing=0.1)],
                         ids=["softcap", "smooth", "softcap-smooth"])
def test_loss_pass_leaves_out_the_target_wherever_it_is(dtype, opts, rng):
    """Rows under softcap / smoothing (row_ce_pass: the row split around the target's vector,
    sums grouped per lane): the target in the first, a middle and the last whole vector, in the
    scalar tail, at vector edges, and a confident target -- against the float64 reference, the
    loss bitwise the same with a gradient."""
    C = 2 * BLOCK + 276 + 5                     # a tail of 5 after the whole vectors
    vl = C - C % 16
    t = np.array([0, 15, 16, 17, 8 * 16, 8 * 16 - 1, C // 2, vl - 16, vl - 1, vl, C - 1, 7])
    x = rng.standard_normal((len(t), C)) * 2.0
    x[11, 7] = 40.0                             # confident: the target is the max by far
    x = x.astype(dtype)
    loss = fastce.cross_entropy(x, t, reduction="none", **opts)
    assert_close(loss, ref_cross_entropy(x, t, reduction="none", **opts), dtype)
    l2, g = fastce.cross_entropy(x, t, reduction="none", return_grad=True, **opts)
    np.testing.assert_array_equal(loss, l2)
    if "label_smoothing" not in opts:
        assert_close(g, _capped_softmax_grad(x, t, opts["softcap"]) * len(t), dtype, kind="grad")
