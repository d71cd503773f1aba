"""Command line: `python -m fastce bench [--quick] [--percall] [--json FILE] [--plot FILE.png] ...`
(see `python -m fastce bench --help`) and `python -m fastce info`."""
import argparse
import sys
from typing import List, Optional


def info() -> None:
    import numpy as np

    import fastce
    from . import _threads
    print(f"fastce {fastce.__version__} ({fastce.__file__})")
    print(f"numpy {np.__version__}, python {sys.version.split()[0]}")
    print(f"OpenMP: {'on' if _threads.OPENMP else 'off (serial build)'}")
    print(f"threads: {fastce.get_num_threads()}")
    print(f"kernel dispatch: {_threads.DISPATCH}")
    rep = _threads.isa_report()
    chosen = sorted(set(rep["chosen"].values()))
    print(f"SIMD path on this CPU: {', '.join(chosen)} (FASTCE_ISA={rep['requested']}; "
          f"best supported: {rep['best']})")
    flags = _build_flags()
    if flags:
        print(f"build flags: {flags}")


def _build_flags() -> str:
    """Compile flags recorded by setup.py at build time (empty if unknown)."""
    try:
        from . import _build_info  # type: ignore[attr-defined, unused-ignore]  # generated
    except ImportError:
        return ""
    return str(_build_info.FLAGS)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fastce")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="time fastce against the hardware limit and against peers",
                       description="Time fastce's fused loss+gradient and forward-only calls "
                       "against np.copyto / np.max (the limit) and against NumPy, torch eager, "
                       "torch.compile, JAX jit, numba and sklearn (each when importable), plus "
                       "per-call rows for mini-batch trainers. Progress goes to stderr, the "
                       "tables to stdout.")
    b.add_argument("--quick", action="store_true",
                   help="smaller shapes (the labels show them), fewer rounds, float32 only")
    b.add_argument("--percall", action="store_true",
                   help="run only the per-call rows (mini-batch shapes, us per call)")
    b.add_argument("--no-percall", action="store_true", help="skip the per-call rows")
    b.add_argument("--no-linear", action="store_true", help="skip the fused linear CE case")
    b.add_argument("--dtypes", metavar="LIST",
                   help="comma list of float32,float64 for the throughput rows "
                        "(default: both; float32 with --quick)")
    b.add_argument("--float64", action="store_true",
                   help="with --quick: add the float64 rows (same as --dtypes float32,float64)")
    b.add_argument("--peers", metavar="LIST",
                   help="comma list of numpy,torch,torch.compile,jax,numba,sklearn, or all/none "
                        "(default: all that are installed)")
    b.add_argument("--no-peers", action="store_true", help="same as --peers none")
    b.add_argument("--cases", metavar="TEXT",
                   help="run only the throughput rows whose label contains TEXT, e.g. 'x1000 fwd'")
    b.add_argument("--repeats", type=int, metavar="K",
                   help="interleaved rounds per row / samples of 1000 calls per per-call row")
    b.add_argument("--stat", choices=["median", "min"], default="median",
                   help="statistic of the samples shown and used for the ratios (min is steadier "
                        "on a busy machine; the JSON has both)")
    b.add_argument("--json", metavar="FILE",
                   help="write every figure as JSON (times, ratios, CPU, threads, versions)")
    b.add_argument("--plot", metavar="FILE.png",
                   help="write a plot of the absolute times (needs matplotlib)")
    sub.add_parser("info", help="version, build and runtime configuration")
    args = parser.parse_args(argv)
    if args.command == "info":
        info()
    else:
        from . import _bench
        _bench.main(args)


if __name__ == "__main__":
    main()
