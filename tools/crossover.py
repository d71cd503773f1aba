"""Measure the single-/multi-thread crossover of each kernel family (fastce._parallel.CROSSOVER).

    python tools/crossover.py [--repeats 7]

For each family and size it times the kernel driver directly with 1 thread and with the
OpenMP thread count (medians of interleaved repeats), and reports the smallest size from which
the team wins by at least 10% at that size and every larger one.  Run it on a quiet machine:
a busy core stalls a 2-thread team and moves the crossover up.
"""
import argparse
import platform
import time

import numpy as np

import fastce
from fastce import _binary, _ce, _softmax
from fastce._parallel import CROSSOVER

SIZES = [1 << k for k in range(10, 19)]


def _cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _runner(family, n):
    """A zero-argument call of the family's driver over about n elements, and its nthreads
    argument slot (a one-element list the timer writes the thread count into)."""
    rng = np.random.default_rng(0)
    nth = [1]
    if family == "binary":
        x = rng.standard_normal(n).astype(np.float32)
        y = (rng.random(n) > 0.5).astype(np.float32)
        g = np.empty_like(x)
        chunks = -(-n // (1 << 14))
        cs = np.empty(chunks)
        return (lambda: _binary.binary("logits", x, y, None, None, 1 << 14, 1, None, cs, g,
                                       1.0 / n, None, nth[0])), nth
    C = 10 if family == "ce_small" else 1000
    if family == "softmax":
        C = 100
    A = max(1, n // C)
    x = rng.standard_normal((A, C)).astype(np.float32)
    o = np.empty_like(x)
    if family == "softmax":
        return (lambda: _softmax.rowwise("log_softmax", x.reshape(-1), A, C, 1, o.reshape(-1),
                                         nth[0])), nth
    t = rng.integers(0, C, A)
    loss = np.empty(A)
    return (lambda: _ce.cross_entropy_index(x.reshape(-1), t, None, float(C), -100, 0.0, A, C, 1,
                                            loss, o.reshape(-1), 1.0 / A, None, nth[0])), nth


def _median_time(call, nth, threads, number):
    nth[0] = threads
    t0 = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - t0) / number


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    team = fastce.get_num_threads()
    print(f"{_cpu()}; OpenMP threads {team}; current CROSSOVER {CROSSOVER}")
    if team < 2:
        print("only one thread available: nothing to measure")
        return
    for family in CROSSOVER:
        wins = []
        for n in SIZES:
            call, nth = _runner(family, n)
            number = max(3, int(2e5 // n))
            call()
            one, many = [], []
            for _ in range(args.repeats):
                one.append(_median_time(call, nth, 1, number))
                many.append(_median_time(call, nth, team, number))
            r = float(np.median(one) / np.median(many))
            wins.append(r >= 1.1)
            print(f"  {family:9s} n={n:7d}  1 thread {np.median(one) * 1e6:8.1f} us  "
                  f"{team} threads {np.median(many) * 1e6:8.1f} us  speed-up {r:4.2f}")
        first = next((SIZES[i] for i in range(len(SIZES)) if all(wins[i:])), None)
        print(f"{family}: crossover {first}")


if __name__ == "__main__":
    main()
