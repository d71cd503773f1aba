"""Train a two-layer NumPy MLP on the 3-class spiral data set with fastce's fused CE + gradient.

The spiral data set and the network are the seed notebooks' (CS231n style): 100 points per class
on three interleaved spiral arms, 2 inputs -> 100 ReLU hidden units -> 3 scores.  Every step
computes the softmax cross-entropy *and* its gradient w.r.t. the scores in one fused pass:

    loss, dscores = fastce.cross_entropy(scores, y, return_grad=True)

Prints the loss and the training accuracy as it goes (print your loss!) and exits with status 1
if the final training accuracy is below 90%.

Usage: python examples/train_spiral_mlp.py [--steps 5000] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import fastce


def make_spiral(points_per_class: int = 100, classes: int = 3, seed: int = 0):
    """The spiral data set: `classes` arms of `points_per_class` noisy 2-D points each.

    Returns
    -------
    X : ndarray of shape (points_per_class * classes, 2), float64
    y : ndarray of shape (points_per_class * classes,), int64 class labels
    """
    rng = np.random.default_rng(seed)
    n = points_per_class
    X = np.zeros((n * classes, 2))
    y = np.zeros(n * classes, dtype=np.int64)
    for k in range(classes):
        r = np.linspace(0.0, 1.0, n)                                           # radius
        t = np.linspace(k * 4.0, (k + 1) * 4.0, n) + rng.standard_normal(n) * 0.2  # angle
        X[k * n:(k + 1) * n] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[k * n:(k + 1) * n] = k
    return X, y


def train(steps: int = 5000, hidden: int = 100, lr: float = 1.0, reg: float = 1e-3,
          seed: int = 0, log_every: int = 500) -> float:
    """Full-batch gradient descent on the spiral data; returns the final training accuracy."""
    X, y = make_spiral(seed=seed)
    rng = np.random.default_rng(seed + 1)
    D, K = X.shape[1], int(y.max()) + 1
    W1 = 0.01 * rng.standard_normal((D, hidden))
    b1 = np.zeros(hidden)
    W2 = 0.01 * rng.standard_normal((hidden, K))
    b2 = np.zeros(K)
    dscores = np.empty((X.shape[0], K))   # reused gradient buffer (out=)

    for step in range(steps + 1):
        h = np.maximum(0.0, X @ W1 + b1)                  # ReLU hidden layer
        scores = h @ W2 + b2
        data_loss, _ = fastce.cross_entropy(scores, y, return_grad=True, out=dscores)
        reg_loss = 0.5 * reg * (np.sum(W1 * W1) + np.sum(W2 * W2))
        if step % log_every == 0:
            acc = fastce.accuracy(scores, y)
            print(f"step {step:5d}  loss {data_loss + reg_loss:.4f}  accuracy {acc:.3f}",
                  flush=True)
        if step == steps:
            break
        # backprop: dscores already is d(mean CE)/d(scores)
        dW2 = h.T @ dscores + reg * W2
        db2 = dscores.sum(axis=0)
        dh = dscores @ W2.T
        dh[h <= 0] = 0.0
        dW1 = X.T @ dh + reg * W1
        db1 = dh.sum(axis=0)
        W1 -= lr * dW1
        b1 -= lr * db1
        W2 -= lr * dW2
        b2 -= lr * db2

    h = np.maximum(0.0, X @ W1 + b1)
    return fastce.accuracy(h @ W2 + b2, y)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000, help="gradient steps (default 5000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    acc = train(steps=args.steps, seed=args.seed)
    elapsed = time.perf_counter() - start
    print(f"final training accuracy: {acc:.3f}  ({elapsed:.1f} s)")
    if acc < 0.9:
        print("FAILED: training accuracy below 0.90", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
