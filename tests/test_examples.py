"""The numbers printed in the seed notebooks, as documented examples.

The notebooks printed float32-style 8-digit values, so the comparison is at ~1e-7.
"""

import numpy as np
import pytest

import fastce
from reference import ref_categorical_cross_entropy

DOC = dict(rtol=0, atol=1.5e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_bce_with_logits_example(dtype):
    logits = np.array([0.2, 1.5, -1.2], dtype=dtype)
    targets = np.array([0.0, 1.0, 0.0], dtype=dtype)
    np.testing.assert_allclose(fastce.binary_cross_entropy_with_logits(logits, targets), 0.42094484, **DOC)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_cross_entropy_example(dtype):
    logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3], [0.1, 0.2, 3.0]], dtype=dtype)
    targets = np.array([0, 1, 2])
    np.testing.assert_allclose(fastce.cross_entropy(logits, targets), 0.24889366, **DOC)
    # the same example with one-hot targets
    np.testing.assert_allclose(fastce.cross_entropy(logits, np.eye(3, dtype=dtype)[targets]), 0.24889366, **DOC)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_categorical_cross_entropy_example(dtype):
    # We do not have the seed notebook.  0.36354804 == -ln(0.7 * 0.8 * 0.6) / 3 to all printed
    # digits (-ln(0.336)/3 = 0.363548039...), i.e. the mean over 3 samples whose true classes
    # get probabilities 0.7, 0.8 and 0.6.  This reconstructed 4-class example reproduces it:
    probs = np.array(
        [[0.7, 0.1, 0.1, 0.1], [0.05, 0.8, 0.1, 0.05], [0.1, 0.2, 0.6, 0.1]],
        dtype=dtype,
    )
    onehot = np.eye(4, dtype=dtype)[[0, 1, 2]]
    np.testing.assert_allclose(fastce.categorical_cross_entropy(probs, onehot), 0.36354804, **DOC)
    np.testing.assert_allclose(fastce.categorical_cross_entropy(probs, np.array([0, 1, 2])), 0.36354804, **DOC)
    np.testing.assert_allclose(ref_categorical_cross_entropy(probs, onehot), 0.36354804, **DOC)


def test_accuracy_example():
    scores = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    targets = np.array([1, 2, 2])  # the second sample is predicted as class 0: wrong
    acc = fastce.accuracy(scores, targets)
    assert acc == pytest.approx(2 / 3, abs=1e-15)
    assert fastce.accuracy(scores, np.eye(3)[targets]) == pytest.approx(2 / 3, abs=1e-15)
