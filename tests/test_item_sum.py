"""Class-index CE / NLL with reduction mean/sum sum each work item's losses in the kernel
(fce_ce_args.item_sum) instead of returning per-sample losses.  These tests pin the item
boundaries (a partial last block / tile, fewer samples than one block, one row per item for
C > 16), the fixed order (same bits for 1 and 2 threads, with and without a gradient, on the
fast and the general path) and the value (float64 reference)."""
import numpy as np
import pytest
import threadpoolctl

import fastce
from fastce import _ce
from fastce import _fastpath
from reference import ref_cross_entropy, ref_nll_loss

# (shape, axis): BLOCK items of 64 short rows (C = 2 closed form and general C), ROW items
# (C > 16), COLS tiles of 64 columns; N below one block, not a multiple of it, exactly one.
SHAPES = [
    ((1, 2), -1), ((63, 2), -1), ((64, 2), -1), ((65, 2), -1), ((70_001, 2), -1),
    ((5, 10), -1), ((129, 10), -1), ((20_003, 10), -1), ((64, 16), -1),
    ((7, 17), -1), ((1_203, 40), -1),
    ((3, 4, 5), 1), ((2, 3, 150), 1), ((2, 5, 7_001), 1),
]
IDS = [f"{s}-ax{a}" for s, a in SHAPES]


def _data(shape, axis, dtype, seed, ignore_some=True):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    C = shape[axis]
    samples = tuple(d for i, d in enumerate(shape) if i != axis % len(shape))
    t = rng.integers(0, C, samples)
    if ignore_some:
        t[rng.random(samples) < 0.1] = -100
    return x, t


def _tile_sums_ref(per, shape, axis):
    """The item sums the kernels are specified to form, from float64 per-sample losses: items of
    64 rows (C <= 16) / one row (C > 16) / 64 columns per a-slab, each summed in eight lanes
    then a fixed tree, then the tail (written here from the spec in _k_ce.h, not its code)."""
    def tile(v):
        acc = np.zeros(8)
        n8 = len(v) // 8 * 8
        for i in range(0, n8, 8):
            acc = acc + v[i:i + 8]
        s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
        for t in v[n8:]:
            s = s + t
        return s
    if axis == -1:
        N, C = shape
        if C > 16:
            return per.copy()
        return np.array([tile(per[i:i + 64]) for i in range(0, N, 64)])
    A, C, B = shape[0], shape[1], int(np.prod(shape[2:]))
    p = per.reshape(A, B)
    return np.array([tile(p[a, b:b + 64]) for a in range(A) for b in range(0, B, 64)])


@pytest.mark.parametrize("shape,axis", SHAPES, ids=IDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_reduced_loss_matches_reference(shape, axis, reduction, dtype):
    x, t = _data(shape, axis, dtype, 1)
    got = fastce.cross_entropy(x, t, reduction=reduction, axis=axis)
    want = ref_cross_entropy(x, t, reduction=reduction, axis=axis)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(float(got), want, rtol=tol)
    got = fastce.nll_loss(x, t, reduction=reduction, axis=axis)
    want = ref_nll_loss(x, t, reduction=reduction, axis=axis)
    np.testing.assert_allclose(float(got), want, rtol=tol)


@pytest.mark.parametrize("shape,axis", SHAPES, ids=IDS)
def test_item_boundaries_follow_the_spec(shape, axis):
    """float64: the per-sample losses of reduction='none' are the kernel's own float64 values,
    so the sum over items formed from them in the specified order must match bitwise."""
    x, t = _data(shape, axis, np.float64, 2)
    per = np.asarray(fastce.cross_entropy(x, t, reduction="none", axis=axis)).reshape(-1)
    items = _tile_sums_ref(per, shape, axis)
    A = shape[0] if axis == 1 else shape[0]
    C = shape[axis]
    B = int(np.prod(shape[2:])) if axis == 1 else 1
    assert len(items) == _ce.n_items(A, C, B)
    want = _fastpath.pairwise_sum(items)
    assert float(fastce.cross_entropy(x, t, reduction="sum", axis=axis)) == want


@pytest.mark.parametrize("shape,axis", SHAPES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_same_bits_for_threads_grad_and_path(shape, axis, dtype):
    x, t = _data(shape, axis, dtype, 3)
    results = []
    for n in (1, 2):
        with threadpoolctl.threadpool_limits(n):
            for red in ("mean", "sum"):
                results.append((n, red, "fwd", fastce.cross_entropy(x, t, reduction=red, axis=axis)))
                results.append((n, red, "grad", fastce.cross_entropy(x, t, reduction=red, axis=axis,
                                                                     return_grad=True)[0]))
                # a NumPy-scalar option is not canonical: the general path
                results.append((n, red, "general", fastce.cross_entropy(
                    x, t, reduction=red, axis=axis, label_smoothing=np.float64(0.0))))
                results.append((n, red, "nll", fastce.nll_loss(x, t, reduction=red, axis=axis)))
                results.append((n, red, "nll-general", fastce.nll_loss(
                    x, t, reduction=red, axis=axis, ignore_index=np.int64(-100))))
    for red in ("mean", "sum"):
        ce = [r for r in results if r[1] == red and not r[2].startswith("nll")]
        nll = [r for r in results if r[1] == red and r[2].startswith("nll")]
        for group in (ce, nll):
            first = group[0][3]
            assert type(first) is np.dtype(dtype).type
            for n, _, kind, v in group[1:]:
                assert v.tobytes() == first.tobytes(), (red, n, kind)


def test_int32_targets_same_bits_as_int64():
    x, t = _data((1_000, 2), -1, np.float32, 4)
    for red in ("mean", "sum"):
        a = fastce.cross_entropy(x, t.astype(np.int32), reduction=red)
        b = fastce.cross_entropy(x, t, reduction=red)
        assert a.tobytes() == b.tobytes()


def test_bad_target_and_all_ignored():
    """NaN from an out-of-range sample survives the item sum; all ignored: mean NaN, sum 0."""
    x, _ = _data((100, 3), -1, np.float32, 5)
    t = np.full(100, -100)
    assert np.isnan(fastce.cross_entropy(x, t))
    assert float(fastce.cross_entropy(x, t, reduction="sum")) == 0.0
    xn = x.copy()
    xn[70, 1] = np.nan
    t = np.zeros(100, dtype=np.int64)
    assert np.isnan(fastce.cross_entropy(xn, t, reduction="sum"))


@pytest.mark.parametrize("C", [2, 10, 40])
@pytest.mark.parametrize("where", [0, 63, 64, 999])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_forward_target_check_inside_the_kernel(C, where, reduction):
    """A forward-only fast call checks its targets per item inside the kernel: an out-of-range
    target anywhere (first/last row of a block, the partial last block) still raises the general
    path's error, and the ignored count still sets the mean's denominator."""
    x, t = _data((1_000, C), -1, np.float32, 6)
    for bad in (C, -1, 2**40):
        tb = t.copy()
        tb[where] = bad
        for tt in (tb, tb.astype(np.int32) if abs(bad) < 2**31 else tb):
            with pytest.raises(Exception) as fast:
                fastce.cross_entropy(x, tt, reduction=reduction)
            with pytest.raises(Exception) as general:
                fastce.cross_entropy(x, tt, reduction=reduction, label_smoothing=np.float64(0.0))
            assert type(fast.value) is type(general.value)
            assert str(fast.value) == str(general.value)
    want = ref_cross_entropy(x, t, reduction=reduction)
    np.testing.assert_allclose(np.asarray(fastce.cross_entropy(x, t, reduction=reduction),
                                          dtype=np.float64), want, rtol=1e-5)
