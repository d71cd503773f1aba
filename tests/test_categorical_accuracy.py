"""categorical_cross_entropy (from probabilities, Keras-style clipping) and accuracy."""

import numpy as np
import pytest

import fastce
from conftest import LAYOUT_IDS, LAYOUTS, REDUCTIONS, assert_close, check_loss_type, per_sample_shape
from reference import ref_accuracy, ref_categorical_cross_entropy

cce = fastce.categorical_cross_entropy


def _probs(rng, shape, axis, dtype):
    z = np.moveaxis(rng.standard_normal(shape) * 2, axis, -1)
    p = np.exp(z)
    p /= p.sum(-1, keepdims=True)
    return np.moveaxis(p, -1, axis).astype(dtype)


def _target(rng, shape, axis, kind, dtype):
    C = shape[axis]
    ps = per_sample_shape(shape, axis)
    idx = rng.integers(0, C, size=ps)
    if kind == "index":
        return idx
    if kind == "onehot":
        return np.moveaxis(np.eye(C)[idx], -1, axis).astype(dtype)
    return _probs(rng, shape, axis, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=["f32", "f64", "f16"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", ["index", "onehot", "prob"])
@pytest.mark.parametrize("layout", LAYOUT_IDS)
def test_categorical_matches_reference(rng, layout, kind, reduction, dtype):
    shape, axis = LAYOUTS[layout]
    p = _probs(rng, shape, axis, dtype)
    t = _target(rng, shape, axis, kind, dtype)
    eps = 1e-6
    got = cce(p, t, eps=eps, reduction=reduction, axis=axis)
    check_loss_type(got, reduction, dtype, per_sample_shape(shape, axis))
    assert_close(got, ref_categorical_cross_entropy(p, t, eps=eps, reduction=reduction, axis=axis), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_categorical_default_eps_is_machine_epsilon(dtype):
    p = np.array([[0.0, 0.5, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]], dtype=dtype)
    t = np.array([0, 0, 3])
    eps = np.finfo(dtype).eps
    got = cce(p, t, reduction="none")
    want = np.array([-np.log(eps), -np.log1p(-eps), np.log(4.0)])
    assert_close(got, want, dtype)
    assert_close(cce(p, t), want.mean(), dtype)
    assert_close(cce(p, t, eps=1e-3), ref_categorical_cross_entropy(p, t, eps=1e-3), dtype)


def test_categorical_unnormalised_probabilities_not_renormalised():
    # only clipping, no renormalisation of the rows (the NumPy seed version)
    p = np.array([[0.2, 0.2, 0.2, 0.2]])
    np.testing.assert_allclose(cce(p, np.array([1])), -np.log(0.2), rtol=1e-14)


def test_categorical_empty_and_promotion():
    e = np.zeros((0, 4))
    assert np.isnan(cce(e, np.zeros(0, dtype=np.int64)))
    assert cce(e, np.zeros(0, dtype=np.int64), reduction="sum") == 0
    assert cce(e, e, reduction="none").shape == (0,)
    got = cce([[0.5, 0.5], [0.9, 0.1]], [0, 1])
    assert type(got) is np.float64
    np.testing.assert_allclose(got, (np.log(2.0) - np.log(0.1)) / 2, rtol=1e-14)


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("kind", ["index", "onehot"])
@pytest.mark.parametrize("layout", LAYOUT_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=["f32", "f64", "f16"])
def test_accuracy_matches_reference(rng, dtype, layout, kind):
    shape, axis = LAYOUTS[layout]
    scores = rng.permuted(np.tile(np.arange(shape[axis], dtype=dtype), (int(np.prod(shape)) // shape[axis], 1)), axis=1)
    scores = np.moveaxis(scores.reshape(per_sample_shape(shape, axis) + (shape[axis],)), -1, axis)
    t = _target(rng, shape, axis, kind, np.float64)
    got = fastce.accuracy(scores, t, axis=axis)
    assert type(got) is float
    assert got == ref_accuracy(scores, t, axis=axis)


def test_accuracy_values():
    s = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5], [0.0, 0.1, 0.9]])
    assert fastce.accuracy(s, [1, 0, 2, 2]) == 1.0
    assert fastce.accuracy(s, [0, 1, 0, 1]) == 0.0
    assert fastce.accuracy(s, np.array([1, 2, 2, 0])) == 0.5
    assert fastce.accuracy(s, np.eye(3)[[1, 2, 2, 0]]) == 0.5
    assert fastce.accuracy(s.T.copy(), np.array([1, 2, 2, 0]), axis=0) == 0.5
    assert fastce.accuracy(np.array([0.1, 0.7, 0.2]), np.array(1)) == 1.0
    assert fastce.accuracy(np.array([0.1, 0.7, 0.2]), 2) == 0.0
