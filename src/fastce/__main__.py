"""Command line: `python -m fastce bench [--quick] [--json FILE] [--plot FILE.png]` and
`python -m fastce info`."""
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
    print(f"SIMD path on this CPU: {_threads.simd_path()}")
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
    b = sub.add_parser("bench", help="time fused loss+gradient against NumPy, memcpy and peers")
    b.add_argument("--quick", action="store_true", help="smaller shapes, fewer repeats (< 1 min)")
    b.add_argument("--json", metavar="FILE", help="write the results as JSON")
    b.add_argument("--plot", metavar="FILE.png", help="write a bar chart (needs matplotlib)")
    b.add_argument("--float64", action="store_true", help="also run every case in float64")
    b.add_argument("--no-peers", action="store_true", help="skip PyTorch/JAX/sklearn")
    b.add_argument("--no-linear", action="store_true", help="skip the fused linear CE case")
    sub.add_parser("info", help="version, build and runtime configuration")
    args = parser.parse_args(argv)
    if args.command == "info":
        info()
    else:
        from . import _bench
        _bench.main(args)


if __name__ == "__main__":
    main()
