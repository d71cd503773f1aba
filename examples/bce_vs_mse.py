"""Why cross-entropy: a saturated sigmoid neuron learns slowly with MSE, quickly with BCE.

The seed slides' single sigmoid neuron a = sigmoid(w x + b) with input x = 1 and target y = 0,
started badly at w = b = 2 (a = 0.98, deep in the sigmoid's flat region), trained for 300 epochs
by gradient descent with the same learning rate on

* MSE  C = (a - y)**2 / 2    dC/dz = (a - y) * sigmoid'(z)   -- tiny while saturated
* BCE  C = -[y log a + (1 - y) log(1 - a)]   dC/dz = a - y  -- fastce's fused BCE-with-logits

Prints both costs every 25 epochs and the epoch at which each first gets the output below 0.5.
With matplotlib installed it saves a PNG of both cost curves (``--out``, default
``bce_vs_mse.png`` in the current directory).  Exits with status 1 if BCE does not escape
saturation faster than MSE.

Usage: python examples/bce_vs_mse.py [--out bce_vs_mse.png] [--epochs 300] [--lr 0.15]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import fastce


def sigmoid(z: float) -> float:
    return float(1.0 / (1.0 + np.exp(-z)))


def run(loss: str, epochs: int, lr: float, x: float = 1.0, y: float = 0.0,
        w: float = 2.0, b: float = 2.0) -> tuple[list[float], list[float]]:
    """Train the neuron with `loss` ("mse" or "bce"); return the per-epoch (costs, outputs)."""
    costs, outputs = [], []
    xs, ys = np.array([x]), np.array([y])
    for _ in range(epochs):
        z = np.array([w * x + b])
        a = sigmoid(z[0])
        if loss == "mse":
            cost = 0.5 * (a - y) ** 2
            dz = (a - y) * a * (1.0 - a)
        else:
            c, g = fastce.binary_cross_entropy_with_logits(z, ys, return_grad=True)
            cost, dz = float(c), float(g[0])
        costs.append(float(cost))
        outputs.append(a)
        w -= lr * dz * xs[0]
        b -= lr * dz
    return costs, outputs


def first_below(outputs: list[float], level: float) -> int | None:
    return next((i for i, a in enumerate(outputs) if a < level), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bce_vs_mse.png",
                        help="PNG path for the cost curves (needs matplotlib)")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.15)
    args = parser.parse_args(argv)

    mse, a_mse = run("mse", args.epochs, args.lr)
    bce, a_bce = run("bce", args.epochs, args.lr)

    print(f"single sigmoid neuron, x=1, y=0, start w=b=2 (a={a_mse[0]:.3f}), lr={args.lr}")
    print(f"{'epoch':>5}  {'MSE cost':>10}  {'MSE out':>8}  {'BCE cost':>10}  {'BCE out':>8}")
    for e in list(range(0, args.epochs, 25)) + [args.epochs - 1]:
        print(f"{e:5d}  {mse[e]:10.6f}  {a_mse[e]:8.4f}  {bce[e]:10.6f}  {a_bce[e]:8.4f}")
    e_mse, e_bce = first_below(a_mse, 0.5), first_below(a_bce, 0.5)
    print(f"output below 0.5 after: MSE {e_mse if e_mse is not None else 'never'} epochs, "
          f"BCE {e_bce if e_bce is not None else 'never'} epochs")
    print(f"final output: MSE {a_mse[-1]:.4f}, BCE {a_bce[-1]:.4f}")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot saved")
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(mse, label="MSE cost")
        ax.plot(bce, label="BCE cost")
        ax.set_xlabel("epoch")
        ax.set_ylabel("cost")
        ax.set_title("Sigmoid neuron x=1, y=0, w=b=2: MSE vs BCE")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out, dpi=100)
        plt.close(fig)
        print(f"saved plot to {args.out}")

    escaped = e_bce is not None and (e_mse is None or e_bce < e_mse) and a_bce[-1] < a_mse[-1]
    if not escaped:
        print("FAILED: BCE did not escape saturation faster than MSE", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
