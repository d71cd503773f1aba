"""Train a small PyTorch model on the CPU with fastce.torch's loss vs torch's own.

The same MLP (same initial weights, same batches) is trained twice with SGD, once with
``torch.nn.functional.cross_entropy`` and once with ``fastce.torch.cross_entropy`` (a
torch.autograd.Function running fastce's fused loss+gradient kernel).  The loss step -- the
loss forward plus its backward to the logits -- is timed separately from the rest of the
network, and both timings are reported together with the final losses, which agree.

Exits 0 with a message when PyTorch is not installed.

Usage: python examples/torch_cpu_training.py [--steps 20] [--batch 512] [--classes 1000]
"""
from __future__ import annotations

import argparse
import copy
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None


def train(model, loss_fn, data, lr: float, label_smoothing: float):
    """SGD over `data`; returns (per-step losses, total seconds spent in the loss step)."""
    # plain SGD by hand: torch.optim's first use imports torch._dynamo (seconds of start-up)
    params = list(model.parameters())
    losses, loss_time = [], 0.0
    for xb, yb in data:
        for p in params:
            p.grad = None
        logits = model(xb)
        # the loss step, isolated: loss forward + backward to the logits
        t0 = time.perf_counter()
        leaf = logits.detach().requires_grad_()
        loss = loss_fn(leaf, yb, label_smoothing=label_smoothing)
        loss.backward()
        loss_time += time.perf_counter() - t0
        logits.backward(leaf.grad)   # the rest of the network
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad
        losses.append(loss.detach().item())
    return losses, loss_time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=5.0)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    args = parser.parse_args(argv)

    if torch is None:
        print("PyTorch is not installed: skipping this example (pip install torch)")
        return 0
    import fastce.torch as fct

    torch.manual_seed(0)
    # a learnable synthetic task: the class is the argmax of a fixed random linear map
    proj = torch.randn(args.features, args.classes)
    data = []
    for _ in range(args.steps):
        xb = torch.randn(args.batch, args.features)
        data.append((xb, (xb @ proj).argmax(dim=1)))

    base = torch.nn.Sequential(torch.nn.Linear(args.features, args.hidden), torch.nn.ReLU(),
                               torch.nn.Linear(args.hidden, args.classes))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, "
          f"{args.classes} classes, {args.steps} SGD steps, label_smoothing "
          f"{args.label_smoothing}")

    results = {}
    for name, fn in (("torch.nn.functional", F.cross_entropy), ("fastce.torch", fct.cross_entropy)):
        # warm-up on a copy, so one-time costs are not timed
        train(copy.deepcopy(base), fn, data[:2], args.lr, args.label_smoothing)
        losses, seconds = train(copy.deepcopy(base), fn, data, args.lr, args.label_smoothing)
        results[name] = (losses, seconds)
        print(f"{name:>20}: first loss {losses[0]:.4f}  last loss {losses[-1]:.4f}  "
              f"loss step {1e3 * seconds / len(losses):7.3f} ms/step")

    (lt, st), (lf, sf) = results["torch.nn.functional"], results["fastce.torch"]
    print(f"loss-step speed-up of fastce.torch over torch: {st / sf:.1f}x")
    first_diff = abs(lt[0] - lf[0])
    print(f"first-step loss difference: {first_diff:.2e}; last-step: {abs(lt[-1] - lf[-1]):.2e}")
    if first_diff > 1e-4 or not lf[-1] < lf[0]:
        print("FAILED: fastce.torch does not reproduce torch's training", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
