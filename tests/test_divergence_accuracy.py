"""Top-k accuracy (fastce.accuracy with k / sample_weight): against sklearn's
top_k_accuracy_score where installed, a direct NumPy reference (stable descending sort), the
documented tie and NaN rules, layouts and input errors."""
import numpy as np
import pytest

import fastce


def ref_top_k(scores, target, k, axis=-1, sample_weight=None):
    """Stable descending sort along the class axis (ties: lowest class index first)."""
    s = np.moveaxis(np.asarray(scores, np.float64), axis, -1).reshape(-1, np.shape(scores)[axis])
    t = np.asarray(target).reshape(-1)
    order = np.argsort(-s, axis=-1, kind="stable")[:, :k]
    hit = (order == t[:, None]).any(-1)
    w = np.ones(len(t)) if sample_weight is None else np.asarray(sample_weight, float).reshape(-1)
    return float((w * hit).sum() / w.sum())


def _distinct_scores(rng, shape, axis):
    """Scores with no ties within a sample (a random permutation of 0..C-1 per sample)."""
    C = shape[axis]
    n = int(np.prod(shape)) // C
    s = rng.permuted(np.tile(np.arange(C, dtype=np.float64), (n, 1)), axis=1)
    s += rng.random((n, 1))
    ps = tuple(np.delete(np.array(shape), axis % len(shape)))
    return np.moveaxis(s.reshape(ps + (C,)), -1, axis)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 9])
@pytest.mark.parametrize("shape,axis", [((50, 7), -1), ((4, 7, 6), 1), ((3, 5, 7), -1),
                                        ((20, 40), -1), ((2, 33, 150), 1)])
def test_top_k_matches_reference(rng, shape, axis, k):
    s = _distinct_scores(rng, shape, axis)
    C = shape[axis]
    t = rng.integers(0, C, size=tuple(np.delete(np.array(shape), axis % len(shape))))
    w = rng.random(t.shape)
    assert fastce.accuracy(s, t, axis=axis, k=k) == pytest.approx(ref_top_k(s, t, k, axis),
                                                                  rel=1e-15)
    assert fastce.accuracy(s, t, axis=axis, k=k, sample_weight=w) == pytest.approx(
        ref_top_k(s, t, k, axis, w), rel=1e-13)
    onehot = np.moveaxis(np.eye(C)[t], -1, axis)
    assert fastce.accuracy(s, onehot, axis=axis, k=k) == fastce.accuracy(s, t, axis=axis, k=k)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_top_k_matches_sklearn(rng, k):
    metrics = pytest.importorskip("sklearn.metrics")
    s = _distinct_scores(rng, (200, 6), -1)
    t = rng.integers(0, 6, size=200)
    w = rng.random(200)
    want = metrics.top_k_accuracy_score(t, s, k=k, labels=np.arange(6))
    assert fastce.accuracy(s, t, k=k) == pytest.approx(want, rel=1e-15)
    want = metrics.top_k_accuracy_score(t, s, k=k, labels=np.arange(6), sample_weight=w)
    assert fastce.accuracy(s, t, k=k, sample_weight=w) == pytest.approx(want, rel=1e-13)


@pytest.mark.parametrize("pad", [0, 30], ids=["block", "rows"])
@pytest.mark.parametrize("axis", [-1, 0], ids=["rows", "cols"])
def test_top_k_ties_and_nan_documented_order(pad, axis):
    """Same answers through every kernel path (padding classes of score -1 change no rank)."""
    def acc(x, t, k=1):
        x = np.repeat(x, 3, axis=0)               # 3 samples: axis=0 is then a B > 1 layout
        t = list(t) * 3
        x = np.concatenate([x, np.full((x.shape[0], pad), -1.0)], axis=1)
        return fastce.accuracy(x if axis == -1 else x.T.copy(), t, k=k, axis=axis)
    s = np.array([[1.0, 1.0, 1.0, 0.0]] * 4)
    # ties rank by class index, lowest first: top-2 is {0, 1}
    np.testing.assert_array_equal([acc(s[:1], [c], k=2) for c in range(4)], [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal([acc(s[:1], [c], k=3) for c in range(4)], [1.0, 1.0, 1.0, 0.0])
    # k = 1 agrees with argmax (lowest index on ties)
    assert acc(s[:1], [0]) == 1.0 and acc(s[:1], [1]) == 0.0
    # NaN ranks above every number, as in np.argmax
    n = np.array([[0.0, np.nan, 5.0, np.nan]])
    np.testing.assert_array_equal([acc(n, [c], k=2) for c in range(4)], [0.0, 1.0, 0.0, 1.0])
    np.testing.assert_array_equal([acc(n, [c], k=3) for c in range(4)], [0.0, 1.0, 1.0, 1.0])
    assert acc(n, [1]) == 1.0 and acc(n, [2]) == 0.0


def test_top_k_edge_cases(rng):
    s = rng.standard_normal((10, 4))
    t = rng.integers(0, 4, size=10)
    assert fastce.accuracy(s, t, k=4) == 1.0
    assert fastce.accuracy(s, t, k=100) == 1.0
    assert np.isnan(fastce.accuracy(np.zeros((0, 4)), np.zeros(0, np.int64), k=2))
    assert np.isnan(fastce.accuracy(s, t, k=2, sample_weight=np.zeros(10)))
    assert fastce.accuracy(np.array([0.1, 0.7, 0.2]), 2, k=2) == 1.0     # unbatched
    w = np.zeros(10)
    w[3] = 2.0
    assert fastce.accuracy(s, t, k=2, sample_weight=w) == float(
        t[3] in np.argsort(-s[3], kind="stable")[:2])


def test_top_k_errors():
    s = np.zeros((3, 4))
    t = np.zeros(3, dtype=np.int64)
    for k in (0, -1):
        with pytest.raises(ValueError, match="k must be >= 1"):
            fastce.accuracy(s, t, k=k)
    with pytest.raises(TypeError, match="k must be an integer"):
        fastce.accuracy(s, t, k=1.5)
    with pytest.raises(ValueError, match=r"sample_weight shape \(4,\).*\(3,\)"):
        fastce.accuracy(s, t, sample_weight=np.ones(4))
    with pytest.raises(TypeError):
        fastce.accuracy(s, t, sample_weight=np.array(["a", "b", "c"]))
