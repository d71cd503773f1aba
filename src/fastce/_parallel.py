"""How many OpenMP threads a kernel call gets: the one place for that rule.

Two things decide it:

- Size.  Starting an OpenMP team costs a few microseconds; below a per-family crossover (in
  elements) one thread wins, so the kernel runs on the calling thread without a team.
- fork().  libgomp's thread pool does not survive fork(): in a child process, the first
  parallel region that the parent's pool would have served waits forever for threads that no
  longer exist.  That is what ``multiprocessing`` (fork start method, the Linux default before
  Python 3.14) and data-loader workers do.  A child created by fork therefore runs every fastce
  kernel on its calling thread (correct results, no deadlock); children started with "spawn" or
  "forkserver" are fresh processes and use threads as usual.  A team of one thread never touches
  the pool, so it is safe in a forked child.
"""
import os

from . import _threads

# Below a family's crossover (in elements) a kernel runs on the calling thread: starting and
# joining an OpenMP team costs a few microseconds, more than the work it would split.  The
# crossovers differ because the work per element does: a CE row of many classes is one exp per
# element, a small-C block adds transposes and per-sample logs, BCE is an exp and a log1p per
# element, a softmax-family op is lighter.  Measured with tools/crossover.py (1 vs 2 threads,
# medians, float32) on a quiet 2-core AMD EPYC (Zen 5): two threads first win by >= 10% at
# softmax 1024, ce_rows 8192, ce_small 2048, binary 32768 elements.  Below 8192 the win is a
# microsecond or less while a team whose second core is busy stalls for far longer, so no
# family starts a team below 8192 (where the speed-ups are 1.7x, 1.2x, 1.6x); binary works in
# chunks of 2**14 elements (functional.BINARY_CHUNK), so a team needs two.
CROSSOVER = {
    "softmax": 1 << 13,     # log_softmax / softmax / logsumexp / VJPs
    "ce_rows": 1 << 13,     # cross-entropy / NLL, rows of > 16 classes
    "ce_small": 1 << 13,    # cross-entropy / NLL, <= 16 classes or the axis=1 layout
    "binary": 1 << 15,      # elementwise BCE losses
}
_CROSSOVER_NOTE = "measured on a 2-core AMD EPYC (Zen 5), see tools/crossover.py"
# The smallest crossover: no family starts a team below it (tests use it as "large enough").
PARALLEL_MIN_ELEMENTS = min(CROSSOVER.values())

_forked_child = False


def _after_fork_in_child() -> None:
    global _forked_child
    _forked_child = True


if hasattr(os, "register_at_fork"):         # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def in_forked_child() -> bool:
    """True in a process created by fork() from one that imported fastce."""
    return _forked_child


def get_num_threads() -> int:
    """Number of threads fastce kernels use for large inputs.

    The OpenMP runtime's setting (``OMP_NUM_THREADS``, ``threadpoolctl.threadpool_limits``);
    1 without OpenMP and in a child process created by ``fork()`` (see the module docstring).
    """
    if _forked_child:
        return 1
    return int(_threads.get_num_threads())


def nthreads(n_elements: int, family: str = "ce_rows") -> int:
    """Threads for a kernel call of `family` over `n_elements` elements: 1 below the family's
    crossover (and then no OpenMP team is started), the OpenMP setting above it."""
    if n_elements < CROSSOVER[family] or _forked_child:
        return 1
    return int(_threads.get_num_threads())


def ce_family(C: int, B: int) -> str:
    """The crossover family of a class-axis loss of C classes and B columns per slab."""
    return "ce_rows" if B == 1 and C > 16 else "ce_small"
